/*
** loop_net.c: loom.async's sockets on libuv. TCP streams (asyncio's
** StreamReader and StreamWriter in one object), servers, name resolution,
** and readiness of descriptors that other libraries own (LuaSocket).
** lua/loom/async_net.lua builds open_connection and start_server on these.
**
** Ownership: a stream, a server and a polled descriptor are malloc'ed
** structs that embed their libuv handle. A stream or server has two
** owners, its Lua box (a full userdata holding the pointer) and libuv
** (from uv_*_init to the close callback); each drops its part, the box at
** __gc and libuv in the close callback, and whoever is last frees the
** struct. A box collected while its handle is open closes it. At the end
** of async.run, loop.c closes every handle still open (through
** loom__net_close_handle) before it frees the loop, so no box outlives
** its loop with a live handle.
**
** Waiting: a task waiting on a stream is named in one of the stream's
** slots (reader, drainer) or lists (closers); callbacks only schedule it,
** and its continuation takes it out of the slot before anything else, so
** a callback never sees a task that stopped waiting. Requests (connect,
** write, shutdown, getaddrinfo) are malloc'ed and freed by their
** callbacks; a getaddrinfo whose task stopped waiting is marked abandoned.
**
** Threads: everything here runs on the loop's thread (getaddrinfo works on
** libuv's thread pool, but its callback runs on the loop's thread). No
** Lua error is raised from a libuv callback: they run inside uv_run.
*/
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"

#define STREAM_META "loom.async.Stream"
#define SERVER_META "loom.async.Server"
#define SCRATCH_SIZE 65536
#define DEFAULT_LIMIT 65536
#define SMALL_BUFFER 1024
#define HIGH_WATER 65536 /* drain waits above this (asyncio's default) */
#define LOW_WATER 16384  /* ... until the unsent bytes fall to this */

enum { K_STREAM = 1, K_SERVER, K_POLL };
enum { OP_READ, OP_READEXACTLY, OP_READUNTIL, OP_READLINE, OP_DRAIN,
       OP_CLOSED, OP_CONNECT };

/* tasks waiting for the same event */
typedef struct waitlist {
  afut **v;
  int n, cap;
} waitlist;

typedef struct astream {
  int kind; /* K_STREAM: first, as in every struct a handle's data names */
  uv_tcp_t tcp;
  char *buf;        /* unread bytes: buf[off .. off+len) */
  size_t off, len, cap;
  size_t limit;     /* readline/readuntil give up beyond this */
  size_t wpending;  /* bytes handed to libuv, not yet written */
  int err;          /* the first libuv error of the connection, or 0 */
  char boxed, connected, eof, reading, paused;
  char closing;     /* close() or abort(): no more reads or writes */
  char uvclosing, closed, shutting, shut, close_after_shut;
  afut *reader;     /* a read or the connect */
  afut *drainer;
  waitlist closers;
} astream;

typedef struct aserver {
  int kind; /* K_SERVER */
  uv_tcp_t tcp;
  size_t limit;     /* for the streams it accepts */
  int active;       /* connections whose handler has not ended */
  char boxed, closing, closed;
  waitlist waiters; /* serve_forever and wait_closed */
} aserver;

typedef struct fdwatch {
  int kind; /* K_POLL */
  uv_poll_t poll;
  int fd;
  int err;
  afut *rd, *wr;
  int rd_ready, wr_ready;
  struct fdwatch *next;
} fdwatch;

/* ------------------------------------------------------------------ */
/* waiting                                                              */

static void wake(afut *t) {
  if (t == NULL) return;
  aloop *l = loom__loop_of(t);
  if (l != NULL) loom__loop_schedule(l, t);
}

static int waitlist_add(waitlist *w, afut *t) {
  if (w->n == w->cap) {
    int ncap = w->cap ? w->cap * 2 : 4;
    afut **v = (afut **)realloc(w->v, (size_t)ncap * sizeof *v);
    if (v == NULL) return 0;
    w->v = v;
    w->cap = ncap;
  }
  w->v[w->n++] = t;
  return 1;
}

static void waitlist_remove(waitlist *w, const afut *t) {
  for (int i = 0; i < w->n; i++)
    if (w->v[i] == t) {
      w->v[i] = w->v[--w->n];
      return;
    }
}

static void waitlist_wake(waitlist *w) {
  for (int i = 0; i < w->n; i++) wake(w->v[i]);
}

/* The running task, for a call that is about to suspend it. */
static afut *me(lua_State *L, const char *what) {
  return loom__loop_task(L, what);
}

/* Suspends t (marked as waiting for I/O) until a callback, its timer or a
** cancellation schedules it; then k runs with ctx. */
static int suspend(lua_State *L, afut *t, lua_KContext ctx, lua_KFunction k) {
  t->wait = W_IO;
  return lua_yieldk(L, 0, ctx, k);
}

/* What every continuation does first: the task no longer waits. Returns
** whether its timer ran out. */
static int resumed(afut *t) {
  loom__loop_timer_stop(t);
  t->wait = W_NONE;
  int timed_out = t->timed_out;
  t->timed_out = 0;
  return timed_out;
}

static afut *running_task(void) {
  return loom__loop_running()->current;
}

/* ------------------------------------------------------------------ */
/* errors                                                               */

/* Pushes a network error: kind "network", `code` the libuv error's name
** (ECONNREFUSED, EAI_NONAME, ...). */
static void push_net_error(lua_State *L, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  loom__push_error(L, "network", "%s: %s (%s)", lua_tostring(L, -1),
                   uv_strerror(code), uv_err_name(code));
  lua_pushstring(L, uv_err_name(code));
  lua_setfield(L, -2, "code");
  lua_remove(L, -2);
}

static int raise_net(lua_State *L, int code, const char *what) {
  push_net_error(L, code, "%s", what);
  return lua_error(L);
}

/* Parses address and port into ss (IPv6 when the address has a ':'). */
static int parse_addr(const char *addr, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (strchr(addr, ':') != NULL)
    return uv_ip6_addr(addr, port, (struct sockaddr_in6 *)ss);
  return uv_ip4_addr(addr, port, (struct sockaddr_in *)ss);
}

