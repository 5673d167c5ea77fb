/*
** host.c: a C application that embeds Lua 5.4 and loom.
**
** It links loom's C core into the program, opens it into its own state,
** and registers a hook so that every thread loom starts gets the host's
** own library ("host") before any user code runs. Then it runs a script
** (argv[1]) whose threads call back into the host.
**
** The host's library has two userdata types, and the host makes both cross
** loom threads with loom_register_udata (loom.h), without changing the
** library's functions:
**   host.Point  {x, y}: copied (each thread gets its own);
**   host.Tally  a refcounted C counter: shared (every thread's box points
**               at the same counter, which lives until the last box and
**               the last message holding it are gone).
*/
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- host.Point: a plain struct ---- */
typedef struct point { double x, y; } point;

static int point_new(lua_State *L) {
  point v = {luaL_checknumber(L, 1), luaL_checknumber(L, 2)};
  *(point *)lua_newuserdatauv(L, sizeof(point), 0) = v;
  luaL_setmetatable(L, "host.Point");
  return 1;
}

static int point_index(lua_State *L) {
  point *p = (point *)luaL_checkudata(L, 1, "host.Point");
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "x") == 0) lua_pushnumber(L, p->x);
  else if (strcmp(k, "y") == 0) lua_pushnumber(L, p->y);
  else lua_pushnil(L);
  return 1;
}

static int point_tostring(lua_State *L) {
  point *p = (point *)luaL_checkudata(L, 1, "host.Point");
  lua_pushfstring(L, "Point(%f, %f)", p->x, p->y);
  return 1;
}

/* ---- host.Tally: a box holding a refcounted counter ---- */
typedef struct tally { atomic_long n; atomic_int refs; } tally;
static atomic_int live_tallies;

static tally *tally_retain(tally *t) {
  atomic_fetch_add(&t->refs, 1);
  return t;
}

static void tally_release(tally *t) {
  if (atomic_fetch_sub(&t->refs, 1) == 1) {
    free(t);
    atomic_fetch_sub(&live_tallies, 1);
  }
}

static void tally_push(lua_State *L, tally *t) { /* the box takes t's reference */
  *(tally **)lua_newuserdatauv(L, sizeof(tally *), 0) = t;
  luaL_setmetatable(L, "host.Tally");
}

static int tally_new(lua_State *L) {
  tally *t = (tally *)malloc(sizeof *t);
  if (t == NULL) return luaL_error(L, "out of memory");
  atomic_init(&t->n, 0);
  atomic_init(&t->refs, 1);
  atomic_fetch_add(&live_tallies, 1);
  tally_push(L, t);
  return 1;
}

static int tally_add(lua_State *L) {
  tally *t = *(tally **)luaL_checkudata(L, 1, "host.Tally");
  lua_Integer k = luaL_optinteger(L, 2, 1);
  lua_pushinteger(L, atomic_fetch_add(&t->n, (long)k) + k);
  return 1;
}

static int tally_value(lua_State *L) {
  tally *t = *(tally **)luaL_checkudata(L, 1, "host.Tally");
  lua_pushinteger(L, atomic_load(&t->n));
  return 1;
}

static int tally_gc(lua_State *L) {
  tally **b = (tally **)luaL_checkudata(L, 1, "host.Tally");
  if (*b != NULL) tally_release(*b);
  *b = NULL;
  return 0;
}

static int open_host(lua_State *L) {
  static const luaL_Reg funcs[] = {{"record", host_record}, {"point", point_new},
                                   {"tally", tally_new}, {NULL, NULL}};
  if (luaL_newmetatable(L, "host.Point")) {
    lua_pushcfunction(L, point_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, point_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, "host.Tally")) {
    static const luaL_Reg m[] = {{"add", tally_add}, {"value", tally_value}, {NULL, NULL}};
    luaL_newlib(L, m);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, tally_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}

/* ---- how the two types cross loom threads (loom.h) ---- */
/* Every thread state has the host library (the hook below), so the
** metatables are there when a value arrives. */
static void *point_export(lua_State *L, int idx, void *ud) {
  (void)ud;
  point *copy = (point *)malloc(sizeof *copy);
  if (copy == NULL) {
    luaL_error(L, "out of memory");
    return NULL;
  }
  *copy = *(point *)luaL_checkudata(L, idx, "host.Point");
  return copy;
}

static void point_import(lua_State *L, void *p, void *ud) {
  (void)ud;
  *(point *)lua_newuserdatauv(L, sizeof(point), 0) = *(point *)p;
  luaL_setmetatable(L, "host.Point");
}

static void point_drop(void *p, void *ud) {
  (void)ud;
  free(p);
}

static void *tally_export(lua_State *L, int idx, void *ud) {
  (void)ud;
  return tally_retain(*(tally **)luaL_checkudata(L, idx, "host.Tally"));
}

static void tally_import(lua_State *L, void *p, void *ud) {
  (void)ud;
  tally_push(L, tally_retain((tally *)p));
}

static void tally_drop(void *p, void *ud) {
  (void)ud;
  tally_release((tally *)p);
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
  static const loom_udata_ops point_ops = {point_export, point_import, point_drop, NULL};
  static const loom_udata_ops tally_ops = {tally_export, tally_import, tally_drop, NULL};
  if (loom_register_udata("host.Point", &point_ops) != 0 ||
      loom_register_udata("host.Tally", &tally_ops) != 0)
    return 1;

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
  printf("host: %d calls in total, %d tallies left\n", atomic_load(&calls),
         atomic_load(&live_tallies));
  return status == LUA_OK ? 0 : 1;
}
