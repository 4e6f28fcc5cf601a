/*
 * test_waiters.c — the kinds of waiter in general: callback waiters
 * (braid_wait_cancel / braid_wait_free, exactly one call, on which thread,
 * never on a task's stack) and plain-thread waiters (braid_thread_id, the
 * thread's own scopes with shields and deadlines, BRAID_ETHREAD on a loop's
 * thread), plus races of a completion against braid_wait_cancel and
 * braid_wait_free.
 */
#include "sync_helpers.h"

#include <stdlib.h>

#define ITEM_A ((void *)(uintptr_t)0xA1)
#define ITEM_B ((void *)(uintptr_t)0xB2)
#define ITEM_C ((void *)(uintptr_t)0xC3)

/* ---- braid_thread_id ------------------------------------------------------------ */

struct tid_ctx {
  uint64_t a, b;
};

static void *tid_thread(void *arg) {
  struct tid_ctx *c = arg;
  c->a = braid_thread_id();
  c->b = braid_thread_id();
  return NULL;
}

static void test_waiters_thread_id_is_positive_stable_and_distinct_per_thread(void **state) {
  (void)state;
  struct tid_ctx x, y;
  memset(&x, 0, sizeof x);
  memset(&y, 0, sizeof y);
  assert_int_equal(in_thread(tid_thread, &x), 0);
  assert_int_equal(in_thread(tid_thread, &y), 0);
  uint64_t me = braid_thread_id();
  assert_true(me > 0);
  assert_int_equal(braid_thread_id(), me);
  assert_true(x.a > 0);
  assert_int_equal(x.a, x.b);
  assert_true(y.a > 0);
  assert_true(x.a != y.a);
  assert_true(x.a != me && y.a != me);
}

/* ---- braid_wait_cancel / braid_wait_free ------------------------------------------------- */

/* A new lock held by this thread, with a callback waiter (foreign owner
 * `token`, recording in r) queued on it. */
static braid_lock *held_lock_with_cb_waiter(uint64_t token, cb_rec *r, braid_wait **w) {
  braid_lock *l = new_lock();
  assert_int_equal(braid_lock_acquire(NULL, l), 0);
  cb_rec_init(r, NULL, 0);
  *w = NULL;
  assert_int_equal(braid_lock_acquire_cb(l, token, cb_record, r, w), BRAID_EPENDING);
  return l;
}

static void
test_waiters_wait_cancel_of_a_pending_waiter_calls_back_ecanceled_on_this_thread_before_returning(void **state) {
  (void)state;
  cb_rec r;
  braid_wait *w;
  braid_lock *l = held_lock_with_cb_waiter(21, &r, &w);
  assert_non_null(w);
  assert_int_equal(lstats(l).waiting, 1);
  assert_int_equal(atomic_load(&r.calls), 0);
  assert_int_equal(braid_wait_cancel(w), 0);
  assert_int_equal(atomic_load(&r.calls), 1);
  assert_int_equal(atomic_load(&r.result), BRAID_ECANCELED);
  assert_int_equal(atomic_load(&r.thread), braid_thread_id());
  assert_int_equal(atomic_load(&r.on_task), 0);
  assert_int_equal(lstats(l).waiting, 0);
  /* Cancelled for good: a second cancel and the release change nothing. */
  assert_int_equal(braid_wait_cancel(w), BRAID_ESTATE);
  assert_int_equal(braid_lock_release(NULL, l), 0);
  assert_int_equal(atomic_load(&r.calls), 1);
  assert_int_equal(lstats(l).locked, 0);
  assert_int_equal(braid_wait_free(w), 0);
  assert_int_equal(atomic_load(&r.calls), 1);
  assert_int_equal(braid_lock_free(l), 0);
}

static void test_waiters_wait_cancel_after_completion_is_estate_and_calls_nothing_more(void **state) {
  (void)state;
  cb_rec r;
  braid_wait *w;
  braid_lock *l = held_lock_with_cb_waiter(21, &r, &w);
  assert_int_equal(braid_lock_release(NULL, l), 0);
  /* The releasing thread ran the callback before its release returned. */
  assert_int_equal(atomic_load(&r.calls), 1);
  assert_int_equal(atomic_load(&r.result), 0);
  assert_int_equal(atomic_load(&r.thread), braid_thread_id());
  assert_int_equal(braid_wait_cancel(w), BRAID_ESTATE);
  assert_int_equal(atomic_load(&r.calls), 1);
  /* The foreign owner keeps the lock. */
  braid_lock_stats st = lstats(l);
  assert_int_equal(st.owner_kind, BRAID_OWNER_FOREIGN);
  assert_int_equal(st.owner_id, 21);
  assert_int_equal(braid_wait_free(w), 0);
  assert_int_equal(lstats(l).owner_id, 21); /* freeing the handle releases nothing */
  assert_int_equal(braid_lock_release_owner(l, 21), 0);
  assert_int_equal(braid_lock_free(l), 0);
}

