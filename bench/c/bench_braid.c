/*
 * bench_braid.c — micro-benchmarks of the C core.
 *
 * Each bench runs a warm-up repetition, then `runs` timed repetitions of a
 * loop of N operations, and reports the median per-operation time. Output is
 * a table, or with --json one JSON object per line (see bench/README.md).
 * --quick divides N by 10.
 *
 *   raw_switch        one braid__ctx_jump (the assembly switch alone)
 *   task_switch       two stackful tasks yielding to each other, per yield
 *   task_switch_stepped  the same with two stepped tasks, per step
 *   checkpoint        braid_checkpoint of a lone task (no switch needed)
 *   spawn_join        open a group, spawn one trivial task, close (per task)
 *   spawn_join_batch  spawn 10,000 trivial tasks into one group, close (per task)
 *   scope             braid_scope_new + enter + exit + unref, no deadline
 *   scope_timeout     the same with a deadline (braid_move_on_after)
 *   cancel_100k       cancel a group of 100,000 sleeping stepped tasks, until close returns
 *   cancel_25k_stackful  the same with 25,000 stackful tasks (guard pages: see README)
 *   idle_task_mem     resident bytes per idle sleeping stackful task (10,000 tasks)
 *   idle_task_mem_stepped  the same for stepped tasks (100,000 tasks)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "braid.h"
#include "harness.h"
#include "../../core/ctx.h"

/* ---- raw_switch ---- */
static braid__fiber f_main, f_other;
static long raw_left;
static void raw_entry(void) {
  braid__fiber_started(&f_other);
  for (;;)
    braid__fiber_switch(&f_other, &f_main, 0);
}
static double rep_raw_switch(long n) {
  static char *stack;
  if (!stack) {
    stack = aligned_alloc(4096, 65536);
    braid__fiber_init_thread(&f_main);
    braid__fiber_init(&f_other, stack, 65536, raw_entry);
  }
  raw_left = n;
  double t0 = now_ns();
  for (long i = 0; i < n; i++)
    braid__fiber_switch(&f_main, &f_other, 0);
  return (now_ns() - t0) / (2.0 * n);
}

/* ---- task_switch ---- */
static long sw_n;
static double sw_t0, sw_t1;

/* Run `root` on a loop with `clock`; it times its n operations into
 * sw_t0/sw_t1. Returns the time per operation. */
static double per_op(braid_fn root, long n, int clock) {
  bench_run(root, &n, clock);
  return (sw_t1 - sw_t0) / n;
}
static int yielder(braid_task *self, void *arg) {
  (void)arg;
  for (long i = 0; i < sw_n; i++)
    braid_checkpoint(self);
  return 0;
}
static int sw_root(braid_task *self, void *arg) {
  (void)arg;
  braid_group *g;
  braid_group_open(self, &g);
  braid_group_spawn(g, yielder, NULL, NULL, NULL);
  braid_group_spawn(g, yielder, NULL, NULL, NULL);
  braid_checkpoint(self); /* let both start */
  sw_t0 = now_ns();
  braid_group_close(g, 0);
  sw_t1 = now_ns();
  braid_group_free(g);
  return 0;
}
static double rep_task_switch(long n) {
  sw_n = n;
  bench_run(sw_root, NULL, BRAID_CLOCK_VIRTUAL);
  return (sw_t1 - sw_t0) / (2.0 * n);
}

