/*
 * test_event.c — braid_event: one-shot set / is_set / wait; a set wakes
 * every waiter of every kind; wait is a checkpoint even when the event is
 * already set; cancellation of waiters; races of set against cancellation;
 * every documented error code.
 */
#include "sync_helpers.h"

#include <stdlib.h>

static int ev_set(braid_task *self, void *e) {
  (void)self;
  return braid_event_set(e);
}

/* ---- set / is_set ---------------------------------------------------------- */

static void test_event_new_event_is_unset_and_set_is_idempotent(void **state) {
  (void)state;
  braid_event *e = new_event();
  assert_int_equal(braid_event_is_set(e), 0);
  braid_event_stats st = estats(e);
  assert_int_equal(st.set, 0);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(braid_event_set(e), 0);
  assert_int_equal(braid_event_is_set(e), 1);
  assert_int_equal(braid_event_set(e), 0);
  assert_int_equal(braid_event_is_set(e), 1);
  assert_int_equal(estats(e).set, 1);
  assert_int_equal(braid_event_free(e), 0);
}

static void test_event_wait_by_a_thread_on_a_set_event_returns_at_once(void **state) {
  (void)state;
  braid_event *e = new_event();
  assert_int_equal(braid_event_set(e), 0);
  /* One-shot: it stays set for every later wait. */
  for (int i = 0; i < 3; i++)
    assert_int_equal(braid_event_wait(NULL, e), 0);
  assert_int_equal(braid_event_is_set(e), 1);
  assert_int_equal(braid_event_free(e), 0);
}

static void test_event_wait_cb_on_a_set_event_completes_at_once_without_a_callback(void **state) {
  (void)state;
  braid_event *e = new_event();
  assert_int_equal(braid_event_set(e), 0);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = (braid_wait *)&r;
  assert_int_equal(braid_event_wait_cb(e, cb_record, &r, &w), 0);
  assert_null(w);
  assert_int_equal(atomic_load(&r.calls), 0);
  assert_int_equal(ev_waiting(e), 0);
  assert_int_equal(braid_event_free(e), 0);
}

/* ---- wait is a checkpoint even when set -------------------------------------- */

struct set_cp_ctx {
  atomic_int sibling_ran;
  int rc_set, ran_before_return;
  level_case cancelled;
};

static int ev_wait_op(braid_task *self, void *e) { return braid_event_wait(self, e); }

static int set_cp_root(braid_task *self, void *arg) {
  struct set_cp_ctx *c = arg;
  braid_event *e = new_event();
  CHECK_INT(braid_event_set(e), 0);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, set_flag_body, &c->sibling_ran, NULL, NULL), 0);
  c->rc_set = braid_event_wait(self, e);
  c->ran_before_return = atomic_load(&c->sibling_ran);
  close_group(g);
  c->cancelled.op = ev_wait_op;
  c->cancelled.ud = e;
  level_case_run(self, &c->cancelled);
  CHECK_INT(braid_event_free(e), 0);
  return 0;
}

static void test_event_wait_on_a_set_event_yields_and_fails_in_a_cancelled_scope(void **state) {
  (void)state;
  struct set_cp_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(set_cp_root, &c), 0);
  assert_int_equal(c.rc_set, 0);
  assert_int_equal(c.ran_before_return, 1);
  assert_level_case(&c.cancelled);
}

struct set_cp_step_ctx {
  co_state co;
  braid_event *e;
  braid_scope *s;
  int rc_set, rc_cancelled;
};

