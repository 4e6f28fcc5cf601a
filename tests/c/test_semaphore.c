/*
 * test_semaphore.c — braid_semaphore: initial value and bound, release past
 * the bound, FIFO hand-off of units to every kind of waiter and to
 * mixtures, no barging, cancellation of waiters, level-triggered
 * cancellation, races of a release against a cancellation (the value is
 * conserved), every documented error code.
 */
#include "sync_helpers.h"

#include <stdlib.h>

#define SEC BRAID_SEC
#define MSEC BRAID_MSEC

static braid_semaphore_stats sstats(braid_semaphore *s) {
  braid_semaphore_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  CHECK_INT(braid_semaphore_statistics(s, &st), 0);
  return st;
}

static int sem_waiting(braid_semaphore *s) { return (int)sstats(s).waiting; }

static braid_semaphore *new_sem(uint64_t initial, uint64_t max) {
  braid_semaphore *s = NULL;
  CHECK_INT(braid_semaphore_new(initial, max, &s), 0);
  return s;
}

static int sem_wait(braid_task *t, sw *w) { return braid_semaphore_acquire(t, (braid_semaphore *)w->obj); }
static int sem_wait_cb(sw *w, braid_wait_cb cb, void *ud, braid_wait **out) {
  return braid_semaphore_acquire_cb((braid_semaphore *)w->obj, cb, ud, out);
}
/* Waiters keep the unit they got. */
static const sw_ops sem_ops = {sem_wait, sem_wait_cb, NULL};

/* ---- value and bound ---------------------------------------------------- */

static void test_semaphore_new_reports_initial_value_and_max(void **state) {
  (void)state;
  braid_semaphore *s = new_sem(3, 5);
  braid_semaphore_stats st = sstats(s);
  assert_int_equal(st.value, 3);
  assert_int_equal(st.max, 5);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(braid_semaphore_value(s), 3);
  assert_int_equal(braid_semaphore_free(s), 0);

  s = new_sem(4, 4);
  assert_int_equal(braid_semaphore_value(s), 4);
  assert_int_equal(braid_semaphore_free(s), 0);

  s = new_sem(7, 0); /* no bound */
  assert_int_equal(braid_semaphore_value(s), 7);
  assert_int_equal(sstats(s).max, 0);
  assert_int_equal(braid_semaphore_free(s), 0);

  s = new_sem(0, 0);
  assert_int_equal(braid_semaphore_value(s), 0);
  assert_int_equal(braid_semaphore_free(s), 0);
}

static void test_semaphore_initial_above_max_is_einval(void **state) {
  (void)state;
  braid_semaphore *s = NULL;
  assert_int_equal(braid_semaphore_new(6, 5, &s), BRAID_EINVAL);
  assert_null(s);
  assert_int_equal(braid_semaphore_new(1, 0, NULL), BRAID_EINVAL);
}

static void test_semaphore_nowait_takes_units_until_zero_then_ewouldblock(void **state) {
  (void)state;
  braid_semaphore *s = new_sem(2, 0);
  assert_int_equal(braid_semaphore_acquire_nowait(s), 0);
  assert_int_equal(braid_semaphore_value(s), 1);
  assert_int_equal(braid_semaphore_acquire_nowait(s), 0);
  assert_int_equal(braid_semaphore_value(s), 0);
  assert_int_equal(braid_semaphore_acquire_nowait(s), BRAID_EWOULDBLOCK);
  assert_int_equal(braid_semaphore_value(s), 0);
  assert_int_equal(braid_semaphore_release(s), 0);
  assert_int_equal(braid_semaphore_release(s), 0);
  assert_int_equal(braid_semaphore_value(s), 2);
  assert_int_equal(braid_semaphore_free(s), 0);
}

