"""The bthread_* functions: start, join, self, yield, usleep, urgent, concurrency, interrupt, stop,
exit, about_to_quit, flush."""
from __future__ import annotations

import threading
import time

import pytest

from bthread_helpers import all_workers_blocked, close_checked, settle, wait_for
from brpc_mini.bthread import (
    BTHREAD_ATTR_NORMAL, BTHREAD_NEVER_QUIT, BTHREAD_NOSIGNAL, ESTOP, INVALID_BTHREAD, BthreadAttr,
    Runtime, TaskMeta,
    bthread_about_to_quit, bthread_exit, bthread_flush, bthread_getconcurrency, bthread_interrupt,
    bthread_join, bthread_self, bthread_setconcurrency, bthread_start_background, bthread_start_urgent,
    bthread_stop, bthread_timer_add, bthread_usleep, bthread_yield, butex_create, butex_wait, butex_wake,
    gettimeofday_us, tls_task_group,
)
from brpc_mini.bthread.errno import EINTR, EINVAL, EPERM
from brpc_mini.bthread.task_meta import get_slot, get_version, make_tid

N_MANY = 10_000


def _noop():
    pass


# -- start and join, many ------------------------------------------------------------------------

def test_ten_thousand_bthreads_started_and_joined_from_main(rt):
    counts = [0] * N_MANY

    def body(i):
        counts[i] += 1

    tids = [bthread_start_background(body, i) for i in range(N_MANY)]
    assert len(set(tids)) == N_MANY
    for tid in tids:
        assert bthread_join(tid) == 0
    assert counts == [1] * N_MANY
    assert rt.nbthread_created == N_MANY
    settle(rt, lambda: rt.nbthread_live == 0, "every TaskMeta to be released")
    assert rt.live_bthreads() == []


def test_ten_thousand_bthreads_started_and_joined_from_a_bthread(rt):
    counts = [0] * N_MANY
    joined = []

    def body(i):
        counts[i] += 1

    def parent():
        tids = [bthread_start_background(body, i) for i in range(N_MANY)]
        joined.extend(bthread_join(tid) for tid in tids)

    assert bthread_join(bthread_start_background(parent)) == 0
    assert joined == [0] * N_MANY
    assert counts == [1] * N_MANY
    assert rt.nbthread_created == N_MANY + 1
    settle(rt, lambda: rt.nbthread_live == 0, "every TaskMeta to be released")
    # the children were spread over the groups by stealing, not all run by the parent's group
    if rt.mode == "deterministic":
        assert len({e.group for e in rt.trace.of_kind("run") if e.bthread and e.bthread > 1}) > 1


def test_deterministic_starts_overflow_full_queues_where_nobody_can_wait():
    # _rq of 4, _remote_rq of 2: a bthread (own _rq) and a timer callback (a random _remote_rq,
    # inside a step) cannot wait for a drain on the one OS thread, so the queue takes them anyway
    with Runtime(concurrency=4, mode="deterministic", seed=2, runqueue_capacity=4) as rt:
        done = []

        def parent():
            tids = [bthread_start_background(done.append, i) for i in range(20)]
            assert len(tls_task_group()._rq) > 4
            for tid in tids:
                bthread_join(tid)

        def from_timer(arg):
            for i in range(10):
                bthread_start_background(done.append, 100 + i)

        bthread_timer_add(from_timer, gettimeofday_us() + 10)
        bthread_join(bthread_start_background(parent))
        rt.run()
        assert sorted(done) == list(range(20)) + list(range(100, 110))


def test_deterministic_start_from_a_simulated_pthread_waits_for_room():
    with Runtime(concurrency=4, mode="deterministic", seed=2, runqueue_capacity=4) as rt:
        done = []

        def plain():
            tids = [bthread_start_background(done.append, i) for i in range(30)]
            return [bthread_join(tid) for tid in tids]

        assert rt.start_pthread(plain).join() == [0] * 30
        assert sorted(done) == list(range(30))


