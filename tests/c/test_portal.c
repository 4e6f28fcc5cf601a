/*
 * test_portal.c — blocking portals: a loop on its own thread that plain
 * threads use through braid_portal_call (braid_from_thread_run on the
 * portal's loop) and braid_portal_start_task futures (wait with and without
 * a deadline, cancel, result, done, free); stopping with tasks still running
 * (they finish) or with cancel_remaining (they are cancelled); calls made
 * after stop began; the virtual clock; the calling thread's scopes; misuse.
 *
 * Real time is only used to let threads get somewhere; nothing asserts how
 * long anything took.
 */
#include "core_helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define SEC BRAID_SEC
#define MSEC BRAID_MSEC

static braid_portal *start_portal(int clock, size_t stack_size) {
  braid_portal_opts o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.clock = clock;
  o.stack_size = stack_size;
  braid_portal *p = NULL;
  assert_int_equal(braid_portal_start(&o, &p), 0);
  assert_non_null(p);
  return p;
}

/* ---- start, call, stop -------------------------------------------------- */

struct where {
  pthread_t caller;
  braid_loop *loop;
  atomic_int other_thread, same_loop, root_is_portal;
};

static int where_task(braid_task *self, void *arg) {
  struct where *w = arg;
  if (!pthread_equal(pthread_self(), w->caller)) atomic_store(&w->other_thread, 1);
  if (braid_task_loop(self) == w->loop) atomic_store(&w->same_loop, 1);
  CHECK_INT(braid_sleep(self, MSEC), 0); /* a real task: it may block */
  return 31;
}

static void test_portal_runs_calls_on_its_own_loop_thread_and_stops(void **state) {
  (void)state;
  braid_portal *p = NULL;
  assert_int_equal(braid_portal_start(NULL, &p), 0);
  assert_non_null(p);
  struct where w;
  memset(&w, 0, sizeof w);
  w.caller = pthread_self();
  w.loop = braid_portal_loop(p);
  assert_non_null(w.loop);
  assert_int_equal(braid_loop_is_virtual(w.loop), 0);
  assert_int_equal(braid_portal_call(p, where_task, &w), 31);
  assert_int_equal(atomic_load(&w.other_thread), 1);
  assert_int_equal(atomic_load(&w.same_loop), 1);
  assert_int_equal(braid_portal_stop(p, 0), 0);
}

static void test_portal_starts_with_options_and_stops_at_once_when_idle(void **state) {
  (void)state;
  braid_portal *p = start_portal(BRAID_CLOCK_REAL, 64 * 1024);
  assert_int_equal(braid_portal_stop(p, 1), 0);
  /* several portals side by side */
  braid_portal *a = NULL, *b = NULL;
  assert_int_equal(braid_portal_start(NULL, &a), 0);
  assert_int_equal(braid_portal_start(NULL, &b), 0);
  assert_ptr_not_equal(braid_portal_loop(a), braid_portal_loop(b));
  assert_int_equal(braid_portal_stop(b, 0), 0);
  assert_int_equal(braid_portal_stop(a, 0), 0);
}

static int failing_task(braid_task *self, void *arg) { return braid_task_fail(self, 4321, arg, tpayload_dtor); }

static int eperm_task(braid_task *self, void *arg) {
  (void)self;
  (void)arg;
  return BRAID_EPERM;
}

static void test_portal_call_returns_a_failure_code_and_destroys_its_payload(void **state) {
  (void)state;
  braid_portal *p = start_portal(BRAID_CLOCK_REAL, 0);
  tpayload pl;
  memset(&pl, 0, sizeof pl);
  assert_int_equal(braid_portal_call(p, failing_task, &pl), 4321);
  assert_int_equal(atomic_load(&pl.dtor_calls), 1);
  assert_int_equal(braid_portal_call(p, eperm_task, NULL), BRAID_EPERM);
  assert_int_equal(braid_portal_stop(p, 0), 0);
}

/* ---- many threads at once ------------------------------------------------ */

#define CALL_THREADS 8
#define CALLS_EACH 200

struct many {
  braid_portal *p;
  pthread_barrier_t start;
  atomic_int wrong, calls;
};

struct many_arg {
  struct many *m;
  int id;
};

static int echo_task(braid_task *self, void *arg) {
  int *v = arg;
  if ((*v & 7) == 0) CHECK_INT(braid_checkpoint(self), 0);
  return *v * 2 + 1;
}

