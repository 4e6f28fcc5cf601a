/*
 * test_bridge.c — the thread bridge: braid_to_thread from stackful and
 * stepped tasks, cancellation reaching into the worker (braid waits with
 * task == NULL on the worker and braid_thread_check_cancelled), with and
 * without BRAID_ABANDON_ON_CANCEL, limiters bounding the workers, the
 * default limiter, the worker pool (reuse, idle retirement, statistics),
 * braid_from_thread_run / _run_sync from plain threads and from workers,
 * braid_sleep(NULL, …) and scopes of plain threads, and the error codes.
 *
 * Cancellation tests run on the virtual clock: while a task waits for its
 * worker, the clock jumps to the next deadline, so a move_on_after fires at
 * once and its virtual time is asserted exactly. A "spinner" sibling keeps
 * the loop busy (and so the virtual clock still) until the worker really
 * waits inside braid, so the cancellation reaches a blocked wait rather than
 * one about to start. Real time is only used to let threads get somewhere;
 * no assertion depends on how long anything took.
 */
#include "core_helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define SEC BRAID_SEC
#define MSEC BRAID_MSEC
#define USEC BRAID_USEC

/* ---- scaffolding ----------------------------------------------------- */

/* A plain (non-braid) gate a worker can block on, deaf to cancellation. */
typedef struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int open;
} gate;

static void gate_init(gate *g) {
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  g->open = 0;
}

static void gate_open(gate *g) {
  pthread_mutex_lock(&g->mu);
  g->open = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

static void gate_wait(gate *g) {
  pthread_mutex_lock(&g->mu);
  while (!g->open)
    pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
}

static void gate_destroy(gate *g) {
  pthread_cond_destroy(&g->cv);
  pthread_mutex_destroy(&g->mu);
}

/* Count the caller in *cur (and the most ever counted in *max) and wait for
 * the gate; the caller counts itself out. */
static void count_running_until_open(atomic_int *cur, atomic_int *max, gate *g) {
  int now = atomic_fetch_add(cur, 1) + 1;
  int m = atomic_load(max);
  while (now > m && !atomic_compare_exchange_weak(max, &m, now)) {
  }
  gate_wait(g);
}

/* thread_wait_for (core_helpers.h) from a task: a checkpoint between polls
 * keeps the other tasks running, and a busy loop keeps the virtual clock
 * where it is. */
static int task_wait_for(braid_task *self, pred_fn pred, void *arg) {
  int64_t limit = real_ns() + POLL_LIMIT;
  while (!pred(arg)) {
    if (real_ns() > limit) return 0;
    os_sleep_ns(50 * USEC);
    braid_cancel_shielded_checkpoint(self);
  }
  return 1;
}

struct spin {
  pred_fn pred;
  void *arg;
  int held;
};

static int spin_child(braid_task *self, void *arg) {
  struct spin *s = arg;
  s->held = task_wait_for(self, s->pred, s->arg);
  CHECK(s->held);
  return 0;
}

static int join_thread_fn(void *arg) { return pthread_join(*(pthread_t *)arg, NULL); }

static int flag_fn(void *arg) {
  atomic_store((atomic_int *)arg, 1);
  return 0;
}

/* Statistics of the worker pool and of a limiter. */

static braid_worker_stats worker_stats(void) {
  braid_worker_stats st = {.size = sizeof st};
  CHECK_INT(braid_worker_statistics(&st), 0);
  return st;
}

static braid_limiter_stats lim_stats(braid_limiter *lim) {
  braid_limiter_stats st = {.size = sizeof st};
  CHECK_INT(braid_limiter_statistics(lim, &st), 0);
  return st;
}

/* The default limiter of the task's loop. */
static braid_limiter *default_limiter(braid_task *self) {
  braid_limiter *def = NULL;
  CHECK_INT(braid_loop_default_limiter(braid_task_loop(self), &def), 0);
  return def;
}

/* ---- to_thread: results ----------------------------------------------- */

struct result_fn_ctx {
  pthread_t loop_thread;
  int value;
  atomic_int calls;
  atomic_int on_loop_thread;
  atomic_int saw_current_task;
};

static int result_fn(void *arg) {
  struct result_fn_ctx *c = arg;
  atomic_fetch_add(&c->calls, 1);
  if (pthread_equal(pthread_self(), c->loop_thread)) atomic_store(&c->on_loop_thread, 1);
  if (braid_current_task() != NULL) atomic_store(&c->saw_current_task, 1);
  return c->value;
}

struct result_ctx {
  struct result_fn_ctx f;
  int rc_positive, rc_zero, rc_negative;
};

static int result_root(braid_task *self, void *arg) {
  struct result_ctx *c = arg;
  c->f.loop_thread = pthread_self();
  c->f.value = 12345;
  c->rc_positive = braid_to_thread(self, result_fn, &c->f, 0, NULL);
  c->f.value = 0;
  c->rc_zero = braid_to_thread(self, result_fn, &c->f, 0, NULL);
  c->f.value = BRAID_EPERM;
  c->rc_negative = braid_to_thread(self, result_fn, &c->f, 0, NULL);
  return 0;
}

static void test_to_thread_returns_the_functions_result_to_a_stackful_task(void **state) {
  (void)state;
  struct result_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(result_root, &c), 0);
  assert_int_equal(c.rc_positive, 12345);
  assert_int_equal(c.rc_zero, 0);
  assert_int_equal(c.rc_negative, BRAID_EPERM);
  assert_int_equal(atomic_load(&c.f.calls), 3);
  /* fn ran on another thread, outside any task */
  assert_int_equal(atomic_load(&c.f.on_loop_thread), 0);
  assert_int_equal(atomic_load(&c.f.saw_current_task), 0);
}

struct stepped_result_ctx {
  co_state co;
  struct result_fn_ctx f;
  int rc1, rc2;
  int pending1, pending2;
};

static int stepped_result_root(braid_task *self, void *ctx, int resume) {
  struct stepped_result_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->f.loop_thread = pthread_self();
    c->f.value = 77;
    AWAIT_TO(&c->co, c->rc1, braid_to_thread(self, result_fn, &c->f, 0, NULL));
    c->f.value = -4242;
    AWAIT_TO(&c->co, c->rc2, braid_to_thread(self, result_fn, &c->f, 0, NULL));
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_to_thread_returns_the_functions_result_to_a_stepped_task_as_resume(void **state) {
  (void)state;
  struct stepped_result_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_real(stepped_result_root, &c), 0);
  assert_int_equal(c.rc1, 77);
  assert_int_equal(c.rc2, -4242);
  /* both calls registered a wait: the results came as resume */
  assert_int_equal(c.co.immediate, 0);
  assert_int_equal(atomic_load(&c.f.calls), 2);
  assert_int_equal(atomic_load(&c.f.on_loop_thread), 0);
}

/* ---- to_thread: the task waits, other tasks run ----------------------- */

struct waits_ctx {
  gate g;
  int sibling_steps;
  int steps_when_returned;
  int rc;
  atomic_int fn_passed_gate;
};

static int gated_fn(void *arg) {
  struct waits_ctx *c = arg;
  gate_wait(&c->g);
  atomic_store(&c->fn_passed_gate, 1);
  return 5;
}

static int gate_opening_sibling(braid_task *self, void *arg) {
  struct waits_ctx *c = arg;
  for (int i = 0; i < 10; i++) {
    c->sibling_steps++;
    CHECK_INT(braid_checkpoint(self), 0);
  }
  gate_open(&c->g); /* fn can only return after this sibling ran */
  return 0;
}

static int waits_root(braid_task *self, void *arg) {
  struct waits_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, gate_opening_sibling, c, NULL, NULL), 0);
  c->rc = braid_to_thread(self, gated_fn, c, 0, NULL);
  c->steps_when_returned = c->sibling_steps;
  close_group(g);
  return 0;
}

static void test_to_thread_task_waits_while_other_tasks_run(void **state) {
  (void)state;
  struct waits_ctx c;
  memset(&c, 0, sizeof c);
  gate_init(&c.g);
  assert_int_equal(run_virtual(waits_root, &c), 0);
  gate_destroy(&c.g);
  assert_int_equal(c.rc, 5);
  assert_int_equal(atomic_load(&c.fn_passed_gate), 1);
  assert_int_equal(c.steps_when_returned, 10);
}

struct stepped_waits_ctx {
  co_state co;
  struct waits_ctx w;
  braid_group *g;
  int rc_close;
};

