/*
 * braid.h — structured concurrency with a stable C ABI.
 *
 * This is the only public header of libbraid. It is grouped by concept:
 *
 *   1. Versions, errors, time
 *   2. Allocation
 *   3. Running a loop (braid_run) and the tasks of a loop
 *   4. Cancel scopes and checkpoints
 *   5. Sleeping
 *   6. Task groups
 *   7. Synchronization: Lock, Semaphore, Event, Condition, CapacityLimiter,
 *      Channel, callback waiters, deadlock detection
 *   8. The thread bridge: to_thread, from_thread, blocking portals
 *
 * Conventions (they hold for every function below unless its comment says
 * otherwise):
 *
 *   - Functions return 0 on success or a negative BRAID_E* code. Misuse (a
 *     NULL handle, the wrong thread, the wrong order, a closed object) returns
 *     a code; it never crashes.
 *   - Handles are opaque. Option structs start with a `size` member that the
 *     caller sets to sizeof(the struct) so that the struct can grow.
 *   - "Blocking" functions take the calling task. On a stackful task they
 *     switch away and return the outcome. On a stepped task they register the
 *     wait and return BRAID_EPENDING; the outcome arrives as the `resume`
 *     argument of the task's next step. Every blocking function is a
 *     checkpoint unless its comment says otherwise: it always lets other
 *     tasks run, and inside a cancelled scope its outcome is BRAID_ECANCELED
 *     (still delivered after the yield, through `resume` on a stepped task).
 *   - "Loop thread only" means: callable only from the thread that runs the
 *     loop the object belongs to (from a task of that loop); other threads get
 *     BRAID_ETHREAD.
 */
#ifndef BRAID_H
#define BRAID_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define BRAID_API __attribute__((visibility("default")))
#else
#define BRAID_API
#endif

/* ======================================================================
 * 1. Versions, errors, time
 * ==================================================================== */

#define BRAID_VERSION_MAJOR 0
#define BRAID_VERSION_MINOR 1
#define BRAID_VERSION_PATCH 0

/**
 * braid_version — the runtime library's version.
 *
 * Returns (major << 16) | (minor << 8) | patch of the loaded libbraid, which
 * may differ from the BRAID_VERSION_* macros the caller was compiled with.
 * Thread-safe.
 */
BRAID_API unsigned braid_version(void);

/**
 * braid_version_string — the runtime version as "MAJOR.MINOR.PATCH".
 *
 * Returns a static string; never NULL. Thread-safe.
 */
BRAID_API const char *braid_version_string(void);

/* Error codes. Every function returns 0 or one of these. */
#define BRAID_EINVAL (-1)       /* invalid argument (NULL handle, bad value) */
#define BRAID_ENOMEM (-2)       /* allocation failed */
#define BRAID_ECANCELED (-3)    /* cancelled at a checkpoint */
#define BRAID_ETIMEDOUT (-4)    /* a fail-after scope caught its deadline */
#define BRAID_ESTATE (-5)       /* call in the wrong state or order */
#define BRAID_EFAILED (-6)      /* a task group had failures */
#define BRAID_EPENDING (-7)     /* stepped task: wait registered */
#define BRAID_ETHREAD (-8)      /* called from the wrong thread */
#define BRAID_EDEADLK (-9)      /* would deadlock */
#define BRAID_EPERM (-10)       /* not the owner */
#define BRAID_EWOULDBLOCK (-11) /* a _nowait call that would block */
#define BRAID_EEOF (-12)        /* end of stream */
#define BRAID_EBROKEN (-13)     /* the other side is gone */
#define BRAID_ECLOSED (-14)     /* the object was closed */
#define BRAID_ESYS (-15)        /* the operating system refused (errno set) */

/**
 * braid_strerror — a short English description of an error code.
 *
 * Returns a static string for every BRAID_E* code, "success" for 0 and
 * "unknown error" for anything else; never NULL. Thread-safe.
 */
BRAID_API const char *braid_strerror(int code);

/**
 * braid_errname — the symbolic name of an error code ("BRAID_ECANCELED").
 *
 * Returns a static string, "BRAID_OK" for 0, "BRAID_E?" for unknown codes.
 * Thread-safe.
 */
BRAID_API const char *braid_errname(int code);

/* Times and durations are int64 nanoseconds on a monotonic clock. */
typedef int64_t braid_time_t;
#define BRAID_NEVER INT64_MAX
#define BRAID_NSEC ((braid_time_t)1)
#define BRAID_USEC ((braid_time_t)1000)
#define BRAID_MSEC ((braid_time_t)1000000)
#define BRAID_SEC ((braid_time_t)1000000000)

/* ======================================================================
 * 2. Allocation
 * ==================================================================== */

/**
 * braid_allocator — the hook through which libbraid allocates memory.
 * `realloc` receives NULL to allocate and size 0 never; `free` receives what
 * `realloc` returned. Both get `ud`. Stacks are mapped with mmap and do not go
 * through this hook.
 */
typedef struct braid_allocator {
  size_t size;
  void *(*realloc)(void *ud, void *ptr, size_t new_size);
  void (*free)(void *ud, void *ptr);
  void *ud;
} braid_allocator;

/**
 * braid_set_allocator — replace the allocator (NULL restores malloc/free).
 *
 * Returns 0, or BRAID_EINVAL if `a` is non-NULL with a NULL function or a
 * size smaller than the struct, or BRAID_ESTATE if a loop is running or a
 * worker thread of braid_to_thread is alive (see
 * braid_set_worker_idle_timeout).
 * Call it while no loop runs and no braid object allocated with the previous
 * allocator is alive. Not thread-safe with other braid calls.
 */
BRAID_API int braid_set_allocator(const braid_allocator *a);

/* ======================================================================
 * 3. Loops and tasks
 * ==================================================================== */

typedef struct braid_loop braid_loop;
typedef struct braid_task braid_task;
typedef struct braid_scope braid_scope;
typedef struct braid_group braid_group;

/**
 * braid_fn — body of a stackful task. Runs on its own stack; may call
 * blocking functions. Its return value is the task's result: 0 for success,
 * BRAID_ECANCELED for a cancellation, anything else is a failure.
 */
typedef int (*braid_fn)(braid_task *self, void *arg);

/**
 * braid_step_fn — body of a stepped task (driven by a binding; no C stack).
 *
 * Called first with resume == 0. It returns BRAID_EPENDING after a blocking
 * call returned BRAID_EPENDING (the wait is registered); the next step is
 * then called with the outcome of that wait as `resume`. Any other return
 * value ends the task with that result. Returning BRAID_EPENDING without a
 * registered wait ends the task with BRAID_ESTATE, and so does returning a
 * final result while a wait is still registered (the wait is cancelled if it
 * can be, and the task ends when it is over; it is not stepped again).
 * While a wait is registered, the task cannot enter or exit scopes
 * (BRAID_ESTATE).
 */
typedef int (*braid_step_fn)(braid_task *self, void *ctx, int resume);

/** Clock kinds for braid_run_opts.clock. */
#define BRAID_CLOCK_REAL 0
/** Virtual clock: time stands still while tasks run and jumps to the next
 *  deadline as soon as every task is blocked. */
