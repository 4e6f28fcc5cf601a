/*
 * test_stepped.c — the key semantics again with stepped tasks: bodies are
 * state machines (AWAIT in helpers.h) driven by braid_run_stepped and
 * braid_group_spawn_stepped; blocking calls return BRAID_EPENDING and the
 * outcome arrives as `resume` of the next step.
 */
#include "helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define SEC BRAID_SEC

static braid_scope *new_scope(braid_time_t deadline, unsigned flags) {
  braid_scope *s = NULL;
  CHECK_INT(braid_scope_new(deadline, flags, &s), 0);
  return s;
}

/* ---- the step protocol ------------------------------------------------ */

struct proto_ctx {
  co_state co;
  int steps;
  int resumes[4];
  int rc_cp, rc_sleep, rc_sleep0;
  int is_stepped, current_is_self;
  braid_time_t t0, after_sleep;
  uint64_t stats_steps;
};

static int proto_root(braid_task *self, void *ctx, int resume) {
  struct proto_ctx *c = ctx;
  if (c->steps < 4) c->resumes[c->steps] = resume;
  c->steps++;
  switch (c->co.pc) {
  case 0:
    c->is_stepped = braid_task_is_stepped(self);
    c->current_is_self = braid_current_task() == self;
    c->t0 = braid_now(self);
    c->rc_cp = braid_checkpoint(self);
    if (c->rc_cp != BRAID_EPENDING) return -100;
    c->co.pc = 1;
    return BRAID_EPENDING;
  case 1:
    c->rc_sleep = braid_sleep(self, 2 * SEC);
    if (c->rc_sleep != BRAID_EPENDING) return -101;
    c->co.pc = 2;
    return BRAID_EPENDING;
  case 2:
    c->after_sleep = braid_now(self);
    c->rc_sleep0 = braid_sleep(self, 0);
    if (c->rc_sleep0 != BRAID_EPENDING) return -102;
    c->co.pc = 3;
    return BRAID_EPENDING;
  case 3: {
    braid_loop_stats st = {.size = sizeof st};
    CHECK_INT(braid_loop_get_stats(braid_task_loop(self), &st), 0);
    c->stats_steps = st.steps;
    return 17;
  }
  }
  return CO_FELL_OFF;
}

static void test_stepped_waits_return_pending_and_the_outcome_arrives_as_resume(void **state) {
  (void)state;
  struct proto_ctx c;
  memset(&c, 0, sizeof c);
  for (int i = 0; i < 4; i++)
    c.resumes[i] = -1;
  assert_int_equal(run_stepped_virtual(proto_root, &c), 17);
  assert_int_equal(c.is_stepped, 1);
  assert_int_equal(c.current_is_self, 1);
  assert_int_equal(c.rc_cp, BRAID_EPENDING);
  assert_int_equal(c.rc_sleep, BRAID_EPENDING);
  assert_int_equal(c.rc_sleep0, BRAID_EPENDING);
  assert_int_equal(c.steps, 4);
  assert_true(c.stats_steps >= 1); /* the steps before the last one were counted */
  for (int i = 0; i < 4; i++)
    assert_int_equal(c.resumes[i], 0);
  assert_int_equal(c.after_sleep, c.t0 + 2 * SEC);
}

struct cancel_resume_ctx {
  co_state co;
  braid_scope *s;
  int rc_sleep, rc_cp, rc_ifc, rc_shielded, rc_exit, caught;
  braid_time_t t0, woke_at;
};

