/*
 * test_sleep.c — braid_sleep, braid_sleep_until, braid_sleep_forever on
 * stackful tasks, on the virtual clock: exact wake-up times, ordering of
 * sleepers, zero and negative durations, overflow, cancellation.
 */
#include "core_helpers.h"

#include <stdio.h>
#include <string.h>

#define SEC BRAID_SEC
#define MSEC BRAID_MSEC

struct sleep_ctx {
  braid_time_t t0, t1, t2, t3;
  int rc1, rc2, rc3;
  int child_ran_before_return;
  int child_ran;
};

static int sleep_exact_root(braid_task *self, void *arg) {
  struct sleep_ctx *c = arg;
  c->t0 = braid_now(self);
  c->rc1 = braid_sleep(self, 1500 * MSEC);
  c->t1 = braid_now(self);
  c->rc2 = braid_sleep(self, 1);
  c->t2 = braid_now(self);
  c->rc3 = braid_sleep_until(self, c->t0 + 10 * SEC);
  c->t3 = braid_now(self);
  return 0;
}

static void test_sleep_advances_virtual_time_by_exactly_the_duration(void **state) {
  (void)state;
  struct sleep_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual_at(sleep_exact_root, &c, 3 * SEC), 0);
  assert_int_equal(c.t0, 3 * SEC);
  assert_int_equal(c.rc1, 0);
  assert_int_equal(c.t1, c.t0 + 1500 * MSEC);
  assert_int_equal(c.rc2, 0);
  assert_int_equal(c.t2, c.t1 + 1);
  assert_int_equal(c.rc3, 0);
  assert_int_equal(c.t3, c.t0 + 10 * SEC);
}

struct zero_ctx {
  int rc_zero, rc_negative, rc_until_past, rc_zero_cancelled, rc_until_past_cancelled;
  int ran_after_zero, ran_after_negative, ran_after_until_past;
  int flags[3];
  braid_time_t elapsed;
};

static int sleep_zero_root(braid_task *self, void *arg) {
  struct zero_ctx *c = arg;
  braid_time_t t0 = braid_now(self);
  braid_group *g = open_group(self);

  CHECK_INT(braid_group_spawn(g, child_set_flag, &c->flags[0], NULL, NULL), 0);
  c->rc_zero = braid_sleep(self, 0);
  c->ran_after_zero = c->flags[0];

  CHECK_INT(braid_group_spawn(g, child_set_flag, &c->flags[1], NULL, NULL), 0);
  c->rc_negative = braid_sleep(self, -5 * SEC);
  c->ran_after_negative = c->flags[1];

  CHECK_INT(braid_group_spawn(g, child_set_flag, &c->flags[2], NULL, NULL), 0);
  c->rc_until_past = braid_sleep_until(self, t0 - SEC);
  c->ran_after_until_past = c->flags[2];

  CHECK_INT(braid_sleep(self, INT64_MIN), 0);
  CHECK_INT(braid_sleep_until(self, INT64_MIN), 0);

  c->elapsed = braid_now(self) - t0;

  braid_scope *s = enter_cancelled_scope(self);
  c->rc_zero_cancelled = braid_sleep(self, 0);
  c->rc_until_past_cancelled = braid_sleep_until(self, t0 - SEC);
  CHECK_INT(leave_scope(s, BRAID_ECANCELED, NULL), 0);

  close_group(g);
  return 0;
}

static void test_sleep_zero_negative_or_past_is_a_plain_checkpoint(void **state) {
  (void)state;
  struct zero_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual_at(sleep_zero_root, &c, 10 * SEC), 0);
  assert_int_equal(c.rc_zero, 0);
  assert_int_equal(c.rc_negative, 0);
  assert_int_equal(c.rc_until_past, 0);
  /* It yields... */
  assert_int_equal(c.ran_after_zero, 1);
  assert_int_equal(c.ran_after_negative, 1);
  assert_int_equal(c.ran_after_until_past, 1);
  /* ...takes no time... */
  assert_int_equal(c.elapsed, 0);
  /* ...and fails when cancelled. */
  assert_int_equal(c.rc_zero_cancelled, BRAID_ECANCELED);
  assert_int_equal(c.rc_until_past_cancelled, BRAID_ECANCELED);
}

struct cancelled_yield_ctx {
  int flags[2];
  int rc_sleep, rc_forever, ran_after_sleep, ran_after_forever;
};

