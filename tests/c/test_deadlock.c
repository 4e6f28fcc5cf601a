/*
 * test_deadlock.c — lock-cycle detection (braid_debug_deadlock): the waiter
 * that would close a cycle of lock waits gets BRAID_EDEADLK and
 * braid_debug_deadlock_cycle describes the cycle, across tasks, stepped
 * tasks and plain threads; no false positives; with detection off the same
 * pattern hangs until a cancellation resolves it.
 */
#include "sync_helpers.h"

#include <stdio.h>
#include <stdlib.h>

/* 1 if `desc` names "<kind> <id>" as a whole word. */
static int mentions(const char *desc, const char *kind, uint64_t id) {
  char pat[64];
  snprintf(pat, sizeof pat, "%s %llu", kind, (unsigned long long)id);
  size_t n = strlen(pat);
  for (const char *p = strstr(desc, pat); p; p = strstr(p + 1, pat))
    if (p[n] < '0' || p[n] > '9') return 1;
  return 0;
}

#define DESC_CAP 512

/* Read the calling thread's last cycle description. */
static long read_cycle(char *buf) {
  memset(buf, 0, DESC_CAP);
  return braid_debug_deadlock_cycle(buf, DESC_CAP);
}

/* Detection is switched per test; restore what it was. */
static int prev_setting;
static int dl_on(void **state) {
  (void)state;
  checks_reset();
  prev_setting = braid_debug_deadlock(1);
  return 0;
}
static int dl_off(void **state) {
  (void)state;
  checks_reset();
  prev_setting = braid_debug_deadlock(0);
  return 0;
}
static int dl_restore(void **state) {
  braid_debug_deadlock(prev_setting);
  return bt_teardown(state);
}
#define DL_ON(f) cmocka_unit_test_setup_teardown(f, dl_on, dl_restore)
#define DL_OFF(f) cmocka_unit_test_setup_teardown(f, dl_off, dl_restore)

/* ---- two tasks ------------------------------------------------------------------------ */

struct two_ctx {
  braid_lock *l1, *l2;
  uint64_t id_a, id_b;
  int rc_a, rc_b;
  long len;
  char desc[DESC_CAP];
  size_t l1_waiting_after;
  braid_time_t b_failed_at, t0;
};

/* A: holds L1, then waits for L2. */
static int two_a(braid_task *self, void *arg) {
  struct two_ctx *c = arg;
  c->id_a = braid_task_id(self);
  CHECK_INT(braid_lock_acquire(self, c->l1), 0);
  CHECK_INT(braid_sleep(self, SEC), 0); /* B takes L2 meanwhile */
  c->rc_a = braid_lock_acquire(self, c->l2);
  if (c->rc_a == 0) CHECK_INT(braid_lock_release(self, c->l2), 0);
  CHECK_INT(braid_lock_release(self, c->l1), 0);
  return 0;
}

/* B: holds L2, then asks for L1 once A waits for L2. */
static int two_b(braid_task *self, void *arg) {
  struct two_ctx *c = arg;
  c->id_b = braid_task_id(self);
  CHECK_INT(braid_lock_acquire(self, c->l2), 0);
  CHECK_INT(braid_sleep(self, 2 * SEC), 0);
  CHECK_INT(lstats(c->l2).waiting, 1); /* A waits */
  c->rc_b = braid_lock_acquire(self, c->l1);
  c->b_failed_at = braid_now(self);
  c->len = read_cycle(c->desc);
  c->l1_waiting_after = lstats(c->l1).waiting;
  if (c->rc_b == 0) CHECK_INT(braid_lock_release(self, c->l1), 0);
  CHECK_INT(braid_lock_release(self, c->l2), 0);
  return 0;
}

static int two_root(braid_task *self, void *arg) {
  struct two_ctx *c = arg;
  c->t0 = braid_now(self);
  c->l1 = new_lock();
  c->l2 = new_lock();
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, two_a, c, NULL, NULL), 0);
  CHECK_INT(braid_group_spawn(g, two_b, c, NULL, NULL), 0);
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_free(g), 0);
  CHECK_INT(lstats(c->l1).locked, 0);
  CHECK_INT(lstats(c->l2).locked, 0);
  CHECK_INT(braid_lock_free(c->l1), 0);
  CHECK_INT(braid_lock_free(c->l2), 0);
  return 0;
}

