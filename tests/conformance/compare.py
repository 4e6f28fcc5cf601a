#!/usr/bin/env python3
"""compare.py — run a conformance testee on every scenario and compare traces.

    python3 compare.py --testee CMD [--scenarios DIR] [--known-failures FILE]
                       [--timeout SEC] [-v] [NAME ...]
    python3 compare.py --check [--scenarios DIR]

For each scenario DIR/NAME.json (all of them, or only the NAMEs given), runs
`CMD DIR/NAME.json` (CMD is split like a shell would split it), reads the JSON
lines it prints on stdout and compares them with the scenario's "expected"
trace. Prints PASS / FAIL / XFAIL / XPASS per scenario, a diff for each
failure, and ends with the line `N passed, M failed`. The exit status is 1
when anything failed (an XPASS counts as a failure: remove the entry from the
known-failures file), 0 otherwise.

--check validates the scenarios (format, ids, names, expected events) without
running anything. The format and the comparison rules are in README.md next
to this file. There is deliberately no mode that writes expected traces from
a run: expected traces are written by hand from the semantics.

Python 3 standard library only.
"""

import argparse
import difflib
import json
import os
import re
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------
# Scenario format
# ---------------------------------------------------------------------------

INT = "int"
INT_OR_NULL = "int|null"
STR = "str"
BOOL = "bool"
OPS = "ops"
ANY = "any"
NAMES = "names"  # a non-empty list of error names
ITEM = "item"  # a channel item: an int or a string
WORKER_OPS = "worker_ops"  # the body of a to_thread: ops of WORKER_OP_FIELDS

# op -> {field: (type, required)}
OP_FIELDS = {
    "sleep": {"for": (INT, True)},
    "sleep_forever": {},
    "checkpoint": {},
    "checkpoint_if_cancelled": {},
    "shielded_checkpoint": {},
    "log": {"msg": (STR, True)},
    "report_deadline": {},
    "scope": {
        "id": (STR, True),
        "deadline_after": (INT_OR_NULL, False),
        "deadline_at": (INT_OR_NULL, False),
        "shield": (BOOL, False),
        "fail": (BOOL, False),
        "body": (OPS, True),
    },
    "cancel": {"scope": (STR, True)},
    "set_deadline": {"scope": (STR, True), "after": (INT_OR_NULL, False), "at": (INT_OR_NULL, False)},
    "set_shield": {"scope": (STR, True), "shield": (BOOL, True)},
    "group": {"id": (STR, True), "body": (OPS, True)},
    "spawn": {"group": (STR, True), "name": (STR, True), "body": (OPS, True)},
    "start": {"group": (STR, True), "name": (STR, True), "body": (OPS, True)},
    "started": {"value": (ANY, False)},
    "fail": {"code": (STR, True)},
    "try": {"body": (OPS, True), "except": (NAMES, False), "finally": (OPS, False)},
    # Synchronization (README.md, "Synchronization objects"). "object" names
    # an object of the top-level "objects" list or a channel end.
    "acquire": {"object": (STR, True), "on_behalf": (STR, False)},
    "acquire_nowait": {"object": (STR, True), "on_behalf": (STR, False)},
    "release": {"object": (STR, True), "on_behalf": (STR, False)},
    "set": {"object": (STR, True)},
    "wait": {"object": (STR, True)},
    "notify": {"object": (STR, True), "n": (INT, False)},
    "notify_all": {"object": (STR, True)},
    "set_total": {"object": (STR, True), "total": (INT, True)},
    "send": {"object": (STR, True), "value": (ITEM, True)},
    "send_nowait": {"object": (STR, True), "value": (ITEM, True)},
    "receive": {"object": (STR, True)},
    "receive_nowait": {"object": (STR, True)},
    "drain": {"object": (STR, True)},
    "close_sender": {"object": (STR, True)},
    "close_receiver": {"object": (STR, True)},
    "clone_sender": {"object": (STR, True), "as": (STR, True)},
    "clone_receiver": {"object": (STR, True), "as": (STR, True)},
    "statistics": {"object": (STR, True)},
    # The thread bridge (README.md, "The thread bridge"): the body runs on a
    # worker thread and holds worker ops only.
    "to_thread": {"abandon_on_cancel": (BOOL, False), "limiter": (STR, False), "body": (WORKER_OPS, True)},
}