static int stepped_waits_root(braid_task *self, void *ctx, int resume) {
  struct stepped_waits_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    CHECK_INT(braid_group_open(self, &c->g), 0);
    CHECK_INT(braid_group_spawn(c->g, gate_opening_sibling, &c->w, NULL, NULL), 0);
    AWAIT_TO(&c->co, c->w.rc, braid_to_thread(self, gated_fn, &c->w, 0, NULL));
    c->w.steps_when_returned = c->w.sibling_steps;
    AWAIT_TO(&c->co, c->rc_close, braid_group_close(c->g, 0));
    CHECK_INT(braid_group_free(c->g), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_to_thread_stepped_task_waits_while_other_tasks_run(void **state) {
  (void)state;
  struct stepped_waits_ctx c;
  memset(&c, 0, sizeof c);
  gate_init(&c.w.g);
  assert_int_equal(run_stepped_virtual(stepped_waits_root, &c), 0);
  gate_destroy(&c.w.g);
  assert_int_equal(c.w.rc, 5);
  assert_int_equal(c.w.steps_when_returned, 10);
  assert_int_equal(c.rc_close, 0);
}

/* ---- to_thread in a cancelled scope ----------------------------------- */

struct precancelled_ctx {
  atomic_int ran;
  int rc, rc_abandon, exit_rc;
  uint64_t borrowed_after;
};

static int precancelled_root(braid_task *self, void *arg) {
  struct precancelled_ctx *c = arg;
  braid_scope *s = enter_cancelled_scope(self);
  c->rc = braid_to_thread(self, flag_fn, &c->ran, 0, NULL);
  c->rc_abandon = braid_to_thread(self, flag_fn, &c->ran, BRAID_ABANDON_ON_CANCEL, NULL);
  c->exit_rc = leave_scope(s, c->rc, NULL);
  c->borrowed_after = lim_stats(default_limiter(self)).borrowed;
  return 0;
}

static void test_to_thread_in_a_cancelled_scope_fails_without_running_fn(void **state) {
  (void)state;
  struct precancelled_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(precancelled_root, &c), 0);
  assert_int_equal(c.rc, BRAID_ECANCELED);
  assert_int_equal(c.rc_abandon, BRAID_ECANCELED);
  assert_int_equal(c.exit_rc, 0);
  assert_int_equal(c.borrowed_after, 0);
  os_sleep_ns(5 * MSEC); /* a worker that wrongly got the job would have run it by now */
  assert_int_equal(atomic_load(&c.ran), 0);
}

struct stepped_precancelled_ctx {
  co_state co;
  braid_scope *s;
  atomic_int ran;
  int rc, rc_after_exit;
};

static int stepped_precancelled_root(braid_task *self, void *ctx, int resume) {
  struct stepped_precancelled_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->s = enter_cancelled_scope(self);
    AWAIT_TO(&c->co, c->rc, braid_to_thread(self, flag_fn, &c->ran, 0, NULL));
    CHECK_INT(leave_scope(c->s, c->rc, NULL), 0);
    /* outside the scope the same task runs fn again */
    AWAIT_TO(&c->co, c->rc_after_exit, braid_to_thread(self, flag_fn, &c->ran, 0, NULL));
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_to_thread_stepped_in_a_cancelled_scope_resumes_with_ecanceled_without_running_fn(void **state) {
  (void)state;
  struct stepped_precancelled_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(stepped_precancelled_root, &c), 0);
  assert_int_equal(c.rc, BRAID_ECANCELED);
  assert_int_equal(c.rc_after_exit, 0);
  assert_int_equal(atomic_load(&c.ran), 1); /* only the second call ran it */
}

/* ---- cancellation reaches into the worker ----------------------------- */

struct reach {
  /* what the worker does and how to see it is blocked */
  braid_thread_fn fn;
  pred_fn blocked;
  braid_fn holder; /* optional sibling spawned first (holds the lock) */
  braid_lock *lock;
  braid_event *event;
  braid_semaphore *sem;
  braid_receiver *rx;
  braid_event *release; /* set after the call returned: the holder finishes */
  atomic_int holder_ready, entered, polls, fn_done, fn_rc;
  /* outcome */
  int rc, exit_rc, caught, fn_done_at_return, spin_held;
  braid_time_t t0, deadline, t_end;
};

static int holder_ready(void *arg) { return atomic_load(&((struct reach *)arg)->holder_ready); }

static int reach_root(braid_task *self, void *arg) {
  struct reach *r = arg;
  CHECK_INT(braid_event_new(&r->release), 0);
  braid_group *g = open_group(self);
  if (r->holder) {
    CHECK_INT(braid_group_spawn(g, r->holder, r, NULL, NULL), 0);
    CHECK(task_wait_for(self, holder_ready, r)); /* it holds what fn will wait for */
  }
  struct spin sp = {r->blocked, r, 0};
  CHECK_INT(braid_group_spawn(g, spin_child, &sp, NULL, NULL), 0);
  braid_scope *s = NULL;
  r->t0 = braid_now(self);
  CHECK_INT(braid_move_on_after(self, SEC, &s), 0);
  r->deadline = braid_scope_deadline(s);
  r->rc = braid_to_thread(self, r->fn, r, 0, NULL);
  r->t_end = braid_now(self);
  r->fn_done_at_return = atomic_load(&r->fn_done);
  r->exit_rc = leave_scope(s, r->rc, &r->caught);
  CHECK_INT(braid_event_set(r->release), 0);
  close_group(g);
  r->spin_held = sp.held;
  CHECK_INT(braid_event_free(r->release), 0);
  return 0;
}

static int finish(struct reach *r, int rc) {
  atomic_store(&r->fn_rc, rc);
  atomic_store(&r->fn_done, 1);
  return rc;
}

/* What every "cancellation reaches the worker" test asserts. */
static void assert_reached(struct reach *r) {
  assert_int_equal(r->spin_held, 1); /* the worker was blocked in braid first */
  assert_int_equal(r->rc, BRAID_ECANCELED);
  assert_int_equal(atomic_load(&r->fn_rc), BRAID_ECANCELED);
  assert_int_equal(r->fn_done_at_return, 1);
  assert_int_equal(r->deadline, r->t0 + SEC);
  assert_int_equal(r->t_end, r->deadline); /* cancelled exactly at the deadline */
  assert_int_equal(r->exit_rc, 0);
  assert_int_equal(r->caught, 1);
}

/* Run reach_root: fn blocks in the worker (`blocked` tells when), after a
 * `holder` sibling (if any) took what fn waits for; then assert_reached. */
static void run_reach(struct reach *r, braid_thread_fn fn, pred_fn blocked, braid_fn holder) {
  r->fn = fn;
  r->blocked = blocked;
  r->holder = holder;
  assert_int_equal(run_virtual(reach_root, r), 0);
  assert_reached(r);
}

/* lock */

static int lock_holder(braid_task *self, void *arg) {
  struct reach *r = arg;
  CHECK_INT(braid_lock_acquire(self, r->lock), 0);
  atomic_store(&r->holder_ready, 1);
  CHECK_INT(braid_event_wait(self, r->release), 0);
  CHECK_INT(braid_lock_release(self, r->lock), 0);
  return 0;
}

static int lock_fn(void *arg) {
  struct reach *r = arg;
  int rc = braid_lock_acquire(NULL, r->lock);
  if (rc == 0) braid_lock_release(NULL, r->lock); /* wrong: got it while held */
  return finish(r, rc);
}

static braid_lock_stats lock_stats(braid_lock *lock) {
  braid_lock_stats st = {.size = sizeof st};
  CHECK_INT(braid_lock_statistics(lock, &st), 0);
  return st;
}

static int lock_waited_on(void *arg) {
  braid_lock_stats st = lock_stats(((struct reach *)arg)->lock);
  return st.locked && st.waiting == 1;
}

static void test_cancel_reaches_a_worker_blocked_on_a_lock_held_by_a_sibling(void **state) {
  (void)state;
  struct reach r;
  memset(&r, 0, sizeof r);
  assert_int_equal(braid_lock_new(&r.lock), 0);
  run_reach(&r, lock_fn, lock_waited_on, lock_holder);
  braid_lock_stats st = lock_stats(r.lock);
  assert_int_equal(st.locked, 0);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(braid_lock_free(r.lock), 0);
}

/* sleep */

static int sleep_fn(void *arg) {
  struct reach *r = arg;
  atomic_store(&r->entered, 1);
  return finish(r, braid_sleep(NULL, 3600 * SEC));
}

static int entered(void *arg) {
  struct reach *r = arg;
  if (!atomic_load(&r->entered)) return 0;
  os_sleep_ns(MSEC); /* let it get from the flag into the futex */
  return 1;
}

static void test_cancel_reaches_a_worker_in_braid_sleep_null(void **state) {
  (void)state;
  struct reach r;
  memset(&r, 0, sizeof r);
  run_reach(&r, sleep_fn, entered, NULL);
}

/* channel receive */

static int receive_fn(void *arg) {
  struct reach *r = arg;
  void *item = (void *)&r->entered;
  int rc = braid_channel_receive(NULL, r->rx, &item);
  if (item != (void *)&r->entered) rc = -999; /* nothing may be written on cancel */
  return finish(r, rc);
}

static braid_channel_stats receiver_stats(braid_receiver *rx) {
  braid_channel_stats st = {.size = sizeof st};
  CHECK_INT(braid_receiver_statistics(rx, &st), 0);
  return st;
}

static int receive_waited_on(void *arg) { return receiver_stats(((struct reach *)arg)->rx).waiting_receive == 1; }

static void test_cancel_reaches_a_worker_blocked_on_a_channel_receive(void **state) {
  (void)state;
  struct reach r;
  memset(&r, 0, sizeof r);
  braid_sender *tx = NULL;
  assert_int_equal(braid_channel_new(0, NULL, &tx, &r.rx), 0);
  run_reach(&r, receive_fn, receive_waited_on, NULL);
  assert_int_equal(receiver_stats(r.rx).waiting_receive, 0);
  /* the channel still works: an item sent now waits for a new receiver */
  assert_int_equal(braid_channel_send_nowait(tx, &r), BRAID_EWOULDBLOCK);
  assert_int_equal(braid_sender_free(tx), 0);
  assert_int_equal(braid_receiver_free(r.rx), 0);
}

/* event */

static int event_fn(void *arg) {
  struct reach *r = arg;
  return finish(r, braid_event_wait(NULL, r->event));
}

static braid_event_stats event_stats(braid_event *ev) {
  braid_event_stats st = {.size = sizeof st};
  CHECK_INT(braid_event_statistics(ev, &st), 0);
  return st;
}

static int event_waited_on(void *arg) { return event_stats(((struct reach *)arg)->event).waiting == 1; }

static void test_cancel_reaches_a_worker_waiting_for_an_event(void **state) {
  (void)state;
  struct reach r;
  memset(&r, 0, sizeof r);
  assert_int_equal(braid_event_new(&r.event), 0);
  run_reach(&r, event_fn, event_waited_on, NULL);
  braid_event_stats st = event_stats(r.event);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.set, 0);
  assert_int_equal(braid_event_free(r.event), 0);
}

