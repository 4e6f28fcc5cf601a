/*
 * test_stepped.c — the key semantics again with stepped tasks: bodies are
 * state machines (AWAIT in helpers.h, AWAIT_TO in core_helpers.h) driven
 * by braid_run_stepped and braid_group_spawn_stepped; blocking calls return
 * BRAID_EPENDING and the outcome arrives as `resume` of the next step.
 */
#include "core_helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define SEC BRAID_SEC

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
    AWAIT_TO(&c->co, c->rc_sleep, braid_sleep(self, 10 * SEC));
    c->woke_at = braid_now(self);
    /* Level-triggered on stepped tasks too. */
    AWAIT_TO(&c->co, c->rc_cp, braid_checkpoint(self));
    c->rc_ifc = braid_checkpoint_if_cancelled(self);
    AWAIT_TO(&c->co, c->rc_shielded, braid_cancel_shielded_checkpoint(self));
    c->rc_exit = leave_scope(c->s, c->rc_sleep, &c->caught);
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
    c->s = enter_cancelled_scope(self);
    /* Each AWAIT_TO keeps what the call returned (raw) and the outcome. */
    AWAIT_TO(&c->co, c->rc_sleep, c->rc_sleep_raw = braid_sleep(self, SEC));
    AWAIT_TO(&c->co, c->rc_forever, c->rc_forever_raw = braid_sleep_forever(self));
    AWAIT_TO(&c->co, c->rc_cp, c->rc_cp_raw = braid_checkpoint(self));
    CHECK_INT(leave_scope(c->s, BRAID_ECANCELED, NULL), 0);
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
    c->shield = inside_cancelled_outer(self, BRAID_NEVER, BRAID_SHIELD, &c->outer);
    AWAIT_TO(&c->co, c->rc_cp_in, braid_checkpoint(self));
    AWAIT_TO(&c->co, c->rc_sleep_in, braid_sleep(self, 2 * SEC));
    c->after_sleep = braid_now(self);
    c->rc_shield_exit = leave_scope(c->shield, 0, NULL);
    AWAIT_TO(&c->co, c->rc_cp_after, braid_checkpoint(self));
    c->rc_outer_exit = leave_scope(c->outer, c->rc_cp_after, &c->outer_caught);
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
    c->inner = inside_cancelled_outer(self, BRAID_NEVER, 0, &c->outer);
    CHECK_INT(braid_scope_cancel(c->inner), 0);
    AWAIT_TO(&c->co, c->rc_cp, braid_checkpoint(self));
    c->rc_inner_exit = leave_scope(c->inner, c->rc_cp, &c->inner_caught);
    c->rc_outer_exit = leave_scope(c->outer, c->rc_inner_exit, &c->outer_caught);
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

/* The deadline scenarios record their waits as scope_wait (core_helpers.h):
 * w, and w2 where a second scope follows; some wait once before w. */
struct deadline_ctx {
  co_state co;
  braid_scope *s;
  scope_wait w, w2;
  int cancel_called_at_enter, rc_first;
  braid_time_t first_woke_at;
};

static int past_deadline_root(braid_task *self, void *ctx, int resume) {
  struct deadline_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    AWAIT(&c->co, braid_sleep(self, 5 * SEC));
    CHECK_INT(c->co.rc, 0);
    c->w.t0 = braid_now(self);
    c->s = enter_new_scope(self, c->w.t0 - SEC, 0);
    c->cancel_called_at_enter = braid_scope_cancel_called(c->s);
    AWAIT_TO(&c->co, c->w.rc_wait, braid_checkpoint(self));
    scope_wait_end(self, &c->w, c->s);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_deadline_already_past_cancels_at_first_checkpoint(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(past_deadline_root, &c), 0);
  assert_int_equal(c.cancel_called_at_enter, 1);
  assert_scope_wait(&c.w, BRAID_ECANCELED, 0, 0, 1);
}

