"""A server against hostile bytes, as real brpc behaves (design 6.6, 6.9, 7.4).

Each test opens a raw-socket attacker against the bundled server while a well-behaved raw client,
on a connection of its own, keeps asking and getting answers before, during and after the attack.
Every bad input gets brpc's answer:

- closed without a response, with a logged reason: a wrong magic ("unknown message"), a body over
  max_body_size ("too big data", decided from the header), a meta that does not parse or lacks a
  required field (socket failed with EREQUEST), a frame whose meta_size > body_size followed by
  more bytes (the frame is dropped, no other protocol recognises what follows);
- dropped, connection kept: a frame whose meta_size > body_size that ended the read (brpc's
  streaming_rpc parser claims the empty remainder);
- an error response, connection kept: unknown service (ENOSERVICE 1001) or method (ENOMETHOD
  1002), attachment_size larger than the payload and a payload that does not parse (EREQUEST
  1003);
- a truncated frame followed by EOF: nothing processed, the connection closed cleanly.

After each, the counts of sockets in use, file descriptors and live bthreads are back where they
were. In deterministic mode the attacker and the good client run in a plain thread while the test
drives the runtime (the server is on ``rt`` itself), so the schedule stays the runtime's.
"""
from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from brpc_mini import rpc
from brpc_mini.proto import baidu_rpc_meta_pb2, echo_pb2
from brpc_mini.rpc import Channel, ChannelOptions
from brpc_mini.rpc.errors import EEOF, ENOMETHOD, ENOSERVICE, EREQUEST
from brpc_mini.rpc.policy.baidu_rpc_protocol import PackRpcRequest
from bad_input_helpers import (SERVICE, GoodClient, beside, counts, echo_request, header,
                               raw_frame, read_frame, read_to_close, settle, split_response)
from rpc_helpers import drive_until, echo

EINVAL = 22


@pytest.fixture
def failures(rt):
    """(error code, detail) of every socket the runtime fails during the test."""
    seen = []

    def instrument(event):
        if event.kind == "socket_failed":
            seen.append(event.detail)

    rt.add_instrument(instrument)
    yield seen
    rt.remove_instrument(instrument)


@pytest.fixture
def brpc_log(caplog):
    caplog.set_level(logging.WARNING, logger="brpc_mini.rpc")
    return caplog


def channel_to(server) -> Channel:
    channel = Channel()
    assert channel.Init(f"127.0.0.1:{server.port}", ChannelOptions()) == 0
    return channel


def attack(rt, server, fn):
    """Run ``fn(port, good)`` (blocking socket code) beside the server, with a good client that
    is answered before and after; check the server still serves a Channel client and that
    nothing leaked. Returns what ``fn`` returned."""
    channel = channel_to(server)
    cntl, _ = echo(channel, "warm up")
    assert not cntl.Failed(), cntl.ErrorText()
    baseline = counts(rt)
    nrequests = server.service.nrequests

    def run(port):
        good = GoodClient(port)
        try:
            good.check("before")
            result = fn(port, good)
            good.check("after")
            return result, good.answered
        finally:
            good.close()

    result, answered = beside(rt, run, server.port)
    assert answered >= 2
    settle(rt, baseline)
    cntl, response = echo(channel, "still serving")
    assert not cntl.Failed(), cntl.ErrorText()
    assert response.message == "still serving"
    return result, server.service.nrequests - nrequests - answered - 1


def closes_without_answer(payload: bytes):
    """An attacker that sends ``payload`` and expects the connection closed, no byte answered;
    the good client asks in the middle."""
    def fn(port, good):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as bad:
            bad.sendall(payload)
            good.check("during")
            return read_to_close(bad)
    return fn


def answered_and_kept(payload: bytes):
    """An attacker that sends ``payload``, reads one response, then proves the connection is
    kept with a good request on it."""
    def fn(port, good):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as bad:
            bad.sendall(payload)
            good.check("during")
            answer = split_response(read_frame(bad))
            bad.sendall(echo_request(99, "same connection"))
            meta, payload_back = split_response(read_frame(bad))
            assert meta.correlation_id == 99 and meta.response.error_code == 0
            assert echo_pb2.EchoResponse.FromString(payload_back).message == "same connection"
            return answer
    return fn