static int set_cp_step_root(braid_task *self, void *ctx, int resume) {
  struct set_cp_step_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->e = new_event();
    CHECK_INT(braid_event_set(c->e), 0);
    AWAIT(&c->co, braid_event_wait(self, c->e));
    c->rc_set = c->co.rc;
    c->s = cancelled_scope();
    CHECK_INT(braid_scope_enter(self, c->s), 0);
    AWAIT(&c->co, braid_event_wait(self, c->e));
    c->rc_cancelled = c->co.rc;
    CHECK_INT(braid_scope_exit(c->s, c->rc_cancelled), 0);
    CHECK_INT(braid_scope_unref(c->s), 0);
    CHECK_INT(braid_event_free(c->e), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_event_wait_by_a_stepped_task_on_a_set_event_pends_and_fails_in_a_cancelled_scope(void **state) {
  (void)state;
  struct set_cp_step_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(set_cp_step_root, &c), 0);
  assert_int_equal(c.rc_set, 0);
  assert_int_equal(c.rc_cancelled, BRAID_ECANCELED);
  assert_int_equal(c.co.immediate, 0); /* both waits yielded */
}

static void *cancelled_thread_wait(void *arg) {
  braid_event *e = arg;
  braid_scope *s = cancelled_scope();
  CHECK_INT(braid_scope_enter(NULL, s), 0);
  CHECK_INT(braid_event_wait(NULL, e), BRAID_ECANCELED);
  CHECK_INT(braid_scope_exit(s, BRAID_ECANCELED), 0);
  CHECK_INT(braid_scope_unref(s), 0);
  CHECK_INT(braid_event_wait(NULL, e), 0); /* outside the scope it succeeds */
  return NULL;
}

static void test_event_wait_by_a_thread_in_a_cancelled_scope_fails_even_when_set(void **state) {
  (void)state;
  braid_event *e = new_event();
  assert_int_equal(braid_event_set(e), 0);
  assert_int_equal(in_thread(cancelled_thread_wait, e), 0);
  assert_int_equal(braid_event_free(e), 0);
}

/* ---- set wakes every waiter of every kind -------------------------------------- */

#define ALL_N 8

struct all_ctx {
  int set_from_thread;
  braid_event *e;
  sw w[ALL_N];
  int kinds[ALL_N];
  braid_event_stats before, after;
  uintptr_t root_frame;
  int n;
};

static void *set_event_thread(void *arg) {
  CHECK_INT(braid_event_set((braid_event *)arg), 0);
  return NULL;
}

static int all_root(braid_task *self, void *arg) {
  struct all_ctx *c = arg;
  c->e = new_event();
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  for (int i = 0; i < c->n; i++) {
    sw_init(&c->w[i], &ev_ops, c->e, c->kinds[i], i, NULL);
    CHECK_INT(sw_start(g, &c->w[i]), 0);
    WAIT_UNTIL(self, ev_waiting(c->e) == i + 1);
  }
  CHECK_INT(braid_sleep(self, 2 * MSEC), 0);
  for (int i = 0; i < c->n; i++)
    CHECK(!sw_done(&c->w[i]));
  c->before = estats(c->e);
  volatile int local = 0;
  c->root_frame = (uintptr_t)&local;
  if (c->set_from_thread)
    CHECK_INT(in_thread(set_event_thread, c->e), 0);
  else
    CHECK_INT(braid_event_set(c->e), 0);
  c->after = estats(c->e);
  for (int i = 0; i < c->n; i++)
    WAIT_UNTIL(self, sw_done(&c->w[i]));
  close_group(g);
  for (int i = 0; i < c->n; i++)
    sw_join(&c->w[i]);
  CHECK_INT(braid_event_free(c->e), 0);
  return 0;
}

static void run_all(int set_from_thread) {
  struct all_ctx *c = calloc(1, sizeof *c);
  assert_non_null(c);
  const int kinds[ALL_N] = {W_TASK, W_THREAD, W_CB, W_STEPPED, W_CB, W_THREAD, W_STEPPED, W_TASK};
  c->n = ALL_N;
  c->set_from_thread = set_from_thread;
  for (int i = 0; i < ALL_N; i++)
    c->kinds[i] = kinds[i];
  assert_int_equal(run_real(all_root, c), 0);
  assert_int_equal(c->before.waiting, ALL_N);
  assert_int_equal(c->before.set, 0);
  assert_int_equal(c->after.waiting, 0);
  assert_int_equal(c->after.set, 1);
  for (int i = 0; i < ALL_N; i++) {
    assert_int_equal(sw_rc(&c->w[i]), 0);
    if (kinds[i] == W_CB) assert_cb_waiter_called_off_task(&c->w[i], set_from_thread ? 0 : c->root_frame);
  }
  free(c);
}

static void test_event_set_by_a_task_wakes_every_waiter_of_every_kind(void **state) {
  (void)state;
  run_all(0);
}

static void test_event_set_by_a_plain_thread_wakes_every_waiter_of_every_kind(void **state) {
  (void)state;
  run_all(1);
}

/* Task waiters resume in the order they started waiting. */
struct order_ctx {
  braid_event *e;
  order_log log;
  sw w[4];
};

static int order_root(braid_task *self, void *arg) {
  struct order_ctx *c = arg;
  c->e = new_event();
  log_init(&c->log);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  const int kinds[4] = {W_STEPPED, W_TASK, W_TASK, W_STEPPED};
  for (int i = 0; i < 4; i++) {
    sw_init(&c->w[i], &ev_ops, c->e, kinds[i], i, &c->log);
    CHECK_INT(sw_start(g, &c->w[i]), 0);
    CHECK_INT(braid_checkpoint(self), 0);
  }
  CHECK_INT(ev_waiting(c->e), 4);
  CHECK_INT(braid_event_set(c->e), 0);
  close_group(g);
  CHECK_INT(braid_event_free(c->e), 0);
  return 0;
}

static void test_event_set_resumes_waiting_tasks_in_fifo_order(void **state) {
  (void)state;
  struct order_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(order_root, &c), 0);
  CHECK_LOG(&c.log, 0, 1, 2, 3);
}

