/*
 * sync_helpers.h — scaffolding shared by the tests of section 7
 * (synchronization): an order log, a recorder for callback waiters, a
 * polling wait, and a generic "waiter" that performs one blocking operation
 * of a primitive as a stackful task, a stepped task, a plain thread or a
 * callback, so that every primitive can be tested with every kind of waiter
 * and with mixtures of them.
 *
 * The primitives' constructors, statistics getters and waiter operations
 * live here too, and so do the scenarios that every primitive goes through
 * (a waiter whose deadline passes, a hand-off to each kind of waiter, FIFO
 * across kinds, a cancelled scope, wrong callers, races of a wake-up
 * against a cancellation): each test file runs them with its primitive and
 * adds the checks that only hold for it.
 *
 * Everything here is `static inline` (or a static const table), so a test
 * file pays only for what it uses.
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

/* Units of braid_time_t, as the tests write them. */
#define SEC BRAID_SEC
#define MSEC BRAID_MSEC
#define USEC BRAID_USEC

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

/* The bodies of a waiter of each kind but W_CB (a stackful task, a
 * stepped task, a plain thread), and what a started one is: its task, or
 * its thread and whether that still needs a join. */
typedef struct waiter_bodies {
  braid_fn task;
  braid_step_fn step;
  void *(*thread)(void *);
} waiter_bodies;

typedef struct waiter_run {
  braid_task *task;
  pthread_t thread;
  int thread_running;
} waiter_run;

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
  /* How many waiters are queued on the primitive obj (used by the shared
   * scenarios at the end of this file). */
  int (*waiting)(void *obj);
} sw_ops;