def codes(failures) -> list[int]:
    return [int(detail.rsplit("[E", 1)[1].rstrip("]")) for detail in failures]


# -- closed, no response ------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"XPRC" + bytes(8),
    b"PRP!",
    b"\x00" * 3,                       # shorter than the magic and not a prefix of it
], ids=["http", "bad-magic-header", "three-of-four", "short-garbage"])
def test_wrong_magic_closes_the_connection(rt, echo_server, failures, brpc_log, payload):
    answer, processed = attack(rt, echo_server, closes_without_answer(payload))
    assert answer == b"" and processed == 0
    assert codes(failures).count(EINVAL) == 1
    assert any("due to unknown message" in r.getMessage() for r in brpc_log.records)


def test_wrong_magic_after_good_requests_closes_too(rt, echo_server, failures, brpc_log):
    """The socket prefers baidu_std after a good request; bytes it does not recognise are probed
    against the other protocols (none in the kit, none matching in brpc) and close it."""
    def fn(port, good):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as bad:
            bad.sendall(echo_request(5, "first"))
            meta, _ = split_response(read_frame(bad))
            assert meta.correlation_id == 5 and meta.response.error_code == 0
            bad.sendall(b"garbage!" * 4)
            good.check("during")
            return read_to_close(bad)

    answer, processed = attack(rt, echo_server, fn)
    assert answer == b"" and processed == 1
    assert codes(failures).count(EINVAL) == 1


def test_body_over_the_default_limit_closes_from_the_header(rt, echo_server, failures, brpc_log):
    assert rpc.FLAGS.max_body_size == 64 * 1024 * 1024
    answer, processed = attack(rt, echo_server, closes_without_answer(header(64 * 1024 * 1024 + 1, 10)))
    assert answer == b"" and processed == 0
    assert codes(failures).count(EINVAL) == 1
    messages = [r.getMessage() for r in brpc_log.records]
    assert any(m.endswith(": too big data") for m in messages), messages
    assert any("is bigger than 67108864 bytes" in m for m in messages), messages


@pytest.fixture
def small_body_limit():
    saved = rpc.FLAGS.max_body_size
    rpc.FLAGS.max_body_size = 1024
    try:
        yield 1024
    finally:
        rpc.FLAGS.max_body_size = saved


def test_body_over_a_configured_limit_closes(rt, echo_server, failures, small_body_limit):
    def request(attachment_size):
        return PackRpcRequest(7, SERVICE, "Echo", echo_pb2.EchoRequest(message="x").SerializeToString(),
                              b"a" * attachment_size)
    size = small_body_limit - 100
    size += small_body_limit - (len(request(size)) - 12)
    at_limit = request(size)
    assert len(at_limit) - 12 == small_body_limit, "a frame exactly at the limit is allowed"

    def fn(port, good):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as bad:
            bad.sendall(at_limit)
            meta, _ = split_response(read_frame(bad))
            assert meta.correlation_id == 7 and meta.response.error_code == 0
            # one byte over, and only the header and a little of the body sent
            bad.sendall(header(small_body_limit + 1, 20) + b"x" * 30)
            good.check("during")
            return read_to_close(bad)

    answer, processed = attack(rt, echo_server, fn)
    assert answer == b"" and processed == 1
    assert codes(failures).count(EINVAL) == 1


def test_meta_larger_than_body_then_more_bytes_closes(rt, echo_server, failures, brpc_log):
    """The frame is dropped whole; what follows in the same read is offered to the *other*
    protocols only (brpc skips the preferred one), none recognises a baidu_std frame: closed,
    and the good request behind the bad frame is never processed."""
    bad_frame = raw_frame(b"\x01" * 8, b"", body_size=8, meta_size=9)
    answer, processed = attack(rt, echo_server, closes_without_answer(bad_frame + echo_request(6)))
    assert answer == b"" and processed == 0
    messages = [r.getMessage() for r in brpc_log.records]
    assert any("meta_size=9 is bigger than body_size=8" in m for m in messages), messages
    assert any("due to unknown message" in m for m in messages), messages
    assert codes(failures).count(EINVAL) == 1


