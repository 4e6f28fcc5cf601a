/*
 * test_scope.c — cancel scopes on stackful tasks: cancel, catch rules,
 * shields, deadlines (past, moved later/earlier, removed), move_on_after /
 * fail_after, the effective deadline, level-triggered delivery in cleanup
 * code, misnesting, reference counting, cancellation from another task and
 * from another thread, scopes of plain threads.
 *
 * Every scenario runs on the virtual clock unless it needs real threads.
 */
#include "core_helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define SEC BRAID_SEC

/* ---- creation and properties ----------------------------------------- */

static void test_scope_new_reports_its_properties(void **state) {
  (void)state;
  braid_scope *s = NULL;
  assert_int_equal(braid_scope_new(5 * SEC, BRAID_SHIELD, &s), 0);
  assert_non_null(s);
  assert_int_equal(braid_scope_deadline(s), 5 * SEC);
  assert_int_equal(braid_scope_shield(s), 1);
  assert_int_equal(braid_scope_cancel_called(s), 0);
  assert_int_equal(braid_scope_cancelled_caught(s), 0);
  assert_int_equal(braid_scope_unref(s), 0);

  assert_int_equal(braid_scope_new(BRAID_NEVER, 0, &s), 0);
  assert_int_equal(braid_scope_deadline(s), BRAID_NEVER);
  assert_int_equal(braid_scope_shield(s), 0);
  assert_int_equal(braid_scope_unref(s), 0);

  assert_int_equal(braid_scope_new(BRAID_NEVER, BRAID_FAIL | BRAID_SHIELD, &s), 0);
  assert_int_equal(braid_scope_shield(s), 1);
  assert_int_equal(braid_scope_unref(s), 0);
}

static void test_scope_cancel_before_enter_is_recorded(void **state) {
  (void)state;
  braid_scope *s = NULL;
  assert_int_equal(braid_scope_new(BRAID_NEVER, 0, &s), 0);
  assert_int_equal(braid_scope_cancel(s), 0);
  assert_int_equal(braid_scope_cancel(s), 0); /* idempotent */
  assert_int_equal(braid_scope_cancel_called(s), 1);
  assert_int_equal(braid_scope_cancelled_caught(s), 0);
  assert_int_equal(braid_scope_unref(s), 0);
}

static void test_scope_extra_reference_keeps_it_alive(void **state) {
  (void)state;
  braid_scope *s = NULL;
  assert_int_equal(braid_scope_new(BRAID_NEVER, 0, &s), 0);
  assert_ptr_equal(braid_scope_ref(s), s);
  assert_int_equal(braid_scope_unref(s), 0);
  /* Still alive: the second reference is ours. */
  assert_int_equal(braid_scope_cancel(s), 0);
  assert_int_equal(braid_scope_cancel_called(s), 1);
  assert_int_equal(braid_scope_unref(s), 0);
}

/* ---- cancel and catch ------------------------------------------------ */

struct basic_ctx {
  int rc_cp1, rc_cp2, rc_ifc, rc_sleep, rc_shielded_cp, rc_exit;
  int cancelled_inside, cancelled_after;
  int caught;
  braid_time_t slept_until, t0;
  int rc_after_exit;
};

static int cancel_then_checkpoint_root(braid_task *self, void *arg) {
  struct basic_ctx *c = arg;
  c->t0 = braid_now(self);
  braid_scope *s = enter_new_scope(self, BRAID_NEVER, 0);
  CHECK_INT(braid_checkpoint(self), 0);
  CHECK_INT(braid_task_cancelled(self), 0);
  CHECK_INT(braid_scope_cancel(s), 0);
  c->cancelled_inside = braid_task_cancelled(self);
  /* Level-triggered: every checkpoint fails while inside. */
  c->rc_cp1 = braid_checkpoint(self);
  c->rc_cp2 = braid_checkpoint(self);
  c->rc_ifc = braid_checkpoint_if_cancelled(self);
  c->rc_sleep = braid_sleep(self, 10 * SEC);
  c->slept_until = braid_now(self);
  c->rc_shielded_cp = braid_cancel_shielded_checkpoint(self);
  c->rc_exit = braid_scope_exit(s, BRAID_ECANCELED);
  c->caught = braid_scope_cancelled_caught(s);
  c->cancelled_after = braid_task_cancelled(self);
  c->rc_after_exit = braid_checkpoint(self);
  CHECK_INT(braid_scope_unref(s), 0);
  return 0;
}

static void test_scope_cancel_fails_every_checkpoint_until_exit_catches(void **state) {
  (void)state;
  struct basic_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(cancel_then_checkpoint_root, &c), 0);
  assert_int_equal(c.cancelled_inside, 1);
  assert_int_equal(c.rc_cp1, BRAID_ECANCELED);
  assert_int_equal(c.rc_cp2, BRAID_ECANCELED);
  assert_int_equal(c.rc_ifc, BRAID_ECANCELED);
  assert_int_equal(c.rc_sleep, BRAID_ECANCELED);
  assert_int_equal(c.slept_until, c.t0); /* a cancelled sleep takes no time */
  assert_int_equal(c.rc_shielded_cp, 0);
  assert_int_equal(c.rc_exit, 0);
  assert_int_equal(c.caught, 1);
  assert_int_equal(c.cancelled_after, 0);
  assert_int_equal(c.rc_after_exit, 0);
}

static int cancel_before_enter_root(braid_task *self, void *arg) {
  struct basic_ctx *c = arg;
  braid_scope *s = new_scope(BRAID_NEVER, 0);
  CHECK_INT(braid_scope_cancel(s), 0);
  CHECK_INT(braid_task_cancelled(self), 0);
  CHECK_INT(braid_scope_enter(self, s), 0);
  c->cancelled_inside = braid_task_cancelled(self);
  c->rc_cp1 = braid_checkpoint(self);
  c->rc_exit = leave_scope(s, c->rc_cp1, &c->caught);
  return 0;
}

static void test_scope_cancelled_before_enter_fails_first_checkpoint(void **state) {
  (void)state;
  struct basic_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(cancel_before_enter_root, &c), 0);
  assert_int_equal(c.cancelled_inside, 1);
  assert_int_equal(c.rc_cp1, BRAID_ECANCELED);
  assert_int_equal(c.rc_exit, 0);
  assert_int_equal(c.caught, 1);
}

struct exit_rc_ctx {
  int rc_zero, caught_zero;
  int rc_other, caught_other;
  int rc_uncancelled, caught_uncancelled;
};

/* Enter a new scope, cancel it if asked and exit it at once with rc. */
static int exit_new_scope(braid_task *self, int cancel, int rc, int *caught) {
  braid_scope *s = enter_new_scope(self, BRAID_NEVER, 0);
  if (cancel) CHECK_INT(braid_scope_cancel(s), 0);
  return leave_scope(s, rc, caught);
}

static int exit_rc_root(braid_task *self, void *arg) {
  struct exit_rc_ctx *c = arg;
  /* Cancelled scope, body succeeded anyway: nothing to catch. */
  c->rc_zero = exit_new_scope(self, 1, 0, &c->caught_zero);
  /* Cancelled scope, body failed otherwise: the failure passes. */
  c->rc_other = exit_new_scope(self, 1, 77, &c->caught_other);
  /* ECANCELED through a scope that was not cancelled: not ours. */
  c->rc_uncancelled = exit_new_scope(self, 0, BRAID_ECANCELED, &c->caught_uncancelled);
  return 0;
}