/* semaphore */

static int sem_fn(void *arg) {
  struct reach *r = arg;
  return finish(r, braid_semaphore_acquire(NULL, r->sem));
}

static int sem_waited_on(void *arg) {
  braid_semaphore_stats st = {.size = sizeof st};
  CHECK_INT(braid_semaphore_statistics(((struct reach *)arg)->sem, &st), 0);
  return st.waiting == 1;
}

static void test_cancel_reaches_a_worker_waiting_on_a_semaphore(void **state) {
  (void)state;
  struct reach r;
  memset(&r, 0, sizeof r);
  assert_int_equal(braid_semaphore_new(0, 0, &r.sem), 0);
  run_reach(&r, sem_fn, sem_waited_on, NULL);
  assert_int_equal(braid_semaphore_value(r.sem), 0);
  assert_int_equal(braid_semaphore_free(r.sem), 0);
}

/* braid_thread_check_cancelled polled by fn */

static int poll_fn(void *arg) {
  struct reach *r = arg;
  int64_t limit = real_ns() + POLL_LIMIT;
  int rc;
  while ((rc = braid_thread_check_cancelled()) == 0) {
    if (real_ns() > limit) return finish(r, -999);
    atomic_fetch_add(&r->polls, 1);
    os_sleep_ns(100 * USEC);
  }
  return finish(r, rc);
}

static int polled(void *arg) { return atomic_load(&((struct reach *)arg)->polls) >= 3; }

static void test_thread_check_cancelled_polled_by_fn_turns_into_ecanceled(void **state) {
  (void)state;
  struct reach r;
  memset(&r, 0, sizeof r);
  run_reach(&r, poll_fn, polled, NULL);
  assert_true(atomic_load(&r.polls) >= 3); /* it reported 0 before the cancellation */
}

/* A stepped task's cancellation reaches its worker the same way. */

struct stepped_reach_ctx {
  co_state co;
  struct reach r;
  braid_scope *s;
  int exit_rc;
};

static int stepped_reach_root(braid_task *self, void *ctx, int resume) {
  struct stepped_reach_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    c->r.t0 = braid_now(self);
    CHECK_INT(braid_move_on_after(self, SEC, &c->s), 0);
    c->r.deadline = braid_scope_deadline(c->s);
    AWAIT_TO(&c->co, c->r.rc, braid_to_thread(self, sleep_fn, &c->r, 0, NULL));
    c->r.t_end = braid_now(self);
    c->r.fn_done_at_return = atomic_load(&c->r.fn_done);
    c->exit_rc = leave_scope(c->s, c->r.rc, NULL);
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_cancel_of_a_stepped_task_reaches_its_worker(void **state) {
  (void)state;
  struct stepped_reach_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_stepped_virtual(stepped_reach_root, &c), 0);
  assert_int_equal(c.r.rc, BRAID_ECANCELED);
  assert_int_equal(atomic_load(&c.r.fn_rc), BRAID_ECANCELED);
  assert_int_equal(c.r.fn_done_at_return, 1);
  assert_int_equal(c.r.t_end, c.r.deadline);
  assert_int_equal(c.r.deadline, c.r.t0 + SEC);
  assert_int_equal(c.exit_rc, 0);
}

/* A worker's own shielded scope keeps the task's cancellation out; outside
 * it, the cancellation is visible again. The next job on the same task is
 * not cancelled any more. */

struct shield_ctx {
  atomic_int in_shield_check, in_shield_sleep, after_shield_check, second_check, second_sleep;
  int rc, rc_second;
  braid_time_t t_end, deadline;
};

static int shielded_fn(void *arg) {
  struct shield_ctx *c = arg;
  /* make sure the task is cancelled before looking */
  int64_t limit = real_ns() + POLL_LIMIT;
  while (braid_thread_check_cancelled() == 0 && real_ns() < limit)
    os_sleep_ns(100 * USEC);
  braid_scope *sh = NULL;
  if (braid_scope_new(BRAID_NEVER, BRAID_SHIELD, &sh) != 0) return -998;
  if (braid_scope_enter(NULL, sh) != 0) return -997;
  atomic_store(&c->in_shield_check, braid_thread_check_cancelled());
  atomic_store(&c->in_shield_sleep, braid_sleep(NULL, MSEC));
  int rc = braid_scope_exit(sh, 0);
  braid_scope_unref(sh);
  atomic_store(&c->after_shield_check, braid_thread_check_cancelled());
  return rc;
}

static int uncancelled_fn(void *arg) {
  struct shield_ctx *c = arg;
  atomic_store(&c->second_check, braid_thread_check_cancelled());
  atomic_store(&c->second_sleep, braid_sleep(NULL, 100 * USEC));
  return 3;
}

static int shield_root(braid_task *self, void *arg) {
  struct shield_ctx *c = arg;
  braid_scope *s = NULL;
  CHECK_INT(braid_move_on_after(self, SEC, &s), 0);
  c->deadline = braid_scope_deadline(s);
  c->rc = braid_to_thread(self, shielded_fn, c, 0, NULL);
  c->t_end = braid_now(self);
  CHECK_INT(leave_scope(s, c->rc, NULL), 0);
  c->rc_second = braid_to_thread(self, uncancelled_fn, c, 0, NULL);
  return 0;
}

static void test_worker_shield_scope_blocks_the_tasks_cancellation_and_next_job_starts_clean(void **state) {
  (void)state;
  struct shield_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(shield_root, &c), 0);
  assert_int_equal(c.rc, BRAID_ECANCELED);
  assert_int_equal(c.t_end, c.deadline);
  assert_int_equal(atomic_load(&c.in_shield_check), 0);
  assert_int_equal(atomic_load(&c.in_shield_sleep), 0);
  assert_int_equal(atomic_load(&c.after_shield_check), BRAID_ECANCELED);
  assert_int_equal(c.rc_second, 3);
  assert_int_equal(atomic_load(&c.second_check), 0);
  assert_int_equal(atomic_load(&c.second_sleep), 0);
}

/* ---- with and without BRAID_ABANDON_ON_CANCEL ------------------------- */

/* A job deaf to braid cancellation: it runs until its gate opens, then
 * notes whether it ran under a cancelled task, and returns 99. */
struct gated_job {
  gate g;
  atomic_int fn_started, fn_finished, fn_saw_cancel;
};

static int gated_job_fn(void *arg) {
  struct gated_job *j = arg;
  atomic_store(&j->fn_started, 1);
  gate_wait(&j->g);
  atomic_store(&j->fn_saw_cancel, braid_thread_check_cancelled());
  atomic_store(&j->fn_finished, 1);
  return 99;
}

struct abandon_ctx {
  unsigned flags;
  struct gated_job job;
  braid_limiter *lim;
  braid_scope *scope;
  int returned;
  /* seen by the opener at 2 s */
  int returned_at_2s, cancel_called_at_2s, finished_at_2s;
  uint64_t borrowed_at_2s;
  /* seen by the root */
  int rc, finished_at_return, rc_acquire, finished_at_acquire, rc_again;
  uint64_t borrowed_at_return, borrowed_at_acquire, borrowed_at_end;
  uint64_t busy_at_return;
  braid_time_t deadline, t_end, t_acquire;
};

static int two_fn(void *arg) {
  (void)arg;
  return 2;
}

static int opener_at_2s(braid_task *self, void *arg) {
  struct abandon_ctx *c = arg;
  CHECK_INT(braid_sleep(self, 2 * SEC), 0);
  c->returned_at_2s = c->returned;
  c->cancel_called_at_2s = braid_scope_cancel_called(c->scope);
  c->finished_at_2s = atomic_load(&c->job.fn_finished);
  c->borrowed_at_2s = lim_stats(c->lim).borrowed;
  gate_open(&c->job.g);
  return 0;
}

static int abandon_root(braid_task *self, void *arg) {
  struct abandon_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, opener_at_2s, c, NULL, NULL), 0);
  CHECK_INT(braid_move_on_after(self, SEC, &c->scope), 0);
  c->deadline = braid_scope_deadline(c->scope);
  c->rc = braid_to_thread(self, gated_job_fn, &c->job, c->flags, c->lim);
  c->t_end = braid_now(self);
  c->returned = 1;
  c->finished_at_return = atomic_load(&c->job.fn_finished);
  c->borrowed_at_return = lim_stats(c->lim).borrowed;
  c->busy_at_return = worker_stats().busy;
  CHECK_INT(braid_scope_exit(c->scope, c->rc), 0);
  /* The token comes back only when fn has returned. */
  c->rc_acquire = braid_limiter_acquire(self, c->lim);
  c->t_acquire = braid_now(self);
  c->finished_at_acquire = atomic_load(&c->job.fn_finished);
  c->borrowed_at_acquire = lim_stats(c->lim).borrowed;
  if (c->rc_acquire == 0) CHECK_INT(braid_limiter_release(self, c->lim, 0), 0);
  /* the same task runs another job normally */
  c->rc_again = braid_to_thread(self, two_fn, NULL, c->flags, c->lim);
  close_group(g);
  CHECK_INT(braid_scope_unref(c->scope), 0);
  c->borrowed_at_end = lim_stats(c->lim).borrowed;
  return 0;
}

static void run_abandon(struct abandon_ctx *c, unsigned flags) {
  memset(c, 0, sizeof *c);
  c->flags = flags;
  gate_init(&c->job.g);
  assert_int_equal(braid_limiter_new(1, &c->lim), 0);
  assert_int_equal(run_virtual(abandon_root, c), 0);
  assert_int_equal(braid_limiter_free(c->lim), 0);
  gate_destroy(&c->job.g);
}

