"""Butex: wait/wake from bthreads and plain threads, timeouts, value mismatch, wake counts,
a ping-pong across groups."""
from __future__ import annotations

import threading
import time

import pytest

from bthread_helpers import close_checked, settle, wait_for
from brpc_mini.bthread import (
    Butex, ButexBthreadWaiter, ButexPthreadWaiter, Runtime, bthread_join, bthread_self, bthread_yield,
    bthread_start_background, butex_create, butex_destroy, butex_wait, butex_wake, butex_wake_all,
    butex_wake_except, butex_wake_n, gettimeofday_us, tls_task_group,
)
from brpc_mini.bthread.errno import ETIMEDOUT, EWOULDBLOCK


# -- the object ------------------------------------------------------------------------------------

def test_butex_create_and_destroy(rt):
    b = butex_create(5, owner="test word")
    assert isinstance(b, Butex)
    assert b.value == 5 and len(b.waiters) == 0 and b.owner == "test word"
    assert b.number >= 1
    assert repr(b) == "<Butex test word value=5 waiters=0>"
    assert butex_create().value == 0
    assert butex_create().number == butex_create().number - 1    # numbered in creation order
    assert butex_destroy(b) is None
    with pytest.raises(TypeError, match="Butex"):
        butex_destroy(object())
    with pytest.raises(TypeError, match="int"):
        butex_create("0")


def test_wait_and_wake_argument_errors(rt):
    b = butex_create(0)
    with pytest.raises(TypeError, match="butex"):
        butex_wait(object(), 0)
    with pytest.raises(TypeError, match="expected_value"):
        butex_wait(b, "0")
    with pytest.raises(ValueError, match="timeout_us"):
        butex_wait(b, 0, timeout_us=-1)
    with pytest.raises(ValueError, match="not both"):
        butex_wait(b, 0, timeout_us=10, abstime_us=gettimeofday_us() + 10)
    with pytest.raises(TypeError, match="butex"):
        butex_wake(None)
    with pytest.raises(ValueError, match="n must be"):
        butex_wake_n(b, -1)
    assert len(b.waiters) == 0


# -- EWOULDBLOCK and timeouts --------------------------------------------------------------------

def test_value_mismatch_returns_ewouldblock(rt):
    b = butex_create(3)
    assert butex_wait(b, 4) == EWOULDBLOCK                      # from main
    assert butex_wait(b, 4, timeout_us=1_000_000) == EWOULDBLOCK
    seen = []
    bthread_join(bthread_start_background(lambda: seen.append(butex_wait(b, 2))))
    assert seen == [EWOULDBLOCK] and len(b.waiters) == 0


def test_value_changed_before_the_waiter_is_queued_returns_ewouldblock():
    # The waiter switches out first and is queued by the next context, after re-checking the value
    # under waiter_lock. Change the value in that gap (an instrument runs at the "run" event of the
    # next bthread, right before the switch) and the waiter must come back with EWOULDBLOCK.
    with Runtime(concurrency=4, mode="deterministic", seed=1, switch_budget=10) as rt:
        b = butex_create(0)
        seen = {}

        def other():
            seen["other ran"] = True

        def waiter():
            seen["other tid"] = bthread_start_background(other)
            seen["rc"] = butex_wait(b, 0)

        def meddle(ev):
            if ev.kind == "run" and ev.bthread == 2 and b.value == 0:
                b.value = 1

        rt.add_instrument(meddle)
        bthread_join(bthread_start_background(waiter))
        assert seen["rc"] == EWOULDBLOCK and seen["other ran"]
        assert len(b.waiters) == 0
        assert not [e for e in rt.trace.of_kind("suspend") if e.bthread == 1]


def test_timeout_in_a_bthread(rt):
    b = butex_create(0)
    seen = {}

    def waiter():
        t0 = gettimeofday_us()
        seen["rc"] = butex_wait(b, 0, timeout_us=3000)
        seen["elapsed"] = gettimeofday_us() - t0
        seen["rc_abs"] = butex_wait(b, 0, abstime_us=gettimeofday_us() + 2000)
        seen["rc0"] = butex_wait(b, 0, timeout_us=0)            # already due: no sleep at all
        seen["waiters"] = len(b.waiters)

    bthread_join(bthread_start_background(waiter))
    assert seen["rc"] == ETIMEDOUT and seen["rc_abs"] == ETIMEDOUT and seen["rc0"] == ETIMEDOUT
    assert seen["waiters"] == 0
    if rt.threads_mode:
        assert seen["elapsed"] >= 3000
    else:
        assert seen["elapsed"] == 3000