struct sw {
  co_state co; /* stepped waiters */
  const sw_ops *ops;
  void *obj;            /* the primitive (or the channel end) */
  int kind, tag;        /* W_*, tag for the order log */
  uint64_t token;       /* foreign owner / borrower of a callback waiter */
  void *item;           /* channel: item to send, or where an item is received */
  braid_scope *scope;   /* if set, entered by a task/thread waiter around the wait */
  order_log *log;       /* completion order */
  atomic_int started;   /* the waiter is about to wait */
  atomic_int done;      /* the outcome is known */
  atomic_int rc;        /* the outcome */
  atomic_int release;   /* for `after` hooks that hold until told to let go */
  _Atomic uint64_t id;  /* braid_task_id or braid_thread_id */
  waiter_run run;       /* task and thread waiters */
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

/* Start arg's body as `kind`: a task spawned into g (it runs at the
 * caller's next switch) or a plain thread. Returns 0 or the start's error. */
static inline int waiter_start(braid_group *g, int kind, const waiter_bodies *b, void *arg, waiter_run *run) {
  switch (kind) {
  case W_TASK: {
    braid_spawn_opts o = spawn_opts(NULL, 64 * 1024);
    return braid_group_spawn(g, b->task, arg, &o, &run->task);
  }
  case W_STEPPED:
    return braid_group_spawn_stepped(g, b->step, arg, NULL, &run->task);
  case W_THREAD: {
    int e = pthread_create(&run->thread, NULL, b->thread, arg);
    if (e == 0) run->thread_running = 1;
    return e;
  }
  }
  return BRAID_EINVAL;
}

/* Join a waiter's thread, if it has one still to join. */
static inline void waiter_join(waiter_run *run) {
  if (run->thread_running) {
    CHECK_INT(pthread_join(run->thread, NULL), 0);
    run->thread_running = 0;
  }
}

/*
 * Start the waiter: a task is spawned into g (it runs at the caller's next
 * switch), a thread is created, a callback waiter is registered at once on
 * the calling thread. Returns 0 or the error of the start itself.
 */
static inline int sw_start(braid_group *g, sw *w) {
  static const waiter_bodies bodies = {sw_task_body, sw_step_body, sw_thread_body};
  if (w->kind != W_CB) return waiter_start(g, w->kind, &bodies, w, &w->run);
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

/* Join a thread waiter and free a callback waiter's handle. */
static inline void sw_join(sw *w) {
  waiter_join(&w->run);
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

/* Task body: set the atomic_int flag it is given. */
static inline int set_flag_body(braid_task *self, void *arg) {
  (void)self;
  atomic_store((atomic_int *)arg, 1);
  return 0;
}

/* Task body: block until cancelled. */
static inline int sleep_forever_body(braid_task *self, void *arg) {
  (void)arg;
  return braid_sleep_forever(self);
}

/* ---- the primitives: constructors, statistics, waiter operations -------- */

static inline braid_lock *new_lock(void) {
  braid_lock *l = NULL;
  CHECK_INT(braid_lock_new(&l), 0);
  return l;
}

static inline braid_lock_stats lstats(braid_lock *l) {
  braid_lock_stats s = {.size = sizeof s};
  CHECK_INT(braid_lock_statistics(l, &s), 0);
  return s;
}

static inline int lock_waiting(braid_lock *l) { return (int)lstats(l).waiting; }
static inline int lock_locked(braid_lock *l) { return lstats(l).locked; }

static inline braid_condition *new_cond(braid_lock *l) {
  braid_condition *c = NULL;
  CHECK_INT(braid_condition_new(l, &c), 0);
  return c;
}

static inline braid_condition_stats cstats(braid_condition *c) {
  braid_condition_stats s = {.size = sizeof s, .lock.size = sizeof s.lock};
  CHECK_INT(braid_condition_statistics(c, &s), 0);
  return s;
}

static inline int cond_waiting(braid_condition *c) { return (int)cstats(c).waiting; }

static inline braid_event *new_event(void) {
  braid_event *e = NULL;
  CHECK_INT(braid_event_new(&e), 0);
  return e;
}

static inline braid_event_stats estats(braid_event *e) {
  braid_event_stats st = {.size = sizeof st};
  CHECK_INT(braid_event_statistics(e, &st), 0);
  return st;
}

static inline int ev_waiting(braid_event *e) { return (int)estats(e).waiting; }

static inline braid_semaphore *new_sem(uint64_t initial, uint64_t max) {
  braid_semaphore *s = NULL;
  CHECK_INT(braid_semaphore_new(initial, max, &s), 0);
  return s;
}

static inline braid_semaphore_stats sstats(braid_semaphore *s) {
  braid_semaphore_stats st = {.size = sizeof st};
  CHECK_INT(braid_semaphore_statistics(s, &st), 0);
  return st;
}

static inline int sem_waiting(braid_semaphore *s) { return (int)sstats(s).waiting; }

static inline braid_limiter *new_limiter(uint64_t total) {
  braid_limiter *m = NULL;
  CHECK_INT(braid_limiter_new(total, &m), 0);
  return m;
}

static inline braid_limiter_stats mstats(braid_limiter *m) {
  braid_limiter_stats st = {.size = sizeof st};
  CHECK_INT(braid_limiter_statistics(m, &st), 0);
  return st;
}

static inline int lim_waiting(braid_limiter *m) { return (int)mstats(m).waiting; }
static inline int lim_borrowed(braid_limiter *m) { return (int)mstats(m).borrowed; }

/* Lock waiters: acquire (a callback waiter as foreign owner w->token). */
static inline int lock_wait(braid_task *t, sw *w) { return braid_lock_acquire(t, (braid_lock *)w->obj); }
static inline int lock_wait_cb(sw *w, braid_wait_cb cb, void *ud, braid_wait **out) {
  return braid_lock_acquire_cb((braid_lock *)w->obj, w->token, cb, ud, out);
}
static inline void lock_release_after(braid_task *t, sw *w) {
  CHECK_INT(braid_lock_release(t, (braid_lock *)w->obj), 0);
}
static inline void lock_hold_then_release(braid_task *t, sw *w) {
  sw_hold_until_released(t, w);
  CHECK_INT(braid_lock_release(t, (braid_lock *)w->obj), 0);
}
static inline int lock_queued(void *l) { return lock_waiting(l); }
/* Waiters that release at once / that hold until w->release is set / that
 * keep the lock (the test releases or inspects it). */
static const sw_ops lock_ops = {lock_wait, lock_wait_cb, lock_release_after, lock_queued};
static const sw_ops lock_hold_ops = {lock_wait, lock_wait_cb, lock_hold_then_release, lock_queued};
static const sw_ops lock_keep_ops = {lock_wait, lock_wait_cb, NULL, lock_queued};

/* Event waiters: wait for the set. */
static inline int ev_wait(braid_task *t, sw *w) { return braid_event_wait(t, (braid_event *)w->obj); }
static inline int ev_wait_cb(sw *w, braid_wait_cb cb, void *ud, braid_wait **out) {
  return braid_event_wait_cb((braid_event *)w->obj, cb, ud, out);
}
static inline int ev_queued(void *e) { return ev_waiting(e); }
static const sw_ops ev_ops = {ev_wait, ev_wait_cb, NULL, ev_queued};

/* Semaphore waiters: acquire a unit and keep it. */
static inline int sem_acq(braid_task *t, sw *w) { return braid_semaphore_acquire(t, (braid_semaphore *)w->obj); }
static inline int sem_acq_cb(sw *w, braid_wait_cb cb, void *ud, braid_wait **out) {
  return braid_semaphore_acquire_cb((braid_semaphore *)w->obj, cb, ud, out);
}
static inline int sem_queued(void *s) { return sem_waiting(s); }
static const sw_ops sem_ops = {sem_acq, sem_acq_cb, NULL, sem_queued};

/* Limiter waiters: borrow a token (a callback waiter on behalf of w->token). */
static inline int lim_wait(braid_task *t, sw *w) { return braid_limiter_acquire(t, (braid_limiter *)w->obj); }
static inline int lim_wait_cb(sw *w, braid_wait_cb cb, void *ud, braid_wait **out) {
  return braid_limiter_acquire_cb((braid_limiter *)w->obj, w->token, cb, ud, out);
}
static inline void lim_release_after(braid_task *t, sw *w) {
  CHECK_INT(braid_limiter_release(t, (braid_limiter *)w->obj, 0), 0);
}
static inline void lim_hold_then_release(braid_task *t, sw *w) {
  sw_hold_until_released(t, w);
  CHECK_INT(braid_limiter_release(t, (braid_limiter *)w->obj, 0), 0);
}
static inline int lim_queued(void *m) { return lim_waiting(m); }
static const sw_ops lim_ops = {lim_wait, lim_wait_cb, lim_release_after, lim_queued};
static const sw_ops lim_hold_ops = {lim_wait, lim_wait_cb, lim_hold_then_release, lim_queued};
static const sw_ops lim_keep_ops = {lim_wait, lim_wait_cb, NULL, lim_queued};

/* ---- scenarios shared by the primitives ---------------------------------- */

/*
 * The scenarios take the primitive's waiter operations (sw_ops, whose
 * `waiting` counts the queue), the primitive itself as a void *, and hooks
 * for what differs: how to make a wait block (`hold`), how to let one
 * waiter through (`wake`: release, set, send...), and `snap` hooks in which
 * a test records its primitive's statistics at the moments below. A test
 * embeds the case, or points `ud` at its own context, and checks those
 * statistics itself after the run.
 */
enum {
  SNAP_QUEUED,          /* the waiter(s) are queued */
  SNAP_DEADLINE_PASSED, /* a waiter's deadline passed */
  SNAP_WOKEN            /* right after the (first) wake-up */
};

/* A callback waiter was called exactly once, outside any task and (if
 * frame is not 0) not on the stack of the completing task whose local
 * lives at frame. */
static inline void assert_cb_waiter_called_off_task(sw *w, uintptr_t frame) {
  assert_int_equal(atomic_load(&w->cb.calls), 1);
  assert_int_equal(atomic_load(&w->cb.on_task), 0);
  if (frame) assert_false(near_addr(atomic_load(&w->cb.frame), frame, 256 * 1024));
}

/*
 * A plain-thread waiter w (initialised by the caller, not started) blocks
 * inside a scope of its own, which this thread then cancels: it gets
 * BRAID_ECANCELED and leaves the queue. w is joined on return.
 */
static inline void sw_thread_scope_cancelled(sw *w) {
  w->scope = new_scope(BRAID_NEVER, 0);
  braid_scope *mine = braid_scope_ref(w->scope);
  assert_int_equal(sw_start(NULL, w), 0);
  WAIT_UNTIL(NULL, w->ops->waiting(w->obj) == 1);
  os_sleep_ns(5 * MSEC); /* let it really block */
  assert_false(sw_done(w));
  assert_int_equal(braid_scope_cancel(mine), 0);
  WAIT_UNTIL(NULL, sw_done(w));
  sw_join(w);
  assert_int_equal(sw_rc(w), BRAID_ECANCELED);
  assert_int_equal(w->ops->waiting(w->obj), 0);
  assert_int_equal(braid_scope_unref(mine), 0);
  assert_int_equal(braid_scope_unref(w->scope), 0);
  w->scope = NULL;
}

/*
 * A plain-thread waiter w (initialised by the caller, not started) blocks
 * inside a scope whose real deadline is d from now: it gets BRAID_ECANCELED
 * after about d and leaves the queue. w is joined on return.
 */
static inline void sw_thread_short_deadline(sw *w, braid_time_t d) {
  int64_t t0 = real_ns();
  w->scope = new_scope(braid_now(NULL) + d, 0);
  assert_int_equal(sw_start(NULL, w), 0);
  WAIT_UNTIL(NULL, sw_done(w));
  int64_t elapsed = real_ns() - t0;
  sw_join(w);
  assert_int_equal(sw_rc(w), BRAID_ECANCELED);
  assert_true(elapsed >= d - 5 * MSEC);
  assert_true(elapsed < 10 * SEC);
  assert_int_equal(braid_scope_cancel_called(w->scope), 1);
  assert_int_equal(w->ops->waiting(w->obj), 0);
  assert_int_equal(braid_scope_unref(w->scope), 0);
  w->scope = NULL;
}

/*
 * Deadline (virtual clock): a waiter of `kind` whose scope's deadline
 * passes while it waits, with a stackful waiter queued behind it. The first
 * gets BRAID_ECANCELED at its deadline and leaves the queue; the wake-up
 * that follows goes to the one behind it.
 */
typedef struct deadline_case deadline_case;
struct deadline_case {
  /* set by the test */
  const sw_ops *ops;
  void *obj;
  int kind;
  braid_time_t deadline;                     /* after the start */
  void (*hold)(braid_task *self, void *obj); /* make waits block (NULL: they do) */
  int (*wake)(braid_task *self, void *obj);  /* let one waiter through */
  void (*snap)(deadline_case *dc, int when); /* SNAP_DEADLINE_PASSED, SNAP_WOKEN (may be NULL) */
  void *ud;
  /* outcome */
  sw cancelled, next;
  braid_time_t t0;
  int waiting_before, waiting_after_deadline;
};

static inline int deadline_case_root(braid_task *self, void *arg) {
  deadline_case *dc = arg;
  dc->t0 = braid_now(self);
  if (dc->hold) dc->hold(self, dc->obj);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  sw_init(&dc->cancelled, dc->ops, dc->obj, dc->kind, 1, NULL);
  sw_init(&dc->next, dc->ops, dc->obj, W_TASK, 2, NULL);
  dc->cancelled.scope = new_scope(dc->t0 + dc->deadline, 0);
  CHECK_INT(sw_start(g, &dc->cancelled), 0);
  CHECK_INT(sw_start(g, &dc->next), 0);
  CHECK_INT(braid_sleep(self, SEC), 0);
  dc->waiting_before = dc->ops->waiting(dc->obj);
  CHECK_INT(braid_sleep(self, dc->deadline), 0); /* the deadline passes meanwhile */
  CHECK(sw_done(&dc->cancelled));
  dc->waiting_after_deadline = dc->ops->waiting(dc->obj);
  if (dc->snap) dc->snap(dc, SNAP_DEADLINE_PASSED);
  CHECK_INT(dc->wake(self, dc->obj), 0);
  if (dc->snap) dc->snap(dc, SNAP_WOKEN);
  close_group(g);
  CHECK_INT(braid_scope_unref(dc->cancelled.scope), 0);
  return 0;
}

static inline void run_deadline_case(deadline_case *dc) {
  assert_int_equal(run_virtual(deadline_case_root, dc), 0);
  assert_int_equal(sw_rc(&dc->cancelled), BRAID_ECANCELED);
  assert_int_equal(dc->cancelled.woke_at, dc->t0 + dc->deadline);
  assert_int_equal(dc->waiting_before, 2);
  assert_int_equal(dc->waiting_after_deadline, 1); /* the cancelled waiter left the queue */
  assert_int_equal(sw_rc(&dc->next), 0);           /* the wake-up skipped it */
}

/*
 * Hand-off (real clock): a waiter of `kind` is queued; the root task wakes
 * it and at once tries the non-blocking variant itself, which must find
 * nothing (no barging: what was released went straight to the waiter).
 */
typedef struct handoff_case handoff_case;
struct handoff_case {
  /* set by the test */
  const sw_ops *ops;
  void *obj;
  int kind;
  void (*hold)(braid_task *self, void *obj);          /* make the wait block (NULL: it does) */
  int (*wake)(braid_task *self, void *obj);           /* hand over to the waiter */
  int (*nowait)(braid_task *self, void *obj);         /* the root's own attempt right after */
  void (*let_go)(braid_task *self, handoff_case *hc); /* the waiter got it: have it given back (may be NULL) */
  void (*snap)(handoff_case *hc, int when);           /* SNAP_QUEUED, SNAP_WOKEN (may be NULL) */
  void *ud;
  /* outcome */
  sw w;
  int rc_nowait;
  uintptr_t root_frame;
};

static inline int handoff_case_root(braid_task *self, void *arg) {
  handoff_case *hc = arg;
  if (hc->hold) hc->hold(self, hc->obj);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  sw_init(&hc->w, hc->ops, hc->obj, hc->kind, 1, NULL);
  CHECK_INT(sw_start(g, &hc->w), 0);
  if (hc->kind == W_CB) CHECK_INT(hc->w.rc_register, BRAID_EPENDING);
  WAIT_UNTIL(self, hc->ops->waiting(hc->obj) == 1);
  CHECK(!sw_done(&hc->w));
  if (hc->snap) hc->snap(hc, SNAP_QUEUED);
  volatile int local = 0;
  hc->root_frame = (uintptr_t)&local;
  CHECK_INT(hc->wake(self, hc->obj), 0);
  if (hc->snap) hc->snap(hc, SNAP_WOKEN);
  hc->rc_nowait = hc->nowait(self, hc->obj);
  WAIT_UNTIL(self, sw_rc(&hc->w) != 1);
  CHECK_INT(sw_rc(&hc->w), 0);
  if (hc->let_go) hc->let_go(self, hc);
  WAIT_UNTIL(self, sw_done(&hc->w));
  close_group(g);
  sw_join(&hc->w);
  return 0;
}

static inline void run_handoff_case(handoff_case *hc) {
  assert_int_equal(run_real(handoff_case_root, hc), 0);
  assert_int_equal(hc->rc_nowait, BRAID_EWOULDBLOCK); /* no barging */
  assert_int_equal(sw_rc(&hc->w), 0);
  if (hc->kind == W_CB) {
    /* The completer was a stackful task: the callback ran on the loop
     * thread, outside any task and off the task's stack. */
    assert_cb_waiter_called_off_task(&hc->w, hc->root_frame);
    assert_int_equal(atomic_load(&hc->w.cb.result), 0);
    assert_int_equal(atomic_load(&hc->w.cb.thread), braid_thread_id());
  }
}

/*
 * FIFO across kinds (real clock): n waiters of the given kinds queue up in
 * order; they must get through in that order. With wake_each, the root
 * wakes them one at a time and checks that each wake-up reached exactly the
 * next one; without, it wakes the first and the waiters pass it on.
 */
#define MIX_MAX 8

typedef struct mix_case mix_case;
struct mix_case {
  /* set by the test */
  const sw_ops *ops, *cb_ops; /* of task and thread waiters, of callback waiters */
  void *obj;
  int n, kinds[MIX_MAX];
  int wake_each;
  void (*hold)(braid_task *self, void *obj);              /* make waits block (NULL: they do) */
  int (*wake)(braid_task *self, void *obj);               /* let one waiter through */
  void (*on_done)(braid_task *self, mix_case *mc, int i); /* waiter i is done (may be NULL) */
  void (*snap)(mix_case *mc, int when);                   /* SNAP_WOKEN, after the first (may be NULL) */
  void *ud;
  /* outcome */
  braid_task *root; /* the task that runs the case, for the hooks */
  order_log log;
  sw w[MIX_MAX];
};

static inline int mix_case_root(braid_task *self, void *arg) {
  mix_case *mc = arg;
  mc->root = self;
  log_init(&mc->log);
  if (mc->hold) mc->hold(self, mc->obj);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  for (int i = 0; i < mc->n; i++) {
    sw_init(&mc->w[i], mc->kinds[i] == W_CB ? mc->cb_ops : mc->ops, mc->obj, mc->kinds[i], i, &mc->log);
    CHECK_INT(sw_start(g, &mc->w[i]), 0);
    WAIT_UNTIL(self, mc->ops->waiting(mc->obj) == i + 1);
  }
  CHECK_INT(log_len(&mc->log), 0);
  for (int i = 0; i < mc->n; i++) {
    if (i == 0 || mc->wake_each) CHECK_INT(mc->wake(self, mc->obj), 0);
    if (i == 0 && mc->snap) mc->snap(mc, SNAP_WOKEN);
    if (mc->wake_each) {
      WAIT_UNTIL(self, log_len(&mc->log) == i + 1);
      CHECK_INT(braid_sleep(self, 2 * MSEC), 0); /* give a wrong waiter time to show up */
      CHECK_INT(log_len(&mc->log), i + 1);
      CHECK_INT(log_at(&mc->log, i), i);
      CHECK_INT(mc->ops->waiting(mc->obj), mc->n - i - 1);
    }
    WAIT_UNTIL(self, sw_done(&mc->w[i]));
    CHECK_INT(sw_rc(&mc->w[i]), 0);
    if (mc->on_done) mc->on_done(self, mc, i);
  }
  close_group(g);
  for (int i = 0; i < mc->n; i++)
    sw_join(&mc->w[i]);
  return 0;
}

/* Run a mix_case on the given kinds; mc is freed by the caller. */
static inline void run_mix_case(mix_case *mc, const int *kinds, int n) {
  assert_true(n <= MIX_MAX);
  mc->n = n;
  for (int i = 0; i < n; i++)
    mc->kinds[i] = kinds[i];
  assert_int_equal(run_real(mix_case_root, mc), 0);
  assert_int_equal(log_len(&mc->log), n);
  for (int i = 0; i < n; i++) {
    if (log_at(&mc->log, i) != i)
      print_error("position %d: waiter %d (%s) got through, expected waiter %d (%s)\n", i, log_at(&mc->log, i),
                  kind_name(kinds[log_at(&mc->log, i)]), i, kind_name(kinds[i]));
    assert_int_equal(log_at(&mc->log, i), i);
  }
  for (int i = 0; i < n; i++)
    if (kinds[i] == W_CB) assert_int_equal(atomic_load(&mc->w[i].cb.calls), 1);
}

/*
 * Level-triggered cancellation, in the running task: op(self, ud) in a
 * scope that is already cancelled, with a sibling task ready to run. The
 * call is still a schedule point (the sibling runs before it returns) and
 * fails with BRAID_ECANCELED; `more` makes further calls inside the scope.
 * Zero the case before use.
 */
typedef struct level_case {
  int (*op)(braid_task *self, void *ud);
  void (*more)(braid_task *self, void *ud); /* may be NULL */
  void *ud;
  atomic_int sibling_ran;
  int rc, ran_before_return;
} level_case;

static inline void level_case_run(braid_task *self, level_case *lc) {
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, set_flag_body, &lc->sibling_ran, NULL, NULL), 0);
  braid_scope *s = cancelled_scope();
  CHECK_INT(braid_scope_enter(self, s), 0);
  lc->rc = lc->op(self, lc->ud);
  lc->ran_before_return = atomic_load(&lc->sibling_ran);
  if (lc->more) lc->more(self, lc->ud);
  CHECK_INT(braid_scope_exit(s, lc->rc), 0);
  CHECK_INT(braid_scope_unref(s), 0);
  close_group(g);
}

static inline void assert_level_case(const level_case *lc) {
  assert_int_equal(lc->rc, BRAID_ECANCELED);
  assert_int_equal(lc->ran_before_return, 1);
}

/* A plain thread that takes a lock and holds it until told to let go. */
typedef struct lock_holder {
  braid_lock *l;
  atomic_int held, go;
  pthread_t thread;
} lock_holder;

static inline void *lock_holder_body_(void *arg) {
  lock_holder *h = arg;
  CHECK_INT(braid_lock_acquire(NULL, h->l), 0);
  atomic_store(&h->held, 1);
  WAIT_UNTIL(NULL, atomic_load(&h->go));
  CHECK_INT(braid_lock_release(NULL, h->l), 0);
  return NULL;
}

/* Start the holder; return once it holds l. */
static inline void lock_holder_start(lock_holder *h, braid_lock *l) {
  h->l = l;
  atomic_store(&h->held, 0);
  atomic_store(&h->go, 0);
  assert_int_equal(pthread_create(&h->thread, NULL, lock_holder_body_, h), 0);
  WAIT_UNTIL(NULL, atomic_load(&h->held));
}

/* Tell the holder to release the lock (on its own thread), then join it. */
static inline void lock_holder_let_go(lock_holder *h) { atomic_store(&h->go, 1); }
static inline void lock_holder_join(lock_holder *h) { assert_int_equal(pthread_join(h->thread, NULL), 0); }

/* ---- wrong callers ---------------------------------------------------------- */

/* A blocking call naming a task (or NULL for the calling thread). */
typedef int (*sync_call)(braid_task *task, void *ud);

struct sync_call_arg_ {
  sync_call op;
  braid_task *task;
  void *ud;
  int rc;
};

static inline void *sync_call_thread_(void *arg) {
  struct sync_call_arg_ *a = arg;
  a->rc = a->op(a->task, a->ud);
  return NULL;
}

/* op(task, ud) made by a new plain thread, naming a task of this thread's
 * loop; returns what op returned. */
static inline int call_from_another_thread(sync_call op, braid_task *task, void *ud) {
  struct sync_call_arg_ a = {op, task, ud, 1};
  CHECK_INT(in_thread(sync_call_thread_, &a), 0);
  return a.rc;
}

/* op(t, ud) made by the running task self, naming a sibling task t that is
 * blocked (not the running one); returns what op returned. */
static inline int call_naming_a_blocked_task(braid_task *self, sync_call op, void *ud) {
  braid_group *g = NULL;
  braid_task *sleeper = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, sleep_forever_body, NULL, NULL, &sleeper), 0);
  CHECK_INT(braid_checkpoint(self), 0); /* the sleeper is blocked now */
  int rc = op(sleeper, ud);
  CHECK_INT(braid_scope_cancel(braid_group_scope(g)), 0);
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_free(g), 0);
  return rc;
}