def test_meta_larger_than_body_after_a_good_request_closes(rt, echo_server, failures):
    def fn(port, good):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as bad:
            bad.sendall(echo_request(5, "first"))
            meta, _ = split_response(read_frame(bad))
            assert meta.correlation_id == 5
            bad.sendall(raw_frame(b"", b"ab", body_size=2, meta_size=3) + echo_request(6))
            good.check("during")
            return read_to_close(bad)

    answer, processed = attack(rt, echo_server, fn)
    assert answer == b"" and processed == 1
    assert codes(failures).count(EINVAL) == 1


def test_meta_larger_than_body_that_ends_the_read_is_dropped_and_the_connection_kept(rt, echo_server, failures):
    """Nothing follows the dropped frame: brpc's streaming_rpc parser claims the empty buffer
    (NOT_ENOUGH_DATA), so the connection stays and the next request is served."""
    dropped = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record):
            if "is bigger than body_size" in record.getMessage():
                dropped.set()

    watch = Watch()
    logger = logging.getLogger("brpc_mini.rpc")
    logger.addHandler(watch)

    def fn(port, good):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as bad:
            bad.sendall(raw_frame(b"\x08\x01", b"", body_size=2, meta_size=3))
            assert dropped.wait(10), "the server never cut the bad frame"
            good.check("during")
            bad.sendall(echo_request(8, "after the dropped frame"))
            meta, payload = split_response(read_frame(bad))
            assert meta.correlation_id == 8 and meta.response.error_code == 0
            return echo_pb2.EchoResponse.FromString(payload).message

    try:
        answer, processed = attack(rt, echo_server, fn)
    finally:
        logger.removeHandler(watch)
    assert answer == "after the dropped frame" and processed == 1
    assert EINVAL not in codes(failures)


def _meta(**request_fields) -> bytes:
    meta = baidu_rpc_meta_pb2.RpcMeta(correlation_id=3)
    for name, value in request_fields.items():
        setattr(meta.request, name, value)
    return meta.SerializePartialToString()


@pytest.mark.parametrize("meta", [
    b"\xff\xff\xff\xff",                                  # not protobuf at all
    b"\x0a\x08\x0a\x03abc",                               # a request meta cut short
    _meta(service_name=SERVICE),                          # method_name (required) missing
    _meta(method_name="Echo"),                            # service_name (required) missing
], ids=["garbage", "truncated-submessage", "no-method-name", "no-service-name"])
def test_meta_that_does_not_parse_closes_with_erequest(rt, echo_server, failures, brpc_log, meta):
    body = echo_pb2.EchoRequest(message="m").SerializeToString()
    answer, processed = attack(rt, echo_server, closes_without_answer(raw_frame(meta, body)))
    assert answer == b"" and processed == 0
    assert codes(failures).count(EREQUEST) == 1
    assert any("Fail to parse RpcMeta" in r.getMessage() for r in brpc_log.records)


@pytest.mark.parametrize("cut", [1, 4, 11, 12, 20, -1])
def test_truncated_frame_then_eof_processes_nothing(rt, echo_server, failures, cut):
    frame = echo_request(4, "never whole")

    def fn(port, good):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as bad:
            bad.sendall(frame[:cut])
            good.check("during")
            bad.shutdown(socket.SHUT_WR)
            return read_to_close(bad)

    answer, processed = attack(rt, echo_server, fn)
    assert answer == b"" and processed == 0
    assert EEOF in codes(failures)
    assert EINVAL not in codes(failures) and EREQUEST not in codes(failures)


# -- an error response, connection kept ----------------------------------------------------------

def request_to(service: str, method: str, cid: int = 11) -> bytes:
    return PackRpcRequest(cid, service, method, echo_pb2.EchoRequest(message="m").SerializeToString())


