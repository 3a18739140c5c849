-- iocore build description. Works with Debian's premake4 (4.3) and premake5:
--
--   premake4 --file=premake5.lua gmake && make -C build config=debug
--   premake5 gmake2 && make -C build config=debug
--
-- Linux:   makefiles in build/, objects in build/obj/<config>/<project>/,
--          build/lib/<config>/libiocore.a, and in build/bin/<config>/:
--          libiocore.so, iocore.so (the Lua module), iocore_tests, echo.
-- Windows: cross-built with mingw-w64 from a separate tree:
--          premake4 --file=premake5.lua --os=windows gmake
--          make -C build/windows config=debug CC=x86_64-w64-mingw32-gcc
--          outputs in build/windows/{lib,bin}/<config>/; the Lua module in
--          build/windows/bin/<config>/lua/iocore.dll (needs the Windows Lua
--          of `scripts/setup --windows`, or LUA_INCDIR/LUA_LIBDIR below).
--
-- Configurations: debug, release, asan (address + undefined behaviour
-- sanitizers, first error aborts), tsan (thread sanitizer).
--
-- Sources are globbed when premake runs, so re-run premake after adding a
-- file (scripts/test always does).

local premake4 = _PREMAKE_VERSION == nil or _PREMAKE_VERSION:match("^4") ~= nil
local windows
if premake4 then
  windows = os.is("windows")
else
  windows = os.istarget("windows")
end

-- when("debug"), when("windows"), when("not windows"), when(): premake4's
-- `configuration` or premake5's `filter` (where `configuration` is deprecated).
local systems = { windows = true, linux = true }
local function when(term)
  if premake4 then
    configuration(term or {})
    return
  end
  if term == nil then
    filter {}
  elseif systems[term:gsub("^not ", "")] then
    filter("system:" .. term)
  else
    filter("configurations:" .. term)
  end
end

-- premake5's Visual Studio actions: the gcc flags below are kept from
-- cl.exe (gccoptions / gcclinkoptions), and C11 is asked for its way.
local msvc = not premake4 and _ACTION ~= nil and _ACTION:match("^vs") ~= nil
local function gccoptions(list) if not msvc then buildoptions(list) end end
local function gcclinkoptions(list) if not msvc then linkoptions(list) end end

-- premake5 calls premake4's `excludes` removefiles.
local function exclude(list)
  if premake4 then excludes(list) else removefiles(list) end
end

local function have(pattern)
  return #os.matchfiles(pattern) > 0
end

-- all library sources; the backends guard themselves with #ifdef __linux__ /
-- _WIN32, so compiling every file on every platform is fine.
local lib_sources = { "src/core/*.c", "src/net/*.c", "src/backend/*.c" }
local lib_headers = { "src/include/*.h", "src/core/*.h" }

local root = windows and "build/windows" or "build"

