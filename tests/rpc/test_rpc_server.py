"""The server's own behaviour, checked against brpc's Server and Acceptor: ServerOptions
(max_concurrency, idle_timeout_sec, ignore_eovercrowded), Stop and Join with requests in flight,
the Acceptor's table of connections and its accept() errors, and what AddService refuses.

brpc: src/brpc/server.cpp, src/brpc/acceptor.cpp, src/brpc/policy/baidu_rpc_protocol.cpp
(ProcessRpcRequest, SendRpcResponse), src/brpc/details/server_private_accessor.h.

Every test runs in both runtime modes unless it says otherwise. Nothing waits on a guessed delay:
a service that must stay busy waits on a butex the test opens.
"""
from __future__ import annotations

import errno
import logging
import socket
import time

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from brpc_mini import rpc
from brpc_mini.bthread import Butex, bthread_join, bthread_start_background, bthread_usleep, butex_wait, butex_wake_all
from brpc_mini.echo_server import EchoServiceImpl
from brpc_mini.proto import echo_pb2
from brpc_mini.rpc import Channel, ChannelOptions, Server, ServerOptions, Socket
from brpc_mini.rpc import server as server_module
from brpc_mini.rpc.errors import ELIMIT, EOVERCROWDED
from rpc_helpers import PROMPTLY_S, drive_until, echo

ECHO_DESCRIPTOR = echo_pb2.DESCRIPTOR.services_by_name["EchoService"]


def start(service, options: ServerOptions | None = None) -> tuple[Server, int]:
    server = Server(options)
    server.AddService(service)
    return server, server.Start("127.0.0.1:0")


def connect(port: int, **options) -> Channel:
    options.setdefault("timeout_ms", 10_000)
    options.setdefault("max_retry", 0)
    channel = Channel()
    assert channel.Init(f"127.0.0.1:{port}", ChannelOptions(**options)) == 0
    return channel


class Reply:
    """What a done callback got: ``.message`` once the call has ended (None until then)."""
    message = None

    def __call__(self, response):
        self.message = response.message if response is not None else None


def assert_echoes(channel, message: str) -> None:
    """One synchronous Echo on ``channel`` succeeds and brings ``message`` back."""
    cntl, response = echo(channel, message)
    assert not cntl.Failed(), cntl.ErrorText()
    assert response.message == message


def call_async(channel, message: str):
    """Start one Echo with a done callback; returns (cntl, reply)."""
    reply = Reply()
    cntl, _ = echo(channel, message, done=reply)
    return cntl, reply


class GatedEcho:
    """Echo that keeps every request waiting until the test opens the gate."""
    DESCRIPTOR = ECHO_DESCRIPTOR

    def __init__(self):
        self.gate = Butex(0, owner="test gate")
        self.nrequests = 0

    def Echo(self, cntl, request, response, done):
        self.nrequests += 1
        while self.gate.value == 0:
            butex_wait(self.gate, 0)
        response.message = request.message
        done.Run()

    def open(self):
        self.gate.value = 1
        butex_wake_all(self.gate)


class LateDone:
    """Returns at once and runs ``done`` later, from a bthread of its own (brpc's asynchronous
    service style). ``hold`` keeps the first request's ``done`` until the test runs it."""
    DESCRIPTOR = ECHO_DESCRIPTOR

    def __init__(self, delay_us: int = 0, hold: bool = False):
        self.delay_us = delay_us
        self.hold = hold
        self.held = []
        self.events = []
        self.nrequests = 0

    def Echo(self, cntl, request, response, done):
        self.nrequests += 1
        response.message = request.message
        if self.hold and not self.held:
            self.held.append(done)
            return

        def later():
            if self.delay_us:
                bthread_usleep(self.delay_us)
            self.events.append("done.Run")
            done.Run()
        bthread_start_background(later)


def run_in_bthread(fn) -> None:
    assert bthread_join(bthread_start_background(fn)) == 0


