/*
 * test_group.c — task groups with stackful children: close waits for every
 * child, the first failure cancels the siblings and the body, failures are
 * listed in order with codes, task ids and payloads, payload destructors run
 * exactly once, cancellation of the group scope vs. an outer scope, nested
 * groups, spawning into a closed group, spawn options.
 */
#include "core_helpers.h"

#include <string.h>

#define SEC BRAID_SEC

/* A failure as braid_group_failure reports it. */
struct failure {
  int code;
  void *payload;
  uint64_t tid;
};

/* Read the first n failures of g (as many as there are); returns how many
 * the group has. */
static size_t read_failures(const braid_group *g, struct failure *f, size_t n) {
  size_t nfail = braid_group_failure_count(g);
  for (size_t i = 0; i < nfail && i < n; i++)
    CHECK_INT(braid_group_failure(g, i, &f[i].code, &f[i].payload, &f[i].tid), 0);
  return nfail;
}

/* ---- the basics ------------------------------------------------------ */

struct empty_ctx {
  int rc_close, rc_free;
  size_t children, failures;
  int has_scope, scope_cancelled;
};

static int empty_root(braid_task *self, void *arg) {
  struct empty_ctx *c = arg;
  braid_group *g = open_group(self);
  c->children = braid_group_child_count(g);
  c->has_scope = braid_group_scope(g) != NULL;
  c->rc_close = braid_group_close(g, 0);
  c->failures = braid_group_failure_count(g);
  c->scope_cancelled = braid_scope_cancel_called(braid_group_scope(g));
  c->rc_free = braid_group_free(g);
  return 0;
}

static void test_group_empty_opens_and_closes_cleanly(void **state) {
  (void)state;
  struct empty_ctx c;
  memset(&c, 0, sizeof c);
  c.rc_close = c.rc_free = 1;
  assert_int_equal(run_virtual(empty_root, &c), 0);
  assert_int_equal(c.children, 0);
  assert_int_equal(c.has_scope, 1);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.failures, 0);
  assert_int_equal(c.scope_cancelled, 0);
  assert_int_equal(c.rc_free, 0);
}

struct wait_ctx {
  int done;
  braid_time_t closed_at;
  size_t count_after_spawn, count_mid, count_after_close;
  int rc_close;
  braid_time_t durations[3];
  int next;
};

static int wait_child(braid_task *self, void *arg) {
  struct wait_ctx *c = arg;
  int me = c->next++;
  CHECK_INT(braid_sleep(self, c->durations[me]), 0);
  c->done++;
  return 0;
}

static int wait_root(braid_task *self, void *arg) {
  struct wait_ctx *c = arg;
  braid_group *g = open_group(self);
  for (int i = 0; i < 3; i++)
    CHECK_INT(braid_group_spawn(g, wait_child, c, NULL, NULL), 0);
  c->count_after_spawn = braid_group_child_count(g);
  CHECK_INT(braid_sleep(self, 1500 * BRAID_MSEC), 0);
  c->count_mid = braid_group_child_count(g);
  c->rc_close = braid_group_close(g, 0);
  c->closed_at = braid_now(self);
  c->count_after_close = braid_group_child_count(g);
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_group_close_waits_for_every_child(void **state) {
  (void)state;
  struct wait_ctx c;
  memset(&c, 0, sizeof c);
  c.durations[0] = 3 * SEC;
  c.durations[1] = 1 * SEC;
  c.durations[2] = 2 * SEC;
  assert_int_equal(run_virtual(wait_root, &c), 0);
  assert_int_equal(c.count_after_spawn, 3);
  assert_int_equal(c.count_mid, 2);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.done, 3);
  assert_int_equal(c.closed_at, 3 * SEC);
  assert_int_equal(c.count_after_close, 0);
}

struct out_task_ctx {
  braid_task *out[4];
  uint64_t out_ids[4];
  uint64_t seen_ids[4];
  int next;
};

static int id_child(braid_task *self, void *arg) {
  struct out_task_ctx *c = arg;
  c->seen_ids[c->next++] = braid_task_id(self);
  return 0;
}

static int out_task_root(braid_task *self, void *arg) {
  struct out_task_ctx *c = arg;
  braid_group *g = open_group(self);
  for (int i = 0; i < 4; i++) {
    CHECK_INT(braid_group_spawn(g, id_child, c, NULL, &c->out[i]), 0);
    c->out_ids[i] = braid_task_id(c->out[i]);
    CHECK_INT(braid_task_is_stepped(c->out[i]), 0);
    CHECK_PTR(braid_task_loop(c->out[i]), braid_task_loop(self));
  }
  close_group(g);
  return 0;
}

static void test_group_spawn_out_task_is_the_child(void **state) {
  (void)state;
  struct out_task_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(out_task_root, &c), 0);
  assert_int_equal(c.next, 4);
  /* Every child saw its own id, and each id came back from a spawn. */
  for (int i = 0; i < 4; i++) {
    int found = 0;
    for (int j = 0; j < 4; j++)
      found += c.seen_ids[i] == c.out_ids[j];
    assert_int_equal(found, 1);
  }
}