/* What wrong callers got: a task named from another thread (BRAID_ETHREAD,
 * or BRAID_ESTATE: "not the running task" is also true from there), a task
 * that is not the running one, a blocking thread wait from a loop's
 * thread. */
typedef struct wrong_calls {
  int rc_other_thread, rc_not_running, rc_null_in_loop;
} wrong_calls;

static inline void assert_wrong_calls(const wrong_calls *wc) {
  assert_true(wc->rc_other_thread == BRAID_ETHREAD || wc->rc_other_thread == BRAID_ESTATE);
  assert_int_equal(wc->rc_not_running, BRAID_ESTATE);
  assert_int_equal(wc->rc_null_in_loop, BRAID_ETHREAD);
}

/* ---- races of a wake-up against a cancellation ----------------------------- */

#if defined(__SANITIZE_THREAD__)
#define RACE_ITERS 100
#else
#define RACE_ITERS 400
#endif

/* A helper thread that runs act(arg) once both it and the caller passed a
 * barrier, `delay` spins later. */
typedef struct racer {
  spin_barrier go;
  unsigned delay;
  void (*act)(void *arg);
  void *arg;
  pthread_t thread;
} racer;

static inline void *racer_body_(void *p) {
  racer *r = p;
  barrier_wait(&r->go);
  spin_for(r->delay);
  r->act(r->arg);
  return NULL;
}

