"""Client and server together over real loopback TCP, in both runtime modes.

The bundled EchoServer runs on the same runtime as the client (the ``echo_server`` fixture), the
way the notebooks use it. Calls are made from the test's own code (a non-worker, which blocks in
``Join``), from bthreads, synchronously and with a ``done`` callback.
"""
from __future__ import annotations

import time

import pytest

from brpc_mini import rpc
from brpc_mini.bthread import Runtime, bthread_join, bthread_self, bthread_start_background
from brpc_mini.echo_server import EchoServer
from brpc_mini.proto import echo_pb2
from brpc_mini.rpc import Channel, ChannelOptions, Controller, rpc_state
from rpc_helpers import (PROMPTLY_S, EchoService_Stub, close_checked, echo, rpc_runtime, stubs_for_unknown_names,
                         wait_for)


def connect(server_or_port, **options) -> Channel:
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    channel = Channel()
    assert channel.Init(f"127.0.0.1:{port}", ChannelOptions(**options)) == 0
    return channel


def accepted(server: EchoServer) -> int:
    """Connections the server has accepted so far."""
    return server.server._acceptor.naccepted


# -- synchronous calls --------------------------------------------------------------------------

def test_sync_call_from_main_code(rt, echo_server):
    channel = connect(echo_server)
    cntl, response = echo(channel, "hello world")
    assert not cntl.Failed(), cntl.ErrorText()
    assert cntl.ErrorCode() == 0 and cntl.ErrorText() == ""
    assert isinstance(response, echo_pb2.EchoResponse)
    assert response.message == "hello world"
    assert cntl.remote_side() == ("127.0.0.1", echo_server.port)
    assert cntl.local_side()[0] == "127.0.0.1" and cntl.local_side()[1] != echo_server.port
    assert cntl.latency_us() >= 0
    assert cntl.retried_count() == 0
    assert echo_server.service.nrequests == 1


def test_sync_calls_from_bthreads(rt, echo_server):
    channel = connect(echo_server)
    results = {}

    def caller(i):
        assert bthread_self() != 0
        cntl, response = echo(channel, f"from bthread {i}")
        results[i] = (cntl.ErrorCode(), cntl.ErrorText(), response.message)

    tids = [bthread_start_background(caller, i) for i in range(4)]
    for tid in tids:
        assert bthread_join(tid) == 0
    assert results == {i: (0, "", f"from bthread {i}") for i in range(4)}


def test_sequential_calls_on_one_channel(rt, echo_server):
    channel = connect(echo_server)
    for i in range(5):
        cntl, response = echo(channel, f"call {i}")
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == f"call {i}"
    assert accepted(echo_server) == 1          # "single": one connection for everything
    assert echo_server.service.nrequests == 5


def test_two_channels_to_one_server_share_the_main_socket(rt, echo_server):
    a, b = connect(echo_server), connect(echo_server)
    assert a._server_id == b._server_id
    for channel in (a, b, a):
        cntl, response = echo(channel, "shared")
        assert not cntl.Failed(), cntl.ErrorText()
    assert accepted(echo_server) == 1


# -- asynchronous calls -------------------------------------------------------------------------

def test_async_call_runs_done_on_a_bthread(rt, echo_server):
    channel = connect(echo_server)
    cntl = Controller()
    seen = []

    def done(response):
        seen.append((bthread_self(), cntl.ErrorCode(), response.message))

    returned = EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest(message="async"), done)
    assert returned is None
    if not rt.threads_mode:
        # nothing has driven the deterministic runtime since CallMethod returned
        assert seen == []
    assert rpc.Join(cntl.call_id()) == 0
    assert len(seen) == 1
    tid, code, message = seen[0]
    assert tid != 0, "done must run on a bthread"
    assert (code, message) == (0, "async")
    assert not cntl.Failed()
    assert cntl.latency_us() >= 0


def test_async_calls_from_a_bthread_overlap(rt, echo_server):
    channel = connect(echo_server)
    finished = {}

    def caller():
        cntls = []
        for i in range(5):
            cntl = Controller()
            returned = EchoService_Stub(channel).Echo(
                cntl, echo_pb2.EchoRequest(message=f"m{i}"),
                lambda response, i=i: finished.__setitem__(i, response.message))
            assert returned is None
            cntls.append(cntl)
        for cntl in cntls:
            assert rpc.Join(cntl.call_id()) == 0
            assert not cntl.Failed(), cntl.ErrorText()

    assert bthread_join(bthread_start_background(caller)) == 0
    assert finished == {i: f"m{i}" for i in range(5)}