static void test_waiters_wait_free_of_a_pending_waiter_cancels_it_and_leaves_the_queue(void **state) {
  (void)state;
  cb_rec a, b;
  braid_wait *wa, *wb = NULL;
  braid_lock *l = held_lock_with_cb_waiter(1, &a, &wa);
  cb_rec_init(&b, NULL, 1);
  assert_int_equal(braid_lock_acquire_cb(l, 2, cb_record, &b, &wb), BRAID_EPENDING);
  assert_int_equal(lstats(l).waiting, 2);
  assert_int_equal(braid_wait_free(wa), 0);
  assert_int_equal(atomic_load(&a.calls), 1);
  assert_int_equal(atomic_load(&a.result), BRAID_ECANCELED);
  assert_int_equal(lstats(l).waiting, 1);
  /* The release skips the freed waiter. */
  assert_int_equal(braid_lock_release(NULL, l), 0);
  assert_int_equal(atomic_load(&a.calls), 1);
  assert_int_equal(atomic_load(&b.calls), 1);
  assert_int_equal(atomic_load(&b.result), 0);
  assert_int_equal(lstats(l).owner_id, 2);
  assert_int_equal(braid_lock_release_owner(l, 2), 0);
  assert_int_equal(braid_wait_free(wb), 0);
  assert_int_equal(braid_lock_free(l), 0);
}

static void test_waiters_wait_cancel_and_free_of_null_are_einval(void **state) {
  (void)state;
  assert_int_equal(braid_wait_cancel(NULL), BRAID_EINVAL);
  assert_int_equal(braid_wait_free(NULL), BRAID_EINVAL);
}

/* A callback that is still running when its handle is freed completes
 * exactly once; the handle's memory goes after it returned. */
struct slow_cb {
  atomic_int entered, finished, calls, result;
};

static void slow_callback(void *ud, int result) {
  struct slow_cb *s = ud;
  atomic_store(&s->entered, 1);
  os_sleep_ns(30 * MSEC); /* longer than a callback should take: a test only */
  atomic_store(&s->result, result);
  atomic_fetch_add(&s->calls, 1);
  atomic_store(&s->finished, 1);
}

static void test_waiters_wait_free_while_the_callback_runs_on_another_thread_lets_it_finish_once(void **state) {
  (void)state;
  braid_lock *l = new_lock();
  lock_holder h;
  lock_holder_start(&h, l);
  struct slow_cb s;
  memset(&s, 0, sizeof s);
  braid_wait *w = NULL;
  assert_int_equal(braid_lock_acquire_cb(l, 3, slow_callback, &s, &w), BRAID_EPENDING);
  lock_holder_let_go(&h); /* its release runs the slow callback on its thread */
  WAIT_UNTIL(NULL, atomic_load(&s.entered));
  assert_int_equal(braid_wait_free(w), 0); /* the callback is running right now */
  lock_holder_join(&h);
  assert_int_equal(atomic_load(&s.finished), 1);
  assert_int_equal(atomic_load(&s.calls), 1);
  assert_int_equal(atomic_load(&s.result), 0);
  /* It completed with the hand-off: the foreign owner has the lock. */
  braid_lock_stats st = lstats(l);
  assert_int_equal(st.owner_kind, BRAID_OWNER_FOREIGN);
  assert_int_equal(st.owner_id, 3);
  assert_int_equal(braid_lock_release_owner(l, 3), 0);
  assert_int_equal(braid_lock_free(l), 0);
}

/* ---- where callbacks run ------------------------------------------------------------------- */

/* One pending callback waiter on each primitive, completed together. */
#define SIX 6

struct six {
  braid_lock *l;
  braid_semaphore *s;
  braid_event *e;
  braid_limiter *m;
  braid_sender *tx0, *tx1;
  braid_receiver *rx0, *rx1;
  cb_rec r[SIX];
  braid_wait *w[SIX];
  void *slot;
  uintptr_t completer_frame;
  uint64_t loop_thread;
};

/* Set up on the loop thread; `task` is the completer (NULL: a thread). */
static void six_setup(struct six *x, braid_task *task) {
  x->l = new_lock();
  x->s = new_sem(0, 0);
  x->e = new_event();
  x->m = new_limiter(1);
  CHECK_INT(braid_channel_new(0, NULL, &x->tx0, &x->rx0), 0);
  CHECK_INT(braid_channel_new(1, NULL, &x->tx1, &x->rx1), 0);
  CHECK_INT(braid_lock_acquire_nowait(task, x->l), 0);
  CHECK_INT(braid_limiter_acquire_nowait(task, x->m, 0), 0);
  CHECK_INT(braid_channel_send_nowait(x->tx1, ITEM_A), 0);
  for (int i = 0; i < SIX; i++)
    cb_rec_init(&x->r[i], NULL, i);
  CHECK_INT(braid_lock_acquire_cb(x->l, 1, cb_record, &x->r[0], &x->w[0]), BRAID_EPENDING);
  CHECK_INT(braid_semaphore_acquire_cb(x->s, cb_record, &x->r[1], &x->w[1]), BRAID_EPENDING);
  CHECK_INT(braid_event_wait_cb(x->e, cb_record, &x->r[2], &x->w[2]), BRAID_EPENDING);
  CHECK_INT(braid_limiter_acquire_cb(x->m, 2, cb_record, &x->r[3], &x->w[3]), BRAID_EPENDING);
  CHECK_INT(braid_channel_receive_cb(x->rx0, &x->slot, cb_record, &x->r[4], &x->w[4]), BRAID_EPENDING);
  CHECK_INT(braid_channel_send_cb(x->tx1, ITEM_B, cb_record, &x->r[5], &x->w[5]), BRAID_EPENDING);
}