# The ops of a to_thread body, run on the worker thread with task NULL.
WORKER_OP_FIELDS = {
    "log": {"msg": (STR, True)},
    "fail": {"code": (STR, True)},
    "try": {"body": (WORKER_OPS, True), "except": (NAMES, False), "finally": (WORKER_OPS, False)},
    "return": {"value": (ANY, False)},
    "check_cancelled": {},
    "shield": {"body": (WORKER_OPS, True)},
    "sleep_forever": {},
    "acquire": {"object": (STR, True)},
    "release": {"object": (STR, True)},
    "set": {"object": (STR, True)},
    "wait": {"object": (STR, True)},
    "send": {"object": (STR, True), "value": (ITEM, True)},
    "receive": {"object": (STR, True)},
}

# Which kinds of object each worker op applies to.
WORKER_OBJECT_KINDS = {
    "acquire": {"lock", "semaphore"},
    "release": {"lock", "semaphore"},
    "set": {"event"},
    "wait": {"event"},
    "send": {"sender"},
    "receive": {"receiver"},
}

# Which kinds of object each synchronization op applies to. "sender" and
# "receiver" are the ends of a channel.
OP_OBJECT_KINDS = {
    "acquire": {"lock", "semaphore", "limiter"},
    "acquire_nowait": {"lock", "semaphore", "limiter"},
    "release": {"lock", "semaphore", "limiter"},
    "set": {"event"},
    "wait": {"event", "condition"},
    "notify": {"condition"},
    "notify_all": {"condition"},
    "set_total": {"limiter"},
    "send": {"sender"},
    "send_nowait": {"sender"},
    "receive": {"receiver"},
    "receive_nowait": {"receiver"},
    "drain": {"receiver"},
    "close_sender": {"sender"},
    "close_receiver": {"receiver"},
    "clone_sender": {"sender"},
    "clone_receiver": {"receiver"},
    "statistics": {"lock", "semaphore", "event", "condition", "limiter", "sender", "receiver"},
}

# kind -> {field: (type, required)} of the top-level "objects" declarations.
OBJECT_FIELDS = {
    "lock": {},
    "semaphore": {"initial": (INT, True), "max": (INT_OR_NULL, False)},
    "event": {},
    "condition": {"lock": (STR, True)},
    "limiter": {"total": (INT, True)},
    "channel": {"buffer": (INT_OR_NULL, True)},
}

USER_CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")
RESERVED_ERRORS = {
    "timeout",
    "state_error",
    "would_block",
    "deadlock_error",
    "permission_error",
    "value_error",
    "end_of_stream",
    "broken_resource",
    "closed_resource",
}
RESULTS = {"ok", "cancelled", "error"}
CANCELLABLE_OPS = {
    "sleep",
    "sleep_forever",
    "checkpoint",
    "checkpoint_if_cancelled",
    "acquire",
    "wait",
    "send",
    "receive",
    "drain",
    "to_thread",
    "check_cancelled",
}
# Ops whose failure is reported by a "raised" event.
RAISING_OPS = {k for k in OP_OBJECT_KINDS} | {"to_thread"}

# ev -> {field: checker}; "t", "task", "ev" are common to all.
def _is_str(v):
    return isinstance(v, str)


def _is_bool(v):
    return isinstance(v, bool)


def _is_deadline(v):
    return v in ("inf", "-inf") or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_item(v):
    return _is_int(v) or isinstance(v, str)


def _is_error_name(v):
    return isinstance(v, str) and (v in RESERVED_ERRORS or bool(USER_CODE.match(v)))


def _is_stats(v):
    return isinstance(v, dict)


