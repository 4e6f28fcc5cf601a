/*
 * testee.c — the C conformance testee.
 *
 *   braid_testee [--stackful | --stepped | --mixed] SCENARIO.json
 *
 * Reads a scenario (see ../README.md), runs its op tree on a braid loop with
 * the virtual clock and prints the trace as JSON lines on stdout. Exit status:
 * 0 when the scenario ran to its end (whatever its outcome), 2 for a bad
 * scenario or usage, 3 when a braid call failed in a way the scenario format
 * cannot express (a "testee_error" event is printed then, so the comparer's
 * diff shows where).
 *
 * The file has four parts:
 *   1. the scenario model: the JSON op tree compiled to `op` structs, a
 *      registry of the named scopes and groups, the synchronization objects
 *      (locks, ..., channel ends) of the scenario's "objects" list, error
 *      names <-> codes;
 *   2. outcomes and events: what an op propagates (ok / cancelled / errors)
 *      and how it is printed;
 *   3. the semantics of each op, written once as plain functions. A blocking
 *      op is split into block_begin (the braid call) and block_finish (the
 *      mapping of its result), so both interpreters share them. A blocking
 *      op's out-values (start's value, a received item) live in the task's
 *      tctx, which outlives a stepped wait; `drain` is one blocking op run
 *      again after each item it receives; `to_thread` is one blocking op
 *      whose body a third, small interpreter runs on the worker thread
 *      (worker ops, task NULL), recording events for the task to print;
 *   4. two interpreters of the op tree: a recursive one for stackful tasks
 *      (the C call stack holds the nesting) and a state machine for stepped
 *      tasks (an explicit stack of frames; every blocking call that returns
 *      BRAID_EPENDING suspends the machine until the next step).
 *
 * --stackful (default) runs every task stackful, --stepped every task
 * stepped (root included), --mixed a stackful root and children alternately
 * stepped and stackful. All three must produce the same trace: that is the
 * point of running the suite in each mode.
 *
 * Only braid.h is used.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep */

#include "braid.h"
#include "json.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ======================================================================
 * 1. The scenario model
 * ==================================================================== */

typedef enum op_kind {
  OP_SLEEP,
  OP_SLEEP_FOREVER,
  OP_CHECKPOINT,
  OP_CHECKPOINT_IF_CANCELLED,
  OP_SHIELDED_CHECKPOINT,
  OP_LOG,
  OP_REPORT_DEADLINE,
  OP_SCOPE,
  OP_CANCEL,
  OP_SET_DEADLINE,
  OP_SET_SHIELD,
  OP_GROUP,
  OP_SPAWN,
  OP_START,
  OP_STARTED,
  OP_FAIL,
  OP_TRY,
  /* synchronization (section 7 of braid.h) */
  OP_ACQUIRE,
  OP_ACQUIRE_NOWAIT,
  OP_RELEASE,
  OP_SET,
  OP_WAIT,
  OP_NOTIFY,
  OP_NOTIFY_ALL,
  OP_SET_TOTAL,
  OP_SEND,
  OP_SEND_NOWAIT,
  OP_RECEIVE,
  OP_RECEIVE_NOWAIT,
  OP_DRAIN,
  OP_CLOSE_SENDER,
  OP_CLOSE_RECEIVER,
  OP_CLONE_SENDER,
  OP_CLONE_RECEIVER,
  OP_STATISTICS,
  /* the thread bridge (section 8 of braid.h) */
  OP_TO_THREAD,
  /* worker ops: only in the body of a to_thread, run on the worker thread */
  OP_RETURN,
  OP_CHECK_CANCELLED,
  OP_SHIELD,
  OP_COUNT
} op_kind;

static const char *const op_names[OP_COUNT] = {"sleep",
                                               "sleep_forever",
                                               "checkpoint",
                                               "checkpoint_if_cancelled",
                                               "shielded_checkpoint",
                                               "log",
                                               "report_deadline",
                                               "scope",
                                               "cancel",
                                               "set_deadline",
                                               "set_shield",
                                               "group",
                                               "spawn",
                                               "start",
                                               "started",
                                               "fail",
                                               "try",
                                               "acquire",
                                               "acquire_nowait",
                                               "release",
                                               "set",
                                               "wait",
                                               "notify",
                                               "notify_all",
                                               "set_total",
                                               "send",
                                               "send_nowait",
                                               "receive",
                                               "receive_nowait",
                                               "drain",
                                               "close_sender",
                                               "close_receiver",
                                               "clone_sender",
                                               "clone_receiver",
                                               "statistics",
                                               "to_thread",
                                               "return",
                                               "check_cancelled",
                                               "shield"};

/* How a deadline is given: none (for set_deadline: remove it), relative to
 * the time the op runs, or absolute (ms since the start of the run). */
typedef enum deadline_kind { DL_NONE, DL_AFTER, DL_AT } deadline_kind;

typedef struct op op;
typedef struct op_list {
  op *items;
  size_t count;
} op_list;

struct op {
  op_kind kind;
  const char *ref;  /* scope/group id: declared (scope, group) or used (cancel, set_*, spawn, start) */
  size_t reg;       /* index of ref in the registry */
  const char *text; /* log message, fail code, task name of spawn/start */
  int64_t ms;       /* sleep duration */
  deadline_kind dl; /* scope, set_deadline */
  int64_t dl_ms;
  int shield, fail;      /* scope flags; set_shield value in shield */
  json_value *value;     /* started: the value (NULL = null); send: the item */
  op_list body, finally; /* scope, group, spawn, start, try */
  const char **except;   /* try: the error names it catches */
  size_t nexcept;
  const char *obj_ref; /* synchronization ops: the object (or channel end) */
  size_t obj;          /* its index in g_objs */
  const char *as;      /* clone_*: the id of the new end */
  size_t as_obj;
  const char *behalf; /* acquire/acquire_nowait/release of a limiter: the borrower token's name */
  uint64_t token;     /* its token (0 = the task itself) */
  uint64_t count;     /* notify: n; set_total: the total */
  int abandon;        /* to_thread: BRAID_ABANDON_ON_CANCEL */
};

/* A named scope or group. Scopes are created on first use, which may come
 * before the scope op runs (a cancel before enter); a group's entry gets a
 * reference to the group's scope when the group opens. */
typedef struct entry {
  const char *id;
  const op *decl;
  braid_scope *scope;
  braid_group *group;
} entry;

static entry *g_reg;
static size_t g_nreg;

/* User error names ("A", "TIMEOUT_IN_CHILD", ...) get codes USER_CODE_BASE + i.
 * "timeout" is BRAID_ETIMEDOUT and "state_error" is BRAID_ESTATE. */
#define USER_CODE_BASE 1000
static char **g_names;
static size_t g_nnames;

/* A synchronization object of the scenario's "objects" list, or a channel
 * end. A channel declares its ends ID.tx and ID.rx; clone_* ops declare more
 * ends, whose handles exist once the clone has run. A closed end's handle
 * stays valid (braid returns BRAID_ECLOSED for its use: closed_resource)
 * until free_objects frees it after the run. */
typedef enum obj_kind {
  OBJ_LOCK,
  OBJ_SEMAPHORE,
  OBJ_EVENT,
  OBJ_CONDITION,
  OBJ_LIMITER,
  OBJ_CHANNEL,
  OBJ_SENDER,
  OBJ_RECEIVER
} obj_kind;

typedef struct object {
  char *id; /* owned */
  obj_kind kind;
  const json_value *decl; /* NULL for the ends */
  size_t lock_obj;        /* condition: its lock */
  braid_lock *lock;
  braid_semaphore *sem;
  braid_event *event;
  braid_condition *cond;
  braid_limiter *lim;
  braid_sender *tx;
  braid_receiver *rx;
} object;

static object *g_objs;
static size_t g_nobjs;

/* Borrower tokens of limiters ("on_behalf" names) get tokens 1, 2, ... */
static const char **g_tokens;
static size_t g_ntokens;

static json_value *g_doc;
static int g_internal_errors;
static braid_time_t g_start;

typedef enum run_mode { MODE_STACKFUL, MODE_STEPPED, MODE_MIXED } run_mode;
static run_mode g_mode = MODE_STACKFUL;
static unsigned g_spawned;

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("braid_testee: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) die("out of memory");
  return p;
}

static int intern(const char *name) {
  for (size_t i = 0; i < g_nnames; i++)
    if (strcmp(g_names[i], name) == 0) return USER_CODE_BASE + (int)i;
  char **nn = realloc(g_names, (g_nnames + 1) * sizeof *nn);
  if (!nn) die("out of memory");
  g_names = nn;
  size_t len = strlen(name) + 1;
  g_names[g_nnames] = xcalloc(len, 1);
  memcpy(g_names[g_nnames], name, len);
  return USER_CODE_BASE + (int)g_nnames++;
}

/* The error names the runtime raises, and their codes. */
static const struct {
  const char *name;
  int code;
} reserved_errors[] = {
    {"timeout", BRAID_ETIMEDOUT},       /* TimeoutError */
    {"state_error", BRAID_ESTATE},      /* RuntimeError */
    {"would_block", BRAID_EWOULDBLOCK}, /* anyio.WouldBlock */
    {"deadlock_error", BRAID_EDEADLK},  /* RuntimeError: already held */
    {"permission_error", BRAID_EPERM},  /* RuntimeError: not the owner */
    {"value_error", BRAID_EINVAL},      /* ValueError (semaphore release only) */
    {"end_of_stream", BRAID_EEOF},      /* anyio.EndOfStream */
    {"broken_resource", BRAID_EBROKEN}, /* anyio.BrokenResourceError */
    {"closed_resource", BRAID_ECLOSED}, /* anyio.ClosedResourceError */
};
#define N_RESERVED (sizeof reserved_errors / sizeof reserved_errors[0])

static int code_of(const char *name) {
  for (size_t i = 0; i < N_RESERVED; i++)
    if (strcmp(name, reserved_errors[i].name) == 0) return reserved_errors[i].code;
  return intern(name);
}

/* The error name of a failure code; codes that no scenario can produce
 * (a braid bug or a testee bug) get a name that will not match. */
static const char *name_of(int code) {
  for (size_t i = 0; i < N_RESERVED; i++)
    if (code == reserved_errors[i].code) return reserved_errors[i].name;
  if (code >= USER_CODE_BASE && (size_t)(code - USER_CODE_BASE) < g_nnames) return g_names[code - USER_CODE_BASE];
  char buf[64];
  snprintf(buf, sizeof buf, "unexpected:%s(%d)", braid_errname(code), code);
  return g_names[intern(buf) - USER_CODE_BASE];
}

static const json_value *member(const json_value *obj, const char *key, json_type type, int required,
                                const char *where) {
  const json_value *v = json_get(obj, key);
  if (!v) {
    if (required) die("%s: missing \"%s\"", where, key);
    return NULL;
  }
  if (v->type != type && !(type == JSON_NUMBER && v->type == JSON_NULL))
    die("%s: \"%s\" has the wrong type", where, key);
  return v;
}