def test_deterministic_start_from_main_waits_for_room_in_a_full_remote_rq():
    # 64-slot _rq, so 32-slot _remote_rq: the main code's 500 starts overflow them many times over
    with Runtime(concurrency=4, mode="deterministic", seed=2, runqueue_capacity=64) as rt:
        done = []
        tids = [bthread_start_background(done.append, i) for i in range(500)]
        assert all(len(g._remote_rq) <= g._remote_rq.capacity for g in rt.task_control._groups)
        assert len(done) > 0, "the main code drove the runtime while the queue was full"
        for tid in tids:
            assert bthread_join(tid) == 0
        assert sorted(done) == list(range(500))


# -- bthread_join ----------------------------------------------------------------------------------

def test_join_einval_cases(rt):
    assert bthread_join(0) == EINVAL
    assert bthread_join(INVALID_BTHREAD) == EINVAL
    assert bthread_join(make_tid(1, 123_456)) == EINVAL      # a slot that never existed
    seen = {}

    def joins_itself():
        seen["self"] = bthread_join(bthread_self())

    assert bthread_join(bthread_start_background(joins_itself)) == 0
    assert seen["self"] == EINVAL


def test_join_of_a_finished_bthread_returns_at_once(rt):
    tid = bthread_start_background(_noop)
    assert bthread_join(tid) == 0
    if not rt.threads_mode:
        rt.run()
        n_events, now = len(rt.trace), gettimeofday_us()
    assert bthread_join(tid) == 0
    assert bthread_join(tid) == 0
    if not rt.threads_mode:
        assert len(rt.trace) == n_events and gettimeofday_us() == now   # no step was needed


def test_tid_version_bumps_when_the_slot_is_reused(rt):
    first = bthread_start_background(_noop)
    assert get_version(first) == 1
    assert bthread_join(first) == 0
    settle(rt, lambda: rt.nbthread_live == 0, "the slot to be released")
    b = butex_create(0)
    second = bthread_start_background(butex_wait, b, 0)
    assert get_slot(second) == get_slot(first)
    assert get_version(second) == get_version(first) + 1
    assert rt.address_meta(first) is rt.address_meta(second)
    assert rt.meta_of_live(first) is None and rt.meta_of_live(second) is not None
    # the old tid is dead even though its slot holds a live bthread
    assert bthread_join(first) == 0
    settle(rt, lambda: len(b.waiters) == 1, "the second bthread to wait")
    b.value = 1
    assert butex_wake(b) == 1
    assert bthread_join(second) == 0


def test_tid_version_skips_zero_on_wrap_around(rt):
    first = bthread_start_background(_noop)
    bthread_join(first)
    settle(rt, lambda: rt.nbthread_live == 0, "the slot to be released")
    rt.address_meta(first).version_butex.value = 0xFFFFFFFF
    last = bthread_start_background(_noop)
    assert get_slot(last) == get_slot(first) and get_version(last) == 0xFFFFFFFF
    assert bthread_join(last) == 0
    assert rt.address_meta(last).version_butex.value == 1


def test_join_from_a_bthread_waits_for_the_end(rt):
    b = butex_create(0)
    log = []

    def target():
        butex_wait(b, 0)
        log.append("target ends")

    def joiner(tid):
        log.append(("joined", bthread_join(tid)))

    tid = bthread_start_background(target)
    jt = bthread_start_background(joiner, tid)
    settle(rt, lambda: len(b.waiters) == 1 and len(rt.address_meta(tid).version_butex.waiters) == 1,
           "the target and the joiner to wait")
    assert log == []
    b.value = 1
    butex_wake(b)
    assert bthread_join(jt) == 0
    assert log == ["target ends", ("joined", 0)]


# -- bthread_self --------------------------------------------------------------------------------

def test_bthread_self(rt):
    assert bthread_self() == 0
    seen = []
    tids = [bthread_start_background(lambda: seen.append(bthread_self())) for _ in range(5)]
    for tid in tids:
        bthread_join(tid)
    assert sorted(seen) == sorted(tids)


# -- bthread_yield ---------------------------------------------------------------------------------

def test_yield_from_main_returns_zero(rt):
    assert bthread_yield() == 0


