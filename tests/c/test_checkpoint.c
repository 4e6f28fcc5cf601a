/*
 * test_checkpoint.c — the three checkpoints: braid_checkpoint (yield, then
 * fail if cancelled), braid_checkpoint_if_cancelled (fail if cancelled, no
 * yield) and braid_cancel_shielded_checkpoint (yield, never fail), plus
 * braid_task_cancelled, on stackful tasks.
 */
#include "core_helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define LOG_MAX 64

struct log {
  char entries[LOG_MAX][8];
  int n;
};

static void log_add(struct log *l, const char *s) {
  if (CHECK(l->n < LOG_MAX)) {
    snprintf(l->entries[l->n], sizeof l->entries[0], "%s", s);
    l->n++;
  }
}

static int log_index(const struct log *l, const char *s) {
  for (int i = 0; i < l->n; i++)
    if (strcmp(l->entries[i], s) == 0) return i;
  return -1;
}

/* ---- yielding -------------------------------------------------------- */

struct yield_ctx {
  struct log log;
  const char *names[2];
  int which;
};

static int yield_child(braid_task *self, void *arg) {
  struct yield_ctx *c = arg;
  const char *name = c->names[c->which++];
  char e[8];
  for (int round = 1; round <= 3; round++) {
    snprintf(e, sizeof e, "%s%d", name, round);
    log_add(&c->log, e);
    CHECK_INT(braid_checkpoint(self), 0);
  }
  return 0;
}

static int yield_root(braid_task *self, void *arg) {
  static const braid_fn children[] = {yield_child, yield_child};
  run_children(self, children, 2, arg);
  return 0;
}

static void test_checkpoint_yields_to_other_ready_tasks(void **state) {
  (void)state;
  struct yield_ctx c;
  memset(&c, 0, sizeof c);
  c.names[0] = "a";
  c.names[1] = "b";
  assert_int_equal(run_virtual(yield_root, &c), 0);
  assert_int_equal(c.log.n, 6);
  /* Each round of one task happens before the next round of the other:
   * the two interleave instead of one running to completion. */
  for (int round = 1; round <= 2; round++) {
    char a[8], b[8], a_next[8], b_next[8];
    snprintf(a, sizeof a, "a%d", round);
    snprintf(b, sizeof b, "b%d", round);
    snprintf(a_next, sizeof a_next, "a%d", round + 1);
    snprintf(b_next, sizeof b_next, "b%d", round + 1);
    assert_true(log_index(&c.log, a) < log_index(&c.log, b_next));
    assert_true(log_index(&c.log, b) < log_index(&c.log, a_next));
  }
}

struct child_ran_ctx {
  int child_ran;
  int ran_after_if_cancelled, ran_after_checkpoint, ran_after_shielded, ran_after_group_spawn;
  int rc_if_cancelled, rc_checkpoint, rc_shielded;
};

static int if_cancelled_no_yield_root(braid_task *self, void *arg) {
  struct child_ran_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, child_set_flag, &c->child_ran, NULL, NULL), 0);
  c->ran_after_group_spawn = c->child_ran;
  c->rc_if_cancelled = braid_checkpoint_if_cancelled(self);
  c->ran_after_if_cancelled = c->child_ran;
  c->rc_checkpoint = braid_checkpoint(self);
  c->ran_after_checkpoint = c->child_ran;
  close_group(g);
  return 0;
}

static void test_checkpoint_if_cancelled_does_not_yield(void **state) {
  (void)state;
  struct child_ran_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(if_cancelled_no_yield_root, &c), 0);
  assert_int_equal(c.ran_after_group_spawn, 0); /* children start at the next switch */
  assert_int_equal(c.rc_if_cancelled, 0);
  assert_int_equal(c.ran_after_if_cancelled, 0);
  assert_int_equal(c.rc_checkpoint, 0);
  assert_int_equal(c.ran_after_checkpoint, 1);
}

static int shielded_checkpoint_root(braid_task *self, void *arg) {
  struct child_ran_ctx *c = arg;
  braid_scope *s = enter_new_scope(self, BRAID_NEVER, 0);
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, child_set_flag, &c->child_ran, NULL, NULL), 0);
  CHECK_INT(braid_scope_cancel(s), 0);
  c->rc_shielded = braid_cancel_shielded_checkpoint(self);
  c->ran_after_shielded = c->child_ran;
  c->rc_if_cancelled = braid_checkpoint_if_cancelled(self);
  c->rc_checkpoint = braid_checkpoint(self);
  /* The child finished without failing; the outer cancel propagates. */
  int rc = braid_group_close(g, c->rc_checkpoint);
  CHECK_INT(rc, BRAID_ECANCELED);
  CHECK_INT(braid_group_free(g), 0);
  CHECK_INT(leave_scope(s, rc, NULL), 0);
  return 0;
}