/* Complete all six (from `task`, or from the calling thread). */
static void six_complete(struct six *x, braid_task *task) {
  volatile int local = 0;
  x->completer_frame = (uintptr_t)&local;
  void *got = NULL;
  CHECK_INT(braid_lock_release(task, x->l), 0);
  CHECK_INT(braid_semaphore_release(x->s), 0);
  CHECK_INT(braid_event_set(x->e), 0);
  CHECK_INT(braid_limiter_release(task, x->m, 0), 0);
  CHECK_INT(braid_channel_send_nowait(x->tx0, ITEM_C), 0);
  CHECK_INT(braid_channel_receive_nowait(x->rx1, &got), 0);
  CHECK_PTR(got, ITEM_A);
}

static int six_all_called(struct six *x) {
  for (int i = 0; i < SIX; i++)
    if (atomic_load(&x->r[i].calls) == 0) return 0;
  return 1;
}

static void six_check_and_free(struct six *x) {
  for (int i = 0; i < SIX; i++) {
    CHECK_INT(atomic_load(&x->r[i].calls), 1);
    CHECK_INT(atomic_load(&x->r[i].result), 0);
    CHECK_INT(braid_wait_free(x->w[i]), 0);
  }
  CHECK_PTR(x->slot, ITEM_C);
  void *got = NULL;
  CHECK_INT(braid_channel_receive_nowait(x->rx1, &got), 0);
  CHECK_PTR(got, ITEM_B);
  CHECK_INT(braid_lock_release_owner(x->l, 1), 0);
  CHECK_INT(braid_limiter_release(NULL, x->m, 2), 0);
  CHECK_INT(braid_lock_free(x->l), 0);
  CHECK_INT(braid_semaphore_free(x->s), 0);
  CHECK_INT(braid_event_free(x->e), 0);
  CHECK_INT(braid_limiter_free(x->m), 0);
  CHECK_INT(braid_sender_free(x->tx0), 0);
  CHECK_INT(braid_receiver_free(x->rx0), 0);
  CHECK_INT(braid_sender_free(x->tx1), 0);
  CHECK_INT(braid_receiver_free(x->rx1), 0);
}

/* Every callback ran once, on the given thread (and, if off_task is set,
 * outside any task). */
static void assert_six_ran_on(struct six *x, uint64_t thread, int off_task) {
  for (int i = 0; i < SIX; i++) {
    assert_int_equal(atomic_load(&x->r[i].calls), 1);
    if (off_task) assert_int_equal(atomic_load(&x->r[i].on_task), 0);
    assert_int_equal(atomic_load(&x->r[i].thread), thread);
  }
}

static int six_stackful_root(braid_task *self, void *arg) {
  struct six *x = arg;
  x->loop_thread = braid_thread_id();
  six_setup(x, self);
  six_complete(x, self);
  WAIT_UNTIL(self, six_all_called(x)); /* control goes back to the scheduler */
  six_check_and_free(x);
  return 0;
}

static void *six_loop_thread(void *arg) {
  CHECK_INT(run_real(six_stackful_root, arg), 0);
  return NULL;
}

/* Run six_stackful_root in a loop of this thread or of a new one; every
 * callback ran on the loop's thread, outside any task. */
static struct six *run_six_stackful(int on_another_thread) {
  struct six *x = calloc(1, sizeof *x);
  assert_non_null(x);
  if (on_another_thread)
    assert_int_equal(in_thread(six_loop_thread, x), 0);
  else
    assert_int_equal(run_real(six_stackful_root, x), 0);
  assert_int_equal(check_failures(), 0);
  assert_six_ran_on(x, x->loop_thread, 1);
  return x;
}

static void
test_waiters_callbacks_completed_by_a_stackful_task_run_on_its_loop_thread_off_the_task_stack(void **state) {
  (void)state;
  struct six *x = run_six_stackful(0);
  /* The loop runs on this (main) thread: the scheduler's stack is this
   * thread's stack, far from the task's mapped stack. */
  for (int i = 0; i < SIX; i++)
    assert_false(near_addr(atomic_load(&x->r[i].frame), x->completer_frame, 256 * 1024));
  free(x);
}

