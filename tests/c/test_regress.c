/*
 * test_regress.c — misuse and ordering cases found in review, each of which
 * once corrupted memory or broke the structured-concurrency guarantee.
 */
#include "core_helpers.h"

#include <string.h>

/* ---- a group closed to new arrivals once its close has nothing left ---- */

struct late_ctx {
  braid_group *g;
  int rc_spawn;
  size_t alive_after_close;
};

static int sleeps_then_fails(braid_task *self, void *arg) {
  (void)arg;
  braid_sleep(self, BRAID_SEC);
  return 42;
}

static int late_spawner(braid_task *self, void *arg) {
  (void)self;
  struct late_ctx *c = arg;
  c->rc_spawn = braid_group_spawn(c->g, sleeps_then_fails, NULL, NULL, NULL);
  return 0;
}

static int late_root(braid_task *self, void *arg) {
  struct late_ctx *c = arg;
  braid_group *outer = open_group(self);
  CHECK_INT(braid_group_open(self, &c->g), 0);
  CHECK_INT(braid_group_spawn(outer, late_spawner, c, NULL, NULL), 0); /* runs during g's close */
  CHECK_INT(braid_group_close(c->g, 0), 0);
  c->alive_after_close = braid_group_child_count(c->g);
  CHECK_INT(braid_group_free(c->g), 0);
  close_group(outer);
  return 0;
}

static void test_regress_spawn_into_a_group_whose_close_has_nothing_left_is_estate(void **state) {
  (void)state;
  struct late_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(late_root, &c), 0);
  assert_int_equal(c.rc_spawn, BRAID_ESTATE);
  assert_int_equal(c.alive_after_close, 0);
}

/* ---- freeing twice is refused, not a corrupted cache ---- */

static int double_free_root(braid_task *self, void *arg) {
  int *rc = arg;
  braid_group *g = open_group(self);
  close_group(g); /* closed and freed */
  rc[0] = braid_group_free(g);
  braid_scope *s = new_scope(BRAID_NEVER, 0);
  CHECK_INT(braid_scope_unref(s), 0);
  rc[1] = braid_scope_unref(s);
  return 0;
}

static void test_regress_second_free_of_a_group_or_scope_is_estate(void **state) {
  (void)state;
  int rc[2] = {0, 0};
  assert_int_equal(run_virtual(double_free_root, rc), 0);
  assert_int_equal(rc[0], BRAID_ESTATE);
  assert_int_equal(rc[1], BRAID_ESTATE);
}

/* ---- a stepped body that returns with a wait still registered ---- */

struct pend_ctx {
  int step_calls;
  int rc_wait;
};

static int returns_while_waiting(braid_task *self, void *ctx, int resume) {
  (void)resume;
  struct pend_ctx *c = ctx;
  c->step_calls++;
  c->rc_wait = braid_sleep(self, BRAID_SEC); /* BRAID_EPENDING */
  return 0;                                  /* misuse: a final result anyway */
}

static int pend_root(braid_task *self, void *arg) {
  struct pend_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn_stepped(g, returns_while_waiting, c, NULL, NULL), 0);
  group_result r = close_and_free_group(g, 0);
  CHECK_INT(r.rc_close, BRAID_EFAILED);
  CHECK_INT(r.nfail, 1);
  CHECK_INT(r.code, BRAID_ESTATE);
  CHECK_INT(braid_now(self), 0); /* its sleep was cancelled, not waited for */
  return 0;
}

static void test_regress_stepped_body_returning_with_a_wait_registered_ends_with_estate(void **state) {
  (void)state;
  struct pend_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(pend_root, &c), 0);
  assert_int_equal(c.rc_wait, BRAID_EPENDING);
  assert_int_equal(c.step_calls, 1); /* never stepped again */
}

/* ---- scope calls by a stepped task with a wait registered are refused ---- */

struct busy_ctx {
  braid_scope *s;
  int rc_exit, rc_enter, stage;
};

static int exits_while_waiting(braid_task *self, void *ctx, int resume) {
  (void)resume;
  struct busy_ctx *c = ctx;
  if (c->stage++ == 0) {
    c->s = enter_new_scope(self, BRAID_NEVER, 0);
    CHECK_INT(braid_sleep(self, BRAID_MSEC), BRAID_EPENDING);
    c->rc_exit = braid_scope_exit(c->s, 0); /* refused: a wait is registered */
    braid_scope *other = new_scope(BRAID_NEVER, 0);
    c->rc_enter = braid_scope_enter(self, other);
    CHECK_INT(braid_scope_unref(other), 0);
    return BRAID_EPENDING;
  }
  CHECK_INT(leave_scope(c->s, 0, NULL), 0);
  return 0;
}

static void test_regress_stepped_task_cannot_enter_or_exit_scopes_while_waiting(void **state) {
  (void)state;
  struct busy_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(exits_while_waiting, &c), 0);
  assert_int_equal(c.rc_exit, BRAID_ESTATE);
  assert_int_equal(c.rc_enter, BRAID_ESTATE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_regress_spawn_into_a_group_whose_close_has_nothing_left_is_estate),
      BT(test_regress_second_free_of_a_group_or_scope_is_estate),
      BT(test_regress_stepped_body_returning_with_a_wait_registered_ends_with_estate),
      BT(test_regress_stepped_task_cannot_enter_or_exit_scopes_while_waiting),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