static int cancelled_sleep_yields_root(braid_task *self, void *arg) {
  struct cancelled_yield_ctx *c = arg;
  braid_group *g = open_group(self);
  braid_scope *s = enter_cancelled_scope(self);
  CHECK_INT(braid_group_spawn(g, child_set_flag, &c->flags[0], NULL, NULL), 0);
  c->rc_sleep = braid_sleep(self, SEC);
  c->ran_after_sleep = c->flags[0];
  CHECK_INT(braid_group_spawn(g, child_set_flag, &c->flags[1], NULL, NULL), 0);
  c->rc_forever = braid_sleep_forever(self);
  c->ran_after_forever = c->flags[1];
  CHECK_INT(leave_scope(s, BRAID_ECANCELED, NULL), 0);
  close_group(g);
  return 0;
}

/* A blocking call is a checkpoint, and a checkpoint yields before it
 * fails: a cleanup loop that keeps sleeping in a cancelled scope must not
 * starve the other tasks. */
static void test_sleep_in_a_cancelled_scope_yields_before_failing(void **state) {
  (void)state;
  struct cancelled_yield_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(cancelled_sleep_yields_root, &c), 0);
  assert_int_equal(c.rc_sleep, BRAID_ECANCELED);
  assert_int_equal(c.rc_forever, BRAID_ECANCELED);
  assert_int_equal(c.ran_after_sleep, 1);
  assert_int_equal(c.ran_after_forever, 1);
}

/* ---- ordering -------------------------------------------------------- */

#define ORDER_N 5

struct order_ctx {
  braid_time_t durations[ORDER_N];
  int order[ORDER_N];
  braid_time_t woke_at[ORDER_N];
  int n;
  int next_index;
};

static int order_child(braid_task *self, void *arg) {
  struct order_ctx *c = arg;
  int me = c->next_index++;
  CHECK_INT(braid_sleep(self, c->durations[me]), 0);
  c->woke_at[c->n] = braid_now(self);
  c->order[c->n++] = me;
  return 0;
}

static int order_root(braid_task *self, void *arg) {
  struct order_ctx *c = arg;
  braid_group *g = open_group(self);
  for (int i = 0; i < ORDER_N; i++)
    CHECK_INT(braid_group_spawn(g, order_child, c, NULL, NULL), 0);
  close_group(g);
  return 0;
}

static void test_sleepers_wake_in_deadline_order_at_their_deadlines(void **state) {
  (void)state;
  struct order_ctx c;
  memset(&c, 0, sizeof c);
  braid_time_t d[ORDER_N] = {5 * SEC, 3 * SEC, 1 * SEC, 4 * SEC, 2 * SEC};
  memcpy(c.durations, d, sizeof d);
  assert_int_equal(run_virtual(order_root, &c), 0);
  assert_int_equal(c.n, ORDER_N);
  int expected[ORDER_N] = {2, 4, 1, 3, 0};
  for (int i = 0; i < ORDER_N; i++) {
    assert_int_equal(c.order[i], expected[i]);
    assert_int_equal(c.woke_at[i], (i + 1) * SEC);
  }
}

static void test_sleepers_with_equal_deadlines_wake_in_the_same_order_every_run(void **state) {
  (void)state;
  struct order_ctx first;
  memset(&first, 0, sizeof first);
  for (int i = 0; i < ORDER_N; i++)
    first.durations[i] = SEC;
  assert_int_equal(run_virtual(order_root, &first), 0);
  assert_int_equal(first.n, ORDER_N);
  for (int run = 0; run < 5; run++) {
    struct order_ctx c;
    memset(&c, 0, sizeof c);
    for (int i = 0; i < ORDER_N; i++)
      c.durations[i] = SEC;
    assert_int_equal(run_virtual(order_root, &c), 0);
    for (int i = 0; i < ORDER_N; i++) {
      assert_int_equal(c.order[i], first.order[i]);
      assert_int_equal(c.woke_at[i], SEC);
    }
  }
}

struct interleave_ctx {
  char log[16][32];
  int n;
};

static void ilog(struct interleave_ctx *c, const char *who, braid_time_t t) {
  if (CHECK(c->n < 16)) snprintf(c->log[c->n++], sizeof c->log[0], "%s@%lld", who, (long long)(t / MSEC));
}

static int interleave_a(braid_task *self, void *arg) {
  struct interleave_ctx *c = arg;
  for (int i = 0; i < 3; i++) {
    CHECK_INT(braid_sleep(self, SEC), 0);
    ilog(c, "a", braid_now(self));
  }
  return 0;
}

static int interleave_b(braid_task *self, void *arg) {
  struct interleave_ctx *c = arg;
  for (int i = 0; i < 2; i++) {
    CHECK_INT(braid_sleep(self, 1400 * MSEC), 0);
    ilog(c, "b", braid_now(self));
  }
  return 0;
}

static int interleave_root(braid_task *self, void *arg) {
  static const braid_fn children[] = {interleave_a, interleave_b};
  run_children(self, children, 2, arg);
  return 0;
}