struct six_step {
  co_state co;
  struct six x;
};

static int six_stepped_root(braid_task *self, void *ctx, int resume) {
  struct six_step *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->x.loop_thread = braid_thread_id();
    six_setup(&c->x, self);
    six_complete(&c->x, self);
    AWAIT(&c->co, braid_sleep(self, MSEC));
    CHECK(six_all_called(&c->x));
    six_check_and_free(&c->x);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_waiters_callbacks_completed_by_a_stepped_task_run_once_on_its_loop_thread(void **state) {
  (void)state;
  struct six_step *c = calloc(1, sizeof *c);
  assert_non_null(c);
  assert_int_equal(run_stepped_real(six_stepped_root, c), 0);
  assert_six_ran_on(&c->x, c->x.loop_thread, 0);
  free(c);
}

static void test_waiters_callbacks_completed_by_a_task_of_another_threads_loop_run_on_that_thread(void **state) {
  (void)state;
  struct six *x = run_six_stackful(1);
  assert_true(x->loop_thread != braid_thread_id());
  free(x);
}

static void test_waiters_callbacks_completed_by_a_plain_thread_run_on_it_before_each_call_returns(void **state) {
  (void)state;
  struct six *x = calloc(1, sizeof *x);
  assert_non_null(x);
  six_setup(x, NULL);
  six_complete(x, NULL);
  /* No loop involved: each completing call ran its callback itself. */
  assert_true(six_all_called(x));
  assert_six_ran_on(x, braid_thread_id(), 1);
  six_check_and_free(x);
  assert_int_equal(check_failures(), 0);
  free(x);
}

/* Many callback waiters on one lock: each called exactly once, in order. */
static void test_waiters_many_callbacks_on_one_lock_are_called_once_each_in_fifo_order(void **state) {
  (void)state;
  enum { N = 100 };
  braid_lock *l = new_lock();
  order_log *log = calloc(1, sizeof *log);
  cb_rec *r = calloc(N, sizeof *r);
  braid_wait **w = calloc(N, sizeof *w);
  assert_non_null(log);
  assert_non_null(r);
  assert_non_null(w);
  log_init(log);
  assert_int_equal(braid_lock_acquire(NULL, l), 0);
  for (int i = 0; i < N; i++) {
    cb_rec_init(&r[i], log, i);
    assert_int_equal(braid_lock_acquire_cb(l, (uint64_t)(i + 1), cb_record, &r[i], &w[i]), BRAID_EPENDING);
  }
  assert_int_equal(lstats(l).waiting, N);
  /* Cancel every third one. */
  for (int i = 0; i < N; i += 3)
    assert_int_equal(braid_wait_cancel(w[i]), 0);
  assert_int_equal(braid_lock_release(NULL, l), 0);
  for (int i = 0; i < N; i++) {
    if (i % 3 == 0) continue;
    assert_int_equal(lstats(l).owner_id, (uint64_t)(i + 1));
    assert_int_equal(braid_lock_release_owner(l, (uint64_t)(i + 1)), 0);
  }
  assert_int_equal(lstats(l).locked, 0);
  assert_int_equal(log_len(log), N);
  int pos = 0;
  for (int i = 0; i < N; i += 3) /* the cancellations came first */
    assert_int_equal(log_at(log, pos++), i);
  for (int i = 0; i < N; i++)
    if (i % 3 != 0) assert_int_equal(log_at(log, pos++), i);
  for (int i = 0; i < N; i++) {
    assert_int_equal(atomic_load(&r[i].calls), 1);
    assert_int_equal(atomic_load(&r[i].result), i % 3 == 0 ? BRAID_ECANCELED : 0);
    assert_int_equal(braid_wait_free(w[i]), 0);
  }
  assert_int_equal(braid_lock_free(l), 0);
  free(log);
  free(r);
  free(w);
}

/* ---- races of completion against braid_wait_cancel / braid_wait_free ------------------------- */

struct race_ctx {
  braid_lock *l;
  braid_wait *w;
  spin_barrier go;
  atomic_int held, rc_cancel;
  unsigned waker_delay, canceller_delay;
  int use_free;
};

static void *race_holder(void *arg) {
  struct race_ctx *c = arg;
  CHECK_INT(braid_lock_acquire(NULL, c->l), 0);
  atomic_store(&c->held, 1);
  barrier_wait(&c->go);
  spin_for(c->waker_delay);
  CHECK_INT(braid_lock_release(NULL, c->l), 0);
  return NULL;
}

static void run_cancel_race(int use_free) {
  braid_lock *l = new_lock();
  int got = 0, cancelled = 0;
  race_tuner tu = {0};
  for (int i = 0; i < RACE_ITERS && check_failures() == 0; i++) {
    struct race_ctx c;
    memset(&c, 0, sizeof c);
    c.l = l;
    c.use_free = use_free;
    c.waker_delay = tuner_waker_delay(&tu);
    barrier_init(&c.go, 2);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, race_holder, &c), 0);
    WAIT_UNTIL(NULL, atomic_load(&c.held));
    cb_rec r;
    cb_rec_init(&r, NULL, 0);
    assert_int_equal(braid_lock_acquire_cb(l, 5, cb_record, &r, &c.w), BRAID_EPENDING);
    barrier_wait(&c.go);
    spin_for(tuner_canceller_delay(&tu));
    int rc_cancel = use_free ? braid_wait_free(c.w) : braid_wait_cancel(c.w);
    assert_int_equal(pthread_join(t, NULL), 0);
    CHECK_INT(atomic_load(&r.calls), 1);
    int result = atomic_load(&r.result);
    braid_lock_stats st = lstats(l);
    tuner_update(&tu, result == 0);
    if (result == 0) {
      got++;
      if (!use_free) CHECK_INT(rc_cancel, BRAID_ESTATE);
      CHECK_INT(st.owner_kind, BRAID_OWNER_FOREIGN);
      CHECK_INT(st.owner_id, 5);
      CHECK_INT(braid_lock_release_owner(l, 5), 0);
    } else {
      cancelled++;
      CHECK_INT(result, BRAID_ECANCELED);
      CHECK_INT(rc_cancel, 0);
      CHECK_INT(st.locked, 0);
    }
    CHECK_INT(st.waiting, 0);
    if (!use_free) CHECK_INT(braid_wait_free(c.w), 0);
    CHECK_INT(atomic_load(&r.calls), 1);
    CHECK_INT(lstats(l).locked, 0);
  }
  print_message("  %d hand-offs, %d cancellations (jitter %d)\n", got, cancelled, tu.d);
  assert_int_equal(got + cancelled, RACE_ITERS);
  assert_int_equal(braid_lock_free(l), 0);
}

