/*
 * test_limiter.c — braid_limiter (CapacityLimiter): total tokens, settable
 * (raising wakes waiters, 0 allowed), one token per borrower (EDEADLK),
 * borrowing on behalf of a token, release by a non-borrower (EPERM), the
 * list of borrowers, FIFO hand-off to every kind of waiter and to mixtures,
 * cancellation, races, every documented error code.
 */
#include "sync_helpers.h"

#include <stdlib.h>

#define MAX_BORROWERS 16

typedef struct borrowers {
  long n;
  int kinds[MAX_BORROWERS];
  uint64_t ids[MAX_BORROWERS];
} borrowers;

static borrowers get_borrowers(braid_limiter *m) {
  borrowers b;
  memset(&b, 0, sizeof b);
  b.n = braid_limiter_borrowers(m, b.kinds, b.ids, MAX_BORROWERS);
  CHECK(b.n >= 0);
  return b;
}

/* 1 if (kind, id) is among the borrowers. */
static int has_borrower(const borrowers *b, int kind, uint64_t id) {
  for (long i = 0; i < b->n && i < MAX_BORROWERS; i++)
    if (b->kinds[i] == kind && b->ids[i] == id) return 1;
  return 0;
}

static void lim_hold(braid_task *self, void *m) { CHECK_INT(braid_limiter_acquire(self, m), 0); }
static int lim_release(braid_task *self, void *m) { return braid_limiter_release(self, m, 0); }
static int lim_nowait(braid_task *self, void *m) { return braid_limiter_acquire_nowait(self, m, 0); }

/* ---- tokens and borrowers ---------------------------------------------------------- */

static void test_limiter_new_reports_total_and_no_borrowers(void **state) {
  (void)state;
  braid_limiter *m = new_limiter(3);
  braid_limiter_stats st = mstats(m);
  assert_int_equal(st.total, 3);
  assert_int_equal(st.borrowed, 0);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(braid_limiter_borrowers(m, NULL, NULL, 0), 0);
  assert_int_equal(braid_limiter_free(m), 0);
  m = new_limiter(0); /* 0 tokens is allowed */
  assert_int_equal(mstats(m).total, 0);
  assert_int_equal(braid_limiter_acquire_nowait(NULL, m, 0), BRAID_EWOULDBLOCK);
  assert_int_equal(braid_limiter_free(m), 0);
}

struct task_borrow_ctx {
  int rc, rc_again, rc_again_nowait, rc_behalf, rc_behalf_again, rc_release, rc_release_again, rc_release_behalf;
  int rc_release_unknown;
  uint64_t self_id;
  borrowers b;
  braid_limiter_stats st;
};

static int task_borrow_root(braid_task *self, void *arg) {
  struct task_borrow_ctx *c = arg;
  braid_limiter *m = new_limiter(5);
  c->self_id = braid_task_id(self);
  c->rc = braid_limiter_acquire(self, m);
  c->rc_again = braid_limiter_acquire(self, m);
  c->rc_again_nowait = braid_limiter_acquire_nowait(self, m, 0);
  /* The same task may also borrow on behalf of a token. */
  c->rc_behalf = braid_limiter_acquire_on_behalf(self, m, 42);
  c->rc_behalf_again = braid_limiter_acquire_on_behalf(self, m, 42);
  c->b = get_borrowers(m);
  c->st = mstats(m);
  c->rc_release_unknown = braid_limiter_release(self, m, 43);
  c->rc_release_behalf = braid_limiter_release(self, m, 42);
  c->rc_release = braid_limiter_release(self, m, 0);
  c->rc_release_again = braid_limiter_release(self, m, 0);
  CHECK_INT(lim_borrowed(m), 0);
  CHECK_INT(braid_limiter_free(m), 0);
  return 0;
}

