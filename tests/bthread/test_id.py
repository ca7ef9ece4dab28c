"""bthread_id: the versioned lock behind every RPC (design section 3)."""
from __future__ import annotations

import threading

import pytest

from bthread_helpers import settle
from brpc_mini.bthread import (
    ID_MAX_RANGE, INVALID_BTHREAD_ID, Id, Runtime, address_id, bthread_id_about_to_destroy, bthread_id_cancel,
    bthread_id_create, bthread_id_create2, bthread_id_create_ranged, bthread_id_error,
    bthread_id_error2, bthread_id_join, bthread_id_lock, bthread_id_lock_and_reset_range,
    bthread_id_trylock, bthread_id_unlock, bthread_id_unlock_and_destroy, bthread_join,
    bthread_start_background, bthread_timer_add, bthread_usleep, bthread_yield, butex_create,
    butex_wait, butex_wake,
    gettimeofday_us, tls_task_group,
)
from brpc_mini.bthread.errno import EBUSY, EINVAL, EPERM
from brpc_mini.bthread.id import get_slot, get_version, id_pool, make_id


def _recorder(calls, unlock=True):
    """An on_error that records what it saw (including the lock state) and unlocks."""
    def on_error(id_value, data, error_code):
        meta = address_id(id_value)
        calls.append((id_value, data, error_code, meta.state()))
        if unlock:
            assert bthread_id_unlock(id_value) == 0
        return 0
    return on_error


# -- creating ------------------------------------------------------------------------------------

def test_create_layout_and_initial_state(rt):
    assert ID_MAX_RANGE == 1024 and INVALID_BTHREAD_ID == 0
    cid = bthread_id_create(data="cntl")
    assert cid != INVALID_BTHREAD_ID
    assert get_slot(cid) == 0 and get_version(cid) == 1 and cid == make_id(1, 0) == 1
    meta = address_id(cid)
    assert isinstance(meta, Id)
    assert (meta.first_ver, meta.locked_ver, meta.butex.value, meta.join_butex.value) == (1, 2, 1, 1)
    assert meta.state() == "unlocked" and meta.data == "cntl" and len(meta.pending_q) == 0
    assert "unlocked" in repr(meta)
    second = bthread_id_create()
    assert get_slot(second) == 1 and get_version(second) == 1
    assert id_pool().nlive == 2


def test_create_ranged_and_create2(rt):
    rid = bthread_id_create_ranged(data=1, range=5)
    meta = address_id(rid)
    assert meta.locked_ver == meta.first_ver + 5
    assert [meta.has_version(get_version(rid + k)) for k in range(6)] == [True] * 5 + [False]
    assert address_id(bthread_id_create_ranged(range=ID_MAX_RANGE)).locked_ver == 1 + ID_MAX_RANGE
    for bad in (0, ID_MAX_RANGE + 1, "3", None):
        with pytest.raises(ValueError, match="range"):
            bthread_id_create_ranged(range=bad)
    with pytest.raises(TypeError, match="on_error"):
        bthread_id_create(on_error=3)
    with pytest.raises(TypeError, match="on_error2"):
        bthread_id_create2(on_error2="x")

    calls = []

    def on_error2(id_value, data, error_code, error_text):
        calls.append((id_value, data, error_code, error_text))
        return bthread_id_unlock(id_value)

    id2 = bthread_id_create2(data="d2", on_error2=on_error2)
    assert bthread_id_error2(id2, 104, "connection reset", "test:1") == 0
    assert bthread_id_error(id2, 110) == 0
    assert calls == [(id2, "d2", 104, "connection reset"), (id2, "d2", 110, "")]


# -- the worked example of design section 3.4 ----------------------------------------------------

