"""The Runtime's hooks for the chapters and the RPC layer: enter/activate, checkpoints and
pause_at/run_to, peer runtimes, stop hooks, I/O sources, and close() letting runnable bthreads end."""
from __future__ import annotations

import logging

import pytest

from bthread_helpers import close_checked, wait_for
from brpc_mini.bthread import (
    Runtime, UnfinishedBthreadWarning, bthread_join, bthread_start_background, bthread_timer_add, bthread_usleep,
    butex_create, butex_wait, butex_wake, butex_wake_all, current_runtime, gettimeofday_us,
)
from brpc_mini.bthread.runtime import DETERMINISTIC_EPOCH_US
from brpc_mini.bthread.task_meta import make_tid


def test_enter_makes_a_runtime_current_until_close(mode):
    rt = Runtime(concurrency=4, mode=mode).enter()
    try:
        assert current_runtime() is rt
        assert bthread_join(bthread_start_background(lambda: None)) == 0
    finally:
        close_checked(rt)
    assert rt.closed and current_runtime(create=False) is not rt


def test_close_lets_runnable_bthreads_finish_first():
    rt = Runtime(concurrency=4, mode="deterministic", seed=1)
    with rt:
        ran = []
        for i in range(5):
            bthread_start_background(ran.append, i)
        b = butex_create(0)
        bthread_start_background(butex_wait, b, 0)      # this one can never end
        with pytest.warns(UnfinishedBthreadWarning) as caught:
            rt.close()
    assert sorted(ran) == [0, 1, 2, 3, 4]
    assert rt.unfinished == ["bthread 6 (butex_wait)"]
    assert "bthread 6 (butex_wait)" in str(caught[0].message)


def test_stop_hooks_run_first_in_reverse_order_with_the_runtime_current(caplog):
    rt = Runtime(concurrency=4, mode="deterministic")
    calls = []

    def first():
        calls.append(("first", current_runtime() is rt, rt.closed))

    def second():
        calls.append(("second", current_runtime() is rt, rt.closed))

    def broken():
        raise RuntimeError("hook failed")

    def removed():
        calls.append("removed")

    rt.add_stop_hook(first)
    rt.add_stop_hook(broken)
    rt.add_stop_hook(second)
    rt.add_stop_hook(removed)
    rt.remove_stop_hook(removed)
    rt.remove_stop_hook(removed)                      # removing twice is harmless
    with caplog.at_level(logging.ERROR, logger="brpc_mini.bthread"):
        rt.close()                                    # a raising hook is logged, not raised
    assert calls == [("second", True, False), ("first", True, False)]
    assert "hook failed" in caplog.text
    rt.close()
    assert len(calls) == 2                            # hooks run once


class _Source:
    """A fake I/O source: ready on its n-th poll, when it wakes a waiting bthread (as the
    EventDispatcher does)."""

    def __init__(self, butex, ready_on):
        self.butex = butex
        self.ready_on = ready_on
        self.polls = []

    def poll_ready(self, timeout_s):
        self.polls.append(timeout_s)
        if len(self.polls) == self.ready_on:
            self.butex.value = 1
            butex_wake(self.butex)
            return True
        return False

    def expects_input(self):
        return True


def test_io_sources_are_polled_when_every_group_is_idle():
    with Runtime(concurrency=4, mode="deterministic", io_wait_ms=1) as rt:
        b = butex_create(0)
        seen = []
        tid = bthread_start_background(lambda: seen.append(butex_wait(b, 0)))
        rt.run()                                       # nothing else to do: the bthread waits
        src = _Source(b, ready_on=2)
        rt.add_io_source(src)
        # idle: a poll without waiting, then (input expected) one that waits io_wait_ms
        assert bthread_join(tid) == 0
        assert seen == [0] and src.polls == [0, 0.001]
        rt.remove_io_source(src)
        rt.remove_io_source(src)
        n = len(src.polls)
        rt.run()
        assert len(src.polls) == n


