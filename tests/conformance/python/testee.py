#!/usr/bin/env python3
"""testee.py -- the Python conformance testee.

    testee.py [--backend braid|anyio-trio] SCENARIO.json

Reads a scenario (see ../README.md), runs its op tree through an AnyIO-style
API on a virtual clock and prints the trace as JSON lines on stdout. Exit
status: 0 when the scenario ran to its end (whatever its outcome), 2 for a
scenario or a command line it cannot read, 3 when the runtime did something
the trace format cannot express (an exception no error name stands for, the
root task not finishing, a worker thread still busy 10 s after the run; the
details go to stderr).

Backends. The testee only uses the names below, taken from the API module:

* ``braid`` (default): the braid binding, ``braid.run(main,
  clock=braid.VirtualClock())``; every name is top-level (``braid.checkpoint``
  ...), plus ``braid.to_thread`` and ``braid.from_thread``;
* ``anyio-trio``: AnyIO 4 on Trio with ``trio.testing.MockClock(
  autojump_threshold=0)``, the reference the binding mirrors (the lowlevel
  names come from ``anyio.lowlevel``). Useful to validate the testee itself;
  where Trio or AnyIO differ from braid by design (README.md notes each
  case) the trace differs too.

The mapping from ops to API calls (times: ms in the scenario, float seconds
in the API; ``abs(ms)`` = start of the run + ms):

======================== ====================================================
op                       API
======================== ====================================================
sleep                    ``await sleep(ms / 1000)``
sleep_forever            ``await sleep_forever()``
checkpoint               ``await checkpoint()``
checkpoint_if_cancelled  ``await checkpoint_if_cancelled()``
shielded_checkpoint      ``await cancel_shielded_checkpoint()``
report_deadline          ``current_effective_deadline()``
fail                     ``raise ScenarioError(code)``
try                      ``try: ... except ...: ... finally: ...``
scope                    ``with move_on_after(ms / 1000, shield=)``, or
                         ``move_on_at(abs(ms), shield=)``, or
                         ``CancelScope(shield=)`` without a deadline;
                         ``fail_after`` / ``fail_at`` for ``fail: true``;
                         ``caught`` is ``scope.cancelled_caught``
cancel, set_deadline,    ``scope.cancel()``, ``scope.deadline = ...``,
set_shield               ``scope.shield = ...`` (a group: ``tg.cancel_scope``);
                         on a scope not entered yet they are recorded and
                         replayed, in order, right after it is entered
group                    ``async with create_task_group() as tg``
spawn                    ``tg.start_soon(child, name=NAME)``
start                    ``await tg.start(child, name=NAME)``
started                  ``task_status.started(value)``
acquire(_nowait),        ``Lock``, ``Semaphore(initial, max_value=)``,
release                  ``CapacityLimiter(total)``: ``acquire()``,
                         ``acquire_nowait()``, ``release()``; with
                         ``on_behalf``: ``acquire_on_behalf_of(b)``,
                         ``acquire_on_behalf_of_nowait(b)``,
                         ``release_on_behalf_of(b)``
set, wait                ``Event``: ``set()``, ``await wait()``;
                         ``Condition(lock)``: ``await wait()``
notify, notify_all       ``Condition``: ``notify(n)``, ``notify_all()``
set_total                ``limiter.total_tokens = n``
channel ops              ``create_memory_object_stream(buffer or inf)``
                         gives the ends ``ID.tx``, ``ID.rx``: ``await
                         send(v)``, ``send_nowait(v)``, ``await receive()``,
                         ``receive_nowait()``, drain: ``async for item in
                         receiver``, ``close()``, ``clone()``
statistics               ``statistics()`` (plus ``is_set()``, ``value``,
                         ``max_value`` where the statistics lack a field)
to_thread                ``await to_thread.run_sync(job, abandon_on_cancel=,
                         limiter=)``; the job runs the worker ops through
                         ``WorkerBridge`` (``from_thread.run`` etc.)
======================== ====================================================

Outcomes are exceptions, as in any Python program: an error is an
exception, a cancellation is ``get_cancelled_exc_class()``, a group's
failures come as an ``ExceptionGroup``. The trace names an exception with
`Testee.error_name`: ``ScenarioError`` carries the user's name, the
runtime's exceptions map to the reserved names (``TimeoutError`` ->
``timeout``, ``WouldBlock`` -> ``would_block``, ...). The ``RuntimeError``s
that AnyIO raises for misuse are told apart by the op that raised them
(``acquire``: ``deadlock_error``; ``release``, condition ``wait``/``notify``:
``permission_error``; ``spawn``/``start``/``started``: ``state_error``); the
op records the name on the exception (``conformance_name``) and re-raises
the exception itself, so what travels through the runtime is what the
runtime raised. An exception group's names are its leaves' names; its
cancellations are dropped (a child that ends cancelled records nothing).

Worker threads never print: a ``to_thread`` job records its events, and the
task prints them under ``TASK/worker`` when ``to_thread`` returns (dropped
if the job was abandoned), as the C testee does.

Standard library and the API module only.
"""

