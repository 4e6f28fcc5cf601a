/*
 * test_sync_stress.c — one Lock, one Semaphore and one Channel hammered at
 * once by 4 plain threads (one of them through callback waiters) and 2
 * loops on their own pthreads with 100 tasks each (stackful and stepped),
 * some waits cut short by tiny deadlines or cancelled callback waiters.
 * Invariants: mutual exclusion (at most one holder of the lock, at most 3
 * of the semaphore's units in use), no lost wake-up (everything finishes),
 * every message delivered exactly once and in order per sender, and the
 * objects end as they started.
 */
#include "sync_helpers.h"

#include <stdio.h>
#include <stdlib.h>

#if defined(__SANITIZE_THREAD__)
#define TASK_OPS 50
#define THREAD_OPS 1000
#define TASK_MSGS 50
#define THREAD_MSGS 1000
#else
#define TASK_OPS 100
#define THREAD_OPS 2000
#define TASK_MSGS 100
#define THREAD_MSGS 2000
#endif

#define LOOPS 2
#define TASKS_PER_LOOP 100
#define PLAIN_THREADS 4
#define SEM_UNITS 3
#define CHAN_BUFFER 8

/* Senders: half the tasks of each loop and plain threads 0 and 1;
 * receivers: the other half, thread 2 and thread 3 (callback waiters). */
#define TASK_SENDERS (LOOPS * TASKS_PER_LOOP / 2)
#define SENDERS (TASK_SENDERS + 2)
#define MAX_MSGS (THREAD_MSGS > TASK_MSGS ? THREAD_MSGS : TASK_MSGS)

typedef struct shared {
  braid_lock *l;
  braid_semaphore *s;
  atomic_int in_cs, in_sem;
  atomic_int cs_violations, sem_violations;
  atomic_long lock_ops, sem_ops, cancelled_waits;
  atomic_long received, fifo_violations, bad_items;
  atomic_uchar delivered[SENDERS][MAX_MSGS];
  atomic_int finished; /* actor threads (plain or loop) done */
} shared;

enum { A_TASK, A_STEPPED, A_THREAD, A_CB_THREAD };

typedef struct actor {
  co_state co;
  shared *sh;
  int kind;
  int sender_id; /* >= 0: sends; -1: receives */
  int msgs;
  int ops;
  braid_sender *tx;
  braid_receiver *rx;
  /* stepped state */
  int i, phase;
  void *item;
  int last_seq[SENDERS];
  uint64_t token; /* callback waiters */
} actor;

static void *msg(int sender, int seq) { return (void *)(uintptr_t)(((uintptr_t)sender << 20) | ((uintptr_t)seq + 1)); }

static void record_item(actor *a, void *item) {
  uintptr_t v = (uintptr_t)item;
  int sender = (int)(v >> 20), seq = (int)(v & 0xfffff) - 1;
  if (sender < 0 || sender >= SENDERS || seq < 0 || seq >= MAX_MSGS) {
    atomic_fetch_add(&a->sh->bad_items, 1);
    return;
  }
  atomic_fetch_add(&a->sh->delivered[sender][seq], 1);
  if (seq <= a->last_seq[sender]) atomic_fetch_add(&a->sh->fifo_violations, 1);
  a->last_seq[sender] = seq;
  atomic_fetch_add(&a->sh->received, 1);
}

static void enter_cs(shared *sh) {
  if (atomic_fetch_add(&sh->in_cs, 1) != 0) atomic_fetch_add(&sh->cs_violations, 1);
}
static void leave_cs(shared *sh) {
  atomic_fetch_sub(&sh->in_cs, 1);
  atomic_fetch_add(&sh->lock_ops, 1);
}
static void enter_sem(shared *sh) {
  if (atomic_fetch_add(&sh->in_sem, 1) >= SEM_UNITS) atomic_fetch_add(&sh->sem_violations, 1);
}
static void leave_sem(shared *sh) {
  atomic_fetch_sub(&sh->in_sem, 1);
  atomic_fetch_add(&sh->sem_ops, 1);
}

/* ---- stackful tasks and plain threads ------------------------------------------------ */

