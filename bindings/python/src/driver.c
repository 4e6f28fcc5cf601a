/*
 * driver.c — the step driver of braid._braid (CPython API).
 *
 * Included into the SWIG wrapper (braid.i), so the module has one
 * translation unit. Python tasks are braid *stepped* tasks: py_step() is
 * their braid_step_fn and advances the task's coroutine with PyIter_Send.
 * An awaitable braid operation is an Op: the first time the coroutine
 * awaits it, it calls the braid function for the running task. A stepped
 * task gets BRAID_EPENDING when the call registered a wait; the Op then
 * yields itself, py_step sees an Op and returns BRAID_EPENDING to the
 * scheduler, and when the wait is over the scheduler steps the task again
 * with the outcome, which the Op turns into its result or exception. No
 * Python-level polling, no C stack per task.
 *
 * The GIL: the loop thread holds it while tasks run and releases it in the
 * loop's before_poll hook (and takes it back in after_poll), so worker
 * threads run Python code exactly while the loop waits.
 */
#include "driver.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Exceptions                                                          */
/* ------------------------------------------------------------------ */

static PyObject *exc_cancelled;     /* braid.Cancelled (BaseException) */
static PyObject *exc_would_block;   /* braid.WouldBlock */
static PyObject *exc_end_of_stream; /* braid.EndOfStream */
static PyObject *exc_broken;        /* braid.BrokenResourceError */
static PyObject *exc_closed;        /* braid.ClosedResourceError */
static PyObject *exc_deadlock;      /* braid.DeadlockError (RuntimeError) */
static PyObject *exc_busy;          /* braid.BusyResourceError (RuntimeError) */

/* Messages (AnyIO's, where it has one) raised from more than one place */
static const char msg_borrower_holds[] = "this borrower is already holding one of this CapacityLimiter's tokens";
static const char msg_group_inactive[] = "This task group is not active; no new tasks can be started.";
static const char msg_on_loop_thread[] = "This function cannot be called from the event loop thread";
static const char msg_loop_gone[] = "the event loop is no longer running";

static PyObject *braid_py_raise(int code) {
  PyObject *type;
  switch (code) {
  case BRAID_ECANCELED:
    PyErr_SetNone(exc_cancelled);
    return NULL;
  case BRAID_EWOULDBLOCK:
    PyErr_SetNone(exc_would_block);
    return NULL;
  case BRAID_EEOF:
    PyErr_SetNone(exc_end_of_stream);
    return NULL;
  case BRAID_EBROKEN:
    PyErr_SetNone(exc_broken);
    return NULL;
  case BRAID_ECLOSED:
    type = exc_closed;
    break;
  case BRAID_ENOMEM:
    return PyErr_NoMemory();
  case BRAID_ESYS:
    return PyErr_SetFromErrno(PyExc_OSError);
  case BRAID_ETIMEDOUT:
    type = PyExc_TimeoutError;
    break;
  case BRAID_EINVAL:
    type = PyExc_ValueError;
    break;
  case BRAID_EDEADLK:
    type = exc_deadlock;
    break;
  default:
    type = PyExc_RuntimeError;
    break;
  }
  PyErr_Format(type, "%s (%s)", braid_strerror(code), braid_errname(code));
  return NULL;
}

/* ------------------------------------------------------------------ */
/* Time                                                                */
/* ------------------------------------------------------------------ */

/* Seconds (float, may be inf) to nanoseconds, saturating. */
static int seconds_to_ns(PyObject *o, braid_time_t *out) {
  double d = PyFloat_AsDouble(o);
  if (d == -1.0 && PyErr_Occurred()) return -1;
  if (isnan(d)) {
    PyErr_SetString(PyExc_ValueError, "time must not be NaN");
    return -1;
  }
  double ns = d * 1e9;
  if (ns >= 9.2e18)
    *out = BRAID_NEVER;
  else if (ns <= -9.2e18)
    *out = INT64_MIN + 1;
  else
    *out = (braid_time_t)llround(ns);
  return 0;
}

static PyObject *ns_to_seconds(braid_time_t t) {
  if (t == BRAID_NEVER) return PyFloat_FromDouble(INFINITY);
  if (t <= INT64_MIN + 1) return PyFloat_FromDouble(-INFINITY); /* seconds_to_ns(-inf) is INT64_MIN + 1 */
  return PyFloat_FromDouble((double)t / 1e9);
}

/* ------------------------------------------------------------------ */
/* Handles                                                             */
/* ------------------------------------------------------------------ */

typedef struct {
  PyObject_HEAD void *p;
  int kind;
  int borrowed;   /* not ours to free */
  PyObject *keep; /* another object this one needs alive (a condition's lock) */
  uint64_t host;  /* a group's: id of the task that opened it, its tasks' parent (AnyIO) */
} HandleObj;

static PyTypeObject HandleType;

static const char *const handle_names[H_KINDS] = {"?",       "lock",   "semaphore", "event", "condition",
                                                  "limiter", "sender", "receiver",  "group", "loop"};

static void handle_release(HandleObj *h) {
  void *p = h->p;
  h->p = NULL;
  if (!p || h->borrowed) return;
  switch (h->kind) {
  case H_LOCK:
    braid_lock_free(p);
    break;
  case H_SEMAPHORE:
    braid_semaphore_free(p);
    break;
  case H_EVENT:
    braid_event_free(p);
    break;
  case H_CONDITION:
    braid_condition_free(p);
    break;
  case H_LIMITER:
    braid_limiter_free(p);
    break;
  case H_SENDER:
    braid_sender_free(p);
    break;
  case H_RECEIVER:
    braid_receiver_free(p);
    break;
  case H_GROUP:
    braid_group_free(p);
    break;
  case H_LOOP:
    braid_loop_unref(p);
    break;
  }
}

static void handle_dealloc(HandleObj *h) {
  handle_release(h);
  Py_CLEAR(h->keep);
  Py_TYPE(h)->tp_free((PyObject *)h);
}

static PyObject *handle_repr(HandleObj *h) {
  return PyUnicode_FromFormat("<braid %s handle %p>", handle_names[h->kind], h->p);
}

static PyObject *handle_index(HandleObj *h) { return PyLong_FromVoidPtr(h->p); }

static PyNumberMethods handle_as_number = {.nb_index = (unaryfunc)handle_index, .nb_int = (unaryfunc)handle_index};

static PyTypeObject HandleType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "braid._braid.Handle",
    .tp_basicsize = sizeof(HandleObj),
    .tp_dealloc = (destructor)handle_dealloc,
    .tp_repr = (reprfunc)handle_repr,
    .tp_as_number = &handle_as_number,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An owned braid object (lock, channel end, ...). int(handle) is its C address, "
              "valid while the handle lives.",
};

static PyObject *braid_py_handle_new(void *p, int kind, PyObject *keep) {
  HandleObj *h = PyObject_New(HandleObj, &HandleType);
  if (!h) {
    HandleObj tmp = {.p = p, .kind = kind, .borrowed = 0};
    handle_release(&tmp);
    return NULL;
  }
  h->p = p;
  h->kind = kind;
  h->borrowed = 0;
  h->keep = keep;
  Py_XINCREF(keep);
  h->host = 0;
  return (PyObject *)h;
}

static void *braid_py_handle(PyObject *o, int kind) {
  if (Py_TYPE(o) != &HandleType || ((HandleObj *)o)->kind != kind) {
    PyErr_Format(PyExc_TypeError, "expected a braid %s handle, got %.100s", handle_names[kind], Py_TYPE(o)->tp_name);
    return NULL;
  }
  void *p = ((HandleObj *)o)->p;
  if (!p) PyErr_Format(PyExc_ValueError, "the braid %s handle was released", handle_names[kind]);
  return p;
}

/* ------------------------------------------------------------------ */
/* Run state and tasks                                                 */
/* ------------------------------------------------------------------ */

typedef struct runstate {
  PyThreadState *saved;    /* while the loop polls without the GIL */
  int wake_fd;             /* read end of the signal wake-up pipe, or -1 */
  int main_thread;         /* signals are handled (PyErr_CheckSignals) */
  PyObject *tasks;         /* dict: id -> Task, every live Python task */
  PyObject *pending;       /* an exception raised by a signal handler */
  braid_scope *root_scope; /* the main task's scope: cancelled when a handler raised */
  braid_loop *loop;
  PyObject *default_limiter; /* the borrowed Handle of the loop's default limiter, released at the end */
} runstate;

enum { TK_ROOT = 0, TK_CHILD, TK_EXTERNAL };

typedef struct TaskObj {
  PyObject_HEAD braid_task *task; /* while it runs */
  PyObject *coro;
  PyObject *name;       /* str given by the caller, or NULL */
  PyObject *name_of;    /* or the function it runs: named module.qualname on demand */
  PyObject *result;     /* return value (root and external tasks) */
  PyObject *exc;        /* exception (root and external tasks) */
  PyObject *throw_exc;  /* to throw into the coroutine at the next step */
  PyObject *waiting_op; /* the Operation whose wait is registered: braid may still write into it */
  uint64_t id, parent_id;
  int resume;          /* outcome of the last wait */
  int kind;            /* TK_* */
  int stepped;         /* has been stepped at least once */
  int starting;        /* created by TaskGroup.start(): braid takes its started() value */
  uint64_t group_host; /* started: the task that opened the group it moves into */
  runstate *rs;
} TaskObj;

static PyTypeObject TaskType;
static _Thread_local TaskObj *cur_task;       /* the Python task being stepped */
static _Thread_local runstate *cur_rs;        /* the braid.run on this thread */
static _Thread_local braid_loop *worker_loop; /* to_thread: the loop the job came from */

static TaskObj *task_new(PyObject *coro, PyObject *name, int kind) {
  TaskObj *t = PyObject_GC_New(TaskObj, &TaskType);
  if (!t) return NULL;
  t->task = NULL;
  t->coro = Py_NewRef(coro);
  t->name = t->name_of = NULL;
  if (name && PyUnicode_Check(name))
    t->name = Py_NewRef(name);
  else if (name && name != Py_None)
    t->name_of = Py_NewRef(name); /* computing the name per spawn would cost more than the spawn */
  t->result = t->exc = t->throw_exc = t->waiting_op = NULL;
  t->id = t->parent_id = 0;
  t->resume = 0;
  t->kind = kind;
  t->stepped = 0;
  t->starting = 0;
  t->group_host = 0;
  t->rs = NULL;
  if (cur_task) t->parent_id = cur_task->id;
  PyObject_GC_Track(t);
  return t;
}

static int task_traverse(TaskObj *t, visitproc visit, void *arg) {
  Py_VISIT(t->coro);
  Py_VISIT(t->name);
  Py_VISIT(t->name_of);
  Py_VISIT(t->result);
  Py_VISIT(t->exc);
  Py_VISIT(t->throw_exc);
  Py_VISIT(t->waiting_op);
  return 0;
}

