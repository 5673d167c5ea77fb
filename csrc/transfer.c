/*
** transfer.c: copying Lua values between lua_States through a private
** binary encoding that belongs to no state (see loom_internal.h).
**
** Owns: each state's encoding scratch (registry[&scratch_key], a userdata
** whose __gc frees it) and name map (registry[&names_key]). Both are only
** touched by the thread running that state; no locks. Encoding writes into
** the scratch, so a Lua error in the middle (out of memory, a value that
** cannot be copied) leaks nothing; the finished message is a malloc'd
** block owned by whoever keeps it.
**
** Message layout: header | encoded values | loom_object* refs[nobjs].
** Tables and functions get ids in the order they are met; a table or
** function met again is a back reference to its id, and its header byte
** is patched so that the decoder stores only those that are referenced.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loom_internal.h"

#define MAX_DEPTH 1000
#define RING 256 /* slots for kept short strings (put_short_str) */

enum {
  T_NIL, T_FALSE, T_TRUE, T_INT8, T_INT, T_FLOAT, T_SSTR, T_STR,
  T_TABLE,   /* flags u32:narr, narr values, u32:nhash, nhash pairs, [mt] */
  T_FUNC,    /* flags u32:nups u32:len bytecode, upvalues */
  T_REF,     /* u32 id: a table or function seen before */
  T_GLOBALS, /* the sender's global table: the receiver's */
  T_NAMED,   /* module, field: package.loaded[module][field] */
  T_REGMETA, /* name: registry[name] (luaL_newmetatable) */
  T_OBJ,     /* pointer (the message holds a reference, see refs) */
  T_SSTRK,   /* a T_SSTR that is referenced again later: keep it */
  T_MSTR,    /* u8 len: a string not counted among the short strings */
  T_OWNER,   /* pointer: the object that owns the message (no reference) */
  T_SREF,    /* u8 slot: a kept short string again (put_short_str) */
  T_PATH     /* anchor, u8 steps, steps: a streamed table seen before */
};
/* T_PATH anchors: a table being built (its position among the open
** tables, u32) or a kept one (its id, u32); steps: P_INT lua_Integer or
** P_STR u32 length and the bytes, each a raw get from the previous table. */
enum { A_OPEN, A_KEPT };
enum { P_INT, P_STR };
enum { F_MARKED = 1, F_META = 2 };
/* loom_value tags */
enum { V_NIL, V_FALSE, V_TRUE, V_INT, V_FLOAT, V_ISTR, V_HSTR, V_OBJ, V_MSG,
       V_STREAM, /* a loom_stream being written (queue items) */
       V_OWNER /* the object that owns the slot: no reference held */ };

enum { UP_VALUE, UP_JOIN };

struct loom_msg {
  size_t len;    /* bytes of encoded values (refs follow, pointer-aligned) */
  int count;     /* values */
  int nobjs;     /* loom object references after the data */
  int has_refs;  /* some table/function is referenced twice */
  int nkept;     /* ring slots the decoder needs for kept short strings */
  unsigned char data[];
};

/* The object references of m, after its data at a pointer-aligned offset. */
static loom_object **msg_refs(const loom_msg *m) {
  uintptr_t p = (uintptr_t)(m->data + m->len);
  p = (p + sizeof(void *) - 1) & ~(uintptr_t)(sizeof(void *) - 1);
  return (loom_object **)p;
}

static const char scratch_key = 's';
#define SCRATCH_META "loom.transfer.scratch"
#define MSGBOX_META "loom.transfer.msgbox"
static const char names_key = 'n';

/* ------------------------------------------------------------------ */
/* pointer map with O(1) clearing by generation                        */

typedef struct slot {
  const void *key;
  uint32_t gen;
  uint32_t id;
  uint32_t aux;   /* upvalues: the index of the upvalue in function id */
  size_t flagpos; /* where the header byte of the entry lives */
} slot;

typedef struct ptrmap {
  slot *slots;
  size_t cap, used; /* cap is a power of two */
} ptrmap;

typedef struct path_seg {
  int kind; /* SEG_KEY (stack index), SEG_INDEX, SEG_UPVALUE, SEG_META */
  lua_Integer idx;
  const char *name;
} path_seg;

/* Where a table of a stream sits, for T_PATH: under which key of which
** table (its parent, the table open when it was met), and whether the
** decoder keeps it. Indexed by id. */
typedef struct place {
  uint32_t parent;  /* id; NO_PARENT for the value itself */
  unsigned char kept, kind;
  uint32_t len;     /* P_STR: the key's length */
  union { lua_Integer i; const char *str; } key;
} place;
/* A table being written: its id, and how many steps it is from the
** nearest kept table or the value itself. */
typedef struct open_table {
  uint32_t id, hops;
} open_table;
#define NO_PARENT UINT32_MAX
/* A table this many steps from the nearest kept one is kept itself, so a
** T_PATH never has more steps than this. */
#define MAX_HOPS 8
enum { SEG_KEY, SEG_INDEX, SEG_UPVALUE, SEG_META, SEG_KEYOF };

typedef struct scratch {
  unsigned char *buf;
  size_t len, cap;
  loom_object **objs;
  int nobjs, objcap;
  loom_object **temps; /* objects made by this encode (foreign.c): it */
  int ntemps, tempcap; /* holds their first reference until it ends */
  ptrmap seen, upvals;
  uint32_t gen;
  int busy;
  int gc_paused; /* this encode stopped the collector (see pause_gc) */
  loom_stream *stream; /* delivered while this encode writes it */
  /* recently written short strings (interned: same pointer, same string) */
  struct { const char *p; uint32_t gen, n; size_t tagpos; } strs[256];
  path_seg path[MAX_DEPTH + 2];
  /* streams only: where each table is (by id), the ids of open tables */
  place *places;
  size_t nplaces;
  size_t *marks; /* header flags of kept tables, to set when handed over */
  size_t nmarks, markcap;
  open_table open[MAX_DEPTH + 2];
} scratch;

/* Objects that Lua allocates one after another sit close together:
** objects within the same 1 KB keep neighbouring slots (cache-friendly
** probing), and the 1 KB blocks are scattered over the map, since the
** blocks of one page heap class (heap.c) would otherwise pile up in a few
** regions of it. */
static size_t hashp(const void *p) {
  uint64_t x = (uint64_t)(uintptr_t)p >> 4;
  return (size_t)((((x >> 6) * 0x9E3779B97F4A7C15u) >> 32) << 6 | (x & 63));
}

static slot *map_find(ptrmap *m, const void *key, uint32_t gen) {
  if (m->cap == 0) return NULL;
  size_t mask = m->cap - 1;
  for (size_t i = hashp(key) & mask;; i = (i + 1) & mask) {
    slot *s = &m->slots[i];
    if (s->gen != gen) return NULL;
    if (s->key == key) return s;
  }
}

__attribute__((noinline)) static int map_grow(ptrmap *m, uint32_t gen) {
  size_t ncap = m->cap ? m->cap * 2 : 64;
  slot *ns = (slot *)calloc(ncap, sizeof *ns);
  if (ns == NULL) return 0;
  for (size_t i = 0; i < m->cap; i++) {
    slot *s = &m->slots[i];
    if (s->gen != gen) continue;
    size_t j = hashp(s->key) & (ncap - 1);
    while (ns[j].gen == gen) j = (j + 1) & (ncap - 1);
    ns[j] = *s;
  }
  free(m->slots);
  m->slots = ns;
  m->cap = ncap;
  return 1;
}

/* Finds key, or claims a slot for it (key set, *added = 1) in the same
** probe. Returns NULL when out of memory. */
static inline slot *map_claim(ptrmap *m, uint32_t gen, const void *key,
                               int *added) {
  if ((m->used + 1) * 2 > m->cap && !map_grow(m, gen)) return NULL;
  size_t mask = m->cap - 1;
  for (size_t i = hashp(key) & mask;; i = (i + 1) & mask) {
    slot *s = &m->slots[i];
    if (s->gen != gen) {
      s->key = key;
      s->gen = gen;
      m->used++;
      *added = 1;
      return s;
    }
    if (s->key == key) {
      *added = 0;
      return s;
    }
  }
}

/* Inserts a key known to be absent; returns 0 when out of memory. */
static int map_put(ptrmap *m, uint32_t gen, const void *key, uint32_t id,
                   uint32_t aux, size_t flagpos) {
  int added;
  slot *s = map_claim(m, gen, key, &added);
  if (s == NULL) return 0;
  s->id = id;
  s->aux = aux;
  s->flagpos = flagpos;
  return 1;
}

static void map_reset(ptrmap *m) {
  m->used = 0;
}

/* ------------------------------------------------------------------ */
/* the per-state scratch                                               */

static void scratch_free_parts(scratch *s) {
  free(s->places);
  free(s->marks);
  free(s->buf);
  free(s->objs);
  free(s->temps);
  free(s->seen.slots);
  free(s->upvals.slots);
  memset(s, 0, sizeof *s);
}

