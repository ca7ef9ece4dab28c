"""Determinism and the trace: a seed reproduces a schedule byte for byte; stealing shows in it."""
from __future__ import annotations

import re

import pytest

from brpc_mini.bthread import (
    Runtime, Trace, TraceEvent, bthread_id_create, bthread_id_lock, bthread_id_unlock,
    bthread_id_unlock_and_destroy, bthread_join, bthread_start_background, bthread_start_urgent,
    bthread_timer_add, bthread_usleep, bthread_yield, butex_create, butex_wait, butex_wake_all,
    gettimeofday_us,
)


def _workload(seed: int, switch_budget: int = 1) -> Runtime:
    """A mixed workload: starts from main (random groups), starts from bthreads (stealable _rq),
    yields, sleeps, a butex barrier, a contended Id and a timer. Returns the closed runtime."""
    rt = Runtime(concurrency=4, mode="deterministic", seed=seed, switch_budget=switch_budget)
    with rt:
        gate = butex_create(0, owner="gate")
        cid = bthread_id_create(data="shared")
        arrived = []

        def leaf(i):
            if i % 2:
                bthread_yield()
            else:
                bthread_usleep(50 * (i + 1))

        def worker(i):
            kids = [bthread_start_background(leaf, i * 10 + k) for k in range(3)]
            if i % 3 == 0:
                kids.append(bthread_start_urgent(leaf, i))
            bthread_id_lock(cid)
            bthread_yield()                    # hold the Id across a switch: others contend
            bthread_id_unlock(cid)
            arrived.append(i)
            if len(arrived) == 6:
                gate.value = 1
                butex_wake_all(gate)
            while gate.value == 0:
                butex_wait(gate, 0)
            for kid in kids:
                bthread_join(kid)

        bthread_timer_add(lambda arg: bthread_start_background(leaf, 99), gettimeofday_us() + 300)
        tids = [bthread_start_background(worker, i) for i in range(6)]
        for tid in tids:
            bthread_join(tid)
        rt.run()
        bthread_id_lock(cid)
        bthread_id_unlock_and_destroy(cid)
    assert rt.errors == [] and rt.unfinished == []
    return rt


def test_same_seed_gives_the_identical_trace():
    first = _workload(seed=42)
    second = _workload(seed=42)
    text = first.trace.format()
    assert len(first.trace) > 200
    assert text == second.trace.format()
    assert [(e.kind, e.bthread, e.group, e.detail, e.now_us) for e in first.trace] == \
           [(e.kind, e.bthread, e.group, e.detail, e.now_us) for e in second.trace]


def test_same_seed_gives_the_identical_trace_with_a_bigger_switch_budget():
    first = _workload(seed=5, switch_budget=4).trace.format()
    assert first == _workload(seed=5, switch_budget=4).trace.format()


def test_a_different_seed_gives_a_different_trace():
    assert _workload(seed=42).trace.format() != _workload(seed=43).trace.format()


def test_stealing_is_visible_in_the_trace():
    rt = _workload(seed=42)
    steals = rt.trace.of_kind("steal")
    assert steals, "no steal in the trace"
    assert all(re.fullmatch(r"from g[1-4]\._(rq|remote_rq)", e.detail) for e in steals)
    assert all(e.group is not None and e.bthread is not None for e in steals)
    # a stolen bthread next runs on the thief
    runs_after = {}
    for e in rt.trace:
        if e.kind == "steal":
            runs_after[e.bthread] = e.group
        elif e.kind == "run" and e.bthread in runs_after:
            assert e.group == runs_after.pop(e.bthread)


def test_the_trace_uses_only_stable_labels():
    text = _workload(seed=1).trace.format()
    assert "0x" not in text and " at " not in text.replace(" at +", "")
    assert not re.search(r"\d{10,}", text), "a wall-clock time or an address leaked into the trace"


def test_trace_container_and_event_formatting():
    ev = TraceEvent(7, "run", 3, 2, "first run", 1_000_000)
    assert str(ev) == "    7  g2 run             b3    first run"
    assert str(TraceEvent(12, "clock", None, None, "+5us")) == "   12  -- clock           -     +5us"
    trace = Trace()
    assert len(trace) == 0 and trace.last_seq() == 0 and trace.format() == ""
    trace(ev)
    trace(TraceEvent(8, "end", 3, 2))
    trace.enabled = False
    trace(TraceEvent(9, "end", 4, 1))                           # ignored while disabled
    assert len(trace) == 2 and trace[0] is ev and list(trace)[1].kind == "end"
    assert trace.of_kind("end") == [trace[1]] and trace.of_kind("run", "end") == list(trace)
    assert trace.since(7) == [trace[1]] and trace.last_seq() == 8
    assert trace.format([ev]) == str(ev)
    trace.clear()
    assert len(trace) == 0


def test_trace_print(capsys):
    trace = Trace()
    trace(TraceEvent(1, "create", 1, None, "f from main"))
    trace.print()
    assert capsys.readouterr().out == "    1  -- create          b1    f from main\n"


def test_threads_mode_trace_is_opt_in_and_has_no_clock():
    with Runtime(concurrency=4, mode="threads", trace=True) as rt:
        bthread_join(bthread_start_background(lambda: None))
        kinds = [e.kind for e in rt.trace]
        assert "create" in kinds and "end" in kinds
        assert all(e.now_us is None for e in rt.trace)
    with Runtime(concurrency=4, mode="deterministic", trace=False) as rt:
        bthread_join(bthread_start_background(lambda: None))
        assert len(rt.trace) == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trace_tells_the_life_of_a_bthread_in_order(seed):
    with Runtime(concurrency=4, mode="deterministic", seed=seed) as rt:
        bthread_join(bthread_start_background(bthread_usleep, 100))
        life = [e.kind for e in rt.trace if e.bthread == 1 and e.kind in
                ("create", "push_remote_rq", "run", "sleep", "wake", "end")]
        # the timer wakes it as non-worker code: to a random group's _remote_rq
        assert life == ["create", "push_remote_rq", "run", "sleep", "wake", "push_remote_rq", "run", "end"]


def _full_queues_workload(seed: int) -> str:
    # tiny queues: the main code waits for room by driving, a bthread overflows its own _rq
    with Runtime(concurrency=4, mode="deterministic", seed=seed, runqueue_capacity=8) as rt:
        def parent():
            for tid in [bthread_start_background(bthread_yield) for _ in range(40)]:
                bthread_join(tid)

        tids = [bthread_start_background(bthread_yield) for _ in range(60)]
        tids.append(bthread_start_background(parent))
        for tid in tids:
            bthread_join(tid)
    return rt.trace.format()


def test_full_queues_keep_the_schedule_reproducible():
    assert _full_queues_workload(3) == _full_queues_workload(3)
    assert _full_queues_workload(3) != _full_queues_workload(4)
