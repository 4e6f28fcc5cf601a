/*
 * test_ctx.c — what a context switch must preserve, and the loop's host
 * hooks (poll callbacks, watched file descriptor).
 *
 * Runs in every build (assembly switch, ucontext fallback, sanitizers), so
 * each implementation of the switch is held to the same rules.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <fenv.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---- FP control state is per task ---------------------------------- */

struct round_ctx {
  int seen_by_other;  /* rounding mode the second task saw */
  int kept_by_first;  /* rounding mode the first task had after switching */
  double up, nearest; /* 1/3 rounded both ways, computed in each task */
};

static volatile double third_num = 1.0, third_den = 3.0;

static int rounds_up(braid_task *self, void *arg) {
  struct round_ctx *c = arg;
  fesetround(FE_UPWARD);
  CHECK_INT(braid_checkpoint(self), 0); /* the other task runs here */
  c->kept_by_first = fegetround();
  c->up = third_num / third_den;
  fesetround(FE_TONEAREST);
  return 0;
}

static int rounds_default(braid_task *self, void *arg) {
  struct round_ctx *c = arg;
  c->seen_by_other = fegetround();
  c->nearest = third_num / third_den;
  CHECK_INT(braid_checkpoint(self), 0);
  return 0;
}

static int round_root(braid_task *self, void *arg) {
  braid_group *g;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, rounds_up, arg, NULL, NULL), 0);
  CHECK_INT(braid_group_spawn(g, rounds_default, arg, NULL, NULL), 0);
  CHECK_INT(braid_group_close(g, 0), 0);
  braid_group_free(g);
  return 0;
}

static void test_ctx_rounding_mode_is_per_task(void **state) {
  (void)state;
  struct round_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(round_root, &c), 0);
  assert_int_equal(c.seen_by_other, FE_TONEAREST);
  assert_int_equal(c.kept_by_first, FE_UPWARD);
  assert_true(c.up > c.nearest); /* the division really rounded upwards */
  assert_int_equal(fegetround(), FE_TONEAREST);
}

/* ---- callee-saved registers survive many switches ------------------ */

struct regs_ctx {
  long sums[4];
  double fsums[4];
};

/* Many live values across the checkpoint: at -O2 they sit in callee-saved
 * registers (integer and floating point). */
static int __attribute__((noinline)) busy(braid_task *self, long seed, long *out, double *fout) {
  long a = seed, b = seed * 3, c = seed * 5, d = seed * 7, e = seed * 11, f = seed * 13;
  double x = (double)seed / 2, y = (double)seed / 4, z = (double)seed / 8, w = (double)seed / 16;
  for (int i = 0; i < 100; i++) {
    if (braid_checkpoint(self) != 0) return -1;
    a += 1, b += 2, c += 3, d += 4, e += 5, f += 6;
    x += 0.5, y += 0.25, z += 0.125, w += 0.0625;
  }
  *out = a + b + c + d + e + f;
  *fout = x + y + z + w;
  return 0;
}

static int regs_task(braid_task *self, void *arg) {
  struct regs_ctx *c = arg;
  long id = (long)braid_task_user(self);
  return busy(self, id + 1, &c->sums[id], &c->fsums[id]);
}

static int regs_root(braid_task *self, void *arg) {
  braid_group *g;
  CHECK_INT(braid_group_open(self, &g), 0);
  for (long i = 0; i < 4; i++) {
    braid_task *t;
    CHECK_INT(braid_group_spawn(g, regs_task, arg, NULL, &t), 0);
    braid_task_set_user(t, (void *)i);
  }
  CHECK_INT(braid_group_close(g, 0), 0);
  braid_group_free(g);
  return 0;
}

static void test_ctx_callee_saved_registers_survive_switches(void **state) {
  (void)state;
  struct regs_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(regs_root, &c), 0);
  for (long i = 0; i < 4; i++) {
    long s = i + 1;
    assert_int_equal(c.sums[i], s * (1 + 3 + 5 + 7 + 11 + 13) + 100 * (1 + 2 + 3 + 4 + 5 + 6));
    double fs = s / 2.0 + s / 4.0 + s / 8.0 + s / 16.0 + 100 * (0.5 + 0.25 + 0.125 + 0.0625);
    assert_true(fabs(c.fsums[i] - fs) < 1e-9);
  }
}

/* ---- a task can use its stack, and stacks are reused ---------------- */

static int __attribute__((noinline)) deep(int n) {
  volatile char buf[1024];
  memset((char *)buf, n & 0xff, sizeof buf);
  return n == 0 ? buf[0] : deep(n - 1) + buf[10];
}

static int stack_user(braid_task *self, void *arg) {
  (void)self;
  *(int *)arg = deep(100); /* ~100 KiB of a 256 KiB stack */
  return 0;
}

