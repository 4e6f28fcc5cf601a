/*
 * sync_helpers.h — scaffolding shared by the tests of section 7
 * (synchronization): an order log, a recorder for callback waiters, a
 * polling wait, and a generic "waiter" that performs one blocking operation
 * of a primitive as a stackful task, a stepped task, a plain thread or a
 * callback, so that every primitive can be tested with every kind of waiter
 * and with mixtures of them.
 *
 * Everything here is `static inline`, so a test file pays only for what it
 * uses.
 */
#ifndef BRAID_SYNC_HELPERS_H
#define BRAID_SYNC_HELPERS_H

#include "helpers.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- order log ---------------------------------------------------------- */

#define LOG_CAP 256

/* Tags appended in completion order by any thread. */
typedef struct order_log {
  atomic_int n;
  atomic_int tags[LOG_CAP];
} order_log;

static inline void log_init(order_log *l) {
  atomic_store(&l->n, 0);
  for (int i = 0; i < LOG_CAP; i++)
    atomic_store(&l->tags[i], -1);
}

static inline void log_add(order_log *l, int tag) {
  int i = atomic_fetch_add(&l->n, 1);
  if (i < LOG_CAP) atomic_store(&l->tags[i], tag);
}

static inline int log_len(order_log *l) { return atomic_load(&l->n); }
static inline int log_at(order_log *l, int i) { return atomic_load(&l->tags[i]); }

/* Check that the log holds exactly tags[0..n-1]. */
static inline int check_log_(order_log *l, const int *tags, int n, const char *file, int line) {
  int ok = check_int_(log_len(l), n, "log length", "expected length", file, line);
  for (int i = 0; ok && i < n; i++)
    ok = check_int_(log_at(l, i), tags[i], "log entry", "expected tag", file, line);
  return ok;
}
#define CHECK_LOG(l, ...)                                                                                              \
  do {                                                                                                                 \
    const int want_[] = {__VA_ARGS__};                                                                                 \
    check_log_((l), want_, (int)(sizeof want_ / sizeof want_[0]), __FILE__, __LINE__);                                 \
  } while (0)

/* ---- polling ------------------------------------------------------------ */

/* One pause of a polling loop: 1 ms of the task's loop, or of the OS thread
 * when self is NULL. Only for stackful tasks (or threads). */
static inline void poll_pause(braid_task *self) {
  if (self) {
    int rc = braid_sleep(self, BRAID_MSEC);
    if (rc != 0) CHECK_INT(rc, 0);
  } else {
    os_sleep_ns(200 * BRAID_USEC);
  }
}

#define POLL_LIMIT_NS (20 * BRAID_SEC)

/*
 * WAIT_UNTIL(self, cond): poll cond (pausing the task self, or the calling
 * thread when self is NULL) until it holds; after 20 s of real time the
 * check fails and the macro gives up.
 */