def test_async_failure_still_runs_done(rt):
    cntl = Controller()
    cntl.set_timeout_ms(50)
    codes = []
    # a second server that never answers: done must still run, with the timeout
    with EchoServer(drop=True) as silent:
        channel = connect(silent)
        EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest(message="x"),
                                       lambda response: codes.append(cntl.ErrorCode()))
        assert rpc.Join(cntl.call_id()) == 0
    assert codes == [rpc.errors.ERPCTIMEDOUT]


# -- attachments --------------------------------------------------------------------------------

@pytest.mark.parametrize("attachment", [b"ATTACH-DATA", b"\x00\xff" * 3000])
def test_attachment_is_echoed(rt, echo_server, attachment):
    channel = connect(echo_server)
    cntl, response = echo(channel, "with attachment", attachment=attachment)
    assert not cntl.Failed(), cntl.ErrorText()
    assert response.message == "with attachment"
    assert cntl.response_attachment().to_bytes() == attachment


def test_server_that_does_not_echo_attachments(rt):
    with EchoServer(echo_attachment=False) as server:
        channel = connect(server)
        cntl, response = echo(channel, "msg", attachment=b"not coming back")
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == "msg"
        assert cntl.response_attachment().to_bytes() == b""


def test_no_attachment_gives_empty_response_attachment(rt, echo_server):
    cntl, _ = echo(connect(echo_server), "plain")
    assert not cntl.Failed() and cntl.response_attachment().to_bytes() == b""


# -- connection types ---------------------------------------------------------------------------

@pytest.mark.parametrize("connection_type, expected_connections", [
    ("", 1), ("single", 1), ("pooled", 1), ("short", 3)])
def test_connection_types(rt, echo_server, connection_type, expected_connections):
    channel = connect(echo_server, connection_type=connection_type)
    for i in range(3):
        cntl, response = echo(channel, f"{connection_type or 'default'} {i}")
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == f"{connection_type or 'default'} {i}"
    assert accepted(echo_server) == expected_connections
    assert echo_server.service.nrequests == 3


def test_pooled_connection_is_returned_and_reused(rt, echo_server):
    channel = connect(echo_server, connection_type="pooled")
    cntl, _ = echo(channel)
    assert not cntl.Failed(), cntl.ErrorText()
    main = rpc.Socket.Address(channel._server_id)
    assert len(main._pool) == 1                       # given back after the call
    pooled_id = main._pool[0]
    cntl, _ = echo(channel)
    assert not cntl.Failed(), cntl.ErrorText()
    assert main._pool == [pooled_id]                  # the same connection, back again
    assert main.fd is None                            # the main socket itself never connected


def test_short_connections_are_closed_after_each_call(rt, echo_server):
    channel = connect(echo_server, connection_type="short")
    state = rpc_state(rt)
    for _ in range(3):
        cntl, _ = echo(channel)
        assert not cntl.Failed(), cntl.ErrorText()
        live_short = [s for s in state.live_sockets() if s.connection_type == "short"]
        assert live_short == []
    assert accepted(echo_server) == 3


# -- load balancing over list:// ----------------------------------------------------------------

@pytest.fixture
def three_servers(rt):
    servers = [EchoServer(), EchoServer(), EchoServer()]
    started = []
    try:
        for server in servers:
            server.start()
            started.append(server)
        yield servers
    finally:
        for server in started:
            server.stop()


def list_url(servers) -> str:
    return "list://" + ",".join(f"127.0.0.1:{s.port}" for s in servers)


def test_round_robin_reaches_every_server_evenly(rt, three_servers):
    channel = Channel()
    assert channel.Init(list_url(three_servers), "rr", ChannelOptions()) == 0
    assert not channel.SingleServer()
    ports = []
    for i in range(9):
        cntl, response = echo(channel, f"rr {i}")
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == f"rr {i}"
        ports.append(cntl.remote_side()[1])
    assert [s.service.nrequests for s in three_servers] == [3, 3, 3]
    assert sorted(set(ports)) == sorted(s.port for s in three_servers)
    # a prime stride over 3 servers visits each once per round
    for start in range(0, 9, 3):
        assert len(set(ports[start:start + 3])) == 3


