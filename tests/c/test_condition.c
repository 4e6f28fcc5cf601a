/*
 * test_condition.c — braid_condition over a braid_lock: wait requires the
 * lock, releases it while waiting and re-acquires it before returning (also
 * when cancelled); notify(n) / notify_all wake in FIFO order across tasks,
 * stepped tasks and threads; a notification is never lost when the
 * notified waiter is cancelled at about the same time; every documented
 * error code.
 */
#include "sync_helpers.h"

#include <stdlib.h>

/* ---- a condition waiter of any kind (no callback waiters for conditions) ---- */

typedef struct cwaiter {
  co_state co;
  int kind, tag;
  braid_lock *lock;
  braid_condition *cond;
  braid_scope *scope; /* entered (after acquiring the lock) around the wait */
  order_log *log;     /* appended while holding the re-acquired lock */
  atomic_int waiting; /* about to call braid_condition_wait */
  atomic_int done;
  atomic_int rc_acquire, rc_wait;
  _Atomic uint64_t id;
  /* the lock as seen right after the wait returned */
  atomic_int owner_kind_after;
  _Atomic uint64_t owner_id_after;
  braid_time_t woke_at;
  waiter_run run;
} cwaiter;

static void cw_init(cwaiter *w, int kind, int tag, braid_lock *l, braid_condition *c, order_log *log) {
  *w = (cwaiter){.kind = kind, .tag = tag, .lock = l, .cond = c, .log = log};
  atomic_store(&w->rc_wait, 1);
  atomic_store(&w->rc_acquire, 1);
}

/* After the wait: record, log, release. */
static void cw_after(braid_task *self, cwaiter *w, int rc) {
  braid_lock_stats st = lstats(w->lock);
  atomic_store(&w->owner_kind_after, st.owner_kind);
  atomic_store(&w->owner_id_after, st.owner_id);
  w->woke_at = braid_now(self);
  if (w->log) log_add(w->log, w->tag);
  atomic_store(&w->rc_wait, rc);
  if (w->scope) (void)braid_scope_exit(w->scope, rc);
  CHECK_INT(braid_lock_release(self, w->lock), 0);
  atomic_store(&w->done, 1);
}

static int cw_task(braid_task *self, void *arg) {
  cwaiter *w = arg;
  atomic_store(&w->id, braid_task_id(self));
  atomic_store(&w->rc_acquire, braid_lock_acquire(self, w->lock));
  if (!CHECK_INT(atomic_load(&w->rc_acquire), 0)) return 0;
  if (w->scope) CHECK_INT(braid_scope_enter(self, w->scope), 0);
  atomic_store(&w->waiting, 1);
  int rc = braid_condition_wait(self, w->cond);
  cw_after(self, w, rc);
  return 0;
}

static int cw_step(braid_task *self, void *ctx, int resume) {
  cwaiter *w = ctx;
  switch (w->co.pc) {
  case 0:
    atomic_store(&w->id, braid_task_id(self));
    AWAIT(&w->co, braid_lock_acquire(self, w->lock));
    atomic_store(&w->rc_acquire, w->co.rc);
    if (!CHECK_INT(w->co.rc, 0)) return 0;
    if (w->scope) CHECK_INT(braid_scope_enter(self, w->scope), 0);
    atomic_store(&w->waiting, 1);
    AWAIT(&w->co, braid_condition_wait(self, w->cond));
    cw_after(self, w, w->co.rc);
    return 0;
  }
  return CO_FELL_OFF;
}

static void *cw_thread(void *arg) {
  cwaiter *w = arg;
  atomic_store(&w->id, braid_thread_id());
  atomic_store(&w->rc_acquire, braid_lock_acquire(NULL, w->lock));
  if (!CHECK_INT(atomic_load(&w->rc_acquire), 0)) return NULL;
  if (w->scope) CHECK_INT(braid_scope_enter(NULL, w->scope), 0);
  atomic_store(&w->waiting, 1);
  int rc = braid_condition_wait(NULL, w->cond);
  cw_after(NULL, w, rc);
  return NULL;
}