static void test_semaphore_release_past_max_is_einval_and_changes_nothing(void **state) {
  (void)state;
  braid_semaphore *s = new_sem(1, 2);
  assert_int_equal(braid_semaphore_release(s), 0);
  assert_int_equal(braid_semaphore_value(s), 2);
  assert_int_equal(braid_semaphore_release(s), BRAID_EINVAL);
  assert_int_equal(braid_semaphore_value(s), 2);
  assert_int_equal(braid_semaphore_acquire_nowait(s), 0);
  assert_int_equal(braid_semaphore_release(s), 0);
  assert_int_equal(braid_semaphore_release(s), BRAID_EINVAL);
  assert_int_equal(braid_semaphore_free(s), 0);
}

static void test_semaphore_without_a_bound_releases_freely(void **state) {
  (void)state;
  braid_semaphore *s = new_sem(0, 0);
  for (int i = 0; i < 1000; i++)
    assert_int_equal(braid_semaphore_release(s), 0);
  assert_int_equal(braid_semaphore_value(s), 1000);
  assert_int_equal(braid_semaphore_free(s), 0);
}

/* With max 1 and a waiter, the release hands the unit over: the value
 * never reaches the bound, so it is not refused. */
static void test_semaphore_release_at_max_with_a_waiter_hands_over_instead_of_failing(void **state) {
  (void)state;
  braid_semaphore *s = new_sem(1, 1);
  assert_int_equal(braid_semaphore_acquire_nowait(s), 0);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  assert_int_equal(braid_semaphore_acquire_cb(s, cb_record, &r, &w), BRAID_EPENDING);
  assert_int_equal(braid_semaphore_release(s), 0);
  assert_int_equal(atomic_load(&r.calls), 1);
  assert_int_equal(atomic_load(&r.result), 0);
  assert_int_equal(braid_semaphore_value(s), 0);
  assert_int_equal(braid_wait_free(w), 0);
  assert_int_equal(braid_semaphore_release(s), 0);
  assert_int_equal(braid_semaphore_release(s), BRAID_EINVAL);
  assert_int_equal(braid_semaphore_free(s), 0);
}

struct task_acq_ctx {
  co_state co;
  braid_semaphore *s;
  int rc1, rc2;
  uint64_t value_after;
};

static int task_acq_root(braid_task *self, void *arg) {
  struct task_acq_ctx *c = arg;
  c->rc1 = braid_semaphore_acquire(self, c->s);
  c->rc2 = braid_semaphore_acquire(self, c->s);
  c->value_after = braid_semaphore_value(c->s);
  return 0;
}

