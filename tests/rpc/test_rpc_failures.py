"""When the server is not there, or is too slow: the RPC ends with brpc's error, promptly.

brpc: design 5.7 (the four outcomes). A refused connect is retryable: the first try fails with
ECONNREFUSED, the main socket is failed and health-checked, so the retries fail fast with EHOSTDOWN
("Not connected to ... yet") until max_retry is spent. A deadline ends the RPC with ERPCTIMEDOUT,
which is never retried; the late response then finds its Id destroyed and is dropped.
"""
from __future__ import annotations

import errno
import time

import pytest

from brpc_mini import rpc
from brpc_mini.bthread import bthread_join, bthread_start_background
from brpc_mini.echo_server import EchoServer
from brpc_mini.proto import echo_pb2
from brpc_mini.rpc import Channel, ChannelOptions, Controller
from brpc_mini.rpc.errors import ECANCELED, EEOF, EHOSTDOWN, ERPCTIMEDOUT
from rpc_helpers import PROMPTLY_S, EchoService_Stub, drive_until, echo, free_port

CONNECTION_ERRORS = (errno.ECONNREFUSED, EHOSTDOWN)


def connect(port, **options) -> Channel:
    channel = Channel()
    assert channel.Init(f"127.0.0.1:{port}", ChannelOptions(**options)) == 0
    return channel


# -- nobody listening ---------------------------------------------------------------------------

@pytest.mark.parametrize("connection_type", ["single", "pooled", "short"])
def test_connect_refused_fails_after_retries(rt, connection_type):
    channel = connect(free_port(), connection_type=connection_type)
    started = time.monotonic()
    cntl, response = echo(channel)
    elapsed = time.monotonic() - started
    assert elapsed < PROMPTLY_S
    assert cntl.Failed()
    assert cntl.ErrorCode() in CONNECTION_ERRORS
    assert "[E111]" in cntl.ErrorText() or "[E112]" in cntl.ErrorText()
    assert cntl.retried_count() == 3                       # ChannelOptions.max_retry
    assert "[R3]" in cntl.ErrorText()                      # each try appended its own text
    assert response.message == ""


def test_connect_refused_text_tells_the_story(rt):
    port = free_port()
    cntl, _ = echo(connect(port))
    text = cntl.ErrorText()
    # the first try: the connect itself; the retries: the failed main socket cannot be addressed
    assert text.startswith("[E111]Fail to connect")
    assert f"127.0.0.1:{port}" in text
    assert text.count(f"[E112]Not connected to 127.0.0.1:{port} yet") == 3
    assert cntl.ErrorCode() == EHOSTDOWN


@pytest.mark.parametrize("max_retry", [0, 1])
def test_connect_refused_respects_max_retry(rt, max_retry):
    cntl = Controller()
    cntl.set_max_retry(max_retry)
    echo(connect(free_port()), cntl=cntl)
    assert cntl.ErrorCode() in CONNECTION_ERRORS
    assert cntl.retried_count() == max_retry


def test_connect_refused_async(rt):
    channel = connect(free_port())
    cntl = Controller()
    codes = []
    assert EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest(message="x"),
                                          lambda response: codes.append(cntl.ErrorCode())) is None
    assert rpc.Join(cntl.call_id()) == 0
    assert len(codes) == 1 and codes[0] in CONNECTION_ERRORS


def test_connect_refused_from_many_bthreads(rt):
    channel = connect(free_port())
    codes = []

    def caller():
        cntl, _ = echo(channel)
        codes.append(cntl.ErrorCode())

    started = time.monotonic()
    tids = [bthread_start_background(caller) for _ in range(10)]
    for tid in tids:
        assert bthread_join(tid) == 0
    assert time.monotonic() - started < PROMPTLY_S
    assert len(codes) == 10 and all(code in CONNECTION_ERRORS for code in codes)


def test_list_channel_with_no_live_server_fails_promptly(rt):
    channel = Channel()
    url = f"list://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    assert channel.Init(url, "rr", ChannelOptions()) == 0
    started = time.monotonic()
    cntl, _ = echo(channel)
    assert time.monotonic() - started < PROMPTLY_S
    assert cntl.ErrorCode() in CONNECTION_ERRORS
    assert "Fail to select server" in cntl.ErrorText() or "[E111]" in cntl.ErrorText()


