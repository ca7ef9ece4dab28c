"""Frames captured from real brpc, over real sockets, in both directions.

(a) A plain blocking Python socket plays real brpc's client: it sends the golden request frames
    to the bundled server and compares the response bytes with what real brpc's server answered.
(b) A plain socket thread plays real brpc's server: it reads the frame brpc_mini's client sends,
    checks it is the golden request (all but the correlation id, which is this runtime's Id), and
    answers with the golden response bytes carrying the client's correlation id.

Nothing on the "real brpc" side of these tests uses brpc_mini's sockets; the frames are checked
byte for byte, with the protobuf classes only to name the fields.
"""
from __future__ import annotations

import socket
import struct
import threading

import pytest

from brpc_mini.bthread import Runtime
from brpc_mini.echo_server import EchoServerProcess
from brpc_mini.proto import baidu_rpc_meta_pb2, echo_pb2
from brpc_mini.rpc import Channel, ChannelOptions, Controller
from brpc_mini.rpc.errors import ENOMETHOD
from rpc_helpers import (GOLDEN_ATTACHMENT, GOLDEN_CALL_ID, GOLDEN_ERROR_CALL_ID, GOLDEN_SERVER,
                         EchoService_Stub, drive_until, golden, recv_frame,
                         stubs_for_unknown_names)

PAIRS = [("echo_request", "echo_response"),
         ("echo_attach_request", "echo_attach_response"),
         ("error_request", "error_response")]


def split_frame(frame: bytes):
    """(RpcMeta, payload bytes) of one whole frame, checking its header on the way."""
    magic, body_size, meta_size = struct.unpack(">4sII", frame[:12])
    assert magic == b"PRPC"
    assert len(frame) == 12 + body_size and meta_size <= body_size
    meta = baidu_rpc_meta_pb2.RpcMeta()
    meta.ParseFromString(frame[12:12 + meta_size])
    return meta, frame[12 + meta_size:]


def join_frame(meta, payload: bytes) -> bytes:
    meta_bytes = meta.SerializeToString(deterministic=True)
    return struct.pack(">4sII", b"PRPC", len(meta_bytes) + len(payload), len(meta_bytes)) + meta_bytes + payload


def with_correlation_id(frame: bytes, correlation_id: int) -> bytes:
    meta, payload = split_frame(frame)
    meta.correlation_id = correlation_id
    return join_frame(meta, payload)


def golden_error_response(port: int) -> bytes:
    """error_response.bin as the server on ``port`` would send it: its text names the server,
    ``[127.0.0.1:8000]`` in the capture. Edit the bytes (and the three lengths that cover them)
    rather than re-encode, so the rest of the frame stays exactly as brpc wrote it."""
    frame = golden("error_response")
    new = f"127.0.0.1:{port}".encode()
    delta = len(new) - len(GOLDEN_SERVER)
    meta = bytearray(frame[12:])
    # 12 <len response> 08 ea 07 (error_code 1002) 12 <len error_text> error_text ...
    assert meta[0] == 0x12 and meta[2:5] == b"\x08\xea\x07" and meta[5] == 0x12
    assert meta[1] < 0x80 - delta and meta[6] < 0x80 - delta, "single-byte varint lengths"
    assert frame.count(GOLDEN_SERVER) == 1
    meta[1] += delta
    meta[6] += delta
    meta = bytes(meta).replace(GOLDEN_SERVER, new)
    return struct.pack(">4sII", b"PRPC", len(meta), len(meta)) + meta


def expected_response(response_name: str, port: int) -> bytes:
    return golden_error_response(port) if response_name == "error_response" else golden(response_name)


# -- sanity: the helpers do not change a byte they should not -----------------------------------

def test_frame_helpers_round_trip_the_golden_bytes():
    for name in ("echo_request", "echo_response", "echo_attach_request", "echo_attach_response",
                 "error_request", "error_response"):
        frame = golden(name)
        meta, _ = split_frame(frame)
        assert with_correlation_id(frame, meta.correlation_id) == frame
    assert golden_error_response(8000) == golden("error_response")
    assert b"[127.0.0.1:54321][E1002]" in golden_error_response(54321)
    meta, payload = split_frame(golden_error_response(54321))
    assert meta.response.error_text.startswith("[127.0.0.1:54321][E1002]Fail to find method=")
    assert payload == b""