static int step_acq_root(braid_task *self, void *ctx, int resume) {
  struct task_acq_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    AWAIT(&c->co, braid_semaphore_acquire(self, c->s));
    c->rc1 = c->co.rc;
    AWAIT(&c->co, braid_semaphore_acquire(self, c->s));
    c->rc2 = c->co.rc;
    c->value_after = braid_semaphore_value(c->s);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_semaphore_tasks_take_available_units(void **state) {
  (void)state;
  struct task_acq_ctx c;
  memset(&c, 0, sizeof c);
  c.s = new_sem(3, 3);
  assert_int_equal(run_virtual(task_acq_root, &c), 0);
  assert_int_equal(c.rc1, 0);
  assert_int_equal(c.rc2, 0);
  assert_int_equal(c.value_after, 1);
  memset(&c.co, 0, sizeof c.co);
  c.rc1 = c.rc2 = 1;
  assert_int_equal(braid_semaphore_release(c.s), 0);
  assert_int_equal(run_stepped_virtual(step_acq_root, &c), 0);
  assert_int_equal(c.rc1, 0);
  assert_int_equal(c.rc2, 0);
  assert_int_equal(c.value_after, 0);
  assert_int_equal(braid_semaphore_free(c.s), 0);
}

/* ---- hand-off to each kind of waiter ---------------------------------- */

struct handoff_ctx {
  int kind;
  braid_semaphore *s;
  sw w;
  braid_semaphore_stats before, after_release;
  int rc_nowait;
  uintptr_t root_frame;
};

static int handoff_root(braid_task *self, void *arg) {
  struct handoff_ctx *c = arg;
  c->s = new_sem(0, 1);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  sw_init(&c->w, &sem_ops, c->s, c->kind, 1, NULL);
  CHECK_INT(sw_start(g, &c->w), 0);
  WAIT_UNTIL(self, sem_waiting(c->s) == 1);
  CHECK(!sw_done(&c->w));
  c->before = sstats(c->s);
  volatile int local = 0;
  c->root_frame = (uintptr_t)&local;
  CHECK_INT(braid_semaphore_release(c->s), 0);
  c->after_release = sstats(c->s);
  c->rc_nowait = braid_semaphore_acquire_nowait(c->s);
  WAIT_UNTIL(self, sw_done(&c->w));
  close_group(g);
  sw_join(&c->w);
  CHECK_INT(braid_semaphore_value(c->s), 0);
  CHECK_INT(braid_semaphore_release(c->s), 0);
  CHECK_INT(braid_semaphore_free(c->s), 0);
  return 0;
}

static void run_handoff(int kind) {
  struct handoff_ctx c;
  memset(&c, 0, sizeof c);
  c.kind = kind;
  assert_int_equal(run_real(handoff_root, &c), 0);
  assert_int_equal(c.before.value, 0);
  assert_int_equal(c.before.waiting, 1);
  /* The unit went straight to the waiter. */
  assert_int_equal(c.after_release.value, 0);
  assert_int_equal(c.after_release.waiting, 0);
  assert_int_equal(c.rc_nowait, BRAID_EWOULDBLOCK);
  assert_int_equal(sw_rc(&c.w), 0);
  if (kind == W_CB) {
    assert_int_equal(atomic_load(&c.w.cb.calls), 1);
    assert_int_equal(atomic_load(&c.w.cb.on_task), 0);
    assert_false(near_addr(atomic_load(&c.w.cb.frame), c.root_frame, 256 * 1024));
  }
}

static void test_semaphore_release_hands_a_unit_to_a_waiting_stackful_task(void **state) {
  (void)state;
  run_handoff(W_TASK);
}

static void test_semaphore_release_hands_a_unit_to_a_waiting_stepped_task(void **state) {
  (void)state;
  run_handoff(W_STEPPED);
}

static void test_semaphore_release_hands_a_unit_to_a_waiting_thread(void **state) {
  (void)state;
  run_handoff(W_THREAD);
}

static void test_semaphore_release_hands_a_unit_to_a_waiting_callback(void **state) {
  (void)state;
  run_handoff(W_CB);
}

/* ---- FIFO across kinds: one release wakes exactly the next waiter ------ */

#define MIX_N 8

struct mix_ctx {
  braid_semaphore *s;
  order_log log;
  sw w[MIX_N];
  int kinds[MIX_N];
  int n;
};

static int mix_root(braid_task *self, void *arg) {
  struct mix_ctx *c = arg;
  c->s = new_sem(0, 0);
  log_init(&c->log);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  for (int i = 0; i < c->n; i++) {
    sw_init(&c->w[i], &sem_ops, c->s, c->kinds[i], i, &c->log);
    CHECK_INT(sw_start(g, &c->w[i]), 0);
    WAIT_UNTIL(self, sem_waiting(c->s) == i + 1);
  }
  for (int i = 0; i < c->n; i++) {
    CHECK_INT(braid_semaphore_release(c->s), 0);
    WAIT_UNTIL(self, log_len(&c->log) == i + 1);
    CHECK_INT(braid_sleep(self, 2 * MSEC), 0); /* give a wrong waiter time to show up */
    CHECK_INT(log_len(&c->log), i + 1);
    CHECK_INT(log_at(&c->log, i), i);
    CHECK_INT(sem_waiting(c->s), c->n - i - 1);
    CHECK_INT(braid_semaphore_value(c->s), 0);
  }
  close_group(g);
  for (int i = 0; i < c->n; i++) {
    sw_join(&c->w[i]);
    CHECK_INT(sw_rc(&c->w[i]), 0);
  }
  CHECK_INT(braid_semaphore_free(c->s), 0);
  return 0;
}

static void run_mix(const int *kinds, int n) {
  struct mix_ctx *c = calloc(1, sizeof *c);
  assert_non_null(c);
  c->n = n;
  for (int i = 0; i < n; i++)
    c->kinds[i] = kinds[i];
  assert_int_equal(run_real(mix_root, c), 0);
  assert_int_equal(log_len(&c->log), n);
  for (int i = 0; i < n; i++)
    assert_int_equal(log_at(&c->log, i), i);
  free(c);
}

static void test_semaphore_releases_wake_waiters_in_fifo_order_task_thread_callback_stepped(void **state) {
  (void)state;
  const int kinds[] = {W_TASK, W_THREAD, W_CB, W_STEPPED};
  run_mix(kinds, 4);
}

static void test_semaphore_releases_wake_waiters_in_fifo_order_across_a_longer_mixture(void **state) {
  (void)state;
  const int kinds[] = {W_THREAD, W_CB, W_CB, W_STEPPED, W_TASK, W_THREAD, W_STEPPED, W_TASK};
  run_mix(kinds, 8);
}

/* ---- cancellation --------------------------------------------------------- */

struct deadline_ctx {
  int kind;
  braid_semaphore *s;
  sw cancelled, next;
  braid_time_t t0;
  braid_semaphore_stats before, after_deadline, after_release;
};

static int deadline_root(braid_task *self, void *arg) {
  struct deadline_ctx *c = arg;
  c->s = new_sem(0, 0);
  c->t0 = braid_now(self);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  sw_init(&c->cancelled, &sem_ops, c->s, c->kind, 1, NULL);
  sw_init(&c->next, &sem_ops, c->s, W_TASK, 2, NULL);
  c->cancelled.scope = new_scope(c->t0 + 3 * SEC, 0);
  CHECK_INT(sw_start(g, &c->cancelled), 0);
  CHECK_INT(sw_start(g, &c->next), 0);
  CHECK_INT(braid_sleep(self, SEC), 0);
  c->before = sstats(c->s);
  CHECK_INT(braid_sleep(self, 5 * SEC), 0);
  c->after_deadline = sstats(c->s);
  CHECK_INT(braid_semaphore_release(c->s), 0);
  c->after_release = sstats(c->s);
  close_group(g);
  CHECK_INT(braid_semaphore_free(c->s), 0);
  CHECK_INT(braid_scope_unref(c->cancelled.scope), 0);
  return 0;
}

static void run_deadline(int kind) {
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  c.kind = kind;
  assert_int_equal(run_virtual(deadline_root, &c), 0);
  assert_int_equal(sw_rc(&c.cancelled), BRAID_ECANCELED);
  assert_int_equal(c.cancelled.woke_at, c.t0 + 3 * SEC);
  assert_int_equal(c.before.waiting, 2);
  assert_int_equal(c.after_deadline.waiting, 1);
  assert_int_equal(c.after_deadline.value, 0);
  assert_int_equal(c.after_release.waiting, 0);
  assert_int_equal(c.after_release.value, 0); /* went to the next waiter */
  assert_int_equal(sw_rc(&c.next), 0);
}

static void test_semaphore_a_stackful_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue(void **state) {
  (void)state;
  run_deadline(W_TASK);
}

static void test_semaphore_a_stepped_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue(void **state) {
  (void)state;
  run_deadline(W_STEPPED);
}

static void test_semaphore_a_waiting_thread_whose_scope_is_cancelled_gets_ecanceled(void **state) {
  (void)state;
  braid_semaphore *s = new_sem(0, 0);
  sw w;
  sw_init(&w, &sem_ops, s, W_THREAD, 1, NULL);
  w.scope = new_scope(BRAID_NEVER, 0);
  braid_scope *mine = braid_scope_ref(w.scope);
  assert_int_equal(sw_start(NULL, &w), 0);
  WAIT_UNTIL(NULL, sem_waiting(s) == 1);
  os_sleep_ns(5 * MSEC);
  assert_false(sw_done(&w));
  assert_int_equal(braid_scope_cancel(mine), 0);
  WAIT_UNTIL(NULL, sw_done(&w));
  sw_join(&w);
  assert_int_equal(sw_rc(&w), BRAID_ECANCELED);
  assert_int_equal(sem_waiting(s), 0);
  /* A later release is not swallowed by the cancelled waiter. */
  assert_int_equal(braid_semaphore_release(s), 0);
  assert_int_equal(braid_semaphore_value(s), 1);
  assert_int_equal(braid_scope_unref(mine), 0);
  assert_int_equal(braid_scope_unref(w.scope), 0);
  assert_int_equal(braid_semaphore_free(s), 0);
}

static void test_semaphore_a_waiting_thread_with_a_short_real_deadline_gets_ecanceled(void **state) {
  (void)state;
  braid_semaphore *s = new_sem(0, 0);
  sw w;
  sw_init(&w, &sem_ops, s, W_THREAD, 1, NULL);
  int64_t t0 = real_ns();
  w.scope = new_scope(braid_now(NULL) + 40 * MSEC, 0);
  assert_int_equal(sw_start(NULL, &w), 0);
  WAIT_UNTIL(NULL, sw_done(&w));
  int64_t elapsed = real_ns() - t0;
  sw_join(&w);
  assert_int_equal(sw_rc(&w), BRAID_ECANCELED);
  assert_true(elapsed >= 35 * MSEC);
  assert_true(elapsed < 10 * SEC);
  assert_int_equal(sem_waiting(s), 0);
  assert_int_equal(braid_semaphore_value(s), 0);
  assert_int_equal(braid_scope_unref(w.scope), 0);
  assert_int_equal(braid_semaphore_free(s), 0);
}

struct level_ctx {
  atomic_int sibling_ran;
  int rc, ran_before_return, rc_nowait;
  uint64_t value_after;
};

static int level_root(braid_task *self, void *arg) {
  struct level_ctx *c = arg;
  braid_semaphore *s = new_sem(1, 1);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, set_flag_body, &c->sibling_ran, NULL, NULL), 0);
  braid_scope *sc = cancelled_scope();
  CHECK_INT(braid_scope_enter(self, sc), 0);
  c->rc = braid_semaphore_acquire(self, s);
  c->ran_before_return = atomic_load(&c->sibling_ran);
  c->value_after = braid_semaphore_value(s);
  c->rc_nowait = braid_semaphore_acquire_nowait(s); /* not a checkpoint */
  CHECK_INT(braid_scope_exit(sc, c->rc), 0);
  CHECK_INT(braid_scope_unref(sc), 0);
  close_group(g);
  if (c->rc_nowait == 0) CHECK_INT(braid_semaphore_release(s), 0);
  CHECK_INT(braid_semaphore_free(s), 0);
  return 0;
}

