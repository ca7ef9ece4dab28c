"""CRC-32C and its mask, compression, and serializing messages into frame data and back."""

import gzip
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brpc_mini.proto import echo_pb2
from brpc_mini.rpc import errors
from brpc_mini.rpc.iobuf import IOBuf
from brpc_mini.rpc.policy.baidu_rpc_protocol import (
    CHECKSUM_TYPE_CRC32C,
    CHECKSUM_TYPE_NONE,
    COMPRESS_TYPE_GZIP,
    COMPRESS_TYPE_LZ4,
    COMPRESS_TYPE_NONE,
    COMPRESS_TYPE_SNAPPY,
    COMPRESS_TYPE_ZLIB,
    PARSE_OK,
    CompressData,
    CompressError,
    ComputeDataChecksum,
    Crc32cCompute,
    Crc32cVerify,
    DecompressData,
    DeserializeRpcMessage,
    PackRpcRequest,
    ParseRpcMessage,
    ParseRpcMeta,
    SerializeResponse,
    SerializeRpcRequest,
    VerifyDataChecksum,
    crc32c_extend,
    crc32c_mask,
    crc32c_unmask,
    crc32c_value,
)

# ----- CRC-32C ------------------------------------------------------------------------------------

# Check value of the CRC-32C catalogue entry, and the iSCSI test vectors of RFC 3720, B.4.
KNOWN_VECTORS = [
    (b"", 0),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


@pytest.mark.parametrize("data, expected", KNOWN_VECTORS)
def test_crc32c_known_vectors(data, expected):
    assert crc32c_value(data) == expected
    assert crc32c_value(bytearray(data)) == expected
    assert crc32c_value(IOBuf(data)) == expected


def test_crc32c_of_a_chunked_iobuf_equals_the_whole():
    buf = IOBuf()
    for piece in (b"123", b"456", b"789"):
        buf.append(piece)
    assert crc32c_value(buf) == 0xE3069283


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100), st.binary(max_size=100))
def test_crc32c_extend_continues_a_crc(a, b):
    assert crc32c_extend(crc32c_value(a), b) == crc32c_value(a + b)


def test_mask_known_values_and_unmask():
    crc = 0xE3069283
    rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
    assert crc32c_mask(crc) == (rotated + 0xA282EAD8) & 0xFFFFFFFF
    assert crc32c_mask(0) == 0xA282EAD8
    assert crc32c_mask(crc) != crc and crc32c_mask(crc32c_mask(crc)) != crc
    assert crc32c_unmask(crc32c_mask(crc)) == crc


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFFFFFF))
def test_unmask_undoes_mask(crc):
    masked = crc32c_mask(crc)
    assert 0 <= masked <= 0xFFFFFFFF and crc32c_unmask(masked) == crc


def test_checksum_value_is_the_masked_crc_big_endian():
    value = Crc32cCompute(b"123456789")
    assert value == struct.pack(">I", crc32c_mask(0xE3069283)) and len(value) == 4
    assert Crc32cCompute(b"12345", attachment=b"6789") == value
    assert Crc32cVerify(b"123456789", value)
    assert not Crc32cVerify(b"123456780", value)
    assert not Crc32cVerify(b"123456789", value[:3])


def test_checksum_dispatch_by_type():
    assert ComputeDataChecksum(CHECKSUM_TYPE_NONE, b"abc") == b""
    assert ComputeDataChecksum(CHECKSUM_TYPE_CRC32C, b"abc") == Crc32cCompute(b"abc")
    assert VerifyDataChecksum(CHECKSUM_TYPE_NONE, b"abc", b"anything")
    assert VerifyDataChecksum(CHECKSUM_TYPE_CRC32C, b"abc", Crc32cCompute(b"abc"))
    assert not VerifyDataChecksum(CHECKSUM_TYPE_CRC32C, b"abd", Crc32cCompute(b"abc"))
    # Like brpc: a type without a handler computes nothing and verifies everything.
    assert ComputeDataChecksum(77, b"abc") == b"" and VerifyDataChecksum(77, b"abc", b"")


# ----- compression --------------------------------------------------------------------------------

TEXT = b"hello world " * 50


@pytest.mark.parametrize("compress_type", [COMPRESS_TYPE_NONE, COMPRESS_TYPE_GZIP, COMPRESS_TYPE_ZLIB])
def test_compress_round_trip(compress_type):
    packed = CompressData(compress_type, TEXT)
    assert DecompressData(compress_type, packed) == TEXT
    assert DecompressData(compress_type, IOBuf(packed)) == TEXT
    if compress_type != COMPRESS_TYPE_NONE:
        assert len(packed) < len(TEXT)


def test_compressed_data_uses_the_standard_formats():
    assert gzip.decompress(CompressData(COMPRESS_TYPE_GZIP, TEXT)) == TEXT
    assert zlib.decompress(CompressData(COMPRESS_TYPE_ZLIB, TEXT)) == TEXT
    assert DecompressData(COMPRESS_TYPE_GZIP, gzip.compress(TEXT)) == TEXT
    # Several gzip members in a row decompress to their concatenation.
    assert DecompressData(COMPRESS_TYPE_GZIP, gzip.compress(b"ab") + gzip.compress(b"cd")) == b"abcd"


