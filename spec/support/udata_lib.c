/*
** udata_lib.c: a small C library for the specs of loom's userdata
** protocol (loom.h, loom_register_udata). luaopen_udata_lib's two types
** know nothing of loom:
**   udata.Point: a plain struct {x, y}; crosses threads copied;
**   udata.Counter: a box holding a refcounted C counter; crosses threads
**     shared (every thread's box points to the same counter).
** lib.register() registers both by metatable name through the c_api of
** the loom.core already loaded (as a host that loaded loom with require
** would), lib.unregister() takes them back. lib.stats() tells how many
** counters and exported points are alive, so the specs can check that
** nothing leaks. Built as a module: it never links liblua.
*/
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "loom.h"

#define POINT "udata.Point"
__attribute__((visibility("default"))) int luaopen_udata_lib(lua_State *L);
#define COUNTER "udata.Counter"

typedef struct point { double x, y; int private_; } point;
typedef struct counter { atomic_long value; atomic_int refs; } counter;

static atomic_int live_counters, live_exports, imports;

static counter *counter_retain(counter *c) {
  atomic_fetch_add(&c->refs, 1);
  return c;
}

static void counter_release(counter *c) {
  if (atomic_fetch_sub(&c->refs, 1) == 1) {
    free(c);
    atomic_fetch_sub(&live_counters, 1);
  }
}

static int l_point(lua_State *L) {
  point v = {luaL_checknumber(L, 1), luaL_checknumber(L, 2), lua_toboolean(L, 3)};
  point *p = (point *)lua_newuserdatauv(L, sizeof *p, 0);
  *p = v;
  luaL_setmetatable(L, POINT);
  return 1;
}

static int point_index(lua_State *L) {
  point *p = (point *)luaL_checkudata(L, 1, POINT);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "x") == 0) lua_pushnumber(L, p->x);
  else if (strcmp(k, "y") == 0) lua_pushnumber(L, p->y);
  else lua_pushnil(L);
  return 1;
}

static int point_newindex(lua_State *L) {
  point *p = (point *)luaL_checkudata(L, 1, POINT);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "x") == 0) p->x = luaL_checknumber(L, 3);
  else if (strcmp(k, "y") == 0) p->y = luaL_checknumber(L, 3);
  else return luaL_error(L, "no field %s", k);
  return 0;
}

typedef struct box { counter *c; } box;

static void push_counter(lua_State *L, counter *c) { /* takes a reference */
  box *b = (box *)lua_newuserdatauv(L, sizeof *b, 0);
  b->c = c;
  luaL_setmetatable(L, COUNTER);
}

static int l_counter(lua_State *L) {
  counter *c = (counter *)malloc(sizeof *c);
  if (c == NULL) return luaL_error(L, "out of memory");
  atomic_init(&c->value, 0);
  atomic_init(&c->refs, 1);
  atomic_fetch_add(&live_counters, 1);
  push_counter(L, c);
  return 1;
}

static int counter_incr(lua_State *L) {
  box *b = (box *)luaL_checkudata(L, 1, COUNTER);
  long n = (long)luaL_optinteger(L, 2, 1);
  lua_pushinteger(L, atomic_fetch_add(&b->c->value, n) + n);
  return 1;
}

static int counter_value(lua_State *L) {
  box *b = (box *)luaL_checkudata(L, 1, COUNTER);
  lua_pushinteger(L, atomic_load(&b->c->value));
  return 1;
}

static int counter_same(lua_State *L) {
  box *a = (box *)luaL_checkudata(L, 1, COUNTER);
  box *b = (box *)luaL_checkudata(L, 2, COUNTER);
  lua_pushboolean(L, a->c == b->c);
  return 1;
}

static int counter_gc(lua_State *L) {
  box *b = (box *)luaL_checkudata(L, 1, COUNTER);
  if (b->c != NULL) counter_release(b->c);
  b->c = NULL;
  return 0;
}

/* ---- the protocol: what a host adds, without touching the above ---- */

static void *point_export(lua_State *L, int idx, void *ud) {
  (void)ud;
  point *p = (point *)luaL_checkudata(L, idx, POINT);
  if (p->private_) return NULL; /* refused */
  point *copy = (point *)malloc(sizeof *copy);
  if (copy == NULL) luaL_error(L, "out of memory");
  *copy = *p;
  atomic_fetch_add(&live_exports, 1);
  return copy;
}

