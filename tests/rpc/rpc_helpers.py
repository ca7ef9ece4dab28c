"""Helpers shared by the client/server tests (imported as a plain module; tests/rpc is on sys.path).

The fixtures live in conftest.py; this module holds what tests call directly: the echo stub, the
golden frames, a blocking frame reader for raw sockets, and small waiting helpers.
"""
from __future__ import annotations

import contextlib
import socket
import struct
import time
from pathlib import Path

from kit_test_helpers import close_checked, wait_for  # noqa: F401  (re-exported)
from brpc_mini.bthread import Runtime
from brpc_mini.proto import echo_pb2
from brpc_mini.rpc import Controller, make_stub

EchoService_Stub = make_stub(echo_pb2.DESCRIPTOR.services_by_name["EchoService"])

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "golden"
GOLDEN_ATTACHMENT = b"ATTACH-DATA"
#: correlation ids in the golden frames (README: slot 1, version 2; and 4242 for the error call)
GOLDEN_CALL_ID = 4294967298
GOLDEN_ERROR_CALL_ID = 4242
#: where real brpc's server listened when the error frame was captured
GOLDEN_SERVER = b"127.0.0.1:8000"

#: "promptly": generous, because the test machine is small and busy; never a tight bound
PROMPTLY_S = 5.0


def golden(name: str) -> bytes:
    return (GOLDEN_DIR / f"{name}.bin").read_bytes()


def free_port() -> int:
    """A loopback port with nobody listening (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError(f"peer closed with {n} bytes of the frame missing")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> bytes:
    """One whole baidu_std frame from a blocking socket: the 12-byte header, then body_size bytes."""
    header = recv_exactly(sock, 12)
    magic, body_size, _ = struct.unpack(">4sII", header)
    assert magic == b"PRPC", f"not a baidu_std frame: {header!r}"
    return header + recv_exactly(sock, body_size)


def echo(channel, message: str = "hello world", attachment: bytes = b"", cntl: Controller | None = None,
         done=None):
    """One Echo call; returns (cntl, response)."""
    cntl = cntl if cntl is not None else Controller()
    if attachment:
        cntl.request_attachment().append(attachment)
    response = EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest(message=message), done)
    return cntl, response


def stubs_for_unknown_names() -> dict:
    """Stubs for names the server does not serve, built as real protobuf descriptors in a private
    pool: ``example.EchoService`` with an extra method ``NoSuchMethod``, a dotted unknown service
    ``example.NoSuchService`` and an undotted one, ``NoSuchService``."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    pool = descriptor_pool.DescriptorPool()
    messages = descriptor_pb2.FileDescriptorProto()
    echo_pb2.DESCRIPTOR.CopyToProto(messages)
    messages.name = "echo_messages.proto"
    messages.ClearField("service")
    pool.AddSerializedFile(messages.SerializeToString())

    def add_service(file_proto, name, methods):
        service = file_proto.service.add(name=name)
        for method in methods:
            service.method.add(name=method, input_type=".example.EchoRequest",
                               output_type=".example.EchoResponse")

    dotted = descriptor_pb2.FileDescriptorProto(name="more_services.proto", package="example",
                                                dependency=["echo_messages.proto"])
    add_service(dotted, "EchoService", ["Echo", "NoSuchMethod"])
    add_service(dotted, "NoSuchService", ["Echo"])
    pool.AddSerializedFile(dotted.SerializeToString())
    undotted = descriptor_pb2.FileDescriptorProto(name="undotted.proto", dependency=["echo_messages.proto"])
    add_service(undotted, "NoSuchService", ["Echo"])
    pool.AddSerializedFile(undotted.SerializeToString())
    return {name: make_stub(pool.FindServiceByName(name))
            for name in ("example.EchoService", "example.NoSuchService", "NoSuchService")}


@contextlib.contextmanager
def rpc_runtime(mode: str = "deterministic", **options):
    """A runtime for a test that needs more than one (the ``rt`` fixture gives one per test):
    current inside the ``with``, then closed and checked like ``rt``."""
    runtime = Runtime(concurrency=options.pop("concurrency", 4), mode=mode, **options)
    with runtime:
        yield runtime
        close_checked(runtime)






def drive_until(rt: Runtime, predicate, timeout: float = 10.0, what: str = "condition") -> None:
    """Wait until ``predicate()``: poll a threaded runtime; step a deterministic one, tolerating
    idle steps (a peer outside the runtime — a plain thread, another process — may answer late)."""
    if rt.threads_mode:
        wait_for(predicate, timeout, what)
        return
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{rt.describe()}")
        if not rt.step():
            time.sleep(0.001)
