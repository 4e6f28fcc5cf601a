/*
 * test_alloc.c — allocation failure injection through braid_set_allocator.
 *
 * For each scenario: run it once with a counting allocator to learn the
 * number N of allocations it makes (and check it succeeds and frees all of
 * them); then for k = 0..N-1 run it again with exactly the k-th allocation
 * failing, and assert that
 *   - the failure surfaced as BRAID_ENOMEM: an API call of the scenario
 *     returned it (the T() wrapper notes that), or braid_run returned it;
 *   - every allocation was freed once the scenario ended (live == 0);
 *   - every payload handed to braid had its destructor run exactly once.
 * Scenarios run on the virtual clock and without threads, so the sequence
 * of allocations is the same on every run.
 */
#include "helpers.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEC BRAID_SEC

/* ---- the counting allocator ------------------------------------------- */

struct counting {
  atomic_long attempts; /* realloc calls so far */
  atomic_long live;     /* blocks allocated and not yet freed */
  atomic_long injected; /* failures injected */
  long fail_at;         /* 0-based attempt to fail; -1 = none */
};

static struct counting counter;

static void *counting_realloc(void *ud, void *p, size_t n) {
  struct counting *c = ud;
  long k = atomic_fetch_add(&c->attempts, 1);
  if (k == c->fail_at) {
    atomic_fetch_add(&c->injected, 1);
    return NULL;
  }
  void *q = realloc(p, n);
  if (q != NULL && p == NULL) atomic_fetch_add(&c->live, 1);
  return q;
}

static void counting_free(void *ud, void *p) {
  struct counting *c = ud;
  if (p == NULL) return;
  atomic_fetch_sub(&c->live, 1);
  free(p);
}

static void install(long fail_at) {
  atomic_store(&counter.attempts, 0);
  atomic_store(&counter.live, 0);
  atomic_store(&counter.injected, 0);
  counter.fail_at = fail_at;
  braid_allocator a = {sizeof a, counting_realloc, counting_free, &counter};
  assert_int_equal(braid_set_allocator(&a), 0);
}

static void uninstall(void) { assert_int_equal(braid_set_allocator(NULL), 0); }

/* ---- what a scenario records ------------------------------------------ */

#define MAX_PAYLOADS 32

struct sc {
  int enomem_seen;
  tpayload payloads[MAX_PAYLOADS];
  int handed[MAX_PAYLOADS];       /* 1 once given to braid (who must destroy it) */
  int caller_owned[MAX_PAYLOADS]; /* 1 when braid gave it back to us */
};

static struct sc sc;

/* Evaluate a braid call and note an ENOMEM. */
static int T(int rc) {
  if (rc == BRAID_ENOMEM) sc.enomem_seen = 1;
  return rc;
}

/* A group result: EFAILED caused by an ENOMEM counts as the ENOMEM. */
static int surfaced(int rc) { return rc == BRAID_EFAILED && sc.enomem_seen ? BRAID_ENOMEM : rc; }

/* ---- scenarios --------------------------------------------------------- */

static int trivial_root(braid_task *self, void *arg) {
  (void)self;
  (void)arg;
  return 0;
}

static int s_run(void) {
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  return T(braid_run(trivial_root, NULL, &o));
}

static int trivial_step(braid_task *self, void *ctx, int resume) {
  (void)self;
  (void)ctx;
  (void)resume;
  return 0;
}

static int s_run_stepped(void) { return T(run_stepped_virtual(trivial_step, NULL)); }

static int s_scope_outside_loop(void) {
  braid_scope *s = NULL;
  int rc = T(braid_scope_new(5 * SEC, BRAID_SHIELD, &s));
  if (rc != 0) return rc;
  braid_scope_ref(s);
  braid_scope_cancel(s);
  braid_scope_unref(s);
  return braid_scope_unref(s);
}

