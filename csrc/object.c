/*
** object.c: refcounted native objects and their boxes in lua_States.
**
** Owns: the class metatables (one per class per state) and each state's
** box cache (registry[&box_cache_key], weak values: object address ->
** box). No locks: the refcount is atomic, and a state's registry is only
** ever touched by the thread running that state.
*/
#include <stdio.h>

#include "loom_internal.h"

static const char class_key = 'c';     /* mt[&class_key] = class (lightud) */
static const char box_cache_key = 'b'; /* registry: weak object -> box */

/* A box: the object (NULL once closed), and whether the state's cache
** knows it. loom_object ** casts of the userdata see the first field. */
typedef struct box {
  loom_object *o;
  int cached;
} box_t;

void loom__object_init(loom_object *o, const loom_class *cls) {
  o->cls = cls;
  atomic_init(&o->refs, 1);
}

void loom__retain(loom_object *o) {
  atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
}

void loom__release(loom_object *o) {
  if (o == NULL) return;
  if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1)
    o->cls->destroy(o);
}

static loom_object **box_of(lua_State *L, int idx, const loom_class **cls);

/* __gc: drop the box's reference; safe to call twice, and a no-op on
** anything that is not a box of this class (upvalue 1). */
static int box_gc(lua_State *L) {
  const loom_class *cls;
  loom_object **box = box_of(L, 1, &cls);
  if (box != NULL && *box != NULL &&
      cls == (const loom_class *)lua_touserdata(L, lua_upvalueindex(1))) {
    loom_object *o = *box;
    *box = NULL;
    loom__release(o);
  }
  return 0;
}

int loom__tostring_closed(lua_State *L) {
  const loom_class *cls;
  loom_object **box = box_of(L, 1, &cls);
  if (box == NULL || *box != NULL) return 0;
  lua_pushfstring(L, "%s (closed)", cls->name);
  return 1;
}

static int box_tostring(lua_State *L) {
  const loom_class *cls;
  loom_object **box = box_of(L, 1, &cls);
  if (box == NULL) /* reached through debug with something else */
    return luaL_typeerror(L, 1, "loom object");
  if (*box == NULL) lua_pushfstring(L, "%s (closed)", cls->name);
  else lua_pushfstring(L, "%s: %p", cls->name, (void *)*box);
  return 1;
}

void loom__register_class(lua_State *L, const loom_class *cls) {
  if (!luaL_newmetatable(L, cls->name)) {
    lua_pop(L, 1);
    return;
  }
  lua_pushlightuserdata(L, (void *)cls);
  lua_rawsetp(L, -2, &class_key);
  lua_pushlightuserdata(L, (void *)cls);
  lua_pushcclosure(L, box_gc, 1);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, box_tostring);
  lua_setfield(L, -2, "__tostring");
  if (cls->methods != NULL) { /* __methods lets a custom __index find them */
    lua_newtable(L);
    luaL_setfuncs(L, cls->methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__methods");
    lua_setfield(L, -2, "__index");
  }
  if (cls->meta != NULL) luaL_setfuncs(L, cls->meta, 0);
  /* getmetatable(obj) gives the class name; the metamethods (__gc above
  ** all) stay out of reach of plain Lua code */
  lua_pushstring(L, cls->name);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
}

/* Pushes the metatable of cls, opening loom.core in this state first if a
** value of this class arrives before the state ever required loom. */
static void push_class_meta(lua_State *L, const loom_class *cls) {
  if (luaL_getmetatable(L, cls->name) != LUA_TTABLE) {
    lua_pop(L, 1);
    luaL_requiref(L, "loom.core", luaopen_loom_core, 0);
    lua_pop(L, 1);
    if (luaL_getmetatable(L, cls->name) != LUA_TTABLE) {
      lua_pop(L, 1);
      loom__register_class(L, cls);
      luaL_getmetatable(L, cls->name);
    }
  }
}

static void push_box_cache(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &box_cache_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_newtable(L);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &box_cache_key);
}

