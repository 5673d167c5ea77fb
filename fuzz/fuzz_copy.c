/*
** fuzz_copy.c: a libFuzzer target for loom's copier (csrc/transfer.c).
**
** Each input runs in a fresh lua_State, a loom thread's: the Lua program
** fuzz/fuzz_copy.lua (embedded at build time as fuzz_copy_lua.h) reads
** the input bytes as a little program that builds values, copies them by
** loom.copy, queues, threads and shared tables, and checks every copy
** against its original. Any error that leaves it (a wrong copy is raised
** as "FUZZ FAIL: ...") aborts, so libFuzzer keeps the input; the
** sanitizers catch what goes wrong in C. The thread's state is closed
** when the input is done, which frees everything it made, so memory that
** is left unreachable is loom's leak.
**
** Raw bytes are never given to the decoder: messages never come from
** outside the process and carry Lua bytecode, which Lua 5.4 cannot verify
** (fuzz/README.md).
**
** The same file builds without libFuzzer: fuzz/replay.c calls
** LLVMFuzzerTestOneInput for each file of the corpus.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lualib.h"
#include "loom.h"

#include "fuzz_copy_lua.h" /* fuzz_copy_lua[], the generator's source */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct chunk {
  char *p;
  size_t len, cap;
} chunk;

static chunk generator; /* the generator as bytecode, compiled once */

static int chunk_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  chunk *c = (chunk *)ud;
  (void)L;
  if (c->len + sz > c->cap) {
    size_t ncap = c->cap ? c->cap : 4096;
    while (ncap < c->len + sz) ncap *= 2;
    char *np = (char *)realloc(c->p, ncap);
    if (np == NULL) return 1;
    c->p = np;
    c->cap = ncap;
  }
  memcpy(c->p + c->len, p, sz);
  c->len += sz;
  return 0;
}

static void compile_generator(void) {
  lua_State *L = luaL_newstate();
  if (L == NULL ||
      luaL_loadbufferx(L, (const char *)fuzz_copy_lua, sizeof fuzz_copy_lua - 1,
                       "=fuzz_copy.lua", "t") != LUA_OK ||
      lua_dump(L, chunk_writer, &generator, 0) != 0) {
    fprintf(stderr, "fuzz_copy: cannot compile the generator: %s\n",
            L ? lua_tostring(L, -1) : "no memory");
    abort();
  }
  lua_close(L);
}

/* The host's side of an input: the generator runs in a loom thread, in a
** state of its own that closes when the input is done. */
static const char driver[] =
  "local loom = require 'loom.core'\n"
  "local code = ...\n"
  "return function(bytes)\n"
  "  local t = loom.thread(function(c, b)\n"
  "    assert(load(c, '=fuzz_copy.lua', 'b'))()(b)\n"
  "    if os.getenv('FUZZ_ALL') then return end -- finding 1\n"
  "    return true -- no results: see fuzz/crashes/README.md, finding 1\n"
  "  end, code, bytes)\n"
  "  local ok, err = pcall(t.result, t)\n"
  "  t = nil\n"
  "  collectgarbage()\n"
  "  if not ok then error(err, 0) end\n"
  "end\n";

static lua_State *host; /* never closed: see open_host */

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL)
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* The host state opens loom once for the whole run and is never closed:
** once the state that opened loom closes, loom starts no thread any more
** in this process (docs/embedding.md, "Shutdown"). Each input runs in a
** loom thread instead, whose state is new and is closed at its end. */
static void open_host(void) {
  compile_generator();
  host = luaL_newstate();
  if (host == NULL) abort();
  luaL_openlibs(host);
  luaL_getsubtable(host, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(host, luaopen_loom_core);
  lua_setfield(host, -2, "loom.core");
  lua_pop(host, 1);
  lua_pushcfunction(host, traceback);
  if (luaL_loadbufferx(host, driver, sizeof driver - 1, "=driver", "t") != LUA_OK) {
    fprintf(stderr, "fuzz_copy: %s\n", lua_tostring(host, -1));
    abort();
  }
  lua_pushlstring(host, generator.p, generator.len);
  if (lua_pcall(host, 1, 1, 1) != LUA_OK) {
    fprintf(stderr, "fuzz_copy: %s\n", lua_tostring(host, -1));
    abort();
  }
  lua_remove(host, 1); /* the driver's function stays at index 1 */
  free(generator.p);
  generator.p = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (host == NULL) open_host();
  lua_settop(host, 1);
  lua_pushcfunction(host, traceback);
  lua_pushvalue(host, 1);
  lua_pushlstring(host, (const char *)data, size);
  if (lua_pcall(host, 1, 0, 2) != LUA_OK) {
    fprintf(stderr, "fuzz_copy: %s\n", lua_tostring(host, -1));
    abort();
  }
  lua_settop(host, 1);
  return 0;
}
