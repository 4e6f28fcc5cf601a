/*
 * test_channel.c — braid channels (memory object streams): rendezvous,
 * buffered and unbounded; clone/close per end; BRAID_EEOF once the last
 * sender closed and the buffer drained; BRAID_EBROKEN on send once every
 * receiver closed (the item stays with the caller); the destructor runs
 * exactly once per item still buffered when the last receiver closes;
 * per-sender FIFO; FIFO hand-off to every kind of waiter, on both sides;
 * _nowait variants; statistics; cancellation and races; every documented
 * error code.
 */
#include "sync_helpers.h"

#include <stdlib.h>

static braid_channel_stats tx_stats(braid_sender *tx) {
  braid_channel_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  CHECK_INT(braid_sender_statistics(tx, &st), 0);
  return st;
}

static braid_channel_stats rx_stats(braid_receiver *rx) {
  braid_channel_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  CHECK_INT(braid_receiver_statistics(rx, &st), 0);
  return st;
}

static int rx_waiting(braid_receiver *rx) { return (int)rx_stats(rx).waiting_receive; }
static int tx_waiting(braid_sender *tx) { return (int)tx_stats(tx).waiting_send; }

typedef struct chan {
  braid_sender *tx;
  braid_receiver *rx;
} chan;

static chan new_chan(size_t buffer, void (*dtor)(void *)) {
  chan c = {NULL, NULL};
  CHECK_INT(braid_channel_new(buffer, dtor, &c.tx, &c.rx), 0);
  return c;
}

/* Free both ends (closing them if still open). */
static void close_chan(chan c) {
  if (c.tx) CHECK_INT(braid_sender_free(c.tx), 0);
  if (c.rx) CHECK_INT(braid_receiver_free(c.rx), 0);
}

/* Every waiter uses its own clone of an end (a handle is used by one
 * thread at a time). */
static braid_sender *tx_clone(braid_sender *tx) {
  braid_sender *out = NULL;
  CHECK_INT(braid_sender_clone(tx, &out), 0);
  return out;
}

static braid_receiver *rx_clone(braid_receiver *rx) {
  braid_receiver *out = NULL;
  CHECK_INT(braid_receiver_clone(rx, &out), 0);
  return out;
}

/* Join a channel waiter and free the clone it used. */
static void sw_join_tx(sw *w) {
  sw_join(w);
  CHECK_INT(braid_sender_free((braid_sender *)w->obj), 0);
}

static void sw_join_rx(sw *w) {
  sw_join(w);
  CHECK_INT(braid_receiver_free((braid_receiver *)w->obj), 0);
}

/* Items that are just numbers (no destructor). */
#define ITEM(n) ((void *)(uintptr_t)(0x1000 + (n)))
#define ITEM_NO(p) ((int)((uintptr_t)(p)-0x1000))

static int recv_wait(braid_task *t, sw *w) { return braid_channel_receive(t, (braid_receiver *)w->obj, &w->item); }
static int recv_wait_cb(sw *w, braid_wait_cb cb, void *ud, braid_wait **out) {
  return braid_channel_receive_cb((braid_receiver *)w->obj, &w->item, cb, ud, out);
}
static int send_wait(braid_task *t, sw *w) { return braid_channel_send(t, (braid_sender *)w->obj, w->item); }
static int send_wait_cb(sw *w, braid_wait_cb cb, void *ud, braid_wait **out) {
  return braid_channel_send_cb((braid_sender *)w->obj, w->item, cb, ud, out);
}
static int recv_queued(void *rx) { return rx_waiting(rx); }
static int send_queued(void *tx) { return tx_waiting(tx); }
static const sw_ops recv_ops = {recv_wait, recv_wait_cb, NULL, recv_queued};
static const sw_ops send_ops = {send_wait, send_wait_cb, NULL, send_queued};

/* ---- construction and statistics ------------------------------------------------------ */

static void test_channel_new_reports_its_buffer_and_one_open_end_each(void **state) {
  (void)state;
  const size_t sizes[] = {0, 1, 5, BRAID_UNBOUNDED};
  for (size_t i = 0; i < 4; i++) {
    chan c = new_chan(sizes[i], NULL);
    braid_channel_stats a = tx_stats(c.tx), b = rx_stats(c.rx);
    assert_int_equal(a.max_buffer, sizes[i]);
    assert_int_equal(a.buffered, 0);
    assert_int_equal(a.open_senders, 1);
    assert_int_equal(a.open_receivers, 1);
    assert_int_equal(a.waiting_send, 0);
    assert_int_equal(a.waiting_receive, 0);
    assert_memory_equal(&a, &b, sizeof a);
    close_chan(c);
  }
}

static void test_channel_clones_and_closes_are_counted_per_end(void **state) {
  (void)state;
  chan c = new_chan(2, NULL);
  braid_sender *tx2 = NULL, *tx3 = NULL;
  braid_receiver *rx2 = NULL;
  assert_int_equal(braid_sender_clone(c.tx, &tx2), 0);
  assert_int_equal(braid_sender_clone(tx2, &tx3), 0);
  assert_int_equal(braid_receiver_clone(c.rx, &rx2), 0);
  braid_channel_stats st = rx_stats(rx2);
  assert_int_equal(st.open_senders, 3);
  assert_int_equal(st.open_receivers, 2);
  /* Every clone works. */
  assert_int_equal(braid_channel_send_nowait(tx3, ITEM(1)), 0);
  void *it = NULL;
  assert_int_equal(braid_channel_receive_nowait(rx2, &it), 0);
  assert_ptr_equal(it, ITEM(1));
  assert_int_equal(braid_sender_close(c.tx), 0);
  assert_int_equal(braid_receiver_close(c.rx), 0);
  st = tx_stats(tx2);
  assert_int_equal(st.open_senders, 2);
  assert_int_equal(st.open_receivers, 1);
  /* Closing is idempotent: counted once. */
  assert_int_equal(braid_sender_close(c.tx), 0);
  assert_int_equal(braid_receiver_close(c.rx), 0);
  st = tx_stats(tx2);
  assert_int_equal(st.open_senders, 2);
  assert_int_equal(st.open_receivers, 1);
  assert_int_equal(braid_sender_close(tx2), 0);
  assert_int_equal(braid_sender_free(tx3), 0); /* free closes an open end */
  st = rx_stats(rx2);
  assert_int_equal(st.open_senders, 0);
  assert_int_equal(braid_channel_receive_nowait(rx2, &it), BRAID_EEOF);
  assert_int_equal(braid_receiver_close(rx2), 0);
  assert_int_equal(braid_sender_free(c.tx), 0);
  assert_int_equal(braid_receiver_free(c.rx), 0);
  assert_int_equal(braid_sender_free(tx2), 0);
  assert_int_equal(braid_receiver_free(rx2), 0);
}

