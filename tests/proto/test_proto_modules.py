"""The generated protobuf modules: brpc's names and numbers, relative imports, and freshness."""

import importlib
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from brpc_mini.proto import (
    baidu_rpc_meta_pb2,
    echo_pb2,
    generate,
    options_pb2,
    streaming_rpc_meta_pb2,
)

PROTO_DIR = Path(generate.__file__).resolve().parent
MODULES = ["baidu_rpc_meta_pb2", "echo_pb2", "options_pb2", "streaming_rpc_meta_pb2"]


OPT, REQ, REP = "optional", "required", "repeated"


def label(field):
    # protobuf 7 dropped FieldDescriptor.label; is_required / is_repeated replace it.
    return REQ if field.is_required else REP if field.is_repeated else OPT


def fields(message_class):
    return {f.name: (f.number, f.type, label(f)) for f in message_class.DESCRIPTOR.fields}


T = FieldDescriptor


def test_rpc_meta_has_brpc_fields():
    assert baidu_rpc_meta_pb2.RpcMeta.DESCRIPTOR.full_name == "brpc.policy.RpcMeta"
    assert fields(baidu_rpc_meta_pb2.RpcMeta) == {
        "request": (1, T.TYPE_MESSAGE, OPT),
        "response": (2, T.TYPE_MESSAGE, OPT),
        "compress_type": (3, T.TYPE_INT32, OPT),
        "correlation_id": (4, T.TYPE_INT64, OPT),
        "attachment_size": (5, T.TYPE_INT32, OPT),
        "chunk_info": (6, T.TYPE_MESSAGE, OPT),
        "authentication_data": (7, T.TYPE_BYTES, OPT),
        "stream_settings": (8, T.TYPE_MESSAGE, OPT),
        "user_fields": (9, T.TYPE_MESSAGE, REP),
        "content_type": (10, T.TYPE_ENUM, OPT),
        "checksum_type": (11, T.TYPE_INT32, OPT),
        "checksum_value": (12, T.TYPE_BYTES, OPT),
        "checksum_with_attachment": (13, T.TYPE_BOOL, OPT),
    }
    by_name = baidu_rpc_meta_pb2.RpcMeta.DESCRIPTOR.fields_by_name
    assert by_name["chunk_info"].message_type.full_name == "brpc.ChunkInfo"
    assert by_name["stream_settings"].message_type.full_name == "brpc.StreamSettings"
    assert by_name["content_type"].enum_type.full_name == "brpc.ContentType"
    assert by_name["user_fields"].message_type.GetOptions().map_entry


def test_request_and_response_meta_have_brpc_fields():
    assert fields(baidu_rpc_meta_pb2.RpcRequestMeta) == {
        "service_name": (1, T.TYPE_STRING, REQ),
        "method_name": (2, T.TYPE_STRING, REQ),
        "log_id": (3, T.TYPE_INT64, OPT),
        "trace_id": (4, T.TYPE_INT64, OPT),
        "span_id": (5, T.TYPE_INT64, OPT),
        "parent_span_id": (6, T.TYPE_INT64, OPT),
        "request_id": (7, T.TYPE_STRING, OPT),
        "timeout_ms": (8, T.TYPE_INT32, OPT),
    }
    assert fields(baidu_rpc_meta_pb2.RpcResponseMeta) == {
        "error_code": (1, T.TYPE_INT32, OPT),
        "error_text": (2, T.TYPE_STRING, OPT),
    }


def test_imported_messages():
    assert fields(options_pb2.ChunkInfo) == {
        "stream_id": (1, T.TYPE_INT64, REQ), "chunk_id": (2, T.TYPE_INT64, REQ)}
    assert fields(streaming_rpc_meta_pb2.StreamSettings) == {
        "stream_id": (1, T.TYPE_INT64, REQ),
        "need_feedback": (2, T.TYPE_BOOL, OPT),
        "writable": (3, T.TYPE_BOOL, OPT),
        "extra_stream_ids": (4, T.TYPE_INT64, REP),
    }


def test_enums_have_brpc_values():
    assert dict(options_pb2.CompressType.items()) == {
        "COMPRESS_TYPE_NONE": 0, "COMPRESS_TYPE_SNAPPY": 1, "COMPRESS_TYPE_GZIP": 2,
        "COMPRESS_TYPE_ZLIB": 3, "COMPRESS_TYPE_LZ4": 4}
    assert dict(options_pb2.ChecksumType.items()) == {
        "CHECKSUM_TYPE_NONE": 0, "CHECKSUM_TYPE_CRC32C": 1}
    assert dict(options_pb2.ContentType.items()) == {
        "CONTENT_TYPE_PB": 0, "CONTENT_TYPE_JSON": 1, "CONTENT_TYPE_PROTO_JSON": 2,
        "CONTENT_TYPE_PROTO_TEXT": 3}
    assert dict(options_pb2.ConnectionType.items()) == {
        "CONNECTION_TYPE_UNKNOWN": 0, "CONNECTION_TYPE_SINGLE": 1, "CONNECTION_TYPE_POOLED": 2,
        "CONNECTION_TYPE_SHORT": 4}
    assert options_pb2.PROTOCOL_BAIDU_STD == 2 and options_pb2.PROTOCOL_STREAMING_RPC == 3
    assert options_pb2.PROTOCOL_HTTP == 8


def test_echo_service():
    assert fields(echo_pb2.EchoRequest) == {"message": (1, T.TYPE_STRING, REQ)}
    assert fields(echo_pb2.EchoResponse) == {"message": (1, T.TYPE_STRING, REQ)}
    service = echo_pb2.DESCRIPTOR.services_by_name["EchoService"]
    assert service.full_name == "example.EchoService"
    method = service.methods_by_name["Echo"]
    assert method.input_type.full_name == "example.EchoRequest"
    assert method.output_type.full_name == "example.EchoResponse"


def test_proto2_writes_explicit_defaults_in_field_number_order():
    # What the golden frames rely on: set-to-zero fields are written, in field-number order,
    # whatever order they were assigned in.
    meta = baidu_rpc_meta_pb2.RpcMeta()
    meta.checksum_value = b""
    meta.content_type = 0
    meta.correlation_id = 1
    meta.compress_type = 0
    assert meta.SerializeToString() == bytes.fromhex("1800" "2001" "5000" "6200")


@pytest.mark.parametrize("module", MODULES)
def test_generated_modules_use_relative_imports(module):
    text = (PROTO_DIR / f"{module}.py").read_text()
    assert "from brpc_mini.proto import" not in text
    assert "\nimport " not in text.split("# @@protoc_insertion_point(imports)")[1]
    importlib.import_module(f"brpc_mini.proto.{module}")


def test_checked_in_modules_are_current(tmp_path):
    pytest.importorskip("grpc_tools")
    written = generate.generate(tmp_path)
    assert len(written) == 2 * len(MODULES)
    for path in written:
        checked_in = PROTO_DIR / path.name
        assert checked_in.read_text() == path.read_text(), f"{path.name} is stale: run " \
            "python -m brpc_mini.proto.generate"
