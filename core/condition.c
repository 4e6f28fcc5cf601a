/*
 * condition.c — Condition over a braid Lock.
 *
 * A waiter queues on the condition, then releases the lock (in that order,
 * under the condition's spin lock: a notifier must own the lock, so no
 * notification can slip in between). notify moves waiters from the
 * condition's queue straight onto the lock's queue — as Trio's ParkingLot
 * repark does — so "woken" means "owns the lock again", whatever kind of
 * waiter it is and without a second wait.
 *
 * Cancellation of a waiter still on the condition's queue moves it to the
 * lock's queue too, marked to report BRAID_ECANCELED once it holds the lock
 * (the re-acquisition itself cannot be cancelled). A waiter already moved by
 * a notification keeps its result 0: a notification is never lost.
 *
 * Spin lock order: condition, then lock.
 */
#include "sync.h"

struct braid_condition {
  braid__prim base;
  braid_lock *lock;
  braid__link queue;
  size_t waiting;
};

/* Condition spin lock held: move w from the condition to the lock. Returns
 * 1 if w got the lock at once (then the caller completes it). */
static int move_to_lock(braid_condition *c, braid__waiter *w) {
  braid__list_remove(&w->link);
  c->waiting--;
  w->flags |= BRAID__WF_REACQUIRE;
  braid__prim *lp = braid__lock_prim(c->lock);
  braid__spin_lock(&lp->lock);
  int got = braid__lock_take_or_queue(c->lock, w);
  if (got) __atomic_store_n(&w->prim, lp, __ATOMIC_RELEASE);
  braid__spin_unlock(&lp->lock);
  return got;
}

static int cond_cancel(braid__prim *p, braid__waiter *w) {
  braid_condition *c = (braid_condition *)p;
  w->flags |= BRAID__WF_CANCELLED;
  /* It owns the lock again at once: the cancellation completes now. */
  return move_to_lock(c, w) ? BRAID__CANCEL_DONE : BRAID__CANCEL_DEFERRED;
}
static const braid__prim_ops cond_ops = {cond_cancel};

int braid_condition_new(braid_lock *lock, braid_condition **out) {
  if (!lock || !out) return BRAID_EINVAL;
  braid_condition *c = braid__calloc(sizeof *c);
  if (!c) return BRAID_ENOMEM;
  c->base.ops = &cond_ops;
  c->lock = lock;
  braid__list_init(&c->queue);
  *out = c;
  return 0;
}

int braid_condition_free(braid_condition *c) {
  if (!c) return BRAID_EINVAL;
  braid__spin_lock(&c->base.lock);
  size_t waiting = c->waiting;
  braid__spin_unlock(&c->base.lock);
  if (waiting) return BRAID_ESTATE;
  braid__free(c);
  return 0;
}

int braid_condition_wait(braid_task *task, braid_condition *c) {
  if (!c) return BRAID_EINVAL;
  int rc = braid__lock_check_owner(c->lock, braid__self_token(task));
  if (rc) return rc;
  rc = braid__wait_check(task); /* a cancelled caller fails here, still owning the lock */
  if (rc) return rc;
  braid__waiter sw, *w;
  rc = braid__wait_prepare(task, &w, &sw);
  if (rc) return rc;
  braid__link wl;
  braid__list_init(&wl);
  braid__spin_lock(&c->base.lock);
  braid__list_push(&c->queue, &w->link);
  c->waiting++;
  braid__prim *lp = braid__lock_prim(c->lock);
  braid__spin_lock(&lp->lock);
  braid__lock_handoff(c->lock, &wl); /* release: the next lock waiter is woken below */
  braid__spin_unlock(&lp->lock);
  return braid__wait_block(task, &c->base, w, &wl);
}

static int notify(braid_task *task, braid_condition *c, size_t n) {
  if (!c) return BRAID_EINVAL;
  if (task && task->loop != braid__tls.loop) return BRAID_ETHREAD;
  int rc = braid__lock_check_owner(c->lock, braid__self_token(task));
  if (rc) return rc;
  braid__link wl;
  braid__list_init(&wl);
  braid__spin_lock(&c->base.lock);
  while (n-- && !braid__list_empty(&c->queue)) {
    braid__waiter *w = BRAID__CONTAINER(c->queue.next, braid__waiter, link);
    if (move_to_lock(c, w)) braid__complete(&wl, w, 0);
  }
  braid__spin_unlock(&c->base.lock);
  braid__wake_list(&wl);
  return 0;
}

int braid_condition_notify(braid_task *task, braid_condition *c, size_t n) { return notify(task, c, n); }

int braid_condition_notify_all(braid_task *task, braid_condition *c) { return notify(task, c, SIZE_MAX); }

int braid_condition_statistics(braid_condition *c, braid_condition_stats *out) {
  if (!c || !out || out->size < sizeof *out) return BRAID_EINVAL;
  braid__spin_lock(&c->base.lock);
  out->waiting = c->waiting;
  braid__spin_unlock(&c->base.lock);
  out->lock.size = sizeof out->lock;
  return braid_lock_statistics(c->lock, &out->lock);
}
