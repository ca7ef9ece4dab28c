"""Helpers shared by the bthread tests (imported as a plain module; tests/bthread is on sys.path)."""
from __future__ import annotations

import contextlib
import threading

from kit_test_helpers import close_checked, wait_for  # noqa: F401  (re-exported)
from brpc_mini.bthread import Runtime, bthread_join, bthread_start_background






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