def test_lock_and_reset_range_version_arithmetic_of_the_worked_example(rt):
    max_retry = 3
    cid = bthread_id_create(data="cntl")
    meta = address_id(cid)
    assert (meta.first_ver, meta.locked_ver) == (1, 2)
    pdata = []
    assert bthread_id_lock_and_reset_range(cid, 2 + max_retry, pdata) == 0
    assert pdata == ["cntl"]
    assert meta.locked_ver == 6 and meta.butex.value == 6 and meta.state() == "locked"
    assert (meta.contended_ver(), meta.unlockable_ver(), meta.last_ver(), meta.end_ver()) == (7, 8, 8, 9)
    # valid versions 1..5: call_id, the first try, three retries
    assert [meta.has_version(v) for v in range(0, 8)] == [False] + [True] * 5 + [False] * 2
    assert bthread_id_trylock(cid + 5) == EINVAL                   # version 6 is past the range
    assert bthread_id_trylock(cid + 4) == EBUSY                    # valid, but locked
    # ranges never shrink
    assert bthread_id_unlock(cid + 2) == 0                         # any valid version unlocks
    assert meta.butex.value == 1 == meta.first_ver
    assert bthread_id_lock_and_reset_range(cid, 2) == 0
    assert meta.locked_ver == 6
    # destroy: every version dies, the next Id in this slot starts at end_ver
    assert bthread_id_unlock_and_destroy(cid + 1) == 0
    assert (meta.first_ver, meta.locked_ver, meta.butex.value, meta.join_butex.value) == (9, 9, 9, 9)
    assert meta.state() == "destroyed" and meta.data is None
    nxt = bthread_id_create()
    assert get_slot(nxt) == get_slot(cid) and get_version(nxt) == 9
    assert address_id(nxt) is meta and (meta.first_ver, meta.locked_ver) == (9, 10)
    for k in range(6):
        assert bthread_id_lock(cid + k) == EINVAL                  # stale: below first_ver


def test_reset_range_argument_errors(rt):
    cid = bthread_id_create()
    with pytest.raises(ValueError, match="range"):
        bthread_id_lock_and_reset_range(cid, ID_MAX_RANGE + 1)
    with pytest.raises(ValueError, match="range"):
        bthread_id_lock_and_reset_range(cid, -1)
    with pytest.raises(TypeError, match="id"):
        bthread_id_lock("1")
    with pytest.raises(TypeError, match="id"):
        bthread_id_unlock(None)
    with pytest.raises(TypeError, match="error_code"):
        bthread_id_error(cid, "timeout")
    assert address_id(cid).state() == "unlocked"


# -- lock, unlock, trylock -------------------------------------------------------------------------

def test_lock_unlock_trylock(rt):
    cid = bthread_id_create(data={"k": 1})
    meta = address_id(cid)
    assert bthread_id_unlock(cid) == EPERM                         # not locked
    pdata = []
    assert bthread_id_lock(cid, pdata) == 0 and pdata == [{"k": 1}]
    assert meta.butex.value == meta.locked_ver
    assert bthread_id_trylock(cid) == EBUSY
    assert bthread_id_unlock(cid) == 0 and meta.butex.value == meta.first_ver
    pdata = []
    assert bthread_id_trylock(cid, pdata) == 0 and pdata == [{"k": 1}]
    assert meta.state() == "locked"
    assert bthread_id_unlock(cid) == 0
    assert meta.state() == "unlocked"


def test_contended_lock_between_two_bthreads(rt):
    cid = bthread_id_create(data="shared")
    meta = address_id(cid)
    go = butex_create(0)
    log = []

    def holder():
        log.append(("holder locks", bthread_id_lock(cid)))
        butex_wait(go, 0)                                          # hold it until main says go
        log.append("holder unlocks")
        log.append(("holder unlocked", bthread_id_unlock(cid)))

    def second():
        pdata = []
        rc = bthread_id_lock(cid, pdata)
        log.append(("second locked", rc, pdata, meta.butex.value, meta.state()))
        log.append(("second unlocks", bthread_id_unlock(cid)))

    ht = bthread_start_background(holder)
    settle(rt, lambda: len(go.waiters) == 1, "the holder to hold the lock")
    assert meta.state() == "locked"
    st = bthread_start_background(second)
    settle(rt, lambda: len(meta.butex.waiters) == 1, "the second bthread to wait for the lock")
    # while the second waits, the butex says "locked, and someone waits"
    assert meta.butex.value == meta.contended_ver() == meta.locked_ver + 1
    assert meta.state() == "contended"
    assert log == [("holder locks", 0)]
    go.value = 1
    butex_wake(go)
    assert bthread_join(ht) == 0 and bthread_join(st) == 0
    # a locker that had to wait stores contended_ver, so its own unlock wakes whoever still waits
    second_locked = ("second locked", 0, ["shared"], meta.contended_ver(), "contended")
    assert log[:2] == [("holder locks", 0), "holder unlocks"]
    assert sorted(log[2:], key=repr) == sorted([("holder unlocked", 0), second_locked,
                                                ("second unlocks", 0)], key=repr)
    assert log.index(second_locked) < log.index(("second unlocks", 0))
    if not rt.threads_mode:
        # the unlock woke the second locker by exchange: it ran before the unlock returned
        assert log[2:] == [second_locked, ("second unlocks", 0), ("holder unlocked", 0)]
    assert meta.state() == "unlocked" and len(meta.butex.waiters) == 0