static const char *member_str(const json_value *obj, const char *key, const char *where) {
  return member(obj, key, JSON_STRING, 1, where)->string;
}

static int member_bool(const json_value *obj, const char *key, const char *where) {
  const json_value *v = member(obj, key, JSON_BOOL, 0, where);
  return v ? v->boolean : 0;
}

static int64_t to_ms(const json_value *v, const char *where) {
  if (v->type != JSON_NUMBER || v->number != (double)(int64_t)v->number) die("%s: times must be integers (ms)", where);
  return (int64_t)v->number;
}

static void add_entry(const char *id, const op *decl) {
  for (size_t i = 0; i < g_nreg; i++)
    if (strcmp(g_reg[i].id, id) == 0) die("scope/group id \"%s\" declared twice", id);
  entry *nr = realloc(g_reg, (g_nreg + 1) * sizeof *nr);
  if (!nr) die("out of memory");
  g_reg = nr;
  g_reg[g_nreg++] = (entry){id, decl, NULL, NULL};
}

static size_t add_object(const char *id, obj_kind kind, const json_value *decl) {
  for (size_t i = 0; i < g_nobjs; i++)
    if (strcmp(g_objs[i].id, id) == 0) die("object id \"%s\" declared twice", id);
  object *no = realloc(g_objs, (g_nobjs + 1) * sizeof *no);
  if (!no) die("out of memory");
  g_objs = no;
  memset(&g_objs[g_nobjs], 0, sizeof *g_objs);
  size_t len = strlen(id) + 1;
  g_objs[g_nobjs].id = xcalloc(len, 1);
  memcpy(g_objs[g_nobjs].id, id, len);
  g_objs[g_nobjs].kind = kind;
  g_objs[g_nobjs].decl = decl;
  return g_nobjs++;
}

static size_t find_object(const char *id, const char *where) {
  for (size_t i = 0; i < g_nobjs; i++)
    if (strcmp(g_objs[i].id, id) == 0) return i;
  die("%s: unknown object \"%s\"", where, id);
  return 0;
}

static uint64_t token_of(const char *name) {
  for (size_t i = 0; i < g_ntokens; i++)
    if (strcmp(g_tokens[i], name) == 0) return i + 1;
  const char **nt = realloc(g_tokens, (g_ntokens + 1) * sizeof *nt);
  if (!nt) die("out of memory");
  g_tokens = nt;
  g_tokens[g_ntokens++] = name;
  return g_ntokens;
}

static uint64_t member_count(const json_value *obj, const char *key, int required, const char *where) {
  const json_value *v = member(obj, key, JSON_NUMBER, required, where);
  if (!v || v->type == JSON_NULL) return 0;
  if (v->number < 0 || v->number != (double)(uint64_t)v->number) die("%s: \"%s\" must be an integer >= 0", where, key);
  return (uint64_t)v->number;
}

/* Reads the top-level "objects" list (the objects themselves are created in
 * create_objects, just before the run). */
static void compile_objects(const json_value *arr) {
  static const char *const kinds[] = {"lock", "semaphore", "event", "condition", "limiter", "channel"};
  if (!arr) return;
  if (arr->type != JSON_ARRAY) die("\"objects\" must be an array");
  for (size_t i = 0; i < arr->count; i++) {
    const json_value *d = arr->items[i];
    if (!d || d->type != JSON_OBJECT) die("objects: an object declaration must be a JSON object");
    const char *kind = member_str(d, "kind", "objects"), *id = member_str(d, "id", "objects");
    int k = -1;
    for (int j = 0; j < (int)(sizeof kinds / sizeof kinds[0]); j++)
      if (strcmp(kinds[j], kind) == 0) k = j;
    if (k < 0) die("objects: unknown kind \"%s\"", kind);
    size_t idx = add_object(id, (obj_kind)k, d);
    if (k == OBJ_CONDITION) {
      size_t l = find_object(member_str(d, "lock", id), id);
      if (g_objs[l].kind != OBJ_LOCK) die("%s: \"lock\" must name a lock", id);
      g_objs[idx].lock_obj = l;
    } else if (k == OBJ_CHANNEL) {
      char *end = xcalloc(strlen(id) + 4, 1);
      sprintf(end, "%s.tx", id);
      add_object(end, OBJ_SENDER, NULL);
      sprintf(end, "%s.rx", id);
      add_object(end, OBJ_RECEIVER, NULL);
      free(end);
    }
  }
}

static void compile_list(const json_value *arr, op_list *out, const char *where);

/* Set while the body of a to_thread (the worker's ops) is compiled or
 * resolved: worker bodies have ops of their own and fewer object kinds. */
static int g_worker_body;

static int worker_op(op_kind k) {
  switch (k) {
  case OP_LOG:
  case OP_FAIL:
  case OP_TRY:
  case OP_RETURN:
  case OP_CHECK_CANCELLED:
  case OP_SHIELD:
  case OP_SLEEP_FOREVER:
  case OP_ACQUIRE:
  case OP_RELEASE:
  case OP_SET:
  case OP_WAIT:
  case OP_SEND:
  case OP_RECEIVE:
    return 1;
  default:
    return 0;
  }
}

/* Reads the deadline of a scope ("deadline_after" / "deadline_at") or of
 * set_deadline ("after" / "at"; "at": null removes it). */
static void compile_deadline(op *o, const json_value *j, const char *after_key, const char *at_key, const char *where) {
  const json_value *after = json_get(j, after_key), *at = json_get(j, at_key);
  if (after && after->type != JSON_NULL && at && at->type != JSON_NULL)
    die("%s: give at most one of \"%s\" and \"%s\"", where, after_key, at_key);
  o->dl = DL_NONE;
  if (after && after->type != JSON_NULL) {
    o->dl = DL_AFTER;
    o->dl_ms = to_ms(after, where);
  } else if (at && at->type != JSON_NULL) {
    o->dl = DL_AT;
    o->dl_ms = to_ms(at, where);
  }
}

static void compile_op(const json_value *j, op *o) {
  if (!j || j->type != JSON_OBJECT) die("an op must be an object");
  const char *name = member_str(j, "op", "op");
  int kind = -1;
  for (int k = 0; k < OP_COUNT; k++)
    if (strcmp(op_names[k], name) == 0) kind = k;
  if (kind < 0) die("unknown op \"%s\"", name);
  o->kind = (op_kind)kind;
  if (g_worker_body && !worker_op(o->kind)) die("op \"%s\" cannot run on a worker thread (in a to_thread body)", name);
  if (!g_worker_body && (o->kind == OP_RETURN || o->kind == OP_CHECK_CANCELLED || o->kind == OP_SHIELD))
    die("op \"%s\" is a worker op: only in the body of a to_thread", name);
  switch (o->kind) {
  case OP_SLEEP:
    o->ms = to_ms(member(j, "for", JSON_NUMBER, 1, name), name);
    break;
  case OP_LOG:
    o->text = member_str(j, "msg", name);
    break;
  case OP_FAIL:
    o->text = member_str(j, "code", name);
    intern(o->text);
    break;
  case OP_SCOPE:
    o->ref = member_str(j, "id", name);
    compile_deadline(o, j, "deadline_after", "deadline_at", name);
    o->shield = member_bool(j, "shield", name);
    o->fail = member_bool(j, "fail", name);
    compile_list(member(j, "body", JSON_ARRAY, 1, name), &o->body, name);
    add_entry(o->ref, o);
    break;
  case OP_GROUP:
    o->ref = member_str(j, "id", name);
    compile_list(member(j, "body", JSON_ARRAY, 1, name), &o->body, name);
    add_entry(o->ref, o);
    break;
  case OP_CANCEL:
    o->ref = member_str(j, "scope", name);
    break;
  case OP_SET_DEADLINE:
    o->ref = member_str(j, "scope", name);
    if (!json_get(j, "after") && !json_get(j, "at"))
      die("set_deadline: give \"after\" or \"at\" (null removes the deadline)");
    compile_deadline(o, j, "after", "at", name);
    break;
  case OP_SET_SHIELD:
    o->ref = member_str(j, "scope", name);
    o->shield = member(j, "shield", JSON_BOOL, 1, name)->boolean;
    break;
  case OP_SPAWN:
  case OP_START:
    o->ref = member_str(j, "group", name);
    o->text = member_str(j, "name", name);
    compile_list(member(j, "body", JSON_ARRAY, 1, name), &o->body, name);
    break;
  case OP_STARTED: {
    json_value *v = (json_value *)json_get(j, "value");
    o->value = v && v->type != JSON_NULL ? v : NULL;
    break;
  }
  case OP_TRY: {
    compile_list(member(j, "body", JSON_ARRAY, 1, name), &o->body, name);
    if (json_get(j, "finally")) compile_list(member(j, "finally", JSON_ARRAY, 1, name), &o->finally, name);
    const json_value *ex = member(j, "except", JSON_ARRAY, 0, name);
    if (ex) {
      o->nexcept = ex->count;
      o->except = xcalloc(ex->count, sizeof *o->except);
      for (size_t i = 0; i < ex->count; i++) {
        if (ex->items[i]->type != JSON_STRING) die("try: \"except\" must list error names");
        o->except[i] = ex->items[i]->string;
      }
    }
    break;
  }
  case OP_ACQUIRE:
  case OP_ACQUIRE_NOWAIT:
  case OP_RELEASE: {
    o->obj_ref = member_str(j, "object", name);
    const json_value *b = member(j, "on_behalf", JSON_STRING, 0, name);
    if (b) {
      o->behalf = b->string;
      o->token = token_of(b->string);
    }
    break;
  }
  case OP_NOTIFY:
    o->obj_ref = member_str(j, "object", name);
    o->count = json_get(j, "n") ? member_count(j, "n", 1, name) : 1;
    break;
  case OP_SET_TOTAL:
    o->obj_ref = member_str(j, "object", name);
    o->count = member_count(j, "total", 1, name);
    break;
  case OP_SEND:
  case OP_SEND_NOWAIT: {
    o->obj_ref = member_str(j, "object", name);
    json_value *v = (json_value *)json_get(j, "value");
    if (!v || (v->type != JSON_NUMBER && v->type != JSON_STRING))
      die("%s: \"value\" must be a number or a string", name);
    o->value = v;
    break;
  }
  case OP_CLONE_SENDER:
  case OP_CLONE_RECEIVER:
    o->obj_ref = member_str(j, "object", name);
    o->as = member_str(j, "as", name);
    o->as_obj = add_object(o->as, o->kind == OP_CLONE_SENDER ? OBJ_SENDER : OBJ_RECEIVER, NULL);
    break;
  case OP_TO_THREAD: {
    o->abandon = member_bool(j, "abandon_on_cancel", name);
    const json_value *l = member(j, "limiter", JSON_STRING, 0, name);
    if (l) o->obj_ref = l->string;
    g_worker_body = 1;
    compile_list(member(j, "body", JSON_ARRAY, 1, name), &o->body, name);
    g_worker_body = 0;
    break;
  }
  case OP_RETURN: {
    json_value *v = (json_value *)json_get(j, "value");
    o->value = v && v->type != JSON_NULL ? v : NULL;
    break;
  }
  case OP_SHIELD:
    compile_list(member(j, "body", JSON_ARRAY, 1, name), &o->body, name);
    break;
  case OP_SET:
  case OP_WAIT:
  case OP_NOTIFY_ALL:
  case OP_RECEIVE:
  case OP_RECEIVE_NOWAIT:
  case OP_DRAIN:
  case OP_CLOSE_SENDER:
  case OP_CLOSE_RECEIVER:
  case OP_STATISTICS:
    o->obj_ref = member_str(j, "object", name);
    break;
  default:
    break;
  }
}