/* Pushes the cached box of o and returns 1, or pushes the cache and
** returns 0. */
static int find_box(lua_State *L, loom_object *o) {
  push_box_cache(L);
  if (lua_rawgetp(L, -1, o) == LUA_TUSERDATA) {
    loom_object **box = (loom_object **)lua_touserdata(L, -1);
    if (*box == o) {
      lua_remove(L, -2);
      return 1;
    }
  }
  lua_pop(L, 1);
  return 0;
}

/* Makes a new box below nothing; the cache is on top and stays there.
** The box is created empty (NULL) first so that an allocation error
** cannot leak the reference it is about to own. */
static void new_box(lua_State *L, loom_object *o) {
  box_t *b = (box_t *)lua_newuserdatauv(L, sizeof *b, 0);
  b->o = NULL;
  b->cached = 1;
  loom_object **box = &b->o;
  push_class_meta(L, o->cls);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, -3, o); /* cache[o] = box */
  lua_remove(L, -2);     /* drop the cache */
  *box = o;
}


void loom__push_object(lua_State *L, loom_object *o) {
  if (find_box(L, o)) return;
  loom__retain(o);
  new_box(L, o); /* on a memory error the reference above leaks; rare */
}

/* A box for a brand-new object skips the cache (a table write, and work
** for the collector, per future): nothing can push the object here again
** before it leaves this state through the copier, which then caches its
** box (loom__to_any_object). */
void loom__push_new(lua_State *L, loom_object *o) {
  box_t *b = (box_t *)lua_newuserdatauv(L, sizeof *b, 0);
  b->o = NULL;
  b->cached = 0;
  push_class_meta(L, o->cls);
  lua_setmetatable(L, -2);
  b->o = o;
}

void loom__push_owned(lua_State *L, loom_object *o) {
  if (find_box(L, o)) {
    loom__release(o); /* the cached box already holds one */
    return;
  }
  new_box(L, o);
}

static loom_object **box_of(lua_State *L, int idx, const loom_class **cls) {
  loom_object **box = (loom_object **)lua_touserdata(L, idx);
  if (box == NULL || lua_type(L, idx) != LUA_TUSERDATA ||
      !lua_getmetatable(L, idx))
    return NULL;
  lua_rawgetp(L, -1, &class_key);
  *cls = (const loom_class *)lua_touserdata(L, -1);
  lua_pop(L, 2);
  return *cls != NULL ? box : NULL;
}

loom_object *loom__test_object(lua_State *L, int idx, const loom_class *cls) {
  const loom_class *c;
  loom_object **box = box_of(L, idx, &c);
  return (box != NULL && c == cls) ? *box : NULL;
}

loom_object *loom__to_any_object(lua_State *L, int idx) {
  const loom_class *c;
  loom_object **bp = box_of(L, idx, &c);
  if (bp == NULL) return NULL;
  box_t *b = (box_t *)bp;
  if (!b->cached && b->o != NULL) { /* leaving: it may come back here */
    idx = lua_absindex(L, idx);
    push_box_cache(L);
    lua_pushvalue(L, idx);
    lua_rawsetp(L, -2, b->o);
    lua_pop(L, 1);
    b->cached = 1;
  }
  return b->o;
}

loom_object *loom__check_self(lua_State *L, const loom_class *cls) {
  if (lua_getmetatable(L, 1)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (same) {
      loom_object *o = *(loom_object **)lua_touserdata(L, 1);
      if (o != NULL && o->cls == cls) return o;
    }
  }
  return loom__check_object(L, 1, cls);
}

void loom__bind_methods(lua_State *L, const loom_class *cls) {
  luaL_getmetatable(L, cls->name);
  lua_getfield(L, -1, "__methods");
  for (const luaL_Reg *r = cls->methods; r->name != NULL; r++) {
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, r->func, 1);
    lua_setfield(L, -2, r->name);
  }
  lua_pop(L, 2);
}

const loom_class *loom__box_class(lua_State *L, int idx) {
  const loom_class *c;
  return box_of(L, idx, &c) != NULL ? c : NULL;
}

loom_object *loom__check_object(lua_State *L, int idx, const loom_class *cls) {
  const loom_class *c;
  loom_object **box = box_of(L, idx, &c);
  if (box == NULL || c != cls) luaL_typeerror(L, idx, cls->name);
  if (*box == NULL) luaL_argerror(L, idx, "object is closed");
  return *box;
}
