"""Raw-socket helpers for the bad-input tests: frames built by hand, a well-behaved raw client,
a reader that waits for the server to close, leak counts, and a model of what brpc's server
answers to a byte stream.

Imported as a plain module (tests/rpc is on sys.path) by test_rpc_bad_input.py and
test_rpc_hypothesis_server.py.
"""
from __future__ import annotations

import os
import socket
import struct
import threading
from collections import Counter

from google.protobuf.message import DecodeError

from brpc_mini.proto import baidu_rpc_meta_pb2, echo_pb2
from brpc_mini.rpc.errors import ENOMETHOD, ENOSERVICE, EREQUEST
from brpc_mini.rpc.policy.baidu_rpc_protocol import DeserializeRpcMessage, PackRpcRequest
from brpc_mini.rpc.socket import rpc_state
from rpc_helpers import drive_until, recv_exactly

SERVICE = "example.EchoService"
MAGIC = b"PRPC"


def header(body_size: int, meta_size: int) -> bytes:
    return struct.pack(">4sII", MAGIC, body_size, meta_size)


def raw_frame(meta: bytes, payload: bytes = b"", body_size=None, meta_size=None) -> bytes:
    """A frame with the given meta bytes and payload; sizes overridable to lie."""
    body_size = len(meta) + len(payload) if body_size is None else body_size
    meta_size = len(meta) if meta_size is None else meta_size
    return header(body_size, meta_size) + meta + payload


def echo_request(correlation_id: int, message: str = "hi", attachment: bytes = b"") -> bytes:
    return PackRpcRequest(correlation_id, SERVICE, "Echo",
                          echo_pb2.EchoRequest(message=message).SerializeToString(), attachment)


def split_response(frame: bytes):
    """(RpcMeta, payload) of one whole response frame."""
    magic, body_size, meta_size = struct.unpack(">4sII", frame[:12])
    assert magic == MAGIC and len(frame) == 12 + body_size and meta_size <= body_size
    meta = baidu_rpc_meta_pb2.RpcMeta.FromString(frame[12:12 + meta_size])
    return meta, frame[12 + meta_size:]


def split_frames(data: bytes) -> list[bytes]:
    """Whole frames of a byte stream the server wrote; fails on a torn or foreign frame."""
    frames = []
    while data:
        assert len(data) >= 12 and data[:4] == MAGIC, f"not a frame: {data[:16]!r}"
        body_size = struct.unpack(">I", data[4:8])[0]
        assert len(data) >= 12 + body_size, "a torn response frame"
        frames.append(data[:12 + body_size])
        data = data[12 + body_size:]
    return frames


