"""The package's public surface: every export is exercised somewhere in tests/bthread, error names,
and the docstring examples (doctests) of every module."""
from __future__ import annotations

import doctest
import errno
import importlib
import inspect
import pathlib
import pkgutil
import re

import pytest

import brpc_mini.bthread as bthread_pkg
from brpc_mini.bthread import ESTOP, errno_name

HERE = pathlib.Path(__file__).parent


def _public_names() -> list:
    return sorted(n for n, v in vars(bthread_pkg).items()
                  if not n.startswith("_") and not inspect.ismodule(v))


def test_every_public_name_is_used_by_some_bthread_test():
    sources = "\n".join(p.read_text() for p in HERE.glob("test_*.py"))
    missing = [n for n in _public_names() if not re.search(rf"\b{re.escape(n)}\b", sources)]
    assert missing == [], f"exported but never used by a test: {missing}"


def test_every_public_function_is_exported_from_the_package():
    # the bthread_* / butex_* functions a chapter greps for are all importable from the package
    for module_name in ("bthread", "butex", "id"):
        module = importlib.import_module(f"brpc_mini.bthread.{module_name}")
        for name, fn in vars(module).items():
            if inspect.isfunction(fn) and fn.__module__ == module.__name__ and \
                    re.match(r"(bthread_|butex_)", name) and name != "butex_wait_from_pthread":
                assert getattr(bthread_pkg, name, None) is fn, f"{module_name}.{name} is not exported"


def test_errno_names():
    assert errno_name(0) == "OK"
    assert errno_name(errno.EINVAL) == "EINVAL"
    assert errno_name(errno.EWOULDBLOCK) == "EWOULDBLOCK" == errno_name(errno.EAGAIN)
    assert errno_name(errno.ETIMEDOUT) == "ETIMEDOUT"
    assert errno_name(errno.EPERM) == "EPERM" and errno_name(errno.EBUSY) == "EBUSY"
    assert errno_name(errno.EINTR) == "EINTR"
    assert errno_name(ESTOP) == "ESTOP" and ESTOP == -20
    assert errno_name(12345) == "12345"


def _bthread_modules():
    yield bthread_pkg
    for info in pkgutil.iter_modules(bthread_pkg.__path__):
        yield importlib.import_module(f"brpc_mini.bthread.{info.name}")


@pytest.mark.parametrize("module", list(_bthread_modules()), ids=lambda m: m.__name__)
def test_docstring_examples(module):
    """Any ``>>>`` example in the runtime's docstrings must run (greenlet's docs style)."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module.__name__):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0


def example_butex_hand_off():
    """A butex hand-off on two groups, as a chapter prints it. A seed fixes the schedule, so the
    trace is part of the example: b1 is stolen by g1, waits; b2 wakes it on g2 and the exchange
    runs b1 on g2 at once; then g1 steals the requeued waker.

    >>> from brpc_mini.bthread import (Runtime, bthread_join, bthread_start_background,
    ...                                butex_create, butex_wait, butex_wake)
    >>> with Runtime(concurrency=2, mode="deterministic", seed=0) as rt:
    ...     ball = butex_create(0, owner="ball")
    ...     def waiter():
    ...         return butex_wait(ball, 0)
    ...     def waker():
    ...         ball.value = 1
    ...         butex_wake(ball)
    ...     w = bthread_start_background(waiter)
    ...     _ = bthread_start_background(waker)
    ...     bthread_join(w)
    0
    >>> rt.trace.print()
        1  -- task_control    -     created with 2 TaskGroups
        2  -- create          b1    waiter from main
        3  g2 push_remote_rq  b1    from non-worker
        4  -- create          b2    waker from main
        5  g2 push_remote_rq  b2    from non-worker
        6  -- pthread_block   -     main on version_butex value=1
        7  g1 steal           b1    from g2._remote_rq
        8  g1 run             b1    first run
        9  g1 suspend         b1    on ball value=0
       10  g2 pop_remote_rq   b2
       11  g2 run             b2    first run
       12  g2 wake            b1    from ball
       13  g2 run             b1
       14  g2 push_rq         b2
       15  g2 end             b1
       16  g2 pthread_wake    -     main
       17  g1 steal           b2    from g2._rq
       18  g1 run             b2
       19  g1 end             b2
    """


def test_the_hand_off_example():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for test in finder.find(example_butex_hand_off, "example_butex_hand_off", globs={}):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted == 3 and result.failed == 0