static int check_port(lua_State *L, int idx) {
  lua_Integer port = luaL_checkinteger(L, idx);
  luaL_argcheck(L, port >= 0 && port <= 65535, idx, "port must be 0 to 65535");
  return (int)port;
}

/* Pushes the address and port of sa; 2 values, or 0 if it has none. */
static int push_sockaddr(lua_State *L, const struct sockaddr_storage *ss) {
  char ip[64];
  int port;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    uv_ip4_name(a, ip, sizeof ip);
    port = ntohs(a->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    uv_ip6_name(a, ip, sizeof ip);
    port = ntohs(a->sin6_port);
  } else {
    return 0;
  }
  lua_pushstring(L, ip);
  lua_pushinteger(L, port);
  return 2;
}

/* ------------------------------------------------------------------ */
/* streams: life                                                        */

static void free_stream(astream *s) {
  free(s->buf);
  free(s->closers.v);
  free(s);
}

static void stream_closed(uv_handle_t *h) {
  astream *s = (astream *)h->data;
  s->closed = 1;
  s->reading = 0;
  wake(s->reader);
  wake(s->drainer);
  waitlist_wake(&s->closers);
  if (!s->boxed) free_stream(s);
}

/* Closes the handle now (pending writes are dropped). */
static void close_now(astream *s) {
  s->closing = 1;
  s->eof = 1;
  if (s->uvclosing) return;
  s->uvclosing = 1;
  uv_close((uv_handle_t *)&s->tcp, stream_closed);
}

static void shutdown_done(uv_shutdown_t *req, int status) {
  astream *s = (astream *)req->data;
  free(req);
  s->shutting = 0;
  s->shut = 1;
  if (status < 0 && status != UV_ECANCELED && status != UV_ENOTCONN && s->err == 0)
    s->err = status;
  if (s->close_after_shut && !s->uvclosing) close_now(s);
}

/* Shuts the write side once the pending writes are out. 0 or an error. */
static int start_shutdown(astream *s) {
  if (s->shutting || s->shut) return 0;
  uv_shutdown_t *req = (uv_shutdown_t *)malloc(sizeof *req);
  if (req == NULL) return UV_ENOMEM;
  req->data = s;
  int r = uv_shutdown(req, (uv_stream_t *)&s->tcp, shutdown_done);
  if (r < 0) {
    free(req);
    return r;
  }
  s->shutting = 1;
  return 0;
}

/* close(): no more reads or writes; what was written is still sent, then
** the handle closes. */
static void close_gracefully(astream *s) {
  if (s->closing) return;
  s->closing = 1;
  s->eof = 1;
  if (s->reading) {
    uv_read_stop((uv_stream_t *)&s->tcp);
    s->reading = 0;
  }
  wake(s->reader);
  if (s->wpending > 0 && s->err == 0 && s->connected && !s->shut) {
    s->close_after_shut = 1;
    if (s->shutting || start_shutdown(s) == 0) return;
  }
  close_now(s);
}

/* ------------------------------------------------------------------ */
/* streams: reading                                                     */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  aloop *l = loom__loop_running();
  (void)h;
  if (l->scratch == NULL) l->scratch = (char *)malloc(SCRATCH_SIZE);
  buf->base = l->scratch;
  buf->len = l->scratch ? SCRATCH_SIZE : 0;
}

static int append(astream *s, const char *p, size_t n) {
  if (s->off + s->len + n > s->cap) {
    if (s->off > 0) {
      memmove(s->buf, s->buf + s->off, s->len);
      s->off = 0;
    }
    if (s->len + n > s->cap) {
      size_t ncap = s->cap ? s->cap : 256;
      while (ncap < s->len + n) ncap *= 2;
      char *b = (char *)realloc(s->buf, ncap);
      if (b == NULL) return 0;
      s->buf = b;
      s->cap = ncap;
    }
  }
  memcpy(s->buf + s->off + s->len, p, n);
  s->len += n;
  return 1;
}

static void stop_reading(astream *s) {
  if (!s->reading) return;
  uv_read_stop((uv_stream_t *)&s->tcp);
  s->reading = 0;
}

static void on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf) {
  astream *s = (astream *)h->data;
  if (nread > 0) {
    if (!append(s, buf->base, (size_t)nread)) {
      s->err = UV_ENOMEM;
      stop_reading(s);
    } else if (s->len >= 2 * s->limit && s->reader == NULL) {
      stop_reading(s); /* nobody reads: the peer waits (backpressure) */
    }
  } else if (nread == UV_EOF) {
    s->eof = 1;
    stop_reading(s);
  } else if (nread < 0) {
    if (s->err == 0) s->err = (int)nread;
    stop_reading(s);
    wake(s->drainer);
  } else {
    return;
  }
  wake(s->reader);
}

/* Reads from the socket while there is room, or someone waits to read. */
static void want_data(astream *s) {
  if (s->reading || s->eof || s->err || s->closing || !s->connected) return;
  if (s->len >= 2 * s->limit && s->reader == NULL) return;
  if (uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read) == 0) s->reading = 1;
}

static void consume(astream *s, size_t n) {
  s->off += n;
  s->len -= n;
  if (s->len == 0) {
    s->off = 0;
    if (s->cap > SMALL_BUFFER) { /* an idle connection keeps a small buffer at most */
      free(s->buf);
      s->buf = NULL;
      s->cap = 0;
    }
  }
  want_data(s);
}

/* Pushes the first n unread bytes and consumes them. */
static void take(lua_State *L, astream *s, size_t n) {
  lua_pushlstring(L, s->buf ? s->buf + s->off : "", n);
  consume(s, n);
}