static int scratch_gc(lua_State *L) {
  scratch *s = (scratch *)luaL_testudata(L, 1, SCRATCH_META);
  if (s != NULL) scratch_free_parts(s);
  return 0;
}

/* Trims a scratch that grew large, so one big message does not pin its
** memory in the state forever. */
static void release_scratch(scratch *s) {
  s->busy = 0;
  /* the message (or the stream) took its own references by now */
  for (int i = 0; i < s->ntemps; i++) loom__release(s->temps[i]);
  s->ntemps = 0;
  if (s->stream != NULL) { /* the encode failed after delivering it */
    loom__stream_abort(s->stream);
    s->stream = NULL;
  }
  if (s->cap > (1u << 20)) {
    free(s->buf);
    s->buf = NULL;
    s->cap = 0;
  }
  if (s->seen.cap > (1u << 16)) {
    free(s->seen.slots);
    s->seen.slots = NULL;
    s->seen.cap = 0;
  }
  if (s->nplaces > (1u << 16)) {
    free(s->places);
    s->places = NULL;
    s->nplaces = 0;
  }
  if (s->markcap > (1u << 16)) {
    free(s->marks);
    s->marks = NULL;
    s->markcap = 0;
  }
}

/* __close: an encode is over, normally or by an error unwinding it. */
static int scratch_close(lua_State *L) {
  scratch *s = (scratch *)luaL_testudata(L, 1, SCRATCH_META);
  if (s != NULL) {
    if (s->gc_paused) {
      s->gc_paused = 0;
      lua_gc(L, LUA_GCRESTART);
    }
    release_scratch(s);
  }
  return 0;
}

static scratch *new_scratch(lua_State *L) {
  scratch *s = (scratch *)lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  if (luaL_newmetatable(L, SCRATCH_META)) {
    lua_pushcfunction(L, scratch_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, scratch_close);
    lua_setfield(L, -2, "__close");
    lua_pushliteral(L, SCRATCH_META);
    lua_setfield(L, -2, "__metatable");
  }
  lua_setmetatable(L, -2);
  return s;
}

/* Pushes a free scratch as a to-be-closed value: however the encode ends,
** closing the slot makes the scratch free again. The state's own is
** reused; if it is busy (an encode running inside a finalizer during
** another encode), a temporary one is made and collected later. */
static scratch *acquire_scratch(lua_State *L) {
  scratch *s;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &scratch_key) == LUA_TUSERDATA) {
    s = (scratch *)lua_touserdata(L, -1);
    if (!s->busy) goto ready;
    lua_pop(L, 1);
    s = new_scratch(L);
    goto ready;
  }
  lua_pop(L, 1);
  s = new_scratch(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &scratch_key);
ready:
  lua_toclose(L, -1);
  s->busy = 1;
  s->len = sizeof(loom_msg);
  s->nobjs = 0;
  s->nmarks = 0;
  if (++s->gen == 0) { /* wrapped: stale entries could match; wipe */
    if (s->seen.slots) memset(s->seen.slots, 0, s->seen.cap * sizeof(slot));
    if (s->upvals.slots)
      memset(s->upvals.slots, 0, s->upvals.cap * sizeof(slot));
    memset(s->strs, 0, sizeof s->strs);
    s->gen = 1;
  }
  map_reset(&s->seen);
  map_reset(&s->upvals);
  return s;
}

/* ------------------------------------------------------------------ */
/* encoder                                                              */

typedef struct enc {
  lua_State *L;
  scratch *s;
  const char *what;
  int root;       /* index of the value being encoded among the n */
  int mode;       /* PATH_PLAIN, PATH_NUMBERED or PATH_CALL */
  loom_object *owner; /* the message will live inside this object */
  int depth;
  uint32_t next_id;
  int names;      /* stack slot reserved for the name map */
  int names_loaded;
  int names_fresh;
  int has_refs;
  int str_refs;   /* some short string is referenced again */
  int seeded;     /* package.loaded tables and _G are in the seen map */
  int room;       /* depth up to which the Lua stack has room */
  size_t hold;    /* a table header whose count is not written yet: 0 or
                     the first position that may not be published */
  int placing;    /* may stream: note each table's place (T_PATH) */
  uint32_t nopen; /* when placing: tables being written (s->open) */
  uint32_t nstr;  /* short strings written so far */
  /* streaming (loom__value_set_streamed): whole values up to `pub` (a
  ** scratch position) have gone to the reader, with the objects up to
  ** pub_objs; the next chunk is cut once CHUNK more bytes are ready */
  const loom_stream_offer *offer;
  size_t pub;
  int pub_objs;
} enc;

/* The first chunk makes an item a stream, so items below this size are
** never streamed. Small chunks keep the reader close behind the writer:
** what is left for it to decode after the writer's last chunk is small
** (chunks of up to 32 KB made a 10k-record send 8% slower). */
#define CHUNK 4096

#define NAMED_POS ((size_t)-1) /* flagpos of a seeded table */

/* How the path of an error starts: "item", "results[2]", or for a call
** (function then arguments) "target" and "args[1]". */
enum { PATH_PLAIN, PATH_NUMBERED, PATH_CALL };

/* The encoder keeps raw pointers to what it has met (the tables in its
** seen map, the key strings of a stream's places), which the values
** being sent keep alive. Almost nothing it does creates a Lua object, so
** the collector cannot run in the middle of it; the exceptions (building
** the name map, a foreign type's exporter) stop the collector first, for
** the rest of the encode: a finalizer run by a step there could remove
** what was met, free it, and put a new object at its address. A
** collector already stopped (inside a finalizer, or by the program) is
** left alone. */
static void pause_gc(lua_State *L, scratch *s) {
  if (!s->gc_paused && lua_gc(L, LUA_GCISRUNNING)) {
    lua_gc(L, LUA_GCSTOP);
    s->gc_paused = 1;
  }
}

static void enc_oom(enc *e) {
  luaL_error(e->L, "not enough memory to copy %s", e->what);
}

static void grow(enc *e, size_t need) {
  scratch *s = e->s;
  size_t ncap = s->cap ? s->cap : 256;
  while (ncap < s->len + need) ncap *= 2;
  unsigned char *nb = (unsigned char *)realloc(s->buf, ncap);
  if (nb == NULL) enc_oom(e);
  s->buf = nb;
  s->cap = ncap;
}

static inline void put(enc *e, const void *p, size_t n) {
  if (e->s->len + n > e->s->cap) grow(e, n);
  memcpy(e->s->buf + e->s->len, p, n);
  e->s->len += n;
}

static inline void put_byte(enc *e, unsigned char b) {
  if (e->s->len + 1 > e->s->cap) grow(e, 1);
  e->s->buf[e->s->len++] = b;
}

static inline void put_u32(enc *e, uint32_t v) {
  put(e, &v, sizeof v);
}

/* Short strings (interned by Lua, so equal pointers mean equal strings)
** that repeat, like the keys of many records, are written once; the
** decoder then fetches them instead of interning them again. The decoder
** keeps the n-th short string of a message, once it is known to repeat
** (its tag patched to T_SSTRK), in ring slot n % RING; a reference names
** that slot, so it may only be used while no later short string can have
** taken the slot. A string met again after that is written anew. */
__attribute__((always_inline)) static inline void put_short_str(enc *e, const char *str, size_t len) {
  scratch *s = e->s;
  if (s->len + 2 + len > s->cap) grow(e, 2 + len);
  unsigned char *w = s->buf + s->len;
  size_t h = ((uintptr_t)str >> 4) & 255;
  if (s->strs[h].p == str && s->strs[h].gen == s->gen &&
      e->nstr - s->strs[h].n <= RING &&
      s->strs[h].tagpos >= e->pub) { /* its tag can still be patched */
    s->buf[s->strs[h].tagpos] = T_SSTRK;
    e->str_refs = 1;
    w[0] = T_SREF;
    w[1] = (unsigned char)(s->strs[h].n % RING);
    s->len += 2;
    return;
  }
  s->strs[h].p = str;
  s->strs[h].gen = s->gen;
  s->strs[h].n = e->nstr++;
  s->strs[h].tagpos = s->len;
  w[0] = T_SSTR;
  w[1] = (unsigned char)len;
  memcpy(w + 2, str, len);
  s->len += 2 + len;
}

static void put_str(enc *e, const char *str, size_t len) {
  if (len <= 255) {
    unsigned char h[2] = {T_MSTR, (unsigned char)len};
    put(e, h, 2);
  } else {
    put_byte(e, T_STR);
    put(e, &len, sizeof len);
  }
  put(e, str, len);
}