def test_timeout_from_main(rt):
    b = butex_create(0)
    t0, m0 = gettimeofday_us(), time.monotonic()
    assert butex_wait(b, 0, timeout_us=4000) == ETIMEDOUT
    if rt.threads_mode:
        assert time.monotonic() - m0 >= 0.0039
    else:
        assert gettimeofday_us() - t0 == 4000
    assert len(b.waiters) == 0
    assert butex_wait(b, 0, timeout_us=0) == ETIMEDOUT
    t1 = gettimeofday_us()
    assert butex_wait(b, 0, abstime_us=t1 + 1000) == ETIMEDOUT
    if not rt.threads_mode:
        assert gettimeofday_us() == t1 + 1000


def test_woken_before_the_timeout_returns_zero_and_cancels_the_timer(rt):
    b = butex_create(0)
    seen = {}

    def waiter():
        seen["rc"] = butex_wait(b, 0, timeout_us=10_000_000)

    tid = bthread_start_background(waiter)
    settle(rt, lambda: len(b.waiters) == 1, "the bthread to wait")
    w = b.waiters[0]
    assert isinstance(w, ButexBthreadWaiter) and w.sleep_id != 0 and w.tid == tid
    t0 = gettimeofday_us()
    b.value = 1
    assert butex_wake(b) == 1
    bthread_join(tid)
    assert seen["rc"] == 0
    assert gettimeofday_us() - t0 < 10_000_000
    assert rt.timer_thread.nscheduled == 0


# -- wake counts ----------------------------------------------------------------------------------

def _queue_waiters(rt, b, names, results, prepend_last=False):
    """Start one waiting bthread per name, in order, each queued before the next starts."""
    tids = {}
    for i, name in enumerate(names):
        prepend = prepend_last and i == len(names) - 1

        def waiter(name=name, prepend=prepend):
            results.append((name, butex_wait(b, 0, prepend=prepend)))

        tids[name] = bthread_start_background(waiter)
        settle(rt, lambda n=i + 1: len(b.waiters) == n, f"waiter {name} to queue")
    return tids


def _waiting(b, tids):
    by_tid = {tid: name for name, tid in tids.items()}
    return [by_tid[w.tid] for w in b.waiters]


def test_wake_counts_and_order(rt):
    b = butex_create(0)
    assert butex_wake(b) == 0 and butex_wake_all(b) == 0 and butex_wake_n(b, 3) == 0
    assert butex_wake_except(b, 0) == 0
    results = []
    tids = _queue_waiters(rt, b, ["w1", "w2", "w3", "w4", "w5", "w6"], results)
    assert _waiting(b, tids) == ["w1", "w2", "w3", "w4", "w5", "w6"]
    assert all(isinstance(w, ButexBthreadWaiter) and w.container is b for w in b.waiters)

    assert butex_wake(b) == 1                                   # FIFO: the first waiter
    assert _waiting(b, tids) == ["w2", "w3", "w4", "w5", "w6"]
    assert butex_wake_n(b, 2) == 2
    assert _waiting(b, tids) == ["w4", "w5", "w6"]
    assert butex_wake_except(b, tids["w5"]) == 2                # all but w5, which stays queued
    assert _waiting(b, tids) == ["w5"]
    assert butex_wake_n(b, 10) == 1                             # fewer waiters than asked
    assert butex_wake_all(b) == 0
    for tid in tids.values():
        bthread_join(tid)
    assert sorted(results) == [(f"w{i}", 0) for i in range(1, 7)]


def test_wake_n_zero_and_wake_all_wake_everyone(rt):
    b = butex_create(0)
    results = []
    tids = _queue_waiters(rt, b, ["a", "b", "c"], results)
    assert butex_wake_n(b, 0) == 3
    for tid in tids.values():
        bthread_join(tid)
    tids = _queue_waiters(rt, b, ["d", "e"], results)
    assert butex_wake_all(b) == 2
    for tid in tids.values():
        bthread_join(tid)
    assert sorted(results) == [(n, 0) for n in "abcde"]