static size_t find(const astream *s, const char *sep, size_t seplen, int *found) {
  const char *b = s->buf ? s->buf + s->off : "";
  *found = 0;
  if (s->len >= seplen)
    for (size_t i = 0; i + seplen <= s->len; i++) {
      const char *p = (const char *)memchr(b + i, sep[0], s->len - seplen + 1 - i);
      if (p == NULL) break;
      i = (size_t)(p - b);
      if (memcmp(p, sep, seplen) == 0) {
        *found = 1;
        return i;
      }
    }
  return 0;
}

/* ------------------------------------------------------------------ */
/* streams: the Lua side                                                */

static astream *test_stream(lua_State *L, int idx) {
  astream **box = (astream **)luaL_testudata(L, idx, STREAM_META);
  return box ? *box : NULL;
}

static astream *check_stream(lua_State *L, int idx) {
  astream **box = (astream **)luaL_checkudata(L, idx, STREAM_META);
  if (*box == NULL) luaL_argerror(L, idx, "stream is not usable");
  return *box;
}

/* A write to a connection the peer reset raises SIGPIPE, whose default
** action kills the process; Python and LuaSocket ignore it, and so does
** loom once it makes a socket (a handler the program installed is kept). */
static pthread_once_t sigpipe_once = PTHREAD_ONCE_INIT;

static void ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

/* Pushes a new stream box (a libuv TCP handle, not connected yet). */
static astream *new_stream(lua_State *L, aloop *l, size_t limit) {
  pthread_once(&sigpipe_once, ignore_sigpipe);
  astream **box = (astream **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, STREAM_META);
  astream *s = (astream *)calloc(1, sizeof *s);
  if (s == NULL) luaL_error(L, "not enough memory");
  s->kind = K_STREAM;
  s->limit = limit;
  int r = uv_tcp_init(&l->uv, &s->tcp);
  if (r < 0) {
    free(s);
    raise_net(L, r, "socket");
  }
  s->tcp.data = s;
  s->boxed = 1;
  *box = s;
  return s;
}

static int stream_gc(lua_State *L) {
  astream **box = (astream **)luaL_testudata(L, 1, STREAM_META);
  if (box == NULL || *box == NULL) return 0;
  astream *s = *box;
  *box = NULL;
  s->boxed = 0;
  if (s->closed) free_stream(s);
  else close_now(s); /* nobody can use it any more; its close callback frees it */
  return 0;
}

static int stream_op(lua_State *L, int op);

static int k_stream(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  astream *s = check_stream(L, 1);
  afut *t = running_task();
  if (s->reader == t) s->reader = NULL;
  if (s->drainer == t) s->drainer = NULL;
  waitlist_remove(&s->closers, t);
  resumed(t);
  if (t->cancel_req) {
    if ((int)ctx == OP_CONNECT) close_now(s);
    return loom__loop_deliver_cancel(L, t);
  }
  return stream_op(L, (int)ctx);
}

/* Suspends the task until the stream's state changes, then retries op. */
static int stream_wait(lua_State *L, astream *s, int op, const char *what) {
  afut *t = me(L, what);
  if (t->cancel_req) return loom__loop_deliver_cancel(L, t);
  if (op == OP_DRAIN) {
    if (s->drainer != NULL && s->drainer != t)
      return luaL_error(L, "%s: another task is already draining this stream", what);
    s->drainer = t;
  } else if (op == OP_CLOSED) {
    if (!waitlist_add(&s->closers, t)) return luaL_error(L, "not enough memory");
  } else {
    if (s->reader != NULL && s->reader != t)
      return luaL_error(L, "%s: another task is already reading from this stream", what);
    s->reader = t;
    want_data(s);
  }
  return suspend(L, t, op, k_stream);
}

static int raise_stream_error(lua_State *L, astream *s) {
  return raise_net(L, s->err, "connection lost");
}

/* Raises the end-of-stream error of readexactly/readuntil: `partial` holds
** what was read (consumed), `expected` the bytes asked for, or nil. */
static int raise_incomplete(lua_State *L, astream *s, lua_Integer expected) {
  size_t n = s->len;
  loom__push_error(L, "incomplete_read", expected >= 0
                   ? "%d bytes read on a total of %d expected bytes"
                   : "%d bytes read before the end of the stream, without the separator",
                   (int)n, (int)expected);
  take(L, s, n);
  lua_setfield(L, -2, "partial");
  if (expected >= 0) {
    lua_pushinteger(L, expected);
    lua_setfield(L, -2, "expected");
  }
  return lua_error(L);
}

static int raise_overrun(lua_State *L, size_t consumed, const char *msg) {
  loom__push_error(L, "limit_overrun", "%s", msg);
  lua_pushinteger(L, (lua_Integer)consumed);
  lua_setfield(L, -2, "consumed");
  return lua_error(L);
}

/* readuntil and readline: stack [stream, sep] */
static int op_until(lua_State *L, astream *s, int line) {
  size_t seplen;
  const char *sep = line ? "\n" : luaL_optlstring(L, 2, "\n", &seplen);
  if (line) seplen = 1;
  luaL_argcheck(L, seplen > 0, 2, "separator must not be empty");
  if (s->err) return raise_stream_error(L, s);
  int found;
  size_t at = find(s, sep, seplen, &found);
  /* asyncio's limits: the separator may start at `limit` at most */
  if (found) {
    size_t end = at + seplen;
    if (at <= s->limit) {
      take(L, s, end);
      return 1;
    }
    if (line) consume(s, end);
    return raise_overrun(L, at, "separator is found, but the chunk is longer than the limit");
  }
  if (s->len + 1 > s->limit + seplen) { /* no room left for a separator that fits */
    size_t offset = s->len + 1 - seplen;
    if (line) consume(s, s->len);
    return raise_overrun(L, offset, "separator is not found, and the chunk exceeds the limit");
  }
  if (s->eof) {
    if (line) {
      take(L, s, s->len);
      return 1;
    }
    return raise_incomplete(L, s, -1);
  }
  return stream_wait(L, s, line ? OP_READLINE : OP_READUNTIL,
                     line ? "readline" : "readuntil");
}