# -- 1. ServerOptions ---------------------------------------------------------------------------

def test_max_concurrency_answers_elimit_with_brpcs_text(rt):
    """brpc: ProcessRpcRequest asks AddConcurrency right after the ELOGOFF check and answers
    ELIMIT "Reached server's max_concurrency=%d"."""
    service = GatedEcho()
    server, port = start(service, ServerOptions(max_concurrency=1))
    try:
        channel = connect(port)
        calls = [call_async(channel, f"m{i}") for i in range(3)]
        # one request is served (and waits at the gate); the other two are refused at once
        drive_until(rt, lambda: sum(c.ErrorCode() == ELIMIT for c, _ in calls) == 2,
                    what="two calls refused with ELIMIT")
        service.open()
        for cntl, _ in calls:
            assert rpc.Join(cntl.call_id()) == 0
        served = [(c, r) for c, r in calls if not c.Failed()]
        refused = [c for c, _ in calls if c.Failed()]
        assert len(served) == 1 and served[0][1].message in ("m0", "m1", "m2")
        for cntl in refused:
            assert cntl.ErrorCode() == ELIMIT
            assert cntl.ErrorText().endswith("Reached server's max_concurrency=1"), cntl.ErrorText()
        # the refused requests were counted too, and uncounted when their answers went out
        drive_until(rt, lambda: server._concurrency == 0, what="every request uncounted")
        assert_echoes(channel, "again")
    finally:
        service.open()
        server.Stop()
        server.Join()


def test_max_concurrency_counts_a_request_until_its_response_is_sent(rt):
    """brpc uncounts a request in SendRpcResponse (ConcurrencyRemover), not when the service
    method returns: a request whose done runs later still holds its slot."""
    service = LateDone(hold=True)
    server, port = start(service, ServerOptions(max_concurrency=1))
    try:
        channel = connect(port)
        first, first_response = call_async(channel, "first")
        drive_until(rt, lambda: len(service.held) == 1, what="the first request held")
        cntl, _ = echo(channel, "second")
        assert cntl.ErrorCode() == ELIMIT, cntl.ErrorText()
        run_in_bthread(service.held[0].Run)
        assert rpc.Join(first.call_id()) == 0
        assert not first.Failed() and first_response.message == "first"
        drive_until(rt, lambda: server._concurrency == 0, what="the first request uncounted")
        assert_echoes(channel, "third")
    finally:
        server.Stop()
        server.Join()