static void test_waiters_race_release_against_wait_cancel_calls_back_once_and_never_loses_the_lock(void **state) {
  (void)state;
  run_cancel_race(0);
}

static void test_waiters_race_release_against_wait_free_calls_back_once_and_never_loses_the_lock(void **state) {
  (void)state;
  run_cancel_race(1);
}

/* ---- thread waiters and their scopes ----------------------------------------------------------- */

/* Two scopes, one inside the other, entered by the calling thread. */
typedef struct nested_scopes {
  braid_scope *outer, *inner;
} nested_scopes;

static nested_scopes enter_nested(braid_scope *outer, braid_scope *inner) {
  CHECK_INT(braid_scope_enter(NULL, outer), 0);
  CHECK_INT(braid_scope_enter(NULL, inner), 0);
  return (nested_scopes){outer, inner};
}

/* After both were exited. */
static void unref_nested(nested_scopes n) {
  CHECK_INT(braid_scope_unref(n.inner), 0);
  CHECK_INT(braid_scope_unref(n.outer), 0);
}

struct shield_ctx {
  braid_lock *l;
  braid_event *e;
  atomic_int waiting;
  int rc_shielded, rc_after_inner_exit, rc_exit_inner, rc_exit_outer, rc_event_outer;
};

static void *shield_thread(void *arg) {
  struct shield_ctx *c = arg;
  nested_scopes n = enter_nested(cancelled_scope(), new_scope(BRAID_NEVER, BRAID_SHIELD));
  atomic_store(&c->waiting, 1);
  c->rc_shielded = braid_lock_acquire(NULL, c->l); /* waits: the shield hides the cancellation */
  if (c->rc_shielded == 0) CHECK_INT(braid_lock_release(NULL, c->l), 0);
  c->rc_exit_inner = braid_scope_exit(n.inner, c->rc_shielded);
  c->rc_event_outer = braid_event_wait(NULL, c->e); /* set, but the outer scope is cancelled */
  c->rc_exit_outer = braid_scope_exit(n.outer, c->rc_event_outer);
  unref_nested(n);
  return NULL;
}

static void test_waiters_a_thread_wait_in_a_shielded_scope_is_not_cancelled_by_a_cancelled_outer_scope(void **state) {
  (void)state;
  struct shield_ctx c;
  memset(&c, 0, sizeof c);
  c.l = new_lock();
  c.e = new_event();
  assert_int_equal(braid_event_set(c.e), 0);
  assert_int_equal(braid_lock_acquire(NULL, c.l), 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, shield_thread, &c), 0);
  WAIT_UNTIL(NULL, lstats(c.l).waiting == 1);
  os_sleep_ns(10 * MSEC);
  assert_int_equal(lstats(c.l).waiting, 1); /* still waiting */
  assert_int_equal(braid_lock_release(NULL, c.l), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(c.rc_shielded, 0);
  assert_int_equal(c.rc_exit_inner, 0);
  assert_int_equal(c.rc_event_outer, BRAID_ECANCELED);
  assert_int_equal(c.rc_exit_outer, 0);
  assert_int_equal(lstats(c.l).locked, 0);
  assert_int_equal(braid_event_free(c.e), 0);
  assert_int_equal(braid_lock_free(c.l), 0);
}

