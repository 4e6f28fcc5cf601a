/*
 * lock.c — the Lock, and lock-cycle detection.
 *
 * State word: 0 when free, else the owner's token, plus CONTENDED (the top
 * bit) while waiters are queued. The fast paths are one compare-and-swap:
 * acquire 0 -> me, release me -> 0. A release that finds CONTENDED takes the
 * spin lock and hands the lock to the first waiter by writing that waiter's
 * token into the state word: ownership never passes through "free", so no
 * one can barge in ahead of the queue.
 *
 * Invariant: CONTENDED is set if and only if the queue is non-empty, and it
 * is only changed with the spin lock held. While it is set, the owner's
 * fast release fails, so under the spin lock the state word is stable.
 *
 * Deadlock detection (debug): a global registry of "token T waits for lock
 * L". Before blocking, the waiter follows owner -> lock it waits for ->
 * owner ... and refuses with BRAID_EDEADLK if the chain comes back to it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync.h"

#define CONTENDED (((uint64_t)1) << 63)

struct braid_lock {
  braid__prim base;
  _Atomic uint64_t state;
  braid__link queue;
  size_t waiting;
};

static int lock_cancel(braid__prim *p, braid__waiter *w);
static const braid__prim_ops lock_ops = {lock_cancel};

int braid_lock_new(braid_lock **out) {
  if (!out) return BRAID_EINVAL;
  braid_lock *l = braid__calloc(sizeof *l);
  if (!l) return BRAID_ENOMEM;
  l->base.ops = &lock_ops;
  atomic_init(&l->state, 0);
  braid__list_init(&l->queue);
  *out = l;
  return 0;
}

int braid_lock_free(braid_lock *l) {
  if (!l) return BRAID_EINVAL;
  braid__spin_lock(&l->base.lock); /* a releaser may still be in its hand-off */
  bool busy = atomic_load(&l->state) != 0;
  braid__spin_unlock(&l->base.lock);
  if (busy) return BRAID_ESTATE;
  braid__free(l);
  return 0;
}

/* ---- deadlock registry ---- */

atomic_int braid__dl_on = -1; /* -1: not yet read from the environment */
static pthread_mutex_t dl_mu = PTHREAD_MUTEX_INITIALIZER;
static braid__link dl_waits = {&dl_waits, &dl_waits};
static BRAID__TLS char dl_cycle[512];
static BRAID__TLS size_t dl_cycle_len;

static bool dl_enabled(void) {
  int on = atomic_load_explicit(&braid__dl_on, memory_order_relaxed);
  if (on < 0) {
    const char *e = getenv("BRAID_DEBUG_DEADLOCK");
    on = e && e[0] == '1';
    int expect = -1;
    atomic_compare_exchange_strong(&braid__dl_on, &expect, on);
    on = atomic_load(&braid__dl_on);
  }
  return on > 0;
}

int braid_debug_deadlock(int on) {
  dl_enabled();
  return atomic_exchange(&braid__dl_on, on ? 1 : 0);
}

long braid_debug_deadlock_cycle(char *buf, size_t size) {
  if (!buf && size) return BRAID_EINVAL;
  if (size) {
    size_t n = dl_cycle_len < size - 1 ? dl_cycle_len : size - 1;
    memcpy(buf, dl_cycle, n);
    buf[n] = 0;
  }
  return (long)dl_cycle_len;
}

static void describe(char *out, size_t size, uint64_t tok) {
  int kind;
  uint64_t id;
  braid__tok_describe(tok, &kind, &id);
  const char *k = kind == BRAID_OWNER_TASK ? "task" : kind == BRAID_OWNER_THREAD ? "thread" : "owner";
  snprintf(out, size, "%s %llu", k, (unsigned long long)id);
}

/* With dl_mu held: would `me` waiting for `l` close a cycle? Fills the
 * calling thread's cycle description if so. */
