"""Helpers every test suite uses: closing a runtime strictly, and waiting in real time."""
from __future__ import annotations

import contextlib
import faulthandler
import os
import sys
import threading
import time
import warnings

from brpc_mini.bthread import Runtime, UnfinishedBthreadWarning


def close_checked(rt: Runtime) -> None:
    """Close ``rt`` and fail on unfinished bthreads or uncaught errors in bthreads."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rt.close()
    unfinished = [str(w.message) for w in caught if issubclass(w.category, UnfinishedBthreadWarning)]
    assert not unfinished, unfinished
    assert not rt.errors, f"uncaught errors in bthreads: {rt.errors}"


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` in real time (the timeout only catches a hang)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.001)


def child_pids() -> list:
    """The pids of this process's children (every thread's), from /proc."""
    import glob
    pids = []
    for path in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        try:
            with open(path) as f:
                pids.extend(int(p) for p in f.read().split())
        except OSError:
            pass
    return pids


@contextlib.contextmanager
def no_leftovers(hang_timeout_s: float = 120, grace_s: float = 5.0, check_children: bool = False):
    """Around one test: dump every stack and exit if it hangs; afterwards fail if it left threads
    (runtime workers or TimerThreads above all), child processes, a current runtime, or a newly
    made default runtime behind."""
    from brpc_mini.bthread import context as bthread_context
    threads_before = set(threading.enumerate())
    children_before = set(child_pids()) if check_children else set()
    stack_before = list(bthread_context._runtime_stack)
    default_before = bthread_context._default["runtime"]
    faulthandler.dump_traceback_later(hang_timeout_s, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
    deadline = time.monotonic() + grace_s
    while True:
        new_threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        new_children = [p for p in child_pids() if p not in children_before] if check_children else []
        if (not new_threads and not new_children) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not new_threads, f"threads left running after the test: {[t.name for t in new_threads]}"
    runtime_threads = [t.name for t in threading.enumerate()
                       if t.name.startswith("bthread_worker") or t.name == "TimerThread"]
    assert not runtime_threads, f"runtime threads alive: {runtime_threads}"
    assert not new_children, f"child processes left after the test: {new_children}"
    assert bthread_context._runtime_stack == stack_before, "a runtime is still current after the test"
    assert bthread_context._default["runtime"] is default_before, \
        "the test used the bthread API outside any `with Runtime(...)` and made the default runtime"