static void test_scope_exit_catches_only_ecanceled_of_a_cancelled_scope(void **state) {
  (void)state;
  struct exit_rc_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(exit_rc_root, &c), 0);
  assert_int_equal(c.rc_zero, 0);
  assert_int_equal(c.caught_zero, 0);
  assert_int_equal(c.rc_other, 77);
  assert_int_equal(c.caught_other, 0);
  assert_int_equal(c.rc_uncancelled, BRAID_ECANCELED);
  assert_int_equal(c.caught_uncancelled, 0);
}

/* ---- nesting: who catches -------------------------------------------- */

struct nest_ctx {
  int cancel_inner, cancel_outer;
  int rc_cp, rc_inner_exit, inner_caught, rc_cp_between, rc_outer_exit, outer_caught;
};

static int nest_root(braid_task *self, void *arg) {
  struct nest_ctx *c = arg;
  braid_scope *outer = enter_new_scope(self, BRAID_NEVER, 0);
  braid_scope *inner = enter_new_scope(self, BRAID_NEVER, 0);
  if (c->cancel_inner) CHECK_INT(braid_scope_cancel(inner), 0);
  if (c->cancel_outer) CHECK_INT(braid_scope_cancel(outer), 0);
  c->rc_cp = braid_checkpoint(self);
  c->rc_inner_exit = leave_scope(inner, c->rc_cp, &c->inner_caught);
  c->rc_cp_between = braid_checkpoint(self);
  c->rc_outer_exit = leave_scope(outer, c->rc_inner_exit, &c->outer_caught);
  return 0;
}

static void test_scope_inner_does_not_catch_when_outer_is_cancelled(void **state) {
  (void)state;
  for (int both = 0; both <= 1; both++) {
    struct nest_ctx c;
    memset(&c, 0, sizeof c);
    c.cancel_inner = both;
    c.cancel_outer = 1;
    assert_int_equal(run_virtual(nest_root, &c), 0);
    assert_int_equal(c.rc_cp, BRAID_ECANCELED);
    assert_int_equal(c.rc_inner_exit, BRAID_ECANCELED);
    assert_int_equal(c.inner_caught, 0);
    assert_int_equal(c.rc_cp_between, BRAID_ECANCELED);
    assert_int_equal(c.rc_outer_exit, 0);
    assert_int_equal(c.outer_caught, 1);
  }
}

static void test_scope_inner_catches_its_own_cancel(void **state) {
  (void)state;
  struct nest_ctx c;
  memset(&c, 0, sizeof c);
  c.cancel_inner = 1;
  assert_int_equal(run_virtual(nest_root, &c), 0);
  assert_int_equal(c.rc_cp, BRAID_ECANCELED);
  assert_int_equal(c.rc_inner_exit, 0);
  assert_int_equal(c.inner_caught, 1);
  assert_int_equal(c.rc_cp_between, 0);
  assert_int_equal(c.rc_outer_exit, 0);
  assert_int_equal(c.outer_caught, 0);
}

/* ---- shields --------------------------------------------------------- */

struct shield_ctx {
  braid_time_t t0, after_sleep;
  int rc_cp_in_shield, rc_sleep_in_shield, cancelled_in_shield, rc_shield_exit, shield_caught;
  int rc_cp_after_shield, rc_outer_exit, outer_caught;
  int rc_inner_cancel_cp, rc_inner_cancel_exit, inner_cancel_caught, rc_cp_outer_still;
};

static int shield_root(braid_task *self, void *arg) {
  struct shield_ctx *c = arg;
  c->t0 = braid_now(self);
  braid_scope *outer = NULL;
  braid_scope *shield = inside_cancelled_outer(self, BRAID_NEVER, BRAID_SHIELD, &outer);
  c->cancelled_in_shield = braid_task_cancelled(self);
  c->rc_cp_in_shield = braid_checkpoint(self);
  c->rc_sleep_in_shield = braid_sleep(self, 2 * SEC);
  c->after_sleep = braid_now(self);
  c->rc_shield_exit = leave_scope(shield, 0, &c->shield_caught);
  c->rc_cp_after_shield = braid_checkpoint(self);
  c->rc_outer_exit = leave_scope(outer, c->rc_cp_after_shield, &c->outer_caught);
  return 0;
}

static void test_scope_shield_blocks_outer_cancel(void **state) {
  (void)state;
  struct shield_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(shield_root, &c), 0);
  assert_int_equal(c.cancelled_in_shield, 0);
  assert_int_equal(c.rc_cp_in_shield, 0);
  assert_int_equal(c.rc_sleep_in_shield, 0);
  assert_int_equal(c.after_sleep, c.t0 + 2 * SEC);
  assert_int_equal(c.rc_shield_exit, 0);
  assert_int_equal(c.shield_caught, 0);
  assert_int_equal(c.rc_cp_after_shield, BRAID_ECANCELED);
  assert_int_equal(c.rc_outer_exit, 0);
  assert_int_equal(c.outer_caught, 1);
}

static int shielded_inner_catches_root(braid_task *self, void *arg) {
  struct shield_ctx *c = arg;
  braid_scope *outer = NULL;
  braid_scope *shield = inside_cancelled_outer(self, BRAID_NEVER, BRAID_SHIELD, &outer);
  CHECK_INT(braid_scope_cancel(shield), 0);
  c->rc_inner_cancel_cp = braid_checkpoint(self);
  /* The outer cancellation is not visible through the shield, so the
   * shielded scope catches its own. */
  c->rc_inner_cancel_exit = leave_scope(shield, c->rc_inner_cancel_cp, &c->inner_cancel_caught);
  c->rc_cp_outer_still = braid_checkpoint(self);
  c->rc_outer_exit = leave_scope(outer, c->rc_cp_outer_still, NULL);
  return 0;
}

static void test_scope_shielded_inner_catches_own_cancel_inside_cancelled_outer(void **state) {
  (void)state;
  struct shield_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(shielded_inner_catches_root, &c), 0);
  assert_int_equal(c.rc_inner_cancel_cp, BRAID_ECANCELED);
  assert_int_equal(c.rc_inner_cancel_exit, 0);
  assert_int_equal(c.inner_cancel_caught, 1);
  assert_int_equal(c.rc_cp_outer_still, BRAID_ECANCELED);
  assert_int_equal(c.rc_outer_exit, 0);
}

struct toggle_ctx {
  int rc_shielded, rc_unshielded, rc_reshielded, shield_flag_off, shield_flag_on;
  int rc_inner_exit, rc_outer_exit;
  int rc_late_shield_before, rc_late_shield_after;
};

static int shield_toggle_root(braid_task *self, void *arg) {
  struct toggle_ctx *c = arg;
  braid_scope *outer = NULL;
  braid_scope *inner = inside_cancelled_outer(self, BRAID_NEVER, BRAID_SHIELD, &outer);
  c->rc_shielded = braid_checkpoint(self);
  CHECK_INT(braid_scope_set_shield(inner, 0), 0);
  c->shield_flag_off = braid_scope_shield(inner);
  c->rc_unshielded = braid_checkpoint(self);
  CHECK_INT(braid_scope_set_shield(inner, 1), 0);
  c->shield_flag_on = braid_scope_shield(inner);
  c->rc_reshielded = braid_checkpoint(self);
  c->rc_inner_exit = leave_scope(inner, 0, NULL);
  c->rc_outer_exit = leave_scope(outer, braid_checkpoint(self), NULL);

  /* Turning a shield on after the outer cancel protects from then on. */
  inner = inside_cancelled_outer(self, BRAID_NEVER, 0, &outer);
  c->rc_late_shield_before = braid_checkpoint(self);
  CHECK_INT(braid_scope_set_shield(inner, 1), 0);
  c->rc_late_shield_after = braid_checkpoint(self);
  CHECK_INT(leave_scope(inner, 0, NULL), 0);
  CHECK_INT(leave_scope(outer, braid_checkpoint(self), NULL), 0);
  return 0;
}