static void compile_list(const json_value *arr, op_list *out, const char *where) {
  if (!arr || arr->type != JSON_ARRAY) die("%s: a body must be an array of ops", where);
  out->count = arr->count;
  out->items = xcalloc(arr->count, sizeof *out->items);
  for (size_t i = 0; i < arr->count; i++)
    compile_op(arr->items[i], &out->items[i]);
}

/* Which object kinds each synchronization op applies to (a bit per obj_kind). */
static unsigned op_object_kinds(op_kind k) {
#define B(x) (1u << (x))
  switch (k) {
  case OP_ACQUIRE:
  case OP_ACQUIRE_NOWAIT:
  case OP_RELEASE:
    return B(OBJ_LOCK) | B(OBJ_SEMAPHORE) | B(OBJ_LIMITER);
  case OP_SET:
    return B(OBJ_EVENT);
  case OP_WAIT:
    return B(OBJ_EVENT) | B(OBJ_CONDITION);
  case OP_NOTIFY:
  case OP_NOTIFY_ALL:
    return B(OBJ_CONDITION);
  case OP_SET_TOTAL:
    return B(OBJ_LIMITER);
  case OP_SEND:
  case OP_SEND_NOWAIT:
  case OP_CLOSE_SENDER:
  case OP_CLONE_SENDER:
    return B(OBJ_SENDER);
  case OP_RECEIVE:
  case OP_RECEIVE_NOWAIT:
  case OP_DRAIN:
  case OP_CLOSE_RECEIVER:
  case OP_CLONE_RECEIVER:
    return B(OBJ_RECEIVER);
  case OP_STATISTICS:
    return ~B(OBJ_CHANNEL);
  case OP_TO_THREAD:
    return B(OBJ_LIMITER);
  default:
    return 0;
  }
#undef B
}

/* The object kinds of the ops a worker thread runs (task NULL). The worker
 * vocabulary is kept small: no limiters, no conditions, no nowait variants
 * (README.md, "The thread bridge"). */
static unsigned worker_object_kinds(op_kind k) {
#define B(x) (1u << (x))
  switch (k) {
  case OP_ACQUIRE:
  case OP_RELEASE:
    return B(OBJ_LOCK) | B(OBJ_SEMAPHORE);
  case OP_SET:
  case OP_WAIT:
    return B(OBJ_EVENT);
  case OP_SEND:
    return B(OBJ_SENDER);
  case OP_RECEIVE:
    return B(OBJ_RECEIVER);
  default:
    return 0;
  }
#undef B
}

static void resolve_object(op *o) {
  o->obj = find_object(o->obj_ref, op_names[o->kind]);
  unsigned kinds = g_worker_body ? worker_object_kinds(o->kind) : op_object_kinds(o->kind);
  if (!(kinds & (1u << g_objs[o->obj].kind)))
    die("%s%s does not apply to \"%s\"", g_worker_body ? "worker op " : "", op_names[o->kind], o->obj_ref);
  if (o->behalf && g_objs[o->obj].kind != OBJ_LIMITER) die("%s: \"on_behalf\" is for limiters only", op_names[o->kind]);
}

/* Second pass: resolve every id to its registry entry (a reference may come
 * before the declaration in the tree). */
static void resolve_list(op_list *l) {
  for (size_t i = 0; i < l->count; i++) {
    op *o = &l->items[i];
    if (o->ref) {
      size_t k = 0;
      while (k < g_nreg && strcmp(g_reg[k].id, o->ref) != 0)
        k++;
      if (k == g_nreg) die("%s: unknown scope/group id \"%s\"", op_names[o->kind], o->ref);
      if ((o->kind == OP_SPAWN || o->kind == OP_START) && g_reg[k].decl->kind != OP_GROUP)
        die("%s: \"%s\" is not a group", op_names[o->kind], o->ref);
      o->reg = k;
    }
    if (o->obj_ref) resolve_object(o);
    if (o->kind == OP_TO_THREAD) g_worker_body = 1;
    resolve_list(&o->body);
    if (o->kind == OP_TO_THREAD) g_worker_body = 0;
    resolve_list(&o->finally);
  }
}

static void free_list(op_list *l) {
  for (size_t i = 0; i < l->count; i++) {
    free_list(&l->items[i].body);
    free_list(&l->items[i].finally);
    free(l->items[i].except);
  }
  free(l->items);
}

/* ======================================================================
 * 2. Outcomes and events
 * ==================================================================== */

/* What an op (or a body) propagates: nothing, a cancellation, or an error.
 * An error carries the flattened list of its leaf error names (a nested
 * group's failures are flattened into the outer one). */
typedef enum outcome_kind { OUT_OK, OUT_CANCELLED, OUT_ERROR } outcome_kind;

typedef struct outcome {
  outcome_kind kind;
  size_t n;
  const char **errs; /* OUT_ERROR: malloc'd array of n interned names */
} outcome;

static outcome out_ok(void) { return (outcome){OUT_OK, 0, NULL}; }
static outcome out_cancelled(void) { return (outcome){OUT_CANCELLED, 0, NULL}; }

static outcome out_error(const char *name) {
  outcome o = {OUT_ERROR, 1, xcalloc(1, sizeof(const char *))};
  o.errs[0] = name;
  return o;
}

static void out_free(outcome *o) {
  free(o->errs);
  *o = out_ok();
}

static void out_append(outcome *o, const char *const *names, size_t n) {
  const char **ne = realloc(o->errs, (o->n + n) * sizeof *ne);
  if (!ne) die("out of memory");
  memcpy(ne + o->n, names, n * sizeof *ne);
  o->errs = ne;
  o->n += n;
  o->kind = OUT_ERROR;
}

/* A multi-error travels between tasks as a failure payload: a heap copy of
 * the outcome, freed by payload_free. */
static void payload_free(void *p) {
  out_free(p);
  free(p);
}

static outcome *payload_new(const outcome *o) {
  outcome *p = xcalloc(1, sizeof *p);
  out_append(p, o->errs, o->n);
  return p;
}

/* The braid result code that stands for an outcome. */
static int outcome_rc(const outcome *o) {
  switch (o->kind) {
  case OUT_OK:
    return 0;
  case OUT_CANCELLED:
    return BRAID_ECANCELED;
  default:
    return code_of(o->errs[0]);
  }
}

/* Per-task state. `m` is the stepped interpreter's machine. */
typedef struct frame frame;
typedef struct machine {
  frame *frames;
  size_t depth, cap;
  int begun;
  const op *pending; /* the op whose wait is registered */
  outcome res;       /* the outcome being delivered to the top frame */
  int have_res;
} machine;

typedef struct tctx {
  braid_task *self;
  const char *name;
  const op_list *body;
  int is_root, stepped, finished;
  uint64_t id;       /* braid_task_id, to name lock owners and borrowers */
  void *start_value; /* braid_group_start writes here (must outlive a stepped wait) */
  void *recv_item;   /* braid_channel_receive writes here (likewise) */
  struct wjob *wjob; /* the to_thread call in progress (likewise) */
  machine m;
  struct tctx *next_alloc;
} tctx;

static tctx *g_tasks; /* every tctx, freed after the run */

static tctx *tctx_new(const char *name, const op_list *body, int stepped) {
  tctx *tc = xcalloc(1, sizeof *tc);
  tc->name = name;
  tc->body = body;
  tc->stepped = stepped;
  tc->next_alloc = g_tasks;
  g_tasks = tc;
  return tc;
}

static void print_ms(braid_time_t rel) {
  if (rel % BRAID_MSEC == 0)
    printf("%" PRId64, (int64_t)(rel / BRAID_MSEC));
  else
    printf("%.6f", (double)rel / (double)BRAID_MSEC);
}

/* Starts an event of task `name` at tc's current time (`name` differs from
 * tc's own for the events of its worker thread, which tc prints). */
static void ev_begin_as(tctx *tc, const char *name, const char *ev) {
  fputs("{\"t\":", stdout);
  print_ms(braid_now(tc->self) - g_start);
  fputs(",\"task\":", stdout);
  json_write_string(stdout, name);
  printf(",\"ev\":\"%s\"", ev);
}

static void ev_begin(tctx *tc, const char *ev) { ev_begin_as(tc, tc->name, ev); }