static int stream_op(lua_State *L, int op) {
  astream *s = check_stream(L, 1);
  switch (op) {
    case OP_READ: {
      lua_Integer n = luaL_optinteger(L, 2, -1);
      if (n == 0) {
        lua_pushliteral(L, "");
        return 1;
      }
      if (s->err) return raise_stream_error(L, s);
      if (n < 0) { /* to the end of the stream */
        if (!s->eof) return stream_wait(L, s, op, "read");
        take(L, s, s->len);
        return 1;
      }
      if (s->len > 0) {
        take(L, s, s->len < (size_t)n ? s->len : (size_t)n);
        return 1;
      }
      if (s->eof) {
        lua_pushliteral(L, "");
        return 1;
      }
      return stream_wait(L, s, op, "read");
    }
    case OP_READEXACTLY: {
      lua_Integer n = luaL_checkinteger(L, 2);
      luaL_argcheck(L, n >= 0, 2, "readexactly size can not be less than zero");
      if (s->err) return raise_stream_error(L, s);
      if (s->len >= (size_t)n) {
        take(L, s, (size_t)n);
        return 1;
      }
      if (s->eof) return raise_incomplete(L, s, n);
      return stream_wait(L, s, op, "readexactly");
    }
    case OP_READUNTIL: return op_until(L, s, 0);
    case OP_READLINE: return op_until(L, s, 1);
    case OP_DRAIN:
      if (s->err) return raise_stream_error(L, s);
      if (s->paused && !s->closed) return stream_wait(L, s, op, "drain");
      /* asyncio: draining a connection that is gone raises */
      if (s->closing) return loom__raise(L, "closed", "drain on a closed stream");
      return 0;
    case OP_CLOSED:
      if (!s->closed) {
        if (!s->closing) return luaL_error(L, "wait_closed: the stream was not closed (call close first)");
        return stream_wait(L, s, op, "wait_closed");
      }
      return 0;
    case OP_CONNECT:
      if (s->connected) {
        lua_settop(L, 1);
        return 1;
      }
      close_now(s);
      push_net_error(L, s->err ? s->err : UV_ECANCELED, "connect to %s port %d",
                     lua_tostring(L, 2), (int)lua_tointeger(L, 3));
      return lua_error(L);
  }
  return 0;
}

static int st_read(lua_State *L) { lua_settop(L, 2); return stream_op(L, OP_READ); }
static int st_readexactly(lua_State *L) { lua_settop(L, 2); return stream_op(L, OP_READEXACTLY); }
static int st_readuntil(lua_State *L) { lua_settop(L, 2); return stream_op(L, OP_READUNTIL); }
static int st_readline(lua_State *L) { lua_settop(L, 1); return stream_op(L, OP_READLINE); }
static int st_drain(lua_State *L) { lua_settop(L, 1); return stream_op(L, OP_DRAIN); }
static int st_wait_closed(lua_State *L) { lua_settop(L, 1); return stream_op(L, OP_CLOSED); }

static int st_at_eof(lua_State *L) {
  astream *s = check_stream(L, 1);
  lua_pushboolean(L, s->eof && s->len == 0);
  return 1;
}

typedef struct wreq {
  uv_write_t req;
  size_t n;
  char data[];
} wreq;

static void write_done(uv_write_t *req, int status) {
  wreq *w = (wreq *)req;
  astream *s = (astream *)req->data;
  s->wpending -= w->n;
  free(w);
  if (status < 0 && status != UV_ECANCELED && s->err == 0) {
    s->err = status;
    wake(s->reader);
  }
  if (s->paused && (s->wpending <= LOW_WATER || s->err)) {
    s->paused = 0;
    wake(s->drainer);
  }
}

/* Sends n bytes (what the socket takes now, the rest queued). */
static int send_bytes(lua_State *L, astream *s, const char *p, size_t n) {
  size_t done = 0;
  if (s->wpending == 0) {
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int r = uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
    if (r > 0) done = (size_t)r;
    else if (r < 0 && r != UV_EAGAIN) {
      s->err = r;
      return raise_stream_error(L, s);
    }
  }
  if (done == n) return 0;
  wreq *w = (wreq *)malloc(sizeof *w + (n - done));
  if (w == NULL) return luaL_error(L, "not enough memory");
  w->n = n - done;
  memcpy(w->data, p + done, w->n);
  w->req.data = s;
  uv_buf_t b = uv_buf_init(w->data, (unsigned)w->n);
  int r = uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, write_done);
  if (r < 0) {
    free(w);
    s->err = r;
    return raise_stream_error(L, s);
  }
  s->wpending += w->n;
  if (s->wpending > HIGH_WATER) s->paused = 1;
  return 0;
}

static void check_writable(lua_State *L, astream *s) {
  if (s->err) raise_stream_error(L, s);
  if (s->closing) loom__raise(L, "closed", "write on a closed stream");
  if (s->shut || s->shutting) loom__raise(L, "closed", "write after write_eof");
  if (!s->connected) luaL_error(L, "write on a stream that is not connected");
}

/* w:write(data): queues data; never suspends (drain does) */
static int st_write(lua_State *L) {
  astream *s = check_stream(L, 1);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  check_writable(L, s);
  if (n > 0) send_bytes(L, s, p, n);
  return 0;
}

/* w:writelines(list) */
static int st_writelines(lua_State *L) {
  astream *s = check_stream(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  check_writable(L, s);
  luaL_Buffer b;
  lua_Integer n = luaL_len(L, 2);
  luaL_buffinit(L, &b);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    if (!lua_isstring(L, -1))
      return luaL_error(L, "bad argument #1 to 'writelines' (item %d is a %s, not a string)",
                        (int)i, luaL_typename(L, -1));
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  size_t len;
  const char *p = lua_tolstring(L, -1, &len);
  if (len > 0) send_bytes(L, s, p, len);
  return 0;
}

static int st_write_eof(lua_State *L) {
  astream *s = check_stream(L, 1);
  if (s->err) return raise_stream_error(L, s);
  if (s->closing) return loom__raise(L, "closed", "write_eof on a closed stream");
  if (!s->connected) return luaL_error(L, "write_eof on a stream that is not connected");
  int r = start_shutdown(s);
  if (r < 0) return raise_net(L, r, "write_eof");
  return 0;
}

static int st_can_write_eof(lua_State *L) {
  check_stream(L, 1);
  lua_pushboolean(L, 1);
  return 1;
}

static int st_close(lua_State *L) {
  astream *s = test_stream(L, 1);
  if (s == NULL) {
    check_stream(L, 1);
    return 0;
  }
  close_gracefully(s);
  return 0;
}

static int st_abort(lua_State *L) {
  close_now(check_stream(L, 1));
  return 0;
}

static int st_is_closing(lua_State *L) {
  lua_pushboolean(L, check_stream(L, 1)->closing);
  return 1;
}

static int st_write_buffer_size(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_stream(L, 1)->wpending);
  return 1;
}