static int cw_start(braid_group *g, cwaiter *w) {
  static const waiter_bodies bodies = {cw_task, cw_step, cw_thread};
  return waiter_start(g, w->kind, &bodies, w, &w->run);
}

static void cw_join(cwaiter *w) { waiter_join(&w->run); }

static int cw_owner_kind(const cwaiter *w) { return w->kind == W_THREAD ? BRAID_OWNER_THREAD : BRAID_OWNER_TASK; }

/* Start a plain-thread waiter (its scope, if any, set) on l and c; return
 * once it is the n-th waiting on c. */
static void cw_start_thread(cwaiter *w, int tag, braid_lock *l, braid_condition *c, braid_scope *scope, int n) {
  cw_init(w, W_THREAD, tag, l, c, NULL);
  w->scope = scope;
  assert_int_equal(cw_start(NULL, w), 0);
  WAIT_UNTIL(NULL, cond_waiting(c) == n);
}

/* Wait until a thread waiter is done and join it. */
static void cw_finish(cwaiter *w) {
  WAIT_UNTIL(NULL, atomic_load(&w->done));
  cw_join(w);
}

/* The wait returned rc, with the waiter owning the lock again. */
static void assert_cw_returned(cwaiter *w, int rc) {
  assert_int_equal(atomic_load(&w->rc_wait), rc);
  assert_int_equal(atomic_load(&w->owner_kind_after), cw_owner_kind(w));
  assert_int_equal(atomic_load(&w->owner_id_after), atomic_load(&w->id));
}

/* ---- basics ---------------------------------------------------------------------- */

static void test_condition_new_reports_no_waiters_and_the_state_of_its_lock(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  braid_condition *c = new_cond(l);
  braid_condition_stats st = cstats(c);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.lock.locked, 0);
  assert_int_equal(braid_lock_acquire(NULL, l), 0);
  st = cstats(c);
  assert_int_equal(st.lock.locked, 1);
  assert_int_equal(st.lock.owner_kind, BRAID_OWNER_THREAD);
  assert_int_equal(st.lock.owner_id, braid_thread_id());
  assert_int_equal(braid_lock_release(NULL, l), 0);
  assert_int_equal(braid_condition_free(c), 0);
  assert_int_equal(braid_lock_free(l), 0);
}

struct basic_ctx {
  int kind;
  braid_lock *l;
  braid_condition *c;
  cwaiter w;
  braid_condition_stats while_waiting, after_notify;
  braid_lock_stats owner_after_release;
  int rc_notify, rc_nowait_after_release;
};

static int basic_root(braid_task *self, void *arg) {
  struct basic_ctx *c = arg;
  c->l = new_lock();
  c->c = new_cond(c->l);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  cw_init(&c->w, c->kind, 1, c->l, c->c, NULL);
  CHECK_INT(cw_start(g, &c->w), 0);
  WAIT_UNTIL(self, cond_waiting(c->c) == 1);
  /* The waiter released the lock while it waits. */
  c->while_waiting = cstats(c->c);
  CHECK_INT(braid_lock_acquire(self, c->l), 0);
  c->rc_notify = braid_condition_notify(self, c->c, 1);
  c->after_notify = cstats(c->c);
  CHECK(!atomic_load(&c->w.done)); /* it needs the lock we hold */
  CHECK_INT(braid_lock_release(self, c->l), 0);
  if (c->kind != W_THREAD) {
    /* The lock went straight to the notified task (it has not run yet). */
    c->owner_after_release = lstats(c->l);
    c->rc_nowait_after_release = braid_lock_acquire_nowait(self, c->l);
  }
  WAIT_UNTIL(self, atomic_load(&c->w.done));
  close_group(g);
  cw_join(&c->w);
  CHECK_INT(lstats(c->l).locked, 0);
  CHECK_INT(braid_condition_free(c->c), 0);
  CHECK_INT(braid_lock_free(c->l), 0);
  return 0;
}