struct outer_deadline_ctx {
  braid_event *e;
  int rc, rc_exit_inner, rc_exit_outer, caught_outer;
  int64_t elapsed;
};

static void *outer_deadline_thread(void *arg) {
  struct outer_deadline_ctx *c = arg;
  nested_scopes n = enter_nested(new_scope(braid_now(NULL) + 40 * MSEC, 0), new_scope(BRAID_NEVER, 0));
  int64_t t0 = real_ns();
  c->rc = braid_event_wait(NULL, c->e);
  c->elapsed = real_ns() - t0;
  c->rc_exit_inner = braid_scope_exit(n.inner, c->rc);
  c->rc_exit_outer = braid_scope_exit(n.outer, c->rc_exit_inner);
  c->caught_outer = braid_scope_cancelled_caught(n.outer);
  unref_nested(n);
  return NULL;
}

static void test_waiters_a_thread_wait_ends_at_an_outer_scope_deadline_through_an_inner_scope(void **state) {
  (void)state;
  struct outer_deadline_ctx c;
  memset(&c, 0, sizeof c);
  c.e = new_event();
  assert_int_equal(in_thread(outer_deadline_thread, &c), 0);
  assert_int_equal(c.rc, BRAID_ECANCELED);
  assert_true(c.elapsed >= 35 * MSEC);
  assert_true(c.elapsed < 10 * SEC);
  assert_int_equal(c.rc_exit_inner, BRAID_ECANCELED); /* not its cancellation */
  assert_int_equal(c.rc_exit_outer, 0);
  assert_int_equal(c.caught_outer, 1);
  assert_int_equal(braid_event_free(c.e), 0);
}

struct expired_ctx {
  braid_lock *l;
  int rc;
  int64_t elapsed;
};

static void *expired_thread(void *arg) {
  struct expired_ctx *c = arg;
  braid_scope *s = new_scope(braid_now(NULL) - MSEC, 0);
  CHECK_INT(braid_scope_enter(NULL, s), 0);
  int64_t t0 = real_ns();
  c->rc = braid_lock_acquire(NULL, c->l);
  c->elapsed = real_ns() - t0;
  CHECK_INT(braid_scope_exit(s, c->rc), 0);
  CHECK_INT(braid_scope_unref(s), 0);
  return NULL;
}

static void test_waiters_a_thread_in_a_scope_whose_deadline_already_passed_does_not_wait(void **state) {
  (void)state;
  struct expired_ctx c;
  memset(&c, 0, sizeof c);
  c.l = new_lock();
  assert_int_equal(braid_lock_acquire(NULL, c.l), 0);
  assert_int_equal(in_thread(expired_thread, &c), 0);
  assert_int_equal(c.rc, BRAID_ECANCELED);
  assert_true(c.elapsed < 5 * SEC);
  braid_lock_stats st = lstats(c.l);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.owner_id, braid_thread_id());
  assert_int_equal(braid_lock_release(NULL, c.l), 0);
  assert_int_equal(braid_lock_free(c.l), 0);
}

/* ---- a loop's thread cannot block as a plain thread ------------------------------------------- */

struct ethread_ctx {
  int rc_lock, rc_sem, rc_event, rc_lim, rc_lim_behalf, rc_send, rc_recv;
  size_t waiting_total;
};

static int ethread_root(braid_task *self, void *arg) {
  struct ethread_ctx *c = arg;
  braid_lock *l = new_lock();
  braid_semaphore *s = new_sem(0, 0);
  braid_event *e = new_event();
  braid_limiter *m = new_limiter(0);
  braid_sender *tx = NULL;
  braid_receiver *rx = NULL;
  braid_sender *tx0 = NULL;
  braid_receiver *rx0 = NULL;
  CHECK_INT(braid_channel_new(0, NULL, &tx, &rx), 0);
  CHECK_INT(braid_channel_new(0, NULL, &tx0, &rx0), 0);
  CHECK_INT(braid_lock_acquire(self, l), 0); /* held: a thread wait would block */
  void *it = NULL;
  c->rc_lock = braid_lock_acquire(NULL, l);
  c->rc_sem = braid_semaphore_acquire(NULL, s);
  c->rc_event = braid_event_wait(NULL, e);
  c->rc_lim = braid_limiter_acquire(NULL, m);
  c->rc_lim_behalf = braid_limiter_acquire_on_behalf(NULL, m, 9);
  c->rc_send = braid_channel_send(NULL, tx, ITEM_A);
  c->rc_recv = braid_channel_receive(NULL, rx0, &it);
  braid_lock_stats ls = lstats(l);
  braid_semaphore_stats ss = {.size = sizeof ss};
  braid_event_stats es = {.size = sizeof es};
  braid_limiter_stats ms = {.size = sizeof ms};
  braid_channel_stats cs = {.size = sizeof cs}, cs0 = {.size = sizeof cs0};
  CHECK_INT(braid_semaphore_statistics(s, &ss), 0);
  CHECK_INT(braid_event_statistics(e, &es), 0);
  CHECK_INT(braid_limiter_statistics(m, &ms), 0);
  CHECK_INT(braid_sender_statistics(tx, &cs), 0);
  CHECK_INT(braid_sender_statistics(tx0, &cs0), 0);
  c->waiting_total = ls.waiting + ss.waiting + es.waiting + ms.waiting + cs.waiting_send + cs0.waiting_receive;
  CHECK_INT(braid_lock_release(self, l), 0);
  CHECK_INT(braid_lock_free(l), 0);
  CHECK_INT(braid_semaphore_free(s), 0);
  CHECK_INT(braid_event_free(e), 0);
  CHECK_INT(braid_limiter_free(m), 0);
  CHECK_INT(braid_sender_free(tx), 0);
  CHECK_INT(braid_receiver_free(rx), 0);
  CHECK_INT(braid_sender_free(tx0), 0);
  CHECK_INT(braid_receiver_free(rx0), 0);
  return 0;
}