static void test_scope_set_shield_off_reexposes_outer_cancel(void **state) {
  (void)state;
  struct toggle_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(shield_toggle_root, &c), 0);
  assert_int_equal(c.rc_shielded, 0);
  assert_int_equal(c.shield_flag_off, 0);
  assert_int_equal(c.rc_unshielded, BRAID_ECANCELED);
  assert_int_equal(c.shield_flag_on, 1);
  assert_int_equal(c.rc_reshielded, 0);
  assert_int_equal(c.rc_inner_exit, 0);
  assert_int_equal(c.rc_outer_exit, 0);
  assert_int_equal(c.rc_late_shield_before, BRAID_ECANCELED);
  assert_int_equal(c.rc_late_shield_after, 0);
}

/* ---- cleanup code ---------------------------------------------------- */

struct cleanup_ctx {
  braid_time_t t0, cleanup_done_at;
  int rc_body, rc_cleanup_cp, rc_cleanup_sleep, rc_shielded_sleep, rc_shield_exit, rc_after_shield, rc_exit;
  int caught;
};

static int cleanup_root(braid_task *self, void *arg) {
  struct cleanup_ctx *c = arg;
  c->t0 = braid_now(self);
  braid_scope *s = NULL;
  CHECK_INT(braid_move_on_after(self, SEC, &s), 0);
  c->rc_body = braid_sleep_forever(self);
  /* Cleanup after the cancellation: still inside the cancelled scope. */
  c->rc_cleanup_cp = braid_checkpoint(self);
  c->rc_cleanup_sleep = braid_sleep(self, SEC);
  braid_scope *shield = enter_new_scope(self, BRAID_NEVER, BRAID_SHIELD);
  c->rc_shielded_sleep = braid_sleep(self, 3 * SEC);
  c->cleanup_done_at = braid_now(self);
  c->rc_shield_exit = leave_scope(shield, c->rc_shielded_sleep, NULL);
  c->rc_after_shield = braid_checkpoint(self);
  c->rc_exit = leave_scope(s, c->rc_body, &c->caught);
  return 0;
}

static void test_scope_cancel_is_delivered_in_cleanup_and_shield_lets_cleanup_sleep(void **state) {
  (void)state;
  struct cleanup_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(cleanup_root, &c), 0);
  assert_int_equal(c.rc_body, BRAID_ECANCELED);
  assert_int_equal(c.rc_cleanup_cp, BRAID_ECANCELED);
  assert_int_equal(c.rc_cleanup_sleep, BRAID_ECANCELED);
  assert_int_equal(c.rc_shielded_sleep, 0);
  assert_int_equal(c.cleanup_done_at, c.t0 + 4 * SEC); /* 1 s deadline + 3 s shielded sleep */
  assert_int_equal(c.rc_shield_exit, 0);
  assert_int_equal(c.rc_after_shield, BRAID_ECANCELED);
  assert_int_equal(c.rc_exit, 0);
  assert_int_equal(c.caught, 1);
}

/* ---- deadlines, move_on_after / fail_after --------------------------- */

/* Each scenario records its last wait in `w` (scope_wait, core_helpers.h);
 * some record an earlier wait, or a second scope, as well. */
struct deadline_ctx {
  scope_wait w;
  int cancel_called_at_enter, cancelled_at_enter;
  int rc_first;
  braid_time_t first_woke_at;
  scope_wait w2;
};

static int past_deadline_root(braid_task *self, void *arg) {
  struct deadline_ctx *c = arg;
  CHECK_INT(braid_sleep(self, 10 * SEC), 0);
  c->w.t0 = braid_now(self);
  braid_scope *s = new_scope(c->w.t0 - SEC, 0);
  CHECK_INT(braid_scope_cancel_called(s), 0);
  CHECK_INT(braid_scope_enter(self, s), 0);
  c->cancel_called_at_enter = braid_scope_cancel_called(s);
  c->cancelled_at_enter = braid_task_cancelled(self);
  c->w.rc_wait = braid_checkpoint_if_cancelled(self);
  scope_wait_end(self, &c->w, s);
  return 0;
}

static void test_scope_deadline_already_past_cancels_at_first_checkpoint(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(past_deadline_root, &c), 0);
  assert_int_equal(c.cancel_called_at_enter, 1);
  assert_int_equal(c.cancelled_at_enter, 1);
  assert_scope_wait(&c.w, BRAID_ECANCELED, 0, 0, 1);
}

static int deadline_wakes_sleeper_root(braid_task *self, void *arg) {
  struct deadline_ctx *c = arg;
  c->w.t0 = braid_now(self);
  braid_scope *s = enter_new_scope(self, c->w.t0 + 5 * SEC, 0);
  CHECK_INT(braid_scope_cancel_called(s), 0);
  c->w.rc_wait = braid_sleep(self, 10 * SEC);
  scope_wait_end(self, &c->w, s);
  return 0;
}

static void test_scope_deadline_cancels_a_sleep_at_the_deadline(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual_at(deadline_wakes_sleeper_root, &c, 100 * SEC), 0);
  assert_scope_wait(&c.w, BRAID_ECANCELED, 5 * SEC, 0, 1);
  assert_int_equal(c.w.cancel_called, 1);
}

static int set_deadline_later_root(braid_task *self, void *arg) {
  struct deadline_ctx *c = arg;
  braid_scope *s = scope_wait_move_on_after(self, &c->w, SEC);
  CHECK_INT(braid_scope_set_deadline(s, c->w.t0 + 5 * SEC), 0);
  c->w.deadline = braid_scope_deadline(s);
  c->rc_first = braid_sleep(self, 3 * SEC);
  c->first_woke_at = braid_now(self);
  c->w.rc_wait = braid_sleep(self, 10 * SEC);
  scope_wait_end(self, &c->w, s);
  return 0;
}

static void test_scope_set_deadline_later_postpones_the_cancel(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(set_deadline_later_root, &c), 0);
  assert_int_equal(c.w.deadline, c.w.t0 + 5 * SEC);
  assert_int_equal(c.rc_first, 0);
  assert_int_equal(c.first_woke_at, c.w.t0 + 3 * SEC);
  assert_scope_wait(&c.w, BRAID_ECANCELED, 5 * SEC, 0, 1);
}

static int set_deadline_earlier_root(braid_task *self, void *arg) {
  struct deadline_ctx *c = arg;
  braid_scope *s = scope_wait_move_on_after(self, &c->w, 10 * SEC);
  CHECK_INT(braid_sleep(self, SEC), 0);
  CHECK_INT(braid_scope_set_deadline(s, c->w.t0 + 2 * SEC), 0);
  c->w.rc_wait = braid_sleep(self, 5 * SEC);
  scope_wait_end(self, &c->w, s);
  /* Moving the deadline into the past cancels at once. */
  s = scope_wait_move_on_after(self, &c->w2, 10 * SEC);
  CHECK_INT(braid_scope_set_deadline(s, braid_now(self) - 1), 0);
  c->cancel_called_at_enter = braid_scope_cancel_called(s);
  c->w2.rc_wait = braid_checkpoint_if_cancelled(self);
  scope_wait_end(self, &c->w2, s);
  return 0;
}

