/*
 * scope.c — cancel scopes.
 *
 * Scopes form a tree through `parent`. A task's scope stack is the chain
 * from its innermost scope (task->scope) upwards through the scopes it owns
 * (s->task == task); above them the chain continues into the scopes of the
 * task that spawned it (a group's scope, owned by the group's opener), so a
 * cancellation anywhere above reaches every task below.
 *
 * Effective cancellation is computed on demand by walking up the chain
 * (braid__scope_eff_cancelled): cancelled if a scope on the way is
 * cancelled, stopping at the first shield. Nothing is cached, so there is no
 * derived state to keep in sync when scopes are entered, exited, shielded or
 * moved (braid_task_started moves a subtree); chains are short.
 *
 * Waking: cancelling a scope walks its subtree (skipping shielded scopes and
 * scopes already cancelled, whose subtrees were handled when they were
 * cancelled) and wakes every task blocked in a cancellable wait. Why that is
 * enough: a task that starts a cancellable wait checks for cancellation
 * first, so no task can be blocked inside an already cancelled scope.
 *
 * Other threads: braid_scope_cancel sets the flag atomically and, if the
 * scope is entered on a loop, queues the scope on that loop (one intrusive
 * queue, no allocation); the loop delivers it at its next scheduling round.
 * A scope that another thread holds a reference to clears `loop` on exit and
 * waits for in-flight cancels (remote_busy) so that no thread ever touches a
 * loop that has gone. A scope with one reference cannot be reached from
 * another thread, so the common enter/exit path has no atomic read-modify-
 * write at all.
 */
#include <sched.h>
#include <string.h>

#include "sync.h"

#define BRAID__SCOPE_CACHE_MAX 256u

/* ---- allocation ---- */

int braid__scope_alloc(braid_loop *loop, braid_time_t deadline, unsigned flags, braid_scope **out) {
  braid_scope *s;
  if (loop && loop->scope_free) {
    s = loop->scope_free;
    loop->scope_free = s->remote_next;
    loop->scope_free_n--;
  } else {
    s = braid__alloc(sizeof *s);
    if (!s) return BRAID_ENOMEM;
  }
  /* Field by field: a memset of the struct compiles to `rep stos`, which
   * costs more than the whole enter/exit. */
  atomic_init(&s->refs, 1);
  atomic_init(&s->cancel_bits, 0);
  atomic_init(&s->remote_busy, 0);
  atomic_init(&s->loop, NULL);
  atomic_init(&s->remote_queued, 0);
  s->state = BRAID__SCOPE_NEW;
  s->shield = (flags & BRAID_SHIELD) != 0;
  s->fail = (flags & BRAID_FAIL) != 0;
  s->caught = 0;
  s->deadline = deadline;
  s->task = NULL;
  s->thread = NULL;
  s->parent = s->first_child = s->prev_sibling = s->next_sibling = NULL;
  braid__list_init(&s->tasks);
  s->timer.when = 0;
  s->timer.seq = 0;
  s->timer.idx = BRAID__NOT_IN_HEAP;
  s->timer.kind = BRAID__TIMER_SCOPE;
  s->group = NULL;
  atomic_init(&s->pub_thread, NULL);
  s->remote_next = NULL;
  *out = s;
  return 0;
}

static void scope_release(braid_scope *s) {
  atomic_store_explicit(&s->refs, 0, memory_order_relaxed); /* a second unref sees it */
  braid_loop *loop = braid__tls.loop;
  if (loop && loop->scope_free_n < BRAID__SCOPE_CACHE_MAX) {
    s->remote_next = loop->scope_free;
    loop->scope_free = s;
    loop->scope_free_n++;
    return;
  }
  braid__free(s);
}

void braid__loop_scope_cache_free(braid_loop *loop) {
  while (loop->scope_free) {
    braid_scope *s = loop->scope_free;
    loop->scope_free = s->remote_next;
    braid__free(s);
  }
  loop->scope_free_n = 0;
}

int braid_scope_new(braid_time_t deadline, unsigned flags, braid_scope **out) {
  if (!out || (flags & ~(BRAID_SHIELD | BRAID_FAIL))) return BRAID_EINVAL;
  return braid__scope_alloc(braid__tls.loop, deadline, flags, out);
}

braid_scope *braid_scope_ref(braid_scope *s) {
  if (s) atomic_fetch_add(&s->refs, 1);
  return s;
}