static void test_deadlock_two_tasks_the_second_waiter_gets_edeadlk_and_a_description_naming_both(void **state) {
  (void)state;
  struct two_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(two_root, &c), 0);
  assert_int_equal(c.rc_b, BRAID_EDEADLK);
  assert_int_equal(c.b_failed_at, c.t0 + 2 * SEC); /* at once, not after a wait */
  assert_int_equal(c.l1_waiting_after, 0);         /* B was not queued */
  assert_int_equal(c.rc_a, 0);                     /* A got L2 once B let go */
  print_message("  cycle: %s\n", c.desc);
  assert_true(c.len > 0);
  assert_int_equal(c.len, (long)strlen(c.desc));
  assert_true(mentions(c.desc, "task", c.id_a));
  assert_true(mentions(c.desc, "task", c.id_b));
}

/* The same with stepped tasks: the refusal arrives as the outcome. */
struct two_step {
  co_state co;
  struct two_ctx *c;
  int is_b;
};

static int two_step_body(braid_task *self, void *ctx, int resume) {
  struct two_step *s = ctx;
  struct two_ctx *c = s->c;
  switch (s->co.pc) {
  case 0:
    if (s->is_b)
      c->id_b = braid_task_id(self);
    else
      c->id_a = braid_task_id(self);
    AWAIT(&s->co, braid_lock_acquire(self, s->is_b ? c->l2 : c->l1));
    CHECK_INT(s->co.rc, 0);
    AWAIT(&s->co, braid_sleep(self, s->is_b ? 2 * SEC : SEC));
    AWAIT(&s->co, braid_lock_acquire(self, s->is_b ? c->l1 : c->l2));
    if (s->is_b) {
      c->rc_b = s->co.rc;
      c->len = read_cycle(c->desc);
      if (c->rc_b == 0) CHECK_INT(braid_lock_release(self, c->l1), 0);
      CHECK_INT(braid_lock_release(self, c->l2), 0);
    } else {
      c->rc_a = s->co.rc;
      if (c->rc_a == 0) CHECK_INT(braid_lock_release(self, c->l2), 0);
      CHECK_INT(braid_lock_release(self, c->l1), 0);
    }
    return 0;
  }
  return CO_FELL_OFF;
}

struct two_step_ctx {
  struct two_ctx c;
  struct two_step a, b;
};

static int two_step_root(braid_task *self, void *arg) {
  struct two_step_ctx *x = arg;
  x->c.l1 = new_lock();
  x->c.l2 = new_lock();
  x->a.c = x->b.c = &x->c;
  x->b.is_b = 1;
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn_stepped(g, two_step_body, &x->a, NULL, NULL), 0);
  CHECK_INT(braid_group_spawn_stepped(g, two_step_body, &x->b, NULL, NULL), 0);
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_free(g), 0);
  CHECK_INT(braid_lock_free(x->c.l1), 0);
  CHECK_INT(braid_lock_free(x->c.l2), 0);
  return 0;
}

static void test_deadlock_two_stepped_tasks_the_second_waiter_gets_edeadlk(void **state) {
  (void)state;
  struct two_step_ctx x;
  memset(&x, 0, sizeof x);
  assert_int_equal(run_virtual(two_step_root, &x), 0);
  assert_int_equal(x.c.rc_b, BRAID_EDEADLK);
  assert_int_equal(x.c.rc_a, 0);
  assert_true(x.c.len > 0);
  assert_true(mentions(x.c.desc, "task", x.c.id_a));
  assert_true(mentions(x.c.desc, "task", x.c.id_b));
}

/* ---- a task and a plain thread ------------------------------------------------------------- */

struct mixed_ctx {
  braid_lock *l1, *l2;
  atomic_int thread_holds, task_holds;
  _Atomic uint64_t tid;
  uint64_t task_id;
  int rc_task, rc_thread;
  long len;
  char desc[DESC_CAP];
  int thread_closes; /* 1: the thread is the one that closes the cycle */
};

/* Thread: holds L1; waits for L2 (or, when it closes the cycle, holds L2
 * and asks for L1). */
