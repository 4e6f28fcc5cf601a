/*
 * channel.c — bounded MPMC channels (AnyIO's memory object streams).
 *
 * One spin lock guards a ring buffer of items and two FIFO queues of
 * waiters: senders (each holding the item it wants to send) and receivers
 * (each holding where to store the item). Invariants, under the lock:
 *   - receivers wait only while the buffer is empty;
 *   - senders wait only while the buffer is full (always, for buffer 0);
 * so a send first serves a waiting receiver directly, then the buffer, and a
 * receive first takes from the buffer and refills it from the first waiting
 * sender (or takes straight from it with buffer 0).
 *
 * Ends are small handles counted per channel. Closing an end drops it from
 * the count (the handle stays, answering BRAID_ECLOSED, until freed); the
 * channel itself is freed when every end of both kinds is closed.
 */
#include "sync.h"

typedef struct braid__channel {
  braid__prim base;
  void **ring;
  size_t cap_ring; /* allocated slots (power of two) */
  size_t head, len;
  size_t max; /* buffer size (0 = rendezvous, SIZE_MAX = unbounded) */
  void (*dtor)(void *);
  braid__link senders, receivers;
  size_t nsenders_waiting, nreceivers_waiting;
  size_t open_tx, open_rx;
  size_t ends; /* end handles not yet freed, open or closed */
} braid__channel;

/* An end keeps its channel until it is freed (its statistics stay readable
 * once it is closed); the channel goes with its last end. */
struct braid_sender {
  braid__channel *ch;
  bool closed;
};
struct braid_receiver {
  braid__channel *ch;
  bool closed;
};

#define WF_SENDER 0x04 /* waiter flag: in the senders' queue */

static int ch_cancel(braid__prim *p, braid__waiter *w) {
  braid__channel *c = (braid__channel *)p;
  braid__list_remove(&w->link);
  if (w->flags & WF_SENDER)
    c->nsenders_waiting--;
  else
    c->nreceivers_waiting--;
  return BRAID__CANCEL_DONE;
}
static const braid__prim_ops ch_ops = {ch_cancel};

int braid_channel_new(size_t buffer, void (*dtor)(void *), braid_sender **tx, braid_receiver **rx) {
  if (!tx || !rx) return BRAID_EINVAL;
  braid__channel *c = braid__calloc(sizeof *c);
  braid_sender *s = braid__alloc(sizeof *s);
  braid_receiver *r = braid__alloc(sizeof *r);
  size_t cap = buffer == 0 ? 0 : buffer < 16 ? buffer : 16;
  size_t pow2 = 1;
  while (pow2 < cap)
    pow2 <<= 1;
  void **ring = cap ? braid__alloc(pow2 * sizeof *ring) : NULL;
  if (!c || !s || !r || (cap && !ring)) {
    braid__free(c);
    braid__free(s);
    braid__free(r);
    braid__free(ring);
    return BRAID_ENOMEM;
  }
  c->base.ops = &ch_ops;
  c->ring = ring;
  c->cap_ring = cap ? pow2 : 0;
  c->max = buffer;
  c->dtor = dtor;
  braid__list_init(&c->senders);
  braid__list_init(&c->receivers);
  c->open_tx = c->open_rx = 1;
  c->ends = 2;
  s->ch = c;
  s->closed = false;
  r->ch = c;
  r->closed = false;
  *tx = s;
  *rx = r;
  return 0;
}

/* ---- ring ---- */

static int ring_push(braid__channel *c, void *item) {
  if (c->len == c->cap_ring) {
    size_t cap = c->cap_ring ? c->cap_ring * 2 : 16;
    void **ring = braid__alloc(cap * sizeof *ring);
    if (!ring) return BRAID_ENOMEM;
    for (size_t i = 0; i < c->len; i++)
      ring[i] = c->ring[(c->head + i) & (c->cap_ring - 1)];
    braid__free(c->ring);
    c->ring = ring;
    c->cap_ring = cap;
    c->head = 0;
  }
  c->ring[(c->head + c->len) & (c->cap_ring - 1)] = item;
  c->len++;
  return 0;
}

static void *ring_pop(braid__channel *c) {
  void *item = c->ring[c->head];
  c->head = (c->head + 1) & (c->cap_ring - 1);
  c->len--;
  return item;
}

/* Destroy the items of a ring taken out of a channel (no lock held: the
 * destructor is the user's code). */
static void destroy_ring(void **ring, size_t cap, size_t head, size_t len, void (*dtor)(void *)) {
  for (size_t i = 0; i < len; i++)
    if (dtor) dtor(ring[(head + i) & (cap - 1)]);
  braid__free(ring);
}

static void channel_free(braid__channel *c) {
  braid__free(c->ring);
  braid__free(c);
}

/* ---- send ---- */

/* Lock held: deliver `item` without waiting if possible. Returns 0,
 * BRAID_EBROKEN, BRAID_ENOMEM, or BRAID_EWOULDBLOCK. */
