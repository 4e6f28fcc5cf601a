/*
 * bench_sync.c — micro-benchmarks of the synchronization primitives
 * (section 7 of braid.h), impl "braid".
 *
 * Same harness and output as bench_braid.c: each bench runs a warm-up
 * repetition, then `RUNS` timed repetitions, and reports the median. Output
 * is a table, or with --json one JSON object per line (see bench/README.md).
 * --quick divides N by 10.
 *
 *   lock_uncontended_task    braid_lock_acquire + braid_lock_release from a
 *                            lone stackful task; ns per pair
 *   lock_uncontended_thread  the same from a plain thread (task NULL)
 *   lock_pingpong            two stackful tasks on one loop take turns
 *                            holding one lock: acquire, checkpoint (the other
 *                            task runs and queues in acquire), release (the
 *                            lock passes to it). Every acquire but the first
 *                            waits; ns per hand-off of the lock
 *   task_thread_handoff      a stackful task and a plain thread pass a token
 *                            back and forth through two semaphores; ns per
 *                            one-way hand-off
 *   channel_buffered         one stackful task sends to another through a
 *                            channel with a buffer of 1024; msg/s
 *   channel_rendezvous       the same with buffer 0 (rendezvous); msg/s
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "braid.h"
#include "harness.h"

static double t0, t1;

/* ---- lock_uncontended_task / _thread ---- */
static void lock_loop(braid_task *self, long n) {
  braid_lock *lock;
  BENCH_CHECK(braid_lock_new(&lock));
  BENCH_CHECK(braid_lock_acquire(self, lock)); /* warm */
  BENCH_CHECK(braid_lock_release(self, lock));
  t0 = now_ns();
  for (long i = 0; i < n; i++) {
    braid_lock_acquire(self, lock);
    braid_lock_release(self, lock);
  }
  t1 = now_ns();
  BENCH_CHECK(braid_lock_free(lock));
}
static int lock_task_root(braid_task *self, void *arg) {
  lock_loop(self, *(long *)arg);
  return 0;
}
static double rep_lock_task(long n) {
  bench_run(lock_task_root, &n, BRAID_CLOCK_VIRTUAL);
  return (t1 - t0) / n;
}
static double rep_lock_thread(long n) {
  lock_loop(NULL, n); /* the main thread runs no loop here: a plain thread */
  return (t1 - t0) / n;
}

/* ---- lock_pingpong ---- */
typedef struct {
  braid_lock *lock;
  long n;
  int last;      /* the last owner (0 or 1); guarded by the lock */
  long handoffs; /* acquisitions by the other task than the last owner */
} pingpong;
typedef struct {
  pingpong *pp;
  int me;
} taker_arg;
static int taker(braid_task *self, void *arg) {
  taker_arg *a = arg;
  pingpong *pp = a->pp;
  for (long i = 0; i < pp->n; i++) {
    BENCH_CHECK(braid_lock_acquire(self, pp->lock));
    if (pp->last != a->me) {
      pp->last = a->me;
      pp->handoffs++;
    }
    BENCH_CHECK(braid_checkpoint(self)); /* the other task runs and queues for the lock */
    BENCH_CHECK(braid_lock_release(self, pp->lock));
  }
  return 0;
}
static int pingpong_root(braid_task *self, void *arg) {
  pingpong *pp = arg;
  taker_arg a = {pp, 0}, b = {pp, 1};
  braid_group *g;
  BENCH_CHECK(braid_group_open(self, &g));
  BENCH_CHECK(braid_group_spawn(g, taker, &a, NULL, NULL));
  BENCH_CHECK(braid_group_spawn(g, taker, &b, NULL, NULL));
  t0 = now_ns();
  BENCH_CHECK(braid_group_close(g, 0));
  t1 = now_ns();
  braid_group_free(g);
  return 0;
}
static double rep_lock_pingpong(long n) {
  pingpong pp = {NULL, n, -1, 0};
  BENCH_CHECK(braid_lock_new(&pp.lock));
  bench_run(pingpong_root, &pp, BRAID_CLOCK_VIRTUAL);
  BENCH_CHECK(braid_lock_free(pp.lock));
  if (pp.handoffs < 2 * n - 1)
    fprintf(stderr, "bench_sync: lock_pingpong: only %ld of %ld acquisitions were hand-offs\n", pp.handoffs, 2 * n);
  return (t1 - t0) / pp.handoffs;
}