int braid_scope_unref(braid_scope *s) {
  if (!s) return BRAID_EINVAL;
  if (atomic_load_explicit(&s->refs, memory_order_relaxed) <= 0) return BRAID_ESTATE; /* already freed (cached) */
  int one = atomic_load_explicit(&s->refs, memory_order_acquire) == 1;
  if (one && s->state == BRAID__SCOPE_ENTERED &&
      !(atomic_load_explicit(&s->cancel_bits, memory_order_relaxed) & BRAID__CANCEL_ABANDONED))
    return BRAID_ESTATE;
  /* Holding the only reference, nobody else can touch the count: skip the
   * read-modify-write. */
  if (one || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) scope_release(s);
  return 0;
}

/* ---- the tree ---- */

void braid__scope_link_child(braid_scope *parent, braid_scope *child) {
  child->parent = parent;
  child->prev_sibling = NULL;
  child->next_sibling = parent->first_child;
  if (parent->first_child) parent->first_child->prev_sibling = child;
  parent->first_child = child;
}

void braid__scope_unlink_child(braid_scope *child) {
  braid_scope *p = child->parent;
  if (!p) return;
  if (child->prev_sibling)
    child->prev_sibling->next_sibling = child->next_sibling;
  else
    p->first_child = child->next_sibling;
  if (child->next_sibling) child->next_sibling->prev_sibling = child->prev_sibling;
  child->prev_sibling = child->next_sibling = NULL;
  child->parent = NULL;
}

/* Make `to` the innermost scope of t (moving t between the task lists). */
void braid__scope_move_task(braid_task *t, braid_scope *to) {
  braid__list_remove(&t->scope_link);
  if (to) braid__list_push(&to->tasks, &t->scope_link);
  t->scope = to;
}

static inline bool reachable(const braid_scope *c) {
  return !c->shield && !(atomic_load_explicit(&c->cancel_bits, memory_order_relaxed) & BRAID__CANCEL_CALLED);
}

void braid__scope_deliver(braid_scope *root) {
  braid_scope *s = root;
  for (;;) {
    for (braid__link *l = s->tasks.next, *next; l != &s->tasks; l = next) {
      next = l->next;
      braid_task *t = BRAID__CONTAINER(l, braid_task, scope_link);
      if (t->state == BRAID__T_BLOCKED && t->abort) {
        int (*abort)(braid_task *) = t->abort;
        t->abort = NULL;
        if (abort(t)) braid__wake(t, BRAID_ECANCELED); /* resume mode: as registered */
      }
    }
    braid_scope *c = s->first_child;
    while (c && !reachable(c))
      c = c->next_sibling;
    if (c) {
      s = c;
      continue;
    }
    while (s != root) {
      c = s->next_sibling;
      while (c && !reachable(c))
        c = c->next_sibling;
      if (c) break;
      s = s->parent;
    }
    if (s == root) return;
    s = c;
  }
}

void braid__scope_cancel_local(braid_loop *loop, braid_scope *s) {
  bool was = braid__scope_eff_cancelled(s);
  atomic_fetch_or_explicit(&s->cancel_bits, BRAID__CANCEL_CALLED, memory_order_relaxed);
  if (s->timer.idx != BRAID__NOT_IN_HEAP) braid__heap_remove(&loop->heap, &s->timer);
  if (!was && s->state == BRAID__SCOPE_ENTERED) braid__scope_deliver(s);
}

/* Clear s->loop so that other threads stop queueing cancels for it, and wait
 * for the ones in flight. Only needed when another thread holds a reference. */
void braid__scope_unpublish(braid_scope *s) {
  if (atomic_load_explicit(&s->refs, memory_order_relaxed) > 1) {
    atomic_store(&s->loop, NULL);
    while (atomic_load(&s->remote_busy))
      sched_yield();
  } else {
    atomic_store_explicit(&s->loop, NULL, memory_order_relaxed);
  }
}

/* Detach x from the tree and leave it cancelled for good (misnesting). */
static void scope_abandon(braid_loop *loop, braid_scope *x) {
  braid__scope_unlink_child(x);
  atomic_fetch_or_explicit(&x->cancel_bits, BRAID__CANCEL_ABANDONED | BRAID__CANCEL_CALLED, memory_order_relaxed);
  if (x->timer.idx != BRAID__NOT_IN_HEAP) braid__heap_remove(&loop->heap, &x->timer);
  braid__scope_deliver(x);
  if (x->group) braid__group_abandon(x->group);
  braid__scope_unpublish(x);
}