static int stack_root(braid_task *self, void *arg) {
  braid_group *g;
  static int out[8];
  for (int round = 0; round < 2; round++) {
    CHECK_INT(braid_group_open(self, &g), 0);
    for (int i = 0; i < 8; i++)
      CHECK_INT(braid_group_spawn(g, stack_user, &out[i], NULL, NULL), 0);
    CHECK_INT(braid_group_close(g, 0), 0);
    braid_group_free(g);
  }
  braid_loop_stats st = {.size = sizeof st};
  CHECK_INT(braid_loop_get_stats(braid_task_loop(self), &st), 0);
  *(braid_loop_stats *)arg = st;
  for (int i = 0; i < 8; i++)
    CHECK_INT(out[i], deep(100));
  return 0;
}

static void test_ctx_tasks_use_deep_stacks_and_stacks_are_reused(void **state) {
  (void)state;
  braid_loop_stats st;
  memset(&st, 0, sizeof st);
  assert_int_equal(run_virtual(stack_root, &st), 0);
  /* 16 tasks ran one after the other: the root's stack plus two that
   * alternate (a task's stack is recycled just after it ends) served them. */
  assert_int_equal(st.tasks_spawned, 17);
  assert_true(st.stacks_mapped <= 3);
  assert_true(st.switches >= 16); /* at least one switch into each task */
}

/* ---- host hooks ---------------------------------------------------- */

struct hook_ctx {
  int before, after;
  int fd_calls;
  int pipe_fds[2];
  int balanced;
};

static void before_poll(void *ud) {
  struct hook_ctx *h = ud;
  h->before++;
}
static void after_poll(void *ud) {
  struct hook_ctx *h = ud;
  h->after++;
  if (h->after != h->before) h->balanced = 0;
}
static void on_fd(void *ud) {
  struct hook_ctx *h = ud;
  char b;
  if (read(h->pipe_fds[0], &b, 1) == 1) h->fd_calls++;
}

static void *writer(void *arg) {
  struct hook_ctx *h = arg;
  os_sleep_ns(20 * 1000 * 1000);
  if (write(h->pipe_fds[1], "x", 1) != 1) return NULL;
  return arg;
}

static int hook_root(braid_task *self, void *arg) {
  struct hook_ctx *h = arg;
  CHECK_INT(braid_sleep(self, 5 * BRAID_MSEC), 0); /* the loop blocks: hooks run */
  /* wait until the fd callback has run, sleeping in short steps */
  for (int i = 0; i < 400 && h->fd_calls == 0; i++)
    CHECK_INT(braid_sleep(self, 5 * BRAID_MSEC), 0);
  return 0;
}

static void test_ctx_poll_hooks_and_watched_fd_run_on_the_loop(void **state) {
  (void)state;
  struct hook_ctx h;
  memset(&h, 0, sizeof h);
  h.balanced = 1;
  assert_int_equal(pipe(h.pipe_fds), 0);
  braid_run_opts o = run_opts(BRAID_CLOCK_REAL);
  o.before_poll = before_poll;
  o.after_poll = after_poll;
  o.poll_ud = &h;
  o.watch_fd = h.pipe_fds[0];
  o.on_fd = on_fd;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, writer, &h), 0);
  assert_int_equal(braid_run(hook_root, &h, &o), 0);
  void *res;
  pthread_join(th, &res);
  assert_ptr_equal(res, &h);
  assert_int_equal(h.fd_calls, 1);
  assert_true(h.before >= 1);
  assert_int_equal(h.before, h.after);
  assert_int_equal(h.balanced, 1);
  close(h.pipe_fds[0]);
  close(h.pipe_fds[1]);
}

static int noop_root(braid_task *self, void *arg) {
  (void)self;
  (void)arg;
  return 0;
}

static void test_ctx_watch_fd_negative_with_callback_is_einval(void **state) {
  (void)state;
  braid_run_opts o = run_opts(BRAID_CLOCK_REAL);
  o.watch_fd = -1;
  o.on_fd = on_fd;
  assert_int_equal(braid_run(noop_root, NULL, &o), BRAID_EINVAL);
}

static void test_ctx_coop_budget_out_of_range_is_einval(void **state) {
  (void)state;
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  o.coop_budget = 1000001;
  assert_int_equal(braid_run(noop_root, NULL, &o), BRAID_EINVAL);
  o.coop_budget = 1000000;
  assert_int_equal(braid_run(noop_root, NULL, &o), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_ctx_rounding_mode_is_per_task),
      BT(test_ctx_callee_saved_registers_survive_switches),
      BT(test_ctx_tasks_use_deep_stacks_and_stacks_are_reused),
      BT(test_ctx_poll_hooks_and_watched_fd_run_on_the_loop),
      BT(test_ctx_watch_fd_negative_with_callback_is_einval),
      BT(test_ctx_coop_budget_out_of_range_is_einval),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