static void test_to_thread_without_abandon_waits_for_fn_then_returns_ecanceled(void **state) {
  (void)state;
  struct abandon_ctx c;
  run_abandon(&c, 0);
  assert_int_equal(c.rc, BRAID_ECANCELED); /* not fn's 99 */
  /* at 2 s the deadline had fired but the task was still waiting for fn */
  assert_int_equal(c.cancel_called_at_2s, 1);
  assert_int_equal(c.returned_at_2s, 0);
  assert_int_equal(c.finished_at_2s, 0);
  assert_int_equal(c.borrowed_at_2s, 1);
  /* it returned when fn had finished, after the gate opened at 2 s */
  assert_int_equal(c.deadline, SEC);
  assert_int_equal(c.t_end, 2 * SEC);
  assert_int_equal(c.finished_at_return, 1);
  assert_int_equal(c.borrowed_at_return, 0);
  assert_int_equal(atomic_load(&c.job.fn_saw_cancel), BRAID_ECANCELED);
  assert_int_equal(c.rc_acquire, 0);
  assert_int_equal(c.t_acquire, 2 * SEC);
  assert_int_equal(c.rc_again, 2);
  assert_int_equal(c.borrowed_at_end, 0);
}

static void test_to_thread_abandon_on_cancel_resumes_at_once_and_keeps_the_token_until_fn_returns(void **state) {
  (void)state;
  struct abandon_ctx c;
  run_abandon(&c, BRAID_ABANDON_ON_CANCEL);
  assert_int_equal(c.rc, BRAID_ECANCELED);
  /* resumed at the deadline while fn still ran */
  assert_int_equal(c.deadline, SEC);
  assert_int_equal(c.t_end, SEC);
  assert_int_equal(c.finished_at_return, 0);
  assert_int_equal(c.borrowed_at_return, 1);
  assert_true(c.busy_at_return >= 1);
  /* a second later fn is still running and still holds the token */
  assert_int_equal(c.returned_at_2s, 1);
  assert_int_equal(c.finished_at_2s, 0);
  assert_int_equal(c.borrowed_at_2s, 1);
  /* the token came back exactly when fn returned */
  assert_int_equal(c.rc_acquire, 0);
  assert_int_equal(c.t_acquire, 2 * SEC);
  assert_int_equal(c.finished_at_acquire, 1);
  assert_int_equal(c.borrowed_at_acquire, 1); /* now ours */
  /* the abandoned fn still ran under the task's (cancelled) status */
  assert_int_equal(atomic_load(&c.job.fn_saw_cancel), BRAID_ECANCELED);
  /* its 99 went nowhere; the task's next job is its own */
  assert_int_equal(c.rc_again, 2);
  assert_int_equal(c.borrowed_at_end, 0);
}

struct stepped_abandon_ctx {
  co_state co;
  struct gated_job job;
  braid_limiter *lim;
  braid_scope *s;
  int rc, finished_at_return, rc_acquire, finished_at_acquire, rc_again;
  uint64_t borrowed_at_return;
  braid_time_t deadline, t_end;
};

static int stepped_abandon_root(braid_task *self, void *ctx, int resume) {
  struct stepped_abandon_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    CHECK_INT(braid_move_on_after(self, SEC, &c->s), 0);
    c->deadline = braid_scope_deadline(c->s);
    AWAIT_TO(&c->co, c->rc, braid_to_thread(self, gated_job_fn, &c->job, BRAID_ABANDON_ON_CANCEL, c->lim));
    if (!CHECK_INT(c->co.immediate, 0)) { /* no job started: do not wait for it */
      CHECK_INT(leave_scope(c->s, c->rc, NULL), c->rc);
      gate_open(&c->job.g);
      return 0;
    }
    c->t_end = braid_now(self);
    c->finished_at_return = atomic_load(&c->job.fn_finished);
    c->borrowed_at_return = lim_stats(c->lim).borrowed;
    CHECK_INT(leave_scope(c->s, c->rc, NULL), 0);
    gate_open(&c->job.g);
    AWAIT_TO(&c->co, c->rc_acquire, braid_limiter_acquire(self, c->lim));
    c->finished_at_acquire = atomic_load(&c->job.fn_finished);
    if (c->rc_acquire == 0) CHECK_INT(braid_limiter_release(self, c->lim, 0), 0);
    AWAIT_TO(&c->co, c->rc_again, braid_to_thread(self, two_fn, NULL, BRAID_ABANDON_ON_CANCEL, c->lim));
    return 0;
  }
  return CO_FELL_OFF;
}

static void test_to_thread_abandon_on_cancel_from_a_stepped_task(void **state) {
  (void)state;
  struct stepped_abandon_ctx c;
  memset(&c, 0, sizeof c);
  gate_init(&c.job.g);
  assert_int_equal(braid_limiter_new(1, &c.lim), 0);
  assert_int_equal(run_stepped_virtual(stepped_abandon_root, &c), 0);
  assert_int_equal(c.rc, BRAID_ECANCELED);
  assert_int_equal(c.t_end, c.deadline);
  assert_int_equal(c.finished_at_return, 0);
  assert_int_equal(c.borrowed_at_return, 1);
  assert_int_equal(c.rc_acquire, 0);
  assert_int_equal(c.finished_at_acquire, 1);
  assert_int_equal(atomic_load(&c.job.fn_saw_cancel), BRAID_ECANCELED);
  assert_int_equal(c.rc_again, 2);
  assert_int_equal(lim_stats(c.lim).borrowed, 0);
  assert_int_equal(braid_limiter_free(c.lim), 0);
  gate_destroy(&c.job.g);
}

/* ---- limiters ---------------------------------------------------------- */

#define BOUND_TASKS 10
#define BOUND_TOKENS 3

struct bound_ctx {
  braid_limiter *lim;
  gate g;
  atomic_int cur, max, ran;
  int results[BOUND_TASKS];
  int next;
  braid_limiter_stats stats_before_open;
  uint64_t busy_before_open;
  int reached;
};

struct bound_arg {
  struct bound_ctx *c;
  int index;
};

static int bound_fn(void *arg) {
  struct bound_arg *a = arg;
  struct bound_ctx *c = a->c;
  count_running_until_open(&c->cur, &c->max, &c->g);
  os_sleep_ns(2 * MSEC); /* let the others pile up, if the limiter failed */
  atomic_fetch_sub(&c->cur, 1);
  atomic_fetch_add(&c->ran, 1);
  return 100 + a->index;
}

static int bound_child(braid_task *self, void *arg) {
  struct bound_ctx *c = arg;
  struct bound_arg a = {c, c->next++};
  c->results[a.index] = braid_to_thread(self, bound_fn, &a, 0, c->lim);
  return 0;
}

static int three_running_seven_waiting(void *arg) {
  struct bound_ctx *c = arg;
  return atomic_load(&c->cur) == BOUND_TOKENS && lim_stats(c->lim).waiting == BOUND_TASKS - BOUND_TOKENS;
}

static int bound_root(braid_task *self, void *arg) {
  struct bound_ctx *c = arg;
  braid_group *g = open_group(self);
  for (int i = 0; i < BOUND_TASKS; i++)
    CHECK_INT(braid_group_spawn(g, bound_child, c, NULL, NULL), 0);
  c->reached = task_wait_for(self, three_running_seven_waiting, c);
  c->stats_before_open = lim_stats(c->lim);
  c->busy_before_open = worker_stats().busy;
  gate_open(&c->g);
  close_group(g);
  return 0;
}

static void test_limiter_bounds_concurrent_workers_exactly_and_shows_waiting_tasks(void **state) {
  (void)state;
  struct bound_ctx c;
  memset(&c, 0, sizeof c);
  gate_init(&c.g);
  assert_int_equal(braid_limiter_new(BOUND_TOKENS, &c.lim), 0);
  assert_int_equal(run_real(bound_root, &c), 0);
  assert_int_equal(c.reached, 1);
  assert_int_equal(c.stats_before_open.total, BOUND_TOKENS);
  assert_int_equal(c.stats_before_open.borrowed, BOUND_TOKENS);
  assert_int_equal(c.stats_before_open.waiting, BOUND_TASKS - BOUND_TOKENS);
  assert_int_equal(c.busy_before_open, BOUND_TOKENS);
  assert_int_equal(atomic_load(&c.max), BOUND_TOKENS);
  assert_int_equal(atomic_load(&c.ran), BOUND_TASKS);
  for (int i = 0; i < BOUND_TASKS; i++)
    assert_int_equal(c.results[i], 100 + i);
  braid_limiter_stats st = lim_stats(c.lim);
  assert_int_equal(st.borrowed, 0);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(braid_limiter_free(c.lim), 0);
  gate_destroy(&c.g);
}

/* A task waiting for a token (stackful or stepped) is cancellable there:
 * fn never runs and the task leaves the queue. */

struct token_wait_ctx {
  co_state co;
  braid_limiter *lim;
  braid_scope *s;
  atomic_int ran;
  int rc, rc_stepped;
  size_t waiting_seen;
  size_t waiting_after;
  braid_time_t deadline, t_end, t_end_stepped;
};

static int token_waiting(void *arg) {
  struct token_wait_ctx *c = arg;
  return lim_stats(c->lim).waiting == 2;
}

static int token_watch(braid_task *self, void *arg) {
  struct token_wait_ctx *c = arg;
  CHECK(task_wait_for(self, token_waiting, c));
  c->waiting_seen = lim_stats(c->lim).waiting;
  return 0;
}

static int token_stepped_child(braid_task *self, void *ctx, int resume) {
  struct token_wait_ctx *c = ctx;
  switch (c->co.pc) {
  case 0:
    CHECK_INT(braid_move_on_after(self, SEC, &c->s), 0);
    AWAIT_TO(&c->co, c->rc_stepped, braid_to_thread(self, flag_fn, &c->ran, 0, c->lim));
    c->t_end_stepped = braid_now(self);
    CHECK_INT(leave_scope(c->s, c->rc_stepped, NULL), 0);
    return 0;
  }
  return CO_FELL_OFF;
}

