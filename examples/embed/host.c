/*
** host.c: a C application that embeds Lua 5.4 and loom.
**
** It links loom's C core into the program, opens it into its own state,
** and registers a hook so that every thread loom starts gets the host's
** own library ("host") before any user code runs. Then it runs a script
** (argv[1]) whose threads call back into the host.
*/
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "lauxlib.h"
#include "lualib.h"
#include "loom.h"

static atomic_int calls; /* host state shared by all threads */

/* host.record(name): counts a call and returns the running total. */
static int host_record(lua_State *L) {
  const char *who = luaL_checkstring(L, 1);
  int n = atomic_fetch_add(&calls, 1) + 1;
  lua_pushfstring(L, "%s is call %d", who, n);
  return 1;
}

static int open_host(lua_State *L) {
  static const luaL_Reg funcs[] = {{"record", host_record}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}

/* Runs on every new loom thread state, before the thread's function. */
static void thread_state_hook(lua_State *L, void *ud) {
  luaL_requiref(L, "host", open_host, 1); /* global `host` + require */
  lua_pop(L, 1);
  lua_pushstring(L, (const char *)ud);
  lua_setglobal(L, "HOST_NAME");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s script.lua\n", argv[0]);
    return 2;
  }
  loom_set_state_hook(thread_state_hook, (void *)"embed-example");
  loom_set_stack_size(1u << 20);
  loom_set_default_workers(2);

  lua_State *L = luaL_newstate();
  if (L == NULL) return 1;
  luaL_openlibs(L);
  luaL_requiref(L, "host", open_host, 1);
  lua_pop(L, 1);
  /* loom's C core is linked in: preload it so require "loom" finds it */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_loom_core);
  lua_setfield(L, -2, "loom.core");
  lua_pop(L, 1);

  int status = luaL_dofile(L, argv[1]);
  if (status != LUA_OK) fprintf(stderr, "%s\n", lua_tostring(L, -1));
  lua_close(L); /* joins loom's non-daemon threads first */
  printf("host: %d calls in total\n", atomic_load(&calls));
  return status == LUA_OK ? 0 : 1;
}
