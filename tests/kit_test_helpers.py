"""Helpers every test suite uses: closing a runtime strictly, and waiting in real time."""
from __future__ import annotations

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
