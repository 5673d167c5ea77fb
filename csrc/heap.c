/*
** heap.c: the memory allocator of the Lua states loom creates (thread
** states), with the panic and warning functions luaL_newstate would set.
**
** Owns: one heap per state, made with the state and freed after
** lua_close. A lua_State is only ever used by one thread at a time, so a
** heap takes no lock; nothing else may call its allocator.
**
** A state starts on malloc. Once it has been given WARMUP bytes of new
** small blocks (up to MAX_SMALL bytes; growing a block by realloc does
** not count), which are most of what Lua allocates
** (strings, tables, nodes, closures), its new small blocks come from
** PAGE_SIZE pages instead, each page holding blocks of one 16-byte size
** class: a few instructions per allocation and per free where glibc takes
** many, which matters to the decoder (transfer.c), where building tables
** is most of the cost. The warm-up keeps the states that do little (an
** idle thread's is ~14 KB) from holding a partly used page per class.
**
** Each page keeps its own free list and count of blocks in use; a class
** lists the pages that have room. A page whose last block is freed is
** kept spare (up to max(16, pages/4)) or goes back to the system, unless
** it is the only page with room in its class. Larger blocks always go to
** malloc. A block's owner follows from its size (Lua always gives the
** current size) and, for a small one, from whether the page its address
** falls in is one of this heap's: the heap keeps the addresses of its
** pages in a hash set. A block that is reallocated across MAX_SMALL, or
** that the warm-up gave to malloc, moves when its size class changes.
**
** Building with -DLOOM_SYSTEM_HEAP gives every block to malloc instead;
** `make asan` does so, so that AddressSanitizer sees each Lua object as
** a block of its own. The warning and panic functions are used either
** way.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loom_internal.h"

#define PAGE_SIZE 16384
#define GRAIN 16
#define MAX_SMALL 256
#define NCLASS (MAX_SMALL / GRAIN)
#define WARMUP ((size_t)256 * 1024)

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
  uintptr_t *pages; /* set of page addresses, open addressing, 0 = empty */
  size_t pages_cap; /* a power of two, at least twice npages; or 0 */
  size_t warmup;    /* small bytes malloc gave so far, up to WARMUP */
  int warn_on, warn_cont; /* the warning function's state */
} heap;

#ifndef LOOM_SYSTEM_HEAP
static inline unsigned size_class(size_t n) {
  return (unsigned)((n + GRAIN - 1) / GRAIN) - 1;
}

static inline uintptr_t page_of(const void *p) {
  return (uintptr_t)p & ~(uintptr_t)(PAGE_SIZE - 1);
}

/* The page set: linear probing, Fibonacci hashing of the page number. */
static inline size_t home_slot(uintptr_t a, size_t mask) {
  return (size_t)(((uint64_t)(a / PAGE_SIZE) * 0x9E3779B97F4A7C15u) >> 32) &
         mask;
}

static inline int owns(const heap *h, const void *b) {
  uintptr_t a = page_of(b);
  size_t mask = h->pages_cap - 1;
  for (size_t i = home_slot(a, mask);; i = (i + 1) & mask) {
    if (h->pages[i] == a) return 1;
    if (h->pages[i] == 0) return 0;
  }
}

static void set_put(uintptr_t *set, size_t mask, uintptr_t a) {
  size_t i = home_slot(a, mask);
  while (set[i] != 0) i = (i + 1) & mask;
  set[i] = a;
}

static int set_add(heap *h, uintptr_t a) {
  if ((h->npages + 1) * 2 > h->pages_cap) {
    size_t ncap = h->pages_cap ? h->pages_cap * 2 : 64;
    uintptr_t *n = (uintptr_t *)calloc(ncap, sizeof *n);
    if (n == NULL) return 0;
    for (size_t i = 0; i < h->pages_cap; i++)
      if (h->pages[i] != 0) set_put(n, ncap - 1, h->pages[i]);
    free(h->pages);
    h->pages = n;
    h->pages_cap = ncap;
  }
  set_put(h->pages, h->pages_cap - 1, a);
  return 1;
}

/* Removal with backward shift: later entries of the probe run move up
** into the hole unless their home slot lies after it (cyclically). */
static void set_remove(heap *h, uintptr_t a) {
  size_t mask = h->pages_cap - 1;
  size_t i = home_slot(a, mask);
  while (h->pages[i] != a) i = (i + 1) & mask;
  for (size_t j = (i + 1) & mask; h->pages[j] != 0; j = (j + 1) & mask) {
    size_t k = home_slot(h->pages[j], mask);
    if (((j - k) & mask) >= ((j - i) & mask)) {
      h->pages[i] = h->pages[j];
      i = j;
    }
  }
  h->pages[i] = 0;
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

__attribute__((noinline)) static page *new_page(heap *h, unsigned cls) {
  void *mem = h->spare;
  if (mem != NULL) {
    h->spare = h->spare->next;
    h->nspare--;
  } else {
    if (posix_memalign(&mem, PAGE_SIZE, PAGE_SIZE) != 0) return NULL;
    if (!set_add(h, (uintptr_t)mem)) {
      free(mem);
      return NULL;
    }
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

/* p's last block was freed while another page of its class has room:
** p goes spare, or back to the system when many are spare already. */
__attribute__((noinline)) static void page_emptied(heap *h, page *p) {
  unlink_page(h, p);
  if (h->nspare < 16 || h->nspare < h->npages / 4) {
    p->next = h->spare;
    h->spare = p;
    h->nspare++;
  } else {
    set_remove(h, (uintptr_t)p);
    free(p);
    h->npages--;
  }
}

static void small_free(heap *h, void *b) {
  page *p = (page *)page_of(b);
  *(void **)b = p->free;
  p->free = b;
  if (!p->listed) link_page(h, p);
  if (--p->live == 0 && (p->prev != NULL || p->next != NULL))
    page_emptied(h, p);
}

/* Everything but a new small block or the free of a small block. */
__attribute__((noinline)) static void *heap_realloc(heap *h, void *ptr, size_t osize, size_t nsize) {
  int in_page = osize <= MAX_SMALL && h->npages > 0 && owns(h, ptr);
  void *n = NULL;
  if (nsize <= MAX_SMALL && h->warmup >= WARMUP) {
    unsigned cls = size_class(nsize);
    if (in_page && size_class(osize) == cls) return ptr;
    n = small_alloc(h, cls); /* NULL: no page to be had, malloc below */
  }
  if (n == NULL) {
    if (!in_page) return realloc(ptr, nsize);
    if ((n = malloc(nsize)) == NULL) return NULL; /* Lua keeps the old block */
  }
  memcpy(n, ptr, osize < nsize ? osize : nsize);
  if (in_page) small_free(h, ptr);
  else free(ptr);
  return n;
}

static void *heap_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  heap *h = (heap *)ud;
  if (ptr == NULL) { /* osize is the kind of object, not a size */
    if (nsize == 0) return NULL; /* Lua resizes empty vectors to empty */
    if (nsize > MAX_SMALL) return malloc(nsize);
    if (h->warmup < WARMUP) {
      h->warmup += nsize;
      return malloc(nsize);
    }
    void *b = small_alloc(h, size_class(nsize));
    return b != NULL ? b : malloc(nsize);
  }
  if (nsize == 0) {
    if (osize <= MAX_SMALL && h->npages > 0 && owns(h, ptr)) small_free(h, ptr);
    else free(ptr);
    return NULL;
  }
  return heap_realloc(h, ptr, osize, nsize);
}

#else

static void *heap_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
}

#endif

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
  free(h->pages);
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
