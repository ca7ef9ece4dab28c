"""The bthread_* functions, mirroring brpc's C API on the current runtime.

brpc: src/bthread/bthread.h, src/bthread/bthread.cpp, src/bthread/task_group.cpp

They return brpc's integer codes (0 or an errno value) where brpc does, because the chapters read
those codes; misuse by the programmer (a non-callable ``fn``, a negative sleep) raises an
exception that names the argument.

Explained in: notebooks/01_scheduler.ipynb
"""
from __future__ import annotations

import time

from .butex import WAITER_STATE_INTERRUPTED, _run_woken_bthread, butex_wait, erase_from_butex
from .context import _tls, current_runtime, tls_task_group
from .errno import EINTR, EINVAL, EPERM, ESTOP, EWOULDBLOCK
from .task_control import BTHREAD_MAX_CONCURRENCY, BTHREAD_MIN_CONCURRENCY
from .task_group import BthreadExit, ready_to_run_in_worker
from .task_meta import BTHREAD_ATTR_NORMAL, BTHREAD_NEVER_QUIT, BTHREAD_NOSIGNAL, BthreadAttr, get_version


def _check_start_args(fn, attr):
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if attr is None:
        return BTHREAD_ATTR_NORMAL
    if not isinstance(attr, BthreadAttr):
        raise TypeError(f"attr must be a BthreadAttr, got {type(attr).__name__}")
    return attr


def bthread_start_background(fn, *args, attr: BthreadAttr | None = None) -> int:
    """Start a bthread running ``fn(*args)``; the caller keeps running. Returns its tid.

    brpc: src/bthread/bthread.cpp, bthread_start_background

    From a worker the tid goes to the caller's own ``_rq`` (stealable); from anywhere else
    (the program's main code, a plain thread, a timer callback) through ``start_from_non_worker``
    into a random group's ``_remote_rq``. The TaskControl is created by the first such start.
    """
    return _start(fn, args, attr, urgent=False)


def bthread_start_urgent(fn, *args, attr: BthreadAttr | None = None) -> int:
    """Start a bthread and run it now on this worker; the caller waits in ``_rq``.

    brpc: src/bthread/bthread.cpp, bthread_start_urgent (TaskGroup::start_foreground)
    """
    return _start(fn, args, attr, urgent=True)


def _start(fn, args, attr, urgent: bool) -> int:
    """From a worker: a new TaskMeta, queued (background) or run now (urgent); else from a
    non-worker, always through ``start_from_non_worker``."""
    if attr is None and callable(fn):
        attr = BTHREAD_ATTR_NORMAL
    else:
        attr = _check_start_args(fn, attr)
    g = _tls.group
    if g is None:
        return current_runtime().start_from_non_worker(fn, args, attr)
    rt = g.runtime
    meta = rt._new_meta(fn, args, attr)
    if rt._instruments:
        cur = g._cur_meta
        rt._emit("create", meta, f"{meta.name} {'urgent ' if urgent else ''}from "
                                 f"{'main task' if cur.is_main else 'b%d' % cur.seq}", group=g)
    if urgent:
        g.start_foreground(meta)
    else:
        g.ready_to_run(meta, bool(attr.flags & BTHREAD_NOSIGNAL))
    return meta.tid


def bthread_self() -> int:
    """The running bthread's tid, or 0 outside bthreads. brpc: bthread_self"""
    g = tls_task_group()
    if g is None or g._cur_meta.is_main:
        return 0
    return g._cur_meta.tid