import argparse
import contextlib
import importlib
import json
import math
import os
import sys
import threading
import traceback
import types

# ======================================================================
# The API module
# ======================================================================


def _submodule(mod, name):
    """mod.NAME: an attribute or a submodule to import."""
    try:
        return getattr(mod, name)
    except AttributeError:
        return importlib.import_module(f"{mod.__name__}.{name}")


def load_api(backend):
    """The names the testee uses, from the module under test."""
    if backend == "braid":
        mod = importlib.import_module("braid")
        lowlevel = importlib.import_module("braid.lowlevel")

        def run(main):
            return mod.run(main, clock=mod.VirtualClock())

    else:  # anyio-trio
        mod = importlib.import_module("anyio")
        lowlevel = importlib.import_module("anyio.lowlevel")
        from trio.testing import MockClock

        def run(main):
            return mod.run(main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})

    api = types.SimpleNamespace(run=run, backend=backend, lowlevel=lowlevel)
    for name in (
        "CancelScope",
        "move_on_after",
        "move_on_at",
        "fail_after",
        "create_task_group",
        "current_time",
        "current_effective_deadline",
        "sleep",
        "sleep_forever",
        "get_cancelled_exc_class",
        "Lock",
        "Semaphore",
        "Event",
        "Condition",
        "CapacityLimiter",
        "create_memory_object_stream",
        "WouldBlock",
        "EndOfStream",
        "BrokenResourceError",
        "ClosedResourceError",
    ):
        setattr(api, name, getattr(mod, name))
    for name in ("checkpoint", "checkpoint_if_cancelled", "cancel_shielded_checkpoint"):
        setattr(api, name, getattr(lowlevel, name))
    # Optional names: fail_at (AnyIO >= 4.15), get_current_task (to name lock
    # owners and limiter borrowers by task identity rather than task name).
    api.fail_at = getattr(mod, "fail_at", None) or (
        lambda deadline, shield=False: mod.fail_after(deadline - mod.current_time(), shield=shield)
    )
    api.get_current_task = getattr(mod, "get_current_task", None)
    api.to_thread = _submodule(mod, "to_thread")
    api.from_thread = _submodule(mod, "from_thread")
    return api


# ======================================================================
# Errors and outcomes
# ======================================================================