@pytest.mark.parametrize("frame, code, text", [
    (request_to(SERVICE, "NoSuchMethod"), ENOMETHOD, f"Fail to find method={SERVICE}/NoSuchMethod"),
    (request_to("example.NoSuchService", "Echo"), ENOMETHOD, "Fail to find method=example.NoSuchService/Echo"),
    (request_to("NoSuchService", "Echo"), ENOSERVICE, "Fail to find service=NoSuchService"),
    # a meta with no request at all (a response meta): brpc reads empty names
    (raw_frame(baidu_rpc_meta_pb2.RpcMeta(correlation_id=11).SerializeToString()), ENOSERVICE,
     "Fail to find service="),
    (raw_frame(baidu_rpc_meta_pb2.RpcMeta(correlation_id=11, response={"error_code": 0}).SerializeToString(),
               b"junk"), ENOSERVICE, "Fail to find service="),
], ids=["unknown-method", "unknown-dotted-service", "unknown-service", "no-request", "response-meta"])
def test_unknown_service_or_method_gets_an_error_and_keeps_the_connection(rt, echo_server, failures,
                                                                         frame, code, text):
    (meta, payload), processed = attack(rt, echo_server, answered_and_kept(frame))
    assert meta.correlation_id == 11
    assert meta.response.error_code == code
    assert meta.response.error_text == f"[127.0.0.1:{echo_server.port}][E{code}]{text}"
    assert payload == b""
    assert processed == 1                      # only the good request on the same connection
    assert not set(codes(failures)) - {EEOF}


def _request_with(payload: bytes, cid: int = 12, **meta_fields) -> bytes:
    meta = baidu_rpc_meta_pb2.RpcMeta(correlation_id=cid, **meta_fields)
    meta.request.service_name = SERVICE
    meta.request.method_name = "Echo"
    return raw_frame(meta.SerializeToString(), payload)


def test_attachment_larger_than_the_payload_gets_erequest(rt, echo_server, failures):
    body = echo_pb2.EchoRequest(message="m").SerializeToString()
    (meta, _), processed = attack(rt, echo_server,
                                  answered_and_kept(_request_with(body, attachment_size=len(body) + 1)))
    assert meta.correlation_id == 12 and meta.response.error_code == EREQUEST
    assert meta.response.error_text == (f"[127.0.0.1:{echo_server.port}][E{EREQUEST}]attachment_size="
                                        f"{len(body) + 1} is larger than request_size={len(body)}")
    assert processed == 1
    assert not set(codes(failures)) - {EEOF}


@pytest.mark.parametrize("payload, meta_fields, types", [
    (b"\xff\xff\xff", {}, "ContentType=pb, CompressType=none, ChecksumType=none"),
    (b"", {}, "ContentType=pb, CompressType=none, ChecksumType=none"),   # required message missing
    (echo_pb2.EchoRequest(message="m").SerializeToString() + b"ATT", {"attachment_size": 3},
     None),                                                                # fine: the control
    (b"\x1f\x8b not gzip", {"compress_type": 2}, "ContentType=pb, CompressType=gzip, ChecksumType=none"),
    (echo_pb2.EchoRequest(message="m").SerializeToString(),
     {"checksum_type": 1, "checksum_value": b"\0\0\0\0"}, "ContentType=pb, CompressType=none, ChecksumType=crc32c"),
    (b"{}", {"content_type": 1}, "ContentType=json, CompressType=none, ChecksumType=none"),
], ids=["garbage", "empty", "control", "bad-gzip", "bad-checksum", "json"])
def test_payload_that_does_not_parse_gets_erequest(rt, echo_server, failures, payload, meta_fields, types):
    (meta, body), processed = attack(rt, echo_server, answered_and_kept(_request_with(payload, **meta_fields)))
    assert meta.correlation_id == 12
    if types is None:
        assert meta.response.error_code == 0
        assert processed == 2
        return
    assert meta.response.error_code == EREQUEST
    assert meta.response.error_text == (f"[127.0.0.1:{echo_server.port}][E{EREQUEST}]Fail to parse "
                                        f"request=example.EchoRequest, {types}, request_size={len(payload)}")
    assert body == b""
    assert processed == 1
    assert not set(codes(failures)) - {EEOF}


