"""Threads mode: wake-ups that must reach the worker a bthread is pinned to.

Regression tests for two lost wake-ups found while writing this suite (see the comments in
TaskGroup.ready_to_run_remote and ParkingLot.signal). Each waits with a bound and then fails,
instead of hanging, if a wake-up is lost.
"""
from __future__ import annotations

import threading
import time

import pytest

from bthread_helpers import all_workers_blocked, close_checked, wait_for
from brpc_mini.bthread import (
    Runtime, bthread_join, bthread_start_background, butex_create, butex_wait, butex_wake,
    butex_wake_all, butex_wake_except, butex_wake_n,
)
from brpc_mini.bthread.parking_lot import ParkingLot

BOUND_S = 10.0


def _join_within(rt, tids, bound=BOUND_S) -> bool:
    """Join ``tids`` from a plain thread; False if that takes longer than ``bound`` (a lost
    wake-up). On failure, wake every worker so the runtime can still be closed."""
    done = threading.Event()
    h = rt.start_pthread(lambda: ([bthread_join(t) for t in tids], done.set()), name="bounded-joiner")
    ok = done.wait(bound)
    if not ok:
        for g in rt.task_control._groups:
            g._pl.signal(1)
    h.join(bound)
    return ok


def _parked(rt):
    return all(g._pl.nwaiters == 1 for g in rt.task_control._groups)


@pytest.mark.parametrize("wake", ["wake_except", "wake_all", "wake_n", "wake_nosignal"])
def test_a_wake_from_a_non_worker_reaches_the_pinned_bthreads_parked_worker(wake):
    # butex_wake_except / wake_n queue all but (at most) one woken bthread without a signal and
    # then flush the *caller's* group; from the main code there is none, and the woken bthreads'
    # home workers slept on. (A bthread joining a child that ended on another worker hit the same
    # path through the end-of-bthread butex_wake_except: 1 run in ~20 of the 10,000 test hung.)
    with Runtime(concurrency=4, mode="threads", seed=1) as rt:
        b = butex_create(0)
        tids = [bthread_start_background(butex_wait, b, 0) for _ in range(3)]
        wait_for(lambda: len(b.waiters) == 3, what="three waiters")
        wait_for(lambda: _parked(rt), what="every worker to park")
        b.value = 1
        if wake == "wake_except":
            assert butex_wake_except(b, 0) == 3
        elif wake == "wake_all":
            assert butex_wake_all(b) == 3
        elif wake == "wake_n":
            assert butex_wake_n(b, 3) == 3
        else:
            assert sum(butex_wake(b, nosignal=True) for _ in range(3)) == 3
        assert _join_within(rt, tids), "a woken bthread was never run: its worker was not told"
        close_checked(rt)


def test_a_joiner_is_woken_when_its_target_ends_on_another_worker():
    with Runtime(concurrency=4, mode="threads", seed=1) as rt:
        for _ in range(30):
            gate = butex_create(0)
            results = []

            def target():
                butex_wait(gate, 0)

            def joiner(tid):
                results.append(bthread_join(tid))

            tid = bthread_start_background(target)
            joiners = [bthread_start_background(joiner, tid) for _ in range(3)]
            version_butex = rt.address_meta(tid).version_butex
            wait_for(lambda: len(gate.waiters) == 1 and len(version_butex.waiters) == 3,
                     what="the target and its joiners to wait")
            gate.value = 1
            butex_wake(gate)
            assert _join_within(rt, joiners), "a joiner was never woken"
            assert results == [0, 0, 0]
        close_checked(rt)


def test_parking_lot_signal_counts_only_sleepers_not_woken_yet():
    # A notified worker used to stay in nwaiters until it got the lock back, so a second signal
    # "woke" it again and signal_task stopped there: the next sleeping worker was never told.
    lot = ParkingLot()
    state = lot.get_state()
    t = threading.Thread(target=lot.wait, args=(state,), name="sleeper")
    t.start()
    try:
        wait_for(lambda: lot.nwaiters == 1, what="the sleeper to sleep")
        assert lot.signal(1) == 1
        assert lot.signal(1) == 0          # nobody left asleep, whether or not it has run yet
    finally:
        t.join(BOUND_S)
    assert not t.is_alive() and lot.nwaiters == 0
    assert lot.get_state() != state         # the signals changed the word: a scan-then-wait returns


def test_parking_lot_wait_returns_at_once_if_the_word_changed():
    lot = ParkingLot()
    state = lot.get_state()
    lot.signal(1)
    t0 = time.monotonic()
    lot.wait(state)                          # changed since read: no sleep at all
    lot.wait(lot.get_state(), timeout=0.01)  # unchanged: sleeps until the timeout
    assert time.monotonic() - t0 >= 0.009
    assert lot.nwaiters == 0
    lot.stop()
    assert ParkingLot.stopped(lot.get_state())
    lot.wait(lot.get_state(), timeout=0.01)


@pytest.mark.parametrize("concurrency", [4, 8])
def test_as_many_blocking_bthreads_as_workers_all_run(concurrency):
    # each blocker blocks its worker's OS thread: every worker must be told about one of them
    with Runtime(concurrency=concurrency, mode="threads", seed=3) as rt:
        for _ in range(5):
            with all_workers_blocked(rt) as groups:
                assert sorted(g.index for g in groups) == list(range(concurrency))
        close_checked(rt)