/* Callback waiters are completed in the order they started waiting,
 * whether the event is set by a plain thread or by a stackful task (whose
 * completions the scheduler runs after the task switches out). */
struct cb_order_ctx {
  braid_event *e;
  order_log log;
  cb_rec r[4];
  braid_wait *w[4];
};

static void cb_order_register(struct cb_order_ctx *c) {
  c->e = new_event();
  log_init(&c->log);
  for (int i = 0; i < 4; i++) {
    cb_rec_init(&c->r[i], &c->log, i);
    CHECK_INT(braid_event_wait_cb(c->e, cb_record, &c->r[i], &c->w[i]), BRAID_EPENDING);
  }
}

static void cb_order_finish(struct cb_order_ctx *c) {
  for (int i = 0; i < 4; i++) {
    CHECK_INT(atomic_load(&c->r[i].calls), 1);
    CHECK_INT(braid_wait_free(c->w[i]), 0);
  }
  CHECK_INT(braid_event_free(c->e), 0);
}

static int cb_order_root(braid_task *self, void *arg) {
  struct cb_order_ctx *c = arg;
  CHECK_INT(braid_event_set(c->e), 0);
  WAIT_UNTIL(self, log_len(&c->log) == 4);
  return 0;
}

static void test_event_set_by_a_thread_completes_callbacks_in_fifo_order(void **state) {
  (void)state;
  struct cb_order_ctx c;
  memset(&c, 0, sizeof c);
  cb_order_register(&c);
  assert_int_equal(braid_event_set(c.e), 0);
  CHECK_LOG(&c.log, 0, 1, 2, 3);
  cb_order_finish(&c);
}

static void test_event_set_by_a_task_completes_callbacks_in_fifo_order(void **state) {
  (void)state;
  struct cb_order_ctx c;
  memset(&c, 0, sizeof c);
  cb_order_register(&c);
  assert_int_equal(run_real(cb_order_root, &c), 0);
  CHECK_LOG(&c.log, 0, 1, 2, 3);
  cb_order_finish(&c);
}

/* ---- cancellation of waiters ------------------------------------------------------ */

struct deadline_ctx {
  deadline_case dc;
  braid_event_stats after_deadline;
};

static void deadline_snap(deadline_case *dc, int when) {
  struct deadline_ctx *c = dc->ud;
  if (when == SNAP_DEADLINE_PASSED) c->after_deadline = estats(dc->obj);
}

static void run_deadline(int kind) {
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  c.dc = (deadline_case){.ops = &ev_ops,
                         .obj = new_event(),
                         .kind = kind,
                         .deadline = 2 * SEC,
                         .wake = ev_set,
                         .snap = deadline_snap,
                         .ud = &c};
  run_deadline_case(&c.dc);
  assert_int_equal(c.after_deadline.set, 0);
  assert_int_equal(braid_event_free(c.dc.obj), 0);
}

static void test_event_a_stackful_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue(void **state) {
  (void)state;
  run_deadline(W_TASK);
}

static void test_event_a_stepped_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue(void **state) {
  (void)state;
  run_deadline(W_STEPPED);
}

static void test_event_a_waiting_thread_whose_scope_is_cancelled_gets_ecanceled(void **state) {
  (void)state;
  braid_event *e = new_event();
  sw w;
  sw_init(&w, &ev_ops, e, W_THREAD, 1, NULL);
  sw_thread_scope_cancelled(&w);
  assert_int_equal(braid_event_is_set(e), 0);
  assert_int_equal(braid_event_free(e), 0);
}

static void test_event_a_waiting_thread_with_a_short_real_deadline_gets_ecanceled(void **state) {
  (void)state;
  braid_event *e = new_event();
  sw w;
  sw_init(&w, &ev_ops, e, W_THREAD, 1, NULL);
  sw_thread_short_deadline(&w, 30 * MSEC);
  assert_int_equal(braid_event_free(e), 0);
}