static void *many_thread(void *arg) {
  struct many_arg *a = arg;
  pthread_barrier_wait(&a->m->start);
  for (int i = 0; i < CALLS_EACH; i++) {
    int v = a->id * 10000 + i;
    if (braid_portal_call(a->m->p, echo_task, &v) != v * 2 + 1) atomic_fetch_add(&a->m->wrong, 1);
    atomic_fetch_add(&a->m->calls, 1);
  }
  return NULL;
}

static void test_portal_call_from_8_threads_at_once_returns_each_call_its_own_result(void **state) {
  (void)state;
  struct many m;
  memset(&m, 0, sizeof m);
  m.p = start_portal(BRAID_CLOCK_REAL, 0);
  assert_int_equal(pthread_barrier_init(&m.start, NULL, CALL_THREADS), 0);
  pthread_t t[CALL_THREADS];
  struct many_arg a[CALL_THREADS];
  for (int i = 0; i < CALL_THREADS; i++) {
    a[i].m = &m;
    a[i].id = i + 1;
    assert_int_equal(pthread_create(&t[i], NULL, many_thread, &a[i]), 0);
  }
  for (int i = 0; i < CALL_THREADS; i++)
    pthread_join(t[i], NULL);
  pthread_barrier_destroy(&m.start);
  assert_int_equal(atomic_load(&m.wrong), 0);
  assert_int_equal(atomic_load(&m.calls), CALL_THREADS * CALLS_EACH);
  assert_int_equal(braid_portal_stop(m.p, 0), 0);
}

/* ---- futures ------------------------------------------------------------- */

struct gated {
  braid_event *go;
  atomic_int started, finished, cleanup;
  int value;
};

/* value: what a task returns on success; with_event: make the go event. */
static void gated_init(struct gated *g, int value, int with_event) {
  memset(g, 0, sizeof *g);
  g->value = value;
  if (with_event) assert_int_equal(braid_event_new(&g->go), 0);
}

/* n tasks fn(g) started on the portal, their futures in f. */
static void start_tasks(braid_portal *p, braid_fn fn, struct gated *g, braid_future **f, int n) {
  for (int i = 0; i < n; i++)
    assert_int_equal(braid_portal_start_task(p, fn, g, &f[i]), 0);
}

/* Each of the n tasks ended with `result`; the futures are freed. */
static void assert_futures_ended(braid_future **f, int n, int result) {
  for (int i = 0; i < n; i++) {
    assert_int_equal(braid_future_done(f[i]), 1);
    assert_int_equal(braid_future_wait(f[i], BRAID_NEVER), 0);
    assert_int_equal(braid_future_result(f[i]), result);
    assert_int_equal(braid_future_free(f[i]), 0);
  }
}

static int gated_task(braid_task *self, void *arg) {
  struct gated *g = arg;
  atomic_fetch_add(&g->started, 1);
  int rc = braid_event_wait(self, g->go);
  if (rc == 0) {
    atomic_fetch_add(&g->finished, 1);
    return g->value;
  }
  atomic_fetch_add(&g->cleanup, 1);
  return rc;
}

static int started_once(void *arg) { return atomic_load(&((struct gated *)arg)->started) >= 1; }

static void test_future_wait_with_a_deadline_times_out_and_then_returns_the_result(void **state) {
  (void)state;
  braid_portal *p = start_portal(BRAID_CLOCK_REAL, 0);
  struct gated g;
  gated_init(&g, 21, 1);
  braid_future *f = NULL;
  assert_int_equal(braid_portal_start_task(p, gated_task, &g, &f), 0);
  assert_non_null(f);
  assert_int_equal(thread_wait_for(started_once, &g), 1);
  assert_int_equal(braid_future_done(f), 0);
  assert_int_equal(braid_future_result(f), BRAID_ESTATE);
  assert_int_equal(braid_future_wait(f, braid_now(NULL) + 5 * MSEC), BRAID_ETIMEDOUT);
  assert_int_equal(braid_future_wait(f, braid_now(NULL) - SEC), BRAID_ETIMEDOUT); /* past: no wait */
  assert_int_equal(braid_future_done(f), 0);
  assert_int_equal(braid_event_set(g.go), 0);
  assert_int_equal(braid_future_wait(f, BRAID_NEVER), 0);
  assert_int_equal(braid_future_done(f), 1);
  assert_int_equal(braid_future_result(f), 21);
  /* waiting again, or with a past deadline, on an ended task is 0 */
  assert_int_equal(braid_future_wait(f, BRAID_NEVER), 0);
  assert_int_equal(braid_future_wait(f, braid_now(NULL) - SEC), 0);
  assert_int_equal(braid_future_free(f), 0);
  assert_int_equal(braid_portal_stop(p, 0), 0);
  assert_int_equal(atomic_load(&g.finished), 1);
  assert_int_equal(braid_event_free(g.go), 0);
}

