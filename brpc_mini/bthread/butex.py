"""Butex: a 32-bit word that bthreads and plain threads can both wait on, like a futex.

brpc: src/bthread/butex.h, src/bthread/butex.cpp

``butex_create(value)`` returns a :class:`Butex`; its ``value`` attribute is the integer that
brpc's ``butex_create`` hands back a pointer to. Users change ``value`` and then call one of the
wake functions; waiters call ``butex_wait(b, expected)``, which sleeps only while
``b.value == expected``.

Two kinds of waiter, as in brpc:

* a **bthread** waits with a :class:`ButexBthreadWaiter` that lives on its own stack (a local of
  ``butex_wait``'s frame in the suspended greenlet, which is how ``brpc_mini.viz`` finds it). The
  bthread switches out *first*; the next context to run on that worker enqueues the waiter, in the
  remained callback :func:`wait_for_butex`, under ``waiter_lock`` and after re-checking the value.
  That ordering is what closes the lost-wakeup race without letting a thief resume the bthread while
  its old worker is still on its stack.
* a **plain thread** (the program's main thread, a user thread, the TimerThread) waits with a
  :class:`ButexPthreadWaiter`: its private ``sig`` word, which a waker sets to 1. In threads mode
  the OS thread sleeps on a ``threading.Event`` standing in for the futex on ``sig``; in
  deterministic mode the waiting code hands control to the driver until ``sig`` flips.

Waking from a bthread hands the CPU to the woken bthread at once (``TaskGroup.exchange``); the
waker is requeued and continues later.

Python difference (threads mode): a woken bthread is always sent to its *home* group, the one
whose OS thread owns its greenlet; brpc sends it to the waker's group or a random one.

Explained in: notebooks/02_butex.ipynb
"""
from __future__ import annotations

import threading
import time
from collections import deque

from .context import _tls, current_runtime, tls_task_group
from .errno import EINTR, ETIMEDOUT, EWOULDBLOCK

#: waiter states (brpc: src/bthread/butex.cpp, WaiterState)
WAITER_STATE_NONE = 0
WAITER_STATE_READY = 1
WAITER_STATE_TIMEDOUT = 2
WAITER_STATE_UNMATCHEDVALUE = 3
WAITER_STATE_INTERRUPTED = 4
WAITER_STATE_NAMES = {0: "NONE", 1: "READY", 2: "TIMEDOUT", 3: "UNMATCHEDVALUE", 4: "INTERRUPTED"}

#: a deadline closer than this is already "timed out" (brpc: src/bthread/butex.h, MIN_SLEEP_US)
MIN_SLEEP_US = 2

NOT_SIGNALLED = 0
SIGNALLED = 1


class Butex:
    """The word, its waiter list and the lock that guards the list.

    brpc: src/bthread/butex.cpp, Butex

    ``owner`` is a label for pictures ("version_butex", "Id butex", ...); ``number`` is the
    runtime's creation number of this butex, a stable label.
    """

    __slots__ = ("value", "waiters", "waiter_lock", "owner", "number", "__weakref__")

    def __init__(self, value: int = 0, runtime=None, owner: str = ""):
        if not isinstance(value, int):
            raise TypeError(f"butex value must be an int, got {type(value).__name__}")
        self.value = value
        self.waiters = deque()
        self.waiter_lock = threading.Lock()
        self.owner = owner
        self.number = runtime._next_butex_number() if runtime is not None else 0

    def __repr__(self) -> str:
        return f"<Butex{(' ' + self.owner) if self.owner else ''} value={self.value} waiters={len(self.waiters)}>"


class ButexWaiter:
    """Base of both waiter kinds: ``tid`` (0 for a plain thread) and ``container``.

    brpc: src/bthread/butex.cpp, ButexWaiter
    """
    __slots__ = ("tid", "container")