/* ---- failures -------------------------------------------------------- */

struct fail_ctx {
  braid_task *a, *b;
  uint64_t id_a, id_b, id_root;
  int rc_b_sleep, rc_body_sleep, rc_close;
  braid_time_t b_woke_at, body_woke_at, closed_at;
  size_t nfail;
  struct failure f[2];
  int rc_failure_oob;
  tpayload p1, p2;
  int p1_before_free, p2_before_free;
  void *taken, *taken_again;
};

static int fail_after_one_second(braid_task *self, void *arg) {
  (void)arg;
  CHECK_INT(braid_sleep(self, SEC), 0);
  return 42;
}

static int sleep_forever_record(braid_task *self, void *arg) {
  struct fail_ctx *c = arg;
  c->rc_b_sleep = braid_sleep_forever(self);
  c->b_woke_at = braid_now(self);
  return c->rc_b_sleep;
}

static int first_failure_root(braid_task *self, void *arg) {
  struct fail_ctx *c = arg;
  c->id_root = braid_task_id(self);
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, fail_after_one_second, c, NULL, &c->a), 0);
  c->id_a = braid_task_id(c->a);
  CHECK_INT(braid_group_spawn(g, sleep_forever_record, c, NULL, &c->b), 0);
  c->id_b = braid_task_id(c->b);
  /* The body is cancelled along with the siblings. */
  c->rc_body_sleep = braid_sleep(self, 10 * SEC);
  c->body_woke_at = braid_now(self);
  c->rc_close = braid_group_close(g, c->rc_body_sleep);
  c->closed_at = braid_now(self);
  c->nfail = read_failures(g, c->f, 1);
  c->rc_failure_oob = braid_group_failure(g, 1, NULL, NULL, NULL);
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_group_first_failure_cancels_siblings_and_body(void **state) {
  (void)state;
  struct fail_ctx c;
  memset(&c, 0, sizeof c);
  c.f[0].payload = &c;
  assert_int_equal(run_virtual(first_failure_root, &c), 0);
  assert_int_equal(c.rc_b_sleep, BRAID_ECANCELED);
  assert_int_equal(c.b_woke_at, SEC);
  assert_int_equal(c.rc_body_sleep, BRAID_ECANCELED);
  assert_int_equal(c.body_woke_at, SEC);
  assert_int_equal(c.rc_close, BRAID_EFAILED);
  assert_int_equal(c.closed_at, SEC);
  assert_int_equal(c.nfail, 1);
  assert_int_equal(c.f[0].code, 42);
  assert_null(c.f[0].payload);
  assert_int_equal(c.f[0].tid, c.id_a);
  assert_int_equal(c.rc_failure_oob, BRAID_EINVAL);
}

static int fail_with_p1_after_one_second(braid_task *self, void *arg) {
  struct fail_ctx *c = arg;
  CHECK_INT(braid_sleep(self, SEC), 0);
  return braid_task_fail(self, 11, &c->p1, tpayload_dtor);
}

static int fail_with_p2_in_cleanup(braid_task *self, void *arg) {
  struct fail_ctx *c = arg;
  c->rc_b_sleep = braid_sleep_forever(self);
  /* Cleanup code failing on its own account. */
  return braid_task_fail(self, 12, &c->p2, tpayload_dtor);
}

static int listed_failures_root(braid_task *self, void *arg) {
  struct fail_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, fail_with_p1_after_one_second, c, NULL, &c->a), 0);
  c->id_a = braid_task_id(c->a);
  CHECK_INT(braid_group_spawn(g, fail_with_p2_in_cleanup, c, NULL, &c->b), 0);
  c->id_b = braid_task_id(c->b);
  c->rc_close = braid_group_close(g, 0);
  c->nfail = read_failures(g, c->f, 2);
  c->p1_before_free = c->p1.dtor_calls;
  c->p2_before_free = c->p2.dtor_calls;
  c->taken = braid_group_take_payload(g, 1);
  c->taken_again = braid_group_take_payload(g, 1);
  CHECK_PTR(braid_group_take_payload(g, 7), NULL);
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_group_failures_are_listed_in_order_with_codes_ids_and_payloads(void **state) {
  (void)state;
  struct fail_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(listed_failures_root, &c), 0);
  assert_int_equal(c.rc_close, BRAID_EFAILED);
  assert_int_equal(c.rc_b_sleep, BRAID_ECANCELED);
  assert_int_equal(c.nfail, 2);
  assert_int_equal(c.f[0].code, 11);
  assert_ptr_equal(c.f[0].payload, &c.p1);
  assert_int_equal(c.f[0].tid, c.id_a);
  assert_int_equal(c.f[1].code, 12);
  assert_ptr_equal(c.f[1].payload, &c.p2);
  assert_int_equal(c.f[1].tid, c.id_b);
  /* The group owns the payloads until freed... */
  assert_int_equal(c.p1_before_free, 0);
  assert_int_equal(c.p2_before_free, 0);
  /* ...take_payload transfers one to us, once... */
  assert_ptr_equal(c.taken, &c.p2);
  assert_null(c.taken_again);
  /* ...and free destroys only the others, exactly once. */
  assert_int_equal(c.p1.dtor_calls, 1);
  assert_int_equal(c.p2.dtor_calls, 0);
  tpayload_dtor(c.taken);
  assert_int_equal(c.p2.dtor_calls, 1);
}