static void ev_end(void) {
  fputs("}\n", stdout);
  fflush(stdout);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static void ev_outcome(const outcome *o) {
  static const char *const kinds[] = {"ok", "cancelled", "error"};
  printf(",\"result\":\"%s\"", kinds[o->kind]);
  if (o->kind != OUT_ERROR) return;
  const char **sorted = xcalloc(o->n, sizeof *sorted);
  memcpy(sorted, o->errs, o->n * sizeof *sorted);
  qsort(sorted, o->n, sizeof *sorted, cmp_str);
  fputs(",\"errors\":[", stdout);
  for (size_t i = 0; i < o->n; i++) {
    if (i) fputc(',', stdout);
    json_write_string(stdout, sorted[i]);
  }
  fputc(']', stdout);
  free(sorted);
}

/* A braid call failed in a way no scenario expects: print it (so it shows in
 * the diff), remember it for the exit status, and propagate an error. */
static outcome internal(tctx *tc, const char *what, int rc) {
  g_internal_errors++;
  ev_begin(tc, "testee_error");
  fputs(",\"what\":", stdout);
  json_write_string(stdout, what);
  printf(",\"code\":\"%s\"", braid_errname(rc));
  ev_end();
  return out_error("testee_error");
}

static outcome flatten_failures(braid_group *g) {
  outcome o = {OUT_ERROR, 0, NULL};
  size_t n = braid_group_failure_count(g);
  for (size_t i = 0; i < n; i++) {
    int code = 0;
    void *payload = NULL;
    braid_group_failure(g, i, &code, &payload, NULL);
    if (payload) {
      const outcome *p = payload;
      out_append(&o, p->errs, p->n);
    } else {
      const char *name = name_of(code);
      out_append(&o, &name, 1);
    }
  }
  return o;
}

/* ======================================================================
 * 3. The semantics of the ops
 * ==================================================================== */

static braid_time_t deadline_of(tctx *tc, deadline_kind dl, int64_t ms) {
  switch (dl) {
  case DL_AFTER:
    return braid_now(tc->self) + ms * BRAID_MSEC;
  case DL_AT:
    return g_start + ms * BRAID_MSEC;
  default:
    return BRAID_NEVER;
  }
}

/* The scope of an entry, created (not entered) on first use for scopes. */
static braid_scope *entry_scope(entry *e) {
  if (!e->scope && e->decl->kind == OP_SCOPE) {
    unsigned flags = (e->decl->shield ? BRAID_SHIELD : 0u) | (e->decl->fail ? BRAID_FAIL : 0u);
    if (braid_scope_new(BRAID_NEVER, flags, &e->scope) != 0) die("braid_scope_new failed");
  }
  return e->scope;
}

/* Enters the scope of a scope op. Returns 1, or 0 with *err set. A scope
 * that nothing touched before uses braid_move_on_after / braid_fail_after
 * when it can, so the conveniences are exercised too. */
static int scope_enter(tctx *tc, const op *o, outcome *err) {
  entry *e = &g_reg[o->reg];
  int rc;
  if (!e->scope && o->dl == DL_AFTER && !o->shield) {
    rc = (o->fail ? braid_fail_after : braid_move_on_after)(tc->self, o->dl_ms * BRAID_MSEC, &e->scope);
    if (rc != 0) {
      *err = internal(tc, "move_on_after/fail_after", rc);
      return 0;
    }
    return 1;
  }
  braid_scope *s = entry_scope(e);
  if (o->dl != DL_NONE && (rc = braid_scope_set_deadline(s, deadline_of(tc, o->dl, o->dl_ms))) != 0) {
    *err = internal(tc, "scope_set_deadline", rc);
    return 0;
  }
  if ((rc = braid_scope_enter(tc->self, s)) != 0) {
    *err = internal(tc, "scope_enter", rc);
    return 0;
  }
  return 1;
}

/* Leaves the scope of a scope op with the body's outcome; prints scope_exit. */
static outcome scope_leave(tctx *tc, const op *o, outcome body) {
  entry *e = &g_reg[o->reg];
  int rc = outcome_rc(&body);
  int ret = braid_scope_exit(e->scope, rc);
  outcome res;
  if (ret == rc) {
    res = body;
  } else {
    out_free(&body);
    if (ret == 0)
      res = out_ok();
    else if (ret == BRAID_ETIMEDOUT)
      res = out_error("timeout");
    else if (ret == BRAID_ECANCELED)
      res = out_cancelled();
    else
      res = internal(tc, "scope_exit", ret);
  }
  ev_begin(tc, "scope_exit");
  fputs(",\"scope\":", stdout);
  json_write_string(stdout, o->ref);
  printf(",\"caught\":%s", braid_scope_cancelled_caught(e->scope) ? "true" : "false");
  ev_outcome(&res);
  ev_end();
  return res;
}

static int group_open(tctx *tc, const op *o, outcome *err) {
  entry *e = &g_reg[o->reg];
  int rc = braid_group_open(tc->self, &e->group);
  if (rc != 0) {
    *err = internal(tc, "group_open", rc);
    return 0;
  }
  e->scope = braid_scope_ref(braid_group_scope(e->group));
  return 1;
}

/* Hands the body's outcome to braid_group_close. A single error goes as the
 * close's rc (the body's failure code); several errors (a nested group's)
 * go as a failure payload through braid_group_fail. */
static int group_close_begin(const op *o, outcome body) {
  braid_group *g = g_reg[o->reg].group;
  int rc = outcome_rc(&body);
  if (body.kind == OUT_ERROR && body.n > 1) {
    braid_group_fail(g, rc, payload_new(&body), payload_free);
    rc = 0;
  }
  out_free(&body);
  return braid_group_close(g, rc);
}

static outcome group_close_finish(tctx *tc, const op *o, int rc) {
  braid_group *g = g_reg[o->reg].group;
  outcome res;
  if (rc == 0)
    res = out_ok();
  else if (rc == BRAID_EFAILED)
    res = flatten_failures(g);
  else if (rc == BRAID_ECANCELED)
    res = out_cancelled();
  else
    res = internal(tc, "group_close", rc);
  ev_begin(tc, "group_exit");
  fputs(",\"group\":", stdout);
  json_write_string(stdout, o->ref);
  ev_outcome(&res);
  ev_end();
  return res;
}

static int task_main(braid_task *self, void *arg);
static int step_main(braid_task *self, void *ctx, int resume);

static int next_child_stepped(void) {
  switch (g_mode) {
  case MODE_STEPPED:
    return 1;
  case MODE_MIXED:
    return (g_spawned++ & 1u) == 0;
  default:
    return 0;
  }
}

/* ---- Synchronization ops ----
 *
 * Every synchronization op emits one event: its success event (acquired,
 * received, ...), `cancelled` (blocking ops only), or `raised` with the
 * error name it then propagates. */

static object *obj_of(const op *o) { return &g_objs[o->obj]; }

static void ev_object(tctx *tc, const char *ev, const op *o) {
  ev_begin(tc, ev);
  fputs(",\"object\":", stdout);
  json_write_string(stdout, obj_of(o)->id);
}

/* The error name of a synchronization op's result code, NULL if no scenario
 * can expect it. */
static const char *sync_error_name(const op *o, int rc) {
  switch (rc) {
  case BRAID_EWOULDBLOCK:
    return "would_block";
  case BRAID_EDEADLK:
    return "deadlock_error";
  case BRAID_EPERM:
    return "permission_error";
  case BRAID_EEOF:
    return "end_of_stream";
  case BRAID_EBROKEN:
    return "broken_resource";
  case BRAID_ECLOSED:
    return "closed_resource";
  case BRAID_EINVAL: /* Semaphore.release past its max: AnyIO's ValueError */
    return o->kind == OP_RELEASE && obj_of(o)->kind == OBJ_SEMAPHORE ? "value_error" : NULL;
  default:
    return NULL;
  }
}

static outcome sync_failure(tctx *tc, const op *o, int rc) {
  if (rc == BRAID_ECANCELED) {
    ev_begin(tc, "cancelled");
    printf(",\"op\":\"%s\",\"object\":", op_names[o->kind]);
    json_write_string(stdout, obj_of(o)->id);
    ev_end();
    return out_cancelled();
  }
  const char *name = sync_error_name(o, rc);
  if (!name) return internal(tc, op_names[o->kind], rc);
  ev_begin(tc, "raised");
  printf(",\"op\":\"%s\",\"object\":", op_names[o->kind]);
  json_write_string(stdout, obj_of(o)->id);
  printf(",\"error\":\"%s\"", name);
  ev_end();
  return out_error(name);
}

/* The success event of a synchronization op; `item` is a received item. */
static outcome sync_success(tctx *tc, const op *o, const void *item) {
  switch (o->kind) {
  case OP_ACQUIRE:
  case OP_ACQUIRE_NOWAIT:
  case OP_RELEASE:
    ev_object(tc, o->kind == OP_RELEASE ? "released" : "acquired", o);
    if (o->behalf) {
      fputs(",\"on_behalf\":", stdout);
      json_write_string(stdout, o->behalf);
    }
    break;
  case OP_SET:
    ev_object(tc, "set", o);
    break;
  case OP_WAIT:
    ev_object(tc, "woken", o);
    break;
  case OP_NOTIFY:
    ev_object(tc, "notified", o);
    printf(",\"n\":%" PRIu64, o->count);
    break;
  case OP_NOTIFY_ALL:
    ev_object(tc, "notified", o);
    fputs(",\"n\":\"all\"", stdout);
    break;
  case OP_SET_TOTAL:
    ev_object(tc, "total_set", o);
    printf(",\"total\":%" PRIu64, o->count);
    break;
  case OP_SEND:
  case OP_SEND_NOWAIT:
    ev_object(tc, "sent", o);
    fputs(",\"value\":", stdout);
    json_write(stdout, o->value);
    break;
  case OP_RECEIVE:
  case OP_RECEIVE_NOWAIT:
  case OP_DRAIN:
    ev_object(tc, "received", o);
    fputs(",\"value\":", stdout);
    if (item)
      json_write(stdout, item);
    else
      fputs("null", stdout);
    break;
  case OP_CLOSE_SENDER:
  case OP_CLOSE_RECEIVER:
    ev_object(tc, "closed", o);
    break;
  case OP_CLONE_SENDER:
  case OP_CLONE_RECEIVER:
    ev_object(tc, "cloned", o);
    fputs(",\"as\":", stdout);
    json_write_string(stdout, o->as);
    break;
  default:
    return internal(tc, "not a synchronization op", BRAID_EINVAL);
  }
  ev_end();
  return out_ok();
}

/* 1 for a channel end whose clone op has not run yet: a scenario bug,
 * reported as a testee error. */
static int end_missing(const object *ob) {
  return (ob->kind == OBJ_SENDER || ob->kind == OBJ_RECEIVER) && !ob->tx && !ob->rx;
}

/* The name of a lock owner or limiter borrower, written as a JSON value. */
static void write_owner(int kind, uint64_t id) {
  if (kind == BRAID_OWNER_NONE) {
    fputs("null", stdout);
    return;
  }
  if (kind == BRAID_OWNER_TASK)
    for (const tctx *t = g_tasks; t; t = t->next_alloc)
      if (t->id == id) {
        json_write_string(stdout, t->name);
        return;
      }
  if (kind == BRAID_OWNER_FOREIGN && id >= 1 && id <= g_ntokens) {
    json_write_string(stdout, g_tokens[id - 1]);
    return;
  }
  printf("\"%s:%" PRIu64 "\"",
         kind == BRAID_OWNER_TASK     ? "task"
         : kind == BRAID_OWNER_THREAD ? "thread"
                                      : "foreign",
         id);
}

static void write_lock_stats(const braid_lock_stats *ls) {
  printf("{\"locked\":%s,\"owner\":", ls->locked ? "true" : "false");
  write_owner(ls->locked ? ls->owner_kind : BRAID_OWNER_NONE, ls->owner_id);
  printf(",\"waiting\":%zu}", ls->waiting);
}

/* Limiter borrowers, sorted by name (their order is unspecified). */
typedef struct borrower {
  char name[96];
} borrower;

static int cmp_borrower(const void *a, const void *b) {
  return strcmp(((const borrower *)a)->name, ((const borrower *)b)->name);
}

static int write_borrowers(braid_limiter *lim) {
  size_t n = 16;
  int *kinds = NULL;
  uint64_t *ids = NULL;
  long got;
  for (;;) {
    kinds = xcalloc(n, sizeof *kinds);
    ids = xcalloc(n, sizeof *ids);
    got = braid_limiter_borrowers(lim, kinds, ids, n);
    if (got < 0) {
      free(kinds);
      free(ids);
      return (int)got;
    }
    if ((size_t)got <= n) break;
    free(kinds);
    free(ids);
    n = (size_t)got;
  }
  borrower *bs = xcalloc((size_t)got, sizeof *bs);
  for (long i = 0; i < got; i++) {
    /* the name as write_owner would write it, without the quotes */
    const char *name = NULL;
    if (kinds[i] == BRAID_OWNER_TASK)
      for (const tctx *t = g_tasks; t && !name; t = t->next_alloc)
        if (t->id == ids[i]) name = t->name;
    if (!name && kinds[i] == BRAID_OWNER_FOREIGN && ids[i] >= 1 && ids[i] <= g_ntokens) name = g_tokens[ids[i] - 1];
    if (name)
      snprintf(bs[i].name, sizeof bs[i].name, "%s", name);
    else
      snprintf(bs[i].name, sizeof bs[i].name, "%s:%" PRIu64,
               kinds[i] == BRAID_OWNER_TASK     ? "task"
               : kinds[i] == BRAID_OWNER_THREAD ? "thread"
                                                : "foreign",
               ids[i]);
  }
  qsort(bs, (size_t)got, sizeof *bs, cmp_borrower);
  fputc('[', stdout);
  for (long i = 0; i < got; i++) {
    if (i) fputc(',', stdout);
    json_write_string(stdout, bs[i].name);
  }
  fputc(']', stdout);
  free(bs);
  free(kinds);
  free(ids);
  return 0;
}

/* statistics: one `stats` event with a compact object (README.md). */
static outcome sync_statistics(tctx *tc, const op *o) {
  object *ob = obj_of(o);
  int rc = 0;
  if (end_missing(ob)) return internal(tc, "scenario: channel end used before its clone ran", BRAID_EINVAL);
  /* Fetch everything first, so that a failing call prints no half event. */
  braid_lock_stats ls = {sizeof ls, 0, 0, 0, 0};
  braid_semaphore_stats ss = {sizeof ss, 0, 0, 0};
  braid_event_stats es = {sizeof es, 0, 0};
  braid_condition_stats cs;
  braid_limiter_stats lims = {sizeof lims, 0, 0, 0};
  braid_channel_stats chs;
  memset(&cs, 0, sizeof cs);
  cs.size = sizeof cs;
  cs.lock.size = sizeof cs.lock;
  memset(&chs, 0, sizeof chs);
  chs.size = sizeof chs;
  switch (ob->kind) {
  case OBJ_LOCK:
    rc = braid_lock_statistics(ob->lock, &ls);
    break;
  case OBJ_SEMAPHORE:
    rc = braid_semaphore_statistics(ob->sem, &ss);
    break;
  case OBJ_EVENT:
    rc = braid_event_statistics(ob->event, &es);
    break;
  case OBJ_CONDITION:
    rc = braid_condition_statistics(ob->cond, &cs);
    break;
  case OBJ_LIMITER:
    rc = braid_limiter_statistics(ob->lim, &lims);
    break;
  case OBJ_SENDER:
    rc = braid_sender_statistics(ob->tx, &chs);
    break;
  case OBJ_RECEIVER:
    rc = braid_receiver_statistics(ob->rx, &chs);
    break;
  default:
    rc = BRAID_EINVAL;
  }
  if (rc == BRAID_ECLOSED) return sync_failure(tc, o, rc); /* a closed end */
  if (rc != 0) return internal(tc, "statistics", rc);
  ev_object(tc, "stats", o);
  fputs(",\"stats\":", stdout);
  switch (ob->kind) {
  case OBJ_LOCK:
    write_lock_stats(&ls);
    break;
  case OBJ_SEMAPHORE:
    printf("{\"value\":%" PRIu64 ",\"max\":", ss.value);
    if (ss.max)
      printf("%" PRIu64, ss.max);
    else
      fputs("null", stdout);
    printf(",\"waiting\":%zu}", ss.waiting);
    break;
  case OBJ_EVENT:
    printf("{\"set\":%s,\"waiting\":%zu}", es.set ? "true" : "false", es.waiting);
    break;
  case OBJ_CONDITION:
    printf("{\"waiting\":%zu,\"lock\":", cs.waiting);
    write_lock_stats(&cs.lock);
    fputc('}', stdout);
    break;
  case OBJ_LIMITER:
    printf("{\"total\":%" PRIu64 ",\"borrowed\":%" PRIu64 ",\"waiting\":%zu,\"borrowers\":", lims.total, lims.borrowed,
           lims.waiting);
    rc = write_borrowers(ob->lim);
    fputc('}', stdout);
    break;
  default:
    printf("{\"buffered\":%zu,\"max_buffer\":", chs.buffered);
    if (chs.max_buffer == BRAID_UNBOUNDED)
      fputs("\"inf\"", stdout);
    else
      printf("%zu", chs.max_buffer);
    printf(",\"open_senders\":%zu,\"open_receivers\":%zu,\"waiting_send\":%zu,\"waiting_receive\":%zu}",
           chs.open_senders, chs.open_receivers, chs.waiting_send, chs.waiting_receive);
    break;
  }
  ev_end();
  if (rc != 0) return internal(tc, "limiter_borrowers", rc);
  return out_ok();
}

/* The synchronization ops that do not block. */
static outcome sync_simple(tctx *tc, const op *o) {
  object *ob = obj_of(o);
  void *item = NULL;
  int rc;
  if (o->kind == OP_STATISTICS) return sync_statistics(tc, o);
  if (end_missing(ob)) return internal(tc, "scenario: channel end used before its clone ran", BRAID_EINVAL);
  switch (o->kind) {
  case OP_ACQUIRE_NOWAIT:
    if (ob->kind == OBJ_LOCK)
      rc = braid_lock_acquire_nowait(tc->self, ob->lock);
    else if (ob->kind == OBJ_SEMAPHORE)
      rc = braid_semaphore_acquire_nowait(ob->sem);
    else
      rc = braid_limiter_acquire_nowait(tc->self, ob->lim, o->token);
    break;
  case OP_RELEASE:
    if (ob->kind == OBJ_LOCK)
      rc = braid_lock_release(tc->self, ob->lock);
    else if (ob->kind == OBJ_SEMAPHORE)
      rc = braid_semaphore_release(ob->sem);
    else
      rc = braid_limiter_release(tc->self, ob->lim, o->token);
    break;
  case OP_SET:
    rc = braid_event_set(ob->event);
    break;
  case OP_NOTIFY:
    rc = braid_condition_notify(tc->self, ob->cond, (size_t)o->count);
    break;
  case OP_NOTIFY_ALL:
    rc = braid_condition_notify_all(tc->self, ob->cond);
    break;
  case OP_SET_TOTAL:
    rc = braid_limiter_set_total(ob->lim, o->count);
    break;
  case OP_SEND_NOWAIT:
    rc = braid_channel_send_nowait(ob->tx, o->value);
    break;
  case OP_RECEIVE_NOWAIT:
    rc = braid_channel_receive_nowait(ob->rx, &item);
    break;
  case OP_CLOSE_SENDER:
    rc = braid_sender_close(ob->tx); /* idempotent */
    break;
  case OP_CLOSE_RECEIVER:
    rc = braid_receiver_close(ob->rx);
    break;
  case OP_CLONE_SENDER:
    rc = braid_sender_clone(ob->tx, &g_objs[o->as_obj].tx);
    break;
  case OP_CLONE_RECEIVER:
    rc = braid_receiver_clone(ob->rx, &g_objs[o->as_obj].rx);
    break;
  default:
    return internal(tc, "not a simple synchronization op", BRAID_EINVAL);
  }
  return rc == 0 ? sync_success(tc, o, item) : sync_failure(tc, o, rc);
}

/* The braid call of a blocking synchronization op. */
static int sync_block_begin(tctx *tc, const op *o) {
  object *ob = obj_of(o);
  if (end_missing(ob)) return BRAID_EINVAL; /* reported by sync_block_finish */
  switch (o->kind) {
  case OP_ACQUIRE:
    if (ob->kind == OBJ_LOCK) return braid_lock_acquire(tc->self, ob->lock);
    if (ob->kind == OBJ_SEMAPHORE) return braid_semaphore_acquire(tc->self, ob->sem);
    if (o->token) return braid_limiter_acquire_on_behalf(tc->self, ob->lim, o->token);
    return braid_limiter_acquire(tc->self, ob->lim);
  case OP_WAIT:
    if (ob->kind == OBJ_EVENT) return braid_event_wait(tc->self, ob->event);
    return braid_condition_wait(tc->self, ob->cond);
  case OP_SEND:
    return braid_channel_send(tc->self, ob->tx, o->value);
  default: /* OP_RECEIVE, OP_DRAIN */
    tc->recv_item = NULL;
    return braid_channel_receive(tc->self, ob->rx, &tc->recv_item);
  }
}

/* The outcome of a blocking synchronization op. A drain that received an
 * item sets *again: the op runs once more (`async for`), until the end of
 * the stream ends it with ok. */
static outcome sync_block_finish(tctx *tc, const op *o, int rc, int *again) {
  void *item = tc->recv_item;
  tc->recv_item = NULL;
  if (end_missing(obj_of(o))) return internal(tc, "scenario: channel end used before its clone ran", rc);
  if (rc != 0) {
    if (o->kind == OP_DRAIN && rc == BRAID_EEOF) return out_ok();
    return sync_failure(tc, o, rc);
  }
  outcome res = sync_success(tc, o, item);
  if (o->kind == OP_DRAIN && res.kind == OUT_OK) *again = 1;
  return res;
}

/* ---- to_thread: the thread bridge (section 8 of braid.h) ----
 *
 * A to_thread op runs its body, a list of worker ops, on a worker thread
 * through braid_to_thread. The worker calls braid with task NULL: its waits
 * (lock, semaphore, event, channel, braid_sleep_forever) honour the task's
 * cancellation, and `shield` enters a shielded scope of the worker thread's
 * own (braid_scope_enter(NULL, s)), which hides it.
 *
 * The worker never prints: it cannot read the loop's virtual clock, and its
 * output would interleave with the loop thread's. It records its events in
 * its wjob; when braid_to_thread has returned, the task prints them, named
 * "<task>/worker" and stamped with the time at which to_thread returned,
 * then the to_thread op's own event. A job abandoned on cancellation
 * (BRAID_ABANDON_ON_CANCEL and the op ends cancelled) may still run then:
 * its events are dropped. A wjob lives until the end of main, which first
 * waits until no worker is busy.
 */

/* fn's result when the body ended with an error; its name is in wjob.err. */
#define WORKER_FAILED 999

typedef struct wev {
  const char *ev;    /* the event kind */
  const op *o;       /* the op that emitted it */
  const void *item;  /* received: the item */
  const char *error; /* raised, caught: the error name */
} wev;

typedef struct wjob {
  const op *o; /* the to_thread op */
  wev *evs;    /* written by the worker; read once braid_to_thread returned */
  size_t nev, cap;
  const json_value *value; /* the body's `return` value (NULL = null) */
  const char *err;         /* the error being propagated (W_ERROR) */
  const char *bad_what;    /* a braid call failed unexpectedly on the worker */
  int bad_rc, reported;
  struct wjob *next; /* g_wjobs */
} wjob;

static wjob *g_wjobs; /* every wjob; touched by the loop thread, then main */

/* How a worker op ends: as an op of a task, plus the `return` op. */
typedef enum wkind { W_OK, W_CANCELLED, W_ERROR, W_RETURN } wkind;

static void wrecord(wjob *wj, const char *ev, const op *o, const void *item, const char *error) {
  if (wj->nev == wj->cap) {
    size_t ncap = wj->cap ? wj->cap * 2 : 8;
    wev *ne = realloc(wj->evs, ncap * sizeof *ne);
    if (!ne) die("out of memory");
    wj->evs = ne;
    wj->cap = ncap;
  }
  wj->evs[wj->nev++] = (wev){ev, o, item, error};
}

/* An unexpected braid result on the worker: the task reports it. */
static wkind wbad(wjob *wj, const char *what, int rc) {
  if (!wj->bad_what) {
    wj->bad_what = what;
    wj->bad_rc = rc;
  }
  wj->err = "testee_error";
  return W_ERROR;
}

static wkind wfailure(wjob *wj, const op *o, int rc) {
  if (rc == BRAID_ECANCELED) {
    wrecord(wj, "cancelled", o, NULL, NULL);
    return W_CANCELLED;
  }
  const char *name = o->obj_ref ? sync_error_name(o, rc) : NULL;
  if (!name) return wbad(wj, op_names[o->kind], rc);
  wrecord(wj, "raised", o, NULL, name);
  wj->err = name;
  return W_ERROR;
}

static wkind wrun_list(wjob *wj, const op_list *l);

static wkind wrun_op(wjob *wj, const op *o) {
  object *ob = o->obj_ref ? obj_of(o) : NULL;
  void *item = NULL;
  int rc;
  if (ob && end_missing(ob)) return wbad(wj, "scenario: channel end used before its clone ran", BRAID_EINVAL);
  switch (o->kind) {
  case OP_LOG:
    wrecord(wj, "log", o, NULL, NULL);
    return W_OK;
  case OP_FAIL:
    wj->err = o->text;
    return W_ERROR;
  case OP_RETURN:
    wj->value = o->value;
    return W_RETURN;
  case OP_CHECK_CANCELLED:
    rc = braid_thread_check_cancelled();
    return rc == 0 ? W_OK : wfailure(wj, o, rc);
  case OP_SLEEP_FOREVER:
    rc = braid_sleep_forever(NULL);
    return rc == BRAID_ECANCELED ? wfailure(wj, o, rc) : wbad(wj, "sleep_forever (worker)", rc);
  case OP_SHIELD: {
    braid_scope *s;
    rc = braid_scope_new(BRAID_NEVER, BRAID_SHIELD, &s);
    if (rc != 0) return wbad(wj, "scope_new (worker)", rc);
    rc = braid_scope_enter(NULL, s);
    if (rc != 0) {
      braid_scope_unref(s);
      return wbad(wj, "scope_enter (worker)", rc);
    }
    wkind k = wrun_list(wj, &o->body);
    int body_rc = k == W_CANCELLED ? BRAID_ECANCELED : k == W_ERROR ? WORKER_FAILED : 0;
    rc = braid_scope_exit(s, body_rc);
    braid_scope_unref(s);
    return rc == body_rc ? k : wbad(wj, "scope_exit (worker)", rc);
  }
  case OP_TRY: {
    wkind k = wrun_list(wj, &o->body);
    if (k == W_ERROR)
      for (size_t i = 0; i < o->nexcept; i++)
        if (strcmp(o->except[i], wj->err) == 0) {
          wrecord(wj, "caught", o, NULL, wj->err);
          k = W_OK;
          break;
        }
    const char *err = wj->err;
    wkind fin = wrun_list(wj, &o->finally);
    if (fin != W_OK) return fin; /* replaces the body's outcome */
    wj->err = err;
    return k;
  }
  case OP_ACQUIRE:
    rc = ob->kind == OBJ_LOCK ? braid_lock_acquire(NULL, ob->lock) : braid_semaphore_acquire(NULL, ob->sem);
    break;
  case OP_RELEASE:
    rc = ob->kind == OBJ_LOCK ? braid_lock_release(NULL, ob->lock) : braid_semaphore_release(ob->sem);
    break;
  case OP_SET:
    rc = braid_event_set(ob->event);
    break;
  case OP_WAIT:
    rc = braid_event_wait(NULL, ob->event);
    break;
  case OP_SEND:
    rc = braid_channel_send(NULL, ob->tx, o->value);
    break;
  case OP_RECEIVE:
    rc = braid_channel_receive(NULL, ob->rx, &item);
    break;
  default:
    return wbad(wj, "not a worker op", BRAID_EINVAL);
  }
  if (rc != 0) return wfailure(wj, o, rc);
  static const char *const success[OP_COUNT] = {
      [OP_ACQUIRE] = "acquired", [OP_RELEASE] = "released", [OP_SET] = "set",
      [OP_WAIT] = "woken",       [OP_SEND] = "sent",        [OP_RECEIVE] = "received"};
  wrecord(wj, success[o->kind], o, item, NULL);
  return W_OK;
}

static wkind wrun_list(wjob *wj, const op_list *l) {
  for (size_t i = 0; i < l->count; i++) {
    wkind k = wrun_op(wj, &l->items[i]);
    if (k != W_OK) return k;
  }
  return W_OK;
}

/* The braid_thread_fn of every to_thread: runs on the worker thread. */
static int worker_main(void *arg) {
  wjob *wj = arg;
  switch (wrun_list(wj, &wj->o->body)) {
  case W_CANCELLED:
    return BRAID_ECANCELED;
  case W_ERROR:
    return WORKER_FAILED;
  default:
    return 0;
  }
}

static int to_thread_begin(tctx *tc, const op *o) {
  wjob *wj = xcalloc(1, sizeof *wj);
  wj->o = o;
  wj->next = g_wjobs;
  g_wjobs = wj;
  tc->wjob = wj;
  return braid_to_thread(tc->self, worker_main, wj, o->abandon ? BRAID_ABANDON_ON_CANCEL : 0u,
                         o->obj_ref ? obj_of(o)->lim : NULL);
}

static void print_worker_events(tctx *tc, const wjob *wj) {
  size_t len = strlen(tc->name);
  char *name = xcalloc(len + sizeof "/worker", 1);
  memcpy(name, tc->name, len);
  memcpy(name + len, "/worker", sizeof "/worker");
  for (size_t i = 0; i < wj->nev; i++) {
    const wev *e = &wj->evs[i];
    ev_begin_as(tc, name, e->ev);
    if (strcmp(e->ev, "log") == 0) {
      fputs(",\"msg\":", stdout);
      json_write_string(stdout, e->o->text);
    } else if (strcmp(e->ev, "caught") == 0) {
      fputs(",\"error\":", stdout);
      json_write_string(stdout, e->error);
    } else {
      if (strcmp(e->ev, "cancelled") == 0 || strcmp(e->ev, "raised") == 0)
        printf(",\"op\":\"%s\"", op_names[e->o->kind]);
      if (e->o->obj_ref) {
        fputs(",\"object\":", stdout);
        json_write_string(stdout, obj_of(e->o)->id);
      }
      if (e->error) printf(",\"error\":\"%s\"", e->error);
      if (strcmp(e->ev, "sent") == 0 || strcmp(e->ev, "received") == 0) {
        fputs(",\"value\":", stdout);
        json_write(stdout, strcmp(e->ev, "sent") == 0 ? e->o->value : e->item);
      }
    }
    ev_end();
  }
  free(name);
}

/* braid_to_thread returned rc: print the worker's events (unless the job
 * was abandoned), then the op's own: `returned`, `cancelled` or `raised`. */
static outcome to_thread_finish(tctx *tc, const op *o, int rc) {
  wjob *wj = tc->wjob;
  tc->wjob = NULL;
  if (!wj) return internal(tc, "to_thread finished without a job", rc);
  if (!(rc == BRAID_ECANCELED && o->abandon)) {
    print_worker_events(tc, wj);
    if (wj->bad_what) {
      wj->reported = 1;
      return internal(tc, wj->bad_what, wj->bad_rc);
    }
  }
  switch (rc) {
  case 0:
    ev_begin(tc, "returned");
    fputs(",\"value\":", stdout);
    if (wj->value)
      json_write(stdout, wj->value);
    else
      fputs("null", stdout);
    ev_end();
    return out_ok();
  case BRAID_ECANCELED:
    ev_begin(tc, "cancelled");
    fputs(",\"op\":\"to_thread\"", stdout);
    ev_end();
    return out_cancelled();
  case WORKER_FAILED:
    ev_begin(tc, "raised");
    fputs(",\"op\":\"to_thread\",\"error\":", stdout);
    json_write_string(stdout, wj->err);
    ev_end();
    return out_error(wj->err);
  default:
    return internal(tc, "to_thread", rc);
  }
}

/* After the run: wait until no worker thread runs a job any more (an
 * abandoned one may), so that the objects and wjobs can go. A worker still
 * busy after 10 s (a scenario that never lets an abandoned worker finish)
 * ends the testee with status 3. Then report what abandoned workers could
 * not, and free the wjobs. */
static int finish_workers(void) {
  int status = 0;
  if (!g_wjobs) return 0;
  for (int waited = 0;; waited++) {
    braid_worker_stats ws;
    memset(&ws, 0, sizeof ws);
    ws.size = sizeof ws;
    if (braid_worker_statistics(&ws) != 0 || ws.busy == 0) break;
    if (waited == 10000) {
      fprintf(stderr, "braid_testee: a worker thread is still busy after the run\n");
      fflush(stdout);
      _Exit(3);
    }
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  while (g_wjobs) {
    wjob *wj = g_wjobs;
    g_wjobs = wj->next;
    if (wj->bad_what && !wj->reported) {
      fprintf(stderr, "braid_testee: worker: %s failed: %s\n", wj->bad_what, braid_errname(wj->bad_rc));
      status = 3;
    }
    free(wj->evs);
    free(wj);
  }
  return status;
}

/* The braid call of a blocking op. On a stepped task it may return
 * BRAID_EPENDING; the outcome then arrives as the next step's resume. */
static int block_begin(tctx *tc, const op *o) {
  switch (o->kind) {
  case OP_SLEEP:
    return braid_sleep(tc->self, o->ms * BRAID_MSEC);
  case OP_SLEEP_FOREVER:
    return braid_sleep_forever(tc->self);
  case OP_CHECKPOINT:
    return braid_checkpoint(tc->self);
  case OP_SHIELDED_CHECKPOINT:
    return braid_cancel_shielded_checkpoint(tc->self);
  case OP_START: {
    tctx *child = tctx_new(o->text, &o->body, next_child_stepped());
    braid_spawn_opts so = {sizeof so, o->text, 0};
    braid_group *g = g_reg[o->reg].group;
    tc->start_value = NULL;
    if (child->stepped) return braid_group_start_stepped(g, tc->self, step_main, child, &so, &tc->start_value);
    return braid_group_start(g, tc->self, task_main, child, &so, &tc->start_value);
  }
  case OP_ACQUIRE:
  case OP_WAIT:
  case OP_SEND:
  case OP_RECEIVE:
  case OP_DRAIN:
    return sync_block_begin(tc, o);
  case OP_TO_THREAD:
    return to_thread_begin(tc, o);
  default:
    return BRAID_EINVAL;
  }
}

/* The outcome of a blocking op whose braid call returned (or resumed with)
 * rc. *again is set when the op must run once more (drain). */
static outcome block_finish(tctx *tc, const op *o, int rc, int *again) {
  *again = 0;
  switch (o->kind) {
  case OP_ACQUIRE:
  case OP_WAIT:
  case OP_SEND:
  case OP_RECEIVE:
  case OP_DRAIN:
    return sync_block_finish(tc, o, rc, again);
  case OP_TO_THREAD:
    return to_thread_finish(tc, o, rc);
  default:
    break;
  }
  if (o->kind == OP_START) {
    void *value = tc->start_value;
    tc->start_value = NULL;
    if (rc == 0) {
      ev_begin(tc, "started");
      fputs(",\"child\":", stdout);
      json_write_string(stdout, o->text);
      fputs(",\"value\":", stdout);
      if (value)
        json_write(stdout, value);
      else
        fputs("null", stdout);
      ev_end();
      return out_ok();
    }
    outcome res;
    if (rc == BRAID_EINVAL || rc == BRAID_ENOMEM || rc == BRAID_ETHREAD || rc == BRAID_EPENDING ||
        rc == BRAID_EFAILED) {
      return internal(tc, "group_start", rc);
    } else if (rc == BRAID_ECANCELED) {
      res = out_cancelled();
    } else if (value) { /* a multi-error payload, now ours */
      res = (outcome){OUT_ERROR, 0, NULL};
      out_append(&res, ((outcome *)value)->errs, ((outcome *)value)->n);
      payload_free(value);
    } else {
      res = out_error(name_of(rc));
    }
    ev_begin(tc, "start_failed");
    fputs(",\"child\":", stdout);
    json_write_string(stdout, o->text);
    ev_outcome(&res);
    ev_end();
    return res;
  }
  if (rc == 0) return out_ok();
  if (rc == BRAID_ECANCELED) {
    ev_begin(tc, "cancelled");
    printf(",\"op\":\"%s\"", op_names[o->kind]);
    ev_end();
    return out_cancelled();
  }
  return internal(tc, op_names[o->kind], rc);
}

static int is_blocking(op_kind k) {
  return k == OP_SLEEP || k == OP_SLEEP_FOREVER || k == OP_CHECKPOINT || k == OP_SHIELDED_CHECKPOINT || k == OP_START ||
         k == OP_ACQUIRE || k == OP_WAIT || k == OP_SEND || k == OP_RECEIVE || k == OP_DRAIN || k == OP_TO_THREAD;
}

/* The ops that neither block nor nest. */
static outcome run_simple(tctx *tc, const op *o) {
  int rc;
  switch (o->kind) {
  case OP_CHECKPOINT_IF_CANCELLED: {
    int again;
    rc = braid_checkpoint_if_cancelled(tc->self);
    return block_finish(tc, o, rc, &again);
  }
  case OP_LOG:
    ev_begin(tc, "log");
    fputs(",\"msg\":", stdout);
    json_write_string(stdout, o->text);
    ev_end();
    return out_ok();
  case OP_REPORT_DEADLINE: {
    braid_time_t d = braid_current_effective_deadline(tc->self);
    ev_begin(tc, "deadline");
    fputs(",\"deadline\":", stdout);
    if (d == INT64_MIN)
      fputs("\"-inf\"", stdout);
    else if (d == BRAID_NEVER)
      fputs("\"inf\"", stdout);
    else
      print_ms(d - g_start);
    ev_end();
    return out_ok();
  }
  case OP_CANCEL:
  case OP_SET_DEADLINE:
  case OP_SET_SHIELD: {
    braid_scope *s = entry_scope(&g_reg[o->reg]);
    if (!s) return internal(tc, "scenario: group used before it was opened", BRAID_EINVAL);
    if (o->kind == OP_CANCEL)
      rc = braid_scope_cancel(s);
    else if (o->kind == OP_SET_DEADLINE)
      rc = braid_scope_set_deadline(s, deadline_of(tc, o->dl, o->dl_ms));
    else
      rc = braid_scope_set_shield(s, o->shield);
    return rc == 0 ? out_ok() : internal(tc, op_names[o->kind], rc);
  }
  case OP_SPAWN: {
    braid_group *g = g_reg[o->reg].group;
    if (!g) return internal(tc, "scenario: spawn into a group never opened", BRAID_EINVAL);
    tctx *child = tctx_new(o->text, &o->body, next_child_stepped());
    braid_spawn_opts so = {sizeof so, o->text, 0};
    rc = child->stepped ? braid_group_spawn_stepped(g, step_main, child, &so, NULL)
                        : braid_group_spawn(g, task_main, child, &so, NULL);
    if (rc == BRAID_ESTATE) return out_error("state_error");
    return rc == 0 ? out_ok() : internal(tc, "group_spawn", rc);
  }
  case OP_STARTED:
    rc = braid_task_started(tc->self, o->value);
    if (rc == BRAID_ESTATE) return out_error("state_error");
    return rc == 0 ? out_ok() : internal(tc, "task_started", rc);
  case OP_FAIL:
    return out_error(o->text);
  case OP_ACQUIRE_NOWAIT:
  case OP_RELEASE:
  case OP_SET:
  case OP_NOTIFY:
  case OP_NOTIFY_ALL:
  case OP_SET_TOTAL:
  case OP_SEND_NOWAIT:
  case OP_RECEIVE_NOWAIT:
  case OP_CLOSE_SENDER:
  case OP_CLOSE_RECEIVER:
  case OP_CLONE_SENDER:
  case OP_CLONE_RECEIVER:
  case OP_STATISTICS:
    return sync_simple(tc, o);
  default:
    return internal(tc, "not a simple op", BRAID_EINVAL);
  }
}

/* try/except: an error with exactly one name listed in `except` is caught
 * (a `caught` event; the outcome becomes ok), as `except NAME:` catches an
 * exception. Cancellations and multi-errors (exception groups) pass. */
static outcome try_except(tctx *tc, const op *o, outcome body) {
  if (body.kind != OUT_ERROR || body.n != 1) return body;
  for (size_t i = 0; i < o->nexcept; i++)
    if (strcmp(o->except[i], body.errs[0]) == 0) {
      ev_begin(tc, "caught");
      fputs(",\"error\":", stdout);
      json_write_string(stdout, body.errs[0]);
      ev_end();
      out_free(&body);
      return out_ok();
    }
  return body;
}

/* try/finally: an outcome of the finally block other than ok replaces the
 * body's, as an exception raised in `finally` does. */
static outcome try_combine(outcome body, outcome fin) {
  if (fin.kind != OUT_OK) {
    out_free(&body);
    return fin;
  }
  return body;
}

/* Prints the task's end and returns its result for braid. A multi-error is
 * recorded with braid_task_fail so that its payload reaches the group. The
 * root also frees the groups (all of them are closed by now). */
static int task_finish(tctx *tc, outcome res) {
  ev_begin(tc, "end");
  ev_outcome(&res);
  ev_end();
  int rc = outcome_rc(&res);
  if (res.kind == OUT_ERROR && res.n > 1 && !tc->is_root)
    rc = braid_task_fail(tc->self, rc, payload_new(&res), payload_free);
  out_free(&res);
  if (tc->is_root && getenv("BRAID_TESTEE_STATS")) {
    braid_loop_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    if (braid_loop_get_stats(braid_task_loop(tc->self), &st) == 0)
      fprintf(stderr, "braid_testee: spawned %" PRIu64 ", switches %" PRIu64 ", steps %" PRIu64 "\n", st.tasks_spawned,
              st.switches, st.steps);
  }
  if (tc->is_root) {
    for (size_t i = 0; i < g_nreg; i++)
      if (g_reg[i].group && braid_group_free(g_reg[i].group) == 0) g_reg[i].group = NULL;
  }
  tc->finished = 1;
  return rc;
}

static void task_begin(tctx *tc, braid_task *self) {
  tc->self = self;
  tc->id = braid_task_id(self);
  if (tc->is_root) g_start = braid_now(self);
  ev_begin(tc, "start");
  ev_end();
}

/* ======================================================================
 * 4a. The stackful interpreter: the C stack holds the nesting.
 * ==================================================================== */

static outcome run_list(tctx *tc, const op_list *l);

static outcome run_op(tctx *tc, const op *o) {
  outcome err;
  switch (o->kind) {
  case OP_SCOPE:
    if (!scope_enter(tc, o, &err)) return err;
    return scope_leave(tc, o, run_list(tc, &o->body));
  case OP_GROUP:
    if (!group_open(tc, o, &err)) return err;
    return group_close_finish(tc, o, group_close_begin(o, run_list(tc, &o->body)));
  case OP_TRY: {
    outcome body = try_except(tc, o, run_list(tc, &o->body));
    return try_combine(body, run_list(tc, &o->finally));
  }
  default:
    if (is_blocking(o->kind)) {
      for (;;) {
        int again;
        outcome res = block_finish(tc, o, block_begin(tc, o), &again);
        if (!again) return res;
      }
    }
    return run_simple(tc, o);
  }
}

static outcome run_list(tctx *tc, const op_list *l) {
  for (size_t i = 0; i < l->count; i++) {
    outcome o = run_op(tc, &l->items[i]);
    if (o.kind != OUT_OK) return o;
  }
  return out_ok();
}

static int task_main(braid_task *self, void *arg) {
  tctx *tc = arg;
  task_begin(tc, self);
  return task_finish(tc, run_list(tc, tc->body));
}

/* ======================================================================
 * 4b. The stepped interpreter: an explicit stack of frames.
 *
 * A LIST frame runs the ops of a body one by one; SCOPE, GROUP and TRY frames
 * sit below the LIST frame of their body and wait for its outcome. The
 * machine has one register, `res`: when have_res is set, res is the outcome
 * of whatever just finished (an op, or the LIST frame that was popped) and
 * is delivered to the top frame. A LIST frame takes an ok and moves on, or
 * pops itself and passes anything else down, which is how an error or a
 * cancellation skips the rest of a body exactly as an exception would.
 * ==================================================================== */

typedef enum frame_kind { FR_LIST, FR_SCOPE, FR_GROUP, FR_TRY } frame_kind;

struct frame {
  frame_kind kind;
  const op *op;        /* SCOPE, GROUP, TRY: the op; LIST: unused */
  const op_list *list; /* LIST */
  size_t idx;          /* LIST: next op */
  int in_finally;      /* TRY */
  outcome saved;       /* TRY: the body's outcome while the finally block runs */
};

static void push(machine *m, frame_kind kind, const op *o, const op_list *list) {
  if (m->depth == m->cap) {
    size_t ncap = m->cap ? m->cap * 2 : 8;
    frame *nf = realloc(m->frames, ncap * sizeof *nf);
    if (!nf) die("out of memory");
    m->frames = nf;
    m->cap = ncap;
  }
  m->frames[m->depth++] = (frame){kind, o, list, 0, 0, {OUT_OK, 0, NULL}};
}

static void deliver(machine *m, outcome res) {
  m->res = res;
  m->have_res = 1;
}

/* Runs the machine until the task blocks (returns BRAID_EPENDING) or ends
 * (returns its result). */
static int run_machine(tctx *tc) {
  machine *m = &tc->m;
  for (;;) {
    if (m->depth == 0) {
      m->have_res = 0;
      return task_finish(tc, m->res);
    }
    frame *f = &m->frames[m->depth - 1];
    if (m->have_res) {
      m->have_res = 0;
      switch (f->kind) {
      case FR_LIST:
        if (m->res.kind != OUT_OK) {
          m->depth--; /* the rest of the body is skipped */
          m->have_res = 1;
        } else {
          f->idx++;
        }
        continue;
      case FR_SCOPE:
        m->depth--;
        deliver(m, scope_leave(tc, f->op, m->res));
        continue;
      case FR_GROUP: {
        int rc = group_close_begin(f->op, m->res);
        m->res = out_ok();
        if (rc == BRAID_EPENDING) {
          m->pending = f->op;
          return BRAID_EPENDING;
        }
        m->depth--;
        deliver(m, group_close_finish(tc, f->op, rc));
        continue;
      }
      case FR_TRY:
        if (!f->in_finally) {
          f->saved = try_except(tc, f->op, m->res);
          f->in_finally = 1;
          push(m, FR_LIST, NULL, &f->op->finally);
        } else {
          m->depth--;
          deliver(m, try_combine(f->saved, m->res));
        }
        continue;
      }
    }
    /* Nothing to deliver: the top is a LIST frame with an op to run. */
    if (f->idx == f->list->count) {
      m->depth--;
      deliver(m, out_ok());
      continue;
    }
    const op *o = &f->list->items[f->idx];
    outcome err;
    switch (o->kind) {
    case OP_SCOPE:
      if (!scope_enter(tc, o, &err)) {
        deliver(m, err);
        continue;
      }
      push(m, FR_SCOPE, o, NULL);
      push(m, FR_LIST, NULL, &o->body);
      continue;
    case OP_GROUP:
      if (!group_open(tc, o, &err)) {
        deliver(m, err);
        continue;
      }
      push(m, FR_GROUP, o, NULL);
      push(m, FR_LIST, NULL, &o->body);
      continue;
    case OP_TRY:
      push(m, FR_TRY, o, NULL);
      push(m, FR_LIST, NULL, &o->body);
      continue;
    default:
      if (is_blocking(o->kind)) {
        int rc = block_begin(tc, o);
        if (rc == BRAID_EPENDING) {
          m->pending = o;
          return BRAID_EPENDING;
        }
        int again;
        outcome res = block_finish(tc, o, rc, &again); /* decided without waiting */
        if (!again) deliver(m, res);                   /* else the same op runs again */
      } else {
        deliver(m, run_simple(tc, o));
      }
      continue;
    }
  }
}

static int step_main(braid_task *self, void *ctx, int resume) {
  tctx *tc = ctx;
  machine *m = &tc->m;
  if (!braid_task_is_stepped(self)) die("step_main runs on a task that is not stepped");
  if (!m->begun) {
    m->begun = 1;
    task_begin(tc, self);
    push(m, FR_LIST, NULL, tc->body);
  } else if (m->pending) {
    const op *o = m->pending;
    m->pending = NULL;
    if (o->kind == OP_GROUP) {
      m->depth--; /* the GROUP frame */
      deliver(m, group_close_finish(tc, o, resume));
    } else {
      int again;
      outcome res = block_finish(tc, o, resume, &again);
      if (!again) deliver(m, res); /* else run_machine runs the same op again */
    }
  } else {
    deliver(m, internal(tc, "step without a pending wait", resume));
  }
  return run_machine(tc);
}

/* ======================================================================
 * main
 * ==================================================================== */

/* Creates the declared objects before the run (they belong to no loop). */
static void create_objects(void) {
  for (size_t i = 0; i < g_nobjs; i++) {
    object *ob = &g_objs[i];
    const json_value *d = ob->decl;
    int rc = 0;
    switch (ob->kind) {
    case OBJ_LOCK:
      rc = braid_lock_new(&ob->lock);
      break;
    case OBJ_SEMAPHORE:
      rc = braid_semaphore_new(member_count(d, "initial", 1, ob->id), member_count(d, "max", 0, ob->id), &ob->sem);
      break;
    case OBJ_EVENT:
      rc = braid_event_new(&ob->event);
      break;
    case OBJ_CONDITION:
      rc = braid_condition_new(g_objs[ob->lock_obj].lock, &ob->cond);
      break;
    case OBJ_LIMITER:
      rc = braid_limiter_new(member_count(d, "total", 1, ob->id), &ob->lim);
      break;
    case OBJ_CHANNEL: {
      const json_value *b = member(d, "buffer", JSON_NUMBER, 1, ob->id);
      size_t buffer = b->type == JSON_NULL ? BRAID_UNBOUNDED : (size_t)member_count(d, "buffer", 1, ob->id);
      /* the ends ID.tx and ID.rx follow the channel in g_objs */
      rc = braid_channel_new(buffer, NULL, &g_objs[i + 1].tx, &g_objs[i + 2].rx);
      break;
    }
    default: /* ends: made with their channel or by a clone op */
      break;
    }
    if (rc != 0) die("%s: creating the object failed: %s", ob->id, braid_errname(rc));
  }
}

/* Frees the objects after the run: ends first, conditions before locks. A
 * free that fails (say, a lock the scenario left held) is reported on
 * stderr only: the trace is complete by then. */
static void free_objects(void) {
  static const obj_kind order[] = {OBJ_SENDER,    OBJ_RECEIVER, OBJ_CONDITION, OBJ_LOCK,
                                   OBJ_SEMAPHORE, OBJ_EVENT,    OBJ_LIMITER};
  for (size_t k = 0; k < sizeof order / sizeof order[0]; k++)
    for (size_t i = 0; i < g_nobjs; i++) {
      object *ob = &g_objs[i];
      if (ob->kind != order[k]) continue;
      int rc = 0;
      switch (ob->kind) {
      case OBJ_SENDER:
        if (ob->tx) rc = braid_sender_free(ob->tx);
        break;
      case OBJ_RECEIVER:
        if (ob->rx) rc = braid_receiver_free(ob->rx);
        break;
      case OBJ_CONDITION:
        rc = braid_condition_free(ob->cond);
        break;
      case OBJ_LOCK:
        rc = braid_lock_free(ob->lock);
        break;
      case OBJ_SEMAPHORE:
        rc = braid_semaphore_free(ob->sem);
        break;
      case OBJ_EVENT:
        rc = braid_event_free(ob->event);
        break;
      case OBJ_LIMITER:
        rc = braid_limiter_free(ob->lim);
        break;
      default:
        break;
      }
      if (rc != 0) fprintf(stderr, "braid_testee: freeing %s: %s\n", ob->id, braid_errname(rc));
    }
  for (size_t i = 0; i < g_nobjs; i++)
    free(g_objs[i].id);
  free(g_objs);
  free(g_tokens);
}

static void usage(void) {
  fputs("usage: braid_testee [--stackful | --stepped | --mixed] SCENARIO.json\n", stderr);
  exit(2);
}

int main(int argc, char **argv) {
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--stackful") == 0)
      g_mode = MODE_STACKFUL;
    else if (strcmp(argv[i], "--stepped") == 0)
      g_mode = MODE_STEPPED;
    else if (strcmp(argv[i], "--mixed") == 0)
      g_mode = MODE_MIXED;
    else if (argv[i][0] == '-' || path)
      usage();
    else
      path = argv[i];
  }
  if (!path) usage();

  char err[256];
  g_doc = json_parse_file(path, err, sizeof err);
  if (!g_doc) die("%s: %s", path, err);
  op_list root_ops = {0};
  compile_objects(json_get(g_doc, "objects"));
  compile_list(member(g_doc, "root", JSON_ARRAY, 1, "scenario"), &root_ops, "root");
  resolve_list(&root_ops);
  create_objects();

  tctx *root = tctx_new("root", &root_ops, g_mode == MODE_STEPPED);
  root->is_root = 1;
  braid_run_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.size = sizeof opts;
  opts.clock = BRAID_CLOCK_VIRTUAL;
  opts.root_name = "root";
  opts.watch_fd = -1;
  int rc = root->stepped ? braid_run_stepped(step_main, root, &opts) : braid_run(task_main, root, &opts);
  int status = 0;
  if (!root->finished) {
    fprintf(stderr, "braid_testee: braid_run returned %s before the root task ended\n", braid_errname(rc));
    status = 3;
  }
  if (g_internal_errors) {
    fprintf(stderr, "braid_testee: %d unexpected braid results (see testee_error events)\n", g_internal_errors);
    status = 3;
  }

  if (finish_workers() != 0) status = 3;
  for (size_t i = 0; i < g_nreg; i++) {
    if (g_reg[i].group) braid_group_free(g_reg[i].group);
    if (g_reg[i].scope) braid_scope_unref(g_reg[i].scope);
  }
  free(g_reg);
  free_objects();
  while (g_tasks) {
    tctx *next = g_tasks->next_alloc;
    free(g_tasks->m.frames);
    free(g_tasks);
    g_tasks = next;
  }
  for (size_t i = 0; i < g_nnames; i++)
    free(g_names[i]);
  free(g_names);
  free_list(&root_ops);
  json_free(g_doc);
  return status;
}
