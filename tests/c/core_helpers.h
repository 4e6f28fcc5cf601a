/*
 * core_helpers.h — the small scenarios the tests of the core repeat (scopes,
 * groups, start, run, sleep, checkpoints, the stepped protocol, the thread
 * bridge, portals), on top of helpers.h.
 *
 * Everything here is `static inline`, so a test file pays only for what it
 * uses. Like helpers.h, the helpers that run inside a loop report through
 * CHECK* (never assert_*); the assert_* helpers are for the test's own stack
 * after braid_run returned. sync_helpers.h serves the tests of the sync
 * primitives; what both need (new_scope, close_group) is in helpers.h.
 */
#ifndef BRAID_TEST_CORE_HELPERS_H
#define BRAID_TEST_CORE_HELPERS_H

#include "helpers.h"

#include <string.h>

/* ---- stepped bodies ------------------------------------------------- */

/*
 * AWAIT_TO(co, dst, call): AWAIT (helpers.h), then store the outcome in dst.
 * To keep what the call itself returned as well (BRAID_EPENDING or an
 * immediate result), assign it inside: AWAIT_TO(co, c->rc, c->raw = call).
 */
#define AWAIT_TO(cs, dst, call)                                                                                        \
  do {                                                                                                                 \
    AWAIT(cs, call);                                                                                                   \
    (dst) = (cs)->rc;                                                                                                  \
  } while (0)

/* ---- polling from a plain thread ------------------------------------ */

/* Upper bound for polling loops: far beyond anything a healthy run needs. */
#define POLL_LIMIT (20 * BRAID_SEC)

typedef int (*pred_fn)(void *arg);

/* Poll pred from a plain thread until it holds (1) or POLL_LIMIT passed (0). */
static inline int thread_wait_for(pred_fn pred, void *arg) {
  int64_t limit = real_ns() + POLL_LIMIT;
  while (!pred(arg)) {
    if (real_ns() > limit) return 0;
    os_sleep_ns(100 * BRAID_USEC);
  }
  return 1;
}

/* ---- bodies every file needs ---------------------------------------- */

/* A child that does nothing and succeeds. */
static inline int child_noop(braid_task *self, void *arg) {
  (void)self;
  (void)arg;
  return 0;
}

/* A stepped body that ends at its first step. */
static inline int step_noop(braid_task *self, void *ctx, int resume) {
  (void)self;
  (void)ctx;
  (void)resume;
  return 0;
}

/* A stepped body that claims to wait without having registered a wait. */
static inline int step_pending_without_wait(braid_task *self, void *ctx, int resume) {
  (void)self;
  (void)ctx;
  (void)resume;
  return BRAID_EPENDING;
}

/* A child that sets the int `arg` points to, and succeeds. */
static inline int child_set_flag(braid_task *self, void *arg) {
  (void)self;
  *(int *)arg = 1;
  return 0;
}

/* A child that sleeps until cancelled, stores the sleep's result in the
 * int `arg` points to and returns it. */
static inline int child_sleep_forever(braid_task *self, void *arg) {
  int *rc = arg;
  *rc = braid_sleep_forever(self);
  return *rc;
}

/* ---- scopes --------------------------------------------------------- */

/* A new scope entered by `self` (NULL: the calling plain thread). */
static inline braid_scope *enter_new_scope(braid_task *self, braid_time_t deadline, unsigned flags) {
  braid_scope *s = new_scope(deadline, flags);
  CHECK_INT(braid_scope_enter(self, s), 0);
  return s;
}

/* A new scope, entered and at once cancelled: every wait in it fails. */
static inline braid_scope *enter_cancelled_scope(braid_task *self) {
  braid_scope *s = enter_new_scope(self, BRAID_NEVER, 0);
  CHECK_INT(braid_scope_cancel(s), 0);
  return s;
}

/* An outer scope, entered, and inside it a new scope (deadline, flags),
 * entered; then the outer one is cancelled. Returns the inner scope. */
