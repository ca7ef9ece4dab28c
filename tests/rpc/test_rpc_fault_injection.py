"""Fault injection on the client's failure paths, in both runtime modes, sync and async.

brpc: design 5.5-5.10 (IssueRPC, OnVersionedRPCReturned, the four outcomes, HandleSocketFailed,
EndRPC). What is injected here, and what brpc does about it:

* a retryable error answer (ELIMIT) -> the next try goes out on the next version of the
  correlation id (call_id + nretry + 1); a late answer of the earlier try is *stale*: ignored, the
  error code it brought is not kept;
* a response slower than ``backup_request_ms`` -> a backup try while the first is pending; the
  first answer wins and the other is dropped; with two servers the backup goes to the other one;
  with ``max_retry = 0`` the RPC ends with EBACKUPREQUEST (brpc's quirk, design 5.6);
* the server process killed (SIGKILL) mid-call -> every pending call fails promptly with the
  socket's error and is retried per policy; nothing hangs;
* the server stalls (accepts, never answers) -> ERPCTIMEDOUT at the deadline, never retried;
* the connection dropped mid-frame (half a response, then close) -> EEOF, retried; a pooled
  connection retries on a fresh connection and succeeds;
* a response delayed past the timeout -> ERPCTIMEDOUT, and the late answer is dropped;
* a custom RetryPolicy -> asked in a bthread of its own (it may block), as brpc does;
* a try completing after its connection failed and its slot was reused -> the later connection
  in that slot is left alone (Socket objects are reused per slot, without reference counts).

test_rpc_failures.py covers refused connects, the exact deadline, cancel and a plain close.
"""
from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import threading
import time

import pytest

from brpc_mini import rpc
from brpc_mini.echo_server import EchoServer, EchoServerProcess
from brpc_mini.proto import echo_pb2
from brpc_mini.rpc import Channel, ChannelOptions, Controller
from brpc_mini.rpc.errors import EBACKUPREQUEST, EEOF, EFAILEDSOCKET, EHOSTDOWN, ELIMIT, ERPCTIMEDOUT
from brpc_mini.rpc.policy.baidu_rpc_protocol import PackRpcResponse, RpcMeta
from rpc_helpers import PROMPTLY_S, EchoService_Stub, drive_until, recv_frame, wait_for

#: what a call on a lost connection may end with (the last try's code): the socket's own error,
#: or, once the main socket has failed, "Not connected ... yet" / a refused reconnect
LOST = (EEOF, EFAILEDSOCKET, EHOSTDOWN, errno.ECONNRESET, errno.ECONNREFUSED, errno.EPIPE)


def connect(target, lb: str = "", **options) -> Channel:
    channel = Channel()
    if lb:
        assert channel.Init(target, lb, ChannelOptions(**options)) == 0
    else:
        assert channel.Init(target, ChannelOptions(**options)) == 0
    return channel


def call(rt, channel, cntl: Controller, sync: bool, message: str = "hello"):
    """One Echo, synchronous or asynchronous; returns (response, number of times done ran)."""
    if sync:
        response = EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest(message=message))
        return response, 1
    ran = []
    assert EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest(message=message), ran.append) is None
    assert rpc.Join(cntl.call_id()) == 0
    assert len(ran) == 1
    return ran[0], len(ran)


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


SYNC = pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])


# -- a raw fake server -------------------------------------------------------------------------

