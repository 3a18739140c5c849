/* A minimal stand-in for the lua5.4 interpreter, built with the same
 * sanitizer (and the same compiler) as the module, so the sanitizer runtime
 * is part of the executable. ThreadSanitizer cannot be LD_PRELOADed into an
 * uninstrumented lua5.4: the shells and tools the tests start inherit the
 * preload and crash, and clang's runtime crashes even lua5.4 itself.
 *
 *   gcc -fsanitize=thread -g -O1 -I/usr/include/lua5.4 tests/lua/host/lua_host.c \
 *       -o build/lua-tsan -llua5.4 -lm -ldl
 *   LUA_CPATH="build/bin/tsan/?.so;;" build/lua-tsan tests/lua/run.lua
 *
 * (The module from `make -C build config=tsan` is built by gcc and needs
 * libtsan.so; with a module built by clang -fsanitize=thread, build this
 * with clang too.) Usage is lua5.4's: host script.lua [args...], with
 * arg[-1] = the host, so the suite starts its subprocesses with it too;
 * and host -e "code" runs a chunk, as lua5.4 -e does for the tests that
 * need it.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

static int msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s script.lua [args...]\n", argv[0]);
    return 2;
  }
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  if (argc == 3 && argv[1][0] == '-' && argv[1][1] == 'e' && argv[1][2] == 0) {
    lua_pushcfunction(L, msgh);
    int rc = luaL_loadstring(L, argv[2]);
    if (rc == LUA_OK) rc = lua_pcall(L, 0, 0, 1);
    if (rc != LUA_OK) fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
    lua_close(L);
    return rc == LUA_OK ? 0 : 1;
  }
  lua_createtable(L, argc, 2);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1); /* argv[0] -> arg[-1], script -> arg[0] */
  }
  lua_setglobal(L, "arg");
  lua_pushcfunction(L, msgh);
  if (luaL_loadfile(L, argv[1]) != LUA_OK) {
    fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
    return 1;
  }
  for (int i = 2; i < argc; i++) lua_pushstring(L, argv[i]);
  int rc = lua_pcall(L, argc - 2, 0, 1);
  if (rc != LUA_OK) fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
  lua_close(L);
  return rc == LUA_OK ? 0 : 1;
}
