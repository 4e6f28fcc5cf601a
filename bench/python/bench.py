#!/usr/bin/env python3
"""Python benchmarks: braid's Python binding beside asyncio, uvloop, AnyIO and Trio.

Usage: bench.py [--json] [--quick] [--impl NAME ...] [--bench NAME ...]

  --json    one JSON object per result line, the format of the C benches:
            {"bench": "py_checkpoint", "impl": "asyncio", "unit": "ns/op",
             "median": 123.4, "runs": 5}
  --quick   3 timed runs instead of 5 and 10x smaller counts (smoke test);
            the memory bench uses 10,000 tasks and one process
  --impl    implementations to run (default: all of them, braid first)
  --bench   benchmarks to run (default: all of them)

Implementations (the "impl" field), each through its own idiomatic API:

  braid    the braid package (bindings/python), whose API mirrors AnyIO 4
  asyncio  asyncio.TaskGroup, asyncio.sleep(0), asyncio.timeout(), asyncio.Lock,
           asyncio.to_thread, on the standard event loop
  uvloop   the same code on uvloop's event loop
  anyio    AnyIO 4's API on its asyncio backend (standard event loop)
  trio     Trio's native API: nurseries, trio.sleep(0), trio.move_on_after,
           trio.Lock, trio.to_thread.run_sync

braid, anyio and trio run literally the same benchmark code (class AnyioApi),
with the module swapped (and, for trio, open_nursery for create_task_group).

Benchmarks (the "bench" field):

  py_spawn_join       open a task group, spawn 10,000 tasks that do nothing,
                      leave the group (join them all); ns/task
  py_checkpoint       100,000 `await sleep(0)` in one task; ns/op
  py_scope            100,000 enters and exits of move_on_after(3600)
                      (asyncio: `async with asyncio.timeout(3600)`), nothing
                      awaited inside; ns/op
  py_lock_pingpong    two tasks pass one Lock back and forth, 100,000
                      acquisitions in all (see Player below); ns/hand-off
  py_to_thread        10,000 sequential to_thread round trips of a function
                      that returns at once, worker threads warm; ns/op
  py_sleeping_task_memory
                      growth of resident memory (/proc/self/statm) per task
                      when 100,000 tasks are asleep forever in one task group;
                      each run in a fresh process; bytes/task

Measuring: every implementation runs in a child process of its own (this
script re-invoking itself with --child), so event loops, policies and
allocator state never mix; the memory bench starts one more fresh process per
run (--mem-child). A timed bench runs inside one event loop run: one warm-up
repetition, then 5 timed ones (3 with --quick), each timed with
time.perf_counter_ns() inside the running loop around the measured part
only; the median is reported. The garbage collector stays enabled (it is part
of the cost of making tasks) but is emptied before each repetition.

Exit status: 0 when every requested result was produced, 1 otherwise. When
braid cannot be imported: with --impl braid the script stops at once (status
1); when all implementations were asked for, braid is skipped with a warning
on stderr, the peers run, and the status is 1, so that a missing braid is
never mistaken for a complete run.
"""

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import traceback
from time import perf_counter_ns

IMPLS = ("braid", "asyncio", "uvloop", "anyio", "trio")

RUNS, QUICK_RUNS = 5, 3
MEMORY_RUNS, QUICK_MEMORY_RUNS = 3, 1
LARGE_TIMEOUT = 3600.0  # seconds: a deadline that never expires during a bench

# Exit status of a child whose implementation cannot be imported.
EXIT_UNAVAILABLE = 3


class Bench:
    """One benchmark: the implementation method that runs one repetition
    (returning the per-unit value), its unit and its normal and --quick counts."""

    def __init__(self, method, unit, count, quick_count):
        self.method, self.unit = method, unit
        self.count, self.quick_count = count, quick_count


BENCHES = {
    "py_spawn_join": Bench("spawn_join", "ns/task", 10_000, 1_000),
    "py_checkpoint": Bench("checkpoint", "ns/op", 100_000, 10_000),
    "py_scope": Bench("scope", "ns/op", 100_000, 10_000),
    "py_lock_pingpong": Bench("lock_pingpong", "ns/hand-off", 100_000, 10_000),
    "py_to_thread": Bench("to_thread", "ns/op", 10_000, 1_000),
    "py_sleeping_task_memory": Bench("sleeping_memory", "bytes/task", 100_000, 10_000),
}
MEMORY_BENCH = "py_sleeping_task_memory"


