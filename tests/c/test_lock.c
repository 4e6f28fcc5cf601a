/*
 * test_lock.c — braid_lock: ownership by tasks, threads and foreign owners;
 * not reentrant; only the owner releases; FIFO hand-off to every kind of
 * waiter (stackful task, stepped task, plain thread, callback) and to
 * mixtures of them, with no barging; cancellation of waiters (deadlines on
 * the virtual clock, thread scopes cancelled from another thread or by a
 * real deadline); level-triggered cancellation; races of a release against
 * the cancellation of the waiter; every documented error code.
 */
#include "sync_helpers.h"

#include <stdlib.h>

/* ---- helpers ---------------------------------------------------------- */

/* Check that the lock is owned by `kind`/`id`. */
#define CHECK_OWNER(l, kind, id)                                                                                       \
  do {                                                                                                                 \
    braid_lock_stats st_ = lstats(l);                                                                                  \
    CHECK_INT(st_.locked, 1);                                                                                          \
    CHECK_INT(st_.owner_kind, (kind));                                                                                 \
    CHECK_INT(st_.owner_id, (id));                                                                                     \
  } while (0)

#define CHECK_FREE(l)                                                                                                  \
  do {                                                                                                                 \
    braid_lock_stats st_ = lstats(l);                                                                                  \
    CHECK_INT(st_.locked, 0);                                                                                          \
    CHECK_INT(st_.owner_kind, BRAID_OWNER_NONE);                                                                       \
    CHECK_INT(st_.waiting, 0);                                                                                         \
  } while (0)

static void lock_hold(braid_task *self, void *l) { CHECK_INT(braid_lock_acquire(self, l), 0); }
static int lock_release(braid_task *self, void *l) { return braid_lock_release(self, l); }
static int lock_nowait(braid_task *self, void *l) { return braid_lock_acquire_nowait(self, l); }

/* ---- basics ------------------------------------------------------------ */

static void test_lock_new_lock_is_free_and_frees(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  assert_non_null(l);
  CHECK_FREE(l);
  assert_int_equal(braid_lock_free(l), 0);
}

static int task_owner_root(braid_task *self, void *arg) {
  (void)arg;
  braid_lock *l = new_lock();
  CHECK_INT(braid_lock_acquire(self, l), 0);
  CHECK_OWNER(l, BRAID_OWNER_TASK, braid_task_id(self));
  CHECK_INT(lstats(l).waiting, 0);
  CHECK_INT(braid_lock_release(self, l), 0);
  CHECK_FREE(l);
  CHECK_INT(braid_lock_acquire_nowait(self, l), 0);
  CHECK_OWNER(l, BRAID_OWNER_TASK, braid_task_id(self));
  CHECK_INT(braid_lock_release(self, l), 0);
  CHECK_FREE(l);
  CHECK_INT(braid_lock_free(l), 0);
  return 0;
}

static void test_lock_a_task_owns_it_and_statistics_report_its_task_id(void **state) {
  (void)state;
  assert_int_equal(run_virtual(task_owner_root, NULL), 0);
}

struct step_owner_ctx {
  co_state co;
  braid_lock *l;
  int rc;
};

static int step_owner_root(braid_task *self, void *ctx, int resume) {
  struct step_owner_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->l = new_lock();
    AWAIT(&c->co, braid_lock_acquire(self, c->l));
    c->rc = c->co.rc;
    CHECK_OWNER(c->l, BRAID_OWNER_TASK, braid_task_id(self));
    CHECK_INT(braid_lock_release(self, c->l), 0);
    CHECK_FREE(c->l);
    CHECK_INT(braid_lock_free(c->l), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_lock_a_stepped_task_owns_it_after_the_outcome_arrives(void **state) {
  (void)state;
  struct step_owner_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(step_owner_root, &c), 0);
  assert_int_equal(c.rc, 0);
}

struct thread_owner_ctx {
  braid_lock *l;
  uint64_t tid, tid_again;
  braid_lock_stats held;
  int rc_acquire, rc_release, rc_nowait, rc_release2;
};

static void *thread_owner_thread(void *arg) {
  struct thread_owner_ctx *c = arg;
  c->tid = braid_thread_id();
  c->tid_again = braid_thread_id();
  c->rc_acquire = braid_lock_acquire(NULL, c->l);
  c->held = lstats(c->l);
  c->rc_release = braid_lock_release(NULL, c->l);
  c->rc_nowait = braid_lock_acquire_nowait(NULL, c->l);
  c->rc_release2 = braid_lock_release(NULL, c->l);
  return NULL;
}

static void test_lock_a_plain_thread_owns_it_and_statistics_report_its_thread_id(void **state) {
  (void)state;
  struct thread_owner_ctx c;
  memset(&c, 0, sizeof c);
  c.l = new_lock();
  assert_int_equal(in_thread(thread_owner_thread, &c), 0);
  assert_int_equal(c.rc_acquire, 0);
  assert_true(c.tid > 0);
  assert_int_equal(c.tid, c.tid_again);
  assert_true(c.tid != braid_thread_id());
  assert_int_equal(c.held.locked, 1);
  assert_int_equal(c.held.owner_kind, BRAID_OWNER_THREAD);
  assert_int_equal(c.held.owner_id, c.tid);
  assert_int_equal(c.rc_release, 0);
  assert_int_equal(c.rc_nowait, 0);
  assert_int_equal(c.rc_release2, 0);
  CHECK_FREE(c.l);
  assert_int_equal(braid_lock_free(c.l), 0);
}

static void test_lock_a_foreign_owner_acquires_a_free_lock_at_once_without_a_callback(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = (braid_wait *)&r; /* must be overwritten with NULL */
  assert_int_equal(braid_lock_acquire_cb(l, 77, cb_record, &r, &w), 0);
  assert_null(w);
  assert_int_equal(atomic_load(&r.calls), 0);
  CHECK_OWNER(l, BRAID_OWNER_FOREIGN, 77);
  assert_int_equal(braid_lock_release_owner(l, 77), 0);
  CHECK_FREE(l);
  assert_int_equal(atomic_load(&r.calls), 0);
  assert_int_equal(braid_lock_free(l), 0);
}

/*
 * An acquire that gets a free lock is a cancellation point always and a
 * schedule point once every coop_budget such operations of the loop
 * (braid_run_opts.coop_budget; 1 = every time, as in Trio).
 */
struct uncontended_ctx {
  int n;                  /* acquires to make */
  atomic_int sibling_ran; /* set by a sibling task when it runs */
  int ran_after[8];       /* sibling_ran after the i-th acquire returned */
};

static int uncontended_root(braid_task *self, void *arg) {
  struct uncontended_ctx *c = arg;
  braid_lock *l = new_lock();
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, set_flag_body, &c->sibling_ran, NULL, NULL), 0);
  for (int i = 0; i < c->n; i++) {
    CHECK_INT(braid_lock_acquire(self, l), 0);
    c->ran_after[i] = atomic_load(&c->sibling_ran);
    CHECK_INT(braid_lock_release(self, l), 0);
  }
  close_group(g);
  CHECK_INT(braid_lock_free(l), 0);
  return 0;
}

