/* os.execute and io.popen called from a handler.
 *
 * Handlers run on worker threads, which block signals, and a child process
 * inherits the signal mask of the thread that starts it: a command started
 * from a handler would ignore SIGTERM and SIGINT for its whole life (a
 * `sleep 60` that a supervisor's TERM does not end). Fork handlers (atfork)
 * cannot help: the C library starts popen/system children with
 * posix_spawn, which runs none. So the module replaces the two functions (once per
 * state, like coroutine.resume in ldispatch.c) by versions that behave
 * exactly as the originals (same results, same errors) and differ only on
 * a thread whose signal mask is not the process's usual one: there the
 * child is started with the mask the process had when the module was
 * loaded (lplatform.h, "child processes"). Elsewhere (the main thread, or
 * Windows) the originals run. */
#include "lbind.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* io.popen's file: liolib's stream header first, so every file method
 * works on it; closing it waits for the child. */
typedef struct child_stream {
  luaL_Stream s;
  long pid;
} child_stream;

static int child_close(lua_State *L) {
  child_stream *p = (child_stream *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
  fclose(p->s.f);
  int status = 0, rc = lp_child_wait(p->pid, &status);
  if (rc < 0) {
    errno = -rc;
    return luaL_fileresult(L, 0, NULL);
  }
  errno = 0;
  return luaL_execresult(L, status);
}

/* os.execute([command]); upvalue 1: the original. */
static int child_execute(lua_State *L) {
  const char *cmd = luaL_optstring(L, 1, NULL);
  if (!cmd || !lp_child_needed()) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
  }
  long pid = lp_child_spawn(cmd, 0, NULL);
  int status = 0, rc = pid < 0 ? (int)pid : lp_child_wait(pid, &status);
  if (rc < 0) {
    errno = -rc;
    return luaL_fileresult(L, 0, NULL);
  }
  errno = 0;
  return luaL_execresult(L, status);
}

/* io.popen(prog [, mode]); upvalue 1: the original. */
static int child_popen(lua_State *L) {
  const char *cmd = luaL_checkstring(L, 1);
  const char *mode = luaL_optstring(L, 2, "r");
  if (!lp_child_needed()) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
  }
  luaL_argcheck(L, (mode[0] == 'r' || mode[0] == 'w') && mode[1] == '\0', 2, "invalid mode");
  child_stream *p = (child_stream *)lua_newuserdatauv(L, sizeof *p, 0);
  p->s.f = NULL;
  p->s.closef = NULL; /* a closed file until the child runs: __gc leaves it alone */
  p->pid = 0;
  luaL_setmetatable(L, LUA_FILEHANDLE);
  FILE *f = NULL;
  long pid = lp_child_spawn(cmd, mode[0], &f);
  if (pid < 0) {
    errno = (int)-pid;
    return luaL_fileresult(L, 0, cmd);
  }
  p->pid = pid;
  p->s.f = f;
  p->s.closef = child_close;
  return 1;
}

/* Replaces table[name] by f with the original as its upvalue, unless it is
 * missing or replaced already. */
static void wrap(lua_State *L, const char *lib, const char *name, lua_CFunction f) {
  if (lua_getglobal(L, lib) != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, name);
  if (lua_iscfunction(L, -1) && lua_tocfunction(L, -1) != f) {
    lua_pushcclosure(L, f, 1);
    lua_setfield(L, -2, name);
  } else {
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

void lb_open_child_guard(lua_State *L) {
  lp_child_init();
  wrap(L, "os", "execute", child_execute);
  wrap(L, "io", "popen", child_popen);
}
