"""Ctrl-C: a real SIGINT sent to a child Python process running braid.run cancels every
task, runs their cleanup, and makes braid.run raise KeyboardInterrupt."""

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import braid

# where the braid package under test comes from (installed, or the source tree)
BINDINGS = str(Path(braid.__file__).resolve().parent.parent)

PRELUDE = """\
import os, signal, sys
import braid

def report_run(main, **kw):
    try:
        result = braid.run(main, **kw)
    except KeyboardInterrupt:
        print("run raised KeyboardInterrupt", flush=True)
        print("handler restored", signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)
        print("wakeup fd restored", signal.set_wakeup_fd(-1) == -1, flush=True)
        sys.exit(42)
    except BaseException as e:
        print("run raised", type(e).__name__, e, flush=True)
        sys.exit(3)
    print("run returned", result, flush=True)
    sys.exit(0)
"""


class Child:
    """A Python child process running `body`; its stdout lines are collected."""

    def __init__(self, body, prelude=PRELUDE):
        env = dict(os.environ)
        env["PYTHONPATH"] = BINDINGS + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", prelude + textwrap.dedent(body)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines = []
        self._q = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, text, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                pytest.fail(f"child did not print {text!r} in time; output: {self.lines}")
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait()
                pytest.fail(f"child ended before printing {text!r}; output: {self.lines}, "
                            f"stderr: {self.proc.stderr.read()}")
            self.lines.append(line)
            if line == text:
                return

    def wait_until_sleeping(self, timeout=20):
        """Wait until the child's main thread (the loop's) sleeps in the kernel: after its
        last print, that is the loop waiting for events (not a task running Python code,
        where a signal handler would run instead). Without procfs, returns at once."""
        stat = Path(f"/proc/{self.proc.pid}/stat")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = stat.read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return
            if state == "S":
                return
            time.sleep(0.001)
        self.kill()
        pytest.fail("the child's loop never waited")

    def interrupt(self):
        os.kill(self.proc.pid, signal.SIGINT)

    def finish(self, timeout=20):
        """Wait for the exit (a hang fails the test); returns (returncode, lines, stderr)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"child hung after SIGINT; output so far: {self.lines}")
        self._reader.join(5)
        while True:
            line = self._q.get_nowait() if not self._q.empty() else None
            if line is None:
                break
            self.lines.append(line)
        return self.proc.returncode, self.lines, self.proc.stderr.read()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def child():
    children = []

    def start(body, **kw):
        c = Child(body, **kw)
        children.append(c)
        return c

    yield start
    for c in children:
        c.kill()
        c.proc.stdout.close()
        c.proc.stderr.close()


def test_sigint_cancels_sleeping_tasks_runs_their_finally_blocks_and_raises_keyboard_interrupt(child):
    c = child(
        """
        async def sleeper(name):
            try:
                await braid.sleep(1000)
            finally:
                print("finally", name, flush=True)

        async def main():
            try:
                async with braid.create_task_group() as tg:
                    tg.start_soon(sleeper, "a")
                    tg.start_soon(sleeper, "b")
                    await braid.sleep(0.01)
                    print("ready", flush=True)
                    await braid.sleep(1000)
            finally:
                print("finally main", flush=True)

        report_run(main)
        """
    )
    c.wait_for("ready")
    t0 = time.monotonic()
    c.interrupt()
    rc, lines, err = c.finish()
    assert time.monotonic() - t0 < 15
    assert rc == 42, (lines, err)
    assert sorted(lines[1:4]) == ["finally a", "finally b", "finally main"]
    assert lines[4:] == ["run raised KeyboardInterrupt", "handler restored True", "wakeup fd restored True"]


def test_sigint_wakes_a_loop_waiting_with_no_deadline_on_the_virtual_clock(child):
    c = child(
        """
        async def main():
            try:
                print("ready", flush=True)
                await braid.sleep_forever()
            finally:
                print("finally main", flush=True)

        report_run(main, clock=braid.VirtualClock())
        """
    )
    c.wait_for("ready")
    c.interrupt()
    rc, lines, err = c.finish()
    assert rc == 42, (lines, err)
    assert lines[1:3] == ["finally main", "run raised KeyboardInterrupt"]


def test_sigint_reaches_python_code_busy_in_a_loop_with_checkpoints(child):
    c = child(
        """
        async def busy(name, counts):
            try:
                while True:
                    counts[name] = counts.get(name, 0) + 1
                    sum(range(1000))  # some Python work between checkpoints
                    await braid.checkpoint()
                    if counts[name] == 100:
                        print("ready", flush=True)
            finally:
                print("finally", name, counts[name] > 100, flush=True)

        async def main():
            counts = {}
            async with braid.create_task_group() as tg:
                tg.start_soon(busy, "a", counts)
                await busy("main", counts)

        report_run(main)
        """
    )
    c.wait_for("ready")
    time.sleep(0.1)  # both tasks are spinning now
    c.interrupt()
    rc, lines, err = c.finish()
    assert rc == 42, (lines, err)
    finals = sorted(line for line in lines if line.startswith("finally"))
    assert finals == ["finally a True", "finally main True"]
    assert "run raised KeyboardInterrupt" in lines


def test_sigint_lets_shielded_cleanup_finish_before_raising(child):
    c = child(
        """
        async def main():
            try:
                print("ready", flush=True)
                await braid.sleep(1000)
            finally:
                with braid.CancelScope(shield=True):
                    await braid.sleep(0.2)
                    print("cleanup slept", flush=True)

        report_run(main)
        """
    )
    c.wait_for("ready")
    t0 = time.monotonic()
    c.interrupt()
    rc, lines, err = c.finish()
    assert rc == 42, (lines, err)
    assert lines[1:3] == ["cleanup slept", "run raised KeyboardInterrupt"]
    assert time.monotonic() - t0 >= 0.2


def test_uncaught_keyboard_interrupt_from_run_ends_the_process_like_any_ctrl_c(child):
    c = child(
        """
        async def main():
            try:
                print("ready", flush=True)
                await braid.sleep(1000)
            finally:
                print("finally main", flush=True)

        braid.run(main)
        """
    )
    c.wait_for("ready")
    c.interrupt()
    rc, lines, err = c.finish()
    assert lines[1:] == ["finally main"]
    assert "KeyboardInterrupt" in err
    # Python re-raises SIGINT at exit when KeyboardInterrupt ends the program
    assert rc == -signal.SIGINT, (rc, err)


def test_after_run_a_second_sigint_is_an_ordinary_keyboard_interrupt(child):
    c = child(
        """
        import time

        async def main():
            print("ready", flush=True)
            await braid.sleep(1000)

        try:
            braid.run(main)
        except KeyboardInterrupt:
            print("first", flush=True)
        try:
            print("sleeping", flush=True)
            time.sleep(30)
        except KeyboardInterrupt:
            print("second", flush=True)
        """
    )
    c.wait_for("ready")
    c.interrupt()
    c.wait_for("sleeping")
    c.interrupt()
    rc, lines, err = c.finish()
    assert lines == ["ready", "first", "sleeping", "second"], (lines, err)
    assert rc == 0


def test_sigint_with_a_custom_handler_is_left_to_that_handler_which_runs_at_once(child):
    c = child(
        """
        got = []
        event = braid.Event()

        def on_sigint(signum, frame):
            got.append(signum)
            event.set()

        signal.signal(signal.SIGINT, on_sigint)

        async def main():
            print("ready", flush=True)
            await event.wait()  # nothing else would ever wake the loop
            return got == [signal.SIGINT], signal.getsignal(signal.SIGINT) is on_sigint

        report_run(main)
        """
    )
    c.wait_for("ready")
    c.interrupt()
    rc, lines, err = c.finish()
    assert rc == 0, (lines, err)
    assert lines[1:] == ["run returned (True, True)"]


def test_an_exception_raised_by_a_signal_handler_while_the_loop_waits_ends_the_run(child):
    # the usual SIGTERM handler of a service: sys.exit() from the handler
    c = child(
        """
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(7))

        async def sleeper():
            try:
                await braid.sleep_forever()
            finally:
                print("finally sleeper", flush=True)

        async def main():
            try:
                async with braid.create_task_group() as tg:
                    tg.start_soon(sleeper)
                    print("ready", flush=True)
                    await braid.sleep(1000)
            finally:
                print("finally main", flush=True)

        braid.run(main)
        """
    )
    c.wait_for("ready")
    # the handler must run while the loop waits: raised in a task (between the print and
    # its await), SystemExit would be that task's failure, not the run's end
    c.wait_until_sleeping()
    t0 = time.monotonic()
    os.kill(c.proc.pid, signal.SIGTERM)
    rc, lines, err = c.finish()
    assert time.monotonic() - t0 < 15
    assert lines[1:] == ["finally sleeper", "finally main"], (lines, err)
    assert rc == 7, err