static void test_channel_a_closed_end_answers_eclosed_until_freed(void **state) {
  (void)state;
  chan c = new_chan(2, NULL);
  braid_sender *tx2 = tx_clone(c.tx);
  braid_receiver *rx2 = rx_clone(c.rx);
  assert_int_equal(braid_sender_close(tx2), 0);
  assert_int_equal(braid_receiver_close(rx2), 0);
  braid_sender *tx3 = NULL;
  braid_receiver *rx3 = NULL;
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  void *it = ITEM(5);
  braid_channel_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  assert_int_equal(braid_sender_clone(tx2, &tx3), BRAID_ECLOSED);
  assert_null(tx3);
  assert_int_equal(braid_receiver_clone(rx2, &rx3), BRAID_ECLOSED);
  assert_null(rx3);
  assert_int_equal(braid_channel_send_nowait(tx2, ITEM(1)), BRAID_ECLOSED);
  assert_int_equal(braid_channel_send(NULL, tx2, ITEM(1)), BRAID_ECLOSED);
  assert_int_equal(braid_channel_send_cb(tx2, ITEM(1), cb_record, &r, &w), BRAID_ECLOSED);
  assert_int_equal(braid_channel_receive_nowait(rx2, &it), BRAID_ECLOSED);
  assert_int_equal(braid_channel_receive(NULL, rx2, &it), BRAID_ECLOSED);
  assert_int_equal(braid_channel_receive_cb(rx2, &it, cb_record, &r, &w), BRAID_ECLOSED);
  /* statistics still answer on a closed end (the channel's, as AnyIO's) */
  assert_int_equal(braid_sender_statistics(tx2, &st), 0);
  assert_int_equal(st.open_senders, 1);
  assert_int_equal(st.open_receivers, 1);
  assert_int_equal(braid_receiver_statistics(rx2, &st), 0);
  assert_int_equal(st.open_senders, 1);
  assert_ptr_equal(it, ITEM(5));
  assert_int_equal(atomic_load(&r.calls), 0);
  /* The other ends are unaffected. */
  st = tx_stats(c.tx);
  assert_int_equal(st.open_senders, 1);
  assert_int_equal(st.open_receivers, 1);
  assert_int_equal(st.buffered, 0);
  assert_int_equal(braid_channel_send_nowait(c.tx, ITEM(2)), 0);
  assert_int_equal(braid_channel_receive_nowait(c.rx, &it), 0);
  assert_ptr_equal(it, ITEM(2));
  assert_int_equal(braid_sender_free(tx2), 0);
  assert_int_equal(braid_receiver_free(rx2), 0);
  close_chan(c);
}

/* ---- buffered, unbounded, rendezvous with _nowait ------------------------------------------ */

static void test_channel_buffered_holds_n_items_in_fifo_order(void **state) {
  (void)state;
  chan c = new_chan(3, NULL);
  for (int i = 0; i < 3; i++)
    assert_int_equal(braid_channel_send_nowait(c.tx, ITEM(i)), 0);
  assert_int_equal(braid_channel_send_nowait(c.tx, ITEM(9)), BRAID_EWOULDBLOCK);
  assert_int_equal(tx_stats(c.tx).buffered, 3);
  void *it = NULL;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(braid_channel_receive_nowait(c.rx, &it), 0);
    assert_ptr_equal(it, ITEM(i));
  }
  it = ITEM(99);
  assert_int_equal(braid_channel_receive_nowait(c.rx, &it), BRAID_EWOULDBLOCK);
  assert_int_equal(rx_stats(c.rx).buffered, 0);
  close_chan(c);
}

static void test_channel_unbounded_never_blocks_a_sender(void **state) {
  (void)state;
  chan c = new_chan(BRAID_UNBOUNDED, NULL);
  for (int i = 0; i < 10000; i++)
    assert_int_equal(braid_channel_send_nowait(c.tx, ITEM(i)), 0);
  assert_int_equal(rx_stats(c.rx).buffered, 10000);
  void *it = NULL;
  for (int i = 0; i < 10000; i++) {
    assert_int_equal(braid_channel_receive_nowait(c.rx, &it), 0);
    assert_int_equal(ITEM_NO(it), i);
  }
  assert_int_equal(braid_channel_receive_nowait(c.rx, &it), BRAID_EWOULDBLOCK);
  close_chan(c);
}

static void test_channel_rendezvous_nowait_needs_a_waiting_partner(void **state) {
  (void)state;
  chan c = new_chan(0, NULL);
  void *it = NULL;
  assert_int_equal(braid_channel_send_nowait(c.tx, ITEM(1)), BRAID_EWOULDBLOCK);
  assert_int_equal(braid_channel_receive_nowait(c.rx, &it), BRAID_EWOULDBLOCK);
  /* A waiting receiver takes a nowait send. */
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  void *slot = NULL;
  assert_int_equal(braid_channel_receive_cb(c.rx, &slot, cb_record, &r, &w), BRAID_EPENDING);
  assert_int_equal(rx_waiting(c.rx), 1);
  assert_int_equal(braid_channel_send_nowait(c.tx, ITEM(2)), 0);
  assert_int_equal(atomic_load(&r.calls), 1);
  assert_int_equal(atomic_load(&r.result), 0);
  assert_ptr_equal(slot, ITEM(2));
  assert_int_equal(braid_wait_free(w), 0);
  /* A waiting sender is taken by a nowait receive. */
  cb_rec_init(&r, NULL, 0);
  assert_int_equal(braid_channel_send_cb(c.tx, ITEM(3), cb_record, &r, &w), BRAID_EPENDING);
  braid_channel_stats st = tx_stats(c.tx);
  assert_int_equal(st.waiting_send, 1);
  assert_int_equal(st.buffered, 0);
  assert_int_equal(braid_channel_receive_nowait(c.rx, &it), 0);
  assert_ptr_equal(it, ITEM(3));
  assert_int_equal(atomic_load(&r.calls), 1);
  assert_int_equal(atomic_load(&r.result), 0);
  assert_int_equal(braid_wait_free(w), 0);
  close_chan(c);
}

static void test_channel_send_cb_and_receive_cb_complete_at_once_when_possible(void **state) {
  (void)state;
  chan c = new_chan(1, NULL);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = (braid_wait *)&r;
  assert_int_equal(braid_channel_send_cb(c.tx, ITEM(5), cb_record, &r, &w), 0);
  assert_null(w);
  void *slot = NULL;
  w = (braid_wait *)&r;
  assert_int_equal(braid_channel_receive_cb(c.rx, &slot, cb_record, &r, &w), 0);
  assert_null(w);
  assert_ptr_equal(slot, ITEM(5));
  assert_int_equal(atomic_load(&r.calls), 0);
  close_chan(c);
}

/* ---- blocking send / receive with each kind of waiter ----------------------------------------- */

struct side_ctx {
  int kind;
  size_t buffer;
  int waiter_sends; /* 1: the waiter sends into a full channel; 0: it receives from an empty one */
  chan ch;
  sw w;
  braid_channel_stats before, after;
  int rc_other_nowait;
  void *got;
  uintptr_t root_frame;
};

