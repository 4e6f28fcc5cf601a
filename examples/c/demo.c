/*
 * demo.c — braid in one page: a task group, a deadline, a shield and a
 * failure, on the virtual clock so the output is the same on every run.
 *
 *   cc demo.c $(pkg-config --cflags --libs braid) -o demo && ./demo
 */
#include <braid.h>
#include <stdio.h>

static double ms(braid_task *self) { return (double)braid_now(self) / 1e6; }

static int say(braid_task *self, const char *what) {
  printf("[%6.1f ms] %-8s %s\n", ms(self), braid_task_name(self), what);
  return 0;
}

/* A worker that sleeps `arg` milliseconds, then reports. */
static int worker(braid_task *self, void *arg) {
  long n = (long)arg;
  int rc = braid_sleep(self, n * BRAID_MSEC);
  if (rc == BRAID_ECANCELED) {
    say(self, "cancelled while sleeping");
    /* Cleanup that must run even though we are cancelled: a shielded scope. */
    braid_scope *shield;
    braid_scope_new(BRAID_NEVER, BRAID_SHIELD, &shield);
    braid_scope_enter(self, shield);
    braid_sleep(self, 5 * BRAID_MSEC);
    say(self, "finished shielded cleanup (5 ms)");
    braid_scope_exit(shield, 0);
    braid_scope_unref(shield);
    return rc;
  }
  say(self, "done");
  return 0;
}

/* A task that fails after 30 ms: the group cancels its siblings. */
static int failing(braid_task *self, void *arg) {
  (void)arg;
  braid_sleep(self, 30 * BRAID_MSEC);
  say(self, "fails with code 42");
  return braid_task_fail(self, 42, NULL, NULL);
}

static int root(braid_task *self, void *arg) {
  (void)arg;
  say(self, "1. a deadline: move_on_after(20 ms) around a 100 ms sleep");
  braid_scope *deadline;
  braid_move_on_after(self, 20 * BRAID_MSEC, &deadline);
  int rc = braid_sleep(self, 100 * BRAID_MSEC);
  rc = braid_scope_exit(deadline, rc);
  printf("           sleep returned, scope exit -> %s, cancelled_caught=%d\n", braid_errname(rc),
         braid_scope_cancelled_caught(deadline));
  braid_scope_unref(deadline);

  say(self, "2. a task group: workers of 10 and 50 ms, and one that fails at 30 ms");
  braid_group *g;
  braid_group_open(self, &g);
  braid_spawn_opts o = {sizeof o, "fast", 0};
  braid_group_spawn(g, worker, (void *)10L, &o, NULL);
  o.name = "slow";
  braid_group_spawn(g, worker, (void *)50L, &o, NULL);
  o.name = "failing";
  braid_group_spawn(g, failing, NULL, &o, NULL);
  rc = braid_group_close(g, 0);
  printf("           group closed -> %s with %zu failure(s)", braid_errname(rc), braid_group_failure_count(g));
  int code;
  uint64_t id;
  if (braid_group_failure(g, 0, &code, NULL, &id) == 0)
    printf(": code %d from task %llu", code, (unsigned long long)id);
  printf("\n");
  braid_group_free(g);

  say(self, "3. fail_after(10 ms) around a 20 ms sleep");
  braid_scope *fa;
  braid_fail_after(self, 10 * BRAID_MSEC, &fa);
  rc = braid_scope_exit(fa, braid_sleep(self, 20 * BRAID_MSEC));
  printf("           -> %s (%s)\n", braid_errname(rc), braid_strerror(rc));
  braid_scope_unref(fa);
  return 0;
}

int main(void) {
  printf("braid %s demo (virtual clock)\n", braid_version_string());
  braid_run_opts opts = {.size = sizeof opts, .clock = BRAID_CLOCK_VIRTUAL};
  int rc = braid_run(root, NULL, &opts);
  printf("braid_run -> %s\n", braid_errname(rc));
  return rc == 0 ? 0 : 1;
}