#define BRAID_CLOCK_VIRTUAL 1

/** Options for braid_run / braid_run_stepped. Zero-initialise, set size. */
typedef struct braid_run_opts {
  size_t size;             /* sizeof(braid_run_opts) */
  int clock;               /* BRAID_CLOCK_REAL (default) or _VIRTUAL */
  braid_time_t start_time; /* virtual clock: initial time (default 0) */
  size_t stack_size;       /* default stack size of stackful tasks; 0 = 256 KiB;
                              at least 16 KiB, at most 1 GiB (more is BRAID_EINVAL) */
  const char *root_name;   /* name of the root task; NULL = "root" */
  /* Called on the loop thread just before / after the loop waits for
   * events, the short spin for replies of its to_thread workers included
   * (a host releases and re-takes its interpreter lock here). on_fd runs
   * between the two. */
  void (*before_poll)(void *ud);
  void (*after_poll)(void *ud);
  void *poll_ud;
  /* Extra file descriptor to watch (-1 or 0 with on_fd NULL = none): when it
   * becomes readable, on_fd(poll_ud) runs on the loop thread. */
  int watch_fd;
  void (*on_fd)(void *ud);
  /* Synchronization operations that complete without waiting (a free lock,
   * a channel with room) are cancellation points always, and schedule
   * points once every coop_budget of them on this loop: 0 = 64 (the
   * default), 1 = every time (Trio's exact scheduling), at most 1000000. */
  unsigned coop_budget;
} braid_run_opts;

/**
 * braid_run — run a stackful root task on a new loop on the calling thread.
 *
 * Creates a loop on this thread, runs fn(root, arg) as the root task and
 * returns when the root task and every task of the loop have finished.
 * A task body (the root's included) that returns while scopes or groups it
 * entered are still open ends with the failure BRAID_ESTATE: those scopes
 * are left as a misnested exit leaves them (detached, cancelled), and the
 * children of a group left open are cancelled and still waited for.
 * Returns the root task's result, BRAID_EINVAL for a NULL fn or bad options
 * (including a watch_fd libuv cannot poll),
 * BRAID_ENOMEM, BRAID_ESYS if libuv could not be initialised, or BRAID_ESTATE
 * if this thread already runs a loop. Thread-safe: each thread may run its
 * own loop.
 */
BRAID_API int braid_run(braid_fn fn, void *arg, const braid_run_opts *opts);

/**
 * braid_run_stepped — like braid_run with a stepped root task
 * step(root, ctx, resume). Same returns as braid_run.
 */
BRAID_API int braid_run_stepped(braid_step_fn step, void *ctx, const braid_run_opts *opts);

/**
 * braid_current_task — the task running on the calling thread, or NULL when
 * called outside a task (from the scheduler, or from a thread without loop).
 * Thread-safe.
 */
BRAID_API braid_task *braid_current_task(void);

/**
 * braid_task_loop — the loop of a task (NULL for a NULL task). Thread-safe.
 */
BRAID_API braid_loop *braid_task_loop(const braid_task *task);

/**
 * braid_task_id — the task's id: unique in the process, never reused, > 0.
 * Returns 0 for NULL. Thread-safe.
 */
BRAID_API uint64_t braid_task_id(const braid_task *task);

/**
 * braid_task_name — the task's name (the spawn option, or "task-<id>").
 * The string is owned by the task and lives as long as it. NULL for NULL.
 * Thread-safe while the task lives.
 */
BRAID_API const char *braid_task_name(const braid_task *task);

/**
 * braid_task_is_stepped — 1 for a stepped task, 0 for a stackful one or NULL.
 */
BRAID_API int braid_task_is_stepped(const braid_task *task);

/**
 * braid_task_set_user / braid_task_user — one pointer of binding data per
 * task. Loop thread only (no check is made by braid_task_user).
 */
BRAID_API void braid_task_set_user(braid_task *task, void *user);
BRAID_API void *braid_task_user(const braid_task *task);

/**
 * braid_now — the current time of the task's loop (virtual or real). With
 * task == NULL, the monotonic real clock. Loop thread only for a task.
 */
BRAID_API braid_time_t braid_now(const braid_task *task);

/**
 * braid_loop_now — the current time of a loop (virtual or real).
 * Loop thread only (returns the real clock otherwise).
 */
BRAID_API braid_time_t braid_loop_now(const braid_loop *loop);

/**
 * braid_loop_is_virtual — 1 if the loop runs on the virtual clock.
 */
BRAID_API int braid_loop_is_virtual(const braid_loop *loop);

/**
 * braid_loop_stats — counters of a loop, for tests and tools.
 */
typedef struct braid_loop_stats {
  size_t size;          /* sizeof(braid_loop_stats) */
  uint64_t tasks_alive; /* tasks not yet finished, root included */
  uint64_t tasks_spawned;
  uint64_t switches;      /* stackful context switches so far */
  uint64_t steps;         /* stepped task steps so far */
  uint64_t stacks_cached; /* stacks kept for reuse */
  uint64_t stacks_mapped; /* stacks currently mapped (in use or cached) */
} braid_loop_stats;

/**
 * braid_loop_get_stats — fill *out (set out->size first).
 * Returns 0, BRAID_EINVAL for NULL or a too small size. Loop thread only.
 */
BRAID_API int braid_loop_get_stats(const braid_loop *loop, braid_loop_stats *out);

/* ======================================================================
 * 4. Cancel scopes and checkpoints
 * ==================================================================== */

/** Scope flags. */
#define BRAID_SHIELD 1u /* outer cancellations do not reach inside */
#define BRAID_FAIL 2u   /* exit turns a caught deadline cancellation into ETIMEDOUT */

/**
 * braid_scope_new — create a cancel scope.
 *
 * `deadline` is an absolute time on the clock of the loop that will enter it
 * (BRAID_NEVER for none); `flags` is a mask of BRAID_SHIELD and BRAID_FAIL.
 * Stores the new scope in *out. The caller owns one reference
 * (braid_scope_unref). Returns 0, BRAID_EINVAL (NULL out, unknown flag),
 * BRAID_ENOMEM. Thread-safe.
 */
BRAID_API int braid_scope_new(braid_time_t deadline, unsigned flags, braid_scope **out);

/**
 * braid_scope_ref — take one more reference (for another thread that may
 * cancel the scope). Returns the scope. Thread-safe.
 */
BRAID_API braid_scope *braid_scope_ref(braid_scope *scope);

/**
 * braid_scope_unref — drop a reference; the last one frees the scope.
 * Returns 0, BRAID_EINVAL for NULL, BRAID_ESTATE (nothing dropped) when this
 * is the last reference of a scope that is still entered, or when the scope
 * was already freed (detected while its memory is cached). Thread-safe.
 */
BRAID_API int braid_scope_unref(braid_scope *scope);

/**
 * braid_scope_enter — make `scope` the innermost scope of `task`, or of the
 * calling thread when task is NULL.
 *
 * A scope is entered once. If its deadline is now or earlier, it is
 * cancelled at once (the next checkpoint fails). Returns 0, BRAID_EINVAL
 * (NULL scope), BRAID_ESTATE (already entered, or `task` is not the running
 * task), BRAID_ETHREAD (task of another thread), BRAID_ENOMEM (the deadline
 * could not be registered; the scope is not entered). Not a checkpoint.
 * Loop thread only (or the thread itself).
 */