static int side_root(braid_task *self, void *arg) {
  struct side_ctx *c = arg;
  c->ch = new_chan(c->buffer, NULL);
  for (size_t i = 0; i < c->buffer && c->waiter_sends; i++)
    CHECK_INT(braid_channel_send_nowait(c->ch.tx, ITEM(100 + (int)i)), 0);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  if (c->waiter_sends) {
    sw_init(&c->w, &send_ops, tx_clone(c->ch.tx), c->kind, 1, NULL);
    c->w.item = ITEM(7);
  } else {
    sw_init(&c->w, &recv_ops, rx_clone(c->ch.rx), c->kind, 1, NULL);
  }
  CHECK_INT(sw_start(g, &c->w), 0);
  if (c->waiter_sends)
    WAIT_UNTIL(self, tx_waiting(c->ch.tx) == 1);
  else
    WAIT_UNTIL(self, rx_waiting(c->ch.rx) == 1);
  CHECK_INT(braid_sleep(self, MSEC), 0);
  CHECK(!sw_done(&c->w));
  c->before = tx_stats(c->ch.tx);
  volatile int local = 0;
  c->root_frame = (uintptr_t)&local;
  if (c->waiter_sends) {
    /* Taking one item makes room: the waiting sender's item moves in at
     * once, so a nowait send by someone else still finds no room. */
    CHECK_INT(braid_channel_receive(self, c->ch.rx, &c->got), 0);
    c->after = tx_stats(c->ch.tx);
    c->rc_other_nowait = braid_channel_send_nowait(c->ch.tx, ITEM(8));
  } else {
    /* The item goes straight to the waiting receiver: a nowait receive by
     * someone else finds nothing. */
    CHECK_INT(braid_channel_send(self, c->ch.tx, ITEM(7)), 0);
    c->after = tx_stats(c->ch.tx);
    void *it = NULL;
    c->rc_other_nowait = braid_channel_receive_nowait(c->ch.rx, &it);
  }
  WAIT_UNTIL(self, sw_done(&c->w));
  close_group(g);
  if (c->waiter_sends)
    sw_join_tx(&c->w);
  else
    sw_join_rx(&c->w);
  if (c->waiter_sends && c->buffer > 0) {
    /* Drain: the old items in order, then the waiter's. */
    void *it = NULL;
    for (size_t i = 1; i < c->buffer; i++) {
      CHECK_INT(braid_channel_receive_nowait(c->ch.rx, &it), 0);
      CHECK_INT(ITEM_NO(it), 100 + (int)i);
    }
    CHECK_INT(braid_channel_receive_nowait(c->ch.rx, &it), 0);
    CHECK_PTR(it, ITEM(7));
  }
  close_chan(c->ch);
  return 0;
}

static void run_side(int kind, size_t buffer, int waiter_sends) {
  struct side_ctx c;
  memset(&c, 0, sizeof c);
  c.kind = kind;
  c.buffer = buffer;
  c.waiter_sends = waiter_sends;
  assert_int_equal(run_real(side_root, &c), 0);
  assert_int_equal(sw_rc(&c.w), 0);
  if (waiter_sends) {
    assert_int_equal(c.before.waiting_send, 1);
    assert_int_equal(c.before.buffered, buffer);
    assert_int_equal(c.after.waiting_send, 0);
    assert_int_equal(c.after.buffered, buffer);
    assert_ptr_equal(c.got, buffer ? ITEM(100) : ITEM(7));
    assert_int_equal(c.rc_other_nowait, BRAID_EWOULDBLOCK);
  } else {
    assert_int_equal(c.before.waiting_receive, 1);
    assert_int_equal(c.after.waiting_receive, 0);
    assert_int_equal(c.after.buffered, 0);
    assert_ptr_equal(c.w.item, ITEM(7));
    assert_int_equal(c.rc_other_nowait, BRAID_EWOULDBLOCK);
  }
  if (kind == W_CB) assert_cb_waiter_called_off_task(&c.w, c.root_frame);
}

static void test_channel_a_waiting_stackful_receiver_gets_the_next_item(void **state) {
  (void)state;
  run_side(W_TASK, 2, 0);
}

static void test_channel_a_waiting_stepped_receiver_gets_the_next_item(void **state) {
  (void)state;
  run_side(W_STEPPED, 2, 0);
}

static void test_channel_a_waiting_thread_receiver_gets_the_next_item(void **state) {
  (void)state;
  run_side(W_THREAD, 2, 0);
}

static void test_channel_a_waiting_callback_receiver_gets_the_next_item(void **state) {
  (void)state;
  run_side(W_CB, 2, 0);
}

static void test_channel_a_stackful_sender_waits_for_room_in_a_full_buffer(void **state) {
  (void)state;
  run_side(W_TASK, 2, 1);
}

static void test_channel_a_stepped_sender_waits_for_room_in_a_full_buffer(void **state) {
  (void)state;
  run_side(W_STEPPED, 2, 1);
}

static void test_channel_a_thread_sender_waits_for_room_in_a_full_buffer(void **state) {
  (void)state;
  run_side(W_THREAD, 2, 1);
}

static void test_channel_a_callback_sender_waits_for_room_in_a_full_buffer(void **state) {
  (void)state;
  run_side(W_CB, 2, 1);
}

static void test_channel_rendezvous_send_by_each_kind_completes_when_received(void **state) {
  (void)state;
  const int kinds[] = {W_TASK, W_STEPPED, W_THREAD, W_CB};
  for (int i = 0; i < 4; i++)
    run_side(kinds[i], 0, 1);
}

static void test_channel_rendezvous_receive_by_each_kind_completes_when_sent(void **state) {
  (void)state;
  const int kinds[] = {W_TASK, W_STEPPED, W_THREAD, W_CB};
  for (int i = 0; i < 4; i++)
    run_side(kinds[i], 0, 0);
}

/* ---- FIFO across kinds, on both sides ----------------------------------------------------------- */

#define MIX_N 8
static const int mix_kinds[MIX_N] = {W_TASK, W_THREAD, W_CB, W_STEPPED, W_CB, W_STEPPED, W_THREAD, W_TASK};

struct mix_ctx {
  int senders; /* 1: the waiters send into a rendezvous channel; 0: they receive */
  chan ch;
  sw w[MIX_N];
  void *got[MIX_N];
};