def test_yield_lets_the_next_bthread_of_the_group_run(mode):
    with Runtime(concurrency=4, mode=mode, seed=1, switch_budget=100) as rt:
        log = []

        def child():
            log.append("child")

        def parent():
            log.append("parent before")
            tid = bthread_start_background(child)
            assert bthread_yield() == 0
            log.append("parent after")
            bthread_join(tid)

        bthread_join(bthread_start_background(parent))
        assert sorted(log) == ["child", "parent after", "parent before"]
        if not rt.threads_mode:
            # the yielder goes back to _rq after it switched out; _rq pops newest first: the child
            assert log == ["parent before", "child", "parent after"]
            assert [e.bthread for e in rt.trace.of_kind("yield")] == [1]
        close_checked(rt)


# -- bthread_usleep --------------------------------------------------------------------------------

def test_usleep_in_a_bthread(rt):
    seen = {}

    def sleeper():
        t0 = gettimeofday_us()
        seen["rc"] = bthread_usleep(1500)
        seen["elapsed"] = gettimeofday_us() - t0
        seen["rc0"] = bthread_usleep(0)          # usleep(0) is a yield

    bthread_join(bthread_start_background(sleeper))
    assert seen["rc"] == 0 and seen["rc0"] == 0
    if rt.threads_mode:
        assert seen["elapsed"] >= 1500
    else:
        assert seen["elapsed"] == 1500           # the deterministic clock moves exactly
        assert [e.detail for e in rt.trace.of_kind("sleep")] == ["1500us"]


def test_usleep_from_main(rt):
    t0, m0 = gettimeofday_us(), time.monotonic()
    assert bthread_usleep(2000) == 0
    if rt.threads_mode:
        assert time.monotonic() - m0 >= 0.0019
    else:
        assert gettimeofday_us() - t0 == 2000
    assert bthread_usleep(0) == 0


def test_usleep_from_a_simulated_pthread():
    with Runtime(concurrency=4, mode="deterministic") as rt:
        def plain():
            t0 = gettimeofday_us()
            assert bthread_usleep(700) == 0
            return gettimeofday_us() - t0

        assert rt.start_pthread(plain).join() == 700


def test_sleeping_bthreads_wake_in_deadline_order(rt):
    order = []

    def sleeper(us):
        bthread_usleep(us)
        order.append(us)

    tids = [bthread_start_background(sleeper, us) for us in (30_000, 10_000, 20_000)]
    for tid in tids:
        bthread_join(tid)
    assert order == [10_000, 20_000, 30_000]


# -- bthread_start_urgent --------------------------------------------------------------------------

def test_start_urgent_runs_the_new_bthread_first(rt):
    log = []

    def child():
        log.append("child")

    def parent():
        tid = bthread_start_urgent(child)
        log.append("parent continues")
        bthread_join(tid)

    bthread_join(bthread_start_background(parent))
    assert log == ["child", "parent continues"]


def test_start_background_lets_the_caller_continue_first():
    with Runtime(concurrency=4, mode="deterministic", seed=4) as rt:
        log = []

        def parent():
            tid = bthread_start_background(log.append, "child")
            log.append("parent continues")
            bthread_join(tid)

        bthread_join(bthread_start_background(parent))
        assert log == ["parent continues", "child"]


def test_start_urgent_with_nosignal_attr_and_from_main(rt):
    log = []

    def parent():
        tid = bthread_start_urgent(log.append, "child", attr=BthreadAttr(flags=BTHREAD_NOSIGNAL))
        log.append("parent")
        bthread_join(tid)

    bthread_join(bthread_start_background(parent))
    assert log == ["child", "parent"]
    # from the main code there is no worker to run it on: it is queued like a background start
    tid = bthread_start_urgent(log.append, "from main")
    assert bthread_join(tid) == 0 and log[-1] == "from main"


# -- concurrency -------------------------------------------------------------------------------------

def test_setconcurrency_arguments(rt):
    assert bthread_setconcurrency(3) == EINVAL
    assert bthread_setconcurrency(0) == EINVAL
    assert bthread_setconcurrency(1025) == EINVAL
    with pytest.raises(TypeError, match="num"):
        bthread_setconcurrency("8")
    with pytest.raises(TypeError, match="num"):
        bthread_setconcurrency(True)
    assert bthread_getconcurrency() == 4


