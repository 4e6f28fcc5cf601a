/*
 * sched.c — the loop, the scheduler and the life of a task.
 *
 * One loop per thread that calls braid_run. The scheduler runs on the
 * caller's own stack; stackful tasks run on their own stacks, stepped tasks
 * are called from the scheduler. The run queue is a FIFO of ready tasks.
 *
 * Batches: the scheduler takes control every BRAID__BATCH dispatches to
 * deliver cancels from other threads, fire expired deadlines and, now and
 * then, poll libuv without blocking. Inside a batch, a stackful task that
 * yields or blocks switches straight to the next ready stackful task without
 * passing through the scheduler: one context switch per hand-off. Stepped
 * tasks, new tasks (no stack yet) and the end of a batch go through the
 * scheduler. Order is FIFO either way, so a batch is only about how often
 * the scheduler looks around, never about who runs next.
 *
 * Idle: with an empty run queue the real-clock loop blocks in libuv until
 * the next deadline or a wake-up from another thread; the virtual-clock loop
 * jumps straight to the next deadline.
 *
 * Task death: a finishing stackful task cannot release the stack it runs
 * on, so it records itself in loop->dead and switches to the scheduler,
 * which returns the stack to the cache. Task structs are recycled through a
 * small per-loop free list.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sync.h"

#define BRAID__BATCH 64
#define BRAID__COOP_BUDGET 64
#define BRAID__DEFAULT_STACK (256u * 1024u)
#define BRAID__MIN_STACK (16u * 1024u)
#define BRAID__MAX_STACK ((size_t)1 << 30)
#define BRAID__TASK_CACHE_MAX 16384u

BRAID__TLS braid__thread braid__tls;
BRAID__TLS braid_task *braid__tls_current;

static atomic_uint_fast64_t g_next_id = 1;

/* ---- clocks ---- */

braid_time_t braid__real_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (braid_time_t)ts.tv_sec * BRAID_SEC + ts.tv_nsec;
}

braid_time_t braid__loop_now(const braid_loop *loop) { return loop->virtual_clock ? loop->vnow : braid__real_now(); }

braid_time_t braid_now(const braid_task *task) { return task ? braid__loop_now(task->loop) : braid__real_now(); }

braid_time_t braid_loop_now(const braid_loop *loop) {
  if (!loop || loop != braid__tls.loop) return braid__real_now();
  return braid__loop_now(loop);
}

int braid_loop_is_virtual(const braid_loop *loop) { return loop ? loop->virtual_clock : 0; }

/* ---- run queue ---- */

static inline void runq_push(braid_loop *loop, braid_task *t) {
  t->runq_next = NULL;
  if (loop->runq_tail)
    loop->runq_tail->runq_next = t;
  else
    loop->runq_head = t;
  loop->runq_tail = t;
}

static inline braid_task *runq_pop(braid_loop *loop) {
  braid_task *t = loop->runq_head;
  if (t) {
    loop->runq_head = t->runq_next;
    if (!loop->runq_head) loop->runq_tail = NULL;
  }
  return t;
}

void braid__make_ready(braid_loop *loop, braid_task *t) {
  t->state = BRAID__T_READY;
  runq_push(loop, t);
}

void braid__wake(braid_task *t, int resume) {
  t->abort = NULL;
  t->resume = resume;
  braid__make_ready(t->loop, t);
}

/* ---- task structs ---- */

static braid_task *task_alloc(braid_loop *loop) {
  braid_task *t = loop->task_free;
  if (t) {
    loop->task_free = t->runq_next;
    loop->task_free_n--;
  } else {
    t = braid__alloc(sizeof *t);
    if (!t) return NULL;
  }
  return t; /* braid__new_task initialises every field */
}

void braid__task_free(braid_task *t) {
  braid_loop *loop = braid__tls.loop;
  braid__free(t->name); /* a spawn option's copy, or the default made on demand */
  braid__free(t->waiter);
  if (t->job) braid__job_free(t->job);
  if (loop && loop == t->loop && loop->task_free_n < BRAID__TASK_CACHE_MAX) {
    t->runq_next = loop->task_free;
    loop->task_free = t;
    loop->task_free_n++;
    return;
  }
  braid__free(t);
}

static uint64_t next_id(braid_loop *loop) {
  if (loop->next_id == loop->id_limit) {
    loop->next_id = atomic_fetch_add(&g_next_id, 1024);
    loop->id_limit = loop->next_id + 1024;
  }
  return loop->next_id++;
}