static int run_with_budget(braid_fn fn, void *arg, unsigned budget) {
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  o.coop_budget = budget;
  return braid_run(fn, arg, &o);
}

static void test_lock_uncontended_acquire_with_coop_budget_1_lets_other_tasks_run(void **state) {
  (void)state;
  struct uncontended_ctx c;
  memset(&c, 0, sizeof c);
  c.n = 1;
  assert_int_equal(run_with_budget(uncontended_root, &c, 1), 0);
  assert_int_equal(c.ran_after[0], 1);
}

static void test_lock_uncontended_acquires_yield_within_every_coop_budget(void **state) {
  (void)state;
  struct uncontended_ctx c;
  memset(&c, 0, sizeof c);
  c.n = 4;
  assert_int_equal(run_with_budget(uncontended_root, &c, 4), 0);
  assert_int_equal(c.ran_after[3], 1);
}

struct uncontended_step_ctx {
  co_state co;
  braid_lock *l;
  int rc;
};

static int uncontended_step_root(braid_task *self, void *ctx, int resume) {
  struct uncontended_step_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->l = new_lock();
    AWAIT(&c->co, braid_lock_acquire(self, c->l));
    c->rc = c->co.rc;
    CHECK_INT(braid_lock_release(self, c->l), 0);
    CHECK_INT(braid_lock_free(c->l), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_lock_uncontended_acquire_by_a_stepped_task_with_coop_budget_1_pends(void **state) {
  (void)state;
  struct uncontended_step_ctx c;
  memset(&c, 0, sizeof c);
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  o.coop_budget = 1;
  assert_int_equal(braid_run_stepped(uncontended_step_root, &c, &o), 0);
  assert_int_equal(c.rc, 0);
  assert_int_equal(c.co.immediate, 0);
}

/* ---- not reentrant, only the owner releases ---------------------------- */

struct reentrant_ctx {
  int rc_again, rc_again_nowait, rc_nowait_other;
  braid_lock_stats after;
};

static int reentrant_root(braid_task *self, void *arg) {
  struct reentrant_ctx *c = arg;
  braid_lock *l = new_lock();
  CHECK_INT(braid_lock_acquire(self, l), 0);
  c->rc_again = braid_lock_acquire(self, l);
  c->rc_again_nowait = braid_lock_acquire_nowait(self, l);
  c->after = lstats(l);
  CHECK_INT(braid_lock_release(self, l), 0);
  CHECK_FREE(l);
  CHECK_INT(braid_lock_free(l), 0);
  return 0;
}

static void test_lock_is_not_reentrant_for_a_task(void **state) {
  (void)state;
  struct reentrant_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(reentrant_root, &c), 0);
  assert_int_equal(c.rc_again, BRAID_EDEADLK);
  assert_int_equal(c.rc_again_nowait, BRAID_EDEADLK);
  /* The refused calls did not queue the owner behind itself. */
  assert_int_equal(c.after.locked, 1);
  assert_int_equal(c.after.waiting, 0);
}

struct reentrant_step_ctx {
  co_state co;
  braid_lock *l;
  int rc_again;
  size_t waiting;
};

static int reentrant_step_root(braid_task *self, void *ctx, int resume) {
  struct reentrant_step_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->l = new_lock();
    AWAIT(&c->co, braid_lock_acquire(self, c->l));
    CHECK_INT(c->co.rc, 0);
    AWAIT(&c->co, braid_lock_acquire(self, c->l));
    c->rc_again = c->co.rc;
    c->waiting = lstats(c->l).waiting;
    CHECK_INT(braid_lock_release(self, c->l), 0);
    CHECK_INT(braid_lock_free(c->l), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_lock_is_not_reentrant_for_a_stepped_task(void **state) {
  (void)state;
  struct reentrant_step_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(reentrant_step_root, &c), 0);
  assert_int_equal(c.rc_again, BRAID_EDEADLK);
  assert_int_equal(c.waiting, 0);
}

struct reentrant_thread_ctx {
  braid_lock *l;
  int rc, rc_again, rc_again_nowait, rc_release;
  size_t waiting;
};

static void *reentrant_thread(void *arg) {
  struct reentrant_thread_ctx *c = arg;
  c->rc = braid_lock_acquire(NULL, c->l);
  c->rc_again = braid_lock_acquire(NULL, c->l);
  c->rc_again_nowait = braid_lock_acquire_nowait(NULL, c->l);
  c->waiting = lstats(c->l).waiting;
  c->rc_release = braid_lock_release(NULL, c->l);
  return NULL;
}

static void test_lock_is_not_reentrant_for_a_thread_or_a_foreign_owner(void **state) {
  (void)state;
  struct reentrant_thread_ctx c;
  memset(&c, 0, sizeof c);
  c.l = new_lock();
  assert_int_equal(in_thread(reentrant_thread, &c), 0);
  assert_int_equal(c.rc, 0);
  assert_int_equal(c.rc_again, BRAID_EDEADLK);
  assert_int_equal(c.rc_again_nowait, BRAID_EDEADLK);
  assert_int_equal(c.waiting, 0);
  assert_int_equal(c.rc_release, 0);

  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  assert_int_equal(braid_lock_acquire_cb(c.l, 5, cb_record, &r, &w), 0);
  w = (braid_wait *)&r;
  assert_int_equal(braid_lock_acquire_cb(c.l, 5, cb_record, &r, &w), BRAID_EDEADLK);
  assert_int_equal(atomic_load(&r.calls), 0);
  assert_int_equal(lstats(c.l).waiting, 0);
  assert_int_equal(braid_lock_release_owner(c.l, 5), 0);
  CHECK_FREE(c.l);
  assert_int_equal(braid_lock_free(c.l), 0);
}

struct eperm_ctx {
  braid_lock *l;
  braid_task *other;
  int rc_unlocked_task, rc_unlocked_owner;
  int rc_by_other_task, rc_by_thread, rc_by_foreign, rc_other_nowait;
  int rc_thread_release_while_task_owns;
  braid_lock_stats after;
};

static int eperm_other(braid_task *self, void *arg) {
  struct eperm_ctx *c = arg;
  c->rc_by_other_task = braid_lock_release(self, c->l);
  c->rc_other_nowait = braid_lock_acquire_nowait(self, c->l);
  return 0;
}

static void *eperm_thread(void *arg) {
  struct eperm_ctx *c = arg;
  c->rc_thread_release_while_task_owns = braid_lock_release(NULL, c->l);
  return NULL;
}

static int eperm_root(braid_task *self, void *arg) {
  struct eperm_ctx *c = arg;
  c->l = new_lock();
  c->rc_unlocked_task = braid_lock_release(self, c->l);
  c->rc_unlocked_owner = braid_lock_release_owner(c->l, 3);
  CHECK_INT(braid_lock_acquire(self, c->l), 0);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, eperm_other, c, NULL, NULL), 0);
  close_group(g);
  CHECK_INT(in_thread(eperm_thread, c), 0);
  c->rc_by_foreign = braid_lock_release_owner(c->l, (uint64_t)braid_task_id(self));
  c->after = lstats(c->l);
  CHECK_INT(braid_lock_release(self, c->l), 0);
  CHECK_INT(braid_lock_free(c->l), 0);
  return 0;
}