static int mix_root(braid_task *self, void *arg) {
  struct mix_ctx *c = arg;
  c->ch = new_chan(0, NULL);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  for (int i = 0; i < MIX_N; i++) {
    if (c->senders) {
      sw_init(&c->w[i], &send_ops, tx_clone(c->ch.tx), mix_kinds[i], i, NULL);
      c->w[i].item = ITEM(i);
    } else {
      sw_init(&c->w[i], &recv_ops, rx_clone(c->ch.rx), mix_kinds[i], i, NULL);
    }
    CHECK_INT(sw_start(g, &c->w[i]), 0);
    if (c->senders)
      WAIT_UNTIL(self, tx_waiting(c->ch.tx) == i + 1);
    else
      WAIT_UNTIL(self, rx_waiting(c->ch.rx) == i + 1);
  }
  for (int i = 0; i < MIX_N; i++) {
    if (c->senders) {
      CHECK_INT(braid_channel_receive(self, c->ch.rx, &c->got[i]), 0);
    } else {
      CHECK_INT(braid_channel_send(self, c->ch.tx, ITEM(i)), 0);
    }
    WAIT_UNTIL(self, sw_done(&c->w[i]));
    for (int j = i + 1; j < MIX_N; j++)
      CHECK(!sw_done(&c->w[j]));
  }
  close_group(g);
  for (int i = 0; i < MIX_N; i++) {
    if (c->senders)
      sw_join_tx(&c->w[i]);
    else
      sw_join_rx(&c->w[i]);
    CHECK_INT(sw_rc(&c->w[i]), 0);
  }
  close_chan(c->ch);
  return 0;
}

static void test_channel_waiting_receivers_of_all_kinds_get_items_in_fifo_order(void **state) {
  (void)state;
  struct mix_ctx *c = calloc(1, sizeof *c);
  assert_non_null(c);
  assert_int_equal(run_real(mix_root, c), 0);
  for (int i = 0; i < MIX_N; i++)
    assert_ptr_equal(c->w[i].item, ITEM(i));
  free(c);
}

static void test_channel_waiting_senders_of_all_kinds_are_received_in_fifo_order(void **state) {
  (void)state;
  struct mix_ctx *c = calloc(1, sizeof *c);
  assert_non_null(c);
  c->senders = 1;
  assert_int_equal(run_real(mix_root, c), 0);
  for (int i = 0; i < MIX_N; i++)
    assert_ptr_equal(c->got[i], ITEM(i));
  free(c);
}

/* ---- per-sender FIFO with several concurrent senders ------------------------------------------- */

#define PS_SENDERS 4
#define PS_ITEMS 500

struct ps_sender {
  braid_sender *tx;
  int id;
};

static void *ps_send(void *arg) {
  struct ps_sender *s = arg;
  for (int i = 0; i < PS_ITEMS; i++) {
    uintptr_t v = ((uintptr_t)s->id << 20) | ((uintptr_t)i + 1);
    if (!CHECK_INT(braid_channel_send(NULL, s->tx, (void *)v), 0)) break;
  }
  CHECK_INT(braid_sender_free(s->tx), 0);
  return NULL;
}

static void test_channel_items_of_each_sender_arrive_in_the_order_sent(void **state) {
  (void)state;
  chan c = new_chan(3, NULL);
  struct ps_sender s[PS_SENDERS];
  pthread_t t[PS_SENDERS];
  for (int i = 0; i < PS_SENDERS; i++) {
    s[i].id = i;
    assert_int_equal(braid_sender_clone(c.tx, &s[i].tx), 0);
  }
  assert_int_equal(braid_sender_free(c.tx), 0);
  for (int i = 0; i < PS_SENDERS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, ps_send, &s[i]), 0);
  int next[PS_SENDERS] = {0};
  int total = 0, rc;
  void *it;
  while ((rc = braid_channel_receive(NULL, c.rx, &it)) == 0) {
    uintptr_t v = (uintptr_t)it;
    int id = (int)(v >> 20), seq = (int)(v & 0xfffff) - 1;
    assert_true(id >= 0 && id < PS_SENDERS);
    assert_int_equal(seq, next[id]);
    next[id]++;
    total++;
  }
  assert_int_equal(rc, BRAID_EEOF);
  for (int i = 0; i < PS_SENDERS; i++)
    assert_int_equal(pthread_join(t[i], NULL), 0);
  assert_int_equal(total, PS_SENDERS * PS_ITEMS);
  assert_int_equal(braid_receiver_free(c.rx), 0);
}

/* ---- end of stream ------------------------------------------------------------------------------ */

static void test_channel_eof_comes_after_the_buffer_drains_once_the_last_sender_closed(void **state) {
  (void)state;
  chan c = new_chan(4, NULL);
  braid_sender *tx2 = NULL;
  assert_int_equal(braid_sender_clone(c.tx, &tx2), 0);
  assert_int_equal(braid_channel_send_nowait(c.tx, ITEM(1)), 0);
  assert_int_equal(braid_channel_send_nowait(tx2, ITEM(2)), 0);
  assert_int_equal(braid_sender_close(c.tx), 0);
  void *it = NULL;
  assert_int_equal(braid_channel_receive_nowait(c.rx, &it), 0);
  assert_ptr_equal(it, ITEM(1));
  /* One sender is still open: empty is not the end. */
  assert_int_equal(braid_channel_receive_nowait(c.rx, &it), 0);
  assert_int_equal(braid_channel_receive_nowait(c.rx, &it), BRAID_EWOULDBLOCK);
  assert_int_equal(braid_channel_send_nowait(tx2, ITEM(3)), 0);
  assert_int_equal(braid_sender_close(tx2), 0);
  assert_int_equal(braid_channel_receive(NULL, c.rx, &it), 0);
  assert_ptr_equal(it, ITEM(3));
  it = ITEM(77);
  assert_int_equal(braid_channel_receive(NULL, c.rx, &it), BRAID_EEOF);
  assert_int_equal(braid_channel_receive_nowait(c.rx, &it), BRAID_EEOF);
  assert_int_equal(braid_channel_receive(NULL, c.rx, &it), BRAID_EEOF);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = (braid_wait *)&r;
  int rc_cb = braid_channel_receive_cb(c.rx, &it, cb_record, &r, &w);
  assert_int_equal(rc_cb, BRAID_EEOF);
  assert_int_equal(atomic_load(&r.calls), 0);
  close_chan(c);
  assert_int_equal(braid_sender_free(tx2), 0);
}

struct eof_ctx {
  chan ch;
  sw w[4];
};

static int eof_root(braid_task *self, void *arg) {
  struct eof_ctx *c = arg;
  const int kinds[4] = {W_TASK, W_STEPPED, W_THREAD, W_CB};
  c->ch = new_chan(1, NULL);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  for (int i = 0; i < 4; i++) {
    sw_init(&c->w[i], &recv_ops, rx_clone(c->ch.rx), kinds[i], i, NULL);
    c->w[i].item = ITEM(50);
    CHECK_INT(sw_start(g, &c->w[i]), 0);
    WAIT_UNTIL(self, rx_waiting(c->ch.rx) == i + 1);
  }
  CHECK_INT(braid_sender_close(c->ch.tx), 0);
  for (int i = 0; i < 4; i++)
    WAIT_UNTIL(self, sw_done(&c->w[i]));
  CHECK_INT(rx_waiting(c->ch.rx), 0);
  close_group(g);
  for (int i = 0; i < 4; i++)
    sw_join_rx(&c->w[i]);
  close_chan(c->ch);
  return 0;
}