struct replace_ctx {
  tpayload p1, p2, bad[3];
  int rc_first, rc_second, p1_after_second, rc_bad[4];
  int rc_close;
  size_t nfail;
  struct failure f;
  int p2_before_free;
};

static int fail_twice_child(braid_task *self, void *arg) {
  struct replace_ctx *c = arg;
  c->rc_first = braid_task_fail(self, 7, &c->p1, tpayload_dtor);
  c->rc_second = braid_task_fail(self, 8, &c->p2, tpayload_dtor);
  c->p1_after_second = c->p1.dtor_calls;
  return 0; /* the recorded failure wins over the return value */
}

static int replace_root(braid_task *self, void *arg) {
  struct replace_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, fail_twice_child, c, NULL, NULL), 0);
  c->rc_close = braid_group_close(g, 0);
  c->nfail = read_failures(g, &c->f, 1);
  c->p2_before_free = c->p2.dtor_calls;
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_task_fail_twice_replaces_and_destroys_the_first_payload(void **state) {
  (void)state;
  struct replace_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(replace_root, &c), 0);
  assert_int_equal(c.rc_first, 7);
  assert_int_equal(c.rc_second, 8);
  assert_int_equal(c.p1_after_second, 1);
  assert_int_equal(c.rc_close, BRAID_EFAILED);
  assert_int_equal(c.nfail, 1);
  assert_int_equal(c.f.code, 8);
  assert_ptr_equal(c.f.payload, &c.p2);
  assert_int_equal(c.p2_before_free, 0);
  assert_int_equal(c.p1.dtor_calls, 1);
  assert_int_equal(c.p2.dtor_calls, 1);
}

static int bad_codes_child(braid_task *self, void *arg) {
  struct replace_ctx *c = arg;
  c->rc_bad[0] = braid_task_fail(self, 0, &c->bad[0], tpayload_dtor);
  c->rc_bad[1] = braid_task_fail(self, BRAID_ECANCELED, &c->bad[1], tpayload_dtor);
  c->rc_bad[2] = braid_task_fail(self, BRAID_EPENDING, &c->bad[2], tpayload_dtor);
  c->rc_bad[3] = braid_task_fail(NULL, 5, NULL, NULL);
  return 0;
}

static int bad_codes_root(braid_task *self, void *arg) {
  struct replace_ctx *c = arg;
  group_result r = run_in_group(self, bad_codes_child, c);
  c->rc_close = r.rc_close;
  c->nfail = r.nfail;
  return 0;
}

static void test_task_fail_rejects_invalid_codes_and_destroys_the_payload(void **state) {
  (void)state;
  struct replace_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(bad_codes_root, &c), 0);
  for (int i = 0; i < 4; i++)
    assert_int_equal(c.rc_bad[i], BRAID_EINVAL);
  for (int i = 0; i < 3; i++)
    assert_int_equal(c.bad[i].dtor_calls, 1);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.nfail, 0);
}

struct positive_ctx {
  int rc_close;
  size_t nfail;
  struct failure f[2];
};

static int return_positive(braid_task *self, void *arg) {
  (void)self;
  (void)arg;
  return 3;
}

static int fail_then_return_zero(braid_task *self, void *arg) {
  (void)arg;
  CHECK_INT(braid_sleep(self, SEC), BRAID_ECANCELED);
  CHECK_INT(braid_task_fail(self, 9, NULL, NULL), 9);
  return 0;
}

static int positive_root(braid_task *self, void *arg) {
  struct positive_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, return_positive, c, NULL, NULL), 0);
  CHECK_INT(braid_group_spawn(g, fail_then_return_zero, c, NULL, NULL), 0);
  c->rc_close = braid_group_close(g, 0);
  c->nfail = read_failures(g, c->f, 2);
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_group_positive_results_and_task_fail_are_failures(void **state) {
  (void)state;
  struct positive_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(positive_root, &c), 0);
  assert_int_equal(c.rc_close, BRAID_EFAILED);
  assert_int_equal(c.nfail, 2);
  assert_int_equal(c.f[0].code, 3);
  assert_int_equal(c.f[1].code, 9);
}

/* ---- failures of the body ------------------------------------------- */

struct body_fail_ctx {
  uint64_t id_root, id_child;
  int rc_child_sleep, rc_close, rc_body_cp, rc_fail_bad, rc_fail_closed;
  size_t nfail;
  struct failure f[2];
  tpayload p, bad, late;
  int p_before_free;
};

