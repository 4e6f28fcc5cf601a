/*
 * sync.h — the wait engine shared by the synchronization primitives.
 *
 * Every primitive starts with a braid__prim: a spin lock that guards its
 * queue(s) and slow-path state, and a table of operations. Waiters of three
 * kinds sit in one FIFO per queue:
 *
 *   TASK    a task of some loop. Stackful tasks keep the waiter on their
 *           stack; stepped tasks keep one allocated waiter for their life.
 *           Woken on their loop: directly when the completer runs on that
 *           loop's thread, else through the loop's wake-up queue.
 *   THREAD  a plain thread, parked on the futex word of its braid__thread.
 *   CB      a braid_wait handle: its callback is called once.
 *
 * The life of a wait, under the primitive's lock:
 *   enqueue (WAITING) -> completed by a hand-off (done = 1, result 0 or an
 *   error) or by a cancellation (done = 1, result BRAID_ECANCELED).
 * Exactly one of the two sets `done`, because both hold the lock; that is
 * how a hand-off racing a cancellation resolves to a single outcome and a
 * handed-off resource is never lost. Waking happens after the lock is
 * released (braid__waiter_wake), from a list the completer collected.
 *
 * Owner tokens name who owns a lock or borrows a limiter token without
 * dereferencing anything: (id << 2) | kind, with kind 1 = task (braid task
 * id), 2 = thread (braid_thread_id), 3 = foreign (the caller's token).
 */
#ifndef BRAID_SYNC_H
#define BRAID_SYNC_H

#include <sched.h>

#include "internal.h"

/* ---- spin lock ---- */

typedef struct braid__spin {
  atomic_int v;
} braid__spin;

static inline void braid__spin_lock(braid__spin *s) {
  for (int i = 0;; i++) {
    if (!atomic_load_explicit(&s->v, memory_order_relaxed) && !atomic_exchange_explicit(&s->v, 1, memory_order_acquire))
      return;
    if (i < 100)
      braid__cpu_relax();
    else
      sched_yield();
  }
}

static inline void braid__spin_unlock(braid__spin *s) { atomic_store_explicit(&s->v, 0, memory_order_release); }

/* A thread's parking spot: a futex word, reference counted so that a waker
 * may still poke it after the thread has returned from its wait (or even
 * ended). The thread holds one reference for its life (a TLS destructor
 * drops it); each wait hands one to its completer. */
typedef struct braid__parker {
  atomic_uint futex;
  atomic_int refs;
} braid__parker;

/* ---- owner tokens ---- */

#define BRAID__TOK_TASK 1u
#define BRAID__TOK_THREAD 2u
#define BRAID__TOK_FOREIGN 3u
#define BRAID__TOK_JOB 0u /* a braid_to_thread job (id > 0) */
#define BRAID__MAX_FOREIGN (((uint64_t)1) << 60)

static inline uint64_t braid__tok(uint64_t id, unsigned kind) { return (id << 2) | kind; }
BRAID__HIDDEN uint64_t braid__self_token(const braid_task *task); /* task, or the calling thread */
BRAID__HIDDEN void braid__tok_describe(uint64_t tok, int *kind, uint64_t *id);
BRAID__HIDDEN int braid__limiter_acquire_tok(braid_task *task, braid_limiter *l, uint64_t tok);
BRAID__HIDDEN int braid__limiter_release_tok(braid_limiter *l, uint64_t tok);

/* ---- waiters ---- */

enum { BRAID__W_TASK = 1, BRAID__W_THREAD, BRAID__W_CB };

/* What a primitive's cancel operation did to a waiter (prim lock held). */
enum {
  BRAID__CANCEL_TOO_LATE = 0, /* already completed by a hand-off */
  BRAID__CANCEL_DONE,         /* removed; complete it with BRAID_ECANCELED now */
  BRAID__CANCEL_DEFERRED,     /* will complete later with BRAID_ECANCELED (condition) */
};

typedef struct braid__prim braid__prim;

/* braid__waiter.flags */
#define BRAID__WF_CANCELLED 0x01 /* condition: cancelled before notified; report ECANCELED */
#define BRAID__WF_REACQUIRE 0x02 /* condition: queued on the lock to re-acquire it */

typedef struct braid__waiter {
  braid__link link;
  uint64_t owner; /* token of the waiter (locks, limiters) */
  void *item;     /* channel: item to send, or void ** to receive into */
  braid__prim *prim;
  union {
    braid_task *task;
    braid__thread *thread;
    braid_wait *cb;
  } who;
  int result;
  atomic_int done; /* set under the prim lock; a thread reads it without */
  uint8_t kind;
  uint8_t flags;         /* primitive-specific, under the prim lock */
  uint8_t cancel_asked;  /* a cancellation was deferred: do not ask again (waiting side) */
  braid__parker *parker; /* THREAD: a reference for the completer */
  braid__link dl_link;   /* deadlock registry (lock waits with detection on) */
  uint64_t dl_lock_id;
} braid__waiter;

typedef struct braid__prim_ops {
  int (*cancel)(braid__prim *p, braid__waiter *w); /* BRAID__CANCEL_* */
} braid__prim_ops;

struct braid__prim {
  braid__spin lock;
  const braid__prim_ops *ops;
};

