/*
 * test_run.c — braid_run / braid_run_stepped, the current task, task ids
 * and names, loop accessors and statistics, the virtual clock (time stands
 * still while tasks run, jumps when all block) and a short real-clock sleep.
 */
#include "core_helpers.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* ---- results and arguments ----------------------------------------- */

static int return_int_arg(braid_task *self, void *arg) {
  (void)self;
  return *(int *)arg;
}

static void test_run_returns_root_result(void **state) {
  (void)state;
  int values[] = {0, 42, 1, BRAID_ECANCELED, BRAID_EFAILED, -1000};
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    assert_int_equal(run_virtual(return_int_arg, &values[i]), values[i]);
    assert_int_equal(run_real(return_int_arg, &values[i]), values[i]);
  }
}

static void test_run_with_null_opts_uses_real_clock(void **state) {
  (void)state;
  int v = 7;
  assert_int_equal(braid_run(return_int_arg, &v, NULL), 7);
}

struct clock_kind {
  int is_virtual;
};

static int record_clock_kind(braid_task *self, void *arg) {
  struct clock_kind *k = arg;
  k->is_virtual = braid_loop_is_virtual(braid_task_loop(self));
  return 0;
}

static void test_run_clock_option_selects_virtual_or_real(void **state) {
  (void)state;
  struct clock_kind k = {-1};
  assert_int_equal(braid_run(record_clock_kind, &k, NULL), 0);
  assert_int_equal(k.is_virtual, 0);
  assert_int_equal(run_real(record_clock_kind, &k), 0);
  assert_int_equal(k.is_virtual, 0);
  assert_int_equal(run_virtual(record_clock_kind, &k), 0);
  assert_int_equal(k.is_virtual, 1);
}

static void test_run_rejects_null_fn_and_bad_options(void **state) {
  (void)state;
  int v = 0;
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  assert_int_equal(braid_run(NULL, NULL, &o), BRAID_EINVAL);

  o = run_opts(BRAID_CLOCK_VIRTUAL);
  o.clock = 17;
  assert_int_equal(braid_run(return_int_arg, &v, &o), BRAID_EINVAL);

  o = run_opts(BRAID_CLOCK_VIRTUAL);
  o.size = 0;
  assert_int_equal(braid_run(return_int_arg, &v, &o), BRAID_EINVAL);

  /* The thread is still usable after the refusals. */
  v = 3;
  assert_int_equal(run_virtual(return_int_arg, &v), 3);
}

static int nested_run(braid_task *self, void *arg) {
  (void)arg;
  int v = 5;
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  CHECK_INT(braid_run(return_int_arg, &v, &o), BRAID_ESTATE);
  CHECK_INT(braid_run(return_int_arg, &v, NULL), BRAID_ESTATE);
  CHECK_PTR(braid_current_task(), self); /* the refusal changed nothing */
  return 11;
}

static void test_run_inside_a_running_loop_is_estate(void **state) {
  (void)state;
  assert_int_equal(run_virtual(nested_run, NULL), 11);
}

static void test_run_twice_in_sequence_on_one_thread(void **state) {
  (void)state;
  for (int i = 0; i < 5; i++) {
    int v = i;
    assert_int_equal(run_virtual(return_int_arg, &v), i);
  }
}

/* ---- the current task ------------------------------------------------ */

struct current_ctx {
  braid_task *root;
  braid_task *child_seen[3];
  braid_task *child_out[3];
  int child_same_after_checkpoint[3];
  int root_same_after_checkpoint;
};

static int current_child(braid_task *self, void *arg) {
  struct current_ctx *c = arg;
  int i = -1;
  for (int k = 0; k < 3; k++)
    if (c->child_out[k] == self) i = k;
  CHECK(i >= 0);
  if (i < 0) return -100;
  c->child_seen[i] = braid_current_task();
  CHECK_INT(braid_checkpoint(self), 0);
  c->child_same_after_checkpoint[i] = braid_current_task() == self;
  return 0;
}

