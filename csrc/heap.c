/*
** heap.c: the memory allocator of the Lua states loom creates (thread
** states), with the panic and warning functions luaL_newstate would set.
**
** Owns: one heap per state, made with the state and freed after
** lua_close. A lua_State is only ever used by one thread at a time, so a
** heap takes no lock; nothing else may call its allocator.
**
** Small blocks (up to MAX_SMALL bytes, 16-byte size classes), which are
** most of what Lua allocates (strings, tables, nodes, closures), come from
** PAGE_SIZE pages, each holding blocks of one class. Each page keeps its
** own free list and count of blocks in use; a class lists the pages that
** have room. A page whose last block is freed goes back to the system
** unless it is the only page with room in its class. Larger blocks go to
** malloc. Which side owns a block follows from its size alone (Lua always
** gives the current size of a block), so a block that is reallocated
** across MAX_SMALL moves. Compared with glibc this is a few instructions
** per allocation and per free, which matters to the decoder (transfer.c),
** where building tables is most of the cost.
**
** Building with -DLOOM_SYSTEM_HEAP gives every block to malloc instead;
** `make asan` does so, so that AddressSanitizer sees each Lua object as
** a block of its own. The warning and panic functions are used either
** way.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loom_internal.h"

#define PAGE_SIZE 16384
#define GRAIN 16
#define MAX_SMALL 256
#define NCLASS (MAX_SMALL / GRAIN)

typedef struct page {
  struct page *prev, *next; /* in its class's list of pages with room */
  void *free;               /* freed blocks */
  char *fresh, *end;        /* never used space */
  unsigned live;            /* blocks in use */
  unsigned cls;
  int listed;
} page;

#define FIRST_BLOCK ((sizeof(page) + GRAIN - 1) & ~(size_t)(GRAIN - 1))

typedef struct heap {
  page *room[NCLASS];
  page *spare; /* empty pages kept for reuse (linked by next) */
  size_t nspare, npages;
  int warn_on, warn_cont; /* the warning function's state */
} heap;

#ifndef LOOM_SYSTEM_HEAP
static inline unsigned size_class(size_t n) {
  return (unsigned)((n + GRAIN - 1) / GRAIN) - 1;
}

static inline page *page_of(void *p) {
  return (page *)((uintptr_t)p & ~(uintptr_t)(PAGE_SIZE - 1));
}

static void link_page(heap *h, page *p) {
  p->prev = NULL;
  p->next = h->room[p->cls];
  if (p->next) p->next->prev = p;
  h->room[p->cls] = p;
  p->listed = 1;
}

static void unlink_page(heap *h, page *p) {
  if (p->prev) p->prev->next = p->next;
  else h->room[p->cls] = p->next;
  if (p->next) p->next->prev = p->prev;
  p->listed = 0;
}

static page *new_page(heap *h, unsigned cls) {
  void *mem = h->spare;
  if (mem != NULL) {
    h->spare = h->spare->next;
    h->nspare--;
  } else {
    if (posix_memalign(&mem, PAGE_SIZE, PAGE_SIZE) != 0) return NULL;
    h->npages++;
  }
  page *p = (page *)mem;
  size_t bs = (size_t)(cls + 1) * GRAIN;
  p->free = NULL;
  p->fresh = (char *)mem + FIRST_BLOCK;
  p->end = p->fresh + (PAGE_SIZE - FIRST_BLOCK) / bs * bs;
  p->live = 0;
  p->cls = cls;
  link_page(h, p);
  return p;
}

static void *small_alloc(heap *h, unsigned cls) {
  page *p = h->room[cls];
  if (p == NULL && (p = new_page(h, cls)) == NULL) return NULL;
  void *b;
  if (p->free != NULL) {
    b = p->free;
    p->free = *(void **)b;
  } else {
    b = p->fresh;
    p->fresh += (size_t)(cls + 1) * GRAIN;
  }
  p->live++;
  if (p->free == NULL && p->fresh == p->end) unlink_page(h, p);
  return b;
}

static void small_free(heap *h, void *b) {
  page *p = page_of(b);
  *(void **)b = p->free;
  p->free = b;
  p->live--;
  if (!p->listed) link_page(h, p);
  if (p->live == 0 && (p->prev != NULL || p->next != NULL)) {
    /* another page of the class has room: this one goes spare, or back
    ** to the system when many are spare already */
    unlink_page(h, p);
    if (h->nspare < 16 || h->nspare < h->npages / 4) {
      p->next = h->spare;
      h->spare = p;
      h->nspare++;
    } else {
      free(p);
      h->npages--;
    }
  }
}

#endif

static void *heap_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  heap *h = (heap *)ud;
  if (ptr == NULL) osize = 0; /* osize is then the kind of object */
#ifdef LOOM_SYSTEM_HEAP
  (void)h;
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
#else
  int was_small = osize > 0 && osize <= MAX_SMALL;
  if (nsize == 0) {
    if (was_small) small_free(h, ptr);
    else free(ptr);
    return NULL;
  }
  if (nsize > MAX_SMALL) {
    if (!was_small) return realloc(ptr, nsize);
    void *n = malloc(nsize);
    if (n == NULL) return NULL;
    memcpy(n, ptr, osize);
    small_free(h, ptr);
    return n;
  }
  unsigned cls = size_class(nsize);
  if (was_small && size_class(osize) == cls) return ptr;
  void *n = small_alloc(h, cls);
  if (n == NULL) return NULL; /* Lua keeps the old block */
  if (osize > 0) {
    memcpy(n, ptr, osize < nsize ? osize : nsize);
    if (was_small) small_free(h, ptr);
    else free(ptr);
  }
  return n;
#endif
}

static void heap_free_all(heap *h) {
  while (h->spare != NULL) {
    page *n = h->spare->next;
    free(h->spare);
    h->spare = n;
  }
  /* after lua_close every block is free, so every page is listed */
  for (unsigned c = 0; c < NCLASS; c++) {
    page *p = h->room[c];
    while (p != NULL) {
      page *n = p->next;
      free(p);
      p = n;
    }
  }
  free(h);
}

static int panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "loom: unprotected Lua error in a thread state: %s\n",
          msg ? msg : "(error object is not a string)");
  fflush(stderr);
  return 0; /* Lua aborts */
}

/* Warnings as the standalone interpreter has them: off until "@on". */
static void warn_fn(void *ud, const char *msg, int tocont) {
  heap *h = (heap *)ud;
  if (!h->warn_cont && msg[0] == '@') { /* a control message */
    if (strcmp(msg, "@on") == 0) h->warn_on = 1;
    else if (strcmp(msg, "@off") == 0) h->warn_on = 0;
    return;
  }
  if (h->warn_on) {
    if (!h->warn_cont) fputs("Lua warning: ", stderr);
    fputs(msg, stderr);
    if (!tocont) fputs("\n", stderr);
    fflush(stderr);
  }
  h->warn_cont = tocont;
}

lua_State *loom__heap_newstate(void) {
  heap *h = (heap *)calloc(1, sizeof *h);
  if (h == NULL) return NULL;
  lua_State *L = lua_newstate(heap_alloc, h);
  if (L == NULL) {
    heap_free_all(h);
    return NULL;
  }
  lua_atpanic(L, panic);
  lua_setwarnf(L, warn_fn, h);
  return L;
}

void loom__heap_close(lua_State *L) {
  void *ud = NULL;
  lua_getallocf(L, &ud);
  lua_close(L);
  heap_free_all((heap *)ud);
}