static int forever_task(braid_task *self, void *arg) {
  struct gated *g = arg;
  atomic_fetch_add(&g->started, 1);
  int rc = braid_sleep_forever(self);
  atomic_fetch_add(&g->cleanup, 1);
  return rc;
}

static int catching_task(braid_task *self, void *arg) {
  int rc = forever_task(self, arg);
  /* cleanup still runs, and may checkpoint only to fail again */
  return rc == BRAID_ECANCELED && braid_checkpoint(self) == BRAID_ECANCELED ? 55 : -1;
}

static int started_twice(void *arg) { return atomic_load(&((struct gated *)arg)->started) >= 2; }

static void test_future_cancel_cancels_the_task_which_runs_its_cleanup(void **state) {
  (void)state;
  braid_portal *p = start_portal(BRAID_CLOCK_REAL, 0);
  struct gated g;
  gated_init(&g, 0, 1);
  braid_future *plain = NULL, *catching = NULL;
  assert_int_equal(braid_portal_start_task(p, gated_task, &g, &plain), 0);
  assert_int_equal(braid_portal_start_task(p, catching_task, &g, &catching), 0);
  assert_int_equal(thread_wait_for(started_twice, &g), 1);
  assert_int_equal(braid_future_cancel(plain), 0);
  assert_int_equal(braid_future_cancel(catching), 0);
  assert_int_equal(braid_future_cancel(catching), 0); /* idempotent */
  assert_int_equal(braid_future_wait(plain, BRAID_NEVER), 0);
  assert_int_equal(braid_future_wait(catching, BRAID_NEVER), 0);
  assert_int_equal(braid_future_result(plain), BRAID_ECANCELED);
  assert_int_equal(braid_future_result(catching), 55);
  assert_int_equal(atomic_load(&g.cleanup), 2);
  assert_int_equal(atomic_load(&g.finished), 0);
  /* cancelling an ended task changes nothing */
  assert_int_equal(braid_future_cancel(plain), 0);
  assert_int_equal(braid_future_result(plain), BRAID_ECANCELED);
  assert_int_equal(braid_future_free(plain), 0);
  assert_int_equal(braid_future_free(catching), 0);
  assert_int_equal(braid_portal_stop(p, 0), 0);
  assert_int_equal(braid_event_free(g.go), 0);
}

/* A future may be freed while its task still runs; the task goes on. */
static void test_future_freed_early_leaves_its_task_running(void **state) {
  (void)state;
  braid_portal *p = start_portal(BRAID_CLOCK_REAL, 0);
  struct gated g;
  gated_init(&g, 8, 1);
  braid_future *f = NULL;
  assert_int_equal(braid_portal_start_task(p, gated_task, &g, &f), 0);
  assert_int_equal(thread_wait_for(started_once, &g), 1);
  assert_int_equal(braid_future_free(f), 0);
  assert_int_equal(braid_event_set(g.go), 0);
  assert_int_equal(braid_portal_stop(p, 0), 0); /* waits for the task */
  assert_int_equal(atomic_load(&g.finished), 1);
  assert_int_equal(braid_event_free(g.go), 0);
}

/* Several threads wait for the same future. */

struct multi_wait {
  braid_future *f;
  atomic_int waiting, ok;
};

static void *future_waiter(void *arg) {
  struct multi_wait *m = arg;
  atomic_fetch_add(&m->waiting, 1);
  if (braid_future_wait(m->f, BRAID_NEVER) == 0 && braid_future_result(m->f) == 13) atomic_fetch_add(&m->ok, 1);
  return NULL;
}

static int three_waiting(void *arg) { return atomic_load(&((struct multi_wait *)arg)->waiting) == 3; }