static void test_cancel_shielded_checkpoint_yields_but_never_fails(void **state) {
  (void)state;
  struct child_ran_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(shielded_checkpoint_root, &c), 0);
  assert_int_equal(c.rc_shielded, 0);
  assert_int_equal(c.ran_after_shielded, 1);
  assert_int_equal(c.rc_if_cancelled, BRAID_ECANCELED);
  assert_int_equal(c.rc_checkpoint, BRAID_ECANCELED);
}

/* ---- level-triggered delivery ---------------------------------------- */

struct level_ctx {
  int results[6];
  int cancelled_flags[3];
  int rc_exit;
};

static int level_root(braid_task *self, void *arg) {
  struct level_ctx *c = arg;
  braid_scope *s = enter_new_scope(self, BRAID_NEVER, 0);
  c->cancelled_flags[0] = braid_task_cancelled(self);
  CHECK_INT(braid_scope_cancel(s), 0);
  c->cancelled_flags[1] = braid_task_cancelled(self);
  /* Neither failure "consumes" the cancellation. */
  c->results[0] = braid_checkpoint(self);
  c->results[1] = braid_checkpoint_if_cancelled(self);
  c->results[2] = braid_checkpoint(self);
  c->results[3] = braid_cancel_shielded_checkpoint(self);
  c->results[4] = braid_checkpoint_if_cancelled(self);
  c->results[5] = braid_sleep(self, 0);
  c->rc_exit = braid_scope_exit(s, BRAID_ECANCELED);
  c->cancelled_flags[2] = braid_task_cancelled(self);
  CHECK_INT(braid_scope_unref(s), 0);
  return 0;
}

static void test_checkpoints_keep_failing_while_inside_a_cancelled_scope(void **state) {
  (void)state;
  struct level_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(level_root, &c), 0);
  assert_int_equal(c.cancelled_flags[0], 0);
  assert_int_equal(c.cancelled_flags[1], 1);
  assert_int_equal(c.results[0], BRAID_ECANCELED);
  assert_int_equal(c.results[1], BRAID_ECANCELED);
  assert_int_equal(c.results[2], BRAID_ECANCELED);
  assert_int_equal(c.results[3], 0);
  assert_int_equal(c.results[4], BRAID_ECANCELED);
  assert_int_equal(c.results[5], BRAID_ECANCELED);
  assert_int_equal(c.rc_exit, 0);
  assert_int_equal(c.cancelled_flags[2], 0);
}

/* ---- a cancel arriving while the task waits in a checkpoint ---------- */

struct pending_cancel_ctx {
  braid_scope *scope;
  int rc_cp_when_cancelled_meanwhile;
  int cancelled_seen_by_other;
};

static int cancel_scope_child(braid_task *self, void *arg) {
  struct pending_cancel_ctx *c = arg;
  (void)self;
  CHECK_INT(braid_scope_cancel(c->scope), 0);
  c->cancelled_seen_by_other = 1;
  return 0;
}

static int cancel_during_yield_root(braid_task *self, void *arg) {
  struct pending_cancel_ctx *c = arg;
  c->scope = new_scope(BRAID_NEVER, 0);
  braid_group *g = open_group(self);
  CHECK_INT(braid_scope_enter(self, c->scope), 0);
  CHECK_INT(braid_group_spawn(g, cancel_scope_child, c, NULL, NULL), 0);
  /* The child runs during this yield and cancels our scope: the
   * checkpoint fails after the yield. */
  c->rc_cp_when_cancelled_meanwhile = braid_checkpoint(self);
  CHECK_INT(braid_scope_exit(c->scope, c->rc_cp_when_cancelled_meanwhile), 0);
  close_group(g);
  CHECK_INT(braid_scope_unref(c->scope), 0);
  return 0;
}

static void test_checkpoint_fails_when_cancelled_during_its_yield(void **state) {
  (void)state;
  struct pending_cancel_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(cancel_during_yield_root, &c), 0);
  assert_int_equal(c.cancelled_seen_by_other, 1);
  assert_int_equal(c.rc_cp_when_cancelled_meanwhile, BRAID_ECANCELED);
}

/* ---- argument and state errors ---------------------------------------- */

static void checkpoints_of_a_task_not_running(braid_task *self, braid_task *child, void *arg) {
  (void)self;
  refusals *r = arg;
  r->on_child[0] = braid_checkpoint(child);
  r->on_child[1] = braid_checkpoint_if_cancelled(child);
  r->on_child[2] = braid_cancel_shielded_checkpoint(child);
}

static int cp_errors_root(braid_task *self, void *arg) {
  refusals *r = arg;
  r->on_null[0] = braid_checkpoint(NULL);
  r->on_null[1] = braid_checkpoint_if_cancelled(NULL);
  r->on_null[2] = braid_cancel_shielded_checkpoint(NULL);
  r->child_rc = with_sleeping_child(self, checkpoints_of_a_task_not_running, r);
  return 0;
}

static void test_checkpoints_reject_null_and_a_task_that_is_not_running(void **state) {
  (void)state;
  refusals r;
  memset(&r, 0, sizeof r);
  assert_int_equal(run_virtual(cp_errors_root, &r), 0);
  assert_refusals(&r, BRAID_EINVAL);
}

