/*
 * test_errors.c — every error code the header documents, provoked: NULL
 * arguments, calls from the wrong thread (a plain pthread calling into a
 * running loop), the wrong order, closed groups, double enter/exit,
 * misnesting, started twice, and tasks that end with a scope or a group
 * still open. Each refusal must leave the objects usable: the tests go on
 * using them normally afterwards.
 */
#include "core_helpers.h"

#include <stdlib.h>
#include <string.h>

#define SEC BRAID_SEC

static int is_one_of(int rc, int a, int b) { return rc == a || rc == b; }

/* ---- functions outside a loop ----------------------------------------- */

static void *fake_realloc(void *ud, void *p, size_t n) {
  (void)ud;
  return realloc(p, n);
}

static void fake_free(void *ud, void *p) {
  (void)ud;
  free(p);
}

static void test_errors_set_allocator_rejects_incomplete_hooks(void **state) {
  (void)state;
  braid_allocator a = {sizeof a, fake_realloc, fake_free, NULL};
  braid_allocator bad = a;
  bad.realloc = NULL;
  assert_int_equal(braid_set_allocator(&bad), BRAID_EINVAL);
  bad = a;
  bad.free = NULL;
  assert_int_equal(braid_set_allocator(&bad), BRAID_EINVAL);
  bad = a;
  bad.size = sizeof bad - 1;
  assert_int_equal(braid_set_allocator(&bad), BRAID_EINVAL);
  bad.size = 0;
  assert_int_equal(braid_set_allocator(&bad), BRAID_EINVAL);
  assert_int_equal(braid_set_allocator(&a), 0);
  assert_int_equal(braid_set_allocator(NULL), 0);
}

static int set_allocator_in_loop(braid_task *self, void *arg) {
  (void)self;
  braid_allocator a = {sizeof a, fake_realloc, fake_free, NULL};
  *(int *)arg = braid_set_allocator(&a);
  return 0;
}

static void test_errors_set_allocator_while_a_loop_runs_is_estate(void **state) {
  (void)state;
  int rc = 1;
  assert_int_equal(run_virtual(set_allocator_in_loop, &rc), 0);
  assert_int_equal(rc, BRAID_ESTATE);
}