void braid__scope_abandon_above(braid_task *t, braid_scope *stop) {
  braid_scope *x = t->scope;
  braid_scope *base = stop;
  if (!stop) {
    base = x;
    while (base && base->task == t)
      base = base->parent;
  }
  braid__scope_move_task(t, base);
  while (x && x != stop && x->task == t) {
    braid_scope *next = x->parent;
    scope_abandon(t->loop, x);
    x = next;
  }
}

/* ---- enter / exit ---- */

static int thread_enter(braid_scope *s) {
  braid__thread *th = &braid__tls;
  s->thread = th;
  s->task = NULL;
  if (th->scope) braid__scope_link_child(th->scope, s);
  th->scope = s;
  s->state = BRAID__SCOPE_ENTERED;
  atomic_store(&s->pub_thread, th); /* braid_scope_cancel pokes this thread */
  if (s->deadline != BRAID_NEVER && s->deadline <= braid__real_now())
    atomic_fetch_or(&s->cancel_bits, BRAID__CANCEL_CALLED);
  return 0;
}

/* A thread scope stops being reachable for pokes; in-flight ones finish
 * before its thread (whose state they touch) can go away. */
static void thread_unpublish(braid_scope *s) {
  atomic_store(&s->pub_thread, NULL);
  while (atomic_load(&s->remote_busy))
    sched_yield();
}

int braid_scope_enter(braid_task *task, braid_scope *s) {
  if (!s) return BRAID_EINVAL;
  if (task) {
    int rc = braid__check_running(task);
    if (rc) return rc;
  }
  if (s->state != BRAID__SCOPE_NEW) return BRAID_ESTATE;
  if (!task) return thread_enter(s);
  braid_loop *loop = task->loop;
  if (s->deadline != BRAID_NEVER &&
      !(atomic_load_explicit(&s->cancel_bits, memory_order_relaxed) & BRAID__CANCEL_CALLED)) {
    if (s->deadline <= braid__loop_now(loop)) {
      atomic_fetch_or_explicit(&s->cancel_bits, BRAID__CANCEL_CALLED, memory_order_relaxed);
    } else {
      s->timer.when = s->deadline;
      if (braid__heap_insert(&loop->heap, &s->timer) != 0) return BRAID_ENOMEM;
    }
  }
  s->task = task;
  if (task->scope) braid__scope_link_child(task->scope, s);
  braid__scope_move_task(task, s);
  s->state = BRAID__SCOPE_ENTERED;
  if (atomic_load_explicit(&s->refs, memory_order_relaxed) > 1) {
    /* Another thread may cancel it: publish the loop, then read the bits
     * (both sequentially consistent), so that either it sees the loop and
     * posts, or we see its cancellation. */
    atomic_store(&s->loop, loop);
    (void)atomic_load(&s->cancel_bits);
  } else
    atomic_store_explicit(&s->loop, loop, memory_order_relaxed);
  return 0;
}

static int catch_result(braid_scope *s, bool parent_visible, int rc, braid_time_t now) {
  if (rc == BRAID_ECANCELED && (atomic_load_explicit(&s->cancel_bits, memory_order_relaxed) & BRAID__CANCEL_CALLED) &&
      !parent_visible) {
    s->caught = 1;
    if (s->fail && s->deadline != BRAID_NEVER && now >= s->deadline) return BRAID_ETIMEDOUT;
    return 0;
  }
  return rc;
}

/* Pop s, the innermost scope of its task, and decide what propagates. */
int braid__scope_pop(braid_scope *s, int rc) {
  braid_task *t = s->task;
  braid_scope *p = s->parent;
  bool parent_visible = p && !s->shield && braid__scope_eff_cancelled(p);
  if (s->timer.idx != BRAID__NOT_IN_HEAP) braid__heap_remove(&t->loop->heap, &s->timer);
  braid__scope_unlink_child(s);
  braid__scope_move_task(t, p);
  s->state = BRAID__SCOPE_EXITED;
  braid__scope_unpublish(s);
  return catch_result(s, parent_visible, rc, s->fail ? braid__loop_now(t->loop) : 0);
}