static inline int try_send(braid__channel *c, void *item, braid__link *wl) {
  if (!c->open_rx) return BRAID_EBROKEN;
  if (c->nreceivers_waiting) {
    braid__waiter *r = BRAID__CONTAINER(c->receivers.next, braid__waiter, link);
    *(void **)r->item = item;
    c->nreceivers_waiting--;
    braid__complete(wl, r, 0);
    return 0;
  }
  if (c->len < c->max) return ring_push(c, item);
  return BRAID_EWOULDBLOCK;
}

/* Lock held: take an item without waiting if possible. Returns 0,
 * BRAID_EEOF or BRAID_EWOULDBLOCK. */
static inline int try_receive(braid__channel *c, void **item, braid__link *wl) {
  if (c->len) {
    *item = ring_pop(c);
    if (c->nsenders_waiting) { /* refill from the first waiting sender */
      braid__waiter *s = BRAID__CONTAINER(c->senders.next, braid__waiter, link);
      ring_push(c, s->item); /* cannot fail: a slot was just freed */
      c->nsenders_waiting--;
      braid__complete(wl, s, 0);
    }
    return 0;
  }
  if (c->nsenders_waiting) { /* rendezvous */
    braid__waiter *s = BRAID__CONTAINER(c->senders.next, braid__waiter, link);
    *item = s->item;
    c->nsenders_waiting--;
    braid__complete(wl, s, 0);
    return 0;
  }
  if (!c->open_tx) return BRAID_EEOF;
  return BRAID_EWOULDBLOCK;
}

/* ---- one operation, three ways of waiting ---- */

enum { OP_WAIT, OP_NOWAIT, OP_CB };

/* Send (sender = 1, arg = the item) or receive (sender = 0, arg = the
 * void ** to store into), waiting as `task` or the calling thread (OP_WAIT),
 * not at all (OP_NOWAIT), or through a callback waiter (OP_CB). Inlined into
 * each public function, so each is specialised. */
static inline __attribute__((always_inline)) int ch_op(braid__channel *c, int sender, void *arg, int mode,
                                                       braid_task *task, braid_wait_cb cb, void *ud, braid_wait **out) {
  int rc;
  braid_wait *h = NULL;
  if (mode == OP_WAIT && (rc = braid__wait_check(task)) != 0) return rc;
  if (mode == OP_CB) {
    *out = NULL;
    if ((rc = braid__cb_new(cb, ud, 0, &h)) != 0) return rc;
  }
  braid__link wl;
  braid__list_init(&wl);
  braid__spin_lock(&c->base.lock);
  rc = sender ? try_send(c, arg, &wl) : try_receive(c, (void **)arg, &wl);
  if (rc != BRAID_EWOULDBLOCK || mode == OP_NOWAIT) {
    braid__spin_unlock(&c->base.lock);
    braid__wake_list(&wl);
    if (h) braid__cb_drop(h);
    return rc == 0 && mode == OP_WAIT ? braid__done_yield(task, 0) : rc;
  }
  braid__waiter sw, *w = h ? &h->w : NULL;
  if (!w && (rc = braid__wait_prepare(task, &w, &sw)) != 0) {
    braid__spin_unlock(&c->base.lock);
    return rc;
  }
  w->prim = &c->base;
  w->item = arg;
  if (sender) {
    w->flags |= WF_SENDER;
    braid__list_push(&c->senders, &w->link);
    c->nsenders_waiting++;
  } else {
    braid__list_push(&c->receivers, &w->link);
    c->nreceivers_waiting++;
  }
  if (h) {
    braid__spin_unlock(&c->base.lock);
    *out = h;
    return BRAID_EPENDING;
  }
  return braid__wait_block(task, &c->base, w, NULL);
}

int braid_channel_send(braid_task *task, braid_sender *tx, void *item) {
  if (!tx) return BRAID_EINVAL;
  if (tx->closed) return BRAID_ECLOSED;
  return ch_op(tx->ch, 1, item, OP_WAIT, task, NULL, NULL, NULL);
}

int braid_channel_send_nowait(braid_sender *tx, void *item) {
  if (!tx) return BRAID_EINVAL;
  if (tx->closed) return BRAID_ECLOSED;
  return ch_op(tx->ch, 1, item, OP_NOWAIT, NULL, NULL, NULL, NULL);
}

int braid_channel_send_cb(braid_sender *tx, void *item, braid_wait_cb cb, void *ud, braid_wait **out) {
  if (!tx || !cb || !out) return BRAID_EINVAL;
  if (tx->closed) return BRAID_ECLOSED;
  return ch_op(tx->ch, 1, item, OP_CB, NULL, cb, ud, out);
}

int braid_channel_receive(braid_task *task, braid_receiver *rx, void **item) {
  if (!rx || !item) return BRAID_EINVAL;
  if (rx->closed) return BRAID_ECLOSED;
  return ch_op(rx->ch, 0, item, OP_WAIT, task, NULL, NULL, NULL);
}

int braid_channel_receive_nowait(braid_receiver *rx, void **item) {
  if (!rx || !item) return BRAID_EINVAL;
  if (rx->closed) return BRAID_ECLOSED;
  return ch_op(rx->ch, 0, item, OP_NOWAIT, NULL, NULL, NULL, NULL);
}