static bool dl_cycle_found(uint64_t me, braid_lock *l) {
  char text[sizeof dl_cycle]; /* kept only if a cycle is found */
  char *p = text;
  size_t left = sizeof text;
  char who[48];
  describe(who, sizeof who, me);
  int n = snprintf(p, left, "%s waits lock %p", who, (void *)l);
  braid_lock *cur = l;
  for (int steps = 0; steps < 10000; steps++) {
    uint64_t owner = atomic_load(&cur->state) & ~CONTENDED;
    if (!owner) return false;
    describe(who, sizeof who, owner);
    if (n > 0 && (size_t)n < left) p += n, left -= (size_t)n;
    n = snprintf(p, left, " held by %s", who);
    if (owner == me) {
      memcpy(dl_cycle, text, sizeof text);
      dl_cycle_len = strlen(dl_cycle);
      return true;
    }
    braid_lock *next = NULL;
    for (braid__link *x = dl_waits.next; x != &dl_waits; x = x->next) {
      braid__waiter *w = BRAID__CONTAINER(x, braid__waiter, dl_link);
      if (w->owner == owner) {
        next = (braid_lock *)(uintptr_t)w->dl_lock_id;
        break;
      }
    }
    if (!next) return false;
    if (n > 0 && (size_t)n < left) p += n, left -= (size_t)n;
    n = snprintf(p, left, " waits lock %p", (void *)next);
    cur = next;
  }
  return false;
}

static void dl_forget(braid__waiter *w) {
  if (!w->dl_lock_id) return;
  pthread_mutex_lock(&dl_mu);
  braid__list_remove(&w->dl_link);
  pthread_mutex_unlock(&dl_mu);
  w->dl_lock_id = 0;
}

/* ---- acquire ---- */

static inline int try_fast(braid_lock *l, uint64_t me) {
  uint64_t exp = 0;
  if (atomic_compare_exchange_strong_explicit(&l->state, &exp, me, memory_order_acquire, memory_order_relaxed))
    return 0;
  return (exp & ~CONTENDED) == me ? BRAID_EDEADLK : BRAID_EWOULDBLOCK;
}

/* With the spin lock held: take the lock if it is free, else mark it
 * contended. Returns 0 (acquired), BRAID_EDEADLK, or BRAID_EWOULDBLOCK
 * (contended now; the caller queues). */
static int take_or_mark(braid_lock *l, uint64_t me) {
  uint64_t s = atomic_load_explicit(&l->state, memory_order_relaxed);
  for (;;) {
    if (s == 0) {
      if (atomic_compare_exchange_weak_explicit(&l->state, &s, me, memory_order_acquire, memory_order_relaxed))
        return 0;
      continue;
    }
    if ((s & ~CONTENDED) == me) return BRAID_EDEADLK;
    if (s & CONTENDED) return BRAID_EWOULDBLOCK;
    if (atomic_compare_exchange_weak_explicit(&l->state, &s, s | CONTENDED, memory_order_relaxed, memory_order_relaxed))
      return BRAID_EWOULDBLOCK;
  }
}

static void enqueue(braid_lock *l, braid__waiter *w) {
  braid__list_push(&l->queue, &w->link);
  l->waiting++;
}

braid__prim *braid__lock_prim(braid_lock *l) { return &l->base; }

/* Under the spin lock: try to give the lock to `w` for a condition waiter.
 * Returns 1 if it was free and w owns it now. Else marks it contended and
 * queues w. */
int braid__lock_take_or_queue(braid_lock *l, braid__waiter *w) {
  if (take_or_mark(l, w->owner) == 0) return 1;
  __atomic_store_n(&w->prim, &l->base, __ATOMIC_RELEASE); /* lock_waiter_prim re-reads it */
  enqueue(l, w);
  return 0;
}

int braid_lock_acquire(braid_task *task, braid_lock *l) {
  if (!l) return BRAID_EINVAL;
  int rc = braid__wait_check(task);
  if (rc) return rc;
  uint64_t me = braid__self_token(task);
  rc = try_fast(l, me);
  if (rc == 0) return braid__done_yield(task, 0);
  if (rc == BRAID_EDEADLK) return rc;
  braid__waiter sw, *w;
  rc = braid__wait_prepare(task, &w, &sw);
  if (rc) return rc;
  braid__spin_lock(&l->base.lock);
  rc = take_or_mark(l, me);
  if (rc != BRAID_EWOULDBLOCK) {
    braid__spin_unlock(&l->base.lock);
    return rc == 0 ? braid__done_yield(task, 0) : rc;
  }
  if (dl_enabled()) {
    pthread_mutex_lock(&dl_mu);
    if (dl_cycle_found(me, l)) {
      pthread_mutex_unlock(&dl_mu);
      if (braid__list_empty(&l->queue)) atomic_fetch_and(&l->state, ~CONTENDED);
      braid__spin_unlock(&l->base.lock);
      return BRAID_EDEADLK;
    }
    w->dl_lock_id = (uint64_t)(uintptr_t)l;
    braid__list_push(&dl_waits, &w->dl_link);
    pthread_mutex_unlock(&dl_mu);
  }
  enqueue(l, w);
  return braid__wait_block(task, &l->base, w, NULL);
}