static int task_clear(TaskObj *t) {
  Py_CLEAR(t->coro);
  Py_CLEAR(t->name);
  Py_CLEAR(t->name_of);
  Py_CLEAR(t->result);
  Py_CLEAR(t->exc);
  Py_CLEAR(t->throw_exc);
  Py_CLEAR(t->waiting_op);
  return 0;
}

static void task_dealloc(TaskObj *t) {
  PyObject_GC_UnTrack(t);
  task_clear(t);
  PyObject_GC_Del(t);
}

static PyObject *task_get_name(TaskObj *t, void *c) {
  (void)c;
  if (t->name) return Py_NewRef(t->name);
  if (t->name_of) { /* AnyIO's default: module.qualname of the function */
    PyObject *mod = PyObject_GetAttrString(t->name_of, "__module__");
    if (!mod) PyErr_Clear();
    PyObject *q = PyObject_GetAttrString(t->name_of, "__qualname__");
    if (!q) PyErr_Clear();
    PyObject *r = NULL;
    if (mod && PyUnicode_Check(mod) && q && PyUnicode_Check(q))
      r = PyUnicode_FromFormat("%U.%U", mod, q);
    else if (q && PyUnicode_Check(q))
      r = Py_NewRef(q);
    Py_XDECREF(mod);
    Py_XDECREF(q);
    if (r) {
      Py_XSETREF(t->name, r);
      return Py_NewRef(r);
    }
  }
  if (t->coro) {
    PyObject *q = PyObject_GetAttrString(t->coro, "__qualname__");
    if (q) return q;
    PyErr_Clear();
  }
  return PyUnicode_FromFormat("task-%llu", (unsigned long long)t->id);
}
static PyObject *task_get_id(TaskObj *t, void *c) {
  (void)c;
  return PyLong_FromUnsignedLongLong(t->id);
}
static PyObject *task_get_parent_id(TaskObj *t, void *c) {
  (void)c;
  if (!t->parent_id) Py_RETURN_NONE;
  return PyLong_FromUnsignedLongLong(t->parent_id);
}
static PyObject *task_get_coro(TaskObj *t, void *c) {
  (void)c;
  return Py_NewRef(t->coro ? t->coro : Py_None);
}

static PyGetSetDef task_getset[] = {
    {"name", (getter)task_get_name, NULL, "the task's name", NULL},
    {"id", (getter)task_get_id, NULL, "the braid task id (unique in the process)", NULL},
    {"parent_id", (getter)task_get_parent_id, NULL, "id of the task that spawned it, or None", NULL},
    {"coro", (getter)task_get_coro, NULL, "the task's coroutine", NULL},
    {NULL}};

static PyTypeObject TaskType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "braid._braid.Task",
    .tp_basicsize = sizeof(TaskObj),
    .tp_dealloc = (destructor)task_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)task_traverse,
    .tp_clear = (inquiry)task_clear,
    .tp_getset = task_getset,
    .tp_doc = "A braid task running a Python coroutine.",
};

/* The running Python task, or NULL with RuntimeError set. */
static TaskObj *need_task(const char *what) {
  TaskObj *t = cur_task;
  if (t) return t;
  if (cur_rs)
    PyErr_Format(PyExc_RuntimeError, "braid: %s must be awaited in a braid task, not called from the loop's callbacks",
                 what);
  else
    PyErr_Format(PyExc_RuntimeError,
                 "braid: %s needs a running braid event loop: call it from a task inside braid.run()", what);
  return NULL;
}

static void decref_payload(void *p) {
  PyGILState_STATE g = PyGILState_Ensure();
  Py_DECREF((PyObject *)p);
  PyGILState_Release(g);
}

/* Fetch the current exception, normalized; returns a new reference. */
static PyObject *fetch_exc(void) {
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (tb && value) PyException_SetTraceback(value, tb);
  Py_XDECREF(type);
  Py_XDECREF(tb);
  return value ? value : Py_NewRef(Py_None);
}

/* The task's coroutine ended with r / res: turn it into the task's result. */
static int task_finish(TaskObj *t, braid_task *self, PySendResult r, PyObject *res) {
  int rc = 0;
  if (r == PYGEN_RETURN) {
    Py_XSETREF(t->result, res);
  } else {
    PyObject *exc = fetch_exc();
    if (PyObject_TypeCheck(exc, (PyTypeObject *)exc_cancelled)) {
      rc = BRAID_ECANCELED;
      Py_XSETREF(t->exc, exc);
    } else if (t->kind == TK_CHILD) {
      rc = braid_task_fail(self, 1, exc, decref_payload); /* the group owns exc now */
    } else {
      rc = 1;
      Py_XSETREF(t->exc, exc);
    }
  }
  t->task = NULL;
  if (t->rs && t->rs->tasks) {
    PyObject *key = PyLong_FromUnsignedLongLong(t->id);
    if (!key || PyDict_DelItem(t->rs->tasks, key) < 0) PyErr_Clear();
    Py_XDECREF(key);
  }
  if (t->kind == TK_CHILD) Py_CLEAR(t->coro);
  return rc;
}

static PyTypeObject OpType;
enum { OP_NEW = 0, OP_WAITING, OP_DONE };
static int op_waits_for(PyObject *op, TaskObj *t);

/* Throw `exc` into the coroutine; like PyIter_Send for the outcome. */
static PySendResult coro_throw(PyObject *coro, PyObject *exc, PyObject **res) {
  PyObject *r = PyObject_CallMethod(coro, "throw", "O", exc);
  if (r) {
    *res = r;
    return PYGEN_NEXT;
  }
  if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
    PyObject *e = fetch_exc();
    *res = PyObject_GetAttrString(e, "value");
    Py_DECREF(e);
    if (*res) return PYGEN_RETURN;
  }
  *res = NULL;
  return PYGEN_ERROR;
}

/* Close a coroutine that will never run (no "never awaited" warning), keeping any error set. */
static void close_coro(PyObject *coro) {
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyObject *r = PyObject_CallMethod(coro, "close", NULL);
  if (r)
    Py_DECREF(r);
  else
    PyErr_Clear();
  PyErr_Restore(type, value, tb);
}

/* braid_step_fn of every Python task. Runs on the loop thread with the GIL. */
/* Bind t to its braid task and list it in get_running_tasks(): when it is
 * spawned, or at its first step (root, started and external tasks). */
static void task_register(TaskObj *t, braid_task *self) {
  t->task = self;
  t->id = braid_task_id(self);
  if (!t->rs) t->rs = cur_rs;
  if (t->rs && !t->rs->loop) t->rs->loop = braid_task_loop(self);
  if (t->rs && t->rs->tasks) {
    PyObject *key = PyLong_FromUnsignedLongLong(t->id);
    if (!key || PyDict_SetItem(t->rs->tasks, key, (PyObject *)t) < 0) PyErr_Clear();
    Py_XDECREF(key);
  }
}

static int py_step(braid_task *self, void *ctx, int resume) {
  TaskObj *t = ctx;
  if (!t->stepped) {
    t->stepped = 1;
    if (!t->id) task_register(t, self);
  }
  t->resume = resume;
  TaskObj *prev = cur_task;
  cur_task = t;
  PyObject *res;
  PySendResult r;
  for (;;) {
    if (t->throw_exc) {
      PyObject *e = t->throw_exc;
      t->throw_exc = NULL;
      r = coro_throw(t->coro, e, &res);
      Py_DECREF(e);
    } else {
      r = PyIter_Send(t->coro, Py_None, &res);
    }
    if (r != PYGEN_NEXT) break;
    if (Py_IS_TYPE(res, &OpType)) {
      int ours = op_waits_for(res, t); /* op_am_send registered this task's wait */
      Py_DECREF(res);
      if (ours) {
        cur_task = prev;
        return BRAID_EPENDING;
      }
      PyErr_SetString(PyExc_TypeError, "a braid operation was yielded instead of awaited: use 'await' (or "
                                       "'yield from' in a generator-based coroutine)");
      t->throw_exc = fetch_exc();
      continue;
    }
    /* Something that is not a braid operation: asyncio futures, Trio's
     * traps... Fail the await where it happened. */
    PyObject *repr = PyObject_Repr(res);
    Py_DECREF(res);
    if (!repr) {
      t->throw_exc = fetch_exc();
      continue;
    }
    PyErr_Format(PyExc_TypeError,
                 "braid cannot await this: the awaitable yielded %U, which is not a braid operation "
                 "(an awaitable of another event loop, such as an asyncio future or a Trio primitive, "
                 "was awaited inside braid.run)",
                 repr);
    Py_DECREF(repr);
    t->throw_exc = fetch_exc();
  }
  cur_task = prev;
  Py_CLEAR(t->waiting_op); /* its coroutine was closed while it waited */
  int rc = task_finish(t, self, r, res);
  Py_DECREF(t); /* the reference the braid task held */
  return rc;
}

/* ------------------------------------------------------------------ */
/* Jobs: to_thread                                                     */
/* ------------------------------------------------------------------ */

typedef struct job {
  int refs;    /* under the GIL: the Op's and the worker's */
  int started; /* run_job began (the worker's reference is in use) */
  PyObject *fn, *args;
  PyObject *result, *exc;
  braid_loop *loop;
  uintptr_t id; /* braid gets the id, not the pointer (live_jobs) */
} job;

/* Jobs handed to braid_to_thread, under the GIL: id -> address. The worker
 * (run_job) takes its job out before fn starts; a task that gives up on a
 * job that has not started (refused, cancelled before it started, or
 * abandoned, even while it waited for its limiter token, where no worker
 * ever comes) takes it out and frees it. A worker that comes later finds
 * nothing and runs nothing, as AnyIO skips an abandoned call. */
static PyObject *live_jobs;
static uintptr_t job_seq;

/* Take job `id` out of live_jobs: the job, or NULL if it is gone. */
static job *job_take(uintptr_t id) {
  PyObject *key = PyLong_FromSize_t(id);
  PyObject *addr = key ? PyDict_GetItemWithError(live_jobs, key) : NULL;
  job *j = addr ? PyLong_AsVoidPtr(addr) : NULL;
  if (j && PyDict_DelItem(live_jobs, key) < 0) j = NULL;
  Py_XDECREF(key);
  PyErr_Clear();
  return j;
}

static void job_unref(job *j) {
  if (--j->refs) return;
  Py_XDECREF(j->fn);
  Py_XDECREF(j->args);
  Py_XDECREF(j->result);
  Py_XDECREF(j->exc);
  if (j->loop) braid_loop_unref(j->loop);
  PyMem_RawFree(j);
}

/* Worker threads keep one Python thread state for their life (taking it
 * again costs far less than creating one per job); it is deleted when the
 * thread exits. */
