/*
 * wait.c — blocking and waking for the synchronization primitives.
 *
 * See sync.h for the life of a waiter. This file knows how each kind of
 * waiter blocks and is woken; the primitives only decide who gets what.
 *
 * Tasks block like any other task wait (braid__suspend) with an abort hook
 * that asks the primitive to cancel the waiter. A wake from another thread
 * goes through the task's loop: the task is queued on the loop's wake-up
 * list and the loop's uv_async is signalled, both under the loop's remote
 * mutex, which loop_destroy also takes — so the loop cannot vanish while a
 * waker still touches it, and the task (blocked until that wake is
 * processed) keeps its loop alive.
 *
 * Threads park on the futex word of their parker, a small reference-counted
 * object: a completer takes the parker out of the waiter, sets `done`, pokes
 * the parker and drops its reference, so the thread may return (freeing the
 * waiter on its stack) the moment it sees `done`, without waiting for the
 * poke. Cancellation of a thread's scope pokes the same parker, and the
 * thread re-checks its scopes and deadlines.
 */
#include <errno.h>
#include <stdlib.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sync.h"

static atomic_uint_fast64_t g_thread_ids = 1;

uint64_t braid_thread_id(void) {
  braid__thread *th = &braid__tls;
  if (!th->id) th->id = atomic_fetch_add(&g_thread_ids, 1);
  return th->id;
}

uint64_t braid__self_token(const braid_task *task) {
  return task ? braid__tok(task->id, BRAID__TOK_TASK) : braid__tok(braid_thread_id(), BRAID__TOK_THREAD);
}

void braid__tok_describe(uint64_t tok, int *kind, uint64_t *id) {
  static const int kinds[4] = {BRAID_OWNER_JOB, BRAID_OWNER_TASK, BRAID_OWNER_THREAD, BRAID_OWNER_FOREIGN};
  *kind = tok ? kinds[tok & 3] : BRAID_OWNER_NONE;
  *id = tok >> 2;
}

/* ---- futex ---- */

/* Before sleeping, spin for a short while: waking a sleeping thread costs
 * several microseconds (15-20 us on virtual machines), and the wake-ups a
 * thread waits for here (a hand-off, a finished job, a reply from a loop)
 * often come sooner. Every wake bumps the word, so the spin watches it.
 * Only with more than one CPU: on one, spinning just delays the waker. */
#define BRAID__SPIN_NS (25 * BRAID_USEC)

int braid__spin_ok(void) {
  static atomic_int ncpu;
  int n = atomic_load_explicit(&ncpu, memory_order_relaxed);
  if (!n) {
    n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    atomic_store_explicit(&ncpu, n > 0 ? n : 1, memory_order_relaxed);
  }
  return n > 1;
}

void braid__futex_wait(atomic_uint *addr, unsigned seen, braid_time_t deadline) {
  struct timespec ts, *tsp = NULL;
  if (braid__spin_ok()) {
    braid_time_t start = braid__real_now(), until = start + BRAID__SPIN_NS;
    if (deadline < until) until = deadline;
    for (;;) {
      for (int i = 0; i < 64; i++) {
        if (atomic_load_explicit(addr, memory_order_acquire) != seen) return;
        braid__cpu_relax();
      }
      if (braid__real_now() >= until) break;
    }
  }
  if (deadline != BRAID_NEVER) {
    braid_time_t d = deadline - braid__real_now();
    if (d <= 0) return;
    ts.tv_sec = (time_t)(d / BRAID_SEC);
    ts.tv_nsec = (long)(d % BRAID_SEC);
    tsp = &ts;
  }
  syscall(SYS_futex, (unsigned *)addr, FUTEX_WAIT_PRIVATE, seen, tsp, NULL, 0);
}

/* ---- parkers ---- */

/* Parkers use malloc, not the braid_set_allocator hook: one lives as long
 * as its thread, across any change of allocator. */
static pthread_key_t parker_key;
static pthread_once_t parker_once = PTHREAD_ONCE_INIT;