BRAID_API int braid_scope_enter(braid_task *task, braid_scope *scope);

/**
 * braid_scope_exit — leave `scope` and return what its body should propagate.
 *
 * `rc` is the body's result. If rc is BRAID_ECANCELED, this scope is
 * cancelled, and no cancelled ancestor is visible through an unshielded
 * chain, the cancellation is caught: returns 0 (or BRAID_ETIMEDOUT with
 * BRAID_FAIL when the deadline had passed) and cancelled_caught becomes 1.
 * Otherwise returns rc unchanged. Exiting a scope that is not the innermost
 * of its task returns BRAID_ESTATE: the scope is left, the inner scopes
 * still open are detached and stay cancelled, and exiting them later returns
 * their rc unchanged. Exiting a scope never entered, already exited, or from
 * another task returns BRAID_ESTATE and changes nothing; NULL is
 * BRAID_EINVAL. Not a checkpoint. Loop thread only (or the thread itself).
 */
BRAID_API int braid_scope_exit(braid_scope *scope, int rc);

/**
 * braid_scope_cancel — cancel the scope: every checkpoint inside it fails
 * until the code leaves it. Idempotent; allowed before enter and after exit.
 * Returns 0, BRAID_EINVAL for NULL. Thread-safe: from another thread the
 * blocked tasks are woken through the loop's wake-up.
 */
BRAID_API int braid_scope_cancel(braid_scope *scope);

/**
 * braid_scope_set_deadline — move the deadline (BRAID_NEVER removes it).
 * A deadline in the past cancels the scope immediately. Returns 0,
 * BRAID_EINVAL, BRAID_ETHREAD (entered on another thread's loop),
 * BRAID_ENOMEM (the deadline could not be registered; unchanged).
 * Loop thread only once entered; any thread before.
 */
BRAID_API int braid_scope_set_deadline(braid_scope *scope, braid_time_t deadline);

/** braid_scope_deadline — the deadline (BRAID_NEVER for none or NULL). Thread-safe. */
BRAID_API braid_time_t braid_scope_deadline(const braid_scope *scope);

/**
 * braid_scope_set_shield — turn the shield on (1) or off (0). Turning it off
 * inside a cancelled outer scope makes the outer cancellation visible again.
 * Returns 0, BRAID_EINVAL, BRAID_ETHREAD. Same threading as set_deadline.
 */
BRAID_API int braid_scope_set_shield(braid_scope *scope, int shield);

/** braid_scope_shield — 1 if shielded. Thread-safe. */
BRAID_API int braid_scope_shield(const braid_scope *scope);

/** braid_scope_cancel_called — 1 once cancel was called or the deadline
 *  passed. Thread-safe. */
BRAID_API int braid_scope_cancel_called(const braid_scope *scope);

/** braid_scope_cancelled_caught — 1 if exit caught a cancellation. Thread-safe. */
BRAID_API int braid_scope_cancelled_caught(const braid_scope *scope);

/**
 * braid_current_effective_deadline — the earliest deadline that applies to
 * the task now (taking shields into account); -BRAID_NEVER-ish minimum
 * (INT64_MIN) if the task is already cancelled; BRAID_NEVER if none.
 * With task NULL, for the calling thread. Loop thread only.
 */
BRAID_API braid_time_t braid_current_effective_deadline(const braid_task *task);

/**
 * braid_task_cancelled — 1 if the task is inside an effectively cancelled
 * scope now (the next checkpoint would fail), 0 if not. Not a checkpoint.
 */
BRAID_API int braid_task_cancelled(const braid_task *task);

/**
 * braid_checkpoint — yield to other tasks, then fail if cancelled.
 * Returns 0 or BRAID_ECANCELED (BRAID_EPENDING on a stepped task);
 * BRAID_EINVAL for NULL, BRAID_ESTATE if task is not the running task.
 */
BRAID_API int braid_checkpoint(braid_task *task);

/**
 * braid_checkpoint_if_cancelled — fail if cancelled, without yielding.
 * Returns 0 or BRAID_ECANCELED (never BRAID_EPENDING); BRAID_EINVAL,
 * BRAID_ESTATE as braid_checkpoint.
 */
BRAID_API int braid_checkpoint_if_cancelled(braid_task *task);

/**
 * braid_cancel_shielded_checkpoint — yield to other tasks; never fails.
 * Returns 0 (BRAID_EPENDING on a stepped task); BRAID_EINVAL, BRAID_ESTATE.
 */
BRAID_API int braid_cancel_shielded_checkpoint(braid_task *task);

/**
 * braid_move_on_after — create and enter a scope whose deadline is now +
 * duration (saturating). Stores it in *out; the caller exits it with
 * braid_scope_exit and drops it with braid_scope_unref. Returns 0,
 * BRAID_EINVAL, BRAID_ENOMEM, BRAID_ETHREAD. Not a checkpoint.
 */
BRAID_API int braid_move_on_after(braid_task *task, braid_time_t duration, braid_scope **out);

/** braid_fail_after — as braid_move_on_after with BRAID_FAIL. */
BRAID_API int braid_fail_after(braid_task *task, braid_time_t duration, braid_scope **out);

/* ======================================================================
 * 5. Sleeping
 * ==================================================================== */

/**
 * braid_sleep — sleep for `duration` ns (<= 0: a plain checkpoint). With
 * task NULL the calling plain thread sleeps on the real clock, woken early
 * with BRAID_ECANCELED when its scopes (or, on a worker, its task) are
 * cancelled; a loop's thread gets BRAID_ETHREAD.
 * Returns 0 when the time has passed, BRAID_ECANCELED, BRAID_EPENDING
 * (stepped), BRAID_EINVAL, BRAID_ESTATE (not the running task),
 * BRAID_ETHREAD, BRAID_ENOMEM (the wake-up could not be registered).
 */
BRAID_API int braid_sleep(braid_task *task, braid_time_t duration);

/** braid_sleep_until — sleep until the absolute time `when`. As braid_sleep. */
BRAID_API int braid_sleep_until(braid_task *task, braid_time_t when);

/** braid_sleep_forever — sleep until cancelled; returns BRAID_ECANCELED
 *  (or BRAID_EPENDING, BRAID_EINVAL, BRAID_ESTATE). */
BRAID_API int braid_sleep_forever(braid_task *task);

/* ======================================================================
 * 6. Task groups
 * ==================================================================== */

/** Options for spawning a task. Zero-initialise, set size. NULL = defaults. */
typedef struct braid_spawn_opts {
  size_t size;       /* sizeof(braid_spawn_opts) */
  const char *name;  /* copied; NULL = "task-<id>" */
  size_t stack_size; /* stackful only; 0 = the loop's default; rounded up to pages,
                        at least 16 KiB, at most 1 GiB (more is BRAID_EINVAL) */
} braid_spawn_opts;

/**
 * braid_group_open — open a task group in `task` and enter its cancel scope.
 * Stores the group in *out. Returns 0, BRAID_EINVAL, BRAID_ENOMEM,
 * BRAID_ESTATE (task not running), BRAID_ETHREAD. Not a checkpoint.
 */
