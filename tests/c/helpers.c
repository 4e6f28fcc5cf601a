/*
 * helpers.c — see helpers.h. Checks are counted in an atomic so that task
 * bodies, steps and helper pthreads may all report.
 */
#include "helpers.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static atomic_int failures;

static const char *maybe_errname(long long v) {
  if (v <= 0 && v >= -15) return braid_errname((int)v);
  return "";
}

int check_true_(int ok, const char *expr, const char *file, int line) {
  if (ok) return 1;
  atomic_fetch_add(&failures, 1);
  fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, expr);
  fflush(stderr);
  return 0;
}

int check_int_(long long actual, long long expected, const char *actual_expr, const char *expected_expr,
               const char *file, int line) {
  if (actual == expected) return 1;
  atomic_fetch_add(&failures, 1);
  fprintf(stderr, "%s:%d: CHECK failed: %s == %s: got %lld %s, expected %lld %s\n", file, line, actual_expr,
          expected_expr, actual, maybe_errname(actual), expected, maybe_errname(expected));
  fflush(stderr);
  return 0;
}

int check_str_(const char *actual, const char *expected, const char *actual_expr, const char *file, int line) {
  if (actual != NULL && expected != NULL && strcmp(actual, expected) == 0) return 1;
  if (actual == NULL && expected == NULL) return 1;
  atomic_fetch_add(&failures, 1);
  fprintf(stderr, "%s:%d: CHECK failed: %s: got \"%s\", expected \"%s\"\n", file, line, actual_expr,
          actual ? actual : "(null)", expected ? expected : "(null)");
  fflush(stderr);
  return 0;
}

int check_failures(void) { return atomic_load(&failures); }

void checks_reset(void) { atomic_store(&failures, 0); }

int bt_setup(void **state) {
  (void)state;
  checks_reset();
  return 0;
}

int bt_teardown(void **state) {
  (void)state;
  int n = check_failures();
  checks_reset();
  if (n != 0) {
    fprintf(stderr, "  %d check(s) failed in this test\n", n);
    return -1;
  }
  return 0;
}

braid_run_opts run_opts(int clock) {
  braid_run_opts o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.clock = clock;
  o.watch_fd = -1;
  return o;
}

static int run_with(braid_fn fn, void *arg, int clock, braid_time_t start) {
  braid_run_opts o = run_opts(clock);
  o.start_time = start;
  return braid_run(fn, arg, &o);
}

int run_virtual(braid_fn fn, void *arg) { return run_with(fn, arg, BRAID_CLOCK_VIRTUAL, 0); }

int run_virtual_at(braid_fn fn, void *arg, braid_time_t start_time) {
  return run_with(fn, arg, BRAID_CLOCK_VIRTUAL, start_time);
}

int run_real(braid_fn fn, void *arg) { return run_with(fn, arg, BRAID_CLOCK_REAL, 0); }

int run_stepped_virtual(braid_step_fn step, void *ctx) {
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  return braid_run_stepped(step, ctx, &o);
}

int run_stepped_real(braid_step_fn step, void *ctx) {
  braid_run_opts o = run_opts(BRAID_CLOCK_REAL);
  return braid_run_stepped(step, ctx, &o);
}

braid_spawn_opts spawn_opts(const char *name, size_t stack_size) {
  braid_spawn_opts o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.name = name;
  o.stack_size = stack_size;
  return o;
}

int in_thread(void *(*fn)(void *), void *arg) {
  pthread_t t;
  int e = pthread_create(&t, NULL, fn, arg);
  if (e != 0) return e;
  return pthread_join(t, NULL);
}

int fork_call(int (*fn)(void *), void *arg, int *signo) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return FORK_CRASHED;
  if (pid == 0) {
    /* cmocka catches these to fail a test and go on: here they must kill. */
    const int fatal[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
      signal(fatal[i], SIG_DFL);
    int rc = fn(arg);
    fflush(stdout);
    fflush(stderr);
    _exit((unsigned char)(signed char)rc);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status)) {
    if (signo) *signo = WTERMSIG(status);
    return FORK_CRASHED;
  }
  return (signed char)(unsigned char)WEXITSTATUS(status);
}

int64_t real_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void os_sleep_ns(int64_t ns) {
  struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

void tpayload_dtor(void *p) {
  tpayload *t = p;
  atomic_fetch_add(&t->dtor_calls, 1);
}