/* ---- task_thread_handoff ---- */
typedef struct {
  braid_semaphore *to_thread, *to_task;
  long n;
} handoff;
static void *handoff_thread(void *arg) {
  handoff *h = arg;
  for (long i = 0; i < h->n; i++) {
    BENCH_CHECK(braid_semaphore_acquire(NULL, h->to_thread));
    BENCH_CHECK(braid_semaphore_release(h->to_task));
  }
  return NULL;
}
static int handoff_root(braid_task *self, void *arg) {
  handoff *h = arg;
  t0 = now_ns();
  for (long i = 0; i < h->n; i++) {
    BENCH_CHECK(braid_semaphore_release(h->to_thread));
    BENCH_CHECK(braid_semaphore_acquire(self, h->to_task));
  }
  t1 = now_ns();
  return 0;
}
static double rep_handoff(long n) {
  handoff h = {NULL, NULL, n};
  BENCH_CHECK(braid_semaphore_new(0, 0, &h.to_thread));
  BENCH_CHECK(braid_semaphore_new(0, 0, &h.to_task));
  pthread_t th;
  if (pthread_create(&th, NULL, handoff_thread, &h)) {
    fprintf(stderr, "bench_sync: pthread_create failed\n");
    exit(1);
  }
  /* real clock: the loop sleeps in the poller while the thread has the token */
  bench_run(handoff_root, &h, BRAID_CLOCK_REAL);
  pthread_join(th, NULL);
  BENCH_CHECK(braid_semaphore_free(h.to_thread));
  BENCH_CHECK(braid_semaphore_free(h.to_task));
  return (t1 - t0) / (2.0 * n);
}

/* ---- channel_buffered / channel_rendezvous ---- */
typedef struct {
  braid_sender *tx;
  braid_receiver *rx;
  long n, received;
} chan_bench;
static int sender(braid_task *self, void *arg) {
  chan_bench *c = arg;
  for (long i = 1; i <= c->n; i++)
    BENCH_CHECK(braid_channel_send(self, c->tx, (void *)(uintptr_t)i));
  return braid_sender_close(c->tx);
}
static int receiver(braid_task *self, void *arg) {
  chan_bench *c = arg;
  for (;;) {
    void *item;
    int rc = braid_channel_receive(self, c->rx, &item);
    if (rc == BRAID_EEOF) break;
    BENCH_CHECK(rc);
    if ((uintptr_t)item != (uintptr_t)++c->received) {
      fprintf(stderr, "bench_sync: channel: item %lu out of order\n", (unsigned long)(uintptr_t)item);
      exit(1);
    }
  }
  return braid_receiver_close(c->rx);
}
static int chan_root(braid_task *self, void *arg) {
  braid_group *g;
  BENCH_CHECK(braid_group_open(self, &g));
  BENCH_CHECK(braid_group_spawn(g, receiver, arg, NULL, NULL));
  BENCH_CHECK(braid_group_spawn(g, sender, arg, NULL, NULL));
  t0 = now_ns();
  BENCH_CHECK(braid_group_close(g, 0));
  t1 = now_ns();
  braid_group_free(g);
  return 0;
}
static double rep_channel(long n, size_t buffer) {
  chan_bench c = {NULL, NULL, n, 0};
  BENCH_CHECK(braid_channel_new(buffer, NULL, &c.tx, &c.rx));
  bench_run(chan_root, &c, BRAID_CLOCK_VIRTUAL);
  if (c.received != n) {
    fprintf(stderr, "bench_sync: channel: %ld of %ld items received\n", c.received, n);
    exit(1);
  }
  return n / ((t1 - t0) / 1e9);
}
static double rep_channel_buffered(long n) { return rep_channel(n, 1024); }
static double rep_channel_rendezvous(long n) { return rep_channel(n, 0); }

int main(int argc, char **argv) {
  bench_args(argc, argv, "synchronization benchmarks");
  bench("lock_uncontended_task", "ns/op", rep_lock_task, 20000000);
  bench("lock_uncontended_thread", "ns/op", rep_lock_thread, 20000000);
  bench("lock_pingpong", "ns/op", rep_lock_pingpong, 1000000);
  bench("task_thread_handoff", "ns/op", rep_handoff, 20000);
  bench("channel_buffered", "msg/s", rep_channel_buffered, 5000000);
  bench("channel_rendezvous", "msg/s", rep_channel_rendezvous, 2000000);
  return 0;
}
