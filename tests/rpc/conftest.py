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

import os

import pytest

from brpc_mini.bthread import Runtime
from brpc_mini.echo_server import EchoServer
from kit_test_helpers import close_checked, no_leftovers

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
    with no_leftovers(HANG_TIMEOUT_S, GRACE_S, check_children=True):
        yield


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