static void test_scope_set_deadline_earlier_cancels_sooner_and_past_cancels_now(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(set_deadline_earlier_root, &c), 0);
  assert_scope_wait(&c.w, BRAID_ECANCELED, 2 * SEC, 0, 1);
  assert_int_equal(c.cancel_called_at_enter, 1);
  assert_scope_wait(&c.w2, BRAID_ECANCELED, 0, 0, 1);
}

static int remove_deadline_root(braid_task *self, void *arg) {
  struct deadline_ctx *c = arg;
  braid_scope *s = scope_wait_move_on_after(self, &c->w, SEC);
  CHECK_INT(braid_scope_set_deadline(s, BRAID_NEVER), 0);
  c->w.deadline = braid_scope_deadline(s);
  c->w.rc_wait = braid_sleep(self, 5 * SEC);
  scope_wait_end(self, &c->w, s);
  return 0;
}

static void test_scope_set_deadline_never_removes_the_deadline(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(remove_deadline_root, &c), 0);
  assert_int_equal(c.w.deadline, BRAID_NEVER);
  assert_scope_wait(&c.w, 0, 5 * SEC, 0, 0);
  assert_int_equal(c.w.cancel_called, 0);
}

static int deadline_set_before_enter_root(braid_task *self, void *arg) {
  struct deadline_ctx *c = arg;
  c->w.t0 = braid_now(self);
  braid_scope *s = new_scope(BRAID_NEVER, 0);
  CHECK_INT(braid_scope_set_deadline(s, c->w.t0 + 2 * SEC), 0);
  CHECK_INT(braid_scope_enter(self, s), 0);
  c->w.rc_wait = braid_sleep_forever(self);
  scope_wait_end(self, &c->w, s);
  return 0;
}

static void test_scope_deadline_set_before_enter_applies_after_enter(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(deadline_set_before_enter_root, &c), 0);
  assert_scope_wait(&c.w, BRAID_ECANCELED, 2 * SEC, 0, 1);
}

static int move_on_after_root(braid_task *self, void *arg) {
  struct deadline_ctx *c = arg;
  braid_scope *s = scope_wait_move_on_after(self, &c->w, 3 * SEC);
  c->w.rc_wait = braid_sleep(self, 10 * SEC);
  scope_wait_end(self, &c->w, s);
  return 0;
}

static void test_move_on_after_catches_and_sets_cancelled_caught(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual_at(move_on_after_root, &c, 4 * SEC), 0);
  assert_int_equal(c.w.deadline, c.w.t0 + 3 * SEC);
  assert_scope_wait(&c.w, BRAID_ECANCELED, 3 * SEC, 0, 1);
  assert_int_equal(c.w.cancel_called, 1);
}

static int move_on_after_in_time_root(braid_task *self, void *arg) {
  struct deadline_ctx *c = arg;
  braid_scope *s = scope_wait_move_on_after(self, &c->w, 3 * SEC);
  c->w.rc_wait = braid_sleep(self, SEC);
  scope_wait_end(self, &c->w, s);
  /* The expired deadline of a scope already left does nothing. */
  CHECK_INT(braid_sleep(self, 5 * SEC), 0);
  return 0;
}

static void test_move_on_after_body_finishing_in_time_is_not_cancelled(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(move_on_after_in_time_root, &c), 0);
  assert_scope_wait(&c.w, 0, SEC, 0, 0);
  assert_int_equal(c.w.cancel_called, 0);
}

static int move_on_after_zero_root(braid_task *self, void *arg) {
  struct deadline_ctx *c = arg;
  braid_scope *s = scope_wait_move_on_after(self, &c->w, 0);
  c->cancel_called_at_enter = braid_scope_cancel_called(s); /* a deadline of now cancels at once */
  c->w.rc_wait = braid_sleep(self, SEC);
  scope_wait_end(self, &c->w, s);
  return 0;
}

static void test_move_on_after_zero_cancels_the_next_wait_without_time_passing(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(move_on_after_zero_root, &c), 0);
  assert_int_equal(c.cancel_called_at_enter, 1);
  assert_scope_wait(&c.w, BRAID_ECANCELED, 0, 0, 1);
}

static int move_on_after_huge_root(braid_task *self, void *arg) {
  struct deadline_ctx *c = arg;
  braid_scope *s = scope_wait_move_on_after(self, &c->w, BRAID_NEVER);
  c->cancel_called_at_enter = braid_scope_cancel_called(s);
  c->w.rc_wait = braid_sleep(self, SEC);
  scope_wait_end(self, &c->w, s);
  return 0;
}

static void test_move_on_after_huge_duration_saturates_to_never(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual_at(move_on_after_huge_root, &c, 1000 * SEC), 0);
  assert_int_equal(c.w.deadline, BRAID_NEVER);
  assert_int_equal(c.cancel_called_at_enter, 0);
  assert_scope_wait(&c.w, 0, SEC, 0, 0);
}

static int fail_after_root(braid_task *self, void *arg) {
  struct deadline_ctx *c = arg;
  braid_scope *s = scope_wait_fail_after(self, &c->w, 2 * SEC);
  c->w.rc_wait = braid_sleep(self, 10 * SEC);
  scope_wait_end(self, &c->w, s);
  return 0;
}

static void test_fail_after_returns_etimedout_when_the_deadline_passes(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(fail_after_root, &c), 0);
  assert_int_equal(c.w.deadline, c.w.t0 + 2 * SEC);
  assert_scope_wait(&c.w, BRAID_ECANCELED, 2 * SEC, BRAID_ETIMEDOUT, 1);
}

struct fail_after_more_ctx {
  int rc_in_time, rc_explicit_cancel, caught_explicit, rc_flag_scope;
};

static int fail_after_other_root(braid_task *self, void *arg) {
  struct fail_after_more_ctx *c = arg;
  braid_scope *s = NULL;
  /* In time: nothing happens. */
  CHECK_INT(braid_fail_after(self, 2 * SEC, &s), 0);
  c->rc_in_time = leave_scope(s, braid_sleep(self, SEC), NULL);
  /* Explicit cancel before the deadline: caught, no timeout. */
  CHECK_INT(braid_fail_after(self, 20 * SEC, &s), 0);
  CHECK_INT(braid_scope_cancel(s), 0);
  c->rc_explicit_cancel = leave_scope(s, braid_sleep(self, SEC), &c->caught_explicit);
  /* A scope made with the BRAID_FAIL flag is a fail_after. */
  s = enter_new_scope(self, braid_now(self) + SEC, BRAID_FAIL);
  c->rc_flag_scope = leave_scope(s, braid_sleep_forever(self), NULL);
  return 0;
}

static void test_fail_after_in_time_or_cancelled_explicitly_does_not_time_out(void **state) {
  (void)state;
  struct fail_after_more_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(fail_after_other_root, &c), 0);
  assert_int_equal(c.rc_in_time, 0);
  assert_int_equal(c.rc_explicit_cancel, 0);
  assert_int_equal(c.caught_explicit, 1);
  assert_int_equal(c.rc_flag_scope, BRAID_ETIMEDOUT);
}

static int fail_after_passed_but_not_delivered_root(braid_task *self, void *arg) {
  struct deadline_ctx *c = arg;
  braid_scope *s = scope_wait_fail_after(self, &c->w, SEC);
  CHECK_INT(shielded_sleep(self, 2 * SEC), 0); /* the deadline passes in here */
  /* The body finished without seeing the cancellation: nothing to catch. */
  c->w.rc_wait = 0;
  scope_wait_end(self, &c->w, s);
  return 0;
}