static int current_root(braid_task *self, void *arg) {
  struct current_ctx *c = arg;
  c->root = braid_current_task();
  braid_group *g = open_group(self);
  for (int k = 0; k < 3; k++)
    CHECK_INT(braid_group_spawn(g, current_child, c, NULL, &c->child_out[k]), 0);
  CHECK_INT(braid_checkpoint(self), 0);
  c->root_same_after_checkpoint = braid_current_task() == self;
  close_group(g);
  return 0;
}

static void test_current_task_is_the_running_task_and_null_outside(void **state) {
  (void)state;
  assert_null(braid_current_task());
  struct current_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(current_root, &c), 0);
  assert_null(braid_current_task());
  assert_non_null(c.root);
  assert_int_equal(c.root_same_after_checkpoint, 1);
  for (int k = 0; k < 3; k++) {
    assert_ptr_equal(c.child_seen[k], c.child_out[k]);
    assert_int_equal(c.child_same_after_checkpoint[k], 1);
  }
}

static void *current_task_in_plain_thread(void *arg) {
  *(braid_task **)arg = braid_current_task();
  return NULL;
}

static int current_in_thread_root(braid_task *self, void *arg) {
  (void)self;
  braid_task *seen = (braid_task *)&seen; /* anything but NULL */
  CHECK_INT(in_thread(current_task_in_plain_thread, &seen), 0);
  CHECK_PTR(seen, NULL);
  *(int *)arg = 1;
  return 0;
}

static void test_current_task_is_null_on_a_plain_thread_while_a_loop_runs(void **state) {
  (void)state;
  int ran = 0;
  assert_int_equal(run_virtual(current_in_thread_root, &ran), 0);
  assert_int_equal(ran, 1);
}

/* ---- names and ids --------------------------------------------------- */

struct names_ctx {
  char root_name[64];
  char default_child_name[64];
  char expected_default_child_name[64];
  char named_child_name[64];
  char buf[32];
  int is_stepped_root;
};

static int record_own_name(braid_task *self, void *arg) {
  char *dst = arg;
  snprintf(dst, 64, "%s", braid_task_name(self));
  return 0;
}

static int record_own_name_long(braid_task *self, void *arg) {
  char *dst = arg;
  snprintf(dst, 512, "%s", braid_task_name(self));
  return 0;
}

static int names_root(braid_task *self, void *arg) {
  struct names_ctx *c = arg;
  snprintf(c->root_name, sizeof c->root_name, "%s", braid_task_name(self));
  c->is_stepped_root = braid_task_is_stepped(self);
  braid_group *g = open_group(self);

  braid_task *anon = NULL;
  CHECK_INT(braid_group_spawn(g, record_own_name, c->default_child_name, NULL, &anon), 0);
  snprintf(c->expected_default_child_name, sizeof c->expected_default_child_name, "task-%llu",
           (unsigned long long)braid_task_id(anon));

  /* The name option is copied: scribbling over the buffer after the
   * spawn must not change the child's name. */
  snprintf(c->buf, sizeof c->buf, "worker-7");
  braid_spawn_opts o = spawn_opts(c->buf, 0);
  CHECK_INT(braid_group_spawn(g, record_own_name, c->named_child_name, &o, NULL), 0);
  memset(c->buf, 'X', sizeof c->buf - 1);
  close_group(g);
  return 0;
}

static void test_task_names_default_and_option(void **state) {
  (void)state;
  struct names_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(names_root, &c), 0);
  assert_string_equal(c.root_name, "root");
  assert_int_equal(c.is_stepped_root, 0);
  assert_string_equal(c.default_child_name, c.expected_default_child_name);
  assert_string_equal(c.named_child_name, "worker-7");
}

static int long_name_root(braid_task *self, void *arg) {
  char *got = arg;
  char name[301];
  memset(name, 'n', 300);
  name[300] = '\0';
  braid_group *g = open_group(self);
  braid_spawn_opts o = spawn_opts(name, 0);
  braid_task *t = NULL;
  CHECK_INT(braid_group_spawn(g, record_own_name_long, got, &o, &t), 0);
  memset(name, 'x', 300);
  close_group(g);
  return 0;
}