/* Appends the printable path of the value being encoded to buffer b. */
static void add_path(enc *e, luaL_Buffer *b) {
  lua_State *L = e->L;
  if (e->mode == PATH_CALL && e->root == 1) {
    luaL_addstring(b, "target");
  } else {
    luaL_addstring(b, e->what);
    if (e->mode != PATH_PLAIN) {
      lua_pushfstring(L, "[%d]", e->root - (e->mode == PATH_CALL));
      luaL_addvalue(b);
    }
  }
  int n = e->depth;
  for (int i = 0; i < n; i++) {
    path_seg *seg = &e->s->path[i];
    if (n > 12 && i == 6) {
      luaL_addstring(b, "...");
      i = n - 6;
      seg = &e->s->path[i];
    }
    switch (seg->kind) {
      case SEG_INDEX:
        lua_pushfstring(L, "[%I]", (LUAI_UACINT)seg->idx);
        luaL_addvalue(b);
        break;
      case SEG_UPVALUE:
        lua_pushfstring(L, ".<upvalue %s>", seg->name[0] ? seg->name : "?");
        luaL_addvalue(b);
        break;
      case SEG_META:
        luaL_addstring(b, ".<metatable>");
        break;
      case SEG_KEYOF:
        luaL_addstring(b, ".<key>");
        break;
      default: {
        int k = (int)seg->idx;
        if (lua_type(L, k) == LUA_TSTRING) {
          size_t len;
          const char *str = lua_tolstring(L, k, &len);
          int ident = len > 0 && !(str[0] >= '0' && str[0] <= '9');
          for (size_t j = 0; j < len && ident; j++)
            ident = str[j] == '_' || (str[j] >= 'a' && str[j] <= 'z') ||
                    (str[j] >= 'A' && str[j] <= 'Z') ||
                    (str[j] >= '0' && str[j] <= '9');
          if (ident)
            lua_pushfstring(L, ".%s", str);
          else
            lua_pushfstring(L, "[\"%s\"]", str);
        } else if (lua_type(L, k) == LUA_TNUMBER) {
          lua_pushvalue(L, k);
          lua_pushfstring(L, "[%s]", lua_tostring(L, -1));
          lua_remove(L, -2);
        } else {
          lua_pushfstring(L, "[<%s key>]", luaL_typename(L, k));
        }
        luaL_addvalue(b);
      }
    }
  }
}

static int fail(enc *e, const char *fmt, const char *detail) {
  lua_State *L = e->L;
  luaL_Buffer b;
  luaL_checkstack(L, 10, "copying a value");
  luaL_buffinit(L, &b);
  lua_pushfstring(L, fmt, detail);
  luaL_addvalue(&b);
  luaL_addstring(&b, " at ");
  add_path(e, &b);
  luaL_pushresult(&b);
  return lua_error(L);
}

static void encode(enc *e, int idx);
static void encode_value(enc *e, int idx, int type);
static inline int encode_scalar(enc *e, int idx, int type);

static inline void push_seg(enc *e, int kind, lua_Integer idx,
                            const char *name) {
  if (e->depth >= MAX_DEPTH) {
    lua_pushfstring(e->L, "%d", MAX_DEPTH);
    fail(e, "cannot copy a value nested more than %s levels deep",
         lua_tostring(e->L, -1));
  }
  path_seg *seg = &e->s->path[e->depth++];
  seg->kind = kind;
  seg->idx = idx;
  seg->name = name;
}

/* The name map: registry[&names_key] = { [value] = {module, field} } for
** every module table in package.loaded and every C function or userdata
** directly inside one. It is rebuilt when package.loaded changed size. */
static int count_loaded(lua_State *L) {
  int n = 0;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    n++;
  }
  lua_pop(L, 1);
  return n;
}

static void name_entry(lua_State *L, int map, int value, const char *module,
                       const char *field) {
  lua_pushvalue(L, value);
  if (lua_rawget(L, map) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, value);
  lua_createtable(L, 2, 0);
  lua_pushstring(L, module);
  lua_rawseti(L, -2, 1);
  if (field) {
    lua_pushstring(L, field);
    lua_rawseti(L, -2, 2);
  }
  lua_rawset(L, map);
}

/* A string key usable as a name: names travel as C strings, so one with
** a zero byte would arrive cut short (as another field, or nil). Values
** found only under such a name are refused instead. */
static int plain_name(lua_State *L, int idx) {
  size_t len;
  const char *k = lua_tolstring(L, idx, &len);
  return strlen(k) == len;
}

static void index_module(lua_State *L, int map, const char *module, int mod) {
  if (lua_type(L, mod) != LUA_TTABLE) return;
  name_entry(L, map, mod, module, NULL);
  lua_pushnil(L);
  while (lua_next(L, mod)) {
    int t = lua_type(L, -1);
    if (lua_type(L, -2) == LUA_TSTRING && plain_name(L, -2) &&
        (lua_iscfunction(L, -1) || t == LUA_TUSERDATA))
      name_entry(L, map, lua_absindex(L, -1), module, lua_tostring(L, -2));
    lua_pop(L, 1);
  }
}

static void build_names(lua_State *L) {
  lua_newtable(L); /* the map */
  int map = lua_gettop(L);
  lua_pushinteger(L, count_loaded(L));
  lua_setfield(L, map, "\1count");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  int loaded = lua_gettop(L);
  lua_getfield(L, loaded, "_G"); /* globals first: print is _G.print */
  index_module(L, map, "_G", lua_gettop(L));
  lua_pop(L, 1);
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    if (lua_type(L, -2) == LUA_TSTRING && plain_name(L, -2))
      index_module(L, map, lua_tostring(L, -2), lua_gettop(L));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_pushvalue(L, map);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &names_key);
}

/* Makes sure the name map is in its slot (e->names); with `fresh`,
** rebuilds it unless it was already rebuilt during this encode. */
static void need_names(enc *e, int fresh) {
  lua_State *L = e->L;
  if (e->names_loaded && (!fresh || e->names_fresh)) return;
  if (!e->names_loaded && !fresh) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &names_key) == LUA_TTABLE) {
      lua_getfield(L, -1, "\1count");
      int stale = lua_tointeger(L, -1) != count_loaded(L);
      lua_pop(L, 1);
      if (!stale) {
        lua_replace(L, e->names);
        e->names_loaded = 1;
        return;
      }
    }
    lua_pop(L, 1);
  }
  pause_gc(L, e->s);
  build_names(L);
  lua_replace(L, e->names);
  e->names_loaded = 1;
  e->names_fresh = 1;
}

/* If the value at idx has a name, writes T_NAMED and returns 1. */
static int put_named(enc *e, int idx, int fresh) {
  lua_State *L = e->L;
  luaL_checkstack(L, 20, "copying a named value");
  need_names(e, fresh);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->names) != LUA_TTABLE) {
    lua_pop(L, 1);
    return 0;
  }
  size_t len;
  const char *s;
  put_byte(e, T_NAMED);
  lua_rawgeti(L, -1, 1);
  s = lua_tolstring(L, -1, &len);
  put_str(e, s, len);
  lua_pop(L, 1);
  if (lua_rawgeti(L, -1, 2) == LUA_TSTRING) {
    s = lua_tolstring(L, -1, &len);
    put_str(e, s, len);
  } else {
    put_byte(e, T_NIL);
  }
  lua_pop(L, 2);
  return 1;
}

static int put_named(enc *e, int idx, int fresh);