int braid_lock_acquire_nowait(braid_task *task, braid_lock *l) {
  if (!l) return BRAID_EINVAL;
  if (task && task->loop != braid__tls.loop) return BRAID_ETHREAD;
  return try_fast(l, braid__self_token(task));
}

int braid_lock_acquire_cb(braid_lock *l, uint64_t owner, braid_wait_cb cb, void *ud, braid_wait **out) {
  if (!l || !cb || !out || !owner || owner >= BRAID__MAX_FOREIGN) return BRAID_EINVAL;
  uint64_t me = braid__tok(owner, BRAID__TOK_FOREIGN);
  *out = NULL;
  int rc = try_fast(l, me);
  if (rc != BRAID_EWOULDBLOCK) return rc;
  braid_wait *h;
  rc = braid__cb_new(cb, ud, me, &h);
  if (rc) return rc;
  braid__spin_lock(&l->base.lock);
  rc = take_or_mark(l, me);
  if (rc != BRAID_EWOULDBLOCK) {
    braid__spin_unlock(&l->base.lock);
    braid__cb_drop(h);
    return rc;
  }
  h->w.prim = &l->base;
  enqueue(l, &h->w);
  braid__spin_unlock(&l->base.lock);
  *out = h;
  return BRAID_EPENDING;
}

/* ---- release ---- */

/* Spin lock held, caller owns the lock: pass it to the first waiter or free
 * it. Completed waiters go to wl. */
void braid__lock_handoff(braid_lock *l, braid__link *wl) {
  if (braid__list_empty(&l->queue)) {
    atomic_store_explicit(&l->state, 0, memory_order_release);
    return;
  }
  braid__waiter *w = BRAID__CONTAINER(l->queue.next, braid__waiter, link);
  l->waiting--;
  bool more = l->queue.next->next != &l->queue;
  atomic_store_explicit(&l->state, w->owner | (more ? CONTENDED : 0), memory_order_release);
  dl_forget(w); /* before completing: a thread waiter may return at once */
  /* a condition waiter re-acquiring after a cancellation reports it now */
  braid__complete(wl, w, (w->flags & BRAID__WF_CANCELLED) ? BRAID_ECANCELED : 0);
}

static int release_as(braid_lock *l, uint64_t me) {
  uint64_t exp = me;
  if (atomic_compare_exchange_strong_explicit(&l->state, &exp, 0, memory_order_release, memory_order_relaxed)) return 0;
  if ((exp & ~CONTENDED) != me) return BRAID_EPERM;
  braid__link wl;
  braid__list_init(&wl);
  braid__spin_lock(&l->base.lock);
  braid__lock_handoff(l, &wl);
  braid__spin_unlock(&l->base.lock);
  braid__wake_list(&wl);
  return 0;
}

int braid_lock_release(braid_task *task, braid_lock *l) {
  if (!l) return BRAID_EINVAL;
  return release_as(l, braid__self_token(task));
}

int braid_lock_release_owner(braid_lock *l, uint64_t owner) {
  if (!l || !owner || owner >= BRAID__MAX_FOREIGN) return BRAID_EINVAL;
  return release_as(l, braid__tok(owner, BRAID__TOK_FOREIGN));
}

/* BRAID_EPERM unless `me` owns l (for the condition). */
int braid__lock_check_owner(braid_lock *l, uint64_t me) {
  return (atomic_load(&l->state) & ~CONTENDED) == me ? 0 : BRAID_EPERM;
}

static int lock_cancel(braid__prim *p, braid__waiter *w) {
  braid_lock *l = (braid_lock *)p;
  /* A condition waiter re-acquiring the lock cannot be cancelled: it keeps
   * its place and its outcome. */
  if (w->flags & BRAID__WF_REACQUIRE) return BRAID__CANCEL_DEFERRED;
  braid__list_remove(&w->link);
  l->waiting--;
  if (braid__list_empty(&l->queue)) atomic_fetch_and(&l->state, ~CONTENDED);
  dl_forget(w);
  return BRAID__CANCEL_DONE;
}

int braid_lock_statistics(braid_lock *l, braid_lock_stats *out) {
  if (!l || !out || out->size < sizeof *out) return BRAID_EINVAL;
  braid__spin_lock(&l->base.lock);
  uint64_t s = atomic_load(&l->state) & ~CONTENDED;
  out->locked = s != 0;
  braid__tok_describe(s, &out->owner_kind, &out->owner_id);
  out->waiting = l->waiting;
  braid__spin_unlock(&l->base.lock);
  return 0;
}