static int scopes_root(braid_task *self, void *arg) {
  (void)arg;
  braid_scope *a = NULL, *b = NULL, *f = NULL;
  int rc = T(braid_scope_new(BRAID_NEVER, 0, &a));
  if (rc != 0) return rc;
  rc = T(braid_scope_enter(self, a));
  if (rc != 0) {
    braid_scope_unref(a);
    return rc;
  }
  rc = T(braid_move_on_after(self, SEC, &b));
  if (rc == 0) {
    rc = T(braid_fail_after(self, 5 * SEC, &f));
    if (rc == 0) {
      rc = braid_sleep(self, 2 * SEC); /* cancelled by b at 1 s */
      rc = braid_scope_exit(f, rc);
      braid_scope_unref(f);
    }
    rc = braid_scope_exit(b, rc);
    braid_scope_unref(b);
  }
  rc = braid_scope_exit(a, rc);
  braid_scope_unref(a);
  return rc;
}

static int s_scopes(void) {
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  return T(braid_run(scopes_root, NULL, &o));
}

static int sleeping_child(braid_task *self, void *arg) {
  (void)arg;
  int rc = T(braid_checkpoint(self));
  if (rc != 0) return rc;
  return T(braid_sleep(self, SEC));
}

struct step_child {
  co_state co;
};

static int stepped_sleeping_child(braid_task *self, void *ctx, int resume) {
  struct step_child *c = ctx;
  switch (c->co.pc) {
  case 0:
    AWAIT(&c->co, T(braid_checkpoint(self)));
    if (c->co.rc != 0) return c->co.rc;
    AWAIT(&c->co, T(braid_sleep(self, SEC)));
    return c->co.rc;
  }
  return CO_FELL_OFF;
}

struct group_arg {
  int stepped;
  int children;
  struct step_child steps[8];
};

static int group_root(braid_task *self, void *arg) {
  struct group_arg *ga = arg;
  braid_group *g = NULL;
  int rc = T(braid_group_open(self, &g));
  if (rc != 0) return rc;
  int body = 0;
  for (int i = 0; i < ga->children && body == 0; i++) {
    if (ga->stepped) {
      memset(&ga->steps[i], 0, sizeof ga->steps[i]);
      body = T(braid_group_spawn_stepped(g, stepped_sleeping_child, &ga->steps[i], NULL, NULL));
    } else {
      braid_spawn_opts o = spawn_opts(i == 0 ? "named-child" : NULL, 0);
      body = T(braid_group_spawn(g, sleeping_child, NULL, &o, NULL));
    }
  }
  rc = surfaced(T(braid_group_close(g, body)));
  braid_group_free(g);
  return rc;
}

static int s_group_stackful(void) {
  struct group_arg ga = {.stepped = 0, .children = 3};
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  return T(braid_run(group_root, &ga, &o));
}

static int s_group_stepped(void) {
  struct group_arg ga = {.stepped = 1, .children = 3};
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  return T(braid_run(group_root, &ga, &o));
}

/* Children that fail with payloads; the group lists and destroys them. */
static int failing_child(braid_task *self, void *arg) {
  int i = (int)(intptr_t)arg;
  if (i % 2 == 1) {
    /* Odd children wait to be cancelled and fail in their cleanup. */
    int rc = T(braid_sleep_forever(self));
    if (rc != BRAID_ECANCELED) return rc;
  }
  sc.handed[i] = 1;
  return T(braid_task_fail(self, 100 + i, &sc.payloads[i], tpayload_dtor));
}