/* ---- busy tasks do not starve timers or other threads (real clock) ---- */

struct starve_ctx {
  braid_scope *scope;      /* the sleeper's scope, cancelled by a thread */
  braid_scope *thread_ref; /* the thread's reference */
  atomic_int woke;
  int rc_sleep;
  long spins;
  int64_t elapsed;
};

static int spinner(braid_task *self, void *arg) {
  struct starve_ctx *c = arg;
  int64_t r0 = real_ns();
  /* Bounded so that a starving scheduler fails the test, not hangs it. */
  while (!atomic_load(&c->woke) && real_ns() - r0 < 5 * BRAID_SEC) {
    CHECK_INT(braid_checkpoint(self), 0);
    c->spins++;
  }
  c->elapsed = real_ns() - r0;
  return 0;
}

static int timed_sleeper(braid_task *self, void *arg) {
  struct starve_ctx *c = arg;
  c->rc_sleep = braid_sleep(self, 10 * BRAID_MSEC);
  atomic_store(&c->woke, 1);
  return 0;
}

static int timer_starve_root(braid_task *self, void *arg) {
  static const braid_fn children[] = {timed_sleeper, spinner};
  run_children(self, children, 2, arg);
  return 0;
}

static void test_checkpoint_loop_does_not_starve_expired_timers(void **state) {
  (void)state;
  struct starve_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(timer_starve_root, &c), 0);
  assert_int_equal(atomic_load(&c.woke), 1);
  assert_int_equal(c.rc_sleep, 0);
  assert_true(c.spins > 0);
  assert_true(c.elapsed < 5 * BRAID_SEC);
}

static void *cancel_after_10ms(void *arg) {
  struct starve_ctx *c = arg;
  os_sleep_ns(10 * BRAID_MSEC);
  braid_scope_cancel(c->thread_ref);
  braid_scope_unref(c->thread_ref);
  return NULL;
}

static int scoped_sleeper(braid_task *self, void *arg) {
  struct starve_ctx *c = arg;
  CHECK_INT(braid_scope_enter(self, c->scope), 0);
  c->rc_sleep = braid_sleep_forever(self);
  atomic_store(&c->woke, 1);
  return braid_scope_exit(c->scope, c->rc_sleep);
}

static int thread_starve_root(braid_task *self, void *arg) {
  struct starve_ctx *c = arg;
  CHECK_INT(braid_scope_new(BRAID_NEVER, 0, &c->scope), 0);
  c->thread_ref = braid_scope_ref(c->scope);
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, scoped_sleeper, c, NULL, NULL), 0);
  CHECK_INT(braid_group_spawn(g, spinner, c, NULL, NULL), 0);
  pthread_t t;
  CHECK_INT(pthread_create(&t, NULL, cancel_after_10ms, c), 0);
  close_group(g);
  CHECK_INT(pthread_join(t, NULL), 0);
  CHECK_INT(braid_scope_unref(c->scope), 0);
  return 0;
}

static void test_cancel_from_another_thread_reaches_a_sleeper_while_another_task_spins(void **state) {
  (void)state;
  struct starve_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(thread_starve_root, &c), 0);
  assert_int_equal(atomic_load(&c.woke), 1);
  assert_int_equal(c.rc_sleep, BRAID_ECANCELED);
  assert_true(c.elapsed < 5 * BRAID_SEC);
}

/* ---- checkpoints do not move virtual time ----------------------------- */

static int no_time_root(braid_task *self, void *arg) {
  braid_time_t *elapsed = arg;
  braid_time_t t0 = braid_now(self);
  for (int i = 0; i < 100; i++) {
    CHECK_INT(braid_checkpoint(self), 0);
    CHECK_INT(braid_cancel_shielded_checkpoint(self), 0);
    CHECK_INT(braid_checkpoint_if_cancelled(self), 0);
  }
  *elapsed = braid_now(self) - t0;
  return 0;
}

static void test_checkpoints_take_no_virtual_time(void **state) {
  (void)state;
  braid_time_t elapsed = -1;
  assert_int_equal(run_virtual_at(no_time_root, &elapsed, 9 * BRAID_SEC), 0);
  assert_int_equal(elapsed, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_checkpoint_yields_to_other_ready_tasks),
      BT(test_checkpoint_if_cancelled_does_not_yield),
      BT(test_cancel_shielded_checkpoint_yields_but_never_fails),
      BT(test_checkpoints_keep_failing_while_inside_a_cancelled_scope),
      BT(test_checkpoint_fails_when_cancelled_during_its_yield),
      BT(test_checkpoints_reject_null_and_a_task_that_is_not_running),
      BT(test_checkpoint_loop_does_not_starve_expired_timers),
      BT(test_cancel_from_another_thread_reaches_a_sleeper_while_another_task_spins),
      BT(test_checkpoints_take_no_virtual_time),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