static void test_fail_after_whose_cancel_was_never_delivered_returns_the_body_result(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(fail_after_passed_but_not_delivered_root, &c), 0);
  assert_int_equal(c.w.cancel_called, 1);
  assert_scope_wait(&c.w, 0, 2 * SEC, 0, 0);
}

static int negative_duration_root(braid_task *self, void *arg) {
  struct deadline_ctx *c = arg;
  braid_scope *s = scope_wait_move_on_after(self, &c->w, -SEC);
  c->cancel_called_at_enter = braid_scope_cancel_called(s);
  c->w.rc_wait = braid_checkpoint_if_cancelled(self);
  scope_wait_end(self, &c->w, s);
  return 0;
}

static void test_move_on_after_negative_duration_is_already_cancelled(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual_at(negative_duration_root, &c, 10 * SEC), 0);
  assert_int_equal(c.w.deadline, c.w.t0 - SEC);
  assert_int_equal(c.cancel_called_at_enter, 1);
  assert_scope_wait(&c.w, BRAID_ECANCELED, 0, 0, 1);
}

/* ---- effective deadline ---------------------------------------------- */

struct eff_ctx {
  braid_time_t none, outer_only, inner_later, inner_earlier, shielded_later, shielded_never, cancelled,
      cancelled_shielded, after_exits;
};

static int effective_deadline_root(braid_task *self, void *arg) {
  struct eff_ctx *c = arg;
  braid_time_t t0 = braid_now(self);
  c->none = braid_current_effective_deadline(self);
  braid_scope *outer = enter_new_scope(self, t0 + 10 * SEC, 0);
  c->outer_only = braid_current_effective_deadline(self);

  braid_scope *later = enter_new_scope(self, t0 + 20 * SEC, 0);
  c->inner_later = braid_current_effective_deadline(self);
  braid_scope *earlier = enter_new_scope(self, t0 + 5 * SEC, 0);
  c->inner_earlier = braid_current_effective_deadline(self);
  CHECK_INT(braid_scope_exit(earlier, 0), 0);
  CHECK_INT(braid_scope_exit(later, 0), 0);

  braid_scope *shield = enter_new_scope(self, t0 + 20 * SEC, BRAID_SHIELD);
  c->shielded_later = braid_current_effective_deadline(self);
  braid_scope *shield_never = enter_new_scope(self, BRAID_NEVER, BRAID_SHIELD);
  c->shielded_never = braid_current_effective_deadline(self);
  CHECK_INT(braid_scope_exit(shield_never, 0), 0);
  CHECK_INT(braid_scope_exit(shield, 0), 0);

  CHECK_INT(braid_scope_cancel(outer), 0);
  c->cancelled = braid_current_effective_deadline(self);
  braid_scope *shield2 = enter_new_scope(self, t0 + 30 * SEC, BRAID_SHIELD);
  c->cancelled_shielded = braid_current_effective_deadline(self);
  CHECK_INT(braid_scope_exit(shield2, 0), 0);
  CHECK_INT(braid_scope_exit(outer, 0), 0);
  c->after_exits = braid_current_effective_deadline(self);

  braid_scope *all[] = {outer, later, earlier, shield, shield_never, shield2};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    CHECK_INT(braid_scope_unref(all[i]), 0);
  return 0;
}

static void test_effective_deadline_with_and_without_shield(void **state) {
  (void)state;
  struct eff_ctx c;
  memset(&c, 0, sizeof c);
  const braid_time_t t0 = 50 * SEC;
  assert_int_equal(run_virtual_at(effective_deadline_root, &c, t0), 0);
  assert_int_equal(c.none, BRAID_NEVER);
  assert_int_equal(c.outer_only, t0 + 10 * SEC);
  assert_int_equal(c.inner_later, t0 + 10 * SEC);
  assert_int_equal(c.inner_earlier, t0 + 5 * SEC);
  assert_int_equal(c.shielded_later, t0 + 20 * SEC);
  assert_int_equal(c.shielded_never, BRAID_NEVER);
  assert_int_equal(c.cancelled, INT64_MIN);
  assert_int_equal(c.cancelled_shielded, t0 + 30 * SEC);
  assert_int_equal(c.after_exits, BRAID_NEVER);
}

/* ---- misnesting ------------------------------------------------------ */

struct misnest_ctx {
  int rc_outer_exit, inner_cancel_called, rc_cp_after, rc_inner_exit, rc_inner_exit_again, outer_caught;
  int rc_inner_exit_zero;
  int rc_exit_twice, rc_exit_never_entered, rc_enter_twice, rc_enter_after_exit;
};

static int misnest_root(braid_task *self, void *arg) {
  struct misnest_ctx *c = arg;
  braid_scope *a = enter_new_scope(self, BRAID_NEVER, 0);
  braid_scope *b = enter_new_scope(self, BRAID_NEVER, 0);
  c->rc_outer_exit = braid_scope_exit(a, 0);
  c->outer_caught = braid_scope_cancelled_caught(a);
  /* b is detached and stays cancelled; the task is back outside a. */
  c->inner_cancel_called = braid_scope_cancel_called(b);
  c->rc_cp_after = braid_checkpoint(self);
  c->rc_inner_exit = braid_scope_exit(b, BRAID_ECANCELED);
  c->rc_inner_exit_again = braid_scope_exit(b, 0);
  CHECK_INT(braid_scope_unref(a), 0);
  CHECK_INT(braid_scope_unref(b), 0);

  /* A detached inner scope exited with 0 returns 0 as well. */
  a = enter_new_scope(self, BRAID_NEVER, 0);
  b = enter_new_scope(self, BRAID_NEVER, 0);
  CHECK_INT(leave_scope(a, 0, NULL), BRAID_ESTATE);
  c->rc_inner_exit_zero = leave_scope(b, 0, NULL);

  /* Order errors that change nothing. */
  a = new_scope(BRAID_NEVER, 0);
  c->rc_exit_never_entered = braid_scope_exit(a, 0);
  CHECK_INT(braid_scope_enter(self, a), 0);
  c->rc_enter_twice = braid_scope_enter(self, a);
  CHECK_INT(braid_scope_exit(a, 0), 0);
  c->rc_exit_twice = braid_scope_exit(a, 0);
  c->rc_enter_after_exit = braid_scope_enter(self, a);
  CHECK_INT(braid_checkpoint(self), 0);
  CHECK_INT(braid_scope_unref(a), 0);
  return 0;
}

static void test_scope_misnested_exit_is_estate_and_inner_exit_returns_rc_unchanged(void **state) {
  (void)state;
  struct misnest_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(misnest_root, &c), 0);
  assert_int_equal(c.rc_outer_exit, BRAID_ESTATE);
  assert_int_equal(c.outer_caught, 0);
  assert_int_equal(c.inner_cancel_called, 1);
  assert_int_equal(c.rc_cp_after, 0);
  assert_int_equal(c.rc_inner_exit, BRAID_ECANCELED);
  assert_int_equal(c.rc_inner_exit_again, BRAID_ESTATE);
  assert_int_equal(c.rc_inner_exit_zero, 0);
  assert_int_equal(c.rc_exit_never_entered, BRAID_ESTATE);
  assert_int_equal(c.rc_enter_twice, BRAID_ESTATE);
  assert_int_equal(c.rc_exit_twice, BRAID_ESTATE);
  assert_int_equal(c.rc_enter_after_exit, BRAID_ESTATE);
}

struct unref_ctx {
  int rc_unref_entered, rc_unref_extra;
};