static int failures_root(braid_task *self, void *arg) {
  int n = (int)(intptr_t)arg;
  braid_group *g = NULL;
  int rc = T(braid_group_open(self, &g));
  if (rc != 0) return rc;
  int body = 0;
  for (int i = 0; i < n && body == 0; i++)
    body = T(braid_group_spawn(g, failing_child, (void *)(intptr_t)i, NULL, NULL));
  rc = T(braid_group_close(g, body));
  /* Take one payload over: we must destroy it, the group must not. */
  if (braid_group_failure_count(g) > 1) {
    void *p = braid_group_take_payload(g, 1);
    if (p != NULL) {
      tpayload_dtor(p);
      for (int i = 0; i < MAX_PAYLOADS; i++)
        if (p == &sc.payloads[i]) sc.caller_owned[i] = 1;
    }
  }
  braid_group_free(g);
  /* Without an injected failure the group fails as designed. */
  return rc == BRAID_EFAILED && !sc.enomem_seen ? 0 : surfaced(rc);
}

static int s_failures(void) {
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  return T(braid_run(failures_root, (void *)(intptr_t)4, &o));
}

static int s_many_failures(void) {
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  return T(braid_run(failures_root, (void *)(intptr_t)24, &o));
}

static int group_fail_root(braid_task *self, void *arg) {
  (void)arg;
  braid_group *g = NULL;
  int rc = T(braid_group_open(self, &g));
  if (rc != 0) return rc;
  int body = T(braid_group_spawn(g, sleeping_child, NULL, NULL, NULL));
  if (body == 0) {
    sc.handed[0] = 1;
    body = T(braid_group_fail(g, 55, &sc.payloads[0], tpayload_dtor));
  }
  rc = T(braid_group_close(g, body));
  braid_group_free(g);
  return rc == BRAID_EFAILED && !sc.enomem_seen ? 0 : surfaced(rc);
}

static int s_group_fail(void) {
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  return T(braid_run(group_fail_root, NULL, &o));
}

static int start_ready(braid_task *self, void *arg) {
  (void)arg;
  int rc = T(braid_sleep(self, SEC));
  if (rc != 0) return rc;
  rc = T(braid_task_started(self, &sc));
  if (rc != 0) return rc;
  return T(braid_sleep(self, SEC));
}

static int start_fails_early(braid_task *self, void *arg) {
  (void)arg;
  int rc = T(braid_checkpoint(self));
  if (rc != 0) return rc;
  sc.handed[1] = 1;
  return T(braid_task_fail(self, 77, &sc.payloads[1], tpayload_dtor));
}

struct step_ready {
  co_state co;
};

static int stepped_start_ready(braid_task *self, void *ctx, int resume) {
  struct step_ready *c = ctx;
  switch (c->co.pc) {
  case 0:
    AWAIT(&c->co, T(braid_sleep(self, SEC)));
    if (c->co.rc != 0) return c->co.rc;
    return T(braid_task_started(self, NULL));
  }
  return CO_FELL_OFF;
}

static int start_root(braid_task *self, void *arg) {
  (void)arg;
  braid_group *g = NULL;
  int rc = T(braid_group_open(self, &g));
  if (rc != 0) return rc;
  void *v = NULL;
  int body = T(braid_group_start(g, self, start_ready, NULL, NULL, &v));
  if (body == 0 && v != &sc) body = -500;
  if (body == 0) {
    v = NULL;
    int r = T(braid_group_start(g, self, start_fails_early, NULL, NULL, &v));
    if (r == 77) {
      /* The payload came back to us. */
      if (v == &sc.payloads[1]) {
        sc.caller_owned[1] = 1;
        tpayload_dtor(v);
      } else {
        body = -501;
      }
    } else {
      body = r == 0 ? -502 : r;
    }
  }
  if (body == 0) {
    struct step_ready sr;
    memset(&sr, 0, sizeof sr);
    body = T(braid_group_start_stepped(g, self, stepped_start_ready, &sr, NULL, NULL));
  }
  rc = surfaced(T(braid_group_close(g, body)));
  braid_group_free(g);
  return rc;
}

static int s_start(void) {
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  return T(braid_run(start_root, NULL, &o));
}