EVENT_FIELDS = {
    "start": {},
    "caught": {"error": _is_error_name},
    "acquired": {"object": _is_str},
    "released": {"object": _is_str},
    "set": {"object": _is_str},
    "woken": {"object": _is_str},
    "notified": {"object": _is_str, "n": lambda v: _is_int(v) or v == "all"},
    "total_set": {"object": _is_str, "total": _is_int},
    "sent": {"object": _is_str, "value": _is_item},
    "received": {"object": _is_str, "value": _is_item},
    "closed": {"object": _is_str},
    "cloned": {"object": _is_str, "as": _is_str},
    "stats": {"object": _is_str, "stats": _is_stats},
    "raised": {"op": lambda v: v in RAISING_OPS, "error": _is_error_name},
    "returned": {"value": lambda v: True},
    "end": {"result": None},
    "log": {"msg": _is_str},
    "cancelled": {"op": lambda v: v in CANCELLABLE_OPS},
    "scope_exit": {"scope": _is_str, "caught": _is_bool, "result": None},
    "group_exit": {"group": _is_str, "result": None},
    "started": {"child": _is_str, "value": lambda v: True},
    "start_failed": {"child": _is_str, "result": None},
    "deadline": {"deadline": _is_deadline},
}

# Fields an event may carry but need not: "object" of a cancelled or raising
# synchronization op, "on_behalf" of a limiter acquire/release.
EVENT_OPTIONAL = {
    "cancelled": {"object": _is_str},
    "raised": {"object": _is_str},
    "acquired": {"on_behalf": _is_str},
    "released": {"on_behalf": _is_str},
}


class ScenarioError(Exception):
    pass


def _check_type(kind, value):
    if kind == ANY:
        return True
    if kind == STR:
        return isinstance(value, str)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind in (OPS, WORKER_OPS):
        return isinstance(value, list)
    if kind == NAMES:
        return isinstance(value, list) and bool(value) and all(_is_error_name(v) for v in value)
    if kind == ITEM:
        return _is_item(value)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == INT:
        return is_int
    if kind == INT_OR_NULL:
        return value is None or is_int
    raise AssertionError(kind)