static pthread_key_t worker_key;

static void worker_key_dtor(void *p) {
  /* The PyGILState API cannot be used here: its own thread-specific key may
   * already be cleared while the thread exits. Delete the state directly. */
  PyThreadState *ts = p;
  if (!Py_IsInitialized() || _Py_IsFinalizing()) return;
  PyEval_RestoreThread(ts);
  PyThreadState_Clear(ts);
  PyThreadState_DeleteCurrent(); /* and releases the GIL */
}

/* Loops waiting for events without the GIL right now. A worker that
 * finds none spins a little for one before it asks for the GIL: the loop
 * that sent the job usually releases it microseconds later, and taking a
 * free GIL is far cheaper than being woken when it is handed over. */
static atomic_int loops_polling;

static void wait_for_free_gil(void) {
  if (atomic_load_explicit(&loops_polling, memory_order_acquire)) return;
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    for (int i = 0; i < 128; i++) {
      if (atomic_load_explicit(&loops_polling, memory_order_acquire)) return;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    clock_gettime(CLOCK_MONOTONIC, &t);
    if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > 50000) return;
  }
}

static int run_job(void *arg) {
  if (!Py_IsInitialized() || _Py_IsFinalizing()) return BRAID_ESTATE;
  wait_for_free_gil();
  PyGILState_STATE g = PyGILState_Ensure();
  if (!pthread_getspecific(worker_key)) {
    /* keep this thread's state: one more hold, never released; the state
     * is deleted when the thread exits */
    PyGILState_Ensure();
    pthread_setspecific(worker_key, PyThreadState_Get());
  }
  job *j = job_take((uintptr_t)arg);
  if (!j) { /* the task gave up on it before it started */
    PyGILState_Release(g);
    return BRAID_ECANCELED;
  }
  j->started = 1;
  braid_loop *prev = worker_loop;
  worker_loop = j->loop;
  PyObject *res = PyObject_Call(j->fn, j->args, NULL);
  worker_loop = prev;
  int rc = 0;
  if (res)
    j->result = res;
  else {
    j->exc = fetch_exc();
    rc = 1;
  }
  job_unref(j);
  PyGILState_Release(g);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Ops: awaitable braid operations                                     */
/* ------------------------------------------------------------------ */

enum {
  K_CHECKPOINT = 1,
  K_SHIELDED_CHECKPOINT,
  K_IF_CANCELLED,
  K_SLEEP,
  K_SLEEP_UNTIL,
  K_SLEEP_FOREVER,
  K_LOCK,
  K_SEMAPHORE,
  K_EVENT,
  K_CONDITION,
  K_LIMITER,
  K_SEND,
  K_RECEIVE,
  K_GROUP_CLOSE,
  K_GROUP_START,
  K_TO_THREAD,
  K_DONE
};

typedef struct {
  PyObject_HEAD int kind;
  int state;
  int64_t i64;     /* nanoseconds, borrower, flags, rc */
  PyObject *owner; /* the handle operated on (kept alive) */
  PyObject *obj;   /* item to send, started child, limiter handle, value */
  void *item;      /* receive slot / started value */
  job *job;
  uint64_t waiter; /* id of the task whose wait it registered (OP_WAITING) */
} OpObj;

static int op_waits_for(PyObject *op, TaskObj *t) {
  return ((OpObj *)op)->state == OP_WAITING && ((OpObj *)op)->waiter == t->id;
}

static OpObj *op_freelist[64];
static int op_nfree;

static OpObj *op_new(int kind, PyObject *owner) {
  OpObj *op;
  if (op_nfree) {
    op = op_freelist[--op_nfree];
    _Py_NewReference((PyObject *)op);
  } else {
    op = PyObject_New(OpObj, &OpType);
    if (!op) return NULL;
  }
  op->kind = kind;
  op->state = OP_NEW;
  op->i64 = 0;
  op->owner = owner;
  Py_XINCREF(owner);
  op->obj = NULL;
  op->item = NULL;
  op->job = NULL;
  op->waiter = 0;
  return op;
}

static void op_dealloc(OpObj *op) {
  Py_CLEAR(op->owner);
  Py_CLEAR(op->obj);
  if (op->item && (op->kind == K_RECEIVE || op->kind == K_GROUP_START)) {
    Py_DECREF((PyObject *)op->item); /* received but never delivered */
    op->item = NULL;
  }
  if (op->job) {
    job_unref(op->job);
    op->job = NULL;
  }
  if (op_nfree < 64)
    op_freelist[op_nfree++] = op;
  else
    PyObject_Free(op);
}

static braid_spawn_opts name_opts(PyObject *name, braid_spawn_opts *o) {
  memset(o, 0, sizeof *o);
  o->size = sizeof *o;
  if (name && name != Py_None && PyUnicode_Check(name)) {
    o->name = PyUnicode_AsUTF8(name);
    if (!o->name) PyErr_Clear(); /* not UTF-8 encodable (lone surrogates): braid's default name */
  }
  return *o;
}

/* Start the operation for task t. Returns a braid code. */
static int op_perform(OpObj *op, TaskObj *t) {
  braid_task *bt = t->task;
  switch (op->kind) {
  case K_CHECKPOINT:
    return braid_checkpoint(bt);
  case K_SHIELDED_CHECKPOINT:
    return braid_cancel_shielded_checkpoint(bt);
  case K_IF_CANCELLED:
    return braid_checkpoint_if_cancelled(bt);
  case K_SLEEP:
    return braid_sleep(bt, op->i64);
  case K_SLEEP_UNTIL:
    return braid_sleep_until(bt, op->i64);
  case K_SLEEP_FOREVER:
    return braid_sleep_forever(bt);
  case K_LOCK:
    return braid_lock_acquire(bt, ((HandleObj *)op->owner)->p);
  case K_SEMAPHORE:
    return braid_semaphore_acquire(bt, ((HandleObj *)op->owner)->p);
  case K_EVENT:
    return braid_event_wait(bt, ((HandleObj *)op->owner)->p);
  case K_CONDITION:
    return braid_condition_wait(bt, ((HandleObj *)op->owner)->p);
  case K_LIMITER:
    if (op->i64) return braid_limiter_acquire_on_behalf(bt, ((HandleObj *)op->owner)->p, (uint64_t)op->i64);
    return braid_limiter_acquire(bt, ((HandleObj *)op->owner)->p);
  case K_SEND:
    return braid_channel_send(bt, ((HandleObj *)op->owner)->p, op->obj);
  case K_RECEIVE:
    return braid_channel_receive(bt, ((HandleObj *)op->owner)->p, &op->item);
  case K_GROUP_CLOSE:
    return braid_group_close(((HandleObj *)op->owner)->p, (int)op->i64);
  case K_GROUP_START: {
    TaskObj *child = (TaskObj *)op->obj;
    braid_spawn_opts o;
    name_opts(child->name, &o);
    Py_INCREF(child); /* for the braid task */
    int rc = braid_group_start_stepped(((HandleObj *)op->owner)->p, bt, py_step, child, &o, &op->item);
    if (rc != 0 && rc != BRAID_EPENDING && !child->stepped) { /* refused: it never runs */
      close_coro(child->coro);
      Py_DECREF(child);
    }
    return rc;
  }
  case K_TO_THREAD: {
    braid_limiter *lim = op->obj ? ((HandleObj *)op->obj)->p : NULL;
    PyObject *key = PyLong_FromSize_t(op->job->id), *addr = key ? PyLong_FromVoidPtr(op->job) : NULL;
    int bad = !addr || PyDict_SetItem(live_jobs, key, addr) < 0;
    Py_XDECREF(key);
    Py_XDECREF(addr);
    if (bad) {
      PyErr_Clear();
      return BRAID_ENOMEM;
    }
    op->job->refs++; /* the worker's, dropped in op_outcome if fn never runs */
    return braid_to_thread(bt, run_job, (void *)op->job->id, (unsigned)op->i64, lim);
  }
  }
  return BRAID_EINVAL;
}

/* The operation is over with rc: produce its value (new ref) or NULL with
 * an exception. */
static PyObject *op_outcome(OpObj *op, int rc) {
  int was_waiting = op->state == OP_WAITING;
  op->state = OP_DONE;
  switch (op->kind) {
  case K_LIMITER:
    if (rc == BRAID_EDEADLK) { /* as limiter_acquire_nowait: AnyIO's error */
      PyErr_SetString(PyExc_RuntimeError, msg_borrower_holds);
      return NULL;
    }
    break;
  case K_SEND:
    if (rc == 0) op->obj = NULL; /* the channel owns that reference now (on an error, still we do) */
    break;
  case K_RECEIVE:
    if (rc == 0) {
      PyObject *v = op->item;
      op->item = NULL;
      return v;
    }
    break;
  case K_GROUP_CLOSE:
    return PyLong_FromLong(rc);
  case K_GROUP_START: {
    PyObject *v = op->item;
    op->item = NULL;
    if (rc == 0) return v ? v : Py_NewRef(Py_None);
    if (rc > 0 && v) { /* the child's exception, ours now */
      PyErr_SetObject((PyObject *)Py_TYPE(v), v);
      Py_DECREF(v);
      return NULL;
    }
    Py_XDECREF(v);
    if (rc == BRAID_ESTATE) { /* refused at once: the group is closed (to new arrivals) */
      PyErr_SetString(PyExc_RuntimeError,
                      was_waiting ? "child exited without calling task_status.started()" : msg_group_inactive);
      return NULL;
    }
    break;
  }
  case K_TO_THREAD: {
    job *j = op->job;
    /* fn has not started (refused at once, cancelled before it started,
     * or abandoned before it started): taken out of live_jobs, it never
     * will, and the worker's reference is ours to drop. */
    if (!j->started && j->refs > 1 && job_take(j->id)) j->refs--;
    if (rc == 0 && j->result) {
      PyObject *v = j->result;
      j->result = NULL;
      return v;
    }
    if (rc == 1 && j->exc) {
      PyObject *e = j->exc;
      j->exc = NULL;
      PyErr_SetObject((PyObject *)Py_TYPE(e), e);
      Py_DECREF(e);
      return NULL;
    }
    break;
  }
  case K_DONE:
    return Py_NewRef(op->obj ? op->obj : Py_None);
  }
  if (rc == 0) Py_RETURN_NONE;
  return braid_py_raise(rc);
}

static PySendResult op_am_send(OpObj *op, PyObject *arg, PyObject **presult) {
  (void)arg;
  if (op->state == OP_NEW) {
    TaskObj *t = cur_task;
    if (op->kind == K_DONE) {
      *presult = op_outcome(op, 0);
      return *presult ? PYGEN_RETURN : PYGEN_ERROR;
    }
    if (!t) {
      need_task("this operation");
      *presult = NULL;
      return PYGEN_ERROR;
    }
    int rc = op_perform(op, t);
    if (rc == BRAID_EPENDING) {
      op->state = OP_WAITING;
      op->waiter = t->id;
      /* keep it alive until the task is stepped again, even if the
       * coroutine lets go of it (closed from outside): the core writes the
       * outcome (a received item, a started value) into it */
      Py_XSETREF(t->waiting_op, Py_NewRef((PyObject *)op));
      *presult = Py_NewRef((PyObject *)op);
      return PYGEN_NEXT;
    }
    *presult = op_outcome(op, rc);
    return *presult ? PYGEN_RETURN : PYGEN_ERROR;
  }
  if (op->state == OP_WAITING) {
    TaskObj *t = cur_task;
    if (!t || t->id != op->waiter) { /* the waiting task's outcome is not ours to take */
      PyErr_SetString(PyExc_RuntimeError, "this braid operation is already awaited by another task");
      *presult = NULL;
      return PYGEN_ERROR;
    }
    *presult = op_outcome(op, t->resume);
    if (t->waiting_op == (PyObject *)op) Py_CLEAR(t->waiting_op); /* our caller still holds op */
    return *presult ? PYGEN_RETURN : PYGEN_ERROR;
  }
  PyErr_SetString(PyExc_RuntimeError, "cannot reuse an already awaited braid operation");
  *presult = NULL;
  return PYGEN_ERROR;
}

static PyObject *op_iternext(OpObj *op) {
  PyObject *res;
  PySendResult r = op_am_send(op, Py_None, &res);
  if (r == PYGEN_NEXT) return res;
  if (r == PYGEN_RETURN) {
    if (res == Py_None)
      PyErr_SetNone(PyExc_StopIteration);
    else {
      PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, res);
      if (e) {
        PyErr_SetObject(PyExc_StopIteration, e);
        Py_DECREF(e);
      }
    }
    Py_DECREF(res);
  }
  return NULL;
}

