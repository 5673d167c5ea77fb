/*
** failalloc.h: the allocation-failure test build (make oom). Force-included
** before anything else (-include) with -DLOOM_FAILING_ALLOC, it sends every
** malloc, calloc, realloc, aligned_alloc and posix_memalign of loom's
** own sources through core.c's
** counters, so that a spec can make the Nth allocation from now fail and
** check that loom turns it into a Lua error (spec/oom_spec.lua). Not part
** of a normal build.
*/
#ifndef LOOM_FAILALLOC_H
#define LOOM_FAILALLOC_H
#ifdef LOOM_FAILING_ALLOC
#include <stddef.h>
void *loom__test_malloc(size_t n);
void *loom__test_calloc(size_t n, size_t size);
void *loom__test_realloc(void *p, size_t n);
void *loom__test_aligned_alloc(size_t align, size_t n);
int loom__test_posix_memalign(void **p, size_t align, size_t n);
/* object-like, so that <stdlib.h>'s own declarations are renamed too */
#define malloc loom__test_malloc
#define calloc loom__test_calloc
#define realloc loom__test_realloc
#define aligned_alloc loom__test_aligned_alloc
#define posix_memalign loom__test_posix_memalign
#endif
#endif
