/*
** lua_runner.c: a minimal `lua script args...` for the sanitizer builds.
**
** `make asan`/`make tsan` link it with the sanitizer runtime, so that the
** runtime is part of the program instead of being LD_PRELOADed: a preloaded
** libtsan makes every /bin/sh that inherits it crash, and the spec suite
** starts shells (io.popen). It behaves like lua5.4 for this use: globals
** `arg` and `...` as usual, errors with a traceback on stderr, exit status 1
** on error, and the state closed at the end (so loom's exit rules run).
*/
#include <stdio.h>

#include "lauxlib.h"
#include "lualib.h"

#if defined(__SANITIZE_THREAD__)
#include <setjmp.h>
/*
** Debian's liblua5.4 is built with _FORTIFY_SOURCE, so a Lua error is
** thrown with __longjmp_chk, which ThreadSanitizer does not intercept (it
** intercepts longjmp and siglongjmp). Each error that unwound C frames of
** loom then left them on TSan's shadow stack: reports showed stale frames,
** memory grew with every error (about 250 KB per error on a queue put in
** `make stress-tsan`), and an error out of a deep copy hit TSan's CHECK on
** stacks of 65536 frames. The runner is linked with -rdynamic, so this
** exported definition takes liblua's calls and hands them to the
** intercepted longjmp, which unwinds the shadow stack to the matching
** _setjmp.
*/
void __longjmp_chk(jmp_buf env, int val)
  __attribute__((noreturn, visibility("default")));
void __longjmp_chk(jmp_buf env, int val) {
  longjmp(env, val);
}
#endif

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) msg = lua_pushfstring(L, "(error object is a %s value)",
                                         luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s script [args]\n", argv[0]);
    return 2;
  }
  lua_State *L = luaL_newstate();
  if (L == NULL) return 1;
  luaL_openlibs(L);
  lua_createtable(L, argc - 2, 2);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  lua_setglobal(L, "arg");
  lua_pushcfunction(L, traceback);
  int status = luaL_loadfile(L, argv[1]);
  if (status == LUA_OK) {
    for (int i = 2; i < argc; i++) lua_pushstring(L, argv[i]);
    status = lua_pcall(L, argc - 2, 0, 1);
  }
  if (status != LUA_OK) fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
  lua_close(L);
  return status == LUA_OK ? 0 : 1;
}