static PyObject *op_await(OpObj *op) { return Py_NewRef((PyObject *)op); }

static PyObject *op_send_method(OpObj *op, PyObject *arg) {
  (void)arg;
  return op_iternext(op);
}

static PyObject *op_throw(OpObj *op, PyObject *const *args, Py_ssize_t n) {
  (void)op;
  if (n < 1) {
    PyErr_SetString(PyExc_TypeError, "throw expects an exception");
    return NULL;
  }
  PyObject *e = args[0];
  if (PyExceptionInstance_Check(e))
    PyErr_SetObject((PyObject *)Py_TYPE(e), e);
  else
    PyErr_SetObject(e, n > 1 ? args[1] : NULL);
  return NULL;
}

static PyObject *op_close(OpObj *op, PyObject *unused) {
  (void)op;
  (void)unused;
  Py_RETURN_NONE;
}

static PyMethodDef op_methods[] = {{"send", (PyCFunction)op_send_method, METH_O, NULL},
                                   {"throw", (PyCFunction)(void (*)(void))op_throw, METH_FASTCALL, NULL},
                                   {"close", (PyCFunction)op_close, METH_NOARGS, NULL},
                                   {NULL}};

static PyAsyncMethods op_async = {.am_await = (unaryfunc)op_await, .am_send = (sendfunc)op_am_send};

static PyTypeObject OpType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "braid._braid.Operation",
    .tp_basicsize = sizeof(OpObj),
    .tp_dealloc = (destructor)op_dealloc,
    .tp_as_async = &op_async,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)op_iternext,
    .tp_methods = op_methods,
    .tp_doc = "An awaitable braid operation (await it once, in a braid task).",
};

/* ------------------------------------------------------------------ */
/* Cancel scopes                                                       */
/* ------------------------------------------------------------------ */

typedef struct {
  PyObject_HEAD braid_scope *s;
  int group_scope; /* the scope of a task group: entered by the group */
} ScopeObj;

static PyTypeObject ScopeType;

static PyObject *scope_wrap(braid_scope *s, int group_scope) {
  ScopeObj *o = PyObject_New(ScopeObj, &ScopeType);
  if (!o) {
    braid_scope_unref(s);
    return NULL;
  }
  o->s = s;
  o->group_scope = group_scope;
  return (PyObject *)o;
}

static PyObject *scope_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"deadline", "shield", NULL};
  PyObject *deadline = NULL;
  int shield = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|Op:CancelScope", kwlist, &deadline, &shield)) return NULL;
  braid_time_t d = BRAID_NEVER;
  if (deadline && seconds_to_ns(deadline, &d) < 0) return NULL;
  braid_scope *s;
  int rc = braid_scope_new(d, shield ? BRAID_SHIELD : 0, &s);
  if (rc) return braid_py_raise(rc);
  ScopeObj *o = (ScopeObj *)type->tp_alloc(type, 0);
  if (!o) {
    braid_scope_unref(s);
    return NULL;
  }
  o->s = s;
  o->group_scope = 0;
  return (PyObject *)o;
}

static void scope_dealloc(ScopeObj *o) {
  if (o->s && braid_scope_unref(o->s) == BRAID_ESTATE) {
    /* the last reference of a scope still entered: a task dropped it while
     * inside (a coroutine that was never finished). Nothing to do safely. */
  }
  Py_TYPE(o)->tp_free((PyObject *)o);
}

static PyObject *scope_enter(ScopeObj *o, PyObject *unused) {
  (void)unused;
  if (o->group_scope) {
    PyErr_SetString(PyExc_RuntimeError, "a task group's cancel scope is entered by the task group");
    return NULL;
  }
  TaskObj *t = cur_task;
  int rc = braid_scope_enter(t ? t->task : NULL, o->s);
  if (rc == BRAID_ESTATE) {
    PyErr_SetString(PyExc_RuntimeError, "Each CancelScope may only be used for a single 'with' block");
    return NULL;
  }
  if (rc == BRAID_ETHREAD) {
    PyErr_SetString(PyExc_RuntimeError, "a cancel scope can be entered in a braid task or in a plain thread, "
                                        "not in the loop's callbacks");
    return NULL;
  }
  if (rc) return braid_py_raise(rc);
  return Py_NewRef((PyObject *)o);
}

/* Split a BaseExceptionGroup into its Cancelled part and the rest. Returns
 * 1 if it held any Cancelled (*rest = the others or NULL), 0 if none, -1
 * on error. */
static int split_cancelled(PyObject *exc, PyObject **rest) {
  *rest = NULL;
  PyObject *pair = PyObject_CallMethod(exc, "split", "O", exc_cancelled);
  if (!pair) return -1;
  PyObject *match = PyTuple_GET_ITEM(pair, 0), *other = PyTuple_GET_ITEM(pair, 1);
  int any = match != Py_None;
  if (any && other != Py_None) *rest = Py_NewRef(other);
  Py_DECREF(pair);
  return any;
}

static PyObject *scope_exit(ScopeObj *o, PyObject *const *args, Py_ssize_t n) {
  PyObject *exc = n >= 2 ? args[1] : Py_None;
  PyObject *rest = NULL;
  int rc = 0, group = 0;
  if (exc != Py_None) {
    if (PyObject_TypeCheck(exc, (PyTypeObject *)exc_cancelled))
      rc = BRAID_ECANCELED;
    else if (PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_BaseExceptionGroup)) {
      int any = split_cancelled(exc, &rest);
      if (any < 0) return NULL;
      rc = any ? BRAID_ECANCELED : 1;
      group = any;
    } else
      rc = 1;
  }
  int r = braid_scope_exit(o->s, rc);
  if (r == BRAID_ESTATE) {
    Py_XDECREF(rest);
    PyErr_SetString(PyExc_RuntimeError,
                    "Attempted to exit a cancel scope that isn't the current task's current cancel scope");
    return NULL;
  }
  if (r == BRAID_ETIMEDOUT) {
    if (rest) { /* the cancellations were caught: the other errors go on, not TimeoutError (AnyIO) */
      PyErr_SetObject((PyObject *)Py_TYPE(rest), rest);
      Py_DECREF(rest);
      return NULL;
    }
    PyErr_SetNone(PyExc_TimeoutError);
    return NULL;
  }
  if (rc == BRAID_ECANCELED && r == 0) {
    if (group && rest) { /* the cancellations were caught: the rest goes on */
      PyErr_SetObject((PyObject *)Py_TYPE(rest), rest);
      Py_DECREF(rest);
      return NULL;
    }
    Py_RETURN_TRUE;
  }
  Py_XDECREF(rest);
  Py_RETURN_FALSE;
}

static PyObject *scope_cancel(ScopeObj *o, PyObject *const *args, Py_ssize_t n) {
  (void)args;
  (void)n; /* an optional reason, accepted for AnyIO compatibility */
  braid_scope_cancel(o->s);
  Py_RETURN_NONE;
}

static PyObject *scope_get_deadline(ScopeObj *o, void *c) {
  (void)c;
  return ns_to_seconds(braid_scope_deadline(o->s));
}
static int scope_set_deadline(ScopeObj *o, PyObject *v, void *c) {
  (void)c;
  braid_time_t d;
  if (!v) {
    PyErr_SetString(PyExc_AttributeError, "cannot delete the deadline");
    return -1;
  }
  if (seconds_to_ns(v, &d) < 0) return -1;
  int rc = braid_scope_set_deadline(o->s, d);
  if (rc) {
    braid_py_raise(rc);
    return -1;
  }
  return 0;
}
static PyObject *scope_get_shield(ScopeObj *o, void *c) {
  (void)c;
  return PyBool_FromLong(braid_scope_shield(o->s));
}
static int scope_set_shield(ScopeObj *o, PyObject *v, void *c) {
  (void)c;
  if (!v) {
    PyErr_SetString(PyExc_AttributeError, "cannot delete the shield");
    return -1;
  }
  int on = PyObject_IsTrue(v);
  if (on < 0) return -1;
  int rc = braid_scope_set_shield(o->s, on);
  if (rc) {
    braid_py_raise(rc);
    return -1;
  }
  return 0;
}
static PyObject *scope_get_cancel_called(ScopeObj *o, void *c) {
  (void)c;
  return PyBool_FromLong(braid_scope_cancel_called(o->s));
}
static PyObject *scope_get_cancelled_caught(ScopeObj *o, void *c) {
  (void)c;
  return PyBool_FromLong(braid_scope_cancelled_caught(o->s));
}

static PyMethodDef scope_methods[] = {
    {"__enter__", (PyCFunction)scope_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))scope_exit, METH_FASTCALL, NULL},
    {"cancel", (PyCFunction)(void (*)(void))scope_cancel, METH_FASTCALL,
     "cancel(reason=None)\n\nCancel this scope: every checkpoint inside it raises the cancellation "
     "exception until the code leaves it. Idempotent; thread-safe."},
    {NULL}};