int braid__new_task(braid_loop *loop, int stepped, void *body, void *arg, const braid_spawn_opts *opts,
                    braid_task **out) {
  if (opts && opts->size < sizeof(braid_spawn_opts)) return BRAID_EINVAL;
  size_t stack = loop->default_stack;
  if (opts && opts->stack_size > BRAID__MAX_STACK) return BRAID_EINVAL;
  if (opts && opts->stack_size) {
    size_t page = braid__page_size();
    stack = opts->stack_size < BRAID__MIN_STACK ? BRAID__MIN_STACK : opts->stack_size;
    stack = (stack + page - 1) & ~(page - 1);
  }
  braid_task *t = task_alloc(loop);
  if (!t) return BRAID_ENOMEM;
  /* Field by field rather than memset (see braid__scope_alloc). */
  t->fiber.stack_lo = NULL;
  t->fiber.stack_len = 0;
  t->runq_next = NULL;
  t->scope = NULL;
  t->group = NULL;
  t->user = NULL;
  t->state = BRAID__T_READY;
  t->resume_mode = BRAID__RESUME_VALUE;
  t->start_state = BRAID__START_NONE;
  t->has_failure = 0;
  t->kept = 0;
  t->finishing = 0;
  t->resume = 0;
  t->abort = NULL;
  t->wait_obj = NULL;
  t->starter = NULL;
  t->failure.code = 0;
  t->failure.payload = NULL;
  t->failure.dtor = NULL;
  t->failure.next = NULL;
  t->name = NULL;
  t->waiter = NULL;
  t->job = NULL;
  t->ext = NULL;
  if (opts && opts->name) {
    t->name = braid__strdup(opts->name);
    if (!t->name) {
      braid__task_free(t);
      return BRAID_ENOMEM;
    }
  }
  t->loop = loop;
  t->stepped = (uint8_t)stepped;
  if (stepped)
    t->body.step = (braid_step_fn)body;
  else
    t->body.fn = (braid_fn)body;
  t->arg = arg;
  t->stack_size = stack;
  t->timer.idx = BRAID__NOT_IN_HEAP;
  t->timer.kind = BRAID__TIMER_SLEEP;
  braid__list_init(&t->scope_link);
  t->id = next_id(loop);
  loop->tasks_alive++;
  loop->spawned++;
  *out = t;
  return 0;
}

/* ---- task end ---- */

/* Bookkeeping common to both kinds of task once the body has returned rc.
 * Returns true if the struct must be freed by the caller (not kept as a
 * failure record by a group). */
static bool task_finish(braid_task *t, int rc) {
  braid_loop *loop = t->loop;
  if (t->scope && t->scope->task == t) {
    /* The body returned inside scopes of its own: leave them as a misnested
     * exit would, and report the misuse. */
    braid__scope_abandon_above(t, NULL);
    if (!t->has_failure) rc = BRAID_ESTATE;
  }
  if (t->timer.idx != BRAID__NOT_IN_HEAP) braid__heap_remove(&loop->heap, &t->timer);
  braid__list_remove(&t->scope_link);
  t->scope = NULL;
  t->state = BRAID__T_DONE;
  loop->tasks_alive--;
  if (!t->group) { /* the root, or a task started from another thread */
    if (t->has_failure) {
      rc = t->failure.code;
      braid__failure_drop_payload(&t->failure);
    }
    if (t->ext) {
      braid__ext_done(t, rc);
    } else {
      loop->root_rc = rc;
      loop->root = NULL;
    }
    return true;
  }
  braid__group_child_done(t, rc);
  return !t->kept;
}

static void reap(braid_loop *loop) {
  braid_task *t = loop->dead;
  loop->dead = NULL;
  braid__stack_put(loop, t);
  if (t->kept == 2)
    t->kept = 1;
  else
    braid__task_free(t);
}

static void switch_next(braid_loop *loop, braid_task *self, int dying);

void braid__task_main(void) {
  braid_task *t = braid__tls_current;
  braid__fiber_started(&t->fiber);
  braid_loop *loop = t->loop;
  if (loop->dead) reap(loop);
  int rc = t->body.fn(t, t->arg);
  if (!task_finish(t, rc)) t->kept = 2; /* the reaper must not free it */
  loop->dead = t;
  switch_next(loop, t, 1);
  abort(); /* unreachable: a dead task is never resumed */
}