static inline void racer_start(racer *r, void (*act)(void *), void *arg, unsigned delay) {
  barrier_init(&r->go, 2);
  r->act = act;
  r->arg = arg;
  r->delay = delay;
  CHECK_INT(pthread_create(&r->thread, NULL, racer_body_, r), 0);
}

/* Pass the barrier, then wait `delay` spins before acting oneself. */
static inline void racer_go(racer *r, unsigned delay) {
  barrier_wait(&r->go);
  spin_for(delay);
}

static inline void racer_join(racer *r) { CHECK_INT(pthread_join(r->thread, NULL), 0); }

/* A racer act: cancel the scope it is given. */
static inline void cancel_scope_act(void *scope) { CHECK_INT(braid_scope_cancel((braid_scope *)scope), 0); }

/*
 * A plain-thread waiter inside a scope of its own, raced by a wake-up
 * (`wake`) and the cancellation of its scope, one of them on a helper
 * thread: it either got through (rc 0) or was cancelled, never both nor
 * neither. The hooks check what the primitive looks like after each round.
 */
typedef struct race_case race_case;
struct race_case {
  /* set by the test */
  const sw_ops *ops;
  void *obj;
  int wake_in_thread;                   /* 1: the helper wakes, this thread cancels; 0: the reverse */
  void (*setup)(race_case *rc);         /* before each round (may set obj; may be NULL) */
  int (*wake)(race_case *rc);           /* its result is kept in rc_wake */
  void (*settle)(race_case *rc, sw *w); /* the outcome is known, the waiter not joined (may be NULL) */
  void (*check)(race_case *rc, sw *w);  /* the waiter was joined (may be NULL) */
  void *ud;
  /* state and outcome */
  int round, rc_wake, woke, cancelled;
  race_tuner tu;
  braid_scope *scope;
};