static void test_lock_release_by_anyone_but_the_owner_is_eperm(void **state) {
  (void)state;
  struct eperm_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(eperm_root, &c), 0);
  assert_int_equal(c.rc_unlocked_task, BRAID_EPERM);
  assert_int_equal(c.rc_unlocked_owner, BRAID_EPERM);
  assert_int_equal(c.rc_by_other_task, BRAID_EPERM);
  assert_int_equal(c.rc_other_nowait, BRAID_EWOULDBLOCK);
  assert_int_equal(c.rc_thread_release_while_task_owns, BRAID_EPERM);
  /* A foreign token equal to the task's id is not the task. */
  assert_int_equal(c.rc_by_foreign, BRAID_EPERM);
  assert_int_equal(c.after.locked, 1);
  assert_int_equal(c.after.owner_kind, BRAID_OWNER_TASK);
}

static void test_lock_release_by_another_thread_or_a_wrong_token_is_eperm(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  lock_holder h;
  lock_holder_start(&h, l);
  int rc_other_thread = braid_lock_release(NULL, l);
  int rc_other_owner = braid_lock_release_owner(l, 1);
  braid_lock_stats st = lstats(l);
  lock_holder_let_go(&h);
  lock_holder_join(&h);
  assert_int_equal(rc_other_thread, BRAID_EPERM);
  assert_int_equal(rc_other_owner, BRAID_EPERM);
  assert_int_equal(st.locked, 1);
  assert_int_equal(st.owner_kind, BRAID_OWNER_THREAD);

  /* A foreign owner: only its own token releases. */
  braid_wait *w = NULL;
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  assert_int_equal(braid_lock_acquire_cb(l, 11, cb_record, &r, &w), 0);
  assert_int_equal(braid_lock_release_owner(l, 12), BRAID_EPERM);
  assert_int_equal(braid_lock_release(NULL, l), BRAID_EPERM);
  CHECK_OWNER(l, BRAID_OWNER_FOREIGN, 11);
  assert_int_equal(braid_lock_release_owner(l, 11), 0);
  CHECK_FREE(l);
  assert_int_equal(braid_lock_free(l), 0);
}

/* ---- hand-off to each kind of waiter ---------------------------------- */

struct handoff_ctx {
  handoff_case hc;
  braid_lock_stats before, after_release, held_by_waiter;
};

static void handoff_snap(handoff_case *hc, int when) {
  struct handoff_ctx *c = hc->ud;
  if (when == SNAP_QUEUED)
    c->before = lstats(hc->obj);
  else /* ownership passed directly: the waiter owns it before it even ran */
    c->after_release = lstats(hc->obj);
}

/* The waiter owns the lock: note that, and have it released. */
static void handoff_let_go(braid_task *self, handoff_case *hc) {
  struct handoff_ctx *c = hc->ud;
  (void)self;
  if (hc->kind == W_CB) {
    c->held_by_waiter = lstats(hc->obj);
    CHECK_INT(braid_lock_release_owner(hc->obj, hc->w.token), 0);
  } else if (hc->kind != W_STEPPED) {
    c->held_by_waiter = lstats(hc->obj);
    atomic_store(&hc->w.release, 1);
  }
}

