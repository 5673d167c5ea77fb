/*
** shared.c: loom.shared, a thread-safe table shared by reference.
**
** A shared table is a hash map in C (open addressing, linear probing)
** from copied keys (strings, integers, floats, booleans) to copied
** values. Scalars and short strings live inline in the slot, so reads,
** writes and incr() of them never allocate; anything else is a "blob": a
** refcounted loom_value (transfer rules), so a reader can take it out of
** the lock with one atomic increment and decode it after unlocking.
**
** Locks: `mu` guards everything in the object and is a leaf (only
** malloc/free and loom__wait's registration lock run inside it). On top
** of it sits a re-entrant "owner" lock taken by guard(), with() and
** update(): while a thread owns it, every other thread's access waits on
** `cv` (cancellably); the owner itself goes through. No Lua error is
** raised, and no blob is freed, with `mu` held.
*/
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loom_internal.h"

#define SHARED_META "loom.shared"
#define GUARD_META "loom.SharedGuard"
#define SNAP_META "loom.SharedSnapshot"
#define HOLDER_META "loom.shared.holder"
#define SSTR_MAX 22

/* the owner lock's notion of "this thread": loom.get_ident() */
#define self_ident() loom__thread_ident()

/* ------------------------------------------------------------------ */
/* keys and values                                                      */

enum { K_EMPTY, K_TOMB, K_FALSE, K_TRUE, K_INT, K_FLT, K_STR };

typedef struct skey {
  int kind;
  uint64_t hash;
  union {
    lua_Integer i;
    lua_Number n;
    struct {
      const char *p; /* owned (malloc) once stored in a slot */
      size_t len;
    } s;
  } u;
} skey;

typedef struct blob {
  atomic_int refs;
  loom_value v;
} blob;

enum { V_NONE, V_FALSE, V_TRUE, V_INT, V_FLT, V_SSTR, V_BLOB };

typedef struct sval {
  uint8_t kind;
  uint8_t len; /* V_SSTR */
  union {
    lua_Integer i;
    lua_Number n;
    char s[SSTR_MAX];
    blob *b;
  } u;
} sval;

typedef struct slot {
  skey key;
  sval val;
} slot;

static uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

static uint64_t hash_bytes(const char *p, size_t len) {
  uint64_t h = 0xcbf29ce484222325ULL ^ len;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)p[i];
    h *= 0x100000001b3ULL;
  }
  return mix64(h);
}

/* Reads the key at idx (borrowing a string's bytes). Raises on keys that
** cannot be copied; call with no mutex held. */
static void read_key(lua_State *L, int idx, skey *k) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING:
      k->kind = K_STR;
      k->u.s.p = lua_tolstring(L, idx, &k->u.s.len);
      k->hash = hash_bytes(k->u.s.p, k->u.s.len);
      return;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        k->kind = K_INT;
        k->u.i = lua_tointeger(L, idx);
      } else {
        lua_Number n = lua_tonumber(L, idx);
        lua_Integer i;
        if (n != n) luaL_error(L, "loom.shared key is NaN");
        if (lua_numbertointeger(n, &i) && (lua_Number)i == n) {
          k->kind = K_INT; /* 2.0 and 2 are the same key, as in Lua */
          k->u.i = i;
        } else {
          k->kind = K_FLT;
          k->u.n = n;
          uint64_t bits;
          memcpy(&bits, &n, sizeof bits);
          k->hash = mix64(bits ^ 0x5555);
          return;
        }
      }
      k->hash = mix64((uint64_t)k->u.i);
      return;
    case LUA_TBOOLEAN:
      k->kind = lua_toboolean(L, idx) ? K_TRUE : K_FALSE;
      k->hash = mix64((uint64_t)k->kind * 0x9e3779b97f4a7c15ULL);
      return;
    case LUA_TNIL:
      luaL_error(L, "loom.shared key is nil");
      return;
    default:
      luaL_error(L, "loom.shared keys must be strings, numbers or booleans "
                 "(got %s)", luaL_typename(L, idx));
  }
}