/* The receiving thread may not have loaded the library yet: its
** metatables come from loading it. */
static void need_library(lua_State *L, const char *tname) {
  if (luaL_getmetatable(L, tname) == LUA_TNIL) {
    luaL_requiref(L, "udata_lib", luaopen_udata_lib, 0);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static void point_import(lua_State *L, void *p, void *ud) {
  (void)ud;
  need_library(L, POINT);
  point *q = (point *)lua_newuserdatauv(L, sizeof *q, 0);
  *q = *(const point *)p;
  luaL_setmetatable(L, POINT);
  atomic_fetch_add(&imports, 1);
}

static void point_drop(void *p, void *ud) {
  (void)ud;
  free(p);
  atomic_fetch_sub(&live_exports, 1);
}

static void *counter_export(lua_State *L, int idx, void *ud) {
  (void)ud;
  box *b = (box *)luaL_checkudata(L, idx, COUNTER);
  return counter_retain(b->c);
}

static void counter_import(lua_State *L, void *p, void *ud) {
  (void)ud;
  need_library(L, COUNTER);
  push_counter(L, counter_retain((counter *)p));
  atomic_fetch_add(&imports, 1);
}

static void counter_drop(void *p, void *ud) {
  (void)ud;
  counter_release((counter *)p);
}

/* An importer that breaks the rule (pushes two values). */
static void bad_import(lua_State *L, void *p, void *ud) {
  (void)p;
  (void)ud;
  lua_pushnil(L);
  lua_pushnil(L);
}

static const loom_c_api *api(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "loom.core");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "c_api");
  const loom_c_api *a = (const loom_c_api *)lua_touserdata(L, -1);
  lua_pop(L, 2);
  if (a == NULL || a->version != LOOM_C_API_VERSION)
    luaL_error(L, "loom.core has no c_api of version %d", LOOM_C_API_VERSION);
  return a;
}

/* register([bad]): registers both types (bad: the point's importer
** pushes two values); returns the two return codes. */
static int l_register(lua_State *L) {
  const loom_c_api *a = api(L);
  loom_udata_ops pops = {point_export, lua_toboolean(L, 1) ? bad_import : point_import,
                         point_drop, NULL};
  loom_udata_ops cops = {counter_export, counter_import, counter_drop, NULL};
  lua_pushinteger(L, a->register_udata(POINT, &pops));
  lua_pushinteger(L, a->register_udata(COUNTER, &cops));
  return 2;
}

static int l_unregister(lua_State *L) {
  const loom_c_api *a = api(L);
  lua_pushinteger(L, a->register_udata(POINT, NULL));
  lua_pushinteger(L, a->register_udata(COUNTER, NULL));
  return 2;
}

/* register_invalid(): the calls that must fail, with their codes */
static int l_register_invalid(lua_State *L) {
  const loom_c_api *a = api(L);
  loom_udata_ops none = {NULL, NULL, NULL, NULL};
  lua_pushinteger(L, a->register_udata(NULL, &none));
  lua_pushinteger(L, a->register_udata("x", &none));
  char longname[80];
  memset(longname, 'a', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  loom_udata_ops ok = {point_export, point_import, NULL, NULL};
  lua_pushinteger(L, a->register_udata(longname, &ok));
  return 3;
}

static int l_stats(lua_State *L) {
  lua_pushinteger(L, atomic_load(&live_counters));
  lua_pushinteger(L, atomic_load(&live_exports));
  lua_pushinteger(L, atomic_load(&imports));
  return 3;
}

int luaopen_udata_lib(lua_State *L) {
  if (luaL_newmetatable(L, POINT)) {
    lua_pushcfunction(L, point_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, point_newindex);
    lua_setfield(L, -2, "__newindex");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, COUNTER)) {
    static const luaL_Reg m[] = {{"incr", counter_incr}, {"value", counter_value},
                                 {"same", counter_same}, {NULL, NULL}};
    luaL_newlib(L, m);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, counter_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  static const luaL_Reg f[] = {
    {"point", l_point}, {"counter", l_counter}, {"register", l_register},
    {"unregister", l_unregister}, {"register_invalid", l_register_invalid},
    {"stats", l_stats}, {NULL, NULL}
  };
  luaL_newlib(L, f);
  return 1;
}