static void run_handoff(int kind) {
  struct handoff_ctx c;
  memset(&c, 0, sizeof c);
  c.hc = (handoff_case){.ops = kind == W_STEPPED ? &lock_ops
                               : kind == W_CB    ? &lock_keep_ops
                                                 : &lock_hold_ops,
                        .obj = new_lock(),
                        .kind = kind,
                        .hold = lock_hold,
                        .wake = lock_release,
                        .nowait = lock_nowait,
                        .let_go = handoff_let_go,
                        .snap = handoff_snap,
                        .ud = &c};
  run_handoff_case(&c.hc);
  assert_int_equal(c.before.locked, 1);
  assert_int_equal(c.before.owner_kind, BRAID_OWNER_TASK);
  assert_int_equal(c.before.waiting, 1);
  assert_int_equal(c.after_release.locked, 1);
  assert_int_equal(c.after_release.owner_kind, sw_owner_kind(&c.hc.w));
  assert_int_equal(c.after_release.owner_id, sw_id(&c.hc.w));
  assert_int_equal(c.after_release.waiting, 0);
  if (kind != W_STEPPED) {
    assert_int_equal(c.held_by_waiter.owner_kind, sw_owner_kind(&c.hc.w));
    assert_int_equal(c.held_by_waiter.owner_id, sw_id(&c.hc.w));
  }
  CHECK_FREE(c.hc.obj);
  assert_int_equal(braid_lock_free(c.hc.obj), 0);
}

static void test_lock_release_hands_ownership_to_a_waiting_stackful_task(void **state) {
  (void)state;
  run_handoff(W_TASK);
}

static void test_lock_release_hands_ownership_to_a_waiting_stepped_task(void **state) {
  (void)state;
  run_handoff(W_STEPPED);
}

static void test_lock_release_hands_ownership_to_a_waiting_thread(void **state) {
  (void)state;
  run_handoff(W_THREAD);
}

static void test_lock_release_hands_ownership_to_a_waiting_callback(void **state) {
  (void)state;
  run_handoff(W_CB);
}

/* ---- FIFO across kinds -------------------------------------------------- */

struct mix_ctx {
  mix_case mc;
  int rc_nowait_after_first;
  braid_lock_stats after_first;
};

static void mix_snap(mix_case *mc, int when) {
  struct mix_ctx *c = mc->ud;
  (void)when;
  c->after_first = lstats(mc->obj);
  c->rc_nowait_after_first = braid_lock_acquire_nowait(mc->root, mc->obj);
}

/* Each callback owner is released here in turn. */
static void mix_on_done(braid_task *self, mix_case *mc, int i) {
  (void)self;
  if (mc->kinds[i] != W_CB) return;
  CHECK_OWNER(mc->obj, BRAID_OWNER_FOREIGN, mc->w[i].token);
  CHECK_INT(braid_lock_release_owner(mc->obj, mc->w[i].token), 0);
}

static void run_mix(const int *kinds, int n) {
  struct mix_ctx *c = calloc(1, sizeof *c);
  assert_non_null(c);
  c->mc = (mix_case){.ops = &lock_ops,
                     .cb_ops = &lock_keep_ops,
                     .obj = new_lock(),
                     .hold = lock_hold,
                     .wake = lock_release,
                     .on_done = mix_on_done,
                     .snap = mix_snap,
                     .ud = c};
  run_mix_case(&c->mc, kinds, n);
  assert_int_equal(c->after_first.owner_kind, sw_owner_kind(&c->mc.w[0]));
  assert_int_equal(c->after_first.owner_id, sw_id(&c->mc.w[0]));
  assert_int_equal(c->rc_nowait_after_first, BRAID_EWOULDBLOCK);
  CHECK_FREE(c->mc.obj);
  assert_int_equal(braid_lock_free(c->mc.obj), 0);
  free(c);
}

static void test_lock_hands_over_in_fifo_order_task_thread_callback_stepped(void **state) {
  (void)state;
  const int kinds[] = {W_TASK, W_THREAD, W_CB, W_STEPPED};
  run_mix(kinds, 4);
}

static void test_lock_hands_over_in_fifo_order_across_a_longer_mixture(void **state) {
  (void)state;
  const int kinds[] = {W_CB, W_STEPPED, W_THREAD, W_TASK, W_THREAD, W_CB, W_TASK, W_STEPPED};
  run_mix(kinds, 8);
}

/* A task of another loop waits for a lock held by a task of this loop. */
struct other_loop_ctx {
  braid_lock *l;
  atomic_int waiting_started;
  int rc_other, other_owner_kind;
  uint64_t other_task_id, other_owner_id;
};

static int other_loop_root(braid_task *self, void *arg) {
  struct other_loop_ctx *c = arg;
  c->other_task_id = braid_task_id(self);
  atomic_store(&c->waiting_started, 1);
  c->rc_other = braid_lock_acquire(self, c->l);
  braid_lock_stats st = lstats(c->l);
  c->other_owner_kind = st.owner_kind;
  c->other_owner_id = st.owner_id;
  if (c->rc_other == 0) CHECK_INT(braid_lock_release(self, c->l), 0);
  return 0;
}

static void *other_loop_thread(void *arg) {
  CHECK_INT(run_real(other_loop_root, arg), 0);
  return NULL;
}

static int cross_loop_root(braid_task *self, void *arg) {
  struct other_loop_ctx *c = arg;
  c->l = new_lock();
  CHECK_INT(braid_lock_acquire(self, c->l), 0);
  pthread_t t;
  CHECK_INT(pthread_create(&t, NULL, other_loop_thread, c), 0);
  WAIT_UNTIL(self, lock_waiting(c->l) == 1);
  CHECK_INT(braid_lock_release(self, c->l), 0);
  WAIT_UNTIL(self, !lock_locked(c->l));
  CHECK_INT(pthread_join(t, NULL), 0);
  CHECK_FREE(c->l);
  CHECK_INT(braid_lock_free(c->l), 0);
  return 0;
}