static void test_semaphore_acquire_in_a_cancelled_scope_yields_and_fails_without_taking_a_unit(void **state) {
  (void)state;
  struct level_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(level_root, &c), 0);
  assert_int_equal(c.rc, BRAID_ECANCELED);
  assert_int_equal(c.ran_before_return, 1);
  assert_int_equal(c.value_after, 1);
  assert_int_equal(c.rc_nowait, 0);
}

static void *level_thread(void *arg) {
  braid_semaphore *s = arg;
  braid_scope *sc = cancelled_scope();
  CHECK_INT(braid_scope_enter(NULL, sc), 0);
  CHECK_INT(braid_semaphore_acquire(NULL, s), BRAID_ECANCELED);
  CHECK_INT(braid_semaphore_value(s), 1);
  CHECK_INT(braid_scope_exit(sc, BRAID_ECANCELED), 0);
  CHECK_INT(braid_scope_unref(sc), 0);
  return NULL;
}

static void test_semaphore_acquire_by_a_thread_in_a_cancelled_scope_fails_without_taking_a_unit(void **state) {
  (void)state;
  braid_semaphore *s = new_sem(1, 0);
  assert_int_equal(in_thread(level_thread, s), 0);
  assert_int_equal(braid_semaphore_value(s), 1);
  assert_int_equal(braid_semaphore_free(s), 0);
}