/* stepped yielders: the step function is the whole body */
typedef struct {
  long left;
} step_ctx;
static int step_yielder(braid_task *self, void *ctx, int resume) {
  (void)resume;
  step_ctx *c = ctx;
  if (c->left-- <= 0) return 0;
  return braid_checkpoint(self);
}
static int sws_root(braid_task *self, void *arg) {
  (void)arg;
  step_ctx a = {sw_n}, b = {sw_n};
  braid_group *g;
  braid_group_open(self, &g);
  braid_group_spawn_stepped(g, step_yielder, &a, NULL, NULL);
  braid_group_spawn_stepped(g, step_yielder, &b, NULL, NULL);
  sw_t0 = now_ns();
  braid_group_close(g, 0);
  sw_t1 = now_ns();
  braid_group_free(g);
  return 0;
}
static double rep_task_switch_stepped(long n) {
  sw_n = n;
  bench_run(sws_root, NULL, BRAID_CLOCK_VIRTUAL);
  return (sw_t1 - sw_t0) / (2.0 * n);
}

/* ---- checkpoint ---- */
static int cp_root(braid_task *self, void *arg) {
  long n = *(long *)arg;
  sw_t0 = now_ns();
  for (long i = 0; i < n; i++)
    braid_checkpoint(self);
  sw_t1 = now_ns();
  return 0;
}
static double rep_checkpoint(long n) { return per_op(cp_root, n, BRAID_CLOCK_VIRTUAL); }

/* ---- spawn_join ---- */
static int trivial(braid_task *self, void *arg) {
  (void)self;
  (void)arg;
  return 0;
}
static int sj_root(braid_task *self, void *arg) {
  long n = *(long *)arg;
  braid_group *g;
  /* warm the stack cache */
  braid_group_open(self, &g);
  braid_group_spawn(g, trivial, NULL, NULL, NULL);
  braid_group_close(g, 0);
  braid_group_free(g);
  sw_t0 = now_ns();
  for (long i = 0; i < n; i++) {
    braid_group_open(self, &g);
    braid_group_spawn(g, trivial, NULL, NULL, NULL);
    braid_group_close(g, 0);
    braid_group_free(g);
  }
  sw_t1 = now_ns();
  return 0;
}
static double rep_spawn_join(long n) { return per_op(sj_root, n, BRAID_CLOCK_VIRTUAL); }

static int sjb_root(braid_task *self, void *arg) {
  long n = *(long *)arg;
  braid_group *g;
  braid_group_open(self, &g);
  braid_group_spawn(g, trivial, NULL, NULL, NULL);
  braid_group_close(g, 0);
  braid_group_free(g);
  sw_t0 = now_ns();
  for (long done = 0; done < n; done += 10000) {
    braid_group_open(self, &g);
    for (int i = 0; i < 10000; i++)
      braid_group_spawn(g, trivial, NULL, NULL, NULL);
    braid_group_close(g, 0);
    braid_group_free(g);
  }
  sw_t1 = now_ns();
  return 0;
}
static double rep_spawn_join_batch(long n) {
  n = (n + 9999) / 10000 * 10000;
  return per_op(sjb_root, n, BRAID_CLOCK_VIRTUAL);
}

/* ---- scopes ---- */
static int scope_root(braid_task *self, void *arg) {
  long n = *(long *)arg;
  sw_t0 = now_ns();
  for (long i = 0; i < n; i++) {
    braid_scope *s;
    braid_scope_new(BRAID_NEVER, 0, &s);
    braid_scope_enter(self, s);
    braid_scope_exit(s, 0);
    braid_scope_unref(s);
  }
  sw_t1 = now_ns();
  return 0;
}
static int scope_dl_root(braid_task *self, void *arg) {
  long n = *(long *)arg;
  sw_t0 = now_ns();
  for (long i = 0; i < n; i++) {
    braid_scope *s;
    braid_move_on_after(self, 3600 * BRAID_SEC, &s);
    braid_scope_exit(s, 0);
    braid_scope_unref(s);
  }
  sw_t1 = now_ns();
  return 0;
}
static double rep_scope(long n) { return per_op(scope_root, n, BRAID_CLOCK_VIRTUAL); }
static double rep_scope_dl(long n) {
  return per_op(scope_dl_root, n, BRAID_CLOCK_REAL); /* the deadline check reads the clock */
}

