"""Runtime: one brpc process's worth of bthread machinery, in one of two modes.

brpc: none as a class. In brpc these are process-wide singletons (``g_task_control``, the global
TimerThread, the ResourcePools of TaskMeta and Id); here they belong to a runtime object so that a
test or a notebook can make a fresh world, look inside it, and throw it away.

``with Runtime(concurrency=4, mode="deterministic", seed=0) as rt:`` makes the bthread_* functions
act on ``rt``; outside any ``with``, a default runtime in threads mode is made on first use.

``mode="threads"``
    Each TaskGroup runs ``run_main_task`` on its own OS thread, as in brpc; the TimerThread is a
    real thread; a plain thread blocks on a Condition. Started bthreads are pinned to their group
    (greenlets cannot change threads).

``mode="deterministic"``
    Every group, every bthread and every "pthread" live on the one OS thread that made the runtime.
    A driver gives the groups turns, fires timers on a clock it controls, and polls I/O only when
    every group is idle. Every choice comes from ``random.Random(seed)``, so a seed gives the same
    schedule and the same trace, byte for byte. ``rt.step()`` makes one scheduling decision, so a
    chapter can stop the world between any two. A blocking call made by the program's own code
    (``bthread_join`` from the notebook, say) drives the simulation until it can return;
    ``rt.start_pthread(fn)`` makes a simulated plain thread whose blocking calls pause only it.

    ``switch_budget`` is how many bthreads one group's turn may run: with 1 (the default, the
    finest steps) a finished bthread always returns to the main task, so brpc's direct hand-over
    of a stack in ``ending_sched`` shows only with 2 or more. ``io_wait_ms`` is the real time an
    idle deterministic runtime waits for a peer outside it (a server in another process) before it
    moves its clock to the next timer: an answer slower than that meets a virtual deadline first,
    so against such peers raise it or use threads mode; peers inside (same runtime, or
    ``add_peer``) never need it.

Explained in: notebooks/01_scheduler.ipynb
"""
from __future__ import annotations

import itertools
import logging
import random
import threading
import time
import traceback
import warnings

import greenlet

from . import context
from .context import set_tls_task_group, tls_task_group
from .task_control import BTHREAD_MAX_CONCURRENCY, TaskControl
from .task_meta import BTHREAD_ATTR_NORMAL, BTHREAD_NOSIGNAL, TaskMeta, get_slot, get_version, make_tid
from .timer_thread import TimerThread
from .trace import Trace, TraceEvent

log = logging.getLogger("brpc_mini.bthread")

#: brpc's default: FLAGS_bthread_concurrency = 8 + BTHREAD_EPOLL_THREAD_NUM (1)
DEFAULT_CONCURRENCY = 9
#: brpc's FLAGS_task_group_runqueue_capacity
DEFAULT_RUNQUEUE_CAPACITY = 4096
#: where the deterministic clock starts (1 s, so that no deadline is ever 0)
DETERMINISTIC_EPOCH_US = 1_000_000


class UnfinishedBthreadWarning(RuntimeWarning):
    """A runtime was closed while some bthreads had not ended."""


class DeadlockError(RuntimeError):
    """Deterministic mode: a blocking call waits for something nothing left can do."""


class PthreadHandle:
    """A plain thread started by ``Runtime.start_pthread`` (real, or simulated)."""

    def __init__(self, runtime, fn, args, name):
        self.runtime = runtime
        self.fn = fn
        self.args = args
        self.name = name
        self.done = False
        self.result = None
        self.exception = None
        self.started = False
        self.wait_pred = None
        self.deadline = None
        self.greenlet = None
        self.thread = None

    def _body(self):
        try:
            self.result = self.fn(*self.args)
        except greenlet.GreenletExit:
            raise
        except BaseException as exc:
            self.exception = exc
            self.runtime._on_uncaught(None, exc, where=f"pthread {self.name}")
        finally:
            self.done = True

    def runnable(self, now_us: int) -> bool:
        if self.done:
            return False
        if not self.started:
            return True
        if self.wait_pred is None:
            return False
        return bool(self.wait_pred()) or (self.deadline is not None and now_us >= self.deadline)

    def join(self, timeout: float | None = None):
        """Wait until it ends (deterministic: drive the runtime); returns its result."""
        if self.runtime.threads_mode:
            self.thread.join(timeout)
        else:
            self.runtime._sim_block(lambda: self.done, None, what=f"join of pthread {self.name}")
        if self.exception is not None:
            raise self.exception
        return self.result

    def __repr__(self) -> str:
        return f"<pthread {self.name} {'done' if self.done else 'running'}>"


