"""The SWIG layer and the C objects behind the Python API: handles given to C
code (through ctypes here), BRAID_E* codes mapped to exceptions, the GIL
released in blocking calls."""

import ctypes
import ctypes.util
import threading
import time

import pytest

import braid
from braid import _braid


def libbraid():
    # the extension module is linked to libbraid.so.0: load the same library
    return ctypes.CDLL("libbraid.so.0")


async def test_lock_handle_is_usable_from_c_code_in_a_thread():
    lib = libbraid()
    lib.braid_lock_acquire.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.braid_lock_release.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lock = braid.Lock()
    address = int(lock.handle)
    assert address != 0
    results = []

    def c_thread():
        # ctypes releases the GIL: the thread blocks in C on the braid lock
        results.append(lib.braid_lock_acquire(None, address))
        results.append(lock.statistics().locked)
        results.append(lib.braid_lock_release(None, address))

    await lock.acquire()
    t = threading.Thread(target=c_thread)
    t.start()
    for _ in range(1000):  # the thread queues on the lock held by this task
        if lock.statistics().tasks_waiting == 1:
            break
        await braid.to_thread.run_sync(time.sleep, 0.001)
    assert lock.statistics().tasks_waiting == 1
    lock.release()  # hands the lock to the C thread
    await braid.to_thread.run_sync(t.join, 10)
    assert not t.is_alive()
    assert results == [0, True, 0]
    assert not lock.locked()


def test_swig_functions_map_error_codes_to_exceptions():
    with pytest.raises(ValueError, match="BRAID_EINVAL"):
        _braid.braid_semaphore_new(5, 2)  # initial > max
    h = _braid.braid_lock_new()
    with pytest.raises(RuntimeError, match="BRAID_EPERM"):
        _braid.braid_lock_release(None, h)  # not the owner
    _braid.braid_lock_acquire(None, h)
    with pytest.raises(braid.DeadlockError):
        _braid.braid_lock_acquire_nowait(None, h)
    _braid.braid_lock_release(None, h)
    with pytest.raises(braid.WouldBlock):
        _braid.braid_semaphore_acquire_nowait(_braid.braid_semaphore_new(0, 0))
    assert _braid.braid_errname(_braid.BRAID_ECLOSED) == "BRAID_ECLOSED"
    assert _braid.braid_strerror(0) == "success"


def test_swig_functions_check_handle_kinds_and_the_task_argument():
    lock = _braid.braid_lock_new()
    with pytest.raises(TypeError, match="semaphore handle"):
        _braid.braid_semaphore_release(lock)
    with pytest.raises(TypeError, match="pass None"):
        _braid.braid_lock_acquire(object(), lock)
    with pytest.raises(TypeError):
        _braid.braid_lock_statistics(12345)


def test_swig_blocking_call_releases_the_gil():
    # a thread blocked in braid_event_wait must not stop this thread from running Python
    ev = _braid.braid_event_new()
    done = []
    t = threading.Thread(target=lambda: done.append(_braid.braid_event_wait(None, ev)))
    t.start()
    counted = 0
    while _braid.braid_event_statistics(ev)["waiting"] == 0:
        counted += 1
        time.sleep(0.001)
    for _ in range(10000):  # pure Python work while the other thread waits
        counted += 1
    _braid.braid_event_set(ev)
    t.join(10)
    assert done == [0]
    assert counted >= 10000


def test_statistics_structs_are_dicts():
    tx, rx = _braid.channel_new(3)
    st = _braid.braid_sender_statistics(tx)
    assert st == {"buffered": 0, "max_buffer": 3, "open_senders": 1, "open_receivers": 1,
                  "waiting_send": 0, "waiting_receive": 0}
    w = _braid.braid_worker_statistics()
    assert set(w) == {"alive", "busy", "idle"}


async def test_handles_keep_objects_alive_while_awaited():
    # the Lock object is dropped while a task waits on it: the wait still completes
    async def waiter(op):
        await op

    lock = braid.Lock()
    await lock.acquire()
    op = lock.acquire()
    h = lock.handle
    del lock
    async with braid.create_task_group() as tg:
        tg.start_soon(waiter, op)
        del op
        await braid.checkpoint()
        assert _braid.braid_lock_statistics(h)["waiting"] == 1
        _braid.lock_release(h)
    assert _braid.braid_lock_statistics(h)["locked"]  # the waiter got it and ended holding it