static void test_future_wait_from_several_threads_wakes_them_all(void **state) {
  (void)state;
  braid_portal *p = start_portal(BRAID_CLOCK_REAL, 0);
  struct gated g;
  gated_init(&g, 13, 1);
  struct multi_wait m;
  memset(&m, 0, sizeof m);
  assert_int_equal(braid_portal_start_task(p, gated_task, &g, &m.f), 0);
  pthread_t t[3];
  for (int i = 0; i < 3; i++)
    assert_int_equal(pthread_create(&t[i], NULL, future_waiter, &m), 0);
  assert_int_equal(thread_wait_for(three_waiting, &m), 1);
  os_sleep_ns(MSEC); /* let them get into the wait */
  assert_int_equal(braid_event_set(g.go), 0);
  for (int i = 0; i < 3; i++)
    pthread_join(t[i], NULL);
  assert_int_equal(atomic_load(&m.ok), 3);
  assert_int_equal(braid_future_free(m.f), 0);
  assert_int_equal(braid_portal_stop(p, 0), 0);
  assert_int_equal(braid_event_free(g.go), 0);
}

/* ---- stopping ------------------------------------------------------------ */

#define PENDING 4

struct stopper {
  braid_portal *p;
  int cancel_remaining;
  int rc;
  atomic_int returned;
};

static void *stop_thread(void *arg) {
  struct stopper *s = arg;
  s->rc = braid_portal_stop(s->p, s->cancel_remaining);
  atomic_store(&s->returned, 1);
  return NULL;
}

static int quick_task(braid_task *self, void *arg) {
  (void)self;
  (void)arg;
  return 1;
}

struct closed_probe {
  braid_portal *p;
  int rc;
};

static int call_refused(void *arg) {
  struct closed_probe *c = arg;
  c->rc = braid_portal_call(c->p, quick_task, NULL);
  return c->rc == BRAID_ECLOSED;
}

static int all_started(void *arg) { return atomic_load(&((struct gated *)arg)->started) == PENDING; }

static void test_portal_stop_waits_for_running_tasks_and_refuses_calls_meanwhile(void **state) {
  (void)state;
  braid_portal *p = start_portal(BRAID_CLOCK_REAL, 0);
  struct gated g;
  gated_init(&g, 64, 1);
  braid_future *f[PENDING];
  start_tasks(p, gated_task, &g, f, PENDING);
  assert_int_equal(thread_wait_for(all_started, &g), 1);
  /* before stop, calls work */
  assert_int_equal(braid_portal_call(p, quick_task, NULL), 1);

  struct stopper s = {p, 0, -999, 0};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, stop_thread, &s), 0);
  /* once stop began, calls and new tasks are refused... */
  struct closed_probe probe = {p, 0};
  assert_int_equal(thread_wait_for(call_refused, &probe), 1);
  assert_int_equal(probe.rc, BRAID_ECLOSED);
  braid_future *late = NULL;
  assert_int_equal(braid_portal_start_task(p, quick_task, NULL, &late), BRAID_ECLOSED);
  assert_null(late);
  /* ...while the tasks still run and stop waits for them */
  os_sleep_ns(2 * MSEC);
  assert_int_equal(atomic_load(&s.returned), 0);
  for (int i = 0; i < PENDING; i++)
    assert_int_equal(braid_future_done(f[i]), 0);
  assert_int_equal(braid_future_wait(f[0], braid_now(NULL) + MSEC), BRAID_ETIMEDOUT);

  assert_int_equal(braid_event_set(g.go), 0);
  pthread_join(t, NULL);
  assert_int_equal(s.rc, 0);
  /* the tasks finished normally: their futures (which outlive the portal)
   * have their results */
  assert_futures_ended(f, PENDING, 64);
  assert_int_equal(atomic_load(&g.finished), PENDING);
  assert_int_equal(atomic_load(&g.cleanup), 0);
  assert_int_equal(braid_event_free(g.go), 0);
}

static int sleeping_task(braid_task *self, void *arg) {
  struct gated *g = arg;
  atomic_fetch_add(&g->started, 1);
  CHECK_INT(braid_sleep(self, 5 * MSEC), 0);
  atomic_fetch_add(&g->finished, 1);
  return g->value;
}

static void test_portal_stop_without_cancel_lets_just_started_tasks_finish(void **state) {
  (void)state;
  braid_portal *p = start_portal(BRAID_CLOCK_REAL, 0);
  struct gated g;
  gated_init(&g, 9, 0);
  braid_future *f[PENDING];
  start_tasks(p, sleeping_task, &g, f, PENDING);
  /* no waiting: some may not even have started */
  assert_int_equal(braid_portal_stop(p, 0), 0);
  assert_futures_ended(f, PENDING, 9);
  assert_int_equal(atomic_load(&g.finished), PENDING);
}

