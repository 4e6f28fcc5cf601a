/*
 * test_start.c — braid_group_start / braid_task_started with stackful
 * callers and children (AnyIO's TaskGroup.start): the started value, a
 * failure before started (code and payload), returning without started,
 * started twice, cancelling the start, the scopes a child runs under before
 * and after started, failures after started going to the group.
 */
#include "core_helpers.h"

#include <string.h>

#define SEC BRAID_SEC

/* ---- the started value ----------------------------------------------- */

struct start_ctx {
  int value_storage;
  int rc_start, rc_started, rc_started_again;
  void *value;
  braid_time_t started_at, child_done_at, closed_at;
  size_t children_after_start;
  int child_done;
  group_result r; /* what the group left once closed */
};

static int ready_after_two_seconds(braid_task *self, void *arg) {
  struct start_ctx *c = arg;
  CHECK_INT(braid_sleep(self, 2 * SEC), 0);
  c->rc_started = braid_task_started(self, &c->value_storage);
  CHECK_INT(braid_sleep(self, 3 * SEC), 0);
  c->child_done = 1;
  c->child_done_at = braid_now(self);
  return 0;
}

static int start_value_root(braid_task *self, void *arg) {
  struct start_ctx *c = arg;
  braid_group *g = open_group(self);
  c->rc_start = braid_group_start(g, self, ready_after_two_seconds, c, NULL, &c->value);
  c->started_at = braid_now(self);
  c->children_after_start = braid_group_child_count(g);
  c->r = close_and_free_group(g, 0);
  c->closed_at = braid_now(self);
  return 0;
}

static void test_start_returns_the_started_value_when_the_child_is_ready(void **state) {
  (void)state;
  struct start_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(start_value_root, &c), 0);
  assert_int_equal(c.rc_start, 0);
  assert_int_equal(c.rc_started, 0);
  assert_ptr_equal(c.value, &c.value_storage);
  assert_int_equal(c.started_at, 2 * SEC);
  /* The child keeps running in the group after started. */
  assert_int_equal(c.children_after_start, 1);
  assert_int_equal(c.child_done, 1);
  assert_int_equal(c.child_done_at, 5 * SEC);
  assert_int_equal(c.closed_at, 5 * SEC);
  assert_int_equal(c.r.rc_close, 0);
  assert_int_equal(c.r.nfail, 0);
}

static int ready_at_once(braid_task *self, void *arg) {
  struct start_ctx *c = arg;
  c->rc_started = braid_task_started(self, NULL);
  return 0;
}

static int start_null_value_root(braid_task *self, void *arg) {
  struct start_ctx *c = arg;
  braid_group *g = open_group(self);
  c->rc_start = braid_group_start(g, self, ready_at_once, c, NULL, NULL);
  c->r = close_and_free_group(g, 0);
  return 0;
}

static void test_start_accepts_a_null_value_pointer(void **state) {
  (void)state;
  struct start_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(start_null_value_root, &c), 0);
  assert_int_equal(c.rc_start, 0);
  assert_int_equal(c.rc_started, 0);
  assert_int_equal(c.r.rc_close, 0);
}

/* ---- failure before started ------------------------------------------- */

struct early_fail_ctx {
  tpayload p;
  int with_value;
  int code; /* what the child fails with */
  int rc_start, dtor_after_start;
  void *value;
  group_result r;
};

static int fail_before_started(braid_task *self, void *arg) {
  struct early_fail_ctx *c = arg;
  CHECK_INT(braid_sleep(self, SEC), 0);
  if (c->code == 0) return 0; /* returns without calling started */
  return braid_task_fail(self, c->code, &c->p, tpayload_dtor);
}

static int early_fail_root(braid_task *self, void *arg) {
  struct early_fail_ctx *c = arg;
  braid_group *g = open_group(self);
  c->value = &c->value; /* must be overwritten */
  c->rc_start = braid_group_start(g, self, fail_before_started, c, NULL, c->with_value ? &c->value : NULL);
  c->dtor_after_start = c->p.dtor_calls;
  c->r = close_and_free_group(g, 0);
  return 0;
}

/* The child sleeps 1 s and fails with `code` (0: returns without started). */
static void run_early_fail(struct early_fail_ctx *c, int with_value, int code) {
  memset(c, 0, sizeof *c);
  c->with_value = with_value;
  c->code = code;
  assert_int_equal(run_virtual(early_fail_root, c), 0);
}

