"""ParkingLot: where idle workers sleep until a task is signalled.

brpc: src/bthread/parking_lot.h, ParkingLot

brpc's is one futex word, ``_pending_signal``: bit 0 means stopped, the other bits count signals.
The no-lost-wakeup pattern is: read the state, scan every queue for work, then wait *only if the
state is still what was read*. A signal that lands after the scan changes the word, so the wait
returns at once. Python has no futex, so the same integer sits under a ``threading.Condition``;
the compare-then-sleep rule is unchanged.
"""
from __future__ import annotations

import threading


class ParkingLot:
    """A futex-like word that idle workers wait on."""

    def __init__(self):
        self._pending_signal = 0
        self._cond = threading.Condition(threading.Lock())
        self.nwaiters = 0

    def signal(self, num_task: int) -> int:
        """Add ``num_task`` signals and wake up to that many sleepers; returns how many slept."""
        with self._cond:
            self._pending_signal += num_task << 1
            woken = min(num_task, self.nwaiters)
            if woken:
                # Like futex_wake, count only sleepers not woken yet: a notified worker leaves
                # ``nwaiters`` now, not when it gets the lock back. Counted until then, it was
                # "woken" by every later signal too, so signal_task stopped at its lot and the
                # next sleeping worker was never told (8 bthreads started for 8 workers left 2
                # workers asleep and 2 bthreads queued behind blocked workers).
                self.nwaiters -= woken
                self._cond.notify(woken)
            return woken

    def get_state(self) -> int:
        return self._pending_signal

    @staticmethod
    def stopped(state: int) -> bool:
        return bool(state & 1)

    def wait(self, expected_state: int, timeout: float | None = None) -> None:
        """Sleep unless the word has changed since ``expected_state`` was read."""
        with self._cond:
            if self._pending_signal != expected_state:
                return
            self.nwaiters += 1
            notified = False
            try:
                notified = self._cond.wait(timeout)
            finally:
                # timed out: still counted, so leave the count now. (A notify that raced with
                # the timeout already took this waiter off the count; never go below 0. Only
                # timed waits can race so, and the workers' waits have no timeout.)
                if not notified and self.nwaiters > 0:
                    self.nwaiters -= 1

    def stop(self) -> None:
        with self._cond:
            self._pending_signal |= 1
            self.nwaiters = 0
            self._cond.notify_all()