def validate_scenario(sc, stem):
    """Raises ScenarioError if the scenario does not follow the format."""
    if not isinstance(sc, dict):
        raise ScenarioError("a scenario must be a JSON object")
    allowed = {"name", "description", "objects", "root", "expected", "notes"}
    for key in sc:
        if key not in allowed:
            raise ScenarioError(f"unknown top-level key {key!r}")
    for key in ("name", "description", "root", "expected"):
        if key not in sc:
            raise ScenarioError(f"missing top-level key {key!r}")
    if sc["name"] != stem:
        raise ScenarioError(f"name {sc['name']!r} differs from the file name {stem!r}")

    declared = {}  # id -> "scope" | "group"
    tasks = {"root"}
    refs = []  # (op, id)
    objects = {}  # object id -> kind ("sender"/"receiver" for channel ends)
    object_refs = []  # (where, op, id, on_behalf, allowed kinds)
    declare_objects(sc.get("objects", []), objects)

    def ops_of(ops, where):
        """(position, op, kind) of each op of a body, checking its shape."""
        if not isinstance(ops, list):
            raise ScenarioError(f"{where}: a body must be a list of ops")
        for i, op in enumerate(ops):
            here = f"{where}[{i}]"
            if not isinstance(op, dict) or not isinstance(op.get("op"), str):
                raise ScenarioError(f"{here}: an op must be an object with a string 'op'")
            yield here, op, op["op"]

    def walk_worker(ops, where):
        """A to_thread body: worker ops only."""
        for here, op, kind in ops_of(ops, where):
            if kind not in WORKER_OP_FIELDS:
                raise ScenarioError(f"{here}: op {kind!r} cannot run on a worker thread (in a to_thread body)")
            check_fields(op, WORKER_OP_FIELDS[kind], here)
            if kind == "fail" and not USER_CODE.match(op["code"]):
                raise ScenarioError(f"{here}: error codes must match {USER_CODE.pattern}")
            if kind in WORKER_OBJECT_KINDS:
                object_refs.append((here, kind, op["object"], False, WORKER_OBJECT_KINDS[kind]))
            for key in ("body", "finally"):
                if key in op:
                    walk_worker(op[key], f"{here}.{key}")

    def walk(ops, where, task):
        for here, op, kind in ops_of(ops, where):
            if kind not in OP_FIELDS:
                if kind in WORKER_OP_FIELDS:
                    raise ScenarioError(f"{here}: {kind!r} is a worker op: only in the body of a to_thread")
                raise ScenarioError(f"{here}: unknown op {kind!r}")
            check_fields(op, OP_FIELDS[kind], here)
            if kind == "sleep" and op["for"] < 0:
                raise ScenarioError(f"{here}: sleep 'for' must be >= 0")
            if kind == "scope":
                if op.get("deadline_after") is not None and op.get("deadline_at") is not None:
                    raise ScenarioError(f"{here}: give at most one of deadline_after and deadline_at")
                if op.get("deadline_after") is not None and op["deadline_after"] < 0:
                    raise ScenarioError(f"{here}: deadline_after must be >= 0 (use deadline_at for a past deadline)")
            if kind == "set_deadline" and ("after" in op) == ("at" in op):
                raise ScenarioError(f"{here}: set_deadline needs exactly one of 'after' and 'at'")
            if kind == "set_deadline" and op.get("after") is not None and op["after"] < 0:
                raise ScenarioError(f"{here}: 'after' must be >= 0")
            if kind == "fail" and not USER_CODE.match(op["code"]):
                raise ScenarioError(f"{here}: error codes must match {USER_CODE.pattern}")
            if kind in ("scope", "group"):
                if op["id"] in declared:
                    raise ScenarioError(f"{here}: id {op['id']!r} declared twice")
                declared[op["id"]] = kind
            if kind in ("spawn", "start"):
                if op["name"] in tasks:
                    raise ScenarioError(f"{here}: task name {op['name']!r} used twice")
                tasks.add(op["name"])
                refs.append((here, kind, op["group"]))
            if kind in ("cancel", "set_deadline", "set_shield"):
                refs.append((here, kind, op["scope"]))
            if kind in OP_OBJECT_KINDS:
                object_refs.append((here, kind, op["object"], "on_behalf" in op, OP_OBJECT_KINDS[kind]))
            if kind == "to_thread":
                if "limiter" in op:
                    object_refs.append((here, kind, op["limiter"], False, {"limiter"}))
                tasks.add(task + "/worker")  # its worker's events (README.md)
                walk_worker(op["body"], f"{here}.body")
                continue
            if kind in ("clone_sender", "clone_receiver"):
                if op["as"] in objects:
                    raise ScenarioError(f"{here}: object id {op['as']!r} declared twice")
                objects[op["as"]] = "sender" if kind == "clone_sender" else "receiver"
            if kind == "notify" and op.get("n", 1) < 1:
                raise ScenarioError(f"{here}: notify 'n' must be >= 1")
            if kind == "set_total" and op["total"] < 0:
                raise ScenarioError(f"{here}: set_total 'total' must be >= 0")
            for key in ("body", "finally"):
                if key in op:
                    walk(op[key], f"{here}.{key}", op["name"] if kind in ("spawn", "start") else task)

    walk(sc["root"], "root", "root")
    for here, kind, ref in refs:
        if ref not in declared:
            raise ScenarioError(f"{here}: {kind} refers to unknown id {ref!r}")
        if kind in ("spawn", "start") and declared[ref] != "group":
            raise ScenarioError(f"{here}: {kind} needs a group, {ref!r} is a scope")
    for here, kind, ref, on_behalf, allowed in object_refs:
        if ref not in objects:
            raise ScenarioError(f"{here}: {kind} refers to unknown object {ref!r}")
        if objects[ref] not in allowed:
            raise ScenarioError(f"{here}: {kind} does not apply to {ref!r} (a {objects[ref]})")
        if on_behalf and objects[ref] != "limiter":
            raise ScenarioError(f"{here}: 'on_behalf' is for limiters only")

    if not isinstance(sc["expected"], list):
        raise ScenarioError("'expected' must be a list of events")
    for i, ev in enumerate(sc["expected"]):
        try:
            validate_event(ev)
        except ScenarioError as e:
            raise ScenarioError(f"expected[{i}]: {e}") from None
        if ev["task"] not in tasks:
            raise ScenarioError(f"expected[{i}]: unknown task {ev['task']!r}")
        for key in ("scope", "group"):
            if key in ev and ev[key] not in declared:
                raise ScenarioError(f"expected[{i}]: unknown id {ev[key]!r}")
        if "object" in ev and ev["object"] not in objects:
            raise ScenarioError(f"expected[{i}]: unknown object {ev['object']!r}")
    times = [ev["t"] for ev in sc["expected"]]
    if times != sorted(times):
        raise ScenarioError("expected events must be listed in time order")