static void test_start_returns_the_childs_failure_and_payload_from_before_started(void **state) {
  (void)state;
  struct early_fail_ctx c;
  run_early_fail(&c, 1, 21);
  assert_int_equal(c.rc_start, 21);
  assert_ptr_equal(c.value, &c.p); /* the caller now owns the payload */
  assert_int_equal(c.dtor_after_start, 0);
  assert_int_equal(c.p.dtor_calls, 0); /* and the group never destroys it */
  assert_int_equal(c.r.rc_close, 0);   /* the failure went to start, not the group */
  assert_int_equal(c.r.nfail, 0);
  tpayload_dtor(c.value);
  assert_int_equal(c.p.dtor_calls, 1);
}

static void test_start_without_value_pointer_destroys_the_early_payload(void **state) {
  (void)state;
  struct early_fail_ctx c;
  run_early_fail(&c, 0, 22);
  assert_int_equal(c.rc_start, 22);
  assert_int_equal(c.dtor_after_start, 1);
  assert_int_equal(c.p.dtor_calls, 1);
  assert_int_equal(c.r.rc_close, 0);
  assert_int_equal(c.r.nfail, 0);
}

static void test_start_of_a_child_returning_without_started_is_estate(void **state) {
  (void)state;
  struct early_fail_ctx c;
  run_early_fail(&c, 1, 0);
  assert_int_equal(c.rc_start, BRAID_ESTATE);
  assert_int_equal(c.r.rc_close, 0);
  assert_int_equal(c.r.nfail, 0);
  assert_int_equal(c.p.dtor_calls, 0);
}

static int plain_return_positive(braid_task *self, void *arg) {
  (void)self;
  (void)arg;
  return 4;
}

static int early_positive_root(braid_task *self, void *arg) {
  struct early_fail_ctx *c = arg;
  braid_group *g = open_group(self);
  c->value = &c->value;
  c->rc_start = braid_group_start(g, self, plain_return_positive, c, NULL, &c->value);
  c->r = close_and_free_group(g, 0);
  return 0;
}

static void test_start_returns_a_plain_failure_result_of_the_child(void **state) {
  (void)state;
  struct early_fail_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(early_positive_root, &c), 0);
  assert_int_equal(c.rc_start, 4);
  assert_int_equal(c.r.rc_close, 0);
  assert_int_equal(c.r.nfail, 0);
}

/* ---- started twice, started on a spawned task ------------------------ */

static int started_twice(braid_task *self, void *arg) {
  struct start_ctx *c = arg;
  c->rc_started = braid_task_started(self, &c->value_storage);
  c->rc_started_again = braid_task_started(self, NULL);
  return 0;
}

static int started_twice_root(braid_task *self, void *arg) {
  struct start_ctx *c = arg;
  braid_group *g = open_group(self);
  c->rc_start = braid_group_start(g, self, started_twice, c, NULL, &c->value);
  c->r = close_and_free_group(g, 0);
  return 0;
}

static void test_start_started_twice_is_estate_for_the_second_call(void **state) {
  (void)state;
  struct start_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(started_twice_root, &c), 0);
  assert_int_equal(c.rc_started, 0);
  assert_int_equal(c.rc_started_again, BRAID_ESTATE);
  assert_int_equal(c.rc_start, 0);
  assert_ptr_equal(c.value, &c.value_storage);
  assert_int_equal(c.r.rc_close, 0);
}

static int spawned_started_root(braid_task *self, void *arg) {
  struct start_ctx *c = arg;
  c->r = run_in_group(self, started_twice, c);
  return 0;
}

static void test_started_on_a_spawned_task_does_nothing(void **state) {
  (void)state;
  struct start_ctx c;
  memset(&c, 0, sizeof c);
  c.rc_started = c.rc_started_again = 1;
  assert_int_equal(run_virtual(spawned_started_root, &c), 0);
  assert_int_equal(c.rc_started, 0);
  assert_int_equal(c.rc_started_again, 0);
  assert_int_equal(c.r.rc_close, 0);
  assert_int_equal(braid_task_started(NULL, NULL), BRAID_EINVAL);
}

/* ---- cancelling a start ------------------------------------------------ */

struct cancel_start_ctx {
  int rc_child_wait, rc_start, rc_exit, caught, child_cleanup_done;
  group_result r;
  braid_time_t start_returned_at, cleanup_done_at;
};

static int slow_to_start(braid_task *self, void *arg) {
  struct cancel_start_ctx *c = arg;
  c->rc_child_wait = braid_sleep_forever(self);
  /* Cleanup that takes time: start must wait for it. */
  CHECK_INT(shielded_sleep(self, SEC), 0);
  c->child_cleanup_done = 1;
  c->cleanup_done_at = braid_now(self);
  return c->rc_child_wait;
}