/* Acquire the lock, as a stackful task (self) or a plain thread (NULL);
 * every 5th attempt with a 20 us deadline (retried when it expires). */
static void lock_with_deadlines(braid_task *self, actor *a, int i) {
  if (i % 5 == 4) {
    braid_scope *s = NULL;
    if (self) {
      CHECK_INT(braid_move_on_after(self, 20 * USEC, &s), 0);
    } else {
      s = new_scope(braid_now(NULL) + 20 * USEC, 0);
      CHECK_INT(braid_scope_enter(NULL, s), 0);
    }
    int rc = braid_lock_acquire(self, a->sh->l);
    CHECK_INT(braid_scope_exit(s, rc), 0);
    CHECK_INT(braid_scope_unref(s), 0);
    if (rc == 0) return;
    CHECK_INT(rc, BRAID_ECANCELED);
    atomic_fetch_add(&a->sh->cancelled_waits, 1);
  }
  CHECK_INT(braid_lock_acquire(self, a->sh->l), 0);
}

/* Send the actor's messages, or receive until the end of the stream; as a
 * stackful task (self) or a plain thread (NULL). */
static void channel_phase(braid_task *self, actor *a) {
  if (a->sender_id >= 0) {
    for (int i = 0; i < a->msgs; i++)
      if (!CHECK_INT(braid_channel_send(self, a->tx, msg(a->sender_id, i)), 0)) break;
    CHECK_INT(braid_sender_free(a->tx), 0);
  } else {
    void *item;
    int rc;
    while ((rc = braid_channel_receive(self, a->rx, &item)) == 0)
      record_item(a, item);
    CHECK_INT(rc, BRAID_EEOF);
    CHECK_INT(braid_receiver_free(a->rx), 0);
  }
}

static int task_body(braid_task *self, void *arg) {
  actor *a = arg;
  shared *sh = a->sh;
  for (int i = 0; i < a->ops && check_failures() == 0; i++) {
    lock_with_deadlines(self, a, i);
    enter_cs(sh);
    if (i % 3 == 0) CHECK_INT(braid_checkpoint(self), 0); /* others queue up meanwhile */
    leave_cs(sh);
    CHECK_INT(braid_lock_release(self, sh->l), 0);
    CHECK_INT(braid_semaphore_acquire(self, sh->s), 0);
    enter_sem(sh);
    if (i % 2 == 0) CHECK_INT(braid_checkpoint(self), 0);
    leave_sem(sh);
    CHECK_INT(braid_semaphore_release(sh->s), 0);
  }
  channel_phase(self, a);
  return 0;
}

/* ---- stepped tasks ------------------------------------------------------------------- */

static int step_body(braid_task *self, void *ctx, int resume) {
  actor *a = ctx;
  shared *sh = a->sh;
  switch (a->co.pc) {
  case 0:
    for (a->i = 0; a->i < a->ops; a->i++) {
      AWAIT(&a->co, braid_lock_acquire(self, sh->l));
      if (!CHECK_INT(a->co.rc, 0)) return 0;
      enter_cs(sh);
      if (a->i % 3 == 0) {
        AWAIT(&a->co, braid_checkpoint(self));
        CHECK_INT(a->co.rc, 0);
      }
      leave_cs(sh);
      CHECK_INT(braid_lock_release(self, sh->l), 0);
      AWAIT(&a->co, braid_semaphore_acquire(self, sh->s));
      if (!CHECK_INT(a->co.rc, 0)) return 0;
      enter_sem(sh);
      if (a->i % 2 == 1) {
        AWAIT(&a->co, braid_checkpoint(self));
        CHECK_INT(a->co.rc, 0);
      }
      leave_sem(sh);
      CHECK_INT(braid_semaphore_release(sh->s), 0);
    }
    if (a->sender_id >= 0) {
      for (a->i = 0; a->i < a->msgs; a->i++) {
        AWAIT(&a->co, braid_channel_send(self, a->tx, msg(a->sender_id, a->i)));
        if (!CHECK_INT(a->co.rc, 0)) break;
      }
      CHECK_INT(braid_sender_free(a->tx), 0);
    } else {
      for (;;) {
        AWAIT(&a->co, braid_channel_receive(self, a->rx, &a->item));
        if (a->co.rc != 0) break;
        record_item(a, a->item);
      }
      CHECK_INT(a->co.rc, BRAID_EEOF);
      CHECK_INT(braid_receiver_free(a->rx), 0);
    }
    return 0;
  }
  return CO_FELL_OFF;
}