class Runtime:
    """A bthread world: TaskControl, TimerThread, pools of TaskMeta and Id, clock, trace."""

    def __init__(self, concurrency: int | None = None, mode: str = "threads", seed: int = 0,
                 switch_budget: int = 1, trace: bool | None = None,
                 runqueue_capacity: int = DEFAULT_RUNQUEUE_CAPACITY, io_wait_ms: float = 20.0):
        if mode not in ("threads", "deterministic"):
            raise ValueError(f"mode must be 'threads' or 'deterministic', got {mode!r}")
        if concurrency is None:
            concurrency = DEFAULT_CONCURRENCY
        if not isinstance(concurrency, int) or not 1 <= concurrency <= BTHREAD_MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be an int in [1, {BTHREAD_MAX_CONCURRENCY}], got {concurrency!r}")
        if not isinstance(switch_budget, int) or switch_budget < 1:
            raise ValueError(f"switch_budget must be an int >= 1, got {switch_budget!r}")
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.mode = mode
        self.threads_mode = mode == "threads"
        self.concurrency = concurrency
        self.seed = seed
        self.random = random.Random(seed)
        self.switch_budget = switch_budget
        self.runqueue_capacity = runqueue_capacity
        self.io_wait_ms = io_wait_ms
        self.task_control = None
        self.timer_thread = None
        self._tc_lock = threading.Lock()
        self._metas: list = []
        self._free_slots: list = []
        self._meta_lock = threading.Lock()
        self.nbthread_created = 0
        self.nbthread_live = 0
        self._butex_numbers = itertools.count(1)
        self._event_numbers = itertools.count(1)
        self._instruments: list = []
        self.trace = Trace()
        if trace is None:
            trace = not self.threads_mode
        if trace:
            self._instruments.append(self.trace)
        self._update_observed()
        self.errors: list = []
        self.unfinished: list = []
        self._now_us = DETERMINISTIC_EPOCH_US
        self._driver_greenlet = greenlet.getcurrent()
        self._driver_thread = threading.current_thread()
        self._pthreads: list = []
        self._current_pthread = None
        self._rr = 0
        self._deadlines: list = []
        self._io_sources: list = []
        self._stop_hooks: list = []
        self._nosignal_group = None
        self.ids = None                 # the Id pool, made by brpc_mini.bthread.id on first use
        self._pause_kinds: set = set()
        self.checkpoints_hit: list = []
        self.paused_at = None
        self._peers: list = []
        self.closed = False
        self._stepping = 0              # depth of _step() calls (timer callbacks run inside one)
        self._is_default = False
        self._entered = 0

    # -- context manager -----------------------------------------------------------------------
    def __enter__(self):
        self._check_open()
        context.push_runtime(self)
        self._entered += 1
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    def enter(self) -> "Runtime":
        """Make this runtime current until ``close()`` — ``with`` for a notebook, whose cells
        cannot share one ``with`` block."""
        return self.__enter__()

    def activate(self):
        """A ``with`` block in which this runtime is current, without closing it at the end."""
        runtime = self

        class _Active:
            def __enter__(self_inner):
                runtime._check_open()
                context.push_runtime(runtime)
                return runtime

            def __exit__(self_inner, *exc):
                context.pop_runtime(runtime)
                return False

        return _Active()

    def __repr__(self) -> str:
        return (f"<Runtime mode={self.mode} concurrency={self.concurrency} seed={self.seed}"
                f"{' closed' if self.closed else ''}>")

    def _check_open(self):
        if self.closed:
            raise RuntimeError("this Runtime is closed; make a new one")

    # -- clock ---------------------------------------------------------------------------------
    def gettimeofday_us(self) -> int:
        """The runtime's realtime clock in microseconds (brpc: butil::gettimeofday_us).

        Threads mode: wall-clock time. Deterministic mode: a clock that only the driver moves.
        """
        if self.threads_mode:
            return time.time_ns() // 1000
        return self._now_us

    # -- instruments ---------------------------------------------------------------------------
    def add_instrument(self, fn) -> None:
        """Call ``fn(event)`` for every :class:`TraceEvent` from now on.

        An instrument runs inside the scheduler, often between a switch and its remained callback:
        it may read anything and record what it likes, but must not block, switch or wake a
        waiter (a wake from there would try to switch and finds the remained slot taken)."""
        if not callable(fn):
            raise TypeError("an instrument must be callable with one TraceEvent")
        self._instruments.append(fn)
        self._update_observed()

    def remove_instrument(self, fn) -> None:
        self._instruments.remove(fn)
        self._update_observed()

    def _update_observed(self) -> None:
        # ``observed``: whether a checkpoint does anything. The RPC path tests it before building a
        # checkpoint's detail text, so an unwatched threads-mode runtime pays one attribute read.
        self.observed = bool(self._instruments) or not self.threads_mode

    def _emit(self, kind, meta, detail: str = "", group=None) -> None:
        if not self._instruments:
            return
        if group is None:
            group = tls_task_group()
            if group is not None and group.runtime is not self:
                group = None
        bthread = None
        if meta is not None and not meta.is_main:
            bthread = meta.seq
        ev = TraceEvent(next(self._event_numbers), kind, bthread,
                        group.index + 1 if group is not None else None, detail,
                        None if self.threads_mode else self._now_us)
        for fn in self._instruments:
            fn(ev)

    def pause_at(self, *kinds: str) -> None:
        """Deterministic mode: make a bthread that reaches a checkpoint of these kinds give up the
        CPU right there, so ``run_to`` can stop the world at that point of the RPC path.

        Only bthreads and simulated pthreads can pause. Code on the TimerThread (a backup request's
        IssueRPC, a timeout's HandleSocketFailed) runs its whole callback within one step. A paused
        bthread is runnable again at once, so the clock does not move while it is paused."""
        self._pause_kinds = set(kinds)

    def checkpoint(self, kind: str, detail: str = "") -> None:
        """A named point of the RPC path (``CallMethod``, ``IssueRPC``, ``EndRPC``...): recorded in
        the trace, and — in deterministic mode, inside a bthread, when asked with ``pause_at`` —
        a place where the bthread yields, which ends the group's turn. Pausing adds one yield to the
        schedule, nothing else."""
        self._emit(kind, self._current_meta(), detail)
        if self.threads_mode:
            return
        self.checkpoints_hit.append(kind)
        if kind in self._pause_kinds:
            g = tls_task_group()
            if g is not None and not g._cur_meta.is_main:
                from .bthread import bthread_yield
                self.paused_at = (kind, g._cur_meta.seq)
                bthread_yield()
                return
            p = self._current_pthread
            if g is None and p is not None and greenlet.getcurrent() is p.greenlet:
                # a simulated pthread: end its turn here; it is runnable again at once
                self.paused_at = (kind, p.name)
                p.wait_pred, p.deadline = (lambda: True), None
                try:
                    self._driver_greenlet.switch()
                finally:
                    p.wait_pred = None

    def _current_meta(self):
        g = tls_task_group()
        if g is None or g.runtime is not self or g._cur_meta.is_main:
            return None
        return g._cur_meta

    def run_to(self, kind: str, count: int = 1, max_steps: int = 1_000_000) -> int:
        """Deterministic mode: step until checkpoint ``kind`` has been reached ``count`` more times."""
        start = self.checkpoints_hit.count(kind)
        return self.run_until(lambda: self.checkpoints_hit.count(kind) >= start + count, max_steps)

    def _next_butex_number(self) -> int:
        return next(self._butex_numbers)

    def _on_uncaught(self, meta, exc, where=None) -> None:
        where = where or (meta.label if meta is not None else "?")
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.errors.append(f"{where}: {type(exc).__name__}: {exc}")
        log.error("uncaught exception in %s:\n%s", where, text)

    # -- TaskControl and TaskMeta pool ---------------------------------------------------------
    def get_or_new_task_control(self) -> TaskControl:
        """brpc: src/bthread/bthread.cpp, get_or_new_task_control (lazy, double-checked)."""
        tc = self.task_control
        if tc is not None:
            return tc
        with self._tc_lock:
            self._check_open()
            if self.task_control is None:
                self.timer_thread = TimerThread(self, threaded=self.threads_mode)
                tc = TaskControl(self)
                tc.init(self.concurrency)
                self.task_control = tc
                self._emit("task_control", None, f"created with {self.concurrency} TaskGroups")
        return self.task_control

    def _new_meta(self, fn, args, attr) -> TaskMeta:
        with self._meta_lock:
            if self._free_slots:
                meta = self._metas[self._free_slots.pop()]
            else:
                meta = TaskMeta(len(self._metas), self)
                self._metas.append(meta)
            self.nbthread_created += 1
            self.nbthread_live += 1
            meta.seq = self.nbthread_created
        meta.fn = fn
        meta.args = args
        meta.attr = attr
        meta.name = attr.name or getattr(fn, "__name__", "bthread")
        meta.stack = None
        meta.home_group = None
        meta.current_waiter = None
        meta.current_sleep = 0
        meta.interrupted = meta.stop = meta.about_to_quit = meta.sleep_failed = False
        meta.tid = (meta.version_butex.value << 32) | meta.slot     # make_tid
        return meta

    def _free_meta(self, meta) -> None:
        with self._meta_lock:
            self._free_slots.append(meta.slot)
            self.nbthread_live -= 1

    def address_meta(self, tid: int):
        """The TaskMeta of ``tid``'s slot (alive or not), or None. brpc: TaskGroup::address_meta"""
        slot = get_slot(tid)
        if slot < len(self._metas):
            return self._metas[slot]
        return None

    def meta_of_live(self, tid: int):
        """The TaskMeta of a live bthread, or None if ``tid`` has ended or never existed."""
        meta = self.address_meta(tid)
        if meta is None or meta.fn is None or meta.version_butex.value != get_version(tid):
            return None
        return meta

    def live_bthreads(self) -> list:
        """TaskMetas of bthreads that have not ended, in creation order."""
        return sorted((m for m in self._metas if m.fn is not None), key=lambda m: m.seq)

    def _stack_parent(self, group):
        return group._main_meta.stack if self.threads_mode else self._driver_greenlet

    def start_from_non_worker(self, fn, args, attr=BTHREAD_ATTR_NORMAL) -> int:
        """A start from code that is not a worker: a random group's ``_remote_rq``.

        brpc: src/bthread/bthread.cpp, start_from_non_worker
        """
        tc = self.get_or_new_task_control()
        nosignal = bool(attr.flags & BTHREAD_NOSIGNAL)
        if nosignal:
            if self._nosignal_group is None:
                self._nosignal_group = tc.choose_one_group()
            g = self._nosignal_group
        else:
            g = tc.choose_one_group()
        meta = self._new_meta(fn, args, attr)
        self._emit("create", meta, f"{meta.name} from {self._pthread_name()}", group=None)
        g.ready_to_run_remote(meta, nosignal)
        return meta.tid

    def _flush_signals(self) -> None:
        g = tls_task_group()
        if g is not None:
            g.flush_nosignal_tasks()

    # -- plain threads ---------------------------------------------------------------------------
    def _pthread_name(self) -> str:
        if not self.threads_mode:
            p = self._current_pthread
            return p.name if p is not None else "main"
        t = threading.current_thread()
        return "main" if t is threading.main_thread() else t.name

    def start_pthread(self, fn, *args, name: str | None = None) -> PthreadHandle:
        """Start a plain (non-worker) thread running ``fn(*args)``.

        Threads mode: a real ``threading.Thread``. Deterministic mode: a simulated thread that the
        driver runs in its turn; its blocking calls (``bthread_join``, ``butex_wait``...) wait with
        a ButexPthreadWaiter and pause only it, so a chapter can stop the world while "main" is
        blocked, as the seed's step 6 shows.
        """
        self._check_open()
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        name = name or getattr(fn, "__name__", "pthread")
        h = PthreadHandle(self, fn, args, name)
        if self.threads_mode:
            h.thread = threading.Thread(target=self._threaded_pthread_body, args=(h,), name=name, daemon=True)
            h.started = True
            h.thread.start()
        else:
            h.greenlet = greenlet.greenlet(h._body, parent=self._driver_greenlet)
            self._pthreads.append(h)
        return h

    def _threaded_pthread_body(self, h) -> None:
        context.set_tls_runtime(self)
        h._body()

    def _pthread_wait(self, pw, abstime_us) -> bool:
        """Block the calling plain thread until ``pw.sig`` is set (True) or the deadline (False)."""
        if self.threads_mode:
            while not pw.sig:
                if abstime_us is None:
                    pw.event.wait()
                else:
                    remaining = (abstime_us - self.gettimeofday_us()) / 1e6
                    if remaining <= 0:
                        return bool(pw.sig)
                    pw.event.wait(remaining)
            return True
        return self._sim_block(lambda: pw.sig, abstime_us, what=f"{pw.name} waiting on a butex")

    def _can_block_in_driver(self) -> bool:
        """Deterministic mode: may the caller wait through ``_sim_block`` without re-entering
        ``step`` (a simulated pthread, or the program's own code outside any step)?"""
        current = greenlet.getcurrent()
        p = self._current_pthread
        if p is not None and current is p.greenlet:
            return True
        return (current is self._driver_greenlet and tls_task_group() is None and not self._stepping
                and threading.current_thread() is self._driver_thread)

    def _sim_block(self, pred, abstime_us, what: str = "a blocking call") -> bool:
        """Deterministic mode: wait for ``pred()`` as a simulated pthread, or by driving."""
        if pred():
            return True
        current = greenlet.getcurrent()
        p = self._current_pthread
        if p is not None and current is p.greenlet:
            p.wait_pred, p.deadline = pred, abstime_us
            try:
                self._driver_greenlet.switch()
            finally:
                p.wait_pred = p.deadline = None
            return bool(pred())
        if threading.current_thread() is not self._driver_thread:
            raise RuntimeError("a deterministic Runtime can only be used from the thread that made it")
        if current is not self._driver_greenlet or tls_task_group() is not None:
            raise RuntimeError(f"{what}: cannot block here (inside a worker's main task); "
                               "blocking is for bthreads or for the program's own code")
        if abstime_us is not None:
            self._deadlines.append(abstime_us)
        self._check_open()
        # step() checked once for the whole wait: same thread, driver greenlet, runtime hint
        previous = context.set_tls_runtime(self)
        self._stepping += 1
        try:
            step = self._step_once     # _stepping is held for the whole wait, above
            while not pred():
                if abstime_us is not None and self._now_us >= abstime_us:
                    return False
                if not step(True, True):
                    raise DeadlockError(f"{what} can never return: every bthread is blocked, no timer "
                                        f"is pending and no I/O is expected.\n{self.describe()}")
            return True
        finally:
            self._stepping -= 1
            context.set_tls_runtime(previous)
            if abstime_us is not None:
                self._deadlines.remove(abstime_us)

    # -- the deterministic driver --------------------------------------------------------------
    def _check_driver(self):
        self._check_open()
        if self.threads_mode:
            raise RuntimeError("step()/run() drive a deterministic Runtime; this one is in threads mode")
        if threading.current_thread() is not self._driver_thread or greenlet.getcurrent() is not self._driver_greenlet:
            raise RuntimeError("step()/run() must be called by the program's own code, not from a bthread or a pthread")

    def add_peer(self, peer: "Runtime") -> None:
        """Deterministic mode: drive ``peer`` (another deterministic runtime on this thread — a
        server "in another process") whenever this runtime is idle, with its clock following ours.
        Keeps each runtime's objects and numbering its own, as two processes would."""
        if self.threads_mode or peer.threads_mode:
            raise RuntimeError("add_peer links two deterministic runtimes")
        if peer._driver_thread is not self._driver_thread:
            raise RuntimeError("a peer runtime must be made on the same thread")
        self._peers.append(peer)

    def remove_peer(self, peer: "Runtime") -> None:
        if peer in self._peers:
            self._peers.remove(peer)

    def _step_peers(self) -> bool:
        progressed = False
        for peer in self._peers:
            if peer.closed:
                continue
            peer._now_us = max(peer._now_us, self._now_us)
            previous = context.set_tls_runtime(peer)
            try:
                for _ in range(100_000):
                    if not peer._step(advance_clock=False, io_wait=False):
                        break
                    progressed = True
            finally:
                context.set_tls_runtime(previous)
        return progressed

    def step(self) -> bool:
        """Make one scheduling decision; False when there is nothing left to do.

        In order: fire one due timer; else run one runnable simulated pthread until it blocks or
        ends; else give the next group (round robin) a turn — it takes a tid from its queues or
        steals one and runs it until it gives up the CPU; else poll I/O; else move the clock to the
        next deadline.
        """
        self._check_driver()
        previous = context.set_tls_runtime(self)
        try:
            return self._step()
        finally:
            context.set_tls_runtime(previous)

    def _step(self, advance_clock: bool = True, io_wait: bool = True) -> bool:
        # counted here, not in step(): a peer's steps and close()'s drain run _step directly, and
        # code inside any of them (a timer callback) must not wait by stepping again
        self._stepping += 1
        try:
            return self._step_once(advance_clock, io_wait)
        finally:
            self._stepping -= 1

    def _step_once(self, advance_clock: bool, io_wait: bool) -> bool:
        tt = self.timer_thread
        if tt is not None and tt._heap and tt.run_due(self._now_us, limit=1):
            return True
        if self._pthreads:
            for p in self._pthreads:
                if p.runnable(self._now_us):
                    self._run_pthread(p)
                    return True
        tc = self.task_control
        if tc is not None:
            groups = tc._groups
            n = len(groups)
            for k in range(n):
                g = groups[(self._rr + k) % n]
                if self._run_turn(g):
                    self._rr = (g.index + 1) % n
                    return True
        for src in self._io_sources:
            if src.poll_ready(0):
                return True
        if self._peers and self._step_peers():
            return True
        if not advance_clock:
            return False
        candidates = [d for d in self._deadlines if d > self._now_us]
        for peer in self._peers:
            if not peer.closed and peer.timer_thread is not None:
                nxt = peer.timer_thread.next_run_time()
                if nxt is not None:
                    candidates.append(nxt)
        candidates += [p.deadline for p in self._pthreads if p.deadline is not None and not p.done]
        if tt is not None:
            nxt = tt.next_run_time()
            if nxt is not None:
                candidates.append(nxt)
        if candidates:
            target = max(min(candidates), self._now_us)
            if io_wait and self._io_sources and self.io_wait_ms > 0:
                # a peer in another process may still answer: give it a little real time
                wait_s = min(self.io_wait_ms / 1e3, (target - self._now_us) / 1e6)
                for src in self._io_sources:
                    if src.poll_ready(wait_s):
                        return True
                    wait_s = 0
            self._emit("clock", None, f"+{target - self._now_us}us")
            self._now_us = target
            return True
        if io_wait and self._io_sources and self.io_wait_ms > 0:
            for src in self._io_sources:
                if src.expects_input() and src.poll_ready(self.io_wait_ms / 1e3):
                    return True
        return False

    def _run_turn(self, g) -> bool:
        g._budget = self.switch_budget
        stack = g._main_meta.stack
        if stack is None:
            stack = g._main_meta.stack = greenlet.greenlet(g._deterministic_main, parent=self._driver_greenlet)
        tls = context._tls
        tls.group = g
        try:
            return stack.switch()
        finally:
            tls.group = None

    def _run_pthread(self, p) -> None:
        self._current_pthread = p
        try:
            if not p.started:
                p.started = True
                self._emit("pthread_start", None, p.name)
            p.greenlet.switch()
        finally:
            self._current_pthread = None
        if p.done:
            self._pthreads.remove(p)

    def run(self, max_steps: int | None = None) -> int:
        """Deterministic mode: step until nothing is left to do; returns the number of steps.

        "Nothing left" includes timers: a bthread that sleeps in a loop (a client main socket's
        HealthCheck after a failed connect retries every few seconds, forever) keeps this going
        without end, since the clock jumps straight to each timer. Use ``run_until`` or
        ``max_steps`` then."""
        n = 0
        while (max_steps is None or n < max_steps) and self.step():
            n += 1
        return n

    def run_until(self, predicate, max_steps: int = 1_000_000) -> int:
        """Deterministic mode: step until ``predicate()`` is true; returns the number of steps.

        Raises DeadlockError if the runtime runs out of work first.
        """
        n = 0
        while not predicate():
            if n >= max_steps:
                raise RuntimeError(f"predicate still false after {max_steps} steps")
            if not self.step():
                raise DeadlockError(f"nothing left to run and the predicate is still false\n{self.describe()}")
            n += 1
        return n

    # -- looking inside ------------------------------------------------------------------------
    def describe(self) -> str:
        """A short text picture of the groups, their queues and the live bthreads."""
        lines = [repr(self)]
        tc = self.task_control
        if tc is None:
            lines.append("  no TaskControl yet (no bthread started)")
        else:
            for g in tc._groups:
                cur = g._cur_meta
                lines.append(f"  {g.label}: running={'main' if cur.is_main else cur.label} "
                             f"_rq={[self._label_tid(t) for t in g._rq]} "
                             f"_remote_rq={[self._label_tid(t) for t in g._remote_rq]}")
        for m in self.live_bthreads():
            state = ("not started" if m.stack is None else "waiting" if m.current_waiter else
                     "sleeping" if m.current_sleep else "runnable/running")
            lines.append(f"  {m.label}: {state}")
        for p in self._pthreads:
            lines.append(f"  pthread {p.name}: {'blocked' if p.wait_pred else 'runnable'}")
        return "\n".join(lines)

    def _label_tid(self, tid: int) -> str:
        meta = self.address_meta(tid)
        return f"b{meta.seq}" if meta is not None else hex(tid)

    # -- stopping ------------------------------------------------------------------------------
    def add_stop_hook(self, fn) -> None:
        """Call ``fn()`` first thing in ``close()`` (servers and dispatchers stop there)."""
        self._stop_hooks.append(fn)

    def remove_stop_hook(self, fn) -> None:
        if fn in self._stop_hooks:
            self._stop_hooks.remove(fn)

    def add_io_source(self, src) -> None:
        """Deterministic mode: something the driver polls when every group is idle.

        ``src.poll_ready(timeout_s) -> bool`` wakes whoever waits for it and says whether it did;
        ``src.expects_input() -> bool`` says whether waiting real time for it makes sense.
        """
        self._io_sources.append(src)

    def remove_io_source(self, src) -> None:
        if src in self._io_sources:
            self._io_sources.remove(src)

    def _kill_stacks_of(self, group) -> None:
        """Threads mode, on a worker's own thread: end the greenlets that thread owns."""
        for meta in list(self._metas):
            if meta.stack is not None and meta.home_group is group and not meta.stack.dead:
                self._kill_greenlet(meta.stack)
        for gl in group._stack_pool:
            self._kill_greenlet(gl)
        group._stack_pool.clear()

    @staticmethod
    def _kill_greenlet(gl) -> None:
        if gl is None or gl.dead or gl is greenlet.getcurrent():
            return
        try:
            gl.throw(greenlet.GreenletExit)
        except greenlet.GreenletExit:
            pass
        except greenlet.error:
            pass
        except Exception:
            log.exception("error while ending a greenlet")

    def _drain_runnable(self, timeout_s: float = 2.0) -> None:
        """Let bthreads that can run now finish before close() reports the ones that cannot.
        Deterministic: step without moving the clock; threads: wait until every queue is empty."""
        tc = self.task_control
        if tc is None:
            return
        if not self.threads_mode:
            if (threading.current_thread() is not self._driver_thread
                    or greenlet.getcurrent() is not self._driver_greenlet or tls_task_group() is not None):
                return
            previous = context.set_tls_runtime(self)
            try:
                for _ in range(1_000_000):
                    if not self._step(advance_clock=False, io_wait=False):
                        break
            finally:
                context.set_tls_runtime(previous)
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(len(g._rq) == 0 and len(g._remote_rq) == 0 for g in tc._groups):
                return
            time.sleep(0.001)

    def close(self) -> None:
        """Stop servers and workers, end every greenlet, and report bthreads that never ended."""
        if self.closed:
            return
        previous = context.set_tls_runtime(self)
        try:
            for hook in reversed(list(self._stop_hooks)):
                try:
                    hook()
                except Exception:
                    log.exception("stop hook %r raised", hook)
        finally:
            context.set_tls_runtime(previous)
        self._stop_hooks.clear()
        self._drain_runnable()
        unfinished = [m.label for m in self.live_bthreads()]
        unfinished += [f"pthread {p.name}" for p in self._pthreads if not p.done]
        self.unfinished = unfinished
        tc = self.task_control
        stuck = []
        if self.threads_mode:
            if tc is not None:
                stuck = tc.stop_and_join()
                # Count again now that the workers have stopped: _drain_runnable waits only for
                # empty queues, so a bthread still running then (busy for a few ms) was reported
                # as "never ended" although its worker let it finish (25 closes in 30 did so).
                unfinished = [m.label for m in self.live_bthreads()]
                self.unfinished = unfinished
        else:
            on_driver = threading.current_thread() is self._driver_thread
            if on_driver:
                for m in self.live_bthreads():
                    self._kill_greenlet(m.stack)
                for p in self._pthreads:
                    self._kill_greenlet(p.greenlet)
                if tc is not None:
                    for gl in tc._stack_pool:
                        self._kill_greenlet(gl)
                    tc._stack_pool.clear()
                    for g in tc._groups:
                        self._kill_greenlet(g._main_meta.stack)
                        g._main_meta.stack = None
        if self.timer_thread is not None:
            self.timer_thread.stop_and_join()
        self.closed = True
        context.pop_runtime(self)
        if unfinished:
            warnings.warn(f"Runtime closed with {len(unfinished)} bthread(s) that never ended: "
                          f"{', '.join(unfinished[:10])}{' ...' if len(unfinished) > 10 else ''}",
                          UnfinishedBthreadWarning, stacklevel=2)
        if stuck:
            warnings.warn(f"worker threads did not stop (a bthread blocks its OS thread): {stuck}",
                          UnfinishedBthreadWarning, stacklevel=2)