static int token_wait_root(braid_task *self, void *arg) {
  struct token_wait_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn_stepped(g, token_stepped_child, c, NULL, NULL), 0);
  CHECK_INT(braid_group_spawn(g, token_watch, c, NULL, NULL), 0);
  braid_scope *s = NULL;
  CHECK_INT(braid_move_on_after(self, SEC, &s), 0);
  c->deadline = braid_scope_deadline(s);
  c->rc = braid_to_thread(self, flag_fn, &c->ran, 0, c->lim);
  c->t_end = braid_now(self);
  CHECK_INT(leave_scope(s, c->rc, NULL), 0);
  close_group(g);
  c->waiting_after = lim_stats(c->lim).waiting;
  return 0;
}

static void test_to_thread_waiting_for_a_token_is_cancellable_and_fn_never_runs(void **state) {
  (void)state;
  struct token_wait_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(braid_limiter_new(0, &c.lim), 0);
  assert_int_equal(run_virtual(token_wait_root, &c), 0);
  assert_int_equal(c.waiting_seen, 2);
  assert_int_equal(c.rc, BRAID_ECANCELED);
  assert_int_equal(c.rc_stepped, BRAID_ECANCELED);
  assert_int_equal(c.deadline, SEC);
  assert_int_equal(c.t_end, SEC);
  assert_int_equal(c.t_end_stepped, SEC);
  assert_int_equal(c.waiting_after, 0);
  assert_int_equal(atomic_load(&c.ran), 0);
  assert_int_equal(lim_stats(c.lim).borrowed, 0);
  assert_int_equal(braid_limiter_free(c.lim), 0);
}

/* Raising the total lets a waiting to_thread go on. */

struct raise_ctx {
  braid_limiter *lim;
  atomic_int ran;
  int rc;
  braid_time_t t_end;
};

static int raise_later(braid_task *self, void *arg) {
  struct raise_ctx *c = arg;
  CHECK_INT(braid_sleep(self, 3 * SEC), 0);
  CHECK_INT(braid_limiter_set_total(c->lim, 1), 0);
  return 0;
}

static int raise_root(braid_task *self, void *arg) {
  struct raise_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, raise_later, c, NULL, NULL), 0);
  c->rc = braid_to_thread(self, flag_fn, &c->ran, 0, c->lim);
  c->t_end = braid_now(self);
  close_group(g);
  return 0;
}

static void test_to_thread_waits_for_a_token_until_the_total_is_raised(void **state) {
  (void)state;
  struct raise_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(braid_limiter_new(0, &c.lim), 0);
  assert_int_equal(run_virtual(raise_root, &c), 0);
  assert_int_equal(c.rc, 0);
  assert_int_equal(atomic_load(&c.ran), 1);
  assert_int_equal(c.t_end, 3 * SEC);
  assert_int_equal(braid_limiter_free(c.lim), 0);
}

/* The default limiter: 40 tokens per loop, used for limiter == NULL,
 * settable, and fresh in every loop. */

struct default_ctx {
  braid_limiter *def, *def_again;
  braid_limiter_stats initial, inside_fn, with_two, after;
  gate g;
  atomic_int cur, max;
  int results[3];
  int reached;
};

static int default_stats_fn(void *arg) {
  struct default_ctx *c = arg;
  c->inside_fn = lim_stats(c->def);
  return 6;
}

static int default_gated_fn(void *arg) {
  struct default_ctx *c = arg;
  count_running_until_open(&c->cur, &c->max, &c->g);
  atomic_fetch_sub(&c->cur, 1);
  return 0;
}

static int default_child(braid_task *self, void *arg) {
  struct default_ctx *c = arg;
  return braid_to_thread(self, default_gated_fn, c, 0, NULL);
}

static int two_running_one_waiting(void *arg) {
  struct default_ctx *c = arg;
  return atomic_load(&c->cur) == 2 && lim_stats(c->def).waiting == 1;
}

static int default_root(braid_task *self, void *arg) {
  struct default_ctx *c = arg;
  braid_loop *loop = braid_task_loop(self);
  CHECK_INT(braid_loop_default_limiter(loop, &c->def), 0);
  CHECK_INT(braid_loop_default_limiter(loop, &c->def_again), 0);
  c->initial = lim_stats(c->def);
  CHECK_INT(braid_to_thread(self, default_stats_fn, c, 0, NULL), 6);
  CHECK_INT(braid_limiter_set_total(c->def, 2), 0);
  braid_group *g = open_group(self);
  for (int i = 0; i < 3; i++)
    CHECK_INT(braid_group_spawn(g, default_child, c, NULL, NULL), 0);
  c->reached = task_wait_for(self, two_running_one_waiting, c);
  c->with_two = lim_stats(c->def);
  gate_open(&c->g);
  close_group(g);
  c->after = lim_stats(c->def);
  return 0;
}

static int fresh_default_root(braid_task *self, void *arg) {
  *(braid_limiter_stats *)arg = lim_stats(default_limiter(self));
  return 0;
}

static void test_default_limiter_has_40_tokens_is_used_for_null_and_is_settable(void **state) {
  (void)state;
  struct default_ctx c;
  memset(&c, 0, sizeof c);
  gate_init(&c.g);
  assert_int_equal(run_real(default_root, &c), 0);
  gate_destroy(&c.g);
  assert_non_null(c.def);
  assert_ptr_equal(c.def, c.def_again);
  assert_int_equal(c.initial.total, 40);
  assert_int_equal(c.initial.borrowed, 0);
  assert_int_equal(c.initial.waiting, 0);
  /* limiter NULL borrowed from the default limiter */
  assert_int_equal(c.inside_fn.borrowed, 1);
  /* set to 2: two run, the third waits */
  assert_int_equal(c.reached, 1);
  assert_int_equal(c.with_two.total, 2);
  assert_int_equal(c.with_two.borrowed, 2);
  assert_int_equal(c.with_two.waiting, 1);
  assert_int_equal(atomic_load(&c.max), 2);
  assert_int_equal(c.after.borrowed, 0);
  /* a new loop has its own default limiter with 40 tokens again */
  braid_limiter_stats fresh;
  memset(&fresh, 0, sizeof fresh);
  assert_int_equal(run_virtual(fresh_default_root, &fresh), 0);
  assert_int_equal(fresh.total, 40);
  assert_int_equal(fresh.borrowed, 0);
}

/* ---- the worker pool ---------------------------------------------------- */

static braid_time_t g_default_idle_timeout;

static void test_worker_idle_timeout_defaults_to_10s_and_rejects_non_positive_values(void **state) {
  (void)state;
  /* main() replaced the default first and kept what it returned */
  assert_int_equal(g_default_idle_timeout, 10 * SEC);
  braid_time_t cur = braid_set_worker_idle_timeout(123 * MSEC);
  assert_true(cur > 0);
  assert_int_equal(braid_set_worker_idle_timeout(0), BRAID_EINVAL);
  assert_int_equal(braid_set_worker_idle_timeout(-SEC), BRAID_EINVAL);
  /* the refused calls changed nothing */
  assert_int_equal(braid_set_worker_idle_timeout(cur), 123 * MSEC);
}

struct pool_ctx {
  atomic_int slot;
  pthread_t ids[2];
  braid_worker_stats after_first, after_second;
  int idle_seen;
};

static int record_thread_fn(void *arg) {
  struct pool_ctx *c = arg;
  int i = atomic_fetch_add(&c->slot, 1);
  if (i < 2) c->ids[i] = pthread_self();
  return 0;
}

static int all_alive_idle(void *arg) {
  (void)arg;
  braid_worker_stats st = worker_stats();
  return st.busy == 0 && st.idle == st.alive && st.alive > 0;
}

static int pool_root(braid_task *self, void *arg) {
  struct pool_ctx *c = arg;
  CHECK_INT(braid_to_thread(self, record_thread_fn, c, 0, NULL), 0);
  /* the worker puts itself back on the idle list just after fn returned */
  c->idle_seen = thread_wait_for(all_alive_idle, NULL);
  c->after_first = worker_stats();
  CHECK_INT(braid_to_thread(self, record_thread_fn, c, 0, NULL), 0);
  c->after_second = worker_stats();
  return 0;
}

static void test_idle_worker_is_reused_by_the_next_to_thread(void **state) {
  (void)state;
  braid_time_t prev = braid_set_worker_idle_timeout(2 * SEC); /* nobody retires meanwhile */
  struct pool_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(pool_root, &c), 0);
  braid_set_worker_idle_timeout(prev);
  assert_int_equal(c.idle_seen, 1);
  assert_true(c.after_first.alive >= 1);
  assert_int_equal(c.after_first.idle, c.after_first.alive);
  /* no new thread: the idle one (the last to go idle) ran the second job */
  assert_true(c.after_second.alive <= c.after_first.alive);
  assert_true(pthread_equal(c.ids[0], c.ids[1]));
}

struct retire_ctx {
  braid_worker_stats during, after_return;
  int rc;
};

static int retire_fn(void *arg) {
  struct retire_ctx *c = arg;
  c->during = worker_stats();
  return 0;
}

static int retire_root(braid_task *self, void *arg) {
  struct retire_ctx *c = arg;
  c->rc = braid_to_thread(self, retire_fn, c, 0, NULL);
  c->after_return = worker_stats();
  return 0;
}

static int no_worker_left(void *arg) {
  (void)arg;
  braid_worker_stats st = worker_stats();
  return st.alive == 0 && st.idle == 0 && st.busy == 0;
}