/* ---- loops --------------------------------------------------------------------------- */

typedef struct loop_arg {
  actor *actors; /* TASKS_PER_LOOP of them */
  shared *sh;
} loop_arg;

static int loop_root(braid_task *self, void *arg) {
  loop_arg *la = arg;
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  braid_spawn_opts o = spawn_opts(NULL, 64 * 1024);
  for (int i = 0; i < TASKS_PER_LOOP; i++) {
    actor *a = &la->actors[i];
    if (a->kind == A_STEPPED)
      CHECK_INT(braid_group_spawn_stepped(g, step_body, a, NULL, NULL), 0);
    else
      CHECK_INT(braid_group_spawn(g, task_body, a, &o, NULL), 0);
  }
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void *loop_thread(void *arg) {
  loop_arg *la = arg;
  CHECK_INT(run_real(loop_root, la), 0);
  atomic_fetch_add(&la->sh->finished, 1);
  return NULL;
}

/* ---- plain threads ------------------------------------------------------------------- */

static void *thread_body(void *arg) {
  actor *a = arg;
  shared *sh = a->sh;
  for (int i = 0; i < a->ops && check_failures() == 0; i++) {
    lock_with_deadlines(NULL, a, i);
    enter_cs(sh);
    if (i % 7 == 0) sched_yield();
    leave_cs(sh);
    CHECK_INT(braid_lock_release(NULL, sh->l), 0);
    CHECK_INT(braid_semaphore_acquire(NULL, sh->s), 0);
    enter_sem(sh);
    leave_sem(sh);
    CHECK_INT(braid_semaphore_release(sh->s), 0);
  }
  channel_phase(NULL, a);
  atomic_fetch_add(&sh->finished, 1);
  return NULL;
}

/* A thread that waits only through callbacks, as a Go binding would. */
typedef struct cb_flag {
  atomic_int done, result;
} cb_flag;

static void flag_cb(void *ud, int result) {
  cb_flag *f = ud;
  atomic_store(&f->result, result);
  atomic_store(&f->done, 1);
}

/* Register with `reg`; wait for the callback. Every 4th wait is cancelled
 * after a moment and registered again unless it had completed. */
static int cb_wait(actor *a, int i, int (*reg)(actor *a, braid_wait_cb cb, void *ud, braid_wait **out)) {
  for (;;) {
    cb_flag f;
    atomic_store(&f.done, 0);
    atomic_store(&f.result, 1);
    braid_wait *w = NULL;
    int rc = reg(a, flag_cb, &f, &w);
    if (rc != BRAID_EPENDING) return rc;
    if (i % 4 == 3) {
      spin_for(2000);
      int rc_cancel = braid_wait_cancel(w);
      if (rc_cancel == 0) {
        CHECK(atomic_load(&f.done));
        CHECK_INT(atomic_load(&f.result), BRAID_ECANCELED);
        CHECK_INT(braid_wait_free(w), 0);
        atomic_fetch_add(&a->sh->cancelled_waits, 1);
        i = 0; /* do not cancel the retry */
        continue;
      }
      CHECK_INT(rc_cancel, BRAID_ESTATE);
    }
    for (unsigned n = 0; !atomic_load(&f.done); n++)
      if (n % 64 == 63) sched_yield();
    int result = atomic_load(&f.result);
    CHECK_INT(braid_wait_free(w), 0);
    return result;
  }
}

static int reg_lock(actor *a, braid_wait_cb cb, void *ud, braid_wait **out) {
  return braid_lock_acquire_cb(a->sh->l, a->token, cb, ud, out);
}
static int reg_sem(actor *a, braid_wait_cb cb, void *ud, braid_wait **out) {
  return braid_semaphore_acquire_cb(a->sh->s, cb, ud, out);
}
static int reg_recv(actor *a, braid_wait_cb cb, void *ud, braid_wait **out) {
  return braid_channel_receive_cb(a->rx, &a->item, cb, ud, out);
}

static void *cb_thread_body(void *arg) {
  actor *a = arg;
  shared *sh = a->sh;
  for (int i = 0; i < a->ops && check_failures() == 0; i++) {
    CHECK_INT(cb_wait(a, i, reg_lock), 0);
    enter_cs(sh);
    leave_cs(sh);
    CHECK_INT(braid_lock_release_owner(sh->l, a->token), 0);
    CHECK_INT(cb_wait(a, i, reg_sem), 0);
    enter_sem(sh);
    leave_sem(sh);
    CHECK_INT(braid_semaphore_release(sh->s), 0);
  }
  int rc;
  for (int i = 0; (rc = cb_wait(a, i, reg_recv)) == 0; i++)
    record_item(a, a->item);
  CHECK_INT(rc, BRAID_EEOF);
  CHECK_INT(braid_receiver_free(a->rx), 0);
  atomic_fetch_add(&sh->finished, 1);
  return NULL;
}

/* ---- the test -------------------------------------------------------------------------- */

/* Set an actor up as a sender (a clone of tx, the next sender id) or a
 * receiver (a clone of rx). */
static void actor_init(actor *a, shared *sh, int kind, int ops, int msgs, int sends, braid_sender *tx,
                       braid_receiver *rx, int *next_sender) {
  a->sh = sh;
  a->kind = kind;
  a->ops = ops;
  a->msgs = msgs;
  for (int k = 0; k < SENDERS; k++)
    a->last_seq[k] = -1;
  if (sends) {
    a->sender_id = (*next_sender)++;
    assert_int_equal(braid_sender_clone(tx, &a->tx), 0);
  } else {
    a->sender_id = -1;
    assert_int_equal(braid_receiver_clone(rx, &a->rx), 0);
  }
}

static void test_sync_stress_threads_and_two_loops_hammer_a_lock_a_semaphore_and_a_channel(void **state) {
  (void)state;
  shared *sh = calloc(1, sizeof *sh);
  actor *tasks = calloc(LOOPS * TASKS_PER_LOOP, sizeof *tasks);
  actor *threads = calloc(PLAIN_THREADS, sizeof *threads);
  assert_non_null(sh);
  assert_non_null(tasks);
  assert_non_null(threads);
  assert_int_equal(braid_lock_new(&sh->l), 0);
  assert_int_equal(braid_semaphore_new(SEM_UNITS, SEM_UNITS, &sh->s), 0);
  braid_sender *tx = NULL;
  braid_receiver *rx = NULL;
  assert_int_equal(braid_channel_new(CHAN_BUFFER, NULL, &tx, &rx), 0);

  int next_sender = 0;
  long expected_msgs = 0;
  for (int i = 0; i < LOOPS * TASKS_PER_LOOP; i++) {
    actor_init(&tasks[i], sh, i % 3 == 0 ? A_STEPPED : A_TASK, TASK_OPS, TASK_MSGS, i % 2 == 0, tx, rx, &next_sender);
    if (i % 2 == 0) expected_msgs += TASK_MSGS;
  }
  for (int i = 0; i < PLAIN_THREADS; i++) {
    actor_init(&threads[i], sh, i == 3 ? A_CB_THREAD : A_THREAD, THREAD_OPS, THREAD_MSGS, i < 2, tx, rx, &next_sender);
    threads[i].token = (uint64_t)(500 + i);
    if (i < 2) expected_msgs += THREAD_MSGS;
  }
  assert_int_equal(next_sender, SENDERS);
  /* Only the clones stay open: the end of stream comes when the last
   * sender is done. */
  assert_int_equal(braid_sender_free(tx), 0);
  assert_int_equal(braid_receiver_free(rx), 0);

  int64_t t0 = real_ns();
  loop_arg la[LOOPS];
  pthread_t lt[LOOPS], pt[PLAIN_THREADS];
  for (int i = 0; i < LOOPS; i++) {
    la[i].actors = &tasks[i * TASKS_PER_LOOP];
    la[i].sh = sh;
    assert_int_equal(pthread_create(&lt[i], NULL, loop_thread, &la[i]), 0);
  }
  for (int i = 0; i < PLAIN_THREADS; i++)
    assert_int_equal(
        pthread_create(&pt[i], NULL, threads[i].kind == A_CB_THREAD ? cb_thread_body : thread_body, &threads[i]), 0);

  /* No lost wake-up: everything finishes (a generous bound; a hang would
   * otherwise only show as the test's timeout). */
  const int actors = LOOPS + PLAIN_THREADS;
  while (atomic_load(&sh->finished) < actors && real_ns() - t0 < 240 * SEC)
    os_sleep_ns(5 * BRAID_MSEC);
  if (atomic_load(&sh->finished) < actors) {
    braid_lock_stats ls = {.size = sizeof ls};
    braid_semaphore_stats ss = {.size = sizeof ss};
    braid_lock_statistics(sh->l, &ls);
    braid_semaphore_statistics(sh->s, &ss);
    print_error("stuck: %d of %d actors finished; lock locked=%d waiting=%zu; semaphore value=%llu waiting=%zu; "
                "%ld lock ops, %ld semaphore ops, %ld items received\n",
                atomic_load(&sh->finished), actors, ls.locked, ls.waiting, (unsigned long long)ss.value, ss.waiting,
                atomic_load(&sh->lock_ops), atomic_load(&sh->sem_ops), atomic_load(&sh->received));
    fail_msg("lost wake-up: not every actor finished");
  }
  for (int i = 0; i < LOOPS; i++)
    assert_int_equal(pthread_join(lt[i], NULL), 0);
  for (int i = 0; i < PLAIN_THREADS; i++)
    assert_int_equal(pthread_join(pt[i], NULL), 0);
  int64_t elapsed = real_ns() - t0;

  long expected_lock_ops = (long)LOOPS * TASKS_PER_LOOP * TASK_OPS + (long)PLAIN_THREADS * THREAD_OPS;
  print_message("  %.2f s: %ld lock ops, %ld semaphore ops, %ld messages, %ld waits cut short\n", (double)elapsed / 1e9,
                atomic_load(&sh->lock_ops), atomic_load(&sh->sem_ops), atomic_load(&sh->received),
                atomic_load(&sh->cancelled_waits));
  assert_int_equal(check_failures(), 0);
  assert_int_equal(atomic_load(&sh->cs_violations), 0);
  assert_int_equal(atomic_load(&sh->sem_violations), 0);
  assert_int_equal(atomic_load(&sh->lock_ops), expected_lock_ops);
  assert_int_equal(atomic_load(&sh->sem_ops), expected_lock_ops);
  assert_int_equal(atomic_load(&sh->bad_items), 0);
  assert_int_equal(atomic_load(&sh->fifo_violations), 0);
  assert_int_equal(atomic_load(&sh->received), expected_msgs);
  for (int s = 0; s < SENDERS; s++) {
    int msgs = s < TASK_SENDERS ? TASK_MSGS : THREAD_MSGS;
    for (int q = 0; q < MAX_MSGS; q++)
      if (atomic_load(&sh->delivered[s][q]) != (q < msgs ? 1 : 0)) {
        print_error("sender %d message %d delivered %d times\n", s, q, atomic_load(&sh->delivered[s][q]));
        fail();
      }
  }
  /* Everything is as it started. */
  braid_lock_stats ls = {.size = sizeof ls};
  assert_int_equal(braid_lock_statistics(sh->l, &ls), 0);
  assert_int_equal(ls.locked, 0);
  assert_int_equal(ls.waiting, 0);
  braid_semaphore_stats ss = {.size = sizeof ss};
  assert_int_equal(braid_semaphore_statistics(sh->s, &ss), 0);
  assert_int_equal(ss.value, SEM_UNITS);
  assert_int_equal(ss.waiting, 0);
  assert_int_equal(braid_lock_free(sh->l), 0);
  assert_int_equal(braid_semaphore_free(sh->s), 0);
  free(sh);
  free(tasks);
  free(threads);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_sync_stress_threads_and_two_loops_hammer_a_lock_a_semaphore_and_a_channel),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
