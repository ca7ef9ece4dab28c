"""Runtime: construction, the lazy TaskControl, the deterministic driver, closing, errors, context."""
from __future__ import annotations

import threading
import time

import pytest

from bthread_helpers import all_workers_blocked, close_checked, settle
from brpc_mini.bthread import (
    BthreadAttr, DeadlockError, PthreadHandle, Runtime, TaskControl, TaskGroup, TraceEvent,
    UnfinishedBthreadWarning, butex_create, butex_wait, butex_wake, bthread_getconcurrency, bthread_join,
    bthread_start_background, bthread_start_urgent, bthread_timer_add, bthread_usleep, bthread_yield,
    current_runtime, gettimeofday_us, tls_task_group,
)
from brpc_mini.bthread.errno import EINVAL
from brpc_mini.bthread.runtime import DEFAULT_CONCURRENCY, DETERMINISTIC_EPOCH_US


def _noop():
    pass


# -- construction ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, word", [
    ({"mode": "fast"}, ValueError, "mode"),
    ({"mode": None}, ValueError, "mode"),
    ({"concurrency": 0}, ValueError, "concurrency"),
    ({"concurrency": 1025}, ValueError, "concurrency"),
    ({"concurrency": "4"}, ValueError, "concurrency"),
    ({"concurrency": 4.0}, ValueError, "concurrency"),
    ({"switch_budget": 0}, ValueError, "switch_budget"),
    ({"switch_budget": -3}, ValueError, "switch_budget"),
    ({"switch_budget": 1.5}, ValueError, "switch_budget"),
    ({"seed": "x"}, TypeError, "seed"),
    ({"seed": 1.0}, TypeError, "seed"),
])
def test_bad_constructor_arguments_raise_and_name_the_argument(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        Runtime(**kwargs)


def test_defaults():
    rt = Runtime(mode="deterministic")
    assert rt.concurrency == DEFAULT_CONCURRENCY == 9
    assert rt.switch_budget == 1
    assert rt.trace is not None and rt._instruments == [rt.trace]   # deterministic: traced
    assert "deterministic" in repr(rt) and "closed" not in repr(rt)
    rt.close()
    assert "closed" in repr(rt)
    threaded = Runtime(mode="threads")
    assert threaded.threads_mode and threaded._instruments == []     # threads: trace off by default
    threaded.close()


def test_non_callable_fn_raises_type_error(rt):
    with pytest.raises(TypeError, match="fn"):
        bthread_start_background(42)
    with pytest.raises(TypeError, match="fn"):
        bthread_start_urgent(None)
    with pytest.raises(TypeError, match="fn"):
        rt.start_pthread("not a function")
    with pytest.raises(TypeError, match="attr"):
        bthread_start_background(_noop, attr={"flags": 1})
    with pytest.raises(TypeError, match="instrument"):
        rt.add_instrument(3)
    assert rt.task_control is None, "a refused start must not create the TaskControl"


def test_negative_usleep_raises(rt):
    with pytest.raises(ValueError, match="us"):
        bthread_usleep(-1)
    with pytest.raises(ValueError, match="us"):
        bthread_usleep(1.5)


# -- the lazy TaskControl ------------------------------------------------------------------------

def test_task_control_is_lazy(rt):
    threads_before = set(threading.enumerate())
    assert rt.task_control is None and rt.timer_thread is None
    butex_create(0)                          # needs no workers
    assert bthread_getconcurrency() == 4
    assert rt.task_control is None
    assert set(threading.enumerate()) == threads_before

    tid = bthread_start_background(_noop)
    tc = rt.task_control
    assert isinstance(tc, TaskControl)
    assert len(tc._groups) == 4 == tc.concurrency == bthread_getconcurrency()
    assert all(isinstance(g, TaskGroup) for g in tc._groups)
    assert [g.index for g in tc._groups] == [0, 1, 2, 3]
    assert rt.timer_thread is not None
    new = {t.name for t in set(threading.enumerate()) - threads_before}
    if rt.threads_mode:
        assert new == {"bthread_worker_1", "bthread_worker_2", "bthread_worker_3", "bthread_worker_4",
                       "TimerThread"}
    else:
        assert new == set(), "deterministic mode runs everything on the calling thread"
    assert bthread_join(tid) == 0
    assert rt.get_or_new_task_control() is tc


def test_timer_add_also_creates_the_task_control(rt):
    assert rt.task_control is None
    timer_id = bthread_timer_add(lambda arg: None, gettimeofday_us() + 10_000_000)
    assert timer_id != 0
    assert rt.task_control is not None and len(rt.task_control._groups) == 4
    from brpc_mini.bthread import bthread_timer_del
    assert bthread_timer_del(timer_id) == 0


def test_task_control_concurrency_follows_the_runtime(mode):
    with Runtime(concurrency=6, mode=mode) as rt:
        assert bthread_join(bthread_start_background(_noop)) == 0
        assert len(rt.task_control._groups) == 6
        close_checked(rt)


# -- where starts go ---------------------------------------------------------------------------

def _queues(rt):
    return [(list(g._rq), list(g._remote_rq)) for g in rt.task_control._groups]


def test_start_from_main_goes_to_some_groups_remote_rq_deterministic():
    with Runtime(concurrency=4, mode="deterministic", seed=3) as rt:
        tid = bthread_start_background(_noop)
        holders = [g for g in rt.task_control._groups if tid in list(g._remote_rq)]
        assert len(holders) == 1
        assert len(holders[0]._remote_rq) == 1
        assert all(len(g._rq) == 0 for g in rt.task_control._groups)
        assert sum(len(g._remote_rq) for g in rt.task_control._groups) == 1
        # the trace says the same: created by main, pushed to that group's _remote_rq
        push = rt.trace.of_kind("push_remote_rq")[-1]
        assert push.group == holders[0].index + 1 and push.bthread == 1
        assert "from non-worker" in push.detail
        assert bthread_join(tid) == 0
        assert all(len(g._remote_rq) == 0 for g in rt.task_control._groups)


def test_start_from_main_goes_to_some_groups_remote_rq_threads():
    with Runtime(concurrency=4, mode="threads", seed=3) as rt:
        with all_workers_blocked(rt):
            # every worker's OS thread is blocked: whatever is queued now stays queued
            tid = bthread_start_background(_noop)
            holders = [g for g in rt.task_control._groups if tid in list(g._remote_rq)]
            assert len(holders) == 1
            assert sum(len(g._remote_rq) for g in rt.task_control._groups) == 1
            assert all(len(g._rq) == 0 for g in rt.task_control._groups)
        assert bthread_join(tid) == 0
        close_checked(rt)


def test_start_from_a_bthread_goes_to_its_own_groups_rq(mode):
    with Runtime(concurrency=4, mode=mode, seed=5, trace=True) as rt:
        seen = {}

        def child():
            pass

        def parent():
            g = tls_task_group()
            seen["group"] = g
            tid = bthread_start_background(child)
            seen["tid"] = tid
            if not rt.threads_mode:
                # nothing else runs until this bthread gives up the CPU
                seen["in_own_rq"] = tid in list(g._rq)
                seen["elsewhere"] = [h.index for h in rt.task_control._groups
                                     if tid in list(h._remote_rq) or (h is not g and tid in list(h._rq))]
            bthread_join(tid)

        assert bthread_join(bthread_start_background(parent)) == 0
        pushes = [e for e in rt.trace.of_kind("push_rq", "push_remote_rq") if e.bthread == 2]
        assert [e.kind for e in pushes][:1] == ["push_rq"]
        assert pushes[0].group == seen["group"].index + 1
        if not rt.threads_mode:
            assert seen["in_own_rq"] and seen["elsewhere"] == []
        close_checked(rt)


# -- the deterministic driver ------------------------------------------------------------------

def test_step_and_run_on_an_idle_runtime():
    with Runtime(concurrency=4, mode="deterministic") as rt:
        assert rt.step() is False
        assert rt.run() == 0
        assert rt.task_control is None


def test_step_makes_one_decision_and_run_counts_steps():
    with Runtime(concurrency=4, mode="deterministic", seed=1) as rt:
        ran = []
        for i in range(3):
            bthread_start_background(ran.append, i)
        assert ran == []                       # starting runs nothing
        assert rt.step() is True
        assert len(ran) == 1                   # one turn of one group: one bthread
        n = rt.run()
        assert n >= 2 and sorted(ran) == [0, 1, 2]
        assert rt.step() is False and rt.run() == 0


def test_run_max_steps_and_run_until():
    with Runtime(concurrency=4, mode="deterministic", seed=1) as rt:
        done = []
        stop = [False]

        def spinner():
            while not stop[0]:
                bthread_yield()
            done.append("spinner")

        bthread_start_background(spinner)
        assert rt.run(max_steps=5) == 5
        assert rt.run_until(lambda: True) == 0
        with pytest.raises(RuntimeError, match="after 7 steps"):
            rt.run_until(lambda: False, max_steps=7)
        stop[0] = True
        n = rt.run_until(lambda: done == ["spinner"])
        assert n >= 1
        with pytest.raises(DeadlockError, match="predicate"):
            rt.run_until(lambda: False)


def test_step_run_and_run_until_refuse_threads_mode():
    with Runtime(concurrency=4, mode="threads") as rt:
        with pytest.raises(RuntimeError, match="deterministic"):
            rt.step()
        bthread_join(bthread_start_background(_noop))
        with pytest.raises(RuntimeError, match="deterministic"):
            rt.step()
        with pytest.raises(RuntimeError, match="deterministic"):
            rt.run()
        with pytest.raises(RuntimeError, match="deterministic"):
            rt.run_until(lambda: False)


def test_step_refuses_a_bthread():
    with Runtime(concurrency=4, mode="deterministic") as rt:
        caught = []

        def body():
            try:
                rt.step()
            except RuntimeError as exc:
                caught.append(str(exc))

        bthread_join(bthread_start_background(body))
        assert caught and "program's own code" in caught[0]


def test_step_runs_a_simulated_pthread_until_it_blocks():
    with Runtime(concurrency=4, mode="deterministic") as rt:
        b = butex_create(0)
        log = []

        def plain():
            log.append("started")
            rc = butex_wait(b, 0, timeout_us=500)
            log.append(rc)
            return "done"

        h = rt.start_pthread(plain)
        assert isinstance(h, PthreadHandle) and h.started is False
        assert rt.step() is True
        assert log == ["started"] and h.wait_pred is not None and h.deadline == rt.gettimeofday_us() + 500
        assert "blocked" in rt.describe()
        assert h.join() == "done"
        assert log == ["started", 110] and h.done and "done" in repr(h)


# -- closing -------------------------------------------------------------------------------------

def test_close_with_a_bthread_that_never_ends_warns_and_leaves_no_threads(mode):
    before = set(threading.enumerate())
    rt = Runtime(concurrency=4, mode=mode)
    with rt:
        b = butex_create(0)

        def forever():
            butex_wait(b, 0)

        tid = bthread_start_background(forever)
        settle(rt, lambda: len(b.waiters) == 1, "the bthread to wait")
        if rt.threads_mode:
            assert {t.name for t in threading.enumerate()} >= {"bthread_worker_1", "TimerThread"}
        with pytest.warns(UnfinishedBthreadWarning, match=r"bthread 1 \(forever\)"):
            rt.close()
    assert rt.closed and rt.unfinished == ["bthread 1 (forever)"]
    assert set(threading.enumerate()) == before
    assert rt.meta_of_live(tid) is not None       # it never ended; its greenlet was ended instead
    with pytest.raises(RuntimeError, match="closed"):
        with rt:
            pass
    with pytest.raises(RuntimeError, match="closed"):
        rt.start_pthread(_noop)
    rt.close()                                      # closing twice is harmless


def test_close_does_not_call_a_bthread_still_running_unfinished():
    # regression: threads mode counted the live bthreads before stopping the workers, so one that
    # was busy when close() began was reported as "never ended" although its worker finished it
    with Runtime(concurrency=4, mode="threads") as rt:
        started = threading.Event()
        done = []

        def busy():
            started.set()
            time.sleep(0.05)          # blocks its worker's OS thread for a while
            done.append(True)

        bthread_start_background(busy)
        assert started.wait(10)
        close_checked(rt)
    assert done == [True] and rt.unfinished == []


def test_close_names_an_unfinished_simulated_pthread():
    rt = Runtime(concurrency=4, mode="deterministic")
    with rt:
        b = butex_create(0)

        def stuck():
            butex_wait(b, 0)

        rt.start_pthread(stuck, name="waiter")
        rt.step()
        with pytest.warns(UnfinishedBthreadWarning, match="pthread waiter"):
            rt.close()


def test_closing_a_runtime_that_never_started_anything():
    rt = Runtime(concurrency=4, mode="threads")
    with rt:
        assert current_runtime() is rt
    assert rt.closed and rt.task_control is None and rt.unfinished == []


# -- deadlock and errors -------------------------------------------------------------------------

def test_deadlock_error_when_main_joins_a_bthread_that_waits_forever():
    rt = Runtime(concurrency=4, mode="deterministic")
    with rt:
        b = butex_create(0)

        def forever():
            butex_wait(b, 0)

        tid = bthread_start_background(forever)
        with pytest.raises(DeadlockError) as info:
            bthread_join(tid)
        text = str(info.value)
        assert "can never return" in text and "bthread 1 (forever): waiting" in text
        with pytest.raises(DeadlockError):
            butex_wait(b, 0)                        # from main, nobody left to wake it
        assert [w.tid for w in b.waiters] == [tid]  # main's abandoned waiter is not left behind
        assert len(rt.address_meta(tid).version_butex.waiters) == 0
        with pytest.warns(UnfinishedBthreadWarning, match="forever"):
            rt.close()


def test_after_a_deadlock_error_the_next_wake_reaches_a_real_waiter():
    # regression: main's waiter stayed on the butex after DeadlockError, so the next butex_wake
    # woke nobody and the bthread queued behind it slept forever
    with Runtime(concurrency=4, mode="deterministic") as rt:
        b = butex_create(0)
        with pytest.raises(DeadlockError):
            butex_wait(b, 0)
        assert len(b.waiters) == 0
        seen = []
        tid = bthread_start_background(lambda: seen.append(butex_wait(b, 0)))
        rt.run()
        b.value = 1
        assert butex_wake(b) == 1
        assert bthread_join(tid) == 0 and seen == [0]


def test_exception_in_a_bthread_is_recorded_and_the_worker_survives(rt):
    def boom():
        raise ValueError("bad input")

    tid = bthread_start_background(boom)
    assert bthread_join(tid) == 0
    assert rt.errors == ["bthread 1 (boom): ValueError: bad input"]
    # every worker still runs bthreads afterwards
    done = []
    tids = [bthread_start_background(done.append, i) for i in range(40)]
    for t in tids:
        assert bthread_join(t) == 0
    assert sorted(done) == list(range(40))
    rt.errors.clear()


def test_exception_in_a_pthread_is_recorded_and_reraised_by_join(rt):
    def plain():
        raise KeyError("k")

    h = rt.start_pthread(plain, name="plain")
    with pytest.raises(KeyError):
        h.join()
    assert rt.errors == ["pthread plain: KeyError: 'k'"]
    rt.errors.clear()


# -- context, clock, describe, instruments ---------------------------------------------------------

def test_current_runtime_and_tls_task_group(rt):
    assert current_runtime() is rt
    assert tls_task_group() is None
    seen = {}

    def body():
        seen["rt"] = current_runtime()
        seen["group"] = tls_task_group()

    bthread_join(bthread_start_background(body))
    assert seen["rt"] is rt
    assert seen["group"] in rt.task_control._groups and seen["group"].runtime is rt
    with Runtime(concurrency=4, mode="deterministic") as inner:
        assert current_runtime() is inner
    assert current_runtime() is rt


def test_activate_makes_a_runtime_current_without_closing_it():
    rt = Runtime(concurrency=4, mode="deterministic")
    with rt.activate() as active:
        assert active is rt and current_runtime() is rt
        bthread_join(bthread_start_background(_noop))
    assert not rt.closed
    with rt:
        assert current_runtime() is rt
    assert rt.closed


def test_clock(mode):
    with Runtime(concurrency=4, mode=mode) as rt:
        if rt.threads_mode:
            assert abs(gettimeofday_us() - time.time() * 1e6) < 60e6
        else:
            assert gettimeofday_us() == rt.gettimeofday_us() == DETERMINISTIC_EPOCH_US
            time.sleep(0.01)
            assert gettimeofday_us() == DETERMINISTIC_EPOCH_US   # only the driver moves it
            bthread_usleep(250)
            assert gettimeofday_us() == DETERMINISTIC_EPOCH_US + 250


def test_describe():
    with Runtime(concurrency=4, mode="deterministic") as rt:
        assert "no TaskControl yet" in rt.describe()
        bthread_start_background(_noop, attr=BthreadAttr(name="worker-a"))
        text = rt.describe()
        assert "TaskGroup 1" in text and "TaskGroup 4" in text
        assert "bthread 1 (worker-a): not started" in text
        assert "b1" in text   # queued tids are shown by label
        rt.run()
        assert "bthread 1" not in rt.describe()


def test_instruments_get_every_event(rt):
    events = []
    rt.add_instrument(events.append)
    bthread_join(bthread_start_background(_noop))
    rt.remove_instrument(events.append)
    kinds = [e.kind for e in events]
    assert all(isinstance(e, TraceEvent) for e in events)
    assert "task_control" in kinds and "create" in kinds and "run" in kinds and "end" in kinds
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs)
    n = len(events)
    bthread_join(bthread_start_background(_noop))
    assert len(events) == n


def test_join_of_a_bad_tid_type(rt):
    with pytest.raises(TypeError, match="tid"):
        bthread_join("1")
    with pytest.raises(TypeError, match="tid"):
        bthread_join(True)
    assert bthread_join(0) == EINVAL