class ScenarioError(Exception):
    """The error a `fail` op raises; `code` is its user name."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


class _Return(BaseException):
    """The `return` worker op: unwinds the worker body (its finally blocks run)."""

    def __init__(self, value):
        super().__init__(value)
        self.value = value


def named(exc, name):
    """Records the error name of an exception the runtime raised; returns it."""
    exc.conformance_name = name
    return exc


def leaves(exc):
    """The leaf exceptions of an exception (group), recursively."""
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            yield from leaves(e)
    else:
        yield exc


class ScenarioInvalid(Exception):
    """The scenario cannot be read: exit status 2."""


# ======================================================================
# The scenario: objects, scopes, trace
# ======================================================================

TASK_OPS = {
    "sleep", "sleep_forever", "checkpoint", "checkpoint_if_cancelled", "shielded_checkpoint", "log",
    "report_deadline", "fail", "try", "scope", "cancel", "set_deadline", "set_shield", "group", "spawn",
    "start", "started", "acquire", "acquire_nowait", "release", "set", "wait", "notify", "notify_all",
    "set_total", "send", "send_nowait", "receive", "receive_nowait", "drain", "close_sender",
    "close_receiver", "clone_sender", "clone_receiver", "statistics", "to_thread",
}  # fmt: skip
WORKER_OPS = {
    "acquire", "release", "wait", "set", "send", "receive", "sleep_forever", "check_cancelled", "shield",
    "return", "log", "fail", "try",
}  # fmt: skip


class Testee:
    """One run of one scenario: its objects, named scopes and groups, trace."""

    def __init__(self, api, doc):
        self.api = api
        self.doc = doc
        self.objects = {}  # object id (channel ends included) -> the object
        self.kinds = {}  # object id -> "lock", ..., "sender", "receiver"
        self.scopes = {}  # scope/group id -> its CancelScope, once entered/opened
        self.pending = {}  # scope id -> [(method, arg)] applied before it was entered
        self.groups = {}  # group id -> its task group, once opened
        self.task_names = {}  # TaskInfo.id -> task name
        self.start = 0.0
        self.cancelled_exc = None
        self.internal_errors = 0
        self.root_finished = False
        self.busy_workers = 0
        self.workers_idle = threading.Condition()
        self.check(doc)

    # ---- reading the scenario ----

    def check(self, doc):
        """Validates what the testee relies on (compare.py --check does the rest)."""
        if not isinstance(doc, dict) or not isinstance(doc.get("root"), list):
            raise ScenarioInvalid("a scenario is an object with a \"root\" list of ops")
        for decl in doc.get("objects", []):
            kind, oid = decl.get("kind"), decl.get("id")
            if kind not in ("lock", "semaphore", "event", "condition", "limiter", "channel"):
                raise ScenarioInvalid(f"object {oid!r}: unknown kind {kind!r}")
            if kind == "channel":
                self.kinds[oid + ".tx"], self.kinds[oid + ".rx"] = "sender", "receiver"
            self.kinds[oid] = kind
        ops = list(self.walk(doc["root"], TASK_OPS))
        for o, allowed in ops:
            if not isinstance(o, dict) or o.get("op") not in allowed:
                raise ScenarioInvalid(f"unknown op or op out of place: {o!r}")
            if o["op"] in ("clone_sender", "clone_receiver"):
                self.kinds[o["as"]] = "sender" if o["op"] == "clone_sender" else "receiver"
        for o, _ in ops:
            ref = o.get("limiter") if o["op"] == "to_thread" else o.get("object")
            if ref is not None and ref not in self.kinds:
                raise ScenarioInvalid(f"{o['op']}: unknown object {ref!r}")

    def walk(self, ops, allowed):
        """Every op of a body, recursively, with the ops allowed where it is."""
        for o in ops:
            yield o, allowed
            if isinstance(o, dict):
                inner = WORKER_OPS if o.get("op") in ("to_thread", "shield") else allowed
                yield from self.walk(o.get("body", ()), inner)
                yield from self.walk(o.get("finally", ()), allowed)

    def create_objects(self):
        api = self.api
        for d in self.doc.get("objects", []):
            kind, oid = d["kind"], d["id"]
            if kind == "lock":
                self.objects[oid] = api.Lock()
            elif kind == "semaphore":
                self.objects[oid] = api.Semaphore(d["initial"], max_value=d.get("max"))
            elif kind == "event":
                self.objects[oid] = api.Event()
            elif kind == "condition":
                self.objects[oid] = api.Condition(self.objects[d["lock"]])
            elif kind == "limiter":
                self.objects[oid] = api.CapacityLimiter(d["total"])
            else:
                buffer = math.inf if d["buffer"] is None else d["buffer"]
                self.objects[oid + ".tx"], self.objects[oid + ".rx"] = api.create_memory_object_stream(buffer)

    # ---- times and the trace ----

    def seconds_at(self, ms):
        """The clock value of `ms` after the start of the run."""
        return self.start + ms / 1000

    def ms(self, clock_value):
        """A clock value as ms since the start of the run (a trace time)."""
        value = round((clock_value - self.start) * 1000, 6)
        return int(value) if value == int(value) else value

    def emit(self, task, ev, **fields):
        event = {"t": self.ms(self.api.current_time()), "task": task, "ev": ev}
        event.update(fields)
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    # ---- outcomes ----

    def is_cancelled(self, exc):
        return isinstance(exc, self.cancelled_exc)

    def error_name(self, exc):
        """The error name of a leaf exception that is not a cancellation."""
        api = self.api
        name = getattr(exc, "conformance_name", None)
        if name is not None:
            return name
        if isinstance(exc, ScenarioError):
            return exc.code
        for cls, name in (
            (TimeoutError, "timeout"),
            (api.WouldBlock, "would_block"),
            (api.EndOfStream, "end_of_stream"),
            (api.BrokenResourceError, "broken_resource"),
            (api.ClosedResourceError, "closed_resource"),
        ):
            if isinstance(exc, cls):
                return name
        # No scenario can expect it: a name that will not match, and status 3.
        name = f"unexpected:{type(exc).__name__}: {exc}"
        if not getattr(exc, "conformance_reported", False):
            exc.conformance_reported = True
            self.internal_errors += 1
            print(f"testee.py: unexpected exception {name}", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)
        return name

    def outcome(self, exc=None):
        """The `result` (and `errors`) fields of an outcome: ok for None."""
        if exc is None:
            return {"result": "ok"}
        errors = sorted(self.error_name(e) for e in leaves(exc) if not self.is_cancelled(e))
        if not errors:
            return {"result": "cancelled"}
        return {"result": "error", "errors": errors}

    # ---- tasks, lock owners and limiter borrowers ----

    def register_task(self, name):
        if self.api.get_current_task is not None:
            self.task_names[self.api.get_current_task().id] = name

    def who(self, owner):
        """The trace name of a lock owner or limiter borrower (a task or an on_behalf string)."""
        if owner is None or isinstance(owner, str):
            return owner
        for key in (getattr(owner, "id", None), id(owner)):
            if key in self.task_names:
                return self.task_names[key]
        return getattr(owner, "name", None) or repr(owner)

    async def task_main(self, name, body, *, task_status=None):
        """The body of every task; `task_status` is None for a spawned one."""
        task = Task(self, name, task_status)
        self.register_task(name)
        task.emit("start")
        try:
            await task.run_list(body)
        except BaseException as exc:
            task.emit("end", **self.outcome(exc))
            raise
        task.emit("end", result="ok")

    async def main(self):
        self.start = self.api.current_time()
        self.cancelled_exc = self.api.get_cancelled_exc_class()
        self.create_objects()
        try:
            await self.task_main("root", self.doc["root"])
        except BaseException:
            pass  # the root's outcome is in the trace (its `end` event)
        self.root_finished = True

    # ---- worker threads ----

    def worker_started(self):
        with self.workers_idle:
            self.busy_workers += 1

    def worker_finished(self):
        with self.workers_idle:
            self.busy_workers -= 1
            self.workers_idle.notify_all()

    def wait_for_workers(self, timeout):
        """After the run: wait until no abandoned worker runs any more."""
        with self.workers_idle:
            return self.workers_idle.wait_for(lambda: self.busy_workers == 0, timeout)


# ======================================================================
# The task interpreter
# ======================================================================


class Task:
    """Runs a body of ops in one task. Each op is a method `op_NAME`."""

    def __init__(self, testee, name, task_status):
        self.t = testee
        self.api = testee.api
        self.name = name
        self.task_status = task_status

    def emit(self, ev, **fields):
        self.t.emit(self.name, ev, **fields)

    async def run_list(self, ops):
        for o in ops:
            await getattr(self, "op_" + o["op"])(o)

    @contextlib.contextmanager
    def cancellable(self, op, **fields):
        """Emits `cancelled` when the op inside fails with a cancellation."""
        try:
            yield
        except BaseException as exc:
            if self.t.is_cancelled(exc):
                self.emit("cancelled", op=op, **fields)
            raise

    # ---- checkpoints and plain ops ----

    async def op_sleep(self, o):
        with self.cancellable("sleep"):
            await self.api.sleep(o["for"] / 1000)

    async def op_sleep_forever(self, o):
        with self.cancellable("sleep_forever"):
            await self.api.sleep_forever()

    async def op_checkpoint(self, o):
        with self.cancellable("checkpoint"):
            await self.api.checkpoint()

    async def op_checkpoint_if_cancelled(self, o):
        with self.cancellable("checkpoint_if_cancelled"):
            await self.api.checkpoint_if_cancelled()

    async def op_shielded_checkpoint(self, o):
        await self.api.cancel_shielded_checkpoint()

    async def op_log(self, o):
        self.emit("log", msg=o["msg"])

    async def op_report_deadline(self, o):
        deadline = self.api.current_effective_deadline()
        if math.isinf(deadline):
            self.emit("deadline", deadline="inf" if deadline > 0 else "-inf")
        else:
            self.emit("deadline", deadline=self.t.ms(deadline))

    async def op_fail(self, o):
        raise ScenarioError(o["code"])

    async def op_try(self, o):
        try:
            await self.run_list(o["body"])
        except BaseException as exc:
            # `except NAME:` catches one exception, never a cancellation nor
            # an exception group.
            if self.t.is_cancelled(exc) or isinstance(exc, BaseExceptionGroup):
                raise
            name = self.t.error_name(exc)
            if name not in o.get("except", ()):
                raise
            self.emit("caught", error=name)
        finally:
            await self.run_list(o.get("finally", ()))

    # ---- cancel scopes ----

    def scope_manager(self, o):
        """The context manager of a scope op: the convenience that fits."""
        api, shield = self.api, o.get("shield", False)
        after, at = o.get("deadline_after"), o.get("deadline_at")
        if o.get("fail", False):
            if after is not None:
                return api.fail_after(after / 1000, shield=shield)
            if at is not None:
                return api.fail_at(self.t.seconds_at(at), shield=shield)
            return api.fail_after(None, shield=shield)
        if after is not None:
            return api.move_on_after(after / 1000, shield=shield)
        if at is not None:
            return api.move_on_at(self.t.seconds_at(at), shield=shield)
        return api.CancelScope(shield=shield)

    async def op_scope(self, o):
        sid, scope = o["id"], None
        try:
            with self.scope_manager(o) as scope:
                self.t.scopes[sid] = scope
                for method, arg in self.t.pending.pop(sid, ()):  # ops that came before the scope
                    method(scope, arg)
                await self.run_list(o["body"])
        except BaseException as exc:
            caught = scope is not None and scope.cancelled_caught
            self.emit("scope_exit", scope=sid, caught=caught, **self.t.outcome(exc))
            raise
        self.emit("scope_exit", scope=sid, caught=scope.cancelled_caught, result="ok")

    @staticmethod
    def _cancel(scope, _):
        scope.cancel()

    @staticmethod
    def _set_deadline(scope, deadline):
        scope.deadline = deadline

    @staticmethod
    def _set_shield(scope, shield):
        scope.shield = shield

    def on_scope(self, o, method, arg=None):
        """Applies `method` to the scope or group named by o["scope"] now, or
        once the scope is entered."""
        sid = o["scope"]
        if sid in self.t.scopes:
            method(self.t.scopes[sid], arg)
        else:
            self.t.pending.setdefault(sid, []).append((method, arg))

    async def op_cancel(self, o):
        self.on_scope(o, self._cancel)

    async def op_set_deadline(self, o):
        if o.get("after") is not None:
            deadline = self.api.current_time() + o["after"] / 1000
        elif o.get("at") is not None:
            deadline = self.t.seconds_at(o["at"])
        else:
            deadline = math.inf
        self.on_scope(o, self._set_deadline, deadline)

    async def op_set_shield(self, o):
        self.on_scope(o, self._set_shield, o["shield"])

    # ---- task groups ----

    async def op_group(self, o):
        gid = o["id"]
        try:
            async with self.api.create_task_group() as tg:
                self.t.groups[gid], self.t.scopes[gid] = tg, tg.cancel_scope
                await self.run_list(o["body"])
        except BaseException as exc:
            self.emit("group_exit", group=gid, **self.t.outcome(exc))
            raise
        self.emit("group_exit", group=gid, result="ok")

    async def op_spawn(self, o):
        tg = self.t.groups[o["group"]]
        try:
            tg.start_soon(self.t.task_main, o["name"], o["body"], name=o["name"])
        except RuntimeError as exc:  # a closed group
            raise named(exc, "state_error")

    async def op_start(self, o):
        tg = self.t.groups[o["group"]]
        try:
            value = await tg.start(self.t.task_main, o["name"], o["body"], name=o["name"])
        except BaseException as exc:
            # The child's own errors are named already; a RuntimeError of
            # start itself (a closed group, no `started`) is misuse.
            if isinstance(exc, RuntimeError) and getattr(exc, "conformance_name", None) is None:
                named(exc, "state_error")
            self.emit("start_failed", child=o["name"], **self.t.outcome(exc))
            raise
        self.emit("started", child=o["name"], value=value)

    async def op_started(self, o):
        if self.task_status is None:
            return  # a spawned task (TASK_STATUS_IGNORED)
        try:
            self.task_status.started(o.get("value"))
        except RuntimeError as exc:  # started twice
            raise named(exc, "state_error")

    # ---- synchronization objects ----

    def obj(self, o):
        return self.t.objects[o["object"]]

    def kind(self, o):
        return self.t.kinds[o["object"]]

    @contextlib.contextmanager
    def sync_op(self, o):
        """Emits `cancelled` or `raised` (naming the error) when the
        synchronization op inside fails; its success event is the caller's."""
        try:
            yield
        except BaseException as exc:
            if self.t.is_cancelled(exc):
                self.emit("cancelled", op=o["op"], object=o["object"])
            else:
                name = sync_error_name(self.t, o["op"], self.kind(o), exc)
                if name is not None:
                    self.emit("raised", op=o["op"], object=o["object"], error=named(exc, name).conformance_name)
            raise

    def emit_obj(self, ev, o, **fields):
        self.emit(ev, object=o["object"], **fields)

    @staticmethod
    def behalf(o):
        return {"on_behalf": o["on_behalf"]} if "on_behalf" in o else {}

    async def op_acquire(self, o):
        obj = self.obj(o)
        with self.sync_op(o):
            if "on_behalf" in o:
                await obj.acquire_on_behalf_of(o["on_behalf"])
            else:
                await obj.acquire()
        self.emit_obj("acquired", o, **self.behalf(o))

    async def op_acquire_nowait(self, o):
        obj = self.obj(o)
        with self.sync_op(o):
            if "on_behalf" in o:
                obj.acquire_on_behalf_of_nowait(o["on_behalf"])
            else:
                obj.acquire_nowait()
        self.emit_obj("acquired", o, **self.behalf(o))

    async def op_release(self, o):
        obj = self.obj(o)
        with self.sync_op(o):
            if "on_behalf" in o:
                obj.release_on_behalf_of(o["on_behalf"])
            else:
                obj.release()
        self.emit_obj("released", o, **self.behalf(o))

    async def op_set(self, o):
        with self.sync_op(o):
            self.obj(o).set()
        self.emit_obj("set", o)

    async def op_wait(self, o):  # an event or a condition
        with self.sync_op(o):
            await self.obj(o).wait()
        self.emit_obj("woken", o)

    async def op_notify(self, o):
        n = o.get("n", 1)
        with self.sync_op(o):
            self.obj(o).notify(n)
        self.emit_obj("notified", o, n=n)

    async def op_notify_all(self, o):
        with self.sync_op(o):
            self.obj(o).notify_all()
        self.emit_obj("notified", o, n="all")

    async def op_set_total(self, o):
        with self.sync_op(o):
            self.obj(o).total_tokens = o["total"]
        self.emit_obj("total_set", o, total=o["total"])

    async def op_send(self, o):
        with self.sync_op(o):
            await self.obj(o).send(o["value"])
        self.emit_obj("sent", o, value=o["value"])

    async def op_send_nowait(self, o):
        with self.sync_op(o):
            self.obj(o).send_nowait(o["value"])
        self.emit_obj("sent", o, value=o["value"])

    async def op_receive(self, o):
        with self.sync_op(o):
            item = await self.obj(o).receive()
        self.emit_obj("received", o, value=item)

    async def op_receive_nowait(self, o):
        with self.sync_op(o):
            item = self.obj(o).receive_nowait()
        self.emit_obj("received", o, value=item)

    async def op_drain(self, o):
        with self.sync_op(o):
            async for item in self.obj(o):
                self.emit_obj("received", o, value=item)

    async def op_close_sender(self, o):
        with self.sync_op(o):
            self.obj(o).close()
        self.emit_obj("closed", o)

    op_close_receiver = op_close_sender

    async def op_clone_sender(self, o):
        with self.sync_op(o):
            self.t.objects[o["as"]] = self.obj(o).clone()
        self.emit_obj("cloned", o, **{"as": o["as"]})

    op_clone_receiver = op_clone_sender

    async def op_statistics(self, o):
        with self.sync_op(o):
            stats = self.statistics(self.obj(o), self.kind(o))
        self.emit_obj("stats", o, stats=stats)

    def lock_stats(self, s):
        return {"locked": s.locked, "owner": self.t.who(s.owner), "waiting": s.tasks_waiting}

    def statistics(self, obj, kind):
        """The trace's `stats` object (README.md) from AnyIO's statistics."""
        s = obj.statistics()
        if kind == "lock":
            return self.lock_stats(s)
        if kind == "semaphore":
            return {"value": obj.value, "max": obj.max_value, "waiting": s.tasks_waiting}
        if kind == "event":
            return {"set": obj.is_set(), "waiting": s.tasks_waiting}
        if kind == "condition":
            return {"waiting": s.tasks_waiting, "lock": self.lock_stats(s.lock_statistics)}
        if kind == "limiter":
            return {
                "total": _number(s.total_tokens),
                "borrowed": s.borrowed_tokens,
                "waiting": s.tasks_waiting,
                "borrowers": sorted(self.t.who(b) for b in s.borrowers),
            }
        return {  # a channel end
            "buffered": s.current_buffer_used,
            "max_buffer": _number(s.max_buffer_size),
            "open_senders": s.open_send_streams,
            "open_receivers": s.open_receive_streams,
            "waiting_send": s.tasks_waiting_send,
            "waiting_receive": s.tasks_waiting_receive,
        }

    # ---- the thread bridge ----

    async def op_to_thread(self, o):
        abandon = o.get("abandon_on_cancel", False)
        limiter = self.t.objects[o["limiter"]] if "limiter" in o else None
        job = WorkerJob(self.t, o["body"])
        try:
            value = await self.api.to_thread.run_sync(job, abandon_on_cancel=abandon, limiter=limiter)
        except BaseException as exc:
            cancelled = self.t.is_cancelled(exc)
            if not (cancelled and abandon):  # an abandoned job's events are dropped
                self.emit_worker_events(job)
            if cancelled:
                self.emit("cancelled", op="to_thread")
            else:
                for name in self.t.outcome(exc).get("errors", ()):
                    self.emit("raised", op="to_thread", error=name)
            raise
        self.emit_worker_events(job)
        self.emit("returned", value=value)

    def emit_worker_events(self, job):
        for ev, fields in list(job.events):
            self.t.emit(self.name + "/worker", ev, **fields)