static inline void race_case_wake_act_(void *arg) {
  race_case *rc = arg;
  rc->rc_wake = rc->wake(rc);
}

static inline void run_race_case(race_case *rc) {
  for (rc->round = 0; rc->round < RACE_ITERS && check_failures() == 0; rc->round++) {
    if (rc->setup) rc->setup(rc);
    sw w;
    sw_init(&w, rc->ops, rc->obj, W_THREAD, 1, NULL);
    w.scope = new_scope(BRAID_NEVER, 0);
    rc->scope = braid_scope_ref(w.scope); /* the canceller's reference */
    assert_int_equal(sw_start(NULL, &w), 0);
    WAIT_UNTIL(NULL, rc->ops->waiting(rc->obj) == 1);
    racer r;
    if (rc->wake_in_thread) {
      racer_start(&r, race_case_wake_act_, rc, tuner_waker_delay(&rc->tu));
      racer_go(&r, tuner_canceller_delay(&rc->tu));
      assert_int_equal(braid_scope_cancel(rc->scope), 0);
    } else {
      racer_start(&r, cancel_scope_act, rc->scope, tuner_canceller_delay(&rc->tu));
      racer_go(&r, tuner_waker_delay(&rc->tu));
      rc->rc_wake = rc->wake(rc);
    }
    racer_join(&r);
    WAIT_UNTIL(NULL, sw_rc(&w) != 1);
    int res = sw_rc(&w);
    tuner_update(&rc->tu, res == 0);
    if (res == 0)
      rc->woke++;
    else if (CHECK_INT(res, BRAID_ECANCELED))
      rc->cancelled++;
    if (rc->settle) rc->settle(rc, &w);
    sw_join(&w);
    CHECK_INT(rc->ops->waiting(rc->obj), 0);
    if (rc->check) rc->check(rc, &w);
    CHECK_INT(braid_scope_unref(rc->scope), 0);
    CHECK_INT(braid_scope_unref(w.scope), 0);
  }
  print_message("  %d woken, %d cancelled (jitter %d)\n", rc->woke, rc->cancelled, rc->tu.d);
  assert_int_equal(rc->woke + rc->cancelled, RACE_ITERS);
}

