/*
 * heap.c — the deadline heap of a loop.
 *
 * A binary min-heap of timers ordered by (when, seq). Each timer remembers
 * its index so that removal and re-keying are O(log n). Scope deadlines and
 * sleeping tasks share one heap; `seq` makes equal deadlines fire in the
 * order they were set, which keeps virtual-clock runs deterministic.
 */
#include "internal.h"

static inline bool before(const braid__timer *a, const braid__timer *b) {
  return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void place(braid__heap *h, uint32_t i, braid__timer *t) {
  h->items[i] = t;
  t->idx = i;
}

static void sift_up(braid__heap *h, uint32_t i) {
  braid__timer *t = h->items[i];
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    if (!before(t, h->items[p])) break;
    place(h, i, h->items[p]);
    i = p;
  }
  place(h, i, t);
}

static void sift_down(braid__heap *h, uint32_t i) {
  braid__timer *t = h->items[i];
  for (;;) {
    uint32_t l = 2 * i + 1, m = i;
    braid__timer *best = t;
    if (l < h->len && before(h->items[l], best)) m = l, best = h->items[l];
    if (l + 1 < h->len && before(h->items[l + 1], best)) m = l + 1, best = h->items[l + 1];
    if (m == i) break;
    place(h, i, best);
    i = m;
  }
  place(h, i, t);
}

int braid__heap_insert(braid__heap *h, braid__timer *t) {
  if (h->len == h->cap) {
    uint32_t cap = h->cap ? h->cap * 2 : 64;
    braid__timer **items = braid__realloc(h->items, (size_t)cap * sizeof *items);
    if (!items) return BRAID_ENOMEM;
    h->items = items;
    h->cap = cap;
  }
  t->seq = h->seq++;
  place(h, h->len++, t);
  sift_up(h, t->idx);
  return 0;
}

void braid__heap_remove(braid__heap *h, braid__timer *t) {
  uint32_t i = t->idx;
  if (i == BRAID__NOT_IN_HEAP) return;
  t->idx = BRAID__NOT_IN_HEAP;
  braid__timer *last = h->items[--h->len];
  if (i == h->len) return;
  place(h, i, last);
  if (i > 0 && before(last, h->items[(i - 1) / 2]))
    sift_up(h, i);
  else
    sift_down(h, i);
}

void braid__heap_update(braid__heap *h, braid__timer *t) {
  uint32_t i = t->idx;
  if (i > 0 && before(t, h->items[(i - 1) / 2]))
    sift_up(h, i);
  else
    sift_down(h, i);
}

void braid__heap_free(braid__heap *h) {
  braid__free(h->items);
  h->items = NULL;
  h->len = h->cap = 0;
}