static void test_limiter_a_task_holds_one_token_and_may_borrow_on_behalf_of_another(void **state) {
  (void)state;
  struct task_borrow_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(task_borrow_root, &c), 0);
  assert_int_equal(c.rc, 0);
  assert_int_equal(c.rc_again, BRAID_EDEADLK);
  assert_int_equal(c.rc_again_nowait, BRAID_EDEADLK);
  assert_int_equal(c.rc_behalf, 0);
  assert_int_equal(c.rc_behalf_again, BRAID_EDEADLK);
  assert_int_equal(c.st.borrowed, 2);
  assert_int_equal(c.st.waiting, 0);
  assert_int_equal(c.b.n, 2);
  assert_true(has_borrower(&c.b, BRAID_OWNER_TASK, c.self_id));
  assert_true(has_borrower(&c.b, BRAID_OWNER_FOREIGN, 42));
  assert_int_equal(c.rc_release_unknown, BRAID_EPERM);
  assert_int_equal(c.rc_release_behalf, 0);
  assert_int_equal(c.rc_release, 0);
  assert_int_equal(c.rc_release_again, BRAID_EPERM);
}

struct step_borrow_ctx {
  co_state co;
  braid_limiter *m;
  int rc, rc_again;
  borrowers b;
};

static int step_borrow_root(braid_task *self, void *ctx, int resume) {
  struct step_borrow_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->m = new_limiter(2);
    AWAIT(&c->co, braid_limiter_acquire(self, c->m));
    c->rc = c->co.rc;
    AWAIT(&c->co, braid_limiter_acquire(self, c->m));
    c->rc_again = c->co.rc;
    c->b = get_borrowers(c->m);
    CHECK_INT(braid_limiter_release(self, c->m, 0), 0);
    CHECK_INT(braid_limiter_free(c->m), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_limiter_a_stepped_task_borrows_once_and_a_second_borrow_is_edeadlk(void **state) {
  (void)state;
  struct step_borrow_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(step_borrow_root, &c), 0);
  assert_int_equal(c.rc, 0);
  assert_int_equal(c.rc_again, BRAID_EDEADLK);
  assert_int_equal(c.b.n, 1);
  assert_int_equal(c.b.kinds[0], BRAID_OWNER_TASK);
}

struct thread_borrow_ctx {
  braid_limiter *m;
  uint64_t tid;
  int rc, rc_again, rc_behalf;
  borrowers b;
};

static void *thread_borrow(void *arg) {
  struct thread_borrow_ctx *c = arg;
  c->tid = braid_thread_id();
  c->rc = braid_limiter_acquire(NULL, c->m);
  c->rc_again = braid_limiter_acquire(NULL, c->m);
  c->rc_behalf = braid_limiter_acquire_on_behalf(NULL, c->m, 7);
  c->b = get_borrowers(c->m);
  CHECK_INT(braid_limiter_release(NULL, c->m, 0), 0);
  return NULL;
}

static void test_limiter_a_thread_borrows_once_and_its_on_behalf_token_outlives_it(void **state) {
  (void)state;
  struct thread_borrow_ctx c;
  memset(&c, 0, sizeof c);
  c.m = new_limiter(4);
  assert_int_equal(in_thread(thread_borrow, &c), 0);
  assert_int_equal(c.rc, 0);
  assert_int_equal(c.rc_again, BRAID_EDEADLK);
  assert_int_equal(c.rc_behalf, 0);
  assert_int_equal(c.b.n, 2);
  assert_true(has_borrower(&c.b, BRAID_OWNER_THREAD, c.tid));
  assert_true(has_borrower(&c.b, BRAID_OWNER_FOREIGN, 7));
  /* The on-behalf token is released by whoever names it. */
  assert_int_equal(lim_borrowed(c.m), 1);
  assert_int_equal(braid_limiter_release(NULL, c.m, 7), 0);
  assert_int_equal(lim_borrowed(c.m), 0);
  assert_int_equal(braid_limiter_free(c.m), 0);
}

static void test_limiter_release_by_a_non_borrower_is_eperm(void **state) {
  (void)state;
  braid_limiter *m = new_limiter(2);
  assert_int_equal(braid_limiter_release(NULL, m, 0), BRAID_EPERM);
  assert_int_equal(braid_limiter_release(NULL, m, 9), BRAID_EPERM);
  assert_int_equal(braid_limiter_acquire_nowait(NULL, m, 9), 0);
  /* The thread itself is not a borrower: only token 9 is. */
  assert_int_equal(braid_limiter_release(NULL, m, 0), BRAID_EPERM);
  assert_int_equal(braid_limiter_release(NULL, m, 10), BRAID_EPERM);
  assert_int_equal(lim_borrowed(m), 1);
  assert_int_equal(braid_limiter_release(NULL, m, 9), 0);
  assert_int_equal(braid_limiter_release(NULL, m, 9), BRAID_EPERM);
  assert_int_equal(braid_limiter_free(m), 0);
}

struct other_task_ctx {
  braid_limiter *m;
  int rc_other_release;
};

static int other_releaser(braid_task *self, void *arg) {
  struct other_task_ctx *c = arg;
  c->rc_other_release = braid_limiter_release(self, c->m, 0);
  return 0;
}

static int other_task_root(braid_task *self, void *arg) {
  struct other_task_ctx *c = arg;
  c->m = new_limiter(2);
  CHECK_INT(braid_limiter_acquire(self, c->m), 0);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, other_releaser, c, NULL, NULL), 0);
  close_group(g);
  CHECK_INT(lim_borrowed(c->m), 1);
  CHECK_INT(braid_limiter_release(self, c->m, 0), 0);
  CHECK_INT(braid_limiter_free(c->m), 0);
  return 0;
}

