"""TimerThread: runs callbacks at absolute deadlines of the runtime's clock.

brpc: src/bthread/timer_thread.h, src/bthread/timer_thread.cpp, TimerThread

One per runtime, made with the TaskControl. ``schedule(fn, arg, abstime_us)`` returns a TaskId
``(version << 32) | slot``; a Task's version starts at 2 (never 0). ``unschedule`` moves the
version from ``v`` to ``v + 2`` when the task has not run (returns 0), sees ``v + 1`` while the
callback runs (returns 1), and returns -1 when it already ran or the id is bad.

Threads mode: a real OS thread, not a worker, sleeping on a Condition (brpc's futex on
``_nsignals``) until the nearest deadline or a new earlier task. Callbacks run serially on it
and must be short.

Deterministic mode: no thread. The driver asks :meth:`next_run_time` and calls :meth:`run_due`
when the controlled clock reaches a deadline; callbacks run as non-worker code, as on the real
TimerThread. Ties run in scheduling order.

Explained in: notebooks/02_butex.ipynb
"""
from __future__ import annotations

import heapq
import logging
import threading
import time

from .context import set_tls_runtime, set_tls_task_group

log = logging.getLogger("brpc_mini.bthread")


class _Task:
    __slots__ = ("slot", "version", "fn", "arg", "run_time", "name")

    def __init__(self, slot):
        self.slot = slot
        self.version = 2
        self.fn = None
        self.arg = None
        self.run_time = 0
        self.name = ""


class TimerThread:
    """Schedules callbacks at absolute microseconds of ``runtime.gettimeofday_us()``."""

    def __init__(self, runtime, threaded: bool):
        self.runtime = runtime
        self.threaded = threaded
        self._tasks = []        # slot -> _Task
        self._free = []
        self._heap = []         # (run_time, order, slot, version)
        self._ndead = 0         # entries of _heap whose task was unscheduled (dropped lazily)
        self._order = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = False
        self._thread = None
        self.nscheduled = 0     # scheduled and neither run nor unscheduled yet
        if threaded:
            self._thread = threading.Thread(target=self._run, name="TimerThread", daemon=True)
            self._thread.start()

    # -- API -----------------------------------------------------------------------------------
    def schedule(self, fn, arg, abstime_us: int) -> int:
        """Run ``fn(arg)`` at ``abstime_us``; returns the TaskId, or 0 when stopping."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if not isinstance(abstime_us, int):
            raise TypeError(f"abstime_us must be an int (microseconds), got {type(abstime_us).__name__}")
        with self._lock:
            if self._stop:
                return 0
            if self._free:
                task = self._tasks[self._free.pop()]
            else:
                task = _Task(len(self._tasks))
                self._tasks.append(task)
            task.fn, task.arg, task.run_time = fn, arg, abstime_us
            task.name = getattr(fn, "__name__", "timer")
            self._order += 1
            earliest = not self._heap or abstime_us < self._heap[0][0]
            heapq.heappush(self._heap, (abstime_us, self._order, task.slot, task.version))
            self.nscheduled += 1
            task_id = (task.version << 32) | task.slot
            if earliest and self.threaded:
                self._cond.notify()
        if self.runtime._instruments:
            self.runtime._emit("timer_add", None, f"{task.name} at +{abstime_us - self.runtime.gettimeofday_us()}us")
        return task_id

    def unschedule(self, task_id: int) -> int:
        """0: removed before it ran; 1: running now; -1: already ran or bad id."""
        slot, version = task_id & 0xFFFFFFFF, task_id >> 32
        with self._lock:
            if slot >= len(self._tasks) or version == 0:
                return -1
            task = self._tasks[slot]
            if task.version == version:
                task.version += 2
                name = task.name
                task.fn = task.arg = None
                self._free.append(slot)
                self.nscheduled -= 1
                self._ndead += 1
                if self._ndead > 256 and self._ndead * 2 > len(self._heap):
                    self._compact()
            elif task.version == version + 1:
                return 1
            else:
                return -1
        if self.runtime._instruments:
            self.runtime._emit("timer_del", None, f"{name} removed before it ran")
        return 0

    # -- running -------------------------------------------------------------------------------
    def next_run_time(self):
        """Deadline of the earliest live task, or None."""
        with self._lock:
            self._drop_dead()
            return self._heap[0][0] if self._heap else None

    def _drop_dead(self):
        while self._heap:
            _, _, slot, version = self._heap[0]
            if self._tasks[slot].version == version:
                return
            heapq.heappop(self._heap)
            self._ndead -= 1

    def _compact(self):
        """Drop every unscheduled entry at once (the caller holds the lock).

        Every RPC schedules a timeout and nearly always unschedules it; left in the heap, the dead
        entries of one timeout's worth of RPCs (~10,000 a second) were popped by the TimerThread
        in one go while the RPC path waited for the lock. brpc skips unscheduled tasks when their
        time comes, too; compacting once half the heap is dead keeps that cheap here."""
        tasks = self._tasks
        self._heap = [e for e in self._heap if tasks[e[2]].version == e[3]]
        heapq.heapify(self._heap)
        self._ndead = 0

    def _take_due(self, now_us: int):
        with self._lock:
            self._drop_dead()
            if not self._heap or self._heap[0][0] > now_us:
                return None
            _, _, slot, version = heapq.heappop(self._heap)
            task = self._tasks[slot]
            task.version = version + 1          # running
            return task, version

    def _finish(self, task, version):
        with self._lock:
            task.version = version + 2
            task.fn = task.arg = None
            self._free.append(task.slot)
            self.nscheduled -= 1

    def _run_one(self, task, version):
        fn, arg = task.fn, task.arg
        if self.runtime._instruments:
            self.runtime._emit("timer_fire", None, task.name)
        try:
            fn(arg)
        except Exception:  # a timer callback must not kill the timer
            log.exception("timer callback %s raised", task.name)
            self.runtime.errors.append(f"timer callback {task.name} raised")
        finally:
            self._finish(task, version)

    def run_due(self, now_us: int, limit: int | None = None) -> int:
        """Deterministic mode: run callbacks due at ``now_us``; returns how many ran."""
        ran = 0
        while limit is None or ran < limit:
            due = self._take_due(now_us)
            if due is None:
                break
            self._run_one(*due)
            ran += 1
        return ran

    def _run(self):
        set_tls_task_group(None)
        set_tls_runtime(self.runtime)
        while True:
            with self._lock:
                if self._stop:
                    return
                self._drop_dead()
                if self._heap:
                    delay = (self._heap[0][0] - self.runtime.gettimeofday_us()) / 1e6
                else:
                    delay = None
                if delay is None or delay > 0:
                    # a very distant deadline would overflow the wait and kill this thread
                    self._cond.wait(None if delay is None else min(delay, threading.TIMEOUT_MAX))
                    continue
            due = self._take_due(self.runtime.gettimeofday_us())
            if due is not None:
                self._run_one(*due)

    def stop_and_join(self) -> None:
        with self._lock:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
