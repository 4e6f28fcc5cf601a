/*
 * test_semaphore.c — braid_semaphore: initial value and bound, release past
 * the bound, FIFO hand-off of units to every kind of waiter and to
 * mixtures, no barging, cancellation of waiters, level-triggered
 * cancellation, races of a release against a cancellation (the value is
 * conserved), every documented error code.
 */
#include "sync_helpers.h"

#include <stdlib.h>

static int sem_release(braid_task *self, void *s) {
  (void)self;
  return braid_semaphore_release(s);
}

static int sem_nowait(braid_task *self, void *s) {
  (void)self;
  return braid_semaphore_acquire_nowait(s);
}

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
  handoff_case hc;
  braid_semaphore_stats before, after_release;
};

static void handoff_snap(handoff_case *hc, int when) {
  struct handoff_ctx *c = hc->ud;
  if (when == SNAP_QUEUED)
    c->before = sstats(hc->obj);
  else
    c->after_release = sstats(hc->obj);
}

static void run_handoff(int kind) {
  struct handoff_ctx c;
  memset(&c, 0, sizeof c);
  braid_semaphore *s = new_sem(0, 1);
  c.hc = (handoff_case){.ops = &sem_ops,
                        .obj = s,
                        .kind = kind,
                        .wake = sem_release,
                        .nowait = sem_nowait,
                        .snap = handoff_snap,
                        .ud = &c};
  run_handoff_case(&c.hc);
  assert_int_equal(c.before.value, 0);
  assert_int_equal(c.before.waiting, 1);
  /* The unit went straight to the waiter, which keeps it. */
  assert_int_equal(c.after_release.value, 0);
  assert_int_equal(c.after_release.waiting, 0);
  assert_int_equal(braid_semaphore_value(s), 0);
  assert_int_equal(braid_semaphore_release(s), 0);
  assert_int_equal(braid_semaphore_free(s), 0);
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

/* The waiter keeps its unit: the value stays 0. */
static void mix_on_done(braid_task *self, mix_case *mc, int i) {
  (void)self;
  (void)i;
  CHECK_INT(braid_semaphore_value(mc->obj), 0);
}

static void run_mix(const int *kinds, int n) {
  mix_case *mc = calloc(1, sizeof *mc);
  assert_non_null(mc);
  braid_semaphore *s = new_sem(0, 0);
  *mc = (mix_case){
      .ops = &sem_ops, .cb_ops = &sem_ops, .obj = s, .wake_each = 1, .wake = sem_release, .on_done = mix_on_done};
  run_mix_case(mc, kinds, n);
  assert_int_equal(braid_semaphore_free(s), 0);
  free(mc);
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
  deadline_case dc;
  braid_semaphore_stats after_deadline, after_release;
};

static void deadline_snap(deadline_case *dc, int when) {
  struct deadline_ctx *c = dc->ud;
  if (when == SNAP_DEADLINE_PASSED)
    c->after_deadline = sstats(dc->obj);
  else
    c->after_release = sstats(dc->obj);
}

static void run_deadline(int kind) {
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  c.dc = (deadline_case){.ops = &sem_ops,
                         .obj = new_sem(0, 0),
                         .kind = kind,
                         .deadline = 3 * SEC,
                         .wake = sem_release,
                         .snap = deadline_snap,
                         .ud = &c};
  run_deadline_case(&c.dc);
  assert_int_equal(c.after_deadline.value, 0);
  assert_int_equal(c.after_release.waiting, 0);
  assert_int_equal(c.after_release.value, 0); /* went to the next waiter */
  assert_int_equal(braid_semaphore_free(c.dc.obj), 0);
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
  sw_thread_scope_cancelled(&w);
  /* A later release is not swallowed by the cancelled waiter. */
  assert_int_equal(braid_semaphore_release(s), 0);
  assert_int_equal(braid_semaphore_value(s), 1);
  assert_int_equal(braid_semaphore_free(s), 0);
}

static void test_semaphore_a_waiting_thread_with_a_short_real_deadline_gets_ecanceled(void **state) {
  (void)state;
  braid_semaphore *s = new_sem(0, 0);
  sw w;
  sw_init(&w, &sem_ops, s, W_THREAD, 1, NULL);
  sw_thread_short_deadline(&w, 40 * MSEC);
  assert_int_equal(braid_semaphore_value(s), 0);
  assert_int_equal(braid_semaphore_free(s), 0);
}

struct level_ctx {
  level_case lc;
  braid_semaphore *s;
  int rc_nowait;
  uint64_t value_after;
};

static int level_acquire(braid_task *self, void *arg) {
  struct level_ctx *c = arg;
  return braid_semaphore_acquire(self, c->s);
}

static void level_more(braid_task *self, void *arg) {
  (void)self;
  struct level_ctx *c = arg;
  c->value_after = braid_semaphore_value(c->s);
  c->rc_nowait = braid_semaphore_acquire_nowait(c->s); /* not a checkpoint */
}

static int level_root(braid_task *self, void *arg) {
  struct level_ctx *c = arg;
  c->s = new_sem(1, 1);
  c->lc = (level_case){.op = level_acquire, .more = level_more, .ud = c};
  level_case_run(self, &c->lc);
  if (c->rc_nowait == 0) CHECK_INT(braid_semaphore_release(c->s), 0);
  CHECK_INT(braid_semaphore_free(c->s), 0);
  return 0;
}

static void test_semaphore_acquire_in_a_cancelled_scope_yields_and_fails_without_taking_a_unit(void **state) {
  (void)state;
  struct level_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(level_root, &c), 0);
  assert_level_case(&c.lc);
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

static int race_release(race_case *rc) { return braid_semaphore_release(rc->obj); }

/* A unit that was not handed over is still there. */
static void race_check(race_case *rc, sw *w) {
  CHECK_INT(rc->rc_wake, 0);
  uint64_t v = braid_semaphore_value(rc->obj);
  if (sw_rc(w) == 0) {
    CHECK_INT(v, 0);
  } else {
    CHECK_INT(v, 1);
    CHECK_INT(braid_semaphore_acquire_nowait(rc->obj), 0);
  }
}

static void test_semaphore_race_release_against_scope_cancel_of_a_waiting_thread_conserves_the_value(void **state) {
  (void)state;
  braid_semaphore *s = new_sem(0, 0);
  race_case rc = {.ops = &sem_ops, .obj = s, .wake = race_release, .check = race_check};
  run_race_case(&rc);
  assert_int_equal(braid_semaphore_value(s), 0);
  assert_int_equal(braid_semaphore_free(s), 0);
}

static int cb_race_reg(cb_race_case *rc, braid_wait_cb cb, void *ud, braid_wait **out) {
  return braid_semaphore_acquire_cb(rc->ud, cb, ud, out);
}
static int cb_race_release(cb_race_case *rc) { return braid_semaphore_release(rc->ud); }

static void cb_race_check(cb_race_case *rc, int woke) {
  CHECK_INT(rc->rc_wake, 0);
  uint64_t v = braid_semaphore_value(rc->ud);
  if (woke) {
    CHECK_INT(v, 0);
  } else {
    CHECK_INT(v, 1);
    CHECK_INT(braid_semaphore_acquire_nowait(rc->ud), 0);
  }
  CHECK_INT(sem_waiting(rc->ud), 0);
}

static void test_semaphore_race_release_against_wait_cancel_of_a_callback_conserves_the_value(void **state) {
  (void)state;
  braid_semaphore *s = new_sem(0, 0);
  cb_race_case rc = {.reg = cb_race_reg, .wake = cb_race_release, .check = cb_race_check, .ud = s};
  run_cb_race_case(&rc);
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
  wrong_calls rc;
  uint64_t value_after;
  size_t waiting_after;
};

static int sem_acquire_op(braid_task *task, void *s) { return braid_semaphore_acquire(task, s); }

static int wrong_root(braid_task *self, void *arg) {
  struct wrong_ctx *c = arg;
  braid_semaphore *s = new_sem(1, 0);
  c->rc.rc_other_thread = call_from_another_thread(sem_acquire_op, self, s);
  c->rc.rc_not_running = call_naming_a_blocked_task(self, sem_acquire_op, s);
  c->value_after = braid_semaphore_value(s);
  CHECK_INT(braid_semaphore_acquire_nowait(s), 0);
  c->rc.rc_null_in_loop = braid_semaphore_acquire(NULL, s);
  c->waiting_after = sstats(s).waiting;
  CHECK_INT(braid_semaphore_release(s), 0);
  CHECK_INT(braid_semaphore_free(s), 0);
  return 0;
}

static void test_semaphore_wrong_thread_and_wrong_task_are_refused(void **state) {
  (void)state;
  struct wrong_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(wrong_root, &c), 0);
  assert_wrong_calls(&c.rc);
  assert_int_equal(c.value_after, 1); /* neither refused call took the unit */
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