BRAID_API int braid_group_open(braid_task *task, braid_group **out);

/**
 * braid_group_spawn — start fn(child, arg) as a stackful child of the group.
 * The child starts running at the parent's next switch. Returns 0,
 * BRAID_EINVAL, BRAID_ENOMEM, BRAID_ESTATE (group closed, or closing with
 * no child left — closed to new arrivals, as Trio's nurseries),
 * BRAID_ETHREAD.
 * Loop thread only. On success *out_task (if non-NULL) is the child; it is
 * valid until the child finishes.
 */
BRAID_API int braid_group_spawn(braid_group *group, braid_fn fn, void *arg, const braid_spawn_opts *opts,
                                braid_task **out_task);

/** braid_group_spawn_stepped — as braid_group_spawn with a stepped body. */
BRAID_API int braid_group_spawn_stepped(braid_group *group, braid_step_fn step, void *ctx, const braid_spawn_opts *opts,
                                        braid_task **out_task);

/**
 * braid_group_start — start a child and wait until it calls
 * braid_task_started. Blocking, called by `caller` (any task of the group's
 * loop). Until started, the child runs under the caller's cancel scopes;
 * then it moves into the group. The child starts even if the caller is
 * already cancelled (it is then cancelled at its first checkpoint, as in
 * Trio); the wait itself is not cancellable. Returns 0 and stores the started value in
 * *value (may be NULL); the child's failure code if it failed before
 * started (its payload, if any, is stored in *value and the caller owns it;
 * with value NULL the payload's destructor runs); BRAID_ECANCELED if it was
 * cancelled before started; BRAID_ESTATE if it returned without started or
 * the group is closed; BRAID_EINVAL, BRAID_ENOMEM, BRAID_ETHREAD.
 * On a stepped caller, returns BRAID_EPENDING and writes *value when the
 * outcome arrives: `value` must stay valid until then.
 */
BRAID_API int braid_group_start(braid_group *group, braid_task *caller, braid_fn fn, void *arg,
                                const braid_spawn_opts *opts, void **value);

/** braid_group_start_stepped — as braid_group_start with a stepped body. */
BRAID_API int braid_group_start_stepped(braid_group *group, braid_task *caller, braid_step_fn step, void *ctx,
                                        const braid_spawn_opts *opts, void **value);

/**
 * braid_task_started — signal the starter of `self` that it is ready,
 * passing `value`. Returns 0; BRAID_ESTATE if called twice; 0 without effect
 * for a task that was spawned (not started), so a body may serve both.
 * BRAID_EINVAL for NULL. Loop thread only. Not a checkpoint.
 */
BRAID_API int braid_task_started(braid_task *self, void *value);

/**
 * braid_task_fail — record a failure of `self` with `code` (must be a
 * negative code other than BRAID_ECANCELED and BRAID_EPENDING, or any
 * positive value) and an optional binding payload with its destructor
 * (called once, by the group, when the failure is dropped). The task ends
 * with this failure whatever it returns; a second call replaces the first
 * (the first payload's destructor runs). Returns `code` (so a body can write
 * `return braid_task_fail(...)`), or BRAID_EINVAL for NULL or a code of 0,
 * BRAID_ECANCELED or BRAID_EPENDING (the payload's destructor runs then).
 */
BRAID_API int braid_task_fail(braid_task *self, int code, void *payload, void (*dtor)(void *));

/**
 * braid_group_close — wait for every child, then leave the group's scope.
 *
 * `rc` is the body's result; a failure (not 0, not BRAID_ECANCELED) is
 * recorded as the body's failure (unless braid_group_fail already recorded
 * one) and cancels the children. The first failure of any child cancels the
 * group scope, so siblings see BRAID_ECANCELED at their next checkpoint.
 * Returns 0; BRAID_EFAILED if any failure was recorded (braid_group_failure
 * lists them); otherwise braid_scope_exit of the group's scope with
 * BRAID_ECANCELED if the body or any child ended with BRAID_ECANCELED, else
 * with 0 — so a cancellation of the group itself is caught (0) and an outer
 * one propagates (BRAID_ECANCELED). Must be called by the task that opened
 * the group with the group's scope as its innermost (else BRAID_ESTATE).
 * Blocking but not cancellable: a cancellation cancels the children and the
 * close goes on waiting. A group with no children still yields once (a
 * cancel-shielded checkpoint, as Trio's nursery exit).
 * Stepped tasks get BRAID_EPENDING and the result as resume. The group stays
 * valid for braid_group_failure* until braid_group_free.
 */
BRAID_API int braid_group_close(braid_group *group, int rc);

/**
 * braid_group_fail — record a failure of the group's body with a payload
 * (as braid_task_fail does for a child) and cancel the group. A second call
 * replaces the first (whose payload is destroyed). Returns 0, BRAID_EINVAL
 * (as braid_task_fail), BRAID_ESTATE (closed), BRAID_ETHREAD; on every error
 * the payload's destructor runs. Loop thread only.
 */
BRAID_API int braid_group_fail(braid_group *group, int code, void *payload, void (*dtor)(void *));

/** braid_group_failure_count — number of failures recorded (0 for NULL). */
BRAID_API size_t braid_group_failure_count(const braid_group *group);

/**
 * braid_group_failure — the i-th failure, in the order they happened: its
 * code, its payload (owned by the group; NULL if none) and the id of the
 * task that failed. Out pointers may be NULL. Returns 0, BRAID_EINVAL
 * (NULL group or i out of range).
 */
BRAID_API int braid_group_failure(const braid_group *group, size_t i, int *code, void **payload, uint64_t *task_id);

/**
 * braid_group_take_payload — take ownership of the i-th failure's payload
 * (the group will not run its destructor). Returns the payload, or NULL.
 */
BRAID_API void *braid_group_take_payload(braid_group *group, size_t i);

/** braid_group_scope — the group's cancel scope (borrowed; take a reference
 *  to keep it). Cancelling it cancels the body and every child. */
BRAID_API braid_scope *braid_group_scope(const braid_group *group);

/**
 * braid_group_free — free a closed group and the payloads not taken.
 * Freeing a group that was never closed is allowed only after its task left
 * it (the task ended, misnested): the group is freed when its last child
 * ends. Returns 0, BRAID_EINVAL, BRAID_ESTATE (still open in its task, or
 * already freed — detected while its memory is cached by the loop).
 */
BRAID_API int braid_group_free(braid_group *group);

/** braid_group_child_count — children not yet finished. */
BRAID_API size_t braid_group_child_count(const braid_group *group);