def test_no_max_concurrency_means_no_limit(rt):
    service = GatedEcho()
    server, port = start(service)
    try:
        channel = connect(port)
        calls = [call_async(channel, f"m{i}") for i in range(3)]
        drive_until(rt, lambda: service.nrequests == 3, what="three requests in the service at once")
        service.open()
        for cntl, _ in calls:
            assert rpc.Join(cntl.call_id()) == 0
            assert not cntl.Failed(), cntl.ErrorText()
    finally:
        service.open()
        server.Stop()
        server.Join()


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(max_concurrency="auto"), ValueError, ["max_concurrency", "only a number"]),
    (dict(max_concurrency=2.5), TypeError, ["max_concurrency", "int"]),
    (dict(idle_timeout_sec=0.5), TypeError, ["idle_timeout_sec", "int"]),
    (dict(idle_timeout_sec=True), TypeError, ["idle_timeout_sec", "int"]),
    (dict(ignore_eovercrowded=1), TypeError, ["ignore_eovercrowded", "bool"]),
])
def test_server_options_refuse_what_they_cannot_honour(kwargs, error, words):
    with pytest.raises(error) as info:
        ServerOptions(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_server_options_defaults_are_brpcs():
    options = ServerOptions()
    assert (options.idle_timeout_sec, options.max_concurrency, options.ignore_eovercrowded) == (-1, 0, False)
    with pytest.raises(TypeError):
        ServerOptions(closewait_ms=10)            # not an option of brpc's ServerOptions either


def test_idle_timeout_closes_an_idle_connection(rt, monkeypatch):
    """brpc: the Acceptor's CloseIdleConnections bthread releases a connection with no data for
    idle_timeout_sec (checked once a second; shortened here so threads mode stays quick)."""
    monkeypatch.setattr(server_module, "CLOSE_IDLE_CHECK_INTERVAL_US", 100_000)
    server, port = start(EchoServiceImpl(), ServerOptions(idle_timeout_sec=1))
    try:
        cntl, response = echo(connect(port), "hi")
        assert not cntl.Failed(), cntl.ErrorText()
        acceptor = server._acceptor
        assert acceptor.ConnectionCount() == 1
        started = time.monotonic()
        drive_until(rt, lambda: acceptor.ConnectionCount() == 0, timeout=PROMPTLY_S * 2,
                    what="the idle connection closed")
        if rt.threads_mode:
            assert time.monotonic() - started >= 0.5     # not at the first check: only once idle
        assert rpc_socket_count_live_server_side(rt, port) == 0
    finally:
        server.Stop()
        server.Join()


@pytest.mark.parametrize("mode", ["deterministic"])     # a 3 s request: virtual time only
def test_idle_timeout_lets_a_busy_connection_answer_first(rt):
    """No bytes move while the service works for 3 s, longer than idle_timeout_sec; brpc only
    drops the Acceptor's reference then, so the answer still goes out before the close."""
    server, port = start(EchoServiceImpl(delay_us=3_000_000), ServerOptions(idle_timeout_sec=1))
    try:
        cntl, response = echo(connect(port), "slow")
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == "slow"
        drive_until(rt, lambda: server._acceptor.ConnectionCount() == 0, what="the connection closed")
    finally:
        server.Stop()
        server.Join()


def rpc_socket_count_live_server_side(rt, port: int) -> int:
    return sum(1 for s in rpc.rpc_state(rt).live_sockets()
               if s.local_side is not None and s.local_side[1] == port and s.fd is not None
               and s.user is not None and getattr(s.user, "server", None) is None)


@pytest.mark.parametrize("ignore", [False, True])
def test_an_overcrowded_connection_gets_eovercrowded(rt, ignore):
    """brpc: after the method is found, a request on a connection whose unwritten bytes are over
    the limit is answered EOVERCROWDED "Connection to <client> is overcrowded", unless
    ServerOptions.ignore_eovercrowded."""
    server, port = start(EchoServiceImpl(), ServerOptions(ignore_eovercrowded=ignore))
    try:
        channel = connect(port)
        cntl, _ = echo(channel, "first")
        assert not cntl.Failed(), cntl.ErrorText()
        (sid,) = server._acceptor.ListConnections()
        conn = Socket.Address(sid)
        conn._overcrowded = True      # as if the client had left 64 MiB of answers unread
        cntl, response = echo(channel, "second")
        if ignore:
            assert not cntl.Failed(), cntl.ErrorText()
            assert response.message == "second"
        else:
            assert cntl.ErrorCode() == EOVERCROWDED
            client = cntl.local_side()
            assert cntl.ErrorText().endswith(f"Connection to {client[0]}:{client[1]} is overcrowded"), cntl.ErrorText()
        # writing the answer brought the count back under the limit
        cntl, response = echo(channel, "third")
        assert not cntl.Failed(), cntl.ErrorText()
    finally:
        server.Stop()
        server.Join()


# -- 2. Stop and Join ---------------------------------------------------------------------------

def test_stop_lets_an_in_flight_request_answer(rt):
    """brpc's StopAccept only releases the Acceptor's reference on each connection: a request
    being processed is answered, then its connection closes."""
    service = GatedEcho()
    server, port = start(service)
    channel = connect(port)
    cntl, response = call_async(channel, "in flight")
    try:
        drive_until(rt, lambda: service.nrequests == 1, what="the request in the service")
        assert server.Stop() == 0
        assert not server.IsRunning()
        assert server._acceptor.ConnectionCount() == 1        # kept open for the request
    finally:
        service.open()
    assert server.Join() == 0
    assert rpc.Join(cntl.call_id()) == 0
    assert not cntl.Failed(), cntl.ErrorText()
    assert response.message == "in flight"
    assert server._acceptor.ConnectionCount() == 0


def test_stop_closes_idle_connections_at_once(rt):
    server, port = start(EchoServiceImpl())
    channel = connect(port)
    cntl, _ = echo(channel, "hi")
    assert not cntl.Failed(), cntl.ErrorText()
    assert server._acceptor.ConnectionCount() == 1
    assert server.Stop() == 0
    assert server._acceptor.ConnectionCount() == 0
    started = time.monotonic()
    assert server.Join() == 0
    assert time.monotonic() - started < PROMPTLY_S


def test_join_waits_for_a_done_run_later_by_another_bthread(rt):
    """Each request's Controller holds its connection until SendRpcResponse, and Acceptor::Join
    waits for every connection: so Join returns after a late done.Run(), not when the service
    method returned."""
    service = LateDone(delay_us=300_000)
    server, port = start(service)
    cntl, response = call_async(connect(port), "late")
    drive_until(rt, lambda: service.nrequests == 1, what="the request in the service")
    assert server.Stop() == 0
    assert server.Join() == 0
    service.events.append("Join returned")
    assert service.events == ["done.Run", "Join returned"]
    assert rpc.Join(cntl.call_id()) == 0
    assert not cntl.Failed(), cntl.ErrorText()
    assert response.message == "late"


def test_a_request_arriving_while_stopping_gets_elogoff(rt):
    """The connection of an in-flight request stays open; what else comes on it is answered
    ELOGOFF "Server is stopping" (and holds the connection until that answer is out)."""
    service = GatedEcho()
    server, port = start(service)
    channel = connect(port)
    first, _ = call_async(channel, "first")
    try:
        drive_until(rt, lambda: service.nrequests == 1, what="the first request in the service")
        assert server.Stop() == 0
        second, _ = echo(channel, "second")
        assert second.ErrorCode() == rpc.errors.ELOGOFF
        assert second.ErrorText().endswith("Server is stopping"), second.ErrorText()
    finally:
        service.open()
    assert server.Join() == 0
    assert rpc.Join(first.call_id()) == 0
    assert not first.Failed(), first.ErrorText()


def test_join_before_stop_waits_for_stop(rt):
    """brpc: "NOTE: Join() can happen before Stop()" — it blocks until the server is stopped."""
    server, port = start(EchoServiceImpl())
    joiner = rt.start_pthread(server.Join, name="joiner")
    if rt.threads_mode:
        time.sleep(0.2)
    else:
        drive_until(rt, lambda: joiner.wait_pred is not None, what="Join blocked")
    assert not joiner.done
    assert server.IsRunning()
    cntl, _ = echo(connect(port), "still serving")
    assert not cntl.Failed(), cntl.ErrorText()
    assert server.Stop() == 0
    assert joiner.join(PROMPTLY_S) == 0
    assert joiner.done


def test_stop_and_join_of_a_server_not_running_return_minus_one(rt):
    server = Server()
    server.AddService(EchoServiceImpl())
    assert server.Stop() == -1 and server.Join() == -1          # never started
    server.Start("127.0.0.1:0")
    assert server.Stop() == 0
    assert server.Stop() == -1                                   # already stopping
    with pytest.raises(RuntimeError, match="STOPPING"):
        server.Start("127.0.0.1:0")                              # brpc: not READY until joined
    assert server.Join() == 0
    assert server.Stop() == -1 and server.Join() == -1
    port = server.Start("127.0.0.1:0")                           # READY again: may restart
    cntl, _ = echo(connect(port), "again")
    assert not cntl.Failed(), cntl.ErrorText()
    assert server.Stop() == 0 and server.Join() == 0


def test_a_dropped_done_does_not_hold_join(rt):
    """A service method that returns without running done and keeps no reference to it: the kit
    ends that request (brpc would leak it and Join would wait forever), so Join is prompt."""
    from brpc_mini.echo_server import EchoServer
    server = EchoServer(drop=True)
    server.start()
    cntl, _ = call_async(connect(server.port, timeout_ms=-1), "never answered")
    drive_until(rt, lambda: server.service.nrequests == 1, what="the request in the service")
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < PROMPTLY_S
    assert rpc.Join(cntl.call_id()) == 0
    assert cntl.Failed()                                      # the connection closed under it


def test_join_gives_up_on_a_done_that_is_never_run(rt, caplog):
    """brpc would wait forever for a done that is kept and never run; the kit's Join gives up
    after Server.join_timeout_s, closes the connection and returns -1."""
    service = LateDone(hold=True)
    server, port = start(service)
    server.join_timeout_s = 0.5
    cntl, _ = call_async(connect(port, timeout_ms=-1), "kept")
    drive_until(rt, lambda: len(service.held) == 1, what="the request held")
    assert server.Stop() == 0
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="brpc_mini.rpc"):
        assert server.Join() == -1
    assert time.monotonic() - started < PROMPTLY_S
    assert "Server.Join gave up after 0.5s: 1 request(s) on 1 connection(s)" in caplog.text
    assert rpc.Join(cntl.call_id()) == 0
    assert cntl.Failed()                                      # its connection was closed
    run_in_bthread(service.held[0].Run)                       # too late: dropped, no error
    assert not server.IsRunning() and server.Join() == -1