def check_fields(op, fields, here):
    """The fields of one op against its {field: (type, required)} table."""
    kind = op["op"]
    for key, value in op.items():
        if key == "op":
            continue
        if key not in fields:
            raise ScenarioError(f"{here}: op {kind!r} has no field {key!r}")
        if not _check_type(fields[key][0], value):
            raise ScenarioError(f"{here}: field {key!r} of {kind!r} must be {fields[key][0]}")
    for key, (_, required) in fields.items():
        if required and key not in op:
            raise ScenarioError(f"{here}: op {kind!r} needs field {key!r}")


def declare_objects(decls, objects):
    """Checks the top-level "objects" list and records each id's kind in
    `objects` (a channel declares its two ends ID.tx and ID.rx)."""
    if not isinstance(decls, list):
        raise ScenarioError("'objects' must be a list")
    for i, d in enumerate(decls):
        here = f"objects[{i}]"
        if not isinstance(d, dict) or d.get("kind") not in OBJECT_FIELDS or not isinstance(d.get("id"), str):
            raise ScenarioError(f"{here}: an object needs a 'kind' (one of {sorted(OBJECT_FIELDS)}) and a string 'id'")
        kind = d["kind"]
        fields = OBJECT_FIELDS[kind]
        for key, value in d.items():
            if key in ("kind", "id"):
                continue
            if key not in fields:
                raise ScenarioError(f"{here}: a {kind} has no field {key!r}")
            if not _check_type(fields[key][0], value):
                raise ScenarioError(f"{here}: field {key!r} of a {kind} must be {fields[key][0]}")
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                raise ScenarioError(f"{here}: field {key!r} must be >= 0")
        for key, (_, required) in fields.items():
            if required and key not in d:
                raise ScenarioError(f"{here}: a {kind} needs field {key!r}")
        if kind == "semaphore" and d.get("max") is not None and (d["max"] < 1 or d["initial"] > d["max"]):
            raise ScenarioError(f"{here}: a semaphore needs 1 <= max and initial <= max")
        if kind == "condition" and objects.get(d["lock"]) != "lock":
            raise ScenarioError(f"{here}: 'lock' must name a lock declared before the condition")
        ids = [d["id"] + ".tx", d["id"] + ".rx"] if kind == "channel" else [d["id"]]
        for oid in ids + ([d["id"]] if kind == "channel" else []):
            if oid in objects:
                raise ScenarioError(f"{here}: object id {oid!r} declared twice")
        if kind == "channel":
            objects[d["id"]] = "channel"
            objects[d["id"] + ".tx"] = "sender"
            objects[d["id"] + ".rx"] = "receiver"
        else:
            objects[d["id"]] = kind


