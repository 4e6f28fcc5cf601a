/*
 * semaphore.c — Semaphore and Event.
 *
 * Semaphore state word: value << 1 | WAITERS. With no waiters, acquire and
 * release are one compare-and-swap on the value. With waiters queued (bit
 * set, only changed under the spin lock), both go through the spin lock and
 * a release hands its unit straight to the first waiter, so the value stays
 * 0 and nobody barges in.
 *
 * Event: a flag and a queue; set wakes the whole queue.
 */
#include "sync.h"

#define WAITERS ((uint64_t)1)

struct braid_semaphore {
  braid__prim base;
  _Atomic uint64_t word;
  uint64_t max;
  braid__link queue;
  size_t waiting;
};

static int sem_cancel(braid__prim *p, braid__waiter *w) {
  braid_semaphore *s = (braid_semaphore *)p;
  braid__list_remove(&w->link);
  if (--s->waiting == 0) atomic_fetch_and(&s->word, ~WAITERS);
  return BRAID__CANCEL_DONE;
}
static const braid__prim_ops sem_ops = {sem_cancel};

int braid_semaphore_new(uint64_t initial, uint64_t max, braid_semaphore **out) {
  if (!out || (max && initial > max) || initial > (UINT64_MAX >> 2)) return BRAID_EINVAL;
  braid_semaphore *s = braid__calloc(sizeof *s);
  if (!s) return BRAID_ENOMEM;
  s->base.ops = &sem_ops;
  atomic_init(&s->word, initial << 1);
  s->max = max;
  braid__list_init(&s->queue);
  *out = s;
  return 0;
}

int braid_semaphore_free(braid_semaphore *s) {
  if (!s) return BRAID_EINVAL;
  braid__spin_lock(&s->base.lock); /* a releaser may still be in its hand-off */
  bool busy = (atomic_load(&s->word) & WAITERS) != 0;
  braid__spin_unlock(&s->base.lock);
  if (busy) return BRAID_ESTATE;
  braid__free(s);
  return 0;
}

static inline bool try_take(braid_semaphore *s) {
  uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
  while (!(w & WAITERS) && w >= 2)
    if (atomic_compare_exchange_weak_explicit(&s->word, &w, w - 2, memory_order_acquire, memory_order_relaxed))
      return true;
  return false;
}

/* Spin lock held: take a unit or mark that a waiter is coming. */
static bool take_or_mark(braid_semaphore *s) {
  uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
  for (;;) {
    if (!(w & WAITERS) && w >= 2) {
      if (atomic_compare_exchange_weak_explicit(&s->word, &w, w - 2, memory_order_acquire, memory_order_relaxed))
        return true;
    } else if (atomic_compare_exchange_weak_explicit(&s->word, &w, w | WAITERS, memory_order_relaxed,
                                                     memory_order_relaxed)) {
      return false;
    }
  }
}

int braid_semaphore_acquire(braid_task *task, braid_semaphore *s) {
  if (!s) return BRAID_EINVAL;
  int rc = braid__wait_check(task);
  if (rc) return rc;
  if (try_take(s)) return braid__done_yield(task, 0);
  braid__waiter sw, *w;
  rc = braid__wait_prepare(task, &w, &sw);
  if (rc) return rc;
  braid__spin_lock(&s->base.lock);
  if (take_or_mark(s)) {
    braid__spin_unlock(&s->base.lock);
    return braid__done_yield(task, 0);
  }
  braid__list_push(&s->queue, &w->link);
  s->waiting++;
  return braid__wait_block(task, &s->base, w, NULL);
}

int braid_semaphore_acquire_nowait(braid_semaphore *s) {
  if (!s) return BRAID_EINVAL;
  return try_take(s) ? 0 : BRAID_EWOULDBLOCK;
}

int braid_semaphore_acquire_cb(braid_semaphore *s, braid_wait_cb cb, void *ud, braid_wait **out) {
  if (!s || !cb || !out) return BRAID_EINVAL;
  *out = NULL;
  if (try_take(s)) return 0;
  braid_wait *h;
  int rc = braid__cb_new(cb, ud, 0, &h);
  if (rc) return rc;
  braid__spin_lock(&s->base.lock);
  if (take_or_mark(s)) {
    braid__spin_unlock(&s->base.lock);
    braid__cb_drop(h);
    return 0;
  }
  h->w.prim = &s->base;
  braid__list_push(&s->queue, &h->w.link);
  s->waiting++;
  braid__spin_unlock(&s->base.lock);
  *out = h;
  return BRAID_EPENDING;
}