/* Puts _G and the module tables of package.loaded in the seen map, so
** that the one probe a table needs anyway also finds them. */
static void seed_named(enc *e) {
  lua_State *L = e->L;
  e->seeded = 1;
  lua_pushglobaltable(L);
  if (!map_put(&e->s->seen, e->s->gen, lua_topointer(L, -1), 0, 0, NAMED_POS))
    enc_oom(e);
  lua_pop(L, 1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    const void *p = lua_topointer(L, -1);
    if (lua_istable(L, -1) && !map_find(&e->s->seen, p, e->s->gen) &&
        !map_put(&e->s->seen, e->s->gen, p, 0, 0, NAMED_POS))
      enc_oom(e);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* ------------------------------------------------------------------ */
/* places: back references into the part of a stream already handed over */

/* A streamed item's reader keeps only the tables whose header says so
** (F_MARKED), as for a whole message; but a table whose header has gone
** to the reader can no longer be marked when a back reference to it shows
** up. Such a reference is written as a path instead (T_PATH): from a table
** the reader still holds, either one being built (an ancestor of the
** reference) or a kept one, down by raw gets of integer or string keys.
** So the encoder notes where each table sits when it meets it; a table
** that no path can reach (under a key of another type, as a metatable or
** a key, in an upvalue) or that is MAX_HOPS steps from a kept one, is
** kept: its header is marked when it is handed over. Functions are
** always kept in a stream. */

/* Grows the vector p of *cap elements of size bytes so that element i
** fits (doubling, at least 64); raises when out of memory. */
static void *reserve(enc *e, void *p, size_t *cap, size_t i, size_t size) {
  size_t n = *cap ? *cap * 2 : 64;
  while (n <= i) n *= 2;
  void *np = realloc(p, n * size);
  if (np == NULL) enc_oom(e);
  *cap = n;
  return np;
}

/* A kept table's header is marked only when it is handed over: an item
** that is never streamed needs no kept tables. The table being opened has
** its header byte at len + 1 (put_ref). */
__attribute__((noinline)) static void pend_mark(enc *e) {
  scratch *s = e->s;
  if (s->nmarks == s->markcap)
    s->marks = (size_t *)reserve(e, s->marks, &s->markcap, s->nmarks,
                                 sizeof *s->marks);
  s->marks[s->nmarks++] = s->len + 1;
}

static void apply_marks(enc *e) {
  scratch *s = e->s;
  for (size_t i = 0; i < s->nmarks; i++) s->buf[s->marks[i]] |= F_MARKED;
  if (s->nmarks > 0) e->has_refs = 1;
  s->nmarks = 0;
}

static void grow_places(enc *e, uint32_t id) {
  scratch *s = e->s;
  s->places = (place *)reserve(e, s->places, &s->nplaces, id,
                               sizeof *s->places);
}

/* The place of a table that is not an array element of an open table:
** the value itself, under another key, or out of reach (kept). */
__attribute__((noinline)) static int place_other(enc *e, place *pl,
                                                 uint32_t *hops) {
  scratch *s = e->s;
  if (e->nopen == 0) { /* the value itself is open to the end */
    pl->parent = NO_PARENT;
    *hops = 0;
    return e->depth > 0; /* in an upvalue of a function value */
  }
  path_seg *seg = &s->path[e->depth - 1];
  lua_State *L = e->L;
  pl->parent = s->open[e->nopen - 1].id;
  *hops = s->open[e->nopen - 1].hops + 1;
  if (seg->kind != SEG_KEY) return 1;
  int k = (int)seg->idx;
  if (lua_type(L, k) == LUA_TSTRING) {
    size_t len;
    pl->kind = P_STR;
    pl->key.str = lua_tolstring(L, k, &len);
    pl->len = (uint32_t)len;
    return (uint64_t)len > UINT32_MAX;
  }
  if (lua_isinteger(L, k)) {
    pl->kind = P_INT;
    pl->key.i = lua_tointeger(L, k);
    return 0;
  }
  return 1;
}

/* Notes the place of the table just met (id) and opens it; returns 1 when
** the reader must keep it. */
__attribute__((always_inline)) static inline int open_place(enc *e,
                                                            uint32_t id) {
  scratch *s = e->s;
  if (id >= s->nplaces) grow_places(e, id);
  place *pl = &s->places[id];
  uint32_t hops;
  int kept;
  if (e->nopen > 0 && s->path[e->depth - 1].kind == SEG_INDEX) {
    pl->parent = s->open[e->nopen - 1].id;
    pl->kind = P_INT;
    pl->key.i = s->path[e->depth - 1].idx;
    hops = s->open[e->nopen - 1].hops + 1;
    kept = 0;
  } else {
    kept = place_other(e, pl, &hops);
  }
  if (hops > MAX_HOPS) kept = 1;
  if (kept) hops = 0;
  pl->kept = (unsigned char)kept;
  s->open[e->nopen].id = id;
  s->open[e->nopen++].hops = hops;
  return kept;
}

/* A function met in a stream: always kept. */
static void place_function(enc *e, uint32_t id) {
  scratch *s = e->s;
  if (id >= s->nplaces) grow_places(e, id);
  s->places[id].kept = 1;
}

/* The position of table id among the open ones, or -1. A table opens
** after the tables around it and ids grow as tables are met, so the open
** ids are in increasing order. */
static int open_position(enc *e, uint32_t id) {
  uint32_t lo = 0, hi = e->nopen;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (e->s->open[mid].id < id) lo = mid + 1;
    else hi = mid;
  }
  return lo < e->nopen && e->s->open[lo].id == id ? (int)lo : -1;
}

/* Writes a T_PATH to the table id, whose header has been handed over. */
__attribute__((noinline)) static void put_path(enc *e, uint32_t id) {
  scratch *s = e->s;
  uint32_t chain[MAX_HOPS + 1];
  int n = 0;
  uint32_t x = id;
  int at;
  while ((at = open_position(e, x)) < 0 && !s->places[x].kept) {
    if (n > MAX_HOPS || s->places[x].parent == NO_PARENT)
      luaL_error(e->L, "loom: internal error: no path to a table");
    chain[n++] = x;
    x = s->places[x].parent;
  }
  unsigned char head[6] = {T_PATH, at >= 0 ? A_OPEN : A_KEPT};
  uint32_t a = at >= 0 ? (uint32_t)at : x;
  memcpy(head + 2, &a, sizeof a);
  put(e, head, sizeof head);
  put_byte(e, (unsigned char)n);
  while (n-- > 0) {
    place *pl = &s->places[chain[n]];
    put_byte(e, pl->kind);
    if (pl->kind == P_INT) {
      put(e, &pl->key.i, sizeof pl->key.i);
    } else {
      put_u32(e, pl->len);
      put(e, pl->key.str, pl->len);
    }
  }
}

/* Writes the back reference to a table or function seen before (_G and
** module tables: their names). */
__attribute__((noinline)) static void put_backref(enc *e, int idx, slot *s) {
  if (s->flagpos == NAMED_POS) {
    lua_State *L = e->L;
    lua_pushglobaltable(L);
    int is_g = lua_rawequal(L, -1, idx);
    lua_pop(L, 1);
    if (is_g) put_byte(e, T_GLOBALS);
    else if (!put_named(e, idx, 0) && !put_named(e, idx, 1))
      fail(e, "cannot copy %s", "a module table that is not in the name map");
    return;
  }
  if (e->placing && s->flagpos < e->pub && !e->s->places[s->id].kept) {
    put_path(e, s->id); /* its header is out: too late to mark it */
    return;
  }
  e->s->buf[s->flagpos] |= F_MARKED;
  e->has_refs = 1;
  put_byte(e, T_REF);
  put_u32(e, s->id);
}

/* A table or function seen before becomes a back reference and 1 is
** returned. Otherwise it is remembered, in the same probe, with the next
** id and its header byte right after the tag about to be written, and 0
** is returned. */
static inline int put_ref(enc *e, int idx, const void *p) {
  int added;
  slot *s = map_claim(&e->s->seen, e->s->gen, p, &added);
  if (s == NULL) enc_oom(e);
  if (added) {
    s->id = e->next_id++;
    s->aux = 0;
    s->flagpos = e->s->len + 1;
    return 0;
  }
  put_backref(e, idx, s);
  return 1;
}

static int is_registered_meta(lua_State *L, int idx) {
  lua_pushliteral(L, "__name");
  if (lua_rawget(L, idx) != LUA_TSTRING) { /* raw: no user code mid-encode */
    lua_pop(L, 1);
    return 0;
  }
  lua_pushvalue(L, -1);
  lua_rawget(L, LUA_REGISTRYINDEX);
  int same = lua_rawequal(L, -1, idx);
  lua_pop(L, 1);
  if (!same) lua_pop(L, 1);
  return same; /* leaves the name on the stack when true */
}

/* Each nesting level of tables and functions needs at most this many
** stack slots; the stack is grown for LEVELS_AHEAD levels at a time. */
#define SLOTS_PER_LEVEL 8
#define LEVELS_AHEAD 32

static inline void room_for_level(enc *e) {
  if (e->depth >= e->room) {
    luaL_checkstack(e->L, SLOTS_PER_LEVEL * (LEVELS_AHEAD + 1),
                    "copying nested values");
    e->room = e->depth + LEVELS_AHEAD;
  }
}

static inline void maybe_publish(enc *e);

/* Cuts a chunk of the finished values written since the last one and
** hands it to the reader; the first cut creates the stream and offers it.
** Only whole values are cut, and never while a table header waits for its
** count (hold), so every byte published is final. */
/* The objects encoded since index `from` (no arithmetic on a NULL array:
** a state that never encoded an object has none). */
static loom_object *const *new_objs(const scratch *s, int from) {
  return s->objs != NULL ? s->objs + from : NULL;
}

static void publish(enc *e) {
  scratch *s = e->s;
  loom_stream *st = s->stream;
  apply_marks(e);
  if (st == NULL) {
    st = loom__stream_new(e->offer->owner, e->offer->withdraw);
    if (st == NULL) {
      enc_oom(e); /* raises */
      return;
    }
    if (!loom__stream_append(st, s->buf + e->pub, s->len - e->pub, s->objs,
                             s->nobjs)) {
      loom__stream_release(st);
      enc_oom(e);
    }
    loom__stream_retain(st); /* the holder's */
    loom_value v;
    v.u.x.tag = V_STREAM;
    v.u.x.v.p = st;
    if (!e->offer->start(e->offer->ud, &v)) { /* declined: one message */
      loom__stream_release(st);
      loom__stream_release(st);
      e->offer = NULL;
      return;
    }
    s->stream = st;
  } else if (!loom__stream_append(st, s->buf + e->pub, s->len - e->pub,
                                  new_objs(s, e->pub_objs),
                                  s->nobjs - e->pub_objs)) {
    enc_oom(e);
  }
  e->pub = s->len;
  e->pub_objs = s->nobjs;
}

static inline void maybe_publish(enc *e) {
  if (e->offer != NULL && e->hold == 0 && e->s->len - e->pub >= CHUNK)
    publish(e);
}

/* Writes the pairs of the table at idx that are not array elements 1..narr,
** then patches their count at hdr. Nothing from hdr on is published until
** the count is in. The walk goes on from the key at index key, the top
** of the stack (nil: from the start), or from the pair at key, key + 1
** when have is set. */
static void encode_pairs(enc *e, int idx, int key, lua_Integer narr,
                         size_t hdr, int have) {
  lua_State *L = e->L;
  size_t hold = e->hold;
  if (hold == 0) e->hold = hdr;
  uint32_t nhash = 0;
  for (; have || lua_next(L, idx); have = 0) {
    int kt = lua_type(L, key);
    if (narr > 0 && kt == LUA_TNUMBER) { /* an array element: done */
      int isint;
      lua_Integer k = lua_tointegerx(L, key, &isint);
      if (isint && k >= 1 && k <= narr) {
        lua_settop(L, key);
        continue;
      }
    }
    if (!encode_scalar(e, key, kt)) {
      push_seg(e, SEG_KEYOF, 0, NULL);
      encode_value(e, key, kt);
      e->depth--;
    }
    int vt = lua_type(L, key + 1);
    if (!encode_scalar(e, key + 1, vt)) {
      push_seg(e, SEG_KEY, key, NULL);
      encode_value(e, key + 1, vt);
      e->depth--;
    }
    lua_settop(L, key);
    nhash++;
  }
  memcpy(e->s->buf + hdr, &nhash, sizeof nhash);
  e->hold = hold;
}

/* Writes t[i], the value at the top of the stack (index at), as array
** element i. */
static inline void encode_element(enc *e, lua_Integer i, int at, int type) {
  if (!encode_scalar(e, at, type)) {
    push_seg(e, SEG_INDEX, i, NULL);
    encode_value(e, at, type);
    e->depth--;
  }
  lua_pop(e->L, 1);
  maybe_publish(e);
}

/* A table is written as its array elements 1..narr, then the count of its
** other pairs and the pairs. The elements (often the bulk, a list of
** records) need no patch, so they can be published to a reader while the
** rest is written (stream.c); the count is patched in once the pairs are
** written. lua_next gives the array part first and in order, so the
** elements come from the walk that then goes on to the pairs; when it
** strays (holes, or elements that live in the hash part) the rest come
** from lua_rawgeti and the pairs from a second walk. A table whose first
** key is not 1 has narr 0, which saves the length of records. */
static void encode_table(enc *e, int idx) {
  lua_State *L = e->L;
  if (!e->seeded) seed_named(e);
  if (put_ref(e, idx, lua_topointer(L, idx))) return;
  room_for_level(e);
  if (e->placing && open_place(e, e->next_id - 1)) pend_mark(e);
  int mt = lua_getmetatable(L, idx) ? lua_gettop(L) : 0;
  if (mt) { /* a class that must not be copied says so (raw: no user code) */
    lua_pushliteral(L, "__nocopy");
    if (lua_rawget(L, mt) != LUA_TNIL) {
      const char *why = lua_tostring(L, -1);
      fail(e, "cannot copy %s", why != NULL ? why : "a table whose metatable has __nocopy");
    }
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  int key = lua_gettop(L);
  int have = lua_next(L, idx); /* the first key decides narr */
  lua_Integer narr = 0;
  if (have && lua_isinteger(L, key) && lua_tointeger(L, key) == 1) {
    narr = (lua_Integer)lua_rawlen(L, idx);
    if (narr > UINT32_MAX) narr = 0;
  }
  unsigned char head[6] = {T_TABLE, mt ? F_META : 0};
  uint32_t n32 = (uint32_t)narr;
  memcpy(head + 2, &n32, sizeof n32);
  put(e, head, sizeof head);
  lua_Integer skip = 0; /* elements the walk for the pairs must skip */
  if (narr > 0) {
    lua_Integer i = 1; /* the pair (i, t[i]) is on the stack */
    for (;;) {
      encode_element(e, i, key + 1, lua_type(L, key + 1));
      if (i++ == narr) break; /* the pairs follow in this walk */
      if (!lua_next(L, idx)) break;
      if (!lua_isinteger(L, key) || lua_tointeger(L, key) != i) {
        lua_settop(L, key - 1); /* strayed */
        break;
      }
    }
    if (i <= narr) { /* the rest by index, then the pairs from the start */
      for (; i <= narr; i++) encode_element(e, i, key, lua_rawgeti(L, idx, i));
      lua_pushnil(L);
      skip = narr;
    }
    have = 0; /* the walk goes on from the key on top */
  }
  size_t hdr = e->s->len;
  put_u32(e, 0);
  if (narr > 0 || have) encode_pairs(e, idx, key, skip, hdr, have);
  if (mt) {
    if (is_registered_meta(L, mt)) {
      size_t len;
      const char *name = lua_tolstring(L, -1, &len);
      put_byte(e, T_REGMETA);
      put_str(e, name, len);
      lua_pop(L, 1);
    } else {
      push_seg(e, SEG_META, 0, NULL);
      encode_value(e, mt, LUA_TTABLE);
      e->depth--;
    }
    lua_pop(L, 1);
  }
  if (e->placing) e->nopen--;
}

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  put((enc *)ud, p, sz);
  return 0;
}

static void encode_function(enc *e, int idx) {
  lua_State *L = e->L;
  if (lua_iscfunction(L, idx)) {
    if (put_named(e, idx, 0) || put_named(e, idx, 1)) return;
    fail(e, "cannot copy %s", "a C function that is not in package.loaded");
  }
  if (put_ref(e, idx, lua_topointer(L, idx))) return;
  room_for_level(e);
  if (e->placing) place_function(e, e->next_id - 1);
  lua_Debug ar;
  lua_pushvalue(L, idx);
  lua_getinfo(L, ">u", &ar);
  put_byte(e, T_FUNC);
  size_t flagpos = e->s->len;
  put_byte(e, 0);
  put_u32(e, ar.nups);
  size_t lenpos = e->s->len;
  put_u32(e, 0);
  lua_pushvalue(L, idx);
  lua_dump(L, dump_writer, e, 0);
  lua_pop(L, 1);
  uint32_t len = (uint32_t)(e->s->len - lenpos - sizeof(uint32_t));
  memcpy(e->s->buf + lenpos, &len, sizeof len);
  uint32_t fid = e->next_id - 1;
  for (int i = 1; i <= ar.nups; i++) {
    const void *uid = lua_upvalueid(L, idx, i);
    slot *s = map_find(&e->s->upvals, uid, e->s->gen);
    if (s != NULL) { /* shared with a function copied before */
      e->s->buf[s->flagpos] |= F_MARKED;
      e->has_refs = 1;
      put_byte(e, UP_JOIN);
      put_u32(e, s->id);
      put_u32(e, s->aux);
      continue;
    }
    if (!map_put(&e->s->upvals, e->s->gen, uid, fid, (uint32_t)i, flagpos))
      enc_oom(e);
    put_byte(e, UP_VALUE);
    const char *name = lua_getupvalue(L, idx, i);
    push_seg(e, SEG_UPVALUE, i, name ? name : "?");
    encode(e, lua_gettop(L));
    e->depth--;
    lua_pop(L, 1);
  }
}

static void encode_object(enc *e, loom_object *o) {
  scratch *s = e->s;
  if (o == e->owner) { /* a reference would keep the owner alive forever */
    put_byte(e, T_OWNER);
    put(e, &o, sizeof o);
    return;
  }
  if (s->nobjs == s->objcap) {
    int ncap = s->objcap ? s->objcap * 2 : 8;
    loom_object **n = (loom_object **)realloc(s->objs, ncap * sizeof *n);
    if (n == NULL) enc_oom(e);
    s->objs = n;
    s->objcap = ncap;
  }
  s->objs[s->nobjs++] = o;
  put_byte(e, T_OBJ);
  put(e, &o, sizeof o);
}

/* Writes a value that needs no recursion and cannot fail; returns 0 for
** anything else. Table loops call it first, so that the keys and values
** of plain records cost no recursive call and no path bookkeeping. */
__attribute__((always_inline)) static inline int encode_scalar(enc *e, int idx, int type) {
  lua_State *L = e->L;
  switch (type) {
    case LUA_TNIL: put_byte(e, T_NIL); return 1;
    case LUA_TBOOLEAN:
      put_byte(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
      return 1;
    case LUA_TNUMBER: {
      scratch *s = e->s;
      if (s->len + 9 > s->cap) grow(e, 9);
      unsigned char *w = s->buf + s->len;
      if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        if (i >= -128 && i <= 127) {
          w[0] = T_INT8;
          w[1] = (unsigned char)(signed char)i;
          s->len += 2;
        } else {
          w[0] = T_INT;
          memcpy(w + 1, &i, sizeof i);
          s->len += 1 + sizeof i;
        }
      } else {
        lua_Number n = lua_tonumber(L, idx);
        w[0] = T_FLOAT;
        memcpy(w + 1, &n, sizeof n);
        s->len += 1 + sizeof n;
      }
      return 1;
    }
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      if (len <= 40) /* LUAI_MAXSHORTLEN: interned */
        put_short_str(e, s, len);
      else
        put_str(e, s, len);
      return 1;
    }
    default: return 0;
  }
}