static void test_waiters_blocking_thread_waits_from_a_loops_thread_are_ethread(void **state) {
  (void)state;
  struct ethread_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(ethread_root, &c), 0);
  assert_int_equal(c.rc_lock, BRAID_ETHREAD);
  assert_int_equal(c.rc_sem, BRAID_ETHREAD);
  assert_int_equal(c.rc_event, BRAID_ETHREAD);
  assert_int_equal(c.rc_lim, BRAID_ETHREAD);
  assert_int_equal(c.rc_lim_behalf, BRAID_ETHREAD);
  assert_int_equal(c.rc_send, BRAID_ETHREAD);
  assert_int_equal(c.rc_recv, BRAID_ETHREAD);
  assert_int_equal(c.waiting_total, 0);
}

/* A thread waiter and a task waiter on the same lock, woken by each other. */
struct ping_ctx {
  braid_lock *l;
  sw w;
  int rounds;
};

static int ping_root(braid_task *self, void *arg) {
  struct ping_ctx *c = arg;
  c->l = new_lock();
  for (int i = 0; i < c->rounds && check_failures() == 0; i++) {
    CHECK_INT(braid_lock_acquire(self, c->l), 0);
    sw_init(&c->w, &lock_ops, c->l, W_THREAD, i, NULL);
    CHECK_INT(sw_start(NULL, &c->w), 0);
    WAIT_UNTIL(self, lstats(c->l).waiting == 1);
    CHECK_INT(braid_lock_release(self, c->l), 0);
    /* The thread gets it, releases it, and we take it back. */
    CHECK_INT(braid_lock_acquire(self, c->l), 0);
    CHECK(sw_done(&c->w) || sw_rc(&c->w) == 0);
    CHECK_INT(braid_lock_release(self, c->l), 0);
    sw_join(&c->w);
    CHECK_INT(sw_rc(&c->w), 0);
  }
  CHECK_INT(braid_lock_free(c->l), 0);
  return 0;
}

static void test_waiters_a_task_and_a_thread_hand_a_lock_back_and_forth(void **state) {
  (void)state;
  struct ping_ctx c;
  memset(&c, 0, sizeof c);
  c.rounds = 50;
  assert_int_equal(run_real(ping_root, &c), 0);
}

/* ---- a stepped task's first wait allocates its waiter ------------------------------------------ */

enum { NM_LOCK, NM_SEM, NM_EVENT, NM_LIMITER, NM_SEND, NM_RECV, NM_COUNT };

struct nomem {
  fail_alloc *fa;
  braid_lock *l;
  braid_semaphore *s;
  braid_event *e;
  braid_limiter *m;
  braid_sender *tx;
  braid_receiver *rx;
  struct nomem_step {
    co_state co;
    struct nomem *n;
    int which;
    int rc, rc_final;
    long refused;
    void *slot;
  } steps[NM_COUNT];
};

static int nomem_op(braid_task *self, struct nomem_step *st) {
  struct nomem *n = st->n;
  switch (st->which) {
  case NM_LOCK:
    return braid_lock_acquire(self, n->l);
  case NM_SEM:
    return braid_semaphore_acquire(self, n->s);
  case NM_EVENT:
    return braid_event_wait(self, n->e);
  case NM_LIMITER:
    return braid_limiter_acquire(self, n->m);
  case NM_SEND:
    return braid_channel_send(self, n->tx, ITEM_A);
  case NM_RECV:
    return braid_channel_receive(self, n->rx, &st->slot);
  }
  return BRAID_EINVAL;
}