/* ======================================================================
 * 7. Synchronization: waiting from tasks, threads and callbacks
 *
 * Every primitive below is one object usable from a task of any loop, from
 * a plain thread, and through a callback, with one FIFO queue of waiters of
 * all three kinds. Ownership passes directly from the releaser to the next
 * waiter (no barging). Uncontended operations are one compare-and-swap, with
 * no system call and no lock.
 *
 * The `task` argument of a blocking call selects the kind of waiter:
 *   - a task (the running task of the calling thread's loop): the call is a
 *     checkpoint; on a stepped task it returns BRAID_EPENDING and the
 *     outcome arrives as `resume`;
 *   - NULL: the calling plain thread blocks. The wait honours the thread's
 *     current scope (braid_scope_enter(NULL, s)): its cancellation and
 *     deadline end the wait with BRAID_ECANCELED. A thread that runs a loop
 *     cannot block this way (BRAID_ETHREAD): pass its running task.
 * The *_cb variants register a callback waiter (see braid_wait below).
 *
 * Cancellation removes a waiter from its queue and completes it with
 * BRAID_ECANCELED exactly once. When a hand-off and a cancellation race,
 * exactly one wins: a waiter that was handed the resource gets it (result
 * 0), never loses it.
 *
 * All functions of this section are thread-safe unless noted.
 * ==================================================================== */

typedef struct braid_wait braid_wait;

/**
 * braid_wait_cb — completion callback of a callback waiter: called exactly
 * once with the outcome (0, BRAID_ECANCELED, or the operation's error).
 * It runs on the thread that completes the wait: the releasing thread, the
 * thread calling braid_wait_cancel, or — when the completer is a stackful
 * task — the completer's loop thread on the scheduler's own stack, as soon
 * as control is back in the scheduler. Never on a task's stack. It must be
 * short and must not block.
 */
typedef void (*braid_wait_cb)(void *ud, int result);

/**
 * braid_wait_cancel — cancel a pending callback waiter. Returns 0 if it was
 * still waiting (its callback runs with BRAID_ECANCELED on this thread:
 * before this returns, or — called from a stackful task — from the loop's
 * scheduler as soon as the task switches out), BRAID_ESTATE if it had
 * already completed (its callback ran or is running with the real outcome),
 * BRAID_EINVAL for NULL.
 */
BRAID_API int braid_wait_cancel(braid_wait *w);

/**
 * braid_wait_free — release a callback waiter handle. A still pending
 * waiter is cancelled first (its callback runs with BRAID_ECANCELED). If the
 * wait had already completed, its callback has run or still runs exactly
 * once; the memory goes when it has returned, so keep `ud` valid until the
 * callback ran. Returns 0 or BRAID_EINVAL. Call it exactly once per handle.
 */
BRAID_API int braid_wait_free(braid_wait *w);

/** Owner kinds in statistics. */
#define BRAID_OWNER_NONE 0
#define BRAID_OWNER_TASK 1    /* owner_id is a braid_task_id */
#define BRAID_OWNER_THREAD 2  /* owner_id is braid_thread_id() of the thread */
#define BRAID_OWNER_FOREIGN 3 /* owner_id is the token given to a *_cb call */
#define BRAID_OWNER_JOB 4     /* a braid_to_thread job holding a limiter token */

/**
 * braid_thread_id — a process-unique id (> 0) of the calling thread, the one
 * statistics report for thread owners. Thread-safe.
 */
BRAID_API uint64_t braid_thread_id(void);

/* ---- Lock ---- */

typedef struct braid_lock braid_lock;

/** braid_lock_new — a new unlocked lock in *out. Returns 0, BRAID_EINVAL, BRAID_ENOMEM. */
BRAID_API int braid_lock_new(braid_lock **out);

/** braid_lock_free — free an unlocked lock with no waiters. Returns 0,
 *  BRAID_EINVAL, BRAID_ESTATE (locked or waited on: nothing freed). */
BRAID_API int braid_lock_free(braid_lock *lock);

/**
 * braid_lock_acquire — acquire, waiting in FIFO order. The owner is the task
 * (or the calling thread when task is NULL); it must release it. Returns 0,
 * BRAID_ECANCELED, BRAID_EPENDING (stepped), BRAID_EDEADLK (the caller
 * already owns it, or — with deadlock detection on — waiting would close a
 * cycle of lock waits, see braid_debug_deadlock), BRAID_EINVAL, BRAID_ESTATE
 * (task not running), BRAID_ETHREAD, BRAID_ENOMEM (a stepped task's first
 * wait on any primitive allocates its waiter). A task that gets the lock
 * without waiting does not fail, and yields once every coop_budget such
 * operations (braid_run_opts).
 */
BRAID_API int braid_lock_acquire(braid_task *task, braid_lock *lock);

/** braid_lock_acquire_nowait — acquire if free. Not a checkpoint. Returns 0,
 *  BRAID_EWOULDBLOCK, BRAID_EDEADLK, BRAID_EINVAL. */
BRAID_API int braid_lock_acquire_nowait(braid_task *task, braid_lock *lock);

/**
 * braid_lock_acquire_cb — acquire on behalf of a foreign owner identified
 * by `owner` (non-zero, < 2^60). Returns 0 if acquired at once (*out NULL,
 * no callback), or BRAID_EPENDING with a waiter handle in *out whose callback
 * reports the outcome; BRAID_EDEADLK if `owner` holds it; BRAID_EINVAL,
 * BRAID_ENOMEM.
 */
BRAID_API int braid_lock_acquire_cb(braid_lock *lock, uint64_t owner, braid_wait_cb cb, void *ud, braid_wait **out);

/**
 * braid_lock_release — release; the next waiter becomes the owner. Returns
 * 0, BRAID_EPERM (the task/thread is not the owner), BRAID_EINVAL. Not a
 * checkpoint.
 */
BRAID_API int braid_lock_release(braid_task *task, braid_lock *lock);

/** braid_lock_release_owner — release for a foreign owner. As braid_lock_release. */
BRAID_API int braid_lock_release_owner(braid_lock *lock, uint64_t owner);

/** Lock statistics. */
typedef struct braid_lock_stats {
  size_t size;    /* sizeof(braid_lock_stats) */
  int locked;     /* 1 if owned */
  int owner_kind; /* BRAID_OWNER_* */
  uint64_t owner_id;
  size_t waiting; /* waiters in the queue */
} braid_lock_stats;

/** braid_lock_statistics — fill *out (set out->size). Returns 0 or BRAID_EINVAL. */
BRAID_API int braid_lock_statistics(braid_lock *lock, braid_lock_stats *out);

/* ---- Semaphore ---- */

typedef struct braid_semaphore braid_semaphore;

/**
 * braid_semaphore_new — a semaphore with `initial` units; `max` bounds the
 * value (0 = no bound). Returns 0, BRAID_EINVAL (initial > max > 0),
 * BRAID_ENOMEM.
 */
BRAID_API int braid_semaphore_new(uint64_t initial, uint64_t max, braid_semaphore **out);
/** braid_semaphore_free — as braid_lock_free (BRAID_ESTATE while waited on). */
BRAID_API int braid_semaphore_free(braid_semaphore *sem);
/** braid_semaphore_acquire — take one unit, waiting FIFO. Returns as braid_lock_acquire (no EDEADLK). */
BRAID_API int braid_semaphore_acquire(braid_task *task, braid_semaphore *sem);
/** braid_semaphore_acquire_nowait — 0 or BRAID_EWOULDBLOCK, BRAID_EINVAL. */
BRAID_API int braid_semaphore_acquire_nowait(braid_semaphore *sem);
/** braid_semaphore_acquire_cb — callback waiter; returns as braid_lock_acquire_cb. */
BRAID_API int braid_semaphore_acquire_cb(braid_semaphore *sem, braid_wait_cb cb, void *ud, braid_wait **out);
/** braid_semaphore_release — give one unit back (to the first waiter if any).
 *  Returns 0, BRAID_EINVAL (NULL, or the value would exceed max). */