def test_prepend_queues_at_the_head(rt):
    b = butex_create(0)
    results = []
    tids = _queue_waiters(rt, b, ["first", "second", "urgent"], results, prepend_last=True)
    assert _waiting(b, tids) == ["urgent", "first", "second"]
    assert butex_wake(b) == 1
    assert _waiting(b, tids) == ["first", "second"]
    assert butex_wake_all(b) == 2
    for tid in tids.values():
        bthread_join(tid)


def test_wake_from_a_bthread_hands_over_the_cpu():
    # deterministic mode: a wake from a bthread exchanges to the woken bthread at once
    with Runtime(concurrency=4, mode="deterministic", seed=3) as rt:
        b = butex_create(0)
        log = []

        def waiter():
            butex_wait(b, 0)
            log.append("woken runs")

        def waker():
            b.value = 1
            log.append(("woke", butex_wake(b)))
            log.append("waker continues")

        wt = bthread_start_background(waiter)
        rt.run_until(lambda: len(b.waiters) == 1)
        bthread_join(bthread_start_background(waker))
        bthread_join(wt)
        # butex_wake switched to the woken bthread before it returned to the waker
        assert log == ["woken runs", ("woke", 1), "waker continues"]
        assert [e.bthread for e in rt.trace.of_kind("suspend")] == [1]
        assert [e.bthread for e in rt.trace.of_kind("wake")] == [1]


# -- plain threads waiting, woken by bthreads ---------------------------------------------------------

def test_real_pthread_waiter_woken_by_a_bthread():
    with Runtime(concurrency=4, mode="threads", seed=1) as rt:
        b = butex_create(0)
        results = []
        t = threading.Thread(target=lambda: results.append(butex_wait(b, 0)), name="plain-waiter")
        t.start()
        try:
            wait_for(lambda: len(b.waiters) == 1, what="the plain thread to block")
            w = b.waiters[0]
            assert isinstance(w, ButexPthreadWaiter)
            assert w.tid == 0 and w.sig == 0 and w.name == "plain-waiter" and w.container is b
            assert t.is_alive() and results == []

            def waker():
                b.value = 1
                results.append(("woke", butex_wake(b)))

            bthread_join(bthread_start_background(waker))
        finally:
            t.join(10)
        assert not t.is_alive()
        assert sorted(results, key=repr) == sorted([0, ("woke", 1)], key=repr)
        assert w.sig == 1 and len(b.waiters) == 0
        close_checked(rt)


def test_real_pthread_joins_a_bthread():
    with Runtime(concurrency=4, mode="threads", seed=1) as rt:
        b = butex_create(0)
        tid = bthread_start_background(butex_wait, b, 0)
        wait_for(lambda: len(b.waiters) == 1, what="the bthread to wait")
        h = rt.start_pthread(bthread_join, tid, name="joiner")
        version_butex = rt.address_meta(tid).version_butex
        wait_for(lambda: len(version_butex.waiters) == 1, what="the joiner to block")
        assert isinstance(version_butex.waiters[0], ButexPthreadWaiter)
        assert version_butex.waiters[0].name == "joiner"
        b.value = 1
        butex_wake(b)
        assert h.join(10) == 0
        assert h.thread is not None and not h.thread.is_alive()
        close_checked(rt)


def test_simulated_pthread_waiter_woken_by_a_bthread():
    with Runtime(concurrency=4, mode="deterministic", seed=1) as rt:
        b = butex_create(0)

        def plain():
            return butex_wait(b, 0)

        h = rt.start_pthread(plain, name="main")
        rt.run_until(lambda: h.wait_pred is not None)           # step until it blocks
        assert len(b.waiters) == 1
        w = b.waiters[0]
        assert isinstance(w, ButexPthreadWaiter) and w.name == "main" and w.sig == 0
        assert rt.step() is False                                 # the world stops: nothing runs
        assert list(b.waiters) == [w] and not h.done

        def waker():
            b.value = 1
            return butex_wake(b)

        bthread_join(bthread_start_background(waker))
        assert h.join() == 0 and w.sig == 1
        kinds = [e.kind for e in rt.trace]
        assert kinds.index("pthread_block") < kinds.index("pthread_wake")


def test_simulated_pthread_joins_a_bthread():
    with Runtime(concurrency=4, mode="deterministic", seed=1) as rt:
        b = butex_create(0)
        tid = bthread_start_background(butex_wait, b, 0)
        h = rt.start_pthread(bthread_join, tid, name="joiner")
        version_butex = rt.address_meta(tid).version_butex
        rt.run_until(lambda: len(version_butex.waiters) == 1 and len(b.waiters) == 1)
        assert isinstance(version_butex.waiters[0], ButexPthreadWaiter)
        b.value = 1
        butex_wake(b)
        assert h.join() == 0