static void test_event_a_cancelled_callback_waiter_is_not_called_again_by_set(void **state) {
  (void)state;
  braid_event *e = new_event();
  cb_rec a, b;
  cb_rec_init(&a, NULL, 0);
  cb_rec_init(&b, NULL, 1);
  braid_wait *wa = NULL, *wb = NULL;
  assert_int_equal(braid_event_wait_cb(e, cb_record, &a, &wa), BRAID_EPENDING);
  assert_int_equal(braid_event_wait_cb(e, cb_record, &b, &wb), BRAID_EPENDING);
  assert_int_equal(ev_waiting(e), 2);
  assert_int_equal(braid_wait_cancel(wa), 0);
  assert_int_equal(atomic_load(&a.calls), 1);
  assert_int_equal(atomic_load(&a.result), BRAID_ECANCELED);
  assert_int_equal(ev_waiting(e), 1);
  assert_int_equal(braid_event_set(e), 0);
  assert_int_equal(atomic_load(&a.calls), 1);
  assert_int_equal(atomic_load(&b.calls), 1);
  assert_int_equal(atomic_load(&b.result), 0);
  assert_int_equal(braid_wait_cancel(wb), BRAID_ESTATE);
  assert_int_equal(atomic_load(&b.calls), 1);
  assert_int_equal(braid_wait_free(wa), 0);
  assert_int_equal(braid_wait_free(wb), 0);
  assert_int_equal(braid_event_free(e), 0);
}

/* ---- races -------------------------------------------------------------------------- */

/* A fresh event each round: a set one stays set. */
static void race_new_event(race_case *rc) { rc->obj = new_event(); }
static int race_set(race_case *rc) { return braid_event_set(rc->obj); }

static void race_check(race_case *rc, sw *w) {
  (void)w;
  CHECK_INT(rc->rc_wake, 0);
  CHECK_INT(braid_event_is_set(rc->obj), 1);
  CHECK_INT(braid_event_free(rc->obj), 0);
}

static void test_event_race_set_against_scope_cancel_of_a_waiting_thread_has_one_outcome(void **state) {
  (void)state;
  race_case rc = {.ops = &ev_ops, .wake_in_thread = 1, .setup = race_new_event, .wake = race_set, .check = race_check};
  run_race_case(&rc);
}

static void cb_race_new_event(cb_race_case *rc) { rc->ud = new_event(); }
static int cb_race_reg(cb_race_case *rc, braid_wait_cb cb, void *ud, braid_wait **out) {
  return braid_event_wait_cb(rc->ud, cb, ud, out);
}
static int cb_race_set(cb_race_case *rc) { return braid_event_set(rc->ud); }

static void cb_race_check(cb_race_case *rc, int woke) {
  (void)woke;
  CHECK_INT(rc->rc_wake, 0);
  CHECK_INT(braid_event_is_set(rc->ud), 1);
}

static void cb_race_free_event(cb_race_case *rc) { CHECK_INT(braid_event_free(rc->ud), 0); }

static void test_event_race_set_against_wait_cancel_calls_the_callback_exactly_once(void **state) {
  (void)state;
  cb_race_case rc = {.wake_in_thread = 1,
                     .setup = cb_race_new_event,
                     .reg = cb_race_reg,
                     .wake = cb_race_set,
                     .check = cb_race_check,
                     .teardown = cb_race_free_event};
  run_cb_race_case(&rc);
}

/* ---- errors -------------------------------------------------------------------------- */