def test_random_balancer_spreads_calls(rt, three_servers):
    channel = Channel()
    assert channel.Init(list_url(three_servers), "random", ChannelOptions()) == 0
    ports = set()
    for i in range(30):
        cntl, response = echo(channel, f"random {i}")
        assert not cntl.Failed(), cntl.ErrorText()
        ports.add(cntl.remote_side()[1])
    assert sum(s.service.nrequests for s in three_servers) == 30
    assert ports <= {s.port for s in three_servers}
    assert len(ports) >= 2          # 30 uniform picks from 3 all landing on one: p = 3 * 3**-30


def test_round_robin_skips_a_dead_server(rt, three_servers):
    channel = Channel()
    assert channel.Init(list_url(three_servers), "rr", ChannelOptions()) == 0
    three_servers[1].stop()
    retried = []
    try:
        for i in range(6):
            cntl, response = echo(channel, f"rr {i}")
            assert not cntl.Failed(), cntl.ErrorText()
            assert response.message == f"rr {i}"
            retried.append(cntl.retried_count())
    finally:
        three_servers[1].start()        # so the fixture can stop it again
    assert three_servers[0].service.nrequests + three_servers[2].service.nrequests == 6
    # the first call sent to the dead server was refused and retried on another (the refused
    # server is excluded for that RPC); after that its failed main socket is skipped
    assert retried.count(1) == 1 and retried.count(0) == 5


# -- many bthreads on one connection ------------------------------------------------------------

def test_many_bthreads_share_one_connection(rt, echo_server):
    channel = connect(echo_server, timeout_ms=10_000)
    results = {}

    def caller(i):
        cntl, response = echo(channel, f"message {i}", attachment=f"attachment {i}".encode())
        results[i] = (cntl.ErrorText(), response.message, cntl.response_attachment().to_bytes())

    tids = [bthread_start_background(caller, i) for i in range(50)]
    for tid in tids:
        assert bthread_join(tid) == 0
    assert len(results) == 50
    for i, (text, message, attachment) in results.items():
        assert text == ""
        assert message == f"message {i}", "a response went to the wrong caller"
        assert attachment == f"attachment {i}".encode()
    assert accepted(echo_server) == 1
    assert echo_server.service.nrequests == 50


# -- unknown service or method ------------------------------------------------------------------

def _call(stub_class, channel, method_name: str):
    from google.protobuf import message_factory
    method = stub_class.DESCRIPTOR.methods_by_name[method_name]
    request = message_factory.GetMessageClass(method.input_type)(message="hello world")
    cntl = Controller()
    response = getattr(stub_class(channel), method_name)(cntl, request)
    return cntl, response


@pytest.mark.parametrize("service, method, code, text", [
    ("example.EchoService", "NoSuchMethod", rpc.errors.ENOMETHOD,
     "Fail to find method=example.EchoService/NoSuchMethod"),
    # brpc: an unknown *dotted* service is reported as ENOMETHOD too, naming service/method
    ("example.NoSuchService", "Echo", rpc.errors.ENOMETHOD, "Fail to find method=example.NoSuchService/Echo"),
    ("NoSuchService", "Echo", rpc.errors.ENOSERVICE, "Fail to find service=NoSuchService"),
])
def test_unknown_method_or_service(rt, echo_server, service, method, code, text):
    stubs = stubs_for_unknown_names()
    channel = connect(echo_server)
    cntl, _ = _call(stubs[service], channel, method)
    assert cntl.Failed()
    assert cntl.ErrorCode() == code
    assert text in cntl.ErrorText()
    # the server names itself in the text, as brpc does: [ip:port][E<code>]...
    assert f"[127.0.0.1:{echo_server.port}][E{code}]{text}" in cntl.ErrorText()
    assert cntl.retried_count() == 0, "a server's answer is never retried"
    assert echo_server.service.nrequests == 0
    # the connection stays open: a good call goes over the same one
    cntl, response = _call(stubs["example.EchoService"], channel, "Echo")
    assert not cntl.Failed(), cntl.ErrorText()
    assert response.message == "hello world"
    assert accepted(echo_server) == 1


# -- a server in a runtime of its own -----------------------------------------------------------