solution "iocore"
  location(root)
  configurations { "debug", "release", "asan", "tsan" }
  language "C"
  includedirs { "src/include", "src/core", "src/net" }
  gccoptions { "-std=c11", "-Wall", "-Wextra" }
  if msvc then
    -- <stdatomic.h> needs Visual Studio 2022 17.5 or later
    cdialect "C11"
    architecture "x86_64"
    buildoptions { "/experimental:c11atomics" }
    warnings "Extra"
    defines { "_CRT_SECURE_NO_WARNINGS" }
  end
  -- debug info in every configuration (premake4 would otherwise link with -s)
  if premake4 then
    flags { "Symbols" }
  else
    symbols "On"
  end

  when("debug")
    defines { "IOC_DEBUG" }
    gccoptions { "-O0" }

  when("release")
    defines { "NDEBUG" }
    gccoptions { "-O2" }

  when("asan")
    defines { "IOC_DEBUG" }
    gccoptions { "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                   "-fno-omit-frame-pointer" }
    gcclinkoptions { "-fsanitize=address,undefined" }

  when("tsan")
    defines { "IOC_DEBUG" }
    gccoptions { "-O1", "-fsanitize=thread", "-fno-omit-frame-pointer" }
    gcclinkoptions { "-fsanitize=thread" }

  -- Strict C11 hides POSIX (O_CLOEXEC, clock_gettime...): ask glibc for
  -- POSIX.1-2008 + BSD, as a plain `cc` would. Files that need GNU
  -- extensions (accept4) still define _GNU_SOURCE themselves.
  when("not windows")
    defines { "_DEFAULT_SOURCE" }

  -- __USE_MINGW_ANSI_STDIO: mingw's own printf family, so %zu and %llu
  -- work on every Windows (msvcrt.dll's do not know them).
  when("windows")
    defines { "_WIN32_WINNT=0x0600", "WIN32_LEAN_AND_MEAN", "__USE_MINGW_ANSI_STDIO=1" }
    -- libgcc linked in: the .exe and .dll files need no mingw DLL beside
    -- them, so they run under wine or on a bare Windows as they are.
    gcclinkoptions { "-static-libgcc" }

  when()


-- Settings every project shares: where outputs go, and system libraries.
-- The static library goes to lib/, everything else to bin/: with both
-- libiocore.a and libiocore.so in one folder, `-liocore` would pick the
-- shared one.
local function common(name, system_links, dir, subdir)
  when()
  for _, cfg in ipairs({ "debug", "release", "asan", "tsan" }) do
    when(cfg)
      targetdir(root .. "/" .. (dir or "bin") .. "/" .. cfg .. (subdir and ("/" .. subdir) or ""))
      objdir(root .. "/obj/" .. cfg .. "/" .. name)
  end
  when()
  if system_links then
    when("not windows")
      links { "uring", "pthread" }
    when("windows")
      links { "mswsock", "ws2_32" }
    when()
  end
end

-- The static library: what C programs and the tests link.
project "iocore"
  kind "StaticLib"
  files(lib_sources)
  files(lib_headers)
  gccoptions { "-fvisibility=hidden" }
  when("not windows")
    gccoptions { "-fPIC" }
  common("iocore", false, "lib")

-- The same library as libiocore.so / iocore.dll (public symbols only).
project "iocore_shared"
  kind "SharedLib"
  targetname "iocore"
  files(lib_sources)
  files(lib_headers)
  defines { "IOC_SHARED_BUILD" }
  gccoptions { "-fvisibility=hidden" }
  common("iocore_shared", true)

-- The Lua 5.4 module, the same src/lua/ code on every platform; what differs
-- (the run() waiter, signals or console events, the lock) is behind
-- src/lua/lplatform.h, with lplatform_posix.c or lplatform_win32.c.
-- With -fvisibility=hidden, luaopen_iocore must be declared IOC_API
-- (LUAMOD_API alone is plain `extern`).
--
-- Linux: build/bin/<config>/iocore.so with the library compiled in, not
-- linked against liblua: a C module takes the Lua API from the interpreter
-- that loads it.
--
-- Windows: build/windows/bin/<config>/lua/iocore.dll (its own folder: the
-- plain C library is an iocore.dll too). A DLL cannot leave the Lua API
-- unresolved, so it links the interpreter's lua54.dll through its import
-- library, and must be loaded by a lua.exe that uses that same lua54.dll
-- (two Lua runtimes in one process corrupt each other). Where Lua comes from:
--   LUA_INCDIR  folder of lua.h/lauxlib.h  (default build/windows/lua/include)
--   LUA_LIBDIR  folder of the import library (default build/windows/lua)
--   LUA_LIB     its name without lib/.lib/.dll.a (default lua54)
-- given as environment variables or --lua-incdir= --lua-libdir= --lua-lib=.
-- The defaults are what `scripts/setup --windows` builds with mingw-w64 from
-- Debian's lua5.4 source package. Visual Studio with a real Lua install:
--   LuaBinaries (lua-5.4.x_Win64_dllw6_lib / _vc17_lib):
--     set LUA_INCDIR=C:\lua54\include & set LUA_LIBDIR=C:\lua54
--   vcpkg (`vcpkg install lua:x64-windows`, the import library is lua.lib):
--     set LUA_INCDIR=%VCPKG_ROOT%\installed\x64-windows\include
--     set LUA_LIBDIR=%VCPKG_ROOT%\installed\x64-windows\lib
--     set LUA_LIB=lua
--   then `premake5 vs2022` (docs/windows.md).
local function lua_setting(name, default)
  if _OPTIONS and _OPTIONS[name:lower():gsub("_", "-")] then
    return _OPTIONS[name:lower():gsub("_", "-")]
  end
  local v = os.getenv(name)
  if v and v ~= "" then return v end
  return default
end
if newoption then
  newoption { trigger = "lua-incdir", value = "PATH", description = "Windows: folder of Lua's headers (LUA_INCDIR)" }
  newoption { trigger = "lua-libdir", value = "PATH", description = "Windows: folder of Lua's import library (LUA_LIBDIR)" }
  newoption { trigger = "lua-lib", value = "NAME", description = "Windows: Lua's import library name (LUA_LIB, default lua54)" }
end

if have("src/lua/*.c") then
  project "iocore_lua"
    kind "SharedLib"
    targetname "iocore"
    targetprefix ""
    files { "src/lua/*.c", "src/lua/*.h" }
    files(lib_sources)
    files(lib_headers)
    defines { "IOC_SHARED_BUILD" }
    gccoptions { "-fvisibility=hidden" }
    if windows then
      exclude { "src/lua/lplatform_posix.c" }
      includedirs { lua_setting("LUA_INCDIR", "build/windows/lua/include") }
      libdirs { lua_setting("LUA_LIBDIR", "build/windows/lua") }
      common("iocore_lua", true, "bin", "lua")
      links { lua_setting("LUA_LIB", "lua54") }
    else
      exclude { "src/lua/lplatform_win32.c" }
      includedirs { "/usr/include/lua5.4" }
      common("iocore_lua", true)
    end
end

-- The C test suite (tests/c/*.c): one binary, `iocore_tests --backend NAME`.
if have("tests/c/*.c") then
  project "iocore_tests"
    kind "ConsoleApp"
    files { "tests/c/*.c", "tests/c/*.h" }
    links { "iocore" }
    common("iocore_tests", true)
end

-- The reliability suite's tools (tests/stress/, docs/reliability.md): the
-- load generator and the launcher that hides io_uring behind seccomp.
-- Linux only; they use nothing of the library.
if have("tests/stress/loadgen.c") and not windows then
  project "loadgen"
    kind "ConsoleApp"
    files { "tests/stress/loadgen.c" }
    -- optimised in every configuration: it must outrun the server it loads
    gccoptions { "-O2" }
    common("loadgen", false)

  project "no_uring"
    kind "ConsoleApp"
    files { "tests/stress/no_uring.c" }
    common("no_uring", false)
end

if os.isfile("examples/echo.c") then
  project "echo"
    kind "ConsoleApp"
    files { "examples/echo.c" }
    links { "iocore" }
    common("echo", true)
end