/*
 * A callback waiter raced by a completion (`wake`) and braid_wait_cancel,
 * one of them on a helper thread: the callback is called exactly once,
 * with 0 if the completion won (the cancel then says BRAID_ESTATE) or
 * BRAID_ECANCELED if the cancel won.
 */
typedef struct cb_race_case cb_race_case;
struct cb_race_case {
  /* set by the test */
  int wake_in_thread;              /* 1: the helper completes, this thread cancels; 0: the reverse */
  void (*setup)(cb_race_case *rc); /* before each round (may be NULL) */
  int (*reg)(cb_race_case *rc, braid_wait_cb cb, void *ud, braid_wait **out); /* must pend */
  int (*wake)(cb_race_case *rc);                                              /* result in rc_wake */
  void (*check)(cb_race_case *rc, int woke); /* after the round, before the handle is freed (may be NULL) */
  void (*teardown)(cb_race_case *rc);        /* after the handle was freed (may be NULL) */
  void *ud;
  /* state and outcome */
  int round, rc_wake, rc_cancel, woke, cancelled;
  braid_wait *w;
  cb_rec r;
  race_tuner tu;
};

static inline void cb_race_case_wake_act_(void *arg) {
  cb_race_case *rc = arg;
  rc->rc_wake = rc->wake(rc);
}