static void parker_thread_exit(void *p) { braid__parker_unref(p); }
static void parker_key_init(void) { pthread_key_create(&parker_key, parker_thread_exit); }

braid__parker *braid__thread_parker(braid__thread *th) {
  braid__parker *cur = __atomic_load_n(&th->parker, __ATOMIC_ACQUIRE);
  if (BRAID__LIKELY(cur != NULL)) return cur;
  pthread_once(&parker_once, parker_key_init);
  braid__parker *p = malloc(sizeof *p);
  if (!p) return NULL;
  atomic_init(&p->futex, 0);
  atomic_init(&p->refs, 1); /* the thread's, dropped at thread exit */
  pthread_setspecific(parker_key, p);
  __atomic_store_n(&th->parker, p, __ATOMIC_SEQ_CST); /* pokers read it from other threads */
  return p;
}

void braid__parker_poke(braid__parker *p) {
  atomic_fetch_add(&p->futex, 1);
  syscall(SYS_futex, (unsigned *)&p->futex, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

void braid__parker_unref(braid__parker *p) {
  if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1) free(p);
}

void braid__thread_poke(braid__thread *th) {
  braid__parker *p = __atomic_load_n(&th->parker, __ATOMIC_SEQ_CST);
  if (p) braid__parker_poke(p); /* no parker: it never waited */
}

/* ---- thread cancellation ---- */

int braid__thread_scopes_cancelled(braid_scope *s) {
  braid_time_t now = 0;
  for (; s; s = s->parent) {
    if (atomic_load_explicit(&s->cancel_bits, memory_order_acquire)) return 1;
    if (s->deadline != BRAID_NEVER) {
      if (!now) now = braid__real_now();
      if (s->deadline <= now) {
        atomic_fetch_or(&s->cancel_bits, BRAID__CANCEL_CALLED);
        return 1;
      }
    }
    if (s->shield) return 0;
  }
  return -1;
}

bool braid__thread_cancelled(braid__thread *th) {
  int r = braid__thread_scopes_cancelled(th->scope);
  if (r >= 0) return r;
  /* Above the thread's own scopes: a worker inherits its task's status. */
  return th->inherited && atomic_load_explicit(th->inherited, memory_order_acquire);
}

braid_time_t braid__thread_deadline(braid__thread *th) {
  braid_time_t d = BRAID_NEVER;
  for (braid_scope *s = th->scope; s; s = s->parent) {
    if (s->deadline < d) d = s->deadline;
    if (s->shield) break;
  }
  return d;
}

/* ---- entry checks ---- */

int braid__wait_check_thread(void) {
  braid__thread *th = &braid__tls;
  if (th->loop) return BRAID_ETHREAD; /* would block the loop: pass the task */
  if (braid__thread_cancelled(th)) return BRAID_ECANCELED;
  return 0;
}

int braid__done_yield_slow(braid_task *task, int rc) {
  braid_loop *loop = task->loop;
  loop->coop_left = loop->coop_budget;
  return braid__yield_value(task, rc);
}

int braid__wait_prepare(braid_task *task, braid__waiter **out, braid__waiter *stack_w) {
  braid__waiter *w = stack_w;
  if (task && task->stepped) {
    if (!task->waiter) {
      task->waiter = braid__alloc(sizeof *task->waiter);
      if (!task->waiter) return BRAID_ENOMEM;
    }
    w = task->waiter;
  }
  /* Field by field: a memset of the waiter is a slow `rep stos`. */
  braid__list_init(&w->link);
  braid__list_init(&w->dl_link);
  w->dl_lock_id = 0;
  w->item = NULL;
  w->prim = NULL;
  w->result = 0;
  atomic_init(&w->done, 0);
  w->flags = 0;
  w->cancel_asked = 0;
  w->parker = NULL;
  if (task) {
    w->kind = BRAID__W_TASK;
    w->who.task = task;
  } else {
    braid__parker *p = braid__thread_parker(&braid__tls);
    if (!p) return BRAID_ENOMEM;
    w->kind = BRAID__W_THREAD;
    w->who.thread = &braid__tls;
    w->parker = p;
  }
  w->owner = braid__self_token(task);
  *out = w;
  return 0;
}

/* ---- blocking ---- */

/* Lock the primitive a waiter currently belongs to (a condition waiter
 * moves from the condition to its lock, so re-check after locking). */
static braid__prim *lock_waiter_prim(braid__waiter *w) {
  for (;;) {
    braid__prim *p = __atomic_load_n(&w->prim, __ATOMIC_ACQUIRE);
    braid__spin_lock(&p->lock);
    if (__atomic_load_n(&w->prim, __ATOMIC_RELAXED) == p) return p;
    braid__spin_unlock(&p->lock);
  }
}

/* Ask the primitive to cancel w; returns BRAID__CANCEL_*. */
static int cancel_waiter(braid__waiter *w) {
  /* Completed already: its primitive may be gone (freed after the wait),
   * so do not touch it. */
  if (atomic_load_explicit(&w->done, memory_order_acquire)) return BRAID__CANCEL_TOO_LATE;
  braid__prim *p = lock_waiter_prim(w);
  int r = BRAID__CANCEL_TOO_LATE;
  if (!atomic_load_explicit(&w->done, memory_order_relaxed) && !(w->cancel_asked)) {
    r = p->ops->cancel(p, w);
    if (r == BRAID__CANCEL_DONE) {
      w->result = BRAID_ECANCELED;
      atomic_store_explicit(&w->done, 1, memory_order_release);
    } else {
      w->cancel_asked = 1; /* decided later: do not ask again */
    }
  }
  braid__spin_unlock(&p->lock);
  return r;
}

static int task_abort(braid_task *t) {
  braid__waiter *w = t->wait_obj;
  return cancel_waiter(w) == BRAID__CANCEL_DONE;
}

int braid__wait_block(braid_task *task, braid__prim *p, braid__waiter *w, braid__link *wl) {
  w->prim = p;
  if (task) {
    task->wait_obj = w;
    task->resume_mode = BRAID__RESUME_VALUE;
    task->state = BRAID__T_BLOCKED;
    task->abort = task_abort;
    braid__spin_unlock(&p->lock);
    if (wl) braid__wake_list(wl);
    return braid__suspend(task);
  }
  braid__thread *th = &braid__tls;
  braid__parker *pk = w->parker;
  atomic_fetch_add(&pk->refs, 1); /* for whoever completes the wait */
  braid__spin_unlock(&p->lock);
  if (wl) braid__wake_list(wl);
  for (;;) {
    unsigned seen = atomic_load(&pk->futex);
    if (atomic_load_explicit(&w->done, memory_order_acquire)) break;
    if (!(w->cancel_asked) && braid__thread_cancelled(th)) {
      if (cancel_waiter(w) == BRAID__CANCEL_DONE) {
        braid__parker_unref(pk); /* no completer will use it */
        return BRAID_ECANCELED;
      }
      continue;
    }
    braid__futex_wait(&pk->futex, seen, (w->cancel_asked) ? BRAID_NEVER : braid__thread_deadline(th));
  }
  return w->result; /* written before `done`; the completer no longer touches w */
}

/* ---- waking ---- */

void braid__post_wake(braid_task *t, int result) {
  braid_loop *loop = t->loop;
  t->resume = result; /* the resume mode stays as the waiter registered it */
  pthread_mutex_lock(&loop->remote_mu);
  t->runq_next = NULL;
  if (loop->remote_tasks_tail)
    loop->remote_tasks_tail->runq_next = t;
  else
    loop->remote_tasks_head = t;
  loop->remote_tasks_tail = t;
  atomic_store(&loop->remote_pending, 1);
  uv_async_send(&loop->uv_async);
  pthread_mutex_unlock(&loop->remote_mu);
}

static void cb_finish(braid_wait *h, int result);

/* Run a completed callback waiter's callback — never on a task's stack:
 * on a stackful task, the loop's scheduler runs it as soon as control is
 * back there. */
static void cb_complete(braid_wait *h) {
  braid_task *cur = braid__tls_current;
  if (cur && !cur->stepped) {
    braid_loop *loop = cur->loop;
    h->next_deferred = NULL;
    if (loop->deferred_tail)
      loop->deferred_tail->next_deferred = h;
    else
      loop->deferred_cbs = h;
    loop->deferred_tail = h;
  } else {
    cb_finish(h, h->w.result);
  }
}

BRAID__TLS braid__parker *braid__tls_pokes[BRAID__MAX_POKES];
BRAID__TLS int braid__tls_npokes;

void braid__wake_list_slow(braid__link *wl) {
  for (int i = 0; i < braid__tls_npokes; i++) {
    braid__parker_poke(braid__tls_pokes[i]);
    braid__parker_unref(braid__tls_pokes[i]);
  }
  braid__tls_npokes = 0;
  braid__link *l = wl->next;
  while (l != wl) {
    braid__link *next = l->next; /* read first: the waiter may be gone after its wake */
    braid__waiter *w = BRAID__CONTAINER(l, braid__waiter, link);
    l->prev = l->next = l;
    switch (w->kind) {
    case BRAID__W_TASK: {
      braid_task *t = w->who.task;
      if (t->loop == braid__tls.loop) {
        braid__wake(t, w->result); /* resume mode: as the waiter registered it */
      } else {
        braid__post_wake(t, w->result);
      }
      break;
    }
    default:
      cb_complete(w->who.cb);
    }
    l = next;
  }
  braid__list_init(wl);
}

/* ---- callback waiters ---- */

int braid__cb_new(braid_wait_cb cb, void *ud, uint64_t owner, braid_wait **out) {
  if (!cb || !out) return BRAID_EINVAL;
  braid_wait *h = braid__calloc(sizeof *h);
  if (!h) return BRAID_ENOMEM;
  braid__list_init(&h->w.link);
  braid__list_init(&h->w.dl_link);
  h->w.kind = BRAID__W_CB;
  h->w.who.cb = h;
  h->w.owner = owner;
  h->cb = cb;
  h->ud = ud;
  atomic_init(&h->refs, 2);
  *out = h;
  return 0;
}

void braid__cb_drop(braid_wait *h) { braid__free(h); }

static void cb_unref(braid_wait *h) {
  if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1) braid__free(h);
}