/* ---- races: the value is conserved -------------------------------------- */

#if defined(__SANITIZE_THREAD__)
#define RACE_ITERS 100
#else
#define RACE_ITERS 400
#endif

struct race_arg {
  braid_scope *scope;
  braid_wait *w;
  spin_barrier *go;
  unsigned jitter;
  atomic_int rc;
};

static void *race_scope_canceller(void *arg) {
  struct race_arg *a = arg;
  barrier_wait(a->go);
  spin_for(a->jitter);
  atomic_store(&a->rc, braid_scope_cancel(a->scope));
  return NULL;
}

static void *race_wait_canceller(void *arg) {
  struct race_arg *a = arg;
  barrier_wait(a->go);
  spin_for(a->jitter);
  atomic_store(&a->rc, braid_wait_cancel(a->w));
  return NULL;
}

static void test_semaphore_race_release_against_scope_cancel_of_a_waiting_thread_conserves_the_value(void **state) {
  (void)state;
  braid_semaphore *s = new_sem(0, 0);
  int got = 0, cancelled = 0;
  race_tuner tu = {0};
  for (int i = 0; i < RACE_ITERS && check_failures() == 0; i++) {
    sw w;
    sw_init(&w, &sem_ops, s, W_THREAD, 1, NULL);
    w.scope = new_scope(BRAID_NEVER, 0);
    spin_barrier go;
    barrier_init(&go, 2);
    struct race_arg a;
    memset(&a, 0, sizeof a);
    a.scope = braid_scope_ref(w.scope);
    a.go = &go;
    a.jitter = tuner_canceller_delay(&tu);
    assert_int_equal(sw_start(NULL, &w), 0);
    WAIT_UNTIL(NULL, sem_waiting(s) == 1);
    pthread_t c;
    assert_int_equal(pthread_create(&c, NULL, race_scope_canceller, &a), 0);
    barrier_wait(&go);
    spin_for(tuner_waker_delay(&tu));
    assert_int_equal(braid_semaphore_release(s), 0);
    assert_int_equal(pthread_join(c, NULL), 0);
    sw_join(&w);
    int rc = sw_rc(&w);
    tuner_update(&tu, rc == 0);
    uint64_t v = braid_semaphore_value(s);
    if (rc == 0) {
      got++;
      CHECK_INT(v, 0);
    } else {
      cancelled++;
      CHECK_INT(rc, BRAID_ECANCELED);
      CHECK_INT(v, 1);
      CHECK_INT(braid_semaphore_acquire_nowait(s), 0);
    }
    CHECK_INT(sem_waiting(s), 0);
    CHECK_INT(braid_scope_unref(a.scope), 0);
    CHECK_INT(braid_scope_unref(w.scope), 0);
  }
  print_message("  %d hand-offs, %d cancellations (jitter %d)\n", got, cancelled, tu.d);
  assert_int_equal(got + cancelled, RACE_ITERS);
  assert_int_equal(braid_semaphore_value(s), 0);
  assert_int_equal(braid_semaphore_free(s), 0);
}