def log(msg):
    print(f"bench.py: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Pieces shared by every implementation.

async def noop():
    """The body of a spawned task: returns at once."""


def noop_sync():
    """The function sent to a worker thread: returns at once."""


def rss_bytes():
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


class Turns:
    """Records which player holds the lock, counting real hand-offs: an
    acquisition by the other player than the previous one."""

    __slots__ = ("last", "handoffs")

    def __init__(self):
        self.last = None
        self.handoffs = 0

    def took(self, me):
        if self.last is not None and self.last != me:
            self.handoffs += 1
        self.last = me

    def per_handoff(self, elapsed_ns, acquisitions):
        """elapsed_ns divided by the hand-offs; warns when an acquisition
        other than the first was not a hand-off (see player: none should be)."""
        if self.handoffs != acquisitions - 1:
            log(f"warning: lock_pingpong: only {self.handoffs} of {acquisitions - 1} "
                "acquisitions were hand-offs")
        return elapsed_ns / max(self.handoffs, 1)


async def player(lock, sleep, turns, me, rounds):
    """One side of py_lock_pingpong, the same code for every implementation.

    Each round: acquire, checkpoint with sleep(0) while holding the lock,
    release. The checkpoint lets the other player run into acquire() and
    queue on the held lock, so every release has a waiter. Every lock here is
    FIFO-fair to a waiter that is already queued, so the releaser, when it
    comes back to acquire() without having yielded, queues behind it instead
    of taking the lock again: braid, AnyIO and Trio hand ownership to the
    waiter inside release(); asyncio.Lock wakes the waiter and, while the
    woken waiter's future is still in its queue, refuses the lock to anyone
    else. So the two players strictly alternate and each acquisition after
    the first is a hand-off to a waiting task. Turns counts them to prove it
    (a warning is printed otherwise) and the time is divided by that count.
    """
    for _ in range(rounds):
        async with lock:
            turns.took(me)
            await sleep(0)


# --------------------------------------------------------------------------
# asyncio and uvloop: asyncio's own API.

class AsyncioApi:
    """asyncio's native API on the standard event loop."""

    name = "asyncio"

    def loop_factory(self):
        return None  # asyncio.Runner's default: a new standard event loop

    def run(self, fn, *args):
        with asyncio.Runner(loop_factory=self.loop_factory()) as runner:
            return runner.run(fn(*args))

    async def spawn_join(self, n):
        TaskGroup = asyncio.TaskGroup
        t0 = perf_counter_ns()
        async with TaskGroup() as tg:
            create_task = tg.create_task
            for _ in range(n):
                create_task(noop())
        return (perf_counter_ns() - t0) / n

    async def checkpoint(self, n):
        sleep = asyncio.sleep
        t0 = perf_counter_ns()
        for _ in range(n):
            await sleep(0)
        return (perf_counter_ns() - t0) / n

    async def scope(self, n):
        timeout = asyncio.timeout
        t0 = perf_counter_ns()
        for _ in range(n):
            async with timeout(LARGE_TIMEOUT):
                pass
        return (perf_counter_ns() - t0) / n

    async def lock_pingpong(self, n):
        lock, turns = asyncio.Lock(), Turns()
        t0 = perf_counter_ns()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(player(lock, asyncio.sleep, turns, 0, n // 2))
            tg.create_task(player(lock, asyncio.sleep, turns, 1, n - n // 2))
        return turns.per_handoff(perf_counter_ns() - t0, n)

    async def to_thread(self, n):
        to_thread = asyncio.to_thread
        t0 = perf_counter_ns()
        for _ in range(n):
            await to_thread(noop_sync)
        return (perf_counter_ns() - t0) / n

    async def sleeping_memory(self, n):
        """Sleeping forever in asyncio is awaiting a future nobody completes
        (asyncio has no sleep_forever; asyncio.sleep(long) would also
        register a timer per task). The group is then cancelled by raising
        out of its body."""
        started = [0]
        loop = asyncio.get_running_loop()

        async def sleeper():
            started[0] += 1
            await loop.create_future()

        class Done(Exception):
            pass

        gc.collect()
        before = rss_bytes()
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(n):
                    tg.create_task(sleeper())
                while started[0] < n:  # each sleeper counts itself, then blocks
                    await asyncio.sleep(0)
                gc.collect()
                after = rss_bytes()
                raise Done  # cancels every sleeper
        except* Done:
            pass
        return (after - before) / n


class UvloopApi(AsyncioApi):
    """The asyncio code above on uvloop's event loop."""

    name = "uvloop"

    def __init__(self):
        import uvloop
        self.uvloop = uvloop

    def loop_factory(self):
        return self.uvloop.new_event_loop


# --------------------------------------------------------------------------
# AnyIO's API: anyio itself (asyncio backend), braid, which mirrors it, and
# Trio, whose native API AnyIO's follows (a task group is a nursery).

class AnyioApi:
    """AnyIO 4's API, provided by `module` and started by `run`; `task_group`
    opens a task group (default: module.create_task_group)."""

    def __init__(self, name, module, run, task_group=None):
        self.name, self.m, self._run = name, module, run
        self.task_group = task_group or module.create_task_group

    def run(self, fn, *args):
        return self._run(fn, *args)

    async def spawn_join(self, n):
        task_group = self.task_group
        t0 = perf_counter_ns()
        async with task_group() as tg:
            start_soon = tg.start_soon
            for _ in range(n):
                start_soon(noop)
        return (perf_counter_ns() - t0) / n

    async def checkpoint(self, n):
        sleep = self.m.sleep
        t0 = perf_counter_ns()
        for _ in range(n):
            await sleep(0)
        return (perf_counter_ns() - t0) / n

    async def scope(self, n):
        move_on_after = self.m.move_on_after
        t0 = perf_counter_ns()
        for _ in range(n):
            with move_on_after(LARGE_TIMEOUT):
                pass
        return (perf_counter_ns() - t0) / n

    async def lock_pingpong(self, n):
        lock, turns, sleep = self.m.Lock(), Turns(), self.m.sleep
        t0 = perf_counter_ns()
        async with self.task_group() as tg:
            tg.start_soon(player, lock, sleep, turns, 0, n // 2)
            tg.start_soon(player, lock, sleep, turns, 1, n - n // 2)
        return turns.per_handoff(perf_counter_ns() - t0, n)

    async def to_thread(self, n):
        run_sync = self.m.to_thread.run_sync
        t0 = perf_counter_ns()
        for _ in range(n):
            await run_sync(noop_sync)
        return (perf_counter_ns() - t0) / n

    async def sleeping_memory(self, n):
        """Tasks in sleep_forever(); the group is then cancelled."""
        started = [0]
        sleep_forever = self.m.sleep_forever

        async def sleeper():
            started[0] += 1
            await sleep_forever()

        gc.collect()
        before = rss_bytes()
        async with self.task_group() as tg:
            for _ in range(n):
                tg.start_soon(sleeper)
            while started[0] < n:  # each sleeper counts itself, then blocks
                await self.m.sleep(0)
            gc.collect()
            after = rss_bytes()
            tg.cancel_scope.cancel()
        return (after - before) / n


class Unavailable(Exception):
    """An implementation's package cannot be imported."""


def make_impl(name):
    """The implementation object for `name`; Unavailable if it cannot be
    imported. braid and the third-party packages are imported only here, so
    that each child process loads just its own."""
    try:
        if name == "asyncio":
            return AsyncioApi()
        if name == "uvloop":
            return UvloopApi()
        if name == "trio":
            import trio
            return AnyioApi("trio", trio, trio.run, trio.open_nursery)
        if name == "anyio":
            import anyio
            return AnyioApi("anyio", anyio,
                            lambda fn, *args: anyio.run(fn, *args, backend="asyncio"))
        if name == "braid":
            import braid
            return AnyioApi("braid", braid, braid.run)
    except Exception as e:  # ImportError, or a native library failing to load
        raise Unavailable(f"{type(e).__name__}: {e}") from e
    raise ValueError(f"unknown implementation {name!r}")


# --------------------------------------------------------------------------
# Child processes.

def result_line(bench, impl, values):
    """The JSON line of one result (the format of the C benches)."""
    return json.dumps({"bench": bench, "impl": impl, "unit": BENCHES[bench].unit,
                       "median": round(statistics.median(values), 2),
                       "runs": len(values)})


async def repeat(method, n, runs):
    """One warm-up repetition of `method(n)`, then `runs` timed ones; the
    per-unit values of the timed ones."""
    await method(n)
    values = []
    for _ in range(runs):
        gc.collect()
        values.append(await method(n))
    return values


def memory_run(impl_name, tasks):
    """One py_sleeping_task_memory repetition in a fresh process."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--mem-child",
         "--impl", impl_name, "--tasks", str(tasks)],
        stdout=subprocess.PIPE, text=True, check=True).stdout
    return float(out.strip())


def child_main(impl_name, benches, quick):
    """Run the benches of one implementation (this process is fresh) and
    print one JSON line per result. Returns the exit status."""
    try:
        impl = make_impl(impl_name)
    except Unavailable as e:
        log(f"cannot import {impl_name}: {e}")
        return EXIT_UNAVAILABLE
    status = 0
    for bench in benches:
        spec = BENCHES[bench]
        n = spec.quick_count if quick else spec.count
        try:
            if bench == MEMORY_BENCH:
                runs = QUICK_MEMORY_RUNS if quick else MEMORY_RUNS
                values = [memory_run(impl_name, n) for _ in range(runs)]
            else:
                runs = QUICK_RUNS if quick else RUNS
                values = impl.run(repeat, getattr(impl, spec.method), n, runs)
        except Exception as e:
            log(f"{impl_name} {bench} failed: {type(e).__name__}: {e}")
            traceback.print_exc()
            status = 1
            continue
        print(result_line(bench, impl_name, values), flush=True)
    return status


def mem_child_main(impl_name, tasks):
    """One memory repetition: print bytes per sleeping task."""
    impl = make_impl(impl_name)
    print(impl.run(impl.sleeping_memory, tasks))
    return 0


# --------------------------------------------------------------------------
# The parent: one child per implementation, then the output.

def run_child(impl_name, benches, quick):
    """Run one implementation's child; returns (exit status, result rows)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child",
           "--impl", impl_name, "--bench", *benches]
    if quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    rows = []
    for line in proc.stdout.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            log(f"{impl_name}: unexpected output: {line[:100]}")
    return proc.returncode, rows


def fmt(x):
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:,.1f}"


def print_table(rows, impls, benches, quick):
    """Rows are benches, columns implementations; '-' marks a missing result."""
    by_key = {(r["bench"], r["impl"]): r for r in rows}
    header = ["bench", "unit", *impls]
    lines = [header]
    for bench in benches:
        cells = [bench, BENCHES[bench].unit]
        for impl in impls:
            r = by_key.get((bench, impl))
            cells.append(fmt(r["median"]) if r else "-")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    runs = QUICK_RUNS if quick else RUNS
    mem_runs = QUICK_MEMORY_RUNS if quick else MEMORY_RUNS
    print(f"Python {sys.version.split()[0]} benchmarks, median of {runs} runs "
          f"({MEMORY_BENCH}: {mem_runs} fresh process{'es' if mem_runs > 1 else ''})")
    for i, line in enumerate(lines):
        print("  ".join(c.ljust(w) if j < 2 else c.rjust(w)
                        for j, (c, w) in enumerate(zip(line, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("Costs: lower is better. For ratios against braid: "
          "bench.py --json | python3 bench/report.py")


def braid_import_error():
    """None if braid imports, else why not. The parent tries it in a
    throwaway process so that its own state stays clean."""
    proc = subprocess.run([sys.executable, "-c", "import braid"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


BRAID_HINT = ("build and install the Python binding (bindings/python) into this "
              "interpreter's environment")


def parent_main(args):
    explicit = args.impl is not None
    impls = list(dict.fromkeys(args.impl or IMPLS))  # in order, no duplicates
    benches = list(dict.fromkeys(args.bench or BENCHES))
    failed = []

    if "braid" in impls:
        why = braid_import_error()
        if why is not None and explicit:
            log(f"error: --impl braid requested but the braid package cannot be "
                f"imported by {sys.executable}: {why}")
            log(BRAID_HINT)
            return 1
        if why is not None:
            warning = (f"WARNING: braid is NOT importable ({why}); its Python benches "
                       f"are SKIPPED and the exit status will be 1. To fix: {BRAID_HINT}; "
                       "to run only the peers: --impl asyncio uvloop anyio trio")
            log("*" * 72)
            log(warning)
            log("*" * 72)
            impls.remove("braid")
            failed.append("braid (not importable)")

    all_rows = []
    for impl in impls:
        log(f"running {impl}: {', '.join(benches)}")
        status, rows = run_child(impl, benches, args.quick)
        all_rows.extend(rows)
        if args.json:
            for r in rows:
                print(json.dumps(r), flush=True)
        if status == EXIT_UNAVAILABLE:
            failed.append(f"{impl} (not importable)")
        elif status != 0:
            failed.append(f"{impl} (exit status {status})")
        missing = [b for b in benches if not any(r["bench"] == b for r in rows)]
        if missing and status == 0:
            failed.append(f"{impl} (no result for {', '.join(missing)})")

    if not args.json:
        # a skipped braid keeps its (empty) column, so that it shows
        shown = ["braid", *impls] if "braid (not importable)" in failed else impls
        print_table(all_rows, shown, benches, args.quick)
    if failed:
        log(f"FAILED (exit status 1): {'; '.join(failed)}")
        return 1
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench.py", description="Python benchmarks: braid vs asyncio, uvloop, AnyIO, Trio.")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--quick", action="store_true", help="~10x fewer iterations, 3 runs")
    p.add_argument("--impl", nargs="+", choices=IMPLS, metavar="NAME",
                   help=f"implementations to run (default: all of {', '.join(IMPLS)})")
    p.add_argument("--bench", nargs="+", choices=list(BENCHES), metavar="NAME",
                   help=f"benches to run (default: all of {', '.join(BENCHES)})")
    # Internal: how the script re-invokes itself.
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mem-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tasks", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    if args.child or args.mem_child:
        if not args.impl or len(args.impl) != 1:
            print("bench.py: --child and --mem-child take exactly one --impl", file=sys.stderr)
            return 2
        if args.mem_child:
            return mem_child_main(args.impl[0], args.tasks)
        return child_main(args.impl[0], args.bench or list(BENCHES), args.quick)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