# -- errors ---------------------------------------------------------------------------------------

def test_error_while_unlocked_runs_on_error_inline_with_the_lock_held(rt):
    calls = []
    cid = bthread_id_create(data="d", on_error=_recorder(calls))
    assert bthread_id_error(cid, 1008) == 0
    assert calls == [(cid, "d", 1008, "locked")]                   # ran before error returned
    assert address_id(cid).state() == "unlocked"                   # on_error unlocked it


def test_error_while_locked_waits_in_pending_q_for_unlock(rt):
    calls = []
    cid = bthread_id_create_ranged(data="d", on_error=_recorder(calls), range=3)
    meta = address_id(cid)
    assert bthread_id_lock(cid) == 0
    assert bthread_id_error(cid, 1008) == 0
    assert bthread_id_error2(cid + 1, 1009, "socket failed", "here") == 0
    assert calls == [] and len(meta.pending_q) == 2
    first = meta.pending_q[0]
    assert (first.id, first.error_code) == (cid, 1008)
    assert meta.pending_q[1].error_text == "socket failed" and meta.pending_q[1].location == "here"
    # each unlock hands the lock to on_error for one pending error; on_error's own unlock serves
    # the next one
    assert bthread_id_unlock(cid) == 0
    assert calls == [(cid, "d", 1008, "locked"), (cid + 1, "d", 1009, "locked")]
    assert len(meta.pending_q) == 0 and meta.state() == "unlocked"


def test_error_on_a_destroyed_id_returns_einval_and_is_dropped(rt):
    calls = []
    cid = bthread_id_create(on_error=_recorder(calls))
    assert bthread_id_lock(cid) == 0
    assert bthread_id_unlock_and_destroy(cid) == 0
    assert bthread_id_error(cid, 1008) == EINVAL
    assert bthread_id_error2(cid, 1009, "late") == EINVAL
    assert calls == []


def test_pending_errors_are_dropped_by_unlock_and_destroy(rt):
    calls = []
    cid = bthread_id_create(on_error=_recorder(calls))
    assert bthread_id_lock(cid) == 0
    assert bthread_id_error(cid, 1) == 0
    assert bthread_id_unlock_and_destroy(cid) == 0
    assert calls == [] and len(address_id(cid).pending_q) == 0


def test_default_on_error_destroys_the_id(rt):
    cid = bthread_id_create()
    assert bthread_id_error(cid, 1008) == 0
    assert address_id(cid).state() == "destroyed"
    assert bthread_id_join(cid) == 0
    assert bthread_id_lock(cid) == EINVAL


def test_error_from_the_timer_runs_on_error_on_the_timer(rt):
    # the RPC timeout path: a TimerThread callback calls bthread_id_error(call_id, ERPCTIMEDOUT)
    seen = []
    fired = threading.Event()

    def on_error(id_value, data, error_code):
        seen.append((error_code, threading.current_thread().name, tls_task_group()))
        fired.set()
        return bthread_id_unlock_and_destroy(id_value)

    cid = bthread_id_create(on_error=on_error)
    bthread_timer_add(lambda call_id: bthread_id_error(call_id, 1008), gettimeofday_us() + 1000, cid)
    assert bthread_id_join(cid) == 0
    assert fired.is_set() and len(seen) == 1
    code, thread_name, group = seen[0]
    assert code == 1008 and group is None                          # non-worker code
    if rt.threads_mode:
        assert thread_name == "TimerThread"


# -- about_to_destroy, unlock_and_destroy, cancel, join -----------------------------------------------

def test_about_to_destroy_makes_waiting_lockers_get_eperm(rt):
    cid = bthread_id_create()
    meta = address_id(cid)
    assert bthread_id_about_to_destroy(cid) == EPERM                # only a locked id
    assert bthread_id_lock(cid) == 0
    results = []
    lockers = [bthread_start_background(lambda: results.append(bthread_id_lock(cid))) for _ in range(2)]
    settle(rt, lambda: len(meta.butex.waiters) == 2, "both lockers to wait")
    assert meta.state() == "contended"
    assert bthread_id_about_to_destroy(cid) == 0
    assert meta.butex.value == meta.unlockable_ver() and meta.state() == "unlockable"
    for tid in lockers:
        bthread_join(tid)
    assert results == [EPERM, EPERM]
    assert bthread_id_lock(cid) == EPERM                            # new lockers too
    assert bthread_id_trylock(cid) == EBUSY
    # a plain unlock cancels the pending destruction
    assert bthread_id_unlock(cid) == 0 and meta.state() == "unlocked"
    assert bthread_id_lock(cid) == 0 and bthread_id_unlock(cid) == 0