static void test_channel_closing_the_last_sender_ends_every_waiting_receiver_with_eof(void **state) {
  (void)state;
  struct eof_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(eof_root, &c), 0);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(sw_rc(&c.w[i]), BRAID_EEOF);
    assert_ptr_equal(c.w[i].item, ITEM(50)); /* nothing written */
  }
  assert_int_equal(atomic_load(&c.w[3].cb.calls), 1);
}

/* ---- broken: every receiver closed ------------------------------------------------------------------ */

static void
test_channel_send_after_the_last_receiver_closed_is_ebroken_and_the_item_stays_with_the_caller(void **state) {
  (void)state;
  chan c = new_chan(4, tpayload_dtor);
  tpayload p = {.id = 1};
  braid_receiver *rx2 = NULL;
  assert_int_equal(braid_receiver_clone(c.rx, &rx2), 0);
  assert_int_equal(braid_receiver_close(c.rx), 0);
  /* One receiver is left: sending still works. */
  assert_int_equal(braid_channel_send_nowait(c.tx, &p), 0);
  void *it = NULL;
  assert_int_equal(braid_channel_receive_nowait(rx2, &it), 0);
  assert_ptr_equal(it, &p);
  assert_int_equal(braid_receiver_free(rx2), 0);
  assert_int_equal(braid_channel_send_nowait(c.tx, &p), BRAID_EBROKEN);
  assert_int_equal(braid_channel_send(NULL, c.tx, &p), BRAID_EBROKEN);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = (braid_wait *)&r;
  assert_int_equal(braid_channel_send_cb(c.tx, &p, cb_record, &r, &w), BRAID_EBROKEN);
  assert_int_equal(atomic_load(&r.calls), 0);
  assert_int_equal(atomic_load(&p.dtor_calls), 0);
  braid_channel_stats st = tx_stats(c.tx);
  assert_int_equal(st.open_receivers, 0);
  assert_int_equal(st.buffered, 0);
  close_chan(c);
  assert_int_equal(atomic_load(&p.dtor_calls), 0);
}

struct broken_ctx {
  chan ch;
  sw w[4];
  tpayload items[4], buffered[2];
};

static int broken_root(braid_task *self, void *arg) {
  struct broken_ctx *c = arg;
  const int kinds[4] = {W_TASK, W_STEPPED, W_THREAD, W_CB};
  c->ch = new_chan(2, tpayload_dtor);
  CHECK_INT(braid_channel_send_nowait(c->ch.tx, &c->buffered[0]), 0);
  CHECK_INT(braid_channel_send_nowait(c->ch.tx, &c->buffered[1]), 0);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  for (int i = 0; i < 4; i++) {
    sw_init(&c->w[i], &send_ops, tx_clone(c->ch.tx), kinds[i], i, NULL);
    c->w[i].item = &c->items[i];
    CHECK_INT(sw_start(g, &c->w[i]), 0);
    WAIT_UNTIL(self, tx_waiting(c->ch.tx) == i + 1);
  }
  CHECK_INT(braid_receiver_close(c->ch.rx), 0);
  for (int i = 0; i < 4; i++)
    WAIT_UNTIL(self, sw_done(&c->w[i]));
  braid_channel_stats st = tx_stats(c->ch.tx);
  CHECK_INT(st.waiting_send, 0);
  CHECK_INT(st.buffered, 0);
  close_group(g);
  for (int i = 0; i < 4; i++)
    sw_join_tx(&c->w[i]);
  close_chan(c->ch);
  return 0;
}

static void test_channel_closing_the_last_receiver_breaks_waiting_senders_and_destroys_buffered_items(void **state) {
  (void)state;
  struct broken_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(broken_root, &c), 0);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(sw_rc(&c.w[i]), BRAID_EBROKEN);
    assert_int_equal(atomic_load(&c.items[i].dtor_calls), 0); /* still the sender's */
  }
  assert_int_equal(atomic_load(&c.buffered[0].dtor_calls), 1);
  assert_int_equal(atomic_load(&c.buffered[1].dtor_calls), 1);
  assert_int_equal(atomic_load(&c.w[3].cb.calls), 1);
}

static void test_channel_dtor_runs_exactly_once_per_item_buffered_when_the_last_receiver_closes(void **state) {
  (void)state;
  tpayload p[6];
  memset(p, 0, sizeof p);
  chan c = new_chan(BRAID_UNBOUNDED, tpayload_dtor);
  braid_receiver *rx2 = NULL;
  assert_int_equal(braid_receiver_clone(c.rx, &rx2), 0);
  for (int i = 0; i < 6; i++)
    assert_int_equal(braid_channel_send_nowait(c.tx, &p[i]), 0);
  void *it = NULL;
  assert_int_equal(braid_channel_receive_nowait(c.rx, &it), 0); /* p[0]: the receiver's now */
  assert_ptr_equal(it, &p[0]);
  /* Closing the senders does not destroy anything: receivers may drain. */
  assert_int_equal(braid_sender_close(c.tx), 0);
  assert_int_equal(braid_receiver_close(c.rx), 0); /* not the last receiver */
  for (int i = 0; i < 6; i++)
    assert_int_equal(atomic_load(&p[i].dtor_calls), 0);
  assert_int_equal(braid_channel_receive_nowait(rx2, &it), 0); /* p[1] */
  assert_ptr_equal(it, &p[1]);
  assert_int_equal(braid_receiver_close(rx2), 0);
  assert_int_equal(atomic_load(&p[0].dtor_calls), 0);
  assert_int_equal(atomic_load(&p[1].dtor_calls), 0);
  for (int i = 2; i < 6; i++)
    assert_int_equal(atomic_load(&p[i].dtor_calls), 1);
  /* Closing again, and freeing, destroys nothing more. */
  assert_int_equal(braid_receiver_close(rx2), 0);
  assert_int_equal(braid_receiver_free(rx2), 0);
  close_chan(c);
  for (int i = 2; i < 6; i++)
    assert_int_equal(atomic_load(&p[i].dtor_calls), 1);
}

static void test_channel_without_dtor_drops_buffered_items_silently(void **state) {
  (void)state;
  chan c = new_chan(3, NULL);
  assert_int_equal(braid_channel_send_nowait(c.tx, ITEM(1)), 0);
  assert_int_equal(braid_channel_send_nowait(c.tx, ITEM(2)), 0);
  assert_int_equal(braid_receiver_close(c.rx), 0);
  assert_int_equal(braid_channel_send_nowait(c.tx, ITEM(3)), BRAID_EBROKEN);
  assert_int_equal(tx_stats(c.tx).buffered, 0);
  close_chan(c);
}

/* ---- cancellation ----------------------------------------------------------------------------------- */

struct cancel_ctx {
  int kind;
  int sends;
  chan ch;
  sw w;
  tpayload item;
  braid_time_t t0;
  braid_channel_stats before, after;
  void *later;
  int rc_later;
};

