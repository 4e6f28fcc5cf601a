/*
 * bench_pthread — POSIX threads peer benchmarks for braid's synchronization
 * benches (impl "pthread").
 *
 * Each bench runs one uncounted warm-up repetition, then RUNS timed
 * repetitions of a loop of N operations, and reports the median per-op time
 * (clock_gettime(CLOCK_MONOTONIC)). --quick divides N by 10.
 *
 *   lock_uncontended_thread  pthread_mutex_lock + pthread_mutex_unlock by one
 *                            thread, nobody else around; ns per pair.
 *   task_thread_handoff      two threads pass a token back and forth through
 *                            two sem_t (sem_post / sem_wait); ns per one-way
 *                            hand-off.
 *   lock_pingpong            two threads take turns: under one mutex, each
 *                            waits on a condvar until a turn variable names
 *                            it, then passes the turn and signals; ns per
 *                            turn hand-off.
 *
 * Usage: bench_pthread [--json] [--quick]
 */
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RUNS 5

static int json, quick;

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void report(const char *bench, const char *unit, double *v, int runs) {
  qsort(v, runs, sizeof *v, cmp_double);
  double med = runs % 2 ? v[runs / 2] : (v[runs / 2 - 1] + v[runs / 2]) / 2;
  if (json)
    printf("{\"bench\": \"%s\", \"impl\": \"pthread\", \"unit\": \"%s\", \"median\": %.2f, \"runs\": %d}\n", bench,
           unit, med, runs);
  else
    printf("%-24s %12.2f %s  (min %.2f, max %.2f, %d runs)\n", bench, med, unit, v[0], v[runs - 1], runs);
  fflush(stdout);
}

typedef double (*rep_fn)(long n); /* returns the per-op value of one repetition */

static void bench(const char *name, const char *unit, rep_fn fn, long n) {
  if (quick) n /= 10;
  if (n < 1) n = 1;
  double v[RUNS];
  fn(n); /* warm-up */
  for (int i = 0; i < RUNS; i++)
    v[i] = fn(n);
  report(name, unit, v, RUNS);
}

static void check(int rc, const char *what) {
  if (rc) {
    fprintf(stderr, "bench_pthread: %s: %s\n", what, strerror(rc));
    exit(1);
  }
}

/* ---- lock_uncontended_thread ---- */
static pthread_mutex_t lone = PTHREAD_MUTEX_INITIALIZER;
static double rep_lock_uncontended(long n) {
  double t0 = now_ns();
  for (long i = 0; i < n; i++) {
    pthread_mutex_lock(&lone);
    pthread_mutex_unlock(&lone);
  }
  return (now_ns() - t0) / n;
}

/* ---- task_thread_handoff: two semaphores ---- */
static sem_t ping, pong;
static void *ponger(void *arg) {
  long n = *(long *)arg;
  for (long i = 0; i < n; i++) {
    while (sem_wait(&ping)) {
    }
    sem_post(&pong);
  }
  return NULL;
}
static double rep_handoff(long n) {
  sem_init(&ping, 0, 0);
  sem_init(&pong, 0, 0);
  pthread_t t;
  check(pthread_create(&t, NULL, ponger, &n), "pthread_create");
  double t0 = now_ns();
  for (long i = 0; i < n; i++) {
    sem_post(&ping);
    while (sem_wait(&pong)) {
    }
  }
  double dt = now_ns() - t0;
  pthread_join(t, NULL);
  sem_destroy(&ping);
  sem_destroy(&pong);
  return dt / (2.0 * n);
}

/* ---- lock_pingpong: mutex + condvar turn variable ---- */
static pthread_mutex_t turn_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn_cv = PTHREAD_COND_INITIALIZER;
static int turn;
typedef struct {
  int me;
  long n;
} turn_arg;
static void *taker(void *arg) {
  turn_arg *a = arg;
  for (long i = 0; i < a->n; i++) {
    pthread_mutex_lock(&turn_mu);
    while (turn != a->me)
      pthread_cond_wait(&turn_cv, &turn_mu);
    turn = !a->me;
    pthread_cond_signal(&turn_cv);
    pthread_mutex_unlock(&turn_mu);
  }
  return NULL;
}
static double rep_pingpong(long n) {
  turn = 0;
  turn_arg a = {0, n}, b = {1, n};
  pthread_t ta, tb;
  double t0 = now_ns();
  check(pthread_create(&ta, NULL, taker, &a), "pthread_create");
  check(pthread_create(&tb, NULL, taker, &b), "pthread_create");
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  return (now_ns() - t0) / (2.0 * n);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json"))
      json = 1;
    else if (!strcmp(argv[i], "--quick"))
      quick = 1;
    else {
      fprintf(stderr, "usage: %s [--json] [--quick]\n", argv[0]);
      return 2;
    }
  }
  if (!json) printf("pthread peer benchmarks (median of %d runs)\n", RUNS);
  bench("lock_uncontended_thread", "ns/op", rep_lock_uncontended, 20000000);
  bench("task_thread_handoff", "ns/op", rep_handoff, 20000);
  bench("lock_pingpong", "ns/op", rep_pingpong, 20000);
  return 0;
}
