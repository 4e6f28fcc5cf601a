/*
 * bridge.c — the thread bridge: to_thread, from_thread, portals.
 *
 * to_thread. A job goes through: a token of the limiter (the task waits in
 * the limiter's queue like any waiter, borrowing for the job's own token so
 * that an abandoned job can hold its token while the task goes on), then a
 * worker (pooled threads; an idle one is handed the job, else a new thread
 * starts), then completion. The task waits for completion with an abort hook
 * that sets the job's cancel flag — the worker's inherited cancel status,
 * which every braid wait on that thread checks — and pokes the worker's
 * futex. With BRAID_ABANDON_ON_CANCEL the abort also detaches the job: the
 * worker then owns it and frees it when fn returns. Otherwise the job stays
 * with the task and is reused by its next call. Who owns the job is decided
 * by one compare-and-swap on job->state (RUNNING -> DONE by the worker,
 * RUNNING -> ABANDONED by the task's loop).
 *
 * Stepped tasks cannot run code between the two waits, so the scheduler
 * does it: after the token wait the task is resumed in mode
 * BRAID__RESUME_TOKEN, which starts the job and blocks the task again
 * without calling its step.
 *
 * from_thread. A request (on the calling thread's stack) is queued on the
 * loop under the loop's remote mutex, which also guards `closed`: a loop
 * that has ended refuses requests with BRAID_ECLOSED. A task request runs
 * its task under a scope of its own, which the calling thread cancels when
 * its own scopes are cancelled. The loop completes a request by setting
 * its state and poking the caller's parker, of which the request holds a
 * reference: the caller may return as soon as it sees the state.
 */
#include <errno.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>

#include "sync.h"

/* ---- worker pool ---- */

enum { JOB_QUEUED = 0, JOB_RUNNING, JOB_DONE, JOB_ABANDONED };

typedef struct braid__job {
  braid_thread_fn fn;
  void *arg;
  braid_task *task;
  unsigned flags;
  braid_limiter *limiter; /* holds a reference while the token is held */
  uint64_t borrower;      /* the job's own borrower token */
  atomic_int state;
  atomic_int cancelled; /* the worker's inherited cancel status */
  int result;
  braid__thread *worker; /* under pool_mu: the thread running it */
} braid__job;

typedef struct worker {
  braid__thread *th;
  braid__job *job; /* under pool_mu */
  struct worker *next_idle;
} worker;

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static worker *pool_idle;
static uint64_t pool_busy, pool_idle_n; /* alive = busy + idle */
static _Atomic braid_time_t idle_timeout = 10 * BRAID_SEC;
static atomic_uint_fast64_t job_ids = 1;

braid_time_t braid_set_worker_idle_timeout(braid_time_t timeout) {
  if (timeout <= 0) return BRAID_EINVAL;
  braid_time_t old = atomic_exchange(&idle_timeout, timeout);
  pthread_mutex_lock(&pool_mu);
  for (worker *w = pool_idle; w; w = w->next_idle)
    braid__thread_poke(w->th); /* re-read it */
  pthread_mutex_unlock(&pool_mu);
  return old;
}

uint64_t braid__workers_alive(void) {
  pthread_mutex_lock(&pool_mu);
  uint64_t n = pool_busy + pool_idle_n;
  pthread_mutex_unlock(&pool_mu);
  return n;
}

int braid_worker_statistics(braid_worker_stats *out) {
  if (!out || out->size < sizeof *out) return BRAID_EINVAL;
  pthread_mutex_lock(&pool_mu);
  out->alive = pool_busy + pool_idle_n;
  out->busy = pool_busy;
  out->idle = pool_idle_n;
  pthread_mutex_unlock(&pool_mu);
  return 0;
}

/* The worker is done with j: give the token back and hand the result over
 * (or drop it, if the task abandoned the job). */
static void job_finish(braid__job *j, int result) {
  braid_limiter *lim = j->limiter;
  braid__limiter_release_tok(lim, j->borrower);
  braid__limiter_unref(lim);
  j->result = result;
  int exp = JOB_RUNNING;
  if (atomic_compare_exchange_strong(&j->state, &exp, JOB_DONE)) {
    braid__post_wake(j->task, result); /* last access: the task owns j again */
  } else {
    braid__free(j); /* abandoned: ours */
  }
}