static int body_fail_child(braid_task *self, void *arg) {
  struct body_fail_ctx *c = arg;
  c->rc_child_sleep = braid_sleep_forever(self);
  return braid_task_fail(self, 12, NULL, NULL);
}

static int close_with_failure_root(braid_task *self, void *arg) {
  struct body_fail_ctx *c = arg;
  c->id_root = braid_task_id(self);
  braid_group *g = open_group(self);
  braid_task *child = NULL;
  CHECK_INT(braid_group_spawn(g, body_fail_child, c, NULL, &child), 0);
  c->id_child = braid_task_id(child);
  CHECK_INT(braid_sleep(self, SEC), 0);
  c->rc_close = braid_group_close(g, 99);
  c->nfail = read_failures(g, c->f, 2);
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_group_close_with_failure_cancels_children_and_lists_body_first(void **state) {
  (void)state;
  struct body_fail_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(close_with_failure_root, &c), 0);
  assert_int_equal(c.rc_child_sleep, BRAID_ECANCELED);
  assert_int_equal(c.rc_close, BRAID_EFAILED);
  assert_int_equal(c.nfail, 2);
  assert_int_equal(c.f[0].code, 99);
  assert_null(c.f[0].payload);
  assert_int_equal(c.f[0].tid, c.id_root);
  assert_int_equal(c.f[1].code, 12);
  assert_int_equal(c.f[1].tid, c.id_child);
}

static int group_fail_root(braid_task *self, void *arg) {
  struct body_fail_ctx *c = arg;
  c->id_root = braid_task_id(self);
  struct fail_ctx scratch;
  memset(&scratch, 0, sizeof scratch);
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, sleep_forever_record, &scratch, NULL, NULL), 0);
  c->rc_fail_bad = braid_group_fail(g, BRAID_ECANCELED, &c->bad, tpayload_dtor);
  CHECK_INT(braid_group_fail(g, 33, &c->p, tpayload_dtor), 0);
  c->rc_body_cp = braid_checkpoint(self);
  c->rc_close = braid_group_close(g, c->rc_body_cp);
  c->nfail = read_failures(g, c->f, 1);
  c->rc_fail_closed = braid_group_fail(g, 34, &c->late, tpayload_dtor);
  c->p_before_free = c->p.dtor_calls;
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_group_fail_records_a_body_failure_with_payload_and_cancels(void **state) {
  (void)state;
  struct body_fail_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(group_fail_root, &c), 0);
  assert_int_equal(c.rc_fail_bad, BRAID_EINVAL);
  assert_int_equal(c.bad.dtor_calls, 1);
  assert_int_equal(c.rc_body_cp, BRAID_ECANCELED);
  assert_int_equal(c.rc_close, BRAID_EFAILED);
  assert_int_equal(c.nfail, 1); /* the cancelled child is not a failure */
  assert_int_equal(c.f[0].code, 33);
  assert_ptr_equal(c.f[0].payload, &c.p);
  assert_int_equal(c.f[0].tid, c.id_root);
  assert_int_equal(c.rc_fail_closed, BRAID_ESTATE);
  assert_int_equal(c.late.dtor_calls, 1); /* on every error the payload is destroyed */
  assert_int_equal(c.p_before_free, 0);
  assert_int_equal(c.p.dtor_calls, 1);
}

struct group_fail_twice_ctx {
  tpayload first, second;
  int first_after_second;
  group_result r;
};

static int group_fail_twice_root(braid_task *self, void *arg) {
  struct group_fail_twice_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_fail(g, 41, &c->first, tpayload_dtor), 0);
  CHECK_INT(braid_group_fail(g, 42, &c->second, tpayload_dtor), 0);
  c->first_after_second = c->first.dtor_calls;
  /* A failing body result adds nothing once group_fail recorded one. */
  c->r = close_and_free_group(g, 77);
  return 0;
}

static void test_group_fail_twice_replaces_the_first_and_close_adds_nothing(void **state) {
  (void)state;
  struct group_fail_twice_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(group_fail_twice_root, &c), 0);
  assert_int_equal(c.first_after_second, 1);
  assert_int_equal(c.r.rc_close, BRAID_EFAILED);
  assert_int_equal(c.r.nfail, 1);
  assert_int_equal(c.r.code, 42);
  assert_ptr_equal(c.r.payload, &c.second);
  assert_int_equal(c.first.dtor_calls, 1);
  assert_int_equal(c.second.dtor_calls, 1);
}

struct free_payloads_ctx {
  tpayload p[4];
  int rc_close;
  int before_free[4];
};

static int fail_with_indexed_payload(braid_task *self, void *arg) {
  tpayload *p = arg;
  /* All fail in the same instant: no cancellation reaches them first. */
  return braid_task_fail(self, 100 + p->id, p, tpayload_dtor);
}