static void test_idle_workers_retire_after_the_idle_timeout(void **state) {
  (void)state;
  braid_time_t prev = braid_set_worker_idle_timeout(50 * MSEC);
  struct retire_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(retire_root, &c), 0);
  assert_int_equal(c.rc, 0);
  /* while fn ran, its worker was alive and busy */
  assert_true(c.during.alive >= 1);
  assert_true(c.during.busy >= 1);
  assert_true(c.after_return.alive >= 1);
  /* every worker (also those idle from earlier tests, whose timeout main()
   * shortened) goes away */
  assert_int_equal(thread_wait_for(no_worker_left, NULL), 1);
  braid_set_worker_idle_timeout(prev);
}

/* ---- from_thread_run / from_thread_run_sync ----------------------------- */

/* Runs thread_fn on a plain thread while the loop serves requests. */
struct served {
  void *(*thread_fn)(void *);
  braid_loop *loop;
  pthread_t loop_thread;
  /* results */
  int rc, rc2, task_rc;
  atomic_int task_ran, task_started, on_loop_thread, same_loop, current_is_null;
  braid_scope *scope;
  tpayload payload;
  int exit_rc, caught;
};

static int serve_root(braid_task *self, void *arg) {
  struct served *s = arg;
  s->loop = braid_task_loop(self);
  s->loop_thread = pthread_self();
  pthread_t t;
  CHECK_INT(pthread_create(&t, NULL, s->thread_fn, s), 0);
  CHECK_INT(braid_to_thread(self, join_thread_fn, &t, 0, NULL), 0);
  return 0;
}

/* Run thread_fn on a plain thread while a loop serves its requests. */
static void serve(struct served *s, void *(*thread_fn)(void *)) {
  memset(s, 0, sizeof *s);
  s->thread_fn = thread_fn;
  assert_int_equal(run_real(serve_root, s), 0);
}

static int answer_task(braid_task *self, void *arg) {
  struct served *s = arg;
  atomic_store(&s->task_ran, 1);
  if (pthread_equal(pthread_self(), s->loop_thread)) atomic_store(&s->on_loop_thread, 1);
  if (braid_task_loop(self) == s->loop) atomic_store(&s->same_loop, 1);
  CHECK_INT(braid_sleep(self, MSEC), 0); /* a real task: it may block */
  return 42;
}

static int failing_task(braid_task *self, void *arg) {
  struct served *s = arg;
  return braid_task_fail(self, 1234, &s->payload, tpayload_dtor);
}

static int eperm_task(braid_task *self, void *arg) {
  (void)self;
  (void)arg;
  return BRAID_EPERM;
}

static void *call_answer_thread(void *arg) {
  struct served *s = arg;
  s->rc = braid_from_thread_run(s->loop, answer_task, s);
  s->rc2 = braid_from_thread_run(s->loop, failing_task, s);
  s->task_rc = braid_from_thread_run(s->loop, eperm_task, s);
  return NULL;
}

static void test_from_thread_run_from_a_plain_thread_returns_the_tasks_result_or_failure(void **state) {
  (void)state;
  struct served s;
  serve(&s, call_answer_thread);
  assert_int_equal(s.rc, 42);
  assert_int_equal(atomic_load(&s.task_ran), 1);
  assert_int_equal(atomic_load(&s.on_loop_thread), 1);
  assert_int_equal(atomic_load(&s.same_loop), 1);
  /* a failure's code comes back; its payload is destroyed exactly once */
  assert_int_equal(s.rc2, 1234);
  assert_int_equal(atomic_load(&s.payload.dtor_calls), 1);
  assert_int_equal(s.task_rc, BRAID_EPERM);
}

/* A stepped body run from a thread: sleeps once (a real wait), then
 * answers; a NULL step is rejected. */
static int answer_step(braid_task *self, void *ctx, int resume) {
  struct served *s = ctx;
  if (resume == 0 && !atomic_load(&s->task_ran)) {
    atomic_store(&s->task_ran, 1);
    if (pthread_equal(pthread_self(), s->loop_thread)) atomic_store(&s->on_loop_thread, 1);
    if (braid_task_is_stepped(self)) atomic_store(&s->same_loop, 1);
    return braid_sleep(self, MSEC);
  }
  return resume == 0 ? 43 : resume;
}

static void *call_stepped_thread(void *arg) {
  struct served *s = arg;
  s->rc = braid_from_thread_run_stepped(s->loop, answer_step, s);
  s->rc2 = braid_from_thread_run_stepped(s->loop, NULL, s);
  s->task_rc = braid_from_thread_run_stepped(NULL, answer_step, s);
  return NULL;
}

static void test_from_thread_run_stepped_runs_a_stepped_task_and_returns_its_result(void **state) {
  (void)state;
  struct served s;
  serve(&s, call_stepped_thread);
  assert_int_equal(s.rc, 43);
  assert_int_equal(atomic_load(&s.on_loop_thread), 1);
  assert_int_equal(atomic_load(&s.same_loop), 1); /* it was a stepped task */
  assert_int_equal(s.rc2, BRAID_EINVAL);
  assert_int_equal(s.task_rc, BRAID_EINVAL);
}

static int sync_fn(void *arg) {
  struct served *s = arg;
  atomic_store(&s->task_ran, 1);
  if (pthread_equal(pthread_self(), s->loop_thread)) atomic_store(&s->on_loop_thread, 1);
  if (braid_current_task() == NULL) atomic_store(&s->current_is_null, 1);
  return 77;
}

static void *call_sync_thread(void *arg) {
  struct served *s = arg;
  s->rc = braid_from_thread_run_sync(s->loop, sync_fn, s);
  return NULL;
}

static void test_from_thread_run_sync_runs_fn_on_the_loop_thread_and_returns_its_result(void **state) {
  (void)state;
  struct served s;
  serve(&s, call_sync_thread);
  assert_int_equal(s.rc, 77);
  assert_int_equal(atomic_load(&s.task_ran), 1);
  assert_int_equal(atomic_load(&s.on_loop_thread), 1);
  assert_int_equal(atomic_load(&s.current_is_null), 1); /* between tasks */
}

/* From a worker of the same loop: fn calls back into its own loop. */

static int call_back_fn(void *arg) {
  struct served *s = arg;
  int a = braid_from_thread_run(s->loop, answer_task, s);
  int b = braid_from_thread_run_sync(s->loop, sync_fn, s);
  return a * 1000 + b;
}

static int call_back_root(braid_task *self, void *arg) {
  struct served *s = arg;
  s->loop = braid_task_loop(self);
  s->loop_thread = pthread_self();
  s->rc = braid_to_thread(self, call_back_fn, s, 0, NULL);
  return 0;
}

static void test_from_thread_run_from_a_worker_calls_back_into_the_same_loop(void **state) {
  (void)state;
  struct served s;
  memset(&s, 0, sizeof s);
  assert_int_equal(run_real(call_back_root, &s), 0);
  assert_int_equal(s.rc, 42 * 1000 + 77);
  assert_int_equal(atomic_load(&s.on_loop_thread), 1);
  assert_int_equal(atomic_load(&s.same_loop), 1);
}

/* The task's cancellation reaches through to_thread and from_thread_run
 * back into a task on the loop. */

static int inner_sleeper(braid_task *self, void *arg) {
  struct served *s = arg;
  atomic_store(&s->task_started, 1);
  int rc = braid_sleep_forever(self);
  s->task_rc = rc;
  return rc;
}

static int call_back_sleeper_fn(void *arg) {
  struct served *s = arg;
  return braid_from_thread_run(s->loop, inner_sleeper, s);
}

static int inner_started(void *arg) { return atomic_load(&((struct served *)arg)->task_started); }

struct chain_ctx {
  struct served s;
  braid_time_t deadline, t_end;
  int exit_rc;
};

static int chain_root(braid_task *self, void *arg) {
  struct chain_ctx *c = arg;
  c->s.loop = braid_task_loop(self);
  braid_group *g = open_group(self);
  struct spin sp = {inner_started, &c->s, 0};
  CHECK_INT(braid_group_spawn(g, spin_child, &sp, NULL, NULL), 0);
  braid_scope *s = NULL;
  CHECK_INT(braid_move_on_after(self, SEC, &s), 0);
  c->deadline = braid_scope_deadline(s);
  c->s.rc = braid_to_thread(self, call_back_sleeper_fn, &c->s, 0, NULL);
  c->t_end = braid_now(self);
  c->exit_rc = leave_scope(s, c->s.rc, NULL);
  close_group(g);
  return 0;
}

static void test_cancel_reaches_through_a_worker_into_its_from_thread_run_task(void **state) {
  (void)state;
  struct chain_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(chain_root, &c), 0);
  assert_int_equal(atomic_load(&c.s.task_started), 1);
  assert_int_equal(c.s.task_rc, BRAID_ECANCELED);
  assert_int_equal(c.s.rc, BRAID_ECANCELED);
  assert_int_equal(c.t_end, c.deadline);
  assert_int_equal(c.deadline, SEC);
  assert_int_equal(c.exit_rc, 0);
}

/* The calling thread's scope: cancelled by another thread while the task
 * runs, the task is cancelled and from_thread_run returns its result. */

static int scope_started(void *arg) { return atomic_load(&((struct served *)arg)->task_started); }

static void *canceller_thread(void *arg) {
  struct served *s = arg;
  if (thread_wait_for(scope_started, s)) braid_scope_cancel(s->scope);
  return NULL;
}

static void *call_in_cancelled_scope_thread(void *arg) {
  struct served *s = arg;
  braid_scope *sc = enter_new_scope(NULL, BRAID_NEVER, 0);
  s->scope = braid_scope_ref(sc);
  pthread_t t;
  CHECK_INT(pthread_create(&t, NULL, canceller_thread, s), 0);
  s->rc = braid_from_thread_run(s->loop, inner_sleeper, s);
  pthread_join(t, NULL);
  s->exit_rc = leave_scope(sc, s->rc, &s->caught);
  CHECK_INT(braid_scope_unref(s->scope), 0);
  /* outside the scope the thread is not cancelled any more */
  s->rc2 = braid_from_thread_run(s->loop, eperm_task, s);
  return NULL;
}