static void test_task_name_of_any_length_is_copied(void **state) {
  (void)state;
  char got[512] = "";
  char expected[301];
  memset(expected, 'n', 300);
  expected[300] = '\0';
  assert_int_equal(run_virtual(long_name_root, got), 0);
  assert_string_equal(got, expected);
}

static void test_root_name_option_names_the_root(void **state) {
  (void)state;
  char name[64] = "";
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  o.root_name = "main-task";
  assert_int_equal(braid_run(record_own_name, name, &o), 0);
  assert_string_equal(name, "main-task");
}

#define ID_CHILDREN 50

struct ids_ctx {
  uint64_t ids[ID_CHILDREN + 1];
  int n;
};

static int record_id(braid_task *self, void *arg) {
  struct ids_ctx *c = arg;
  c->ids[c->n++] = braid_task_id(self);
  return 0;
}

static int ids_root(braid_task *self, void *arg) {
  struct ids_ctx *c = arg;
  record_id(self, c);
  braid_group *g = open_group(self);
  for (int i = 0; i < ID_CHILDREN; i++)
    CHECK_INT(braid_group_spawn(g, record_id, c, NULL, NULL), 0);
  close_group(g);
  return 0;
}

static void test_task_ids_are_positive_unique_and_never_reused(void **state) {
  (void)state;
  struct ids_ctx a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  assert_int_equal(run_virtual(ids_root, &a), 0);
  assert_int_equal(run_virtual(ids_root, &b), 0);
  assert_int_equal(a.n, ID_CHILDREN + 1);
  assert_int_equal(b.n, ID_CHILDREN + 1);
  uint64_t all[2 * (ID_CHILDREN + 1)];
  for (int i = 0; i < a.n; i++)
    all[i] = a.ids[i];
  for (int i = 0; i < b.n; i++)
    all[a.n + i] = b.ids[i];
  int n = a.n + b.n;
  for (int i = 0; i < n; i++) {
    assert_true(all[i] > 0);
    for (int j = i + 1; j < n; j++)
      assert_true(all[i] != all[j]);
  }
}

static void test_task_accessors_accept_null(void **state) {
  (void)state;
  assert_int_equal(braid_task_id(NULL), 0);
  assert_null(braid_task_name(NULL));
  assert_null(braid_task_loop(NULL));
  assert_int_equal(braid_task_is_stepped(NULL), 0);
}

struct loop_ctx {
  braid_loop *root_loop;
  braid_loop *child_loop;
  void *root_user_before;
  void *root_user_after;
  void *child_user;
  int marker;
};

static int loop_child(braid_task *self, void *arg) {
  struct loop_ctx *c = arg;
  c->child_loop = braid_task_loop(self);
  c->child_user = braid_task_user(self);
  return 0;
}

static int loop_root(braid_task *self, void *arg) {
  struct loop_ctx *c = arg;
  c->root_loop = braid_task_loop(self);
  c->root_user_before = braid_task_user(self);
  braid_task_set_user(self, &c->marker);
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, loop_child, c, NULL, NULL), 0);
  close_group(g);
  c->root_user_after = braid_task_user(self);
  return 0;
}

static void test_tasks_of_a_run_share_its_loop_and_keep_user_data(void **state) {
  (void)state;
  struct loop_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(loop_root, &c), 0);
  assert_non_null(c.root_loop);
  assert_ptr_equal(c.child_loop, c.root_loop);
  assert_null(c.root_user_before);
  assert_ptr_equal(c.root_user_after, &c.marker);
  assert_null(c.child_user); /* user data is per task */
}

/* ---- virtual clock --------------------------------------------------- */

struct vclock_ctx {
  braid_time_t at_start, loop_at_start, after_sleep;
  int64_t real_elapsed;
};

static int vclock_jump_root(braid_task *self, void *arg) {
  struct vclock_ctx *c = arg;
  c->at_start = braid_now(self);
  c->loop_at_start = braid_loop_now(braid_task_loop(self));
  int64_t r0 = real_ns();
  CHECK_INT(braid_sleep(self, 3600 * BRAID_SEC), 0);
  c->real_elapsed = real_ns() - r0;
  c->after_sleep = braid_now(self);
  return 0;
}