/* A userdata of another library whose type was registered (foreign.c):
** exported into a loom object that the scratch holds until the encode
** ends. Returns 0 when its type is not registered. */
static int encode_foreign(enc *e, int idx) {
  scratch *s = e->s;
  if (s->ntemps == s->tempcap) {
    int ncap = s->tempcap ? s->tempcap * 2 : 4;
    loom_object **n = (loom_object **)realloc(s->temps, ncap * sizeof *n);
    if (n == NULL) enc_oom(e);
    s->temps = n;
    s->tempcap = ncap;
  }
  pause_gc(e->L, s); /* the exporter is the library's code */
  loom_object *o = loom__foreign_export(e->L, idx);
  if (o == NULL) return 0;
  s->temps[s->ntemps++] = o;
  encode_object(e, o);
  return 1;
}

/* Writes a table, function or userdata (type is lua_type of idx). */
static void encode_value(enc *e, int idx, int type) {
  lua_State *L = e->L;
  idx = lua_absindex(L, idx); /* put_named may reserve a stack slot */
  switch (type) {
    case LUA_TTABLE:
      encode_table(e, idx);
      break;
    case LUA_TFUNCTION:
      encode_function(e, idx);
      break;
    case LUA_TUSERDATA: {
      loom_object *o = loom__to_any_object(L, idx);
      if (o != NULL) {
        encode_object(e, o);
        break;
      }
      if (put_named(e, idx, 0) || put_named(e, idx, 1)) break;
      if (encode_foreign(e, idx)) break;
      const char *tn = luaL_typename(L, idx);
      if (luaL_getmetafield(L, idx, "__name") == LUA_TSTRING) {
        lua_pushfstring(L, "userdata (%s)", lua_tostring(L, -1));
        tn = lua_tostring(L, -1);
      }
      fail(e, "cannot copy %s", tn);
      break;
    }
    case LUA_TLIGHTUSERDATA: fail(e, "cannot copy %s", "light userdata");
      break;
    case LUA_TTHREAD: fail(e, "cannot copy %s", "a coroutine"); break;
    default: fail(e, "cannot copy %s", luaL_typename(L, idx));
  }
}