static int unref_entered_root(braid_task *self, void *arg) {
  struct unref_ctx *c = arg;
  braid_scope *s = enter_new_scope(self, BRAID_NEVER, 0);
  c->rc_unref_entered = braid_scope_unref(s); /* last reference, still entered */
  CHECK_INT(braid_scope_cancel(s), 0);        /* so the scope is still alive */
  CHECK_INT(leave_scope(s, braid_checkpoint(self), NULL), 0);

  s = new_scope(BRAID_NEVER, 0);
  braid_scope_ref(s);
  CHECK_INT(braid_scope_enter(self, s), 0);
  c->rc_unref_extra = braid_scope_unref(s); /* not the last one */
  CHECK_INT(leave_scope(s, 0, NULL), 0);
  return 0;
}

static void test_scope_unref_of_last_reference_while_entered_is_estate(void **state) {
  (void)state;
  struct unref_ctx c = {1, 1};
  assert_int_equal(run_virtual(unref_entered_root, &c), 0);
  assert_int_equal(c.rc_unref_entered, BRAID_ESTATE);
  assert_int_equal(c.rc_unref_extra, 0);
}

/* ---- cancellation from another task ---------------------------------- */

struct other_task_ctx {
  braid_scope *scope;
  braid_time_t t0, woke_at;
  int rc_sleep, rc_exit, caught, rc_foreign_exit;
  int scope_entered;
};

static int scope_sleeper(braid_task *self, void *arg) {
  struct other_task_ctx *c = arg;
  CHECK_INT(braid_scope_enter(self, c->scope), 0);
  c->scope_entered = 1;
  c->rc_sleep = braid_sleep_forever(self);
  c->woke_at = braid_now(self);
  c->rc_exit = braid_scope_exit(c->scope, c->rc_sleep);
  c->caught = braid_scope_cancelled_caught(c->scope);
  return c->rc_exit;
}

static int scope_canceller(braid_task *self, void *arg) {
  struct other_task_ctx *c = arg;
  CHECK_INT(braid_sleep(self, 4 * SEC), 0);
  CHECK_INT(c->scope_entered, 1);
  /* Exiting a scope of another task is refused and changes nothing. */
  c->rc_foreign_exit = braid_scope_exit(c->scope, 0);
  CHECK_INT(braid_scope_cancel(c->scope), 0);
  return 0;
}

static int other_task_root(braid_task *self, void *arg) {
  struct other_task_ctx *c = arg;
  static const braid_fn children[] = {scope_sleeper, scope_canceller};
  c->t0 = braid_now(self);
  c->scope = new_scope(BRAID_NEVER, 0);
  run_children(self, children, 2, c);
  CHECK_INT(braid_scope_unref(c->scope), 0);
  return 0;
}

static void test_scope_cancel_from_another_task_wakes_the_sleeper(void **state) {
  (void)state;
  struct other_task_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(other_task_root, &c), 0);
  assert_int_equal(c.rc_foreign_exit, BRAID_ESTATE);
  assert_int_equal(c.rc_sleep, BRAID_ECANCELED);
  assert_int_equal(c.woke_at, c.t0 + 4 * SEC);
  assert_int_equal(c.rc_exit, 0);
  assert_int_equal(c.caught, 1);
}

/* ---- cancellation from another thread (real clock) ------------------- */

struct thread_cancel_ctx {
  braid_scope *scope; /* the thread's own reference */
  int64_t delay_ns;
  atomic_int rc_cancel;
  atomic_int rc_unref;
  int rc_sleep, rc_exit, caught;
  int64_t real_elapsed;
};

static void thread_cancel_init(struct thread_cancel_ctx *c, int64_t delay_ns) {
  memset(c, 0, sizeof *c);
  c->delay_ns = delay_ns;
  atomic_store(&c->rc_cancel, 1);
  atomic_store(&c->rc_unref, 1);
}

static void *cancel_later_thread(void *arg) {
  struct thread_cancel_ctx *c = arg;
  os_sleep_ns(c->delay_ns);
  atomic_store(&c->rc_cancel, braid_scope_cancel(c->scope));
  atomic_store(&c->rc_unref, braid_scope_unref(c->scope));
  return NULL;
}

/* Hand the thread its own reference to s and start it: s is cancelled
 * (and the reference dropped) from there after c->delay_ns. */
static void cancel_from_thread_later(struct thread_cancel_ctx *c, braid_scope *s, pthread_t *t) {
  c->scope = braid_scope_ref(s);
  CHECK_INT(pthread_create(t, NULL, cancel_later_thread, c), 0);
}

/* The thread cancelled, dropped its reference and both succeeded. */
static void assert_cancelled_from_thread(struct thread_cancel_ctx *c) {
  assert_int_equal(atomic_load(&c->rc_cancel), 0);
  assert_int_equal(atomic_load(&c->rc_unref), 0);
}

static int thread_cancel_root(braid_task *self, void *arg) {
  struct thread_cancel_ctx *c = arg;
  int64_t r0 = real_ns();
  braid_scope *s = enter_new_scope(self, BRAID_NEVER, 0);
  pthread_t t;
  cancel_from_thread_later(c, s, &t);
  c->rc_sleep = braid_sleep(self, 30 * SEC);
  c->real_elapsed = real_ns() - r0;
  c->rc_exit = braid_scope_exit(s, c->rc_sleep);
  c->caught = braid_scope_cancelled_caught(s);
  CHECK_INT(pthread_join(t, NULL), 0);
  CHECK_INT(braid_scope_unref(s), 0);
  return 0;
}

static void test_scope_cancel_from_another_thread_wakes_a_sleeping_task(void **state) {
  (void)state;
  struct thread_cancel_ctx c;
  thread_cancel_init(&c, 30 * BRAID_MSEC);
  assert_int_equal(run_real(thread_cancel_root, &c), 0);
  assert_cancelled_from_thread(&c);
  assert_int_equal(c.rc_sleep, BRAID_ECANCELED);
  assert_true(c.real_elapsed >= 29 * BRAID_MSEC);
  assert_true(c.real_elapsed < 10 * BRAID_SEC);
  assert_int_equal(c.rc_exit, 0);
  assert_int_equal(c.caught, 1);
}

struct thread_cancel_child_ctx {
  struct thread_cancel_ctx tc;
  int child_rc;
};

static int thread_cancel_group_root(braid_task *self, void *arg) {
  struct thread_cancel_child_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, child_sleep_forever, &c->child_rc, NULL, NULL), 0);
  pthread_t t;
  cancel_from_thread_later(&c->tc, braid_group_scope(g), &t);
  /* The root waits in close; only the child sleeps, with no deadline. */
  c->tc.rc_exit = braid_group_close(g, 0);
  c->tc.caught = braid_scope_cancelled_caught(braid_group_scope(g));
  CHECK_INT(braid_group_free(g), 0);
  CHECK_INT(pthread_join(t, NULL), 0);
  return 0;
}

static void test_scope_cancel_of_a_group_from_another_thread_wakes_its_children(void **state) {
  (void)state;
  struct thread_cancel_child_ctx c;
  memset(&c, 0, sizeof c);
  thread_cancel_init(&c.tc, 20 * BRAID_MSEC);
  assert_int_equal(run_real(thread_cancel_group_root, &c), 0);
  assert_cancelled_from_thread(&c.tc);
  assert_int_equal(c.child_rc, BRAID_ECANCELED);
  assert_int_equal(c.tc.rc_exit, 0);
  assert_int_equal(c.tc.caught, 1);
}