def validate_event(ev):
    """Raises ScenarioError if ev is not a well-formed trace event."""
    if not isinstance(ev, dict):
        raise ScenarioError("an event must be an object")
    t = ev.get("t")
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        raise ScenarioError("'t' must be a number")
    if not isinstance(ev.get("task"), str):
        raise ScenarioError("'task' must be a string")
    kind = ev.get("ev")
    if kind not in EVENT_FIELDS:
        raise ScenarioError(f"unknown event {kind!r}")
    fields = EVENT_FIELDS[kind]
    optional = EVENT_OPTIONAL.get(kind, {})
    for key, value in ev.items():
        if key in ("t", "task", "ev"):
            continue
        if key == "errors" and "result" in fields:
            continue
        if key not in fields and key not in optional:
            raise ScenarioError(f"event {kind!r} has no field {key!r}")
        check = fields.get(key, optional.get(key))
        if check is not None and not check(value):
            raise ScenarioError(f"bad value for {key!r} in {kind!r}: {value!r}")
    for key in fields:
        if key not in ev:
            raise ScenarioError(f"event {kind!r} needs field {key!r}")
    if kind == "raised" and ev["op"] != "to_thread" and "object" not in ev:
        raise ScenarioError("event 'raised' of a synchronization op needs field 'object'")
    if "result" in fields:
        if ev["result"] not in RESULTS:
            raise ScenarioError(f"bad result {ev['result']!r}")
        errors = ev.get("errors")
        if ev["result"] == "error":
            if not isinstance(errors, list) or not errors or not all(isinstance(e, str) for e in errors):
                raise ScenarioError("result 'error' needs a non-empty list 'errors' of names")
        elif errors not in (None, []):
            raise ScenarioError(f"'errors' given with result {ev['result']!r}")


# ---------------------------------------------------------------------------
# Trace comparison
# ---------------------------------------------------------------------------