def test_many_attackers_at_once_while_a_good_client_is_served(rt, echo_server, failures):
    """Every kind of bad input on its own connection, all open together, the good client asking
    between them; then every attacker's fate is checked and nothing leaked."""
    closing = [b"XXXX", header(1 << 30, 0), raw_frame(b"\xff", b""), raw_frame(b"", b"", 0, 1) + b"PRPC"]
    answering = [request_to(SERVICE, "Nope", 21), _request_with(b"\xff", 22), request_to("Nope", "Echo", 23)]

    def fn(port, good):
        socks = []
        try:
            for payload in closing + answering:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                socks.append(sock)
                sock.sendall(payload)
                good.check(f"between {len(socks)}")
            for sock in socks[:len(closing)]:
                assert read_to_close(sock) == b""
            got = []
            for sock in socks[len(closing):]:
                meta, _ = split_response(read_frame(sock))
                got.append((meta.correlation_id, meta.response.error_code))
            return got
        finally:
            for sock in socks:
                sock.close()

    got, processed = attack(rt, echo_server, fn)
    assert got == [(21, ENOMETHOD), (22, EREQUEST), (23, ENOSERVICE)]
    assert processed == 0
    assert sorted(c for c in codes(failures) if c != EEOF) == [EINVAL, EINVAL, EINVAL, EREQUEST]


# -- a message processed after its connection is gone --------------------------------------------

@pytest.mark.parametrize("late", ["good request", "bad meta"])
def test_a_late_message_does_not_touch_the_connection_that_reuses_its_socket(rt, echo_server, late):
    """brpc's message holds a reference to *its* connection. The kit reuses Socket slots (the
    slot's next life gets a fresh object), so a request processed after its connection failed must
    neither answer on nor fail the new connection that now lives in the same slot."""
    from brpc_mini.bthread import bthread_join, bthread_start_background
    from brpc_mini.rpc.policy.baidu_rpc_protocol import ProcessRpcRequest

    handler = echo_server.server._messenger.handlers[0]
    stashed = []
    handler.process = stashed.append              # cut, but do not process yet
    frame = echo_request(31, "late") if late == "good request" else raw_frame(b"\xff\xff", b"")
    try:
        def send_and_close(port):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as first:
                first.sendall(frame)
                deadline = time.monotonic() + 10
                while not stashed and time.monotonic() < deadline:
                    time.sleep(0.001)
        beside(rt, send_and_close, echo_server.port)
        assert len(stashed) == 1
        msg = stashed[0]
        # the first connection is gone; wait until its Socket is recycled
        drive_until(rt, lambda: not msg.socket._in_use, what="the first connection recycled")
    finally:
        handler.process = ProcessRpcRequest

    second = socket.create_connection(("127.0.0.1", echo_server.port), timeout=10)
    try:
        from brpc_mini.rpc import rpc_state
        state = rpc_state(rt)
        slot = msg.socket.slot
        drive_until(rt, lambda: any(x._in_use and x is not msg.socket and not x.Failed()
                                    for x in state.sockets if x.remote_side and x.user is not None
                                    and getattr(x.user, "server", None) is None),
                    what="the second connection accepted")
        if not state.sockets[slot]._in_use or state.sockets[slot] is msg.socket:
            pytest.skip("the slot was not reused")
        assert msg.socket.Failed() and not msg.socket._in_use   # the old life stays failed
        tid = bthread_start_background(ProcessRpcRequest, msg)
        assert bthread_join(tid) == 0
        # the second connection is still up, and the first answer on it is its own
        def ask(sock):
            sock.sendall(echo_request(32, "mine"))
            return split_response(read_frame(sock))
        meta, _ = beside(rt, ask, second)
        assert meta.correlation_id == 32 and meta.response.error_code == 0
    finally:
        second.close()