class ButexBthreadWaiter(ButexWaiter):
    """A waiting bthread's record, a local on its own stack.

    brpc: src/bthread/butex.cpp, ButexBthreadWaiter
    """
    __slots__ = ("task_meta", "sleep_id", "waiter_state", "expected_value", "initial_butex",
                 "abstime", "prepend")

    def __init__(self, task_meta, expected_value, butex, abstime, prepend=False):
        self.tid = task_meta.tid
        self.container = None
        self.task_meta = task_meta
        self.sleep_id = 0
        self.waiter_state = WAITER_STATE_READY
        self.expected_value = expected_value
        self.initial_butex = butex
        self.abstime = abstime
        self.prepend = prepend

    def __repr__(self) -> str:
        return (f"<ButexBthreadWaiter {self.task_meta.label} expected={self.expected_value} "
                f"state={WAITER_STATE_NAMES[self.waiter_state]}>")


class ButexPthreadWaiter(ButexWaiter):
    """A waiting plain thread's record: its private ``sig`` word.

    brpc: src/bthread/butex.cpp, ButexPthreadWaiter

    ``event`` stands in for the futex on ``sig`` in threads mode; ``name`` says which thread waits
    (for pictures: "main").
    """
    __slots__ = ("sig", "event", "name", "timed_out")

    def __init__(self, name: str = ""):
        self.tid = 0
        self.container = None
        self.sig = NOT_SIGNALLED
        self.event = threading.Event()
        self.name = name or threading.current_thread().name
        self.timed_out = False

    def __repr__(self) -> str:
        return f"<ButexPthreadWaiter {self.name} sig={self.sig}>"


def butex_create(value: int = 0, owner: str = "") -> Butex:
    """Create a butex holding ``value``.

    brpc: src/bthread/butex.cpp, butex_create
    """
    return Butex(value, runtime=current_runtime(), owner=owner)


def butex_destroy(butex: Butex) -> None:
    """brpc: src/bthread/butex.cpp, butex_destroy. Garbage collection frees it; nothing to do."""
    if not isinstance(butex, Butex):
        raise TypeError(f"butex_destroy expects a Butex, got {type(butex).__name__}")


def _check_butex(butex, name="butex"):
    if not isinstance(butex, Butex):
        raise TypeError(f"{name} must be a Butex (from butex_create), got {type(butex).__name__}")


# ---------------------------------------------------------------------------------------------
# waking


def wakeup_pthread(pw: ButexPthreadWaiter) -> None:
    """Set the waiter's ``sig`` and wake its thread. brpc: butex.cpp, wakeup_pthread"""
    pw.sig = SIGNALLED
    pw.event.set()
    rt = current_runtime(create=False)
    if rt is not None and rt._instruments:
        rt._emit("pthread_wake", None, f"{pw.name}")


def unsleep_if_necessary(bbw: ButexBthreadWaiter, timer_thread) -> int:
    """Cancel the waiter's timeout timer; -1 while that timer's callback is running.

    brpc: src/bthread/butex.cpp, unsleep_if_necessary
    """
    if bbw.sleep_id:
        if timer_thread.unschedule(bbw.sleep_id) > 0:
            return -1
        bbw.sleep_id = 0
    return 0


def _settle_timer(bbw, rt) -> None:
    while unsleep_if_necessary(bbw, rt.timer_thread) < 0:
        time.sleep(0)  # the timer thread is mid-callback; let it finish (GIL: never spin hot)


def _run_woken_bthread(rt, meta, nosignal: bool, exchange: bool) -> None:
    """Make a woken bthread runnable: switch to it now, or queue it (design 2.5)."""
    g = _tls.group
    if rt.threads_mode:
        home = meta.home_group
        if g is home:
            if exchange and not nosignal:
                g.exchange(meta)
            else:
                g.ready_to_run(meta, nosignal)
        else:
            home.ready_to_run_remote(meta, nosignal)
        return
    if g is not None:
        if exchange and not nosignal:
            g.exchange(meta)
        else:
            g.ready_to_run(meta, nosignal)
    else:
        rt.task_control.choose_one_group().ready_to_run_remote(meta, nosignal)