static void test_virtual_clock_starts_at_start_time_and_jumps_over_sleeps(void **state) {
  (void)state;
  struct vclock_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual_at(vclock_jump_root, &c, 7 * BRAID_SEC), 0);
  assert_int_equal(c.at_start, 7 * BRAID_SEC);
  assert_int_equal(c.loop_at_start, 7 * BRAID_SEC);
  assert_int_equal(c.after_sleep, 7 * BRAID_SEC + 3600 * BRAID_SEC);
  assert_true(c.real_elapsed < 2 * BRAID_SEC); /* an hour of virtual time passes at once */

  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(vclock_jump_root, &c), 0);
  assert_int_equal(c.at_start, 0);
  assert_int_equal(c.after_sleep, 3600 * BRAID_SEC);
}

/* A virtual clock may start before 0: sleeps and timed scopes computed from
 * a negative now must neither overflow nor wrap (now + delay saturates). */
struct negative_ctx {
  braid_time_t after_zero_sleep, after_sleep, deadline_neg, deadline_pos, now_pos;
  int rc_zero, rc_sleep, caught;
};

static int negative_start_root(braid_task *self, void *arg) {
  struct negative_ctx *c = arg;
  c->rc_zero = braid_sleep(self, 0);
  c->after_zero_sleep = braid_now(self);
  c->rc_sleep = braid_sleep(self, 5 * BRAID_SEC);
  c->after_sleep = braid_now(self);
  braid_scope *s;
  if (braid_move_on_after(self, INT64_MIN + 1, &s) != 0) return 1;
  c->deadline_neg = braid_scope_deadline(s);
  int rc = braid_sleep(self, BRAID_SEC);
  c->caught = braid_scope_exit(s, rc) == 0 && braid_scope_cancelled_caught(s);
  braid_scope_unref(s);
  c->now_pos = braid_now(self);
  if (braid_move_on_after(self, BRAID_NEVER - 1, &s) != 0) return 1;
  c->deadline_pos = braid_scope_deadline(s);
  braid_scope_exit(s, 0);
  braid_scope_unref(s);
  return 0;
}

static void test_virtual_clock_before_zero_saturates_sleeps_and_deadlines(void **state) {
  (void)state;
  struct negative_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual_at(negative_start_root, &c, -10 * BRAID_SEC), 0);
  assert_int_equal(c.rc_zero, 0);
  assert_int_equal(c.after_zero_sleep, -10 * BRAID_SEC);
  assert_int_equal(c.rc_sleep, 0);
  assert_int_equal(c.after_sleep, -5 * BRAID_SEC);
  assert_int_equal(c.deadline_neg, INT64_MIN + 1); /* saturated, not wrapped to the far future */
  assert_int_equal(c.caught, 1);
  assert_true(c.now_pos < 0); /* a huge delay from a negative now fits: no saturation */
  assert_int_equal(c.deadline_pos, c.now_pos + (BRAID_NEVER - 1));
}

struct still_ctx {
  braid_time_t t0;
  int sleeper_done;
  braid_time_t sleeper_woke_at;
  int spins;
  int time_moved_while_running;
  int sleeper_done_while_spinning;
};

static int still_sleeper(braid_task *self, void *arg) {
  struct still_ctx *c = arg;
  CHECK_INT(braid_sleep(self, BRAID_SEC), 0);
  c->sleeper_woke_at = braid_now(self);
  c->sleeper_done = 1;
  return 0;
}

static int still_spinner(braid_task *self, void *arg) {
  struct still_ctx *c = arg;
  for (int i = 0; i < 1000; i++) {
    CHECK_INT(braid_checkpoint(self), 0);
    if (braid_now(self) != c->t0) c->time_moved_while_running = 1;
    if (c->sleeper_done) c->sleeper_done_while_spinning = 1;
    c->spins++;
  }
  return 0;
}