BRAID_API int braid_semaphore_release(braid_semaphore *sem);
/** braid_semaphore_value — current value. */
BRAID_API uint64_t braid_semaphore_value(braid_semaphore *sem);

typedef struct braid_semaphore_stats {
  size_t size;
  uint64_t value, max;
  size_t waiting;
} braid_semaphore_stats;
/** braid_semaphore_statistics — fill *out (set out->size). 0 or BRAID_EINVAL. */
BRAID_API int braid_semaphore_statistics(braid_semaphore *sem, braid_semaphore_stats *out);

/* ---- Event (one-shot) ---- */

typedef struct braid_event braid_event;

/** braid_event_new — an unset event. Returns 0, BRAID_EINVAL, BRAID_ENOMEM. */
BRAID_API int braid_event_new(braid_event **out);
/** braid_event_free — as braid_lock_free (BRAID_ESTATE while waited on). */
BRAID_API int braid_event_free(braid_event *ev);
/** braid_event_set — set it and wake every waiter. Idempotent. 0 or BRAID_EINVAL. */
BRAID_API int braid_event_set(braid_event *ev);
/** braid_event_is_set — 1 if set. */
BRAID_API int braid_event_is_set(braid_event *ev);
/**
 * braid_event_wait — wait until set. A checkpoint even when already set (a
 * task yields; it fails with BRAID_ECANCELED inside a cancelled scope).
 * Returns as braid_lock_acquire (no EDEADLK).
 */
BRAID_API int braid_event_wait(braid_task *task, braid_event *ev);
/** braid_event_wait_cb — callback waiter; 0 at once (*out NULL) if set. */
BRAID_API int braid_event_wait_cb(braid_event *ev, braid_wait_cb cb, void *ud, braid_wait **out);

typedef struct braid_event_stats {
  size_t size;
  int set;
  size_t waiting;
} braid_event_stats;
/** braid_event_statistics — fill *out (set out->size). 0 or BRAID_EINVAL. */
BRAID_API int braid_event_statistics(braid_event *ev, braid_event_stats *out);

/* ---- Condition (over a braid Lock) ---- */

typedef struct braid_condition braid_condition;

/** braid_condition_new — a condition using `lock` (borrowed: it must outlive
 *  the condition). Returns 0, BRAID_EINVAL, BRAID_ENOMEM. */
BRAID_API int braid_condition_new(braid_lock *lock, braid_condition **out);
/** braid_condition_free — 0, BRAID_EINVAL, BRAID_ESTATE (waited on). */
BRAID_API int braid_condition_free(braid_condition *cond);
/**
 * braid_condition_wait — release the lock, wait for a notification, and
 * re-acquire the lock before returning (always, also when cancelled: the
 * re-acquisition cannot be cancelled). The caller must own the lock
 * (BRAID_EPERM otherwise). Returns 0 when notified, BRAID_ECANCELED when
 * cancelled before a notification reached it (a notification is never lost:
 * if it reached the waiter first, the result is 0), BRAID_EPENDING, or the
 * errors of braid_lock_acquire.
 */
BRAID_API int braid_condition_wait(braid_task *task, braid_condition *cond);
/** braid_condition_notify — wake up to n waiters (in FIFO order); each gets
 *  the lock in turn. The caller must own the lock: pass its task (NULL for
 *  the calling thread). Returns 0, BRAID_EPERM, BRAID_EINVAL. */
BRAID_API int braid_condition_notify(braid_task *task, braid_condition *cond, size_t n);
/** braid_condition_notify_all — as notify for every waiter. */
BRAID_API int braid_condition_notify_all(braid_task *task, braid_condition *cond);

typedef struct braid_condition_stats {
  size_t size;
  size_t waiting; /* waiting for a notification */
  braid_lock_stats lock;
} braid_condition_stats;
/** braid_condition_statistics — fill *out (set out->size and out->lock.size). */
BRAID_API int braid_condition_statistics(braid_condition *cond, braid_condition_stats *out);

/* ---- CapacityLimiter ---- */

typedef struct braid_limiter braid_limiter;

/** braid_limiter_new — a limiter with `total` tokens (0 allowed). Returns 0,
 *  BRAID_EINVAL, BRAID_ENOMEM. */
BRAID_API int braid_limiter_new(uint64_t total, braid_limiter **out);
/** braid_limiter_free — 0, BRAID_EINVAL, BRAID_ESTATE (tokens borrowed or waited on). */
BRAID_API int braid_limiter_free(braid_limiter *lim);
/**
 * braid_limiter_acquire — borrow one token for the task (or calling
 * thread). Returns as braid_lock_acquire; BRAID_EDEADLK if this borrower
 * already holds a token of this limiter.
 */
BRAID_API int braid_limiter_acquire(braid_task *task, braid_limiter *lim);
/** braid_limiter_acquire_on_behalf — borrow one token for `borrower` (a
 *  non-zero token < 2^60 chosen by the caller), waiting as `task` does. */
BRAID_API int braid_limiter_acquire_on_behalf(braid_task *task, braid_limiter *lim, uint64_t borrower);
/** braid_limiter_acquire_nowait — borrow for the task/thread (borrower 0)
 *  or `borrower` if a token is free. Not a checkpoint. Returns 0,
 *  BRAID_EWOULDBLOCK, BRAID_EDEADLK (already a borrower), BRAID_EINVAL,
 *  BRAID_ETHREAD, BRAID_ENOMEM. */
BRAID_API int braid_limiter_acquire_nowait(braid_task *task, braid_limiter *lim, uint64_t borrower);
/** braid_limiter_acquire_cb — callback waiter for `borrower`. */
BRAID_API int braid_limiter_acquire_cb(braid_limiter *lim, uint64_t borrower, braid_wait_cb cb, void *ud,
                                       braid_wait **out);
/** braid_limiter_release — give back the token of the task/thread (borrower
 *  0) or of `borrower`. Returns 0, BRAID_EPERM (not a borrower), BRAID_EINVAL. */
BRAID_API int braid_limiter_release(braid_task *task, braid_limiter *lim, uint64_t borrower);
/** braid_limiter_set_total — change the number of tokens; raising it wakes
 *  waiters. Returns 0, BRAID_EINVAL, BRAID_ENOMEM. */
BRAID_API int braid_limiter_set_total(braid_limiter *lim, uint64_t total);

typedef struct braid_limiter_stats {
  size_t size;
  uint64_t total, borrowed;
  size_t waiting;
} braid_limiter_stats;
/** braid_limiter_statistics — fill *out (set out->size). 0 or BRAID_EINVAL. */
BRAID_API int braid_limiter_statistics(braid_limiter *lim, braid_limiter_stats *out);
/**
 * braid_limiter_borrowers — copy up to `cap` borrower descriptions (kind
 * BRAID_OWNER_*, id) into kinds[]/ids[]; returns the number of borrowers
 * (which may exceed cap), or BRAID_EINVAL.
 */