static int free_payloads_root(braid_task *self, void *arg) {
  struct free_payloads_ctx *c = arg;
  braid_group *g = open_group(self);
  for (int i = 0; i < 4; i++) {
    c->p[i].id = i;
    CHECK_INT(braid_group_spawn(g, fail_with_indexed_payload, &c->p[i], NULL, NULL), 0);
  }
  c->rc_close = braid_group_close(g, 0);
  CHECK_INT(braid_group_failure_count(g), 4);
  for (int i = 0; i < 4; i++)
    c->before_free[i] = c->p[i].dtor_calls;
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_group_free_runs_each_payload_destructor_exactly_once(void **state) {
  (void)state;
  struct free_payloads_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(free_payloads_root, &c), 0);
  assert_int_equal(c.rc_close, BRAID_EFAILED);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(c.before_free[i], 0);
    assert_int_equal(c.p[i].dtor_calls, 1);
  }
}

/* ---- cancellation ---------------------------------------------------- */

struct cancel_ctx {
  braid_fn child; /* for close_under_deadline_root */
  int rc_child, rc_body, rc_close, caught, rc_outer_exit;
  size_t nfail;
  braid_time_t closed_at, child_done_at;
};

static int cancel_child(braid_task *self, void *arg) {
  struct cancel_ctx *c = arg;
  return child_sleep_forever(self, &c->rc_child);
}

static int cancel_group_scope_root(braid_task *self, void *arg) {
  struct cancel_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, cancel_child, c, NULL, NULL), 0);
  CHECK_INT(braid_sleep(self, SEC), 0);
  CHECK_INT(braid_scope_cancel(braid_group_scope(g)), 0);
  c->rc_body = braid_checkpoint(self);
  c->rc_close = braid_group_close(g, c->rc_body);
  c->caught = braid_scope_cancelled_caught(braid_group_scope(g));
  c->nfail = braid_group_failure_count(g);
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_group_scope_cancel_is_caught_by_close(void **state) {
  (void)state;
  struct cancel_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(cancel_group_scope_root, &c), 0);
  assert_int_equal(c.rc_child, BRAID_ECANCELED);
  assert_int_equal(c.rc_body, BRAID_ECANCELED);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.caught, 1);
  assert_int_equal(c.nfail, 0);
}

/* A group with the one child c->child, inside a 1 s move_on_after of the
 * root, which exits that scope with what close returned. */
static int close_under_deadline_root(braid_task *self, void *arg) {
  struct cancel_ctx *c = arg;
  braid_scope *outer = NULL;
  CHECK_INT(braid_move_on_after(self, SEC, &outer), 0);
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, c->child, c, NULL, NULL), 0);
  c->rc_close = braid_group_close(g, 0);
  c->closed_at = braid_now(self);
  c->caught = braid_scope_cancelled_caught(braid_group_scope(g));
  c->nfail = braid_group_failure_count(g);
  CHECK_INT(braid_group_free(g), 0);
  c->rc_outer_exit = leave_scope(outer, c->rc_close, NULL);
  return 0;
}

static void test_group_outer_cancel_propagates_out_of_close(void **state) {
  (void)state;
  struct cancel_ctx c;
  memset(&c, 0, sizeof c);
  c.child = cancel_child;
  assert_int_equal(run_virtual(close_under_deadline_root, &c), 0);
  assert_int_equal(c.rc_child, BRAID_ECANCELED);
  assert_int_equal(c.rc_close, BRAID_ECANCELED);
  assert_int_equal(c.closed_at, SEC);
  assert_int_equal(c.caught, 0);
  assert_int_equal(c.nfail, 0);
  assert_int_equal(c.rc_outer_exit, 0);
}

static int slow_cleanup_child(braid_task *self, void *arg) {
  struct cancel_ctx *c = arg;
  c->rc_child = braid_sleep_forever(self);
  CHECK_INT(shielded_sleep(self, 2 * SEC), 0);
  c->child_done_at = braid_now(self);
  return c->rc_child;
}

static void test_group_close_keeps_waiting_for_children_when_cancelled(void **state) {
  (void)state;
  struct cancel_ctx c;
  memset(&c, 0, sizeof c);
  c.child = slow_cleanup_child;
  assert_int_equal(run_virtual(close_under_deadline_root, &c), 0);
  assert_int_equal(c.rc_child, BRAID_ECANCELED);
  assert_int_equal(c.child_done_at, 3 * SEC);
  assert_int_equal(c.closed_at, 3 * SEC);
  assert_int_equal(c.rc_close, BRAID_ECANCELED);
  assert_int_equal(c.rc_outer_exit, 0);
}

static int sleep_two_seconds(braid_task *self, void *arg) {
  struct cancel_ctx *c = arg;
  c->rc_child = braid_sleep(self, 2 * SEC);
  c->child_done_at = braid_now(self);
  return c->rc_child;
}