static void test_semaphore_race_release_against_wait_cancel_of_a_callback_conserves_the_value(void **state) {
  (void)state;
  braid_semaphore *s = new_sem(0, 0);
  int got = 0, cancelled = 0;
  race_tuner tu = {0};
  for (int i = 0; i < RACE_ITERS && check_failures() == 0; i++) {
    cb_rec r;
    cb_rec_init(&r, NULL, 0);
    struct race_arg a;
    memset(&a, 0, sizeof a);
    assert_int_equal(braid_semaphore_acquire_cb(s, cb_record, &r, &a.w), BRAID_EPENDING);
    spin_barrier go;
    barrier_init(&go, 2);
    a.go = &go;
    a.jitter = tuner_canceller_delay(&tu);
    pthread_t c;
    assert_int_equal(pthread_create(&c, NULL, race_wait_canceller, &a), 0);
    barrier_wait(&go);
    spin_for(tuner_waker_delay(&tu));
    assert_int_equal(braid_semaphore_release(s), 0);
    assert_int_equal(pthread_join(c, NULL), 0);
    int rc_cancel = atomic_load(&a.rc);
    CHECK_INT(atomic_load(&r.calls), 1);
    uint64_t v = braid_semaphore_value(s);
    tuner_update(&tu, rc_cancel != 0);
    if (rc_cancel == 0) {
      cancelled++;
      CHECK_INT(atomic_load(&r.result), BRAID_ECANCELED);
      CHECK_INT(v, 1);
      CHECK_INT(braid_semaphore_acquire_nowait(s), 0);
    } else {
      got++;
      CHECK_INT(rc_cancel, BRAID_ESTATE);
      CHECK_INT(atomic_load(&r.result), 0);
      CHECK_INT(v, 0);
    }
    CHECK_INT(braid_wait_free(a.w), 0);
    CHECK_INT(atomic_load(&r.calls), 1);
    CHECK_INT(sem_waiting(s), 0);
  }
  print_message("  %d hand-offs, %d cancellations (jitter %d)\n", got, cancelled, tu.d);
  assert_int_equal(got + cancelled, RACE_ITERS);
  assert_int_equal(braid_semaphore_value(s), 0);
  assert_int_equal(braid_semaphore_free(s), 0);
}

