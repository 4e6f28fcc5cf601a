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
 *      registry of the named scopes and groups, error names <-> codes;
 *   2. outcomes and events: what an op propagates (ok / cancelled / errors)
 *      and how it is printed;
 *   3. the semantics of each op, written once as plain functions. A blocking
 *      op is split into block_begin (the braid call) and block_finish (the
 *      mapping of its result), so both interpreters share them;
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
#include "braid.h"
#include "json.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
                                               "try"};

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
  json_value *value;     /* started: the value (NULL = null) */
  op_list body, finally; /* scope, group, spawn, start, try */
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

static int code_of(const char *name) {
  if (strcmp(name, "timeout") == 0) return BRAID_ETIMEDOUT;
  if (strcmp(name, "state_error") == 0) return BRAID_ESTATE;
  return intern(name);
}

/* The error name of a failure code; codes that no scenario can produce
 * (a braid bug or a testee bug) get a name that will not match. */
static const char *name_of(int code) {
  if (code == BRAID_ETIMEDOUT) return "timeout";
  if (code == BRAID_ESTATE) return "state_error";
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

static void compile_list(const json_value *arr, op_list *out, const char *where);

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
  case OP_TRY:
    compile_list(member(j, "body", JSON_ARRAY, 1, name), &o->body, name);
    if (json_get(j, "finally")) compile_list(member(j, "finally", JSON_ARRAY, 1, name), &o->finally, name);
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
    resolve_list(&o->body);
    resolve_list(&o->finally);
  }
}

static void free_list(op_list *l) {
  for (size_t i = 0; i < l->count; i++) {
    free_list(&l->items[i].body);
    free_list(&l->items[i].finally);
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
  void *start_value; /* braid_group_start writes here (must outlive a stepped wait) */
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

static void ev_begin(tctx *tc, const char *ev) {
  fputs("{\"t\":", stdout);
  print_ms(braid_now(tc->self) - g_start);
  fputs(",\"task\":", stdout);
  json_write_string(stdout, tc->name);
  printf(",\"ev\":\"%s\"", ev);
}

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
  default:
    return BRAID_EINVAL;
  }
}

static outcome block_finish(tctx *tc, const op *o, int rc) {
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
  return k == OP_SLEEP || k == OP_SLEEP_FOREVER || k == OP_CHECKPOINT || k == OP_SHIELDED_CHECKPOINT || k == OP_START;
}

/* The ops that neither block nor nest. */
static outcome run_simple(tctx *tc, const op *o) {
  int rc;
  switch (o->kind) {
  case OP_CHECKPOINT_IF_CANCELLED:
    rc = braid_checkpoint_if_cancelled(tc->self);
    return block_finish(tc, o, rc);
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
  default:
    return internal(tc, "not a simple op", BRAID_EINVAL);
  }
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
    outcome body = run_list(tc, &o->body);
    return try_combine(body, run_list(tc, &o->finally));
  }
  default:
    if (is_blocking(o->kind)) return block_finish(tc, o, block_begin(tc, o));
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
          f->saved = m->res;
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
        deliver(m, block_finish(tc, o, rc)); /* decided without waiting */
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
      deliver(m, block_finish(tc, o, resume));
    }
  } else {
    deliver(m, internal(tc, "step without a pending wait", resume));
  }
  return run_machine(tc);
}

/* ======================================================================
 * main
 * ==================================================================== */

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
  compile_list(member(g_doc, "root", JSON_ARRAY, 1, "scenario"), &root_ops, "root");
  resolve_list(&root_ops);

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

  for (size_t i = 0; i < g_nreg; i++) {
    if (g_reg[i].group) braid_group_free(g_reg[i].group);
    if (g_reg[i].scope) braid_scope_unref(g_reg[i].scope);
  }
  free(g_reg);
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