static int cancel_root(braid_task *self, void *arg) {
  struct cancel_ctx *c = arg;
  c->ch = new_chan(1, tpayload_dtor);
  c->t0 = braid_now(self);
  tpayload filler = {.id = 0};
  if (c->sends) CHECK_INT(braid_channel_send_nowait(c->ch.tx, &filler), 0);
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  sw_init(&c->w, c->sends ? &send_ops : &recv_ops, c->sends ? (void *)tx_clone(c->ch.tx) : (void *)rx_clone(c->ch.rx),
          c->kind, 1, NULL);
  c->w.item = c->sends ? (void *)&c->item : ITEM(60);
  c->w.scope = new_scope(c->t0 + 2 * SEC, 0);
  CHECK_INT(sw_start(g, &c->w), 0);
  CHECK_INT(braid_sleep(self, SEC), 0);
  c->before = tx_stats(c->ch.tx);
  CHECK_INT(braid_sleep(self, 2 * SEC), 0);
  c->after = tx_stats(c->ch.tx);
  if (c->sends) {
    /* Only the filler is in the channel. */
    CHECK_INT(braid_channel_receive_nowait(c->ch.rx, &c->later), 0);
    c->rc_later = braid_channel_receive_nowait(c->ch.rx, &c->later);
  } else {
    /* A later item is buffered, not lost to the cancelled receiver. */
    CHECK_INT(braid_channel_send_nowait(c->ch.tx, ITEM(61)), 0);
    c->rc_later = braid_channel_receive_nowait(c->ch.rx, &c->later);
  }
  close_group(g);
  if (c->sends)
    sw_join_tx(&c->w);
  else
    sw_join_rx(&c->w);
  close_chan(c->ch);
  CHECK_INT(braid_scope_unref(c->w.scope), 0);
  return 0;
}

static void run_cancel(int kind, int sends) {
  struct cancel_ctx c;
  memset(&c, 0, sizeof c);
  c.kind = kind;
  c.sends = sends;
  assert_int_equal(run_virtual(cancel_root, &c), 0);
  assert_int_equal(sw_rc(&c.w), BRAID_ECANCELED);
  assert_int_equal(c.w.woke_at, c.t0 + 2 * SEC);
  if (sends) {
    assert_int_equal(c.before.waiting_send, 1);
    assert_int_equal(c.after.waiting_send, 0);
    assert_int_equal(c.after.buffered, 1);
    assert_int_equal(c.rc_later, BRAID_EWOULDBLOCK);
    assert_int_equal(atomic_load(&c.item.dtor_calls), 0); /* still the sender's */
  } else {
    assert_int_equal(c.before.waiting_receive, 1);
    assert_int_equal(c.after.waiting_receive, 0);
    assert_ptr_equal(c.w.item, ITEM(60)); /* nothing written */
    assert_int_equal(c.rc_later, 0);
    assert_ptr_equal(c.later, ITEM(61));
  }
}

static void test_channel_a_stackful_receiver_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue(void **state) {
  (void)state;
  run_cancel(W_TASK, 0);
}

static void test_channel_a_stepped_receiver_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue(void **state) {
  (void)state;
  run_cancel(W_STEPPED, 0);
}

static void test_channel_a_stackful_sender_whose_deadline_passes_keeps_its_item(void **state) {
  (void)state;
  run_cancel(W_TASK, 1);
}

static void test_channel_a_stepped_sender_whose_deadline_passes_keeps_its_item(void **state) {
  (void)state;
  run_cancel(W_STEPPED, 1);
}

static void test_channel_waiting_threads_whose_scopes_are_cancelled_get_ecanceled(void **state) {
  (void)state;
  chan c = new_chan(0, NULL);
  sw r, s;
  sw_init(&r, &recv_ops, rx_clone(c.rx), W_THREAD, 1, NULL);
  sw_thread_scope_cancelled(&r);
  assert_int_equal(braid_receiver_free(r.obj), 0);
  /* Now a sender with a short real deadline. */
  sw_init(&s, &send_ops, tx_clone(c.tx), W_THREAD, 2, NULL);
  s.item = ITEM(3);
  sw_thread_short_deadline(&s, 30 * MSEC);
  assert_int_equal(braid_sender_free(s.obj), 0);
  void *it = NULL;
  assert_int_equal(braid_channel_receive_nowait(c.rx, &it), BRAID_EWOULDBLOCK);
  close_chan(c);
}

struct level_ctx {
  level_case lc;
  chan ch;
  int rc_send;
  void *slot;
  size_t buffered_after;
};

static int level_receive(braid_task *self, void *arg) {
  struct level_ctx *c = arg;
  c->slot = ITEM(9);
  return braid_channel_receive(self, c->ch.rx, &c->slot);
}

static void level_more(braid_task *self, void *arg) {
  struct level_ctx *c = arg;
  c->rc_send = braid_channel_send(self, c->ch.tx, ITEM(2));
  c->buffered_after = tx_stats(c->ch.tx).buffered;
}

static int level_root(braid_task *self, void *arg) {
  struct level_ctx *c = arg;
  c->ch = new_chan(2, NULL);
  CHECK_INT(braid_channel_send_nowait(c->ch.tx, ITEM(1)), 0);
  c->lc = (level_case){.op = level_receive, .more = level_more, .ud = c};
  level_case_run(self, &c->lc);
  void *it = NULL;
  CHECK_INT(braid_channel_receive_nowait(c->ch.rx, &it), 0);
  CHECK_PTR(it, ITEM(1));
  CHECK_INT(braid_channel_receive_nowait(c->ch.rx, &it), BRAID_EWOULDBLOCK);
  close_chan(c->ch);
  return 0;
}

static void test_channel_send_and_receive_in_a_cancelled_scope_yield_and_fail_without_moving_items(void **state) {
  (void)state;
  struct level_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(level_root, &c), 0);
  assert_level_case(&c.lc);
  assert_ptr_equal(c.slot, ITEM(9));
  assert_int_equal(c.rc_send, BRAID_ECANCELED);
  assert_int_equal(c.buffered_after, 1);
}

/* ---- races --------------------------------------------------------------------------------------------- */

/* A waiting receiver (a fresh clone each round) raced by a nowait send. */
static void race_new_receiver(race_case *rc) { rc->obj = rx_clone(((chan *)rc->ud)->rx); }
static int race_send(race_case *rc) { return braid_channel_send_nowait(((chan *)rc->ud)->tx, ITEM(rc->round)); }

static void race_check(race_case *rc, sw *r) {
  if (rc->rc_wake == 0) {
    /* Handed over: the receiver has it, whatever the cancellation. */
    CHECK_INT(sw_rc(r), 0);
    CHECK_PTR(r->item, ITEM(rc->round));
  } else {
    CHECK_INT(rc->rc_wake, BRAID_EWOULDBLOCK);
    CHECK_INT(sw_rc(r), BRAID_ECANCELED);
  }
  braid_channel_stats st = tx_stats(((chan *)rc->ud)->tx);
  CHECK_INT(st.waiting_receive, 0);
  CHECK_INT(st.buffered, 0);
  CHECK_INT(braid_receiver_free(rc->obj), 0);
}