/* ---- errors ---------------------------------------------------------------- */

static void test_semaphore_null_arguments_are_einval(void **state) {
  (void)state;
  braid_semaphore *s = new_sem(0, 0);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  braid_semaphore_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  assert_int_equal(braid_semaphore_free(NULL), BRAID_EINVAL);
  assert_int_equal(braid_semaphore_acquire(NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_semaphore_acquire_nowait(NULL), BRAID_EINVAL);
  assert_int_equal(braid_semaphore_acquire_cb(NULL, cb_record, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_semaphore_acquire_cb(s, NULL, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_semaphore_acquire_cb(s, cb_record, &r, NULL), BRAID_EINVAL);
  assert_int_equal(braid_semaphore_release(NULL), BRAID_EINVAL);
  assert_int_equal(braid_semaphore_statistics(NULL, &st), BRAID_EINVAL);
  assert_int_equal(braid_semaphore_statistics(s, NULL), BRAID_EINVAL);
  st.size = 0;
  assert_int_equal(braid_semaphore_statistics(s, &st), BRAID_EINVAL);
  assert_int_equal(sem_waiting(s), 0);
  assert_int_equal(atomic_load(&r.calls), 0);
  assert_int_equal(braid_semaphore_free(s), 0);
}

static void test_semaphore_free_while_waited_on_is_estate(void **state) {
  (void)state;
  braid_semaphore *s = new_sem(0, 0);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  assert_int_equal(braid_semaphore_acquire_cb(s, cb_record, &r, &w), BRAID_EPENDING);
  assert_int_equal(braid_semaphore_free(s), BRAID_ESTATE);
  assert_int_equal(braid_wait_cancel(w), 0);
  assert_int_equal(atomic_load(&r.result), BRAID_ECANCELED);
  assert_int_equal(braid_wait_free(w), 0);
  assert_int_equal(braid_semaphore_free(s), 0);
}

struct wrong_ctx {
  braid_semaphore *s;
  braid_task *root, *sleeper;
  int rc_null_in_loop, rc_other_thread, rc_not_running;
  uint64_t value_after;
  size_t waiting_after;
};

static void *wrong_thread_acquire(void *arg) {
  struct wrong_ctx *c = arg;
  c->rc_other_thread = braid_semaphore_acquire(c->root, c->s);
  return NULL;
}

static int sleeper_body(braid_task *self, void *arg) {
  (void)arg;
  return braid_sleep_forever(self);
}

static int wrong_root(braid_task *self, void *arg) {
  struct wrong_ctx *c = arg;
  c->root = self;
  c->s = new_sem(1, 0);
  CHECK_INT(in_thread(wrong_thread_acquire, c), 0);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, sleeper_body, NULL, NULL, &c->sleeper), 0);
  CHECK_INT(braid_checkpoint(self), 0);
  c->rc_not_running = braid_semaphore_acquire(c->sleeper, c->s);
  CHECK_INT(braid_scope_cancel(braid_group_scope(g)), 0);
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_free(g), 0);
  c->value_after = braid_semaphore_value(c->s);
  CHECK_INT(braid_semaphore_acquire_nowait(c->s), 0);
  c->rc_null_in_loop = braid_semaphore_acquire(NULL, c->s);
  c->waiting_after = sstats(c->s).waiting;
  CHECK_INT(braid_semaphore_release(c->s), 0);
  CHECK_INT(braid_semaphore_free(c->s), 0);
  return 0;
}