def test_setconcurrency_before_the_first_start(rt):
    assert bthread_setconcurrency(6) == 0
    assert bthread_getconcurrency() == 6 and rt.task_control is None
    assert bthread_setconcurrency(5) == 0      # anything in range before the start
    bthread_join(bthread_start_background(_noop))
    assert len(rt.task_control._groups) == 5 == bthread_getconcurrency()


def test_setconcurrency_after_start_can_only_grow(rt):
    bthread_join(bthread_start_background(_noop))
    assert bthread_setconcurrency(3) == EINVAL
    assert bthread_setconcurrency(1025) == EINVAL
    assert bthread_setconcurrency(4) == 0      # same number: nothing to do
    assert bthread_getconcurrency() == 4
    assert rt.task_control is not None and len(rt.task_control._groups) == 4


def test_setconcurrency_eperm_to_shrink_and_growing_adds_working_groups(mode):
    with Runtime(concurrency=6, mode=mode, seed=11) as rt:
        bthread_join(bthread_start_background(_noop))
        assert bthread_setconcurrency(4) == EPERM
        assert bthread_setconcurrency(8) == 0
        assert bthread_getconcurrency() == 8 == len(rt.task_control._groups)
        assert [g.index for g in rt.task_control._groups] == list(range(8))
        if rt.threads_mode:
            names = {t.name for t in threading.enumerate()}
            assert {"bthread_worker_7", "bthread_worker_8"} <= names
            with all_workers_blocked(rt) as groups:     # 8 workers each run one blocker
                assert {g.index for g in groups} == set(range(8))
        else:
            tids = [bthread_start_background(_noop) for _ in range(64)]
            for tid in tids:
                bthread_join(tid)
            assert {7, 8} <= {e.group for e in rt.trace.of_kind("run")}
        close_checked(rt)


# -- interrupt and stop ---------------------------------------------------------------------------

def test_interrupt_a_sleeping_bthread(rt):
    seen = {}

    def sleeper():
        t0 = gettimeofday_us()
        seen["rc"] = bthread_usleep(10_000_000)
        seen["elapsed"] = gettimeofday_us() - t0

    tid = bthread_start_background(sleeper)
    settle(rt, lambda: rt.address_meta(tid).current_sleep != 0, "the bthread to sleep")
    assert bthread_interrupt(tid) == 0
    assert bthread_join(tid) == 0
    assert seen["rc"] == EINTR
    assert seen["elapsed"] < 10_000_000


def test_stop_a_sleeping_bthread_gives_estop(rt):
    seen = {}

    def sleeper():
        seen["rc"] = bthread_usleep(10_000_000)

    tid = bthread_start_background(sleeper)
    settle(rt, lambda: rt.address_meta(tid).current_sleep != 0, "the bthread to sleep")
    assert bthread_stop(tid) == 0
    assert bthread_join(tid) == 0
    assert seen["rc"] == ESTOP


def test_interrupt_and_stop_a_butex_waiter(rt):
    b = butex_create(0)
    results = []

    def waiter():
        results.append(butex_wait(b, 0))

    t1 = bthread_start_background(waiter)
    settle(rt, lambda: len(b.waiters) == 1, "the bthread to wait")
    assert bthread_interrupt(t1) == 0
    assert bthread_join(t1) == 0
    assert results == [EINTR] and len(b.waiters) == 0
    t2 = bthread_start_background(waiter)
    settle(rt, lambda: len(b.waiters) == 1, "the bthread to wait")
    assert bthread_stop(t2) == 0
    assert bthread_join(t2) == 0
    # brpc's butex_wait says EINTR for both; only bthread_usleep answers ESTOP to a stop
    assert results == [EINTR, EINTR] and len(b.waiters) == 0


