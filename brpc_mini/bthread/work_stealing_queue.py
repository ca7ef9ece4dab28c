"""WorkStealingQueue: a group's ``_rq``.

brpc: src/bthread/work_stealing_queue.h, WorkStealingQueue

brpc's is a bounded Chase-Lev deque: only the owner pushes and pops, at the bottom (LIFO: the
newest tid first, its data is still hot in cache); thieves steal at the top (FIFO: the oldest).
CPython has no atomics, so this one is a deque under a lock with the same two ends.

Threads mode adds one rule (design section 9.2): a thief may only take a tid whose bthread has
not started yet, because a started bthread's greenlet belongs to its home OS thread. ``steal``
therefore takes a predicate and scans from the top for the first tid it accepts.

``len()`` and iteration (top to bottom, i.e. oldest first) let chapters and tests look inside.
"""
from __future__ import annotations

import threading
from collections import deque


def take_oldest(items: deque, accept) -> int:
    """Remove and return the oldest tid of ``items`` that ``accept`` allows (any, when None); 0 if
    none. The caller holds the queue's lock."""
    if not items:
        return 0
    if accept is None:
        return items.popleft()
    for i, tid in enumerate(items):
        if accept(tid):
            del items[i]
            return tid
    return 0


class BoundedTidQueue:
    """What both run queues share: a bounded deque of tids under a lock, pushed at the bottom.

    ``len()`` and iteration (top to bottom, oldest first) let chapters and tests look inside.
    """

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity!r}")
        self.capacity = capacity
        self._items = deque()
        self._lock = threading.Lock()

    def push(self, tid: int) -> bool:
        """Append at the bottom; False when full (brpc's push fails the same way)."""
        with self._lock:
            if len(self._items) >= self.capacity:
                return False
            self._items.append(tid)
            return True

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        with self._lock:
            return iter(list(self._items))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {list(self)!r}>"


class WorkStealingQueue(BoundedTidQueue):
    """Owner LIFO at the bottom, thieves FIFO at the top. Only the owner pushes."""

    def __init__(self, capacity: int = 4096):
        if capacity <= 0 or capacity & (capacity - 1):
            raise ValueError(f"capacity must be a positive power of 2, got {capacity!r}")
        super().__init__(capacity)

    def pop(self) -> int:
        """Owner only: the newest tid, or 0 when empty."""
        if not self._items:     # only the owner pushes, so "empty" cannot be undone meanwhile
            return 0
        with self._lock:
            return self._items.pop() if self._items else 0

    def steal(self, accept=None) -> int:
        """A thief's take: the oldest tid (that ``accept`` allows), or 0."""
        with self._lock:
            return take_oldest(self._items, accept)
