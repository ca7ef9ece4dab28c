"""Who is running right now: the current TaskGroup (brpc's ``tls_task_group``) and runtime.

brpc: src/bthread/task_group.cpp, tls_task_group

In threads mode each worker OS thread sets its own thread-local group. In deterministic mode all
groups share one OS thread, and the driver sets the thread-local to the group whose turn it is,
and back to None while non-worker code (the program's main code, simulated pthreads, timer
callbacks, the I/O poll) runs. Either way "am I on a worker, and which one?" has one answer:
:func:`tls_task_group`.
"""
from __future__ import annotations

import threading

class _State(threading.local):
    group = None      # class defaults: a plain attribute read, no getattr(..., None) per call
    runtime = None


_tls = _State()
_runtime_stack: list = []
_default = {"runtime": None}
_default_lock = threading.Lock()


def tls_task_group():
    """The TaskGroup running the caller, or None for non-worker code."""
    return _tls.group


def set_tls_task_group(group) -> None:
    _tls.group = group


def current_runtime(create: bool = True):
    """The runtime the bthread_* functions act on.

    A worker's own runtime; else the innermost ``with Runtime(...)``; else a lazily made default
    runtime in threads mode (stopped at interpreter exit), for library users.
    """
    tls = _tls
    group = tls.group
    if group is not None:
        return group.control.runtime
    hinted = tls.runtime
    if hinted is not None and not hinted.closed:
        return hinted
    if _runtime_stack:
        return _runtime_stack[-1]
    if not create:
        return _default["runtime"]
    with _default_lock:
        if _default["runtime"] is None or _default["runtime"].closed:
            from .runtime import Runtime
            rt = Runtime(mode="threads")
            rt._is_default = True
            _default["runtime"] = rt
            import atexit
            atexit.register(rt.close)
        return _default["runtime"]


def set_tls_runtime(rt):
    """Make ``rt`` this thread's runtime (the TimerThread, a runtime's own plain threads, the
    deterministic driver while it steps); returns the previous hint so callers can restore it."""
    previous = getattr(_tls, "runtime", None)
    _tls.runtime = rt
    return previous


def push_runtime(rt) -> None:
    _runtime_stack.append(rt)


def pop_runtime(rt) -> None:
    if rt in _runtime_stack:
        _runtime_stack.remove(rt)