static void test_lock_a_task_of_another_loop_is_handed_the_lock_across_threads(void **state) {
  (void)state;
  struct other_loop_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(cross_loop_root, &c), 0);
  assert_int_equal(c.rc_other, 0);
  assert_int_equal(c.other_owner_kind, BRAID_OWNER_TASK);
  assert_int_equal(c.other_owner_id, c.other_task_id);
}

/* ---- cancellation of waiters ------------------------------------------- */

struct deadline_ctx {
  deadline_case dc;
  braid_lock_stats after_release;
};

static void deadline_snap(deadline_case *dc, int when) {
  struct deadline_ctx *c = dc->ud;
  if (when == SNAP_WOKEN) c->after_release = lstats(dc->obj);
}

static void run_deadline(int kind) {
  struct deadline_ctx c;
  memset(&c, 0, sizeof c);
  /* First in the queue: a waiter with a deadline in 5 s; behind it, one
   * without. */
  c.dc = (deadline_case){.ops = &lock_ops,
                         .obj = new_lock(),
                         .kind = kind,
                         .deadline = 5 * SEC,
                         .hold = lock_hold,
                         .wake = lock_release,
                         .snap = deadline_snap,
                         .ud = &c};
  run_deadline_case(&c.dc);
  /* The hand-off skipped the cancelled waiter. */
  assert_int_equal(c.after_release.owner_kind, BRAID_OWNER_TASK);
  assert_int_equal(c.after_release.owner_id, sw_id(&c.dc.next));
  CHECK_FREE(c.dc.obj);
  assert_int_equal(braid_lock_free(c.dc.obj), 0);
}

static void test_lock_a_stackful_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue(void **state) {
  (void)state;
  run_deadline(W_TASK);
}

static void test_lock_a_stepped_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue(void **state) {
  (void)state;
  run_deadline(W_STEPPED);
}

struct thread_cancel_ctx {
  braid_lock *l;
  sw w, next;
  size_t waiting_before, waiting_after;
  braid_lock_stats after_cancel, after_release;
};

static void test_lock_a_waiting_thread_whose_scope_is_cancelled_from_another_thread_gets_ecanceled(void **state) {
  (void)state;
  struct thread_cancel_ctx c;
  memset(&c, 0, sizeof c);
  c.l = new_lock();
  assert_int_equal(braid_lock_acquire(NULL, c.l), 0); /* this thread owns it */
  sw_init(&c.w, &lock_ops, c.l, W_THREAD, 1, NULL);
  sw_init(&c.next, &lock_hold_ops, c.l, W_THREAD, 2, NULL);
  c.w.scope = new_scope(BRAID_NEVER, 0);
  braid_scope *mine = braid_scope_ref(c.w.scope);
  assert_int_equal(sw_start(NULL, &c.w), 0);
  WAIT_UNTIL(NULL, lock_waiting(c.l) == 1);
  assert_int_equal(sw_start(NULL, &c.next), 0);
  WAIT_UNTIL(NULL, lock_waiting(c.l) == 2);
  os_sleep_ns(5 * MSEC); /* let both really block */
  c.waiting_before = lstats(c.l).waiting;
  assert_false(sw_done(&c.w));
  assert_int_equal(braid_scope_cancel(mine), 0);
  WAIT_UNTIL(NULL, sw_done(&c.w));
  c.after_cancel = lstats(c.l);
  assert_int_equal(braid_lock_release(NULL, c.l), 0);
  c.after_release = lstats(c.l);
  atomic_store(&c.next.release, 1);
  WAIT_UNTIL(NULL, sw_done(&c.next));
  sw_join(&c.w);
  sw_join(&c.next);
  assert_int_equal(sw_rc(&c.w), BRAID_ECANCELED);
  assert_int_equal(c.waiting_before, 2);
  assert_int_equal(c.after_cancel.waiting, 1);
  assert_int_equal(c.after_cancel.owner_kind, BRAID_OWNER_THREAD);
  assert_int_equal(c.after_cancel.owner_id, braid_thread_id());
  /* The release went to the next waiter, not to the cancelled one. */
  assert_int_equal(c.after_release.owner_kind, BRAID_OWNER_THREAD);
  assert_int_equal(c.after_release.owner_id, sw_id(&c.next));
  assert_int_equal(sw_rc(&c.next), 0);
  CHECK_FREE(c.l);
  assert_int_equal(braid_scope_unref(mine), 0);
  assert_int_equal(braid_scope_unref(c.w.scope), 0);
  assert_int_equal(braid_lock_free(c.l), 0);
}

static void test_lock_a_waiting_thread_with_a_short_real_deadline_gets_ecanceled(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  assert_int_equal(braid_lock_acquire(NULL, l), 0);
  sw w;
  sw_init(&w, &lock_ops, l, W_THREAD, 1, NULL);
  sw_thread_short_deadline(&w, 50 * MSEC);
  braid_lock_stats st = lstats(l);
  assert_int_equal(st.owner_kind, BRAID_OWNER_THREAD);
  assert_int_equal(st.owner_id, braid_thread_id());
  assert_int_equal(braid_lock_release(NULL, l), 0);
  CHECK_FREE(l);
  assert_int_equal(braid_lock_free(l), 0);
}

/* ---- level-triggered cancellation ---------------------------------------- */

struct level_ctx {
  level_case lc;
  braid_lock *l;
  int rc_second, rc_nowait;
  braid_lock_stats after;
};

static int level_acquire(braid_task *self, void *arg) {
  struct level_ctx *c = arg;
  return braid_lock_acquire(self, c->l);
}

static void level_more(braid_task *self, void *arg) {
  struct level_ctx *c = arg;
  c->rc_second = braid_lock_acquire(self, c->l);
  c->after = lstats(c->l);
  /* Not a checkpoint: the nowait variant still works inside the scope. */
  c->rc_nowait = braid_lock_acquire_nowait(self, c->l);
  if (c->rc_nowait == 0) CHECK_INT(braid_lock_release(self, c->l), 0);
}

