/*
 * test_stress.c — many tasks: 100,000 trivial stackful tasks through one
 * group, 100,000 stepped tasks asleep at once and then cancelled, 20,000
 * stackful tasks asleep at once and then cancelled, and groups nested 50
 * deep (cancellation and failure crossing every level).
 *
 * vm.max_map_count is 65530 by default and every guarded stack costs two
 * mappings, so at most ~25,000 stackful tasks may be alive at once: the
 * 100,000 stackful tasks are spawned in batches that finish in between.
 */
#include "core_helpers.h"

#include <stdlib.h>
#include <string.h>

#define SEC BRAID_SEC

/* ---- 100,000 trivial stackful tasks ----------------------------------- */

#define TRIVIAL_TOTAL 100000
#define TRIVIAL_BATCH 1000

struct trivial_ctx {
  long ran;
  int rc_close;
  braid_loop_stats before, after;
  uint64_t max_alive;
};

static int trivial_child(braid_task *self, void *arg) {
  (void)self;
  struct trivial_ctx *c = arg;
  c->ran++;
  return 0;
}

static int trivial_root(braid_task *self, void *arg) {
  struct trivial_ctx *c = arg;
  braid_loop *loop = braid_task_loop(self);
  c->before.size = c->after.size = sizeof(braid_loop_stats);
  CHECK_INT(braid_loop_get_stats(loop, &c->before), 0);
  braid_group *g = open_group(self);
  braid_spawn_opts o = spawn_opts(NULL, 16 * 1024);
  for (int i = 0; i < TRIVIAL_TOTAL; i++) {
    if (!CHECK_INT(braid_group_spawn(g, trivial_child, c, &o, NULL), 0)) break;
    if ((i + 1) % TRIVIAL_BATCH == 0) {
      braid_loop_stats st = {.size = sizeof st};
      CHECK_INT(braid_loop_get_stats(loop, &st), 0);
      if (st.tasks_alive > c->max_alive) c->max_alive = st.tasks_alive;
      CHECK_INT(braid_checkpoint(self), 0); /* let the batch run and finish */
    }
  }
  c->rc_close = braid_group_close(g, 0);
  CHECK_INT(braid_group_free(g), 0);
  CHECK_INT(braid_loop_get_stats(loop, &c->after), 0);
  return 0;
}

static void test_stress_100000_trivial_stackful_tasks_in_one_group(void **state) {
  (void)state;
  struct trivial_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(trivial_root, &c), 0);
  assert_int_equal(c.ran, TRIVIAL_TOTAL);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.after.tasks_spawned - c.before.tasks_spawned, TRIVIAL_TOTAL);
  assert_int_equal(c.after.tasks_alive, 1);
  assert_true(c.max_alive <= TRIVIAL_BATCH + 1);
  /* Finished tasks give their stacks back: far fewer than 100,000 mapped. */
  assert_true(c.after.stacks_mapped <= 2 * TRIVIAL_BATCH);
}

/* ---- 100,000 stepped tasks asleep, then cancelled --------------------- */

#define STEPPED_TOTAL 100000

/* A group full of sleepers, cancelled after a second: what it looked like
 * just before, and what its close made of the cancellation. */
struct crowd {
  size_t alive_before_cancel;
  uint64_t stacks_mapped_while_asleep;
  int rc_close, caught;
  braid_time_t closed_at;
};

static void cancel_crowd_after_a_second(braid_task *self, braid_group *g, struct crowd *c) {
  CHECK_INT(braid_sleep(self, SEC), 0);
  c->alive_before_cancel = braid_group_child_count(g);
  braid_loop_stats st = {.size = sizeof st};
  CHECK_INT(braid_loop_get_stats(braid_task_loop(self), &st), 0);
  c->stacks_mapped_while_asleep = st.stacks_mapped;
  CHECK_INT(braid_scope_cancel(braid_group_scope(g)), 0);
  c->rc_close = braid_group_close(g, 0);
  c->closed_at = braid_now(self);
  c->caught = braid_scope_cancelled_caught(braid_group_scope(g));
  CHECK_INT(braid_group_free(g), 0);
}

/* All `total` were asleep; the close caught the group's own cancellation at
 * 1 s. */
static void assert_crowd_cancelled(const struct crowd *c, size_t total) {
  assert_int_equal(c->alive_before_cancel, total);
  assert_int_equal(c->rc_close, 0);
  assert_int_equal(c->caught, 1);
  assert_int_equal(c->closed_at, SEC);
}

struct sleeper {
  co_state co;
  int rc;
  braid_time_t woke_at;
};

static int stepped_sleeper(braid_task *self, void *ctx, int resume) {
  struct sleeper *s = ctx;
  switch (s->co.pc) {
  case 0:
    AWAIT_TO(&s->co, s->rc, braid_sleep(self, 3600 * SEC));
    s->woke_at = braid_now(self);
    return s->rc;
  }
  return CO_FELL_OFF;
}

