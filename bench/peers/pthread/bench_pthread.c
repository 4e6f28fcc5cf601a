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

#define BENCH_IMPL "pthread"
#include "harness.h" /* bench/c/harness.h: the same measuring loop as braid's benches */

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
  bench_args(argc, argv, "peer benchmarks");
  bench("lock_uncontended_thread", "ns/op", rep_lock_uncontended, 20000000);
  bench("task_thread_handoff", "ns/op", rep_handoff, 20000);
  bench("lock_pingpong", "ns/op", rep_pingpong, 20000);
  return 0;
}