def test_about_to_destroy_queues_the_woken_locker_and_keeps_the_cpu():
    # brpc wakes the lockers with butex_wake_except(butex, 0), as unlock_and_destroy does: the
    # woken locker is only queued, so the caller goes on first. (butex_wake_all would switch to
    # the locker at once, and its EPERM would be logged before the caller's return.)
    with Runtime(concurrency=4, mode="deterministic", seed=7) as rt:
        cid = bthread_id_create()
        meta = address_id(cid)
        log = []

        def owner():
            assert bthread_id_lock(cid) == 0
            bthread_usleep(1000)
            log.append(("owner", bthread_id_about_to_destroy(cid)))

        def locker():
            log.append(("locker", bthread_id_lock(cid)))

        ot = bthread_start_background(owner)
        rt.run_until(lambda: meta.state() == "locked")
        lt = bthread_start_background(locker)
        rt.run_until(lambda: len(meta.butex.waiters) == 1)
        assert meta.state() == "contended"
        mark = rt.trace.last_seq()
        bthread_join(ot)
        bthread_join(lt)
        assert log == [("owner", 0), ("locker", EPERM)]
        owner_seq, locker_seq = rt.address_meta(ot).seq, rt.address_meta(lt).seq
        events = [(e.kind, e.bthread) for e in rt.trace.since(mark)
                  if e.kind in ("wake", "push_rq", "run", "end") and e.bthread in (owner_seq, locker_seq)]
        woken = events.index(("wake", locker_seq))
        # after the wake the owner runs on to its end before the locker runs
        assert events.index(("end", owner_seq)) < events.index(("run", locker_seq), woken)
        assert bthread_id_unlock(cid) == 0 and bthread_id_cancel(cid) == 0


def test_unlock_and_destroy_wakes_joiners_and_lockers(rt):
    cid = bthread_id_create(data="d")
    meta = address_id(cid)
    nlive = id_pool().nlive
    assert bthread_id_unlock_and_destroy(cid) == EPERM              # only a locked id
    assert bthread_id_lock(cid) == 0
    results = []
    locker = bthread_start_background(lambda: results.append(("lock", bthread_id_lock(cid))))
    joiner = bthread_start_background(lambda: results.append(("join", bthread_id_join(cid))))
    plain = rt.start_pthread(bthread_id_join, cid, name="plain-joiner")
    settle(rt, lambda: len(meta.butex.waiters) == 1 and len(meta.join_butex.waiters) == 2,
           "the locker and both joiners to wait")
    assert bthread_id_unlock_and_destroy(cid) == 0
    assert plain.join(10) == 0
    bthread_join(locker)
    bthread_join(joiner)
    assert sorted(results) == [("join", 0), ("lock", EINVAL)]
    assert id_pool().nlive == nlive - 1
    assert bthread_id_unlock_and_destroy(cid) == EINVAL


def test_cancel(rt):
    cid = bthread_id_create(data="d")
    assert bthread_id_lock(cid) == 0
    assert bthread_id_cancel(cid) == EPERM                          # locked
    assert bthread_id_unlock(cid) == 0
    assert bthread_id_cancel(cid) == 0
    meta = address_id(cid)
    # first_ver 1, locked_ver 2: cancel jumps to end_ver = locked_ver + 3 = 5
    assert meta.state() == "destroyed" and meta.first_ver == meta.locked_ver == meta.butex.value == 5
    # brpc's cancel writes only butex, first_ver and locked_ver
    assert meta.join_butex.value == 1 and meta.data == "d"
    assert bthread_id_cancel(cid) == EINVAL
    assert bthread_id_lock(cid) == EINVAL
    assert bthread_id_join(cid) == 0
    assert get_version(bthread_id_create()) == 5                    # the slot's next generation


def test_join_on_a_destroyed_id_returns_at_once(rt):
    cid = bthread_id_create()
    bthread_id_cancel(cid)
    if not rt.threads_mode:
        n, now = len(rt.trace), gettimeofday_us()
    assert bthread_id_join(cid) == 0
    if not rt.threads_mode:
        assert len(rt.trace) == n and gettimeofday_us() == now