static void test_limiter_release_by_another_task_is_eperm(void **state) {
  (void)state;
  struct other_task_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(other_task_root, &c), 0);
  assert_int_equal(c.rc_other_release, BRAID_EPERM);
}

static void test_limiter_borrowers_reports_the_count_beyond_cap(void **state) {
  (void)state;
  braid_limiter *m = new_limiter(10);
  for (uint64_t t = 1; t <= 5; t++)
    assert_int_equal(braid_limiter_acquire_nowait(NULL, m, 100 + t), 0);
  int kinds[2] = {-1, -1};
  uint64_t ids[2] = {0, 0};
  assert_int_equal(braid_limiter_borrowers(m, kinds, ids, 2), 5);
  assert_int_equal(kinds[0], BRAID_OWNER_FOREIGN);
  assert_int_equal(kinds[1], BRAID_OWNER_FOREIGN);
  assert_true(ids[0] >= 101 && ids[0] <= 105);
  assert_true(ids[1] >= 101 && ids[1] <= 105 && ids[1] != ids[0]);
  assert_int_equal(braid_limiter_borrowers(m, NULL, NULL, 0), 5);
  borrowers b = get_borrowers(m);
  assert_int_equal(b.n, 5);
  for (uint64_t t = 1; t <= 5; t++)
    assert_true(has_borrower(&b, BRAID_OWNER_FOREIGN, 100 + t));
  for (uint64_t t = 1; t <= 5; t++)
    assert_int_equal(braid_limiter_release(NULL, m, 100 + t), 0);
  assert_int_equal(braid_limiter_borrowers(m, kinds, ids, 2), 0);
  assert_int_equal(braid_limiter_free(m), 0);
}

/* ---- total -------------------------------------------------------------------------------- */

static void test_limiter_raising_the_total_wakes_waiters_in_fifo_order(void **state) {
  (void)state;
  braid_limiter *m = new_limiter(0);
  order_log log;
  log_init(&log);
  cb_rec r[3];
  braid_wait *w[3];
  for (int i = 0; i < 3; i++) {
    cb_rec_init(&r[i], &log, i);
    assert_int_equal(braid_limiter_acquire_cb(m, (uint64_t)(50 + i), cb_record, &r[i], &w[i]), BRAID_EPENDING);
  }
  assert_int_equal(lim_waiting(m), 3);
  assert_int_equal(braid_limiter_set_total(m, 2), 0);
  CHECK_LOG(&log, 0, 1);
  braid_limiter_stats st = mstats(m);
  assert_int_equal(st.total, 2);
  assert_int_equal(st.borrowed, 2);
  assert_int_equal(st.waiting, 1);
  assert_int_equal(braid_limiter_set_total(m, 3), 0);
  CHECK_LOG(&log, 0, 1, 2);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(atomic_load(&r[i].calls), 1);
    assert_int_equal(atomic_load(&r[i].result), 0);
    assert_int_equal(braid_limiter_release(NULL, m, (uint64_t)(50 + i)), 0);
    assert_int_equal(braid_wait_free(w[i]), 0);
  }
  assert_int_equal(braid_limiter_free(m), 0);
}