static int nested_level(braid_task *self, void *arg) {
  int depth = (int)(intptr_t)arg;
  if (depth == 0) return T(braid_sleep(self, SEC));
  braid_group *g = NULL;
  int rc = T(braid_group_open(self, &g));
  if (rc != 0) return rc;
  int body = T(braid_group_spawn(g, nested_level, (void *)(intptr_t)(depth - 1), NULL, NULL));
  if (body == 0) body = T(braid_group_spawn(g, nested_level, (void *)(intptr_t)0, NULL, NULL));
  rc = surfaced(T(braid_group_close(g, body)));
  braid_group_free(g);
  return rc;
}

static int s_nested_groups(void) {
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  return T(braid_run(nested_level, (void *)(intptr_t)3, &o));
}

static int cancel_all_root(braid_task *self, void *arg) {
  (void)arg;
  braid_scope *s = NULL;
  int rc = T(braid_move_on_after(self, SEC, &s));
  if (rc != 0) return rc;
  braid_group *g = NULL;
  rc = T(braid_group_open(self, &g));
  if (rc == 0) {
    int body = 0;
    for (int i = 0; i < 4 && body == 0; i++)
      body = T(braid_group_spawn(g, failing_child, (void *)(intptr_t)(2 * i + 1), NULL, NULL));
    rc = surfaced(T(braid_group_close(g, body)));
    braid_group_free(g);
  }
  rc = braid_scope_exit(s, rc);
  braid_scope_unref(s);
  return rc == BRAID_EFAILED && !sc.enomem_seen ? 0 : rc;
}

static int s_cancel_by_deadline(void) {
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  return T(braid_run(cancel_all_root, NULL, &o));
}

struct scenario {
  const char *name;
  int (*run)(void);
};

static const struct scenario scenarios[] = {
    {"run", s_run},           {"run_stepped", s_run_stepped},       {"scope_outside_loop", s_scope_outside_loop},
    {"scopes", s_scopes},     {"group_stackful", s_group_stackful}, {"group_stepped", s_group_stepped},
    {"failures", s_failures}, {"many_failures", s_many_failures},   {"group_fail", s_group_fail},
    {"start", s_start},       {"nested_groups", s_nested_groups},   {"cancel_by_deadline", s_cancel_by_deadline},
};

static void check_payloads(const char *name, long k) {
  for (int i = 0; i < MAX_PAYLOADS; i++) {
    int expected = sc.handed[i] ? 1 : 0;
    if (sc.payloads[i].dtor_calls != expected)
      print_error("%s, failing allocation #%ld: payload %d destroyed %d times, expected %d\n", name, k, i,
                  (int)sc.payloads[i].dtor_calls, expected);
    assert_int_equal(sc.payloads[i].dtor_calls, expected);
  }
}

static void reset_sc(void) {
  memset(&sc, 0, sizeof sc);
  for (int i = 0; i < MAX_PAYLOADS; i++)
    sc.payloads[i].id = i;
}

static void run_scenario(const struct scenario *s) {
  /* Counting run: nothing fails. */
  reset_sc();
  install(-1);
  int rc = s->run();
  long n = atomic_load(&counter.attempts);
  long live = atomic_load(&counter.live);
  uninstall();
  if (rc != 0 || live != 0)
    print_error("%s without failures: rc %s, %ld allocations, %ld live\n", s->name, braid_errname(rc), n, live);
  assert_int_equal(rc, 0);
  assert_int_equal(live, 0);
  assert_int_equal(sc.enomem_seen, 0);
  assert_true(n > 0);
  check_payloads(s->name, -1);
  print_message("  %s: %ld allocations, each made to fail in turn\n", s->name, n);

  for (long k = 0; k < n; k++) {
    reset_sc();
    install(k);
    rc = s->run();
    long injected = atomic_load(&counter.injected);
    live = atomic_load(&counter.live);
    uninstall();
    int ok = injected == 1 && (rc == BRAID_ENOMEM || sc.enomem_seen) && live == 0;
    if (!ok)
      print_error("%s, failing allocation #%ld of %ld: rc %s, ENOMEM seen by a call: %d, injected %ld, live %ld\n",
                  s->name, k, n, braid_errname(rc), sc.enomem_seen, injected, live);
    assert_int_equal(injected, 1);
    assert_true(rc == BRAID_ENOMEM || sc.enomem_seen);
    assert_int_equal(live, 0);
    check_payloads(s->name, k);
  }
}