static int still_root(braid_task *self, void *arg) {
  struct still_ctx *c = arg;
  static const braid_fn children[] = {still_sleeper, still_spinner};
  c->t0 = braid_now(self);
  run_children(self, children, 2, c);
  return 0;
}

static void test_virtual_clock_stands_still_while_any_task_can_run(void **state) {
  (void)state;
  struct still_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(still_root, &c), 0);
  assert_int_equal(c.spins, 1000);
  assert_int_equal(c.time_moved_while_running, 0);
  assert_int_equal(c.sleeper_done_while_spinning, 0);
  assert_int_equal(c.sleeper_done, 1);
  assert_int_equal(c.sleeper_woke_at, c.t0 + BRAID_SEC);
}

/* ---- real clock ------------------------------------------------------ */

struct real_ctx {
  braid_time_t loop_elapsed;
  int64_t real_elapsed;
  int is_virtual;
};

static int real_sleep_root(braid_task *self, void *arg) {
  struct real_ctx *c = arg;
  c->is_virtual = braid_loop_is_virtual(braid_task_loop(self));
  braid_time_t t0 = braid_now(self);
  int64_t r0 = real_ns();
  CHECK_INT(braid_sleep(self, 20 * BRAID_MSEC), 0);
  c->loop_elapsed = braid_now(self) - t0;
  c->real_elapsed = real_ns() - r0;
  return 0;
}

static void test_real_clock_short_sleep_takes_real_time(void **state) {
  (void)state;
  struct real_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(real_sleep_root, &c), 0);
  assert_int_equal(c.is_virtual, 0);
  /* The loop's clock says the full duration passed... */
  assert_true(c.loop_elapsed >= 20 * BRAID_MSEC);
  /* ...and so does the OS clock (1 ms of slack for timer granularity). */
  assert_true(c.real_elapsed >= 19 * BRAID_MSEC);
  assert_true(c.real_elapsed < 5 * BRAID_SEC);
}

static void test_now_without_task_is_the_real_monotonic_clock(void **state) {
  (void)state;
  braid_time_t a = braid_now(NULL);
  os_sleep_ns(3 * BRAID_MSEC);
  braid_time_t b = braid_now(NULL);
  assert_true(a > 0);
  assert_true(b - a >= 3 * BRAID_MSEC);
  assert_true(b - a < 5 * BRAID_SEC);
}

struct loop_now_ctx {
  braid_loop *loop;
  braid_time_t from_thread, real_before, real_after, in_task;
  int virtual_from_thread;
};

static void *loop_now_from_thread(void *arg) {
  struct loop_now_ctx *c = arg;
  c->real_before = braid_now(NULL);
  c->from_thread = braid_loop_now(c->loop);
  c->real_after = braid_now(NULL);
  c->virtual_from_thread = braid_loop_is_virtual(c->loop);
  return NULL;
}

static int loop_now_root(braid_task *self, void *arg) {
  struct loop_now_ctx *c = arg;
  c->loop = braid_task_loop(self);
  c->in_task = braid_loop_now(c->loop);
  CHECK_INT(in_thread(loop_now_from_thread, c), 0);
  return 0;
}

static void test_loop_now_from_another_thread_is_the_real_clock(void **state) {
  (void)state;
  struct loop_now_ctx c;
  memset(&c, 0, sizeof c);
  const braid_time_t start = 100000 * BRAID_SEC; /* far from the real clock */
  assert_int_equal(run_virtual_at(loop_now_root, &c, start), 0);
  assert_int_equal(c.in_task, start);
  assert_true(c.from_thread >= c.real_before);
  assert_true(c.from_thread <= c.real_after);
  assert_int_equal(c.virtual_from_thread, 1);
}

/* ---- statistics ------------------------------------------------------ */

struct stats_ctx {
  braid_loop_stats before, spawned, after, after_switch;
  int rc_before, rc_spawned, rc_after;
};

static int stats_child(braid_task *self, void *arg) {
  (void)arg;
  return braid_checkpoint(self);
}