static void run_job(worker *w, braid__job *j) {
  braid__thread *th = w->th;
  th->inherited = &j->cancelled;
  int r = j->fn(j->arg);
  th->inherited = NULL;
  pthread_mutex_lock(&pool_mu);
  j->worker = NULL;
  pthread_mutex_unlock(&pool_mu);
  job_finish(j, r);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  w->th = &braid__tls;
  braid__parker *pk = braid__thread_parker(w->th); /* NULL: retire after the job */
  braid__job *j;
  pthread_mutex_lock(&pool_mu);
  j = w->job;
  j->worker = w->th;
  pthread_mutex_unlock(&pool_mu);
  for (;;) {
    run_job(w, j);
    pthread_mutex_lock(&pool_mu);
    w->job = NULL;
    pool_busy--;
    pool_idle_n++;
    w->next_idle = pool_idle;
    pool_idle = w;
    braid_time_t since = braid__real_now(), until;
    for (;;) {
      if (!pk) break;
      unsigned seen = atomic_load(&pk->futex);
      until = since + atomic_load(&idle_timeout); /* re-read: it may change */
      if (w->job || braid__real_now() >= until) break;
      pthread_mutex_unlock(&pool_mu);
      braid__futex_wait(&pk->futex, seen, until);
      pthread_mutex_lock(&pool_mu);
    }
    j = w->job;
    if (!j) { /* retire: take ourselves off the idle list */
      for (worker **p = &pool_idle; *p; p = &(*p)->next_idle)
        if (*p == w) {
          *p = w->next_idle;
          break;
        }
      pool_idle_n--;
      pthread_mutex_unlock(&pool_mu);
      braid__free(w);
      return NULL;
    }
    j->worker = w->th;
    pthread_mutex_unlock(&pool_mu);
  }
}

/* Give j to an idle worker or a new one. Returns 0 or BRAID_ESYS/ENOMEM. */
static int submit(braid__job *j) {
  atomic_store(&j->state, JOB_RUNNING);
  pthread_mutex_lock(&pool_mu);
  worker *w = pool_idle;
  if (w) {
    pool_idle = w->next_idle;
    pool_idle_n--;
    pool_busy++;
    w->job = j;
    j->worker = w->th;
    braid__thread_poke(w->th);
    pthread_mutex_unlock(&pool_mu);
    return 0;
  }
  w = braid__calloc(sizeof *w);
  if (!w) {
    pthread_mutex_unlock(&pool_mu);
    return BRAID_ENOMEM;
  }
  w->job = j;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t tid;
  int e = pthread_create(&tid, &attr, worker_main, w);
  pthread_attr_destroy(&attr);
  if (e) {
    pthread_mutex_unlock(&pool_mu);
    braid__free(w);
    return BRAID_ESYS;
  }
  pool_busy++;
  pthread_mutex_unlock(&pool_mu);
  return 0;
}

/* ---- to_thread, task side ---- */

void braid__job_free(braid__job *j) { braid__free(j); }

static int job_abort(braid_task *t) {
  braid__job *j = t->job;
  atomic_store(&j->cancelled, 1);
  pthread_mutex_lock(&pool_mu);
  if (j->worker) braid__thread_poke(j->worker); /* its braid waits re-check */
  pthread_mutex_unlock(&pool_mu);
  if (!(j->flags & BRAID_ABANDON_ON_CANCEL)) return 0; /* wait for fn to return */
  int exp = JOB_RUNNING;
  if (!atomic_compare_exchange_strong(&j->state, &exp, JOB_ABANDONED)) return 0; /* done: wake on its way */
  t->job = NULL; /* the worker frees it (jobs_running drops at the wake) */
  return 1;
}

/* Token in hand (the job's limiter reference taken): start the job and
 * block the task on it. Returns what the blocking call returns. */
static int start_job(braid_task *t) {
  braid__job *j = t->job;
  /* Cancelled while it got the token (it was not blocked then, so no abort
   * hook saw it): do not start fn in a cancelled scope. */
  int rc = braid__scope_eff_cancelled(t->scope) || t->finishing ? BRAID_ECANCELED : submit(j);
  if (rc) {
    braid__limiter_release_tok(j->limiter, j->borrower);
    braid__limiter_unref(j->limiter);
    return rc;
  }
  t->loop->jobs_running++;
  t->wait_obj = j;
  t->resume_mode = BRAID__RESUME_JOB;
  t->state = BRAID__T_BLOCKED;
  t->abort = job_abort;
  return BRAID_EPENDING;
}