static void run_basic(int kind) {
  struct basic_ctx c;
  memset(&c, 0, sizeof c);
  c.kind = kind;
  assert_int_equal(run_real(basic_root, &c), 0);
  assert_int_equal(c.while_waiting.waiting, 1);
  assert_int_equal(c.while_waiting.lock.locked, 0);
  assert_int_equal(c.rc_notify, 0);
  assert_int_equal(c.after_notify.waiting, 0);
  assert_cw_returned(&c.w, 0);
  if (kind != W_THREAD) {
    assert_int_equal(c.owner_after_release.owner_kind, BRAID_OWNER_TASK);
    assert_int_equal(c.owner_after_release.owner_id, atomic_load(&c.w.id));
    assert_int_equal(c.rc_nowait_after_release, BRAID_EWOULDBLOCK); /* no barging */
  }
}

static void test_condition_a_stackful_task_waits_releasing_the_lock_and_returns_owning_it(void **state) {
  (void)state;
  run_basic(W_TASK);
}

static void test_condition_a_stepped_task_waits_releasing_the_lock_and_returns_owning_it(void **state) {
  (void)state;
  run_basic(W_STEPPED);
}

static void test_condition_a_thread_waits_releasing_the_lock_and_returns_owning_it(void **state) {
  (void)state;
  run_basic(W_THREAD);
}

/* ---- notify(n) and notify_all in FIFO order across kinds ------------------------------ */

#define ORDER_N 6

struct order_ctx {
  braid_lock *l;
  braid_condition *c;
  order_log log;
  cwaiter w[ORDER_N];
  int rc_notify0, rc_notify2, rc_notify_all, rc_notify_none;
  int waiting_after_notify0, waiting_after_notify2, waiting_after_all;
  int log_after_notify2;
};

static int order_root(braid_task *self, void *arg) {
  struct order_ctx *c = arg;
  const int kinds[ORDER_N] = {W_TASK, W_THREAD, W_STEPPED, W_THREAD, W_TASK, W_STEPPED};
  c->l = new_lock();
  c->c = new_cond(c->l);
  log_init(&c->log);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  for (int i = 0; i < ORDER_N; i++) {
    cw_init(&c->w[i], kinds[i], i, c->l, c->c, &c->log);
    CHECK_INT(cw_start(g, &c->w[i]), 0);
    WAIT_UNTIL(self, cond_waiting(c->c) == i + 1);
  }
  CHECK_INT(braid_lock_acquire(self, c->l), 0);
  c->rc_notify0 = braid_condition_notify(self, c->c, 0);
  c->waiting_after_notify0 = cond_waiting(c->c);
  c->rc_notify2 = braid_condition_notify(self, c->c, 2);
  c->waiting_after_notify2 = cond_waiting(c->c);
  CHECK_INT(braid_lock_release(self, c->l), 0);
  WAIT_UNTIL(self, log_len(&c->log) == 2);
  CHECK_INT(braid_sleep(self, 5 * MSEC), 0); /* a wrongly woken waiter would show up */
  c->log_after_notify2 = log_len(&c->log);
  CHECK_INT(braid_lock_acquire(self, c->l), 0);
  c->rc_notify_all = braid_condition_notify_all(self, c->c);
  c->waiting_after_all = cond_waiting(c->c);
  CHECK_INT(braid_lock_release(self, c->l), 0);
  WAIT_UNTIL(self, log_len(&c->log) == ORDER_N);
  CHECK_INT(braid_lock_acquire(self, c->l), 0);
  c->rc_notify_none = braid_condition_notify_all(self, c->c); /* nobody waits: fine */
  CHECK_INT(braid_lock_release(self, c->l), 0);
  close_group(g);
  for (int i = 0; i < ORDER_N; i++) {
    cw_join(&c->w[i]);
    CHECK_INT(atomic_load(&c->w[i].rc_wait), 0);
  }
  CHECK_INT(braid_condition_free(c->c), 0);
  CHECK_INT(braid_lock_free(c->l), 0);
  return 0;
}