static int stats_root(braid_task *self, void *arg) {
  struct stats_ctx *c = arg;
  braid_loop *loop = braid_task_loop(self);
  c->before.size = c->spawned.size = c->after.size = sizeof(braid_loop_stats);
  c->rc_before = braid_loop_get_stats(loop, &c->before);
  braid_group *g = open_group(self);
  for (int i = 0; i < 3; i++)
    CHECK_INT(braid_group_spawn(g, stats_child, NULL, NULL, NULL), 0);
  c->rc_spawned = braid_loop_get_stats(loop, &c->spawned);
  CHECK_INT(braid_group_child_count(g), 3);
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_child_count(g), 0);
  CHECK_INT(braid_group_free(g), 0);
  c->rc_after = braid_loop_get_stats(loop, &c->after);
  return 0;
}

static void test_loop_stats_count_tasks_and_switches(void **state) {
  (void)state;
  struct stats_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(stats_root, &c), 0);
  assert_int_equal(c.rc_before, 0);
  assert_int_equal(c.rc_spawned, 0);
  assert_int_equal(c.rc_after, 0);
  assert_int_equal(c.before.tasks_alive, 1); /* the root */
  assert_int_equal(c.spawned.tasks_alive, 4);
  assert_int_equal(c.spawned.tasks_spawned - c.before.tasks_spawned, 3);
  assert_int_equal(c.after.tasks_alive, 1);
  assert_true(c.after.switches > c.before.switches);
  assert_true(c.after.stacks_mapped >= c.after.stacks_cached);
}

/* ---- versions and error names ---------------------------------------- */

static void test_version_matches_the_header(void **state) {
  (void)state;
  unsigned expected = (BRAID_VERSION_MAJOR << 16) | (BRAID_VERSION_MINOR << 8) | BRAID_VERSION_PATCH;
  assert_int_equal(braid_version(), expected);
  char s[32];
  snprintf(s, sizeof s, "%d.%d.%d", BRAID_VERSION_MAJOR, BRAID_VERSION_MINOR, BRAID_VERSION_PATCH);
  assert_string_equal(braid_version_string(), s);
}

static void test_every_error_code_has_a_name_and_description(void **state) {
  (void)state;
  static const struct {
    int code;
    const char *name;
  } codes[] = {
      {BRAID_EINVAL, "BRAID_EINVAL"},
      {BRAID_ENOMEM, "BRAID_ENOMEM"},
      {BRAID_ECANCELED, "BRAID_ECANCELED"},
      {BRAID_ETIMEDOUT, "BRAID_ETIMEDOUT"},
      {BRAID_ESTATE, "BRAID_ESTATE"},
      {BRAID_EFAILED, "BRAID_EFAILED"},
      {BRAID_EPENDING, "BRAID_EPENDING"},
      {BRAID_ETHREAD, "BRAID_ETHREAD"},
      {BRAID_EDEADLK, "BRAID_EDEADLK"},
      {BRAID_EPERM, "BRAID_EPERM"},
      {BRAID_EWOULDBLOCK, "BRAID_EWOULDBLOCK"},
      {BRAID_EEOF, "BRAID_EEOF"},
      {BRAID_EBROKEN, "BRAID_EBROKEN"},
      {BRAID_ECLOSED, "BRAID_ECLOSED"},
      {BRAID_ESYS, "BRAID_ESYS"},
  };
  const char *unknown = braid_strerror(-12345);
  assert_string_equal(unknown, "unknown error");
  assert_string_equal(braid_strerror(0), "success");
  assert_string_equal(braid_errname(0), "BRAID_OK");
  assert_string_equal(braid_errname(-12345), "BRAID_E?");
  assert_string_equal(braid_errname(3), "BRAID_E?");
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    assert_string_equal(braid_errname(codes[i].code), codes[i].name);
    const char *d = braid_strerror(codes[i].code);
    assert_non_null(d);
    assert_true(strlen(d) > 0);
    assert_string_not_equal(d, "unknown error");
    for (size_t j = 0; j < i; j++)
      assert_string_not_equal(d, braid_strerror(codes[j].code));
  }
}

/* ---- stepped root ---------------------------------------------------- */

