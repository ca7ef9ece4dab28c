"""TimerThread through bthread_timer_add / bthread_timer_del (design section 4)."""
from __future__ import annotations

import threading
import time

import pytest

from bthread_helpers import settle, wait_for
from brpc_mini.bthread import (
    Runtime, TimerThread, bthread_join, bthread_start_background, bthread_timer_add,
    bthread_timer_del, bthread_usleep, gettimeofday_us, tls_task_group,
)
from brpc_mini.bthread.errno import EINVAL


def _run_until_fired(rt, fired, n, timeout=10.0):
    """Wait until ``n`` callbacks have recorded themselves in ``fired``."""
    settle(rt, lambda: len(fired) >= n, f"{n} timer callbacks", timeout)


def test_timer_add_returns_an_id_and_runs_the_callback_with_its_arg(rt):
    fired = []

    def callback(arg):
        fired.append((arg, gettimeofday_us(), tls_task_group(), threading.current_thread().name))

    deadline = gettimeofday_us() + 2000
    timer_id = bthread_timer_add(callback, deadline, "the arg")
    assert timer_id != 0 and timer_id >> 32 == 2                  # a Task's version starts at 2
    assert rt.timer_thread.nscheduled == 1
    _run_until_fired(rt, fired, 1)
    arg, now, group, thread_name = fired[0]
    assert arg == "the arg" and group is None                      # timer callbacks are non-worker
    assert now >= deadline
    if rt.threads_mode:
        assert thread_name == "TimerThread"
    else:
        assert now == deadline                                     # the clock jumped exactly there
        assert gettimeofday_us() == deadline
    wait_for(lambda: rt.timer_thread.nscheduled == 0, what="the timer to finish")
    assert bthread_timer_del(timer_id) == EINVAL                    # already ran


def test_timer_del_before_it_runs(rt):
    fired = []
    timer_id = bthread_timer_add(fired.append, gettimeofday_us() + 5000, "x")
    assert bthread_timer_del(timer_id) == 0
    assert bthread_timer_del(timer_id) == EINVAL                    # already removed
    assert rt.timer_thread.nscheduled == 0
    bthread_usleep(20_000)                                          # well past the deadline
    if not rt.threads_mode:
        assert rt.run() == 0                                        # nothing left to fire
    assert fired == []


def test_timer_del_of_unknown_ids(rt):
    assert bthread_timer_del(12345) == EINVAL                       # no TimerThread yet
    bthread_timer_add(lambda arg: None, gettimeofday_us() + 10_000_000)
    assert bthread_timer_del(0) == EINVAL
    assert bthread_timer_del((2 << 32) | 999) == EINVAL
    assert bthread_timer_del(4 << 32) == EINVAL                     # right slot, a later version
    with pytest.raises(TypeError, match="timer_id"):
        bthread_timer_del("1")
    rt.timer_thread.stop_and_join()                                 # the pending one is dropped at close


def test_timer_del_from_its_own_callback_says_running(rt):
    results = []
    ids = {}

    def callback(arg):
        results.append(bthread_timer_del(ids["id"]))

    ids["id"] = bthread_timer_add(callback, gettimeofday_us() + 1000)
    _run_until_fired(rt, results, 1)
    assert results == [1]


def test_callbacks_run_in_order_of_deadline(rt):
    fired = []
    base = gettimeofday_us() + (100_000 if rt.threads_mode else 0)  # threads: all scheduled long before
    offsets = {"a": 3000, "b": 1000, "c": 2000, "d": 1000, "e": 1500}

    def callback(name):
        fired.append((name, gettimeofday_us() - base))

    for name, offset in offsets.items():
        bthread_timer_add(callback, base + offset, name)
    _run_until_fired(rt, fired, 5)
    assert [name for name, _ in fired] == ["b", "d", "e", "c", "a"]  # ties keep scheduling order
    for name, elapsed in fired:
        assert elapsed >= offsets[name]
        if not rt.threads_mode:
            assert elapsed == offsets[name]