int braid__job_after_token(braid_task *t) {
  int r = t->resume;
  if (r != 0) { /* no token: cancelled, or an error */
    braid__limiter_unref(t->job->limiter);
    return r;
  }
  r = start_job(t);
  return r == BRAID_EPENDING ? BRAID__REBLOCKED : r;
}

int braid_to_thread(braid_task *task, braid_thread_fn fn, void *arg, unsigned flags, braid_limiter *limiter) {
  if (!fn || (flags & ~BRAID_ABANDON_ON_CANCEL)) return BRAID_EINVAL;
  int rc = braid__check_running(task);
  if (rc) return rc;
  if (!limiter) {
    rc = braid_loop_default_limiter(task->loop, &limiter);
    if (rc) return rc;
  }
  if (!task->job) {
    task->job = braid__calloc(sizeof *task->job);
    if (!task->job) return BRAID_ENOMEM;
  }
  braid__job *j = task->job;
  j->fn = fn;
  j->arg = arg;
  j->task = task;
  j->flags = flags;
  j->limiter = braid__limiter_ref(limiter);
  /* a borrower token of the job's own kind: never equal to a caller's */
  j->borrower = braid__tok(atomic_fetch_add(&job_ids, 1), BRAID__TOK_JOB);
  atomic_store(&j->state, JOB_QUEUED);
  atomic_store(&j->cancelled, 0);
  j->worker = NULL;
  rc = braid__limiter_acquire_tok(task, limiter, j->borrower);
  if (task->stepped && rc == BRAID_EPENDING) {
    task->resume_mode = BRAID__RESUME_TOKEN; /* braid__job_after_token runs at the wake */
    return rc;
  }
  if (rc) {
    braid__limiter_unref(j->limiter);
    return rc;
  }
  rc = start_job(task); /* the token came at once */
  if (rc != BRAID_EPENDING) return rc;
  return braid__suspend(task);
}

int braid_loop_default_limiter(braid_loop *loop, braid_limiter **out) {
  if (!loop || !out) return BRAID_EINVAL;
  if (!loop->default_limiter) {
    int rc = braid_limiter_new(40, &loop->default_limiter);
    if (rc) return rc;
  }
  *out = loop->default_limiter;
  return 0;
}

int braid_thread_check_cancelled(void) {
  braid_task *t = braid__tls_current;
  if (t) return braid__scope_eff_cancelled(t->scope) ? BRAID_ECANCELED : 0;
  return braid__thread_cancelled(&braid__tls) ? BRAID_ECANCELED : 0;
}

/* ---- from_thread ---- */

enum { REQ_TASK = 1, REQ_SYNC };
enum { RQ_QUEUED = 0, RQ_STARTED, RQ_DONE };

typedef struct braid__request {
  braid__link link; /* in loop->requests, then loop->ext_live */
  int kind;
  int stepped; /* REQ_TASK: fn is a braid_step_fn */
  braid_fn fn;
  braid_step_fn step;
  braid_thread_fn sfn;
  void *arg;
  braid_scope *scope; /* REQ_TASK: the task's own scope */
  int result;
  atomic_int state;
  braid__parker *parker; /* the caller's, one reference for the completer */
  struct braid_future *future;
} braid__request;

static void request_done(braid__request *r, int result);

/* Queue r on loop. Returns 0 or BRAID_ECLOSED. */
static int post_request(braid_loop *loop, braid__request *r) {
  pthread_mutex_lock(&loop->remote_mu);
  if (loop->closed) {
    pthread_mutex_unlock(&loop->remote_mu);
    return BRAID_ECLOSED;
  }
  braid__list_push(&loop->requests, &r->link);
  atomic_store(&loop->remote_pending, 1);
  uv_async_send(&loop->uv_async);
  pthread_mutex_unlock(&loop->remote_mu);
  return 0;
}

void braid__requests_taken(braid__link *reqs) {
  for (braid__link *l = reqs->next; l != reqs; l = l->next)
    atomic_store(&BRAID__CONTAINER(l, braid__request, link)->state, RQ_STARTED);
}