static void test_portal_stop_with_cancel_remaining_cancels_the_running_tasks(void **state) {
  (void)state;
  braid_portal *p = start_portal(BRAID_CLOCK_REAL, 0);
  struct gated g;
  gated_init(&g, 0, 1);
  braid_future *f[PENDING];
  start_tasks(p, gated_task, &g, f, PENDING);
  assert_int_equal(thread_wait_for(all_started, &g), 1);
  assert_int_equal(braid_portal_stop(p, 1), 0);
  assert_futures_ended(f, PENDING, BRAID_ECANCELED);
  assert_int_equal(atomic_load(&g.cleanup), PENDING);
  assert_int_equal(atomic_load(&g.finished), 0);
  assert_int_equal(braid_event_free(g.go), 0);
}

/* Tasks submitted just before the stop, perhaps not started yet, are
 * cancelled too (requests are served in order). */
static void test_portal_stop_with_cancel_remaining_also_cancels_tasks_not_started_yet(void **state) {
  (void)state;
  braid_portal *p = start_portal(BRAID_CLOCK_REAL, 0);
  struct gated g;
  gated_init(&g, 0, 0);
  braid_future *f[PENDING];
  start_tasks(p, forever_task, &g, f, PENDING);
  assert_int_equal(braid_portal_stop(p, 1), 0);
  assert_futures_ended(f, PENDING, BRAID_ECANCELED);
  /* each task ran and was cancelled at its first wait */
  assert_int_equal(atomic_load(&g.started), PENDING);
  assert_int_equal(atomic_load(&g.cleanup), PENDING);
}

/* Calls racing with braid_portal_stop(p, 1): each is refused (ECLOSED) or
 * its task is cancelled by the stop — none may start after the stop
 * cancelled the remaining tasks and escape it. The tasks would wait
 * forever; a deadline of their own (caught: they then return 1) bounds the
 * test if one escapes. A shielded keeper task holds the stop until the
 * racing threads are done with the portal, which stop frees. */

#define RACE_ROUNDS 20
#define RACE_FUTURES 1000
#define RACE_BUDGET (1 * SEC) /* real time for all rounds, when nothing escapes */
#define ESCAPE_DEADLINE (300 * MSEC)

struct race {
  braid_portal *p;
  braid_future *futs[RACE_FUTURES];
  atomic_int nf, refused_rc, call_rc, going;
};

static int bounded_forever_task(braid_task *self, void *arg) {
  (void)arg;
  braid_scope *s = NULL;
  if (braid_move_on_after(self, ESCAPE_DEADLINE, &s) != 0) return -999;
  int rc = braid_sleep_forever(self);
  rc = braid_scope_exit(s, rc); /* 0 if our own deadline fired */
  braid_scope_unref(s);
  return rc == 0 ? 1 : rc;
}

static int shielded_keeper_task(braid_task *self, void *arg) {
  braid_scope *sh = NULL;
  if (braid_scope_new(BRAID_NEVER, BRAID_SHIELD, &sh) != 0) return -999;
  CHECK_INT(braid_scope_enter(self, sh), 0);
  int rc = braid_event_wait(self, arg);
  rc = braid_scope_exit(sh, rc);
  braid_scope_unref(sh);
  return rc;
}

static void *race_starter(void *arg) {
  struct race *r = arg;
  for (;;) {
    braid_future *f = NULL;
    int rc = braid_portal_start_task(r->p, bounded_forever_task, NULL, &f);
    if (rc != 0) {
      atomic_store(&r->refused_rc, rc);
      return NULL;
    }
    int i = atomic_fetch_add(&r->nf, 1);
    r->futs[i] = f;
    atomic_store(&r->going, 1);
    if (i + 1 == RACE_FUTURES) return NULL;
  }
}

static void *race_caller(void *arg) {
  struct race *r = arg;
  int rc;
  while ((rc = braid_portal_call(r->p, bounded_forever_task, NULL)) == BRAID_ECANCELED) {
  }
  atomic_store(&r->call_rc, rc);
  return NULL;
}

static int race_going(void *arg) { return atomic_load(&((struct race *)arg)->going); }