def read_to_close(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the peer sends until it closes (EOF or reset). Raises on timeout: a server
    that should have closed and did not."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:      # closed with our bytes unread: brpc's close looks the same
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


class GoodClient:
    """A well-behaved raw baidu_std client on a connection of its own: each ``check`` sends one
    Echo and insists on the right answer."""

    def __init__(self, port: int, first_id: int = 1_000_000):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.next_id = first_id
        self.answered = 0

    def check(self, message: str) -> None:
        cid = self.next_id
        self.next_id += 1
        self.sock.sendall(echo_request(cid, message, b"att"))
        meta, payload = split_response(read_frame(self.sock))
        assert meta.correlation_id == cid and meta.response.error_code == 0, meta
        body = payload[:len(payload) - meta.attachment_size]
        assert echo_pb2.EchoResponse.FromString(body).message == message
        assert payload[len(body):] == b"att"
        self.answered += 1

    def close(self) -> None:
        self.sock.close()


def read_frame(sock: socket.socket) -> bytes:
    head = recv_exactly(sock, 12)
    assert head[:4] == MAGIC, head
    return head + recv_exactly(sock, struct.unpack(">I", head[4:8])[0])


def beside(rt, fn, *args, timeout: float = 60.0):
    """Run blocking socket code while ``rt`` serves: directly in threads mode; in a plain thread
    in deterministic mode, while this thread drives the runtime (stepping it)."""
    if rt.threads_mode:
        return fn(*args)
    result = {}

    def body():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:          # re-raised in the test's thread
            result["error"] = exc

    thread = threading.Thread(target=body, name="raw-attacker")
    thread.start()
    try:
        drive_until(rt, lambda: not thread.is_alive(), timeout=timeout, what="the raw client")
    finally:
        thread.join(timeout)
    if "error" in result:
        raise result["error"]
    return result.get("value")


def counts(rt) -> dict:
    """What a bad client could leak: sockets in use (failed ones not yet recycled included), file
    descriptors of this process, live bthreads."""
    state = rpc_state(rt)
    return {
        "sockets": sum(1 for s in state.sockets if s is not None and s._in_use),
        "fds": len(os.listdir("/proc/self/fd")),
        "bthreads": len(rt.live_bthreads()),
    }


def settle(rt, baseline: dict, timeout: float = 10.0) -> None:
    """Wait (drive) until the leak counts are back to ``baseline`` (or below: a reader bthread of
    the warm-up call may still have been on its way out when the baseline was taken)."""
    def back():
        now = counts(rt)
        return all(now[key] <= baseline[key] for key in baseline)
    try:
        drive_until(rt, back, timeout=timeout, what="counts back to baseline")
    except AssertionError:
        raise AssertionError(f"leak: {counts(rt)} != baseline {baseline}") from None


# ---------------------------------------------------------------------------------------------
# What brpc's server answers (design 6.6, 6.9, 7.4), as a model written from brpc's code
# ---------------------------------------------------------------------------------------------

class Outcome:
    """The model's prediction for a stream: the answers ((correlation_id, error_code, message or
    None) each), whether the server closes the connection, and whether it may close earlier
    (a frame with meta_size > body_size closes only when more bytes came in the same read)."""

    def __init__(self):
        self.answers: list = []
        self.closes = False
        self.may_close_early = False
        self.partial = False        # bytes of an unfinished frame at the end

    def counter(self) -> Counter:
        return Counter((cid, code) for cid, code, _ in self.answers)


def expected_answer(meta_bytes: bytes, payload: bytes):
    """(correlation_id, error_code, message) for one complete frame, or None: the connection is
    closed (a meta that does not parse or lacks required fields)."""
    meta = baidu_rpc_meta_pb2.RpcMeta()
    try:
        meta.ParseFromString(meta_bytes)
    except DecodeError:
        return None
    if not meta.IsInitialized():
        return None
    cid = meta.correlation_id
    if meta.HasField("attachment_size") and meta.attachment_size > len(payload):
        return cid, EREQUEST, None
    service = meta.request.service_name     # an absent request reads as empty names
    if isinstance(service, bytes):          # not UTF-8: brpc compares the raw bytes, no match
        service = service.decode("utf-8", "replace")
    if "." not in service:
        if service != SERVICE.rsplit(".", 1)[1]:
            return cid, ENOSERVICE, None
        service = SERVICE
    if service != SERVICE or meta.request.method_name != "Echo":
        return cid, ENOMETHOD, None
    body_size = len(payload) - meta.attachment_size
    body, attachment = payload[:body_size], payload[body_size:]
    request = echo_pb2.EchoRequest()
    # Checksums and compression are the wire layer's, tested against brpc's bytes elsewhere;
    # this model only decides which answer a frame gets.
    if not DeserializeRpcMessage(body, request, meta.content_type, meta.compress_type,
                                 meta.checksum_type, meta.checksum_value,
                                 attachment if meta.checksum_with_attachment else None):
        return cid, EREQUEST, None
    return cid, 0, request.message


def model(data: bytes, limit: int, reads: list[bytes] | None = None, process: bool = True) -> Outcome:
    """What brpc's server does with ``data`` (as one read, unless ``reads`` says how it arrived).

    With ``reads`` the prediction is exact; without, a dropped frame (meta_size > body_size)
    followed by more bytes sets ``may_close_early`` and the model goes on as if the bytes after it
    came in a later read. With ``process=False`` it models the cutter alone: every complete frame
    is a message (``answers`` holds None for each). A meta that does not parse closes the
    connection when that message is *processed*, and the frames cut in the same read are already
    on their way, so their answers stay possible: the model keeps cutting after it."""
    out = Outcome()
    failed_meta = False
    exact = reads is not None
    reads = reads if exact else [data]
    buf = b""
    for read in reads:
        buf += read
        while True:
            if len(buf) < 4:
                if buf != MAGIC[:len(buf)]:
                    out.closes = True           # no protocol recognises the bytes
                    return out
                break
            if buf[:4] != MAGIC:
                out.closes = True
                return out
            if len(buf) < 12:
                break
            body_size, meta_size = struct.unpack(">II", buf[4:12])
            if body_size > limit:
                out.closes = True               # decided from the header alone
                return out
            if len(buf) < 12 + body_size:
                break
            frame, buf = buf[:12 + body_size], buf[12 + body_size:]
            if meta_size > body_size:
                if buf:
                    # the other protocols look at what follows, and none recognises it
                    if exact:
                        out.closes = True
                        return out
                    out.may_close_early = True
                continue
            if not process:
                out.answers.append(None)
                continue
            answer = expected_answer(frame[12:12 + meta_size], frame[12 + meta_size:])
            if answer is None:
                failed_meta = True
                continue
            out.answers.append(answer)
    out.partial = bool(buf)
    out.closes = out.closes or failed_meta
    return out