static inline braid_scope *inside_cancelled_outer(braid_task *self, braid_time_t deadline, unsigned flags,
                                                  braid_scope **outer) {
  *outer = enter_new_scope(self, BRAID_NEVER, 0);
  braid_scope *inner = enter_new_scope(self, deadline, flags);
  CHECK_INT(braid_scope_cancel(*outer), 0);
  return inner;
}

/* Exit `s` with the body's result `rc` and drop the reference. Returns what
 * braid_scope_exit returned; stores braid_scope_cancelled_caught in *caught
 * unless caught is NULL. */
static inline int leave_scope(braid_scope *s, int rc, int *caught) {
  int rc_exit = braid_scope_exit(s, rc);
  if (caught) *caught = braid_scope_cancelled_caught(s);
  CHECK_INT(braid_scope_unref(s), 0);
  return rc_exit;
}

/* Sleep `dur` inside a fresh shield (cleanup that takes time although the
 * task is cancelled). Returns the sleep's result. */
static inline int shielded_sleep(braid_task *self, braid_time_t dur) {
  braid_scope *shield = enter_new_scope(self, BRAID_NEVER, BRAID_SHIELD);
  int rc = braid_sleep(self, dur);
  CHECK_INT(braid_scope_exit(shield, 0), 0);
  CHECK_INT(braid_scope_unref(shield), 0);
  return rc;
}

/* One wait inside a scope, as the cancellation and deadline tests record
 * it: a body sets t0 (and deadline, if it reads it), waits into rc_wait and
 * ends with scope_wait_end. */
typedef struct scope_wait {
  braid_time_t t0;       /* when the scenario began */
  braid_time_t deadline; /* the scope's deadline */
  int rc_wait;           /* what the wait returned */
  braid_time_t woke_at;  /* when it returned */
  int rc_exit;           /* braid_scope_exit(s, rc_wait) */
  int caught;            /* braid_scope_cancelled_caught, after the exit */
  int cancel_called;     /* braid_scope_cancel_called, after the exit */
} scope_wait;

/* Begin a scope_wait: record t0, enter braid_move_on_after(dur) or
 * braid_fail_after(dur) and record the scope's deadline. */
static inline braid_scope *scope_wait_begin_(braid_task *self, scope_wait *w, braid_time_t dur, int fail) {
  braid_scope *s = NULL;
  w->t0 = braid_now(self);
  CHECK_INT(fail ? braid_fail_after(self, dur, &s) : braid_move_on_after(self, dur, &s), 0);
  w->deadline = braid_scope_deadline(s);
  return s;
}

static inline braid_scope *scope_wait_move_on_after(braid_task *self, scope_wait *w, braid_time_t dur) {
  return scope_wait_begin_(self, w, dur, 0);
}

static inline braid_scope *scope_wait_fail_after(braid_task *self, scope_wait *w, braid_time_t dur) {
  return scope_wait_begin_(self, w, dur, 1);
}

/* After the wait: when it returned, what the exit made of its result and
 * what the scope says about its cancellation; drops `s`. */
static inline void scope_wait_end(braid_task *self, scope_wait *w, braid_scope *s) {
  w->woke_at = braid_now(self);
  w->rc_exit = braid_scope_exit(s, w->rc_wait);
  w->caught = braid_scope_cancelled_caught(s);
  w->cancel_called = braid_scope_cancel_called(s);
  CHECK_INT(braid_scope_unref(s), 0);
}

/* The wait returned rc_wait `waited` after t0; the exit returned rc_exit and
 * the scope caught (1) or did not catch (0) a cancellation. A mismatch also
 * names the line of the call. */
#define assert_scope_wait(w, rc_wait, waited, rc_exit, caught)                                                         \
  assert_scope_wait_((w), (rc_wait), (waited), (rc_exit), (caught), __FILE__, __LINE__)