def _wake_bthread_waiter(rt, w, butex, nosignal: bool, exchange: bool) -> None:
    """A bthread waiter just taken off ``butex``: settle its timeout timer, trace the wake, and
    make it runnable (switching to it now when ``exchange``)."""
    if w.sleep_id:
        _settle_timer(w, rt)
    if rt._instruments:
        rt._emit("wake", w.task_meta, f"from {butex.owner or 'butex'}")
    _run_woken_bthread(rt, w.task_meta, nosignal, exchange)


def butex_wake(butex: Butex, nosignal: bool = False) -> int:
    """Wake the first waiter; returns 1 if one was woken, else 0.

    brpc: src/bthread/butex.cpp, butex_wake

    A woken bthread runs at once when the caller is a bthread on a worker that may run it
    (``TaskGroup.exchange``; from a worker's main task it goes to that worker's ``_rq``). From code
    that is not a worker — or, in threads mode, from a worker other than the bthread's home — it is
    queued on a ``_remote_rq``.
    """
    if not isinstance(butex, Butex):
        _check_butex(butex)
    with butex.waiter_lock:
        if not butex.waiters:
            return 0
        front = butex.waiters.popleft()
        front.container = None
    _wake_front(front, butex, nosignal)
    return 1


def _wake_front(front, butex: Butex, nosignal: bool) -> None:
    """Wake the waiter taken first off ``butex``: a plain thread, or a bthread switched to now."""
    if front.tid == 0:
        wakeup_pthread(front)
    else:
        _wake_bthread_waiter(front.task_meta.runtime, front, butex, nosignal, exchange=True)


def butex_wake_n(butex: Butex, n: int, nosignal: bool = False) -> int:
    """Wake up to ``n`` waiters (all when ``n`` is 0); returns how many.

    brpc: src/bthread/butex.cpp, butex_wake_n

    Plain threads are all signalled; the first bthread is treated like ``butex_wake`` (usually an
    exchange), the others are queued without signals and flushed once.
    """
    if not isinstance(butex, Butex):
        _check_butex(butex)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    with butex.waiter_lock:
        if not butex.waiters:
            return 0
        if len(butex.waiters) == 1:     # the common case (one joiner): exactly butex_wake
            front = butex.waiters.popleft()
            front.container = None
        else:
            front = None
    if front is not None:
        _wake_front(front, butex, nosignal)
        return 1
    bthread_waiters, pthread_waiters = [], []
    with butex.waiter_lock:
        while butex.waiters and (n == 0 or len(bthread_waiters) + len(pthread_waiters) < n):
            w = butex.waiters.popleft()
            w.container = None
            (pthread_waiters if w.tid == 0 else bthread_waiters).append(w)
    for pw in pthread_waiters:
        wakeup_pthread(pw)
    if not bthread_waiters:
        return len(pthread_waiters)
    rt = bthread_waiters[0].task_meta.runtime
    for w in reversed(bthread_waiters[1:]):
        _wake_bthread_waiter(rt, w, butex, nosignal=True, exchange=False)
    if len(bthread_waiters) > 1 and not nosignal:
        rt._flush_signals()
    _wake_bthread_waiter(rt, bthread_waiters[0], butex, nosignal, exchange=True)
    return len(bthread_waiters) + len(pthread_waiters)


def butex_wake_all(butex: Butex, nosignal: bool = False) -> int:
    """Wake every waiter; returns how many. brpc: src/bthread/butex.cpp, butex_wake_all"""
    return butex_wake_n(butex, 0, nosignal)