def bthread_join(tid: int) -> int:
    """Wait until bthread ``tid`` ends; 0 at once if it already has.

    brpc: src/bthread/task_group.cpp, TaskGroup::join

    Waits on the TaskMeta's ``version_butex`` until the version moves past the tid's: a bthread
    caller suspends only itself (a ButexBthreadWaiter), any other caller blocks its thread (a
    ButexPthreadWaiter). EINVAL for 0, a slot that never existed, or joining oneself.
    """
    if not isinstance(tid, int) or isinstance(tid, bool):
        raise TypeError(f"tid must be an int, got {type(tid).__name__}")
    if tid == 0:
        return EINVAL
    g = _tls.group
    rt = g.runtime if g is not None else current_runtime()
    slot = tid & 0xFFFFFFFF                 # address_meta, inlined: hot path
    meta = rt._metas[slot] if slot < len(rt._metas) else None
    if meta is None or (g is not None and g._cur_meta.tid == tid and not g._cur_meta.is_main):
        return EINVAL
    expected = tid >> 32                    # get_version
    while meta.version_butex.value == expected:
        rc = butex_wait(meta.version_butex, expected)
        if rc not in (0, EWOULDBLOCK, EINTR):
            return rc
    return 0


def bthread_yield() -> int:
    """Give up the CPU; the caller goes back to its group's ``_rq`` after it has switched out.

    brpc: src/bthread/task_group.cpp, TaskGroup::yield
    """
    g = tls_task_group()
    if g is None or g._cur_meta.is_main:
        if current_runtime().threads_mode:
            time.sleep(0)
        return 0
    meta = g._cur_meta
    if g.runtime._instruments:
        g.runtime._emit("yield", meta, group=g)
    g.set_remained(ready_to_run_in_worker, meta)
    g.sched()
    return 0


def _add_sleep_event(arg) -> None:
    """Remained callback of ``bthread_usleep``: schedule the wake-up once the sleeper is off its stack.

    brpc: src/bthread/task_group.cpp, TaskGroup::_add_sleep_event
    """
    meta, us = arg
    rt = meta.runtime
    meta.current_sleep = rt.timer_thread.schedule(_wake_sleeper, meta, rt.gettimeofday_us() + us)
    if not meta.current_sleep:
        meta.sleep_failed = True
        tls_task_group().ready_to_run(meta)
        return
    rt._emit("sleep", meta, f"{us}us")


def _wake_sleeper(meta) -> None:
    """Timer callback: make the sleeper runnable. brpc: ready_to_run_from_timer_thread"""
    meta.current_sleep = 0
    meta.runtime._emit("wake", meta, "sleep over")
    _run_woken_bthread(meta.runtime, meta, nosignal=False, exchange=False)


def bthread_usleep(us: int) -> int:
    """Sleep ``us`` microseconds; only the bthread sleeps. 0, or EINTR/ESTOP if interrupted.

    brpc: src/bthread/task_group.cpp, TaskGroup::usleep

    Outside a bthread: ``time.sleep`` in threads mode; in deterministic mode the runtime is driven
    until its clock has moved ``us`` forward.
    """
    if not isinstance(us, int) or us < 0:
        raise ValueError(f"us must be an int >= 0, got {us!r}")
    g = tls_task_group()
    if g is None or g._cur_meta.is_main:
        rt = current_runtime()
        if rt.threads_mode:
            time.sleep(us / 1e6)
        else:
            rt._sim_block(lambda: False, rt.gettimeofday_us() + us, what="bthread_usleep")
        return 0
    if us == 0:
        return bthread_yield()
    meta = g._cur_meta
    if meta.interrupted:
        meta.interrupted = False
        return ESTOP if meta.stop else EINTR
    g.set_remained(_add_sleep_event, (meta, us))
    g.sched()
    meta.current_sleep = 0
    if meta.sleep_failed:
        meta.sleep_failed = False
        return ESTOP
    if meta.interrupted:
        meta.interrupted = False
        return ESTOP if meta.stop else EINTR
    return 0


def bthread_interrupt(tid: int) -> int:
    """Wake bthread ``tid`` from a butex wait or a sleep, which then returns EINTR.

    brpc: src/bthread/task_group.cpp, TaskGroup::interrupt

    An interrupt while not blocked is remembered: the next blocking call returns EINTR.
    """
    rt = current_runtime()
    meta = rt.meta_of_live(tid)
    if meta is None:
        return EINVAL
    meta.interrupted = True
    waiter = meta.current_waiter
    if waiter is not None and waiter.container is not None:
        erase_from_butex(waiter, True, WAITER_STATE_INTERRUPTED)
    elif meta.current_sleep:
        if rt.timer_thread.unschedule(meta.current_sleep) == 0:
            meta.current_sleep = 0
            _run_woken_bthread(rt, meta, nosignal=False, exchange=False)
    return 0