def test_checkpoint_pause_at_and_run_to_in_a_bthread():
    with Runtime(concurrency=4, mode="deterministic", seed=1) as rt:
        log = []

        def sender():
            log.append("before")
            rt.checkpoint("IssueRPC", "try 1")
            log.append("after")

        rt.pause_at("IssueRPC")
        tid = bthread_start_background(sender)
        assert rt.run_to("IssueRPC") >= 1
        assert log == ["before"]                       # the world stopped at the checkpoint
        assert rt.paused_at == ("IssueRPC", 1) and rt.checkpoints_hit == ["IssueRPC"]
        ev = rt.trace.of_kind("IssueRPC")[0]
        assert ev.bthread == 1 and ev.detail == "try 1"
        assert bthread_join(tid) == 0 and log == ["before", "after"]


def test_checkpoint_without_pause_and_in_a_simulated_pthread():
    with Runtime(concurrency=4, mode="deterministic", seed=1) as rt:
        log = []

        def plain():
            rt.checkpoint("CallMethod")               # not asked to pause: just recorded
            log.append("called")
            rt.checkpoint("Join")
            log.append("joined")
            return "done"

        rt.pause_at("Join")
        h = rt.start_pthread(plain, name="main-thread")
        rt.run_to("Join")
        assert log == ["called"] and rt.paused_at == ("Join", "main-thread")
        assert h.join() == "done" and log == ["called", "joined"]
        assert rt.checkpoints_hit == ["CallMethod", "Join"]
        rt.checkpoint("from main")                     # the program's own code: recorded only
        assert rt.trace.of_kind("from main")[0].bthread is None


def test_checkpoints_in_threads_mode_are_trace_events_only():
    with Runtime(concurrency=4, mode="threads", trace=True) as rt:
        rt.pause_at("EndRPC")
        bthread_join(bthread_start_background(rt.checkpoint, "EndRPC"))
        assert [e.kind for e in rt.trace.of_kind("EndRPC")] == ["EndRPC"]
        assert rt.checkpoints_hit == [] and rt.paused_at is None


def test_a_peer_runtime_is_driven_when_this_one_is_idle():
    server = Runtime(concurrency=4, mode="deterministic", seed=1, runqueue_capacity=4)
    try:
        with Runtime(concurrency=4, mode="deterministic", seed=2) as client:
            client.add_peer(server)
            log = []
            with server.activate():
                assert current_runtime() is server
                stid = bthread_start_background(log.append, "server bthread")

                def burst(arg):
                    # a timer callback of the peer, inside the client's step: starts more
                    # bthreads than the peer's tiny queues hold
                    for i in range(10):
                        bthread_start_background(log.append, i)

                bthread_timer_add(burst, gettimeofday_us() + 500)
            assert current_runtime() is client
            assert bthread_usleep(1000) == 0           # the client's main code drives both
            assert log[0] == "server bthread" and sorted(log[1:]) == list(range(10))
            assert server.meta_of_live(stid) is None
            assert client.task_control is None          # each runtime keeps its own bthreads
            assert DETERMINISTIC_EPOCH_US + 500 <= server.gettimeofday_us() <= client.gettimeofday_us()
            assert client.gettimeofday_us() == DETERMINISTIC_EPOCH_US + 1000
            client.remove_peer(server)
            client.remove_peer(server)
        det, threaded = Runtime(concurrency=4, mode="deterministic"), Runtime(mode="threads")
        with pytest.raises(RuntimeError, match="deterministic"):
            det.add_peer(threaded)
        det.close()
        threaded.close()
    finally:
        close_checked(server)


def test_live_bthreads_and_meta_lookups(rt):
    b = butex_create(0)
    tids = [bthread_start_background(butex_wait, b, 0) for _ in range(3)]
    assert [m.tid for m in rt.live_bthreads()] == tids
    assert all(rt.meta_of_live(t) is rt.address_meta(t) for t in tids)
    if not rt.threads_mode:
        rt.run()
    else:
        wait_for(lambda: len(b.waiters) == 3, what="three waiters")
    b.value = 1
    assert butex_wake_all(b) == 3
    for t in tids:
        bthread_join(t)
    assert rt.live_bthreads() == []
    assert rt.address_meta(make_tid(1, 1_000_000)) is None