/* ---- cancellation of many sleepers ---- */
static int sleep_forever_stepped(braid_task *self, void *ctx, int resume) {
  (void)ctx;
  if (resume == BRAID_ECANCELED) return BRAID_ECANCELED;
  return braid_sleep_forever(self);
}
static int sleeper(braid_task *self, void *arg) {
  (void)arg;
  return braid_sleep_forever(self);
}
static int cancel_root(braid_task *self, void *arg) {
  long n = ((long *)arg)[0], stepped = ((long *)arg)[1];
  braid_group *g;
  braid_group_open(self, &g);
  for (long i = 0; i < n; i++) {
    if (stepped)
      braid_group_spawn_stepped(g, sleep_forever_stepped, NULL, NULL, NULL);
    else
      braid_group_spawn(g, sleeper, NULL, NULL, NULL);
  }
  braid_cancel_shielded_checkpoint(self); /* everyone is asleep now */
  sw_t0 = now_ns();
  braid_scope_cancel(braid_group_scope(g));
  braid_group_close(g, 0);
  sw_t1 = now_ns();
  braid_group_free(g);
  return 0;
}
static double rep_cancel(long n, long stepped) {
  long args[2] = {n, stepped};
  bench_run(cancel_root, args, BRAID_CLOCK_VIRTUAL);
  return (sw_t1 - sw_t0) / 1e6;
}
static double rep_cancel_100k(long n) {
  (void)n;
  return rep_cancel(100000, 1);
}
static double rep_cancel_25k(long n) {
  (void)n;
  return rep_cancel(25000, 0);
}

/* ---- memory per idle task ---- */
static long rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, rss = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
    fclose(f);
  }
  return rss * sysconf(_SC_PAGESIZE);
}
static double mem_result;
static int mem_root(braid_task *self, void *arg) {
  long n = ((long *)arg)[0], stepped = ((long *)arg)[1];
  braid_group *g;
  braid_group_open(self, &g);
  long before = rss_bytes();
  for (long i = 0; i < n; i++) {
    if (stepped)
      braid_group_spawn_stepped(g, sleep_forever_stepped, NULL, NULL, NULL);
    else
      braid_group_spawn(g, sleeper, NULL, NULL, NULL);
  }
  braid_cancel_shielded_checkpoint(self);
  mem_result = (double)(rss_bytes() - before) / n;
  braid_scope_cancel(braid_group_scope(g));
  braid_group_close(g, 0);
  braid_group_free(g);
  return 0;
}
static double rep_mem(long n, long stepped) {
  long args[2] = {n, stepped};
  bench_run(mem_root, args, BRAID_CLOCK_VIRTUAL);
  return mem_result;
}
static double rep_mem_stackful(long n) {
  (void)n;
  return rep_mem(10000, 0);
}
static double rep_mem_stepped(long n) {
  (void)n;
  return rep_mem(100000, 1);
}

int main(int argc, char **argv) {
  bench_args(argc, argv, "C benchmarks");
  bench("raw_switch", "ns/op", rep_raw_switch, 10000000);
  bench("task_switch", "ns/op", rep_task_switch, 2000000);
  bench("task_switch_stepped", "ns/op", rep_task_switch_stepped, 2000000);
  bench("checkpoint", "ns/op", rep_checkpoint, 5000000);
  bench("spawn_join", "ns/op", rep_spawn_join, 1000000);
  bench("spawn_join_batch", "ns/op", rep_spawn_join_batch, 1000000);
  bench("scope", "ns/op", rep_scope, 5000000);
  bench("scope_timeout", "ns/op", rep_scope_dl, 5000000);
  bench("cancel_100k", "ms", rep_cancel_100k, 1);
  bench("cancel_25k_stackful", "ms", rep_cancel_25k, 1);
  bench("idle_task_mem", "bytes/task", rep_mem_stackful, 1);
  bench("idle_task_mem_stepped", "bytes/task", rep_mem_stepped, 1);
  return 0;
}
