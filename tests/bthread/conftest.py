"""Fixtures for the bthread runtime tests.

Every test here runs under :func:`_no_leftovers`, which fails the test if it leaves anything
behind: a thread (a worker ``bthread_worker_N``, the ``TimerThread``, a plain thread the test
started), a greenlet that is still suspended, a runtime that is still current, or the lazily made
default runtime. A watchdog dumps every thread's stack and ends the run if one test hangs, so a
lost wake-up in threads mode shows where it is stuck instead of blocking CI.

``mode`` parametrizes a test over the two modes; ``rt`` is a fresh 4-group runtime in that mode,
closed (and checked for unfinished bthreads and uncaught errors) after the test.
"""
from __future__ import annotations

import faulthandler
import gc
import os
import sys
import threading
import time
import weakref

import greenlet
import pytest

from brpc_mini.bthread import Runtime
from brpc_mini.bthread import context as bthread_context

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # bthread_helpers, any import mode
from bthread_helpers import close_checked  # noqa: E402

MODES = ["deterministic", "threads"]
#: a single test that takes longer than this is hung: dump all stacks and stop the run
HANG_TIMEOUT_S = 120
#: how long to wait for threads that are already on their way out
THREAD_GRACE_S = 5.0


def pytest_collection_modifyitems(config, items):
    # A runtime closed with bthreads that never ended is a test bug unless the test says so
    # (with pytest.warns); make the warning an error for every test in this directory.
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.filterwarnings(
                "error::brpc_mini.bthread.runtime.UnfinishedBthreadWarning"))


def _active_greenlets(collect: bool = False) -> list:
    """Greenlets that have started and not finished, other than each thread's main greenlet."""
    if collect:
        gc.collect()
    return [g for g in gc.get_objects()
            if isinstance(g, greenlet.greenlet) and g and g.parent is not None]


#: active greenlets that existed before the first test here (or were already reported): one scan
#: of the heap per test is enough, and a leak fails only the test that made it
_known_greenlets = None


@pytest.fixture(autouse=True)
def _no_leftovers():
    global _known_greenlets
    if _known_greenlets is None:
        _known_greenlets = weakref.WeakSet(_active_greenlets(collect=True))
    threads_before = set(threading.enumerate())
    default_before = bthread_context._default["runtime"]
    stack_before = list(bthread_context._runtime_stack)
    faulthandler.dump_traceback_later(HANG_TIMEOUT_S, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()

    deadline = time.monotonic() + THREAD_GRACE_S
    while True:
        new_threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        if not new_threads or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not new_threads, f"threads left running after the test: {[t.name for t in new_threads]}"
    runtime_threads = [t for t in threading.enumerate()
                       if t.name.startswith("bthread_worker") or t.name == "TimerThread"]
    assert not runtime_threads, f"runtime threads alive: {[t.name for t in runtime_threads]}"
    assert bthread_context._runtime_stack == stack_before, "a runtime is still current after the test"
    assert bthread_context._default["runtime"] is default_before, \
        "the test used the bthread API outside any `with Runtime(...)` and made the default runtime"
    leaked = [g for g in _active_greenlets() if g not in _known_greenlets]
    if leaked:   # maybe garbage that a collection would end: look again after one
        del leaked
        leaked = [g for g in _active_greenlets(collect=True) if g not in _known_greenlets]
        _known_greenlets.update(leaked)
    assert not leaked, f"greenlets left suspended after the test: {leaked[:5]}"


@pytest.fixture(params=MODES)
def mode(request) -> str:
    return request.param


@pytest.fixture
def rt(mode):
    """A fresh runtime with 4 groups in ``mode``, current for the test, closed afterwards.

    A test that provokes errors on purpose checks ``rt.errors`` and clears it.
    """
    runtime = Runtime(concurrency=4, mode=mode, seed=7)
    with runtime:
        yield runtime
        # inside the with: the check below closes it; __exit__ then finds it closed
        close_checked(runtime)
