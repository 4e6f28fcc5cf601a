/*
 * group.c — task groups (Trio's nurseries, AnyIO's task groups).
 *
 * A group owns a cancel scope, entered in the opening task. Children start
 * with the group's scope as their innermost scope, so cancelling the group
 * (or anything above it) reaches them. The group counts its children;
 * braid_group_close waits until the count is zero and then leaves the scope.
 *
 * Failures: a child that fails (any result but 0 and BRAID_ECANCELED, or a
 * braid_task_fail) cancels the group's scope. Its task struct is kept as the
 * failure record (no allocation on the failure path, so recording a failure
 * cannot fail); the group frees the records in braid_group_free.
 *
 * start: until the child calls braid_task_started it is counted in the group
 * (close waits for it, as Trio's pending starts) but it lives under the
 * caller's innermost scope, so cancelling the caller cancels it. started()
 * moves the child's scope subtree under the group's scope.
 */
#include <string.h>

#include "internal.h"

enum { GROUP_OPEN = 0, GROUP_CLOSING, GROUP_CLOSED, GROUP_FREED };

struct braid_group {
  braid_loop *loop;
  braid_task *owner;
  braid_scope *scope;
  size_t nchildren;
  uint8_t state;
  uint8_t abandoned;    /* the owner left the group's scope without closing */
  uint8_t free_pending; /* freed while abandoned children still run */
  uint8_t saw_cancel;   /* a child or the body ended with BRAID_ECANCELED */
  uint8_t closer_waiting;
  uint8_t has_body_failure;
  uint8_t no_new; /* closing with no child left: closed to new arrivals (Trio) */
  braid__failure body_failure;
  braid__failure *fail_head, *fail_tail;
  size_t nfail;
  braid_group *next_free; /* loop group cache */
};

#define BRAID__GROUP_CACHE_MAX 64u

static braid_group *group_alloc(braid_loop *loop) {
  braid_group *g = loop->group_free;
  if (g) {
    loop->group_free = g->next_free;
    loop->group_free_n--;
  } else {
    g = braid__alloc(sizeof *g);
    if (!g) return NULL;
  }
  /* Field by field: a memset compiles to a slow `rep stos` here. */
  g->owner = NULL;
  g->scope = NULL;
  g->nchildren = 0;
  g->state = GROUP_OPEN;
  g->abandoned = g->free_pending = g->saw_cancel = g->closer_waiting = g->has_body_failure = g->no_new = 0;
  g->body_failure.code = 0;
  g->body_failure.payload = NULL;
  g->body_failure.dtor = NULL;
  g->body_failure.task_id = 0;
  g->body_failure.next = NULL;
  g->fail_head = g->fail_tail = NULL;
  g->nfail = 0;
  g->next_free = NULL;
  return g;
}

static void group_release(braid_group *g) {
  g->state = GROUP_FREED; /* a second braid_group_free sees it while cached */
  braid_loop *loop = braid__tls.loop;
  if (loop && loop == g->loop && loop->group_free_n < BRAID__GROUP_CACHE_MAX) {
    g->next_free = loop->group_free;
    loop->group_free = g;
    loop->group_free_n++;
    return;
  }
  braid__free(g);
}

void braid__loop_group_cache_free(braid_loop *loop) {
  while (loop->group_free) {
    braid_group *g = loop->group_free;
    loop->group_free = g->next_free;
    braid__free(g);
  }
  loop->group_free_n = 0;
}

static bool is_failure(int code) { return code != 0 && code != BRAID_ECANCELED && code != BRAID_EPENDING; }

void braid__failure_drop_payload(braid__failure *f) {
  if (f->payload && f->dtor) f->dtor(f->payload);
  f->payload = NULL;
  f->dtor = NULL;
}

static void add_failure(braid_group *g, braid__failure *f) {
  f->next = NULL;
  if (g->fail_tail)
    g->fail_tail->next = f;
  else
    g->fail_head = f;
  g->fail_tail = f;
  g->nfail++;
  braid__scope_cancel_local(g->loop, g->scope);
}

