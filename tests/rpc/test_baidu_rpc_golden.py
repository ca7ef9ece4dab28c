"""baidu_std frames captured from real brpc (tests/data/golden/): parse every field, pack every byte.

The frames come from apache/brpc's example/echo_c++ client and server talking over loopback TCP
(see the project's shared golden README): a first request and its response, the same with an
11-byte attachment, and a call to an unknown method with brpc's ENOMETHOD answer.
"""

from pathlib import Path

import pytest

from brpc_mini.proto import echo_pb2
from brpc_mini.rpc import errors
from brpc_mini.rpc.iobuf import IOBuf
from brpc_mini.rpc.policy.baidu_rpc_protocol import (
    HEADER_SIZE,
    MAGIC,
    PARSE_OK,
    PackRpcRequest,
    PackRpcResponse,
    ParseRpcMessage,
    ParseRpcMeta,
)

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "golden"
FIRST_CALL_ID = 4294967298  # (slot 1 << 32) | version 2
ERROR_CALL_ID = 4242
ATTACHMENT = b"ATTACH-DATA"
ENOMETHOD_TEXT = "[127.0.0.1:8000][E1002]Fail to find method=example.EchoService/NoSuchMethod"
HELLO_REQUEST = echo_pb2.EchoRequest(message="hello world").SerializeToString()
HELLO_RESPONSE = echo_pb2.EchoResponse(message="hello world").SerializeToString()


def golden(name: str) -> bytes:
    return (GOLDEN_DIR / f"{name}.bin").read_bytes()


def parse_frame(frame: bytes):
    source = IOBuf(frame)
    result, message = ParseRpcMessage(source)
    assert result == PARSE_OK and source.empty()
    meta = ParseRpcMeta(message.meta)
    assert meta is not None
    return meta, message.payload.to_bytes()


def test_golden_files_have_the_documented_sizes():
    sizes = {"echo_request": 70, "echo_response": 43, "echo_attach_request": 83,
             "echo_attach_response": 56, "error_request": 75, "error_response": 105}
    for name, size in sizes.items():
        frame = golden(name)
        assert len(frame) == size and frame[:4] == MAGIC
        body_size = int.from_bytes(frame[4:8], "big")
        assert HEADER_SIZE + body_size == size


@pytest.mark.parametrize("name, method, attachment, call_id", [
    ("echo_request", "Echo", b"", FIRST_CALL_ID),
    ("echo_attach_request", "Echo", ATTACHMENT, FIRST_CALL_ID),
    ("error_request", "NoSuchMethod", b"", ERROR_CALL_ID),
])
def test_parse_golden_request(name, method, attachment, call_id):
    meta, payload = parse_frame(golden(name))
    assert meta.HasField("request") and not meta.HasField("response")
    request = meta.request
    assert request.service_name == "example.EchoService"
    assert request.method_name == method
    assert request.HasField("log_id") and request.log_id == 0
    for absent in ("trace_id", "span_id", "parent_span_id", "request_id", "timeout_ms"):
        assert not request.HasField(absent)
    assert meta.correlation_id == call_id
    # brpc writes these even though they hold their defaults.
    for present in ("compress_type", "content_type", "checksum_type", "checksum_value"):
        assert meta.HasField(present)
    assert meta.compress_type == 0 and meta.content_type == 0 and meta.checksum_type == 0
    assert meta.checksum_value == b""
    for absent in ("chunk_info", "authentication_data", "stream_settings", "checksum_with_attachment"):
        assert not meta.HasField(absent)
    assert len(meta.user_fields) == 0
    if attachment:
        assert meta.HasField("attachment_size") and meta.attachment_size == len(attachment)
    else:
        assert not meta.HasField("attachment_size")
    body = payload[: len(payload) - meta.attachment_size]
    assert payload[len(body):] == attachment
    assert echo_pb2.EchoRequest.FromString(body).message == "hello world"


@pytest.mark.parametrize("name, attachment", [
    ("echo_response", b""),
    ("echo_attach_response", ATTACHMENT),
])
def test_parse_golden_response(name, attachment):
    meta, payload = parse_frame(golden(name))
    assert meta.HasField("response") and not meta.HasField("request")
    assert meta.response.HasField("error_code") and meta.response.error_code == 0
    assert not meta.response.HasField("error_text")
    assert meta.correlation_id == FIRST_CALL_ID
    for present in ("compress_type", "content_type", "checksum_type", "checksum_value"):
        assert meta.HasField(present)
    assert meta.checksum_value == b""
    assert meta.HasField("attachment_size") == bool(attachment)
    body = payload[: len(payload) - meta.attachment_size]
    assert payload[len(body):] == attachment
    assert echo_pb2.EchoResponse.FromString(body).message == "hello world"


def test_parse_golden_error_response():
    meta, payload = parse_frame(golden("error_response"))
    assert meta.response.error_code == errors.ENOMETHOD == 1002
    assert meta.response.error_text == ENOMETHOD_TEXT
    assert meta.correlation_id == ERROR_CALL_ID
    assert not meta.HasField("attachment_size") and not meta.HasField("request")
    assert payload == b""


def test_error_request_matches_the_error_response():
    request_meta, _ = parse_frame(golden("error_request"))
    response_meta, _ = parse_frame(golden("error_response"))
    assert request_meta.correlation_id == response_meta.correlation_id
    assert response_meta.response.error_text.endswith(
        f"{request_meta.request.service_name}/{request_meta.request.method_name}")


def test_pack_echo_request_matches_brpc():
    frame = PackRpcRequest(FIRST_CALL_ID, "example.EchoService", "Echo", HELLO_REQUEST, log_id=0)
    assert frame == golden("echo_request")


def test_pack_echo_attach_request_matches_brpc():
    frame = PackRpcRequest(FIRST_CALL_ID, "example.EchoService", "Echo", HELLO_REQUEST,
                           attachment=ATTACHMENT, log_id=0)
    assert frame == golden("echo_attach_request")


def test_pack_error_request_matches_brpc():
    frame = PackRpcRequest(ERROR_CALL_ID, "example.EchoService", "NoSuchMethod", HELLO_REQUEST,
                           log_id=0)
    assert frame == golden("error_request")


def test_pack_echo_response_matches_brpc():
    assert PackRpcResponse(FIRST_CALL_ID, 0, "", HELLO_RESPONSE) == golden("echo_response")


def test_pack_echo_attach_response_matches_brpc():
    frame = PackRpcResponse(FIRST_CALL_ID, 0, "", HELLO_RESPONSE, attachment=ATTACHMENT)
    assert frame == golden("echo_attach_response")


def test_pack_error_response_matches_brpc():
    frame = PackRpcResponse(ERROR_CALL_ID, errors.ENOMETHOD, ENOMETHOD_TEXT, None)
    assert frame == golden("error_response")


def test_error_response_drops_body_and_attachment():
    # A failed call never carries a body, even if the caller passes one.
    frame = PackRpcResponse(ERROR_CALL_ID, errors.ENOMETHOD, ENOMETHOD_TEXT, HELLO_RESPONSE,
                            attachment=ATTACHMENT)
    assert frame == golden("error_response")


def test_golden_request_packed_from_its_own_parsed_fields():
    for name in ("echo_request", "echo_attach_request", "error_request"):
        frame = golden(name)
        meta, payload = parse_frame(frame)
        body = payload[: len(payload) - meta.attachment_size]
        attachment = payload[len(body):]
        again = PackRpcRequest(meta.correlation_id, meta.request.service_name,
                               meta.request.method_name, body, attachment,
                               log_id=meta.request.log_id)
        assert again == frame
