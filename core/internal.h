/*
 * internal.h — the data structures shared by the files of core/.
 *
 * Ownership in one paragraph: a loop (sched.c) owns its tasks, its run queue,
 * its deadline heap (heap.c) and its stack cache (stack.c). Tasks own their
 * stack and their failure record. Scopes (scope.c) are reference counted
 * because other threads may cancel them; a scope is linked into a tree by
 * `parent` pointers, and every scope keeps the list of its child scopes and
 * of the tasks whose innermost scope it is, so that cancelling a scope can
 * find exactly the tasks to wake. Groups (group.c) own their scope and the
 * failure records of their failed children.
 *
 * Everything here is touched only by the thread that runs the loop, except
 * the fields marked "atomic", which other threads may read or write.
 */
#ifndef BRAID_INTERNAL_H
#define BRAID_INTERNAL_H

#include "braid.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <uv.h>

#include "ctx.h"

#define BRAID__HIDDEN __attribute__((visibility("hidden")))
#define BRAID__LIKELY(x) __builtin_expect(!!(x), 1)
#define BRAID__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define BRAID__TLS __thread __attribute__((tls_model("initial-exec")))

#define BRAID__CONTAINER(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* ---- allocation (alloc.c) ---- */
BRAID__HIDDEN void *braid__alloc(size_t size);
BRAID__HIDDEN void *braid__calloc(size_t size);
BRAID__HIDDEN void *braid__realloc(void *p, size_t size);
BRAID__HIDDEN void braid__free(void *p);
BRAID__HIDDEN char *braid__strdup(const char *s);
extern BRAID__HIDDEN atomic_int braid__loops_running;
BRAID__HIDDEN uint64_t braid__workers_alive(void); /* bridge.c */

/* ---- intrusive doubly linked list ---- */
typedef struct braid__link {
  struct braid__link *prev, *next;
} braid__link;

static inline void braid__list_init(braid__link *head) { head->prev = head->next = head; }
static inline bool braid__list_empty(const braid__link *head) { return head->next == head; }
static inline void braid__list_push(braid__link *head, braid__link *n) {
  n->prev = head->prev;
  n->next = head;
  head->prev->next = n;
  head->prev = n;
}
static inline void braid__list_remove(braid__link *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = n;
}

/* ---- deadline heap (heap.c) ---- */
enum { BRAID__TIMER_SCOPE = 1, BRAID__TIMER_SLEEP = 2 };
#define BRAID__NOT_IN_HEAP UINT32_MAX

typedef struct braid__timer {
  braid_time_t when;
  uint64_t seq; /* insertion order: equal deadlines fire FIFO */
  uint32_t idx; /* position in the heap, or BRAID__NOT_IN_HEAP */
  uint8_t kind;
} braid__timer;

typedef struct braid__heap {
  braid__timer **items;
  uint32_t len, cap;
  uint64_t seq;
} braid__heap;

BRAID__HIDDEN int braid__heap_insert(braid__heap *h, braid__timer *t);
BRAID__HIDDEN void braid__heap_remove(braid__heap *h, braid__timer *t);
BRAID__HIDDEN void braid__heap_update(braid__heap *h, braid__timer *t);
static inline braid__timer *braid__heap_top(const braid__heap *h) { return h->len ? h->items[0] : NULL; }
BRAID__HIDDEN void braid__heap_free(braid__heap *h);

/* ---- failures ---- */
typedef struct braid__failure {
  int code;
  void *payload;
  void (*dtor)(void *);
  uint64_t task_id;
  struct braid__failure *next;
} braid__failure;

BRAID__HIDDEN void braid__failure_drop_payload(braid__failure *f);

/* ---- scopes (scope.c) ---- */
enum { BRAID__SCOPE_NEW = 0, BRAID__SCOPE_ENTERED, BRAID__SCOPE_EXITED };
/* bits of braid_scope.cancel_bits */
#define BRAID__CANCEL_CALLED 1
#define BRAID__CANCEL_ABANDONED 2

typedef struct braid__thread braid__thread;

struct braid_scope {
  atomic_int refs;            /* atomic */
  atomic_int cancel_bits;     /* atomic: CANCEL_CALLED | CANCEL_ABANDONED */
  atomic_int remote_busy;     /* atomic: other threads inside braid_scope_cancel */
  _Atomic(braid_loop *) loop; /* atomic: the loop it is entered on, NULL otherwise */
  uint8_t state;
  uint8_t shield;
  uint8_t fail;
  uint8_t caught;
  braid_time_t deadline;
  braid_task *task;         /* owner task, NULL for a thread scope */
  braid__thread *thread;    /* owner thread for a thread scope */
  braid_scope *parent;      /* enclosing scope (NULL at the top or when detached) */
  braid_scope *first_child; /* child scopes (entered inside this one) */
  braid_scope *prev_sibling, *next_sibling;
  braid__link tasks; /* tasks whose innermost scope this is */
  braid__timer timer;
  braid_group *group;                  /* the group whose scope this is, if any */
  _Atomic(braid__thread *) pub_thread; /* thread scope: its thread, while entered */
  braid_scope *remote_next;            /* in the loop's queue of cross-thread cancels */
  atomic_int remote_queued;            /* atomic */
};