static inline int wait_until_fail_(const char *file, int line, const char *what) {
  char msg[256];
  snprintf(msg, sizeof msg, "timed out waiting for %s", what);
  return check_true_(0, msg, file, line);
}
#define WAIT_UNTIL(self, cond)                                                                                         \
  do {                                                                                                                 \
    int64_t wu_t0_ = real_ns();                                                                                        \
    while (!(cond)) {                                                                                                  \
      if (real_ns() - wu_t0_ > POLL_LIMIT_NS) {                                                                        \
        wait_until_fail_(__FILE__, __LINE__, #cond);                                                                   \
        break;                                                                                                         \
      }                                                                                                                \
      poll_pause(self);                                                                                                \
    }                                                                                                                  \
  } while (0)

/* Spin barrier for race tests: every party arrives, then all go at once. */
typedef struct spin_barrier {
  atomic_int arrived;
  int parties;
} spin_barrier;

static inline void barrier_init(spin_barrier *b, int parties) {
  atomic_store(&b->arrived, 0);
  b->parties = parties;
}

/* Spinning yields now and then: on a loaded machine the parties may share
 * one core, and a pure spin would keep the other one from running. */
static inline void barrier_wait(spin_barrier *b) {
  atomic_fetch_add(&b->arrived, 1);
  for (unsigned n = 1; atomic_load(&b->arrived) < b->parties; n++)
    if (n % 1024 == 0) sched_yield();
}

/* Spin for about `n` iterations (jitter for race tests), yielding now and
 * then for the same reason. */
static inline void spin_for(unsigned n) {
  for (volatile unsigned i = 0; i < n; i++)
    if (i % 4096 == 4095) sched_yield();
}

/*
 * Adaptive jitter for wake-versus-cancel races: one of the two sides waits
 * a little before it acts, and after each round the side that won waits
 * longer (or the other one less), so both outcomes keep happening whatever
 * the relative speed of the two operations on this machine.
 */
typedef struct race_tuner {
  int d; /* > 0: the waker waits d spins; < 0: the canceller waits -d */
} race_tuner;

static inline unsigned tuner_waker_delay(const race_tuner *t) { return t->d > 0 ? (unsigned)t->d : 0; }
static inline unsigned tuner_canceller_delay(const race_tuner *t) { return t->d < 0 ? (unsigned)-t->d : 0; }
static inline void tuner_update(race_tuner *t, int wake_won) {
  int step = 25 + (t->d < 0 ? -t->d : t->d) / 8;
  t->d += wake_won ? step : -step;
  if (t->d > 200000) t->d = 200000;
  if (t->d < -200000) t->d = -200000;
}

/* ---- callback recorder ------------------------------------------------- */

/* What a completion callback saw, for the "exactly once, never on a task
 * stack, on which thread" checks. */
typedef struct cb_rec {
  atomic_int calls;
  atomic_int result;
  atomic_int on_task;      /* braid_current_task() != NULL during the call */
  _Atomic uintptr_t frame; /* address of a local of the callback */
  _Atomic uint64_t thread; /* braid_thread_id() of the thread it ran on */
  order_log *log;          /* if set, the tag is appended on each call */
  int tag;
} cb_rec;

static inline void cb_rec_init(cb_rec *r, order_log *log, int tag) {
  atomic_store(&r->calls, 0);
  atomic_store(&r->result, 1);
  atomic_store(&r->on_task, 0);
  atomic_store(&r->frame, 0);
  atomic_store(&r->thread, 0);
  r->log = log;
  r->tag = tag;
}

/* A braid_wait_cb: ud is a cb_rec. */
static inline void cb_record(void *ud, int result) {
  cb_rec *r = ud;
  volatile int local = 0;
  atomic_store(&r->frame, (uintptr_t)&local);
  atomic_store(&r->on_task, braid_current_task() != NULL);
  atomic_store(&r->thread, braid_thread_id());
  atomic_store(&r->result, result);
  if (r->log) log_add(r->log, r->tag);
  atomic_fetch_add(&r->calls, 1);
}

/* 1 if the address a lies within `span` bytes of b. */
static inline int near_addr(uintptr_t a, uintptr_t b, uintptr_t span) { return a > b ? a - b < span : b - a < span; }

/* ---- generic waiters ---------------------------------------------------- */

enum { W_TASK = 1, W_STEPPED, W_THREAD, W_CB };

static inline const char *kind_name(int kind) {
  switch (kind) {
  case W_TASK:
    return "stackful task";
  case W_STEPPED:
    return "stepped task";
  case W_THREAD:
    return "thread";
  case W_CB:
    return "callback";
  }
  return "?";
}

typedef struct sw sw;

/* The operation a generic waiter performs. */
typedef struct sw_ops {
  /* The blocking call, made by a task (stackful or stepped) or, with task
   * NULL, by the calling plain thread. */
  int (*wait)(braid_task *task, sw *w);
  /* Register a callback waiter: 0 = completed at once, BRAID_EPENDING =
   * pending with a handle in *out, anything else = error. */
  int (*wait_cb)(sw *w, braid_wait_cb cb, void *ud, braid_wait **out);
  /* Run by a task or thread waiter after a successful wait (not by a
   * callback waiter), in its own context: e.g. release what it acquired.
   * May be NULL. */
  void (*after)(braid_task *task, sw *w);
} sw_ops;

struct sw {
  co_state co; /* stepped waiters */
  const sw_ops *ops;
  void *obj;           /* the primitive (or the channel end) */
  int kind, tag;       /* W_*, tag for the order log */
  uint64_t token;      /* foreign owner / borrower of a callback waiter */
  void *item;          /* channel: item to send, or where an item is received */
  braid_scope *scope;  /* if set, entered by a task/thread waiter around the wait */
  order_log *log;      /* completion order */
  atomic_int started;  /* the waiter is about to wait */
  atomic_int done;     /* the outcome is known */
  atomic_int rc;       /* the outcome */
  atomic_int release;  /* for `after` hooks that hold until told to let go */
  _Atomic uint64_t id; /* braid_task_id or braid_thread_id */
  braid_task *task;    /* task waiters */
  pthread_t thread;    /* thread waiters */
  int thread_running;
  braid_wait *handle;   /* callback waiters */
  int rc_register;      /* callback waiters: what the *_cb call returned */
  braid_time_t woke_at; /* task/thread waiters: braid_now when the wait returned */
  cb_rec cb;            /* callback waiters */
};

static inline void sw_init(sw *w, const sw_ops *ops, void *obj, int kind, int tag, order_log *log) {
  memset(w, 0, sizeof *w);
  w->ops = ops;
  w->obj = obj;
  w->kind = kind;
  w->tag = tag;
  w->log = log;
  w->token = (uint64_t)(1000 + tag);
  atomic_store(&w->rc, 1);
  cb_rec_init(&w->cb, NULL, tag);
}

static inline void sw_finish(braid_task *self, sw *w, int rc) {
  w->woke_at = braid_now(self);
  atomic_store(&w->rc, rc);
  if (w->log) log_add(w->log, w->tag);
  if (rc == 0 && w->ops->after) w->ops->after(self, w);
  atomic_store(&w->done, 1);
}

static inline int sw_task_body(braid_task *self, void *arg) {
  sw *w = arg;
  atomic_store(&w->id, braid_task_id(self));
  if (w->scope) CHECK_INT(braid_scope_enter(self, w->scope), 0);
  atomic_store(&w->started, 1);
  int rc = w->ops->wait(self, w);
  sw_finish(self, w, rc);
  if (w->scope) (void)braid_scope_exit(w->scope, rc);
  return 0;
}

static inline int sw_step_body(braid_task *self, void *ctx, int resume) {
  sw *w = ctx;
  switch (w->co.pc) {
  case 0:
    atomic_store(&w->id, braid_task_id(self));
    if (w->scope) CHECK_INT(braid_scope_enter(self, w->scope), 0);
    atomic_store(&w->started, 1);
    AWAIT(&w->co, w->ops->wait(self, w));
    sw_finish(self, w, w->co.rc);
    if (w->scope) (void)braid_scope_exit(w->scope, w->co.rc);
    return 0;
  }
  return CO_FELL_OFF;
}

static inline void *sw_thread_body(void *arg) {
  sw *w = arg;
  atomic_store(&w->id, braid_thread_id());
  if (w->scope) CHECK_INT(braid_scope_enter(NULL, w->scope), 0);
  atomic_store(&w->started, 1);
  int rc = w->ops->wait(NULL, w);
  sw_finish(NULL, w, rc);
  if (w->scope) (void)braid_scope_exit(w->scope, rc);
  return NULL;
}

static inline void sw_cb(void *ud, int result) {
  sw *w = ud;
  cb_record(&w->cb, result);
  atomic_store(&w->rc, result);
  if (w->log) log_add(w->log, w->tag);
  atomic_store(&w->done, 1);
}

/*
 * Start the waiter: a task is spawned into g (it runs at the caller's next
 * switch), a thread is created, a callback waiter is registered at once on
 * the calling thread. Returns 0 or the error of the start itself.
 */
static inline int sw_start(braid_group *g, sw *w) {
  switch (w->kind) {
  case W_TASK: {
    braid_spawn_opts o = spawn_opts(NULL, 64 * 1024);
    return braid_group_spawn(g, sw_task_body, w, &o, &w->task);
  }
  case W_STEPPED:
    return braid_group_spawn_stepped(g, sw_step_body, w, NULL, &w->task);
  case W_THREAD: {
    int e = pthread_create(&w->thread, NULL, sw_thread_body, w);
    if (e == 0) w->thread_running = 1;
    return e;
  }
  case W_CB: {
    atomic_store(&w->id, w->token);
    atomic_store(&w->started, 1);
    w->rc_register = w->ops->wait_cb(w, sw_cb, w, &w->handle);
    if (w->rc_register != BRAID_EPENDING) {
      atomic_store(&w->rc, w->rc_register);
      if (w->log) log_add(w->log, w->tag);
      atomic_store(&w->done, 1);
    }
    return 0;
  }
  }
  return BRAID_EINVAL;
}

/* Join a thread waiter and free a callback waiter's handle. */
static inline void sw_join(sw *w) {
  if (w->thread_running) {
    CHECK_INT(pthread_join(w->thread, NULL), 0);
    w->thread_running = 0;
  }
  if (w->handle) {
    CHECK_INT(braid_wait_free(w->handle), 0);
    w->handle = NULL;
  }
}

static inline int sw_done(sw *w) { return atomic_load(&w->done); }
static inline int sw_rc(sw *w) { return atomic_load(&w->rc); }
static inline uint64_t sw_id(sw *w) { return atomic_load(&w->id); }

/* The owner kind (BRAID_OWNER_*) statistics report for a waiter. */
static inline int sw_owner_kind(sw *w) {
  switch (w->kind) {
  case W_TASK:
  case W_STEPPED:
    return BRAID_OWNER_TASK;
  case W_THREAD:
    return BRAID_OWNER_THREAD;
  case W_CB:
    return BRAID_OWNER_FOREIGN;
  }
  return -1;
}

/* An `after` hook that holds until w->release is set (by the test). */
static inline void sw_hold_until_released(braid_task *self, sw *w) {
  if (self && braid_task_is_stepped(self)) {
    CHECK(!"sw_hold_until_released cannot hold a stepped task");
    return;
  }
  WAIT_UNTIL(self, atomic_load(&w->release));
}

/* ---- scopes ------------------------------------------------------------- */

static inline braid_scope *new_scope(braid_time_t deadline, unsigned flags) {
  braid_scope *s = NULL;
  CHECK_INT(braid_scope_new(deadline, flags, &s), 0);
  return s;
}

/* A scope that is already cancelled. */
static inline braid_scope *cancelled_scope(void) {
  braid_scope *s = new_scope(BRAID_NEVER, 0);
  CHECK_INT(braid_scope_cancel(s), 0);
  return s;
}

/* ---- failing allocator -------------------------------------------------- */

/* Counts live blocks; fails every allocation while `failing` is set. */
typedef struct fail_alloc {
  atomic_long live;
  atomic_int failing;
  atomic_long refused;
} fail_alloc;

static inline void *fail_alloc_realloc(void *ud, void *p, size_t n) {
  fail_alloc *f = ud;
  if (atomic_load(&f->failing)) {
    atomic_fetch_add(&f->refused, 1);
    return NULL;
  }
  void *q = realloc(p, n);
  if (q != NULL && p == NULL) atomic_fetch_add(&f->live, 1);
  return q;
}

static inline void fail_alloc_free(void *ud, void *p) {
  fail_alloc *f = ud;
  if (p == NULL) return;
  atomic_fetch_sub(&f->live, 1);
  free(p);
}

static inline void fail_alloc_install(fail_alloc *f) {
  atomic_store(&f->live, 0);
  atomic_store(&f->failing, 0);
  atomic_store(&f->refused, 0);
  braid_allocator a = {sizeof a, fail_alloc_realloc, fail_alloc_free, f};
  assert_int_equal(braid_set_allocator(&a), 0);
}

static inline void fail_alloc_uninstall(void) { assert_int_equal(braid_set_allocator(NULL), 0); }

/* Close and free a group; if a check already failed, cancel it first so
 * that a broken expectation does not leave the test hanging. */
static inline void close_group(braid_group *g) {
  if (check_failures() > 0) braid_scope_cancel(braid_group_scope(g));
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_free(g), 0);
}

/* Task body: set the atomic_int flag it is given. */
static inline int set_flag_body(braid_task *self, void *arg) {
  (void)self;
  atomic_store((atomic_int *)arg, 1);
  return 0;
}

#endif /* BRAID_SYNC_HELPERS_H */