/* ---- switching ---- */

/* Leave the running stackful task `self` (its wait is registered, or it is
 * dying) and run the next ready stackful task of the batch directly — giving
 * it a stack if it has none yet — or else the scheduler. Whoever runs next
 * releases the stack of a dying task (loop->dead). */
static void switch_next(braid_loop *loop, braid_task *self, int dying) {
  braid_task *next = loop->runq_head;
  if (loop->budget > 0 && next && !next->stepped && (next->fiber.stack_lo || braid__stack_get(loop, next) == 0)) {
    runq_pop(loop);
    loop->budget--;
    next->state = BRAID__T_RUNNING;
    if (next == self) return;
    loop->switches++;
    braid__tls_current = next;
    braid__fiber_switch(&self->fiber, &next->fiber, dying);
  } else {
    loop->switches++;
    braid__tls_current = NULL;
    braid__fiber_switch(&self->fiber, &loop->sched, dying);
  }
  if (loop->dead) reap(loop);
}

int braid__after_wake(braid_task *t) {
  switch (t->resume_mode) {
  case BRAID__RESUME_CHECK:
    t->resume_mode = BRAID__RESUME_VALUE;
    return braid__scope_eff_cancelled(t->scope) ? BRAID_ECANCELED : 0;
  case BRAID__RESUME_CLOSE:
    t->resume_mode = BRAID__RESUME_VALUE;
    return braid__group_finish_close((braid_group *)t->wait_obj);
  case BRAID__RESUME_TOKEN:
    t->resume_mode = BRAID__RESUME_VALUE;
    return braid__job_after_token(t);
  case BRAID__RESUME_JOB:
    t->resume_mode = BRAID__RESUME_VALUE;
    t->loop->jobs_running--;
    return braid__scope_eff_cancelled(t->scope) ? BRAID_ECANCELED : t->resume;
  default:
    return t->resume;
  }
}

int braid__suspend(braid_task *t) {
  if (t->stepped) return BRAID_EPENDING;
  switch_next(t->loop, t, 0);
  return braid__after_wake(t);
}

/* ---- dispatch ---- */

static void run_stackful(braid_loop *loop, braid_task *t) {
  if (BRAID__UNLIKELY(!t->fiber.stack_lo)) {
    if (braid__stack_get(loop, t) != 0) {
      /* No stack: the task fails without running. */
      t->state = BRAID__T_RUNNING;
      if (task_finish(t, BRAID_ENOMEM)) braid__task_free(t);
      return;
    }
  }
  t->state = BRAID__T_RUNNING;
  loop->switches++;
  braid__tls_current = t;
  braid__fiber_switch(&loop->sched, &t->fiber, 0);
  braid__tls_current = NULL;
  if (loop->dead) reap(loop);
  if (loop->deferred_cbs) braid__run_deferred(loop);
}

static void run_stepped(braid_loop *loop, braid_task *t) {
  int resume = braid__after_wake(t);
  if (resume == BRAID__REBLOCKED) return; /* the scheduler moved its wait on */
  if (BRAID__UNLIKELY(t->finishing)) {    /* its wait is over: end as it asked */
    t->state = BRAID__T_RUNNING;
    if (task_finish(t, BRAID_ESTATE)) braid__task_free(t);
    return;
  }
  t->state = BRAID__T_RUNNING;
  loop->steps++;
  braid__tls_current = t;
  int rc = t->body.step(t, t->arg, resume);
  braid__tls_current = NULL;
  if (rc == BRAID_EPENDING) {
    if (t->state != BRAID__T_RUNNING) return;
    rc = BRAID_ESTATE; /* pending without a registered wait: it would hang */
  } else if (BRAID__UNLIKELY(t->state != BRAID__T_RUNNING)) {
    /* Misuse: a final result with a wait still registered. The task cannot
     * end while queued or waited on; it ends (with BRAID_ESTATE) when that
     * wait is over — at once if the wait can be cancelled. */
    t->finishing = 1;
    if (t->state == BRAID__T_BLOCKED && t->abort) {
      int (*abort)(braid_task *) = t->abort;
      t->abort = NULL;
      if (abort(t)) braid__wake(t, BRAID_ECANCELED);
    }
    return;
  }
  if (task_finish(t, rc)) braid__task_free(t);
}