static inline bool braid__scope_eff_cancelled(const braid_scope *s) {
  for (; s; s = s->parent) {
    if (atomic_load_explicit(&s->cancel_bits, memory_order_relaxed)) return true;
    if (s->shield) return false;
  }
  return false;
}

BRAID__HIDDEN void braid__scope_cancel_local(braid_loop *loop, braid_scope *s);
BRAID__HIDDEN void braid__scope_deliver(braid_scope *s);
BRAID__HIDDEN int braid__scope_alloc(braid_loop *loop, braid_time_t deadline, unsigned flags, braid_scope **out);
BRAID__HIDDEN int braid__scope_pop(braid_scope *s, int rc);
BRAID__HIDDEN void braid__scope_move_task(braid_task *t, braid_scope *to);
BRAID__HIDDEN void braid__scope_link_child(braid_scope *parent, braid_scope *child);
BRAID__HIDDEN void braid__scope_unlink_child(braid_scope *child);
BRAID__HIDDEN void braid__scope_abandon_above(braid_task *t, braid_scope *stop);
BRAID__HIDDEN void braid__scope_unpublish(braid_scope *s);
BRAID__HIDDEN void braid__loop_scope_cache_free(braid_loop *loop);

/* ---- tasks ---- */
enum {
  BRAID__T_READY = 0, /* in the run queue or about to run */
  BRAID__T_RUNNING,
  BRAID__T_BLOCKED,
  BRAID__T_DONE,
};

/* What the scheduler computes as `resume` when a stepped task is resumed,
 * and what a stackful task does after it is switched back in. */
enum {
  BRAID__RESUME_VALUE = 0, /* the waker stored the outcome in task->resume */
  BRAID__RESUME_CHECK,     /* a checkpoint: ECANCELED if cancelled, else 0 */
  BRAID__RESUME_CLOSE,     /* group close: the group's final result */
  BRAID__RESUME_TOKEN,     /* to_thread: token granted (or not); start the job */
  BRAID__RESUME_JOB,       /* to_thread: job done; ECANCELED if cancelled meanwhile */
};
/* braid__after_wake: the task was blocked again (stepped: do not step) */
#define BRAID__REBLOCKED (-1000)

enum { BRAID__START_NONE = 0, BRAID__START_PENDING, BRAID__START_DONE };

struct braid_task {
  braid__fiber fiber; /* saved context; first for locality */
  braid_loop *loop;
  braid_task *runq_next;
  braid_scope *scope;     /* innermost scope (may belong to an ancestor task) */
  braid__link scope_link; /* in scope->tasks */
  braid_group *group;     /* the group it is a child of; NULL for the root */
  union {
    braid_fn fn;
    braid_step_fn step;
  } body;
  void *arg;
  void *user;
  uint8_t stepped;
  uint8_t state;
  uint8_t resume_mode;
  uint8_t start_state;
  uint8_t has_failure;
  uint8_t kept;      /* 1: the group keeps this struct as a failure record */
  uint8_t finishing; /* a stepped body returned while its wait was registered: ends with BRAID_ESTATE */
  int resume;        /* outcome of the last wait */
  /* Abort hook of the current cancellable wait: removes the task from what it
   * waits on and returns 1, or returns 0 when the wait was completed first
   * (its wake-up is on its way). NULL when not blocked or not cancellable. */
  int (*abort)(braid_task *t);
  braid__timer timer;  /* sleeping */
  void *wait_obj;      /* group close: the group; group start: the void ** out */
  braid_task *starter; /* the task blocked in braid_group_start for us */
  size_t stack_size;
  braid__failure failure;
  uint64_t id;
  char *name;
  struct braid__waiter *waiter; /* stepped tasks: the waiter of primitive waits */
  struct braid__job *job;       /* braid_to_thread: the job, reused */
  struct braid__request *ext;   /* a task started from another thread */
};

/* ---- per-thread state ---- */
struct braid__thread {
  braid_loop *loop;             /* the loop this thread runs, if any */
  braid_scope *scope;           /* innermost scope of a plain thread */
  struct braid__parker *parker; /* what the thread sleeps on (wait.c); NULL until its first wait */
  uint64_t id;                  /* braid_thread_id(), assigned on first use */
  atomic_int *inherited;        /* a worker: the cancel flag of the task it runs for */
};

extern BRAID__HIDDEN BRAID__TLS braid__thread braid__tls;
extern BRAID__HIDDEN BRAID__TLS braid_task *braid__tls_current;