int braid_semaphore_release(braid_semaphore *s) {
  if (!s) return BRAID_EINVAL;
  uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
  while (!(w & WAITERS)) {
    if (s->max && (w >> 1) >= s->max) return BRAID_EINVAL;
    if (atomic_compare_exchange_weak_explicit(&s->word, &w, w + 2, memory_order_release, memory_order_relaxed))
      return 0;
  }
  braid__link wl;
  braid__list_init(&wl);
  braid__spin_lock(&s->base.lock);
  w = atomic_load(&s->word);
  if (s->waiting) {
    braid__waiter *first = BRAID__CONTAINER(s->queue.next, braid__waiter, link);
    if (--s->waiting == 0) atomic_fetch_and(&s->word, ~WAITERS); /* before the waiter can return */
    braid__complete(&wl, first, 0);
  } else if (s->max && (w >> 1) >= s->max) {
    braid__spin_unlock(&s->base.lock);
    return BRAID_EINVAL;
  } else {
    atomic_fetch_add(&s->word, 2);
  }
  braid__spin_unlock(&s->base.lock);
  braid__wake_list(&wl);
  return 0;
}

uint64_t braid_semaphore_value(braid_semaphore *s) { return s ? atomic_load(&s->word) >> 1 : 0; }

int braid_semaphore_statistics(braid_semaphore *s, braid_semaphore_stats *out) {
  if (!s || !out || out->size < sizeof *out) return BRAID_EINVAL;
  braid__spin_lock(&s->base.lock);
  out->value = atomic_load(&s->word) >> 1;
  out->max = s->max;
  out->waiting = s->waiting;
  braid__spin_unlock(&s->base.lock);
  return 0;
}

/* ---- Event ---- */

struct braid_event {
  braid__prim base;
  atomic_int set;
  braid__link queue;
  size_t waiting;
};

static int event_cancel(braid__prim *p, braid__waiter *w) {
  braid_event *e = (braid_event *)p;
  braid__list_remove(&w->link);
  e->waiting--;
  return BRAID__CANCEL_DONE;
}
static const braid__prim_ops event_ops = {event_cancel};

int braid_event_new(braid_event **out) {
  if (!out) return BRAID_EINVAL;
  braid_event *e = braid__calloc(sizeof *e);
  if (!e) return BRAID_ENOMEM;
  e->base.ops = &event_ops;
  braid__list_init(&e->queue);
  *out = e;
  return 0;
}

int braid_event_free(braid_event *e) {
  if (!e) return BRAID_EINVAL;
  braid__spin_lock(&e->base.lock);
  size_t waiting = e->waiting;
  braid__spin_unlock(&e->base.lock);
  if (waiting) return BRAID_ESTATE;
  braid__free(e);
  return 0;
}

int braid_event_set(braid_event *e) {
  if (!e) return BRAID_EINVAL;
  if (atomic_load_explicit(&e->set, memory_order_acquire)) return 0;
  braid__link wl;
  braid__list_init(&wl);
  braid__spin_lock(&e->base.lock);
  atomic_store_explicit(&e->set, 1, memory_order_release);
  while (!braid__list_empty(&e->queue))
    braid__complete(&wl, BRAID__CONTAINER(e->queue.next, braid__waiter, link), 0);
  e->waiting = 0;
  braid__spin_unlock(&e->base.lock);
  braid__wake_list(&wl);
  return 0;
}

int braid_event_is_set(braid_event *e) { return e ? atomic_load_explicit(&e->set, memory_order_acquire) : 0; }

int braid_event_wait(braid_task *task, braid_event *e) {
  if (!e) return BRAID_EINVAL;
  int rc = braid__wait_check(task);
  if (rc) return rc;
  /* set: still a checkpoint, always a schedule point */
  if (atomic_load_explicit(&e->set, memory_order_acquire)) return task ? braid__yield_value(task, 0) : 0;
  braid__waiter sw, *w;
  rc = braid__wait_prepare(task, &w, &sw);
  if (rc) return rc;
  braid__spin_lock(&e->base.lock);
  if (atomic_load_explicit(&e->set, memory_order_relaxed)) {
    braid__spin_unlock(&e->base.lock);
    return task ? braid__yield_value(task, 0) : 0;
  }
  braid__list_push(&e->queue, &w->link);
  e->waiting++;
  return braid__wait_block(task, &e->base, w, NULL);
}

int braid_event_wait_cb(braid_event *e, braid_wait_cb cb, void *ud, braid_wait **out) {
  if (!e || !cb || !out) return BRAID_EINVAL;
  *out = NULL;
  if (atomic_load_explicit(&e->set, memory_order_acquire)) return 0;
  braid_wait *h;
  int rc = braid__cb_new(cb, ud, 0, &h);
  if (rc) return rc;
  braid__spin_lock(&e->base.lock);
  if (atomic_load_explicit(&e->set, memory_order_relaxed)) {
    braid__spin_unlock(&e->base.lock);
    braid__cb_drop(h);
    return 0;
  }
  h->w.prim = &e->base;
  braid__list_push(&e->queue, &h->w.link);
  e->waiting++;
  braid__spin_unlock(&e->base.lock);
  *out = h;
  return BRAID_EPENDING;
}

int braid_event_statistics(braid_event *e, braid_event_stats *out) {
  if (!e || !out || out->size < sizeof *out) return BRAID_EINVAL;
  braid__spin_lock(&e->base.lock);
  out->set = atomic_load(&e->set);
  out->waiting = e->waiting;
  braid__spin_unlock(&e->base.lock);
  return 0;
}