static void test_condition_notify_n_and_notify_all_wake_in_fifo_order_across_kinds(void **state) {
  (void)state;
  struct order_ctx *c = calloc(1, sizeof *c);
  assert_non_null(c);
  assert_int_equal(run_real(order_root, c), 0);
  assert_int_equal(c->rc_notify0, 0);
  assert_int_equal(c->waiting_after_notify0, ORDER_N);
  assert_int_equal(c->rc_notify2, 0);
  assert_int_equal(c->waiting_after_notify2, ORDER_N - 2);
  assert_int_equal(c->log_after_notify2, 2);
  assert_int_equal(c->rc_notify_all, 0);
  assert_int_equal(c->waiting_after_all, 0);
  assert_int_equal(c->rc_notify_none, 0);
  CHECK_LOG(&c->log, 0, 1, 2, 3, 4, 5);
  assert_int_equal(check_failures(), 0);
  free(c);
}

/* notify by a plain thread that owns the lock */
static void test_condition_notify_by_a_thread_owner_wakes_a_waiting_thread(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  braid_condition *c = new_cond(l);
  cwaiter w;
  cw_start_thread(&w, 1, l, c, NULL, 1);
  assert_int_equal(braid_lock_acquire(NULL, l), 0);
  assert_int_equal(braid_condition_notify(NULL, c, 5), 0); /* more than wait: fine */
  assert_int_equal(cond_waiting(c), 0);
  assert_int_equal(braid_lock_release(NULL, l), 0);
  cw_finish(&w);
  assert_cw_returned(&w, 0);
  assert_int_equal(braid_condition_free(c), 0);
  assert_int_equal(braid_lock_free(l), 0);
}

/* ---- cancellation re-acquires the lock -------------------------------------------------- */

struct cancel_ctx {
  int kind;
  braid_lock *l;
  braid_condition *c;
  cwaiter w;
  braid_time_t t0, released_at;
  int waiting_after_deadline, done_while_held;
};

static int cancel_root(braid_task *self, void *arg) {
  struct cancel_ctx *c = arg;
  c->l = new_lock();
  c->c = new_cond(c->l);
  c->t0 = braid_now(self);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  cw_init(&c->w, c->kind, 1, c->l, c->c, NULL);
  c->w.scope = new_scope(c->t0 + 2 * SEC, 0);
  CHECK_INT(cw_start(g, &c->w), 0);
  CHECK_INT(braid_sleep(self, SEC), 0);
  CHECK_INT(cond_waiting(c->c), 1);
  /* Hold the lock across the deadline: the cancelled waiter must wait for
   * it (the re-acquisition cannot be cancelled). */
  CHECK_INT(braid_lock_acquire(self, c->l), 0);
  CHECK_INT(braid_sleep(self, 3 * SEC), 0);
  c->waiting_after_deadline = cond_waiting(c->c);
  c->done_while_held = atomic_load(&c->w.done);
  c->released_at = braid_now(self);
  CHECK_INT(braid_lock_release(self, c->l), 0);
  close_group(g);
  CHECK_INT(braid_scope_unref(c->w.scope), 0);
  CHECK_INT(braid_condition_free(c->c), 0);
  CHECK_INT(braid_lock_free(c->l), 0);
  return 0;
}

static void run_cancel(int kind) {
  struct cancel_ctx c;
  memset(&c, 0, sizeof c);
  c.kind = kind;
  assert_int_equal(run_virtual(cancel_root, &c), 0);
  assert_int_equal(atomic_load(&c.w.rc_wait), BRAID_ECANCELED);
  assert_int_equal(c.waiting_after_deadline, 0); /* it left the condition's queue at the deadline */
  assert_int_equal(c.done_while_held, 0);        /* but returned only with the lock */
  assert_int_equal(c.w.woke_at, c.released_at);
  assert_cw_returned(&c.w, BRAID_ECANCELED);
}

static void test_condition_a_cancelled_stackful_waiter_returns_ecanceled_only_once_it_owns_the_lock(void **state) {
  (void)state;
  run_cancel(W_TASK);
}