static int shielded_group_root(braid_task *self, void *arg) {
  struct cancel_ctx *c = arg;
  braid_scope *outer = NULL;
  CHECK_INT(braid_move_on_after(self, SEC, &outer), 0);
  braid_group *g = open_group(self);
  CHECK_INT(braid_scope_set_shield(braid_group_scope(g), 1), 0);
  CHECK_INT(braid_group_spawn(g, sleep_two_seconds, c, NULL, NULL), 0);
  c->rc_close = braid_group_close(g, 0);
  CHECK_INT(braid_group_free(g), 0);
  c->rc_outer_exit = leave_scope(outer, braid_checkpoint(self), NULL);
  return 0;
}

static void test_group_scope_shield_protects_children_from_outer_cancel(void **state) {
  (void)state;
  struct cancel_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(shielded_group_root, &c), 0);
  assert_int_equal(c.rc_child, 0);
  assert_int_equal(c.child_done_at, 2 * SEC);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.rc_outer_exit, 0); /* the outer deadline fired meanwhile */
}

struct late_start_ctx {
  int ran, rc_cp, cancelled_at_start;
};

static int runs_until_first_checkpoint(braid_task *self, void *arg) {
  struct late_start_ctx *c = arg;
  c->ran = 1;
  c->cancelled_at_start = braid_task_cancelled(self);
  c->rc_cp = braid_checkpoint(self);
  return c->rc_cp;
}

static int cancelled_before_start_root(braid_task *self, void *arg) {
  struct late_start_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, runs_until_first_checkpoint, c, NULL, NULL), 0);
  CHECK_INT(braid_scope_cancel(braid_group_scope(g)), 0);
  CHECK_INT(braid_group_close(g, BRAID_ECANCELED), 0);
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_group_child_of_a_cancelled_group_runs_until_its_first_checkpoint(void **state) {
  (void)state;
  struct late_start_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(cancelled_before_start_root, &c), 0);
  assert_int_equal(c.ran, 1);
  assert_int_equal(c.cancelled_at_start, 1);
  assert_int_equal(c.rc_cp, BRAID_ECANCELED);
}

/* ---- empty groups still checkpoint ----------------------------------- */

struct empty_cp_ctx {
  int flag, flag_after_close, rc_close, rc_cp_after, rc_outer_exit, rc_own_close, own_caught;
};

static int empty_close_yields_root(braid_task *self, void *arg) {
  struct empty_cp_ctx *c = arg;
  braid_group *outer = open_group(self);
  CHECK_INT(braid_group_spawn(outer, child_set_flag, &c->flag, NULL, NULL), 0);
  braid_group *inner = open_group(self);
  c->rc_close = braid_group_close(inner, 0);
  c->flag_after_close = c->flag;
  CHECK_INT(braid_group_free(inner), 0);
  close_group(outer);
  return 0;
}

static void test_group_close_of_an_empty_group_yields(void **state) {
  (void)state;
  struct empty_cp_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(empty_close_yields_root, &c), 0);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.flag_after_close, 1);
}

static int empty_close_cancelled_root(braid_task *self, void *arg) {
  struct empty_cp_ctx *c = arg;
  braid_scope *s = enter_cancelled_scope(self);
  braid_group *g = open_group(self);
  c->rc_close = braid_group_close(g, 0);
  CHECK_INT(braid_group_free(g), 0);
  c->rc_cp_after = braid_checkpoint(self);
  c->rc_outer_exit = leave_scope(s, c->rc_cp_after, NULL);

  /* The group's own scope cancelled, no children: caught by close. */
  g = open_group(self);
  CHECK_INT(braid_scope_cancel(braid_group_scope(g)), 0);
  c->rc_own_close = braid_group_close(g, BRAID_ECANCELED);
  c->own_caught = braid_scope_cancelled_caught(braid_group_scope(g));
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

/*
 * braid_group_close is "blocking but not cancellable" and an empty group
 * "still checkpoints": as in Trio (cancel_shielded_checkpoint on an empty
 * nursery) the close of an empty group yields but does not itself fail,
 * so with a body result of 0 it returns 0; the cancellation is still there
 * for the next checkpoint.
 */
static void test_group_close_of_an_empty_group_in_a_cancelled_scope(void **state) {
  (void)state;
  struct empty_cp_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(empty_close_cancelled_root, &c), 0);
  assert_int_equal(c.rc_close, 0);
  assert_int_equal(c.rc_cp_after, BRAID_ECANCELED);
  assert_int_equal(c.rc_outer_exit, 0);
  assert_int_equal(c.rc_own_close, 0);
  assert_int_equal(c.own_caught, 1);
}

/* ---- nesting --------------------------------------------------------- */

struct nested_ctx {
  int leaf_fails;
  int rc_leaf;
  uint64_t leaf_id, middle_id;
  group_result inner, outer; /* the middle task's group and the root's */
  braid_time_t leaf_deadline;
};

static int nested_leaf(braid_task *self, void *arg) {
  struct nested_ctx *c = arg;
  c->leaf_deadline = braid_current_effective_deadline(self);
  if (c->leaf_fails) {
    CHECK_INT(braid_sleep(self, SEC), 0);
    return 5;
  }
  c->rc_leaf = braid_sleep_forever(self);
  return c->rc_leaf;
}