static int key_eq(const skey *a, const skey *b) {
  if (a->kind != b->kind || a->hash != b->hash) return 0;
  switch (a->kind) {
    case K_INT: return a->u.i == b->u.i;
    case K_FLT: return a->u.n == b->u.n;
    case K_STR:
      return a->u.s.len == b->u.s.len &&
             memcmp(a->u.s.p, b->u.s.p, a->u.s.len) == 0;
    default: return 1;
  }
}

static void push_key(lua_State *L, const skey *k) {
  switch (k->kind) {
    case K_FALSE: lua_pushboolean(L, 0); break;
    case K_TRUE: lua_pushboolean(L, 1); break;
    case K_INT: lua_pushinteger(L, k->u.i); break;
    case K_FLT: lua_pushnumber(L, k->u.n); break;
    default: lua_pushlstring(L, k->u.s.p, k->u.s.len); break;
  }
}

static void blob_release(blob *b) {
  if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) {
    loom__value_free(&b->v);
    free(b);
  }
}

/* Drops what v owns (never with mu held: a blob may hold the last
** reference of another object). */
static void sval_free(sval *v) {
  if (v->kind == V_BLOB) blob_release(v->u.b);
  v->kind = V_NONE;
}

/* Reads the value at idx, to be stored in owner, into v; nil gives V_NONE.
** Raises like loom__value_set; call with no mutex held. */
static void read_value(lua_State *L, int idx, sval *v, loom_object *owner) {
  switch (lua_type(L, idx)) {
    case LUA_TNIL: v->kind = V_NONE; return;
    case LUA_TBOOLEAN: v->kind = lua_toboolean(L, idx) ? V_TRUE : V_FALSE;
      return;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        v->kind = V_INT;
        v->u.i = lua_tointeger(L, idx);
      } else {
        v->kind = V_FLT;
        v->u.n = lua_tonumber(L, idx);
      }
      return;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      if (len <= SSTR_MAX) {
        v->kind = V_SSTR;
        v->len = (uint8_t)len;
        memcpy(v->u.s, s, len);
        return;
      }
      break;
    }
    default: break;
  }
  loom_value tmp;
  /* a reference to the table itself is not counted: it would keep the
  ** table alive for ever (s.me = s) */
  loom__value_set_owned(L, idx, &tmp, "value", owner);
  blob *b = (blob *)malloc(sizeof *b);
  if (b == NULL) {
    loom__value_free(&tmp);
    luaL_error(L, "not enough memory to store a value in loom.shared");
  }
  atomic_init(&b->refs, 1);
  b->v = tmp;
  v->kind = V_BLOB;
  v->u.b = b;
}

/* ------------------------------------------------------------------ */
/* the object                                                           */

typedef struct shared_obj {
  loom_object obj;
  pthread_mutex_t mu;
  pthread_cond_t cv;   /* the owner lock was released */
  uint64_t owner;      /* self_ident() of the owner-lock holder, or 0 */
  lua_Integer depth;   /* its recursion depth */
  int waiters;         /* threads waiting for the owner lock */
  slot *slots;         /* cap is 0 or a power of two */
  size_t cap, count, tombs;
} shared_obj;

static const loom_class shared_class;

static void shared_destroy(loom_object *o) {
  shared_obj *s = (shared_obj *)o;
  for (size_t i = 0; i < s->cap; i++) {
    slot *e = &s->slots[i];
    if (e->key.kind < K_FALSE) continue;
    if (e->key.kind == K_STR) free((void *)e->key.u.s.p);
    sval_free(&e->val);
  }
  free(s->slots);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  free(s);
}

/* The table at idx. Methods and metamethods carry the class metatable
** as upvalue 1 (see loom__open_shared): one comparison in the common
** case, the full check (which words the errors) otherwise. */
static shared_obj *check_shared(lua_State *L, int idx) {
  loom_object **box = (loom_object **)lua_touserdata(L, idx);
  if (box != NULL && *box != NULL && lua_getmetatable(L, idx)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (same) return (shared_obj *)*box;
  }
  return LOOM_CHECK(L, idx, shared_obj, &shared_class);
}