static PyGetSetDef scope_getset[] = {{"deadline", (getter)scope_get_deadline, (setter)scope_set_deadline,
                                      "the absolute deadline in seconds of braid.current_time(), math.inf for none",
                                      NULL},
                                     {"shield", (getter)scope_get_shield, (setter)scope_set_shield,
                                      "True if cancellations from outside do not reach inside", NULL},
                                     {"cancel_called", (getter)scope_get_cancel_called, NULL,
                                      "True once cancel() was called or the deadline passed", NULL},
                                     {"cancelled_caught", (getter)scope_get_cancelled_caught, NULL,
                                      "True if this scope caught a cancellation when it exited", NULL},
                                     {NULL}};

static PyTypeObject ScopeType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "braid.CancelScope",
    .tp_basicsize = sizeof(ScopeObj),
    .tp_dealloc = (destructor)scope_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = scope_new,
    .tp_methods = scope_methods,
    .tp_getset = scope_getset,
    .tp_doc = "CancelScope(*, deadline=math.inf, shield=False)\n\n"
              "A cancel scope (Trio's semantics): cancelling it makes every checkpoint inside raise the\n"
              "cancellation exception, which the scope catches when it exits. A deadline cancels it\n"
              "when it passes; a shield keeps cancellations from outside out.\n\n"
              "    with braid.CancelScope(deadline=braid.current_time() + 1) as scope:\n"
              "        await braid.sleep(5)\n"
              "    assert scope.cancelled_caught\n",
};

/* ------------------------------------------------------------------ */
/* Natives                                                             */
/* ------------------------------------------------------------------ */

static PyObject *current_time_now(void) {
  if (!cur_task && cur_rs && cur_rs->loop) /* from_thread.run_sync, between tasks */
    return PyFloat_FromDouble((double)braid_loop_now(cur_rs->loop) / 1e9);
  TaskObj *t = need_task("current_time()");
  if (!t) return NULL;
  return PyFloat_FromDouble((double)braid_now(t->task) / 1e9);
}

static PyObject *n_current_time(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  return current_time_now();
}

static PyObject *n_current_effective_deadline(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  TaskObj *t = need_task("current_effective_deadline()");
  if (!t) return NULL;
  return ns_to_seconds(braid_current_effective_deadline(t->task));
}

/* Natives that make an Op of one kind and nothing else: of no argument
 * (METH_NOARGS), or of the handle operated on (METH_O). */
#define OP_NATIVE(fn, kind)                                                                                            \
  static PyObject *fn(PyObject *m, PyObject *unused) {                                                                 \
    (void)m;                                                                                                           \
    (void)unused;                                                                                                      \
    return (PyObject *)op_new(kind, NULL);                                                                             \
  }
#define HANDLE_OP_NATIVE(fn, hkind, kind)                                                                              \
  static PyObject *fn(PyObject *m, PyObject *h) {                                                                      \
    (void)m;                                                                                                           \
    return handle_op(h, hkind, kind);                                                                                  \
  }

OP_NATIVE(n_checkpoint, K_CHECKPOINT)
OP_NATIVE(n_checkpoint_if_cancelled, K_IF_CANCELLED)
OP_NATIVE(n_cancel_shielded_checkpoint, K_SHIELDED_CHECKPOINT)
OP_NATIVE(n_sleep_forever, K_SLEEP_FOREVER)

static PyObject *n_sleep(PyObject *m, PyObject *delay) {
  (void)m;
  braid_time_t ns;
  if (seconds_to_ns(delay, &ns) < 0) return NULL;
  if (ns < 0) {
    PyErr_SetString(PyExc_ValueError, "sleep length must be non-negative");
    return NULL;
  }
  OpObj *op = op_new(ns == 0 ? K_CHECKPOINT : K_SLEEP, NULL);
  if (op) op->i64 = ns;
  return (PyObject *)op;
}

static PyObject *n_sleep_until(PyObject *m, PyObject *when) {
  (void)m;
  braid_time_t ns;
  if (seconds_to_ns(when, &ns) < 0) return NULL;
  OpObj *op = op_new(K_SLEEP_UNTIL, NULL);
  if (op) op->i64 = ns;
  return (PyObject *)op;
}

/* move_on_after(delay, shield) / fail_after(delay, shield): a new scope
 * whose deadline is now + delay. */
static PyObject *timed_scope(PyObject *const *args, Py_ssize_t n, unsigned flags, const char *what) {
  if (n < 1 || n > 2) {
    PyErr_Format(PyExc_TypeError, "%s(delay, shield=False)", what);
    return NULL;
  }
  braid_time_t d = BRAID_NEVER;
  if (args[0] != Py_None && seconds_to_ns(args[0], &d) < 0) return NULL;
  if (n > 1) {
    int shield = PyObject_IsTrue(args[1]);
    if (shield < 0) return NULL;
    if (shield) flags |= BRAID_SHIELD;
  }
  braid_time_t deadline = BRAID_NEVER;
  if (d != BRAID_NEVER) {
    TaskObj *t = need_task(what);
    if (!t) return NULL;
    braid_time_t now = braid_now(t->task);
    if (d > 0 && now > BRAID_NEVER - d)
      deadline = BRAID_NEVER;
    else if (d < 0 && now < INT64_MIN + 1 - d) /* saturate as seconds_to_ns does */
      deadline = INT64_MIN + 1;
    else
      deadline = now + d;
  }
  braid_scope *s;
  int rc = braid_scope_new(deadline, flags, &s);
  if (rc) return braid_py_raise(rc);
  return scope_wrap(s, 0);
}

static PyObject *n_move_on_after(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  return timed_scope(args, n, 0, "move_on_after");
}
static PyObject *n_fail_after(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  return timed_scope(args, n, BRAID_FAIL, "fail_after");
}

/* fail_at(deadline, shield) / move_on_at: a scope with an absolute deadline */
static PyObject *n_scope_at(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n != 3) {
    PyErr_SetString(PyExc_TypeError, "scope_at(deadline, shield, fail)");
    return NULL;
  }
  braid_time_t d;
  if (seconds_to_ns(args[0], &d) < 0) return NULL;
  int shield = PyObject_IsTrue(args[1]);
  if (shield < 0) return NULL;
  int fail = PyObject_IsTrue(args[2]);
  if (fail < 0) return NULL;
  unsigned flags = (shield ? BRAID_SHIELD : 0) | (fail ? BRAID_FAIL : 0);
  braid_scope *s;
  int rc = braid_scope_new(d, flags, &s);
  if (rc) return braid_py_raise(rc);
  return scope_wrap(s, 0);
}

/* op(handle) constructors for the primitives */
static PyObject *handle_op(PyObject *h, int hkind, int kind) {
  if (!braid_py_handle(h, hkind)) return NULL;
  return (PyObject *)op_new(kind, h);
}
HANDLE_OP_NATIVE(n_lock_acquire, H_LOCK, K_LOCK)
HANDLE_OP_NATIVE(n_semaphore_acquire, H_SEMAPHORE, K_SEMAPHORE)
HANDLE_OP_NATIVE(n_event_wait, H_EVENT, K_EVENT)
HANDLE_OP_NATIVE(n_condition_wait, H_CONDITION, K_CONDITION)
HANDLE_OP_NATIVE(n_channel_receive, H_RECEIVER, K_RECEIVE)
static PyObject *n_limiter_acquire(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "limiter_acquire(handle, borrower)");
    return NULL;
  }
  unsigned long long b = PyLong_AsUnsignedLongLong(args[1]);
  if (b == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
  OpObj *op = (OpObj *)handle_op(args[0], H_LIMITER, K_LIMITER);
  if (op) op->i64 = (int64_t)b;
  return (PyObject *)op;
}
static PyObject *n_channel_send(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "channel_send(handle, item)");
    return NULL;
  }
  OpObj *op = (OpObj *)handle_op(args[0], H_SENDER, K_SEND);
  if (op) op->obj = Py_NewRef(args[1]);
  return (PyObject *)op;
}

/* The calling task (or NULL for a plain thread) for non-blocking calls. */
static braid_task *caller(void) { return cur_task ? cur_task->task : NULL; }

static PyObject *rc_result(int rc) {
  if (rc < 0) return braid_py_raise(rc);
  Py_RETURN_NONE;
}

static PyObject *n_lock_acquire_nowait(PyObject *m, PyObject *h) {
  (void)m;
  void *p = braid_py_handle(h, H_LOCK);
  return p ? rc_result(braid_lock_acquire_nowait(caller(), p)) : NULL;
}
static PyObject *n_lock_release(PyObject *m, PyObject *h) {
  (void)m;
  void *p = braid_py_handle(h, H_LOCK);
  if (!p) return NULL;
  int rc = braid_lock_release(caller(), p);
  if (rc == BRAID_EPERM) {
    PyErr_SetString(PyExc_RuntimeError, "The current task is not holding this lock");
    return NULL;
  }
  return rc_result(rc);
}
static PyObject *n_condition_notify(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "condition_notify(handle, n)");
    return NULL;
  }
  void *p = braid_py_handle(args[0], H_CONDITION);
  if (!p) return NULL;
  Py_ssize_t k = PyLong_AsSsize_t(args[1]);
  if (k == -1 && PyErr_Occurred()) return NULL;
  int rc = k < 0 ? braid_condition_notify_all(caller(), p) : braid_condition_notify(caller(), p, (size_t)k);
  if (rc == BRAID_EPERM) {
    PyErr_SetString(PyExc_RuntimeError, "The current task is not holding the underlying lock");
    return NULL;
  }
  return rc_result(rc);
}
static PyObject *n_limiter_acquire_nowait(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "limiter_acquire_nowait(handle, borrower)");
    return NULL;
  }
  void *p = braid_py_handle(args[0], H_LIMITER);
  if (!p) return NULL;
  unsigned long long b = PyLong_AsUnsignedLongLong(args[1]);
  if (b == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
  int rc = braid_limiter_acquire_nowait(caller(), p, b);
  if (rc == BRAID_EDEADLK) {
    PyErr_SetString(PyExc_RuntimeError, msg_borrower_holds);
    return NULL;
  }
  return rc_result(rc);
}
static PyObject *n_limiter_release(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "limiter_release(handle, borrower)");
    return NULL;
  }
  void *p = braid_py_handle(args[0], H_LIMITER);
  if (!p) return NULL;
  unsigned long long b = PyLong_AsUnsignedLongLong(args[1]);
  if (b == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
  int rc = braid_limiter_release(caller(), p, b);
  if (rc == BRAID_EPERM) {
    PyErr_SetString(PyExc_RuntimeError, "this borrower isn't holding any of this CapacityLimiter's tokens");
    return NULL;
  }
  return rc_result(rc);
}