struct stepped_ctx {
  struct sleeper *sleepers;
  struct crowd crowd;
};

static int stepped_many_root(braid_task *self, void *arg) {
  struct stepped_ctx *c = arg;
  braid_group *g = open_group(self);
  for (int i = 0; i < STEPPED_TOTAL; i++)
    if (!CHECK_INT(braid_group_spawn_stepped(g, stepped_sleeper, &c->sleepers[i], NULL, NULL), 0)) break;
  cancel_crowd_after_a_second(self, g, &c->crowd);
  return 0;
}

static void test_stress_100000_stepped_tasks_sleeping_then_cancelled(void **state) {
  (void)state;
  struct stepped_ctx c;
  memset(&c, 0, sizeof c);
  c.sleepers = calloc(STEPPED_TOTAL, sizeof *c.sleepers);
  assert_non_null(c.sleepers);
  assert_int_equal(run_virtual(stepped_many_root, &c), 0);
  assert_crowd_cancelled(&c.crowd, STEPPED_TOTAL);
  long cancelled = 0, at_one_second = 0;
  for (int i = 0; i < STEPPED_TOTAL; i++) {
    cancelled += c.sleepers[i].rc == BRAID_ECANCELED;
    at_one_second += c.sleepers[i].woke_at == SEC;
  }
  free(c.sleepers);
  assert_int_equal(cancelled, STEPPED_TOTAL);
  assert_int_equal(at_one_second, STEPPED_TOTAL);
}

/* ---- 20,000 stackful tasks asleep at once, then cancelled -------------- */

/* ThreadSanitizer gives every fiber a thread slot and allows 8128 at once,
 * so its build runs the same test with fewer concurrent stacks. */
#if defined(__SANITIZE_THREAD__)
#define STACKFUL_TOTAL 5000
#else
#define STACKFUL_TOTAL 20000
#endif

struct stackful_ctx {
  long cancelled, woke_at_one_second, started;
  struct crowd crowd;
};

static int stackful_sleeper(braid_task *self, void *arg) {
  struct stackful_ctx *c = arg;
  c->started++;
  int rc = braid_sleep_forever(self);
  c->cancelled += rc == BRAID_ECANCELED;
  c->woke_at_one_second += braid_now(self) == SEC;
  return rc;
}

static int stackful_many_root(braid_task *self, void *arg) {
  struct stackful_ctx *c = arg;
  braid_group *g = open_group(self);
  braid_spawn_opts o = spawn_opts(NULL, 32 * 1024);
  for (int i = 0; i < STACKFUL_TOTAL; i++)
    if (!CHECK_INT(braid_group_spawn(g, stackful_sleeper, c, &o, NULL), 0)) break;
  cancel_crowd_after_a_second(self, g, &c->crowd);
  return 0;
}

static void test_stress_20000_stackful_tasks_sleeping_concurrently_then_cancelled(void **state) {
  (void)state;
  struct stackful_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(stackful_many_root, &c), 0);
  assert_int_equal(c.started, STACKFUL_TOTAL);
  assert_crowd_cancelled(&c.crowd, STACKFUL_TOTAL);
  assert_true(c.crowd.stacks_mapped_while_asleep >= STACKFUL_TOTAL);
  assert_int_equal(c.cancelled, STACKFUL_TOTAL);
  assert_int_equal(c.woke_at_one_second, STACKFUL_TOTAL);
}

/* ---- 10,000 deadlines moved while others fire --------------------------- */

#define MOVED_TOTAL 10000

struct mover {
  co_state co;
  braid_scope *s;
  braid_time_t first, moved_to; /* offsets from t = 0 */
  int rc_first_sleep, rc_wait, rc_exit;
  braid_time_t woke_at;
};

static uint64_t lcg_state = 12345;

static uint64_t lcg(void) {
  lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
  return lcg_state >> 33;
}

static int mover_step(braid_task *self, void *ctx, int resume) {
  struct mover *m = ctx;
  switch (m->co.pc) {
  case 0:
    /* A deadline far away, then a sleep that ends before it... */
    CHECK_INT(braid_move_on_after(self, 1000 * SEC, &m->s), 0);
    AWAIT_TO(&m->co, m->rc_first_sleep, braid_sleep(self, m->first));
    /* ...then the deadline moved (earlier for most, later for some). */
    CHECK_INT(braid_scope_set_deadline(m->s, m->moved_to), 0);
    AWAIT_TO(&m->co, m->rc_wait, braid_sleep_forever(self));
    m->woke_at = braid_now(self);
    m->rc_exit = leave_scope(m->s, m->rc_wait, NULL);
    return m->rc_exit;
  }
  return CO_FELL_OFF;
}

static int movers_root(braid_task *self, void *arg) {
  struct mover *m = arg;
  braid_group *g = open_group(self);
  for (int i = 0; i < MOVED_TOTAL; i++)
    if (!CHECK_INT(braid_group_spawn_stepped(g, mover_step, &m[i], NULL, NULL), 0)) break;
  close_group(g);
  return 0;
}

