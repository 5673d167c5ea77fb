/*
** foreign.c: userdata of other C libraries crossing threads, by the
** protocol of loom.h (loom_register_udata). A registered type is known by
** its metatable name; the sender's export gives a pointer that a loom
** object (class "loom.foreign") carries through messages like any other
** loom object; each receiver imports it; the object's last release drops
** it.
**
** Owns: the table of registered types, under reg_mu (a leaf lock: an
** entry is copied out under it and its functions are called after it is
** released, so a library's code never runs with the lock held); and the
** foreign objects, refcounted as loom objects (messages and the encoder's
** scratch hold the references).
*/
#include <stdlib.h>
#include <string.h>

#include "loom_internal.h"

#define MAX_TYPES 64
#define MAX_NAME 64

typedef struct udtype {
  char name[MAX_NAME];
  loom_udata_ops ops;
} udtype;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static udtype types[MAX_TYPES];
static int ntypes;

typedef struct foreign {
  loom_object obj;
  loom_udata_ops ops; /* a copy: registering anew does not touch it */
  void *p;
} foreign;

static int find_type(const char *name) {
  for (int i = 0; i < ntypes; i++)
    if (strcmp(types[i].name, name) == 0) return i;
  return -1;
}

LOOM_API int loom_register_udata(const char *tname, const loom_udata_ops *ops) {
  if (tname == NULL || strlen(tname) >= MAX_NAME) return -1;
  if (ops != NULL && (ops->export_udata == NULL || ops->import_udata == NULL))
    return -1;
  int rc = 0;
  pthread_mutex_lock(&reg_mu);
  int i = find_type(tname);
  if (ops == NULL) {
    if (i >= 0) types[i] = types[--ntypes];
  } else if (i >= 0) {
    types[i].ops = *ops;
  } else if (ntypes < MAX_TYPES) {
    memcpy(types[ntypes].name, tname, strlen(tname) + 1); /* length checked above */
    types[ntypes++].ops = *ops;
  } else {
    rc = -1;
  }
  pthread_mutex_unlock(&reg_mu);
  return rc;
}

static void foreign_destroy(loom_object *o) {
  foreign *f = (foreign *)o;
  if (f->ops.drop_udata != NULL) f->ops.drop_udata(f->p, f->ops.ud);
  free(f);
}

static void foreign_push(lua_State *L, loom_object *o) {
  foreign *f = (foreign *)o;
  int top = lua_gettop(L);
  f->ops.import_udata(L, f->p, f->ops.ud);
  if (lua_gettop(L) != top + 1)
    luaL_error(L, "a userdata importer must push exactly one value (it pushed %d)",
               lua_gettop(L) - top);
}

static const loom_class foreign_class = {
  "loom.foreign", foreign_destroy, NULL, NULL, foreign_push
};

loom_object *loom__foreign_export(lua_State *L, int idx) {
  int tt = luaL_getmetafield(L, idx, "__name");
  if (tt != LUA_TSTRING) {
    if (tt != LUA_TNIL) lua_pop(L, 1);
    return NULL;
  }
  udtype t;
  int found;
  pthread_mutex_lock(&reg_mu);
  int i = ntypes > 0 ? find_type(lua_tostring(L, -1)) : -1;
  found = i >= 0;
  if (found) t = types[i];
  pthread_mutex_unlock(&reg_mu);
  lua_pop(L, 1);
  if (!found) return NULL;
  /* the exporter is the library's code and may raise: nothing of loom's
  ** is allocated until it has returned */
  void *p = t.ops.export_udata(L, idx, t.ops.ud);
  if (p == NULL)
    luaL_error(L, "cannot copy userdata (%s): its exporter refused it", t.name);
  foreign *f = (foreign *)malloc(sizeof *f);
  if (f == NULL) {
    if (t.ops.drop_udata != NULL) t.ops.drop_udata(p, t.ops.ud);
    luaL_error(L, "not enough memory to copy userdata (%s)", t.name);
  }
  f->ops = t.ops;
  f->p = p;
  loom__object_init(&f->obj, &foreign_class);
  return &f->obj;
}