static int thread_exit(braid_scope *s, int rc) {
  braid__thread *th = &braid__tls;
  if (s->thread != th) return BRAID_ESTATE;
  int misnested = 0;
  if (th->scope != s) {
    braid_scope *x = th->scope;
    while (x && x != s)
      x = x->parent;
    if (!x) return BRAID_ESTATE;
    for (x = th->scope; x != s;) {
      braid_scope *next = x->parent;
      braid__scope_unlink_child(x);
      atomic_fetch_or(&x->cancel_bits, BRAID__CANCEL_ABANDONED | BRAID__CANCEL_CALLED);
      thread_unpublish(x);
      x = next;
    }
    misnested = 1;
  }
  braid_scope *p = s->parent;
  bool parent_visible = !s->shield && braid__thread_scopes_cancelled(p) > 0;
  braid__scope_unlink_child(s);
  th->scope = p;
  s->state = BRAID__SCOPE_EXITED;
  thread_unpublish(s);
  if (s->deadline != BRAID_NEVER && s->deadline <= braid__real_now())
    atomic_fetch_or(&s->cancel_bits, BRAID__CANCEL_CALLED);
  int r = catch_result(s, parent_visible, rc, braid__real_now());
  return misnested ? BRAID_ESTATE : r;
}

int braid_scope_exit(braid_scope *s, int rc) {
  if (!s) return BRAID_EINVAL;
  if (s->state != BRAID__SCOPE_ENTERED) return BRAID_ESTATE;
  if (atomic_load_explicit(&s->cancel_bits, memory_order_relaxed) & BRAID__CANCEL_ABANDONED) {
    /* Detached when an outer scope was exited first; that exit already
     * reported the misnesting. */
    if (s->task ? s->task != braid__tls_current : s->thread != &braid__tls) return BRAID_ESTATE;
    s->state = BRAID__SCOPE_EXITED;
    return rc;
  }
  if (!s->task) return thread_exit(s, rc);
  braid_task *t = s->task;
  if (t != braid__tls_current) return t->loop == braid__tls.loop ? BRAID_ESTATE : BRAID_ETHREAD;
  if (t->state != BRAID__T_RUNNING) return BRAID_ESTATE; /* a stepped task with a wait registered */
  if (s->group) return BRAID_ESTATE;                     /* a group's scope is left by braid_group_close */
  if (t->scope != s) {
    braid_scope *x = t->scope;
    while (x && x != s && x->task == t)
      x = x->parent;
    if (x != s) return BRAID_ESTATE;
    braid__scope_abandon_above(t, s);
    braid__scope_pop(s, rc);
    s->caught = 0; /* the misnesting is the error; nothing was caught */
    return BRAID_ESTATE;
  }
  return braid__scope_pop(s, rc);
}

/* ---- cancel, deadline, shield ---- */

void braid__post_cancel(braid_loop *loop, braid_scope *s) {
  if (atomic_exchange(&s->remote_queued, 1)) return;
  braid_scope_ref(s);
  pthread_mutex_lock(&loop->remote_mu);
  s->remote_next = loop->remote_head;
  loop->remote_head = s;
  atomic_store(&loop->remote_pending, 1);
  uv_async_send(&loop->uv_async);
  pthread_mutex_unlock(&loop->remote_mu);
}

int braid_scope_cancel(braid_scope *s) {
  if (!s) return BRAID_EINVAL;
  braid_loop *me = braid__tls.loop;
  braid_loop *l = atomic_load_explicit(&s->loop, memory_order_relaxed);
  if (me && l == me) {
    braid__scope_cancel_local(me, s);
    return 0;
  }
  atomic_fetch_add(&s->remote_busy, 1);
  int was = atomic_fetch_or(&s->cancel_bits, BRAID__CANCEL_CALLED);
  l = atomic_load(&s->loop);
  if (l && !(was & BRAID__CANCEL_CALLED)) braid__post_cancel(l, s);
  braid__thread *th = atomic_load(&s->pub_thread);
  if (th) braid__thread_poke(th); /* a thread waiting inside re-checks its scopes */
  atomic_fetch_sub(&s->remote_busy, 1);
  return 0;
}

static int owner_check(const braid_scope *s) {
  if (s->state != BRAID__SCOPE_ENTERED) return 0;
  /* detached by misnesting: its task may be gone; it stays cancelled */
  if (atomic_load_explicit(&((braid_scope *)s)->cancel_bits, memory_order_relaxed) & BRAID__CANCEL_ABANDONED) return 0;
  if (s->task) return s->task->loop == braid__tls.loop ? 0 : BRAID_ETHREAD;
  return s->thread == &braid__tls ? 0 : BRAID_ETHREAD;
}