def _number(value):
    """An int, or "inf" for an unbounded float count."""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else int(value)
    return value


def sync_error_name(testee, op, kind, exc):
    """The error name of a synchronization op's exception, None if unknown."""
    api = testee.api
    if isinstance(exc, (ScenarioError, api.WouldBlock, api.EndOfStream, api.BrokenResourceError,
                        api.ClosedResourceError)):  # fmt: skip
        return testee.error_name(exc)
    if isinstance(exc, RuntimeError):  # AnyIO's misuse errors, told apart by the op
        if op in ("acquire", "acquire_nowait"):
            return "deadlock_error"  # the lock / a limiter token is held already
        if op == "release" or kind == "condition":
            return "permission_error"  # not the owner / borrower / lock holder
    if isinstance(exc, ValueError) and op == "release" and kind == "semaphore":
        return "value_error"
    return None


# ======================================================================
# The worker side of to_thread
# ======================================================================


async def _shielded(cancel_scope_class, afn, *args):
    with cancel_scope_class(shield=True):
        return await afn(*args)


class WorkerBridge:
    """*** The worker thread's operations on the runtime: the ONE place that
    knows how a worker thread uses it. ***

    Adjust this class to the binding's thread-side API. The default is
    AnyIO's: a blocking op is ``from_thread.run(obj.method)`` (the coroutine
    runs in the event loop, under the to_thread task's cancel scopes, so
    the task's cancellation reaches it), a non-blocking one
    ``from_thread.run_sync(obj.method)``, the check is
    ``from_thread.check_cancelled()``. AnyIO has no cancel scope for a
    thread: the worker's `shield` runs every op inside it in a shielded
    CancelScope on the loop's side.
    """

    def __init__(self, api):
        self.api = api
        self.shields = 0  # how many `shield` ops the worker is in

    def _run(self, afn, *args):
        if self.shields:
            return self.api.from_thread.run(_shielded, self.api.CancelScope, afn, *args)
        return self.api.from_thread.run(afn, *args)

    def _run_sync(self, fn, *args):
        return self.api.from_thread.run_sync(fn, *args)

    def acquire(self, obj):  # a lock or a semaphore
        self._run(obj.acquire)

    def release(self, obj):
        self._run_sync(obj.release)

    def set(self, event):
        self._run_sync(event.set)

    def wait(self, event):
        self._run(event.wait)

    def send(self, sender, item):
        self._run(sender.send, item)

    def receive(self, receiver):
        return self._run(receiver.receive)

    def sleep_forever(self):
        self._run(self.api.sleep_forever)

    def check_cancelled(self):
        if self.shields:  # the worker's own shield hides the task's cancellation
            self._run(self.api.checkpoint_if_cancelled)
        else:
            self.api.from_thread.check_cancelled()

    @contextlib.contextmanager
    def shield(self):
        self.shields += 1
        try:
            yield
        finally:
            self.shields -= 1