BRAID__HIDDEN braid__parker *braid__thread_parker(braid__thread *th); /* NULL: no memory */
BRAID__HIDDEN void braid__parker_poke(braid__parker *p);
BRAID__HIDDEN void braid__parker_unref(braid__parker *p);
BRAID__HIDDEN void braid__thread_poke(braid__thread *th);

/* Parkers to poke once the completer has released the primitive's lock
 * (braid__wake_list); a futex system call inside the spin lock would make
 * the woken thread spin against it. */
#define BRAID__MAX_POKES 16
extern BRAID__HIDDEN BRAID__TLS braid__parker *braid__tls_pokes[BRAID__MAX_POKES];
extern BRAID__HIDDEN BRAID__TLS int braid__tls_npokes;

/* Mark w complete with `result` (prim lock held). A thread waiter reads
 * `done` without the lock and may return (freeing w, on its stack) as soon as
 * it is set, so its parker is taken out of w first, to be poked and released
 * after the lock. Other waiters go to the wake list `wl`, woken after the
 * lock is released. */
static inline void braid__complete(braid__link *wl, braid__waiter *w, int result) {
  braid__list_remove(&w->link);
  w->result = result;
  if (w->kind == BRAID__W_THREAD) {
    braid__parker *p = w->parker;
    atomic_store_explicit(&w->done, 1, memory_order_release);
    if (braid__tls_npokes < BRAID__MAX_POKES) {
      braid__tls_pokes[braid__tls_npokes++] = p;
    } else {
      braid__parker_poke(p);
      braid__parker_unref(p);
    }
  } else {
    atomic_store_explicit(&w->done, 1, memory_order_relaxed);
    braid__list_push(wl, &w->link);
  }
}

/* Wake every waiter of a wake list (prim lock released). */
BRAID__HIDDEN void braid__wake_list_slow(braid__link *wl);
static inline void braid__wake_list(braid__link *wl) {
  if (wl->next != wl || braid__tls_npokes) braid__wake_list_slow(wl);
}

/* Prepare the waiter of a blocking call by `task` (NULL: the calling
 * thread). Returns 0, or an error to return to the caller (ETHREAD, ESTATE,
 * EINVAL, ENOMEM, or ECANCELED... see braid__wait_begin). */
BRAID__HIDDEN int braid__wait_prepare(braid_task *task, braid__waiter **w, braid__waiter *stack_w);

/* Block on w, already enqueued on p, with p's lock held (released here;
 * then the waiters in wl, if any, are woken). Returns the outcome
 * (stackful task, thread) or BRAID_EPENDING. */
BRAID__HIDDEN int braid__wait_block(braid_task *task, braid__prim *p, braid__waiter *w, braid__link *wl);

/* Common entry checks of a blocking call: validity, thread rules, and a
 * cancelled caller (a task then yields and the result is ECANCELED, or
 * EPENDING on a stepped task). 0: go on. */
BRAID__HIDDEN int braid__wait_check_thread(void);
static inline int braid__wait_check(braid_task *task) {
  if (!task) return braid__wait_check_thread();
  int rc = braid__check_running(task);
  if (BRAID__UNLIKELY(rc)) return rc;
  if (BRAID__UNLIKELY(braid__scope_eff_cancelled(task->scope))) return braid__yield_value(task, BRAID_ECANCELED);
  return 0;
}

/* A task that completed its operation without waiting: a schedule point
 * that cannot fail (Trio's cancel_shielded_checkpoint), taken once every
 * coop_budget such operations of the loop. Threads: nothing. */
BRAID__HIDDEN int braid__done_yield_slow(braid_task *task, int rc);
static inline int braid__done_yield(braid_task *task, int rc) {
  if (!task || --task->loop->coop_left > 0) return rc;
  return braid__done_yield_slow(task, rc);
}

/* Thread cancellation (plain threads' own scopes, a worker's task). */
BRAID__HIDDEN bool braid__thread_cancelled(braid__thread *th);
/* A thread's scope chain from s: 1 cancelled (deadlines latched), 0 stopped
 * at a shield, -1 reached the top. */
BRAID__HIDDEN int braid__thread_scopes_cancelled(braid_scope *s);
BRAID__HIDDEN braid_time_t braid__thread_deadline(braid__thread *th);

BRAID__HIDDEN void braid__futex_wait(atomic_uint *addr, unsigned seen, braid_time_t deadline);
BRAID__HIDDEN int braid__thread_sleep_until(braid_time_t when);

/* Callback waiters */
struct braid_wait {
  braid__waiter w;
  braid_wait_cb cb;
  void *ud;
  atomic_int refs; /* the caller's + the completion's */
  braid_wait *next_deferred;
};
BRAID__HIDDEN int braid__cb_new(braid_wait_cb cb, void *ud, uint64_t owner, braid_wait **out);
BRAID__HIDDEN void braid__cb_drop(braid_wait *h); /* free a handle that was never enqueued */
BRAID__HIDDEN void braid__run_deferred(braid_loop *loop);

/* The lock's side of the condition (lock.c) */
BRAID__HIDDEN braid__prim *braid__lock_prim(braid_lock *l);
BRAID__HIDDEN int braid__lock_take_or_queue(braid_lock *l, braid__waiter *w);
BRAID__HIDDEN void braid__lock_handoff(braid_lock *l, braid__link *wl);
BRAID__HIDDEN int braid__lock_check_owner(braid_lock *l, uint64_t me);

/* Deadlock detection (lock.c) */
extern BRAID__HIDDEN atomic_int braid__dl_on;

#endif