def test_add_service_is_refused_while_stopping(rt):
    service = GatedEcho()
    server, port = start(service)
    call_async(connect(port), "busy")
    try:
        drive_until(rt, lambda: service.nrequests == 1, what="the request in the service")
        server.Stop()
        with pytest.raises(RuntimeError, match="STOPPING"):
            server.AddService(EchoServiceImpl(), descriptor=make_services()["x.Other"])
    finally:
        service.open()
    assert server.Join() == 0


# -- 3. The Acceptor ----------------------------------------------------------------------------

def test_the_acceptor_forgets_closed_connections(rt):
    """brpc erases a connection from _socket_map in Acceptor::BeforeRecycle; the kit kept every
    SocketId it ever accepted."""
    server, port = start(EchoServiceImpl())
    try:
        for _ in range(20):
            socket.create_connection(("127.0.0.1", port)).close()
        acceptor = server._acceptor
        drive_until(rt, lambda: acceptor.naccepted == 20 and acceptor.ConnectionCount() == 0,
                    what="20 connections accepted and forgotten")
        assert acceptor.ListConnections() == []
        cntl, _ = echo(connect(port), "hi")
        assert not cntl.Failed(), cntl.ErrorText()
        assert acceptor.ConnectionCount() == 1
    finally:
        server.Stop()
        server.Join()