@pytest.mark.parametrize("compress_type", [COMPRESS_TYPE_SNAPPY, COMPRESS_TYPE_LZ4, 9])
def test_unsupported_compress_types_fail(compress_type):
    with pytest.raises(CompressError):
        CompressData(compress_type, TEXT)
    with pytest.raises(CompressError):
        DecompressData(compress_type, TEXT)


@pytest.mark.parametrize("compress_type", [COMPRESS_TYPE_GZIP, COMPRESS_TYPE_ZLIB])
def test_corrupt_or_truncated_compressed_data_fails(compress_type):
    packed = CompressData(compress_type, TEXT)
    with pytest.raises(CompressError):
        DecompressData(compress_type, packed[: len(packed) // 2])
    with pytest.raises(CompressError):
        DecompressData(compress_type, b"not compressed at all")


# ----- messages <-> data --------------------------------------------------------------------------


def test_serialize_request_plain():
    request = echo_pb2.EchoRequest(message="hello world")
    result = SerializeRpcRequest(request)
    assert result == (0, "", request.SerializeToString(), b"")
    error_code, error_text, body, checksum_value = result  # unpacks like a tuple
    assert error_code == 0


def test_serialize_request_failures_are_erequest():
    code, text, body, _ = SerializeRpcRequest(None)
    assert code == errors.EREQUEST and "None" in text and body == b""
    code, text, _, _ = SerializeRpcRequest(echo_pb2.EchoRequest())
    assert code == errors.EREQUEST and "Missing required fields" in text and "message" in text
    code, text, _, _ = SerializeRpcRequest(echo_pb2.EchoRequest(message="x"),
                                           compress_type=COMPRESS_TYPE_SNAPPY)
    assert code == errors.EREQUEST and "snappy" in text
    code, _, _, _ = SerializeRpcRequest(echo_pb2.EchoRequest(message="x"), content_type=1)
    assert code == errors.EREQUEST


def test_serialize_response_failures_are_eresponse():
    code, text, _, _ = SerializeResponse(echo_pb2.EchoResponse())
    assert code == errors.ERESPONSE and "Missing required fields in response" in text
    assert SerializeResponse(echo_pb2.EchoResponse(message="x")).error_code == 0


@pytest.mark.parametrize("compress_type", [COMPRESS_TYPE_NONE, COMPRESS_TYPE_GZIP, COMPRESS_TYPE_ZLIB])
@pytest.mark.parametrize("with_attachment", [False, True])
def test_request_with_checksum_and_compression_end_to_end(compress_type, with_attachment):
    request = echo_pb2.EchoRequest(message="hello world " * 20)
    attachment = b"ATTACH-DATA"
    code, _, body, checksum_value = SerializeRpcRequest(
        request, compress_type=compress_type, checksum_type=CHECKSUM_TYPE_CRC32C,
        attachment=attachment, checksum_with_attachment=with_attachment)
    assert code == 0 and len(checksum_value) == 4
    frame = PackRpcRequest(9, "example.EchoService", "Echo", body, attachment, log_id=0,
                           compress_type=compress_type, checksum_type=CHECKSUM_TYPE_CRC32C,
                           checksum_value=checksum_value,
                           checksum_with_attachment=with_attachment)
    result, message = ParseRpcMessage(IOBuf(frame))
    assert result == PARSE_OK
    meta = ParseRpcMeta(message.meta)
    assert meta.checksum_with_attachment == with_attachment
    data = message.payload.cutn(len(message.payload) - meta.attachment_size)
    received_attachment = message.payload
    assert received_attachment == attachment
    checksum_attachment = received_attachment if meta.checksum_with_attachment else None
    parsed = echo_pb2.EchoRequest()
    assert DeserializeRpcMessage(data, parsed, meta.content_type, meta.compress_type,
                                 meta.checksum_type, meta.checksum_value, checksum_attachment)
    assert parsed == request
    # One flipped bit in the data, or a different attachment under checksum_with_attachment.
    corrupt = bytearray(data.to_bytes())
    corrupt[-1] ^= 1
    assert not DeserializeRpcMessage(bytes(corrupt), echo_pb2.EchoRequest(), meta.content_type,
                                     meta.compress_type, meta.checksum_type, meta.checksum_value,
                                     checksum_attachment)
    if with_attachment:
        assert not DeserializeRpcMessage(data, echo_pb2.EchoRequest(), meta.content_type,
                                         meta.compress_type, meta.checksum_type,
                                         meta.checksum_value, b"attach-data")


def test_deserialize_failures():
    good = echo_pb2.EchoRequest(message="hi").SerializeToString()
    assert DeserializeRpcMessage(good, echo_pb2.EchoRequest())
    assert not DeserializeRpcMessage(b"\x0a\x05", echo_pb2.EchoRequest())  # truncated
    assert not DeserializeRpcMessage(b"", echo_pb2.EchoRequest())  # required field missing
    assert not DeserializeRpcMessage(good, echo_pb2.EchoRequest(), compress_type=COMPRESS_TYPE_GZIP)
    assert not DeserializeRpcMessage(good, echo_pb2.EchoRequest(), content_type=1)
    assert not DeserializeRpcMessage(good, echo_pb2.EchoRequest(),
                                     checksum_type=CHECKSUM_TYPE_CRC32C, checksum_value=b"\0" * 4)