/* ---- timers, remote wake-ups, polling ---- */

static void fire_expired(braid_loop *loop, braid_time_t now) {
  braid__timer *top;
  while ((top = braid__heap_top(&loop->heap)) && top->when <= now) {
    braid__heap_remove(&loop->heap, top);
    if (top->kind == BRAID__TIMER_SLEEP) {
      braid__wake(BRAID__CONTAINER(top, braid_task, timer), 0);
    } else {
      braid__scope_cancel_local(loop, BRAID__CONTAINER(top, braid_scope, timer));
    }
  }
}

static void drain_remote(braid_loop *loop) {
  pthread_mutex_lock(&loop->remote_mu);
  braid_scope *s = loop->remote_head;
  loop->remote_head = NULL;
  braid_task *t = loop->remote_tasks_head;
  loop->remote_tasks_head = loop->remote_tasks_tail = NULL;
  braid__link reqs;
  braid__list_init(&reqs);
  if (!braid__list_empty(&loop->requests)) { /* take them all, marked started */
    reqs.next = loop->requests.next;
    reqs.prev = loop->requests.prev;
    reqs.next->prev = reqs.prev->next = &reqs;
    braid__list_init(&loop->requests);
    braid__requests_taken(&reqs);
  }
  atomic_store(&loop->remote_pending, 0);
  pthread_mutex_unlock(&loop->remote_mu);
  braid__start_requests(loop, &reqs);
  /* Tasks woken by other threads, in the order they were woken. */
  while (t) {
    braid_task *next = t->runq_next;
    t->abort = NULL;
    braid__make_ready(loop, t);
    t = next;
  }
  while (s) {
    braid_scope *next = s->remote_next;
    atomic_store(&s->remote_queued, 0);
    if (s->state == BRAID__SCOPE_ENTERED && atomic_load(&s->loop) == loop) {
      if (s->timer.idx != BRAID__NOT_IN_HEAP) braid__heap_remove(&loop->heap, &s->timer);
      braid__scope_deliver(s);
    }
    braid_scope_unref(s);
    s = next;
  }
}

/* The deadline timer stops uv_run: libuv runs due timers before it polls,
 * so a timer that is already due when uv_run(UV_RUN_ONCE) starts would
 * otherwise leave it polling with no timeout at all. */
static void on_deadline_timer(uv_timer_t *h) { uv_stop(h->loop); }
static void on_async(uv_async_t *h) { (void)h; }
static void on_fd(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  braid_loop *loop = h->data;
  if (loop->opts.on_fd) loop->opts.on_fd(loop->opts.poll_ud);
}

static int spin_for_remote(braid_loop *loop);

/* Block until an event comes or the real time `until` (BRAID_NEVER: no
 * limit). The host's before/after hooks bracket the whole wait, spinning
 * included: a host that releases an interpreter lock there lets the workers
 * it waits for take it while the loop spins. */
static void poll_blocking(braid_loop *loop, braid_time_t until) {
  if (loop->opts.before_poll) loop->opts.before_poll(loop->opts.poll_ud);
  if (!spin_for_remote(loop)) {
    braid__stack_cache_trim(loop);
    if (until != BRAID_NEVER) {
      braid_time_t d = until - braid__real_now();
      uint64_t ms = d <= 0 ? 0 : (uint64_t)((d + BRAID_MSEC - 1) / BRAID_MSEC);
      uv_update_time(&loop->uv);
      uv_timer_start(&loop->uv_timer, on_deadline_timer, ms, 0);
    }
    uv_run(&loop->uv, UV_RUN_ONCE);
    uv_timer_stop(&loop->uv_timer);
  }
  if (loop->opts.after_poll) loop->opts.after_poll(loop->opts.poll_ud);
}

/* No task left: close the loop to requests, unless one just arrived. */
static bool sched_done(braid_loop *loop) {
  pthread_mutex_lock(&loop->remote_mu);
  bool done = braid__list_empty(&loop->requests);
  if (done) loop->closed = 1;
  pthread_mutex_unlock(&loop->remote_mu);
  return done;
}

/* Idle while workers run jobs for this loop: their replies usually come
 * within microseconds, and a sleeping loop thread takes several to wake, so
 * watch for them a little before blocking. Returns 1 if something came. */
