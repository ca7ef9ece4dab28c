"""RemoteTaskQueue: a group's ``_remote_rq``.

brpc: src/bthread/remote_task_queue.h, RemoteTaskQueue

A bounded FIFO under a mutex. Producers are threads that are not this group's worker (the main
thread starting bthreads, the TimerThread waking a sleeper, another worker waking a waiter);
consumers are the owner, when its ``_rq`` is empty, and thieves. brpc sizes it at half the
``_rq`` capacity (2048).

As with ``_rq``, threads mode passes thieves a predicate so they only take unstarted bthreads.
"""
from __future__ import annotations

from .work_stealing_queue import BoundedTidQueue, take_oldest


class RemoteTaskQueue(BoundedTidQueue):
    """FIFO of tids pushed from outside the owning worker."""

    def __init__(self, capacity: int = 2048):
        super().__init__(capacity)

    def pop(self, accept=None) -> int:
        """The oldest tid (that ``accept`` allows), or 0."""
        if not self._items:     # brpc: RemoteTaskQueue::pop checks empty() before locking too
            return 0
        with self._lock:
            return take_oldest(self._items, accept)