static void encode(enc *e, int idx) {
  int type = lua_type(e->L, idx);
  if (!encode_scalar(e, idx, type)) encode_value(e, idx, type);
}

/* Pops back to top, closing the scratch (at top + 1) first. lua_settop
** would close it too, but Lua 5.4.4's settop keeps a stack pointer across
** the __close call, which may move a small (coroutine's) stack. */
static void close_scratch(lua_State *L, int top) {
  lua_closeslot(L, top + 1);
  lua_settop(L, top);
}

/* Runs the encoder over n values; returns the finished message, or NULL
** when the values went out as a stream (only with an offer). */
static loom_msg *encode_values(lua_State *L, int first, int n,
                               const char *what, int mode, loom_object *owner,
                               const loom_stream_offer *offer) {
  first = lua_absindex(L, first);
  int top = lua_gettop(L);
  enc e;
  memset(&e, 0, sizeof e);
  e.L = L;
  e.what = what;
  e.mode = mode;
  e.owner = owner;
  e.s = acquire_scratch(L);
  e.offer = offer;
  e.placing = offer != NULL;
  e.pub = e.s->len;
  lua_pushnil(L); /* the slot of the name map */
  e.names = lua_gettop(L);
  for (int i = 0; i < n; i++) {
    e.root = i + 1;
    encode(&e, first + i);
  }
  scratch *s = e.s;
  if (offer != NULL && s->stream != NULL) {
    loom_stream *st = s->stream;
    apply_marks(&e);
    if (s->len > e.pub &&
        !loom__stream_append(st, s->buf + e.pub, s->len - e.pub,
                             new_objs(s, e.pub_objs), s->nobjs - e.pub_objs))
      enc_oom(&e); /* raises: the scratch's close aborts the stream */
    s->stream = NULL;
    loom__stream_finish(st);
    close_scratch(L, top);
    return NULL;
  }
  size_t total = s->len + sizeof(void *) + (size_t)s->nobjs * sizeof(loom_object *);
  loom_msg *m = (loom_msg *)malloc(total);
  if (m == NULL) {
    enc_oom(&e); /* raises */
    return NULL;
  }
  if (s->len > sizeof(loom_msg)) /* no buffer yet when nothing was encoded */
    memcpy(m->data, s->buf + sizeof(loom_msg), s->len - sizeof(loom_msg));
  m->len = s->len - sizeof(loom_msg);
  m->count = n;
  m->nobjs = s->nobjs;
  m->has_refs = e.has_refs;
  m->nkept = !e.str_refs ? 0 : e.nstr < RING ? (int)e.nstr : RING;
  loom_object **refs = msg_refs(m);
  for (int i = 0; i < s->nobjs; i++) {
    refs[i] = s->objs[i];
    loom__retain(refs[i]);
  }
  close_scratch(L, top);
  return m;
}

loom_msg *loom__encode(lua_State *L, int first, int n, const char *what) {
  return encode_values(L, first, n, what, PATH_NUMBERED, NULL, NULL);
}

loom_msg *loom__encode_owned(lua_State *L, int first, int n, const char *what,
                             loom_object *owner) {
  return encode_values(L, first, n, what, PATH_NUMBERED, owner, NULL);
}

loom_msg *loom__encode_call(lua_State *L, int first, int nargs) {
  return encode_values(L, first, nargs + 1, "args", PATH_CALL, NULL, NULL);
}

loom_msg *loom__msg_dup(const loom_msg *m) {
  const unsigned char *end = (const unsigned char *)(msg_refs(m) + m->nobjs);
  size_t total = (size_t)(end - (const unsigned char *)m);
  loom_msg *c = (loom_msg *)malloc(total);
  if (c == NULL) return NULL;
  memcpy(c, m, total);
  loom_object **refs = msg_refs(c);
  for (int i = 0; i < c->nobjs; i++) loom__retain(refs[i]);
  return c;
}

void loom__msg_free(loom_msg *m) {
  if (m == NULL) return;
  loom_object **refs = msg_refs(m);
  for (int i = 0; i < m->nobjs; i++) loom__release(refs[i]);
  free(m);
}

/* ------------------------------------------------------------------ */
/* decoder                                                              */

typedef struct dec {
  lua_State *L;
  const unsigned char *p, *end;
  int refs;       /* stack index of id -> value, when m->has_refs */
  int kept;       /* stack index of the ring of kept short strings */
  uint32_t next_id;
  uint32_t nstr;
  int depth, room; /* tables being built; depth up to which the stack has room */
  loom_stream *stream; /* reading chunk by chunk */
  int *open;      /* streams: stack indices of the tables being built */
  uint32_t nopen;
} dec;

static const char aborted_key = 'a'; /* raised when a stream's writer failed */

/* The bytes of the current chunk are used up: move to the next one. */
static void refill(dec *d) {
  const unsigned char *p = NULL;
  size_t n = 0;
  int r = 0;
  if (d->stream != NULL) {
    do r = loom__stream_read(d->stream, &p, &n); while (r == 1 && n == 0);
  }
  if (r == 1) {
    d->p = p;
    d->end = p + n;
    return;
  }
  if (r < 0) {
    lua_pushlightuserdata(d->L, (void *)&aborted_key);
    lua_error(d->L);
  }
  luaL_error(d->L, "corrupt loom message (truncated)");
}

static uint32_t get_u32(dec *d) {
  uint32_t v;
  memcpy(&v, d->p, sizeof v);
  d->p += sizeof v;
  return v;
}

static const char *get_str(dec *d, size_t *len) {
  unsigned char tag = *d->p++;
  if (tag == T_NIL) return NULL;
  if (tag == T_MSTR) {
    *len = *d->p++;
  } else {
    memcpy(len, d->p, sizeof *len);
    d->p += sizeof *len;
  }
  const char *s = (const char *)d->p;
  d->p += *len;
  return s;
}

