/*
 * test_event.c — braid_event: one-shot set / is_set / wait; a set wakes
 * every waiter of every kind; wait is a checkpoint even when the event is
 * already set; cancellation of waiters; races of set against cancellation;
 * every documented error code.
 */
#include "sync_helpers.h"

#include <stdlib.h>

#define SEC BRAID_SEC
#define MSEC BRAID_MSEC

static braid_event_stats estats(braid_event *e) {
  braid_event_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  CHECK_INT(braid_event_statistics(e, &st), 0);
  return st;
}

static int ev_waiting(braid_event *e) { return (int)estats(e).waiting; }

static braid_event *new_event(void) {
  braid_event *e = NULL;
  CHECK_INT(braid_event_new(&e), 0);
  return e;
}

static int ev_wait(braid_task *t, sw *w) { return braid_event_wait(t, (braid_event *)w->obj); }
static int ev_wait_cb(sw *w, braid_wait_cb cb, void *ud, braid_wait **out) {
  return braid_event_wait_cb((braid_event *)w->obj, cb, ud, out);
}
static const sw_ops ev_ops = {ev_wait, ev_wait_cb, NULL};

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
  int rc_set, ran_before_return, rc_cancelled, ran2_before_return;
  atomic_int sibling2_ran;
};

static int set_cp_root(braid_task *self, void *arg) {
  struct set_cp_ctx *c = arg;
  braid_event *e = new_event();
  CHECK_INT(braid_event_set(e), 0);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, set_flag_body, &c->sibling_ran, NULL, NULL), 0);
  c->rc_set = braid_event_wait(self, e);
  c->ran_before_return = atomic_load(&c->sibling_ran);
  CHECK_INT(braid_group_spawn(g, set_flag_body, &c->sibling2_ran, NULL, NULL), 0);
  braid_scope *s = cancelled_scope();
  CHECK_INT(braid_scope_enter(self, s), 0);
  c->rc_cancelled = braid_event_wait(self, e);
  c->ran2_before_return = atomic_load(&c->sibling2_ran);
  CHECK_INT(braid_scope_exit(s, c->rc_cancelled), 0);
  CHECK_INT(braid_scope_unref(s), 0);
  close_group(g);
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
  assert_int_equal(c.rc_cancelled, BRAID_ECANCELED);
  assert_int_equal(c.ran2_before_return, 1);
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
    if (kinds[i] == W_CB) {
      assert_int_equal(atomic_load(&c->w[i].cb.calls), 1);
      assert_int_equal(atomic_load(&c->w[i].cb.on_task), 0);
      if (!set_from_thread) assert_false(near_addr(atomic_load(&c->w[i].cb.frame), c->root_frame, 256 * 1024));
    }
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
  int kind;
  braid_event *e;
  sw cancelled, other;
  braid_time_t t0;
  braid_event_stats before, after_deadline;
};

static int deadline_root(braid_task *self, void *arg) {
  struct deadline_ctx *c = arg;
  c->e = new_event();
  c->t0 = braid_now(self);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  sw_init(&c->cancelled, &ev_ops, c->e, c->kind, 1, NULL);
  sw_init(&c->other, &ev_ops, c->e, W_TASK, 2, NULL);
  c->cancelled.scope = new_scope(c->t0 + 2 * SEC, 0);
  CHECK_INT(sw_start(g, &c->cancelled), 0);
  CHECK_INT(sw_start(g, &c->other), 0);
  CHECK_INT(braid_sleep(self, SEC), 0);
  c->before = estats(c->e);
  CHECK_INT(braid_sleep(self, 2 * SEC), 0);
  c->after_deadline = estats(c->e);
  CHECK_INT(braid_event_set(c->e), 0);
  close_group(g);
  CHECK_INT(braid_event_free(c->e), 0);
  CHECK_INT(braid_scope_unref(c->cancelled.scope), 0);
  return 0;
}