int braid_channel_receive_cb(braid_receiver *rx, void **item, braid_wait_cb cb, void *ud, braid_wait **out) {
  if (!rx || !item || !cb || !out) return BRAID_EINVAL;
  if (rx->closed) return BRAID_ECLOSED;
  return ch_op(rx->ch, 0, item, OP_CB, NULL, cb, ud, out);
}

/* ---- ends ---- */

int braid_sender_clone(braid_sender *tx, braid_sender **out) {
  if (!tx || !out) return BRAID_EINVAL;
  braid__channel *c = tx->ch;
  if (tx->closed) return BRAID_ECLOSED;
  braid_sender *s = braid__alloc(sizeof *s);
  if (!s) return BRAID_ENOMEM;
  s->ch = c;
  s->closed = false;
  braid__spin_lock(&c->base.lock);
  c->open_tx++;
  c->ends++;
  braid__spin_unlock(&c->base.lock);
  *out = s;
  return 0;
}

int braid_receiver_clone(braid_receiver *rx, braid_receiver **out) {
  if (!rx || !out) return BRAID_EINVAL;
  braid__channel *c = rx->ch;
  if (rx->closed) return BRAID_ECLOSED;
  braid_receiver *r = braid__alloc(sizeof *r);
  if (!r) return BRAID_ENOMEM;
  r->ch = c;
  r->closed = false;
  braid__spin_lock(&c->base.lock);
  c->open_rx++;
  c->ends++;
  braid__spin_unlock(&c->base.lock);
  *out = r;
  return 0;
}

int braid_sender_close(braid_sender *tx) {
  if (!tx) return BRAID_EINVAL;
  braid__channel *c = tx->ch;
  if (tx->closed) return 0; /* already closed */
  tx->closed = true;
  braid__link wl;
  braid__list_init(&wl);
  braid__spin_lock(&c->base.lock);
  bool last = --c->open_tx == 0;
  if (last) /* receivers wait only on an empty buffer: they see the end now */
    while (c->nreceivers_waiting) {
      c->nreceivers_waiting--;
      braid__complete(&wl, BRAID__CONTAINER(c->receivers.next, braid__waiter, link), BRAID_EEOF);
    }
  braid__spin_unlock(&c->base.lock);
  braid__wake_list(&wl);
  return 0;
}

int braid_receiver_close(braid_receiver *rx) {
  if (!rx) return BRAID_EINVAL;
  braid__channel *c = rx->ch;
  if (rx->closed) return 0; /* already closed */
  rx->closed = true;
  braid__link wl;
  braid__list_init(&wl);
  braid__spin_lock(&c->base.lock);
  bool last = --c->open_rx == 0;
  void **ring = NULL;
  size_t cap = 0, head = 0, len = 0;
  if (last) {
    while (c->nsenders_waiting) {
      c->nsenders_waiting--;
      braid__complete(&wl, BRAID__CONTAINER(c->senders.next, braid__waiter, link), BRAID_EBROKEN);
    }
    /* take the buffered items out; they are destroyed after the lock */
    ring = c->ring, cap = c->cap_ring, head = c->head, len = c->len;
    c->ring = NULL;
    c->cap_ring = c->head = c->len = 0;
  }
  void (*dtor)(void *) = c->dtor;
  braid__spin_unlock(&c->base.lock);
  braid__wake_list(&wl);
  if (ring) destroy_ring(ring, cap, head, len, dtor);
  return 0;
}

/* An end handle goes: the channel goes with the last one (every end is
 * closed by then, so its buffer was already emptied). */
static void channel_drop_end(braid__channel *c) {
  braid__spin_lock(&c->base.lock);
  bool gone = --c->ends == 0;
  braid__spin_unlock(&c->base.lock);
  if (gone) channel_free(c);
}

int braid_sender_free(braid_sender *tx) {
  if (!tx) return BRAID_EINVAL;
  braid_sender_close(tx);
  channel_drop_end(tx->ch);
  braid__free(tx);
  return 0;
}

int braid_receiver_free(braid_receiver *rx) {
  if (!rx) return BRAID_EINVAL;
  braid_receiver_close(rx);
  channel_drop_end(rx->ch);
  braid__free(rx);
  return 0;
}

static int stats(braid__channel *c, braid_channel_stats *out) {
  if (!out || out->size < sizeof *out) return BRAID_EINVAL;
  braid__spin_lock(&c->base.lock);
  out->buffered = c->len;
  out->max_buffer = c->max;
  out->open_senders = c->open_tx;
  out->open_receivers = c->open_rx;
  out->waiting_send = c->nsenders_waiting;
  out->waiting_receive = c->nreceivers_waiting;
  braid__spin_unlock(&c->base.lock);
  return 0;
}

int braid_sender_statistics(braid_sender *tx, braid_channel_stats *out) {
  if (!tx) return BRAID_EINVAL;
  return stats(tx->ch, out);
}

int braid_receiver_statistics(braid_receiver *rx, braid_channel_stats *out) {
  if (!rx) return BRAID_EINVAL;
  return stats(rx->ch, out);
}