static int spin_for_remote(braid_loop *loop) {
  if (!loop->jobs_running || !braid__spin_ok()) return 0;
  braid_time_t until = braid__real_now() + 25 * BRAID_USEC;
  braid__timer *top = braid__heap_top(&loop->heap);
  if (top && !loop->virtual_clock && top->when < until) until = top->when;
  do {
    for (int i = 0; i < 64; i++) {
      if (atomic_load_explicit(&loop->remote_pending, memory_order_acquire)) return 1;
      braid__cpu_relax();
    }
  } while (braid__real_now() < until);
  return 0;
}

/* Virtual clock, everything blocked, but workers run jobs for this loop:
 * give them some real time to reply before virtual time jumps, so that a
 * job that finishes on its own does not race the next deadline (which
 * would make runs differ). A job still busy after the grace period counts
 * as blocked, as in Trio's autojumping clock. Returns 1 if a reply came. */
#define BRAID__JOB_GRACE (20 * BRAID_MSEC)
static int wait_for_jobs(braid_loop *loop) {
  poll_blocking(loop, braid__time_add(braid__real_now(), BRAID__JOB_GRACE));
  return atomic_load(&loop->remote_pending) != 0;
}

static void sched_run(braid_loop *loop) {
  while (loop->tasks_alive > 0 || !sched_done(loop)) {
    if (atomic_load_explicit(&loop->remote_pending, memory_order_acquire)) drain_remote(loop);
    if (loop->runq_head) {
      loop->batches++;
      loop->budget = BRAID__BATCH;
      while (loop->budget > 0 && loop->runq_head) {
        loop->budget--;
        braid_task *t = runq_pop(loop);
        if (t->stepped)
          run_stepped(loop, t);
        else
          run_stackful(loop, t);
      }
      if (!loop->virtual_clock && loop->heap.len) fire_expired(loop, braid__real_now());
      if ((loop->batches & 63) == 0) uv_run(&loop->uv, UV_RUN_NOWAIT);
      continue;
    }
    if (loop->virtual_clock) {
      braid__timer *top = braid__heap_top(&loop->heap);
      if (top) {
        uv_run(&loop->uv, UV_RUN_NOWAIT);
        if (loop->runq_head || atomic_load(&loop->remote_pending)) continue;
        if (loop->jobs_running && wait_for_jobs(loop)) continue;
        braid__stack_cache_trim(loop);
        if (top->when > loop->vnow) loop->vnow = top->when;
        fire_expired(loop, loop->vnow);
        continue;
      }
      poll_blocking(loop, BRAID_NEVER);
    } else {
      braid__timer *top = braid__heap_top(&loop->heap);
      poll_blocking(loop, top ? top->when : BRAID_NEVER);
      fire_expired(loop, braid__real_now());
    }
  }
}

/* ---- braid_run ---- */

static void close_cb(uv_handle_t *h) { (void)h; }

static void loop_destroy(braid_loop *loop) {
  /* Taking the remote mutex waits for any other thread still inside
   * braid__post_wake / braid__post_cancel for this loop; `closed` makes
   * later requests fail with BRAID_ECLOSED. */
  pthread_mutex_lock(&loop->remote_mu);
  loop->closed = 1;
  pthread_mutex_unlock(&loop->remote_mu);
  if (atomic_load(&loop->remote_pending)) drain_remote(loop);
  if (loop->default_limiter) braid__limiter_unref(loop->default_limiter);
  loop->default_limiter = NULL;
  braid__stack_cache_free(loop);
  while (loop->task_free) {
    braid_task *t = loop->task_free;
    loop->task_free = t->runq_next;
    braid__free(t);
  }
  braid__loop_scope_cache_free(loop);
  braid__loop_group_cache_free(loop);
  braid__heap_free(&loop->heap);
  uv_close((uv_handle_t *)&loop->uv_timer, close_cb);
  uv_close((uv_handle_t *)&loop->uv_async, close_cb);
  if (loop->fd_active) uv_close((uv_handle_t *)&loop->uv_fd, close_cb);
  uv_run(&loop->uv, UV_RUN_DEFAULT);
  uv_loop_close(&loop->uv);
  /* loop->sched is the thread's own context: nothing to destroy */
  braid_loop_unref(loop); /* braid_run's reference */
}

braid_loop *braid_loop_ref(braid_loop *loop) {
  if (loop) atomic_fetch_add(&loop->refs, 1);
  return loop;
}