struct late_cancel_ctx {
  braid_scope *scope; /* the thread's reference */
  atomic_int rc_cancel;
  int rc_sleep;
  int64_t real_elapsed;
};

static void *cancel_exited_scope(void *arg) {
  struct late_cancel_ctx *c = arg;
  os_sleep_ns(5 * BRAID_MSEC);
  atomic_store(&c->rc_cancel, braid_scope_cancel(c->scope));
  braid_scope_unref(c->scope);
  return NULL;
}

static int late_cancel_root(braid_task *self, void *arg) {
  struct late_cancel_ctx *c = arg;
  braid_scope *s = enter_new_scope(self, BRAID_NEVER, 0);
  c->scope = braid_scope_ref(s);
  CHECK_INT(leave_scope(s, 0, NULL), 0); /* the thread holds the last reference */
  pthread_t t;
  CHECK_INT(pthread_create(&t, NULL, cancel_exited_scope, c), 0);
  int64_t r0 = real_ns();
  c->rc_sleep = braid_sleep(self, 60 * BRAID_MSEC);
  c->real_elapsed = real_ns() - r0;
  CHECK_INT(pthread_join(t, NULL), 0);
  return 0;
}

static void test_scope_cancel_after_exit_from_another_thread_does_not_disturb_the_task(void **state) {
  (void)state;
  struct late_cancel_ctx c;
  memset(&c, 0, sizeof c);
  atomic_store(&c.rc_cancel, 1);
  assert_int_equal(run_real(late_cancel_root, &c), 0);
  assert_int_equal(atomic_load(&c.rc_cancel), 0);
  assert_int_equal(c.rc_sleep, 0);
  assert_true(c.real_elapsed >= 59 * BRAID_MSEC);
}

struct vthread_ctx {
  struct thread_cancel_ctx tc;
  braid_time_t t0, woke_at;
};

static int virtual_thread_cancel_root(braid_task *self, void *arg) {
  struct vthread_ctx *c = arg;
  braid_scope *s = enter_new_scope(self, BRAID_NEVER, 0);
  c->t0 = braid_now(self);
  pthread_t t;
  cancel_from_thread_later(&c->tc, s, &t);
  /* No deadline anywhere: the virtual clock has nothing to jump to and
   * the loop must wait for the other thread. */
  c->tc.rc_sleep = braid_sleep_forever(self);
  c->woke_at = braid_now(self);
  c->tc.rc_exit = braid_scope_exit(s, c->tc.rc_sleep);
  CHECK_INT(pthread_join(t, NULL), 0);
  CHECK_INT(braid_scope_unref(s), 0);
  return 0;
}

static void test_scope_cancel_from_another_thread_wakes_a_task_on_the_virtual_clock(void **state) {
  (void)state;
  struct vthread_ctx c;
  memset(&c, 0, sizeof c);
  thread_cancel_init(&c.tc, 20 * BRAID_MSEC);
  assert_int_equal(run_virtual_at(virtual_thread_cancel_root, &c, 3 * SEC), 0);
  assert_cancelled_from_thread(&c.tc);
  assert_int_equal(c.tc.rc_sleep, BRAID_ECANCELED);
  assert_int_equal(c.woke_at, c.t0); /* virtual time did not move */
  assert_int_equal(c.tc.rc_exit, 0);
}

#define MANY_SLEEPERS 200
#define CANCEL_THREADS 4

struct many_ctx {
  braid_scope *scopes[MANY_SLEEPERS];
  int rc[MANY_SLEEPERS];
  atomic_int entered;
  atomic_int cancel_failures;
  int next;
};

struct canceller_arg {
  struct many_ctx *c;
  int first;
};

static int sleeper_in_own_scope(braid_task *self, void *arg) {
  struct many_ctx *c = arg;
  int me = c->next++;
  CHECK_INT(braid_scope_enter(self, c->scopes[me]), 0);
  atomic_fetch_add(&c->entered, 1);
  c->rc[me] = braid_sleep(self, 30 * SEC);
  return braid_scope_exit(c->scopes[me], c->rc[me]);
}

static void *cancel_a_share(void *arg) {
  struct canceller_arg *a = arg;
  while (atomic_load(&a->c->entered) < MANY_SLEEPERS)
    os_sleep_ns(BRAID_MSEC);
  for (int i = a->first; i < MANY_SLEEPERS; i += CANCEL_THREADS)
    if (braid_scope_cancel(a->c->scopes[i]) != 0) atomic_fetch_add(&a->c->cancel_failures, 1);
  return NULL;
}

static int many_threads_root(braid_task *self, void *arg) {
  struct many_ctx *c = arg;
  for (int i = 0; i < MANY_SLEEPERS; i++)
    c->scopes[i] = new_scope(BRAID_NEVER, 0);
  braid_group *g = open_group(self);
  for (int i = 0; i < MANY_SLEEPERS; i++)
    CHECK_INT(braid_group_spawn(g, sleeper_in_own_scope, c, NULL, NULL), 0);
  pthread_t t[CANCEL_THREADS];
  struct canceller_arg a[CANCEL_THREADS];
  for (int i = 0; i < CANCEL_THREADS; i++) {
    a[i].c = c;
    a[i].first = i;
    CHECK_INT(pthread_create(&t[i], NULL, cancel_a_share, &a[i]), 0);
  }
  close_group(g);
  for (int i = 0; i < CANCEL_THREADS; i++)
    CHECK_INT(pthread_join(t[i], NULL), 0);
  for (int i = 0; i < MANY_SLEEPERS; i++)
    CHECK_INT(braid_scope_unref(c->scopes[i]), 0);
  return 0;
}

static void test_scope_cancels_from_several_threads_wake_every_sleeper(void **state) {
  (void)state;
  struct many_ctx *c = calloc(1, sizeof *c);
  assert_non_null(c);
  int64_t r0 = real_ns();
  assert_int_equal(run_real(many_threads_root, c), 0);
  int64_t elapsed = real_ns() - r0;
  assert_int_equal(atomic_load(&c->cancel_failures), 0);
  for (int i = 0; i < MANY_SLEEPERS; i++)
    assert_int_equal(c->rc[i], BRAID_ECANCELED);
  free(c);
  assert_true(elapsed < 20 * BRAID_SEC);
}

#define RACE_ROUNDS 200

struct race_ctx {
  braid_scope *thread_ref;
  int64_t thread_delay_ns;
  int bad_exit, cancelled_rounds, completed_rounds;
  atomic_int bad_cancel;
};

static void *race_cancel(void *arg) {
  struct race_ctx *c = arg;
  os_sleep_ns(c->thread_delay_ns);
  if (braid_scope_cancel(c->thread_ref) != 0) atomic_fetch_add(&c->bad_cancel, 1);
  if (braid_scope_unref(c->thread_ref) != 0) atomic_fetch_add(&c->bad_cancel, 1);
  return NULL;
}

static int race_root(braid_task *self, void *arg) {
  struct race_ctx *c = arg;
  for (int i = 0; i < RACE_ROUNDS; i++) {
    braid_scope *s = enter_new_scope(self, BRAID_NEVER, 0);
    c->thread_ref = braid_scope_ref(s);
    c->thread_delay_ns = (i % 7) * 40 * BRAID_USEC;
    pthread_t t;
    CHECK_INT(pthread_create(&t, NULL, race_cancel, c), 0);
    int rc = braid_sleep(self, (i % 5) * 50 * BRAID_USEC);
    if (rc == BRAID_ECANCELED)
      c->cancelled_rounds++;
    else if (rc == 0)
      c->completed_rounds++;
    /* Whatever happened, the scope catches its own cancellation. */
    if (leave_scope(s, rc, NULL) != 0) c->bad_exit++;
    CHECK_INT(pthread_join(t, NULL), 0);
    CHECK_INT(braid_checkpoint(self), 0); /* nothing leaks into the next round */
  }
  return 0;
}