void braid__start_requests(braid_loop *loop, braid__link *reqs) {
  while (!braid__list_empty(reqs)) {
    braid__request *r = BRAID__CONTAINER(reqs->next, braid__request, link);
    braid__list_remove(&r->link);
    if (r->kind == REQ_SYNC) {
      request_done(r, r->sfn(r->arg));
      continue;
    }
    braid_task *t;
    int rc = r->stepped ? braid__new_task(loop, 1, (void *)r->step, r->arg, NULL, &t)
                        : braid__new_task(loop, 0, (void *)r->fn, r->arg, NULL, &t);
    if (rc) {
      request_done(r, rc);
      continue;
    }
    braid_scope *s = r->scope;
    s->state = BRAID__SCOPE_ENTERED;
    atomic_store(&s->loop, loop);
    t->ext = r;
    if (loop->cancel_new_requests) atomic_fetch_or(&s->cancel_bits, BRAID__CANCEL_CALLED);
    braid__scope_move_task(t, s);
    braid__list_push(&loop->ext_live, &r->link);
    braid__make_ready(loop, t);
  }
}

void braid__ext_done(braid_task *t, int rc) {
  braid__request *r = t->ext;
  braid__list_remove(&r->link);
  r->scope->state = BRAID__SCOPE_EXITED;
  braid__scope_unpublish(r->scope); /* two references: waits for in-flight cancels */
  request_done(r, rc);
}

/* ---- futures ---- */

struct braid_future {
  braid__request req;
  pthread_mutex_t mu;
  braid__link waiters; /* threads in braid_future_wait */
  atomic_int refs;     /* the caller's, and the loop's until done */
  braid_loop *loop;
};

typedef struct fwaiter {
  braid__link link;
  braid__thread *th;
} fwaiter;

static bool future_done(braid_future *f) { return atomic_load(&f->req.state) == RQ_DONE; }

static void future_unref(braid_future *f) {
  if (atomic_fetch_sub(&f->refs, 1) == 1) {
    braid_scope_unref(f->req.scope); /* both references: the future held them */
    braid_scope_unref(f->req.scope);
    pthread_mutex_destroy(&f->mu);
    braid__free(f);
  }
}

static void request_done(braid__request *r, int result) {
  r->result = result;
  if (r->future) {
    atomic_store(&r->state, RQ_DONE);
    braid_future *f = r->future;
    pthread_mutex_lock(&f->mu);
    for (braid__link *l = f->waiters.next; l != &f->waiters; l = l->next)
      braid__thread_poke(BRAID__CONTAINER(l, fwaiter, link)->th);
    pthread_mutex_unlock(&f->mu);
    future_unref(f);
    return;
  }
  /* Once the caller sees RQ_DONE it may return and free r: take the parker
   * out first. */
  braid__parker *pk = r->parker;
  atomic_store_explicit(&r->state, RQ_DONE, memory_order_release);
  braid__parker_poke(pk);
  braid__parker_unref(pk);
}

static int from_thread(braid_loop *loop, braid__request *r) {
  if (!loop) return BRAID_EINVAL;
  braid__thread *th = &braid__tls;
  if (th->loop == loop) return BRAID_ESTATE;
  if (braid__thread_cancelled(th)) return BRAID_ECANCELED;
  braid__parker *pk = braid__thread_parker(th);
  if (!pk) return BRAID_ENOMEM;
  atomic_init(&r->state, RQ_QUEUED);
  braid__list_init(&r->link);
  if (r->kind == REQ_TASK) {
    int rc = braid_scope_new(BRAID_NEVER, 0, &r->scope);
    if (rc) return rc;
    braid_scope_ref(r->scope); /* this thread cancels it: two references */
  }
  atomic_fetch_add(&pk->refs, 1);
  r->parker = pk;
  int rc = post_request(loop, r);
  if (rc) {
    braid__parker_unref(pk);
    if (r->scope) {
      braid_scope_unref(r->scope);
      braid_scope_unref(r->scope);
    }
    return rc;
  }
  int cancel_sent = 0;
  for (;;) {
    unsigned seen = atomic_load(&pk->futex);
    if (atomic_load_explicit(&r->state, memory_order_acquire) == RQ_DONE) break;
    if (!cancel_sent && braid__thread_cancelled(th)) {
      cancel_sent = 1;
      if (r->kind == REQ_TASK) {
        braid_scope_cancel(r->scope);
      } else {
        /* not started yet: take it back */
        pthread_mutex_lock(&loop->remote_mu);
        int queued = atomic_load(&r->state) == RQ_QUEUED;
        if (queued) braid__list_remove(&r->link);
        pthread_mutex_unlock(&loop->remote_mu);
        if (queued) {
          braid__parker_unref(pk); /* nobody will complete it */
          return BRAID_ECANCELED;
        }
      }
      continue;
    }
    braid__futex_wait(&pk->futex, seen, cancel_sent ? BRAID_NEVER : braid__thread_deadline(th));
  }
  if (r->scope) {
    braid_scope_unref(r->scope);
    braid_scope_unref(r->scope);
  }
  return r->result;
}