/* ---- open / spawn ---- */

int braid_group_open(braid_task *task, braid_group **out) {
  if (!out) return BRAID_EINVAL;
  int rc = braid__check_running(task);
  if (rc) return rc;
  braid_group *g = group_alloc(task->loop);
  if (!g) return BRAID_ENOMEM;
  g->loop = task->loop;
  rc = braid__scope_alloc(task->loop, BRAID_NEVER, 0, &g->scope);
  if (rc) {
    group_release(g);
    return rc;
  }
  rc = braid_scope_enter(task, g->scope);
  if (rc) {
    braid_scope_unref(g->scope);
    group_release(g);
    return rc;
  }
  g->scope->group = g;
  g->owner = task;
  *out = g;
  return 0;
}

static int spawn_common(braid_group *g, int stepped, void *body, void *arg, const braid_spawn_opts *opts,
                        braid_task **out_task) {
  if (!g || !body) return BRAID_EINVAL;
  if (g->loop != braid__tls.loop) return BRAID_ETHREAD;
  if (g->state >= GROUP_CLOSED || g->no_new || g->abandoned) return BRAID_ESTATE;
  braid_task *t;
  int rc = braid__new_task(g->loop, stepped, body, arg, opts, &t);
  if (rc) return rc;
  t->group = g;
  braid__scope_move_task(t, g->scope);
  g->nchildren++;
  braid__make_ready(g->loop, t);
  if (out_task) *out_task = t;
  return 0;
}

int braid_group_spawn(braid_group *g, braid_fn fn, void *arg, const braid_spawn_opts *opts, braid_task **out_task) {
  return spawn_common(g, 0, (void *)fn, arg, opts, out_task);
}

int braid_group_spawn_stepped(braid_group *g, braid_step_fn step, void *ctx, const braid_spawn_opts *opts,
                              braid_task **out_task) {
  return spawn_common(g, 1, (void *)step, ctx, opts, out_task);
}

/* ---- start / started ---- */

static int start_common(braid_group *g, braid_task *caller, int stepped, void *body, void *arg,
                        const braid_spawn_opts *opts, void **value) {
  if (!g || !body || !caller) return BRAID_EINVAL;
  if (g->loop != braid__tls.loop) return BRAID_ETHREAD;
  int rc = braid__check_running(caller);
  if (rc) return rc;
  if (g->state >= GROUP_CLOSED || g->no_new || g->abandoned) return BRAID_ESTATE;
  /* Even in a cancelled caller the child starts, as in Trio: it runs until
   * its first checkpoint (where it is cancelled) or until it calls
   * started(). */
  braid_task *t;
  rc = braid__new_task(g->loop, stepped, body, arg, opts, &t);
  if (rc) return rc;
  t->group = g;
  t->start_state = BRAID__START_PENDING;
  t->starter = caller;
  braid__scope_move_task(t, caller->scope);
  g->nchildren++;
  braid__make_ready(g->loop, t);
  caller->wait_obj = value;
  caller->resume_mode = BRAID__RESUME_VALUE;
  caller->state = BRAID__T_BLOCKED;
  caller->abort = NULL; /* not cancellable: the child is cancelled instead */
  return braid__suspend(caller);
}

int braid_group_start(braid_group *g, braid_task *caller, braid_fn fn, void *arg, const braid_spawn_opts *opts,
                      void **value) {
  return start_common(g, caller, 0, (void *)fn, arg, opts, value);
}

int braid_group_start_stepped(braid_group *g, braid_task *caller, braid_step_fn step, void *ctx,
                              const braid_spawn_opts *opts, void **value) {
  return start_common(g, caller, 1, (void *)step, ctx, opts, value);
}

