/*
** stream.c: a message handed over while it is still being written.
**
** A large queue item is given to the queue as soon as its first chunk is
** encoded (transfer.c decides where chunks may end), so that a consumer
** decodes chunk k while the producer encodes chunk k+1: on two cores a
** big transfer costs about the slower of the two halves, not their sum.
**
** Owns: the chunks (a singly linked list; the writer appends at the tail,
** the reader frees each chunk once it has moved past it) and one
** reference on every loom object that the published chunks mention.
**
** Two references: the writer's (dropped by finish or abort) and the
** holder's (the loom_value that carries the stream; dropped when the
** value is consumed or freed). Whoever drops the last frees everything;
** the atomic decrement orders both sides' writes before the free.
**
** Sync: `next` pointers and `state` are atomics (release on publish,
** acquire on read). A reader that finds nothing new spins briefly, then
** polls with sched_yield (a writer on the same core, when the machine is
** busy, gets to run instead of waiting out a spinning reader), then
** sleeps on cv under mu, after announcing itself in `sleeping`; the
** writer reads `sleeping` after its publishing store (both seq_cst), and
** only then takes mu to signal, so a wake-up is never lost and the common
** case takes no lock. No Lua API is called here.
*/
#include <stdlib.h>
#include <sched.h>
#include <string.h>

#include "loom_internal.h"

#define READER_SPIN_S 2e-3
#define READER_PAUSE_S 30e-6

typedef struct chunk {
  _Atomic(struct chunk *) next;
  size_t len;
  unsigned char data[];
} chunk;

enum { S_OPEN, S_DONE, S_ABORTED };

struct loom_stream {
  atomic_int refs;
  atomic_int state;
  atomic_int sleeping;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  chunk *head; /* the reader's current chunk (the first before reading) */
  chunk *tail; /* writer only */
  int started; /* reader only: head has been handed out */
  loom_object **objs; /* writer only while open; references to release */
  int nobjs, objcap;
  loom_object *owner; /* a reference: passed to withdraw on abort */
  loom_stream_withdraw *withdraw;
};

loom_stream *loom__stream_new(loom_object *owner,
                              loom_stream_withdraw *withdraw) {
  loom_stream *s = (loom_stream *)calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  if (pthread_mutex_init(&s->mu, NULL) != 0) {
    free(s);
    return NULL;
  }
  if (loom__cond_init(&s->cv) != 0) {
    pthread_mutex_destroy(&s->mu);
    free(s);
    return NULL;
  }
  atomic_init(&s->refs, 1);
  atomic_init(&s->state, S_OPEN);
  atomic_init(&s->sleeping, 0);
  s->owner = owner;
  s->withdraw = withdraw;
  if (owner) loom__retain(owner);
  return s;
}

static void stream_free(loom_stream *s) {
  chunk *c = s->head;
  while (c != NULL) {
    chunk *n = atomic_load_explicit(&c->next, memory_order_relaxed);
    free(c);
    c = n;
  }
  for (int i = 0; i < s->nobjs; i++) loom__release(s->objs[i]);
  free(s->objs);
  if (s->owner) loom__release(s->owner); /* never started writing */
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

void loom__stream_retain(loom_stream *s) {
  atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void loom__stream_release(loom_stream *s) {
  if (s != NULL && atomic_fetch_sub_explicit(&s->refs, 1,
                                             memory_order_acq_rel) == 1)
    stream_free(s);
}

static void wake_reader(loom_stream *s) {
  if (atomic_load(&s->sleeping)) {
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
  }
}

int loom__stream_append(loom_stream *s, const void *p, size_t n,
                        loom_object *const *objs, int nobjs) {
  if (nobjs > s->objcap - s->nobjs) {
    int ncap = s->objcap ? s->objcap : 8;
    while (ncap - s->nobjs < nobjs) ncap *= 2;
    loom_object **no =
        (loom_object **)realloc(s->objs, (size_t)ncap * sizeof *no);
    if (no == NULL) return 0;
    s->objs = no;
    s->objcap = ncap;
  }
  chunk *c = (chunk *)malloc(sizeof *c + n);
  if (c == NULL) return 0;
  atomic_init(&c->next, NULL);
  c->len = n;
  memcpy(c->data, p, n);
  for (int i = 0; i < nobjs; i++) {
    loom__retain(objs[i]);
    s->objs[s->nobjs++] = objs[i];
  }
  if (s->tail == NULL) {
    s->head = c; /* before any reader can see the stream */
  } else {
    atomic_store(&s->tail->next, c);
  }
  s->tail = c;
  wake_reader(s);
  return 1;
}

/* The owner is let go here, not when the stream is freed: the owner
** (a queue) may hold the stream, and the two must not keep each other. */
static void end_writing(loom_stream *s, int state) {
  loom_object *owner = s->owner;
  s->owner = NULL;
  atomic_store(&s->state, state);
  wake_reader(s);
  loom__stream_release(s);
  if (owner) loom__release(owner);
}

void loom__stream_finish(loom_stream *s) {
  end_writing(s, S_DONE);
}

void loom__stream_abort(loom_stream *s) {
  if (s->withdraw) s->withdraw(s->owner, s);
  end_writing(s, S_ABORTED);
}

/* What the reader may do next: 1 a chunk follows, 0 the end, -1 aborted. */
static int reader_check(loom_stream *s, chunk *cur) {
  if (atomic_load(&cur->next) != NULL) return 1;
  int st = atomic_load(&s->state);
  if (st == S_ABORTED) return -1;
  if (st == S_DONE) return atomic_load(&cur->next) != NULL;
  return 2; /* nothing yet */
}

int loom__stream_read(loom_stream *s, const unsigned char **p, size_t *n) {
  chunk *cur = s->head;
  if (!s->started) {
    s->started = 1;
    if (atomic_load_explicit(&s->state, memory_order_acquire) == S_ABORTED)
      return -1;
    *p = cur->data;
    *n = cur->len;
    return 1;
  }
  int r = reader_check(s, cur);
  if (r == 2) {
    double start = loom__now(), now = start;
    do {
      if (now - start < READER_PAUSE_S) {
        for (int i = 0; i < 64 && r == 2; i++) {
          LOOM_CPU_RELAX();
          r = reader_check(s, cur);
        }
      } else {
        sched_yield();
        r = reader_check(s, cur);
      }
      now = loom__now();
    } while (r == 2 && now - start < READER_SPIN_S);
  }
  if (r == 2) {
    /* The wait is not cancellable: the writer is encoding, not blocked,
    ** and leaving would lose the item. */
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->sleeping, 1);
    while ((r = reader_check(s, cur)) == 2) pthread_cond_wait(&s->cv, &s->mu);
    atomic_store(&s->sleeping, 0);
    pthread_mutex_unlock(&s->mu);
  }
  if (r != 1) return r;
  chunk *next = atomic_load(&cur->next);
  s->head = next;
  free(cur);
  *p = next->data;
  *n = next->len;
  return 1;
}