static void *mixed_thread(void *arg) {
  struct mixed_ctx *c = arg;
  atomic_store(&c->tid, braid_thread_id());
  braid_lock *mine = c->thread_closes ? c->l2 : c->l1;
  braid_lock *theirs = c->thread_closes ? c->l1 : c->l2;
  CHECK_INT(braid_lock_acquire(NULL, mine), 0);
  atomic_store(&c->thread_holds, 1);
  WAIT_UNTIL(NULL, atomic_load(&c->task_holds));
  if (c->thread_closes) WAIT_UNTIL(NULL, lstats(mine).waiting == 1); /* the task waits for L2 */
  c->rc_thread = braid_lock_acquire(NULL, theirs);
  if (c->thread_closes) c->len = read_cycle(c->desc);
  if (c->rc_thread == 0) CHECK_INT(braid_lock_release(NULL, theirs), 0);
  CHECK_INT(braid_lock_release(NULL, mine), 0);
  return NULL;
}

static int mixed_root(braid_task *self, void *arg) {
  struct mixed_ctx *c = arg;
  c->task_id = braid_task_id(self);
  c->l1 = new_lock();
  c->l2 = new_lock();
  braid_lock *mine = c->thread_closes ? c->l1 : c->l2;
  braid_lock *theirs = c->thread_closes ? c->l2 : c->l1;
  pthread_t t;
  CHECK_INT(pthread_create(&t, NULL, mixed_thread, c), 0);
  WAIT_UNTIL(self, atomic_load(&c->thread_holds));
  CHECK_INT(braid_lock_acquire(self, mine), 0);
  atomic_store(&c->task_holds, 1);
  if (!c->thread_closes) WAIT_UNTIL(self, lstats(mine).waiting == 1); /* the thread waits for L2 */
  c->rc_task = braid_lock_acquire(self, theirs);
  if (!c->thread_closes) c->len = read_cycle(c->desc);
  if (c->rc_task == 0) CHECK_INT(braid_lock_release(self, theirs), 0);
  CHECK_INT(braid_lock_release(self, mine), 0);
  CHECK_INT(pthread_join(t, NULL), 0);
  CHECK_INT(lstats(c->l1).locked, 0);
  CHECK_INT(lstats(c->l2).locked, 0);
  CHECK_INT(braid_lock_free(c->l1), 0);
  CHECK_INT(braid_lock_free(c->l2), 0);
  return 0;
}

static void test_deadlock_a_task_closing_a_cycle_with_a_plain_thread_gets_edeadlk(void **state) {
  (void)state;
  struct mixed_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_real(mixed_root, &c), 0);
  assert_int_equal(c.rc_task, BRAID_EDEADLK);
  assert_int_equal(c.rc_thread, 0);
  print_message("  cycle: %s\n", c.desc);
  assert_true(c.len > 0);
  assert_true(mentions(c.desc, "task", c.task_id));
  assert_true(mentions(c.desc, "thread", atomic_load(&c.tid)));
}

static void test_deadlock_a_plain_thread_closing_a_cycle_with_a_task_gets_edeadlk(void **state) {
  (void)state;
  struct mixed_ctx c;
  memset(&c, 0, sizeof c);
  c.thread_closes = 1;
  assert_int_equal(run_real(mixed_root, &c), 0);
  assert_int_equal(c.rc_thread, BRAID_EDEADLK);
  assert_int_equal(c.rc_task, 0);
  print_message("  cycle: %s\n", c.desc);
  assert_true(c.len > 0);
  assert_true(mentions(c.desc, "task", c.task_id));
  assert_true(mentions(c.desc, "thread", atomic_load(&c.tid)));
}

/* ---- three tasks ------------------------------------------------------------------------------- */

struct three_ctx {
  braid_lock *l[3];
  uint64_t id[3];
  int rc[3];
  long len;
  char desc[DESC_CAP];
};

struct three_arg {
  struct three_ctx *c;
  int i;
};

/* Task i holds L[i] and then asks for L[(i+1)%3]; task 2 asks last. */
static int three_body(braid_task *self, void *arg) {
  struct three_arg *a = arg;
  struct three_ctx *c = a->c;
  int i = a->i;
  c->id[i] = braid_task_id(self);
  CHECK_INT(braid_lock_acquire(self, c->l[i]), 0);
  CHECK_INT(braid_sleep(self, (braid_time_t)(i + 1) * SEC), 0);
  braid_lock *next = c->l[(i + 1) % 3];
  c->rc[i] = braid_lock_acquire(self, next);
  if (i == 2) c->len = read_cycle(c->desc);
  if (c->rc[i] == 0) CHECK_INT(braid_lock_release(self, next), 0);
  CHECK_INT(braid_lock_release(self, c->l[i]), 0);
  return 0;
}