int braid_task_started(braid_task *self, void *value) {
  int rc = braid__check_running(self);
  if (rc) return rc;
  if (self->start_state == BRAID__START_NONE) return 0;
  if (self->start_state == BRAID__START_DONE || !self->starter) return BRAID_ESTATE;
  braid_task *caller = self->starter;
  void **out = caller->wait_obj;
  if (out) *out = value;
  self->starter = NULL;
  self->start_state = BRAID__START_DONE;
  braid_group *g = self->group;
  /* Move the child (and the scopes it has open) under the group's scope. */
  braid_scope *x = self->scope;
  if (x && x->task == self) {
    while (x->parent && x->parent->task == self)
      x = x->parent;
    braid__scope_unlink_child(x);
    braid__scope_link_child(g->scope, x);
    if (!x->shield && braid__scope_eff_cancelled(g->scope)) braid__scope_deliver(x);
  } else {
    braid__scope_move_task(self, g->scope);
  }
  caller->resume_mode = BRAID__RESUME_VALUE;
  braid__wake(caller, 0);
  return 0;
}

int braid_task_fail(braid_task *self, int code, void *payload, void (*dtor)(void *)) {
  if (!self || !is_failure(code)) {
    if (payload && dtor) dtor(payload);
    return BRAID_EINVAL;
  }
  if (self->has_failure) braid__failure_drop_payload(&self->failure);
  self->failure.code = code;
  self->failure.payload = payload;
  self->failure.dtor = dtor;
  self->failure.task_id = self->id;
  self->has_failure = 1;
  return code;
}

/* ---- children ending ---- */

static void group_destroy(braid_group *g);

void braid__group_child_done(braid_task *t, int rc) {
  braid_group *g = t->group;
  int code = t->has_failure ? t->failure.code : (is_failure(rc) ? rc : 0);
  if (t->starter) {
    /* Ended before started: the outcome goes to the starter, not the group. */
    braid_task *caller = t->starter;
    void **out = caller->wait_obj;
    int res = code ? code : rc == BRAID_ECANCELED ? BRAID_ECANCELED : BRAID_ESTATE;
    if (t->has_failure && t->failure.payload) {
      if (out) {
        *out = t->failure.payload;
        t->failure.payload = NULL;
      } else {
        braid__failure_drop_payload(&t->failure);
      }
    }
    t->starter = NULL;
    caller->resume_mode = BRAID__RESUME_VALUE;
    braid__wake(caller, res);
  } else if (code && g->free_pending) {
    /* Nobody can read the failures of a group freed while abandoned. */
    braid__failure_drop_payload(&t->failure);
  } else if (code) {
    if (!t->has_failure) {
      t->failure.code = code;
      t->failure.payload = NULL;
      t->failure.dtor = NULL;
    }
    t->failure.task_id = t->id;
    t->kept = 1;
    add_failure(g, &t->failure);
  } else if (rc == BRAID_ECANCELED) {
    g->saw_cancel = 1;
  }
  if (--g->nchildren == 0) {
    if (g->state == GROUP_CLOSING) g->no_new = 1; /* the close finishes now */
    if (g->closer_waiting) {
      g->closer_waiting = 0;
      braid__wake(g->owner, 0); /* its resume mode is RESUME_CLOSE */
    }
    if (g->free_pending) group_destroy(g);
  }
}

/* ---- close ---- */

int braid_group_close(braid_group *g, int rc) {
  if (!g || g->state == GROUP_FREED) return BRAID_EINVAL;
  if (g->loop != braid__tls.loop) return BRAID_ETHREAD;
  braid_task *t = g->owner;
  if (g->state != GROUP_OPEN || g->abandoned || braid__check_running(t) != 0 || t->scope != g->scope)
    return BRAID_ESTATE;
  if (is_failure(rc)) {
    if (!g->has_body_failure) {
      g->has_body_failure = 1;
      g->body_failure.code = rc;
      g->body_failure.task_id = t->id;
      add_failure(g, &g->body_failure);
    }
  } else if (rc == BRAID_ECANCELED) {
    g->saw_cancel = 1;
  }
  g->state = GROUP_CLOSING;
  t->wait_obj = g;
  t->resume_mode = BRAID__RESUME_CLOSE;
  if (g->nchildren) {
    /* Not cancellable: a cancellation reaches the children through the
     * scope tree, and close goes on waiting for them. */
    t->state = BRAID__T_BLOCKED;
    t->abort = NULL;
    g->closer_waiting = 1;
  } else {
    g->no_new = 1;                 /* nothing left to wait for: closed to new arrivals */
    braid__make_ready(g->loop, t); /* a cancel-shielded checkpoint */
  }
  return braid__suspend(t);
}