static int st_name(lua_State *L, int peer) {
  astream *s = check_stream(L, 1);
  struct sockaddr_storage ss;
  int len = (int)sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (s->uvclosing) return 0;
  int r = peer ? uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &len)
               : uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&ss, &len);
  if (r < 0) return 0;
  return push_sockaddr(L, &ss);
}

static int st_getpeername(lua_State *L) { return st_name(L, 1); }
static int st_getsockname(lua_State *L) { return st_name(L, 0); }

static int st_tostring(lua_State *L) {
  astream *s = check_stream(L, 1);
  const char *state = s->closed ? "closed" : s->closing ? "closing"
                    : s->connected ? "open" : "connecting";
  if (s->connected && !s->uvclosing && st_getpeername(L) == 2) {
    lua_pushfstring(L, "loom.async.Stream(%s port %d, %s)", lua_tostring(L, -2),
                    (int)lua_tointeger(L, -1), state);
  } else {
    lua_pushfstring(L, "loom.async.Stream(%s)", state);
  }
  return 1;
}

/* ------------------------------------------------------------------ */
/* connecting                                                           */

static void connect_done(uv_connect_t *req, int status) {
  astream *s = (astream *)req->data;
  free(req);
  if (status == 0) {
    s->connected = 1;
    uv_tcp_nodelay(&s->tcp, 1); /* as asyncio: small writes go out at once */
    want_data(s);
  } else if (s->err == 0) {
    s->err = status;
  }
  wake(s->reader);
}

/* async._connect(address, port[, limit]) -> stream: connects to a numeric
** address (open_connection resolves names first). */
static int l_connect(lua_State *L) {
  afut *t = me(L, "async.open_connection");
  const char *addr = luaL_checkstring(L, 1);
  int port = check_port(L, 2);
  lua_Integer limit = luaL_optinteger(L, 3, DEFAULT_LIMIT);
  luaL_argcheck(L, limit > 0, 3, "limit must be positive");
  struct sockaddr_storage ss;
  if (parse_addr(addr, port, &ss) < 0)
    return luaL_argerror(L, 1, "not a numeric IPv4 or IPv6 address");
  if (t->cancel_req) return loom__loop_deliver_cancel(L, t);
  lua_settop(L, 3);
  astream *s = new_stream(L, loom__loop_running(), (size_t)limit);
  lua_insert(L, 1); /* [stream, address, port, limit]: the box at 1 for k_stream */
  uv_connect_t *req = (uv_connect_t *)malloc(sizeof *req);
  if (req == NULL) return luaL_error(L, "not enough memory");
  req->data = s;
  int r = uv_tcp_connect(req, &s->tcp, (const struct sockaddr *)&ss, connect_done);
  if (r < 0) {
    free(req);
    close_now(s);
    push_net_error(L, r, "connect to %s port %d", addr, port);
    return lua_error(L);
  }
  s->reader = t;
  return suspend(L, t, OP_CONNECT, k_stream);
}

/* ------------------------------------------------------------------ */
/* name resolution                                                      */

typedef struct dnsreq {
  uv_getaddrinfo_t req;
  afut *task;  /* NULL: abandoned (its task stopped waiting) */
  int status, done;
  struct addrinfo *res;
} dnsreq;

static void resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  dnsreq *d = (dnsreq *)req->data;
  if (d->task == NULL) {
    if (res != NULL) uv_freeaddrinfo(res);
    free(d);
    return;
  }
  d->status = status;
  d->res = res;
  d->done = 1;
  wake(d->task);
}

static int k_resolved(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  dnsreq *d = (dnsreq *)ctx;
  afut *t = running_task();
  resumed(t);
  if (!d->done) { /* cancelled: the callback frees the request */
    d->task = NULL;
    uv_cancel((uv_req_t *)&d->req);
    return loom__loop_deliver_cancel(L, t);
  }
  struct addrinfo *res = d->res;
  int st = d->status;
  free(d);
  if (st < 0) {
    if (res != NULL) uv_freeaddrinfo(res);
    push_net_error(L, st, "cannot resolve '%s'", lua_tostring(L, 1));
    return lua_error(L);
  }
  lua_newtable(L);
  int n = 0;
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen < sizeof ss ? ai->ai_addrlen : sizeof ss);
    lua_createtable(L, 0, 3);
    push_sockaddr(L, &ss);
    lua_setfield(L, -3, "port");
    lua_setfield(L, -2, "address");
    lua_pushstring(L, ai->ai_family == AF_INET ? "inet" : "inet6");
    lua_setfield(L, -2, "family");
    lua_rawseti(L, -2, ++n);
  }
  uv_freeaddrinfo(res);
  return 1;
}