BRAID_API long braid_limiter_borrowers(braid_limiter *lim, int *kinds, uint64_t *ids, size_t cap);

/* ---- Channel (memory object stream) ---- */

typedef struct braid_sender braid_sender;
typedef struct braid_receiver braid_receiver;

#define BRAID_UNBOUNDED SIZE_MAX

/**
 * braid_channel_new — a channel buffering up to `buffer` items (0 =
 * rendezvous: a send completes when a receiver takes the item;
 * BRAID_UNBOUNDED = no bound). Items are `void *`; `dtor` (may be NULL)
 * destroys items still buffered when the last receiver closes. Stores one
 * sender and one receiver end. Returns 0, BRAID_EINVAL, BRAID_ENOMEM.
 */
BRAID_API int braid_channel_new(size_t buffer, void (*dtor)(void *), braid_sender **tx, braid_receiver **rx);

/** braid_sender_clone / braid_receiver_clone — another open end of the same
 *  channel. Returns 0, BRAID_EINVAL, BRAID_ECLOSED (this end is closed), BRAID_ENOMEM. */
BRAID_API int braid_sender_clone(braid_sender *tx, braid_sender **out);
BRAID_API int braid_receiver_clone(braid_receiver *rx, braid_receiver **out);

/**
 * braid_sender_close / braid_receiver_close — close this end (idempotent).
 * When the last sender closes, receivers get BRAID_EEOF once the buffer is
 * empty; when the last receiver closes, waiting and later senders get
 * BRAID_EBROKEN and buffered items are destroyed with `dtor`. Operations on
 * a closed end return BRAID_ECLOSED (its statistics still answer); the
 * handle stays valid until freed, and the channel until its last end is.
 * Returns 0 or BRAID_EINVAL. A handle is used by one thread at a time
 * (clone it for another).
 */
BRAID_API int braid_sender_close(braid_sender *tx);
BRAID_API int braid_receiver_close(braid_receiver *rx);

/** braid_sender_free / braid_receiver_free — close (if open) and free the
 *  handle. Returns 0 or BRAID_EINVAL. */
BRAID_API int braid_sender_free(braid_sender *tx);
BRAID_API int braid_receiver_free(braid_receiver *rx);

/**
 * braid_channel_send — send `item`, waiting for buffer space (or, with
 * buffer 0, for a receiver). On success the channel owns the item; on any
 * error the caller still does. Returns 0, BRAID_EBROKEN (no receiver left),
 * BRAID_ECLOSED (this end is closed), BRAID_ECANCELED, BRAID_EPENDING,
 * BRAID_EINVAL, BRAID_ESTATE, BRAID_ETHREAD, BRAID_ENOMEM (unbounded buffer
 * growth, or a stepped task's first wait).
 */
BRAID_API int braid_channel_send(braid_task *task, braid_sender *tx, void *item);
/** braid_channel_send_nowait — 0, BRAID_EWOULDBLOCK, BRAID_EBROKEN, BRAID_ECLOSED, BRAID_EINVAL, BRAID_ENOMEM. */
BRAID_API int braid_channel_send_nowait(braid_sender *tx, void *item);
/** braid_channel_send_cb — callback waiter; the item belongs to the channel
 *  once the callback reports 0 (or the call returns 0). */
BRAID_API int braid_channel_send_cb(braid_sender *tx, void *item, braid_wait_cb cb, void *ud, braid_wait **out);

/**
 * braid_channel_receive — receive an item into *item, waiting FIFO. Returns
 * 0, BRAID_EEOF (every sender closed and nothing buffered), BRAID_ECLOSED
 * (this end is closed), BRAID_ECANCELED, BRAID_EPENDING (stepped: *item is
 * written when the outcome arrives, so `item` must stay valid),
 * BRAID_EINVAL, BRAID_ESTATE, BRAID_ETHREAD, BRAID_ENOMEM.
 */
BRAID_API int braid_channel_receive(braid_task *task, braid_receiver *rx, void **item);
/** braid_channel_receive_nowait — 0, BRAID_EWOULDBLOCK, BRAID_EEOF, BRAID_ECLOSED, BRAID_EINVAL. */
BRAID_API int braid_channel_receive_nowait(braid_receiver *rx, void **item);
/** braid_channel_receive_cb — callback waiter; *item (kept valid by the
 *  caller) is written before the callback reports 0. */
BRAID_API int braid_channel_receive_cb(braid_receiver *rx, void **item, braid_wait_cb cb, void *ud, braid_wait **out);

typedef struct braid_channel_stats {
  size_t size;
  size_t buffered, max_buffer;
  size_t open_senders, open_receivers;
  size_t waiting_send, waiting_receive;
} braid_channel_stats;
/** braid_sender_statistics / braid_receiver_statistics — fill *out (set
 *  out->size) with the channel's statistics; a closed end still answers.
 *  0 or BRAID_EINVAL. */
BRAID_API int braid_sender_statistics(braid_sender *tx, braid_channel_stats *out);
BRAID_API int braid_receiver_statistics(braid_receiver *rx, braid_channel_stats *out);

/* ---- Deadlock detection (debugging) ---- */

/**
 * braid_debug_deadlock — turn lock-cycle detection on (1) or off (0); also
 * on when the environment has BRAID_DEBUG_DEADLOCK=1 at the first lock
 * operation. While on, a task or thread about to wait for a Lock whose
 * owner (transitively) waits for a Lock the caller owns gets BRAID_EDEADLK
 * instead of hanging. Costs a global mutex per contended acquire. Returns
 * the previous setting.
 */
BRAID_API int braid_debug_deadlock(int on);

/**
 * braid_debug_deadlock_cycle — the description of the last cycle detected on
 * the calling thread (e.g. "task 7 waits lock 0x… held by thread 3 waits lock
 * 0x… held by task 7"), copied into buf (NUL-terminated, truncated to size).
 * Returns the full length, 0 if none was detected, BRAID_EINVAL for a NULL
 * buf with size > 0.
 */
BRAID_API long braid_debug_deadlock_cycle(char *buf, size_t size);

/* ======================================================================
 * 8. The thread bridge: to_thread, from_thread, portals
 * ==================================================================== */

/** Body of a function run on a worker thread (braid_to_thread) or on a
 *  loop's thread (braid_from_thread_run_sync). Returns 0 or an error. */
typedef int (*braid_thread_fn)(void *arg);

/** braid_to_thread flag: on cancellation, resume the task at once. */
#define BRAID_ABANDON_ON_CANCEL 1u