static int nested_middle(braid_task *self, void *arg) {
  struct nested_ctx *c = arg;
  c->middle_id = braid_task_id(self);
  braid_group *g = open_group(self);
  braid_task *leaf = NULL;
  CHECK_INT(braid_group_spawn(g, nested_leaf, c, NULL, &leaf), 0);
  c->leaf_id = braid_task_id(leaf);
  c->inner = close_and_free_group(g, 0);
  return c->inner.rc_close;
}

static int nested_root(braid_task *self, void *arg) {
  struct nested_ctx *c = arg;
  braid_scope *deadline = enter_new_scope(self, braid_now(self) + 100 * SEC, 0);
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, nested_middle, c, NULL, NULL), 0);
  if (!c->leaf_fails) {
    CHECK_INT(braid_sleep(self, 2 * SEC), 0);
    CHECK_INT(braid_scope_cancel(braid_group_scope(g)), 0);
  }
  c->outer = close_and_free_group(g, 0);
  CHECK_INT(leave_scope(deadline, 0, NULL), 0);
  return 0;
}

static void test_group_nested_failure_propagates_through_each_level(void **state) {
  (void)state;
  struct nested_ctx c;
  memset(&c, 0, sizeof c);
  c.leaf_fails = 1;
  assert_int_equal(run_virtual(nested_root, &c), 0);
  assert_int_equal(c.leaf_deadline, 100 * SEC);
  assert_int_equal(c.inner.rc_close, BRAID_EFAILED);
  assert_int_equal(c.inner.nfail, 1);
  assert_int_equal(c.inner.code, 5);
  assert_int_equal(c.inner.tid, c.leaf_id);
  assert_int_equal(c.outer.rc_close, BRAID_EFAILED);
  assert_int_equal(c.outer.nfail, 1);
  assert_int_equal(c.outer.code, BRAID_EFAILED);
  assert_int_equal(c.outer.tid, c.middle_id);
}

static void test_group_cancel_reaches_grandchildren_and_outer_close_catches(void **state) {
  (void)state;
  struct nested_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(nested_root, &c), 0);
  assert_int_equal(c.rc_leaf, BRAID_ECANCELED);
  /* The middle group sees an outer cancellation: not caught there. */
  assert_int_equal(c.inner.rc_close, BRAID_ECANCELED);
  assert_int_equal(c.inner.nfail, 0);
  assert_int_equal(c.outer.rc_close, 0);
  assert_int_equal(c.outer.nfail, 0);
}

/* ---- closed groups, late spawns -------------------------------------- */

struct closed_ctx {
  int rc_spawn, rc_spawn_stepped, rc_start, rc_close_again, rc_fail;
  int child_ran;
  tpayload p;
};

static int never_step(braid_task *self, void *ctx, int resume) {
  (void)self;
  (void)resume;
  *(int *)ctx = 1;
  return 0;
}

static int closed_group_root(braid_task *self, void *arg) {
  struct closed_ctx *c = arg;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_close(g, 0), 0);
  braid_task *t = (braid_task *)&t;
  c->rc_spawn = braid_group_spawn(g, child_set_flag, &c->child_ran, NULL, &t);
  c->rc_spawn_stepped = braid_group_spawn_stepped(g, never_step, &c->child_ran, NULL, NULL);
  void *v = NULL;
  c->rc_start = braid_group_start(g, self, child_set_flag, &c->child_ran, NULL, &v);
  c->rc_close_again = braid_group_close(g, 0);
  c->rc_fail = braid_group_fail(g, 3, &c->p, tpayload_dtor);
  CHECK_INT(braid_sleep(self, SEC), 0);
  CHECK_INT(braid_group_free(g), 0);
  return 0;
}

static void test_group_spawn_into_a_closed_group_is_estate(void **state) {
  (void)state;
  struct closed_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(closed_group_root, &c), 0);
  assert_int_equal(c.rc_spawn, BRAID_ESTATE);
  assert_int_equal(c.rc_spawn_stepped, BRAID_ESTATE);
  assert_int_equal(c.rc_start, BRAID_ESTATE);
  assert_int_equal(c.rc_close_again, BRAID_ESTATE);
  assert_int_equal(c.rc_fail, BRAID_ESTATE);
  assert_int_equal(c.p.dtor_calls, 1);
  assert_int_equal(c.child_ran, 0);
}

struct late_spawn_ctx {
  braid_group *g;
  int rc_late_spawn, late_done;
  braid_time_t late_done_at, closed_at;
};

static int late_sibling(braid_task *self, void *arg) {
  struct late_spawn_ctx *c = arg;
  CHECK_INT(braid_sleep(self, SEC), 0);
  c->late_done = 1;
  c->late_done_at = braid_now(self);
  return 0;
}