def butex_wake_except(butex: Butex, excluded_tid: int) -> int:
    """Wake every waiter but bthread ``excluded_tid``; never switches. Returns how many.

    brpc: src/bthread/butex.cpp, butex_wake_except
    """
    if not isinstance(butex, Butex):
        _check_butex(butex)
    with butex.waiter_lock:
        waiters = butex.waiters
        if not waiters:
            return 0
        if len(waiters) == 1 and waiters[0].tid != 0 and waiters[0].tid != excluded_tid:
            w = waiters.popleft()     # the common case: one joiner, a bthread
            w.container = None
            single = w
        else:
            single = None
    if single is not None:
        rt = single.task_meta.runtime
        _wake_bthread_waiter(rt, single, butex, nosignal=True, exchange=False)
        rt._flush_signals()
        return 1
    bthread_waiters, pthread_waiters = [], []
    with butex.waiter_lock:
        kept = deque()
        while butex.waiters:
            w = butex.waiters.popleft()
            if w.tid != 0 and w.tid == excluded_tid:
                kept.append(w)
                continue
            w.container = None
            (pthread_waiters if w.tid == 0 else bthread_waiters).append(w)
        butex.waiters = kept
    for pw in pthread_waiters:
        wakeup_pthread(pw)
    if bthread_waiters:
        rt = bthread_waiters[0].task_meta.runtime
        for w in bthread_waiters:
            _wake_bthread_waiter(rt, w, butex, nosignal=True, exchange=False)
        rt._flush_signals()
    return len(bthread_waiters) + len(pthread_waiters)


# ---------------------------------------------------------------------------------------------
# waiting


def erase_from_butex(bw: ButexWaiter, wakeup: bool, state: int) -> bool:
    """Take a waiter off its butex (timeout, interrupt); True if this caller took it.

    brpc: src/bthread/butex.cpp, erase_from_butex

    Exactly one of a waker, the timer and an interrupter wins the waiter.
    """
    erased = False
    while True:
        b = bw.container
        if b is None:
            break
        with b.waiter_lock:
            if bw.container is b:
                b.waiters.remove(bw)
                bw.container = None
                if bw.tid:
                    bw.waiter_state = state
                erased = True
                break
    if erased and wakeup:
        if bw.tid:
            rt = bw.task_meta.runtime
            rt._emit("wake", bw.task_meta, "timed out" if state == WAITER_STATE_TIMEDOUT else "interrupted")
            _run_woken_bthread(rt, bw.task_meta, nosignal=False, exchange=False)
        else:
            wakeup_pthread(bw)
    return erased


def erase_from_butex_and_wakeup(bbw: ButexBthreadWaiter) -> None:
    """TimerThread callback of a timed ``butex_wait``. brpc: butex.cpp, erase_from_butex_and_wakeup"""
    erase_from_butex(bbw, True, WAITER_STATE_TIMEDOUT)


def wait_for_butex(bbw: ButexBthreadWaiter) -> None:
    """Remained callback: enqueue a bthread that has just switched out, or requeue it.

    brpc: src/bthread/butex.cpp, wait_for_butex

    Runs on the next context of the worker, under ``waiter_lock``, after re-checking the value.
    """
    b = bbw.initial_butex
    meta = bbw.task_meta
    rt = meta.runtime
    with b.waiter_lock:
        if b.value != bbw.expected_value:
            bbw.waiter_state = WAITER_STATE_UNMATCHEDVALUE
        elif bbw.waiter_state == WAITER_STATE_READY and not meta.interrupted:
            if bbw.prepend:
                b.waiters.appendleft(bbw)
            else:
                b.waiters.append(bbw)
            bbw.container = b
            if bbw.abstime is not None:
                bbw.sleep_id = rt.timer_thread.schedule(erase_from_butex_and_wakeup, bbw, bbw.abstime)
                if not bbw.sleep_id:
                    b.waiters.remove(bbw)
                    bbw.container = None
                    bbw.waiter_state = WAITER_STATE_TIMEDOUT
                else:
                    if rt._instruments:
                        rt._emit("suspend", meta, f"on {b.owner or 'butex'} value={b.value}")
                    return
            else:
                if rt._instruments:
                    rt._emit("suspend", meta, f"on {b.owner or 'butex'} value={b.value}")
                return
    # the value changed (or we were interrupted) before we could sleep: run again soon
    tls_task_group().ready_to_run(meta)