static void test_scope_cancel_from_another_thread_racing_with_exit_is_safe(void **state) {
  (void)state;
  struct race_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(race_root, &c), 0);
  assert_int_equal(atomic_load(&c.bad_cancel), 0);
  assert_int_equal(c.bad_exit, 0);
  assert_int_equal(c.cancelled_rounds + c.completed_rounds, RACE_ROUNDS);
}

/* ---- more about deadlines and shields -------------------------------- */

struct sticky_ctx {
  int cancel_called_after_remove, rc_cp, rc_exit;
  scope_wait own; /* in a shield with a deadline of its own */
};

static int sticky_cancel_root(braid_task *self, void *arg) {
  struct sticky_ctx *c = arg;
  braid_scope *s = NULL;
  CHECK_INT(braid_move_on_after(self, SEC, &s), 0);
  CHECK_INT(braid_sleep(self, 2 * SEC), BRAID_ECANCELED);
  /* Removing the deadline after it fired does not un-cancel. */
  CHECK_INT(braid_scope_set_deadline(s, BRAID_NEVER), 0);
  c->cancel_called_after_remove = braid_scope_cancel_called(s);
  c->rc_cp = braid_checkpoint(self);
  c->rc_exit = leave_scope(s, c->rc_cp, NULL);

  /* A shield keeps outer cancellations out, not its own deadline. */
  braid_scope *outer = NULL;
  c->own.t0 = braid_now(self);
  braid_scope *shield = inside_cancelled_outer(self, c->own.t0 + SEC, BRAID_SHIELD, &outer);
  c->own.rc_wait = braid_sleep(self, 5 * SEC);
  scope_wait_end(self, &c->own, shield);
  CHECK_INT(leave_scope(outer, braid_checkpoint(self), NULL), 0);
  return 0;
}

static void test_scope_cancel_is_sticky_and_a_shield_does_not_block_its_own_deadline(void **state) {
  (void)state;
  struct sticky_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(sticky_cancel_root, &c), 0);
  assert_int_equal(c.cancel_called_after_remove, 1);
  assert_int_equal(c.rc_cp, BRAID_ECANCELED);
  assert_int_equal(c.rc_exit, 0);
  assert_scope_wait(&c.own, BRAID_ECANCELED, SEC, 0, 1);
}

/* ---- scopes on a plain thread ---------------------------------------- */

struct plain_thread_ctx {
  int rc_new, rc_enter, rc_exit, rc_unref, rc_exit_cancelled, caught;
  braid_time_t deadline, effective;
};

static void *plain_thread_scopes(void *arg) {
  struct plain_thread_ctx *c = arg;
  braid_scope *s = NULL;
  c->deadline = braid_now(NULL) + 60 * SEC;
  c->rc_new = braid_scope_new(c->deadline, 0, &s);
  if (c->rc_new != 0) return NULL;
  c->rc_enter = braid_scope_enter(NULL, s);
  c->effective = braid_current_effective_deadline(NULL);
  c->rc_exit = braid_scope_exit(s, 0);
  c->rc_unref = braid_scope_unref(s);

  if (braid_scope_new(BRAID_NEVER, 0, &s) != 0) return NULL;
  if (braid_scope_enter(NULL, s) != 0) return NULL;
  braid_scope_cancel(s);
  c->rc_exit_cancelled = braid_scope_exit(s, BRAID_ECANCELED);
  c->caught = braid_scope_cancelled_caught(s);
  braid_scope_unref(s);
  return NULL;
}

static void test_scope_plain_thread_enters_its_own_scope_with_null_task(void **state) {
  (void)state;
  struct plain_thread_ctx c;
  memset(&c, 0, sizeof c);
  c.rc_new = c.rc_enter = c.rc_exit = c.rc_unref = c.rc_exit_cancelled = 1;
  assert_int_equal(in_thread(plain_thread_scopes, &c), 0);
  assert_int_equal(c.rc_new, 0);
  assert_int_equal(c.rc_enter, 0);
  assert_int_equal(c.effective, c.deadline);
  assert_int_equal(c.rc_exit, 0);
  assert_int_equal(c.rc_unref, 0);
  assert_int_equal(c.rc_exit_cancelled, 0);
  assert_int_equal(c.caught, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_scope_new_reports_its_properties),
      BT(test_scope_cancel_before_enter_is_recorded),
      BT(test_scope_extra_reference_keeps_it_alive),
      BT(test_scope_cancel_fails_every_checkpoint_until_exit_catches),
      BT(test_scope_cancelled_before_enter_fails_first_checkpoint),
      BT(test_scope_exit_catches_only_ecanceled_of_a_cancelled_scope),
      BT(test_scope_inner_does_not_catch_when_outer_is_cancelled),
      BT(test_scope_inner_catches_its_own_cancel),
      BT(test_scope_shield_blocks_outer_cancel),
      BT(test_scope_shielded_inner_catches_own_cancel_inside_cancelled_outer),
      BT(test_scope_set_shield_off_reexposes_outer_cancel),
      BT(test_scope_cancel_is_delivered_in_cleanup_and_shield_lets_cleanup_sleep),
      BT(test_scope_deadline_already_past_cancels_at_first_checkpoint),
      BT(test_scope_deadline_cancels_a_sleep_at_the_deadline),
      BT(test_scope_set_deadline_later_postpones_the_cancel),
      BT(test_scope_set_deadline_earlier_cancels_sooner_and_past_cancels_now),
      BT(test_scope_set_deadline_never_removes_the_deadline),
      BT(test_scope_deadline_set_before_enter_applies_after_enter),
      BT(test_move_on_after_catches_and_sets_cancelled_caught),
      BT(test_move_on_after_body_finishing_in_time_is_not_cancelled),
      BT(test_move_on_after_zero_cancels_the_next_wait_without_time_passing),
      BT(test_move_on_after_huge_duration_saturates_to_never),
      BT(test_fail_after_returns_etimedout_when_the_deadline_passes),
      BT(test_fail_after_in_time_or_cancelled_explicitly_does_not_time_out),
      BT(test_fail_after_whose_cancel_was_never_delivered_returns_the_body_result),
      BT(test_effective_deadline_with_and_without_shield),
      BT(test_scope_misnested_exit_is_estate_and_inner_exit_returns_rc_unchanged),
      BT(test_scope_unref_of_last_reference_while_entered_is_estate),
      BT(test_scope_cancel_from_another_task_wakes_the_sleeper),
      BT(test_scope_cancel_from_another_thread_wakes_a_sleeping_task),
      BT(test_scope_cancel_of_a_group_from_another_thread_wakes_its_children),
      BT(test_scope_cancel_after_exit_from_another_thread_does_not_disturb_the_task),
      BT(test_scope_cancel_from_another_thread_wakes_a_task_on_the_virtual_clock),
      BT(test_scope_cancels_from_several_threads_wake_every_sleeper),
      BT(test_scope_cancel_from_another_thread_racing_with_exit_is_safe),
      BT(test_move_on_after_negative_duration_is_already_cancelled),
      BT(test_scope_cancel_is_sticky_and_a_shield_does_not_block_its_own_deadline),
      BT(test_scope_plain_thread_enters_its_own_scope_with_null_task),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
