"""TaskControl: the runtime's one owner of all TaskGroups, their workers and parking lots.

brpc: src/bthread/task_control.h, src/bthread/task_control.cpp; src/bthread/bthread.cpp,
get_or_new_task_control

Created lazily, by the first call that needs workers (``bthread_start_*`` from a non-worker,
``bthread_timer_add``): ``Runtime.get_or_new_task_control``. ``init(n)`` starts the TimerThread
and ``n`` groups (in threads mode, one OS thread each running ``run_main_task``).

``choose_one_group`` is how a non-worker picks where a new bthread goes (uniformly random, from
the runtime's seeded generator). ``steal_task`` is how an idle group finds work: starting at its
``_steal_seed`` it visits every group once with stride ``_steal_offset`` — a prime larger than
any group count, so coprime with it — trying ``_rq.steal`` then ``_remote_rq.pop``.
``signal_task`` wakes at most 2 sleeping workers.

Python difference: brpc shares 4 parking lots among the workers; here each group has its own, so
that a wake-up of a bthread pinned to one worker (threads mode) reaches that worker.

Explained in: notebooks/01_scheduler.ipynb
"""
from __future__ import annotations

import threading
import time

from .task_group import TaskGroup

#: bounds on the number of groups (brpc: BTHREAD_MIN_CONCURRENCY, BTHREAD_MAX_CONCURRENCY)
BTHREAD_MIN_CONCURRENCY = 4
BTHREAD_MAX_CONCURRENCY = 1024

_STEAL_PRIMES = None


def _steal_primes():
    """Primes in brpc's range for steal offsets (src/bthread/offset_inl.list: 36809..41579)."""
    global _STEAL_PRIMES
    if _STEAL_PRIMES is None:
        lo, hi = 36809, 41579
        sieve = bytearray([1]) * (hi + 1)
        sieve[0:2] = b"\x00\x00"
        for i in range(2, int(hi ** 0.5) + 1):
            if sieve[i]:
                sieve[i * i::i] = bytearray(len(sieve[i * i::i]))
        _STEAL_PRIMES = [p for p in range(lo, hi + 1) if sieve[p]]
    return _STEAL_PRIMES


class TaskControl:
    """Owns the groups (``_groups``), picks targets, steals, signals."""

    def __init__(self, runtime):
        self.runtime = runtime
        self._groups: list = []
        self._modify_group_mutex = threading.Lock()
        self._stack_pool: list = []       # deterministic mode: one OS thread, one pool
        self._stopped = False

    @property
    def concurrency(self) -> int:
        return len(self._groups)

    def pick_steal_offset(self) -> int:
        primes = _steal_primes()
        return primes[self.runtime.random.randrange(len(primes))]

    def init(self, concurrency: int) -> None:
        """Make ``concurrency`` groups; in threads mode start a worker thread for each.

        brpc: src/bthread/task_control.cpp, TaskControl::init
        """
        self.add_workers(concurrency)

    def add_workers(self, n: int) -> None:
        """brpc: src/bthread/task_control.cpp, TaskControl::add_workers"""
        rt = self.runtime
        for _ in range(n):
            with self._modify_group_mutex:
                index = len(self._groups)
                pool = [] if rt.threads_mode else self._stack_pool
                g = TaskGroup(self, index, pool)
                self._groups.append(g)
            if rt.threads_mode:
                t = threading.Thread(target=g._worker_thread_main, name=f"bthread_worker_{index + 1}",
                                     daemon=True)
                g._thread = t
                t.start()
        if rt.threads_mode:
            # brpc's init waits only until one group exists, so that choose_one_group never
            # returns null (task_control.cpp); here every worker is waited for, so that a tid
            # pushed to any group's _remote_rq has a thread behind it from the start
            for g in self._groups:
                while g._main_meta.stack is None and g._thread.is_alive():
                    time.sleep(0.0001)

    def choose_one_group(self):
        """A uniformly random group. brpc: TaskControl::choose_one_group"""
        groups = self._groups
        return groups[self.runtime.random.randrange(len(groups))]

    def steal_task(self, thief) -> int:
        """One pass over every group from the thief's seed; the first tid found, or 0.

        brpc: src/bthread/task_control.cpp, TaskControl::steal_task
        """
        groups = self._groups
        n = len(groups)
        seed = thief._steal_seed
        offset = thief._steal_offset
        accept = thief._accept_steal
        rt = self.runtime
        for _ in range(n):
            victim = groups[seed % n]
            seed += offset
            # peek without the lock first, as brpc's steal and RemoteTaskQueue::pop do
            tid = victim._rq.steal(accept) if victim._rq._items else 0
            where = "_rq"
            if not tid and victim._remote_rq._items:
                tid = victim._remote_rq.pop(accept)
                where = "_remote_rq"
            if tid:
                thief._steal_seed = seed
                if rt._instruments:
                    rt._emit("steal", thief._meta_of(tid), group=thief,
                             detail=f"from g{victim.index + 1}.{where}")
                return tid
        thief._steal_seed = seed
        return 0

    def signal_task(self, num_task: int, start_group) -> None:
        """Wake up to ``num_task`` (at most 2) sleeping workers. brpc: TaskControl::signal_task

        Every lot visited gets its word bumped, so a worker between its scan and its sleep does not
        sleep (the parking lot's no-lost-wakeup rule).
        """
        if num_task <= 0:
            return
        num_task = min(num_task, 2)
        groups = self._groups
        n = len(groups)
        start = start_group.index if start_group is not None else 0
        woken = 0
        for i in range(n):
            woken += groups[(start + i) % n]._pl.signal(1)
            if woken >= num_task:
                return
        if woken == 0 and self.runtime.threads_mode:
            # Nobody was asleep to take the work. A busy worker steals it once its bthread yields;
            # but a worker blocked in an EventDispatcher's epoll (brpc's dispatcher borrows a
            # worker) is neither asleep nor busy and looks only at the next I/O event. When every
            # worker is blocked that way (concurrency=1 and a connection open), the new bthread
            # waited for ever (found by chapter 09's helper): poke one, its dispatcher yields and
            # the worker runs or steals it. Only then: under load a poke per start would cost a
            # pipe write and a wasted epoll return each time.
            for g in groups:
                if g._wake_blocked is None:
                    return          # a worker that is not in epoll will steal it
            wake = groups[start % n]._wake_blocked     # read once: it may leave epoll meanwhile
            if wake is not None:
                wake()

    def stop_and_join(self, timeout: float = 5.0) -> list:
        """Threads mode: stop every parking lot and join the workers; returns the stuck ones."""
        self._stopped = True
        for g in self._groups:
            g._pl.stop()
        stuck = []
        for g in self._groups:
            if g._thread is not None and g._thread is not threading.current_thread():
                g._thread.join(timeout)
                if g._thread.is_alive():
                    stuck.append(g.label)
        return stuck