@pytest.mark.parametrize("mode", ["deterministic"])      # peers link two deterministic runtimes
def test_peer_server_in_its_own_deterministic_runtime(rt):
    """``EchoServer(peer_of=rt)``: the server's bthreads and sockets live in a second runtime that
    ``rt`` drives when idle, "another process" whose schedule is still reproducible."""
    with EchoServer(peer_of=rt) as server:
        channel = connect(server)
        for i in range(3):
            cntl, response = echo(channel, f"peer {i}", attachment=b"att")
            assert not cntl.Failed(), cntl.ErrorText()
            assert response.message == f"peer {i}"
            assert cntl.response_attachment().to_bytes() == b"att"
        assert server.service.nrequests == 3
        assert server.runtime is not rt
        # the client's runtime holds only client sockets; the server's are in its own runtime
        assert all(s.created_by_connect or s.fd is None for s in rpc_state(rt).live_sockets())
    assert server.runtime.closed and not server.runtime.unfinished and not server.runtime.errors


@pytest.mark.parametrize("peer", [False, True], ids=["same-runtime", "peer-runtime"])
def test_deterministic_runs_over_real_sockets_repeat_exactly(peer):
    """Same seed, same program: the same trace, event for event, although the bytes go through
    the kernel's loopback (stable labels only: tids, groups, socket slots; never ports)."""
    def run():
        with rpc_runtime(seed=3) as runtime:
            with EchoServer(peer_of=runtime if peer else None) as server:
                channel = connect(server)
                tids = [bthread_start_background(lambda i=i: echo(channel, f"m{i}")) for i in range(5)]
                for tid in tids:
                    assert bthread_join(tid) == 0
            return [(e.kind, e.bthread, e.group, e.detail, e.now_us) for e in runtime.trace]

    first = run()
    assert any(kind == "ProcessRpcResponse" for kind, *_ in first)
    assert run() == first


def test_bthread_from_main_runs_while_the_only_worker_waits_in_epoll():
    """concurrency=1: once a connection exists, the only worker blocks in the EventDispatcher's
    epoll. A bthread started from main then went to ``_remote_rq`` with nobody asleep to signal and
    waited for the next I/O event — for ever when none came (found by chapter 09's helper)."""
    with Runtime(concurrency=1, mode="threads") as runtime:
        with EchoServer() as server:
            channel = Channel()
            assert channel.Init(f"127.0.0.1:{server.port}", ChannelOptions()) == 0
            cntl = Controller()
            EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest(message="x"))
            assert not cntl.Failed(), cntl.ErrorText()
            time.sleep(0.1)   # the worker is back in epoll, nothing else to do
            ran = []
            tid = bthread_start_background(ran.append, "ran")
            wait_for(lambda: ran, timeout=PROMPTLY_S, what="the bthread started from main")
            bthread_join(tid)
        close_checked(runtime)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_message_run_in_place_does_not_hold_the_connection(seed):
    """brpc's reader runs the last message it cut only on its way out, after MoreReadEvents has
    given the socket back (~InputMessageClosure, input_messenger.cpp): a request arriving while
    that handler runs gets a reader of its own instead of waiting for the handler to finish.
    Here the server's handler takes 30 ms; the second request follows the first by 10 ms on the
    same connection, so it must be answered 40 ms after the start, not 60 (the kit used to run
    the message inside its read loop, still owning the socket)."""
    from brpc_mini.bthread import bthread_usleep
    with Runtime(concurrency=4, mode="deterministic", seed=seed, trace=False, io_wait_ms=0) as rt:
        server = EchoServer(delay_us=30_000)
        server.start()
        try:
            channel = Channel()
            assert channel.Init(f"127.0.0.1:{server.port}", ChannelOptions(timeout_ms=1000)) == 0
            ended_us = {}

            def call(name, after_us):
                if after_us:
                    bthread_usleep(after_us)
                cntl = Controller()
                EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest(message=name))
                assert not cntl.Failed(), cntl.ErrorText()
                ended_us[name] = rt.gettimeofday_us()

            t0 = rt.gettimeofday_us()
            tids = [bthread_start_background(call, "first", 0), bthread_start_background(call, "second", 10_000)]
            for tid in tids:
                bthread_join(tid)
            assert 30_000 <= ended_us["first"] - t0 < 35_000
            assert 40_000 <= ended_us["second"] - t0 < 45_000
        finally:
            server.stop()