#define SCENARIO_TEST(idx, fname)                                                                                      \
  static void fname(void **state) {                                                                                    \
    (void)state;                                                                                                       \
    run_scenario(&scenarios[idx]);                                                                                     \
  }

SCENARIO_TEST(0, test_alloc_failure_in_run_returns_enomem_and_leaks_nothing)
SCENARIO_TEST(1, test_alloc_failure_in_run_stepped_returns_enomem_and_leaks_nothing)
SCENARIO_TEST(2, test_alloc_failure_in_scope_new_outside_a_loop_returns_enomem)
SCENARIO_TEST(3, test_alloc_failure_in_scopes_and_deadlines_returns_enomem_and_leaks_nothing)
SCENARIO_TEST(4, test_alloc_failure_spawning_stackful_children_returns_enomem_and_leaks_nothing)
SCENARIO_TEST(5, test_alloc_failure_spawning_stepped_children_returns_enomem_and_leaks_nothing)
SCENARIO_TEST(6, test_alloc_failure_with_failure_payloads_destroys_each_payload_once)
SCENARIO_TEST(7, test_alloc_failure_with_many_failures_destroys_each_payload_once)
SCENARIO_TEST(8, test_alloc_failure_with_group_fail_destroys_the_payload_once)
SCENARIO_TEST(9, test_alloc_failure_in_start_returns_enomem_and_leaks_nothing)
SCENARIO_TEST(10, test_alloc_failure_in_nested_groups_returns_enomem_and_leaks_nothing)
SCENARIO_TEST(11, test_alloc_failure_while_cancelling_by_deadline_leaks_nothing)

/* The hook is really used: a scenario allocates through it, and after
 * restoring the default allocator the runtime still works. */
static void test_alloc_hook_sees_every_allocation_and_default_restores(void **state) {
  (void)state;
  reset_sc();
  install(-1);
  assert_int_equal(s_group_stackful(), 0);
  long n = atomic_load(&counter.attempts);
  uninstall();
  assert_true(n > 0);
  assert_int_equal(atomic_load(&counter.live), 0);
  atomic_store(&counter.attempts, 0);
  assert_int_equal(s_group_stackful(), 0);
  assert_int_equal(atomic_load(&counter.attempts), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_alloc_hook_sees_every_allocation_and_default_restores),
      BT(test_alloc_failure_in_run_returns_enomem_and_leaks_nothing),
      BT(test_alloc_failure_in_run_stepped_returns_enomem_and_leaks_nothing),
      BT(test_alloc_failure_in_scope_new_outside_a_loop_returns_enomem),
      BT(test_alloc_failure_in_scopes_and_deadlines_returns_enomem_and_leaks_nothing),
      BT(test_alloc_failure_spawning_stackful_children_returns_enomem_and_leaks_nothing),
      BT(test_alloc_failure_spawning_stepped_children_returns_enomem_and_leaks_nothing),
      BT(test_alloc_failure_with_failure_payloads_destroys_each_payload_once),
      BT(test_alloc_failure_with_many_failures_destroys_each_payload_once),
      BT(test_alloc_failure_with_group_fail_destroys_the_payload_once),
      BT(test_alloc_failure_in_start_returns_enomem_and_leaks_nothing),
      BT(test_alloc_failure_in_nested_groups_returns_enomem_and_leaks_nothing),
      BT(test_alloc_failure_while_cancelling_by_deadline_leaks_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