static int nomem_step_body(braid_task *self, void *ctx, int resume) {
  struct nomem_step *st = ctx;
  switch (st->co.pc) {
  case 0:
    atomic_store(&st->n->fa->refused, 0);
    atomic_store(&st->n->fa->failing, 1);
    st->rc = nomem_op(self, st);
    atomic_store(&st->n->fa->failing, 0);
    st->refused = atomic_load(&st->n->fa->refused);
    if (st->rc == BRAID_EPENDING) {
      st->co.pc = 1; /* it needed no memory after all: the test cancels it */
      return BRAID_EPENDING;
    }
    st->rc_final = st->rc;
    return 0;
  case 1:
    st->rc_final = resume;
    return 0;
  }
  return CO_FELL_OFF;
}

static int nomem_root(braid_task *self, void *arg) {
  struct nomem *n = arg;
  n->l = new_lock();
  CHECK_INT(braid_lock_acquire(self, n->l), 0);
  n->s = new_sem(0, 0);
  n->e = new_event();
  n->m = new_limiter(0);
  CHECK_INT(braid_channel_new(0, NULL, &n->tx, &n->rx), 0);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  for (int i = 0; i < NM_COUNT; i++) {
    n->steps[i].n = n;
    n->steps[i].which = i;
    CHECK_INT(braid_group_spawn_stepped(g, nomem_step_body, &n->steps[i], NULL, NULL), 0);
    CHECK_INT(braid_sleep(self, MSEC), 0); /* one at a time */
  }
  CHECK_INT(braid_scope_cancel(braid_group_scope(g)), 0); /* ends any that did wait */
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_free(g), 0);
  /* Nothing was left queued. */
  CHECK_INT(lstats(n->l).waiting, 0);
  CHECK_INT(braid_lock_release(self, n->l), 0);
  CHECK_INT(braid_lock_free(n->l), 0);
  CHECK_INT(braid_semaphore_free(n->s), 0);
  CHECK_INT(braid_event_free(n->e), 0);
  CHECK_INT(braid_limiter_free(n->m), 0);
  CHECK_INT(braid_sender_free(n->tx), 0);
  CHECK_INT(braid_receiver_free(n->rx), 0);
  return 0;
}

static void test_waiters_a_stepped_tasks_first_wait_without_memory_is_enomem_and_queues_nothing(void **state) {
  (void)state;
  struct nomem *n = calloc(1, sizeof *n);
  fail_alloc *fa = calloc(1, sizeof *fa);
  assert_non_null(n);
  assert_non_null(fa);
  n->fa = fa;
  fail_alloc_install(fa);
  int rc = run_real(nomem_root, n);
  fail_alloc_uninstall();
  assert_int_equal(rc, 0);
  assert_int_equal(check_failures(), 0);
  for (int i = 0; i < NM_COUNT; i++) {
    struct nomem_step *st = &n->steps[i];
    if (st->refused > 0) {
      assert_int_equal(st->rc, BRAID_ENOMEM);
    } else {
      /* No allocation was needed: it waited and was cancelled. */
      assert_int_equal(st->rc, BRAID_EPENDING);
      assert_int_equal(st->rc_final, BRAID_ECANCELED);
    }
  }
  assert_int_equal(atomic_load(&fa->live), 0);
  free(n);
  free(fa);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_waiters_thread_id_is_positive_stable_and_distinct_per_thread),
      BT(test_waiters_wait_cancel_of_a_pending_waiter_calls_back_ecanceled_on_this_thread_before_returning),
      BT(test_waiters_wait_cancel_after_completion_is_estate_and_calls_nothing_more),
      BT(test_waiters_wait_free_of_a_pending_waiter_cancels_it_and_leaves_the_queue),
      BT(test_waiters_wait_cancel_and_free_of_null_are_einval),
      BT(test_waiters_wait_free_while_the_callback_runs_on_another_thread_lets_it_finish_once),
      BT(test_waiters_callbacks_completed_by_a_stackful_task_run_on_its_loop_thread_off_the_task_stack),
      BT(test_waiters_callbacks_completed_by_a_stepped_task_run_once_on_its_loop_thread),
      BT(test_waiters_callbacks_completed_by_a_task_of_another_threads_loop_run_on_that_thread),
      BT(test_waiters_callbacks_completed_by_a_plain_thread_run_on_it_before_each_call_returns),
      BT(test_waiters_many_callbacks_on_one_lock_are_called_once_each_in_fifo_order),
      BT(test_waiters_race_release_against_wait_cancel_calls_back_once_and_never_loses_the_lock),
      BT(test_waiters_race_release_against_wait_free_calls_back_once_and_never_loses_the_lock),
      BT(test_waiters_a_thread_wait_in_a_shielded_scope_is_not_cancelled_by_a_cancelled_outer_scope),
      BT(test_waiters_a_thread_wait_ends_at_an_outer_scope_deadline_through_an_inner_scope),
      BT(test_waiters_a_thread_in_a_scope_whose_deadline_already_passed_does_not_wait),
      BT(test_waiters_blocking_thread_waits_from_a_loops_thread_are_ethread),
      BT(test_waiters_a_task_and_a_thread_hand_a_lock_back_and_forth),
      BT(test_waiters_a_stepped_tasks_first_wait_without_memory_is_enomem_and_queues_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