static void test_channel_race_send_against_cancel_of_a_waiting_receiver_delivers_or_keeps_the_item(void **state) {
  (void)state;
  chan c = new_chan(0, NULL);
  race_case rc = {.ops = &recv_ops, .setup = race_new_receiver, .wake = race_send, .check = race_check, .ud = &c};
  run_race_case(&rc);
  close_chan(c);
}

/* A callback sender raced by a nowait receive (from a fresh clone each
 * round) and the cancellation of its wait. */
struct cb_race_ctx {
  chan ch;
  braid_receiver *rx;
  void *item;
};

static void cb_race_new_receiver(cb_race_case *rc) {
  struct cb_race_ctx *c = rc->ud;
  c->rx = rx_clone(c->ch.rx);
  c->item = NULL;
}

static int cb_race_reg(cb_race_case *rc, braid_wait_cb cb, void *ud, braid_wait **out) {
  return braid_channel_send_cb(((struct cb_race_ctx *)rc->ud)->ch.tx, ITEM(rc->round), cb, ud, out);
}

static int cb_race_receive(cb_race_case *rc) {
  struct cb_race_ctx *c = rc->ud;
  return braid_channel_receive_nowait(c->rx, &c->item);
}

static void cb_race_check(cb_race_case *rc, int woke) {
  struct cb_race_ctx *c = rc->ud;
  if (woke) {
    CHECK_INT(rc->rc_wake, 0);
    CHECK_PTR(c->item, ITEM(rc->round));
  } else {
    CHECK_INT(rc->rc_wake, BRAID_EWOULDBLOCK);
  }
}

static void cb_race_free_receiver(cb_race_case *rc) {
  struct cb_race_ctx *c = rc->ud;
  CHECK_INT(tx_waiting(c->ch.tx), 0);
  CHECK_INT(braid_receiver_free(c->rx), 0);
}

static void test_channel_race_receive_against_wait_cancel_of_a_callback_sender_never_loses_the_item(void **state) {
  (void)state;
  struct cb_race_ctx c = {new_chan(0, NULL), NULL, NULL};
  cb_race_case rc = {.wake_in_thread = 1,
                     .setup = cb_race_new_receiver,
                     .reg = cb_race_reg,
                     .wake = cb_race_receive,
                     .check = cb_race_check,
                     .teardown = cb_race_free_receiver,
                     .ud = &c};
  run_cb_race_case(&rc);
  close_chan(c.ch);
}

/* ---- errors ---------------------------------------------------------------------------------------------- */

