/*
 * braid.i — SWIG interface of braid._braid, the private module under the
 * `braid` package.
 *
 * SWIG wraps the functions of include/braid.h that make sense from Python
 * (the ones taking C callbacks or raw task pointers are left to the step
 * driver), with these conventions:
 *   - a negative int result (a BRAID_E* code) raises the matching Python
 *     exception (braid_py_raise); the value is returned otherwise;
 *   - braid objects are Handles (owned; freed when collected), so the
 *     *_free functions are not exposed; `T **out` parameters are results;
 *   - `braid_task *task` takes None only: the calling plain thread (the
 *     blocking calls then block this thread, honouring its cancel scopes);
 *   - statistics structs come back as dicts;
 *   - every call runs without the GIL (swig -threads), so a blocking call
 *     lets other Python threads run.
 * The step driver (driver.c) adds the coroutine machinery to the module.
 */
%module(package="braid") _braid

%{
#include "driver.h"
#include "driver.c"
%}

%init %{
  if (driver_init(m) < 0) return NULL;
%}

#define BRAID_API
%include <stdint.i>

/* ---- results and errors ---- */
%typemap(out) int {
  if ($1 < 0) {
    braid_py_raise($1);
    SWIG_fail;
  }
  $result = PyLong_FromLong($1);
}
%typemap(out) long {
  if ($1 < 0) {
    braid_py_raise((int)$1);
    SWIG_fail;
  }
  $result = PyLong_FromLong($1);
}

/* ---- the calling thread ---- */
%typemap(in) braid_task *task, const braid_task *task {
  if ($input != Py_None) {
    PyErr_SetString(PyExc_TypeError, "braid._braid: pass None as the task (the calling thread); tasks use the "
                                     "awaitable API of the braid package");
    SWIG_fail;
  }
  $1 = NULL;
}

/* ---- handles ---- */
%define BRAID_HANDLE(TYPE, KIND)
%typemap(in) TYPE * {
  $1 = (TYPE *)braid_py_handle($input, KIND);
  if (!$1) SWIG_fail;
}
%typemap(in, numinputs=0) TYPE **out (TYPE *tmp = NULL) { $1 = &tmp; }
%typemap(argout) TYPE **out {
  PyObject *h = braid_py_handle_new(*$1, KIND, NULL);
  if (!h) SWIG_fail;
  Py_DECREF($result);
  $result = h;
}
%enddef

BRAID_HANDLE(braid_lock, H_LOCK)
BRAID_HANDLE(braid_semaphore, H_SEMAPHORE)
BRAID_HANDLE(braid_event, H_EVENT)
BRAID_HANDLE(braid_condition, H_CONDITION)
BRAID_HANDLE(braid_limiter, H_LIMITER)
BRAID_HANDLE(braid_sender, H_SENDER)
BRAID_HANDLE(braid_receiver, H_RECEIVER)
BRAID_HANDLE(braid_loop, H_LOOP)
/* braid_condition_new(lock, out): the condition borrows the lock, so its
 * handle keeps the lock's handle (its only argument, swig_obj[0]) alive */
%typemap(argout) braid_condition **out {
  PyObject *h = braid_py_handle_new(*$1, H_CONDITION, swig_obj[0]);
  if (!h) SWIG_fail;
  Py_DECREF($result);
  $result = h;
}
%typemap(in) const braid_loop * {
  $1 = (braid_loop *)braid_py_handle($input, H_LOOP);
  if (!$1) SWIG_fail;
}

/* ---- statistics come back as dicts ---- */
%{
static PyObject *lock_stats_dict(const braid_lock_stats *s) {
  return Py_BuildValue("{s:O,s:i,s:K,s:n}", "locked", s->locked ? Py_True : Py_False, "owner_kind", s->owner_kind,
                       "owner_id", (unsigned long long)s->owner_id, "waiting", (Py_ssize_t)s->waiting);
}
%}
%define BRAID_STATS(TYPE, BUILD)
%typemap(in, numinputs=0) TYPE *out (TYPE tmp) {
  memset(&tmp, 0, sizeof tmp);
  tmp.size = sizeof tmp;
  $1 = &tmp;
}
%typemap(argout) TYPE *out {
  const TYPE *s = $1;
  PyObject *d = BUILD;
  if (!d) SWIG_fail;
  Py_DECREF($result);
  $result = d;
}
%enddef

BRAID_STATS(braid_lock_stats, lock_stats_dict(s))
BRAID_STATS(braid_semaphore_stats,
            Py_BuildValue("{s:K,s:K,s:n}", "value", (unsigned long long)s->value, "max", (unsigned long long)s->max,
                          "waiting", (Py_ssize_t)s->waiting))