static int level_root(braid_task *self, void *arg) {
  struct level_ctx *c = arg;
  c->l = new_lock();
  c->lc = (level_case){.op = level_acquire, .more = level_more, .ud = c};
  level_case_run(self, &c->lc);
  CHECK_FREE(c->l);
  CHECK_INT(braid_lock_free(c->l), 0);
  return 0;
}

static void test_lock_acquire_in_a_cancelled_scope_yields_then_fails_with_ecanceled_every_time(void **state) {
  (void)state;
  struct level_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(level_root, &c), 0);
  assert_level_case(&c.lc);
  assert_int_equal(c.rc_second, BRAID_ECANCELED);
  assert_int_equal(c.after.locked, 0); /* the free lock was not taken */
  assert_int_equal(c.after.waiting, 0);
  assert_int_equal(c.rc_nowait, 0);
}

struct level_step_ctx {
  co_state co;
  braid_lock *l;
  braid_scope *s;
  braid_group *g;
  atomic_int sibling_ran;
  int rc, sibling_ran_before_outcome;
  braid_lock_stats after;
};

static int level_step_root(braid_task *self, void *ctx, int resume) {
  struct level_step_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->l = new_lock();
    CHECK_INT(braid_group_open(self, &c->g), 0);
    CHECK_INT(braid_group_spawn(c->g, set_flag_body, &c->sibling_ran, NULL, NULL), 0);
    c->s = cancelled_scope();
    CHECK_INT(braid_scope_enter(self, c->s), 0);
    AWAIT(&c->co, braid_lock_acquire(self, c->l));
    c->rc = c->co.rc;
    c->sibling_ran_before_outcome = atomic_load(&c->sibling_ran);
    c->after = lstats(c->l);
    CHECK_INT(braid_scope_exit(c->s, c->rc), 0);
    CHECK_INT(braid_scope_unref(c->s), 0);
    AWAIT(&c->co, braid_group_close(c->g, 0));
    CHECK_INT(c->co.rc, 0);
    CHECK_INT(braid_group_free(c->g), 0);
    CHECK_INT(braid_lock_free(c->l), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_lock_acquire_by_a_stepped_task_in_a_cancelled_scope_pends_then_resumes_ecanceled(void **state) {
  (void)state;
  struct level_step_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(level_step_root, &c), 0);
  assert_int_equal(c.rc, BRAID_ECANCELED);
  assert_int_equal(c.sibling_ran_before_outcome, 1);
  assert_int_equal(c.after.locked, 0);
  assert_int_equal(c.after.waiting, 0);
  assert_int_equal(c.co.immediate, 0); /* the acquire pended (yield) */
}

struct level_thread_ctx {
  braid_lock *l;
  int rc, rc_again, rc_nowait;
  braid_lock_stats after;
};

static void *level_thread(void *arg) {
  struct level_thread_ctx *c = arg;
  braid_scope *s = cancelled_scope();
  CHECK_INT(braid_scope_enter(NULL, s), 0);
  c->rc = braid_lock_acquire(NULL, c->l);
  c->rc_again = braid_lock_acquire(NULL, c->l);
  c->after = lstats(c->l);
  c->rc_nowait = braid_lock_acquire_nowait(NULL, c->l);
  if (c->rc_nowait == 0) CHECK_INT(braid_lock_release(NULL, c->l), 0);
  CHECK_INT(braid_scope_exit(s, c->rc), 0);
  CHECK_INT(braid_scope_unref(s), 0);
  return NULL;
}

static void test_lock_acquire_by_a_thread_in_a_cancelled_scope_fails_with_ecanceled(void **state) {
  (void)state;
  struct level_thread_ctx c;
  memset(&c, 0, sizeof c);
  c.l = new_lock();
  assert_int_equal(in_thread(level_thread, &c), 0);
  assert_int_equal(c.rc, BRAID_ECANCELED);
  assert_int_equal(c.rc_again, BRAID_ECANCELED);
  assert_int_equal(c.after.locked, 0);
  assert_int_equal(c.rc_nowait, 0);
  CHECK_FREE(c.l);
  assert_int_equal(braid_lock_free(c.l), 0);
}

/* ---- races: release versus cancellation of the waiter ------------------- */

/* Each round this thread holds the lock; releasing it races the
 * cancellation of a waiting thread that holds what it gets. */
static void race_hold(race_case *rc) { assert_int_equal(braid_lock_acquire(NULL, rc->obj), 0); }
static int race_release(race_case *rc) { return braid_lock_release(NULL, rc->obj); }

static void race_settle(race_case *rc, sw *w) {
  CHECK_INT(rc->rc_wake, 0);
  braid_lock_stats st = lstats(rc->obj);
  if (sw_rc(w) == 0) {
    /* Handed over: the waiter owns it, even though its scope is cancelled. */
    CHECK_INT(st.locked, 1);
    CHECK_INT(st.owner_kind, BRAID_OWNER_THREAD);
    CHECK_INT(st.owner_id, sw_id(w));
    atomic_store(&w->release, 1);
  } else {
    CHECK_INT(st.locked, 0); /* the release found nobody: the lock is free */
  }
  CHECK_INT(st.waiting, 0);
}

static void race_check(race_case *rc, sw *w) {
  (void)w;
  CHECK_FREE(rc->obj);
}

static void test_lock_race_release_against_cancel_of_a_waiting_thread_never_loses_the_lock(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  race_case rc = {.ops = &lock_hold_ops,
                  .obj = l,
                  .setup = race_hold,
                  .wake = race_release,
                  .settle = race_settle,
                  .check = race_check};
  run_race_case(&rc);
  assert_int_equal(braid_lock_free(l), 0);
}

struct task_race_ctx {
  braid_lock *l;
  atomic_int held;
  racer canceller;
  race_tuner tu;
  int iter, got, cancelled;
};

static void *task_race_releaser(void *arg) {
  struct task_race_ctx *c = arg;
  CHECK_INT(braid_lock_acquire(NULL, c->l), 0);
  atomic_store(&c->held, 1);
  WAIT_UNTIL(NULL, lock_waiting(c->l) == 1);
  racer_go(&c->canceller, tuner_waker_delay(&c->tu));
  CHECK_INT(braid_lock_release(NULL, c->l), 0);
  return NULL;
}

static int task_race_root(braid_task *self, void *arg) {
  struct task_race_ctx *c = arg;
  c->l = new_lock();
  for (c->iter = 0; c->iter < RACE_ITERS && check_failures() == 0; c->iter++) {
    atomic_store(&c->held, 0);
    braid_scope *s = new_scope(BRAID_NEVER, 0);
    racer_start(&c->canceller, cancel_scope_act, s, tuner_canceller_delay(&c->tu));
    pthread_t r;
    CHECK_INT(pthread_create(&r, NULL, task_race_releaser, c), 0);
    WAIT_UNTIL(self, atomic_load(&c->held));
    CHECK_INT(braid_scope_enter(self, s), 0);
    int rc = braid_lock_acquire(self, c->l);
    CHECK_INT(braid_scope_exit(s, rc), rc == BRAID_ECANCELED ? 0 : rc);
    CHECK_INT(pthread_join(r, NULL), 0);
    racer_join(&c->canceller);
    braid_lock_stats st = lstats(c->l);
    tuner_update(&c->tu, rc == 0);
    if (rc == 0) {
      c->got++;
      CHECK_INT(st.owner_kind, BRAID_OWNER_TASK);
      CHECK_INT(st.owner_id, braid_task_id(self));
      CHECK_INT(braid_lock_release(self, c->l), 0);
    } else {
      c->cancelled++;
      CHECK_INT(rc, BRAID_ECANCELED);
      CHECK_INT(st.locked, 0);
    }
    CHECK_INT(st.waiting, 0);
    CHECK_FREE(c->l);
    CHECK_INT(braid_scope_unref(s), 0);
  }
  CHECK_INT(braid_lock_free(c->l), 0);
  return 0;
}

static void test_lock_race_release_from_a_thread_against_cancel_of_a_waiting_task_never_loses_the_lock(void **state) {
  (void)state;
  struct task_race_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(task_race_root, &c), 0);
  print_message("  %d hand-offs, %d cancellations\n", c.got, c.cancelled);
  assert_int_equal(c.got + c.cancelled, RACE_ITERS);
}

