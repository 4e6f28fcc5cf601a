/*
 * bench_bridge.c — micro-benchmarks of the thread bridge (section 8 of
 * braid.h), impl "braid".
 *
 * Same harness and output as bench_braid.c: each bench runs a warm-up
 * repetition, then `RUNS` timed repetitions, and reports the median. Output
 * is a table, or with --json one JSON object per line (see bench/README.md).
 * --quick divides N by 10. Every loop here runs on the real clock.
 *
 *   to_thread_roundtrip   a stackful task calls braid_to_thread(fn) with a
 *                         trivial fn (returns 0) in a loop; the worker pool
 *                         is warm (one untimed call first); ns per call
 *   from_thread_run_roundtrip  a plain thread calls braid_from_thread_run
 *                         with a trivial task body, against a loop that runs
 *                         on another thread (braid_run on a pthread whose
 *                         root waits on an event); ns per call
 *   from_thread_run_sync_roundtrip  the same with braid_from_thread_run_sync
 *                         and a trivial fn; ns per call
 *   portal_call           braid_portal_call with a trivial task body from a
 *                         plain thread (the main thread); ns per call
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "braid.h"
#include "harness.h"

static int nop_fn(void *arg) {
  (void)arg;
  return 0;
}

static int nop_task(braid_task *self, void *arg) {
  (void)self;
  (void)arg;
  return 0;
}

static double t0, t1;

/* ---- to_thread_roundtrip ---- */
static int to_thread_root(braid_task *self, void *arg) {
  long n = *(long *)arg;
  BENCH_CHECK(braid_to_thread(self, nop_fn, NULL, 0, NULL)); /* a worker is idle from here on */
  t0 = now_ns();
  for (long i = 0; i < n; i++)
    BENCH_CHECK(braid_to_thread(self, nop_fn, NULL, 0, NULL));
  t1 = now_ns();
  return 0;
}
static double rep_to_thread(long n) {
  bench_run(to_thread_root, &n, BRAID_CLOCK_REAL);
  return (t1 - t0) / n;
}

/* ---- a loop hosted on another thread ---- */
typedef struct {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  braid_loop *loop; /* under mu: set once the root runs */
  braid_event *stop;
  int rc;
} host;

static int host_root(braid_task *self, void *arg) {
  host *h = arg;
  pthread_mutex_lock(&h->mu);
  h->loop = braid_loop_ref(braid_task_loop(self));
  pthread_cond_signal(&h->cv);
  pthread_mutex_unlock(&h->mu);
  return braid_event_wait(self, h->stop); /* requests run beside the root */
}
static void *host_main(void *arg) {
  host *h = arg;
  braid_run_opts o = bench_run_opts(BRAID_CLOCK_REAL);
  h->rc = braid_run(host_root, h, &o);
  return NULL;
}
static void host_start(host *h) {
  memset(h, 0, sizeof *h);
  pthread_mutex_init(&h->mu, NULL);
  pthread_cond_init(&h->cv, NULL);
  BENCH_CHECK(braid_event_new(&h->stop));
  if (pthread_create(&h->thread, NULL, host_main, h)) {
    fprintf(stderr, "bench_bridge: pthread_create failed\n");
    exit(1);
  }
  pthread_mutex_lock(&h->mu);
  while (!h->loop)
    pthread_cond_wait(&h->cv, &h->mu);
  pthread_mutex_unlock(&h->mu);
}
static void host_stop(host *h) {
  BENCH_CHECK(braid_event_set(h->stop));
  pthread_join(h->thread, NULL);
  BENCH_CHECK(h->rc);
  BENCH_CHECK(braid_loop_unref(h->loop));
  BENCH_CHECK(braid_event_free(h->stop));
  pthread_cond_destroy(&h->cv);
  pthread_mutex_destroy(&h->mu);
}

/* ---- from_thread_run_roundtrip / from_thread_run_sync_roundtrip ---- */
static double rep_from_thread_run(long n) {
  host h;
  host_start(&h);
  BENCH_CHECK(braid_from_thread_run(h.loop, nop_task, NULL)); /* warm: a stack is cached */
  t0 = now_ns();
  for (long i = 0; i < n; i++)
    BENCH_CHECK(braid_from_thread_run(h.loop, nop_task, NULL));
  t1 = now_ns();
  host_stop(&h);
  return (t1 - t0) / n;
}
static double rep_from_thread_run_sync(long n) {
  host h;
  host_start(&h);
  BENCH_CHECK(braid_from_thread_run_sync(h.loop, nop_fn, NULL));
  t0 = now_ns();
  for (long i = 0; i < n; i++)
    BENCH_CHECK(braid_from_thread_run_sync(h.loop, nop_fn, NULL));
  t1 = now_ns();
  host_stop(&h);
  return (t1 - t0) / n;
}

/* ---- portal_call ---- */
static double rep_portal_call(long n) {
  braid_portal *p;
  BENCH_CHECK(braid_portal_start(NULL, &p)); /* real clock by default */
  BENCH_CHECK(braid_portal_call(p, nop_task, NULL));
  t0 = now_ns();
  for (long i = 0; i < n; i++)
    BENCH_CHECK(braid_portal_call(p, nop_task, NULL));
  t1 = now_ns();
  BENCH_CHECK(braid_portal_stop(p, 0));
  return (t1 - t0) / n;
}

int main(int argc, char **argv) {
  bench_args(argc, argv, "thread bridge benchmarks");
  bench("to_thread_roundtrip", "ns/op", rep_to_thread, 50000);
  bench("from_thread_run_roundtrip", "ns/op", rep_from_thread_run, 50000);
  bench("from_thread_run_sync_roundtrip", "ns/op", rep_from_thread_run_sync, 50000);
  bench("portal_call", "ns/op", rep_portal_call, 50000);
  return 0;
}