int braid_loop_unref(braid_loop *loop) {
  if (!loop) return BRAID_EINVAL;
  if (atomic_fetch_sub_explicit(&loop->refs, 1, memory_order_acq_rel) == 1) {
    pthread_mutex_destroy(&loop->remote_mu);
    braid__free(loop);
  }
  return 0;
}

static int run_common(int stepped, void *body, void *arg, const braid_run_opts *opts) {
  if (!body) return BRAID_EINVAL;
  braid_run_opts o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  if (opts) {
    if (opts->size < sizeof o) return BRAID_EINVAL;
    memcpy(&o, opts, sizeof o);
    if (o.clock != BRAID_CLOCK_REAL && o.clock != BRAID_CLOCK_VIRTUAL) return BRAID_EINVAL;
    if (o.on_fd && o.watch_fd < 0) return BRAID_EINVAL;
    if (o.stack_size > BRAID__MAX_STACK) return BRAID_EINVAL;
    if (o.coop_budget > 1000000) return BRAID_EINVAL;
  }
  if (braid__tls.loop) return BRAID_ESTATE;
  braid_loop *loop = braid__calloc(sizeof *loop);
  if (!loop) return BRAID_ENOMEM;
  atomic_init(&loop->refs, 1);
  braid__list_init(&loop->requests);
  braid__list_init(&loop->ext_live);
  loop->opts = o;
  loop->virtual_clock = o.clock == BRAID_CLOCK_VIRTUAL;
  loop->coop_budget = loop->coop_left = o.coop_budget ? (int)o.coop_budget : BRAID__COOP_BUDGET;
  loop->vnow = o.start_time;
  size_t page = braid__page_size();
  size_t stack = o.stack_size ? o.stack_size : BRAID__DEFAULT_STACK;
  if (stack < BRAID__MIN_STACK) stack = BRAID__MIN_STACK;
  loop->default_stack = (stack + page - 1) & ~(page - 1);
  pthread_mutex_init(&loop->remote_mu, NULL);
  if (uv_loop_init(&loop->uv) != 0) {
    braid_loop_unref(loop);
    return BRAID_ESYS;
  }
  uv_timer_init(&loop->uv, &loop->uv_timer);
  uv_async_init(&loop->uv, &loop->uv_async, on_async);
  if (o.on_fd) {
    if (uv_poll_init(&loop->uv, &loop->uv_fd, o.watch_fd) != 0) {
      loop_destroy(loop);
      return BRAID_EINVAL;
    }
    loop->fd_active = 1;
    loop->uv_fd.data = loop;
    if (uv_poll_start(&loop->uv_fd, UV_READABLE, on_fd) != 0) {
      loop_destroy(loop);
      return BRAID_EINVAL;
    }
  }
  /* The stack cache's first slots are allocated here so that the usual
   * case never allocates when a task ends (growth past them may fail; then
   * the stack is simply unmapped). */
  loop->stack_cache = braid__alloc(64 * sizeof *loop->stack_cache);
  if (!loop->stack_cache) {
    loop_destroy(loop);
    return BRAID_ENOMEM;
  }
  loop->stack_cache_cap = 64;
  braid__fiber_init_thread(&loop->sched);
  braid_spawn_opts so = {sizeof so, o.root_name ? o.root_name : "root", 0};
  braid_task *root;
  int rc = braid__new_task(loop, stepped, body, arg, &so, &root);
  if (rc) {
    loop_destroy(loop);
    return rc;
  }
  loop->root = root;
  braid__tls.loop = loop;
  atomic_fetch_add(&braid__loops_running, 1);
  braid__make_ready(loop, root);
  sched_run(loop);
  rc = loop->root_rc;
  loop_destroy(loop);
  braid__tls.loop = NULL;
  atomic_fetch_sub(&braid__loops_running, 1);
  return rc;
}

int braid_run(braid_fn fn, void *arg, const braid_run_opts *opts) { return run_common(0, (void *)fn, arg, opts); }

int braid_run_stepped(braid_step_fn step, void *ctx, const braid_run_opts *opts) {
  return run_common(1, (void *)step, ctx, opts);
}

/* ---- task queries ---- */