static void decode(dec *d);

/* The common scalars without a call or a refill check (table loops call
** it first); returns 0 for anything else and at the end of a chunk. */
static inline int decode_scalar(dec *d) {
  lua_State *L = d->L;
  const unsigned char *p = d->p;
  if (p == d->end) return 0;
  switch (*p) {
    case T_INT8:
      lua_pushinteger(L, (signed char)p[1]);
      d->p = p + 2;
      return 1;
    case T_INT: {
      lua_Integer i;
      memcpy(&i, p + 1, sizeof i);
      d->p = p + 1 + sizeof i;
      lua_pushinteger(L, i);
      return 1;
    }
    case T_SSTR:
      lua_pushlstring(L, (const char *)p + 2, p[1]);
      d->p = p + 2 + p[1];
      d->nstr++;
      return 1;
    case T_SREF:
      lua_pushvalue(L, d->kept + p[1]);
      d->p = p + 2;
      return 1;
    default: return 0;
  }
}


static void keep_ref(dec *d, uint32_t id) {
  lua_pushvalue(d->L, -1);
  lua_rawseti(d->L, d->refs, (lua_Integer)id + 1);
}

static inline void room_for_table(dec *d) {
  if (d->depth >= d->room) {
    luaL_checkstack(d->L, 4 * (LEVELS_AHEAD + 1), "copying nested values");
    d->room = d->depth + LEVELS_AHEAD;
  }
}

static void decode_table(dec *d) {
  lua_State *L = d->L;
  unsigned char flags = *d->p++;
  uint32_t id = d->next_id++;
  uint32_t narr = get_u32(d), nhash = 0;
  if (narr == 0) nhash = get_u32(d); /* right behind: presize the hash part */
  room_for_table(d);
  d->depth++;
  lua_createtable(L, (int)narr, (int)nhash);
  if (flags & F_MARKED) keep_ref(d, id);
  int t = lua_gettop(L);
  if (d->open != NULL) {
    if (d->nopen >= MAX_DEPTH + 2) luaL_error(L, "corrupt loom message (depth)");
    d->open[d->nopen++] = t;
  }
  if (narr > 0) {
    for (uint32_t i = 1; i <= narr; i++) {
      if (!decode_scalar(d)) decode(d);
      lua_rawseti(L, t, i);
    }
    if (d->p == d->end) refill(d); /* a chunk may end after the elements */
    nhash = get_u32(d);
  }
  for (uint32_t i = 0; i < nhash; i++) {
    if (!decode_scalar(d)) decode(d);
    if (!decode_scalar(d)) decode(d);
    lua_rawset(L, t);
  }
  if (flags & F_META) {
    decode(d);
    lua_setmetatable(L, t);
  }
  if (d->open != NULL) d->nopen--;
  d->depth--;
}

/* Pushes the table a T_PATH names (see put_path). */
static void push_path(dec *d) {
  lua_State *L = d->L;
  luaL_checkstack(L, 3, "copying a value");
  unsigned char anchor = *d->p++;
  uint32_t a = get_u32(d);
  if (anchor == A_OPEN && d->open != NULL && a < d->nopen)
    lua_pushvalue(L, d->open[a]);
  else if (anchor == A_KEPT && d->refs != 0)
    lua_rawgeti(L, d->refs, (lua_Integer)a + 1);
  else
    luaL_error(L, "corrupt loom message (path)");
  for (unsigned n = *d->p++; n > 0; n--) {
    if (!lua_istable(L, -1)) luaL_error(L, "corrupt loom message (path)");
    if (*d->p++ == P_INT) {
      lua_Integer i;
      memcpy(&i, d->p, sizeof i);
      d->p += sizeof i;
      lua_rawgeti(L, -1, i);
    } else {
      uint32_t len = get_u32(d);
      lua_pushlstring(L, (const char *)d->p, len);
      d->p += len;
      lua_rawget(L, -2);
    }
    lua_remove(L, -2);
  }
  if (!lua_istable(L, -1)) luaL_error(L, "corrupt loom message (path)");
}

typedef struct reader_state {
  const char *p;
  size_t n;
} reader_state;

static const char *bytes_reader(lua_State *L, void *ud, size_t *size) {
  reader_state *r = (reader_state *)ud;
  (void)L;
  *size = r->n;
  r->n = 0;
  return *size ? r->p : NULL;
}

static void decode_function(dec *d) {
  lua_State *L = d->L;
  unsigned char flags = *d->p++;
  uint32_t id = d->next_id++;
  uint32_t nups = get_u32(d), len = get_u32(d);
  reader_state r = {(const char *)d->p, len};
  d->p += len;
  luaL_checkstack(L, 4, "copying a function");
  if (lua_load(L, bytes_reader, &r, "=copied function", "b") != LUA_OK)
    lua_error(L);
  if ((flags & F_MARKED) || d->stream != NULL) keep_ref(d, id);
  int f = lua_gettop(L);
  for (uint32_t i = 1; i <= nups; i++) {
    if (d->p == d->end) refill(d);
    if (*d->p++ == UP_JOIN) { /* share the upvalue of a copied function */
      uint32_t other = get_u32(d), n = get_u32(d);
      lua_rawgeti(L, d->refs, (lua_Integer)other + 1);
      lua_upvaluejoin(L, f, (int)i, -1, (int)n);
      lua_pop(L, 1);
    } else {
      decode(d);
      lua_setupvalue(L, f, (int)i);
    }
  }
}

static void push_named(dec *d) {
  lua_State *L = d->L;
  size_t mlen = 0, flen = 0;
  const char *module = get_str(d, &mlen);
  const char *field = get_str(d, &flen);
  luaL_checkstack(L, 4, "copying a named value");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushlstring(L, module, mlen);
  if (lua_rawget(L, -2) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushlstring(L, module, mlen);
    lua_call(L, 1, 1);
  }
  lua_remove(L, -2);
  if (field != NULL) {
    lua_pushlstring(L, field, flen);
    lua_gettable(L, -2);
    lua_remove(L, -2);
  }
}

static void decode(dec *d) {
  lua_State *L = d->L;
  if (d->p == d->end) refill(d);
  if (decode_scalar(d)) return;
  unsigned char tag = *d->p++;
  switch (tag) {
    case T_NIL: lua_pushnil(L); break;
    case T_FALSE: lua_pushboolean(L, 0); break;
    case T_TRUE: lua_pushboolean(L, 1); break;
    case T_FLOAT: {
      lua_Number n;
      memcpy(&n, d->p, sizeof n);
      d->p += sizeof n;
      lua_pushnumber(L, n);
      break;
    }
    case T_SSTRK: {
      size_t len = *d->p++;
      lua_pushlstring(L, (const char *)d->p, len);
      d->p += len;
      lua_copy(L, -1, d->kept + (int)(d->nstr++ % RING));
      break;
    }
    case T_MSTR: case T_STR: {
      size_t len;
      d->p--;
      const char *s = get_str(d, &len);
      lua_pushlstring(L, s, len);
      break;
    }
    case T_TABLE: decode_table(d); break;
    case T_FUNC: decode_function(d); break;
    case T_REF: lua_rawgeti(L, d->refs, (lua_Integer)get_u32(d) + 1); break;
    case T_PATH: push_path(d); break;
    case T_GLOBALS: lua_pushglobaltable(L); break;
    case T_NAMED: push_named(d); break;
    case T_REGMETA: {
      size_t len = 0;
      const char *name = get_str(d, &len);
      lua_pushlstring(L, name, len);
      if (lua_rawget(L, LUA_REGISTRYINDEX) == LUA_TNIL) {
        /* it may belong to a library this state has not opened yet */
        lua_pop(L, 1);
        loom__open_lazy_libs(L);
        luaL_requiref(L, "loom.core", luaopen_loom_core, 0);
        lua_pop(L, 1);
        lua_pushlstring(L, name, len);
        if (lua_rawget(L, LUA_REGISTRYINDEX) == LUA_TNIL) {
          lua_pushlstring(L, name, len);
          luaL_error(L, "cannot copy a value whose metatable '%s' is not "
                        "registered in the receiving state", lua_tostring(L, -1));
        }
      }
      break;
    }
    case T_OWNER: case T_OBJ: { /* the pointer; only T_OBJ holds a reference */
      loom_object *o;
      memcpy(&o, d->p, sizeof o);
      d->p += sizeof o;
      /* a first box of its class in this state needs a few slots more
      ** (the cache, the class's metatable) than decode reserved */
      luaL_checkstack(L, 8, "too many values to copy");
      if (o->cls->push != NULL) o->cls->push(L, o);
      else loom__push_object(L, o);
      break;
    }
    default: luaL_error(L, "corrupt loom message (tag %d)", tag);
  }
}