def test_an_interrupt_while_running_is_remembered(rt):
    seen = []

    def body():
        assert bthread_interrupt(bthread_self()) == 0
        seen.append(bthread_usleep(1000))         # returns at once, EINTR
        seen.append(bthread_usleep(1000))         # the interrupt was consumed
        bthread_interrupt(bthread_self())
        seen.append(butex_wait(butex_create(0), 0, timeout_us=1_000_000))

    bthread_join(bthread_start_background(body))
    assert seen == [EINTR, 0, EINTR]


def test_interrupt_and_stop_of_dead_or_unknown_tids(rt):
    assert bthread_interrupt(0) == EINVAL
    assert bthread_stop(0) == EINVAL
    tid = bthread_start_background(_noop)
    bthread_join(tid)
    assert bthread_interrupt(tid) == EINVAL
    assert bthread_stop(tid) == EINVAL
    assert bthread_interrupt(make_tid(1, 99_999)) == EINVAL


def test_join_is_not_cut_short_by_an_interrupt(rt):
    b = butex_create(0)
    seen = {}

    def target():
        butex_wait(b, 0)

    def joiner(tid):
        seen["rc"] = bthread_join(tid)
        seen["target_alive"] = rt.meta_of_live(tid) is not None

    tid = bthread_start_background(target)
    jt = bthread_start_background(joiner, tid)
    version_butex = rt.address_meta(tid).version_butex
    settle(rt, lambda: len(b.waiters) == 1 and len(version_butex.waiters) == 1, "both to wait")
    assert bthread_interrupt(jt) == 0
    settle(rt, lambda: len(version_butex.waiters) == 1 and not rt.address_meta(jt).interrupted,
           "the joiner to wait again")
    assert "rc" not in seen
    b.value = 1
    butex_wake(b)
    bthread_join(jt)
    assert seen == {"rc": 0, "target_alive": False}


# -- bthread_exit ----------------------------------------------------------------------------------

def test_bthread_exit_leaves_the_function(rt):
    log = []

    def helper():
        log.append("helper")
        bthread_exit()
        log.append("not reached")

    def body():
        log.append("start")
        helper()
        log.append("not reached either")

    assert bthread_join(bthread_start_background(body)) == 0
    assert log == ["start", "helper"]
    assert rt.errors == []


def test_bthread_exit_outside_a_bthread_raises(rt):
    with pytest.raises(RuntimeError, match="outside a bthread"):
        bthread_exit()


# -- bthread_about_to_quit -----------------------------------------------------------------------

def test_about_to_quit_marks_the_bthread(rt):
    assert bthread_about_to_quit() == 0          # outside a bthread: nothing to mark
    b = butex_create(0)
    seen = {}

    def waiter():
        seen["waiter"] = butex_wait(b, 0)

    def quitter(attr_name):
        me = rt.meta_of_live(bthread_self())
        seen[attr_name + " rc"] = bthread_about_to_quit()
        seen[attr_name] = me.about_to_quit
        if attr_name == "normal":
            # the wake exchanges to the waiter; this bthread is requeued without a signal
            b.value = 1
            seen["woken"] = butex_wake(b)
            seen["after wake"] = True

    wt = bthread_start_background(waiter)
    settle(rt, lambda: len(b.waiters) == 1, "the waiter to wait")
    bthread_join(bthread_start_background(quitter, "normal"))
    bthread_join(bthread_start_background(quitter, "never", attr=BthreadAttr(flags=BTHREAD_NEVER_QUIT)))
    bthread_join(wt)
    assert seen == {"normal rc": 0, "normal": True, "woken": 1, "after wake": True, "waiter": 0,
                    "never rc": 0, "never": False}


# -- NOSIGNAL and bthread_flush --------------------------------------------------------------------

def test_nosignal_starts_from_main_wait_for_bthread_flush_threads():
    with Runtime(concurrency=4, mode="threads", seed=1) as rt:
        bthread_join(bthread_start_background(_noop))
        groups = rt.task_control._groups
        wait_for(lambda: all(g._pl.nwaiters == 1 for g in groups), what="every worker to park")
        ran = []
        nosignal = BthreadAttr(flags=BTHREAD_NOSIGNAL)
        tids = [bthread_start_background(ran.append, i, attr=nosignal) for i in range(3)]
        target = rt._nosignal_group
        assert target is not None
        assert list(target._remote_rq) == tids          # one group, remembered for the batch
        assert target._remote_num_nosignal == 3
        time.sleep(0.05)                                # nobody was told: nobody runs them
        assert ran == [] and list(target._remote_rq) == tids
        bthread_flush()
        assert rt._nosignal_group is None and target._remote_num_nosignal == 0
        for tid in tids:
            assert bthread_join(tid) == 0
        assert sorted(ran) == [0, 1, 2]
        close_checked(rt)


