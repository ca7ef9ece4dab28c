"""RemoteTaskQueue: a group's ``_remote_rq``.

brpc: src/bthread/remote_task_queue.h, RemoteTaskQueue

A bounded FIFO under a mutex. Producers are threads that are not this group's worker (the main
thread starting bthreads, the TimerThread waking a sleeper, another worker waking a waiter);
consumers are the owner, when its ``_rq`` is empty, and thieves. brpc sizes it at half the
``_rq`` capacity (2048).

As with ``_rq``, threads mode passes thieves a predicate so they only take unstarted bthreads.
"""
from __future__ import annotations

import threading
from collections import deque

from .work_stealing_queue import take_oldest


class RemoteTaskQueue:
    """FIFO of tids pushed from outside the owning worker."""

    def __init__(self, capacity: int = 2048):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity!r}")
        self.capacity = capacity
        self._items = deque()
        self._lock = threading.Lock()

    def push(self, tid: int) -> bool:
        with self._lock:
            if len(self._items) >= self.capacity:
                return False
            self._items.append(tid)
            return True

    def pop(self, accept=None) -> int:
        """The oldest tid (that ``accept`` allows), or 0."""
        if not self._items:     # brpc: RemoteTaskQueue::pop checks empty() before locking too
            return 0
        with self._lock:
            return take_oldest(self._items, accept)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        with self._lock:
            return iter(list(self._items))

    def __repr__(self) -> str:
        return f"<RemoteTaskQueue {list(self)!r}>"
