"""ParkingLot: where idle workers sleep until a task is signalled.

brpc: src/bthread/parking_lot.h, ParkingLot

brpc's is one futex word, ``_pending_signal``: bit 0 means stopped, the other bits count signals.
The no-lost-wakeup pattern is: read the state, scan every queue for work, then wait *only if the
state is still what was read*. A signal that lands after the scan changes the word, so the wait
returns at once. Python has no futex, so the same integer sits under a ``threading.Condition``;
the compare-then-sleep rule is unchanged.
"""
from __future__ import annotations

import itertools
import threading


class ParkingLot:
    """A futex-like word that idle workers wait on."""

    def __init__(self):
        # the word: a fresh value from an atomic counter for every signal (itertools.count's
        # next() cannot be interrupted by a thread switch), so a signal always leaves a value no
        # worker can have read before it, even when two signals race; bit 0 is kept apart.
        self._numbers = itertools.count(1)
        self._pending_signal = 0
        self._stop_bit = 0
        self._cond = threading.Condition(threading.Lock())
        self.nwaiters = 0

    def signal(self, num_task: int) -> int:
        """Add ``num_task`` signals and wake up to that many sleepers; returns how many slept.

        No lock when nobody sleeps (the common case: every worker busy): a sleeper counts itself
        in ``nwaiters`` *before* it compares the word, and a signaller changes the word *before* it
        reads ``nwaiters``, so either the signaller sees the sleeper or the sleeper sees the new
        word. brpc's futex_wake makes the same check in the kernel."""
        self._pending_signal = next(self._numbers) << 1
        if not self.nwaiters:
            return 0
        with self._cond:
            woken = min(num_task, self.nwaiters)
            if woken:
                # Like futex_wake, count only sleepers not woken yet: a notified worker leaves
                # ``nwaiters`` now, not when it gets the lock back; counted until then it would
                # absorb later signals and signal_task would stop before waking the next sleeper.
                self.nwaiters -= woken
                self._cond.notify(woken)
            return woken

    def get_state(self) -> int:
        return self._pending_signal | self._stop_bit

    @staticmethod
    def stopped(state: int) -> bool:
        return bool(state & 1)

    def wait(self, expected_state: int, timeout: float | None = None) -> None:
        """Sleep unless the word has changed since ``expected_state`` was read."""
        with self._cond:
            self.nwaiters += 1          # counted first, compared second: see signal()
            if self.get_state() != expected_state:
                self.nwaiters -= 1
                return
            notified = False
            try:
                notified = self._cond.wait(timeout)
            finally:
                if not notified and self.nwaiters > 0:
                    self.nwaiters -= 1

    def stop(self) -> None:
        with self._cond:
            self._stop_bit = 1
            self.nwaiters = 0
            self._cond.notify_all()