static void test_limiter_lowering_the_total_below_borrowed_holds_back_waiters_until_raised(void **state) {
  (void)state;
  braid_limiter *m = new_limiter(2);
  assert_int_equal(braid_limiter_acquire_nowait(NULL, m, 1), 0);
  assert_int_equal(braid_limiter_acquire_nowait(NULL, m, 2), 0);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  assert_int_equal(braid_limiter_acquire_cb(m, 3, cb_record, &r, &w), BRAID_EPENDING);
  assert_int_equal(braid_limiter_set_total(m, 0), 0);
  braid_limiter_stats st = mstats(m);
  assert_int_equal(st.total, 0);
  assert_int_equal(st.borrowed, 2);
  assert_int_equal(braid_limiter_release(NULL, m, 1), 0);
  assert_int_equal(braid_limiter_release(NULL, m, 2), 0);
  assert_int_equal(atomic_load(&r.calls), 0); /* no token to give */
  assert_int_equal(lim_borrowed(m), 0);
  assert_int_equal(braid_limiter_acquire_nowait(NULL, m, 4), BRAID_EWOULDBLOCK);
  assert_int_equal(braid_limiter_set_total(m, 1), 0);
  assert_int_equal(atomic_load(&r.calls), 1);
  assert_int_equal(atomic_load(&r.result), 0);
  borrowers b = get_borrowers(m);
  assert_int_equal(b.n, 1);
  assert_true(has_borrower(&b, BRAID_OWNER_FOREIGN, 3));
  assert_int_equal(braid_limiter_release(NULL, m, 3), 0);
  assert_int_equal(braid_wait_free(w), 0);
  assert_int_equal(braid_limiter_free(m), 0);
}

/* ---- hand-off to each kind of waiter ---------------------------------------------------- */

struct handoff_ctx {
  handoff_case hc;
  braid_limiter_stats before, after_release;
  borrowers b_after;
};

static void handoff_snap(handoff_case *hc, int when) {
  struct handoff_ctx *c = hc->ud;
  if (when == SNAP_QUEUED) {
    c->before = mstats(hc->obj);
  } else {
    c->after_release = mstats(hc->obj);
    c->b_after = get_borrowers(hc->obj);
  }
}

/* The waiter got the token: have it released. */
static void handoff_let_go(braid_task *self, handoff_case *hc) {
  if (hc->kind == W_CB)
    CHECK_INT(braid_limiter_release(self, hc->obj, hc->w.token), 0);
  else if (hc->kind != W_STEPPED)
    atomic_store(&hc->w.release, 1);
}

static void run_handoff(int kind) {
  struct handoff_ctx c;
  memset(&c, 0, sizeof c);
  c.hc = (handoff_case){.ops = kind == W_STEPPED ? &lim_ops
                               : kind == W_CB    ? &lim_keep_ops
                                                 : &lim_hold_ops,
                        .obj = new_limiter(1),
                        .kind = kind,
                        .hold = lim_hold,
                        .wake = lim_release,
                        .nowait = lim_nowait,
                        .let_go = handoff_let_go,
                        .snap = handoff_snap,
                        .ud = &c};
  run_handoff_case(&c.hc);
  assert_int_equal(c.before.borrowed, 1);
  assert_int_equal(c.before.waiting, 1);
  assert_int_equal(c.after_release.borrowed, 1);
  assert_int_equal(c.after_release.waiting, 0);
  assert_int_equal(c.b_after.n, 1);
  assert_int_equal(c.b_after.kinds[0], sw_owner_kind(&c.hc.w));
  assert_int_equal(c.b_after.ids[0], sw_id(&c.hc.w));
  assert_int_equal(lim_borrowed(c.hc.obj), 0);
  assert_int_equal(braid_limiter_free(c.hc.obj), 0);
}

static void test_limiter_release_hands_the_token_to_a_waiting_stackful_task(void **state) {
  (void)state;
  run_handoff(W_TASK);
}

static void test_limiter_release_hands_the_token_to_a_waiting_stepped_task(void **state) {
  (void)state;
  run_handoff(W_STEPPED);
}

static void test_limiter_release_hands_the_token_to_a_waiting_thread(void **state) {
  (void)state;
  run_handoff(W_THREAD);
}

static void test_limiter_release_hands_the_token_to_a_waiting_callback(void **state) {
  (void)state;
  run_handoff(W_CB);
}