class FlakyListenFd:
    """The listening fd, failing its first ``failures`` accept() calls with EMFILE."""

    def __init__(self, real, failures: int):
        self.real = real
        self.failures = failures

    def accept(self):
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self.real.accept()

    def fileno(self):
        return self.real.fileno()

    def close(self):
        self.real.close()


def test_accept_failures_are_retried_until_eagain(rt, caplog):
    """brpc never leaves OnNewConnectionsUntilEAGAIN on an accept() error: the listening fd is
    edge-triggered, so a connection left in the backlog would wait for the next client. The kit
    returned, and the call below timed out."""
    server, port = start(EchoServiceImpl())
    try:
        listen_socket = Socket.Address(server._listen_id)
        listen_socket.fd = FlakyListenFd(listen_socket.fd, 3)
        with caplog.at_level(logging.ERROR, logger="brpc_mini.rpc"):
            cntl, response = echo(connect(port, timeout_ms=3_000), "after EMFILE")
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == "after EMFILE"
        assert listen_socket.fd.failures == 0
        # logged at most once a second (brpc: PLOG_EVERY_SECOND), not once per try
        assert caplog.text.count("Fail to accept from listened_fd=") == 1
    finally:
        server.Stop()
        server.Join()


# -- 4. AddService ------------------------------------------------------------------------------