class BraidWorkerBridge(WorkerBridge):
    """The braid backend's worker side: braid's primitives are thread-safe C
    objects, so the worker thread blocks on them directly (``*_blocking``
    methods, without the GIL), and its cancel scopes are its own: a shield
    is a ``CancelScope(shield=True)`` entered in the thread."""

    def acquire(self, obj):
        obj.acquire_blocking()

    def release(self, obj):
        obj.release()

    def set(self, event):
        event.set()

    def wait(self, event):
        event.wait_blocking()

    def send(self, sender, item):
        sender.send_blocking(item)

    def receive(self, receiver):
        return receiver.receive_blocking()

    def sleep_forever(self):
        self.api.lowlevel.sleep_blocking(math.inf)

    def check_cancelled(self):
        self.api.from_thread.check_cancelled()

    @contextlib.contextmanager
    def shield(self):
        with self.api.CancelScope(shield=True):
            yield


class WorkerJob:
    """The function a to_thread op runs on the worker thread: interprets the
    worker ops through a WorkerBridge and records their events (the task
    prints them)."""

    def __init__(self, testee, body):
        self.t = testee
        self.body = body
        self.events = []  # (ev, fields), appended by the worker thread only

    def __call__(self):
        self.t.worker_started()
        self.bridge = (BraidWorkerBridge if self.t.api.backend == "braid" else WorkerBridge)(self.t.api)
        try:
            self.run_list(self.body)
            return None
        except _Return as ret:
            return ret.value
        finally:
            self.t.worker_finished()

    def record(self, ev, **fields):
        self.events.append((ev, fields))

    def run_list(self, ops):
        for o in ops:
            self.run_op(o)

    def run_op(self, o):
        op = o["op"]
        if op == "log":
            self.record("log", msg=o["msg"])
        elif op == "fail":
            raise ScenarioError(o["code"])
        elif op == "return":
            raise _Return(o.get("value"))
        elif op == "try":
            self.run_try(o)
        elif op == "shield":
            with self.bridge.shield():
                self.run_list(o["body"])
        elif op in ("check_cancelled", "sleep_forever"):
            try:
                getattr(self.bridge, op)()
            except BaseException as exc:
                if self.t.is_cancelled(exc):
                    self.record("cancelled", op=op)
                raise
        else:
            self.run_sync_op(o)

    def run_try(self, o):
        try:
            self.run_list(o["body"])
        except BaseException as exc:
            if self.t.is_cancelled(exc) or isinstance(exc, (_Return, BaseExceptionGroup)):
                raise
            name = self.t.error_name(exc)
            if name not in o.get("except", ()):
                raise
            self.record("caught", error=name)
        finally:
            self.run_list(o.get("finally", ()))

    def run_sync_op(self, o):
        op, oid = o["op"], o["object"]
        obj, fields = self.t.objects[oid], {"object": oid}
        try:
            if op == "acquire":
                self.bridge.acquire(obj)
                ev = "acquired"
            elif op == "release":
                self.bridge.release(obj)
                ev = "released"
            elif op == "set":
                self.bridge.set(obj)
                ev = "set"
            elif op == "wait":
                self.bridge.wait(obj)
                ev = "woken"
            elif op == "send":
                self.bridge.send(obj, o["value"])
                ev, fields["value"] = "sent", o["value"]
            else:  # receive
                ev, fields["value"] = "received", self.bridge.receive(obj)
        except BaseException as exc:
            if self.t.is_cancelled(exc):
                self.record("cancelled", op=op, object=oid)
            else:
                name = sync_error_name(self.t, op, self.t.kinds[oid], exc)
                if name is not None:
                    self.record("raised", op=op, object=oid, error=named(exc, name).conformance_name)
            raise
        self.record(ev, **fields)