/* ---- every documented error -------------------------------------------- */

static void test_lock_null_and_invalid_arguments_are_einval(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  braid_lock_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  assert_int_equal(braid_lock_new(NULL), BRAID_EINVAL);
  assert_int_equal(braid_lock_free(NULL), BRAID_EINVAL);
  assert_int_equal(braid_lock_acquire(NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_lock_acquire_nowait(NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_lock_acquire_cb(NULL, 1, cb_record, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_lock_acquire_cb(l, 0, cb_record, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_lock_acquire_cb(l, (uint64_t)1 << 60, cb_record, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_lock_acquire_cb(l, UINT64_MAX, cb_record, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_lock_acquire_cb(l, 1, NULL, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_lock_acquire_cb(l, 1, cb_record, &r, NULL), BRAID_EINVAL);
  assert_int_equal(braid_lock_release(NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_lock_release_owner(NULL, 1), BRAID_EINVAL);
  assert_int_equal(braid_lock_statistics(NULL, &st), BRAID_EINVAL);
  assert_int_equal(braid_lock_statistics(l, NULL), BRAID_EINVAL);
  st.size = 0;
  assert_int_equal(braid_lock_statistics(l, &st), BRAID_EINVAL);
  /* Nothing happened. */
  assert_int_equal(atomic_load(&r.calls), 0);
  CHECK_FREE(l);
  /* The largest valid token works. */
  uint64_t big = ((uint64_t)1 << 60) - 1;
  assert_int_equal(braid_lock_acquire_cb(l, big, cb_record, &r, &w), 0);
  CHECK_OWNER(l, BRAID_OWNER_FOREIGN, big);
  int rc0 = braid_lock_release_owner(l, 0);
  assert_true(rc0 == BRAID_EINVAL || rc0 == BRAID_EPERM);
  assert_int_equal(braid_lock_release_owner(l, big), 0);
  assert_int_equal(braid_lock_free(l), 0);
}

static void test_lock_free_of_a_locked_or_waited_on_lock_is_estate(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  assert_int_equal(braid_lock_acquire(NULL, l), 0);
  assert_int_equal(braid_lock_free(l), BRAID_ESTATE);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  assert_int_equal(braid_lock_acquire_cb(l, 9, cb_record, &r, &w), BRAID_EPENDING);
  assert_non_null(w);
  assert_int_equal(braid_lock_free(l), BRAID_ESTATE);
  /* Still intact: the release hands it to the callback waiter. */
  assert_int_equal(braid_lock_release(NULL, l), 0);
  assert_int_equal(atomic_load(&r.calls), 1);
  assert_int_equal(atomic_load(&r.result), 0);
  assert_int_equal(braid_lock_free(l), BRAID_ESTATE);
  assert_int_equal(braid_lock_release_owner(l, 9), 0);
  assert_int_equal(braid_wait_free(w), 0);
  assert_int_equal(braid_lock_free(l), 0);
}

struct wrong_ctx {
  braid_lock *l;
  wrong_calls rc;
  braid_lock_stats after_call, after_null, after_other, after_not_running;
};

static int wrong_acquire(braid_task *task, void *arg) {
  struct wrong_ctx *c = arg;
  int rc = braid_lock_acquire(task, c->l);
  c->after_call = lstats(c->l);
  return rc;
}

static int wrong_root(braid_task *self, void *arg) {
  struct wrong_ctx *c = arg;
  c->l = new_lock();
  /* A task of another thread's loop: refused, and the lock stays free. */
  c->rc.rc_other_thread = call_from_another_thread(wrong_acquire, self, c);
  c->after_other = c->after_call;
  /* A task that is not the running one. */
  c->rc.rc_not_running = call_naming_a_blocked_task(self, wrong_acquire, c);
  c->after_not_running = c->after_call;
  /* A blocking thread wait from the thread that runs this loop. */
  braid_wait *w = NULL;
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  CHECK_INT(braid_lock_acquire_cb(c->l, 9, cb_record, &r, &w), 0);
  c->rc.rc_null_in_loop = braid_lock_acquire(NULL, c->l);
  c->after_null = lstats(c->l);
  CHECK_INT(braid_lock_release_owner(c->l, 9), 0);
  CHECK_FREE(c->l);
  CHECK_INT(braid_lock_free(c->l), 0);
  return 0;
}

static void test_lock_wrong_thread_and_wrong_task_are_refused(void **state) {
  (void)state;
  struct wrong_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(wrong_root, &c), 0);
  assert_wrong_calls(&c.rc);
  assert_int_equal(c.after_other.locked, 0);
  assert_int_equal(c.after_not_running.locked, 0);
  assert_int_equal(c.after_not_running.waiting, 0);
  assert_int_equal(c.after_null.waiting, 0);
  assert_int_equal(c.after_null.owner_kind, BRAID_OWNER_FOREIGN);
}

static void test_lock_allocation_failures_are_enomem_and_leak_nothing(void **state) {
  (void)state;
  fail_alloc fa;
  fail_alloc_install(&fa);
  atomic_store(&fa.failing, 1);
  braid_lock *l = NULL;
  int rc_new = braid_lock_new(&l);
  atomic_store(&fa.failing, 0);
  assert_int_equal(rc_new, BRAID_ENOMEM);
  assert_null(l);
  assert_int_equal(braid_lock_new(&l), 0);
  assert_int_equal(braid_lock_acquire(NULL, l), 0);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  atomic_store(&fa.failing, 1);
  int rc_cb = braid_lock_acquire_cb(l, 4, cb_record, &r, &w);
  atomic_store(&fa.failing, 0);
  if (atomic_load(&fa.refused) > 0) {
    assert_int_equal(rc_cb, BRAID_ENOMEM);
    assert_int_equal(lstats(l).waiting, 0);
  } else {
    /* The waiter needed no allocation. */
    assert_int_equal(rc_cb, BRAID_EPENDING);
    assert_int_equal(braid_wait_cancel(w), 0);
    assert_int_equal(braid_wait_free(w), 0);
  }
  assert_int_equal(braid_lock_release(NULL, l), 0);
  CHECK_FREE(l);
  assert_int_equal(braid_lock_free(l), 0);
  fail_alloc_uninstall();
  assert_int_equal(atomic_load(&fa.live), 0);
  assert_true(atomic_load(&r.calls) <= 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_lock_new_lock_is_free_and_frees),
      BT(test_lock_a_task_owns_it_and_statistics_report_its_task_id),
      BT(test_lock_a_stepped_task_owns_it_after_the_outcome_arrives),
      BT(test_lock_a_plain_thread_owns_it_and_statistics_report_its_thread_id),
      BT(test_lock_a_foreign_owner_acquires_a_free_lock_at_once_without_a_callback),
      BT(test_lock_uncontended_acquire_with_coop_budget_1_lets_other_tasks_run),
      BT(test_lock_uncontended_acquires_yield_within_every_coop_budget),
      BT(test_lock_uncontended_acquire_by_a_stepped_task_with_coop_budget_1_pends),
      BT(test_lock_is_not_reentrant_for_a_task),
      BT(test_lock_is_not_reentrant_for_a_stepped_task),
      BT(test_lock_is_not_reentrant_for_a_thread_or_a_foreign_owner),
      BT(test_lock_release_by_anyone_but_the_owner_is_eperm),
      BT(test_lock_release_by_another_thread_or_a_wrong_token_is_eperm),
      BT(test_lock_release_hands_ownership_to_a_waiting_stackful_task),
      BT(test_lock_release_hands_ownership_to_a_waiting_stepped_task),
      BT(test_lock_release_hands_ownership_to_a_waiting_thread),
      BT(test_lock_release_hands_ownership_to_a_waiting_callback),
      BT(test_lock_hands_over_in_fifo_order_task_thread_callback_stepped),
      BT(test_lock_hands_over_in_fifo_order_across_a_longer_mixture),
      BT(test_lock_a_task_of_another_loop_is_handed_the_lock_across_threads),
      BT(test_lock_a_stackful_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue),
      BT(test_lock_a_stepped_waiter_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue),
      BT(test_lock_a_waiting_thread_whose_scope_is_cancelled_from_another_thread_gets_ecanceled),
      BT(test_lock_a_waiting_thread_with_a_short_real_deadline_gets_ecanceled),
      BT(test_lock_acquire_in_a_cancelled_scope_yields_then_fails_with_ecanceled_every_time),
      BT(test_lock_acquire_by_a_stepped_task_in_a_cancelled_scope_pends_then_resumes_ecanceled),
      BT(test_lock_acquire_by_a_thread_in_a_cancelled_scope_fails_with_ecanceled),
      BT(test_lock_race_release_against_cancel_of_a_waiting_thread_never_loses_the_lock),
      BT(test_lock_race_release_from_a_thread_against_cancel_of_a_waiting_task_never_loses_the_lock),
      BT(test_lock_null_and_invalid_arguments_are_einval),
      BT(test_lock_free_of_a_locked_or_waited_on_lock_is_estate),
      BT(test_lock_wrong_thread_and_wrong_task_are_refused),
      BT(test_lock_allocation_failures_are_enomem_and_leak_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