static int cancel_start_root(braid_task *self, void *arg) {
  struct cancel_start_ctx *c = arg;
  braid_group *g = open_group(self);
  braid_scope *s = NULL;
  CHECK_INT(braid_move_on_after(self, SEC, &s), 0);
  void *v = NULL;
  c->rc_start = braid_group_start(g, self, slow_to_start, c, NULL, &v);
  c->start_returned_at = braid_now(self);
  c->rc_exit = leave_scope(s, c->rc_start, &c->caught);
  c->r = close_and_free_group(g, 0);
  return 0;
}

static void test_start_cancelled_cancels_the_child_and_waits_for_it(void **state) {
  (void)state;
  struct cancel_start_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(cancel_start_root, &c), 0);
  assert_int_equal(c.rc_child_wait, BRAID_ECANCELED);
  assert_int_equal(c.child_cleanup_done, 1);
  assert_int_equal(c.cleanup_done_at, 2 * SEC);
  assert_int_equal(c.rc_start, BRAID_ECANCELED);
  assert_int_equal(c.start_returned_at, 2 * SEC);
  assert_int_equal(c.rc_exit, 0);
  assert_int_equal(c.caught, 1);
  assert_int_equal(c.r.rc_close, 0);
  assert_int_equal(c.r.nfail, 0);
}

struct cancelled_caller_ctx {
  int rc_start, rc_child_sleep, rc_cp_after, rc_exit, value_storage;
  void *value;
  braid_time_t child_done_at;
};

static int started_before_any_checkpoint(braid_task *self, void *arg) {
  struct cancelled_caller_ctx *c = arg;
  CHECK_INT(braid_task_started(self, &c->value_storage), 0);
  /* Now in the group, out of the caller's cancelled scope. */
  c->rc_child_sleep = braid_sleep(self, SEC);
  c->child_done_at = braid_now(self);
  return c->rc_child_sleep;
}

static int cancelled_caller_root(braid_task *self, void *arg) {
  struct cancelled_caller_ctx *c = arg;
  braid_group *g = open_group(self);
  braid_scope *s = enter_cancelled_scope(self);
  c->rc_start = braid_group_start(g, self, started_before_any_checkpoint, c, NULL, &c->value);
  c->rc_cp_after = braid_checkpoint(self);
  c->rc_exit = leave_scope(s, c->rc_cp_after, NULL);
  close_group(g);
  return 0;
}

/* As in Trio: a child that reaches started before any checkpoint is not
 * cancelled by the caller's cancelled scope, and start hands back its
 * value; the cancellation stays for the caller's next checkpoint. */
static void test_start_in_a_cancelled_caller_returns_the_value_of_a_child_started_at_once(void **state) {
  (void)state;
  struct cancelled_caller_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(cancelled_caller_root, &c), 0);
  assert_int_equal(c.rc_start, 0);
  assert_ptr_equal(c.value, &c.value_storage);
  assert_int_equal(c.rc_child_sleep, 0);
  assert_int_equal(c.child_done_at, SEC);
  assert_int_equal(c.rc_cp_after, BRAID_ECANCELED);
  assert_int_equal(c.rc_exit, 0);
}

/* ---- scopes before and after started ---------------------------------- */

struct scopes_ctx {
  braid_time_t deadline_before, deadline_after, child_done_at, closed_at;
  int rc_child_sleep, rc_start, rc_exit;
};

static int scope_moving_child(braid_task *self, void *arg) {
  struct scopes_ctx *c = arg;
  c->deadline_before = braid_current_effective_deadline(self);
  CHECK_INT(braid_task_started(self, NULL), 0);
  CHECK_INT(braid_checkpoint(self), 0);
  c->deadline_after = braid_current_effective_deadline(self);
  /* Now in the group: the starter's 5 s scope no longer applies. */
  c->rc_child_sleep = braid_sleep(self, 10 * SEC);
  c->child_done_at = braid_now(self);
  return c->rc_child_sleep;
}

static int scopes_root(braid_task *self, void *arg) {
  struct scopes_ctx *c = arg;
  braid_group *g = open_group(self);
  braid_scope *s = NULL;
  CHECK_INT(braid_move_on_after(self, 5 * SEC, &s), 0);
  c->rc_start = braid_group_start(g, self, scope_moving_child, c, NULL, NULL);
  c->rc_exit = leave_scope(s, braid_sleep_forever(self), NULL);
  CHECK_INT(braid_group_close(g, 0), 0);
  c->closed_at = braid_now(self);
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_start_child_runs_under_the_callers_scopes_until_started(void **state) {
  (void)state;
  struct scopes_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(scopes_root, &c), 0);
  assert_int_equal(c.rc_start, 0);
  assert_int_equal(c.deadline_before, 5 * SEC);
  assert_int_equal(c.deadline_after, BRAID_NEVER);
  assert_int_equal(c.rc_exit, 0);
  assert_int_equal(c.rc_child_sleep, 0);
  assert_int_equal(c.child_done_at, 10 * SEC);
  assert_int_equal(c.closed_at, 10 * SEC);
}