static int three_root(braid_task *self, void *arg) {
  struct three_ctx *c = arg;
  struct three_arg a[3];
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  for (int i = 0; i < 3; i++) {
    c->l[i] = new_lock();
    a[i].c = c;
    a[i].i = i;
    CHECK_INT(braid_group_spawn(g, three_body, &a[i], NULL, NULL), 0);
  }
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_free(g), 0);
  for (int i = 0; i < 3; i++)
    CHECK_INT(braid_lock_free(c->l[i]), 0);
  return 0;
}

static void test_deadlock_a_cycle_of_three_tasks_is_detected_by_the_one_closing_it(void **state) {
  (void)state;
  struct three_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(three_root, &c), 0);
  assert_int_equal(c.rc[2], BRAID_EDEADLK);
  assert_int_equal(c.rc[0], 0);
  assert_int_equal(c.rc[1], 0);
  print_message("  cycle: %s\n", c.desc);
  for (int i = 0; i < 3; i++)
    assert_true(mentions(c.desc, "task", c.id[i]));
}

/* ---- no false positives ------------------------------------------------------------------------- */

struct chain_ctx {
  braid_lock *l1, *l2;
  int rc_a, rc_c;
};

static int chain_a(braid_task *self, void *arg) {
  struct chain_ctx *c = arg;
  CHECK_INT(braid_lock_acquire(self, c->l1), 0);
  CHECK_INT(braid_sleep(self, SEC), 0);
  c->rc_a = braid_lock_acquire(self, c->l2); /* B holds it but waits for nothing */
  if (c->rc_a == 0) CHECK_INT(braid_lock_release(self, c->l2), 0);
  CHECK_INT(braid_lock_release(self, c->l1), 0);
  return 0;
}

static int chain_b(braid_task *self, void *arg) {
  struct chain_ctx *c = arg;
  CHECK_INT(braid_lock_acquire(self, c->l2), 0);
  CHECK_INT(braid_sleep(self, 5 * SEC), 0);
  CHECK_INT(braid_lock_release(self, c->l2), 0);
  return 0;
}

static int chain_c(braid_task *self, void *arg) {
  struct chain_ctx *c = arg;
  CHECK_INT(braid_sleep(self, 2 * SEC), 0);
  c->rc_c = braid_lock_acquire(self, c->l1); /* C -> L1 -> A -> L2 -> B: no cycle */
  if (c->rc_c == 0) CHECK_INT(braid_lock_release(self, c->l1), 0);
  return 0;
}

static int chain_root(braid_task *self, void *arg) {
  struct chain_ctx *c = arg;
  c->l1 = new_lock();
  c->l2 = new_lock();
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, chain_a, c, NULL, NULL), 0);
  CHECK_INT(braid_group_spawn(g, chain_b, c, NULL, NULL), 0);
  CHECK_INT(braid_group_spawn(g, chain_c, c, NULL, NULL), 0);
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_free(g), 0);
  CHECK_INT(braid_lock_free(c->l1), 0);
  CHECK_INT(braid_lock_free(c->l2), 0);
  return 0;
}

static void test_deadlock_a_chain_of_waits_without_a_cycle_is_not_refused(void **state) {
  (void)state;
  struct chain_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(run_virtual(chain_root, &c), 0);
  assert_int_equal(c.rc_a, 0);
  assert_int_equal(c.rc_c, 0);
}

/* The description is that of the last cycle detected: later contended
 * acquires that find no cycle leave it as it was. */
struct keep_ctx {
  struct two_ctx two;
  char after[DESC_CAP];
  long len_after;
};

static int keep_holder(braid_task *self, void *arg) {
  braid_lock *l = arg;
  CHECK_INT(braid_lock_acquire(self, l), 0);
  CHECK_INT(braid_sleep(self, SEC), 0);
  CHECK_INT(braid_lock_release(self, l), 0);
  return 0;
}