def bthread_stop(tid: int) -> int:
    """Ask bthread ``tid`` to stop: a sleep returns ESTOP, a butex wait EINTR; joins go on.

    brpc: src/bthread/bthread.h, bthread_stop (interrupts like ``bthread_interrupt``, and
    ``bthread_usleep`` can tell the two apart)
    """
    rt = current_runtime()
    meta = rt.meta_of_live(tid)
    if meta is None:
        return EINVAL
    meta.stop = True
    return bthread_interrupt(tid)


def bthread_exit() -> None:
    """Leave the running bthread's function now. brpc: bthread_exit"""
    if bthread_self() == 0:
        raise RuntimeError("bthread_exit() called outside a bthread")
    raise BthreadExit()


def bthread_about_to_quit() -> int:
    """Mark the running bthread as ending soon: its requeue after a wake sends no signal.

    brpc: src/bthread/bthread.cpp, bthread_about_to_quit
    """
    g = tls_task_group()
    if g is not None and not g._cur_meta.is_main:
        meta = g._cur_meta
        if not meta.attr.flags & BTHREAD_NEVER_QUIT:
            meta.about_to_quit = True
    return 0


def bthread_flush() -> None:
    """Send the signals owed for NOSIGNAL starts. brpc: src/bthread/bthread.cpp, bthread_flush"""
    g = tls_task_group()
    if g is not None:
        g.flush_nosignal_tasks()
        return
    rt = current_runtime()
    if rt._nosignal_group is not None:
        rt._nosignal_group.flush_nosignal_tasks()
        rt._nosignal_group = None


def bthread_setconcurrency(num: int) -> int:
    """Set the number of workers: any number in [4, 1024] before the first start; only more after.

    brpc: src/bthread/bthread.cpp, bthread_setconcurrency (EINVAL out of range, EPERM to shrink)
    """
    if not isinstance(num, int) or isinstance(num, bool):
        raise TypeError(f"num must be an int, got {type(num).__name__}")
    if num < BTHREAD_MIN_CONCURRENCY or num > BTHREAD_MAX_CONCURRENCY:
        return EINVAL
    rt = current_runtime()
    tc = rt.task_control
    if tc is None:
        rt.concurrency = num
        return 0
    if num < tc.concurrency:
        return EPERM
    tc.add_workers(num - tc.concurrency)
    rt.concurrency = num
    return 0


def bthread_getconcurrency() -> int:
    """brpc: src/bthread/bthread.cpp, bthread_getconcurrency"""
    rt = current_runtime()
    return rt.task_control.concurrency if rt.task_control is not None else rt.concurrency


def gettimeofday_us() -> int:
    """The current runtime's clock in microseconds. brpc: src/butil/time.h, gettimeofday_us"""
    return current_runtime().gettimeofday_us()


def bthread_timer_add(fn, abstime_us: int, arg=None) -> int:
    """Run ``fn(arg)`` on the TimerThread at ``abstime_us``; returns the timer id (0 if refused).

    brpc: src/bthread/bthread.cpp, bthread_timer_add (which returns ESTOP when refused and
    stores the id through a pointer; here the id is the return value and 0 means refused)
    """
    rt = current_runtime()
    rt.get_or_new_task_control()
    return rt.timer_thread.schedule(fn, arg, abstime_us)


def bthread_timer_del(timer_id: int) -> int:
    """Unschedule: 0 removed, 1 running now, EINVAL already ran or unknown.

    brpc: src/bthread/bthread.cpp, bthread_timer_del
    """
    if not isinstance(timer_id, int):
        raise TypeError(f"timer_id must be an int, got {type(timer_id).__name__}")
    rt = current_runtime()
    if rt.timer_thread is None:
        return EINVAL
    rc = rt.timer_thread.unschedule(timer_id)
    return rc if rc >= 0 else EINVAL