/* Reserves the decoder's stack slots: the refs table and nkept ring
** slots for kept short strings, from d->refs on. */
static void open_slots(dec *d, int nkept) {
  lua_State *L = d->L;
  lua_newtable(L);
  d->refs = lua_gettop(L);
  d->kept = d->refs + 1;
  lua_settop(L, d->refs + nkept);
}

/* Drops the slots under the n decoded values on top. */
static void close_slots(dec *d, int n) {
  lua_rotate(d->L, d->refs, n);
  lua_settop(d->L, d->refs + n - 1);
}

int loom__decode(lua_State *L, const loom_msg *m) {
  dec d = {.L = L, .p = m->data, .end = m->data + m->len};
  luaL_checkstack(L, m->count + m->nkept + 3, "too many values to copy");
  if (m->has_refs || m->nkept) open_slots(&d, m->nkept);
  for (int i = 0; i < m->count; i++) decode(&d);
  if (d.refs) close_slots(&d, m->count);
  return m->count;
}

/* Pushes the one value of a stream; raises &aborted_key if its writer
** failed. */
static void decode_stream(lua_State *L, loom_stream *st) {
  dec d;
  int open[MAX_DEPTH + 2];
  memset(&d, 0, sizeof d);
  d.L = L;
  d.stream = st;
  d.open = open;
  luaL_checkstack(L, RING + 4, "copying a value");
  open_slots(&d, RING);
  decode(&d);
  close_slots(&d, 1);
}

/* ------------------------------------------------------------------ */
/* single values for hot paths                                          */


void loom__value_set(lua_State *L, int idx, loom_value *v, const char *what) {
  loom__value_set_owned(L, idx, v, what, NULL);
}

/* Scalars, strings and loom objects; returns 0 for anything else. */
static int set_simple(lua_State *L, int idx, loom_value *v, const char *what,
                      const loom_object *owner) {
  switch (lua_type(L, idx)) {
    case LUA_TNIL: v->u.x.tag = V_NIL; return 1;
    case LUA_TBOOLEAN: v->u.x.tag = lua_toboolean(L, idx) ? V_TRUE : V_FALSE;
      return 1;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        v->u.x.tag = V_INT;
        v->u.x.v.i = lua_tointeger(L, idx);
      } else {
        v->u.x.tag = V_FLOAT;
        v->u.x.v.n = lua_tonumber(L, idx);
      }
      return 1;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      if (len <= LOOM_INLINE_STR) {
        v->u.s.tag = V_ISTR;
        v->u.s.len = (uint8_t)len;
        memcpy(v->u.s.bytes, s, len);
      } else {
        char *p = (char *)malloc(len);
        if (p == NULL) luaL_error(L, "not enough memory to copy %s", what);
        memcpy(p, s, len);
        v->u.x.tag = V_HSTR;
        v->u.x.v.p = p;
        v->u.x.len = len;
      }
      return 1;
    }
    case LUA_TUSERDATA: {
      loom_object *o = loom__to_any_object(L, idx);
      if (o != NULL) {
        if (o != owner) loom__retain(o);
        v->u.x.tag = o != owner ? V_OBJ : V_OWNER;
        v->u.x.v.p = o;
        return 1;
      }
      return 0;
    }
    default: return 0;
  }
}

void loom__value_set_owned(lua_State *L, int idx, loom_value *v,
                           const char *what, loom_object *owner) {
  if (set_simple(L, idx, v, what, owner)) return;
  v->u.x.v.p = encode_values(L, idx, 1, what, PATH_PLAIN, owner, NULL);
  v->u.x.tag = V_MSG;
}

typedef struct streamed_call {
  const char *what;
  const loom_stream_offer *offer;
  loom_msg *m;
} streamed_call;

static int streamed_body(lua_State *L) {
  streamed_call *c = (streamed_call *)lua_touserdata(L, 1);
  c->m = encode_values(L, 2, 1, c->what, PATH_PLAIN, NULL, c->offer);
  return 0;
}

/* Protected: an error must close the scratch (which withdraws a delivered
** stream) before it leaves, also when it unwinds a coroutine, which Lua
** closes only at coroutine.close. */
int loom__value_set_streamed(lua_State *L, int idx, loom_value *v,
                             const char *what, const loom_stream_offer *offer) {
  if (set_simple(L, idx, v, what, NULL)) return 0;
  idx = lua_absindex(L, idx);
  streamed_call c = {what, offer, NULL};
  luaL_checkstack(L, 3, "copying a value");
  lua_pushcfunction(L, streamed_body);
  lua_pushlightuserdata(L, &c);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) lua_error(L);
  if (c.m == NULL) return 1;
  v->u.x.tag = V_MSG;
  v->u.x.v.p = c.m;
  return 0;
}

void loom__value_push(lua_State *L, const loom_value *v) {
  switch (v->u.s.tag) {
    case V_NIL: lua_pushnil(L); break;
    case V_FALSE: lua_pushboolean(L, 0); break;
    case V_TRUE: lua_pushboolean(L, 1); break;
    case V_INT: lua_pushinteger(L, v->u.x.v.i); break;
    case V_FLOAT: lua_pushnumber(L, v->u.x.v.n); break;
    case V_ISTR: lua_pushlstring(L, v->u.s.bytes, v->u.s.len); break;
    case V_HSTR: lua_pushlstring(L, (const char *)v->u.x.v.p, v->u.x.len);
      break;
    case V_OBJ: case V_OWNER:
      loom__push_object(L, (loom_object *)v->u.x.v.p);
      break;
    case V_MSG: loom__decode(L, (const loom_msg *)v->u.x.v.p); break;
    default: luaL_error(L, "a streamed value can only be taken"); break;
  }
}

static int take_body(lua_State *L) {
  loom_value *v = (loom_value *)lua_touserdata(L, 1);
  if (v->u.x.tag == V_STREAM)
    decode_stream(L, (loom_stream *)v->u.x.v.p);
  else
    loom__decode(L, (const loom_msg *)v->u.x.v.p);
  return 1;
}

int loom__value_is_stream(const loom_value *v, const loom_stream *s) {
  return v->u.x.tag == V_STREAM && v->u.x.v.p == (const void *)s;
}

int loom__value_try_take(lua_State *L, loom_value *v) {
  if (v->u.s.tag != V_MSG && v->u.s.tag != V_STREAM) {
    loom__value_push(L, v); /* cannot fail but for memory */
    loom__value_free(v);
    return 1;
  }
  /* decoding may require a module that is missing: protect it */
  lua_pushcfunction(L, take_body);
  lua_pushlightuserdata(L, v);
  int status = lua_pcall(L, 1, 1, 0);
  if (status != LUA_OK && v->u.s.tag == V_MSG) return -1; /* v intact */
  loom__value_free(v);
  if (status == LUA_OK) return 1;
  if (lua_touserdata(L, -1) == (void *)&aborted_key) {
    lua_pop(L, 1);
    return 0;
  }
  return -1;
}

int loom__value_take(lua_State *L, loom_value *v) {
  int r = loom__value_try_take(L, v);
  if (r >= 0) return r;
  loom__value_free(v); /* the message is freed either way */
  return lua_error(L);
}

int loom__value_is_streamed(const loom_value *v) {
  return v->u.s.tag == V_STREAM;
}

void loom__value_free(loom_value *v) {
  switch (v->u.s.tag) {
    case V_HSTR: free(v->u.x.v.p); break;
    case V_OBJ: loom__release((loom_object *)v->u.x.v.p); break;
    case V_MSG: loom__msg_free((loom_msg *)v->u.x.v.p); break;
    case V_STREAM: loom__stream_release((loom_stream *)v->u.x.v.p); break;
    default: break;
  }
  v->u.x.tag = V_NIL;
}

/* loom.copy(...): the values copied as if sent to another thread. The
** message lives in a box with a __gc so an error while decoding (a module
** that cannot be required) does not leak it. */
static int msgbox_gc(lua_State *L) {
  loom_msg **box = (loom_msg **)luaL_testudata(L, 1, MSGBOX_META);
  if (box != NULL) {
    loom__msg_free(*box);
    *box = NULL;
  }
  return 0;
}

static int l_copy(lua_State *L) {
  int n = lua_gettop(L);
  loom_msg **box = (loom_msg **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  if (luaL_newmetatable(L, MSGBOX_META)) {
    lua_pushcfunction(L, msgbox_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, MSGBOX_META);
    lua_setfield(L, -2, "__metatable");
  }
  lua_setmetatable(L, -2);
  *box = loom__encode(L, 1, n, "args");
  int count = loom__decode(L, *box);
  loom__msg_free(*box);
  *box = NULL;
  return count;
}

void loom__open_transfer(lua_State *L) {
  lua_pushcfunction(L, l_copy);
  lua_setfield(L, -2, "copy");
}