int braid_from_thread_run(braid_loop *loop, braid_fn fn, void *arg) {
  if (!fn) return BRAID_EINVAL;
  braid__request r = {.kind = REQ_TASK, .fn = fn, .arg = arg};
  return from_thread(loop, &r);
}

int braid_from_thread_run_stepped(braid_loop *loop, braid_step_fn step, void *ctx) {
  if (!step) return BRAID_EINVAL;
  braid__request r = {.kind = REQ_TASK, .stepped = 1, .step = step, .arg = ctx};
  return from_thread(loop, &r);
}

int braid_from_thread_run_sync(braid_loop *loop, braid_thread_fn fn, void *arg) {
  if (!fn) return BRAID_EINVAL;
  braid__request r = {.kind = REQ_SYNC, .sfn = fn, .arg = arg};
  return from_thread(loop, &r);
}

/* ---- portals ---- */

struct braid_portal {
  pthread_t thread;
  braid_run_opts run_opts;
  braid_loop *loop;
  braid_event *stop;
  atomic_int stopping;
  atomic_uint started; /* futex: 1 once the loop runs (or failed) */
  int run_rc;
};

static int portal_root(braid_task *self, void *arg) {
  braid_portal *p = arg;
  p->loop = braid_loop_ref(braid_task_loop(self));
  atomic_store(&p->started, 1);
  syscall(SYS_futex, (unsigned *)&p->started, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  /* Serve until stopped: work arrives as requests; shielded so that only
   * the stop ends the wait. */
  braid_scope *shield;
  int rc = braid_scope_new(BRAID_NEVER, BRAID_SHIELD, &shield);
  if (rc) return rc;
  braid_scope_enter(self, shield);
  rc = braid_event_wait(self, p->stop);
  braid_scope_exit(shield, rc);
  braid_scope_unref(shield);
  return rc;
}

static void *portal_main(void *arg) {
  braid_portal *p = arg;
  p->run_rc = braid_run(portal_root, p, &p->run_opts);
  if (!atomic_load(&p->started)) {
    atomic_store(&p->started, 2); /* the loop never ran */
    syscall(SYS_futex, (unsigned *)&p->started, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  }
  return NULL;
}

int braid_portal_start(const braid_portal_opts *opts, braid_portal **out) {
  if (!out || (opts && opts->size < sizeof *opts)) return BRAID_EINVAL;
  braid_portal *p = braid__calloc(sizeof *p);
  if (!p) return BRAID_ENOMEM;
  p->run_opts.size = sizeof p->run_opts;
  if (opts) {
    p->run_opts.clock = opts->clock;
    p->run_opts.stack_size = opts->stack_size;
  }
  p->run_opts.root_name = "portal";
  int rc = braid_event_new(&p->stop);
  if (rc) {
    braid__free(p);
    return rc;
  }
  if (pthread_create(&p->thread, NULL, portal_main, p) != 0) {
    braid_event_free(p->stop);
    braid__free(p);
    return BRAID_ESYS;
  }
  unsigned v;
  while ((v = atomic_load(&p->started)) == 0)
    syscall(SYS_futex, (unsigned *)&p->started, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
  if (v == 2) {
    pthread_join(p->thread, NULL);
    rc = p->run_rc ? p->run_rc : BRAID_ESYS;
    braid_event_free(p->stop);
    braid__free(p);
    return rc;
  }
  *out = p;
  return 0;
}

braid_loop *braid_portal_loop(braid_portal *p) { return p ? p->loop : NULL; }

int braid_portal_call(braid_portal *p, braid_fn fn, void *arg) {
  if (!p) return BRAID_EINVAL;
  if (atomic_load(&p->stopping)) return BRAID_ECLOSED;
  return braid_from_thread_run(p->loop, fn, arg);
}

int braid_portal_start_task(braid_portal *p, braid_fn fn, void *arg, braid_future **out) {
  if (!p || !fn || !out) return BRAID_EINVAL;
  if (atomic_load(&p->stopping)) return BRAID_ECLOSED;
  braid_future *f = braid__calloc(sizeof *f);
  if (!f) return BRAID_ENOMEM;
  int rc = braid_scope_new(BRAID_NEVER, 0, &f->req.scope);
  if (rc) {
    braid__free(f);
    return rc;
  }
  braid_scope_ref(f->req.scope);
  pthread_mutex_init(&f->mu, NULL);
  braid__list_init(&f->waiters);
  atomic_init(&f->refs, 2);
  f->loop = p->loop;
  f->req.kind = REQ_TASK;
  f->req.fn = fn;
  f->req.arg = arg;
  f->req.future = f;
  braid__list_init(&f->req.link);
  rc = post_request(p->loop, &f->req);
  if (rc) {
    braid_scope_unref(f->req.scope);
    braid_scope_unref(f->req.scope);
    pthread_mutex_destroy(&f->mu);
    braid__free(f);
    return rc;
  }
  *out = f;
  return 0;
}

int braid_future_wait(braid_future *f, braid_time_t deadline) {
  if (!f) return BRAID_EINVAL;
  braid__thread *th = &braid__tls;
  if (th->loop == f->loop) return BRAID_ESTATE;
  braid__parker *pk = braid__thread_parker(th);
  if (!pk) return BRAID_ENOMEM;
  fwaiter me = {.th = th};
  pthread_mutex_lock(&f->mu);
  braid__list_push(&f->waiters, &me.link);
  pthread_mutex_unlock(&f->mu);
  int rc = 0;
  for (;;) {
    unsigned seen = atomic_load(&pk->futex);
    if (future_done(f)) break;
    if (braid__thread_cancelled(th)) {
      rc = BRAID_ECANCELED;
      break;
    }
    if (deadline != BRAID_NEVER && braid__real_now() >= deadline) {
      rc = BRAID_ETIMEDOUT;
      break;
    }
    braid_time_t d = braid__thread_deadline(th);
    braid__futex_wait(&pk->futex, seen, d < deadline ? d : deadline);
  }
  pthread_mutex_lock(&f->mu);
  braid__list_remove(&me.link);
  pthread_mutex_unlock(&f->mu);
  return rc;
}

int braid_future_cancel(braid_future *f) {
  if (!f) return BRAID_EINVAL;
  return braid_scope_cancel(f->req.scope);
}

int braid_future_done(braid_future *f) { return f ? future_done(f) : 0; }

int braid_future_result(braid_future *f) {
  if (!f) return BRAID_EINVAL;
  return future_done(f) ? f->req.result : BRAID_ESTATE;
}

int braid_future_free(braid_future *f) {
  if (!f) return BRAID_EINVAL;
  future_unref(f);
  return 0;
}

static int cancel_live(void *arg) {
  braid_loop *loop = arg;
  loop->cancel_new_requests = 1; /* and those still arriving (a stop is racing them) */
  for (braid__link *l = loop->ext_live.next; l != &loop->ext_live; l = l->next)
    braid__scope_cancel_local(loop, BRAID__CONTAINER(l, braid__request, link)->scope);
  return 0;
}

int braid_portal_stop(braid_portal *p, int cancel_remaining) {
  if (!p) return BRAID_EINVAL;
  if (braid__tls.loop && braid__tls.loop == p->loop) return BRAID_ESTATE;
  atomic_store(&p->stopping, 1);
  if (cancel_remaining) braid_from_thread_run_sync(p->loop, cancel_live, p->loop);
  braid_event_set(p->stop);
  pthread_join(p->thread, NULL);
  braid_loop_unref(p->loop);
  braid_event_free(p->stop);
  braid__free(p);
  return 0;
}