/* async.getaddrinfo(host[, port[, family]]) -> {{address=, port=,
** family="inet"|"inet6"}, ...} for TCP; family narrows it. Suspends the
** task while libuv resolves. */
static int l_getaddrinfo(lua_State *L) {
  afut *t = me(L, "async.getaddrinfo");
  const char *host = luaL_checkstring(L, 1);
  char service[16] = "0";
  if (!lua_isnoneornil(L, 2)) snprintf(service, sizeof service, "%d", check_port(L, 2));
  const char *fam = luaL_optstring(L, 3, "any");
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  if (strcmp(fam, "inet") == 0) hints.ai_family = AF_INET;
  else if (strcmp(fam, "inet6") == 0) hints.ai_family = AF_INET6;
  else if (strcmp(fam, "any") == 0) hints.ai_family = AF_UNSPEC;
  else return luaL_argerror(L, 3, "family must be 'inet', 'inet6' or 'any'");
  if (t->cancel_req) return loom__loop_deliver_cancel(L, t);
  lua_settop(L, 1);
  dnsreq *d = (dnsreq *)calloc(1, sizeof *d);
  if (d == NULL) return luaL_error(L, "not enough memory");
  d->req.data = d;
  int r = uv_getaddrinfo(&loom__loop_running()->uv, &d->req, resolved, host,
                         service, &hints);
  if (r < 0) {
    free(d);
    push_net_error(L, r, "cannot resolve '%s'", host);
    return lua_error(L);
  }
  d->task = t;
  return suspend(L, t, (lua_KContext)d, k_resolved);
}

/* ------------------------------------------------------------------ */
/* servers                                                              */

static aserver *check_server(lua_State *L, int idx) {
  aserver **box = (aserver **)luaL_checkudata(L, idx, SERVER_META);
  if (*box == NULL) luaL_argerror(L, idx, "server is not usable");
  return *box;
}

static void free_server(aserver *srv) {
  free(srv->waiters.v);
  free(srv);
}

static void server_closed(uv_handle_t *h) {
  aserver *srv = (aserver *)h->data;
  srv->closed = 1;
  waitlist_wake(&srv->waiters);
  if (!srv->boxed) free_server(srv);
}

static void server_stop(aserver *srv) {
  if (srv->closing) return;
  srv->closing = 1;
  uv_close((uv_handle_t *)&srv->tcp, server_closed);
}

/* Stops listening and lets the loop forget the server. */
static void server_close(lua_State *L, aserver *srv) {
  if (srv->closing) return;
  server_stop(srv);
  aloop *l = loom__loop_running();
  if (l != NULL && l->L != NULL) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, l->anchors);
    lua_pushnil(L);
    lua_rawsetp(L, -2, srv);
    lua_pop(L, 1);
  }
}

/* The done callback of a connection's handler task (upvalues: server box,
** stream box): closes the stream, reports an error nobody caught, and
** counts the connection out. */
static int handler_ended(lua_State *L) {
  aserver *srv = *(aserver **)lua_touserdata(L, lua_upvalueindex(1));
  astream *s = test_stream(L, lua_upvalueindex(2));
  if (s != NULL) close_gracefully(s);
  lua_getfield(L, 1, "cancelled");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  int cancelled = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (!cancelled) {
    lua_getfield(L, 1, "exception");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    if (!lua_isnil(L, -1)) {
      fprintf(stderr, "loom.async: error in a connection handler:\n%s\n",
              luaL_tolstring(L, -1, NULL));
      fflush(stderr);
    }
  }
  if (srv != NULL && --srv->active == 0) waitlist_wake(&srv->waiters);
  return 0;
}

/* Protected: accepts one connection on the server (light userdata at 1)
** and starts its handler task. */
static int accept_one(lua_State *L) {
  aserver *srv = (aserver *)lua_touserdata(L, 1);
  aloop *l = loom__loop_running();
  lua_rawgeti(L, LUA_REGISTRYINDEX, l->anchors);
  lua_rawgetp(L, -1, srv);     /* 3: the server box */
  if (lua_isnil(L, -1)) return 0;
  astream *s = new_stream(L, l, srv->limit); /* 4 */
  int r = uv_accept((uv_stream_t *)&srv->tcp, (uv_stream_t *)&s->tcp);
  if (r < 0) {
    close_now(s);
    return 0;
  }
  s->connected = 1;
  uv_tcp_nodelay(&s->tcp, 1);
  want_data(s);
  lua_getiuservalue(L, 3, 1); /* 5: handler */
  lua_pushvalue(L, 4);
  lua_pushvalue(L, 4);
  loom__loop_spawn(L, l, 5, 2, NULL); /* 8: the task */
  srv->active++;
  lua_getfield(L, -1, "add_done_callback");
  lua_pushvalue(L, -2);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 4);
  lua_pushcclosure(L, handler_ended, 2);
  lua_call(L, 2, 0);
  return 0;
}

static void on_connection(uv_stream_t *h, int status) {
  aserver *srv = (aserver *)h->data;
  aloop *l = loom__loop_running();
  if (status < 0 || l == NULL || srv->closing) return;
  lua_State *L = l->L;
  int top = lua_gettop(L);
  lua_pushcfunction(L, accept_one);
  lua_pushlightuserdata(L, srv);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "loom.async: cannot accept a connection: %s\n",
            luaL_tolstring(L, -1, NULL));
    fflush(stderr);
  }
  lua_settop(L, top);
}