static void test_condition_a_cancelled_stepped_waiter_returns_ecanceled_only_once_it_owns_the_lock(void **state) {
  (void)state;
  run_cancel(W_STEPPED);
}

static void test_condition_a_thread_whose_scope_is_cancelled_returns_ecanceled_owning_the_lock(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  braid_condition *c = new_cond(l);
  cwaiter w;
  cw_start_thread(&w, 1, l, c, new_scope(BRAID_NEVER, 0), 1);
  braid_scope *mine = braid_scope_ref(w.scope);
  assert_int_equal(braid_lock_acquire(NULL, l), 0);
  assert_int_equal(braid_scope_cancel(mine), 0);
  WAIT_UNTIL(NULL, cond_waiting(c) == 0);
  os_sleep_ns(10 * MSEC);
  assert_int_equal(atomic_load(&w.done), 0); /* it waits for the lock we hold */
  assert_int_equal(lstats(l).waiting, 1);
  assert_int_equal(braid_lock_release(NULL, l), 0);
  cw_finish(&w);
  assert_cw_returned(&w, BRAID_ECANCELED);
  assert_int_equal(lstats(l).locked, 0);
  assert_int_equal(braid_scope_unref(mine), 0);
  assert_int_equal(braid_scope_unref(w.scope), 0);
  assert_int_equal(braid_condition_free(c), 0);
  assert_int_equal(braid_lock_free(l), 0);
}

static void test_condition_a_thread_with_a_short_real_deadline_returns_ecanceled_owning_the_lock(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  braid_condition *c = new_cond(l);
  cwaiter w;
  cw_init(&w, W_THREAD, 1, l, c, NULL);
  int64_t t0 = real_ns();
  w.scope = new_scope(braid_now(NULL) + 30 * MSEC, 0);
  assert_int_equal(cw_start(NULL, &w), 0);
  WAIT_UNTIL(NULL, atomic_load(&w.done));
  int64_t elapsed = real_ns() - t0;
  cw_join(&w);
  assert_cw_returned(&w, BRAID_ECANCELED);
  assert_true(elapsed >= 25 * MSEC);
  assert_int_equal(cond_waiting(c), 0);
  assert_int_equal(lstats(l).locked, 0);
  assert_int_equal(braid_scope_unref(w.scope), 0);
  assert_int_equal(braid_condition_free(c), 0);
  assert_int_equal(braid_lock_free(l), 0);
}

struct level_ctx {
  level_case lc;
  braid_lock *l;
  braid_condition *cv;
  int owner_kind;
  uint64_t owner_id, self_id;
  size_t waiting_after;
};

static int level_wait(braid_task *self, void *arg) {
  struct level_ctx *c = arg;
  return braid_condition_wait(self, c->cv);
}

static void level_more(braid_task *self, void *arg) {
  (void)self;
  struct level_ctx *c = arg;
  braid_lock_stats st = lstats(c->l);
  c->owner_kind = st.owner_kind;
  c->owner_id = st.owner_id;
  c->waiting_after = cstats(c->cv).waiting;
}

static int level_root(braid_task *self, void *arg) {
  struct level_ctx *c = arg;
  c->l = new_lock();
  c->cv = new_cond(c->l);
  c->self_id = braid_task_id(self);
  CHECK_INT(braid_lock_acquire(self, c->l), 0);
  c->lc = (level_case){.op = level_wait, .more = level_more, .ud = c};
  level_case_run(self, &c->lc);
  if (c->owner_id == c->self_id) CHECK_INT(braid_lock_release(self, c->l), 0);
  CHECK_INT(braid_condition_free(c->cv), 0);
  CHECK_INT(braid_lock_free(c->l), 0);
  return 0;
}

static void test_condition_wait_in_a_cancelled_scope_yields_fails_and_keeps_the_lock(void **state) {
  (void)state;
  struct level_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(level_root, &c), 0);
  assert_level_case(&c.lc);
  assert_int_equal(c.owner_kind, BRAID_OWNER_TASK);
  assert_int_equal(c.owner_id, c.self_id);
  assert_int_equal(c.waiting_after, 0);
}