static void test_sleep_loops_of_two_tasks_interleave_by_virtual_time(void **state) {
  (void)state;
  struct interleave_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(interleave_root, &c), 0);
  const char *expected[] = {"a@1000", "b@1400", "a@2000", "b@2800", "a@3000"};
  assert_int_equal(c.n, 5);
  for (int i = 0; i < 5; i++)
    assert_string_equal(c.log[i], expected[i]);
}

/* ---- sleep_forever, cancellation, overflow --------------------------- */

struct forever_ctx {
  scope_wait forever, huge, until_never; /* each in a 1 s move_on_after */
  int rc_after;
  braid_time_t later;
};

static int forever_root(braid_task *self, void *arg) {
  struct forever_ctx *c = arg;
  braid_scope *s = scope_wait_move_on_after(self, &c->forever, SEC);
  c->forever.rc_wait = braid_sleep_forever(self);
  scope_wait_end(self, &c->forever, s);

  /* now + INT64_MAX must saturate, not wrap into the past. */
  s = scope_wait_move_on_after(self, &c->huge, SEC);
  c->huge.rc_wait = braid_sleep(self, INT64_MAX);
  scope_wait_end(self, &c->huge, s);

  s = scope_wait_move_on_after(self, &c->until_never, SEC);
  c->until_never.rc_wait = braid_sleep_until(self, BRAID_NEVER);
  scope_wait_end(self, &c->until_never, s);
  return 0;
}

static void test_sleep_forever_and_huge_sleeps_end_only_by_cancellation(void **state) {
  (void)state;
  struct forever_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual_at(forever_root, &c, 5 * SEC), 0);
  assert_scope_wait(&c.forever, BRAID_ECANCELED, SEC, 0, 1);
  assert_scope_wait(&c.huge, BRAID_ECANCELED, SEC, 0, 1);
  assert_scope_wait(&c.until_never, BRAID_ECANCELED, SEC, 0, 1);
  assert_int_equal(c.until_never.woke_at, c.forever.t0 + 3 * SEC);
}

static int cancelled_sleep_leaves_no_timer_root(braid_task *self, void *arg) {
  struct forever_ctx *c = arg;
  braid_scope *s = scope_wait_move_on_after(self, &c->forever, SEC);
  c->forever.rc_wait = braid_sleep(self, 10 * SEC); /* cancelled at 1 s */
  scope_wait_end(self, &c->forever, s);
  /* The abandoned 10 s timer must not end this sleep early. */
  c->rc_after = braid_sleep(self, 20 * SEC);
  c->later = braid_now(self);
  return 0;
}

static void test_cancelled_sleep_leaves_no_stale_wakeup(void **state) {
  (void)state;
  struct forever_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(cancelled_sleep_leaves_no_timer_root, &c), 0);
  assert_scope_wait(&c.forever, BRAID_ECANCELED, SEC, 0, 1);
  assert_int_equal(c.rc_after, 0);
  assert_int_equal(c.later, c.forever.t0 + 21 * SEC);
}

/* ---- errors ---------------------------------------------------------- */

static void sleeps_of_a_task_not_running(braid_task *self, braid_task *child, void *arg) {
  (void)self;
  refusals *r = arg;
  r->on_child[0] = braid_sleep(child, SEC);
  r->on_child[1] = braid_sleep_until(child, SEC);
  r->on_child[2] = braid_sleep_forever(child);
}

static int sleep_errors_root(braid_task *self, void *arg) {
  refusals *r = arg;
  r->on_null[0] = braid_sleep(NULL, SEC);
  r->on_null[1] = braid_sleep_until(NULL, SEC);
  r->on_null[2] = braid_sleep_forever(NULL);
  r->child_rc = with_sleeping_child(self, sleeps_of_a_task_not_running, r);
  return 0;
}

static void test_sleep_with_null_on_a_loop_thread_or_a_task_not_running_is_refused(void **state) {
  (void)state;
  refusals r;
  memset(&r, 0, sizeof r);
  assert_int_equal(run_virtual(sleep_errors_root, &r), 0);
  /* NULL means "the calling plain thread", which a loop's thread is not */
  assert_refusals(&r, BRAID_ETHREAD);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_sleep_advances_virtual_time_by_exactly_the_duration),
      BT(test_sleep_zero_negative_or_past_is_a_plain_checkpoint),
      BT(test_sleep_in_a_cancelled_scope_yields_before_failing),
      BT(test_sleepers_wake_in_deadline_order_at_their_deadlines),
      BT(test_sleepers_with_equal_deadlines_wake_in_the_same_order_every_run),
      BT(test_sleep_loops_of_two_tasks_interleave_by_virtual_time),
      BT(test_sleep_forever_and_huge_sleeps_end_only_by_cancellation),
      BT(test_cancelled_sleep_leaves_no_stale_wakeup),
      BT(test_sleep_with_null_on_a_loop_thread_or_a_task_not_running_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
