/*
 * bridge.c — the thread bridge: a worker thread blocked in a braid lock is
 * released by its task's deadline; a channel carries work from a plain
 * thread into tasks; a blocking portal serves a plain thread.
 *
 *   cc bridge.c $(pkg-config --cflags --libs braid) -o bridge && ./bridge
 */
#include <braid.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

static braid_lock *lock;

/* Runs on a worker thread: blocks on the lock like any thread would. */
static int blocked_worker(void *arg) {
  (void)arg;
  int rc = braid_lock_acquire(NULL, lock); /* the task's cancellation reaches here */
  printf("  worker: lock wait ended with %s\n", braid_errname(rc));
  if (rc == 0) braid_lock_release(NULL, lock);
  return rc;
}

static int holder(braid_task *self, void *arg) {
  (void)arg;
  braid_lock_acquire(self, lock);
  braid_sleep(self, 500 * BRAID_MSEC); /* holds the lock for half a second */
  braid_lock_release(self, lock);
  return 0;
}

static int deadline_task(braid_task *self, void *arg) {
  (void)arg;
  braid_scope *s;
  braid_move_on_after(self, 50 * BRAID_MSEC, &s);
  int rc = braid_to_thread(self, blocked_worker, NULL, 0, NULL);
  rc = braid_scope_exit(s, rc);
  printf("  task: to_thread under a 50 ms deadline -> %s, cancelled_caught=%d\n", braid_errname(rc),
         braid_scope_cancelled_caught(s));
  braid_scope_unref(s);
  return 0;
}

/* A plain thread feeding tasks through a channel. */
static void *producer(void *arg) {
  braid_sender *tx = arg;
  for (intptr_t i = 1; i <= 3; i++)
    braid_channel_send(NULL, tx, (void *)i); /* blocks the thread */
  braid_sender_close(tx);
  return NULL;
}

static int consumer(braid_task *self, void *arg) {
  braid_receiver *rx = arg;
  void *item;
  int rc;
  while ((rc = braid_channel_receive(self, rx, &item)) == 0)
    printf("  task: received %ld\n", (long)(intptr_t)item);
  printf("  task: channel says %s\n", braid_errname(rc));
  return 0;
}

static int root(braid_task *self, void *arg) {
  (void)arg;
  printf("1. a worker blocked on a braid lock, cancelled by its task's deadline\n");
  braid_group *g;
  braid_group_open(self, &g);
  braid_group_spawn(g, holder, NULL, NULL, NULL);
  braid_group_spawn(g, deadline_task, NULL, NULL, NULL);
  braid_group_close(g, 0);
  braid_group_free(g);

  printf("2. a plain thread sends into a channel, a task receives\n");
  braid_sender *tx;
  braid_receiver *rx;
  braid_channel_new(1, NULL, &tx, &rx);
  pthread_t t;
  pthread_create(&t, NULL, producer, tx);
  consumer(self, rx);
  pthread_join(t, NULL);
  braid_sender_free(tx);
  braid_receiver_free(rx);
  return 0;
}

static int portal_task(braid_task *self, void *arg) {
  braid_sleep(self, 10 * BRAID_MSEC);
  return (int)(intptr_t)arg * 2;
}

int main(void) {
  braid_lock_new(&lock);
  int rc = braid_run(root, NULL, NULL);
  braid_lock_free(lock);

  printf("3. a blocking portal: a loop on its own thread, called from main\n");
  braid_portal *portal;
  if (braid_portal_start(NULL, &portal) != 0) return 1;
  printf("  portal call -> %d\n", braid_portal_call(portal, portal_task, (void *)(intptr_t)21));
  braid_portal_stop(portal, 1);
  return rc == 0 ? 0 : 1;
}