/* ---- a notification is never lost -------------------------------------------------------- */

#if defined(__SANITIZE_THREAD__)
#define NOTIFY_RACE_ITERS 60
#else
#define NOTIFY_RACE_ITERS 250
#endif

static void
test_condition_race_notify_against_cancel_of_the_notified_waiter_never_loses_the_notification(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  braid_condition *c = new_cond(l);
  int first_won = 0, second_got = 0;
  race_tuner tu = {0};
  for (int i = 0; i < NOTIFY_RACE_ITERS && check_failures() == 0; i++) {
    cwaiter w1, w2;
    cw_start_thread(&w1, 1, l, c, new_scope(BRAID_NEVER, 0), 1);
    cw_start_thread(&w2, 2, l, c, NULL, 2);
    assert_int_equal(braid_lock_acquire(NULL, l), 0);
    racer k;
    racer_start(&k, cancel_scope_act, w1.scope, tuner_canceller_delay(&tu));
    racer_go(&k, tuner_waker_delay(&tu));
    assert_int_equal(braid_condition_notify(NULL, c, 1), 0);
    assert_int_equal(braid_lock_release(NULL, l), 0);
    racer_join(&k);
    cw_finish(&w1);
    int rc1 = atomic_load(&w1.rc_wait);
    tuner_update(&tu, rc1 == 0);
    if (rc1 == 0) {
      /* The notification reached w1 first: w2 still waits for one. */
      first_won++;
      CHECK_INT(cond_waiting(c), 1);
      CHECK(!atomic_load(&w2.done));
      assert_int_equal(braid_lock_acquire(NULL, l), 0);
      assert_int_equal(braid_condition_notify(NULL, c, 1), 0);
      assert_int_equal(braid_lock_release(NULL, l), 0);
    } else {
      /* w1 was cancelled first: the one notification went to w2. */
      second_got++;
      CHECK_INT(rc1, BRAID_ECANCELED);
      CHECK_INT(cond_waiting(c), 0);
    }
    cw_finish(&w2);
    CHECK_INT(atomic_load(&w2.rc_wait), 0);
    CHECK_INT(cond_waiting(c), 0);
    CHECK_INT(lstats(l).locked, 0);
    CHECK_INT(braid_scope_unref(w1.scope), 0);
  }
  print_message("  %d notified first, %d cancelled first (jitter %d)\n", first_won, second_got, tu.d);
  assert_int_equal(first_won + second_got, NOTIFY_RACE_ITERS);
  assert_int_equal(braid_condition_free(c), 0);
  assert_int_equal(braid_lock_free(l), 0);
}

/* ---- errors ------------------------------------------------------------------------------- */

struct eperm_ctx {
  braid_lock *l, *other;
  braid_condition *c;
  int rc_wait_free_lock, rc_wait_other_lock, rc_notify_free, rc_notify_all_free, rc_wait_held_by_thread,
      rc_notify_held_by_thread;
  size_t waiting_after;
};

static int eperm_root(braid_task *self, void *arg) {
  struct eperm_ctx *c = arg;
  c->rc_wait_free_lock = braid_condition_wait(self, c->c);
  c->rc_notify_free = braid_condition_notify(self, c->c, 1);
  c->rc_notify_all_free = braid_condition_notify_all(self, c->c);
  CHECK_INT(braid_lock_acquire(self, c->other), 0);
  c->rc_wait_other_lock = braid_condition_wait(self, c->c);
  CHECK_INT(braid_lock_release(self, c->other), 0);
  return 0;
}

static void *eperm_thread(void *arg) {
  struct eperm_ctx *c = arg;
  /* The lock is held by the main thread. */
  c->rc_wait_held_by_thread = braid_condition_wait(NULL, c->c);
  c->rc_notify_held_by_thread = braid_condition_notify(NULL, c->c, 1);
  return NULL;
}