static inline void cb_race_case_cancel_act_(void *arg) {
  cb_race_case *rc = arg;
  rc->rc_cancel = braid_wait_cancel(rc->w);
}

static inline void run_cb_race_case(cb_race_case *rc) {
  for (rc->round = 0; rc->round < RACE_ITERS && check_failures() == 0; rc->round++) {
    if (rc->setup) rc->setup(rc);
    cb_rec_init(&rc->r, NULL, 0);
    rc->w = NULL;
    assert_int_equal(rc->reg(rc, cb_record, &rc->r, &rc->w), BRAID_EPENDING);
    racer r;
    if (rc->wake_in_thread) {
      racer_start(&r, cb_race_case_wake_act_, rc, tuner_waker_delay(&rc->tu));
      racer_go(&r, tuner_canceller_delay(&rc->tu));
      rc->rc_cancel = braid_wait_cancel(rc->w);
    } else {
      racer_start(&r, cb_race_case_cancel_act_, rc, tuner_canceller_delay(&rc->tu));
      racer_go(&r, tuner_waker_delay(&rc->tu));
      rc->rc_wake = rc->wake(rc);
    }
    racer_join(&r);
    CHECK_INT(atomic_load(&rc->r.calls), 1);
    int woke = rc->rc_cancel != 0;
    tuner_update(&rc->tu, woke);
    if (woke) {
      rc->woke++;
      CHECK_INT(rc->rc_cancel, BRAID_ESTATE);
      CHECK_INT(atomic_load(&rc->r.result), 0);
    } else {
      rc->cancelled++;
      CHECK_INT(atomic_load(&rc->r.result), BRAID_ECANCELED);
    }
    if (rc->check) rc->check(rc, woke);
    CHECK_INT(braid_wait_free(rc->w), 0);
    CHECK_INT(atomic_load(&rc->r.calls), 1);
    if (rc->teardown) rc->teardown(rc);
  }
  print_message("  %d woken, %d cancelled (jitter %d)\n", rc->woke, rc->cancelled, rc->tu.d);
  assert_int_equal(rc->woke + rc->cancelled, RACE_ITERS);
}

#endif /* BRAID_SYNC_HELPERS_H */