static void test_semaphore_wrong_thread_and_wrong_task_are_refused(void **state) {
  (void)state;
  struct wrong_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(wrong_root, &c), 0);
  assert_true(c.rc_other_thread == BRAID_ETHREAD || c.rc_other_thread == BRAID_ESTATE);
  assert_int_equal(c.rc_not_running, BRAID_ESTATE);
  assert_int_equal(c.value_after, 1); /* neither refused call took the unit */
  assert_int_equal(c.rc_null_in_loop, BRAID_ETHREAD);
  assert_int_equal(c.waiting_after, 0);
}

static void test_semaphore_allocation_failure_is_enomem(void **state) {
  (void)state;
  fail_alloc fa;
  fail_alloc_install(&fa);
  atomic_store(&fa.failing, 1);
  braid_semaphore *s = NULL;
  int rc = braid_semaphore_new(1, 1, &s);
  atomic_store(&fa.failing, 0);
  assert_int_equal(rc, BRAID_ENOMEM);
  assert_null(s);
  s = new_sem(0, 0);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  atomic_store(&fa.failing, 1);
  int rc_cb = braid_semaphore_acquire_cb(s, cb_record, &r, &w);
  atomic_store(&fa.failing, 0);
  if (atomic_load(&fa.refused) > 0) {
    assert_int_equal(rc_cb, BRAID_ENOMEM);
    assert_int_equal(sem_waiting(s), 0);
  } else {
    assert_int_equal(rc_cb, BRAID_EPENDING);
    assert_int_equal(braid_wait_free(w), 0);
  }
  assert_int_equal(braid_semaphore_free(s), 0);
  fail_alloc_uninstall();
  assert_int_equal(atomic_load(&fa.live), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_semaphore_new_reports_initial_value_and_max),
      BT(test_semaphore_initial_above_max_is_einval),
      BT(test_semaphore_nowait_takes_units_until_zero_then_ewouldblock),
      BT(test_semaphore_release_past_max_is_einval_and_changes_nothing),
      BT(test_semaphore_without_a_bound_releases_freely),
      BT(test_semaphore_release_at_max_with_a_waiter_hands_over_instead_of_failing),
      BT(test_semaphore_tasks_take_available_units),
      BT(test_semaphore_release_hands_a_unit_to_a_waiting_stackful_task),
      BT(test_semaphore_release_hands_a_unit_to_a_waiting_stepped_task),
      BT(test_semaphore_release_hands_a_unit_to_a_waiting_thread),
      BT(test_semaphore_release_hands_a_unit_to_a_waiting_callback),
      BT(test_semaphore_releases_wake_waiters_in_fifo_order_task_thread_callback_stepped),
      BT(test_semaphore_releases_wake_waiters_in_fifo_order_across_a_longer_mixture),
      BT(test_semaphore_a_stackful_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue),
      BT(test_semaphore_a_stepped_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue),
      BT(test_semaphore_a_waiting_thread_whose_scope_is_cancelled_gets_ecanceled),
      BT(test_semaphore_a_waiting_thread_with_a_short_real_deadline_gets_ecanceled),
      BT(test_semaphore_acquire_in_a_cancelled_scope_yields_and_fails_without_taking_a_unit),
      BT(test_semaphore_acquire_by_a_thread_in_a_cancelled_scope_fails_without_taking_a_unit),
      BT(test_semaphore_race_release_against_scope_cancel_of_a_waiting_thread_conserves_the_value),
      BT(test_semaphore_race_release_against_wait_cancel_of_a_callback_conserves_the_value),
      BT(test_semaphore_null_arguments_are_einval),
      BT(test_semaphore_free_while_waited_on_is_estate),
      BT(test_semaphore_wrong_thread_and_wrong_task_are_refused),
      BT(test_semaphore_allocation_failure_is_enomem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
