"""The two run queues a chapter looks inside: ``_rq`` (WorkStealingQueue) and ``_remote_rq``
(RemoteTaskQueue), and the threads-mode rule that thieves take only bthreads not started yet."""
from __future__ import annotations

import pytest

from bthread_helpers import all_workers_blocked, close_checked, wait_for
from brpc_mini.bthread import (
    Runtime, bthread_join, bthread_start_background, butex_create, butex_wait, butex_wake,
    tls_task_group,
)
from brpc_mini.bthread.remote_task_queue import RemoteTaskQueue
from brpc_mini.bthread.work_stealing_queue import WorkStealingQueue


def test_work_stealing_queue_owner_lifo_thief_fifo():
    q = WorkStealingQueue(4)
    assert q.pop() == 0 and q.steal() == 0 and len(q) == 0
    for tid in (1, 2, 3, 4):
        assert q.push(tid)
    assert not q.push(5)                                  # full: the push fails, as in brpc
    assert len(q) == 4 and list(q) == [1, 2, 3, 4]        # iteration: oldest first
    assert q.pop() == 4                                   # owner: newest
    assert q.steal() == 1                                 # thief: oldest
    assert q.steal(lambda tid: tid % 2 == 1) == 3         # first one the thief may take
    assert q.steal(lambda tid: False) == 0
    assert list(q) == [2] and "WorkStealingQueue" in repr(q)
    for bad in (0, 3, -4, 6):
        with pytest.raises(ValueError, match="power of 2"):
            WorkStealingQueue(bad)


def test_remote_task_queue_fifo():
    q = RemoteTaskQueue(3)
    assert q.pop() == 0
    assert q.push(7) and q.push(8) and q.push(9) and not q.push(10)
    assert list(q) == [7, 8, 9] and len(q) == 3
    assert q.pop(lambda tid: tid == 8) == 8
    assert q.pop() == 7 and q.pop() == 9 and q.pop() == 0
    assert "RemoteTaskQueue" in repr(q)
    with pytest.raises(ValueError, match="positive"):
        RemoteTaskQueue(0)


def test_queue_capacities_follow_the_runtime():
    with Runtime(concurrency=4, mode="deterministic", runqueue_capacity=256) as rt:
        bthread_join(bthread_start_background(lambda: None))
        g = rt.task_control._groups[0]
        assert g._rq.capacity == 256 and g._remote_rq.capacity == 128
    with Runtime(concurrency=4, mode="deterministic") as rt:
        bthread_join(bthread_start_background(lambda: None))
        g = rt.task_control._groups[0]
        assert g._rq.capacity == 4096 and g._remote_rq.capacity == 2048


def test_threads_mode_thieves_take_only_bthreads_not_started():
    # a started bthread that is runnable again sits in its home group's queue; a thief skips it
    with Runtime(concurrency=4, mode="threads", seed=2) as rt:
        b = butex_create(0)
        homes = {}

        def waiter():
            homes["before"] = tls_task_group()
            butex_wait(b, 0)
            homes["after"] = tls_task_group()

        tid = bthread_start_background(waiter)
        wait_for(lambda: len(b.waiters) == 1, what="the waiter to wait")
        meta = rt.address_meta(tid)
        home = meta.home_group
        assert home is homes["before"]
        with all_workers_blocked(rt) as groups:
            b.value = 1
            butex_wake(b)                                 # queued on its home, which is blocked
            assert tid in list(home._remote_rq)
            for g in groups:
                if g is not home:
                    assert g._accept_steal(tid) is False  # pinned: not for thieves
                    assert rt.task_control.steal_task(g) == 0
                    assert tid in list(home._remote_rq)
            assert home._accept_steal(tid) is True
        bthread_join(tid)
        assert homes["after"] is home
        close_checked(rt)


def test_deterministic_mode_any_group_may_resume_any_bthread():
    with Runtime(concurrency=4, mode="deterministic", seed=6) as rt:
        b = butex_create(0)
        groups = []

        def waiter():
            for _ in range(12):
                groups.append(tls_task_group().index)
                v = b.value
                butex_wait(b, v)

        tid = bthread_start_background(waiter)
        for k in range(12):
            rt.run_until(lambda: len(b.waiters) == 1)
            b.value += 1
            butex_wake(b)                                 # from main: a random group's _remote_rq
        bthread_join(tid)
        assert len(set(groups)) > 1                       # it migrated, as brpc's bthreads do
        assert rt.task_control._groups[0]._accept_steal is None