static void test_errors_scope_functions_reject_null_and_unknown_flags(void **state) {
  (void)state;
  braid_scope *s = NULL;
  assert_int_equal(braid_scope_new(BRAID_NEVER, 0, NULL), BRAID_EINVAL);
  assert_int_equal(braid_scope_new(BRAID_NEVER, 4u, &s), BRAID_EINVAL);
  assert_int_equal(braid_scope_new(BRAID_NEVER, 0x80000000u, &s), BRAID_EINVAL);
  assert_int_equal(braid_scope_unref(NULL), BRAID_EINVAL);
  assert_int_equal(braid_scope_enter(NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_scope_exit(NULL, 0), BRAID_EINVAL);
  assert_int_equal(braid_scope_cancel(NULL), BRAID_EINVAL);
  assert_int_equal(braid_scope_set_deadline(NULL, SEC), BRAID_EINVAL);
  assert_int_equal(braid_scope_set_shield(NULL, 1), BRAID_EINVAL);
  assert_int_equal(braid_scope_deadline(NULL), BRAID_NEVER);
  assert_int_equal(braid_move_on_after(NULL, SEC, &s), BRAID_EINVAL);
  assert_int_equal(braid_fail_after(NULL, SEC, &s), BRAID_EINVAL);
}

static void test_errors_group_accessors_reject_null(void **state) {
  (void)state;
  int code = 0;
  assert_int_equal(braid_group_open(NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_group_spawn(NULL, child_noop, NULL, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_group_spawn_stepped(NULL, step_noop, NULL, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_group_start(NULL, NULL, child_noop, NULL, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_group_start_stepped(NULL, NULL, step_noop, NULL, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_group_close(NULL, 0), BRAID_EINVAL);
  assert_int_equal(braid_group_fail(NULL, 5, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_group_failure_count(NULL), 0);
  assert_int_equal(braid_group_failure(NULL, 0, &code, NULL, NULL), BRAID_EINVAL);
  assert_null(braid_group_take_payload(NULL, 0));
  assert_int_equal(braid_group_free(NULL), BRAID_EINVAL);
  assert_int_equal(braid_task_started(NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_task_fail(NULL, 5, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_loop_get_stats(NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_run(NULL, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_run_stepped(NULL, NULL, NULL), BRAID_EINVAL);
}

/* ---- NULL arguments and wrong order inside a loop --------------------- */

struct in_loop_ctx {
  int rc[40];
  int n;
  braid_task *child;
  int child_rc;
};

#define REC(c, call) ((c)->rc[(c)->n++] = (call))

static int in_loop_root(braid_task *self, void *arg) {
  struct in_loop_ctx *c = arg;
  braid_loop_stats st;
  memset(&st, 0, sizeof st);
  braid_loop *loop = braid_task_loop(self);
  braid_scope *s = NULL;
  braid_group *g = NULL;

  /* 0-2: stats */
  st.size = sizeof st;
  REC(c, braid_loop_get_stats(loop, NULL));
  REC(c, braid_loop_get_stats(NULL, &st));
  st.size = 1;
  REC(c, braid_loop_get_stats(loop, &st));
  /* 3-4: out pointers */
  REC(c, braid_move_on_after(self, SEC, NULL));
  REC(c, braid_fail_after(self, SEC, NULL));
  /* 5-6: group_open */
  REC(c, braid_group_open(self, NULL));
  REC(c, braid_group_open(NULL, &g));

  /* 7-10: functions on a child that is alive but not running */
  g = open_group(self);
  CHECK_INT(braid_group_spawn(g, child_sleep_forever, &c->child_rc, NULL, &c->child), 0);
  CHECK_INT(braid_checkpoint(self), 0);
  braid_group *g2 = NULL;
  REC(c, braid_group_open(c->child, &g2));
  REC(c, braid_checkpoint(c->child));
  REC(c, braid_sleep(c->child, SEC));
  s = new_scope(BRAID_NEVER, 0);
  REC(c, braid_scope_exit(s, 0)); /* never entered */

  /* 11-13: spawn/start with NULL bodies or callers */
  REC(c, braid_group_spawn(g, NULL, NULL, NULL, NULL));
  REC(c, braid_group_spawn_stepped(g, NULL, NULL, NULL, NULL));
  REC(c, braid_group_start(g, self, NULL, NULL, NULL, NULL));
  /* 14-15 */
  REC(c, braid_group_start(g, NULL, child_noop, NULL, NULL, NULL));
  REC(c, braid_group_start_stepped(g, self, NULL, NULL, NULL, NULL));
  /* 16-18: the group must not be freed while open; failures out of range */
  REC(c, braid_group_free(g));
  REC(c, braid_group_failure(g, 0, NULL, NULL, NULL));
  REC(c, braid_group_fail(g, 0, NULL, NULL));

  /* 19: entering a scope into a task that is not running */
  braid_scope *other = new_scope(BRAID_NEVER, 0);
  REC(c, braid_scope_enter(c->child, other));
  CHECK_INT(braid_scope_enter(self, other), 0); /* the refusal did not enter it */
  CHECK_INT(leave_scope(other, 0, NULL), 0);

  /* 20-21: enter twice, exit twice */
  CHECK_INT(braid_scope_enter(self, s), 0);
  REC(c, braid_scope_enter(self, s));
  CHECK_INT(braid_scope_exit(s, 0), 0);
  REC(c, leave_scope(s, 0, NULL));

  /* The refusals disturbed nothing: the group still works. */
  CHECK_INT(braid_group_child_count(g), 1);
  CHECK_INT(braid_scope_cancel(braid_group_scope(g)), 0);
  CHECK_INT(braid_group_close(g, 0), 0);
  /* 22-25: a closed group */
  REC(c, braid_group_close(g, 0));
  REC(c, braid_group_spawn(g, child_noop, NULL, NULL, NULL));
  REC(c, braid_group_start(g, self, child_noop, NULL, NULL, NULL));
  REC(c, braid_group_fail(g, 3, NULL, NULL));
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_errors_in_loop_null_arguments_and_wrong_order(void **state) {
  (void)state;
  struct in_loop_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(in_loop_root, &c), 0);
  const int expected[] = {
      BRAID_EINVAL, BRAID_EINVAL, BRAID_EINVAL,               /* stats */
      BRAID_EINVAL, BRAID_EINVAL,                             /* move_on/fail_after NULL out */
      BRAID_EINVAL, BRAID_EINVAL,                             /* group_open NULL */
      BRAID_ESTATE, BRAID_ESTATE, BRAID_ESTATE, BRAID_ESTATE, /* not running; never entered */
      BRAID_EINVAL, BRAID_EINVAL, BRAID_EINVAL,               /* NULL bodies */
      BRAID_EINVAL, BRAID_EINVAL,                             /* NULL caller / step */
      BRAID_ESTATE, BRAID_EINVAL, BRAID_EINVAL,               /* free open, failure oob, fail 0 */
      BRAID_ESTATE,                                           /* enter into a task not running */
      BRAID_ESTATE, BRAID_ESTATE,                             /* enter twice, exit twice */
      BRAID_ESTATE, BRAID_ESTATE, BRAID_ESTATE, BRAID_ESTATE, /* closed group */
  };
  const int n = (int)(sizeof expected / sizeof expected[0]);
  assert_int_equal(c.n, n);
  for (int i = 0; i < n; i++) {
    if (c.rc[i] != expected[i])
      print_error("call #%d returned %s, expected %s\n", i, braid_errname(c.rc[i]), braid_errname(expected[i]));
    assert_int_equal(c.rc[i], expected[i]);
  }
  assert_int_equal(c.child_rc, BRAID_ECANCELED);
}

/* ---- the wrong thread ------------------------------------------------- */

struct wrong_thread_ctx {
  void *(*caller)(void *); /* makes the calls from the wrong thread */
  braid_task *root;
  braid_scope *entered, *fresh, *unentered;
  braid_group *g;
  int rc_enter, rc_set_deadline, rc_set_shield, rc_move_on, rc_fail_after, rc_group_open, rc_spawn, rc_spawn_stepped,
      rc_start, rc_start_stepped;
  int rc_exit, rc_checkpoint, rc_sleep, rc_close, rc_set_deadline_unentered, rc_cancel;
  int child_ran;
  braid_time_t deadline_after, unentered_deadline;
  int shield_after;
  size_t children_after;
};

static void *wrong_thread_calls(void *arg) {
  struct wrong_thread_ctx *c = arg;
  braid_scope *s = NULL;
  braid_group *g = NULL;
  void *v = NULL;
  c->rc_enter = braid_scope_enter(c->root, c->fresh);
  c->rc_set_deadline = braid_scope_set_deadline(c->entered, 1);
  c->rc_set_shield = braid_scope_set_shield(c->entered, 1);
  c->rc_move_on = braid_move_on_after(c->root, SEC, &s);
  c->rc_fail_after = braid_fail_after(c->root, SEC, &s);
  c->rc_group_open = braid_group_open(c->root, &g);
  c->rc_spawn = braid_group_spawn(c->g, child_set_flag, &c->child_ran, NULL, NULL);
  c->rc_spawn_stepped = braid_group_spawn_stepped(c->g, step_noop, NULL, NULL, NULL);
  c->rc_start = braid_group_start(c->g, c->root, child_set_flag, &c->child_ran, NULL, &v);
  c->rc_start_stepped = braid_group_start_stepped(c->g, c->root, step_noop, NULL, NULL, &v);
  c->rc_exit = braid_scope_exit(c->entered, 0);
  c->rc_checkpoint = braid_checkpoint(c->root);
  c->rc_sleep = braid_sleep(c->root, SEC);
  c->rc_close = braid_group_close(c->g, 0);
  /* Allowed from any thread: a deadline before enter, and cancel. */
  c->rc_set_deadline_unentered = braid_scope_set_deadline(c->unentered, 7 * SEC);
  c->rc_cancel = braid_scope_cancel(c->unentered);
  return NULL;
}

/* The same calls from a task of another loop (another thread running its
 * own loop) must be refused just the same. */
static int other_loop_root(braid_task *self, void *arg) {
  (void)self;
  wrong_thread_calls(arg);
  return 0;
}

static void *run_other_loop(void *arg) {
  struct wrong_thread_ctx *c = arg;
  CHECK_INT(run_virtual(other_loop_root, c), 0);
  return NULL;
}

static int wrong_thread_root(braid_task *self, void *arg) {
  struct wrong_thread_ctx *c = arg;
  c->root = self;
  c->entered = new_scope(BRAID_NEVER, 0);
  c->fresh = new_scope(BRAID_NEVER, 0);
  c->unentered = new_scope(BRAID_NEVER, 0);
  c->g = open_group(self);
  CHECK_INT(braid_scope_enter(self, c->entered), 0);
  /* The loop thread blocks in pthread_join: the calls must not need it. */
  CHECK_INT(in_thread(c->caller, c), 0);
  c->deadline_after = braid_scope_deadline(c->entered);
  c->shield_after = braid_scope_shield(c->entered);
  c->children_after = braid_group_child_count(c->g);
  c->unentered_deadline = braid_scope_deadline(c->unentered);
  /* Everything still works from the loop thread. */
  CHECK_INT(braid_checkpoint(self), 0);
  CHECK_INT(braid_scope_exit(c->entered, 0), 0);
  CHECK_INT(braid_scope_enter(self, c->fresh), 0);
  CHECK_INT(braid_scope_exit(c->fresh, 0), 0);
  close_group(c->g);
  CHECK_INT(braid_scope_unref(c->entered), 0);
  CHECK_INT(braid_scope_unref(c->fresh), 0);
  CHECK_INT(braid_scope_unref(c->unentered), 0);
  return 0;
}

/* Run wrong_thread_calls through `caller` while the root waits; every
 * loop-thread-only call must have been refused and changed nothing. */
static void assert_calls_from_elsewhere_are_refused(void *(*caller)(void *)) {
  struct wrong_thread_ctx c;
  memset(&c, 0, sizeof c);
  c.caller = caller;
  assert_int_equal(run_real(wrong_thread_root, &c), 0);
  assert_int_equal(c.rc_enter, BRAID_ETHREAD);
  assert_int_equal(c.rc_set_deadline, BRAID_ETHREAD);
  assert_int_equal(c.rc_set_shield, BRAID_ETHREAD);
  assert_int_equal(c.rc_move_on, BRAID_ETHREAD);
  assert_int_equal(c.rc_fail_after, BRAID_ETHREAD);
  assert_int_equal(c.rc_group_open, BRAID_ETHREAD);
  assert_int_equal(c.rc_spawn, BRAID_ETHREAD);
  assert_int_equal(c.rc_spawn_stepped, BRAID_ETHREAD);
  assert_int_equal(c.rc_start, BRAID_ETHREAD);
  assert_int_equal(c.rc_start_stepped, BRAID_ETHREAD);
  /* These document ESTATE for "not this task"; from another thread
   * either ESTATE or the general ETHREAD is a correct refusal. */
  assert_true(is_one_of(c.rc_exit, BRAID_ESTATE, BRAID_ETHREAD));
  assert_true(is_one_of(c.rc_checkpoint, BRAID_ESTATE, BRAID_ETHREAD));
  assert_true(is_one_of(c.rc_sleep, BRAID_ESTATE, BRAID_ETHREAD));
  assert_true(is_one_of(c.rc_close, BRAID_ESTATE, BRAID_ETHREAD));
  assert_int_equal(c.rc_set_deadline_unentered, 0);
  assert_int_equal(c.rc_cancel, 0);
  /* Nothing changed. */
  assert_int_equal(c.deadline_after, BRAID_NEVER);
  assert_int_equal(c.shield_after, 0);
  assert_int_equal(c.children_after, 0);
  assert_int_equal(c.child_ran, 0);
  assert_int_equal(c.unentered_deadline, 7 * SEC);
}

static void test_errors_loop_thread_only_calls_from_another_thread_are_ethread(void **state) {
  (void)state;
  assert_calls_from_elsewhere_are_refused(wrong_thread_calls);
}

static void test_errors_calls_from_a_task_of_another_loop_are_ethread(void **state) {
  (void)state;
  assert_calls_from_elsewhere_are_refused(run_other_loop);
}

/* ---- wrong task --------------------------------------------------------- */

struct wrong_task_ctx {
  braid_scope *child_scope;
  braid_group *root_group;
  int rc_exit_foreign, rc_close_foreign, rc_enter_entered_elsewhere, rc_child_exit;
  int child_may_exit;
};

static int scope_holding_child(braid_task *self, void *arg) {
  struct wrong_task_ctx *c = arg;
  CHECK_INT(braid_scope_enter(self, c->child_scope), 0);
  c->rc_close_foreign = braid_group_close(c->root_group, 0);
  CHECK_INT(braid_sleep(self, 2 * SEC), 0);
  c->rc_child_exit = braid_scope_exit(c->child_scope, 0);
  return 0;
}

static int wrong_task_root(braid_task *self, void *arg) {
  struct wrong_task_ctx *c = arg;
  c->child_scope = new_scope(BRAID_NEVER, 0);
  c->root_group = open_group(self);
  CHECK_INT(braid_group_spawn(c->root_group, scope_holding_child, c, NULL, NULL), 0);
  CHECK_INT(braid_sleep(self, SEC), 0);
  c->rc_exit_foreign = braid_scope_exit(c->child_scope, 0);
  c->rc_enter_entered_elsewhere = braid_scope_enter(self, c->child_scope);
  close_group(c->root_group);
  CHECK_INT(braid_scope_unref(c->child_scope), 0);
  return 0;
}

static void test_errors_exit_or_close_from_another_task_is_estate(void **state) {
  (void)state;
  struct wrong_task_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(wrong_task_root, &c), 0);
  assert_int_equal(c.rc_close_foreign, BRAID_ESTATE);
  assert_int_equal(c.rc_exit_foreign, BRAID_ESTATE);
  assert_int_equal(c.rc_enter_entered_elsewhere, BRAID_ESTATE);
  assert_int_equal(c.rc_child_exit, 0); /* the refusals changed nothing */
}

/* ---- misnesting of groups and scopes ------------------------------------ */

struct misnest_group_ctx {
  int rc_close_misnested, rc_inner_exit, rc_close, rc_cp;
};

static int misnest_group_root(braid_task *self, void *arg) {
  struct misnest_group_ctx *c = arg;
  braid_group *g = open_group(self);
  braid_scope *s = enter_new_scope(self, BRAID_NEVER, 0);
  c->rc_close_misnested = braid_group_close(g, 0);
  c->rc_cp = braid_checkpoint(self);
  c->rc_inner_exit = braid_scope_exit(s, 0);
  c->rc_close = braid_group_close(g, 0);
  CHECK_INT(braid_group_free(g), 0);
  CHECK_INT(braid_scope_unref(s), 0);
  return 0;
}

static void test_errors_group_close_with_an_inner_scope_open_is_estate(void **state) {
  (void)state;
  struct misnest_group_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(misnest_group_root, &c), 0);
  assert_int_equal(c.rc_close_misnested, BRAID_ESTATE);
  assert_int_equal(c.rc_cp, 0); /* nothing was cancelled by the refusal */
  assert_int_equal(c.rc_inner_exit, 0);
  assert_int_equal(c.rc_close, 0);
}

struct left_open_ctx {
  braid_scope *scope;
  braid_group *inner;
  uint64_t child_id;
  group_result r;
  int rc_exit_later, rc_unref, rc_grandchild, rc_free;
};

/* The child ended with the failure BRAID_ESTATE, reported by its group. */
static void assert_child_failed_with_estate(const struct left_open_ctx *c) {
  assert_int_equal(c->r.rc_close, BRAID_EFAILED);
  assert_int_equal(c->r.nfail, 1);
  assert_int_equal(c->r.code, BRAID_ESTATE);
  assert_int_equal(c->r.tid, c->child_id);
}

static int return_inside_scope(braid_task *self, void *arg) {
  struct left_open_ctx *c = arg;
  c->child_id = braid_task_id(self);
  CHECK_INT(braid_scope_enter(self, c->scope), 0);
  return 0; /* misnested: the scope is still open */
}

static int left_scope_root(braid_task *self, void *arg) {
  struct left_open_ctx *c = arg;
  c->scope = new_scope(BRAID_NEVER, 0);
  c->r = run_in_group(self, return_inside_scope, c);
  c->rc_exit_later = braid_scope_exit(c->scope, 0);
  c->rc_unref = braid_scope_unref(c->scope); /* no longer entered: freed */
  return 0;
}

static void test_errors_task_returning_with_a_scope_open_ends_with_estate(void **state) {
  (void)state;
  struct left_open_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(left_scope_root, &c), 0);
  assert_child_failed_with_estate(&c);
  assert_int_equal(c.rc_exit_later, BRAID_ESTATE);
  assert_int_equal(c.rc_unref, 0);
}

/* Open c->inner with a child that sleeps until cancelled. */
static void open_inner_group_with_sleeper(braid_task *self, struct left_open_ctx *c) {
  c->inner = open_group(self);
  CHECK_INT(braid_group_spawn(c->inner, child_sleep_forever, &c->rc_grandchild, NULL, NULL), 0);
  CHECK_INT(braid_checkpoint(self), 0);
}

static int return_inside_group(braid_task *self, void *arg) {
  struct left_open_ctx *c = arg;
  c->child_id = braid_task_id(self);
  open_inner_group_with_sleeper(self, c);
  return 0; /* misnested: the group was never closed */
}

static int left_group_root(braid_task *self, void *arg) {
  struct left_open_ctx *c = arg;
  c->r = run_in_group(self, return_inside_group, c);
  /* Its task left it: the abandoned group may be freed now. */
  c->rc_free = braid_group_free(c->inner);
  return 0;
}

static void test_errors_task_returning_with_a_group_open_ends_with_estate_and_cancels_it(void **state) {
  (void)state;
  struct left_open_ctx c;
  memset(&c, 0, sizeof c);
  c.rc_grandchild = 1;
  assert_int_equal(run_virtual(left_group_root, &c), 0);
  assert_child_failed_with_estate(&c);
  assert_int_equal(c.rc_free, 0);
  /* The abandoned group's scope stays cancelled: its child was woken. */
  assert_int_equal(c.rc_grandchild, BRAID_ECANCELED);
}

static int root_leaves_group_open(braid_task *self, void *arg) {
  open_inner_group_with_sleeper(self, arg);
  return 0; /* misnested root */
}

static void test_errors_root_returning_with_a_group_open_ends_with_estate_after_its_children(void **state) {
  (void)state;
  struct left_open_ctx c;
  memset(&c, 0, sizeof c);
  c.rc_grandchild = 1;
  assert_int_equal(run_virtual(root_leaves_group_open, &c), BRAID_ESTATE);
  /* braid_run returned only after the abandoned group's child ended. */
  assert_int_equal(c.rc_grandchild, BRAID_ECANCELED);
  assert_int_equal(braid_group_free(c.inner), 0);
}

/* Stack sizes that cannot be mapped must fail cleanly: either the spawn
 * refuses, or (stacks are mapped when a task first runs) the child ends
 * with the failure BRAID_ENOMEM without running. Rounding SIZE_MAX up to
 * pages must not wrap to a tiny stack. These run in a child process so
 * that a crash fails only this test. */
struct huge_stack_ctx {
  size_t size;
  int rc_huge, rc_after;
  group_result r;
  int huge_ran, normal_ran;
};

static int huge_stack_root(braid_task *self, void *arg) {
  struct huge_stack_ctx *c = arg;
  braid_group *g = open_group(self);
  braid_spawn_opts o = spawn_opts(NULL, c->size);
  c->rc_huge = braid_group_spawn(g, child_set_flag, &c->huge_ran, &o, NULL);
  c->rc_after = braid_group_spawn(g, child_set_flag, &c->normal_ran, NULL, NULL);
  c->r = close_and_free_group(g, 0);
  return 0;
}

static int huge_spawn_in_child(void *arg) {
  struct huge_stack_ctx *c = arg;
  int rc = run_virtual(huge_stack_root, c);
  if (rc != 0 || check_failures() != 0) return 1;
  if (c->rc_after != 0 || c->normal_ran != 1 || c->huge_ran != 0) return 2;
  int refused = (c->rc_huge == BRAID_EINVAL || c->rc_huge == BRAID_ENOMEM || c->rc_huge == BRAID_ESYS) &&
                c->r.rc_close == 0 && c->r.nfail == 0;
  int failed = c->rc_huge == 0 && c->r.rc_close == BRAID_EFAILED && c->r.nfail == 1 && c->r.code == BRAID_ENOMEM;
  return refused || failed ? 0 : 3;
}

/* fn(arg) in a forked child process: its result; a crash is reported. */
static int forked(int (*fn)(void *), void *arg) {
  int sig = 0;
  int rc = fork_call(fn, arg, &sig);
  if (rc == FORK_CRASHED) print_error("the process died of signal %d\n", sig);
  return rc;
}

static void check_huge_spawn(size_t size) {
  struct huge_stack_ctx c;
  memset(&c, 0, sizeof c);
  c.size = size;
  int rc = forked(huge_spawn_in_child, &c);
  if (rc != 0) print_error("stack size %zu\n", size);
  assert_int_equal(rc, 0);
}

static void test_errors_spawn_with_an_unmappable_stack_size_fails_cleanly(void **state) {
  (void)state;
  check_huge_spawn((size_t)1 << 50);
}

static void test_errors_spawn_with_an_impossible_stack_size_fails_cleanly(void **state) {
  (void)state;
  check_huge_spawn(SIZE_MAX);
}

static int huge_run_in_child(void *arg) {
  (void)arg;
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  o.stack_size = SIZE_MAX;
  return braid_run(child_noop, NULL, &o);
}

static void test_errors_run_with_an_impossible_stack_size_fails_cleanly(void **state) {
  (void)state;
  int rc = forked(huge_run_in_child, NULL);
  assert_true(rc == BRAID_EINVAL || rc == BRAID_ENOMEM || rc == BRAID_ESYS);
}

struct detach_ctx {
  int rc_exit_outer, rc_cp_after, rc_close, rc_free, rc_grandchild, rc_exit_group_scope, rc_close2;
};

static int detach_root(braid_task *self, void *arg) {
  struct detach_ctx *c = arg;
  braid_scope *s = enter_new_scope(self, BRAID_NEVER, 0);
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, child_sleep_forever, &c->rc_grandchild, NULL, NULL), 0);
  CHECK_INT(braid_checkpoint(self), 0);
  /* Leaving the outer scope with the group still open: misnested. */
  c->rc_exit_outer = braid_scope_exit(s, 0);
  c->rc_cp_after = braid_checkpoint(self);
  c->rc_close = braid_group_close(g, 0);
  c->rc_free = braid_group_free(g);
  CHECK_INT(braid_scope_unref(s), 0);

  /* The group's scope is left by close, not by braid_scope_exit. */
  g = open_group(self);
  c->rc_exit_group_scope = braid_scope_exit(braid_group_scope(g), 0);
  c->rc_close2 = braid_group_close(g, 0);
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_errors_misnested_exit_around_an_open_group_detaches_and_cancels_it(void **state) {
  (void)state;
  struct detach_ctx c;
  memset(&c, 0, sizeof c);
  c.rc_grandchild = 1;
  assert_int_equal(run_virtual(detach_root, &c), 0);
  assert_int_equal(c.rc_exit_outer, BRAID_ESTATE);
  assert_int_equal(c.rc_cp_after, 0);
  assert_int_equal(c.rc_grandchild, BRAID_ECANCELED); /* the detached group stays cancelled */
  assert_int_equal(c.rc_close, BRAID_ESTATE);         /* its scope is no longer the task's */
  assert_int_equal(c.rc_free, 0);                     /* the task left it: it may be freed */
  assert_int_equal(c.rc_exit_group_scope, BRAID_ESTATE);
  assert_int_equal(c.rc_close2, 0);
}

struct opts_size_ctx {
  int rc_spawn, rc_spawn_stepped, rc_start;
};

static int opts_size_root(braid_task *self, void *arg) {
  struct opts_size_ctx *c = arg;
  braid_group *g = open_group(self);
  braid_spawn_opts o = spawn_opts("x", 0);
  o.size = 0;
  c->rc_spawn = braid_group_spawn(g, child_noop, NULL, &o, NULL);
  c->rc_spawn_stepped = braid_group_spawn_stepped(g, step_noop, NULL, &o, NULL);
  c->rc_start = braid_group_start(g, self, child_noop, NULL, &o, NULL);
  CHECK_INT(braid_group_child_count(g), 0);
  close_group(g);
  return 0;
}

static void test_errors_spawn_options_without_their_size_are_einval(void **state) {
  (void)state;
  struct opts_size_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(opts_size_root, &c), 0);
  assert_int_equal(c.rc_spawn, BRAID_EINVAL);
  assert_int_equal(c.rc_spawn_stepped, BRAID_EINVAL);
  assert_int_equal(c.rc_start, BRAID_EINVAL);
}

static void on_fd_noop(void *ud) { (void)ud; }

static int bad_fd_in_child(void *arg) {
  (void)arg;
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  o.watch_fd = 1 << 20; /* not an open descriptor */
  o.on_fd = on_fd_noop;
  return braid_run(child_noop, NULL, &o);
}

static void test_errors_run_watching_a_bad_descriptor_fails_cleanly(void **state) {
  (void)state;
  int rc = forked(bad_fd_in_child, NULL);
  if (rc != FORK_CRASHED && rc != BRAID_EINVAL && rc != BRAID_ESYS)
    print_error("braid_run returned %s\n", braid_errname(rc));
  assert_true(rc == BRAID_EINVAL || rc == BRAID_ESYS);
}

/* ---- started twice, stepped misuse -------------------------------------- */

struct started_ctx {
  int rc1, rc2, rc_start;
};

static int started_twice(braid_task *self, void *arg) {
  struct started_ctx *c = arg;
  c->rc1 = braid_task_started(self, NULL);
  c->rc2 = braid_task_started(self, NULL);
  return 0;
}

static int started_twice_root(braid_task *self, void *arg) {
  struct started_ctx *c = arg;
  braid_group *g = open_group(self);
  c->rc_start = braid_group_start(g, self, started_twice, c, NULL, NULL);
  close_group(g);
  return 0;
}

static void test_errors_started_twice_is_estate(void **state) {
  (void)state;
  struct started_ctx c = {1, 1, 1};
  assert_int_equal(run_virtual(started_twice_root, &c), 0);
  assert_int_equal(c.rc_start, 0);
  assert_int_equal(c.rc1, 0);
  assert_int_equal(c.rc2, BRAID_ESTATE);
}

static void test_errors_stepped_body_pending_without_a_wait_ends_with_estate(void **state) {
  (void)state;
  assert_int_equal(run_stepped_virtual(step_pending_without_wait, NULL), BRAID_ESTATE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_errors_set_allocator_rejects_incomplete_hooks),
      BT(test_errors_set_allocator_while_a_loop_runs_is_estate),
      BT(test_errors_scope_functions_reject_null_and_unknown_flags),
      BT(test_errors_group_accessors_reject_null),
      BT(test_errors_in_loop_null_arguments_and_wrong_order),
      BT(test_errors_loop_thread_only_calls_from_another_thread_are_ethread),
      BT(test_errors_calls_from_a_task_of_another_loop_are_ethread),
      BT(test_errors_exit_or_close_from_another_task_is_estate),
      BT(test_errors_group_close_with_an_inner_scope_open_is_estate),
      BT(test_errors_task_returning_with_a_scope_open_ends_with_estate),
      BT(test_errors_task_returning_with_a_group_open_ends_with_estate_and_cancels_it),
      BT(test_errors_root_returning_with_a_group_open_ends_with_estate_after_its_children),
      BT(test_errors_misnested_exit_around_an_open_group_detaches_and_cancels_it),
      BT(test_errors_spawn_options_without_their_size_are_einval),
      BT(test_errors_run_watching_a_bad_descriptor_fails_cleanly),
      BT(test_errors_started_twice_is_estate),
      BT(test_errors_stepped_body_pending_without_a_wait_ends_with_estate),
      BT(test_errors_spawn_with_an_unmappable_stack_size_fails_cleanly),
      BT(test_errors_spawn_with_an_impossible_stack_size_fails_cleanly),
      BT(test_errors_run_with_an_impossible_stack_size_fails_cleanly),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