def canonical(value):
    """Numbers that are whole become ints, floats are rounded to 1 ns (6
    decimals of a ms), error lists are sorted, empty error lists dropped."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else round(value, 6)
    if isinstance(value, int):
        return value
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        out = {k: canonical(v) for k, v in value.items()}
        if "errors" in out and "result" in out:
            if isinstance(out["errors"], list):
                out["errors"] = sorted(out["errors"], key=lambda e: json.dumps(e))
            if out["result"] != "error" and out["errors"] == []:
                del out["errors"]
        return out
    return value


def line(ev):
    """One event as a stable, readable line."""
    ev = dict(ev)
    head = {k: ev.pop(k) for k in ("t", "task", "ev") if k in ev}
    head.update(sorted(ev.items()))
    return json.dumps(head, separators=(", ", ": "))


def per_task(events):
    tasks = {}
    for ev in events:
        tasks.setdefault(ev.get("task"), []).append(line(canonical(ev)))
    return tasks


def compare_traces(expected, actual):
    """Returns a list of difference lines (empty when the traces conform).

    Two traces conform when, for every task, the task's events are the same
    in the same order, timestamps included. Events of different tasks are
    not ordered against each other (only through their timestamps)."""
    problems = []
    last = None
    for i, ev in enumerate(actual):
        t = ev.get("t")
        if isinstance(t, (int, float)) and last is not None and t < last:
            problems.append(f"actual trace goes back in time at line {i + 1}: t={t} after t={last}")
        if isinstance(t, (int, float)):
            last = t
    exp, act = per_task(expected), per_task(actual)
    for task in list(exp) + [t for t in act if t not in exp]:
        e, a = exp.get(task, []), act.get(task, [])
        if e == a:
            continue
        problems.append(f"task {task!r}:")
        for d in difflib.unified_diff(e, a, "expected", "actual", n=2, lineterm=""):
            problems.append("    " + d)
    return problems


def run_testee(cmd, path, timeout):
    """Runs the testee; returns (events, problems, stderr)."""
    argv = shlex.split(cmd) + [path]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace")
        err = (e.stderr or b"").decode("utf-8", "replace")
        events, _ = parse_trace(out)
        return events, [f"testee timed out after {timeout} s (wall clock)"], err
    except OSError as e:
        return [], [f"cannot run testee {argv[0]!r}: {e}"], ""
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    events, problems = parse_trace(out)
    if proc.returncode < 0:
        problems.append(f"testee killed by signal {-proc.returncode}")
    elif proc.returncode != 0:
        problems.append(f"testee exited with status {proc.returncode}")
    return events, problems, err


def parse_trace(text):
    events, problems = [], []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            ev = json.loads(raw)
        except ValueError as e:
            problems.append(f"stdout line {n} is not JSON ({e}): {raw[:200]}")
            continue
        if not isinstance(ev, dict):
            problems.append(f"stdout line {n} is not a JSON object: {raw[:200]}")
            continue
        events.append(ev)
    return events, problems


# ---------------------------------------------------------------------------
# Known failures
# ---------------------------------------------------------------------------


def load_known_failures(path):
    """NAME followed by a reason on each line; '#' starts a comment line."""
    known = {}
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            text = raw.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.split(None, 1)
            if len(parts) < 2 or not parts[1].strip():
                raise SystemExit(f"{path}:{n}: a known failure needs a reason after the name")
            known[parts[0]] = parts[1].strip()
    return known


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def load_scenarios(directory, names):
    files = sorted(f for f in os.listdir(directory) if f.endswith(".json"))
    stems = [f[:-5] for f in files]
    if names:
        missing = [n for n in names if n not in stems]
        if missing:
            raise SystemExit(f"no such scenario: {', '.join(missing)}")
        stems = [s for s in stems if s in names]
    out = []
    for stem in stems:
        path = os.path.join(directory, stem + ".json")
        try:
            with open(path, encoding="utf-8") as f:
                sc = json.load(f)
            validate_scenario(sc, stem)
            out.append((stem, path, sc, None))
        except (ValueError, ScenarioError) as e:
            out.append((stem, path, None, f"invalid scenario: {e}"))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--testee", help="command that runs one scenario (the scenario path is appended)")
    ap.add_argument("--scenarios", default=os.path.join(HERE, "scenarios"), help="directory of NAME.json files")
    ap.add_argument("--known-failures", help="file of 'NAME reason' lines: failures expected for this testee")
    ap.add_argument("--timeout", type=float, default=30.0, help="wall-clock limit per scenario (s)")
    ap.add_argument("--check", action="store_true", help="only validate the scenarios")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the actual trace of failures")
    ap.add_argument("names", nargs="*", help="run only these scenarios")
    args = ap.parse_args(argv)
    if not args.check and not args.testee:
        ap.error("--testee is required (or --check)")

    scenarios = load_scenarios(args.scenarios, args.names)
    known = load_known_failures(args.known_failures) if args.known_failures else {}
    all_stems = {s[0] for s in scenarios}
    for name in known:
        if name not in all_stems and not args.names:
            print(f"warning: known failure {name!r} is not a scenario", file=sys.stderr)

    passed = failed = 0
    xfails = []
    for stem, path, sc, invalid in scenarios:
        if invalid:
            print(f"FAIL  {stem}: {invalid}")
            failed += 1
            continue
        if args.check:
            print(f"OK    {stem}")
            passed += 1
            continue
        events, problems, err = run_testee(args.testee, path, args.timeout)
        problems += compare_traces(sc["expected"], events)
        if stem in known:
            if problems:
                print(f"XFAIL {stem}  ({known[stem]})")
                xfails.append(stem)
            else:
                print(f"XPASS {stem}: passes but is listed as a known failure; remove it from the list")
                failed += 1
            continue
        if not problems:
            print(f"PASS  {stem}")
            passed += 1
            continue
        failed += 1
        print(f"FAIL  {stem}")
        for p in problems:
            print("    " + p)
        if err.strip():
            print("    stderr:")
            for errline in err.strip().splitlines()[-20:]:
                print("      " + errline)
        if args.verbose:
            print("    actual trace:")
            for ev in events:
                print("      " + line(ev))
    if xfails:
        print(f"{len(xfails)} known failures not counted: {', '.join(xfails)}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