/* ---- failure after started goes to the group -------------------------- */

struct late_fail_ctx {
  int rc_start, rc_sibling;
  group_result r;
  uint64_t child_id;
};

static int fail_after_started(braid_task *self, void *arg) {
  struct late_fail_ctx *c = arg;
  c->child_id = braid_task_id(self);
  CHECK_INT(braid_task_started(self, NULL), 0);
  CHECK_INT(braid_sleep(self, SEC), 0);
  return 9;
}

static int late_fail_root(braid_task *self, void *arg) {
  struct late_fail_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, child_sleep_forever, &c->rc_sibling, NULL, NULL), 0);
  c->rc_start = braid_group_start(g, self, fail_after_started, c, NULL, NULL);
  c->r = close_and_free_group(g, 0);
  return 0;
}

static void test_start_child_failure_after_started_goes_to_the_group(void **state) {
  (void)state;
  struct late_fail_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(late_fail_root, &c), 0);
  assert_int_equal(c.rc_start, 0);
  assert_int_equal(c.r.rc_close, BRAID_EFAILED);
  assert_int_equal(c.r.nfail, 1);
  assert_int_equal(c.r.code, 9);
  assert_int_equal(c.r.tid, c.child_id);
  assert_int_equal(c.rc_sibling, BRAID_ECANCELED);
}

/* ---- a start from another task of the loop ---------------------------- */

struct other_caller_ctx {
  braid_group *g;
  int rc_start, value_storage;
  void *value;
};

static int ready_with_value(braid_task *self, void *arg) {
  struct other_caller_ctx *c = arg;
  CHECK_INT(braid_sleep(self, SEC), 0);
  CHECK_INT(braid_task_started(self, &c->value_storage), 0);
  return 0;
}

static int starter_child(braid_task *self, void *arg) {
  struct other_caller_ctx *c = arg;
  c->rc_start = braid_group_start(c->g, self, ready_with_value, c, NULL, &c->value);
  return 0;
}

static int other_caller_root(braid_task *self, void *arg) {
  struct other_caller_ctx *c = arg;
  c->g = open_group(self);
  braid_group *helpers = open_group(self);
  CHECK_INT(braid_group_spawn(helpers, starter_child, c, NULL, NULL), 0);
  close_group(helpers);
  close_group(c->g);
  return 0;
}

static void test_start_may_be_called_by_any_task_of_the_loop(void **state) {
  (void)state;
  struct other_caller_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(other_caller_root, &c), 0);
  assert_int_equal(c.rc_start, 0);
  assert_ptr_equal(c.value, &c.value_storage);
}

/* ---- a stepped child started from a stackful caller ------------------- */

struct stepped_child_ctx {
  co_state co;
  int value_storage;
  void *value;
  int rc_start;
};

static int stepped_ready_after_sleep(braid_task *self, void *ctx, int resume) {
  struct stepped_child_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    AWAIT(&c->co, braid_sleep(self, SEC));
    CHECK_INT(c->co.rc, 0);
    CHECK_INT(braid_task_started(self, &c->value_storage), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static int start_stepped_root(braid_task *self, void *arg) {
  struct stepped_child_ctx *c = arg;
  braid_group *g = open_group(self);
  c->rc_start = braid_group_start_stepped(g, self, stepped_ready_after_sleep, c, NULL, &c->value);
  close_group(g);
  return 0;
}

static void test_start_stepped_child_from_a_stackful_caller(void **state) {
  (void)state;
  struct stepped_child_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(start_stepped_root, &c), 0);
  assert_int_equal(c.rc_start, 0);
  assert_ptr_equal(c.value, &c.value_storage);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_start_returns_the_started_value_when_the_child_is_ready),
      BT(test_start_accepts_a_null_value_pointer),
      BT(test_start_returns_the_childs_failure_and_payload_from_before_started),
      BT(test_start_without_value_pointer_destroys_the_early_payload),
      BT(test_start_of_a_child_returning_without_started_is_estate),
      BT(test_start_returns_a_plain_failure_result_of_the_child),
      BT(test_start_started_twice_is_estate_for_the_second_call),
      BT(test_started_on_a_spawned_task_does_nothing),
      BT(test_start_cancelled_cancels_the_child_and_waits_for_it),
      BT(test_start_in_a_cancelled_caller_returns_the_value_of_a_child_started_at_once),
      BT(test_start_child_runs_under_the_callers_scopes_until_started),
      BT(test_start_child_failure_after_started_goes_to_the_group),
      BT(test_start_may_be_called_by_any_task_of_the_loop),
      BT(test_start_stepped_child_from_a_stackful_caller),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
