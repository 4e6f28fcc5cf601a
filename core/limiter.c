/*
 * limiter.c — CapacityLimiter.
 *
 * Each borrower holds at most one token. Borrowers are kept in an array
 * (tokens are few: its size follows the number borrowed); everything is
 * under the spin lock, whose uncontended cost is one atomic exchange. A
 * release, or a larger total, hands tokens to waiters in FIFO order.
 */
#include "sync.h"

struct braid_limiter {
  braid__prim base;
  atomic_int refs; /* the owner's, plus to_thread jobs holding a token */
  uint64_t total;
  uint64_t *borrowers; /* tokens of the current borrowers */
  size_t nborrowed, cap;
  braid__link queue;
  size_t waiting;
};

static int lim_cancel(braid__prim *p, braid__waiter *w) {
  braid_limiter *l = (braid_limiter *)p;
  braid__list_remove(&w->link);
  l->waiting--;
  return BRAID__CANCEL_DONE;
}
static const braid__prim_ops lim_ops = {lim_cancel};

int braid_limiter_new(uint64_t total, braid_limiter **out) {
  if (!out) return BRAID_EINVAL;
  braid_limiter *l = braid__calloc(sizeof *l);
  if (!l) return BRAID_ENOMEM;
  l->base.ops = &lim_ops;
  atomic_init(&l->refs, 1);
  l->total = total;
  braid__list_init(&l->queue);
  *out = l;
  return 0;
}

int braid_limiter_free(braid_limiter *l) {
  if (!l) return BRAID_EINVAL;
  braid__spin_lock(&l->base.lock);
  bool busy = l->nborrowed || l->waiting;
  braid__spin_unlock(&l->base.lock);
  if (busy) return BRAID_ESTATE;
  braid__limiter_unref(l);
  return 0;
}

braid_limiter *braid__limiter_ref(braid_limiter *l) {
  atomic_fetch_add(&l->refs, 1);
  return l;
}

void braid__limiter_unref(braid_limiter *l) {
  if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1) {
    braid__free(l->borrowers);
    braid__free(l);
  }
}

static long find(braid_limiter *l, uint64_t tok) {
  for (size_t i = 0; i < l->nborrowed; i++)
    if (l->borrowers[i] == tok) return (long)i;
  return -1;
}

/* Spin lock held: room in the array for one more borrower. */
static int reserve(braid_limiter *l) {
  if (l->nborrowed < l->cap) return 0;
  size_t cap = l->cap ? l->cap * 2 : 8;
  uint64_t *b = braid__realloc(l->borrowers, cap * sizeof *b);
  if (!b) return BRAID_ENOMEM;
  l->borrowers = b;
  l->cap = cap;
  return 0;
}

/* Spin lock held: hand free tokens to waiters, first come first served. */
static void grant_waiters(braid_limiter *l, braid__link *wl) {
  while (l->waiting && l->nborrowed < l->total) {
    braid__waiter *w = BRAID__CONTAINER(l->queue.next, braid__waiter, link);
    if (reserve(l) != 0) {
      l->waiting--;
      braid__complete(wl, w, BRAID_ENOMEM);
      continue;
    }
    l->borrowers[l->nborrowed++] = w->owner;
    l->waiting--;
    braid__complete(wl, w, 0);
  }
}

static uint64_t borrower_token(braid_task *task, uint64_t borrower) {
  return borrower ? braid__tok(borrower, BRAID__TOK_FOREIGN) : braid__self_token(task);
}

/* Spin lock held: borrow at once if possible. Returns 0, BRAID_EDEADLK,
 * BRAID_ENOMEM or BRAID_EWOULDBLOCK. */
static int try_borrow(braid_limiter *l, uint64_t tok) {
  if (find(l, tok) >= 0) return BRAID_EDEADLK;
  /* Only a foreign borrower can be queued already: a queued task or thread
   * is blocked, not here, and job tokens are never reused. */
  if ((tok & 3) == BRAID__TOK_FOREIGN)
    for (braid__link *x = l->queue.next; x != &l->queue; x = x->next)
      if (BRAID__CONTAINER(x, braid__waiter, link)->owner == tok) return BRAID_EDEADLK;
  if (l->waiting || l->nborrowed >= l->total) return BRAID_EWOULDBLOCK;
  int rc = reserve(l);
  if (rc) return rc;
  l->borrowers[l->nborrowed++] = tok;
  return 0;
}

static int acquire(braid_task *task, braid_limiter *l, uint64_t borrower) {
  if (!l || borrower >= BRAID__MAX_FOREIGN) return BRAID_EINVAL;
  return braid__limiter_acquire_tok(task, l, borrower_token(task, borrower));
}