# -- too slow -----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["deterministic"])     # the exact deadline needs the simulated clock
def test_timeout_fires_at_the_deadline_on_the_deterministic_clock(rt):
    with EchoServer(delay_us=300_000) as server:
        channel = connect(server.port)
        cntl = Controller()
        cntl.set_timeout_ms(100)
        before = rt.gettimeofday_us()
        _, response = echo(channel, cntl=cntl)
        assert cntl.ErrorCode() == ERPCTIMEDOUT
        assert cntl.ErrorText() == f"[E1008]Reached timeout=100ms @127.0.0.1:{server.port}"
        assert rt.gettimeofday_us() - before == 100_000          # exactly at the deadline
        assert cntl.latency_us() == 100_000
        assert cntl.retried_count() == 0                          # ERPCTIMEDOUT is never retried
        assert response.message == ""
        timer_fires = [e for e in rt.trace.of_kind("timer_fire") if e.now_us == before + 100_000]
        assert timer_fires, "the timeout timer fired at start + timeout"


def test_timeout_in_real_time(rt):
    with EchoServer(delay_us=300_000) as server:
        channel = connect(server.port)
        cntl = Controller()
        cntl.set_timeout_ms(100)
        started = time.monotonic()
        echo(channel, cntl=cntl)
        elapsed = time.monotonic() - started
        assert cntl.ErrorCode() == ERPCTIMEDOUT
        assert cntl.latency_us() >= 100_000 or not rt.threads_mode
        assert elapsed < PROMPTLY_S


def test_channel_timeout_option_is_the_default(rt):
    with EchoServer(delay_us=200_000) as server:
        cntl, _ = echo(connect(server.port, timeout_ms=50))
        assert cntl.ErrorCode() == ERPCTIMEDOUT
        assert "Reached timeout=50ms" in cntl.ErrorText()


def test_late_response_is_dropped_and_the_channel_still_works(rt):
    with EchoServer(delay_us=200_000) as server:
        channel = connect(server.port)
        cntl = Controller()
        cntl.set_timeout_ms(50)
        echo(channel, "too slow", cntl=cntl)
        assert cntl.ErrorCode() == ERPCTIMEDOUT
        # the next call waits long enough; the first call's answer arrives meanwhile and is dropped
        cntl2 = Controller()
        cntl2.set_timeout_ms(5_000)
        _, response = echo(channel, "patient", cntl=cntl2)
        assert not cntl2.Failed(), cntl2.ErrorText()
        assert response.message == "patient"
        assert cntl.ErrorCode() == ERPCTIMEDOUT and cntl.response().message == ""
        if not rt.threads_mode:
            assert rt.trace.of_kind("drop_response"), "the late response found its Id destroyed"


def test_no_timeout_waits_for_the_answer(rt):
    with EchoServer(delay_us=150_000) as server:
        cntl = Controller()
        cntl.set_timeout_ms(-1)
        _, response = echo(connect(server.port), "eventually", cntl=cntl)
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == "eventually"


def test_start_cancel_ends_the_rpc_with_ecanceled(rt):
    with EchoServer(drop=True) as server:
        channel = connect(server.port, timeout_ms=-1)
        cntl = Controller()
        codes = []
        EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest(message="x"),
                                       lambda response: codes.append(cntl.ErrorCode()))
        assert rpc.StartCancel(cntl.call_id()) == 0
        assert rpc.Join(cntl.call_id()) == 0
        assert codes == [ECANCELED]


def test_server_closing_mid_call_fails_the_call(rt):
    """The server has the request, never answers, and closes the connection: the RPC learns it
    from the socket (EEOF, retried; the server is gone by then), not from a deadline."""
    server = EchoServer(drop=True)
    server.start()
    try:
        channel = connect(server.port, timeout_ms=-1)
        cntl = Controller()
        EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest(message="x"), lambda response: None)
        drive_until(rt, lambda: server.service.nrequests == 1, what="the server got the request")
    finally:
        server.stop()
    started = time.monotonic()
    assert rpc.Join(cntl.call_id()) == 0
    assert time.monotonic() - started < PROMPTLY_S
    assert cntl.Failed()
    assert cntl.ErrorCode() in CONNECTION_ERRORS + (EEOF,)
    assert cntl.ErrorText().startswith("[E1014]Got EOF"), cntl.ErrorText()
    assert cntl.retried_count() == 3