int braid__group_finish_close(braid_group *g) {
  int rc = g->nfail ? BRAID_EFAILED : g->saw_cancel ? BRAID_ECANCELED : 0;
  int r = braid__scope_pop(g->scope, rc);
  g->state = GROUP_CLOSED;
  return g->nfail ? BRAID_EFAILED : r;
}

int braid_group_fail(braid_group *g, int code, void *payload, void (*dtor)(void *)) {
  if (!g || !is_failure(code)) {
    if (payload && dtor) dtor(payload);
    return BRAID_EINVAL;
  }
  if (g->loop != braid__tls.loop) {
    if (payload && dtor) dtor(payload);
    return BRAID_ETHREAD;
  }
  if (g->state == GROUP_CLOSED) {
    if (payload && dtor) dtor(payload);
    return BRAID_ESTATE;
  }
  if (g->has_body_failure) {
    braid__failure_drop_payload(&g->body_failure);
  } else {
    g->has_body_failure = 1;
    g->body_failure.task_id = g->owner ? g->owner->id : 0;
    add_failure(g, &g->body_failure);
  }
  g->body_failure.code = code;
  g->body_failure.payload = payload;
  g->body_failure.dtor = dtor;
  return 0;
}

void braid__group_abandon(braid_group *g) {
  g->abandoned = 1;
  g->owner = NULL;
}

/* ---- queries and free ---- */

size_t braid_group_failure_count(const braid_group *g) { return g ? g->nfail : 0; }

static braid__failure *nth_failure(const braid_group *g, size_t i) {
  if (!g || i >= g->nfail) return NULL;
  braid__failure *f = g->fail_head;
  while (i--)
    f = f->next;
  return f;
}

int braid_group_failure(const braid_group *g, size_t i, int *code, void **payload, uint64_t *task_id) {
  braid__failure *f = nth_failure(g, i);
  if (!f) return BRAID_EINVAL;
  if (code) *code = f->code;
  if (payload) *payload = f->payload;
  if (task_id) *task_id = f->task_id;
  return 0;
}

void *braid_group_take_payload(braid_group *g, size_t i) {
  braid__failure *f = nth_failure(g, i);
  if (!f) return NULL;
  void *p = f->payload;
  f->payload = NULL;
  f->dtor = NULL;
  return p;
}

braid_scope *braid_group_scope(const braid_group *g) { return g ? g->scope : NULL; }

size_t braid_group_child_count(const braid_group *g) { return g ? g->nchildren : 0; }

static void group_destroy(braid_group *g) {
  braid__failure *f = g->fail_head;
  while (f) {
    braid__failure *next = f->next;
    braid__failure_drop_payload(f);
    if (f != &g->body_failure) braid__task_free(BRAID__CONTAINER(f, braid_task, failure));
    f = next;
  }
  g->scope->group = NULL;
  braid_scope_unref(g->scope);
  group_release(g);
}

int braid_group_free(braid_group *g) {
  if (!g) return BRAID_EINVAL;
  if (g->state == GROUP_FREED || g->free_pending) return BRAID_ESTATE; /* freed twice */
  if (g->state == GROUP_CLOSED) {
    group_destroy(g);
    return 0;
  }
  if (!g->abandoned) return BRAID_ESTATE;
  if (g->nchildren)
    g->free_pending = 1;
  else
    group_destroy(g);
  return 0;
}