braid_task *braid_current_task(void) { return braid__tls_current; }
braid_loop *braid_task_loop(const braid_task *task) { return task ? task->loop : NULL; }
uint64_t braid_task_id(const braid_task *task) { return task ? task->id : 0; }
int braid_task_is_stepped(const braid_task *task) { return task ? task->stepped : 0; }
void braid_task_set_user(braid_task *task, void *user) {
  if (task) task->user = user;
}
void *braid_task_user(const braid_task *task) { return task ? task->user : NULL; }

const char *braid_task_name(const braid_task *task) {
  if (!task) return NULL;
  braid_task *t = (braid_task *)task;
  char *name = __atomic_load_n(&t->name, __ATOMIC_ACQUIRE);
  if (name) return name;
  /* Default name, made on first use; other threads may ask at the same time:
   * the first to publish wins. (A name given at spawn was copied then.) */
  char buf[32];
  snprintf(buf, sizeof buf, "task-%llu", (unsigned long long)t->id);
  char *mine = braid__strdup(buf);
  if (!mine) return "task";
  char *expected = NULL;
  if (__atomic_compare_exchange_n(&t->name, &expected, mine, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return mine;
  braid__free(mine);
  return expected;
}

int braid_loop_get_stats(const braid_loop *loop, braid_loop_stats *out) {
  if (!loop || !out || out->size < sizeof *out) return BRAID_EINVAL;
  out->tasks_alive = loop->tasks_alive;
  out->tasks_spawned = loop->spawned;
  out->switches = loop->switches;
  out->steps = loop->steps;
  out->stacks_cached = loop->stack_cached;
  out->stacks_mapped = loop->stacks_mapped;
  return 0;
}

/* ---- checkpoints and sleeping ---- */

/* Yield with the outcome already decided: a blocking call made inside a
 * cancelled scope (rc = BRAID_ECANCELED: still a schedule point, as in Trio),
 * or a cancel-shielded checkpoint. */
int braid__yield_value(braid_task *task, int rc) {
  task->resume_mode = BRAID__RESUME_VALUE;
  task->resume = rc;
  braid__make_ready(task->loop, task);
  return braid__suspend(task);
}

int braid_checkpoint(braid_task *task) {
  int rc = braid__check_running(task);
  if (rc) return rc;
  task->resume_mode = BRAID__RESUME_CHECK;
  braid__make_ready(task->loop, task);
  return braid__suspend(task);
}

int braid_checkpoint_if_cancelled(braid_task *task) {
  int rc = braid__check_running(task);
  if (rc) return rc;
  return braid__scope_eff_cancelled(task->scope) ? BRAID_ECANCELED : 0;
}

int braid_cancel_shielded_checkpoint(braid_task *task) {
  int rc = braid__check_running(task);
  if (rc) return rc;
  return braid__yield_value(task, 0);
}

static int abort_sleep(braid_task *t) {
  if (t->timer.idx != BRAID__NOT_IN_HEAP) braid__heap_remove(&t->loop->heap, &t->timer);
  return 1;
}

static int sleep_until(braid_task *task, braid_time_t when, int forever) {
  int rc = braid__check_running(task);
  if (rc) return rc;
  braid_loop *loop = task->loop;
  if (!forever && when <= braid__loop_now(loop)) return braid_checkpoint(task);
  if (braid__scope_eff_cancelled(task->scope)) return braid__yield_value(task, BRAID_ECANCELED);
  if (!forever) {
    task->timer.when = when;
    if (braid__heap_insert(&loop->heap, &task->timer) != 0) return BRAID_ENOMEM;
  }
  task->resume_mode = BRAID__RESUME_VALUE;
  task->state = BRAID__T_BLOCKED;
  task->abort = abort_sleep;
  return braid__suspend(task);
}

int braid_sleep_until(braid_task *task, braid_time_t when) {
  if (!task) return braid__thread_sleep_until(when);
  return sleep_until(task, when, 0);
}

int braid_sleep(braid_task *task, braid_time_t duration) {
  if (!task) {
    braid_time_t now = braid__real_now();
    return braid__thread_sleep_until(braid__time_add(now, duration));
  }
  if (task->loop != braid__tls.loop) return BRAID_ETHREAD;
  braid_time_t now = braid__loop_now(task->loop);
  braid_time_t when = braid__time_add(now, duration);
  return sleep_until(task, when, when == BRAID_NEVER);
}

int braid_sleep_forever(braid_task *task) {
  if (!task) return braid__thread_sleep_until(BRAID_NEVER);
  return sleep_until(task, BRAID_NEVER, 1);
}