class FakeServer:
    """A plain-thread TCP server speaking raw baidu_std, told by ``script`` what to do.

    ``script(conn_index, request_index, cid, message) -> list of actions``, each one of
    ``("ok", cid, text)`` (an Echo answer), ``("error", cid, code, text)``, ``("half", cid)``
    (half of an answer, then close), ``("close",)``, ``("ignore",)``.
    Every request's correlation id is recorded in ``seen`` as (conn_index, cid).
    """

    def __init__(self, script):
        self.script = script
        self.seen: list = []
        self.errors: list = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._conns: list = []
        self._thread = threading.Thread(target=self._run, name="FakeServer", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        self.listener.close()
        for c in self._conns:
            c.close()
        return False

    def _run(self):
        workers = []
        nconn = 0
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, nconn), daemon=True)
            nconn += 1
            t.start()
            workers.append(t)
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in workers:
            t.join(10)

    def _serve(self, conn, index):
        conn.settimeout(None)
        # no Nagle: two small frames in a row must not wait 40 ms for a delayed ACK, longer than
        # a deterministic runtime waits for real I/O before it moves its clock to the deadline
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        nreq = 0
        while not self._stop.is_set():
            try:
                frame = recv_frame(conn)
            except (ConnectionError, OSError, AssertionError):
                return
            meta_size = struct.unpack(">I", frame[8:12])[0]
            meta = RpcMeta.FromString(frame[12:12 + meta_size])
            cid = meta.correlation_id & ((1 << 64) - 1)
            request = echo_pb2.EchoRequest.FromString(frame[12 + meta_size:])
            self.seen.append((index, cid))
            for action in self.script(index, nreq, cid, request.message):
                kind = action[0]
                try:
                    if kind == "ok":
                        body = echo_pb2.EchoResponse(message=action[2]).SerializeToString()
                        conn.sendall(PackRpcResponse(action[1], 0, "", body))
                    elif kind == "error":
                        conn.sendall(PackRpcResponse(action[1], action[2], action[3], None))
                    elif kind == "half":
                        body = echo_pb2.EchoResponse(message=request.message).SerializeToString()
                        frame_out = PackRpcResponse(action[1], 0, "", body)
                        conn.sendall(frame_out[:len(frame_out) // 2])
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                    elif kind == "close":
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                    elif kind == "sleep":
                        time.sleep(action[1])
                except OSError as exc:
                    self.errors.append(exc)
                    return
            nreq += 1


# -- retries: each try on the next version; a late answer of an earlier try is stale ------------

@SYNC
def test_retry_goes_out_on_the_next_version_and_a_stale_answer_is_ignored(rt, sync):
    def script(conn, nreq, cid, message):
        if nreq == 0:
            return [("error", cid, ELIMIT, "busy, try again")]        # retryable (RpcRetryPolicy)
        # try 1: first a late answer of try 0 (version cid - 1) with an error, then the real one
        return [("error", cid - 1, errno.EINVAL, "STALE answer of try 0"), ("ok", cid, message)]

    with FakeServer(script) as server:
        channel = connect(f"127.0.0.1:{server.port}", timeout_ms=5_000)
        cntl = Controller()
        response, _ = call(rt, channel, cntl, sync, "retried")
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == "retried"
        assert cntl.retried_count() == 1
        call_id = cntl.call_id()
        assert [cid for _, cid in server.seen] == [call_id + 1, call_id + 2]   # call_id + nretry + 1
        if not rt.threads_mode:
            # the two answers arrive in one read: the first cut goes to a new bthread, the last is
            # processed in place, so either try 0's answer finds try 1 current (stale: ignored) or
            # the RPC already over (its Id destroyed: dropped). Never applied.
            drive_until(rt, lambda: [e for e in rt.trace.of_kind("stale", "drop_response")
                                     if f"cid=0x{call_id + 1:x}" in e.detail], what="try 0's answer ignored")
        assert not cntl.Failed() and response.message == "retried"


@SYNC
def test_retries_stop_at_max_retry_each_on_a_new_version(rt, sync):
    def script(conn, nreq, cid, message):
        return [("error", cid, ELIMIT, f"busy {nreq}")]

    with FakeServer(script) as server:
        channel = connect(f"127.0.0.1:{server.port}", timeout_ms=5_000, max_retry=2)
        cntl = Controller()
        call(rt, channel, cntl, sync)
        assert cntl.ErrorCode() == ELIMIT
        assert cntl.retried_count() == 2
        call_id = cntl.call_id()
        assert [cid for _, cid in server.seen] == [call_id + 1, call_id + 2, call_id + 3]
        assert cntl.ErrorText() == "[E2004]busy 0 [R1][E2004]busy 1 [R2][E2004]busy 2"


# -- backup requests ----------------------------------------------------------------------------

@SYNC
def test_backup_request_first_answer_wins(rt, sync):
    with EchoServer(delay_us=200_000) as server:
        channel = connect(f"127.0.0.1:{server.port}", timeout_ms=5_000, backup_request_ms=50)
        cntl = Controller()
        response, _ = call(rt, channel, cntl, sync, "backed up")
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == "backed up"
        assert cntl.has_backup_request()
        assert cntl.retried_count() == 1
        drive_until(rt, lambda: server.service.nrequests == 2, what="the backup try reached the server")
        if not rt.threads_mode:
            assert rt.trace.of_kind("backup_request")
            # the loser's answer arrives after the Id is destroyed: dropped, not applied
            drive_until(rt, lambda: rt.trace.of_kind("drop_response"), what="the second answer")


@SYNC
def test_backup_request_goes_to_the_other_server(rt, sync):
    with EchoServer(delay_us=200_000) as a, EchoServer(delay_us=200_000) as b:
        channel = connect(f"list://127.0.0.1:{a.port},127.0.0.1:{b.port}", "rr",
                          timeout_ms=5_000, backup_request_ms=50)
        cntl = Controller()
        response, _ = call(rt, channel, cntl, sync, "two servers")
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == "two servers"
        assert cntl.has_backup_request()
        drive_until(rt, lambda: a.service.nrequests + b.service.nrequests == 2, what="both tries")
        assert (a.service.nrequests, b.service.nrequests) == (1, 1)


@SYNC
def test_backup_request_with_max_retry_zero_ends_with_ebackuprequest(rt, sync):
    with EchoServer(delay_us=200_000) as server:
        channel = connect(f"127.0.0.1:{server.port}", timeout_ms=5_000, backup_request_ms=50, max_retry=0)
        cntl = Controller()
        call(rt, channel, cntl, sync)
        assert cntl.ErrorCode() == EBACKUPREQUEST
        assert cntl.ErrorText() == f"[E1007]Reached backup timeout=50ms @127.0.0.1:{server.port}"
        assert cntl.retried_count() == 0


#: the fake server sleeps in real time; a deterministic runtime must wait for it rather than move
#: its clock to the deadline after the default 20 ms (it stops waiting as soon as bytes arrive)
REAL_TIME_PEER = pytest.mark.runtime_options(io_wait_ms=3_000)


@REAL_TIME_PEER
@SYNC
def test_backup_try_failing_first_does_not_end_the_rpc(rt, sync):
    """The original try fails (half a frame, EEOF) after the backup went out: the failure of the
    unfinished try is ignored (stale) and the backup's answer ends the RPC."""
    def script(conn, nreq, cid, message):
        if conn == 0:
            return [("sleep", 0.15), ("half", cid)]
        return [("sleep", 0.3), ("ok", cid, message)]

    with FakeServer(script) as server:
        channel = connect(f"127.0.0.1:{server.port}", timeout_ms=5_000, backup_request_ms=50,
                          connection_type="pooled")
        cntl = Controller()
        response, _ = call(rt, channel, cntl, sync, "backup wins")
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == "backup wins"
        call_id = cntl.call_id()
        assert sorted(server.seen) == [(0, call_id + 1), (1, call_id + 2)]


@REAL_TIME_PEER
@SYNC
def test_backup_answering_first_wins_and_the_original_is_dropped(rt, sync):
    """The original try's connection is slow, the backup's (a second pooled connection) is fast:
    the backup ends the RPC; the original is completed with EBACKUPREQUEST, which closes its pooled
    connection, so its answer can never be applied."""
    def script(conn, nreq, cid, message):
        if conn == 0:
            return [("sleep", 0.4), ("ok", cid, "ORIGINAL")]
        return [("ok", cid, message)]

    with FakeServer(script) as server:
        channel = connect(f"127.0.0.1:{server.port}", timeout_ms=5_000, backup_request_ms=50,
                          connection_type="pooled")
        cntl = Controller()
        response, _ = call(rt, channel, cntl, sync, "backup")
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == "backup"
        assert cntl.has_backup_request() and cntl.retried_count() == 1
        call_id = cntl.call_id()
        assert server.seen == [(0, call_id + 1), (1, call_id + 2)]


# -- the server process killed mid-call --------------------------------------------------------

@REAL_TIME_PEER
@SYNC
def test_server_killed_mid_call_fails_every_pending_call_promptly(rt, sync):
    with EchoServerProcess(0) as proc:
        channel = connect(f"127.0.0.1:{proc.port}", timeout_ms=-1)     # no deadline: only the kill ends it
        warm = Controller()
        call(rt, channel, warm, True, "warm up")                         # the connection is up
        assert not warm.Failed(), warm.ErrorText()
        os.kill(proc.proc.pid, signal.SIGSTOP)                           # requests now pend
        wait_for(lambda: process_state(proc.proc.pid) == "T", what="the server stopped")
        cntls = [Controller() for _ in range(4)]
        ran = []
        for cntl in cntls[1:]:
            EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest(message="pending"), ran.append)
        killer = threading.Timer(0.3, lambda: os.kill(proc.proc.pid, signal.SIGKILL))
        killer.start()
        started = time.monotonic()
        try:
            if sync:
                EchoService_Stub(channel).Echo(cntls[0], echo_pb2.EchoRequest(message="pending"))
            else:
                EchoService_Stub(channel).Echo(cntls[0], echo_pb2.EchoRequest(message="pending"), ran.append)
            for cntl in cntls:
                assert rpc.Join(cntl.call_id()) == 0
        finally:
            killer.join()
            proc.proc.wait(10)
        assert time.monotonic() - started < 0.3 + PROMPTLY_S
        assert len(ran) == (3 if sync else 4)
        for cntl in cntls:
            assert cntl.Failed()
            assert cntl.ErrorCode() in LOST, cntl.ErrorText()
            assert cntl.retried_count() == 3, cntl.ErrorText()          # retried per policy
            first = cntl.ErrorText().split(" [R1]")[0]
            assert first.startswith(("[E1014]Got EOF", f"[E{errno.ECONNRESET}]")), cntl.ErrorText()


# -- the server stalls --------------------------------------------------------------------------

@SYNC
def test_stalled_server_times_out_at_the_deadline(rt, sync):
    with EchoServer(drop=True) as server:
        channel = connect(f"127.0.0.1:{server.port}", timeout_ms=100)
        cntl = Controller()
        before = rt.gettimeofday_us()
        response, _ = call(rt, channel, cntl, sync)
        assert cntl.ErrorCode() == ERPCTIMEDOUT
        assert cntl.ErrorText() == f"[E1008]Reached timeout=100ms @127.0.0.1:{server.port}"
        assert cntl.retried_count() == 0
        assert response.message == ""
        if rt.threads_mode:
            assert rt.gettimeofday_us() - before >= 100_000 - 1_000
        else:
            assert rt.gettimeofday_us() - before == 100_000


# -- the connection dropped mid-frame -----------------------------------------------------------

@SYNC
def test_connection_dropped_mid_frame_fails_with_eeof(rt, sync):
    def script(conn, nreq, cid, message):
        return [("half", cid)]

    with FakeServer(script) as server:
        channel = connect(f"127.0.0.1:{server.port}", timeout_ms=5_000)
        cntl = Controller()
        started = time.monotonic()
        response, _ = call(rt, channel, cntl, sync)
        assert time.monotonic() - started < PROMPTLY_S
        assert cntl.Failed()
        assert cntl.ErrorText().startswith("[E1014]Got EOF"), cntl.ErrorText()
        assert cntl.ErrorCode() in LOST
        assert cntl.retried_count() == 3
        assert response.message == ""


@SYNC
def test_connection_dropped_mid_frame_is_retried_on_a_new_pooled_connection(rt, sync):
    def script(conn, nreq, cid, message):
        return [("half", cid)] if conn == 0 else [("ok", cid, message)]

    with FakeServer(script) as server:
        channel = connect(f"127.0.0.1:{server.port}", timeout_ms=5_000, connection_type="pooled")
        cntl = Controller()
        response, _ = call(rt, channel, cntl, sync, "second connection")
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == "second connection"
        assert cntl.retried_count() == 1
        call_id = cntl.call_id()
        assert server.seen == [(0, call_id + 1), (1, call_id + 2)]


# -- delays past the timeout --------------------------------------------------------------------

@SYNC
def test_delay_past_the_timeout_is_not_retried_and_the_late_answer_is_dropped(rt, sync):
    with EchoServer(delay_us=150_000) as server:
        channel = connect(f"127.0.0.1:{server.port}", timeout_ms=50, max_retry=3)
        cntl = Controller()
        response, _ = call(rt, channel, cntl, sync, "late")
        assert cntl.ErrorCode() == ERPCTIMEDOUT
        assert cntl.retried_count() == 0
        assert server.service.nrequests == 1 or rt.threads_mode
        # let the late answer arrive; it must not touch the finished call
        ok = Controller()
        ok.set_timeout_ms(5_000)
        again, _ = call(rt, channel, ok, sync, "patient")
        assert not ok.Failed(), ok.ErrorText()
        assert again.message == "patient"
        assert cntl.ErrorCode() == ERPCTIMEDOUT and response.message == ""
        if not rt.threads_mode:
            assert rt.trace.of_kind("drop_response")


# -- a stale Socket object must not act on the next connection in its slot ---------------------

@pytest.mark.parametrize("ctype", ["pooled", "short"])
def test_a_finished_try_does_not_touch_a_later_connection_in_the_same_slot(rt, ctype):
    """Socket slots are reused. A try whose connection failed (and was recycled) must not, when it
    completes later, fail or pool the *next* connection made in that slot — e.g. when the socket's
    error reached the RPC's Id while it was locked, and another RPC took the slot meanwhile
    (threads mode). Found by review; reproduced here directly. (The slot's next life is a fresh
    object, and the try also checks its SocketId.)"""
    from brpc_mini.rpc.controller import CONNECTION_TYPE_POOLED, CONNECTION_TYPE_SHORT, Call
    from brpc_mini.rpc.socket import Socket
    with EchoServer() as server:
        channel = connect(f"127.0.0.1:{server.port}", connection_type=ctype)
        main = Socket.Address(channel._server_id)
        old = main.GetShortSocket() if ctype == "short" else main.GetPooledSocket()
        old_id = old.id()
        cntl = Controller()
        cntl._connection_type = CONNECTION_TYPE_SHORT if ctype == "short" else CONNECTION_TYPE_POOLED
        try_ = Call()
        try_.sending_sock = old
        try_.sending_sock_id = old_id
        old.SetFailed(EEOF, "the try's connection failed")      # no health check: recycled at once
        assert Socket.Address(old_id) is None
        # another RPC's connection takes the slot: a new version (and a fresh object)
        new = main.GetShortSocket() if ctype == "short" else main.GetPooledSocket()
        assert new.slot == old.slot and new.id() != old_id and old.Failed()
        new_id = new.id()
        # the old try completes now: responded (pooled: ReturnToPool) or failed (SetFailed)
        try_.OnComplete(cntl, 0, True, False)
        try_ = Call()
        try_.sending_sock, try_.sending_sock_id = old, old_id
        try_.OnComplete(cntl, EEOF, False, False)
        assert Socket.Address(new_id) is new, "the later connection was failed by a stale holder"
        assert new_id not in main._pool, "a stale holder put the later connection into the pool"
        new.SetFailed(EFAILEDSOCKET, "test done")


# -- a custom retry policy runs in a bthread of its own ------------------------------------------

@SYNC
def test_custom_retry_policy_is_asked_in_a_bthread(rt, sync):
    """brpc (Controller::HandleSocketFailed): "RetryPolicy may block current bthread", so with a
    custom policy OnVersionedRPCReturned runs in a new bthread — never on the TimerThread or in
    the code that failed the socket. Found by this test: it ran inline, on the TimerThread."""
    from brpc_mini.bthread import bthread_self
    from brpc_mini.rpc import RetryPolicy

    asked = []

    class Recording(RetryPolicy):
        def DoRetry(self, cntl):
            asked.append((cntl.ErrorCode(), bthread_self()))
            return False

    with EchoServer(drop=True) as server:
        options = ChannelOptions(timeout_ms=50)
        options.retry_policy = Recording()
        channel = Channel()
        assert channel.Init(f"127.0.0.1:{server.port}", options) == 0
        cntl = Controller()
        call(rt, channel, cntl, sync)
        assert cntl.ErrorCode() == ERPCTIMEDOUT
        assert len(asked) == 1 and asked[0][0] == ERPCTIMEDOUT
        assert asked[0][1] != 0, "the custom retry policy ran outside any bthread (on the TimerThread)"


@SYNC
def test_custom_retry_policy_retries_on_the_next_version(rt, sync):
    from brpc_mini.rpc import RetryPolicy

    class Once(RetryPolicy):
        def DoRetry(self, cntl):
            return cntl.retried_count() < 1

    def script(conn, nreq, cid, message):
        return [("error", cid, errno.EINVAL, "no")] if nreq == 0 else [("ok", cid, message)]

    with FakeServer(script) as server:
        options = ChannelOptions(timeout_ms=5_000)
        options.retry_policy = Once()
        channel = Channel()
        assert channel.Init(f"127.0.0.1:{server.port}", options) == 0
        cntl = Controller()
        response, _ = call(rt, channel, cntl, sync, "custom")
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == "custom" and cntl.retried_count() == 1
        assert [cid for _, cid in server.seen] == [cntl.call_id() + 1, cntl.call_id() + 2]