/* Pushes the method table (upvalue 2, or from the metatable). */
static void push_methods(lua_State *L) {
  if (lua_type(L, lua_upvalueindex(2)) == LUA_TTABLE) {
    lua_pushvalue(L, lua_upvalueindex(2));
  } else {
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "__methods");
    lua_remove(L, -2);
  }
}

/* Takes mu and waits until no other thread owns the table. 0 with mu
** held, or LOOM_CANCELLED with mu released. */
static int enter(shared_obj *s) {
  pthread_mutex_lock(&s->mu);
  if (s->owner == 0) return 0;
  uint64_t me = self_ident();
  while (s->owner != 0 && s->owner != me) {
    s->waiters++;
    int rc = loom__wait(&s->obj, &s->cv, &s->mu, NULL);
    s->waiters--;
    if (rc == LOOM_CANCELLED) {
      pthread_mutex_unlock(&s->mu);
      return LOOM_CANCELLED;
    }
  }
  return 0;
}

static void enter_or_raise(lua_State *L, shared_obj *s) {
  if (enter(s) == LOOM_CANCELLED) loom__raise_cancelled(L);
}

/* The owner lock: what guard(), with() and update() hold. */
static void own(lua_State *L, shared_obj *s) {
  enter_or_raise(L, s);
  s->owner = self_ident();
  s->depth++;
  pthread_mutex_unlock(&s->mu);
}

static void disown(shared_obj *s) {
  pthread_mutex_lock(&s->mu);
  if (s->owner == self_ident() && --s->depth == 0) {
    s->owner = 0;
    if (s->waiters > 0) pthread_cond_broadcast(&s->cv);
  }
  pthread_mutex_unlock(&s->mu);
}

/* mu held. The slot of k, or NULL. */
static slot *find(shared_obj *s, const skey *k) {
  if (s->cap == 0) return NULL;
  size_t mask = s->cap - 1;
  for (size_t i = (size_t)k->hash & mask;; i = (i + 1) & mask) {
    slot *e = &s->slots[i];
    if (e->key.kind == K_EMPTY) return NULL;
    if (e->key.kind != K_TOMB && key_eq(&e->key, k)) return e;
  }
}

/* mu held. Rebuilds the table with room for one more key; -1 on OOM. */
static int grow(shared_obj *s) {
  size_t ncap = 8;
  while ((s->count + 1) * 2 > ncap) ncap *= 2; /* at most half full */
  slot *ns = (slot *)calloc(ncap, sizeof *ns);
  if (ns == NULL) return -1;
  for (size_t i = 0; i < s->cap; i++) {
    slot *e = &s->slots[i];
    if (e->key.kind < K_FALSE) continue;
    size_t j = (size_t)e->key.hash & (ncap - 1);
    while (ns[j].key.kind != K_EMPTY) j = (j + 1) & (ncap - 1);
    ns[j] = *e;
  }
  free(s->slots);
  s->slots = ns;
  s->cap = ncap;
  s->tombs = 0;
  return 0;
}

/* mu held. The slot for k, inserted (value V_NONE) if missing; NULL on
** OOM. */
static slot *find_or_insert(shared_obj *s, const skey *k) {
  slot *e = find(s, k);
  if (e != NULL) return e;
  if ((s->count + s->tombs + 1) * 4 > s->cap * 3 && grow(s) != 0) return NULL;
  char *copy = NULL;
  if (k->kind == K_STR) {
    copy = (char *)malloc(k->u.s.len + 1);
    if (copy == NULL) return NULL;
    memcpy(copy, k->u.s.p, k->u.s.len);
    copy[k->u.s.len] = '\0';
  }
  size_t mask = s->cap - 1;
  size_t i = (size_t)k->hash & mask;
  while (s->slots[i].key.kind >= K_FALSE) i = (i + 1) & mask;
  e = &s->slots[i];
  if (e->key.kind == K_TOMB) s->tombs--;
  e->key = *k;
  if (copy) e->key.u.s.p = copy;
  e->val.kind = V_NONE;
  s->count++;
  return e;
}

/* mu held. Removes e, handing its value to *old. */
static void remove_slot(shared_obj *s, slot *e, sval *old) {
  *old = e->val;
  if (e->key.kind == K_STR) free((void *)e->key.u.s.p);
  e->key.kind = K_TOMB;
  e->val.kind = V_NONE;
  s->count--;
  s->tombs++;
}