static int keep_root(braid_task *self, void *arg) {
  struct keep_ctx *k = arg;
  CHECK_INT(two_root(self, &k->two), 0);
  /* A contended acquire with no cycle, on the same thread. */
  braid_lock *l = new_lock();
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, keep_holder, l, NULL, NULL), 0);
  CHECK_INT(braid_sleep(self, MSEC), 0);
  CHECK_INT(braid_lock_acquire(self, l), 0);
  CHECK_INT(braid_lock_release(self, l), 0);
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_free(g), 0);
  CHECK_INT(braid_lock_free(l), 0);
  k->len_after = read_cycle(k->after);
  return 0;
}

static void test_deadlock_the_description_stays_that_of_the_last_cycle_detected(void **state) {
  (void)state;
  struct keep_ctx k;
  memset(&k, 0, sizeof k);
  assert_int_equal(run_virtual(keep_root, &k), 0);
  assert_int_equal(k.two.rc_b, BRAID_EDEADLK);
  assert_int_equal(k.len_after, k.two.len);
  assert_string_equal(k.after, k.two.desc);
}

/* ---- the description buffer ----------------------------------------------------------------------- */

static void *fresh_thread_cycle(void *arg) {
  long *out = arg;
  char buf[16] = "untouched";
  out[0] = braid_debug_deadlock_cycle(buf, sizeof buf);
  out[1] = buf[0] == 0;
  out[2] = braid_debug_deadlock_cycle(NULL, 0);
  return NULL;
}

static void test_deadlock_cycle_is_empty_on_a_thread_that_detected_none_and_null_buffer_is_einval(void **state) {
  (void)state;
  long out[3] = {-1, -1, -1};
  assert_int_equal(in_thread(fresh_thread_cycle, out), 0);
  assert_int_equal(out[0], 0);
  assert_int_equal(out[1], 1); /* an empty, NUL-terminated string */
  assert_int_equal(out[2], 0);
  assert_int_equal(braid_debug_deadlock_cycle(NULL, 5), BRAID_EINVAL);
}

struct trunc_ctx {
  struct two_ctx two;
  long full, small_len, zero_len;
  char small[8];
};

static int trunc_root(braid_task *self, void *arg) {
  struct trunc_ctx *t = arg;
  CHECK_INT(two_root(self, &t->two), 0);
  memset(t->small, 'x', sizeof t->small);
  t->small_len = braid_debug_deadlock_cycle(t->small, sizeof t->small);
  t->zero_len = braid_debug_deadlock_cycle(NULL, 0);
  return 0;
}

static void test_deadlock_cycle_description_is_truncated_to_the_buffer_and_reports_its_full_length(void **state) {
  (void)state;
  struct trunc_ctx t;
  memset(&t, 0, sizeof t);
  assert_int_equal(run_virtual(trunc_root, &t), 0);
  assert_int_equal(t.two.rc_b, BRAID_EDEADLK);
  assert_true(t.two.len > 8);
  assert_int_equal(t.small_len, t.two.len);
  assert_int_equal(t.zero_len, t.two.len);
  assert_int_equal(t.small[7], 0);
  assert_memory_equal(t.small, t.two.desc, 7);
}

static void test_deadlock_switch_returns_the_previous_setting(void **state) {
  (void)state;
  int was = braid_debug_deadlock(1);
  assert_int_equal(braid_debug_deadlock(0), 1);
  assert_int_equal(braid_debug_deadlock(0), 0);
  assert_int_equal(braid_debug_deadlock(7), 0); /* any non-zero is on */
  assert_int_equal(braid_debug_deadlock(was), 1);
}

/* ---- detection off: the cycle hangs until cancelled ------------------------------------------------ */

struct off_ctx {
  braid_lock *l1, *l2;
  int rc_a, rc_b, rc_exit_b;
  braid_time_t t0, b_done_at;
  long len;
};

static int off_a(braid_task *self, void *arg) {
  struct off_ctx *c = arg;
  CHECK_INT(braid_lock_acquire(self, c->l1), 0);
  CHECK_INT(braid_sleep(self, SEC), 0);
  c->rc_a = braid_lock_acquire(self, c->l2);
  if (c->rc_a == 0) CHECK_INT(braid_lock_release(self, c->l2), 0);
  CHECK_INT(braid_lock_release(self, c->l1), 0);
  return 0;
}