static int cancel_before_enter_root(braid_task *self, void *ctx, int resume) {
  struct deadline_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->w.t0 = braid_now(self);
    c->s = new_scope(BRAID_NEVER, 0);
    CHECK_INT(braid_scope_cancel(c->s), 0);
    CHECK_INT(braid_scope_enter(self, c->s), 0);
    AWAIT_TO(&c->co, c->w.rc_wait, braid_sleep(self, SEC));
    scope_wait_end(self, &c->w, c->s);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_scope_cancelled_before_enter_fails_first_wait(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(cancel_before_enter_root, &c), 0);
  assert_scope_wait(&c.w, BRAID_ECANCELED, 0, 0, 1);
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
    AWAIT_TO(&c->co, c->rc_body, braid_sleep_forever(self));
    AWAIT_TO(&c->co, c->rc_cleanup_cp, braid_checkpoint(self));
    AWAIT_TO(&c->co, c->rc_cleanup_sleep, braid_sleep(self, SEC));
    c->shield = enter_new_scope(self, BRAID_NEVER, BRAID_SHIELD);
    AWAIT_TO(&c->co, c->rc_shielded_sleep, braid_sleep(self, 3 * SEC));
    c->done_at = braid_now(self);
    CHECK_INT(leave_scope(c->shield, c->rc_shielded_sleep, NULL), 0);
    AWAIT_TO(&c->co, c->rc_after_shield, braid_checkpoint(self));
    c->rc_exit = leave_scope(c->s, c->rc_body, NULL);
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

static int after_root(braid_task *self, void *ctx, int resume) {
  struct deadline_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->s = scope_wait_move_on_after(self, &c->w, 2 * SEC);
    AWAIT_TO(&c->co, c->w.rc_wait, braid_sleep(self, 10 * SEC));
    scope_wait_end(self, &c->w, c->s);
    c->s = scope_wait_fail_after(self, &c->w2, 3 * SEC);
    AWAIT_TO(&c->co, c->w2.rc_wait, braid_sleep_forever(self));
    scope_wait_end(self, &c->w2, c->s);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_move_on_after_catches_and_fail_after_times_out(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(after_root, &c), 0);
  assert_scope_wait(&c.w, BRAID_ECANCELED, 2 * SEC, 0, 1);
  assert_scope_wait(&c.w2, BRAID_ECANCELED, 3 * SEC, BRAID_ETIMEDOUT, 1);
  assert_int_equal(c.w2.woke_at, c.w.t0 + 5 * SEC);
}

struct eff_ctx {
  braid_time_t none, outer, shielded, cancelled, cancelled_shielded;
};

static int effective_deadline_root(braid_task *self, void *ctx, int resume) {
  (void)resume;
  struct eff_ctx *c = ctx;
  braid_time_t t0 = braid_now(self);
  c->none = braid_current_effective_deadline(self);
  braid_scope *outer = enter_new_scope(self, t0 + 10 * SEC, 0);
  c->outer = braid_current_effective_deadline(self);
  braid_scope *shield = enter_new_scope(self, t0 + 20 * SEC, BRAID_SHIELD);
  c->shielded = braid_current_effective_deadline(self);
  CHECK_INT(braid_scope_exit(shield, 0), 0);
  CHECK_INT(braid_scope_cancel(outer), 0);
  c->cancelled = braid_current_effective_deadline(self);
  braid_scope *shield2 = enter_new_scope(self, BRAID_NEVER, BRAID_SHIELD);
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

static int set_deadline_root(braid_task *self, void *ctx, int resume) {
  struct deadline_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    /* Later: 1 s becomes 5 s. */
    c->s = scope_wait_move_on_after(self, &c->w, SEC);
    CHECK_INT(braid_scope_set_deadline(c->s, c->w.t0 + 5 * SEC), 0);
    AWAIT_TO(&c->co, c->rc_first, braid_sleep(self, 3 * SEC));
    c->first_woke_at = braid_now(self);
    AWAIT_TO(&c->co, c->w.rc_wait, braid_sleep_forever(self));
    scope_wait_end(self, &c->w, c->s);
    /* Earlier: 10 s becomes 2 s, set while the task sleeps is not
     * possible from itself, so set before sleeping. */
    c->s = scope_wait_move_on_after(self, &c->w2, 10 * SEC);
    CHECK_INT(braid_scope_set_deadline(c->s, braid_now(self) + 2 * SEC), 0);
    AWAIT_TO(&c->co, c->w2.rc_wait, braid_sleep(self, 5 * SEC));
    scope_wait_end(self, &c->w2, c->s);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_stepped_set_deadline_later_and_earlier(void **state) {
  (void)state;
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(set_deadline_root, &c), 0);
  assert_int_equal(c.rc_first, 0);
  assert_int_equal(c.first_woke_at, c.w.t0 + 3 * SEC);
  assert_scope_wait(&c.w, BRAID_ECANCELED, 5 * SEC, 0, 1);
  assert_scope_wait(&c.w2, BRAID_ECANCELED, 2 * SEC, 0, 1);
  assert_int_equal(c.w2.woke_at, c.w.t0 + 7 * SEC);
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
    c->inner = inside_cancelled_outer(self, BRAID_NEVER, BRAID_SHIELD, &c->outer);
    AWAIT_TO(&c->co, c->rc_shielded, braid_checkpoint(self));
    CHECK_INT(braid_scope_set_shield(c->inner, 0), 0);
    AWAIT_TO(&c->co, c->rc_unshielded, braid_checkpoint(self));
    CHECK_INT(braid_scope_set_shield(c->inner, 1), 0);
    AWAIT_TO(&c->co, c->rc_reshielded, braid_checkpoint(self));
    CHECK_INT(leave_scope(c->inner, 0, NULL), 0);
    c->rc_outer_exit = leave_scope(c->outer, BRAID_ECANCELED, NULL);
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
    c->a = enter_new_scope(self, BRAID_NEVER, 0);
    c->b = enter_new_scope(self, BRAID_NEVER, 0);
    c->rc_outer_exit = braid_scope_exit(c->a, 0);
    AWAIT_TO(&c->co, c->rc_cp, braid_checkpoint(self));
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
  int rc_close, rc_body_sleep;
  braid_time_t closed_at;
  group_result r;
  int p_before_free;
};

/* Open c->g with the nkids children: stepped ones, and stackful ones at the
 * odd indexes if `mixed`. */
static void open_group_of_kids(braid_task *self, struct group_ctx *c, int mixed) {
  c->g = open_group(self);
  for (int i = 0; i < c->nkids; i++) {
    if (mixed && i % 2 == 1)
      CHECK_INT(braid_group_spawn(c->g, stackful_child, &c->kids[i], NULL, NULL), 0);
    else
      CHECK_INT(braid_group_spawn_stepped(c->g, stepped_child, &c->kids[i], NULL, NULL), 0);
  }
}

static int group_root(braid_task *self, void *ctx, int resume) {
  struct group_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    open_group_of_kids(self, c, 0);
    AWAIT_TO(&c->co, c->rc_body_sleep, braid_sleep(self, 100 * SEC));
    AWAIT_TO(&c->co, c->rc_close, braid_group_close(c->g, c->rc_body_sleep == BRAID_ECANCELED ? BRAID_ECANCELED : 0));
    c->closed_at = braid_now(self);
    for (int i = 0; i < c->nkids; i++)
      c->p_before_free += c->kids[i].p.dtor_calls;
    c->r = free_closed_group(c->g, c->rc_close);
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
  assert_int_equal(c.r.nfail, 1);
  assert_int_equal(c.r.code, 42);
  assert_ptr_equal(c.r.payload, &c.kids[1].p);
  assert_int_equal(c.r.tid, c.kids[1].id);
  assert_int_equal(c.p_before_free, 0);
  assert_int_equal(c.kids[1].p.dtor_calls, 1);
}

static int close_waits_root(braid_task *self, void *ctx, int resume) {
  struct group_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    open_group_of_kids(self, c, 1);
    AWAIT_TO(&c->co, c->rc_close, braid_group_close(c->g, 0));
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
  open_group_of_kids(self, c, 0);
  c->rc_close = braid_group_close(c->g, 0);
  c->closed_at = braid_now(self);
  CHECK_INT(braid_group_free(c->g), 0);
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
    AWAIT_TO(&c->co, c->rc_close, c->rc_close_raw = braid_group_close(c->g, 0));
    c->rc_spawn_closed = braid_group_spawn_stepped(c->g, stepped_child, NULL, NULL, NULL);
    CHECK_INT(braid_group_free(c->g), 0);

    /* In a cancelled scope: the close does not itself fail. */
    c->s = enter_cancelled_scope(self);
    CHECK_INT(braid_group_open(self, &c->g), 0);
    AWAIT(&c->co, braid_group_close(c->g, 0));
    CHECK_INT(c->co.rc, 0);
    CHECK_INT(braid_group_free(c->g), 0);
    AWAIT_TO(&c->co, c->rc_cp_after, braid_checkpoint(self));
    c->rc_exit = leave_scope(c->s, c->rc_cp_after, NULL);
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
    AWAIT_TO(&c->co, c->rc_cp, braid_checkpoint(self));
    return c->rc_cp;
  }
  return CO_FELL_OFF;
}

static int first_step_root(braid_task *self, void *arg) {
  struct first_step_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn_stepped(g, first_step_child, c, NULL, NULL), 0);
  CHECK_INT(braid_scope_cancel(braid_group_scope(g)), 0);
  close_group(g);
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
      AWAIT_TO(&c->co, c->rc_wait, braid_sleep_forever(self));
      c->shield = enter_new_scope(self, BRAID_NEVER, BRAID_SHIELD);
      AWAIT(&c->co, braid_sleep(self, SEC));
      CHECK_INT(c->co.rc, 0);
      CHECK_INT(leave_scope(c->shield, 0, NULL), 0);
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
    c->g = open_group(self);
    if (c->with_scope) CHECK_INT(braid_move_on_after(self, SEC, &c->s), 0);
    c->value = &c->value;
    AWAIT_TO(&c->co, c->rc_start,
             c->rc_start_raw = braid_group_start_stepped(c->g, self, start_child, &c->child, NULL, &c->value));
    c->started_at = braid_now(self);
    c->dtor_after_start = c->child.p.dtor_calls;
    if (c->with_scope) c->rc_exit = leave_scope(c->s, c->rc_start, &c->caught);
    AWAIT_TO(&c->co, c->rc_close, braid_group_close(c->g, 0));
    c->closed_at = braid_now(self);
    c->nfail = braid_group_failure_count(c->g);
    CHECK_INT(braid_group_free(c->g), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void run_start(struct start_ctx *c, int child_mode, int with_scope) {
  memset(c, 0, sizeof *c);
  c->child.mode = child_mode;
  c->with_scope = with_scope;
  assert_int_equal(run_stepped_virtual(start_root, c), 0);
}

static void test_stepped_start_pends_then_writes_the_started_value(void **state) {
  (void)state;
  struct start_ctx c;
  run_start(&c, 0, 0);
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
  run_start(&c, 1, 0);
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
  run_start(&c, 2, 0);
  assert_int_equal(c.rc_start, BRAID_ESTATE);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.nfail, 0);
}

static void test_stepped_started_twice_is_estate(void **state) {
  (void)state;
  struct start_ctx c;
  run_start(&c, 3, 0);
  assert_int_equal(c.rc_start, 0);
  assert_int_equal(c.child.rc_started, 0);
  assert_int_equal(c.child.rc_started_again, BRAID_ESTATE);
  assert_int_equal(c.rc_close, 0);
}

static void test_stepped_cancelling_start_cancels_the_child_and_waits_for_it(void **state) {
  (void)state;
  struct start_ctx c;
  run_start(&c, 4, 1);
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
    AWAIT_TO(&c->co, c->rc_start,
             c->rc_start_raw = braid_group_start(c->g, self, stackful_ready_after_one_second, c, NULL, &c->value));
    c->started_at = braid_now(self);
    AWAIT_TO(&c->co, c->rc_close, braid_group_close(c->g, 0));
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

/* A stepped root waits in the close of a group with one stepped child. */
struct lone_child_ctx {
  co_state co;
  braid_step_fn child;
  braid_scope *scope; /* for stepped_return_inside_scope */
  braid_group *g;
  group_result r;
  int rc_unref;
};

static int stepped_return_inside_scope(braid_task *self, void *ctx, int resume) {
  (void)resume;
  struct lone_child_ctx *c = ctx;
  CHECK_INT(braid_scope_enter(self, c->scope), 0);
  return 0;
}

static int lone_child_root(braid_task *self, void *ctx, int resume) {
  struct lone_child_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->scope = new_scope(BRAID_NEVER, 0);
    c->g = open_group(self);
    CHECK_INT(braid_group_spawn_stepped(c->g, c->child, c, NULL, NULL), 0);
    AWAIT_TO(&c->co, c->r.rc_close, braid_group_close(c->g, 0));
    c->r = free_closed_group(c->g, c->r.rc_close);
    c->rc_unref = braid_scope_unref(c->scope);
    return 0;
  }
  return CO_FELL_OFF;
}

/* The misuse ends the child with the failure BRAID_ESTATE; nothing leaks. */
static void assert_lone_child_fails_with_estate(braid_step_fn child) {
  struct lone_child_ctx c;
  memset(&c, 0, sizeof c);
  c.child = child;
  assert_int_equal(run_stepped_virtual(lone_child_root, &c), 0);
  assert_int_equal(c.r.rc_close, BRAID_EFAILED);
  assert_int_equal(c.r.nfail, 1);
  assert_int_equal(c.r.code, BRAID_ESTATE);
  assert_int_equal(c.rc_unref, 0);
}

static void test_stepped_task_returning_with_a_scope_open_ends_with_estate(void **state) {
  (void)state;
  assert_lone_child_fails_with_estate(stepped_return_inside_scope);
}

static void test_stepped_child_pending_without_a_wait_fails_with_estate(void **state) {
  (void)state;
  assert_lone_child_fails_with_estate(step_pending_without_wait);
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
    c->s = enter_new_scope(self, BRAID_NEVER, 0);
    c->thread_ref = braid_scope_ref(c->s);
    c->r0 = real_ns();
    CHECK_INT(pthread_create(&c->thread, NULL, cancel_soon, c), 0);
    AWAIT_TO(&c->co, c->rc_sleep, braid_sleep(self, 30 * SEC));
    c->real_elapsed = real_ns() - c->r0;
    c->rc_exit = leave_scope(c->s, c->rc_sleep, NULL);
    CHECK_INT(pthread_join(c->thread, NULL), 0);
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