BRAID_STATS(braid_event_stats,
            Py_BuildValue("{s:O,s:n}", "set", s->set ? Py_True : Py_False, "waiting", (Py_ssize_t)s->waiting))
BRAID_STATS(braid_limiter_stats,
            Py_BuildValue("{s:K,s:K,s:n}", "total", (unsigned long long)s->total, "borrowed",
                          (unsigned long long)s->borrowed, "waiting", (Py_ssize_t)s->waiting))
BRAID_STATS(braid_channel_stats,
            Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:n}", "buffered", (Py_ssize_t)s->buffered, "max_buffer",
                          s->max_buffer == SIZE_MAX ? PY_SSIZE_T_MAX : (Py_ssize_t)s->max_buffer, "open_senders",
                          (Py_ssize_t)s->open_senders, "open_receivers", (Py_ssize_t)s->open_receivers,
                          "waiting_send", (Py_ssize_t)s->waiting_send, "waiting_receive",
                          (Py_ssize_t)s->waiting_receive))
BRAID_STATS(braid_loop_stats,
            Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K}", "tasks_alive", (unsigned long long)s->tasks_alive,
                          "tasks_spawned", (unsigned long long)s->tasks_spawned, "switches",
                          (unsigned long long)s->switches, "steps", (unsigned long long)s->steps, "stacks_cached",
                          (unsigned long long)s->stacks_cached, "stacks_mapped",
                          (unsigned long long)s->stacks_mapped))
BRAID_STATS(braid_worker_stats,
            Py_BuildValue("{s:K,s:K,s:K}", "alive", (unsigned long long)s->alive, "busy",
                          (unsigned long long)s->busy, "idle", (unsigned long long)s->idle))
%typemap(in, numinputs=0) braid_condition_stats *out (braid_condition_stats tmp) {
  memset(&tmp, 0, sizeof tmp);
  tmp.size = sizeof tmp;
  tmp.lock.size = sizeof tmp.lock;
  $1 = &tmp;
}
%typemap(argout) braid_condition_stats *out {
  PyObject *d = Py_BuildValue("{s:n,s:N}", "waiting", (Py_ssize_t)$1->waiting, "lock", lock_stats_dict(&$1->lock));
  if (!d) SWIG_fail;
  Py_DECREF($result);
  $result = d;
}

/* ---- left to the step driver or not meaningful from Python ---- */
%ignore braid_set_allocator;
%ignore braid_allocator;
%ignore braid_run;
%ignore braid_run_stepped;
%ignore braid_run_opts;
%ignore braid_spawn_opts;
%ignore braid_current_task;
%ignore braid_task_loop;
%ignore braid_task_id;
%ignore braid_task_name;
%ignore braid_task_is_stepped;
%ignore braid_task_set_user;
%ignore braid_task_user;
%ignore braid_now;
%ignore braid_task_cancelled;
%ignore braid_checkpoint;
%ignore braid_checkpoint_if_cancelled;
%ignore braid_cancel_shielded_checkpoint;
%ignore braid_move_on_after;
%ignore braid_fail_after;
%rename("$ignore", regextarget=1) "^braid_scope_";
%rename("$ignore", regextarget=1) "^braid_group_";
%rename("$ignore", regextarget=1) "_cb$";
%rename("$ignore", regextarget=1) "_free$";
%rename("$ignore", regextarget=1) "^braid_future_";
%rename("$ignore", regextarget=1) "^braid_portal_";
%rename("$ignore", regextarget=1) "^braid_from_thread_";
%ignore braid_current_effective_deadline;
%ignore braid_task_started;
%ignore braid_task_fail;
%ignore braid_wait_cancel;
%ignore braid_to_thread;
%ignore braid_loop_ref;
%ignore braid_loop_unref;
%ignore braid_loop_default_limiter;
%ignore braid_channel_new;
%ignore braid_channel_send;
%ignore braid_channel_send_nowait;
%ignore braid_channel_receive;
%ignore braid_channel_receive_nowait;
%ignore braid_limiter_borrowers;
%ignore braid_debug_deadlock_cycle;
%ignore braid_lock_stats;
%ignore braid_semaphore_stats;
%ignore braid_event_stats;
%ignore braid_condition_stats;
%ignore braid_limiter_stats;
%ignore braid_channel_stats;
%ignore braid_loop_stats;
%ignore braid_worker_stats;
%ignore braid_portal_opts;

%include "braid.h"