def make_services() -> dict:
    """Service descriptors in a private pool: ``a.EchoService``, ``b.EchoService`` (same short
    name), ``c.EchoService`` with no method, ``x.Other``."""
    pool = descriptor_pool.DescriptorPool()

    def add(package, service, methods=True):
        f = descriptor_pb2.FileDescriptorProto(name=f"{package}_{service}.proto", package=package)
        f.message_type.add(name="M")
        s = f.service.add(name=service)
        if methods:
            s.method.add(name="Echo", input_type=f".{package}.M", output_type=f".{package}.M")
        pool.AddSerializedFile(f.SerializeToString())
        return pool.FindServiceByName(f"{package}.{service}")

    return {"a.EchoService": add("a", "EchoService"), "b.EchoService": add("b", "EchoService"),
            "c.EchoService": add("c", "EchoService", methods=False), "x.Other": add("x", "Other")}


class NoImpl:
    pass


def test_add_service_refuses_a_service_without_methods():
    services = make_services()
    server = Server()
    with pytest.raises(ValueError, match=r"^service=c\.EchoService does not have any method\.$"):
        server.AddService(NoImpl(), descriptor=services["c.EchoService"])
    assert server._services == {}


def test_add_service_refuses_a_second_service_with_the_same_short_name():
    """brpc: "Conflict service name between ..." — undotted (jprotobuf) requests are routed by
    the short name, so two packages' EchoService cannot both be served."""
    services = make_services()
    server = Server()
    assert server.AddService(NoImpl(), descriptor=services["a.EchoService"]) == 0
    with pytest.raises(ValueError, match=r"Conflict service name between b\.EchoService and a\.EchoService"):
        server.AddService(NoImpl(), descriptor=services["b.EchoService"])
    with pytest.raises(ValueError, match=r"^service=a\.EchoService already exists$"):
        server.AddService(NoImpl(), descriptor=services["a.EchoService"])
    assert server.AddService(NoImpl(), descriptor=services["x.Other"]) == 0
    assert list(server._services) == ["a.EchoService", "x.Other"]
    assert server.FindServiceByName("EchoService")[1].full_name == "a.EchoService"


def test_options_changed_after_construction_are_checked_at_start(rt):
    options = ServerOptions()
    options.max_concurrency = "auto"
    server = Server(options)
    server.AddService(EchoServiceImpl())
    with pytest.raises(ValueError, match="max_concurrency"):
        server.Start("127.0.0.1:0")
    assert not server.IsRunning()


def test_a_method_not_implemented_is_failed_as_protoc_does(rt):
    """protoc's default method body calls the text-only SetFailed: code -1, no [E...] of its own,
    which SendRpcResponse sends as EINTERNAL; the client then sees one [E2001], as with brpc."""
    class NoEcho:
        DESCRIPTOR = ECHO_DESCRIPTOR

    server = Server()
    server.AddService(NoEcho(), descriptor=ECHO_DESCRIPTOR)
    port = server.Start("127.0.0.1:0")
    try:
        cntl, _ = echo(connect(port), "hi")
        assert cntl.ErrorCode() == 2001
        assert cntl.ErrorText() == f"[E2001][127.0.0.1:{port}]Method Echo() not implemented.", cntl.ErrorText()
    finally:
        server.Stop()
        server.Join()
