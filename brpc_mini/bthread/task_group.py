"""TaskGroup: one worker's scheduler — its two run queues, its main task, the remained slot.

brpc: src/bthread/task_group.h, src/bthread/task_group.cpp, src/bthread/task_group_inl.h

The life of a worker is ``run_main_task``: wait for a runnable tid (own ``_remote_rq``, then
stealing from every group), switch to it, and come back only when this group has nothing else to
run. A running bthread gives up the CPU through ``sched`` (next = own ``_rq`` newest first, else
steal, else the main task) and ``sched_to``; a finishing one through ``ending_sched``, which hands
its stack (here: its greenlet) to the next task when that task has none yet, as brpc reuses
stacks.

After every switch, the context that gains the CPU runs the *remained* callback the previous one
left (``set_remained``): requeueing a yielding bthread, enqueueing a butex waiter, scheduling a
sleep timer, releasing a finished bthread's TaskMeta. Each of these is only safe once the previous
bthread is completely off its stack: queued earlier, a thief could resume it while this worker
is still running on that stack.

Python differences, both forced by greenlets:

* threads mode: a greenlet belongs to the OS thread that made it, so a started bthread is pinned to
  its ``home_group``. Thieves take only tids that have not started; every wake-up of a started
  bthread is queued on its home group. brpc lets any worker resume any bthread.
* deterministic mode: all groups share one OS thread and take turns under the driver
  (``Runtime.step``); any group may resume any bthread, as in brpc. A turn ends when the group has
  switched ``switch_budget`` times or has nothing to run; its main task then hands control back to
  the driver.

Explained in: notebooks/01_scheduler.ipynb
"""
from __future__ import annotations

import logging
import time

import greenlet

from .context import _tls, set_tls_task_group, tls_task_group
from .parking_lot import ParkingLot
from .remote_task_queue import RemoteTaskQueue
from .task_meta import BTHREAD_NOSIGNAL, TaskMeta, get_slot
from .work_stealing_queue import WorkStealingQueue

log = logging.getLogger("brpc_mini.bthread")


class BthreadExit(BaseException):
    """Raised by ``bthread_exit()`` to leave the bthread's function. brpc: bthread_exit"""


def ready_to_run_in_worker(meta) -> None:
    """Remained callback: requeue the previous bthread, with a signal.

    brpc: src/bthread/task_group.cpp, TaskGroup::ready_to_run_in_worker
    """
    _tls.group.ready_to_run(meta)


def ready_to_run_in_worker_ignoresignal(meta) -> None:
    """brpc: src/bthread/task_group.cpp, TaskGroup::ready_to_run_in_worker_ignoresignal"""
    tls_task_group().ready_to_run(meta, nosignal=True)


def _release_last_context(arg) -> None:
    """Remained callback: return a finished bthread's TaskMeta (and its greenlet) for reuse.

    brpc: src/bthread/task_group.cpp, TaskGroup::_release_last_context
    """
    meta, stack = arg
    g = _tls.group
    if stack is not None:
        g._stack_pool.append(stack)
    meta.runtime._free_meta(meta)


def task_runner(meta) -> None:
    """Entry of every fresh bthread stack (a greenlet's ``run``).

    brpc: src/bthread/task_group.cpp, TaskGroup::task_runner

    Runs the remained callback left by whoever switched here, then ``fn(*args)``; at the end bumps
    ``version_butex`` (skipping 0), wakes every joiner, and leaves through ``ending_sched``, which
    may give this very greenlet to the next task — hence the loop.
    """
    from .butex import butex_wake_except
    g = tls_task_group()
    g._run_remained()
    while True:
        rt = meta.runtime
        try:
            meta.fn(*meta.args)
        except BthreadExit:
            pass
        except greenlet.GreenletExit:
            raise
        except BaseException as exc:  # a bthread's exception must not kill its worker
            rt._on_uncaught(meta, exc)
        g = _tls.group
        with meta.version_lock:
            version = meta.version_butex.value + 1
            meta.version_butex.value = version if version <= 0xFFFFFFFF else 1
        # cleared before the wake: a joiner woken on another worker must already see it ended
        meta.fn = None
        meta.args = ()
        if rt._instruments:
            rt._emit("end", meta, group=g)
        butex_wake_except(meta.version_butex, 0)
        meta = g.ending_sched(meta)