static void run_deadline(int kind) {
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  c.kind = kind;
  assert_int_equal(run_virtual(deadline_root, &c), 0);
  assert_int_equal(sw_rc(&c.cancelled), BRAID_ECANCELED);
  assert_int_equal(c.cancelled.woke_at, c.t0 + 2 * SEC);
  assert_int_equal(c.before.waiting, 2);
  assert_int_equal(c.after_deadline.waiting, 1);
  assert_int_equal(c.after_deadline.set, 0);
  assert_int_equal(sw_rc(&c.other), 0);
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
  w.scope = new_scope(BRAID_NEVER, 0);
  braid_scope *mine = braid_scope_ref(w.scope);
  assert_int_equal(sw_start(NULL, &w), 0);
  WAIT_UNTIL(NULL, ev_waiting(e) == 1);
  os_sleep_ns(5 * MSEC);
  assert_false(sw_done(&w));
  assert_int_equal(braid_scope_cancel(mine), 0);
  WAIT_UNTIL(NULL, sw_done(&w));
  sw_join(&w);
  assert_int_equal(sw_rc(&w), BRAID_ECANCELED);
  assert_int_equal(ev_waiting(e), 0);
  assert_int_equal(braid_event_is_set(e), 0);
  assert_int_equal(braid_scope_unref(mine), 0);
  assert_int_equal(braid_scope_unref(w.scope), 0);
  assert_int_equal(braid_event_free(e), 0);
}

static void test_event_a_waiting_thread_with_a_short_real_deadline_gets_ecanceled(void **state) {
  (void)state;
  braid_event *e = new_event();
  sw w;
  sw_init(&w, &ev_ops, e, W_THREAD, 1, NULL);
  int64_t t0 = real_ns();
  w.scope = new_scope(braid_now(NULL) + 30 * MSEC, 0);
  assert_int_equal(sw_start(NULL, &w), 0);
  WAIT_UNTIL(NULL, sw_done(&w));
  int64_t elapsed = real_ns() - t0;
  sw_join(&w);
  assert_int_equal(sw_rc(&w), BRAID_ECANCELED);
  assert_true(elapsed >= 25 * MSEC);
  assert_true(elapsed < 10 * SEC);
  assert_int_equal(ev_waiting(e), 0);
  assert_int_equal(braid_scope_unref(w.scope), 0);
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

#if defined(__SANITIZE_THREAD__)
#define RACE_ITERS 100
#else
#define RACE_ITERS 400
#endif

struct race_arg {
  braid_scope *scope;
  braid_wait *w;
  braid_event *e;
  spin_barrier go;
  unsigned jitter;
  atomic_int rc;
};

static void *race_setter(void *arg) {
  struct race_arg *a = arg;
  barrier_wait(&a->go);
  spin_for(a->jitter);
  CHECK_INT(braid_event_set(a->e), 0);
  return NULL;
}

static void test_event_race_set_against_scope_cancel_of_a_waiting_thread_has_one_outcome(void **state) {
  (void)state;
  int woke = 0, cancelled = 0;
  race_tuner tu = {0};
  for (int i = 0; i < RACE_ITERS && check_failures() == 0; i++) {
    braid_event *e = new_event();
    sw w;
    sw_init(&w, &ev_ops, e, W_THREAD, 1, NULL);
    w.scope = new_scope(BRAID_NEVER, 0);
    struct race_arg a;
    memset(&a, 0, sizeof a);
    a.e = e;
    a.jitter = tuner_waker_delay(&tu);
    barrier_init(&a.go, 2);
    assert_int_equal(sw_start(NULL, &w), 0);
    WAIT_UNTIL(NULL, ev_waiting(e) == 1);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, race_setter, &a), 0);
    barrier_wait(&a.go);
    spin_for(tuner_canceller_delay(&tu));
    assert_int_equal(braid_scope_cancel(w.scope), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    sw_join(&w);
    int rc = sw_rc(&w);
    tuner_update(&tu, rc == 0);
    if (rc == 0)
      woke++;
    else if (CHECK_INT(rc, BRAID_ECANCELED))
      cancelled++;
    CHECK_INT(ev_waiting(e), 0);
    CHECK_INT(braid_event_is_set(e), 1);
    CHECK_INT(braid_scope_unref(w.scope), 0);
    CHECK_INT(braid_event_free(e), 0);
  }
  print_message("  %d woken, %d cancelled\n", woke, cancelled);
  assert_int_equal(woke + cancelled, RACE_ITERS);
}