static void test_condition_wait_and_notify_without_owning_the_lock_are_eperm(void **state) {
  (void)state;
  struct eperm_ctx c;
  memset(&c, 0, sizeof c);
  c.l = new_lock();
  c.other = new_lock();
  c.c = new_cond(c.l);
  assert_int_equal(run_virtual(eperm_root, &c), 0);
  assert_int_equal(c.rc_wait_free_lock, BRAID_EPERM);
  assert_int_equal(c.rc_notify_free, BRAID_EPERM);
  assert_int_equal(c.rc_notify_all_free, BRAID_EPERM);
  assert_int_equal(c.rc_wait_other_lock, BRAID_EPERM);
  assert_int_equal(braid_lock_acquire(NULL, c.l), 0);
  assert_int_equal(in_thread(eperm_thread, &c), 0);
  assert_int_equal(c.rc_wait_held_by_thread, BRAID_EPERM);
  assert_int_equal(c.rc_notify_held_by_thread, BRAID_EPERM);
  /* None of them queued or changed the lock. */
  braid_condition_stats st = cstats(c.c);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.lock.owner_kind, BRAID_OWNER_THREAD);
  assert_int_equal(st.lock.owner_id, braid_thread_id());
  assert_int_equal(braid_lock_release(NULL, c.l), 0);
  assert_int_equal(braid_condition_free(c.c), 0);
  assert_int_equal(braid_lock_free(c.l), 0);
  assert_int_equal(braid_lock_free(c.other), 0);
}

static void test_condition_null_arguments_are_einval(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  braid_condition *c = NULL;
  assert_int_equal(braid_condition_new(NULL, &c), BRAID_EINVAL);
  assert_null(c);
  assert_int_equal(braid_condition_new(l, NULL), BRAID_EINVAL);
  c = new_cond(l);
  braid_condition_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  st.lock.size = sizeof st.lock;
  assert_int_equal(braid_condition_free(NULL), BRAID_EINVAL);
  assert_int_equal(braid_condition_wait(NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_condition_notify(NULL, NULL, 1), BRAID_EINVAL);
  assert_int_equal(braid_condition_notify_all(NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_condition_statistics(NULL, &st), BRAID_EINVAL);
  assert_int_equal(braid_condition_statistics(c, NULL), BRAID_EINVAL);
  st.size = 0;
  assert_int_equal(braid_condition_statistics(c, &st), BRAID_EINVAL);
  assert_int_equal(braid_condition_free(c), 0);
  assert_int_equal(braid_lock_free(l), 0);
}

static void test_condition_free_while_waited_on_is_estate(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  braid_condition *c = new_cond(l);
  cwaiter w;
  cw_start_thread(&w, 1, l, c, NULL, 1);
  assert_int_equal(braid_condition_free(c), BRAID_ESTATE);
  assert_int_equal(braid_lock_acquire(NULL, l), 0);
  assert_int_equal(braid_condition_notify_all(NULL, c), 0);
  assert_int_equal(braid_lock_release(NULL, l), 0);
  cw_finish(&w);
  assert_int_equal(atomic_load(&w.rc_wait), 0);
  assert_int_equal(braid_condition_free(c), 0);
  assert_int_equal(braid_lock_free(l), 0);
}

struct wrong_ctx {
  braid_lock *l;
  braid_condition *c;
  braid_task *holder;
  atomic_int holder_has_it;
  int rc_not_running, rc_other_thread, rc_notify_other_thread;
  size_t waiting_after;
};

static int holder_body(braid_task *self, void *arg) {
  struct wrong_ctx *c = arg;
  CHECK_INT(braid_lock_acquire(self, c->l), 0);
  atomic_store(&c->holder_has_it, 1);
  int rc = braid_sleep_forever(self);
  CHECK_INT(braid_lock_release(self, c->l), 0);
  return rc;
}

static int wrong_wait_and_notify(braid_task *task, void *arg) {
  struct wrong_ctx *c = arg;
  int rc = braid_condition_wait(task, c->c);
  c->rc_notify_other_thread = braid_condition_notify(task, c->c, 1);
  return rc;
}

static int wrong_root(braid_task *self, void *arg) {
  struct wrong_ctx *c = arg;
  c->l = new_lock();
  c->c = new_cond(c->l);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, holder_body, c, NULL, &c->holder), 0);
  WAIT_UNTIL(self, atomic_load(&c->holder_has_it));
  /* The holder owns the lock but is not the running task. */
  c->rc_not_running = braid_condition_wait(c->holder, c->c);
  CHECK_INT(braid_scope_cancel(braid_group_scope(g)), 0);
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_free(g), 0);
  /* The root owns the lock; another thread passes the root as its task. */
  CHECK_INT(braid_lock_acquire(self, c->l), 0);
  c->rc_other_thread = call_from_another_thread(wrong_wait_and_notify, self, c);
  c->waiting_after = cstats(c->c).waiting;
  braid_lock_stats st = lstats(c->l);
  CHECK_INT(st.owner_kind, BRAID_OWNER_TASK);
  CHECK_INT(st.owner_id, braid_task_id(self));
  CHECK_INT(braid_lock_release(self, c->l), 0);
  CHECK_INT(braid_condition_free(c->c), 0);
  CHECK_INT(braid_lock_free(c->l), 0);
  return 0;
}