class TaskGroup:
    """One worker's run queues and scheduling state. ``index`` counts from 0; labels from 1."""

    def __init__(self, control, index: int, stack_pool: list):
        rt = control.runtime
        self.control = control
        self.runtime = rt
        self.index = index
        self._rq = WorkStealingQueue(rt.runqueue_capacity)
        self._remote_rq = RemoteTaskQueue(rt.runqueue_capacity // 2)
        self._main_meta = TaskMeta(-1, rt)
        self._main_meta.is_main = True
        self._main_meta.group_of_main = self
        self._cur_meta = self._main_meta
        self._last_context_remained = None
        self._pl = ParkingLot()
        self._last_pl_state = 0
        self._steal_seed = rt.random.randrange(1 << 30)
        self._steal_offset = control.pick_steal_offset()
        self._nswitch = 0
        self._num_nosignal = 0
        self._remote_num_nosignal = 0
        self._stack_pool = stack_pool
        self._budget = 0
        self.parked = False            # deterministic mode: its last look for work found none
        self._thread = None
        # threads mode: set while this worker's OS thread is blocked in a syscall that can be
        # interrupted (the EventDispatcher's epoll), so a bthread pinned here is not stranded
        self._wake_blocked = None
        if rt.threads_mode:
            self._accept_steal = self._unstarted_or_mine
        else:
            self._accept_steal = None

    @property
    def label(self) -> str:
        return f"TaskGroup {self.index + 1}"

    def __repr__(self) -> str:
        return f"<{self.label} _rq={list(self._rq)} _remote_rq={list(self._remote_rq)}>"

    def _unstarted_or_mine(self, tid: int) -> bool:
        meta = self.runtime._metas[get_slot(tid)]
        return meta.stack is None or meta.home_group is self

    def _meta_of(self, tid: int):
        return self.runtime._metas[get_slot(tid)]

    def current_task(self):
        """The TaskMeta running now (brpc: ``_cur_meta``)."""
        return self._cur_meta

    def is_current_pthread_task(self) -> bool:
        return self._cur_meta.is_main

    # -- queueing ------------------------------------------------------------------------------
    def _push_waiting_while_full(self, queue, name: str, tid: int) -> None:
        """Push ``tid`` onto ``queue``; while it is full, wait for it to drain.

        brpc: TaskGroup::ready_to_run / ready_to_run_remote (log, sleep 1 ms, retry forever)

        Threads mode does what brpc does: other workers drain the queue meanwhile. Deterministic
        mode cannot: every group runs on this one OS thread, so sleeping drains nothing and the
        retry loop would spin forever (it did: 10,000 bthreads started from the main code filled
        a 2048-slot ``_remote_rq`` and hung). There, code that may block (the program's own code,
        a simulated pthread) drives the runtime until the queue has room, which is what brpc's
        sleeping pusher waits for; a worker (a bthread, a remained callback, a timer callback
        inside ``step``) cannot give up its turn, so the queue grows past its capacity instead.
        """
        rt = self.runtime
        while not queue.push(tid):
            if rt.threads_mode:
                log.warning("%s: %s is full, capacity=%d", self.label, name, queue.capacity)
                time.sleep(0.001)
            elif rt._can_block_in_driver():
                rt._sim_block(lambda: len(queue) < queue.capacity, None,
                              what=f"a push to the full {name} of {self.label}")
            else:
                with queue._lock:
                    queue._items.append(tid)
                return

    def ready_to_run(self, meta, nosignal: bool = False) -> None:
        """Push onto this group's ``_rq``; the caller runs on this group.

        brpc: src/bthread/task_group.cpp, TaskGroup::ready_to_run

        Threads mode signals other workers only for a bthread that has not started: a started
        one is pinned here and nobody else could take it.
        """
        rt = self.runtime
        if not self._rq.push(meta.tid):
            self._push_waiting_while_full(self._rq, "_rq", meta.tid)
        if rt._instruments:
            rt._emit("push_rq", meta, group=self)
        if rt.threads_mode:
            if meta.stack is not None:
                pass            # started: pinned here, no other worker could take it
            elif nosignal:
                self._num_nosignal += 1
            else:
                self.control.signal_task(1 + self._num_nosignal, self)
                self._num_nosignal = 0

    def ready_to_run_remote(self, meta, nosignal: bool = False) -> None:
        """Push onto this group's ``_remote_rq`` from outside its worker.

        brpc: src/bthread/task_group.cpp, TaskGroup::ready_to_run_remote
        """
        if not self._remote_rq.push(meta.tid):
            self._push_waiting_while_full(self._remote_rq, "_remote_rq", meta.tid)
        if self.runtime._instruments:
            caller = tls_task_group()
            self.runtime._emit("push_remote_rq", meta, group=self,
                               detail=f"from {('g%d' % (caller.index + 1)) if caller else 'non-worker'}")
        if self.runtime.threads_mode:
            if meta.stack is not None:
                # pinned: only its home worker can run it, so signal that worker now, NOSIGNAL or
                # not. A NOSIGNAL push leaves its signal to a later flush, but every flush
                # (butex_wake_n/_except -> Runtime._flush_signals, bthread_flush) signals on behalf
                # of the *caller's* group, never this home group: a bthread woken that way from
                # another worker sat in this _remote_rq while its worker slept (a lost wake-up:
                # a bthread joining a child that ended on another worker hung about 1 run in 20).
                self._pl.signal(1)
                wake = self._wake_blocked
                if wake is not None:
                    wake()
            elif nosignal:
                self._remote_num_nosignal += 1
            else:
                self.control.signal_task(1 + self._remote_num_nosignal, self)
                self._remote_num_nosignal = 0

    def ready_to_run_general(self, meta, nosignal: bool = False) -> None:
        """Local push when the caller is this group's worker, else remote.

        brpc: src/bthread/task_group.cpp, TaskGroup::ready_to_run_general
        """
        if tls_task_group() is self:
            self.ready_to_run(meta, nosignal)
        else:
            self.ready_to_run_remote(meta, nosignal)

    def flush_nosignal_tasks(self) -> None:
        """Send the signals owed for NOSIGNAL pushes. brpc: TaskGroup::flush_nosignal_tasks"""
        n = self._num_nosignal + self._remote_num_nosignal
        self._num_nosignal = self._remote_num_nosignal = 0
        if n and self.runtime.threads_mode:
            self.control.signal_task(n, self)

    # -- finding work --------------------------------------------------------------------------
    def steal_task(self) -> int:
        """Own ``_remote_rq`` first, then every group through ``TaskControl.steal_task``.

        brpc: src/bthread/task_group.h, TaskGroup::steal_task
        """
        tid = self._remote_rq.pop()
        if tid:
            if self.runtime._instruments:
                self.runtime._emit("pop_remote_rq", self._meta_of(tid), group=self)
            return tid
        self._last_pl_state = self._pl.get_state()
        return self.control.steal_task(self)

    def wait_task(self) -> int:
        """Threads mode: find a tid or sleep on the parking lot; 0 when stopping.

        brpc: src/bthread/task_group.cpp, TaskGroup::wait_task
        """
        while True:
            state = self._pl.get_state()
            if ParkingLot.stopped(state):
                return 0
            tid = self.steal_task()
            if tid:
                return tid
            self._pl.wait(state)

    def _next_to_run(self):
        """What ``sched`` and ``ending_sched`` switch to: ``_rq`` (newest), a steal, or main."""
        if not self.runtime.threads_mode:
            if self._budget <= 0:
                return self._main_meta
        tid = self._rq.pop()
        if tid:
            meta = self.runtime._metas[tid & 0xFFFFFFFF]     # _meta_of, inlined: hot path
            if self.runtime._instruments:
                self.runtime._emit("pop_rq", meta, group=self)
        else:
            tid = self.steal_task()
            if not tid:
                return self._main_meta
            meta = self.runtime._metas[tid & 0xFFFFFFFF]
        self._budget -= 1
        return meta

    # -- switching -----------------------------------------------------------------------------
    def set_remained(self, fn, arg) -> None:
        """Leave ``fn(arg)`` for the next context to run right after the switch.

        brpc: src/bthread/task_group.h, TaskGroup::set_remained
        """
        if self._last_context_remained is not None:
            raise RuntimeError(f"{self.label}: a remained callback is already pending")
        self._last_context_remained = (fn, arg)

    def _run_remained(self) -> None:
        while self._last_context_remained is not None:
            fn, arg = self._last_context_remained
            self._last_context_remained = None
            fn(arg)

    def _new_stack(self):
        if self._stack_pool:
            return self._stack_pool.pop()
        return greenlet.greenlet(task_runner, parent=self.runtime._stack_parent(self))

    def sched(self):
        """The running bthread gives up the CPU. Returns the group it resumes on.

        brpc: src/bthread/task_group.cpp, TaskGroup::sched
        """
        return self.sched_to(self._next_to_run())

    def sched_to(self, next_meta):
        """Switch to ``next_meta``; on return, run remained callbacks and return the group.

        brpc: src/bthread/task_group.cpp, TaskGroup::sched_to

        The group returned may differ from ``self`` in deterministic mode: a bthread queued and
        stolen resumes on the thief (brpc re-reads ``tls_task_group`` here for the same reason).
        """
        if next_meta is not self._cur_meta:
            self._nswitch += 1
            self._cur_meta = next_meta
            stack = next_meta.stack
            if stack is None:
                stack = self._new_stack()
                next_meta.stack = stack
                next_meta.home_group = self
                if self.runtime._instruments:
                    self.runtime._emit("run", next_meta, group=self, detail="first run")
                stack.switch(next_meta)
            else:
                if not next_meta.is_main and self.runtime._instruments:
                    self.runtime._emit("run", next_meta, group=self)
                stack.switch()
        g = _tls.group
        if g._last_context_remained is not None:
            g._run_remained()
        return g

    def ending_sched(self, ending_meta):
        """Leave a finished bthread; returns the next TaskMeta to run on this same greenlet.

        brpc: src/bthread/task_group.cpp, TaskGroup::ending_sched

        If the next task has no stack yet it takes this one (no switch at all); otherwise this
        greenlet parks in the pool, and the switch "returns" only when the pool hands it a new task.
        """
        next_meta = self._next_to_run()
        current = greenlet.getcurrent()
        ending_meta.stack = None
        self._nswitch += 1
        if not next_meta.is_main and next_meta.stack is None:
            next_meta.stack = current
            next_meta.home_group = self
            self.set_remained(_release_last_context, (ending_meta, None))
            self._cur_meta = next_meta
            if self.runtime._instruments:
                self.runtime._emit("run", next_meta, group=self,
                                   detail=f"first run, reusing the stack of b{ending_meta.seq}")
            self._run_remained()
            return next_meta
        self.set_remained(_release_last_context, (ending_meta, current))
        ending_meta = None
        self._cur_meta = next_meta
        if not next_meta.is_main and self.runtime._instruments:
            self.runtime._emit("run", next_meta, group=self)
        new_meta = next_meta.stack.switch()
        # this greenlet was taken from the pool by sched_to, which passed the task to run
        g = _tls.group
        if g._last_context_remained is not None:
            g._run_remained()
        return new_meta

    def exchange(self, next_meta) -> None:
        """Run an existing runnable bthread now; requeue the caller.

        brpc: src/bthread/task_group_inl.h, TaskGroup::exchange
        """
        cur = self._cur_meta
        if cur.is_main:
            self.ready_to_run(next_meta)
            return
        if cur.about_to_quit:
            self.set_remained(ready_to_run_in_worker_ignoresignal, cur)
        else:
            self.set_remained(ready_to_run_in_worker, cur)
        self.sched_to(next_meta)

    def start_foreground(self, meta) -> None:
        """``bthread_start_urgent`` in a worker: run the new bthread now, requeue the caller.

        brpc: src/bthread/task_group.cpp, TaskGroup::start_foreground
        """
        cur = self._cur_meta
        if cur.is_main:
            self.ready_to_run(meta)
            return
        nosignal = bool(meta.attr.flags & BTHREAD_NOSIGNAL)
        if cur.about_to_quit or nosignal:
            self.set_remained(ready_to_run_in_worker_ignoresignal, cur)
        else:
            self.set_remained(ready_to_run_in_worker, cur)
        self.sched_to(meta)

    # -- the worker loop -----------------------------------------------------------------------
    def run_main_task(self) -> None:
        """Threads mode worker loop: wait for a tid, switch to it, repeat until stopped.

        brpc: src/bthread/task_group.cpp, TaskGroup::run_main_task
        """
        while True:
            tid = self.wait_task()
            if not tid:
                return
            self.sched_to(self._meta_of(tid))

    def _deterministic_main(self) -> None:
        """Deterministic mode: the main task runs one turn each time the driver switches here.

        A turn finds one tid (own ``_rq`` newest first — what ``sched`` would have taken before
        the budget ran out — then ``_remote_rq``, then stealing) and runs it; the bthreads' own
        ``sched`` calls continue while the budget lasts. Then control goes back to the driver with
        True, or False when nothing was found.
        """
        driver = self.runtime._driver_greenlet
        while True:
            tid = self._rq.pop()
            if tid:
                if self.runtime._instruments:
                    self.runtime._emit("pop_rq", self._meta_of(tid), group=self)
            else:
                tid = self.steal_task()
            if not tid:
                self.parked = True
                driver.switch(False)
                continue
            self.parked = False
            self._budget -= 1
            self.sched_to(self._meta_of(tid))
            driver.switch(True)

    def _worker_thread_main(self) -> None:
        """Threads mode: body of this group's OS thread."""
        set_tls_task_group(self)
        self._main_meta.stack = greenlet.getcurrent()
        try:
            self.run_main_task()
        finally:
            self.runtime._kill_stacks_of(self)
            set_tls_task_group(None)