/* Copy of a slot's value that outlives mu: blobs get a reference. */
static void take_copy(const sval *in, sval *out) {
  *out = *in;
  if (in->kind == V_BLOB)
    atomic_fetch_add_explicit(&in->u.b->refs, 1, memory_order_relaxed);
}

/* A blob reference held while decoding (which may raise): a userdata
** whose __gc releases it if the push did not finish. */
static int holder_gc(lua_State *L) {
  blob **h = (blob **)luaL_testudata(L, 1, HOLDER_META);
  if (h != NULL && *h != NULL) {
    blob_release(*h);
    *h = NULL;
  }
  return 0;
}

/* Pushes v and drops what it owns. Call with no mutex held. */
static void push_value(lua_State *L, sval *v) {
  switch (v->kind) {
    case V_NONE: lua_pushnil(L); break;
    case V_FALSE: lua_pushboolean(L, 0); break;
    case V_TRUE: lua_pushboolean(L, 1); break;
    case V_INT: lua_pushinteger(L, v->u.i); break;
    case V_FLT: lua_pushnumber(L, v->u.n); break;
    case V_SSTR: lua_pushlstring(L, v->u.s, v->len); break;
    default: {
      blob **h = (blob **)lua_newuserdatauv(L, sizeof *h, 0);
      *h = v->u.b;
      v->kind = V_NONE;
      if (luaL_newmetatable(L, HOLDER_META)) {
        lua_pushcfunction(L, holder_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, HOLDER_META);
        lua_setfield(L, -2, "__metatable");
      }
      lua_setmetatable(L, -2);
      loom__value_push(L, &(*h)->v);
      blob_release(*h);
      *h = NULL;
      lua_remove(L, -2);
      break;
    }
  }
}

/* ------------------------------------------------------------------ */
/* get / set                                                            */

/* Pushes s[key at kidx] (nil when absent). */
static void get_at(lua_State *L, shared_obj *s, int kidx) {
  skey k;
  read_key(L, kidx, &k);
  sval v = {V_NONE, 0, {0}};
  enter_or_raise(L, s);
  slot *e = find(s, &k);
  if (e != NULL) take_copy(&e->val, &v);
  pthread_mutex_unlock(&s->mu);
  push_value(L, &v);
}

/* s[key at kidx] = value at vidx (nil removes). */
static void set_at(lua_State *L, shared_obj *s, int kidx, int vidx) {
  skey k;
  read_key(L, kidx, &k);
  sval v, old = {V_NONE, 0, {0}};
  read_value(L, vidx, &v, &s->obj);
  if (enter(s) == LOOM_CANCELLED) {
    sval_free(&v);
    loom__raise_cancelled(L);
  }
  if (v.kind == V_NONE) {
    slot *e = find(s, &k);
    if (e != NULL) remove_slot(s, e, &old);
  } else {
    slot *e = find_or_insert(s, &k);
    if (e == NULL) {
      pthread_mutex_unlock(&s->mu);
      sval_free(&v);
      luaL_error(L, "not enough memory to grow a loom.shared table");
    }
    old = e->val;
    e->val = v;
  }
  pthread_mutex_unlock(&s->mu);
  sval_free(&old);
}

/* ------------------------------------------------------------------ */
/* Lua API                                                              */

static int l_shared(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  shared_obj *s = (shared_obj *)calloc(1, sizeof *s);
  if (s == NULL) return luaL_error(L, "not enough memory for loom.shared");
  if (pthread_mutex_init(&s->mu, NULL) != 0) {
    free(s);
    return luaL_error(L, "cannot create loom.shared");
  }
  if (loom__cond_init(&s->cv) != 0) {
    pthread_mutex_destroy(&s->mu);
    free(s);
    return luaL_error(L, "cannot create loom.shared");
  }
  loom__object_init(&s->obj, &shared_class);
  loom__push_owned(L, &s->obj); /* at 2: from here on a Lua error frees it */
  if (lua_istable(L, 1)) {
    lua_pushnil(L);
    while (lua_next(L, 1)) {
      set_at(L, s, -2, -1);
      lua_pop(L, 1);
    }
  }
  return 1;
}