def test_main_waiter_woken_by_a_bthread(rt):
    b = butex_create(0)

    def waker():
        b.value = 7
        butex_wake_all(b)

    bthread_start_background(waker)
    assert butex_wait(b, 0) in (0, EWOULDBLOCK)       # EWOULDBLOCK if the waker was first
    assert b.value == 7


def test_wake_except_wakes_plain_thread_waiters_and_counts_them():
    with Runtime(concurrency=4, mode="deterministic", seed=2) as rt:
        b = butex_create(0)
        results = []
        handles = [rt.start_pthread(lambda: results.append(butex_wait(b, 0)), name=f"p{i}")
                   for i in range(2)]
        tid = bthread_start_background(lambda: results.append(butex_wait(b, 0)))
        rt.run_until(lambda: len(b.waiters) == 3)
        kinds = sorted(type(w).__name__ for w in b.waiters)
        assert kinds == ["ButexBthreadWaiter", "ButexPthreadWaiter", "ButexPthreadWaiter"]
        assert butex_wake_except(b, tid) == 2                     # plain threads always woken
        assert [w.tid for w in b.waiters] == [tid]
        assert butex_wake_all(b) == 1
        for h in handles:
            h.join()
        bthread_join(tid)
        assert results == [0, 0, 0]


# -- ping-pong between two groups -------------------------------------------------------------------

ROUNDS = 40


def test_butex_ping_pong_between_bthreads_on_different_groups(mode):
    with Runtime(concurrency=4, mode=mode, seed=12, trace=True) as rt:
        b = butex_create(0)        # the ball: even = ping's turn, odd = pong's
        pong_started = threading.Event()
        rounds = []                # (player, round, group index)

        def player(name, parity):
            if name == "ping" and rt.threads_mode:
                # block this worker's OS thread until pong runs: pong must start on another worker,
                # and a started bthread stays on its worker (threads mode pins it)
                pong_started.wait(10)
            if name == "pong":
                pong_started.set()
            for i in range(ROUNDS):
                while True:
                    v = b.value
                    if v % 2 == parity:
                        break
                    butex_wait(b, v)
                rounds.append((name, i, tls_task_group().index))
                b.value = v + 1
                butex_wake(b)
                # walk back to the table: without this, each wake's exchange would pull the woken
                # bthread onto the waker's group and the pair would hop from group to group together
                bthread_yield()

        ping = bthread_start_background(player, "ping", 0)
        if rt.threads_mode:
            wait_for(lambda: rt.address_meta(ping).stack is not None, what="ping to start")
        pong = bthread_start_background(player, "pong", 1)
        assert bthread_join(ping) == 0 and bthread_join(pong) == 0
        assert b.value == 2 * ROUNDS
        expected = [(("ping", "pong")[k % 2], k // 2) for k in range(2 * ROUNDS)]
        assert [(n, i) for n, i, _ in rounds] == expected
        groups_per_round = [(rounds[2 * i][2], rounds[2 * i + 1][2]) for i in range(ROUNDS)]
        assert any(p != q for p, q in groups_per_round), groups_per_round
        # the trace tells the same story (ping is b1, pong is b2)
        runs = rt.trace.of_kind("run")
        ping_groups = {e.group for e in runs if e.bthread == 1}
        pong_groups = {e.group for e in runs if e.bthread == 2}
        assert len(ping_groups | pong_groups) > 1
        if rt.threads_mode:
            assert len(ping_groups) == 1 and len(pong_groups) == 1 and ping_groups != pong_groups
        close_checked(rt)


def test_bthread_self_inside_a_waiter_record(rt):
    b = butex_create(0)
    seen = {}

    def waiter():
        seen["tid"] = bthread_self()
        butex_wait(b, 0)

    tid = bthread_start_background(waiter)
    settle(rt, lambda: len(b.waiters) == 1, "the bthread to wait")
    w = b.waiters[0]
    assert w.tid == tid == seen["tid"] and w.task_meta is rt.address_meta(tid)
    assert w.expected_value == 0 and w.initial_butex is b
    assert "expected=0" in repr(w)
    b.value = 1
    butex_wake(b)
    bthread_join(tid)