def test_join_waits_until_destroyed(rt):
    cid = bthread_id_create()
    meta = address_id(cid)
    log = []

    def destroyer():
        bthread_id_lock(cid)
        log.append("destroy")
        bthread_id_unlock_and_destroy(cid)

    def joiner():
        log.append(("joined", bthread_id_join(cid)))

    jt = bthread_start_background(joiner)
    settle(rt, lambda: len(meta.join_butex.waiters) == 1, "the joiner to wait")
    bthread_start_background(destroyer)
    assert bthread_id_join(cid) == 0                                # main joins too
    bthread_join(jt)
    assert log == ["destroy", ("joined", 0)]


# -- stale versions ---------------------------------------------------------------------------------

def test_versions_outside_first_ver_to_locked_ver_are_rejected(rt):
    old = bthread_id_create_ranged(range=2)
    assert bthread_id_lock(old) == 0 and bthread_id_unlock_and_destroy(old) == 0
    cid = bthread_id_create_ranged(range=2)                         # same slot, next generation
    meta = address_id(cid)
    assert get_slot(cid) == get_slot(old) and meta.first_ver == get_version(old) + 5
    below = [make_id(v, get_slot(cid)) for v in range(0, meta.first_ver)]
    above = [make_id(v, get_slot(cid)) for v in (meta.locked_ver, meta.locked_ver + 1, meta.end_ver())]
    for stale in below + above:
        assert bthread_id_lock(stale) == EINVAL
        assert bthread_id_trylock(stale) == EINVAL
        assert bthread_id_unlock(stale) == EINVAL
        assert bthread_id_error(stale, 1) == EINVAL
        assert bthread_id_about_to_destroy(stale) == EINVAL
        assert bthread_id_unlock_and_destroy(stale) == EINVAL
        assert bthread_id_cancel(stale) == EINVAL
        assert bthread_id_join(stale) == 0
    assert meta.state() == "unlocked"                               # none of them touched it
    unknown = make_id(1, 10_000)
    assert address_id(unknown) is None
    assert bthread_id_lock(unknown) == EINVAL and bthread_id_join(unknown) == EINVAL
    assert bthread_id_lock(INVALID_BTHREAD_ID) == EINVAL
    # the live versions still work
    assert bthread_id_lock(cid + 1) == 0 and bthread_id_unlock(cid) == 0


def test_an_id_is_a_mutex_for_many_contending_bthreads(rt):
    cid = bthread_id_create(data="controller")
    meta = address_id(cid)
    inside = []
    most_inside = []
    order = []

    def contender(i):
        assert bthread_id_lock(cid) == 0
        inside.append(i)
        most_inside.append(len(inside))
        bthread_yield()                                            # hold it across a switch
        bthread_usleep(100)
        inside.remove(i)
        order.append(i)
        assert bthread_id_unlock(cid) == 0

    tids = [bthread_start_background(contender, i) for i in range(6)]
    for tid in tids:
        assert bthread_join(tid) == 0
    assert sorted(order) == list(range(6))
    assert max(most_inside) == 1                                   # never two holders at once
    assert meta.state() == "unlocked" and len(meta.butex.waiters) == 0


def test_a_slot_whose_version_would_overflow_starts_again_at_1(rt):
    old = bthread_id_create()
    assert bthread_id_cancel(old) == 0
    meta = address_id(old)
    meta.butex.value = 0xFFFFFFFF - ID_MAX_RANGE - 1       # the next create could not fit a range
    cid = bthread_id_create()
    assert get_slot(cid) == get_slot(old) and get_version(cid) == 1
    assert (meta.first_ver, meta.locked_ver) == (1, 2)


def test_unlock_and_destroy_gives_the_slot_back_after_waking_the_joiner():
    # As in brpc (id.cpp: return_resource comes after the wakes): a joiner woken by a bthread runs
    # at once (exchange), and an Id it creates then must not get the slot still being destroyed.
    with Runtime(concurrency=4, mode="deterministic", seed=3) as rt:
        cid = bthread_id_create()
        seen = {}

        def joiner():
            assert bthread_id_join(cid) == 0
            seen["next"] = bthread_id_create()

        def destroyer():
            assert bthread_id_lock(cid) == 0
            assert bthread_id_unlock_and_destroy(cid) == 0
            seen["live_after_wake"] = id_pool().nlive

        jt = bthread_start_background(joiner)
        rt.run_until(lambda: len(address_id(cid).join_butex.waiters) == 1)
        bthread_join(bthread_start_background(destroyer))
        bthread_join(jt)
        assert get_slot(seen["next"]) != get_slot(cid)
        assert seen["live_after_wake"] == 1          # only the joiner's new Id
        assert bthread_id_cancel(seen["next"]) == 0