static int cancel_resume_root(braid_task *self, void *ctx, int resume) {
  struct cancel_resume_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->t0 = braid_now(self);
    CHECK_INT(braid_move_on_after(self, 3 * SEC, &c->s), 0);
    AWAIT(&c->co, braid_sleep(self, 10 * SEC));
    c->rc_sleep = c->co.rc;
    c->woke_at = braid_now(self);
    /* Level-triggered on stepped tasks too. */
    AWAIT(&c->co, braid_checkpoint(self));
    c->rc_cp = c->co.rc;
    c->rc_ifc = braid_checkpoint_if_cancelled(self);
    AWAIT(&c->co, braid_cancel_shielded_checkpoint(self));
    c->rc_shielded = c->co.rc;
    c->rc_exit = braid_scope_exit(c->s, c->rc_sleep);
    c->caught = braid_scope_cancelled_caught(c->s);
    CHECK_INT(braid_scope_unref(c->s), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_deadline_arrives_as_ecanceled_resume_and_stays(void **state) {
  (void)state;
  struct cancel_resume_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(cancel_resume_root, &c), 0);
  assert_int_equal(c.rc_sleep, BRAID_ECANCELED);
  assert_int_equal(c.woke_at, c.t0 + 3 * SEC);
  assert_int_equal(c.rc_cp, BRAID_ECANCELED);
  assert_int_equal(c.rc_ifc, BRAID_ECANCELED);
  assert_int_equal(c.rc_shielded, 0);
  assert_int_equal(c.co.immediate, 0); /* every wait above pended */
  assert_int_equal(c.rc_exit, 0);
  assert_int_equal(c.caught, 1);
}

struct cancelled_wait_ctx {
  co_state co;
  braid_scope *s;
  int rc_sleep_raw, rc_sleep, rc_forever_raw, rc_forever, rc_cp_raw, rc_cp;
};

static int cancelled_wait_root(braid_task *self, void *ctx, int resume) {
  struct cancelled_wait_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->s = new_scope(BRAID_NEVER, 0);
    CHECK_INT(braid_scope_enter(self, c->s), 0);
    CHECK_INT(braid_scope_cancel(c->s), 0);
    c->rc_sleep_raw = braid_sleep(self, SEC);
    if (c->rc_sleep_raw == BRAID_EPENDING) {
      c->co.pc = 1;
      return BRAID_EPENDING;
    }
    /* fall through with the immediate result */
    resume = c->rc_sleep_raw;
    /* FALLTHROUGH */
  case 1:
    c->rc_sleep = resume;
    c->rc_forever_raw = braid_sleep_forever(self);
    if (c->rc_forever_raw == BRAID_EPENDING) {
      c->co.pc = 2;
      return BRAID_EPENDING;
    }
    resume = c->rc_forever_raw;
    /* FALLTHROUGH */
  case 2:
    c->rc_forever = resume;
    c->rc_cp_raw = braid_checkpoint(self);
    if (c->rc_cp_raw == BRAID_EPENDING) {
      c->co.pc = 3;
      return BRAID_EPENDING;
    }
    resume = c->rc_cp_raw;
    /* FALLTHROUGH */
  case 3:
    c->rc_cp = resume;
    CHECK_INT(braid_scope_exit(c->s, BRAID_ECANCELED), 0);
    CHECK_INT(braid_scope_unref(c->s), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

/* On a stepped task a blocking call registers its wait and returns
 * BRAID_EPENDING, also inside a cancelled scope; the ECANCELED arrives as
 * the next resume (after the yield every checkpoint makes). */
static void test_stepped_waits_in_a_cancelled_scope_pend_and_resume_with_ecanceled(void **state) {
  (void)state;
  struct cancelled_wait_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(cancelled_wait_root, &c), 0);
  assert_int_equal(c.rc_cp_raw, BRAID_EPENDING);
  assert_int_equal(c.rc_cp, BRAID_ECANCELED);
  assert_int_equal(c.rc_sleep, BRAID_ECANCELED);
  assert_int_equal(c.rc_forever, BRAID_ECANCELED);
  assert_int_equal(c.rc_sleep_raw, BRAID_EPENDING);
  assert_int_equal(c.rc_forever_raw, BRAID_EPENDING);
}

/* ---- scopes ------------------------------------------------------------- */

struct shield_ctx {
  co_state co;
  braid_scope *outer, *shield;
  braid_time_t t0, after_sleep;
  int rc_cp_in, rc_sleep_in, rc_shield_exit, rc_cp_after, rc_outer_exit, outer_caught;
};

static int shield_root(braid_task *self, void *ctx, int resume) {
  struct shield_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->t0 = braid_now(self);
    c->outer = new_scope(BRAID_NEVER, 0);
    c->shield = new_scope(BRAID_NEVER, BRAID_SHIELD);
    CHECK_INT(braid_scope_enter(self, c->outer), 0);
    CHECK_INT(braid_scope_enter(self, c->shield), 0);
    CHECK_INT(braid_scope_cancel(c->outer), 0);
    AWAIT(&c->co, braid_checkpoint(self));
    c->rc_cp_in = c->co.rc;
    AWAIT(&c->co, braid_sleep(self, 2 * SEC));
    c->rc_sleep_in = c->co.rc;
    c->after_sleep = braid_now(self);
    c->rc_shield_exit = braid_scope_exit(c->shield, 0);
    AWAIT(&c->co, braid_checkpoint(self));
    c->rc_cp_after = c->co.rc;
    c->rc_outer_exit = braid_scope_exit(c->outer, c->rc_cp_after);
    c->outer_caught = braid_scope_cancelled_caught(c->outer);
    CHECK_INT(braid_scope_unref(c->shield), 0);
    CHECK_INT(braid_scope_unref(c->outer), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_shield_blocks_outer_cancel(void **state) {
  (void)state;
  struct shield_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(shield_root, &c), 0);
  assert_int_equal(c.rc_cp_in, 0);
  assert_int_equal(c.rc_sleep_in, 0);
  assert_int_equal(c.after_sleep, c.t0 + 2 * SEC);
  assert_int_equal(c.rc_shield_exit, 0);
  assert_int_equal(c.rc_cp_after, BRAID_ECANCELED);
  assert_int_equal(c.rc_outer_exit, 0);
  assert_int_equal(c.outer_caught, 1);
}

struct nest_ctx {
  co_state co;
  braid_scope *outer, *inner;
  int rc_cp, rc_inner_exit, inner_caught, rc_outer_exit, outer_caught;
};

static int nest_root(braid_task *self, void *ctx, int resume) {
  struct nest_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->outer = new_scope(BRAID_NEVER, 0);
    c->inner = new_scope(BRAID_NEVER, 0);
    CHECK_INT(braid_scope_enter(self, c->outer), 0);
    CHECK_INT(braid_scope_enter(self, c->inner), 0);
    CHECK_INT(braid_scope_cancel(c->inner), 0);
    CHECK_INT(braid_scope_cancel(c->outer), 0);
    AWAIT(&c->co, braid_checkpoint(self));
    c->rc_cp = c->co.rc;
    c->rc_inner_exit = braid_scope_exit(c->inner, c->rc_cp);
    c->inner_caught = braid_scope_cancelled_caught(c->inner);
    c->rc_outer_exit = braid_scope_exit(c->outer, c->rc_inner_exit);
    c->outer_caught = braid_scope_cancelled_caught(c->outer);
    CHECK_INT(braid_scope_unref(c->inner), 0);
    CHECK_INT(braid_scope_unref(c->outer), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_inner_does_not_catch_when_outer_is_cancelled(void **state) {
  (void)state;
  struct nest_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(nest_root, &c), 0);
  assert_int_equal(c.rc_cp, BRAID_ECANCELED);
  assert_int_equal(c.rc_inner_exit, BRAID_ECANCELED);
  assert_int_equal(c.inner_caught, 0);
  assert_int_equal(c.rc_outer_exit, 0);
  assert_int_equal(c.outer_caught, 1);
}

struct deadline_ctx {
  co_state co;
  braid_scope *s;
  braid_time_t t0, woke_at, woke_at2;
  int rc1, rc2, rc_exit, caught, cancel_called;
};

static int past_deadline_root(braid_task *self, void *ctx, int resume) {
  struct deadline_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    AWAIT(&c->co, braid_sleep(self, 5 * SEC));
    CHECK_INT(c->co.rc, 0);
    c->t0 = braid_now(self);
    c->s = new_scope(c->t0 - SEC, 0);
    CHECK_INT(braid_scope_enter(self, c->s), 0);
    c->cancel_called = braid_scope_cancel_called(c->s);
    AWAIT(&c->co, braid_checkpoint(self));
    c->rc1 = c->co.rc;
    c->woke_at = braid_now(self);
    c->rc_exit = braid_scope_exit(c->s, c->rc1);
    c->caught = braid_scope_cancelled_caught(c->s);
    CHECK_INT(braid_scope_unref(c->s), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_deadline_already_past_cancels_at_first_checkpoint(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(past_deadline_root, &c), 0);
  assert_int_equal(c.cancel_called, 1);
  assert_int_equal(c.rc1, BRAID_ECANCELED);
  assert_int_equal(c.woke_at, c.t0);
  assert_int_equal(c.rc_exit, 0);
  assert_int_equal(c.caught, 1);
}

static int cancel_before_enter_root(braid_task *self, void *ctx, int resume) {
  struct deadline_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->s = new_scope(BRAID_NEVER, 0);
    CHECK_INT(braid_scope_cancel(c->s), 0);
    CHECK_INT(braid_scope_enter(self, c->s), 0);
    AWAIT(&c->co, braid_sleep(self, SEC));
    c->rc1 = c->co.rc;
    c->rc_exit = braid_scope_exit(c->s, c->rc1);
    c->caught = braid_scope_cancelled_caught(c->s);
    CHECK_INT(braid_scope_unref(c->s), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_scope_cancelled_before_enter_fails_first_wait(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(cancel_before_enter_root, &c), 0);
  assert_int_equal(c.rc1, BRAID_ECANCELED);
  assert_int_equal(c.rc_exit, 0);
  assert_int_equal(c.caught, 1);
}

struct cleanup_ctx {
  co_state co;
  braid_scope *s, *shield;
  braid_time_t t0, done_at;
  int rc_body, rc_cleanup_cp, rc_cleanup_sleep, rc_shielded_sleep, rc_after_shield, rc_exit;
};

static int cleanup_root(braid_task *self, void *ctx, int resume) {
  struct cleanup_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->t0 = braid_now(self);
    CHECK_INT(braid_move_on_after(self, SEC, &c->s), 0);
    AWAIT(&c->co, braid_sleep_forever(self));
    c->rc_body = c->co.rc;
    AWAIT(&c->co, braid_checkpoint(self));
    c->rc_cleanup_cp = c->co.rc;
    AWAIT(&c->co, braid_sleep(self, SEC));
    c->rc_cleanup_sleep = c->co.rc;
    c->shield = new_scope(BRAID_NEVER, BRAID_SHIELD);
    CHECK_INT(braid_scope_enter(self, c->shield), 0);
    AWAIT(&c->co, braid_sleep(self, 3 * SEC));
    c->rc_shielded_sleep = c->co.rc;
    c->done_at = braid_now(self);
    CHECK_INT(braid_scope_exit(c->shield, c->rc_shielded_sleep), 0);
    AWAIT(&c->co, braid_checkpoint(self));
    c->rc_after_shield = c->co.rc;
    c->rc_exit = braid_scope_exit(c->s, c->rc_body);
    CHECK_INT(braid_scope_unref(c->shield), 0);
    CHECK_INT(braid_scope_unref(c->s), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_cancel_is_delivered_in_cleanup_and_shield_lets_cleanup_sleep(void **state) {
  (void)state;
  struct cleanup_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(cleanup_root, &c), 0);
  assert_int_equal(c.rc_body, BRAID_ECANCELED);
  assert_int_equal(c.rc_cleanup_cp, BRAID_ECANCELED);
  assert_int_equal(c.rc_cleanup_sleep, BRAID_ECANCELED);
  assert_int_equal(c.rc_shielded_sleep, 0);
  assert_int_equal(c.done_at, c.t0 + 4 * SEC);
  assert_int_equal(c.rc_after_shield, BRAID_ECANCELED);
  assert_int_equal(c.rc_exit, 0);
}

struct after_ctx {
  co_state co;
  braid_scope *s;
  braid_time_t t0, woke_at;
  int rc_move_sleep, rc_move_exit, move_caught, rc_fail_sleep, rc_fail_exit, fail_caught;
};

static int after_root(braid_task *self, void *ctx, int resume) {
  struct after_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->t0 = braid_now(self);
    CHECK_INT(braid_move_on_after(self, 2 * SEC, &c->s), 0);
    AWAIT(&c->co, braid_sleep(self, 10 * SEC));
    c->rc_move_sleep = c->co.rc;
    c->rc_move_exit = braid_scope_exit(c->s, c->rc_move_sleep);
    c->move_caught = braid_scope_cancelled_caught(c->s);
    CHECK_INT(braid_scope_unref(c->s), 0);
    CHECK_INT(braid_fail_after(self, 3 * SEC, &c->s), 0);
    AWAIT(&c->co, braid_sleep_forever(self));
    c->rc_fail_sleep = c->co.rc;
    c->woke_at = braid_now(self);
    c->rc_fail_exit = braid_scope_exit(c->s, c->rc_fail_sleep);
    c->fail_caught = braid_scope_cancelled_caught(c->s);
    CHECK_INT(braid_scope_unref(c->s), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_move_on_after_catches_and_fail_after_times_out(void **state) {
  (void)state;
  struct after_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(after_root, &c), 0);
  assert_int_equal(c.rc_move_sleep, BRAID_ECANCELED);
  assert_int_equal(c.rc_move_exit, 0);
  assert_int_equal(c.move_caught, 1);
  assert_int_equal(c.rc_fail_sleep, BRAID_ECANCELED);
  assert_int_equal(c.woke_at, c.t0 + 5 * SEC);
  assert_int_equal(c.rc_fail_exit, BRAID_ETIMEDOUT);
  assert_int_equal(c.fail_caught, 1);
}

struct eff_ctx {
  braid_time_t none, outer, shielded, cancelled, cancelled_shielded;
};

static int effective_deadline_root(braid_task *self, void *ctx, int resume) {
  (void)resume;
  struct eff_ctx *c = ctx;
  braid_time_t t0 = braid_now(self);
  c->none = braid_current_effective_deadline(self);
  braid_scope *outer = new_scope(t0 + 10 * SEC, 0);
  CHECK_INT(braid_scope_enter(self, outer), 0);
  c->outer = braid_current_effective_deadline(self);
  braid_scope *shield = new_scope(t0 + 20 * SEC, BRAID_SHIELD);
  CHECK_INT(braid_scope_enter(self, shield), 0);
  c->shielded = braid_current_effective_deadline(self);
  CHECK_INT(braid_scope_exit(shield, 0), 0);
  CHECK_INT(braid_scope_cancel(outer), 0);
  c->cancelled = braid_current_effective_deadline(self);
  braid_scope *shield2 = new_scope(BRAID_NEVER, BRAID_SHIELD);
  CHECK_INT(braid_scope_enter(self, shield2), 0);
  c->cancelled_shielded = braid_current_effective_deadline(self);
  CHECK_INT(braid_scope_exit(shield2, 0), 0);
  CHECK_INT(braid_scope_exit(outer, 0), 0);
  CHECK_INT(braid_scope_unref(outer), 0);
  CHECK_INT(braid_scope_unref(shield), 0);
  CHECK_INT(braid_scope_unref(shield2), 0);
  return 0;
}

static void test_stepped_effective_deadline_with_and_without_shield(void **state) {
  (void)state;
  struct eff_ctx c;
  memset(&c, 0, sizeof c);
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  o.start_time = 100 * SEC;
  assert_int_equal(braid_run_stepped(effective_deadline_root, &c, &o), 0);
  assert_int_equal(c.none, BRAID_NEVER);
  assert_int_equal(c.outer, 110 * SEC);
  assert_int_equal(c.shielded, 120 * SEC);
  assert_int_equal(c.cancelled, INT64_MIN);
  assert_int_equal(c.cancelled_shielded, BRAID_NEVER);
}

struct set_deadline_ctx {
  co_state co;
  braid_scope *s;
  braid_time_t t0, woke1, woke2, woke3;
  int rc1, rc2, rc3, rc_exit1, rc_exit2;
};

static int set_deadline_root(braid_task *self, void *ctx, int resume) {
  struct set_deadline_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->t0 = braid_now(self);
    /* Later: 1 s becomes 5 s. */
    CHECK_INT(braid_move_on_after(self, SEC, &c->s), 0);
    CHECK_INT(braid_scope_set_deadline(c->s, c->t0 + 5 * SEC), 0);
    AWAIT(&c->co, braid_sleep(self, 3 * SEC));
    c->rc1 = c->co.rc;
    c->woke1 = braid_now(self);
    AWAIT(&c->co, braid_sleep_forever(self));
    c->rc2 = c->co.rc;
    c->woke2 = braid_now(self);
    c->rc_exit1 = braid_scope_exit(c->s, c->rc2);
    CHECK_INT(braid_scope_unref(c->s), 0);
    /* Earlier: 10 s becomes 2 s, set while the task sleeps is not
     * possible from itself, so set before sleeping. */
    CHECK_INT(braid_move_on_after(self, 10 * SEC, &c->s), 0);
    CHECK_INT(braid_scope_set_deadline(c->s, braid_now(self) + 2 * SEC), 0);
    AWAIT(&c->co, braid_sleep(self, 5 * SEC));
    c->rc3 = c->co.rc;
    c->woke3 = braid_now(self);
    c->rc_exit2 = braid_scope_exit(c->s, c->rc3);
    CHECK_INT(braid_scope_unref(c->s), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_set_deadline_later_and_earlier(void **state) {
  (void)state;
  struct set_deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(set_deadline_root, &c), 0);
  assert_int_equal(c.rc1, 0);
  assert_int_equal(c.woke1, c.t0 + 3 * SEC);
  assert_int_equal(c.rc2, BRAID_ECANCELED);
  assert_int_equal(c.woke2, c.t0 + 5 * SEC);
  assert_int_equal(c.rc_exit1, 0);
  assert_int_equal(c.rc3, BRAID_ECANCELED);
  assert_int_equal(c.woke3, c.t0 + 7 * SEC);
  assert_int_equal(c.rc_exit2, 0);
}

struct toggle_ctx {
  co_state co;
  braid_scope *outer, *inner;
  int rc_shielded, rc_unshielded, rc_reshielded, rc_outer_exit;
};

static int toggle_root(braid_task *self, void *ctx, int resume) {
  struct toggle_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->outer = new_scope(BRAID_NEVER, 0);
    c->inner = new_scope(BRAID_NEVER, BRAID_SHIELD);
    CHECK_INT(braid_scope_enter(self, c->outer), 0);
    CHECK_INT(braid_scope_enter(self, c->inner), 0);
    CHECK_INT(braid_scope_cancel(c->outer), 0);
    AWAIT(&c->co, braid_checkpoint(self));
    c->rc_shielded = c->co.rc;
    CHECK_INT(braid_scope_set_shield(c->inner, 0), 0);
    AWAIT(&c->co, braid_checkpoint(self));
    c->rc_unshielded = c->co.rc;
    CHECK_INT(braid_scope_set_shield(c->inner, 1), 0);
    AWAIT(&c->co, braid_checkpoint(self));
    c->rc_reshielded = c->co.rc;
    CHECK_INT(braid_scope_exit(c->inner, 0), 0);
    c->rc_outer_exit = braid_scope_exit(c->outer, BRAID_ECANCELED);
    CHECK_INT(braid_scope_unref(c->inner), 0);
    CHECK_INT(braid_scope_unref(c->outer), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_set_shield_off_reexposes_outer_cancel(void **state) {
  (void)state;
  struct toggle_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(toggle_root, &c), 0);
  assert_int_equal(c.rc_shielded, 0);
  assert_int_equal(c.rc_unshielded, BRAID_ECANCELED);
  assert_int_equal(c.rc_reshielded, 0);
  assert_int_equal(c.rc_outer_exit, 0);
}

struct misnest_ctx {
  co_state co;
  braid_scope *a, *b;
  int rc_outer_exit, rc_cp, rc_inner_exit;
};

static int misnest_root(braid_task *self, void *ctx, int resume) {
  struct misnest_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->a = new_scope(BRAID_NEVER, 0);
    c->b = new_scope(BRAID_NEVER, 0);
    CHECK_INT(braid_scope_enter(self, c->a), 0);
    CHECK_INT(braid_scope_enter(self, c->b), 0);
    c->rc_outer_exit = braid_scope_exit(c->a, 0);
    AWAIT(&c->co, braid_checkpoint(self));
    c->rc_cp = c->co.rc;
    c->rc_inner_exit = braid_scope_exit(c->b, BRAID_ECANCELED);
    CHECK_INT(braid_scope_unref(c->a), 0);
    CHECK_INT(braid_scope_unref(c->b), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_misnested_exit_is_estate_and_inner_exit_returns_rc_unchanged(void **state) {
  (void)state;
  struct misnest_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(misnest_root, &c), 0);
  assert_int_equal(c.rc_outer_exit, BRAID_ESTATE);
  assert_int_equal(c.rc_cp, 0);
  assert_int_equal(c.rc_inner_exit, BRAID_ECANCELED);
}

/* ---- groups of stepped tasks ------------------------------------------ */

struct child_ctx {
  co_state co;
  int kind; /* 0: sleep `dur` and succeed, 1: sleep `dur` then fail with payload, 2: sleep forever */
  braid_time_t dur;
  int rc_wait;
  braid_time_t done_at;
  tpayload p;
  uint64_t id;
};

static int stepped_child(braid_task *self, void *ctx, int resume) {
  struct child_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->id = braid_task_id(self);
    CHECK_INT(braid_task_is_stepped(self), 1);
    if (c->kind == 2) {
      AWAIT(&c->co, braid_sleep_forever(self));
    } else {
      AWAIT(&c->co, braid_sleep(self, c->dur));
    }
    c->rc_wait = c->co.rc;
    c->done_at = braid_now(self);
    if (c->kind == 1 && c->rc_wait == 0) return braid_task_fail(self, 42, &c->p, tpayload_dtor);
    return c->rc_wait;
  }
  return CO_FELL_OFF;
}

static int stackful_child(braid_task *self, void *arg) {
  struct child_ctx *c = arg;
  c->id = braid_task_id(self);
  c->rc_wait = braid_sleep(self, c->dur);
  c->done_at = braid_now(self);
  return c->rc_wait;
}

struct group_ctx {
  co_state co;
  braid_group *g;
  struct child_ctx kids[4];
  int nkids;
  int mixed;
  int rc_close, rc_body_sleep;
  braid_time_t closed_at;
  size_t nfail;
  int code;
  void *payload;
  uint64_t tid;
  int p_before_free;
};

static int group_root(braid_task *self, void *ctx, int resume) {
  struct group_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    CHECK_INT(braid_group_open(self, &c->g), 0);
    for (int i = 0; i < c->nkids; i++) {
      if (c->mixed && i % 2 == 1)
        CHECK_INT(braid_group_spawn(c->g, stackful_child, &c->kids[i], NULL, NULL), 0);
      else
        CHECK_INT(braid_group_spawn_stepped(c->g, stepped_child, &c->kids[i], NULL, NULL), 0);
    }
    AWAIT(&c->co, braid_sleep(self, 100 * SEC));
    c->rc_body_sleep = c->co.rc;
    AWAIT(&c->co, braid_group_close(c->g, c->rc_body_sleep == BRAID_ECANCELED ? BRAID_ECANCELED : 0));
    c->rc_close = c->co.rc;
    c->closed_at = braid_now(self);
    c->nfail = braid_group_failure_count(c->g);
    if (c->nfail > 0) CHECK_INT(braid_group_failure(c->g, 0, &c->code, &c->payload, &c->tid), 0);
    for (int i = 0; i < c->nkids; i++)
      c->p_before_free += c->kids[i].p.dtor_calls;
    CHECK_INT(braid_group_free(c->g), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_group_first_failure_cancels_siblings_and_body(void **state) {
  (void)state;
  struct group_ctx c;
  memset(&c, 0, sizeof c);
  c.nkids = 3;
  c.kids[0].kind = 2;
  c.kids[1].kind = 1;
  c.kids[1].dur = 2 * SEC;
  c.kids[2].kind = 0;
  c.kids[2].dur = 50 * SEC;
  assert_int_equal(run_stepped_virtual(group_root, &c), 0);
  assert_int_equal(c.kids[0].rc_wait, BRAID_ECANCELED);
  assert_int_equal(c.kids[0].done_at, 2 * SEC);
  assert_int_equal(c.kids[2].rc_wait, BRAID_ECANCELED);
  assert_int_equal(c.kids[2].done_at, 2 * SEC);
  assert_int_equal(c.rc_body_sleep, BRAID_ECANCELED);
  assert_int_equal(c.rc_close, BRAID_EFAILED);
  assert_int_equal(c.closed_at, 2 * SEC);
  assert_int_equal(c.nfail, 1);
  assert_int_equal(c.code, 42);
  assert_ptr_equal(c.payload, &c.kids[1].p);
  assert_int_equal(c.tid, c.kids[1].id);
  assert_int_equal(c.p_before_free, 0);
  assert_int_equal(c.kids[1].p.dtor_calls, 1);
}

static int close_waits_root(braid_task *self, void *ctx, int resume) {
  struct group_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    CHECK_INT(braid_group_open(self, &c->g), 0);
    for (int i = 0; i < c->nkids; i++) {
      if (i % 2 == 1)
        CHECK_INT(braid_group_spawn(c->g, stackful_child, &c->kids[i], NULL, NULL), 0);
      else
        CHECK_INT(braid_group_spawn_stepped(c->g, stepped_child, &c->kids[i], NULL, NULL), 0);
    }
    AWAIT(&c->co, braid_group_close(c->g, 0));
    c->rc_close = c->co.rc;
    c->closed_at = braid_now(self);
    CHECK_INT(braid_group_free(c->g), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_close_waits_for_stepped_and_stackful_children(void **state) {
  (void)state;
  struct group_ctx c;
  memset(&c, 0, sizeof c);
  c.nkids = 4;
  for (int i = 0; i < 4; i++)
    c.kids[i].dur = (i + 1) * SEC;
  assert_int_equal(run_stepped_virtual(close_waits_root, &c), 0);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.closed_at, 4 * SEC);
  assert_int_equal(c.co.immediate, 0);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(c.kids[i].rc_wait, 0);
    assert_int_equal(c.kids[i].done_at, (i + 1) * SEC);
  }
}

static int stepped_children_under_stackful_root(braid_task *self, void *arg) {
  struct group_ctx *c = arg;
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  for (int i = 0; i < c->nkids; i++)
    CHECK_INT(braid_group_spawn_stepped(g, stepped_child, &c->kids[i], NULL, NULL), 0);
  c->rc_close = braid_group_close(g, 0);
  c->closed_at = braid_now(self);
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_stepped_children_sleep_in_deadline_order_under_a_stackful_parent(void **state) {
  (void)state;
  struct group_ctx c;
  memset(&c, 0, sizeof c);
  c.nkids = 4;
  braid_time_t d[4] = {3 * SEC, 1 * SEC, 4 * SEC, 2 * SEC};
  for (int i = 0; i < 4; i++)
    c.kids[i].dur = d[i];
  assert_int_equal(run_virtual(stepped_children_under_stackful_root, &c), 0);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.closed_at, 4 * SEC);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(c.kids[i].rc_wait, 0);
    assert_int_equal(c.kids[i].done_at, d[i]);
  }
}

struct empty_close_ctx {
  co_state co;
  braid_scope *s;
  braid_group *g;
  int rc_close_raw, rc_close, rc_cp_after, rc_exit, rc_spawn_closed;
};

static int empty_close_root(braid_task *self, void *ctx, int resume) {
  struct empty_close_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    CHECK_INT(braid_group_open(self, &c->g), 0);
    c->rc_close_raw = braid_group_close(c->g, 0);
    if (c->rc_close_raw != BRAID_EPENDING) {
      c->rc_close = c->rc_close_raw;
    } else {
      c->co.pc = 1;
      return BRAID_EPENDING;
    case 1:
      c->rc_close = resume;
    }
    c->rc_spawn_closed = braid_group_spawn_stepped(c->g, stepped_child, NULL, NULL, NULL);
    CHECK_INT(braid_group_free(c->g), 0);

    /* In a cancelled scope: the close does not itself fail. */
    c->s = new_scope(BRAID_NEVER, 0);
    CHECK_INT(braid_scope_enter(self, c->s), 0);
    CHECK_INT(braid_scope_cancel(c->s), 0);
    CHECK_INT(braid_group_open(self, &c->g), 0);
    AWAIT(&c->co, braid_group_close(c->g, 0));
    CHECK_INT(c->co.rc, 0);
    CHECK_INT(braid_group_free(c->g), 0);
    AWAIT(&c->co, braid_checkpoint(self));
    c->rc_cp_after = c->co.rc;
    c->rc_exit = braid_scope_exit(c->s, c->rc_cp_after);
    CHECK_INT(braid_scope_unref(c->s), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_empty_group_close_pends_and_spawn_after_close_is_estate(void **state) {
  (void)state;
  struct empty_close_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(empty_close_root, &c), 0);
  assert_int_equal(c.rc_close_raw, BRAID_EPENDING);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.rc_spawn_closed, BRAID_ESTATE);
  assert_int_equal(c.rc_cp_after, BRAID_ECANCELED);
  assert_int_equal(c.rc_exit, 0);
}

struct first_step_ctx {
  co_state co;
  int first_resume, cancelled_at_first_step, rc_cp, steps;
};

static int first_step_child(braid_task *self, void *ctx, int resume) {
  struct first_step_ctx *c = ctx;
  c->steps++;
  switch (c->co.pc) {
  case 0:
    c->first_resume = resume;
    c->cancelled_at_first_step = braid_task_cancelled(self);
    AWAIT(&c->co, braid_checkpoint(self));
    c->rc_cp = c->co.rc;
    return c->rc_cp;
  }
  return CO_FELL_OFF;
}

static int first_step_root(braid_task *self, void *arg) {
  struct first_step_ctx *c = arg;
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn_stepped(g, first_step_child, c, NULL, NULL), 0);
  CHECK_INT(braid_scope_cancel(braid_group_scope(g)), 0);
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_stepped_child_of_a_cancelled_group_gets_a_first_step_with_zero(void **state) {
  (void)state;
  struct first_step_ctx c;
  memset(&c, 0, sizeof c);
  c.first_resume = -1;
  assert_int_equal(run_virtual(first_step_root, &c), 0);
  assert_int_equal(c.first_resume, 0);
  assert_int_equal(c.cancelled_at_first_step, 1);
  assert_int_equal(c.rc_cp, BRAID_ECANCELED);
  assert_true(c.steps >= 1);
}

/* ---- start with stepped callers and children --------------------------- */

struct start_child_ctx {
  co_state co;
  int mode; /* 0: started after 1 s; 1: fail before started; 2: return without started;
               3: started twice; 4: sleep forever, slow cleanup */
  int value_storage;
  int rc_started, rc_started_again, rc_wait;
  tpayload p;
  braid_scope *shield;
  braid_time_t cleanup_done_at;
};

static int start_child(braid_task *self, void *ctx, int resume) {
  struct start_child_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    if (c->mode == 4) {
      AWAIT(&c->co, braid_sleep_forever(self));
      c->rc_wait = c->co.rc;
      c->shield = new_scope(BRAID_NEVER, BRAID_SHIELD);
      CHECK_INT(braid_scope_enter(self, c->shield), 0);
      AWAIT(&c->co, braid_sleep(self, SEC));
      CHECK_INT(c->co.rc, 0);
      CHECK_INT(braid_scope_exit(c->shield, 0), 0);
      CHECK_INT(braid_scope_unref(c->shield), 0);
      c->cleanup_done_at = braid_now(self);
      return c->rc_wait;
    }
    AWAIT(&c->co, braid_sleep(self, SEC));
    CHECK_INT(c->co.rc, 0);
    if (c->mode == 1) return braid_task_fail(self, 31, &c->p, tpayload_dtor);
    if (c->mode == 2) return 0;
    c->rc_started = braid_task_started(self, &c->value_storage);
    if (c->mode == 3) c->rc_started_again = braid_task_started(self, NULL);
    AWAIT(&c->co, braid_sleep(self, SEC));
    return c->co.rc;
  }
  return CO_FELL_OFF;
}

struct start_ctx {
  co_state co;
  braid_group *g;
  braid_scope *s;
  struct start_child_ctx child;
  int with_scope;
  int rc_start_raw, rc_start, rc_close, rc_exit, caught;
  void *value;
  braid_time_t started_at, closed_at;
  size_t nfail;
  int dtor_after_start;
};

static int start_root(braid_task *self, void *ctx, int resume) {
  struct start_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    CHECK_INT(braid_group_open(self, &c->g), 0);
    if (c->with_scope) CHECK_INT(braid_move_on_after(self, SEC, &c->s), 0);
    c->value = &c->value;
    c->rc_start_raw = braid_group_start_stepped(c->g, self, start_child, &c->child, NULL, &c->value);
    if (c->rc_start_raw != BRAID_EPENDING) {
      c->rc_start = c->rc_start_raw;
    } else {
      c->co.pc = 1;
      return BRAID_EPENDING;
    case 1:
      c->rc_start = resume;
    }
    c->started_at = braid_now(self);
    c->dtor_after_start = c->child.p.dtor_calls;
    if (c->with_scope) {
      c->rc_exit = braid_scope_exit(c->s, c->rc_start);
      c->caught = braid_scope_cancelled_caught(c->s);
      CHECK_INT(braid_scope_unref(c->s), 0);
    }
    AWAIT(&c->co, braid_group_close(c->g, 0));
    c->rc_close = c->co.rc;
    c->closed_at = braid_now(self);
    c->nfail = braid_group_failure_count(c->g);
    CHECK_INT(braid_group_free(c->g), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_start_pends_then_writes_the_started_value(void **state) {
  (void)state;
  struct start_ctx c;
  memset(&c, 0, sizeof c);
  c.child.mode = 0;
  assert_int_equal(run_stepped_virtual(start_root, &c), 0);
  assert_int_equal(c.rc_start_raw, BRAID_EPENDING);
  assert_int_equal(c.rc_start, 0);
  assert_ptr_equal(c.value, &c.child.value_storage);
  assert_int_equal(c.child.rc_started, 0);
  assert_int_equal(c.started_at, SEC);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.closed_at, 2 * SEC);
}

static void test_stepped_start_returns_failure_and_payload_from_before_started(void **state) {
  (void)state;
  struct start_ctx c;
  memset(&c, 0, sizeof c);
  c.child.mode = 1;
  assert_int_equal(run_stepped_virtual(start_root, &c), 0);
  assert_int_equal(c.rc_start, 31);
  assert_ptr_equal(c.value, &c.child.p);
  assert_int_equal(c.dtor_after_start, 0);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.nfail, 0);
  assert_int_equal(c.child.p.dtor_calls, 0); /* ours now */
}

static void test_stepped_start_of_child_returning_without_started_is_estate(void **state) {
  (void)state;
  struct start_ctx c;
  memset(&c, 0, sizeof c);
  c.child.mode = 2;
  assert_int_equal(run_stepped_virtual(start_root, &c), 0);
  assert_int_equal(c.rc_start, BRAID_ESTATE);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.nfail, 0);
}

static void test_stepped_started_twice_is_estate(void **state) {
  (void)state;
  struct start_ctx c;
  memset(&c, 0, sizeof c);
  c.child.mode = 3;
  assert_int_equal(run_stepped_virtual(start_root, &c), 0);
  assert_int_equal(c.rc_start, 0);
  assert_int_equal(c.child.rc_started, 0);
  assert_int_equal(c.child.rc_started_again, BRAID_ESTATE);
  assert_int_equal(c.rc_close, 0);
}

static void test_stepped_cancelling_start_cancels_the_child_and_waits_for_it(void **state) {
  (void)state;
  struct start_ctx c;
  memset(&c, 0, sizeof c);
  c.child.mode = 4;
  c.with_scope = 1;
  assert_int_equal(run_stepped_virtual(start_root, &c), 0);
  assert_int_equal(c.child.rc_wait, BRAID_ECANCELED);
  assert_int_equal(c.child.cleanup_done_at, 2 * SEC);
  assert_int_equal(c.rc_start, BRAID_ECANCELED);
  assert_int_equal(c.started_at, 2 * SEC);
  assert_int_equal(c.rc_exit, 0);
  assert_int_equal(c.caught, 1);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.nfail, 0);
}

struct stackful_started_ctx {
  co_state co;
  braid_group *g;
  int value_storage;
  void *value;
  int rc_start_raw, rc_start, rc_close;
  braid_time_t started_at;
};

static int stackful_ready_after_one_second(braid_task *self, void *arg) {
  struct stackful_started_ctx *c = arg;
  CHECK_INT(braid_sleep(self, SEC), 0);
  CHECK_INT(braid_task_started(self, &c->value_storage), 0);
  return 0;
}

static int stepped_starts_stackful_root(braid_task *self, void *ctx, int resume) {
  struct stackful_started_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    CHECK_INT(braid_group_open(self, &c->g), 0);
    c->rc_start_raw = braid_group_start(c->g, self, stackful_ready_after_one_second, c, NULL, &c->value);
    if (c->rc_start_raw != BRAID_EPENDING) {
      c->rc_start = c->rc_start_raw;
    } else {
      c->co.pc = 1;
      return BRAID_EPENDING;
    case 1:
      c->rc_start = resume;
    }
    c->started_at = braid_now(self);
    AWAIT(&c->co, braid_group_close(c->g, 0));
    c->rc_close = c->co.rc;
    CHECK_INT(braid_group_free(c->g), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_caller_starts_a_stackful_child(void **state) {
  (void)state;
  struct stackful_started_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(stepped_starts_stackful_root, &c), 0);
  assert_int_equal(c.rc_start_raw, BRAID_EPENDING);
  assert_int_equal(c.rc_start, 0);
  assert_ptr_equal(c.value, &c.value_storage);
  assert_int_equal(c.started_at, SEC);
  assert_int_equal(c.rc_close, 0);
}

/* ---- misnested end, misuse --------------------------------------------- */

struct left_open_ctx {
  co_state co;
  braid_scope *scope;
  braid_group *g;
  int rc_close, code;
  size_t nfail;
  int rc_unref;
};

static int stepped_return_inside_scope(braid_task *self, void *ctx, int resume) {
  (void)resume;
  struct left_open_ctx *c = ctx;
  CHECK_INT(braid_scope_enter(self, c->scope), 0);
  return 0;
}

static int left_open_root(braid_task *self, void *ctx, int resume) {
  struct left_open_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->scope = new_scope(BRAID_NEVER, 0);
    CHECK_INT(braid_group_open(self, &c->g), 0);
    CHECK_INT(braid_group_spawn_stepped(c->g, stepped_return_inside_scope, c, NULL, NULL), 0);
    AWAIT(&c->co, braid_group_close(c->g, 0));
    c->rc_close = c->co.rc;
    c->nfail = braid_group_failure_count(c->g);
    if (c->nfail > 0) CHECK_INT(braid_group_failure(c->g, 0, &c->code, NULL, NULL), 0);
    CHECK_INT(braid_group_free(c->g), 0);
    c->rc_unref = braid_scope_unref(c->scope);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_task_returning_with_a_scope_open_ends_with_estate(void **state) {
  (void)state;
  struct left_open_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(left_open_root, &c), 0);
  assert_int_equal(c.rc_close, BRAID_EFAILED);
  assert_int_equal(c.nfail, 1);
  assert_int_equal(c.code, BRAID_ESTATE);
  assert_int_equal(c.rc_unref, 0);
}

static int pending_without_wait(braid_task *self, void *ctx, int resume) {
  (void)self;
  (void)ctx;
  (void)resume;
  return BRAID_EPENDING;
}

struct bogus_ctx {
  co_state co;
  braid_group *g;
  int rc_close, code;
  size_t nfail;
};

static int bogus_pending_root(braid_task *self, void *ctx, int resume) {
  struct bogus_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    CHECK_INT(braid_group_open(self, &c->g), 0);
    CHECK_INT(braid_group_spawn_stepped(c->g, pending_without_wait, NULL, NULL, NULL), 0);
    AWAIT(&c->co, braid_group_close(c->g, 0));
    c->rc_close = c->co.rc;
    c->nfail = braid_group_failure_count(c->g);
    if (c->nfail > 0) CHECK_INT(braid_group_failure(c->g, 0, &c->code, NULL, NULL), 0);
    CHECK_INT(braid_group_free(c->g), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_child_pending_without_a_wait_fails_with_estate(void **state) {
  (void)state;
  struct bogus_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(bogus_pending_root, &c), 0);
  assert_int_equal(c.rc_close, BRAID_EFAILED);
  assert_int_equal(c.nfail, 1);
  assert_int_equal(c.code, BRAID_ESTATE);
}

/* ---- cancellation from another thread (real clock) --------------------- */

struct thread_cancel_ctx {
  co_state co;
  braid_scope *s;
  braid_scope *thread_ref;
  pthread_t thread;
  atomic_int rc_cancel;
  int rc_sleep, rc_exit;
  int64_t r0, real_elapsed;
};

static void *cancel_soon(void *arg) {
  struct thread_cancel_ctx *c = arg;
  os_sleep_ns(30 * BRAID_MSEC);
  atomic_store(&c->rc_cancel, braid_scope_cancel(c->thread_ref));
  braid_scope_unref(c->thread_ref);
  return NULL;
}

static int thread_cancel_root(braid_task *self, void *ctx, int resume) {
  struct thread_cancel_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->s = new_scope(BRAID_NEVER, 0);
    c->thread_ref = braid_scope_ref(c->s);
    CHECK_INT(braid_scope_enter(self, c->s), 0);
    c->r0 = real_ns();
    CHECK_INT(pthread_create(&c->thread, NULL, cancel_soon, c), 0);
    AWAIT(&c->co, braid_sleep(self, 30 * SEC));
    c->rc_sleep = c->co.rc;
    c->real_elapsed = real_ns() - c->r0;
    c->rc_exit = braid_scope_exit(c->s, c->rc_sleep);
    CHECK_INT(pthread_join(c->thread, NULL), 0);
    CHECK_INT(braid_scope_unref(c->s), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_cancel_from_another_thread_wakes_the_sleeping_task(void **state) {
  (void)state;
  struct thread_cancel_ctx c;
  memset(&c, 0, sizeof c);
  atomic_store(&c.rc_cancel, 1);
  assert_int_equal(run_stepped_real(thread_cancel_root, &c), 0);
  assert_int_equal(atomic_load(&c.rc_cancel), 0);
  assert_int_equal(c.rc_sleep, BRAID_ECANCELED);
  assert_true(c.real_elapsed >= 29 * BRAID_MSEC);
  assert_true(c.real_elapsed < 10 * BRAID_SEC);
  assert_int_equal(c.rc_exit, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_stepped_waits_return_pending_and_the_outcome_arrives_as_resume),
      BT(test_stepped_deadline_arrives_as_ecanceled_resume_and_stays),
      BT(test_stepped_waits_in_a_cancelled_scope_pend_and_resume_with_ecanceled),
      BT(test_stepped_shield_blocks_outer_cancel),
      BT(test_stepped_inner_does_not_catch_when_outer_is_cancelled),
      BT(test_stepped_deadline_already_past_cancels_at_first_checkpoint),
      BT(test_stepped_scope_cancelled_before_enter_fails_first_wait),
      BT(test_stepped_cancel_is_delivered_in_cleanup_and_shield_lets_cleanup_sleep),
      BT(test_stepped_move_on_after_catches_and_fail_after_times_out),
      BT(test_stepped_effective_deadline_with_and_without_shield),
      BT(test_stepped_set_deadline_later_and_earlier),
      BT(test_stepped_set_shield_off_reexposes_outer_cancel),
      BT(test_stepped_misnested_exit_is_estate_and_inner_exit_returns_rc_unchanged),
      BT(test_stepped_group_first_failure_cancels_siblings_and_body),
      BT(test_stepped_close_waits_for_stepped_and_stackful_children),
      BT(test_stepped_children_sleep_in_deadline_order_under_a_stackful_parent),
      BT(test_stepped_empty_group_close_pends_and_spawn_after_close_is_estate),
      BT(test_stepped_child_of_a_cancelled_group_gets_a_first_step_with_zero),
      BT(test_stepped_start_pends_then_writes_the_started_value),
      BT(test_stepped_start_returns_failure_and_payload_from_before_started),
      BT(test_stepped_start_of_child_returning_without_started_is_estate),
      BT(test_stepped_started_twice_is_estate),
      BT(test_stepped_cancelling_start_cancels_the_child_and_waits_for_it),
      BT(test_stepped_caller_starts_a_stackful_child),
      BT(test_stepped_task_returning_with_a_scope_open_ends_with_estate),
      BT(test_stepped_child_pending_without_a_wait_fails_with_estate),
      BT(test_stepped_cancel_from_another_thread_wakes_the_sleeping_task),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
