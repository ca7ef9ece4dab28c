"""Helpers shared by the bthread tests (imported as a plain module; tests/bthread is on sys.path)."""
from __future__ import annotations

import contextlib
import threading
import time
import warnings

from brpc_mini.bthread import Runtime, UnfinishedBthreadWarning, bthread_join, bthread_start_background


def close_checked(rt: Runtime) -> None:
    """Close ``rt`` and fail on unfinished bthreads or uncaught errors the test did not expect."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rt.close()
    unfinished = [str(w.message) for w in caught if issubclass(w.category, UnfinishedBthreadWarning)]
    assert not unfinished, unfinished
    assert not rt.errors, f"uncaught errors in bthreads: {rt.errors}"


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    """Threads mode: poll ``predicate`` until true (the timeout only catches a hang)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.001)


def settle(rt: Runtime, predicate, what: str = "condition", timeout: float = 10.0) -> None:
    """Wait until ``predicate()``: step a deterministic runtime, poll a threaded one."""
    if rt.threads_mode:
        wait_for(predicate, timeout, what)
    else:
        rt.run_until(predicate)


@contextlib.contextmanager
def all_workers_blocked(rt: Runtime):
    """Threads mode: occupy every worker with a bthread that blocks its OS thread (as a blocking
    syscall would), so nothing queued meanwhile can run; release and join them on exit.

    Yields the list of the blockers' groups (one per worker)."""
    assert rt.threads_mode
    release = threading.Event()
    lock = threading.Lock()
    groups = []

    def blocker():
        from brpc_mini.bthread import tls_task_group
        with lock:
            groups.append(tls_task_group())
        release.wait(30)

    n = rt.get_or_new_task_control().concurrency
    tids = [bthread_start_background(blocker) for _ in range(n)]
    try:
        wait_for(lambda: len(groups) == n, what="every worker to run a blocker")
        assert len(set(map(id, groups))) == n, "two blockers on one worker"
        yield groups
    finally:
        release.set()
        for tid in tids:
            assert bthread_join(tid) == 0