# ======================================================================
# main
# ======================================================================


def main(argv=None):
    ap = argparse.ArgumentParser(description="Run a conformance scenario and print its trace.")
    ap.add_argument("--backend", choices=("braid", "anyio-trio"), default="braid")
    ap.add_argument("scenario")
    try:
        args = ap.parse_args(argv)
    except SystemExit:
        return 2
    try:
        api = load_api(args.backend)
    except (ImportError, AttributeError) as exc:
        print(f"testee.py: backend {args.backend}: {exc}", file=sys.stderr)
        return 2
    try:
        with open(args.scenario, encoding="utf-8") as f:
            doc = json.load(f)
        testee = Testee(api, doc)
    except (OSError, ValueError, KeyError, TypeError, ScenarioInvalid) as exc:
        print(f"testee.py: {args.scenario}: {exc}", file=sys.stderr)
        return 2

    status = 0
    try:
        api.run(testee.main)
    except BaseException as exc:
        print("testee.py: the run raised:", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
        status = 3
    if not testee.root_finished:
        print("testee.py: the run returned before the root task ended", file=sys.stderr)
        status = 3
    if testee.internal_errors:
        print(f"testee.py: {testee.internal_errors} unexpected exceptions (see above)", file=sys.stderr)
        status = 3
    if not testee.wait_for_workers(10):
        print("testee.py: a worker thread is still busy 10 s after the run", file=sys.stderr)
        sys.stdout.flush()
        os._exit(3)
    return status


if __name__ == "__main__":
    sys.exit(main())