static void test_from_thread_run_honours_the_calling_threads_scope_cancelled_by_another_thread(void **state) {
  (void)state;
  struct served s;
  serve(&s, call_in_cancelled_scope_thread);
  assert_int_equal(atomic_load(&s.task_started), 1);
  assert_int_equal(s.task_rc, BRAID_ECANCELED); /* the task saw it */
  assert_int_equal(s.rc, BRAID_ECANCELED);      /* and from_thread_run returned it */
  assert_int_equal(s.exit_rc, 0);
  assert_int_equal(s.caught, 1);
  assert_int_equal(s.rc2, BRAID_EPERM);
}

static void *call_with_deadline_thread(void *arg) {
  struct served *s = arg;
  braid_scope *sc = enter_new_scope(NULL, braid_now(NULL) + 20 * MSEC, 0);
  s->rc = braid_from_thread_run(s->loop, inner_sleeper, s);
  s->exit_rc = leave_scope(sc, s->rc, NULL);
  return NULL;
}

static void test_from_thread_run_honours_the_deadline_of_the_calling_threads_scope(void **state) {
  (void)state;
  struct served s;
  serve(&s, call_with_deadline_thread);
  assert_int_equal(s.task_rc, BRAID_ECANCELED);
  assert_int_equal(s.rc, BRAID_ECANCELED);
  assert_int_equal(s.exit_rc, 0);
}

static void *call_precancelled_thread(void *arg) {
  struct served *s = arg;
  braid_scope *sc = enter_cancelled_scope(NULL);
  s->rc = braid_from_thread_run(s->loop, answer_task, s);
  s->rc2 = braid_from_thread_run_sync(s->loop, sync_fn, s);
  s->exit_rc = leave_scope(sc, BRAID_ECANCELED, NULL);
  return NULL;
}

static void test_from_thread_run_and_run_sync_in_a_cancelled_thread_scope_run_nothing(void **state) {
  (void)state;
  struct served s;
  serve(&s, call_precancelled_thread);
  assert_int_equal(s.rc, BRAID_ECANCELED);
  assert_int_equal(s.rc2, BRAID_ECANCELED);
  assert_int_equal(atomic_load(&s.task_ran), 0);
  assert_int_equal(s.exit_rc, 0);
}

/* On the loop's own thread it would deadlock: BRAID_ESTATE. */

struct own_thread_ctx {
  atomic_int ran;
  int rc_run, rc_sync;
};

static int flag_task(braid_task *self, void *arg) {
  (void)self;
  atomic_store((atomic_int *)arg, 1);
  return 0;
}

static int own_thread_root(braid_task *self, void *arg) {
  struct own_thread_ctx *c = arg;
  braid_loop *loop = braid_task_loop(self);
  c->rc_run = braid_from_thread_run(loop, flag_task, &c->ran);
  c->rc_sync = braid_from_thread_run_sync(loop, flag_fn, &c->ran);
  return 0;
}

static void test_from_thread_run_on_the_loops_own_thread_is_estate(void **state) {
  (void)state;
  struct own_thread_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(own_thread_root, &c), 0);
  assert_int_equal(c.rc_run, BRAID_ESTATE);
  assert_int_equal(c.rc_sync, BRAID_ESTATE);
  assert_int_equal(atomic_load(&c.ran), 0);
}

/* After the loop ended, a kept handle answers BRAID_ECLOSED. */

static int keep_loop_root(braid_task *self, void *arg) {
  braid_loop **out = arg;
  *out = braid_loop_ref(braid_task_loop(self));
  return 0;
}

struct closed_ctx {
  braid_loop *loop;
  atomic_int ran;
  int rc_run, rc_sync;
};

static void *call_closed_thread(void *arg) {
  struct closed_ctx *c = arg;
  c->rc_run = braid_from_thread_run(c->loop, flag_task, &c->ran);
  c->rc_sync = braid_from_thread_run_sync(c->loop, flag_fn, &c->ran);
  return NULL;
}

static void test_from_thread_run_after_the_loop_ended_is_eclosed(void **state) {
  (void)state;
  struct closed_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(keep_loop_root, &c.loop), 0);
  assert_non_null(c.loop);
  /* from this thread (which runs no loop any more) and from another one */
  assert_int_equal(braid_from_thread_run(c.loop, flag_task, &c.ran), BRAID_ECLOSED);
  assert_int_equal(braid_from_thread_run_sync(c.loop, flag_fn, &c.ran), BRAID_ECLOSED);
  assert_int_equal(in_thread(call_closed_thread, &c), 0);
  assert_int_equal(c.rc_run, BRAID_ECLOSED);
  assert_int_equal(c.rc_sync, BRAID_ECLOSED);
  assert_int_equal(atomic_load(&c.ran), 0);
  assert_int_equal(braid_loop_unref(c.loop), 0);
}

/* Many threads call into one loop at once. */

#define CALLERS 4
#define CALLS 50

struct many_ctx {
  braid_loop *loop;
  pthread_t loop_thread;
  atomic_int wrong;
  atomic_int done;
};

struct many_arg {
  struct many_ctx *c;
  int id;
};

static int add_task(braid_task *self, void *arg) {
  int *v = arg;
  CHECK_INT(braid_checkpoint(self), 0);
  return *v + 1;
}

static int add_sync(void *arg) {
  int *v = arg;
  return *v + 2;
}

static void *many_caller(void *arg) {
  struct many_arg *a = arg;
  for (int i = 0; i < CALLS; i++) {
    int v = a->id * 1000 + i;
    if (braid_from_thread_run(a->c->loop, add_task, &v) != v + 1) atomic_fetch_add(&a->c->wrong, 1);
    if (braid_from_thread_run_sync(a->c->loop, add_sync, &v) != v + 2) atomic_fetch_add(&a->c->wrong, 1);
    atomic_fetch_add(&a->c->done, 1);
  }
  return NULL;
}

static int many_join_fn(void *arg) {
  pthread_t *t = arg;
  for (int i = 0; i < CALLERS; i++)
    pthread_join(t[i], NULL);
  return 0;
}

static int many_root(braid_task *self, void *arg) {
  struct many_ctx *c = arg;
  c->loop = braid_task_loop(self);
  pthread_t t[CALLERS];
  struct many_arg a[CALLERS];
  for (int i = 0; i < CALLERS; i++) {
    a[i].c = c;
    a[i].id = i + 1;
    CHECK_INT(pthread_create(&t[i], NULL, many_caller, &a[i]), 0);
  }
  CHECK_INT(braid_to_thread(self, many_join_fn, t, 0, NULL), 0);
  return 0;
}

static void test_from_thread_run_from_several_threads_at_once_returns_each_its_own_result(void **state) {
  (void)state;
  struct many_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(many_root, &c), 0);
  assert_int_equal(atomic_load(&c.wrong), 0);
  assert_int_equal(atomic_load(&c.done), CALLERS * CALLS);
}

/* ---- plain threads: braid_sleep(NULL, …), scopes, check_cancelled ------- */

struct plain_ctx {
  int rc_short, rc_deadline, exit_deadline, rc_precancelled, rc_shielded, rc_check_plain, rc_check_cancelled,
      rc_check_expired, rc_cancelled_by_other, exit_other;
  braid_scope *other;
  atomic_int sleeping;
};

static int plain_sleeping(void *arg) { return atomic_load(&((struct plain_ctx *)arg)->sleeping); }

static void *plain_canceller(void *arg) {
  struct plain_ctx *c = arg;
  if (thread_wait_for(plain_sleeping, c)) {
    os_sleep_ns(MSEC);
    braid_scope_cancel(c->other);
  }
  return NULL;
}

static void *plain_thread(void *arg) {
  struct plain_ctx *c = arg;
  c->rc_check_plain = braid_thread_check_cancelled();
  c->rc_short = braid_sleep(NULL, 200 * USEC);

  braid_scope *s = enter_new_scope(NULL, braid_now(NULL) + 5 * MSEC, 0);
  c->rc_deadline = braid_sleep(NULL, 3600 * SEC);
  c->rc_check_expired = braid_thread_check_cancelled();
  c->exit_deadline = leave_scope(s, c->rc_deadline, NULL);

  s = enter_cancelled_scope(NULL);
  c->rc_precancelled = braid_sleep_forever(NULL);
  c->rc_check_cancelled = braid_thread_check_cancelled();
  braid_scope *sh = enter_new_scope(NULL, BRAID_NEVER, BRAID_SHIELD);
  c->rc_shielded = braid_sleep(NULL, 200 * USEC);
  CHECK_INT(leave_scope(sh, c->rc_shielded, NULL), 0);
  CHECK_INT(leave_scope(s, BRAID_ECANCELED, NULL), 0);

  s = enter_new_scope(NULL, BRAID_NEVER, 0);
  c->other = braid_scope_ref(s);
  pthread_t t;
  CHECK_INT(pthread_create(&t, NULL, plain_canceller, c), 0);
  atomic_store(&c->sleeping, 1);
  c->rc_cancelled_by_other = braid_sleep(NULL, 3600 * SEC);
  pthread_join(t, NULL);
  c->exit_other = leave_scope(s, c->rc_cancelled_by_other, NULL);
  CHECK_INT(braid_scope_unref(c->other), 0);
  return NULL;
}