int braid_scope_set_deadline(braid_scope *s, braid_time_t deadline) {
  if (!s) return BRAID_EINVAL;
  int rc = owner_check(s);
  if (rc) return rc;
  if (s->state != BRAID__SCOPE_ENTERED || !s->task ||
      (atomic_load_explicit(&s->cancel_bits, memory_order_relaxed) & BRAID__CANCEL_CALLED)) {
    s->deadline = deadline;
    return 0;
  }
  braid_loop *loop = s->task->loop;
  if (deadline != BRAID_NEVER && deadline <= braid__loop_now(loop)) {
    s->deadline = deadline;
    braid__scope_cancel_local(loop, s);
    return 0;
  }
  if (deadline == BRAID_NEVER) {
    if (s->timer.idx != BRAID__NOT_IN_HEAP) braid__heap_remove(&loop->heap, &s->timer);
  } else if (s->timer.idx == BRAID__NOT_IN_HEAP) {
    s->timer.when = deadline;
    if (braid__heap_insert(&loop->heap, &s->timer) != 0) return BRAID_ENOMEM;
  } else {
    s->timer.when = deadline;
    braid__heap_update(&loop->heap, &s->timer);
  }
  s->deadline = deadline;
  return 0;
}

braid_time_t braid_scope_deadline(const braid_scope *s) { return s ? s->deadline : BRAID_NEVER; }

int braid_scope_set_shield(braid_scope *s, int shield) {
  if (!s) return BRAID_EINVAL;
  int rc = owner_check(s);
  if (rc) return rc;
  bool was = s->state == BRAID__SCOPE_ENTERED && s->task && braid__scope_eff_cancelled(s);
  s->shield = shield != 0;
  if (!was && s->state == BRAID__SCOPE_ENTERED && s->task && braid__scope_eff_cancelled(s)) braid__scope_deliver(s);
  return 0;
}

int braid_scope_shield(const braid_scope *s) { return s ? s->shield : 0; }

int braid_scope_cancel_called(const braid_scope *s) {
  if (!s) return 0;
  if (atomic_load(&((braid_scope *)s)->cancel_bits) & BRAID__CANCEL_CALLED) return 1;
  /* a thread scope's deadline is checked lazily */
  return !s->task && s->state == BRAID__SCOPE_ENTERED && s->deadline != BRAID_NEVER && s->deadline <= braid__real_now();
}

int braid_scope_cancelled_caught(const braid_scope *s) { return s ? s->caught : 0; }

/* ---- queries on tasks ---- */

braid_time_t braid_current_effective_deadline(const braid_task *task) {
  const braid_scope *s = task ? task->scope : braid__tls.scope;
  braid_time_t d = BRAID_NEVER;
  for (; s; s = s->parent) {
    if (atomic_load_explicit(&((braid_scope *)s)->cancel_bits, memory_order_relaxed)) return INT64_MIN;
    if (s->deadline < d) d = s->deadline;
    if (s->shield) break;
  }
  return d;
}

int braid_task_cancelled(const braid_task *task) {
  if (!task) return 0;
  return braid__scope_eff_cancelled(task->scope);
}

/* ---- helpers ---- */

static int after_helper(braid_task *task, braid_time_t duration, unsigned flags, braid_scope **out) {
  if (!task || !out) return BRAID_EINVAL;
  if (task->loop != braid__tls.loop) return BRAID_ETHREAD;
  braid_time_t now = braid__loop_now(task->loop);
  braid_time_t deadline = braid__time_add(now, duration);
  if (duration == BRAID_NEVER) deadline = BRAID_NEVER;
  braid_scope *s;
  int rc = braid__scope_alloc(task->loop, deadline, flags, &s);
  if (rc) return rc;
  rc = braid_scope_enter(task, s);
  if (rc) {
    scope_release(s);
    return rc;
  }
  *out = s;
  return 0;
}

int braid_move_on_after(braid_task *task, braid_time_t duration, braid_scope **out) {
  return after_helper(task, duration, 0, out);
}

int braid_fail_after(braid_task *task, braid_time_t duration, braid_scope **out) {
  return after_helper(task, duration, BRAID_FAIL, out);
}