struct stepped_root_ctx {
  int steps;
  int first_resume;
  int is_stepped;
  int current_is_self;
  char name[64];
};

static int stepped_root(braid_task *self, void *ctx, int resume) {
  struct stepped_root_ctx *c = ctx;
  c->steps++;
  c->first_resume = resume;
  c->is_stepped = braid_task_is_stepped(self);
  c->current_is_self = braid_current_task() == self;
  snprintf(c->name, sizeof c->name, "%s", braid_task_name(self));
  return 23;
}

static void test_run_stepped_returns_root_result_after_one_step(void **state) {
  (void)state;
  struct stepped_root_ctx c;
  memset(&c, 0, sizeof c);
  c.first_resume = -1;
  assert_int_equal(run_stepped_virtual(stepped_root, &c), 23);
  assert_int_equal(c.steps, 1);
  assert_int_equal(c.first_resume, 0);
  assert_int_equal(c.is_stepped, 1);
  assert_int_equal(c.current_is_self, 1);
  assert_string_equal(c.name, "root");
  assert_int_equal(braid_run_stepped(NULL, NULL, NULL), BRAID_EINVAL);
}

/* ---- one loop per thread --------------------------------------------- */

struct thread_run {
  braid_time_t start;
  int value;
  int rc;
  braid_time_t woke_at;
};

static int thread_run_root(braid_task *self, void *arg) {
  struct thread_run *t = arg;
  CHECK_INT(braid_sleep(self, 2 * BRAID_SEC), 0);
  t->woke_at = braid_now(self);
  return t->value;
}

static void *thread_run_main(void *arg) {
  struct thread_run *t = arg;
  t->rc = run_virtual_at(thread_run_root, t, t->start);
  return NULL;
}

static void test_each_thread_runs_its_own_loop(void **state) {
  (void)state;
  struct thread_run a = {.start = 0, .value = 101}, b = {.start = 50 * BRAID_SEC, .value = 202};
  pthread_t ta, tb;
  assert_int_equal(pthread_create(&ta, NULL, thread_run_main, &a), 0);
  assert_int_equal(pthread_create(&tb, NULL, thread_run_main, &b), 0);
  assert_int_equal(pthread_join(ta, NULL), 0);
  assert_int_equal(pthread_join(tb, NULL), 0);
  assert_int_equal(a.rc, 101);
  assert_int_equal(b.rc, 202);
  assert_int_equal(a.woke_at, 2 * BRAID_SEC);
  assert_int_equal(b.woke_at, 52 * BRAID_SEC);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_run_returns_root_result),
      BT(test_run_with_null_opts_uses_real_clock),
      BT(test_run_clock_option_selects_virtual_or_real),
      BT(test_run_rejects_null_fn_and_bad_options),
      BT(test_run_inside_a_running_loop_is_estate),
      BT(test_run_twice_in_sequence_on_one_thread),
      BT(test_current_task_is_the_running_task_and_null_outside),
      BT(test_current_task_is_null_on_a_plain_thread_while_a_loop_runs),
      BT(test_task_names_default_and_option),
      BT(test_root_name_option_names_the_root),
      BT(test_task_name_of_any_length_is_copied),
      BT(test_task_ids_are_positive_unique_and_never_reused),
      BT(test_task_accessors_accept_null),
      BT(test_tasks_of_a_run_share_its_loop_and_keep_user_data),
      BT(test_virtual_clock_starts_at_start_time_and_jumps_over_sleeps),
      BT(test_virtual_clock_stands_still_while_any_task_can_run),
      BT(test_virtual_clock_before_zero_saturates_sleeps_and_deadlines),
      BT(test_real_clock_short_sleep_takes_real_time),
      BT(test_now_without_task_is_the_real_monotonic_clock),
      BT(test_loop_now_from_another_thread_is_the_real_clock),
      BT(test_loop_stats_count_tasks_and_switches),
      BT(test_version_matches_the_header),
      BT(test_every_error_code_has_a_name_and_description),
      BT(test_run_stepped_returns_root_result_after_one_step),
      BT(test_each_thread_runs_its_own_loop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