static void test_event_race_set_against_wait_cancel_calls_the_callback_exactly_once(void **state) {
  (void)state;
  int woke = 0, cancelled = 0;
  race_tuner tu = {0};
  for (int i = 0; i < RACE_ITERS && check_failures() == 0; i++) {
    braid_event *e = new_event();
    cb_rec r;
    cb_rec_init(&r, NULL, 0);
    struct race_arg a;
    memset(&a, 0, sizeof a);
    a.e = e;
    a.jitter = tuner_waker_delay(&tu);
    barrier_init(&a.go, 2);
    braid_wait *w = NULL;
    assert_int_equal(braid_event_wait_cb(e, cb_record, &r, &w), BRAID_EPENDING);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, race_setter, &a), 0);
    barrier_wait(&a.go);
    spin_for(tuner_canceller_delay(&tu));
    int rc_cancel = braid_wait_cancel(w);
    assert_int_equal(pthread_join(t, NULL), 0);
    CHECK_INT(atomic_load(&r.calls), 1);
    tuner_update(&tu, rc_cancel != 0);
    if (rc_cancel == 0) {
      cancelled++;
      CHECK_INT(atomic_load(&r.result), BRAID_ECANCELED);
    } else {
      woke++;
      CHECK_INT(rc_cancel, BRAID_ESTATE);
      CHECK_INT(atomic_load(&r.result), 0);
    }
    CHECK_INT(braid_wait_free(w), 0);
    CHECK_INT(atomic_load(&r.calls), 1);
    CHECK_INT(braid_event_free(e), 0);
  }
  print_message("  %d woken, %d cancelled\n", woke, cancelled);
  assert_int_equal(woke + cancelled, RACE_ITERS);
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
  braid_event *e;
  braid_task *root, *sleeper;
  int rc_null_in_loop, rc_other_thread, rc_not_running;
  size_t waiting_after;
};

static void *wrong_thread_wait(void *arg) {
  struct wrong_ctx *c = arg;
  c->rc_other_thread = braid_event_wait(c->root, c->e);
  return NULL;
}

static int sleeper_body(braid_task *self, void *arg) {
  (void)arg;
  return braid_sleep_forever(self);
}

static int wrong_root(braid_task *self, void *arg) {
  struct wrong_ctx *c = arg;
  c->root = self;
  c->e = new_event();
  CHECK_INT(braid_event_set(c->e), 0);
  /* Set: a wrong caller would return at once with 0 if not refused. */
  CHECK_INT(in_thread(wrong_thread_wait, c), 0);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, sleeper_body, NULL, NULL, &c->sleeper), 0);
  CHECK_INT(braid_checkpoint(self), 0);
  c->rc_not_running = braid_event_wait(c->sleeper, c->e);
  CHECK_INT(braid_scope_cancel(braid_group_scope(g)), 0);
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_free(g), 0);
  CHECK_INT(braid_event_free(c->e), 0);
  c->e = new_event();
  c->rc_null_in_loop = braid_event_wait(NULL, c->e);
  c->waiting_after = estats(c->e).waiting;
  CHECK_INT(braid_event_free(c->e), 0);
  return 0;
}

static void test_event_wrong_thread_and_wrong_task_are_refused(void **state) {
  (void)state;
  struct wrong_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(wrong_root, &c), 0);
  assert_true(c.rc_other_thread == BRAID_ETHREAD || c.rc_other_thread == BRAID_ESTATE);
  assert_int_equal(c.rc_not_running, BRAID_ESTATE);
  assert_int_equal(c.rc_null_in_loop, BRAID_ETHREAD);
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