/* async._listen(address, port, handler[, backlog[, limit]]) -> server */
static int l_listen(lua_State *L) {
  aloop *l = loom__loop_running();
  if (l == NULL) return luaL_error(L, "async.start_server needs a running loop");
  const char *addr = luaL_checkstring(L, 1);
  int port = check_port(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_Integer backlog = luaL_optinteger(L, 4, 511);
  lua_Integer limit = luaL_optinteger(L, 5, DEFAULT_LIMIT);
  luaL_argcheck(L, backlog > 0 && backlog <= 65535, 4, "backlog must be 1 to 65535");
  luaL_argcheck(L, limit > 0, 5, "limit must be positive");
  struct sockaddr_storage ss;
  if (parse_addr(addr, port, &ss) < 0)
    return luaL_argerror(L, 1, "not a numeric IPv4 or IPv6 address");
  aserver **box = (aserver **)lua_newuserdatauv(L, sizeof *box, 1);
  *box = NULL;
  luaL_setmetatable(L, SERVER_META);
  int bidx = lua_gettop(L);
  aserver *srv = (aserver *)calloc(1, sizeof *srv);
  if (srv == NULL) return luaL_error(L, "not enough memory");
  srv->kind = K_SERVER;
  srv->limit = (size_t)limit;
  int r = uv_tcp_init(&l->uv, &srv->tcp);
  if (r < 0) {
    free(srv);
    return raise_net(L, r, "socket");
  }
  srv->tcp.data = srv;
  srv->boxed = 1;
  *box = srv;
  if ((r = uv_tcp_bind(&srv->tcp, (const struct sockaddr *)&ss, 0)) < 0 ||
      (r = uv_listen((uv_stream_t *)&srv->tcp, (int)backlog, on_connection)) < 0) {
    server_stop(srv);
    push_net_error(L, r, "cannot listen on %s port %d", addr, port);
    return lua_error(L);
  }
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, bidx, 1);
  /* a listening server runs while nobody holds it, until closed */
  lua_rawgeti(L, LUA_REGISTRYINDEX, l->anchors);
  lua_pushvalue(L, bidx);
  lua_rawsetp(L, -2, srv);
  lua_settop(L, bidx);
  return 1;
}

static int server_gc(lua_State *L) {
  aserver **box = (aserver **)luaL_testudata(L, 1, SERVER_META);
  if (box == NULL || *box == NULL) return 0;
  aserver *srv = *box;
  *box = NULL;
  srv->boxed = 0;
  if (srv->closed) free_server(srv);
  else server_stop(srv);
  return 0;
}

static int sv_close(lua_State *L) {
  server_close(L, check_server(L, 1));
  return 0;
}

static int sv_is_serving(lua_State *L) {
  lua_pushboolean(L, !check_server(L, 1)->closing);
  return 1;
}

enum { SV_FOREVER, SV_CLOSED };

static int sv_wait(lua_State *L, int what);

static int k_server(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  aserver *srv = check_server(L, 1);
  afut *t = running_task();
  waitlist_remove(&srv->waiters, t);
  resumed(t);
  if (t->cancel_req) {
    if ((int)ctx == SV_FOREVER) server_close(L, srv);
    return loom__loop_deliver_cancel(L, t);
  }
  return sv_wait(L, (int)ctx);
}

static int sv_wait(lua_State *L, int what) {
  aserver *srv = check_server(L, 1);
  if (what == SV_FOREVER ? srv->closed : (srv->closed && srv->active == 0)) return 0;
  afut *t = me(L, what == SV_FOREVER ? "server:serve_forever" : "server:wait_closed");
  if (t->cancel_req) {
    if (what == SV_FOREVER) server_close(L, srv);
    return loom__loop_deliver_cancel(L, t);
  }
  if (!waitlist_add(&srv->waiters, t)) return luaL_error(L, "not enough memory");
  return suspend(L, t, what, k_server);
}

/* server:serve_forever(): waits until the server is closed; cancelling
** the waiting task closes it */
static int sv_serve_forever(lua_State *L) {
  lua_settop(L, 1);
  return sv_wait(L, SV_FOREVER);
}

/* server:wait_closed(): waits until the server is closed and the handlers
** of its connections have ended */
static int sv_wait_closed(lua_State *L) {
  lua_settop(L, 1);
  return sv_wait(L, SV_CLOSED);
}

static int sv_getsockname(lua_State *L) {
  aserver *srv = check_server(L, 1);
  struct sockaddr_storage ss;
  int len = (int)sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (srv->closing) return 0;
  if (uv_tcp_getsockname(&srv->tcp, (struct sockaddr *)&ss, &len) < 0) return 0;
  return push_sockaddr(L, &ss);
}

static int sv_port(lua_State *L) {
  if (sv_getsockname(L) != 2) return 0;
  return 1;
}

static int sv_connections(lua_State *L) {
  lua_pushinteger(L, check_server(L, 1)->active);
  return 1;
}

static int sv_tostring(lua_State *L) {
  aserver *srv = check_server(L, 1);
  if (!srv->closing && sv_getsockname(L) == 2) {
    lua_pushfstring(L, "loom.async.Server(%s port %d, serving)", lua_tostring(L, -2),
                    (int)lua_tointeger(L, -1));
  } else {
    lua_pushstring(L, srv->closed ? "loom.async.Server(closed)" : "loom.async.Server(closing)");
  }
  return 1;
}

/* ------------------------------------------------------------------ */
/* readiness of other libraries' descriptors                            */

static void free_poll(uv_handle_t *h) {
  free(h->data);
}

static void polled(uv_poll_t *h, int status, int events) {
  fdwatch *w = (fdwatch *)h->data;
  if (status < 0) {
    w->err = status;
    wake(w->rd);
    wake(w->wr);
    return;
  }
  if ((events & UV_READABLE) && w->rd != NULL) {
    w->rd_ready = 1;
    wake(w->rd);
  }
  if ((events & UV_WRITABLE) && w->wr != NULL) {
    w->wr_ready = 1;
    wake(w->wr);
  }
}

/* Starts, narrows or ends the poll of w as its waiters ask. */
static int repoll(aloop *l, fdwatch *w) {
  int events = (w->rd ? UV_READABLE : 0) | (w->wr ? UV_WRITABLE : 0);
  if (events != 0) return uv_poll_start(&w->poll, events, polled);
  for (fdwatch **p = &l->fdwatches; *p != NULL; p = &(*p)->next)
    if (*p == w) {
      *p = w->next;
      break;
    }
  uv_close((uv_handle_t *)&w->poll, free_poll);
  return 0;
}

