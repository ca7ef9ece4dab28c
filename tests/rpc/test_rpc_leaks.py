"""A leak check: after 10,000 calls mixing successes, timeouts and failures, every count is back.

Deterministic mode with in-process servers (so it is fast and the same every run): an
``EchoServer(delay_us=...)`` answering in time, the same kind of server answering after the
deadline (ERPCTIMEDOUT, the late answer then dropped), an ``EchoServer(drop=True)`` that never
answers (ERPCTIMEDOUT), and an address nobody listens on (ECONNREFUSED, then EHOSTDOWN while the
main socket is health-checked). Calls go out asynchronously in waves, so they overlap and contend.

Counted before and after: live bthreads (``rt.live_bthreads()``), live Ids (``rt.ids.live()``),
sockets in use (``rpc_state(rt).sockets``), pending timers (``rt.timer_thread.nscheduled``) and
open file descriptors (``/proc/self/fd``). The baseline is taken after one warm-up wave, when every
long-lived thing exists (dispatcher, acceptors, main sockets, the refused server's HealthCheck).

``BRPC_MINI_LEAK_CALLS`` changes the number of calls (default 10,000).
"""
from __future__ import annotations

import errno
import os
import time

import pytest

from brpc_mini import rpc
from brpc_mini.echo_server import EchoServer
from brpc_mini.proto import echo_pb2
from brpc_mini.rpc import Channel, ChannelOptions, Controller
from brpc_mini.rpc.errors import EHOSTDOWN, ERPCTIMEDOUT
from rpc_helpers import EchoService_Stub, free_port, wait_for

NCALLS = int(os.environ.get("BRPC_MINI_LEAK_CALLS", "10000"))
WAVE = 200
#: per 20 calls: 12 answered in time, 3 answered late, 3 never answered, 2 refused
KINDS = ["ok"] * 12 + ["late"] * 3 + ["drop"] * 3 + ["refused"] * 2


def counts(rt) -> dict:
    state = rpc.rpc_state(rt)
    return {
        "bthreads": len(rt.live_bthreads()),
        "ids": len(rt.ids.live()),
        "sockets": sum(1 for s in state.sockets if s._in_use),
        "timers": rt.timer_thread.nscheduled,
        "fds": len(os.listdir("/proc/self/fd")),
    }


def settle(rt, expected=None) -> None:
    """Run until the clock is well past every server delay and deadline, so every late answer
    has arrived and been dropped; with ``expected``, also until the counts equal it — for at most
    a minute of simulated time (a leak never gets there). The refused server's HealthCheck keeps
    sleeping, as at baseline, and jumps the clock by seconds when nothing else is due."""
    if rt.threads_mode:
        wait_for(lambda: expected is None or counts(rt) == expected, timeout=10, what="counts back")
        time.sleep(0.3)       # past every server delay and deadline
        if expected is not None:
            wait_for(lambda: counts(rt) == expected, timeout=10, what="counts back")
        return
    now = rt.gettimeofday_us()
    target, limit = now + 200_000, now + 60_000_000
    rt.run_until(lambda: rt.gettimeofday_us() >= target
                 and (expected is None or counts(rt) == expected or rt.gettimeofday_us() >= limit))


@pytest.mark.parametrize("mode", ["deterministic"])
@pytest.mark.runtime_options(io_wait_ms=0)      # every peer is in this process: no real waiting
def test_ten_thousand_calls_leave_nothing_behind(rt):
    run_mix(rt, NCALLS)


@pytest.mark.parametrize("mode", ["threads"])
def test_a_thousand_calls_in_threads_mode_leave_nothing_behind(rt):
    run_mix(rt, NCALLS // 10)


def run_mix(rt, ncalls: int) -> None:
    fast = EchoServer(delay_us=1_000)
    slow = EchoServer(delay_us=30_000)
    mute = EchoServer(drop=True)
    for s in (fast, slow, mute):
        s.start()
    try:
        refused_port = free_port()
        options = dict(timeout_ms=10, max_retry=3)
        channels = {
            "ok": Channel(), "late": Channel(), "drop": Channel(), "refused": Channel(),
        }
        assert channels["ok"].Init(f"127.0.0.1:{fast.port}", ChannelOptions(timeout_ms=1_000, max_retry=3)) == 0
        assert channels["late"].Init(f"127.0.0.1:{slow.port}", ChannelOptions(**options)) == 0
        assert channels["drop"].Init(f"127.0.0.1:{mute.port}", ChannelOptions(**options)) == 0
        assert channels["refused"].Init(f"127.0.0.1:{refused_port}", ChannelOptions(**options)) == 0
        outcomes = {"ok": 0, ERPCTIMEDOUT: 0, "refused": 0}
        ran = [0]

        def wave(first: int, n: int) -> None:
            cntls = []
            for i in range(first, first + n):
                kind = KINDS[i % len(KINDS)]
                cntl = Controller()
                EchoService_Stub(channels[kind]).Echo(cntl, echo_pb2.EchoRequest(message=f"m{i}"),
                                                      lambda response: ran.__setitem__(0, ran[0] + 1))
                cntls.append((kind, cntl))
            for kind, cntl in cntls:
                assert rpc.Join(cntl.call_id()) == 0
                code = cntl.ErrorCode()
                if kind == "ok":
                    assert code == 0, cntl.ErrorText()
                    outcomes["ok"] += 1
                elif kind in ("late", "drop"):
                    assert code == ERPCTIMEDOUT, cntl.ErrorText()
                    outcomes[ERPCTIMEDOUT] += 1
                else:
                    assert code in (errno.ECONNREFUSED, EHOSTDOWN), cntl.ErrorText()
                    outcomes["refused"] += 1

        wave(0, len(KINDS))                      # warm-up: connections, HealthCheck, dispatcher
        settle(rt)
        before = counts(rt)
        ran[0] = 0
        outcomes.update({"ok": 0, ERPCTIMEDOUT: 0, "refused": 0})
        for k in range(0, ncalls, WAVE):
            wave(k, min(WAVE, ncalls - k))
        settle(rt, before)
        after = counts(rt)
        assert ran[0] == ncalls                   # done ran exactly once per call
        assert after == before, f"before {before}, after {after}: {[m.label for m in rt.live_bthreads()][:10]}"
        print(f"\n{rt.mode}: {ncalls} calls: {outcomes}; counts before {before}, after {after}")
    finally:
        for s in (mute, slow, fast):
            s.stop()