static void test_sleep_null_on_a_plain_thread_honours_its_scopes(void **state) {
  (void)state;
  struct plain_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(in_thread(plain_thread, &c), 0);
  assert_int_equal(c.rc_check_plain, 0);
  assert_int_equal(c.rc_short, 0);
  assert_int_equal(c.rc_deadline, BRAID_ECANCELED);
  assert_int_equal(c.rc_check_expired, BRAID_ECANCELED);
  assert_int_equal(c.exit_deadline, 0);
  assert_int_equal(c.rc_precancelled, BRAID_ECANCELED);
  assert_int_equal(c.rc_check_cancelled, BRAID_ECANCELED);
  assert_int_equal(c.rc_shielded, 0);
  assert_int_equal(c.rc_cancelled_by_other, BRAID_ECANCELED);
  assert_int_equal(c.exit_other, 0);
}

/* ---- errors -------------------------------------------------------------- */

struct errors_ctx {
  braid_task *root;
  atomic_int ran;
  int to_null_task, to_null_fn, to_bad_flags, to_all_flags, to_not_running;
  int sleep_null, sleep_until_null, sleep_forever_null, lock_null;
  int check_loop_thread, check_loop_thread_cancelled;
  int def_null_loop, def_null_out;
  int run_null_loop, run_null_fn, sync_null_loop, sync_null_fn;
  atomic_int worker_to_thread, worker_sleep_task;
};

static int foreign_task_fn(void *arg) {
  struct errors_ctx *c = arg;
  atomic_store(&c->worker_to_thread, braid_to_thread(c->root, flag_fn, &c->ran, 0, NULL));
  atomic_store(&c->worker_sleep_task, braid_sleep(c->root, MSEC));
  return 0;
}

static int errors_root(braid_task *self, void *arg) {
  struct errors_ctx *c = arg;
  c->root = self;
  braid_loop *loop = braid_task_loop(self);
  c->to_null_task = braid_to_thread(NULL, flag_fn, &c->ran, 0, NULL);
  c->to_null_fn = braid_to_thread(self, NULL, &c->ran, 0, NULL);
  c->to_bad_flags = braid_to_thread(self, flag_fn, &c->ran, 2u, NULL);
  c->to_all_flags = braid_to_thread(self, flag_fn, &c->ran, ~0u, NULL);
  braid_group *g = open_group(self);
  braid_task *child = NULL;
  CHECK_INT(braid_group_spawn(g, child_noop, NULL, NULL, &child), 0);
  c->to_not_running = braid_to_thread(child, flag_fn, &c->ran, 0, NULL);
  close_group(g);
  /* blocking as "the calling plain thread" on a loop's thread */
  c->sleep_null = braid_sleep(NULL, MSEC);
  c->sleep_until_null = braid_sleep_until(NULL, braid_now(NULL) + MSEC);
  c->sleep_forever_null = braid_sleep_forever(NULL);
  braid_lock *lock = NULL;
  CHECK_INT(braid_lock_new(&lock), 0);
  c->lock_null = braid_lock_acquire(NULL, lock);
  CHECK_INT(braid_lock_free(lock), 0);
  /* the task of another thread, from a worker */
  CHECK_INT(braid_to_thread(self, foreign_task_fn, c, 0, NULL), 0);
  /* check_cancelled on the loop thread reports the running task */
  c->check_loop_thread = braid_thread_check_cancelled();
  braid_scope *s = enter_cancelled_scope(self);
  c->check_loop_thread_cancelled = braid_thread_check_cancelled();
  CHECK_INT(leave_scope(s, BRAID_ECANCELED, NULL), 0);
  braid_limiter *def = NULL;
  c->def_null_loop = braid_loop_default_limiter(NULL, &def);
  c->def_null_out = braid_loop_default_limiter(loop, NULL);
  c->run_null_loop = braid_from_thread_run(NULL, flag_task, &c->ran);
  c->run_null_fn = braid_from_thread_run(loop, NULL, &c->ran);
  c->sync_null_loop = braid_from_thread_run_sync(NULL, flag_fn, &c->ran);
  c->sync_null_fn = braid_from_thread_run_sync(loop, NULL, &c->ran);
  return 0;
}

static void test_bridge_misuse_returns_the_documented_codes(void **state) {
  (void)state;
  struct errors_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(errors_root, &c), 0);
  assert_int_equal(c.to_null_task, BRAID_EINVAL);
  assert_int_equal(c.to_null_fn, BRAID_EINVAL);
  assert_int_equal(c.to_bad_flags, BRAID_EINVAL);
  assert_int_equal(c.to_all_flags, BRAID_EINVAL);
  assert_int_equal(c.to_not_running, BRAID_ESTATE);
  assert_int_equal(c.sleep_null, BRAID_ETHREAD);
  assert_int_equal(c.sleep_until_null, BRAID_ETHREAD);
  assert_int_equal(c.sleep_forever_null, BRAID_ETHREAD);
  assert_int_equal(c.lock_null, BRAID_ETHREAD);
  assert_int_equal(atomic_load(&c.worker_to_thread), BRAID_ETHREAD);
  assert_int_equal(atomic_load(&c.worker_sleep_task), BRAID_ETHREAD);
  assert_int_equal(c.check_loop_thread, 0);
  assert_int_equal(c.check_loop_thread_cancelled, BRAID_ECANCELED);
  assert_int_equal(c.def_null_loop, BRAID_EINVAL);
  assert_int_equal(c.def_null_out, BRAID_EINVAL);
  assert_int_equal(c.run_null_loop, BRAID_EINVAL);
  assert_int_equal(c.run_null_fn, BRAID_EINVAL);
  assert_int_equal(c.sync_null_loop, BRAID_EINVAL);
  assert_int_equal(c.sync_null_fn, BRAID_EINVAL);
  assert_int_equal(atomic_load(&c.ran), 0);

  /* outside any loop */
  assert_int_equal(braid_worker_statistics(NULL), BRAID_EINVAL);
  braid_worker_stats ws;
  memset(&ws, 0, sizeof ws);
  ws.size = sizeof ws - 1;
  assert_int_equal(braid_worker_statistics(&ws), BRAID_EINVAL);
  assert_int_equal(braid_loop_unref(NULL), BRAID_EINVAL);
  assert_null(braid_loop_ref(NULL));
  assert_int_equal(braid_from_thread_run(NULL, flag_task, NULL), BRAID_EINVAL);
  assert_int_equal(braid_from_thread_run_sync(NULL, flag_fn, NULL), BRAID_EINVAL);
}

int main(void) {
  /* Workers left idle by one test retire soon instead of after 10 s. */
  g_default_idle_timeout = braid_set_worker_idle_timeout(200 * MSEC);
  const struct CMUnitTest tests[] = {
      BT(test_worker_idle_timeout_defaults_to_10s_and_rejects_non_positive_values),
      BT(test_to_thread_returns_the_functions_result_to_a_stackful_task),
      BT(test_to_thread_returns_the_functions_result_to_a_stepped_task_as_resume),
      BT(test_to_thread_task_waits_while_other_tasks_run),
      BT(test_to_thread_stepped_task_waits_while_other_tasks_run),
      BT(test_to_thread_in_a_cancelled_scope_fails_without_running_fn),
      BT(test_to_thread_stepped_in_a_cancelled_scope_resumes_with_ecanceled_without_running_fn),
      BT(test_cancel_reaches_a_worker_blocked_on_a_lock_held_by_a_sibling),
      BT(test_cancel_reaches_a_worker_in_braid_sleep_null),
      BT(test_cancel_reaches_a_worker_blocked_on_a_channel_receive),
      BT(test_cancel_reaches_a_worker_waiting_for_an_event),
      BT(test_cancel_reaches_a_worker_waiting_on_a_semaphore),
      BT(test_thread_check_cancelled_polled_by_fn_turns_into_ecanceled),
      BT(test_cancel_of_a_stepped_task_reaches_its_worker),
      BT(test_worker_shield_scope_blocks_the_tasks_cancellation_and_next_job_starts_clean),
      BT(test_to_thread_without_abandon_waits_for_fn_then_returns_ecanceled),
      BT(test_to_thread_abandon_on_cancel_resumes_at_once_and_keeps_the_token_until_fn_returns),
      BT(test_to_thread_abandon_on_cancel_from_a_stepped_task),
      BT(test_limiter_bounds_concurrent_workers_exactly_and_shows_waiting_tasks),
      BT(test_to_thread_waiting_for_a_token_is_cancellable_and_fn_never_runs),
      BT(test_to_thread_waits_for_a_token_until_the_total_is_raised),
      BT(test_default_limiter_has_40_tokens_is_used_for_null_and_is_settable),
      BT(test_idle_worker_is_reused_by_the_next_to_thread),
      BT(test_from_thread_run_from_a_plain_thread_returns_the_tasks_result_or_failure),
      BT(test_from_thread_run_sync_runs_fn_on_the_loop_thread_and_returns_its_result),
      BT(test_from_thread_run_stepped_runs_a_stepped_task_and_returns_its_result),
      BT(test_from_thread_run_from_a_worker_calls_back_into_the_same_loop),
      BT(test_cancel_reaches_through_a_worker_into_its_from_thread_run_task),
      BT(test_from_thread_run_honours_the_calling_threads_scope_cancelled_by_another_thread),
      BT(test_from_thread_run_honours_the_deadline_of_the_calling_threads_scope),
      BT(test_from_thread_run_and_run_sync_in_a_cancelled_thread_scope_run_nothing),
      BT(test_from_thread_run_on_the_loops_own_thread_is_estate),
      BT(test_from_thread_run_after_the_loop_ended_is_eclosed),
      BT(test_from_thread_run_from_several_threads_at_once_returns_each_its_own_result),
      BT(test_sleep_null_on_a_plain_thread_honours_its_scopes),
      BT(test_bridge_misuse_returns_the_documented_codes),
      BT(test_idle_workers_retire_after_the_idle_timeout),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