static int off_b(braid_task *self, void *arg) {
  struct off_ctx *c = arg;
  CHECK_INT(braid_lock_acquire(self, c->l2), 0);
  CHECK_INT(braid_sleep(self, 2 * SEC), 0);
  braid_scope *s = NULL;
  CHECK_INT(braid_move_on_after(self, 10 * SEC, &s), 0);
  c->rc_b = braid_lock_acquire(self, c->l1); /* a real deadlock: only the deadline ends it */
  c->b_done_at = braid_now(self);
  c->rc_exit_b = braid_scope_exit(s, c->rc_b);
  CHECK_INT(braid_scope_unref(s), 0);
  if (c->rc_b == 0) CHECK_INT(braid_lock_release(self, c->l1), 0);
  CHECK_INT(braid_lock_release(self, c->l2), 0);
  return 0;
}

static int off_root(braid_task *self, void *arg) {
  struct off_ctx *c = arg;
  c->t0 = braid_now(self);
  c->l1 = new_lock();
  c->l2 = new_lock();
  braid_group *g = NULL;
  CHECK_INT(braid_group_open(self, &g), 0);
  CHECK_INT(braid_group_spawn(g, off_a, c, NULL, NULL), 0);
  CHECK_INT(braid_group_spawn(g, off_b, c, NULL, NULL), 0);
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_free(g), 0);
  c->len = braid_debug_deadlock_cycle(NULL, 0);
  CHECK_INT(braid_lock_free(c->l1), 0);
  CHECK_INT(braid_lock_free(c->l2), 0);
  return 0;
}

static void *off_thread(void *arg) {
  CHECK_INT(run_virtual(off_root, arg), 0);
  return NULL;
}

static void test_deadlock_with_detection_off_a_cycle_waits_until_a_cancellation_resolves_it(void **state) {
  (void)state;
  struct off_ctx c;
  memset(&c, 0, sizeof c);
  /* On a fresh thread, so that no earlier detection shows in its description. */
  assert_int_equal(in_thread(off_thread, &c), 0);
  assert_int_equal(check_failures(), 0);
  assert_int_equal(c.rc_b, BRAID_ECANCELED);
  assert_int_equal(c.b_done_at, c.t0 + 12 * SEC);
  assert_int_equal(c.rc_exit_b, 0);
  assert_int_equal(c.rc_a, 0);
  assert_int_equal(c.len, 0);
}

/* ---- switched on by the environment ----------------------------------------------------------------- */

static int env_child(void *arg) {
  (void)arg;
  if (setenv("BRAID_DEBUG_DEADLOCK", "1", 1) != 0) return 2;
  struct two_ctx c;
  memset(&c, 0, sizeof c);
  if (run_virtual(two_root, &c) != 0) return 3;
  if (check_failures() != 0) return 4;
  return c.rc_b == BRAID_EDEADLK ? 0 : 1;
}

static void test_deadlock_environment_variable_turns_detection_on_at_the_first_lock_operation(void **state) {
  (void)state;
  /* Must run before anything in this process touched a lock: it is the
   * first test of this executable. */
  int sig = 0;
  assert_int_equal(fork_call(env_child, NULL, &sig), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      BT(test_deadlock_environment_variable_turns_detection_on_at_the_first_lock_operation),
      DL_ON(test_deadlock_two_tasks_the_second_waiter_gets_edeadlk_and_a_description_naming_both),
      DL_ON(test_deadlock_two_stepped_tasks_the_second_waiter_gets_edeadlk),
      DL_ON(test_deadlock_a_task_closing_a_cycle_with_a_plain_thread_gets_edeadlk),
      DL_ON(test_deadlock_a_plain_thread_closing_a_cycle_with_a_task_gets_edeadlk),
      DL_ON(test_deadlock_a_cycle_of_three_tasks_is_detected_by_the_one_closing_it),
      DL_ON(test_deadlock_a_chain_of_waits_without_a_cycle_is_not_refused),
      DL_ON(test_deadlock_the_description_stays_that_of_the_last_cycle_detected),
      DL_ON(test_deadlock_cycle_is_empty_on_a_thread_that_detected_none_and_null_buffer_is_einval),
      DL_ON(test_deadlock_cycle_description_is_truncated_to_the_buffer_and_reports_its_full_length),
      BT(test_deadlock_switch_returns_the_previous_setting),
      DL_OFF(test_deadlock_with_detection_off_a_cycle_waits_until_a_cancellation_resolves_it),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