/* ---- loops (sched.c) ---- */
struct braid_loop {
  braid__fiber sched; /* the scheduler's own context (the braid_run stack) */
  braid_task *runq_head, *runq_tail;
  int budget;                 /* tasks the current batch may still run without the scheduler */
  int coop_budget, coop_left; /* schedule point every coop_budget non-waiting operations */
  int virtual_clock;
  braid_time_t vnow;
  braid__heap heap;
  braid_task *root;
  braid_task *dead; /* a stackful task whose stack the scheduler must release */
  int root_rc;
  uint64_t tasks_alive;
  uint64_t next_id, id_limit;
  size_t default_stack;
  /* stack cache (stack.c) */
  void **stack_cache;
  uint32_t stack_cached, stack_cache_cap;
  uint64_t stacks_mapped;
  /* object caches */
  braid_task *task_free;
  uint32_t task_free_n;
  braid_scope *scope_free;
  uint32_t scope_free_n;
  braid_group *group_free;
  uint32_t group_free_n;
  /* stats */
  uint64_t switches, steps, spawned, batches;
  /* remote messages from other threads */
  atomic_int remote_pending;
  pthread_mutex_t remote_mu;
  braid_scope *remote_head;                          /* scopes cancelled from other threads (each holds a reference) */
  braid_task *remote_tasks_head, *remote_tasks_tail; /* tasks woken from other threads */
  struct braid_wait *deferred_cbs;                   /* callbacks completed on a task stack, run by the scheduler */
  struct braid_wait *deferred_tail;
  braid__link requests;    /* from other threads: tasks to start, functions to run */
  braid__link ext_live;    /* requests whose task is running */
  int closed;              /* under remote_mu: no more requests */
  int cancel_new_requests; /* a portal stopping with cancel: cancel late arrivals */
  int jobs_running;        /* to_thread jobs of this loop's tasks on workers */
  atomic_int refs;         /* braid_loop_ref */
  braid_limiter *default_limiter;
  /* libuv */
  uv_loop_t uv;
  uv_timer_t uv_timer;
  uv_async_t uv_async;
  uv_poll_t uv_fd;
  int fd_active;
  braid_run_opts opts;
};

BRAID__HIDDEN braid_time_t braid__real_now(void);
/* t + d, saturating at BRAID_NEVER and at INT64_MIN + 1 (virtual clocks may
 * start at negative times, so neither side is known to be positive). */
static inline braid_time_t braid__time_add(braid_time_t t, braid_time_t d) {
  if (d > 0 && t > BRAID_NEVER - d) return BRAID_NEVER;
  if (d < 0 && t < INT64_MIN + 1 - d) return INT64_MIN + 1;
  return t + d;
}
BRAID__HIDDEN int braid__spin_ok(void); /* more than one CPU */
static inline void braid__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}
BRAID__HIDDEN braid_time_t braid__loop_now(const braid_loop *loop);
BRAID__HIDDEN void braid__make_ready(braid_loop *loop, braid_task *t);
BRAID__HIDDEN void braid__wake(braid_task *t, int resume);
BRAID__HIDDEN int braid__suspend(braid_task *t);
/* A schedule point that cannot fail, resuming with rc (always yields). */
BRAID__HIDDEN int braid__yield_value(braid_task *t, int rc);
BRAID__HIDDEN int braid__after_wake(braid_task *t);
/* 0 if t is the task running on this thread, else the error to return. */
static inline int braid__check_running(const braid_task *t);
BRAID__HIDDEN void braid__task_free(braid_task *t);
BRAID__HIDDEN int braid__new_task(braid_loop *loop, int stepped, void *body, void *arg, const braid_spawn_opts *opts,
                                  braid_task **out);
BRAID__HIDDEN void braid__post_cancel(braid_loop *loop, braid_scope *s);
BRAID__HIDDEN void braid__post_wake(braid_task *t, int result);

/* bridge.c hooks called by the scheduler */
BRAID__HIDDEN int braid__job_after_token(braid_task *t);
BRAID__HIDDEN void braid__job_free(struct braid__job *j);
BRAID__HIDDEN void braid__requests_taken(braid__link *reqs); /* remote_mu held */
BRAID__HIDDEN void braid__start_requests(braid_loop *loop, braid__link *reqs);
BRAID__HIDDEN void braid__ext_done(braid_task *t, int rc);
BRAID__HIDDEN void braid__limiter_unref(braid_limiter *l);
BRAID__HIDDEN braid_limiter *braid__limiter_ref(braid_limiter *l);

/* group.c hooks called by the scheduler */
BRAID__HIDDEN void braid__group_child_done(braid_task *t, int rc);
BRAID__HIDDEN int braid__group_finish_close(braid_group *g);
BRAID__HIDDEN void braid__group_abandon(braid_group *g);
BRAID__HIDDEN void braid__loop_group_cache_free(braid_loop *loop);

/* stack.c */
BRAID__HIDDEN int braid__stack_get(braid_loop *loop, braid_task *t);
BRAID__HIDDEN void braid__stack_put(braid_loop *loop, braid_task *t);
BRAID__HIDDEN void braid__stack_cache_free(braid_loop *loop);
BRAID__HIDDEN void braid__stack_cache_trim(braid_loop *loop);
BRAID__HIDDEN size_t braid__page_size(void);

static inline int braid__check_running(const braid_task *t) {
  if (BRAID__UNLIKELY(!t)) return BRAID_EINVAL;
  if (BRAID__UNLIKELY(t->loop != braid__tls.loop)) return BRAID_ETHREAD;
  if (BRAID__UNLIKELY(t != braid__tls_current || t->state != BRAID__T_RUNNING)) return BRAID_ESTATE;
  return 0;
}

#endif
