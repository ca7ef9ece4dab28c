"""Fixtures for the bthread runtime tests.

Every test here runs under :func:`_no_leftovers`, which fails the test if it leaves anything
behind: a thread (a worker ``bthread_worker_N``, the ``TimerThread``, a plain thread the test
started), a greenlet the runtime made that is still suspended, a runtime that is still current, or
the lazily made default runtime. A watchdog dumps every thread's stack and ends the run if one test
hangs, so a lost wake-up in threads mode shows where it is stuck instead of blocking CI.

Greenlets are tracked where the runtime makes them (three call sites of ``greenlet.greenlet``);
scanning the whole heap after every test cost a third of the suite's time, so that scan runs once,
at the end of the session, as a backstop for greenlets made some other way.

``mode`` parametrizes a test over the two modes; ``rt`` is a fresh 4-group runtime in that mode,
closed (and checked for unfinished bthreads and uncaught errors) after the test.
"""
from __future__ import annotations

import gc
import os
import sys
import weakref

import greenlet
import pytest

from brpc_mini.bthread import Runtime
from kit_test_helpers import no_leftovers
from brpc_mini.bthread import runtime as runtime_module
from brpc_mini.bthread import task_group as task_group_module

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


class _GreenletTracker:
    """Stands in for the ``greenlet`` module inside the runtime's modules: the same module, except
    that every greenlet made through ``greenlet.greenlet(...)`` is remembered (weakly)."""

    def __init__(self, real):
        self._real = real
        self.made = weakref.WeakSet()

    def __getattr__(self, name):
        return getattr(self._real, name)

    def greenlet(self, *args, **kwargs):
        g = self._real.greenlet(*args, **kwargs)
        self.made.add(g)
        return g

    def active(self) -> list:
        """Greenlets made here that started and have not finished."""
        return [g for g in list(self.made) if g]


def _active_greenlets_on_the_heap() -> list:
    gc.collect()
    return [g for g in gc.get_objects()
            if isinstance(g, greenlet.greenlet) and g and g.parent is not None]


@pytest.fixture(scope="session", autouse=True)
def _no_greenlet_left_on_the_heap():
    before = weakref.WeakSet(_active_greenlets_on_the_heap())
    yield
    leaked = [g for g in _active_greenlets_on_the_heap() if g not in before]
    assert not leaked, f"greenlets left suspended by the bthread tests: {leaked[:5]}"


@pytest.fixture(autouse=True)
def _no_leftovers(monkeypatch):
    tracker = _GreenletTracker(greenlet)
    for module in (runtime_module, task_group_module):
        assert module.greenlet is greenlet, f"{module.__name__} no longer imports greenlet as a module"
        monkeypatch.setattr(module, "greenlet", tracker)
    with no_leftovers(HANG_TIMEOUT_S, THREAD_GRACE_S):
        yield
    if tracker.active():          # maybe garbage that a collection would end: look again after one
        gc.collect()
    leaked = tracker.active()
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