# -- (a) a raw client against the bundled server ------------------------------------------------

def raw_client_exchange(port: int) -> dict:
    """Send each golden request on one connection and collect the answers; then send all three
    at once (one read for the server: two go to new bthreads, the last is processed in place)."""
    answers = {}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for request_name, response_name in PAIRS:
            sock.sendall(golden(request_name))
            answers[response_name] = recv_frame(sock)
        sock.sendall(b"".join(golden(request_name) for request_name, _ in PAIRS))
        answers["pipelined"] = [recv_frame(sock) for _ in PAIRS]
    return answers


def check_answers(answers: dict, port: int) -> None:
    for _, response_name in PAIRS:
        assert answers[response_name] == expected_response(response_name, port), response_name
    expected = sorted(expected_response(response_name, port) for _, response_name in PAIRS)
    assert sorted(answers["pipelined"]) == expected


def run_beside(rt: Runtime, fn, *args):
    """Run the blocking ``fn`` while ``rt`` serves: directly in threads mode (the workers serve);
    in a plain thread in deterministic mode, while this thread drives the runtime."""
    if rt.threads_mode:
        return fn(*args)
    result = {}

    def body():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:      # reported below, in the test's thread
            result["error"] = exc

    thread = threading.Thread(target=body, name="raw-client")
    thread.start()
    try:
        drive_until(rt, lambda: not thread.is_alive(), timeout=30, what="the raw client")
    finally:
        thread.join(30)
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_raw_client_gets_brpcs_bytes_from_the_bundled_server(rt, echo_server):
    answers = run_beside(rt, raw_client_exchange, echo_server.port)
    check_answers(answers, echo_server.port)
    assert echo_server.service.nrequests == 4        # two Echo calls, twice; never NoSuchMethod


def test_raw_client_gets_brpcs_bytes_from_the_server_process():
    with EchoServerProcess() as server:
        answers = raw_client_exchange(server.port)
    check_answers(answers, server.port)
    assert server.proc.returncode == 0


def test_bundled_server_accepts_a_minimal_meta(rt, echo_server):
    """The golden README: real brpc accepts a meta with only service, method and correlation id."""
    meta = baidu_rpc_meta_pb2.RpcMeta()
    meta.request.service_name = "example.EchoService"
    meta.request.method_name = "Echo"
    meta.correlation_id = 77
    frame = join_frame(meta, echo_pb2.EchoRequest(message="minimal").SerializeToString())

    def exchange(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(frame)
            return recv_frame(sock)

    answer = run_beside(rt, exchange, echo_server.port)
    meta, payload = split_frame(answer)
    assert meta.correlation_id == 77 and meta.response.error_code == 0
    assert echo_pb2.EchoResponse.FromString(payload).message == "minimal"


# -- (b) the bundled client against a raw server ------------------------------------------------

class RawBrpcServer:
    """A plain-socket thread that answers one request with a golden response frame.

    ``reply(request_frame) -> response_frame``. It records the request and any error, and always
    stops: the listening socket and the connection have timeouts, and ``__exit__`` joins it.
    """

    def __init__(self, reply):
        self.reply = reply
        self.request = None
        self.error = None
        self._finish = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self._listener.settimeout(10)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="raw-brpc-server")

    def _serve(self):
        try:
            conn, _ = self._listener.accept()
            with conn:
                conn.settimeout(10)
                self.request = recv_frame(conn)
                conn.sendall(self.reply(self.request))
                self._finish.wait(10)      # keep the connection until the test is done with it
        except BaseException as exc:
            self.error = exc

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._finish.set()
        self._thread.join(15)
        self._listener.close()
        return False


def answer_with(response_name: str, port_in_text: int | None = None):
    def reply(request_frame: bytes) -> bytes:
        meta, _ = split_frame(request_frame)
        response = (golden_error_response(port_in_text) if port_in_text is not None
                    else golden(response_name))
        return with_correlation_id(response, meta.correlation_id)
    return reply