static void test_event_null_arguments_are_einval(void **state) {
  (void)state;
  braid_event *e = new_event();
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  braid_event_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  assert_int_equal(braid_event_new(NULL), BRAID_EINVAL);
  assert_int_equal(braid_event_free(NULL), BRAID_EINVAL);
  assert_int_equal(braid_event_set(NULL), BRAID_EINVAL);
  assert_int_equal(braid_event_wait(NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_event_wait_cb(NULL, cb_record, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_event_wait_cb(e, NULL, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_event_wait_cb(e, cb_record, &r, NULL), BRAID_EINVAL);
  assert_int_equal(braid_event_statistics(NULL, &st), BRAID_EINVAL);
  assert_int_equal(braid_event_statistics(e, NULL), BRAID_EINVAL);
  st.size = 0;
  assert_int_equal(braid_event_statistics(e, &st), BRAID_EINVAL);
  assert_int_equal(ev_waiting(e), 0);
  assert_int_equal(braid_event_is_set(e), 0);
  assert_int_equal(atomic_load(&r.calls), 0);
  assert_int_equal(braid_event_free(e), 0);
}

static void test_event_free_while_waited_on_is_estate(void **state) {
  (void)state;
  braid_event *e = new_event();
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  assert_int_equal(braid_event_wait_cb(e, cb_record, &r, &w), BRAID_EPENDING);
  assert_int_equal(braid_event_free(e), BRAID_ESTATE);
  assert_int_equal(braid_event_set(e), 0);
  assert_int_equal(atomic_load(&r.calls), 1);
  assert_int_equal(braid_wait_free(w), 0);
  assert_int_equal(braid_event_free(e), 0);
}

struct wrong_ctx {
  wrong_calls rc;
  size_t waiting_after;
};

static int wrong_root(braid_task *self, void *arg) {
  struct wrong_ctx *c = arg;
  braid_event *e = new_event();
  CHECK_INT(braid_event_set(e), 0);
  /* Set: a wrong caller would return at once with 0 if not refused. */
  c->rc.rc_other_thread = call_from_another_thread(ev_wait_op, self, e);
  c->rc.rc_not_running = call_naming_a_blocked_task(self, ev_wait_op, e);
  CHECK_INT(braid_event_free(e), 0);
  e = new_event();
  c->rc.rc_null_in_loop = braid_event_wait(NULL, e);
  c->waiting_after = estats(e).waiting;
  CHECK_INT(braid_event_free(e), 0);
  return 0;
}

static void test_event_wrong_thread_and_wrong_task_are_refused(void **state) {
  (void)state;
  struct wrong_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(wrong_root, &c), 0);
  assert_wrong_calls(&c.rc);
  assert_int_equal(c.waiting_after, 0);
}

static void test_event_allocation_failure_is_enomem(void **state) {
  (void)state;
  fail_alloc fa;
  fail_alloc_install(&fa);
  atomic_store(&fa.failing, 1);
  braid_event *e = NULL;
  int rc = braid_event_new(&e);
  atomic_store(&fa.failing, 0);
  assert_int_equal(rc, BRAID_ENOMEM);
  assert_null(e);
  e = new_event();
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  atomic_store(&fa.failing, 1);
  int rc_cb = braid_event_wait_cb(e, cb_record, &r, &w);
  atomic_store(&fa.failing, 0);
  if (atomic_load(&fa.refused) > 0) {
    assert_int_equal(rc_cb, BRAID_ENOMEM);
    assert_int_equal(ev_waiting(e), 0);
  } else {
    assert_int_equal(rc_cb, BRAID_EPENDING);
    assert_int_equal(braid_wait_free(w), 0);
  }
  assert_int_equal(braid_event_free(e), 0);
  fail_alloc_uninstall();
  assert_int_equal(atomic_load(&fa.live), 0);
  assert_int_equal(atomic_load(&r.calls), rc_cb == BRAID_EPENDING ? 1 : 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_event_new_event_is_unset_and_set_is_idempotent),
      BT(test_event_wait_by_a_thread_on_a_set_event_returns_at_once),
      BT(test_event_wait_cb_on_a_set_event_completes_at_once_without_a_callback),
      BT(test_event_wait_on_a_set_event_yields_and_fails_in_a_cancelled_scope),
      BT(test_event_wait_by_a_stepped_task_on_a_set_event_pends_and_fails_in_a_cancelled_scope),
      BT(test_event_wait_by_a_thread_in_a_cancelled_scope_fails_even_when_set),
      BT(test_event_set_by_a_task_wakes_every_waiter_of_every_kind),
      BT(test_event_set_by_a_plain_thread_wakes_every_waiter_of_every_kind),
      BT(test_event_set_resumes_waiting_tasks_in_fifo_order),
      BT(test_event_set_by_a_thread_completes_callbacks_in_fifo_order),
      BT(test_event_set_by_a_task_completes_callbacks_in_fifo_order),
      BT(test_event_a_stackful_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue),
      BT(test_event_a_stepped_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue),
      BT(test_event_a_waiting_thread_whose_scope_is_cancelled_gets_ecanceled),
      BT(test_event_a_waiting_thread_with_a_short_real_deadline_gets_ecanceled),
      BT(test_event_a_cancelled_callback_waiter_is_not_called_again_by_set),
      BT(test_event_race_set_against_scope_cancel_of_a_waiting_thread_has_one_outcome),
      BT(test_event_race_set_against_wait_cancel_calls_the_callback_exactly_once),
      BT(test_event_null_arguments_are_einval),
      BT(test_event_free_while_waited_on_is_estate),
      BT(test_event_wrong_thread_and_wrong_task_are_refused),
      BT(test_event_allocation_failure_is_enomem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