/* Items in channels are Python objects, one reference each. */
static PyObject *n_channel_new(PyObject *m, PyObject *size) {
  (void)m;
  size_t buf;
  double d = PyFloat_AsDouble(size);
  if (d == -1.0 && PyErr_Occurred()) return NULL;
  if (isinf(d) && d > 0)
    buf = BRAID_UNBOUNDED;
  else {
    Py_ssize_t k = PyNumber_AsSsize_t(size, PyExc_OverflowError);
    if (k == -1 && PyErr_Occurred()) {
      PyErr_SetString(PyExc_ValueError, "max_buffer_size must be either an integer or math.inf");
      return NULL;
    }
    if (k < 0) {
      PyErr_SetString(PyExc_ValueError, "max_buffer_size cannot be negative");
      return NULL;
    }
    buf = (size_t)k;
  }
  braid_sender *tx;
  braid_receiver *rx;
  int rc = braid_channel_new(buf, decref_payload, &tx, &rx);
  if (rc) return braid_py_raise(rc);
  PyObject *htx = braid_py_handle_new(tx, H_SENDER, NULL);
  if (!htx) {
    braid_receiver_free(rx);
    return NULL;
  }
  PyObject *hrx = braid_py_handle_new(rx, H_RECEIVER, NULL);
  if (!hrx) {
    Py_DECREF(htx);
    return NULL;
  }
  return Py_BuildValue("(NN)", htx, hrx);
}

static PyObject *n_channel_send_nowait(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "channel_send_nowait(handle, item)");
    return NULL;
  }
  void *p = braid_py_handle(args[0], H_SENDER);
  if (!p) return NULL;
  Py_INCREF(args[1]);
  int rc = braid_channel_send_nowait(p, args[1]);
  if (rc) Py_DECREF(args[1]);
  return rc_result(rc);
}

static PyObject *n_channel_receive_nowait(PyObject *m, PyObject *h) {
  (void)m;
  void *p = braid_py_handle(h, H_RECEIVER);
  if (!p) return NULL;
  void *item;
  int rc = braid_channel_receive_nowait(p, &item);
  if (rc) return braid_py_raise(rc);
  return item; /* the channel's reference is ours */
}

/* ---- task groups ---- */

static PyObject *n_group_open(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  TaskObj *t = need_task("create_task_group()");
  if (!t) return NULL;
  braid_group *g;
  int rc = braid_group_open(t->task, &g);
  if (rc) return braid_py_raise(rc);
  PyObject *h = braid_py_handle_new(g, H_GROUP, NULL);
  if (!h) return NULL;
  ((HandleObj *)h)->host = t->id;
  braid_scope *s = braid_scope_ref(braid_group_scope(g));
  PyObject *scope = scope_wrap(s, 1);
  if (!scope) {
    Py_DECREF(h);
    return NULL;
  }
  return Py_BuildValue("(NN)", h, scope);
}

static int check_coro(PyObject *coro) {
  if (PyCoro_CheckExact(coro)) return 0;
  if (PyObject_HasAttrString(coro, "send") && PyObject_HasAttrString(coro, "throw")) return 0;
  PyErr_Format(PyExc_TypeError, "expected a coroutine, but got %R (did you pass an async function's result?)", coro);
  return -1;
}

static PyObject *n_group_spawn(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n != 3) {
    PyErr_SetString(PyExc_TypeError, "group_spawn(handle, coro, name)");
    return NULL;
  }
  braid_group *g = braid_py_handle(args[0], H_GROUP);
  if (!g || check_coro(args[1]) < 0) return NULL;
  TaskObj *t = task_new(args[1], args[2], TK_CHILD);
  if (!t) return NULL;
  t->parent_id = ((HandleObj *)args[0])->host;
  braid_spawn_opts o;
  name_opts(t->name, &o);
  braid_task *bt;
  int rc = braid_group_spawn_stepped(g, py_step, t, &o, &bt);
  if (rc == 0)
    task_register(t, bt); /* listed at once, as AnyIO lists a new task */
  else {
    close_coro(t->coro); /* refused: it never runs */
    Py_DECREF(t);
    if (rc == BRAID_ESTATE) {
      PyErr_SetString(PyExc_RuntimeError, msg_group_inactive);
      return NULL;
    }
    return braid_py_raise(rc);
  }
  Py_RETURN_NONE; /* the braid task holds t's reference */
}

static PyObject *n_group_start(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n != 3) {
    PyErr_SetString(PyExc_TypeError, "group_start(handle, coro, name)");
    return NULL;
  }
  if (!braid_py_handle(args[0], H_GROUP) || check_coro(args[1]) < 0) return NULL;
  TaskObj *t = task_new(args[1], args[2], TK_CHILD);
  if (!t) return NULL;
  t->group_host = ((HandleObj *)args[0])->host;
  OpObj *op = op_new(K_GROUP_START, args[0]);
  if (!op) {
    Py_DECREF(t);
    return NULL;
  }
  t->starting = 1;
  op->obj = (PyObject *)t;
  return (PyObject *)op;
}

static PyObject *n_task_started(PyObject *m, PyObject *value) {
  (void)m;
  TaskObj *t = need_task("task_status.started()");
  if (!t) return NULL;
  if (!t->starting) Py_RETURN_NONE; /* braid ignores it (and would not take value) */
  Py_INCREF(value);
  int rc = braid_task_started(t->task, value);
  if (rc) {
    Py_DECREF(value);
    if (rc == BRAID_ESTATE) {
      PyErr_SetString(PyExc_RuntimeError, "called 'started' twice on the same task status");
      return NULL;
    }
    return braid_py_raise(rc);
  }
  if (t->group_host) t->parent_id = t->group_host; /* it moved into the group (AnyIO) */
  Py_RETURN_NONE;
}

static PyObject *n_group_fail(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "group_fail(handle, exc)");
    return NULL;
  }
  braid_group *g = braid_py_handle(args[0], H_GROUP);
  if (!g) return NULL;
  Py_INCREF(args[1]);
  return rc_result(braid_group_fail(g, 1, args[1], decref_payload));
}

static PyObject *n_group_close(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "group_close(handle, rc)");
    return NULL;
  }
  if (!braid_py_handle(args[0], H_GROUP)) return NULL;
  long rc = PyLong_AsLong(args[1]);
  if (rc == -1 && PyErr_Occurred()) return NULL;
  OpObj *op = op_new(K_GROUP_CLOSE, args[0]);
  if (op) op->i64 = rc;
  return (PyObject *)op;
}

/* The failures of a closed group, in order: their exceptions (taken). */
static PyObject *n_group_failures(PyObject *m, PyObject *h) {
  (void)m;
  braid_group *g = braid_py_handle(h, H_GROUP);
  if (!g) return NULL;
  size_t cnt = braid_group_failure_count(g);
  PyObject *list = PyList_New(0);
  if (!list) return NULL;
  for (size_t i = 0; i < cnt; i++) {
    int code;
    void *payload;
    braid_group_failure(g, i, &code, &payload, NULL);
    PyObject *e;
    if (payload) {
      e = braid_group_take_payload(g, i);
    } else {
      if (code == BRAID_ESTATE) /* a Python task's only payload-less failure */
        PyErr_SetString(PyExc_RuntimeError, "a task ended with a cancel scope or task group still open "
                                            "(misnested 'with' blocks)");
      else
        braid_py_raise(code);
      e = fetch_exc();
    }
    if (PyList_Append(list, e) < 0) {
      Py_DECREF(e);
      Py_DECREF(list);
      return NULL;
    }
    Py_DECREF(e);
  }
  return list;
}

/* ---- tasks ---- */

static PyObject *n_current_task(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  TaskObj *t = need_task("get_current_task()");
  return t ? Py_NewRef((PyObject *)t) : NULL;
}

static PyObject *n_running_tasks(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  if (!need_task("get_running_tasks()")) return NULL;
  return PyDict_Values(cur_rs->tasks);
}

static PyObject *n_in_task(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  return PyBool_FromLong(cur_task != NULL);
}

/* ---- run ---- */

static void before_poll(void *ud) {
  runstate *rs = ud;
  rs->saved = PyEval_SaveThread();
  atomic_fetch_add_explicit(&loops_polling, 1, memory_order_release);
}

static void after_poll(void *ud) {
  runstate *rs = ud;
  atomic_fetch_sub_explicit(&loops_polling, 1, memory_order_relaxed);
  PyEval_RestoreThread(rs->saved);
  rs->saved = NULL;
  if (rs->main_thread && PyErr_CheckSignals() < 0) {
    /* a signal handler raised: keep the first such exception for run() */
    PyObject *e = fetch_exc();
    if (!rs->pending)
      rs->pending = e;
    else
      Py_DECREF(e);
    if (rs->root_scope) braid_scope_cancel(rs->root_scope); /* unwind the run to raise it */
  }
}

static void on_wake_fd(void *ud) {
  runstate *rs = ud;
  char buf[64];
  while (read(rs->wake_fd, buf, sizeof buf) > 0) {
  }
}

/* run(coro, virtual, start, name, wake_fd, coop_budget, main_thread[, root_scope]) */
static PyObject *n_run(PyObject *m, PyObject *args) {
  (void)m;
  PyObject *coro, *start, *name, *root_scope = Py_None;
  int virt, wake_fd, main_thread;
  unsigned coop;
  if (!PyArg_ParseTuple(args, "OpOOiIp|O", &coro, &virt, &start, &name, &wake_fd, &coop, &main_thread, &root_scope))
    return NULL;
  if (check_coro(coro) < 0) return NULL;
  if (root_scope != Py_None && !PyObject_TypeCheck(root_scope, &ScopeType)) {
    PyErr_SetString(PyExc_TypeError, "run(): root_scope must be a CancelScope");
    return NULL;
  }
  if (cur_rs) {
    PyErr_SetString(PyExc_RuntimeError, "braid.run() cannot be called from a running braid event loop");
    return NULL;
  }
  braid_time_t start_ns = 0;
  if (seconds_to_ns(start, &start_ns) < 0) return NULL;
  runstate rs = {.wake_fd = wake_fd, .main_thread = main_thread};
  if (root_scope != Py_None) rs.root_scope = ((ScopeObj *)root_scope)->s; /* kept alive by the caller */
  rs.tasks = PyDict_New();
  if (!rs.tasks) return NULL;
  TaskObj *root = task_new(coro, name, TK_ROOT);
  if (!root) {
    Py_DECREF(rs.tasks);
    return NULL;
  }
  root->rs = &rs;
  braid_run_opts o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.clock = virt ? BRAID_CLOCK_VIRTUAL : BRAID_CLOCK_REAL;
  o.start_time = start_ns;
  o.root_name = (name != Py_None && PyUnicode_Check(name)) ? PyUnicode_AsUTF8(name) : NULL;
  if (!o.root_name) PyErr_Clear(); /* not UTF-8 encodable: braid's default name */
  o.before_poll = before_poll;
  o.after_poll = after_poll;
  o.poll_ud = &rs;
  o.watch_fd = -1;
  if (wake_fd >= 0) {
    o.watch_fd = wake_fd;
    o.on_fd = on_wake_fd;
  }
  o.coop_budget = coop;
  cur_rs = &rs;
  Py_INCREF(root); /* for the braid task */
  int rc = braid_run_stepped(py_step, root, &o);
  cur_rs = NULL;
  if (rs.default_limiter) { /* freed with the loop: later uses get "handle was released" */
    ((HandleObj *)rs.default_limiter)->p = NULL;
    Py_DECREF(rs.default_limiter);
  }
  if (!root->stepped) Py_DECREF(root); /* the loop never started */
  PyObject *result = NULL;
  if (rs.pending) {
    PyErr_SetObject((PyObject *)Py_TYPE(rs.pending), rs.pending);
  } else if (root->exc) {
    PyErr_SetObject((PyObject *)Py_TYPE(root->exc), root->exc);
  } else if (rc == 0) {
    result = Py_NewRef(root->result ? root->result : Py_None);
  } else if (rc == BRAID_ESTATE && root->stepped) {
    PyErr_SetString(PyExc_RuntimeError, "braid.run(): the main task ended with a cancel scope or task group "
                                        "still open (misnested 'with' blocks)");
  } else {
    braid_py_raise(rc);
  }
  Py_XDECREF(rs.pending);
  Py_DECREF(rs.tasks);
  Py_DECREF(root);
  return result;
}