/* Borrow for the token `tok` (to_thread jobs have tokens of their own). */
int braid__limiter_acquire_tok(braid_task *task, braid_limiter *l, uint64_t tok) {
  int rc = braid__wait_check(task);
  if (rc) return rc;
  braid__waiter sw, *w;
  rc = braid__wait_prepare(task, &w, &sw);
  if (rc) return rc;
  w->owner = tok;
  braid__spin_lock(&l->base.lock);
  rc = try_borrow(l, tok);
  if (rc != BRAID_EWOULDBLOCK) {
    braid__spin_unlock(&l->base.lock);
    return rc == 0 ? braid__done_yield(task, 0) : rc;
  }
  braid__list_push(&l->queue, &w->link);
  l->waiting++;
  return braid__wait_block(task, &l->base, w, NULL);
}

int braid_limiter_acquire(braid_task *task, braid_limiter *l) { return acquire(task, l, 0); }

int braid_limiter_acquire_on_behalf(braid_task *task, braid_limiter *l, uint64_t borrower) {
  if (!borrower) return BRAID_EINVAL;
  return acquire(task, l, borrower);
}

int braid_limiter_acquire_nowait(braid_task *task, braid_limiter *l, uint64_t borrower) {
  if (!l || borrower >= BRAID__MAX_FOREIGN) return BRAID_EINVAL;
  if (task && task->loop != braid__tls.loop) return BRAID_ETHREAD;
  braid__spin_lock(&l->base.lock);
  int rc = try_borrow(l, borrower_token(task, borrower));
  braid__spin_unlock(&l->base.lock);
  return rc;
}

int braid_limiter_acquire_cb(braid_limiter *l, uint64_t borrower, braid_wait_cb cb, void *ud, braid_wait **out) {
  if (!l || !cb || !out || !borrower || borrower >= BRAID__MAX_FOREIGN) return BRAID_EINVAL;
  *out = NULL;
  uint64_t tok = braid__tok(borrower, BRAID__TOK_FOREIGN);
  braid_wait *h;
  int rc = braid__cb_new(cb, ud, tok, &h);
  if (rc) return rc;
  braid__spin_lock(&l->base.lock);
  rc = try_borrow(l, tok);
  if (rc != BRAID_EWOULDBLOCK) {
    braid__spin_unlock(&l->base.lock);
    braid__cb_drop(h);
    return rc;
  }
  h->w.prim = &l->base;
  braid__list_push(&l->queue, &h->w.link);
  l->waiting++;
  braid__spin_unlock(&l->base.lock);
  *out = h;
  return BRAID_EPENDING;
}

int braid_limiter_release(braid_task *task, braid_limiter *l, uint64_t borrower) {
  if (!l || borrower >= BRAID__MAX_FOREIGN) return BRAID_EINVAL;
  return braid__limiter_release_tok(l, borrower_token(task, borrower));
}

int braid__limiter_release_tok(braid_limiter *l, uint64_t tok) {
  braid__link wl;
  braid__list_init(&wl);
  braid__spin_lock(&l->base.lock);
  long i = find(l, tok);
  if (i < 0) {
    braid__spin_unlock(&l->base.lock);
    return BRAID_EPERM;
  }
  l->borrowers[i] = l->borrowers[--l->nborrowed];
  grant_waiters(l, &wl);
  braid__spin_unlock(&l->base.lock);
  braid__wake_list(&wl);
  return 0;
}

int braid_limiter_set_total(braid_limiter *l, uint64_t total) {
  if (!l) return BRAID_EINVAL;
  braid__link wl;
  braid__list_init(&wl);
  braid__spin_lock(&l->base.lock);
  l->total = total;
  grant_waiters(l, &wl);
  braid__spin_unlock(&l->base.lock);
  braid__wake_list(&wl);
  return 0;
}

int braid_limiter_statistics(braid_limiter *l, braid_limiter_stats *out) {
  if (!l || !out || out->size < sizeof *out) return BRAID_EINVAL;
  braid__spin_lock(&l->base.lock);
  out->total = l->total;
  out->borrowed = l->nborrowed;
  out->waiting = l->waiting;
  braid__spin_unlock(&l->base.lock);
  return 0;
}

long braid_limiter_borrowers(braid_limiter *l, int *kinds, uint64_t *ids, size_t cap) {
  if (!l || (cap && (!kinds || !ids))) return BRAID_EINVAL;
  braid__spin_lock(&l->base.lock);
  size_t n = l->nborrowed;
  for (size_t i = 0; i < n && i < cap; i++)
    braid__tok_describe(l->borrowers[i], &kinds[i], &ids[i]);
  braid__spin_unlock(&l->base.lock);
  return (long)n;
}