static void test_portal_stop_with_cancel_remaining_leaves_no_racing_call_running(void **state) {
  (void)state;
  static struct race r;
  int escaped = 0, refused_rc = BRAID_ECLOSED, call_rc = BRAID_ECLOSED;
  int64_t budget_end = real_ns() + RACE_BUDGET;
  for (int round = 0; round < RACE_ROUNDS && !escaped && refused_rc == BRAID_ECLOSED && call_rc == BRAID_ECLOSED &&
                      (round == 0 || real_ns() < budget_end);
       round++) {
    memset(&r, 0, sizeof r);
    r.p = start_portal(BRAID_CLOCK_REAL, 16 * 1024);
    braid_event *release = NULL;
    assert_int_equal(braid_event_new(&release), 0);
    braid_future *keeper = NULL;
    assert_int_equal(braid_portal_start_task(r.p, shielded_keeper_task, release, &keeper), 0);
    pthread_t a, b, t;
    assert_int_equal(pthread_create(&a, NULL, race_starter, &r), 0);
    assert_int_equal(pthread_create(&b, NULL, race_caller, &r), 0);
    assert_int_equal(thread_wait_for(race_going, &r), 1);
    struct stopper s = {r.p, 1, -999, 0};
    assert_int_equal(pthread_create(&t, NULL, stop_thread, &s), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    assert_int_equal(braid_event_set(release), 0);
    pthread_join(t, NULL);
    assert_int_equal(s.rc, 0);
    assert_int_equal(braid_future_result(keeper), 0);
    assert_int_equal(braid_future_free(keeper), 0);
    assert_int_equal(braid_event_free(release), 0);
    int n = atomic_load(&r.nf);
    if (n < RACE_FUTURES) refused_rc = atomic_load(&r.refused_rc);
    call_rc = atomic_load(&r.call_rc);
    for (int i = 0; i < n; i++) {
      if (braid_future_result(r.futs[i]) != BRAID_ECANCELED) escaped++;
      braid_future_free(r.futs[i]);
    }
  }
  assert_int_equal(refused_rc, BRAID_ECLOSED);
  assert_int_equal(call_rc, BRAID_ECLOSED); /* never 1: that call's task escaped the stop */
  assert_int_equal(escaped, 0);
}

/* ---- the virtual clock ---------------------------------------------------- */

struct vclock {
  braid_time_t slept, cancelled_after;
  int rc_forever, exit_rc, is_virtual;
};

static int vclock_task(braid_task *self, void *arg) {
  struct vclock *v = arg;
  v->is_virtual = braid_loop_is_virtual(braid_task_loop(self));
  braid_time_t t0 = braid_now(self);
  CHECK_INT(braid_sleep(self, 3600 * SEC), 0);
  v->slept = braid_now(self) - t0;
  braid_scope *s = NULL;
  t0 = braid_now(self);
  CHECK_INT(braid_move_on_after(self, 10 * SEC, &s), 0);
  v->rc_forever = braid_sleep_forever(self);
  v->cancelled_after = braid_now(self) - t0;
  v->exit_rc = braid_scope_exit(s, v->rc_forever);
  CHECK_INT(braid_scope_unref(s), 0);
  return 0;
}

static void test_portal_on_the_virtual_clock_jumps_to_deadlines(void **state) {
  (void)state;
  braid_portal *p = start_portal(BRAID_CLOCK_VIRTUAL, 0);
  assert_int_equal(braid_loop_is_virtual(braid_portal_loop(p)), 1);
  struct vclock v;
  memset(&v, 0, sizeof v);
  assert_int_equal(braid_portal_call(p, vclock_task, &v), 0);
  assert_int_equal(v.is_virtual, 1);
  assert_int_equal(v.slept, 3600 * SEC);
  assert_int_equal(v.rc_forever, BRAID_ECANCELED);
  assert_int_equal(v.cancelled_after, 10 * SEC);
  assert_int_equal(v.exit_rc, 0);
  /* and again, through a future */
  memset(&v, 0, sizeof v);
  braid_future *f = NULL;
  assert_int_equal(braid_portal_start_task(p, vclock_task, &v, &f), 0);
  assert_int_equal(braid_future_wait(f, BRAID_NEVER), 0);
  assert_int_equal(braid_future_result(f), 0);
  assert_int_equal(v.slept, 3600 * SEC);
  assert_int_equal(v.cancelled_after, 10 * SEC);
  assert_int_equal(braid_future_free(f), 0);
  assert_int_equal(braid_portal_stop(p, 0), 0);
}

/* ---- the calling thread's scopes ----------------------------------------- */

static void test_portal_call_and_future_wait_honour_the_calling_threads_scope(void **state) {
  (void)state;
  braid_portal *p = start_portal(BRAID_CLOCK_REAL, 0);
  struct gated g;
  gated_init(&g, 0, 0);

  /* a deadline of this thread's scope cancels the task of a call */
  braid_scope *s = NULL;
  assert_int_equal(braid_scope_new(braid_now(NULL) + 10 * MSEC, 0, &s), 0);
  assert_int_equal(braid_scope_enter(NULL, s), 0);
  int rc = braid_portal_call(p, forever_task, &g);
  assert_int_equal(rc, BRAID_ECANCELED);
  assert_int_equal(braid_scope_exit(s, rc), 0);
  assert_int_equal(braid_scope_cancelled_caught(s), 1);
  assert_int_equal(braid_scope_unref(s), 0);
  assert_int_equal(atomic_load(&g.cleanup), 1); /* the task saw the cancellation */

  /* a cancelled scope ends a future wait, not the task */
  braid_future *f = NULL;
  assert_int_equal(braid_portal_start_task(p, forever_task, &g, &f), 0);
  assert_int_equal(braid_scope_new(BRAID_NEVER, 0, &s), 0);
  assert_int_equal(braid_scope_enter(NULL, s), 0);
  assert_int_equal(braid_scope_cancel(s), 0);
  rc = braid_future_wait(f, BRAID_NEVER);
  assert_int_equal(rc, BRAID_ECANCELED);
  assert_int_equal(braid_scope_exit(s, rc), 0);
  assert_int_equal(braid_scope_unref(s), 0);
  assert_int_equal(braid_future_done(f), 0);
  assert_int_equal(braid_future_cancel(f), 0);
  assert_int_equal(braid_future_wait(f, BRAID_NEVER), 0);
  assert_int_equal(braid_future_result(f), BRAID_ECANCELED);
  assert_int_equal(braid_future_free(f), 0);
  assert_int_equal(braid_portal_stop(p, 0), 0);
}

/* ---- the thread bridge inside a portal ------------------------------------ */

struct inside {
  braid_portal *p;
  braid_loop *loop;
  int rc;
};

static int plus_one_task(braid_task *self, void *arg) {
  (void)self;
  return *(int *)arg + 1;
}

static int worker_calls_back(void *arg) {
  struct inside *in = arg;
  int v = 40;
  return braid_from_thread_run(in->loop, plus_one_task, &v) + 1;
}

static int to_thread_task(braid_task *self, void *arg) {
  struct inside *in = arg;
  in->loop = braid_task_loop(self);
  return braid_to_thread(self, worker_calls_back, in, 0, NULL);
}

static void test_portal_task_can_use_to_thread_whose_worker_calls_back_into_the_portal(void **state) {
  (void)state;
  struct inside in;
  memset(&in, 0, sizeof in);
  in.p = start_portal(BRAID_CLOCK_REAL, 0);
  assert_int_equal(braid_portal_call(in.p, to_thread_task, &in), 42);
  assert_int_equal(braid_portal_stop(in.p, 0), 0);
}

/* ---- misuse --------------------------------------------------------------- */

struct own_thread {
  braid_portal *p;
  braid_future *f;
  int rc_call, rc_wait, rc_stop, rc_start, rc_start_result;
  braid_future *started_here;
};

static int own_thread_task(braid_task *self, void *arg) {
  (void)self;
  struct own_thread *o = arg;
  o->rc_call = braid_portal_call(o->p, quick_task, NULL);
  o->rc_wait = braid_future_wait(o->f, BRAID_NEVER);
  o->rc_stop = braid_portal_stop(o->p, 0);
  /* starting a task does not wait, so it is fine here */
  o->rc_start = braid_portal_start_task(o->p, quick_task, NULL, &o->started_here);
  return 0;
}

static void test_portal_calls_that_would_block_its_own_thread_are_estate(void **state) {
  (void)state;
  struct own_thread o;
  memset(&o, 0, sizeof o);
  o.p = start_portal(BRAID_CLOCK_REAL, 0);
  struct gated g;
  gated_init(&g, 0, 0);
  assert_int_equal(braid_portal_start_task(o.p, forever_task, &g, &o.f), 0);
  braid_future *f2 = NULL;
  assert_int_equal(braid_portal_start_task(o.p, own_thread_task, &o, &f2), 0);
  assert_int_equal(braid_future_wait(f2, BRAID_NEVER), 0);
  assert_int_equal(braid_future_result(f2), 0);
  assert_int_equal(o.rc_call, BRAID_ESTATE);
  assert_int_equal(o.rc_wait, BRAID_ESTATE);
  assert_int_equal(o.rc_stop, BRAID_ESTATE);
  assert_int_equal(o.rc_start, 0);
  assert_non_null(o.started_here);
  assert_int_equal(braid_future_wait(o.started_here, BRAID_NEVER), 0);
  assert_int_equal(braid_future_result(o.started_here), 1);
  assert_int_equal(braid_future_free(o.started_here), 0);
  assert_int_equal(braid_future_free(f2), 0);
  assert_int_equal(braid_portal_stop(o.p, 1), 0);
  assert_int_equal(braid_future_result(o.f), BRAID_ECANCELED);
  assert_int_equal(braid_future_free(o.f), 0);
}

static void test_portal_misuse_returns_the_documented_codes(void **state) {
  (void)state;
  braid_portal *p = NULL;
  assert_int_equal(braid_portal_start(NULL, NULL), BRAID_EINVAL);
  braid_portal_opts small;
  memset(&small, 0, sizeof small);
  small.size = sizeof small - 1;
  assert_int_equal(braid_portal_start(&small, &p), BRAID_EINVAL);
  assert_null(p);
  braid_portal_opts bad_clock;
  memset(&bad_clock, 0, sizeof bad_clock);
  bad_clock.size = sizeof bad_clock;
  bad_clock.clock = 7;
  assert_int_equal(braid_portal_start(&bad_clock, &p), BRAID_EINVAL);
  assert_null(p);

  assert_null(braid_portal_loop(NULL));
  assert_int_equal(braid_portal_call(NULL, quick_task, NULL), BRAID_EINVAL);
  braid_future *f = NULL;
  assert_int_equal(braid_portal_start_task(NULL, quick_task, NULL, &f), BRAID_EINVAL);
  assert_int_equal(braid_future_wait(NULL, BRAID_NEVER), BRAID_EINVAL);
  assert_int_equal(braid_future_cancel(NULL), BRAID_EINVAL);
  assert_int_equal(braid_future_done(NULL), 0);
  assert_int_equal(braid_future_result(NULL), BRAID_EINVAL);
  assert_int_equal(braid_future_free(NULL), BRAID_EINVAL);
  assert_int_equal(braid_portal_stop(NULL, 0), BRAID_EINVAL);

  p = start_portal(BRAID_CLOCK_REAL, 0);
  assert_int_equal(braid_portal_call(p, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_portal_start_task(p, NULL, NULL, &f), BRAID_EINVAL);
  assert_int_equal(braid_portal_start_task(p, quick_task, NULL, NULL), BRAID_EINVAL);
  assert_null(f);
  assert_int_equal(braid_portal_stop(p, 0), 0);
}

int main(void) {
  braid_set_worker_idle_timeout(200 * MSEC);
  const struct CMUnitTest tests[] = {
      BT(test_portal_runs_calls_on_its_own_loop_thread_and_stops),
      BT(test_portal_starts_with_options_and_stops_at_once_when_idle),
      BT(test_portal_call_returns_a_failure_code_and_destroys_its_payload),
      BT(test_portal_call_from_8_threads_at_once_returns_each_call_its_own_result),
      BT(test_future_wait_with_a_deadline_times_out_and_then_returns_the_result),
      BT(test_future_cancel_cancels_the_task_which_runs_its_cleanup),
      BT(test_future_freed_early_leaves_its_task_running),
      BT(test_future_wait_from_several_threads_wakes_them_all),
      BT(test_portal_stop_waits_for_running_tasks_and_refuses_calls_meanwhile),
      BT(test_portal_stop_without_cancel_lets_just_started_tasks_finish),
      BT(test_portal_stop_with_cancel_remaining_cancels_the_running_tasks),
      BT(test_portal_stop_with_cancel_remaining_also_cancels_tasks_not_started_yet),
      BT(test_portal_stop_with_cancel_remaining_leaves_no_racing_call_running),
      BT(test_portal_on_the_virtual_clock_jumps_to_deadlines),
      BT(test_portal_call_and_future_wait_honour_the_calling_threads_scope),
      BT(test_portal_task_can_use_to_thread_whose_worker_calls_back_into_the_portal),
      BT(test_portal_calls_that_would_block_its_own_thread_are_estate),
      BT(test_portal_misuse_returns_the_documented_codes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