def test_a_deadline_in_the_past_fires_at_once(rt):
    fired = []
    now = gettimeofday_us()
    bthread_timer_add(fired.append, now - 5_000_000, "late")
    _run_until_fired(rt, fired, 1)
    if not rt.threads_mode:
        assert gettimeofday_us() == now                             # no need to move the clock
    assert fired == ["late"]


def test_a_callback_can_start_a_bthread(rt):
    ran = []

    def callback(arg):
        tid = bthread_start_background(ran.append, arg)
        ran.append(("started", tid != 0, tls_task_group() is None))

    bthread_timer_add(callback, gettimeofday_us() + 1000, "from timer")
    settle(rt, lambda: "from timer" in ran, "the bthread started by the timer")
    assert ran[0] == ("started", True, True)
    if not rt.threads_mode:
        pushes = [e for e in rt.trace.of_kind("push_remote_rq") if e.bthread == 1]
        assert len(pushes) == 1 and "non-worker" in pushes[0].detail


def test_a_raising_callback_is_recorded_and_the_timer_keeps_going(rt):
    fired = []

    def bad(arg):
        raise RuntimeError("boom")

    bthread_timer_add(bad, gettimeofday_us() + 1000)
    bthread_timer_add(fired.append, gettimeofday_us() + 2000, "after")
    _run_until_fired(rt, fired, 1)
    assert fired == ["after"]
    assert rt.errors == ["timer callback bad raised"]
    rt.errors.clear()


def test_a_bthread_can_add_and_delete_timers(rt):
    fired = []
    seen = {}

    def body():
        keep = bthread_timer_add(fired.append, gettimeofday_us() + 1000, "kept")
        drop = bthread_timer_add(fired.append, gettimeofday_us() + 1000, "dropped")
        seen["del"] = bthread_timer_del(drop)
        seen["ids"] = (keep, drop)

    bthread_join(bthread_start_background(body))
    _run_until_fired(rt, fired, 1)
    bthread_usleep(5000)
    assert seen["del"] == 0 and fired == ["kept"]


def test_schedule_arguments_and_refusal_after_stop(rt):
    with pytest.raises(TypeError, match="fn"):
        bthread_timer_add("not callable", gettimeofday_us() + 1000)
    with pytest.raises(TypeError, match="abstime_us"):
        bthread_timer_add(print, time.time() + 1.0)
    tt = rt.timer_thread
    assert isinstance(tt, TimerThread) and tt.threaded == rt.threads_mode
    assert tt.unschedule(0) == -1
    tt.stop_and_join()
    assert bthread_timer_add(print, gettimeofday_us() + 1000) == 0  # refused once stopping


def test_deterministic_clock_only_moves_to_deadlines():
    with Runtime(concurrency=4, mode="deterministic") as rt:
        t0 = gettimeofday_us()
        fired = []
        bthread_timer_add(lambda arg: fired.append(gettimeofday_us() - t0), t0 + 7000)
        bthread_timer_add(lambda arg: fired.append(gettimeofday_us() - t0), t0 + 250)
        assert rt.timer_thread.next_run_time() == t0 + 250
        rt.run()
        assert fired == [250, 7000]
        assert gettimeofday_us() == t0 + 7000
        clocks = [e.detail for e in rt.trace.of_kind("clock")]
        assert clocks == ["+250us", "+6750us"]
        kinds = [e.kind for e in rt.trace.of_kind("timer_add", "timer_fire")]
        assert kinds == ["timer_add"] * 2 + ["timer_fire"] * 2


def test_a_far_deadline_does_not_kill_the_timer_thread():
    """threads mode: a deadline beyond threading.TIMEOUT_MAX once overflowed Condition.wait and
    the TimerThread died silently, taking every later timer with it."""
    import threading as _threading
    from brpc_mini.bthread import Runtime, bthread_timer_add, bthread_timer_del, gettimeofday_us
    with Runtime(concurrency=4, mode="threads") as rt:
        far = bthread_timer_add(lambda arg: None, 10 ** 18)
        fired = _threading.Event()
        bthread_timer_add(lambda arg: fired.set(), gettimeofday_us() + 1000)
        assert fired.wait(5), "a near timer did not fire after a far one was added"
        assert rt.timer_thread._thread.is_alive()
        assert bthread_timer_del(far) == 0