static int spawner_child(braid_task *self, void *arg) {
  struct late_spawn_ctx *c = arg;
  CHECK_INT(braid_sleep(self, SEC), 0);
  /* The parent is already waiting in close. */
  c->rc_late_spawn = braid_group_spawn(c->g, late_sibling, c, NULL, NULL);
  return 0;
}

static int late_spawn_root(braid_task *self, void *arg) {
  struct late_spawn_ctx *c = arg;
  c->g = open_group(self);
  CHECK_INT(braid_group_spawn(c->g, spawner_child, c, NULL, NULL), 0);
  CHECK_INT(braid_group_close(c->g, 0), 0);
  c->closed_at = braid_now(self);
  CHECK_INT(braid_group_free(c->g), 0);
  return 0;
}

static void test_group_child_may_spawn_a_sibling_while_the_parent_waits_in_close(void **state) {
  (void)state;
  struct late_spawn_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(late_spawn_root, &c), 0);
  assert_int_equal(c.rc_late_spawn, 0);
  assert_int_equal(c.late_done, 1);
  assert_int_equal(c.late_done_at, 2 * SEC);
  assert_int_equal(c.closed_at, 2 * SEC);
}

/* ---- spawn options --------------------------------------------------- */

#define BIG_FRAME (512 * 1024)

static int use_big_frame(braid_task *self, void *arg) {
  volatile char buf[BIG_FRAME];
  for (size_t i = 0; i < sizeof buf; i += 4096)
    buf[i] = (char)(i >> 12);
  buf[sizeof buf - 1] = 1;
  CHECK_INT(braid_checkpoint(self), 0); /* switch away and back with the frame live */
  int sum = 0;
  for (size_t i = 0; i < sizeof buf; i += 4096)
    sum += buf[i] == (char)(i >> 12);
  *(int *)arg = sum == (int)(sizeof buf / 4096) && buf[sizeof buf - 1] == 1;
  return 0;
}

static int stack_size_root(braid_task *self, void *arg) {
  int *ok = arg;
  braid_group *g = open_group(self);
  braid_spawn_opts o = spawn_opts("big-stack", 2 * 1024 * 1024);
  braid_task *t = NULL;
  CHECK_INT(braid_group_spawn(g, use_big_frame, ok, &o, &t), 0);
  CHECK_STR(braid_task_name(t), "big-stack");
  /* A tiny size is rounded up to pages and still runs a small body. */
  braid_spawn_opts small = spawn_opts(NULL, 1);
  CHECK_INT(braid_group_spawn(g, child_set_flag, ok + 1, &small, NULL), 0);
  close_group(g);
  return 0;
}

static void test_group_spawn_stack_size_option_allows_large_frames(void **state) {
  (void)state;
  int ok[2] = {0, 0};
  assert_int_equal(run_virtual(stack_size_root, ok), 0);
  assert_int_equal(ok[0], 1);
  assert_int_equal(ok[1], 1);
}

static void test_run_stack_size_option_sets_the_default(void **state) {
  (void)state;
  int ok = 0;
  braid_run_opts o = run_opts(BRAID_CLOCK_VIRTUAL);
  o.stack_size = 2 * 1024 * 1024;
  assert_int_equal(braid_run(use_big_frame, &ok, &o), 0);
  assert_int_equal(ok, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_group_empty_opens_and_closes_cleanly),
      BT(test_group_close_waits_for_every_child),
      BT(test_group_spawn_out_task_is_the_child),
      BT(test_group_first_failure_cancels_siblings_and_body),
      BT(test_group_failures_are_listed_in_order_with_codes_ids_and_payloads),
      BT(test_task_fail_twice_replaces_and_destroys_the_first_payload),
      BT(test_task_fail_rejects_invalid_codes_and_destroys_the_payload),
      BT(test_group_positive_results_and_task_fail_are_failures),
      BT(test_group_close_with_failure_cancels_children_and_lists_body_first),
      BT(test_group_fail_records_a_body_failure_with_payload_and_cancels),
      BT(test_group_fail_twice_replaces_the_first_and_close_adds_nothing),
      BT(test_group_free_runs_each_payload_destructor_exactly_once),
      BT(test_group_scope_cancel_is_caught_by_close),
      BT(test_group_outer_cancel_propagates_out_of_close),
      BT(test_group_close_keeps_waiting_for_children_when_cancelled),
      BT(test_group_scope_shield_protects_children_from_outer_cancel),
      BT(test_group_child_of_a_cancelled_group_runs_until_its_first_checkpoint),
      BT(test_group_close_of_an_empty_group_yields),
      BT(test_group_close_of_an_empty_group_in_a_cancelled_scope),
      BT(test_group_nested_failure_propagates_through_each_level),
      BT(test_group_cancel_reaches_grandchildren_and_outer_close_catches),
      BT(test_group_spawn_into_a_closed_group_is_estate),
      BT(test_group_child_may_spawn_a_sibling_while_the_parent_waits_in_close),
      BT(test_group_spawn_stack_size_option_allows_large_frames),
      BT(test_run_stack_size_option_sets_the_default),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