static void cb_finish(braid_wait *h, int result) {
  h->cb(h->ud, result);
  cb_unref(h);
}

void braid__run_deferred(braid_loop *loop) {
  while (loop->deferred_cbs) {
    braid_wait *h = loop->deferred_cbs;
    loop->deferred_cbs = h->next_deferred;
    if (!loop->deferred_cbs) loop->deferred_tail = NULL;
    cb_finish(h, h->w.result);
  }
}

int braid_wait_cancel(braid_wait *h) {
  if (!h) return BRAID_EINVAL;
  if (cancel_waiter(&h->w) != BRAID__CANCEL_DONE) return BRAID_ESTATE;
  cb_complete(h); /* result: BRAID_ECANCELED */
  return 0;
}

int braid_wait_free(braid_wait *h) {
  if (!h) return BRAID_EINVAL;
  braid_wait_cancel(h);
  /* A completion in progress (on another thread, or deferred to a loop's
   * scheduler) finishes its callback before the handle goes. */
  cb_unref(h);
  return 0;
}

/* ---- plain threads sleeping ---- */

int braid__thread_sleep_until(braid_time_t when) {
  braid__thread *th = &braid__tls;
  if (th->loop) return BRAID_ETHREAD;
  braid__parker *pk = braid__thread_parker(th);
  if (!pk) return BRAID_ENOMEM;
  for (;;) {
    unsigned seen = atomic_load(&pk->futex);
    if (braid__thread_cancelled(th)) return BRAID_ECANCELED;
    if (when != BRAID_NEVER && braid__real_now() >= when) return 0;
    braid_time_t d = braid__thread_deadline(th);
    braid__futex_wait(&pk->futex, seen, d < when ? d : when);
  }
}