static int shared_index(lua_State *L) {
  shared_obj *s = check_shared(L, 1);
  if (lua_type(L, 2) == LUA_TSTRING) {
    push_methods(L);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL) return 1;
    lua_pop(L, 2);
  }
  get_at(L, s, 2);
  return 1;
}

static int shared_newindex(lua_State *L) {
  shared_obj *s = check_shared(L, 1);
  if (lua_type(L, 2) == LUA_TSTRING) {
    push_methods(L);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL)
      return luaL_error(L, "'%s' is a method of loom.shared: use "
                        "s:set('%s', v) and s:get('%s') for this key",
                        lua_tostring(L, 2), lua_tostring(L, 2),
                        lua_tostring(L, 2));
    lua_pop(L, 2);
  }
  set_at(L, s, 2, 3);
  return 0;
}

/* s:get(key[, default]) */
static int shared_get(lua_State *L) {
  shared_obj *s = check_shared(L, 1);
  luaL_checkany(L, 2);
  get_at(L, s, 2);
  if (lua_isnil(L, -1) && lua_gettop(L) > 3) lua_pushvalue(L, 3);
  return 1;
}

/* s:set(key, value) */
static int shared_set(lua_State *L) {
  shared_obj *s = check_shared(L, 1);
  luaL_checkany(L, 2);
  lua_settop(L, 3);
  set_at(L, s, 2, 3);
  return 0;
}

/* s:incr(key[, n]) -> the new value; a missing key counts as 0. */
static int shared_incr(lua_State *L) {
  shared_obj *s = check_shared(L, 1);
  skey k;
  read_key(L, 2, &k);
  int isint = lua_isnoneornil(L, 3) || lua_isinteger(L, 3);
  lua_Integer di = isint ? luaL_optinteger(L, 3, 1) : 0;
  lua_Number dn = isint ? 0 : luaL_checknumber(L, 3);
  enter_or_raise(L, s);
  slot *e = find_or_insert(s, &k);
  if (e == NULL) {
    pthread_mutex_unlock(&s->mu);
    return luaL_error(L, "not enough memory to grow a loom.shared table");
  }
  sval *v = &e->val;
  if (v->kind == V_NONE) { /* new key */
    if (isint) {
      v->kind = V_INT;
      v->u.i = 0;
    } else {
      v->kind = V_FLT;
      v->u.n = 0;
    }
  }
  if (v->kind == V_INT && isint) {
    v->u.i = (lua_Integer)((lua_Unsigned)v->u.i + (lua_Unsigned)di);
    lua_Integer r = v->u.i;
    pthread_mutex_unlock(&s->mu);
    lua_pushinteger(L, r);
    return 1;
  }
  if (v->kind == V_INT || v->kind == V_FLT) {
    lua_Number base = v->kind == V_INT ? (lua_Number)v->u.i : v->u.n;
    v->kind = V_FLT;
    v->u.n = base + (isint ? (lua_Number)di : dn);
    lua_Number r = v->u.n;
    pthread_mutex_unlock(&s->mu);
    lua_pushnumber(L, r);
    return 1;
  }
  int kind = v->kind;
  pthread_mutex_unlock(&s->mu);
  return luaL_error(L, "loom.shared incr: the value at this key is a %s, "
                    "not a number",
                    kind == V_SSTR ? "string" : kind <= V_TRUE ? "boolean"
                                                              : "non-number");
}

/* runs under lua_pcall with the owner lock held: s, key, fn */
static int update_body(lua_State *L) {
  shared_obj *s = (shared_obj *)lua_touserdata(L, 4);
  lua_settop(L, 3);
  lua_pushvalue(L, 3);
  get_at(L, s, 2);
  lua_call(L, 1, 1);
  set_at(L, s, 2, 4);
  return 1;
}