static void test_condition_wrong_thread_and_wrong_task_are_refused(void **state) {
  (void)state;
  struct wrong_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(wrong_root, &c), 0);
  assert_int_equal(c.rc_not_running, BRAID_ESTATE);
  assert_true(c.rc_other_thread == BRAID_ETHREAD || c.rc_other_thread == BRAID_ESTATE);
  assert_true(c.rc_notify_other_thread == BRAID_ETHREAD || c.rc_notify_other_thread == BRAID_EPERM);
  assert_int_equal(c.waiting_after, 0);
}

static void test_condition_allocation_failure_is_enomem(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  fail_alloc fa;
  fail_alloc_install(&fa);
  atomic_store(&fa.failing, 1);
  braid_condition *c = NULL;
  int rc = braid_condition_new(l, &c);
  atomic_store(&fa.failing, 0);
  fail_alloc_uninstall();
  assert_int_equal(rc, BRAID_ENOMEM);
  assert_null(c);
  assert_int_equal(atomic_load(&fa.live), 0);
  assert_int_equal(braid_lock_free(l), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_condition_new_reports_no_waiters_and_the_state_of_its_lock),
      BT(test_condition_a_stackful_task_waits_releasing_the_lock_and_returns_owning_it),
      BT(test_condition_a_stepped_task_waits_releasing_the_lock_and_returns_owning_it),
      BT(test_condition_a_thread_waits_releasing_the_lock_and_returns_owning_it),
      BT(test_condition_notify_n_and_notify_all_wake_in_fifo_order_across_kinds),
      BT(test_condition_notify_by_a_thread_owner_wakes_a_waiting_thread),
      BT(test_condition_a_cancelled_stackful_waiter_returns_ecanceled_only_once_it_owns_the_lock),
      BT(test_condition_a_cancelled_stepped_waiter_returns_ecanceled_only_once_it_owns_the_lock),
      BT(test_condition_a_thread_whose_scope_is_cancelled_returns_ecanceled_owning_the_lock),
      BT(test_condition_a_thread_with_a_short_real_deadline_returns_ecanceled_owning_the_lock),
      BT(test_condition_wait_in_a_cancelled_scope_yields_fails_and_keeps_the_lock),
      BT(test_condition_race_notify_against_cancel_of_the_notified_waiter_never_loses_the_notification),
      BT(test_condition_wait_and_notify_without_owning_the_lock_are_eperm),
      BT(test_condition_null_arguments_are_einval),
      BT(test_condition_free_while_waited_on_is_estate),
      BT(test_condition_wrong_thread_and_wrong_task_are_refused),
      BT(test_condition_allocation_failure_is_enomem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
