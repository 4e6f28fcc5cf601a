"""braid from Python: AnyIO's API on braid's C runtime.

A task group runs three downloads side by side; one gives up after a
deadline; a worker thread does blocking work holding a braid.Lock that the
tasks share; a memory object stream carries the results.
"""

import time

import braid

lock = braid.Lock()


async def download(name: str, seconds: float, send: braid.MemoryObjectSendStream[str]) -> None:
    async with send:
        with braid.move_on_after(1.0) as scope:
            await braid.sleep(seconds)
            await send.send(f"{name}: done after {seconds:.1f} s")
        if scope.cancelled_caught:
            await send.send(f"{name}: gave up at the 1 s deadline")


def blocking_work() -> str:
    with lock:  # the same C lock the tasks use, held by this worker thread
        time.sleep(0.05)
        return "worker thread: did blocking work under the shared lock"


async def main() -> None:
    start = braid.current_time()
    send, receive = braid.create_memory_object_stream[str](10)
    async with braid.create_task_group() as tg:
        for name, seconds in [("a", 0.2), ("b", 0.5), ("c", 3.0)]:
            tg.start_soon(download, name, seconds, send.clone())
        send.close()
        print(await braid.to_thread.run_sync(blocking_work))
        async with lock:
            print("task: took the lock after the worker released it")
        async for line in receive:
            print(line)
    try:
        with braid.fail_after(0.1):
            await braid.sleep_forever()
    except TimeoutError:
        print(f"fail_after raised TimeoutError {braid.current_time() - start:.1f} s after the start")


if __name__ == "__main__":
    print("-- on the real clock")
    t0 = time.perf_counter()
    braid.run(main)
    print(f"took {time.perf_counter() - t0:.2f} s of real time")
    print("-- on the virtual clock (same program, deterministic, no real waiting)")
    t0 = time.perf_counter()
    braid.run(main, clock=braid.VirtualClock())
    print(f"took {time.perf_counter() - t0:.2f} s of real time")