/* s:update(key, fn) -> the new value; fn(old) runs owning the table. */
static int shared_update(lua_State *L) {
  shared_obj *s = check_shared(L, 1);
  skey k;
  read_key(L, 2, &k); /* a bad key raises before anything is held */
  loom__check_callable(L, 3);
  lua_settop(L, 3);
  own(L, s);
  lua_pushcfunction(L, update_body);
  lua_insert(L, 1);
  lua_pushlightuserdata(L, s);
  int status = lua_pcall(L, 4, 1, 0);
  disown(s);
  if (status != LUA_OK) return lua_error(L);
  return 1;
}

/* guards -------------------------------------------------------------- */

static int guard_close(lua_State *L) {
  shared_obj **g = (shared_obj **)luaL_checkudata(L, 1, GUARD_META);
  shared_obj *s = *g;
  if (s == NULL) return 0;
  *g = NULL;
  disown(s);
  loom__release(&s->obj);
  return 0;
}

/* never closed: drop the reference only (see sync.c's guards) */
static int guard_gc(lua_State *L) {
  shared_obj **g = (shared_obj **)luaL_testudata(L, 1, GUARD_META);
  if (g != NULL && *g != NULL) {
    shared_obj *s = *g;
    *g = NULL;
    loom__release(&s->obj);
  }
  return 0;
}

static int shared_guard(lua_State *L) {
  shared_obj *s = check_shared(L, 1);
  shared_obj **g = (shared_obj **)lua_newuserdatauv(L, sizeof *g, 0);
  *g = NULL;
  luaL_setmetatable(L, GUARD_META);
  own(L, s);
  loom__retain(&s->obj);
  *g = s;
  return 1;
}

/* s:with(fn, ...) */
static int shared_with(lua_State *L) {
  shared_obj *s = check_shared(L, 1);
  loom__check_callable(L, 2);
  own(L, s);
  int status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 0);
  disown(s);
  if (status != LUA_OK) return lua_error(L);
  return lua_gettop(L) - 1;
}

/* length, iteration, snapshots ---------------------------------------- */

static int has_int(shared_obj *s, lua_Integer i) {
  skey k;
  k.kind = K_INT;
  k.u.i = i;
  k.hash = mix64((uint64_t)i);
  slot *e = find(s, &k);
  return e != NULL;
}

/* #s: a border, as Lua's # finds one in a table's hash part */
static int shared_len(lua_State *L) {
  shared_obj *s = check_shared(L, 1);
  enter_or_raise(L, s);
  lua_Integer i = 0, j = 1;
  while (has_int(s, j)) {
    i = j;
    if (j > LUA_MAXINTEGER / 2) { /* pathological: linear search */
      j = 1;
      while (has_int(s, j)) j++;
      i = j - 1;
      goto done;
    }
    j *= 2;
  }
  while (j - i > 1) { /* i present (or 0), j absent */
    lua_Integer m = i + (j - i) / 2;
    if (has_int(s, m)) i = m; else j = m;
  }
done:
  pthread_mutex_unlock(&s->mu);
  lua_pushinteger(L, i);
  return 1;
}

typedef struct snapshot {
  size_t n, pos;
  slot *items; /* keys' strings owned, values' blobs referenced */
  loom_object *table; /* held: its values may mention it, uncounted */
} snapshot;

static int snap_gc(lua_State *L) {
  snapshot *sn = (snapshot *)luaL_testudata(L, 1, SNAP_META);
  if (sn == NULL) return 0;
  loom__release(sn->table);
  sn->table = NULL;
  if (sn->items == NULL) return 0;
  for (size_t i = 0; i < sn->n; i++) {
    if (sn->items[i].key.kind == K_STR) free((void *)sn->items[i].key.u.s.p);
    sval_free(&sn->items[i].val);
  }
  free(sn->items);
  sn->items = NULL;
  return 0;
}