/* A callback waiter keeps its token: release it for the next one. */
static void mix_on_done(braid_task *self, mix_case *mc, int i) {
  if (mc->kinds[i] == W_CB) CHECK_INT(braid_limiter_release(self, mc->obj, mc->w[i].token), 0);
}

static void test_limiter_hands_tokens_over_in_fifo_order_across_kinds(void **state) {
  (void)state;
  mix_case *mc = calloc(1, sizeof *mc);
  assert_non_null(mc);
  const int kinds[] = {W_TASK, W_THREAD, W_CB, W_STEPPED, W_CB, W_TASK, W_THREAD, W_STEPPED};
  *mc = (mix_case){.ops = &lim_ops,
                   .cb_ops = &lim_keep_ops,
                   .obj = new_limiter(1),
                   .hold = lim_hold,
                   .wake = lim_release,
                   .on_done = mix_on_done};
  run_mix_case(mc, kinds, 8);
  assert_int_equal(lim_borrowed(mc->obj), 0);
  assert_int_equal(braid_limiter_free(mc->obj), 0);
  free(mc);
}

/* ---- cancellation -------------------------------------------------------------------------- */

struct deadline_ctx {
  deadline_case dc;
  braid_limiter_stats after_deadline;
  borrowers after_release;
};

static void deadline_snap(deadline_case *dc, int when) {
  struct deadline_ctx *c = dc->ud;
  if (when == SNAP_DEADLINE_PASSED)
    c->after_deadline = mstats(dc->obj);
  else
    c->after_release = get_borrowers(dc->obj);
}

static void run_deadline(int kind) {
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  c.dc = (deadline_case){.ops = &lim_ops,
                         .obj = new_limiter(1),
                         .kind = kind,
                         .deadline = 4 * SEC,
                         .hold = lim_hold,
                         .wake = lim_release,
                         .snap = deadline_snap,
                         .ud = &c};
  run_deadline_case(&c.dc);
  assert_int_equal(c.after_deadline.borrowed, 1);
  assert_int_equal(c.after_release.n, 1);
  assert_true(has_borrower(&c.after_release, BRAID_OWNER_TASK, sw_id(&c.dc.next)));
  assert_int_equal(lim_borrowed(c.dc.obj), 0);
  assert_int_equal(braid_limiter_free(c.dc.obj), 0);
}

static void test_limiter_a_stackful_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue(void **state) {
  (void)state;
  run_deadline(W_TASK);
}

static void test_limiter_a_stepped_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue(void **state) {
  (void)state;
  run_deadline(W_STEPPED);
}

static void test_limiter_a_waiting_thread_whose_scope_is_cancelled_gets_ecanceled(void **state) {
  (void)state;
  braid_limiter *m = new_limiter(0);
  sw w;
  sw_init(&w, &lim_ops, m, W_THREAD, 1, NULL);
  sw_thread_scope_cancelled(&w);
  assert_int_equal(braid_limiter_set_total(m, 1), 0);
  assert_int_equal(lim_borrowed(m), 0); /* the token did not go to the cancelled waiter */
  assert_int_equal(braid_limiter_free(m), 0);
}

static void test_limiter_a_waiting_thread_with_a_short_real_deadline_gets_ecanceled(void **state) {
  (void)state;
  braid_limiter *m = new_limiter(0);
  sw w;
  sw_init(&w, &lim_ops, m, W_THREAD, 1, NULL);
  sw_thread_short_deadline(&w, 30 * MSEC);
  assert_int_equal(braid_limiter_free(m), 0);
}

struct level_ctx {
  level_case lc;
  braid_limiter *m;
  int rc_behalf, rc_nowait;
  uint64_t borrowed_after;
};

static int level_acquire(braid_task *self, void *arg) {
  struct level_ctx *c = arg;
  return braid_limiter_acquire(self, c->m);
}

static void level_more(braid_task *self, void *arg) {
  struct level_ctx *c = arg;
  c->rc_behalf = braid_limiter_acquire_on_behalf(self, c->m, 5);
  c->borrowed_after = (uint64_t)lim_borrowed(c->m);
  c->rc_nowait = braid_limiter_acquire_nowait(self, c->m, 0); /* not a checkpoint */
  if (c->rc_nowait == 0) CHECK_INT(braid_limiter_release(self, c->m, 0), 0);
}