/**
 * braid_to_thread — run fn(arg) on a worker thread; the task waits (a
 * checkpoint). Workers are pooled: an idle one is reused, else a new one is
 * started; idle workers retire (braid_set_worker_idle_timeout). At most
 * `limiter`'s total (NULL: the loop's default limiter, 40 tokens) run at
 * once for it; the token is taken before fn starts (a cancellable wait) and
 * given back when fn returns.
 *
 * Cancellation reaches into the worker: while fn runs for the task, the
 * worker thread's current cancel status is the task's. When the task is
 * cancelled, every braid wait on the worker (lock, semaphore, event,
 * channel, braid_sleep(NULL, …)) fails with BRAID_ECANCELED and
 * braid_thread_check_cancelled() reports it. Without BRAID_ABANDON_ON_CANCEL
 * the task keeps waiting until fn returns, then returns BRAID_ECANCELED; with
 * it, the task resumes at once with BRAID_ECANCELED, fn runs on and its
 * result is dropped (the token is still held until fn returns — unlike
 * AnyIO, which gives it back at once, so a limiter really bounds the threads
 * that run).
 *
 * Returns fn's result, BRAID_ECANCELED, BRAID_EPENDING (stepped: the result
 * arrives as resume), BRAID_EINVAL, BRAID_ESTATE, BRAID_ETHREAD, BRAID_ENOMEM,
 * BRAID_ESYS (no thread could be started). Loop thread only.
 */
BRAID_API int braid_to_thread(braid_task *task, braid_thread_fn fn, void *arg, unsigned flags, braid_limiter *limiter);

/**
 * braid_thread_check_cancelled — BRAID_ECANCELED if the calling thread is
 * cancelled: a worker whose task is cancelled, or a thread inside one of its
 * own cancelled (or expired) scopes; 0 otherwise. On a loop's thread it
 * reports the running task. Thread-safe.
 */
BRAID_API int braid_thread_check_cancelled(void);

/**
 * braid_loop_default_limiter — the loop's default to_thread limiter (40
 * tokens; settable with braid_limiter_set_total). Borrowed: valid while the
 * loop runs. Returns 0, BRAID_EINVAL, BRAID_ENOMEM.
 */
BRAID_API int braid_loop_default_limiter(braid_loop *loop, braid_limiter **out);

/** braid_set_worker_idle_timeout — how long an idle worker waits for work
 *  before it exits (default 10 s; > 0); applies at once to workers already
 *  idle. Returns the previous value, or BRAID_EINVAL. Thread-safe. */
BRAID_API braid_time_t braid_set_worker_idle_timeout(braid_time_t timeout);

typedef struct braid_worker_stats {
  size_t size;
  uint64_t alive, busy, idle; /* worker threads of the process */
} braid_worker_stats;
/** braid_worker_statistics — fill *out (set out->size). 0 or BRAID_EINVAL.
 *  Tasks waiting for a token: braid_limiter_statistics of the limiter. */
BRAID_API int braid_worker_statistics(braid_worker_stats *out);

/**
 * braid_loop_ref / braid_loop_unref — keep a loop handle valid after its
 * braid_run returns (so that calls on it answer BRAID_ECLOSED instead of
 * touching freed memory). braid_run holds one reference while it runs.
 * Thread-safe.
 */
BRAID_API braid_loop *braid_loop_ref(braid_loop *loop);
BRAID_API int braid_loop_unref(braid_loop *loop);

/**
 * braid_from_thread_run — from a plain thread, run fn(task, arg) as a new
 * stackful task on `loop` and wait for its result (a failure's code; its
 * payload is destroyed). The wait honours the calling thread's scopes: when
 * they are cancelled, the task is cancelled and still waited for. Returns
 * the task's result, BRAID_ECANCELED, BRAID_ESTATE (called on the loop's own
 * thread: it would deadlock), BRAID_ECLOSED (the loop has ended),
 * BRAID_EINVAL, BRAID_ENOMEM. Thread-safe.
 */
BRAID_API int braid_from_thread_run(braid_loop *loop, braid_fn fn, void *arg);

/**
 * braid_from_thread_run_stepped — as braid_from_thread_run with a stepped
 * body step(task, ctx, resume) (how a binding runs a coroutine or future on
 * a loop from another thread). Same returns; thread-safe.
 */
BRAID_API int braid_from_thread_run_stepped(braid_loop *loop, braid_step_fn step, void *ctx);

/**
 * braid_from_thread_run_sync — run fn(arg) on the loop's thread (from its
 * scheduler, between tasks) and return its result. Keep fn short; it must
 * not block. If the calling thread is cancelled before fn started, fn does
 * not run and BRAID_ECANCELED is returned. Otherwise as braid_from_thread_run.
 */
BRAID_API int braid_from_thread_run_sync(braid_loop *loop, braid_thread_fn fn, void *arg);

/* ---- Blocking portal: a loop on its own thread ---- */

typedef struct braid_portal braid_portal;
typedef struct braid_future braid_future;

typedef struct braid_portal_opts {
  size_t size; /* sizeof(braid_portal_opts) */
  int clock;   /* BRAID_CLOCK_REAL (default) or _VIRTUAL */
  size_t stack_size;
} braid_portal_opts;

/** braid_portal_start — start a loop on a new thread (opts may be NULL).
 *  Returns 0, BRAID_EINVAL, BRAID_ENOMEM, BRAID_ESYS. Thread-safe. */
BRAID_API int braid_portal_start(const braid_portal_opts *opts, braid_portal **out);

/** braid_portal_loop — the portal's loop (borrowed). */
BRAID_API braid_loop *braid_portal_loop(braid_portal *portal);

/** braid_portal_call — braid_from_thread_run on the portal's loop. */
BRAID_API int braid_portal_call(braid_portal *portal, braid_fn fn, void *arg);

/**
 * braid_portal_start_task — start fn(task, arg) as a task on the portal's
 * loop without waiting; *out is a future for its result. Returns 0,
 * BRAID_ECLOSED (the portal is stopping), BRAID_EINVAL, BRAID_ENOMEM.
 * Thread-safe.
 */
BRAID_API int braid_portal_start_task(braid_portal *portal, braid_fn fn, void *arg, braid_future **out);

/** braid_future_wait — wait until the task has ended or `deadline` (absolute,
 *  real clock; BRAID_NEVER) passes. Honours the calling thread's scopes.
 *  Returns 0 (ended), BRAID_ETIMEDOUT, BRAID_ECANCELED, BRAID_EINVAL,
 *  BRAID_ESTATE (on the portal's own thread). Thread-safe. */
BRAID_API int braid_future_wait(braid_future *f, braid_time_t deadline);
/** braid_future_cancel — cancel the task (it still runs its cleanup).
 *  Returns 0 or BRAID_EINVAL. Thread-safe. */
BRAID_API int braid_future_cancel(braid_future *f);
/** braid_future_done — 1 if the task has ended. Thread-safe. */
BRAID_API int braid_future_done(braid_future *f);
/** braid_future_result — the task's result once ended; BRAID_ESTATE before. */
BRAID_API int braid_future_result(braid_future *f);
/** braid_future_free — release the future (the task is not affected).
 *  Returns 0 or BRAID_EINVAL. */
BRAID_API int braid_future_free(braid_future *f);

/**
 * braid_portal_stop — stop the portal: with cancel_remaining, cancel the
 * tasks still running (and any started while it stops); then wait for them,
 * end the loop, join its thread and free the portal. Calls made after stop
 * began return BRAID_ECLOSED, but the portal is freed when stop returns: the
 * caller must make sure no other thread is still calling into it by then.
 * Returns 0, BRAID_EINVAL, BRAID_ESTATE (called on the portal's thread).
 */
BRAID_API int braid_portal_stop(braid_portal *portal, int cancel_remaining);

#ifdef __cplusplus
}
#endif
#endif /* BRAID_H */
