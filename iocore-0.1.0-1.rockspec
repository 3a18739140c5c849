-- `luarocks --lua-version 5.4 make` from a checkout builds the Lua module
-- (iocore.so, the C library compiled in) and installs it with lua/iocore/*.lua.
-- Needs premake4 (or premake5), a C compiler, liburing-dev and the Lua 5.4
-- headers. The version agrees with IOC_VERSION_STRING in src/include/iocore.h.
rockspec_format = "3.0"
package = "iocore"
version = "0.1.0-1"
-- The project has no public address yet: `luarocks make` builds the checkout
-- it runs in and never fetches this.
source = {
   url = "git+file:///iocore",
}
description = {
   summary = "Event core on the completion-port model, with a Lua 5.4 front end",
   detailed = [[
An embeddable event core in C (backends io_uring, epoll, IOCP): every socket
operation is posted and its completion dispatched by a pool of worker threads.
The server logic is a Lua script; the C core owns sockets, buffers and threads.
]],
   labels = { "network", "event-loop", "io_uring" },
}
supported_platforms = { "linux" }
dependencies = {
   "lua >= 5.4, < 5.5",
}
external_dependencies = {
   URING = { header = "liburing.h" },
}
build = {
   type = "command",
   build_command = "LUA_INCDIR='$(LUA_INCDIR)' scripts/install --lua-only --build-only",
   install_command = "scripts/install --no-build --lua-cdir '$(LIBDIR)' --lua-ldir '$(LUADIR)'",
}