def check_request_is_golden(request_frame: bytes, golden_name: str, cntl: Controller) -> None:
    meta, payload = split_frame(request_frame)
    golden_meta, golden_payload = split_frame(golden(golden_name))
    # the correlation id is this runtime's: the first try of the Controller's Id
    assert meta.correlation_id == cntl.call_id() + 1
    assert payload == golden_payload
    for field in ("service_name", "method_name", "log_id"):
        assert getattr(meta.request, field) == getattr(golden_meta.request, field), field
    for field in ("compress_type", "attachment_size", "content_type", "checksum_type", "checksum_value"):
        assert meta.HasField(field) == golden_meta.HasField(field), field
        assert getattr(meta, field) == getattr(golden_meta, field), field
    meta.correlation_id = golden_meta.correlation_id
    assert meta == golden_meta
    # and byte for byte, once the correlation id is brpc's
    assert with_correlation_id(request_frame, golden_meta.correlation_id) == golden(golden_name)


def raw_server_channel(port: int) -> Channel:
    channel = Channel()
    # generous: in deterministic mode the driver waits real time for the plain thread's answer
    assert channel.Init(f"127.0.0.1:{port}", ChannelOptions(timeout_ms=10_000)) == 0
    return channel


@pytest.mark.runtime_options(io_wait_ms=5_000)
@pytest.mark.parametrize("request_name, response_name, attachment", [
    ("echo_request", "echo_response", b""),
    ("echo_attach_request", "echo_attach_response", GOLDEN_ATTACHMENT),
])
def test_client_talks_to_a_raw_brpc_server(rt, request_name, response_name, attachment):
    with RawBrpcServer(answer_with(response_name)) as server:
        channel = raw_server_channel(server.port)
        cntl = Controller()
        cntl.set_log_id(0)                 # brpc's example client numbers its calls from 0
        cntl.request_attachment().append(attachment)
        response = EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest(message="hello world"))
        assert not cntl.Failed(), cntl.ErrorText()
        assert response.message == "hello world"
        assert cntl.response_attachment().to_bytes() == attachment
        assert cntl.remote_side() == ("127.0.0.1", server.port)
    assert server.error is None, server.error
    check_request_is_golden(server.request, request_name, cntl)


@pytest.mark.runtime_options(io_wait_ms=5_000)
def test_client_reads_a_raw_brpc_servers_error(rt):
    stub_class = stubs_for_unknown_names()["example.EchoService"]
    from google.protobuf import message_factory
    method = stub_class.DESCRIPTOR.methods_by_name["NoSuchMethod"]
    request = message_factory.GetMessageClass(method.input_type)(message="hello world")
    with RawBrpcServer(answer_with("error_response", port_in_text=8000)) as server:
        channel = raw_server_channel(server.port)
        cntl = Controller()
        cntl.set_log_id(0)
        stub_class(channel).NoSuchMethod(cntl, request)
        assert cntl.ErrorCode() == ENOMETHOD
        assert cntl.ErrorText() == ("[E1002][127.0.0.1:8000][E1002]Fail to find "
                                    "method=example.EchoService/NoSuchMethod")
        assert cntl.retried_count() == 0
    assert server.error is None, server.error
    meta, payload = split_frame(server.request)
    golden_meta, golden_payload = split_frame(golden("error_request"))
    assert meta.correlation_id == cntl.call_id() + 1
    meta.correlation_id = golden_meta.correlation_id = GOLDEN_ERROR_CALL_ID
    assert meta == golden_meta and payload == golden_payload
    assert with_correlation_id(server.request, GOLDEN_ERROR_CALL_ID) == golden("error_request")


@pytest.mark.runtime_options(io_wait_ms=5_000)
def test_client_drops_a_response_for_an_unknown_correlation_id(rt):
    """A response whose correlation id matches no live RPC (a stale Id) is dropped; the RPC still
    ends, here by its deadline."""
    reply = lambda request_frame: with_correlation_id(golden("echo_response"), GOLDEN_CALL_ID + (1 << 40))
    with RawBrpcServer(reply) as server:
        channel = raw_server_channel(server.port)
        cntl = Controller()
        cntl.set_timeout_ms(300)
        response = EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest(message="hello world"))
        assert cntl.ErrorCode() == 1008, cntl.ErrorText()
        assert response.message == ""
        if not rt.threads_mode:
            assert rt.trace.of_kind("drop_response"), "the stray response was seen and dropped"
    assert server.error is None, server.error