/* ---- loops, thread bridge ---- */

static PyObject *n_current_loop(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  braid_loop *loop = NULL;
  if (cur_task)
    loop = braid_task_loop(cur_task->task);
  else if (worker_loop)
    loop = worker_loop;
  if (!loop) {
    PyErr_SetString(PyExc_RuntimeError, "braid: no running braid event loop here (not in a braid task or a "
                                        "to_thread worker)");
    return NULL;
  }
  return braid_py_handle_new(braid_loop_ref(loop), H_LOOP, NULL);
}

/* to_thread(fn, args, abandon_on_cancel, limiter_handle_or_None) -> Op */
static PyObject *n_to_thread(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n != 4) {
    PyErr_SetString(PyExc_TypeError, "to_thread(fn, args, abandon_on_cancel, limiter)");
    return NULL;
  }
  TaskObj *t = need_task("to_thread.run_sync()");
  if (!t) return NULL;
  if (args[3] != Py_None && !braid_py_handle(args[3], H_LIMITER)) return NULL;
  int abandon = PyObject_IsTrue(args[2]);
  if (abandon < 0) return NULL;
  job *j = PyMem_RawCalloc(1, sizeof *j);
  if (!j) return PyErr_NoMemory();
  j->refs = 1;
  j->id = ++job_seq;
  j->fn = Py_NewRef(args[0]);
  j->args = Py_NewRef(args[1]);
  /* a reference: an abandoned job may outlive the run, and its
   * from_thread calls must then get ClosedResourceError, not freed memory */
  j->loop = braid_loop_ref(braid_task_loop(t->task));
  OpObj *op = op_new(K_TO_THREAD, NULL);
  if (!op) {
    job_unref(j);
    return NULL;
  }
  op->job = j;
  op->i64 = abandon ? BRAID_ABANDON_ON_CANCEL : 0;
  op->obj = args[3] == Py_None ? NULL : Py_NewRef(args[3]);
  return (PyObject *)op;
}

static braid_loop *bridge_loop(PyObject *token) {
  if (token != Py_None) return braid_py_handle(token, H_LOOP);
  if (worker_loop) return worker_loop;
  if (cur_rs)
    PyErr_SetString(PyExc_RuntimeError, msg_on_loop_thread);
  else
    PyErr_SetString(PyExc_RuntimeError, "This function can only be run from a braid worker thread "
                                        "(to_thread.run_sync) or with a token of a running loop");
  return NULL;
}

/* from_thread_run(coro, token) -> result of the coroutine, run as a task
 * on the loop. */
static PyObject *n_from_thread_run(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "from_thread_run(coro, token)");
    return NULL;
  }
  if (check_coro(args[0]) < 0) return NULL;
  braid_loop *loop = bridge_loop(args[1]);
  if (loop && cur_rs && braid_task_loop(cur_task ? cur_task->task : NULL) == loop) {
    PyErr_SetString(PyExc_RuntimeError, msg_on_loop_thread);
    loop = NULL;
  }
  if (!loop) { /* refused: it never runs */
    close_coro(args[0]);
    return NULL;
  }
  TaskObj *t = task_new(args[0], Py_None, TK_EXTERNAL);
  if (!t) return NULL;
  t->parent_id = 0;
  Py_INCREF(t); /* for the braid task */
  int rc;
  Py_BEGIN_ALLOW_THREADS rc = braid_from_thread_run_stepped(loop, py_step, t);
  Py_END_ALLOW_THREADS if (!t->stepped) {
    Py_DECREF(t); /* never started: the braid task's reference is ours */
    close_coro(t->coro);
  }
  PyObject *result = NULL;
  if (t->exc)
    PyErr_SetObject((PyObject *)Py_TYPE(t->exc), t->exc);
  else if (rc == 0)
    result = Py_NewRef(t->result ? t->result : Py_None);
  else if (rc == BRAID_ECLOSED)
    PyErr_SetString(exc_closed, msg_loop_gone);
  else
    braid_py_raise(rc);
  Py_DECREF(t);
  return result;
}

typedef struct {
  PyObject *fn, *args, *result, *exc;
} sync_call;

static int run_sync_call(void *arg) {
  sync_call *c = arg;
  /* on the loop thread, between tasks: the loop holds the GIL here */
  PyObject *r = PyObject_Call(c->fn, c->args, NULL);
  if (r) {
    c->result = r;
    return 0;
  }
  c->exc = fetch_exc();
  return 1;
}

/* from_thread_run_sync(fn, args, token) */
static PyObject *n_from_thread_run_sync(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n != 3) {
    PyErr_SetString(PyExc_TypeError, "from_thread_run_sync(fn, args, token)");
    return NULL;
  }
  braid_loop *loop = bridge_loop(args[2]);
  if (!loop) return NULL;
  if (cur_rs) {
    PyErr_SetString(PyExc_RuntimeError, msg_on_loop_thread);
    return NULL;
  }
  sync_call c = {args[0], args[1], NULL, NULL};
  int rc;
  Py_BEGIN_ALLOW_THREADS rc = braid_from_thread_run_sync(loop, run_sync_call, &c);
  Py_END_ALLOW_THREADS if (c.exc) {
    PyErr_SetObject((PyObject *)Py_TYPE(c.exc), c.exc);
    Py_DECREF(c.exc);
    Py_XDECREF(c.result);
    return NULL;
  }
  if (rc == 0) return c.result ? c.result : Py_NewRef(Py_None);
  Py_XDECREF(c.result);
  if (rc == BRAID_ECLOSED) {
    PyErr_SetString(exc_closed, msg_loop_gone);
    return NULL;
  }
  return braid_py_raise(rc);
}

static PyObject *n_check_cancelled(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  if (cur_rs && !worker_loop) {
    PyErr_SetString(PyExc_RuntimeError, msg_on_loop_thread);
    return NULL;
  }
  return rc_result(braid_thread_check_cancelled());
}

/* ---- thread-side blocking calls (release the GIL) ---- */

#define BLOCKING(call)                                                                                                 \
  int rc;                                                                                                              \
  Py_BEGIN_ALLOW_THREADS rc = (call);                                                                                  \
  Py_END_ALLOW_THREADS

static PyObject *thread_only(void) {
  PyErr_SetString(PyExc_RuntimeError, "this blocking call is for plain threads; in a braid task, await the "
                                      "async method instead");
  return NULL;
}

static PyObject *n_thread_wait(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n < 2) {
    PyErr_SetString(PyExc_TypeError, "thread_wait(kind, handle[, arg])");
    return NULL;
  }
  if (cur_rs) return thread_only();
  long kind = PyLong_AsLong(args[0]);
  PyObject *h = args[1];
  void *p;
  switch (kind) {
  case K_LOCK: {
    if (!(p = braid_py_handle(h, H_LOCK))) return NULL;
    BLOCKING(braid_lock_acquire(NULL, p));
    return rc_result(rc);
  }
  case K_SEMAPHORE: {
    if (!(p = braid_py_handle(h, H_SEMAPHORE))) return NULL;
    BLOCKING(braid_semaphore_acquire(NULL, p));
    return rc_result(rc);
  }
  case K_EVENT: {
    if (!(p = braid_py_handle(h, H_EVENT))) return NULL;
    BLOCKING(braid_event_wait(NULL, p));
    return rc_result(rc);
  }
  case K_CONDITION: {
    if (!(p = braid_py_handle(h, H_CONDITION))) return NULL;
    BLOCKING(braid_condition_wait(NULL, p));
    return rc_result(rc);
  }
  case K_LIMITER: {
    if (!(p = braid_py_handle(h, H_LIMITER))) return NULL;
    unsigned long long b = n > 2 ? PyLong_AsUnsignedLongLong(args[2]) : 0;
    if (b == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    BLOCKING(b ? braid_limiter_acquire_on_behalf(NULL, p, b) : braid_limiter_acquire(NULL, p));
    if (rc == BRAID_EDEADLK) {
      PyErr_SetString(PyExc_RuntimeError, msg_borrower_holds);
      return NULL;
    }
    return rc_result(rc);
  }
  case K_SEND: {
    if (!(p = braid_py_handle(h, H_SENDER))) return NULL;
    if (n < 3) return PyErr_Format(PyExc_TypeError, "send needs an item");
    Py_INCREF(args[2]);
    BLOCKING(braid_channel_send(NULL, p, args[2]));
    if (rc) Py_DECREF(args[2]);
    return rc_result(rc);
  }
  case K_RECEIVE: {
    if (!(p = braid_py_handle(h, H_RECEIVER))) return NULL;
    void *item = NULL;
    BLOCKING(braid_channel_receive(NULL, p, &item));
    if (rc) return braid_py_raise(rc);
    return item;
  }
  case K_SLEEP: {
    braid_time_t ns;
    if (seconds_to_ns(h, &ns) < 0) return NULL;
    BLOCKING(braid_sleep(NULL, ns));
    return rc_result(rc);
  }
  }
  PyErr_SetString(PyExc_ValueError, "unknown wait kind");
  return NULL;
}

static PyObject *n_done(PyObject *m, PyObject *value) {
  (void)m;
  OpObj *op = op_new(K_DONE, NULL);
  if (op) op->obj = Py_NewRef(value);
  return (PyObject *)op;
}