static inline void assert_scope_wait_(const scope_wait *w, int rc_wait, braid_time_t waited, int rc_exit, int caught,
                                      const char *file, int line) {
  if (w->rc_wait != rc_wait || w->woke_at != w->t0 + waited || w->rc_exit != rc_exit || w->caught != caught)
    print_error("%s:%d: the wait returned %s after %lld ns, the exit %s, caught %d\n", file, line,
                braid_errname(w->rc_wait), (long long)(w->woke_at - w->t0), braid_errname(w->rc_exit), w->caught);
  assert_int_equal(w->rc_wait, rc_wait);
  assert_int_equal(w->woke_at, w->t0 + waited);
  assert_int_equal(w->rc_exit, rc_exit);
  assert_int_equal(w->caught, caught);
}

/* ---- groups --------------------------------------------------------- */

static inline braid_group *open_group(braid_task *self) {
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  return g;
}

/* What a group left behind: its close's result and its first failure. */
typedef struct group_result {
  int rc_close;
  size_t nfail;
  int code; /* the first failure's code, payload and task id (if any) */
  void *payload;
  uint64_t tid;
} group_result;

/* After close returned rc_close: read the first failure, free the group. */
static inline group_result free_closed_group(braid_group *g, int rc_close) {
  group_result r;
  memset(&r, 0, sizeof r);
  r.rc_close = rc_close;
  r.nfail = braid_group_failure_count(g);
  if (r.nfail > 0) CHECK_INT(braid_group_failure(g, 0, &r.code, &r.payload, &r.tid), 0);
  CHECK_INT(braid_group_free(g), 0);
  return r;
}

/* Close with the body's result, read the first failure, free the group. */
static inline group_result close_and_free_group(braid_group *g, int body_rc) {
  return free_closed_group(g, braid_group_close(g, body_rc));
}

/* fn(arg) as the only child of a new group, which is then closed and freed. */
static inline group_result run_in_group(braid_task *self, braid_fn fn, void *arg) {
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, fn, arg, NULL, NULL), 0);
  return close_and_free_group(g, 0);
}

/* Spawn each of the n bodies (one argument for all) into a new group and
 * close it. */
static inline void run_children(braid_task *self, const braid_fn *fns, int n, void *arg) {
  braid_group *g = open_group(self);
  for (int i = 0; i < n; i++)
    CHECK_INT(braid_group_spawn(g, fns[i], arg, NULL, NULL), 0);
  close_group(g);
}

/* ---- a child that is alive but not running -------------------------- */

typedef void (*child_probe)(braid_task *self, braid_task *child, void *arg);

/* Spawn a child that sleeps until cancelled, let it fall asleep, hand it to
 * probe, then cancel the group and close it. Returns the child's result:
 * BRAID_ECANCELED when nothing disturbed its wait. */
static inline int with_sleeping_child(braid_task *self, child_probe probe, void *arg) {
  int child_rc = 1;
  braid_task *child = NULL;
  braid_group *g = open_group(self);
  CHECK_INT(braid_group_spawn(g, child_sleep_forever, &child_rc, NULL, &child), 0);
  CHECK_INT(braid_checkpoint(self), 0); /* the child is now asleep */
  probe(self, child, arg);
  CHECK_INT(braid_scope_cancel(braid_group_scope(g)), 0);
  close_group(g);
  return child_rc;
}

/* Three calls refused for a NULL task and the same three for a task that is
 * not running (with_sleeping_child). */
typedef struct refusals {
  int on_null[3];
  int on_child[3];
  int child_rc;
} refusals;

static inline void assert_refusals(const refusals *r, int on_null) {
  for (int i = 0; i < 3; i++) {
    assert_int_equal(r->on_null[i], on_null);
    assert_int_equal(r->on_child[i], BRAID_ESTATE);
  }
  /* The refused calls did not disturb the child's wait. */
  assert_int_equal(r->child_rc, BRAID_ECANCELED);
}

#endif /* BRAID_TEST_CORE_HELPERS_H */