def test_nosignal_starts_from_main_deterministic():
    with Runtime(concurrency=4, mode="deterministic", seed=9) as rt:
        nosignal = BthreadAttr(flags=BTHREAD_NOSIGNAL)
        ran = []
        tids = [bthread_start_background(ran.append, i, attr=nosignal) for i in range(5)]
        target = rt._nosignal_group
        assert list(target._remote_rq) == tids          # the whole batch in one group
        bthread_flush()
        assert rt._nosignal_group is None
        for tid in tids:
            bthread_join(tid)
        assert sorted(ran) == list(range(5))


def test_nosignal_starts_from_a_bthread_are_flushed(rt):
    seen = {}

    def parent():
        g = tls_task_group()
        tids = [bthread_start_background(_noop, attr=BthreadAttr(flags=BTHREAD_NOSIGNAL)) for _ in range(3)]
        seen["owed"] = g._num_nosignal if rt.threads_mode else 3
        assert bthread_flush() is None
        seen["after flush"] = g._num_nosignal
        for tid in tids:
            bthread_join(tid)

    bthread_join(bthread_start_background(parent))
    assert seen == {"owed": 3, "after flush": 0}


# -- attrs and the TaskMeta -----------------------------------------------------------------------

def test_attr_name_labels_the_bthread(rt):
    seen = {}

    def body():
        meta = rt.meta_of_live(bthread_self())
        seen["meta"] = meta
        seen["label"] = meta.label

    bthread_join(bthread_start_background(body, attr=BthreadAttr(name="sender")))
    assert isinstance(seen["meta"], TaskMeta)
    assert seen["label"] == "bthread 1 (sender)"
    bthread_join(bthread_start_background(body))
    assert seen["label"] == "bthread 2 (body)"                     # named after its function
    assert seen["meta"].attr is BTHREAD_ATTR_NORMAL                 # the default attr
    bthread_join(bthread_start_background(body, attr=BTHREAD_ATTR_NORMAL))
    assert seen["label"] == "bthread 3 (body)"
    assert BthreadAttr().with_flags(BTHREAD_NOSIGNAL).flags == BTHREAD_NOSIGNAL


# -- stack reuse and many joiners -------------------------------------------------------------------

def test_an_ending_bthread_hands_its_stack_to_the_next_one():
    import greenlet
    with Runtime(concurrency=4, mode="deterministic", seed=1, switch_budget=1000) as rt:
        stacks = []

        def link(n):
            stacks.append(greenlet.getcurrent())
            if n:
                bthread_start_background(link, n - 1)

        bthread_start_background(link, 49)
        rt.run()
        assert len(stacks) == 50
        assert len(set(map(id, stacks))) == 1            # one greenlet ran all fifty (brpc's stack reuse)
        reuse = [e for e in rt.trace.of_kind("run") if "reusing the stack" in e.detail]
        assert len(reuse) == 49 and reuse[0].detail == "first run, reusing the stack of b1"
        stacks.clear()


def test_many_joiners_of_one_bthread(rt):
    b = butex_create(0)
    results = []
    target = bthread_start_background(butex_wait, b, 0)
    joiners = [bthread_start_background(lambda: results.append(bthread_join(target))) for _ in range(5)]
    version_butex = rt.address_meta(target).version_butex
    settle(rt, lambda: len(version_butex.waiters) == 5 and len(b.waiters) == 1, "five joiners to wait")
    b.value = 1
    butex_wake(b)
    assert bthread_join(target) == 0
    for tid in joiners:
        assert bthread_join(tid) == 0
    assert results == [0] * 5
