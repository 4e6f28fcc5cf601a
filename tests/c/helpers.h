/*
 * helpers.h — scaffolding shared by the braid unit tests.
 *
 * Why CHECK and not assert_*: cmocka's assert_* macros longjmp back to the
 * test runner when they fail. Inside a task body that would jump off a
 * coroutine stack (or out of a step) and leave the loop half-run, so every
 * later test of the executable would see a thread that "already runs a
 * loop". Task bodies therefore use the CHECK* macros below: a failed check
 * prints where and what, counts the failure and lets the body go on (or
 * bail out). Tests registered with BT() fail in their teardown when any
 * check failed. On the test's own stack, after braid_run returned, the
 * ordinary assert_* macros are used.
 *
 * Stepped bodies are written as small state machines with AWAIT(): the
 * protothread trick of a `switch` whose case labels sit inside the macro,
 * so a body reads top to bottom like a stackful one. State that must
 * survive a step lives in the context struct (locals do not).
 */
#ifndef BRAID_TEST_HELPERS_H
#define BRAID_TEST_HELPERS_H

/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "braid.h"

/* ---- checks usable anywhere (task bodies, steps, threads) ---------- */

int check_true_(int ok, const char *expr, const char *file, int line);
int check_int_(long long actual, long long expected, const char *actual_expr, const char *expected_expr,
               const char *file, int line);
int check_str_(const char *actual, const char *expected, const char *actual_expr, const char *file, int line);

/* Number of failed checks since the last reset. */
int check_failures(void);
void checks_reset(void);

/* Each returns 1 if the check held, 0 (after reporting) if not. */
#define CHECK(cond) check_true_((cond) != 0, #cond, __FILE__, __LINE__)
#define CHECK_INT(actual, expected)                                                                                    \
  check_int_((long long)(actual), (long long)(expected), #actual, #expected, __FILE__, __LINE__)
#define CHECK_PTR(actual, expected)                                                                                    \
  check_true_((const void *)(actual) == (const void *)(expected), #actual " == " #expected, __FILE__, __LINE__)
#define CHECK_STR(actual, expected) check_str_((actual), (expected), #actual, __FILE__, __LINE__)

/* cmocka setup/teardown: reset the check counter, fail on failed checks. */
int bt_setup(void **state);
int bt_teardown(void **state);
#define BT(f) cmocka_unit_test_setup_teardown(f, bt_setup, bt_teardown)

/* ---- running loops ------------------------------------------------- */

braid_run_opts run_opts(int clock);
int run_virtual(braid_fn fn, void *arg);
int run_virtual_at(braid_fn fn, void *arg, braid_time_t start_time);
int run_real(braid_fn fn, void *arg);
int run_stepped_virtual(braid_step_fn step, void *ctx);
int run_stepped_real(braid_step_fn step, void *ctx);

/* Spawn options with a name and/or stack size (0 = default). */
braid_spawn_opts spawn_opts(const char *name, size_t stack_size);

/* ---- plain threads ------------------------------------------------- */

/* Run fn(arg) on a new pthread and join it. Returns 0 or the pthread error. */
int in_thread(void *(*fn)(void *), void *arg);

/*
 * Run fn(arg) in a forked child process and return its result (which must
 * fit in -128..127), so that a crash of the runtime fails one test instead
 * of leaving this process's loop half-run. Returns FORK_CRASHED (and the
 * signal in *signo, if non-NULL) when the child died of a signal.
 */
#define FORK_CRASHED (-1000)
int fork_call(int (*fn)(void *), void *arg, int *signo);

/* Real monotonic time in ns (clock_gettime), independent of braid. */
int64_t real_ns(void);

/* Sleep the calling OS thread for `ns` nanoseconds. */
void os_sleep_ns(int64_t ns);

/* ---- payloads with counted destructors ----------------------------- */

typedef struct tpayload {
  int id;
  _Atomic int dtor_calls;
} tpayload;

/* Destructor for tpayload: counts calls on the payload itself. */
void tpayload_dtor(void *p);

/* ---- stepped bodies ------------------------------------------------ */

/* Embed as a member (conventionally `co`) of a stepped body's context. */
typedef struct co_state {
  int pc;        /* where to resume: 0 = first step */
  int rc;        /* outcome of the last AWAIT */
  int immediate; /* AWAITs whose call returned at once (not EPENDING) */
} co_state;

/*
 * AWAIT(co, call): evaluate a blocking call from a stepped body whose step
 * parameter is named `resume`. If it returns BRAID_EPENDING, the step
 * returns BRAID_EPENDING and the next step continues right here with the
 * outcome in co->rc. Any other result is the outcome at once (co->rc), and
 * co->immediate counts it. The body must be
 *   switch (c->co.pc) { case 0: ... } return CO_FELL_OFF;
 */
#define AWAIT(cs, call)                                                                                                \
  do {                                                                                                                 \
    (cs)->rc = (call);                                                                                                 \
    if ((cs)->rc == BRAID_EPENDING) {                                                                                  \
      (cs)->pc = __LINE__;                                                                                             \
      return BRAID_EPENDING;                                                                                           \
    case __LINE__:                                                                                                     \
      (cs)->rc = resume;                                                                                               \
    } else {                                                                                                           \
      (cs)->immediate++;                                                                                               \
    }                                                                                                                  \
  } while (0)

/* A step called with a pc it does not know: reported by a check. */
#define CO_FELL_OFF (check_true_(0, "stepped body resumed at an unknown point", __FILE__, __LINE__), -999)

/* A new scope (the test fails if it cannot be made). */
static inline braid_scope *new_scope(braid_time_t deadline, unsigned flags) {
  braid_scope *s = NULL;
  CHECK_INT(braid_scope_new(deadline, flags, &s), 0);
  CHECK(s != NULL);
  return s;
}

/* Close a group and free it. After a failed check the group is cancelled
 * first, so that a broken test ends instead of waiting forever. */
static inline void close_group(braid_group *g) {
  if (check_failures() > 0) braid_scope_cancel(braid_group_scope(g));
  CHECK_INT(braid_group_close(g, 0), 0);
  CHECK_INT(braid_group_free(g), 0);
}

#endif /* BRAID_TEST_HELPERS_H */