/* limiter_borrowers(handle) -> [(kind, id), ...] */
static PyObject *n_limiter_borrowers(PyObject *m, PyObject *h) {
  (void)m;
  braid_limiter *lim = braid_py_handle(h, H_LIMITER);
  if (!lim) return NULL;
  int kinds_buf[64], *kinds = kinds_buf;
  uint64_t ids_buf[64], *ids = ids_buf;
  size_t cap = 64;
  long k;
  /* every borrower: grow the arrays until they hold the count (which other
   * threads may change between two calls) */
  while ((k = braid_limiter_borrowers(lim, kinds, ids, cap)) > (long)cap) {
    if (kinds != kinds_buf) {
      PyMem_Free(kinds);
      PyMem_Free(ids);
    }
    cap = (size_t)k + 16;
    kinds = PyMem_New(int, cap);
    ids = PyMem_New(uint64_t, cap);
    if (!kinds || !ids) {
      PyMem_Free(kinds);
      PyMem_Free(ids);
      return PyErr_NoMemory();
    }
  }
  PyObject *list = k < 0 ? braid_py_raise((int)k) : PyList_New(k);
  for (long i = 0; list && i < k; i++) {
    PyObject *pair = Py_BuildValue("(iK)", kinds[i], (unsigned long long)ids[i]);
    if (!pair) {
      Py_CLEAR(list);
      break;
    }
    PyList_SET_ITEM(list, i, pair);
  }
  if (kinds != kinds_buf) {
    PyMem_Free(kinds);
    PyMem_Free(ids);
  }
  return list;
}

/* default_limiter() -> borrowed limiter handle of the running loop */
static PyObject *n_default_limiter(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  TaskObj *t = need_task("current_default_thread_limiter()");
  if (!t) return NULL;
  runstate *rs = cur_rs;
  if (rs && rs->default_limiter) return Py_NewRef(rs->default_limiter);
  braid_limiter *lim;
  int rc = braid_loop_default_limiter(braid_task_loop(t->task), &lim);
  if (rc) return braid_py_raise(rc);
  PyObject *h = braid_py_handle_new(lim, H_LIMITER, NULL);
  if (h) {
    ((HandleObj *)h)->borrowed = 1;
    if (rs) rs->default_limiter = Py_NewRef(h); /* the loop frees the limiter when it ends */
  }
  return h;
}

static PyMethodDef driver_methods[] = {
    {"done", n_done, METH_O, "done(value) -> an awaitable that returns value at once"},
    {"limiter_borrowers", n_limiter_borrowers, METH_O, NULL},
    {"default_limiter", n_default_limiter, METH_NOARGS, NULL},
    {"run", n_run, METH_VARARGS, "run(coro, virtual, start, name, wake_fd, coop_budget, main_thread[, root_scope])"},
    {"current_time", n_current_time, METH_NOARGS,
     "current_time() -> float\n\nThe loop's clock in seconds (virtual time on a braid.VirtualClock)."},
    {"current_effective_deadline", n_current_effective_deadline, METH_NOARGS,
     "current_effective_deadline() -> float\n\nThe earliest deadline that applies to the calling task (shields "
     "considered): math.inf for none, -math.inf if already cancelled."},
    {"checkpoint", n_checkpoint, METH_NOARGS,
     "checkpoint() -> awaitable\n\nLet other tasks run, then raise Cancelled if the task is cancelled:\n\n    await "
     "braid.checkpoint()"},
    {"checkpoint_if_cancelled", n_checkpoint_if_cancelled, METH_NOARGS,
     "checkpoint_if_cancelled() -> awaitable\n\nRaise Cancelled if the task is cancelled, without yielding."},
    {"cancel_shielded_checkpoint", n_cancel_shielded_checkpoint, METH_NOARGS,
     "cancel_shielded_checkpoint() -> awaitable\n\nLet other tasks run; never raises Cancelled."},
    {"sleep", n_sleep, METH_O,
     "sleep(delay) -> awaitable\n\nSleep for delay seconds (0: a checkpoint):\n\n    await braid.sleep(0.5)"},
    {"sleep_until", n_sleep_until, METH_O,
     "sleep_until(deadline) -> awaitable\n\nSleep until current_time() reaches deadline."},
    {"sleep_forever", n_sleep_forever, METH_NOARGS, "sleep_forever() -> awaitable\n\nSleep until cancelled."},
    {"move_on_after", (PyCFunction)(void (*)(void))n_move_on_after, METH_FASTCALL, NULL},
    {"fail_after", (PyCFunction)(void (*)(void))n_fail_after, METH_FASTCALL, NULL},
    {"scope_at", (PyCFunction)(void (*)(void))n_scope_at, METH_FASTCALL, NULL},
    {"lock_acquire", n_lock_acquire, METH_O, NULL},
    {"lock_acquire_nowait", n_lock_acquire_nowait, METH_O, NULL},
    {"lock_release", n_lock_release, METH_O, NULL},
    {"semaphore_acquire", n_semaphore_acquire, METH_O, NULL},
    {"event_wait", n_event_wait, METH_O, NULL},
    {"condition_wait", n_condition_wait, METH_O, NULL},
    {"condition_notify", (PyCFunction)(void (*)(void))n_condition_notify, METH_FASTCALL, NULL},
    {"limiter_acquire", (PyCFunction)(void (*)(void))n_limiter_acquire, METH_FASTCALL, NULL},
    {"limiter_acquire_nowait", (PyCFunction)(void (*)(void))n_limiter_acquire_nowait, METH_FASTCALL, NULL},
    {"limiter_release", (PyCFunction)(void (*)(void))n_limiter_release, METH_FASTCALL, NULL},
    {"channel_new", n_channel_new, METH_O, NULL},
    {"channel_send", (PyCFunction)(void (*)(void))n_channel_send, METH_FASTCALL, NULL},
    {"channel_send_nowait", (PyCFunction)(void (*)(void))n_channel_send_nowait, METH_FASTCALL, NULL},
    {"channel_receive", n_channel_receive, METH_O, NULL},
    {"channel_receive_nowait", n_channel_receive_nowait, METH_O, NULL},
    {"group_open", n_group_open, METH_NOARGS, NULL},
    {"group_spawn", (PyCFunction)(void (*)(void))n_group_spawn, METH_FASTCALL, NULL},
    {"group_start", (PyCFunction)(void (*)(void))n_group_start, METH_FASTCALL, NULL},
    {"group_fail", (PyCFunction)(void (*)(void))n_group_fail, METH_FASTCALL, NULL},
    {"group_close", (PyCFunction)(void (*)(void))n_group_close, METH_FASTCALL, NULL},
    {"group_failures", n_group_failures, METH_O, NULL},
    {"task_started", n_task_started, METH_O, NULL},
    {"current_task", n_current_task, METH_NOARGS, NULL},
    {"running_tasks", n_running_tasks, METH_NOARGS, NULL},
    {"in_task", n_in_task, METH_NOARGS, NULL},
    {"current_loop", n_current_loop, METH_NOARGS, NULL},
    {"to_thread", (PyCFunction)(void (*)(void))n_to_thread, METH_FASTCALL, NULL},
    {"from_thread_run", (PyCFunction)(void (*)(void))n_from_thread_run, METH_FASTCALL, NULL},
    {"from_thread_run_sync", (PyCFunction)(void (*)(void))n_from_thread_run_sync, METH_FASTCALL, NULL},
    {"check_cancelled", n_check_cancelled, METH_NOARGS, NULL},
    {"thread_wait", (PyCFunction)(void (*)(void))n_thread_wait, METH_FASTCALL, NULL},
    {NULL}};

/* Called from the SWIG module's init: add the types, exceptions and natives. */
static int driver_init(PyObject *m) {
  if (pthread_key_create(&worker_key, worker_key_dtor) != 0) return -1;
  if (!(live_jobs = PyDict_New())) return -1;
  if (PyType_Ready(&HandleType) < 0 || PyType_Ready(&TaskType) < 0 || PyType_Ready(&OpType) < 0 ||
      PyType_Ready(&ScopeType) < 0)
    return -1;
  exc_cancelled =
      PyErr_NewExceptionWithDoc("braid.Cancelled",
                                "Raised at a checkpoint inside a cancelled cancel scope (get_cancelled_exc_class()).\n"
                                "Derives from BaseException: do not catch it without re-raising it.",
                                PyExc_BaseException, NULL);
  exc_would_block =
      PyErr_NewExceptionWithDoc("braid.WouldBlock", "A *_nowait operation would have had to wait.", NULL, NULL);
  exc_end_of_stream = PyErr_NewExceptionWithDoc("braid.EndOfStream",
                                                "Every send stream is closed and the buffer is empty.", NULL, NULL);
  exc_broken = PyErr_NewExceptionWithDoc(
      "braid.BrokenResourceError", "The other side of the stream is gone (every receive stream closed).", NULL, NULL);
  exc_closed = PyErr_NewExceptionWithDoc("braid.ClosedResourceError", "This object was closed.", NULL, NULL);
  exc_deadlock = PyErr_NewExceptionWithDoc("braid.DeadlockError", "The wait would deadlock (a cycle of lock owners).",
                                           PyExc_RuntimeError, NULL);
  exc_busy = PyErr_NewExceptionWithDoc("braid.BusyResourceError", "Another task is already using this resource.",
                                       PyExc_RuntimeError, NULL);
  if (!exc_cancelled || !exc_would_block || !exc_end_of_stream || !exc_broken || !exc_closed || !exc_deadlock ||
      !exc_busy)
    return -1;
  struct {
    const char *name;
    PyObject *o;
  } objs[] = {
      {"Cancelled", exc_cancelled},        {"WouldBlock", exc_would_block},        {"EndOfStream", exc_end_of_stream},
      {"BrokenResourceError", exc_broken}, {"ClosedResourceError", exc_closed},    {"DeadlockError", exc_deadlock},
      {"BusyResourceError", exc_busy},     {"Handle", (PyObject *)&HandleType},    {"Task", (PyObject *)&TaskType},
      {"Operation", (PyObject *)&OpType},  {"CancelScope", (PyObject *)&ScopeType}};
  for (size_t i = 0; i < sizeof objs / sizeof objs[0]; i++)
    if (PyModule_AddObjectRef(m, objs[i].name, objs[i].o) < 0) return -1;
  struct {
    const char *name;
    long v;
  } kinds[] = {{"K_LOCK", K_LOCK},           {"K_SEMAPHORE", K_SEMAPHORE}, {"K_EVENT", K_EVENT},
               {"K_CONDITION", K_CONDITION}, {"K_LIMITER", K_LIMITER},     {"K_SEND", K_SEND},
               {"K_RECEIVE", K_RECEIVE},     {"K_SLEEP", K_SLEEP}};
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (PyModule_AddIntConstant(m, kinds[i].name, kinds[i].v) < 0) return -1;
  return PyModule_AddFunctions(m, driver_methods);
}