/* The descriptor of the value at 1: an integer, or an object's getfd(). */
static int get_fd(lua_State *L) {
  lua_Integer fd;
  if (lua_isinteger(L, 1)) {
    fd = lua_tointeger(L, 1);
  } else {
    int indexable = lua_istable(L, 1);
    if (!indexable && lua_isuserdata(L, 1) && luaL_getmetafield(L, 1, "__index") != LUA_TNIL) {
      lua_pop(L, 1);
      indexable = 1;
    }
    if (!indexable) return luaL_typeerror(L, 1, "file descriptor or object with getfd()");
    lua_settop(L, 2);
    lua_getfield(L, 1, "getfd");
    if (!lua_isfunction(L, -1))
      return luaL_typeerror(L, 1, "file descriptor or object with getfd()");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    int isint; /* LuaSocket's getfd gives a float */
    fd = lua_tointegerx(L, -1, &isint);
    if (!isint) return luaL_argerror(L, 1, "getfd() gave no descriptor");
    lua_pop(L, 1);
  }
  luaL_argcheck(L, fd >= 0 && fd < 0x7fffffff, 1, "closed or invalid descriptor");
  return (int)fd;
}

static int k_io(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  fdwatch *w = (fdwatch *)ctx;
  afut *t = running_task();
  aloop *l = loom__loop_running();
  int timed_out = resumed(t);
  int ready, err = w->err;
  if (w->rd == t) {
    w->rd = NULL;
    ready = w->rd_ready;
  } else {
    w->wr = NULL;
    ready = w->wr_ready;
  }
  repoll(l, w);
  if (t->cancel_req) return loom__loop_deliver_cancel(L, t);
  if (err < 0) return raise_net(L, err, "wait on a descriptor");
  if (ready || !timed_out) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushliteral(L, "timeout");
  return 2;
}

static int wait_io(lua_State *L, int writable) {
  const char *what = writable ? "async.wait_writable" : "async.wait_readable";
  afut *t = me(L, what);
  int fd = get_fd(L);
  lua_Number timeout = luaL_optnumber(L, 2, -1);
  luaL_argcheck(L, lua_isnoneornil(L, 2) || (timeout >= 0 && timeout == timeout), 2,
                "timeout must be a non-negative number");
  if (t->cancel_req) return loom__loop_deliver_cancel(L, t);
  if (timeout == 0) { /* a look, no wait */
    struct pollfd p = {fd, (short)(writable ? POLLOUT : POLLIN), 0};
    int r = poll(&p, 1, 0);
    if (r > 0) {
      lua_pushboolean(L, 1);
      return 1;
    }
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  aloop *l = loom__loop_running();
  fdwatch *w = l->fdwatches;
  while (w != NULL && w->fd != fd) w = w->next;
  if (w == NULL) {
    if ((w = (fdwatch *)calloc(1, sizeof *w)) == NULL) return luaL_error(L, "not enough memory");
    w->kind = K_POLL;
    w->fd = fd;
    int r = uv_poll_init_socket(&l->uv, &w->poll, fd);
    if (r < 0) {
      free(w);
      return raise_net(L, r, what);
    }
    w->poll.data = w;
    w->next = l->fdwatches;
    l->fdwatches = w;
  }
  afut **slot = writable ? &w->wr : &w->rd;
  if (*slot != NULL) {
    repoll(l, w);
    return luaL_error(L, "%s: another task already waits on descriptor %d", what, fd);
  }
  *slot = t;
  if (writable) w->wr_ready = 0; else w->rd_ready = 0;
  int r = repoll(l, w);
  if (r < 0) {
    *slot = NULL;
    repoll(l, w);
    return raise_net(L, r, what);
  }
  t->timed_out = 0;
  if (timeout > 0 && !loom__loop_timer(l, t, timeout)) {
    *slot = NULL;
    repoll(l, w);
    return luaL_error(L, "not enough memory");
  }
  return suspend(L, t, (lua_KContext)w, k_io);
}

/* async.wait_readable(x[, timeout]) -> true | nil, "timeout" */
static int l_wait_readable(lua_State *L) { return wait_io(L, 0); }
/* async.wait_writable(x[, timeout]) -> true | nil, "timeout" */
static int l_wait_writable(lua_State *L) { return wait_io(L, 1); }

/* ------------------------------------------------------------------ */
/* the loop's end, and opening                                          */

void loom__net_close_handle(uv_handle_t *h) {
  int kind = h->data ? *(int *)h->data : 0;
  if (kind == K_STREAM) close_now((astream *)h->data);
  else if (kind == K_SERVER) server_stop((aserver *)h->data);
  else if (kind == K_POLL) uv_close(h, free_poll);
  else uv_close(h, NULL);
}

void loom__net_free_loop(aloop *l) {
  free(l->scratch);
  l->scratch = NULL;
  l->fdwatches = NULL; /* their handles were closed, and freed by free_poll */
}

static const luaL_Reg stream_methods[] = {
  {"read", st_read}, {"readexactly", st_readexactly}, {"readuntil", st_readuntil},
  {"readline", st_readline}, {"at_eof", st_at_eof}, {"write", st_write},
  {"writelines", st_writelines}, {"drain", st_drain}, {"write_eof", st_write_eof},
  {"can_write_eof", st_can_write_eof}, {"close", st_close}, {"abort", st_abort},
  {"is_closing", st_is_closing}, {"wait_closed", st_wait_closed},
  {"write_buffer_size", st_write_buffer_size}, {"getpeername", st_getpeername},
  {"getsockname", st_getsockname},
  {NULL, NULL}
};

static const luaL_Reg server_methods[] = {
  {"close", sv_close}, {"is_serving", sv_is_serving},
  {"serve_forever", sv_serve_forever}, {"wait_closed", sv_wait_closed},
  {"getsockname", sv_getsockname}, {"port", sv_port},
  {"connections", sv_connections},
  {NULL, NULL}
};


static const luaL_Reg net_funcs[] = {
  {"_connect", l_connect}, {"_listen", l_listen}, {"getaddrinfo", l_getaddrinfo},
  {"wait_readable", l_wait_readable}, {"wait_writable", l_wait_writable},
  {NULL, NULL}
};

void loom__open_net(lua_State *L) {
  loom__loop_class(L, STREAM_META, stream_methods, stream_gc, st_close, st_tostring);
  loom__loop_class(L, SERVER_META, server_methods, server_gc, sv_close, sv_tostring);
  luaL_setfuncs(L, net_funcs, 0);
}