/* Pushes a snapshot userdata of s's entries, taken under mu. */
static snapshot *take_snapshot(lua_State *L, shared_obj *s) {
  snapshot *sn = (snapshot *)lua_newuserdatauv(L, sizeof *sn, 0);
  sn->n = sn->pos = 0;
  sn->items = NULL;
  sn->table = NULL;
  if (luaL_newmetatable(L, SNAP_META)) {
    lua_pushcfunction(L, snap_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, SNAP_META);
    lua_setfield(L, -2, "__metatable");
  }
  lua_setmetatable(L, -2);
  loom__retain(&s->obj);
  sn->table = &s->obj;
  enter_or_raise(L, s);
  int oom = 0;
  if (s->count > 0) {
    sn->items = (slot *)malloc(s->count * sizeof *sn->items);
    oom = sn->items == NULL;
  }
  for (size_t i = 0; !oom && sn->n < s->count && i < s->cap; i++) {
    slot *e = &s->slots[i];
    if (e->key.kind < K_FALSE) continue;
    slot *d = &sn->items[sn->n];
    d->key = e->key;
    if (e->key.kind == K_STR) {
      char *p = (char *)malloc(e->key.u.s.len + 1);
      if (p == NULL) {
        oom = 1;
        break;
      }
      memcpy(p, e->key.u.s.p, e->key.u.s.len + 1);
      d->key.u.s.p = p;
    }
    take_copy(&e->val, &d->val);
    sn->n++;
  }
  pthread_mutex_unlock(&s->mu);
  if (oom) luaL_error(L, "not enough memory to iterate a loom.shared table");
  return sn;
}

static int snap_next(lua_State *L) {
  snapshot *sn = (snapshot *)lua_touserdata(L, lua_upvalueindex(1));
  if (sn->pos >= sn->n) return 0;
  slot *e = &sn->items[sn->pos++];
  push_key(L, &e->key);
  push_value(L, &e->val); /* consumes the value */
  return 2;
}

/* pairs(s): iterates over a snapshot taken when pairs() is called. */
static int shared_pairs(lua_State *L) {
  shared_obj *s = check_shared(L, 1);
  take_snapshot(L, s);
  lua_pushcclosure(L, snap_next, 1);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

/* s:snapshot() -> a plain Lua table with copies of every entry */
static int shared_snapshot(lua_State *L) {
  shared_obj *s = check_shared(L, 1);
  snapshot *sn = take_snapshot(L, s);
  lua_createtable(L, 0, (int)sn->n);
  while (sn->pos < sn->n) {
    slot *e = &sn->items[sn->pos++];
    push_key(L, &e->key);
    push_value(L, &e->val);
    lua_rawset(L, -3);
  }
  return 1;
}

static int shared_tostring(lua_State *L) {
  if (loom__tostring_closed(L)) return 1;
  shared_obj *s = check_shared(L, 1);
  pthread_mutex_lock(&s->mu);
  size_t n = s->count;
  pthread_mutex_unlock(&s->mu);
  lua_pushfstring(L, "loom.shared (%I keys): %p", (lua_Integer)n, (void *)s);
  return 1;
}

static const luaL_Reg shared_methods[] = {
  {"get", shared_get},
  {"set", shared_set},
  {"update", shared_update},
  {"incr", shared_incr},
  {"guard", shared_guard},
  {"with", shared_with},
  {"snapshot", shared_snapshot},
  {NULL, NULL}
};

static const luaL_Reg shared_meta[] = {
  {"__index", shared_index},
  {"__newindex", shared_newindex},
  {"__len", shared_len},
  {"__pairs", shared_pairs},
  {"__tostring", shared_tostring},
  {NULL, NULL}
};

static const loom_class shared_class = {
  SHARED_META, shared_destroy, shared_methods, shared_meta, NULL
};

void loom__open_shared(lua_State *L) {
  loom__register_class(L, &shared_class);
  /* upvalues of every method and metamethod: metatable, method table */
  luaL_getmetatable(L, SHARED_META);
  lua_getfield(L, -1, "__methods"); /* mt, methods */
  for (int i = 0; i < 2; i++) {
    lua_pushvalue(L, i == 0 ? -1 : -2); /* the table to fill */
    lua_pushvalue(L, -3);
    lua_pushvalue(L, -3);
    luaL_setfuncs(L, i == 0 ? shared_methods : shared_meta, 2);
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  if (luaL_newmetatable(L, GUARD_META)) {
    lua_pushcfunction(L, guard_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, guard_gc);
    lua_setfield(L, -2, "__gc");
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, guard_close);
    lua_setfield(L, -2, "release");
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, GUARD_META); /* protected like the classes' */
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_shared);
  lua_setfield(L, -2, "shared");
}