def butex_wait(butex: Butex, expected_value: int, timeout_us: int | None = None,
               prepend: bool = False, abstime_us: int | None = None) -> int:
    """Sleep while ``butex.value == expected_value``, until woken, interrupted or timed out.

    brpc: src/bthread/butex.cpp, butex_wait

    Returns 0 when woken, EWOULDBLOCK when the value differs (on entry or on the re-check under
    the lock), ETIMEDOUT after ``timeout_us`` microseconds (or at ``abstime_us`` of the runtime's
    clock), EINTR when interrupted. Works from a bthread (suspends only the bthread) and from any
    other code (blocks that thread, through a ButexPthreadWaiter).
    """
    if not isinstance(butex, Butex):
        _check_butex(butex)
    if not isinstance(expected_value, int):
        raise TypeError(f"expected_value must be an int, got {type(expected_value).__name__}")
    if timeout_us is not None and abstime_us is not None:
        raise ValueError("pass timeout_us or abstime_us, not both")
    if butex.value != expected_value:
        return EWOULDBLOCK
    g = _tls.group
    rt = g.runtime if g is not None else current_runtime()
    if timeout_us is not None:
        if timeout_us < 0:
            raise ValueError(f"timeout_us must be >= 0, got {timeout_us}")
        abstime_us = rt.gettimeofday_us() + timeout_us
    if g is None or g._cur_meta.is_main:
        return _butex_wait_from_pthread(rt, butex, expected_value, abstime_us, prepend)
    if abstime_us is not None and abstime_us - rt.gettimeofday_us() < MIN_SLEEP_US:
        return ETIMEDOUT
    meta = g._cur_meta
    bbw = ButexBthreadWaiter(meta, expected_value, butex, abstime_us, prepend)
    meta.current_waiter = bbw
    g.set_remained(wait_for_butex, bbw)
    g = g.sched()
    # resumed, maybe on another group (deterministic mode)
    if bbw.sleep_id:
        _settle_timer(bbw, rt)
    meta.current_waiter = None
    if bbw.waiter_state == WAITER_STATE_TIMEDOUT:
        return ETIMEDOUT
    if bbw.waiter_state == WAITER_STATE_UNMATCHEDVALUE:
        return EWOULDBLOCK
    if meta.interrupted:
        meta.interrupted = False
        return EINTR        # bthread_stop too: only bthread_usleep tells ESTOP apart (brpc: bthread.h)
    return 0


def _butex_wait_from_pthread(rt, butex, expected_value, abstime_us, prepend) -> int:
    """brpc: src/bthread/butex.cpp, butex_wait_from_pthread + wait_pthread"""
    pw = ButexPthreadWaiter(rt._pthread_name())
    with butex.waiter_lock:
        if butex.value != expected_value:
            return EWOULDBLOCK
        if prepend:
            butex.waiters.appendleft(pw)
        else:
            butex.waiters.append(pw)
        pw.container = butex
    if rt._instruments:
        rt._emit("pthread_block", None, f"{pw.name} on {butex.owner or 'butex'} value={butex.value}")
    try:
        woken = rt._pthread_wait(pw, abstime_us)
    except BaseException:
        # The wait was abandoned (deterministic mode: DeadlockError, a call from the wrong OS
        # thread, a simulated pthread ended at close). Take the waiter off the list: left there,
        # it took the next butex_wake for nobody and a real waiter behind it slept on.
        erase_from_butex(pw, False, WAITER_STATE_TIMEDOUT)
        raise
    if woken:
        return 0
    # deadline passed: take ourselves off the list, unless a waker already did
    if erase_from_butex(pw, False, WAITER_STATE_TIMEDOUT):
        return ETIMEDOUT
    rt._pthread_wait(pw, None)  # a waker got there first and is about to set sig
    return 0