static void test_channel_null_arguments_are_einval(void **state) {
  (void)state;
  braid_sender *tx = NULL;
  braid_receiver *rx = NULL;
  assert_int_equal(braid_channel_new(1, NULL, NULL, &rx), BRAID_EINVAL);
  assert_int_equal(braid_channel_new(1, NULL, &tx, NULL), BRAID_EINVAL);
  assert_null(tx);
  assert_null(rx);
  chan c = new_chan(1, NULL);
  cb_rec r;
  cb_rec_init(&r, NULL, 0);
  braid_wait *w = NULL;
  void *it = NULL;
  braid_channel_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  assert_int_equal(braid_sender_clone(NULL, &tx), BRAID_EINVAL);
  assert_int_equal(braid_sender_clone(c.tx, NULL), BRAID_EINVAL);
  assert_int_equal(braid_receiver_clone(NULL, &rx), BRAID_EINVAL);
  assert_int_equal(braid_receiver_clone(c.rx, NULL), BRAID_EINVAL);
  assert_int_equal(braid_sender_close(NULL), BRAID_EINVAL);
  assert_int_equal(braid_receiver_close(NULL), BRAID_EINVAL);
  assert_int_equal(braid_sender_free(NULL), BRAID_EINVAL);
  assert_int_equal(braid_receiver_free(NULL), BRAID_EINVAL);
  assert_int_equal(braid_channel_send(NULL, NULL, ITEM(1)), BRAID_EINVAL);
  assert_int_equal(braid_channel_send_nowait(NULL, ITEM(1)), BRAID_EINVAL);
  assert_int_equal(braid_channel_send_cb(NULL, ITEM(1), cb_record, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_channel_send_cb(c.tx, ITEM(1), NULL, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_channel_send_cb(c.tx, ITEM(1), cb_record, &r, NULL), BRAID_EINVAL);
  assert_int_equal(braid_channel_receive(NULL, NULL, &it), BRAID_EINVAL);
  assert_int_equal(braid_channel_receive(NULL, c.rx, NULL), BRAID_EINVAL);
  assert_int_equal(braid_channel_receive_nowait(NULL, &it), BRAID_EINVAL);
  assert_int_equal(braid_channel_receive_nowait(c.rx, NULL), BRAID_EINVAL);
  assert_int_equal(braid_channel_receive_cb(NULL, &it, cb_record, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_channel_receive_cb(c.rx, NULL, cb_record, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_channel_receive_cb(c.rx, &it, NULL, &r, &w), BRAID_EINVAL);
  assert_int_equal(braid_channel_receive_cb(c.rx, &it, cb_record, &r, NULL), BRAID_EINVAL);
  assert_int_equal(braid_sender_statistics(NULL, &st), BRAID_EINVAL);
  assert_int_equal(braid_sender_statistics(c.tx, NULL), BRAID_EINVAL);
  assert_int_equal(braid_receiver_statistics(NULL, &st), BRAID_EINVAL);
  assert_int_equal(braid_receiver_statistics(c.rx, NULL), BRAID_EINVAL);
  st.size = 0;
  assert_int_equal(braid_sender_statistics(c.tx, &st), BRAID_EINVAL);
  assert_int_equal(braid_receiver_statistics(c.rx, &st), BRAID_EINVAL);
  /* Nothing moved, nothing was counted. */
  braid_channel_stats s = tx_stats(c.tx);
  assert_int_equal(s.buffered, 0);
  assert_int_equal(s.open_senders, 1);
  assert_int_equal(s.open_receivers, 1);
  assert_int_equal(atomic_load(&r.calls), 0);
  close_chan(c);
}

struct wrong_ctx {
  chan ch;
  wrong_calls send, recv;
  braid_channel_stats after;
};

static int wrong_send(braid_task *task, void *arg) {
  struct wrong_ctx *c = arg;
  return braid_channel_send(task, c->ch.tx, ITEM(2));
}

static int wrong_receive(braid_task *task, void *arg) {
  struct wrong_ctx *c = arg;
  void *it = NULL;
  return braid_channel_receive(task, c->ch.rx, &it);
}

static int wrong_root(braid_task *self, void *arg) {
  struct wrong_ctx *c = arg;
  c->ch = new_chan(1, NULL);
  /* Room to send and nothing to receive, then the reverse: a refused call
   * must neither send nor receive. */
  c->send.rc_other_thread = call_from_another_thread(wrong_send, self, c);
  c->recv.rc_other_thread = call_from_another_thread(wrong_receive, self, c);
  c->send.rc_not_running = call_naming_a_blocked_task(self, wrong_send, c);
  c->after = tx_stats(c->ch.tx);
  CHECK_INT(braid_channel_send_nowait(c->ch.tx, ITEM(3)), 0);
  c->recv.rc_not_running = call_naming_a_blocked_task(self, wrong_receive, c);
  /* Full: a thread send would block the loop. */
  c->send.rc_null_in_loop = braid_channel_send(NULL, c->ch.tx, ITEM(4));
  void *it = NULL;
  CHECK_INT(braid_channel_receive_nowait(c->ch.rx, &it), 0);
  CHECK_PTR(it, ITEM(3));
  /* Empty: a thread receive would block the loop. */
  c->recv.rc_null_in_loop = braid_channel_receive(NULL, c->ch.rx, &it);
  CHECK_INT(tx_stats(c->ch.tx).waiting_send, 0);
  CHECK_INT(rx_stats(c->ch.rx).waiting_receive, 0);
  close_chan(c->ch);
  return 0;
}

static void test_channel_wrong_thread_and_wrong_task_are_refused(void **state) {
  (void)state;
  struct wrong_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(wrong_root, &c), 0);
  assert_wrong_calls(&c.send);
  assert_wrong_calls(&c.recv);
  assert_int_equal(c.after.buffered, 0);
}

static void test_channel_allocation_failures_are_enomem_and_leak_nothing(void **state) {
  (void)state;
  fail_alloc fa;
  fail_alloc_install(&fa);
  atomic_store(&fa.failing, 1);
  braid_sender *tx = NULL;
  braid_receiver *rx = NULL;
  int rc = braid_channel_new(2, NULL, &tx, &rx);
  atomic_store(&fa.failing, 0);
  assert_int_equal(rc, BRAID_ENOMEM);
  assert_null(tx);
  assert_null(rx);
  chan c = new_chan(BRAID_UNBOUNDED, NULL);
  braid_sender *tx2 = NULL;
  braid_receiver *rx2 = NULL;
  atomic_store(&fa.failing, 1);
  int rc_ctx = braid_sender_clone(c.tx, &tx2);
  int rc_crx = braid_receiver_clone(c.rx, &rx2);
  atomic_store(&fa.failing, 0);
  assert_int_equal(rc_ctx, BRAID_ENOMEM);
  assert_int_equal(rc_crx, BRAID_ENOMEM);
  braid_channel_stats st = tx_stats(c.tx);
  assert_int_equal(st.open_senders, 1);
  assert_int_equal(st.open_receivers, 1);
  /* An unbounded buffer grows: if that fails, the send says so and the
   * item stays with the caller. */
  int sent = 0, refused = 0;
  for (int i = 0; i < 200; i++) {
    atomic_store(&fa.failing, i >= 10 && i < 40); /* the buffer must grow in there */
    int r = braid_channel_send_nowait(c.tx, ITEM(i));
    atomic_store(&fa.failing, 0);
    if (r == 0)
      sent++;
    else if (CHECK_INT(r, BRAID_ENOMEM))
      refused++;
  }
  assert_int_equal(tx_stats(c.tx).buffered, sent);
  void *it = NULL;
  int prev = -1;
  for (int i = 0; i < sent; i++) {
    assert_int_equal(braid_channel_receive_nowait(c.rx, &it), 0);
    assert_true(ITEM_NO(it) > prev);
    prev = ITEM_NO(it);
  }
  close_chan(c);
  fail_alloc_uninstall();
  assert_int_equal(atomic_load(&fa.live), 0);
  print_message("  %d sent, %d refused for lack of memory\n", sent, refused);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_channel_new_reports_its_buffer_and_one_open_end_each),
      BT(test_channel_clones_and_closes_are_counted_per_end),
      BT(test_channel_a_closed_end_answers_eclosed_until_freed),
      BT(test_channel_buffered_holds_n_items_in_fifo_order),
      BT(test_channel_unbounded_never_blocks_a_sender),
      BT(test_channel_rendezvous_nowait_needs_a_waiting_partner),
      BT(test_channel_send_cb_and_receive_cb_complete_at_once_when_possible),
      BT(test_channel_a_waiting_stackful_receiver_gets_the_next_item),
      BT(test_channel_a_waiting_stepped_receiver_gets_the_next_item),
      BT(test_channel_a_waiting_thread_receiver_gets_the_next_item),
      BT(test_channel_a_waiting_callback_receiver_gets_the_next_item),
      BT(test_channel_a_stackful_sender_waits_for_room_in_a_full_buffer),
      BT(test_channel_a_stepped_sender_waits_for_room_in_a_full_buffer),
      BT(test_channel_a_thread_sender_waits_for_room_in_a_full_buffer),
      BT(test_channel_a_callback_sender_waits_for_room_in_a_full_buffer),
      BT(test_channel_rendezvous_send_by_each_kind_completes_when_received),
      BT(test_channel_rendezvous_receive_by_each_kind_completes_when_sent),
      BT(test_channel_waiting_receivers_of_all_kinds_get_items_in_fifo_order),
      BT(test_channel_waiting_senders_of_all_kinds_are_received_in_fifo_order),
      BT(test_channel_items_of_each_sender_arrive_in_the_order_sent),
      BT(test_channel_eof_comes_after_the_buffer_drains_once_the_last_sender_closed),
      BT(test_channel_closing_the_last_sender_ends_every_waiting_receiver_with_eof),
      BT(test_channel_send_after_the_last_receiver_closed_is_ebroken_and_the_item_stays_with_the_caller),
      BT(test_channel_closing_the_last_receiver_breaks_waiting_senders_and_destroys_buffered_items),
      BT(test_channel_dtor_runs_exactly_once_per_item_buffered_when_the_last_receiver_closes),
      BT(test_channel_without_dtor_drops_buffered_items_silently),
      BT(test_channel_a_stackful_receiver_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue),
      BT(test_channel_a_stepped_receiver_whose_deadline_passes_gets_ecanceled_and_leaves_the_queue),
      BT(test_channel_a_stackful_sender_whose_deadline_passes_keeps_its_item),
      BT(test_channel_a_stepped_sender_whose_deadline_passes_keeps_its_item),
      BT(test_channel_waiting_threads_whose_scopes_are_cancelled_get_ecanceled),
      BT(test_channel_send_and_receive_in_a_cancelled_scope_yield_and_fail_without_moving_items),
      BT(test_channel_race_send_against_cancel_of_a_waiting_receiver_delivers_or_keeps_the_item),
      BT(test_channel_race_receive_against_wait_cancel_of_a_callback_sender_never_loses_the_item),
      BT(test_channel_null_arguments_are_einval),
      BT(test_channel_wrong_thread_and_wrong_task_are_refused),
      BT(test_channel_allocation_failures_are_enomem_and_leak_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