static void test_stress_10000_moved_deadlines_each_fire_at_their_time(void **state) {
  (void)state;
  struct mover *m = calloc(MOVED_TOTAL, sizeof *m);
  assert_non_null(m);
  for (int i = 0; i < MOVED_TOTAL; i++) {
    m[i].first = (braid_time_t)(1 + lcg() % 1000) * BRAID_MSEC;
    m[i].moved_to = m[i].first + (braid_time_t)(1 + lcg() % 5000) * BRAID_MSEC;
    if (i % 10 == 0) m[i].moved_to += 2000 * SEC; /* later than the original deadline */
  }
  assert_int_equal(run_virtual(movers_root, m), 0);
  long right = 0;
  for (int i = 0; i < MOVED_TOTAL; i++) {
    int ok = m[i].rc_first_sleep == 0 && m[i].rc_wait == BRAID_ECANCELED && m[i].rc_exit == 0 &&
             m[i].woke_at == m[i].moved_to;
    if (!ok && right == i)
      print_error("task %d: first sleep %s, wait %s, exit %s, woke at %lld, expected %lld\n", i,
                  braid_errname(m[i].rc_first_sleep), braid_errname(m[i].rc_wait), braid_errname(m[i].rc_exit),
                  (long long)m[i].woke_at, (long long)m[i].moved_to);
    right += ok;
  }
  free(m);
  assert_int_equal(right, MOVED_TOTAL);
}

/* ---- groups nested 50 deep -------------------------------------------- */

#define DEPTH 50

struct deep_ctx {
  int leaf_fails;
  int deepest;
  braid_time_t leaf_deadline;
  int leaf_rc;
  group_result level[DEPTH + 1]; /* at each level that has a group */
};

struct level_arg {
  struct deep_ctx *c;
  int depth;
};

static int deep_level(braid_task *self, void *arg) {
  struct level_arg *la = arg;
  struct deep_ctx *c = la->c;
  int depth = la->depth;
  if (depth > c->deepest) c->deepest = depth;
  if (depth == DEPTH) {
    c->leaf_deadline = braid_current_effective_deadline(self);
    if (c->leaf_fails) {
      CHECK_INT(braid_sleep(self, SEC), 0);
      c->leaf_rc = 7;
      return 7;
    }
    c->leaf_rc = braid_sleep_forever(self);
    return c->leaf_rc;
  }
  braid_group *g = open_group(self);
  struct level_arg next = {c, depth + 1}; /* lives until close returns */
  CHECK_INT(braid_group_spawn(g, deep_level, &next, NULL, NULL), 0);
  c->level[depth] = close_and_free_group(g, 0);
  return c->level[depth].rc_close;
}

static int deep_root(braid_task *self, void *arg) {
  struct deep_ctx *c = arg;
  braid_scope *s = NULL;
  CHECK_INT(braid_move_on_after(self, 5 * SEC, &s), 0);
  struct level_arg top = {c, 0};
  return leave_scope(s, deep_level(self, &top), NULL);
}

static void test_stress_groups_nested_50_deep_are_all_cancelled_by_an_outer_deadline(void **state) {
  (void)state;
  struct deep_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(deep_root, &c), 0);
  assert_int_equal(c.deepest, DEPTH);
  assert_int_equal(c.leaf_deadline, 5 * SEC);
  assert_int_equal(c.leaf_rc, BRAID_ECANCELED);
  for (int d = 0; d < DEPTH; d++) {
    assert_int_equal(c.level[d].rc_close, BRAID_ECANCELED);
    assert_int_equal(c.level[d].nfail, 0);
  }
}

static void test_stress_failure_at_depth_50_propagates_through_every_level(void **state) {
  (void)state;
  struct deep_ctx c;
  memset(&c, 0, sizeof c);
  c.leaf_fails = 1;
  assert_int_equal(run_virtual(deep_root, &c), BRAID_EFAILED);
  assert_int_equal(c.deepest, DEPTH);
  assert_int_equal(c.leaf_rc, 7);
  assert_int_equal(c.level[DEPTH - 1].rc_close, BRAID_EFAILED);
  assert_int_equal(c.level[DEPTH - 1].code, 7);
  for (int d = 0; d < DEPTH - 1; d++) {
    assert_int_equal(c.level[d].rc_close, BRAID_EFAILED);
    assert_int_equal(c.level[d].nfail, 1);
    assert_int_equal(c.level[d].code, BRAID_EFAILED);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_stress_100000_trivial_stackful_tasks_in_one_group),
      BT(test_stress_100000_stepped_tasks_sleeping_then_cancelled),
      BT(test_stress_20000_stackful_tasks_sleeping_concurrently_then_cancelled),
      BT(test_stress_10000_moved_deadlines_each_fire_at_their_time),
      BT(test_stress_groups_nested_50_deep_are_all_cancelled_by_an_outer_deadline),
      BT(test_stress_failure_at_depth_50_propagates_through_every_level),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
