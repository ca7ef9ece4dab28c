"""Fixtures for the RPC tests: runtimes in both modes, the bundled echo server, leak checks.

Every test in this directory runs under :func:`_no_leftovers`, which fails it if it leaves
anything behind: a runtime thread (``bthread_worker_N``, ``TimerThread``) or any other thread it
started, a child process, or a runtime that is still current. A closed runtime must not warn about
bthreads that never ended (``UnfinishedBthreadWarning`` is an error here) and must have no uncaught
errors in its bthreads. A watchdog dumps every thread's stack and ends the run if one test hangs.

``rt`` is a fresh 4-group runtime in each mode (``mode`` parametrizes it); ``echo_server`` is an
``EchoServer`` on ``rt`` listening on a free loopback port. A test that needs other runtime
arguments marks itself ``@pytest.mark.runtime_options(io_wait_ms=...)``.
"""
from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time

import pytest

from brpc_mini.bthread import Runtime
from brpc_mini.bthread import context as bthread_context
from brpc_mini.echo_server import EchoServer
from rpc_helpers import child_pids, close_checked

MODES = ["deterministic", "threads"]
#: one test taking longer than this is hung: dump all stacks and stop the run
HANG_TIMEOUT_S = 120
#: how long to wait for threads and processes that are already on their way out
GRACE_S = 5.0


def pytest_configure(config):
    config.addinivalue_line("markers", "runtime_options(**kwargs): extra Runtime() arguments for `rt`")


def pytest_collection_modifyitems(config, items):
    # A runtime closed with bthreads that never ended is a bug in the code or the test: make the
    # warning an error for every test in this directory.
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.filterwarnings(
                "error::brpc_mini.bthread.runtime.UnfinishedBthreadWarning"))


@pytest.fixture(autouse=True)
def _no_leftovers():
    threads_before = set(threading.enumerate())
    children_before = set(child_pids())
    stack_before = list(bthread_context._runtime_stack)
    default_before = bthread_context._default["runtime"]
    faulthandler.dump_traceback_later(HANG_TIMEOUT_S, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
    deadline = time.monotonic() + GRACE_S
    while True:
        new_threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        new_children = [p for p in child_pids() if p not in children_before]
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


@pytest.fixture(params=MODES)
def mode(request) -> str:
    return request.param


@pytest.fixture
def rt(mode, request):
    """A fresh runtime with 4 groups in ``mode``, current for the test, closed and checked after."""
    marker = request.node.get_closest_marker("runtime_options")
    options = dict(marker.kwargs) if marker else {}
    runtime = Runtime(concurrency=4, mode=mode, seed=0, **options)
    with runtime:
        yield runtime
        close_checked(runtime)


@pytest.fixture
def echo_server(rt):
    """The bundled EchoServer on ``rt``, stopped (and its requests joined) before ``rt`` closes."""
    with EchoServer() as server:
        yield server