static int level_root(braid_task *self, void *arg) {
  struct level_ctx *c = arg;
  c->m = new_limiter(3);
  c->lc = (level_case){.op = level_acquire, .more = level_more, .ud = c};
  level_case_run(self, &c->lc);
  CHECK_INT(braid_limiter_free(c->m), 0);
  return 0;
}

static void test_limiter_acquire_in_a_cancelled_scope_yields_and_fails_without_borrowing(void **state) {
  (void)state;
  struct level_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(level_root, &c), 0);
  assert_level_case(&c.lc);
  assert_int_equal(c.rc_behalf, BRAID_ECANCELED);
  assert_int_equal(c.borrowed_after, 0);
  assert_int_equal(c.rc_nowait, 0);
}

/* ---- race: release against cancellation of the waiter -------------------------------- */

/* Each round, token 77 holds the only token; releasing it races the
 * cancellation of a waiting thread that holds what it gets. */
static void race_hold(race_case *rc) { assert_int_equal(braid_limiter_acquire_nowait(NULL, rc->obj, 77), 0); }
static int race_release(race_case *rc) { return braid_limiter_release(NULL, rc->obj, 77); }

static void race_settle(race_case *rc, sw *w) {
  CHECK_INT(rc->rc_wake, 0);
  borrowers b = get_borrowers(rc->obj);
  if (sw_rc(w) == 0) {
    CHECK_INT(b.n, 1);
    CHECK(has_borrower(&b, BRAID_OWNER_THREAD, sw_id(w)));
    atomic_store(&w->release, 1);
  } else {
    CHECK_INT(b.n, 0);
  }
}

static void race_check(race_case *rc, sw *w) {
  (void)w;
  CHECK_INT(lim_borrowed(rc->obj), 0);
}

static void test_limiter_race_release_against_cancel_of_a_waiting_thread_never_loses_the_token(void **state) {
  (void)state;
  braid_limiter *m = new_limiter(1);
  race_case rc = {.ops = &lim_hold_ops,
                  .obj = m,
                  .setup = race_hold,
                  .wake = race_release,
                  .settle = race_settle,
                  .check = race_check};
  run_race_case(&rc);
  assert_int_equal(braid_limiter_free(m), 0);
}

/* ---- errors ------------------------------------------------------------------------------ */

static void test_limiter_null_and_invalid_arguments_are_einval(void **state) {
  (void)state;
  braid_limiter *m = new_limiter(1);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  braid_limiter_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  int kinds[1];
  uint64_t ids[1];
  assert_int_equal(braid_limiter_new(1, NULL), BRAID_EINVAL);
  assert_int_equal(braid_limiter_free(NULL), BRAID_EINVAL);
  assert_int_equal(braid_limiter_acquire(NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_limiter_acquire_on_behalf(NULL, NULL, 1), BRAID_EINVAL);
  assert_int_equal(braid_limiter_acquire_on_behalf(NULL, m, 0), BRAID_EINVAL);
  assert_int_equal(braid_limiter_acquire_on_behalf(NULL, m, (uint64_t)1 << 60), BRAID_EINVAL);
  assert_int_equal(braid_limiter_acquire_nowait(NULL, NULL, 0), BRAID_EINVAL);
  assert_int_equal(braid_limiter_acquire_nowait(NULL, m, (uint64_t)1 << 60), BRAID_EINVAL);
  assert_int_equal(braid_limiter_acquire_cb(NULL, 1, cb_record, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_limiter_acquire_cb(m, 0, cb_record, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_limiter_acquire_cb(m, (uint64_t)1 << 60, cb_record, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_limiter_acquire_cb(m, 1, NULL, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_limiter_acquire_cb(m, 1, cb_record, &r, NULL), BRAID_EINVAL);
  assert_int_equal(braid_limiter_release(NULL, NULL, 0), BRAID_EINVAL);
  assert_int_equal(braid_limiter_set_total(NULL, 1), BRAID_EINVAL);
  assert_int_equal(braid_limiter_statistics(NULL, &st), BRAID_EINVAL);
  assert_int_equal(braid_limiter_statistics(m, NULL), BRAID_EINVAL);
  st.size = 0;
  assert_int_equal(braid_limiter_statistics(m, &st), BRAID_EINVAL);
  assert_int_equal(braid_limiter_borrowers(NULL, kinds, ids, 1), BRAID_EINVAL);
  assert_int_equal(braid_limiter_borrowers(m, NULL, NULL, 1), BRAID_EINVAL);
  /* Nothing was borrowed by the refused calls. */
  assert_int_equal(lim_borrowed(m), 0);
  assert_int_equal(lim_waiting(m), 0);
  assert_int_equal(atomic_load(&r.calls), 0);
  assert_int_equal(braid_limiter_free(m), 0);
}

static void test_limiter_free_with_borrowed_tokens_or_waiters_is_estate(void **state) {
  (void)state;
  braid_limiter *m = new_limiter(1);
  assert_int_equal(braid_limiter_acquire_nowait(NULL, m, 1), 0);
  assert_int_equal(braid_limiter_free(m), BRAID_ESTATE);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  assert_int_equal(braid_limiter_acquire_cb(m, 2, cb_record, &r, &w), BRAID_EPENDING);
  assert_int_equal(braid_limiter_free(m), BRAID_ESTATE);
  assert_int_equal(braid_limiter_release(NULL, m, 1), 0);
  assert_int_equal(atomic_load(&r.calls), 1);
  assert_int_equal(braid_limiter_free(m), BRAID_ESTATE);
  assert_int_equal(braid_limiter_release(NULL, m, 2), 0);
  assert_int_equal(braid_wait_free(w), 0);
  assert_int_equal(braid_limiter_free(m), 0);
}

static void test_limiter_callback_borrower_twice_is_edeadlk(void **state) {
  (void)state;
  braid_limiter *m = new_limiter(1);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  assert_int_equal(braid_limiter_acquire_cb(m, 8, cb_record, &r, &w), 0);
  assert_null(w);
  assert_int_equal(braid_limiter_acquire_cb(m, 8, cb_record, &r, &w), BRAID_EDEADLK);
  assert_int_equal(braid_limiter_acquire_nowait(NULL, m, 8), BRAID_EDEADLK);
  assert_int_equal(atomic_load(&r.calls), 0);
  assert_int_equal(lim_waiting(m), 0);
  assert_int_equal(braid_limiter_release(NULL, m, 8), 0);
  assert_int_equal(braid_limiter_free(m), 0);
}

struct wrong_ctx {
  wrong_calls rc;
  int rc_nowait_other_thread;
  uint64_t borrowed_after;
  size_t waiting_after;
};

static int lim_acquire_op(braid_task *task, void *m) { return braid_limiter_acquire(task, m); }
static int lim_nowait_op(braid_task *task, void *m) { return braid_limiter_acquire_nowait(task, m, 0); }

static int wrong_root(braid_task *self, void *arg) {
  struct wrong_ctx *c = arg;
  braid_limiter *m = new_limiter(1);
  c->rc.rc_other_thread = call_from_another_thread(lim_acquire_op, self, m);
  c->rc_nowait_other_thread = call_from_another_thread(lim_nowait_op, self, m);
  c->rc.rc_not_running = call_naming_a_blocked_task(self, lim_acquire_op, m);
  c->borrowed_after = (uint64_t)lim_borrowed(m);
  CHECK_INT(braid_limiter_set_total(m, 0), 0);
  c->rc.rc_null_in_loop = braid_limiter_acquire(NULL, m);
  c->waiting_after = mstats(m).waiting;
  CHECK_INT(braid_limiter_free(m), 0);
  return 0;
}

static void test_limiter_wrong_thread_and_wrong_task_are_refused(void **state) {
  (void)state;
  struct wrong_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(wrong_root, &c), 0);
  assert_wrong_calls(&c.rc);
  assert_int_equal(c.rc_nowait_other_thread, BRAID_ETHREAD);
  assert_int_equal(c.borrowed_after, 0);
  assert_int_equal(c.waiting_after, 0);
}

static void test_limiter_allocation_failures_are_enomem_and_change_nothing(void **state) {
  (void)state;
  fail_alloc fa;
  fail_alloc_install(&fa);
  atomic_store(&fa.failing, 1);
  braid_limiter *m = NULL;
  int rc = braid_limiter_new(2, &m);
  atomic_store(&fa.failing, 0);
  assert_int_equal(rc, BRAID_ENOMEM);
  assert_null(m);
  m = new_limiter(1);
  /* Borrowing, raising the total and registering a callback may allocate:
   * if the allocator refused, the call must say ENOMEM and change nothing. */
  atomic_store(&fa.refused, 0);
  atomic_store(&fa.failing, 1);
  int rc_nowait = braid_limiter_acquire_nowait(NULL, m, 3);
  atomic_store(&fa.failing, 0);
  if (rc_nowait != 0) {
    assert_int_equal(rc_nowait, BRAID_ENOMEM);
    assert_true(atomic_load(&fa.refused) > 0);
    assert_int_equal(lim_borrowed(m), 0);
    assert_int_equal(braid_limiter_acquire_nowait(NULL, m, 3), 0);
  }
  atomic_store(&fa.refused, 0);
  atomic_store(&fa.failing, 1);
  int rc_total = braid_limiter_set_total(m, 1000);
  atomic_store(&fa.failing, 0);
  if (rc_total != 0) {
    assert_int_equal(rc_total, BRAID_ENOMEM);
    assert_true(atomic_load(&fa.refused) > 0);
    assert_int_equal(mstats(m).total, 1);
  }
  assert_int_equal(braid_limiter_set_total(m, 1), 0);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  atomic_store(&fa.refused, 0);
  atomic_store(&fa.failing, 1);
  int rc_cb = braid_limiter_acquire_cb(m, 4, cb_record, &r, &w);
  atomic_store(&fa.failing, 0);
  if (atomic_load(&fa.refused) > 0) {
    assert_int_equal(rc_cb, BRAID_ENOMEM);
    assert_int_equal(lim_waiting(m), 0);
  } else {
    assert_int_equal(rc_cb, BRAID_EPENDING);
    assert_int_equal(braid_wait_free(w), 0);
  }
  assert_int_equal(braid_limiter_release(NULL, m, 3), 0);
  assert_int_equal(braid_limiter_free(m), 0);
  fail_alloc_uninstall();
  assert_int_equal(atomic_load(&fa.live), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_limiter_new_reports_total_and_no_borrowers),
      BT(test_limiter_a_task_holds_one_token_and_may_borrow_on_behalf_of_another),
      BT(test_limiter_a_stepped_task_borrows_once_and_a_second_borrow_is_edeadlk),
      BT(test_limiter_a_thread_borrows_once_and_its_on_behalf_token_outlives_it),
      BT(test_limiter_release_by_a_non_borrower_is_eperm),
      BT(test_limiter_release_by_another_task_is_eperm),
      BT(test_limiter_borrowers_reports_the_count_beyond_cap),
      BT(test_limiter_raising_the_total_wakes_waiters_in_fifo_order),
      BT(test_limiter_lowering_the_total_below_borrowed_holds_back_waiters_until_raised),
      BT(test_limiter_release_hands_the_token_to_a_waiting_stackful_task),
      BT(test_limiter_release_hands_the_token_to_a_waiting_stepped_task),
      BT(test_limiter_release_hands_the_token_to_a_waiting_thread),
      BT(test_limiter_release_hands_the_token_to_a_waiting_callback),
      BT(test_limiter_hands_tokens_over_in_fifo_order_across_kinds),
      BT(test_limiter_a_stackful_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue),
      BT(test_limiter_a_stepped_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue),
      BT(test_limiter_a_waiting_thread_whose_scope_is_cancelled_gets_ecanceled),
      BT(test_limiter_a_waiting_thread_with_a_short_real_deadline_gets_ecanceled),
      BT(test_limiter_acquire_in_a_cancelled_scope_yields_and_fails_without_borrowing),
      BT(test_limiter_race_release_against_cancel_of_a_waiting_thread_never_loses_the_token),
      BT(test_limiter_null_and_invalid_arguments_are_einval),
      BT(test_limiter_free_with_borrowed_tokens_or_waiters_is_estate),
      BT(test_limiter_callback_borrower_twice_is_edeadlk),
      BT(test_limiter_wrong_thread_and_wrong_task_are_refused),
      BT(test_limiter_allocation_failures_are_enomem_and_change_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
