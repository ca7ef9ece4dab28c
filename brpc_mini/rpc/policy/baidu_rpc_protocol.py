"""baidu_std, brpc's native protocol: frame layout, cutting frames off a read buffer, packing them.

brpc: src/brpc/policy/baidu_rpc_protocol.cpp

A frame is a 12-byte header, a protobuf meta, then the payload:

    "PRPC" | body_size (u32 BE) | meta_size (u32 BE) | RpcMeta | data | attachment

body_size counts everything after the header (meta + data + attachment); the attachment is raw
bytes whose length travels in RpcMeta.attachment_size. The data may be compressed (GZIP, ZLIB) and
may carry a masked CRC-32C in RpcMeta.checksum_value.

This module is the wire part only and needs no runtime: `ParseRpcMessage` cuts frames, `ParseRpcMeta`
reads a meta, `SerializeRpcRequest` / `SerializeResponse` / `DeserializeRpcMessage` turn messages into
data bytes and back, `PackRpcRequest` / `PackRpcResponse` build whole frames with the same fields,
in the same order, as real brpc (tests/data/golden/ holds frames captured from brpc to prove it).
The process functions, which need sockets, controllers and bthreads, sit in the last section.

How Python differs: brpc reports serialization failures by calling `cntl->SetFailed`; there is no
Controller at this layer, so the serialize helpers return (error_code, error_text, ...) and the caller
calls SetFailed. Frames are returned as bytes rather than appended to an IOBuf.
"""

from __future__ import annotations

import logging
import struct
import sys
import zlib
from enum import IntEnum
from typing import NamedTuple, Optional, Union

from google.protobuf.message import DecodeError, EncodeError, Message

from brpc_mini.bthread import bthread_id_lock
from brpc_mini.proto import baidu_rpc_meta_pb2, options_pb2
from brpc_mini.rpc.errors import (EINTERNAL, ELIMIT, ELOGOFF, ENOMETHOD, ENOSERVICE, EOVERCROWDED, EREQUEST,
                                  ERESPONSE)
from brpc_mini.rpc.iobuf import IOBuf
# controller imports this module, so theirs are read at call time (an import statement inside the
# per-message functions cost about 0.5 us each time, found by profiling)
from brpc_mini.rpc import controller as _controller, socket as _socket  # noqa: E402  (cycle)

RpcMeta = baidu_rpc_meta_pb2.RpcMeta
_log = logging.getLogger("brpc_mini.rpc")
Data = Union[bytes, bytearray, memoryview, IOBuf]

MAGIC = b"PRPC"
HEADER_SIZE = 12
_HEADER = struct.Struct(">4sII")

# Frames whose body_size exceeds this are refused from the header alone, before the body arrives.
# brpc: src/brpc/protocol.cpp, FLAGS_max_body_size (64 MiB). Assign to change it for every parser.
FLAGS_max_body_size = 64 * 1024 * 1024
# Whether clients put timeout_ms in the request meta. brpc: FLAGS_baidu_std_protocol_deliver_timeout_ms.
# PackRpcRequest writes timeout_ms whenever it is given a positive one; the caller consults this flag.
FLAGS_baidu_std_protocol_deliver_timeout_ms = False

COMPRESS_TYPE_NONE = options_pb2.COMPRESS_TYPE_NONE
COMPRESS_TYPE_SNAPPY = options_pb2.COMPRESS_TYPE_SNAPPY
COMPRESS_TYPE_GZIP = options_pb2.COMPRESS_TYPE_GZIP
COMPRESS_TYPE_ZLIB = options_pb2.COMPRESS_TYPE_ZLIB
COMPRESS_TYPE_LZ4 = options_pb2.COMPRESS_TYPE_LZ4
CHECKSUM_TYPE_NONE = options_pb2.CHECKSUM_TYPE_NONE
CHECKSUM_TYPE_CRC32C = options_pb2.CHECKSUM_TYPE_CRC32C
CONTENT_TYPE_PB = options_pb2.CONTENT_TYPE_PB

_INT64_MIN = -(1 << 63)
_UINT64_LIMIT = 1 << 64


def _to_bytes(data: Data) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, IOBuf):
        return data.to_bytes()
    return bytes(data)


# ================================================================================================
# Cutting frames
# ================================================================================================


class ParseError(IntEnum):
    """What a protocol's parse function says about the front of a read buffer.

    brpc: src/brpc/parse_result.h, ParseError

    Same names and values as brpc. ParseRpcMessage returns PARSE_OK, TRY_OTHERS, NOT_ENOUGH_DATA or
    TOO_BIG_DATA; NO_RESOURCE and ABSOLUTELY_WRONG come from other layers (InputMessenger turns a
    client socket's TRY_OTHERS into ABSOLUTELY_WRONG).
    """

    PARSE_OK = 0
    PARSE_ERROR_TRY_OTHERS = 1
    PARSE_ERROR_NOT_ENOUGH_DATA = 2
    PARSE_ERROR_TOO_BIG_DATA = 3
    PARSE_ERROR_NO_RESOURCE = 4
    PARSE_ERROR_ABSOLUTELY_WRONG = 5


PARSE_OK = ParseError.PARSE_OK
PARSE_ERROR_TRY_OTHERS = ParseError.PARSE_ERROR_TRY_OTHERS
PARSE_ERROR_NOT_ENOUGH_DATA = ParseError.PARSE_ERROR_NOT_ENOUGH_DATA
PARSE_ERROR_TOO_BIG_DATA = ParseError.PARSE_ERROR_TOO_BIG_DATA
PARSE_ERROR_NO_RESOURCE = ParseError.PARSE_ERROR_NO_RESOURCE
PARSE_ERROR_ABSOLUTELY_WRONG = ParseError.PARSE_ERROR_ABSOLUTELY_WRONG


class RpcMessage:
    """One frame cut off a read buffer: the meta bytes and the payload (data + attachment) bytes.

    brpc: src/brpc/policy/most_common_message.h, MostCommonMessage

    Both parts are IOBufs that share memory with the read buffer. brpc pools these objects and gives
    them a socket reference and a received time when InputMessenger takes them; the layers above
    may attach such attributes here too.
    """

    def __init__(self, meta: Optional[IOBuf] = None, payload: Optional[IOBuf] = None) -> None:
        self.meta = meta if meta is not None else IOBuf()
        self.payload = payload if payload is not None else IOBuf()

    def __repr__(self) -> str:
        return f"RpcMessage(meta={len(self.meta)} bytes, payload={len(self.payload)} bytes)"


def ParseRpcMessage(
    source: IOBuf, max_body_size: Optional[int] = None
) -> tuple[ParseError, Optional[RpcMessage]]:
    """Cut one baidu_std frame off the front of `source`, or say why not.

    brpc: src/brpc/policy/baidu_rpc_protocol.cpp, ParseRpcMessage

    Returns (PARSE_OK, message) and consumes 12 + body_size bytes, or (error, None):
    - TRY_OTHERS, nothing consumed: the bytes do not start with "PRPC" (or a prefix of it);
    - NOT_ENOUGH_DATA, nothing consumed: a header or body is still on its way;
    - TOO_BIG_DATA, nothing consumed: the header announces more than max_body_size bytes
      (FLAGS_max_body_size when None), decided before the body arrives;
    - TRY_OTHERS with the whole frame (12 + body_size bytes) consumed: meta_size > body_size.
    The checks run in brpc's order, so a frame with meta_size > body_size is NOT_ENOUGH_DATA until
    all of it has arrived. brpc also takes the socket and a read_eof flag; this parser needs neither.
    """
    if not isinstance(source, IOBuf):
        raise TypeError(f"ParseRpcMessage: source must be an IOBuf, got {type(source).__name__}")
    chunks = source._chunks
    if chunks and len(chunks[0]) >= HEADER_SIZE:
        # The common case, one read holding whole frames: when this frame lies inside the first
        # chunk, cut it with two slices of that chunk. Same checks, same result as below.
        first = chunks[0]
        magic, body_size, meta_size = _HEADER.unpack_from(first)
        frame_size = HEADER_SIZE + body_size
        if (magic == MAGIC and meta_size <= body_size and len(first) >= frame_size
                and body_size <= (FLAGS_max_body_size if max_body_size is None else max_body_size)):
            meta_end = HEADER_SIZE + meta_size
            meta, payload = IOBuf(), IOBuf()
            if meta_size:
                meta._chunks.append(first[HEADER_SIZE:meta_end])
                meta._size = meta_size
            if frame_size > meta_end:
                payload._chunks.append(first[meta_end:frame_size])
                payload._size = frame_size - meta_end
            if len(first) == frame_size:
                chunks.popleft()
            else:
                chunks[0] = first[frame_size:]
            source._size -= frame_size
            return PARSE_OK, RpcMessage(meta, payload)
    header = source.copy_to(HEADER_SIZE)
    n = len(header)
    if n >= 4:
        if header[:4] != MAGIC:
            return PARSE_ERROR_TRY_OTHERS, None
    elif header != MAGIC[:n]:
        return PARSE_ERROR_TRY_OTHERS, None
    if n < HEADER_SIZE:
        return PARSE_ERROR_NOT_ENOUGH_DATA, None
    _, body_size, meta_size = _HEADER.unpack(header)
    limit = FLAGS_max_body_size if max_body_size is None else max_body_size
    if body_size > limit:
        return PARSE_ERROR_TOO_BIG_DATA, None
    if len(source) < HEADER_SIZE + body_size:
        return PARSE_ERROR_NOT_ENOUGH_DATA, None
    if meta_size > body_size:
        # The frame is complete but self-contradictory: drop it and let other protocols look at
        # whatever follows, as brpc does (and log it, as brpc does: the messenger's later
        # "unknown message" would not say which frame was wrong).
        _log.error("meta_size=%d is bigger than body_size=%d", meta_size, body_size)
        source.pop_front(HEADER_SIZE + body_size)
        return PARSE_ERROR_TRY_OTHERS, None
    source.pop_front(HEADER_SIZE)
    meta = source.cutn(meta_size)
    payload = source.cutn(body_size - meta_size)
    return PARSE_OK, RpcMessage(meta, payload)


def ParseRpcMeta(meta: Data) -> Optional[RpcMeta]:
    """Parse the meta of a frame; None if the bytes are not a valid, complete RpcMeta.

    brpc: src/brpc/policy/baidu_rpc_protocol.cpp, ParsePbFromIOBuf(&meta, msg->meta)

    Unknown fields are kept and any field order is accepted. Missing required fields (a request
    without service_name or method_name) make it fail, as in brpc: protobuf-python's
    ParseFromString does not check them, so this function does.
    """
    result = RpcMeta()
    try:
        result.ParseFromString(_to_bytes(meta))
    except DecodeError:
        return None
    if not result.IsInitialized():
        return None
    return result


# ================================================================================================
# CRC-32C (Castagnoli), masked as brpc stores it
# ================================================================================================

_CRC32C_POLY = 0x82F63B78  # 0x1EDC6F41 bit-reversed


def _make_crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _make_crc32c_table()
_CRC32C_MASK_DELTA = 0xA282EAD8


def crc32c_extend(crc: int, data: Data) -> int:
    """Continue a CRC-32C over more bytes: crc32c_extend(crc32c_value(a), b) == crc32c_value(a + b).

    brpc: src/butil/crc32c.h, butil::crc32c::Extend

    A byte-at-a-time table lookup; brpc uses the SSE4.2 instruction. Fine for frames of a few
    hundred kilobytes, slow (about 10 MB/s) beyond.
    """
    table = _CRC32C_TABLE
    crc ^= 0xFFFFFFFF
    pieces = data.chunks() if isinstance(data, IOBuf) else (data,)
    for piece in pieces:
        for byte in bytes(piece):
            crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c_value(data: Data) -> int:
    """CRC-32C of data (brpc: src/butil/crc32c.h, butil::crc32c::Value)."""
    return crc32c_extend(0, data)


def crc32c_mask(crc: int) -> int:
    """Rotate right by 15 bits and add a constant, so a CRC stored next to data is not a CRC of it.

    brpc: src/butil/crc32c.h, butil::crc32c::Mask
    """
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC32C_MASK_DELTA) & 0xFFFFFFFF


def crc32c_unmask(masked_crc: int) -> int:
    """Undo crc32c_mask (brpc: src/butil/crc32c.h, butil::crc32c::Unmask)."""
    rotated = (masked_crc - _CRC32C_MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


def Crc32cCompute(data: Data, attachment: Optional[Data] = None) -> bytes:
    """The checksum_value for data (continued over attachment if given): masked, 4 bytes big-endian.

    brpc: src/brpc/policy/crc32c_checksum.cpp, Crc32cCompute
    """
    crc = crc32c_value(data)
    if attachment is not None:
        crc = crc32c_extend(crc, attachment)
    return struct.pack(">I", crc32c_mask(crc))


def Crc32cVerify(data: Data, checksum_value: bytes, attachment: Optional[Data] = None) -> bool:
    """True if checksum_value is the masked CRC-32C of data (and attachment, if given).

    brpc: src/brpc/policy/crc32c_checksum.cpp, Crc32cVerify

    brpc aborts (CHECK) on a value that is not 4 bytes long; here that is simply a mismatch.
    """
    if len(checksum_value) != 4:
        return False
    return Crc32cCompute(data, attachment) == bytes(checksum_value)


def ComputeDataChecksum(checksum_type: int, data: Data, attachment: Optional[Data] = None) -> bytes:
    """The checksum_value to send for data: b"" for CHECKSUM_TYPE_NONE (and, as in brpc, unknown types).

    brpc: src/brpc/checksum.cpp, ComputeDataChecksum
    """
    if checksum_type == CHECKSUM_TYPE_CRC32C:
        return Crc32cCompute(data, attachment)
    return b""


def VerifyDataChecksum(
    checksum_type: int, data: Data, checksum_value: bytes, attachment: Optional[Data] = None
) -> bool:
    """Check a received checksum_value. True for CHECKSUM_TYPE_NONE and, as in brpc, unknown types.

    brpc: src/brpc/checksum.cpp, VerifyDataChecksum
    """
    if checksum_type == CHECKSUM_TYPE_CRC32C:
        return Crc32cVerify(data, checksum_value, attachment)
    return True


# ================================================================================================
# Compression of the data part (never of the meta or the attachment)
# ================================================================================================

# zlib window bits: 15 for the zlib wrapper, 15 + 16 for the gzip wrapper; the same settings as
# protobuf's GzipOutputStream, which brpc uses, so the compressed bytes match brpc's.
_WBITS = {COMPRESS_TYPE_GZIP: 31, COMPRESS_TYPE_ZLIB: 15}
_COMPRESS_NAMES = {
    COMPRESS_TYPE_NONE: "none",
    COMPRESS_TYPE_SNAPPY: "snappy",
    COMPRESS_TYPE_GZIP: "gzip",
    COMPRESS_TYPE_ZLIB: "zlib",
    COMPRESS_TYPE_LZ4: "lz4",
}


class CompressError(ValueError):
    """A compress type brpc_mini does not implement, or data that does not decompress."""


def CompressTypeToCStr(compress_type: int) -> str:
    """Name of a compress type for messages: "none", "gzip", ... (brpc: src/brpc/compress.cpp)."""
    return _COMPRESS_NAMES.get(compress_type, "unknown")


def ContentTypeToCStr(content_type: int) -> str:
    """Name of a content type for messages (brpc: policy/baidu_rpc_protocol.cpp, ContentTypeToCStr)."""
    return {0: "pb", 1: "json", 2: "proto-json", 3: "proto-text"}.get(content_type, "unknown")


def ChecksumTypeToCStr(checksum_type: int) -> str:
    """Name of a checksum type for messages (brpc: src/brpc/checksum.cpp, ChecksumTypeToCStr)."""
    return {CHECKSUM_TYPE_NONE: "none", CHECKSUM_TYPE_CRC32C: "crc32c"}.get(checksum_type, "unknown")


def CompressData(compress_type: int, data: Data) -> bytes:
    """Compress data with NONE, GZIP or ZLIB; raise CompressError for SNAPPY, LZ4 or unknown types.

    brpc: src/brpc/compress.cpp, SerializeAsCompressedData (and the handlers in src/brpc/policy/)
    """
    raw = _to_bytes(data)
    if compress_type == COMPRESS_TYPE_NONE:
        return raw
    wbits = _WBITS.get(compress_type)
    if wbits is None:
        raise CompressError(f"compress type {CompressTypeToCStr(compress_type)} "
                            f"({compress_type}) is not supported by brpc_mini")
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, wbits)
    return compressor.compress(raw) + compressor.flush()


def DecompressData(compress_type: int, data: Data) -> bytes:
    """Undo CompressData; raise CompressError on unsupported types and on corrupt or truncated data.

    brpc: src/brpc/compress.cpp, ParseFromCompressedData

    Concatenated streams (several gzip members) are accepted, like protobuf's GzipInputStream.
    """
    raw = _to_bytes(data)
    if compress_type == COMPRESS_TYPE_NONE:
        return raw
    wbits = _WBITS.get(compress_type)
    if wbits is None:
        raise CompressError(f"compress type {CompressTypeToCStr(compress_type)} "
                            f"({compress_type}) is not supported by brpc_mini")
    parts = []
    remaining = raw
    try:
        while True:
            decompressor = zlib.decompressobj(wbits)
            parts.append(decompressor.decompress(remaining))
            parts.append(decompressor.flush())
            if not decompressor.eof:
                raise CompressError(f"truncated {CompressTypeToCStr(compress_type)} data")
            remaining = decompressor.unused_data
            if not remaining:
                break
    except zlib.error as error:
        raise CompressError(f"corrupt {CompressTypeToCStr(compress_type)} data: {error}") from None
    return b"".join(parts)


# ================================================================================================
# Messages <-> data bytes
# ================================================================================================


class SerializeResult(NamedTuple):
    """What serializing a message gives: error_code 0 with body and checksum_value, or an error."""

    error_code: int
    error_text: str
    body: bytes
    checksum_value: bytes


def SerializeRpcMessage(
    message: Message,
    content_type: int = CONTENT_TYPE_PB,
    compress_type: int = COMPRESS_TYPE_NONE,
    checksum_type: int = CHECKSUM_TYPE_NONE,
    checksum_attachment: Optional[Data] = None,
) -> tuple[bytes, bytes]:
    """Serialize, compress, then checksum a message (plus checksum_attachment, when given).

    brpc: src/brpc/policy/baidu_rpc_protocol.cpp, SerializeRpcMessage

    Returns (body, checksum_value). Raises CompressError for an unsupported compress type and
    ValueError for a content type other than PB (brpc also speaks JSON and text here; the kit does
    not). brpc returns false instead; SerializeRpcRequest turns either into an error code.
    """
    if content_type != CONTENT_TYPE_PB:
        raise ValueError(f"content type {content_type} is not supported by brpc_mini (only PB = 0)")
    body = CompressData(compress_type, message.SerializeToString(deterministic=True))
    return body, ComputeDataChecksum(checksum_type, body, checksum_attachment)


def _serialize(message, what, error_code, content_type, compress_type, checksum_type,
               attachment, checksum_with_attachment) -> SerializeResult:
    if message is None:
        return SerializeResult(error_code, f"`{what}' is None", b"", b"")
    if not message.IsInitialized():
        missing = ", ".join(message.FindInitializationErrors())
        return SerializeResult(error_code, f"Missing required fields in {what}: {missing}", b"", b"")
    checksum_attachment = attachment if checksum_with_attachment else None
    try:
        body, checksum_value = SerializeRpcMessage(
            message, content_type, compress_type, checksum_type, checksum_attachment)
    except (ValueError, EncodeError) as error:
        return SerializeResult(
            error_code,
            f"Fail to serialize {what}={message.DESCRIPTOR.full_name}, ContentType={content_type}, "
            f"CompressType={CompressTypeToCStr(compress_type)}, ChecksumType={checksum_type}: {error}",
            b"", b"")
    return SerializeResult(0, "", body, checksum_value)


def SerializeRpcRequest(
    request: Optional[Message],
    compress_type: int = COMPRESS_TYPE_NONE,
    checksum_type: int = CHECKSUM_TYPE_NONE,
    attachment: Data = b"",
    checksum_with_attachment: bool = False,
    content_type: int = CONTENT_TYPE_PB,
) -> SerializeResult:
    """Turn a request message into the data bytes of a frame and their checksum_value.

    brpc: src/brpc/policy/baidu_rpc_protocol.cpp, SerializeRpcRequest

    Every failure is EREQUEST, as in brpc: a None request, unset required fields, an unsupported
    content or compress type. brpc calls cntl->SetFailed; this returns the code and text instead.
    """
    return _serialize(request, "request", EREQUEST, content_type, compress_type, checksum_type,
                      attachment, checksum_with_attachment)


def SerializeResponse(
    response: Optional[Message],
    compress_type: int = COMPRESS_TYPE_NONE,
    checksum_type: int = CHECKSUM_TYPE_NONE,
    attachment: Data = b"",
    checksum_with_attachment: bool = False,
    content_type: int = CONTENT_TYPE_PB,
) -> SerializeResult:
    """Turn a response message into data bytes and checksum_value; failures are ERESPONSE.

    brpc: src/brpc/policy/baidu_rpc_protocol.cpp, SerializeResponse (a static helper of
    SendRpcResponse)
    """
    return _serialize(response, "response", ERESPONSE, content_type, compress_type, checksum_type,
                      attachment, checksum_with_attachment)


def DeserializeRpcMessage(
    data: Data,
    message: Message,
    content_type: int = CONTENT_TYPE_PB,
    compress_type: int = COMPRESS_TYPE_NONE,
    checksum_type: int = CHECKSUM_TYPE_NONE,
    checksum_value: bytes = b"",
    checksum_attachment: Optional[Data] = None,
) -> bool:
    """Verify the checksum, decompress, then parse data into message; False on any failure.

    brpc: src/brpc/policy/baidu_rpc_protocol.cpp, DeserializeRpcMessage

    The caller turns False into EREQUEST "Fail to parse request/response=...". Like brpc's parser
    (and unlike protobuf-python's ParseFromString), a message left with unset required fields fails.
    """
    if content_type != CONTENT_TYPE_PB:
        return False
    if not VerifyDataChecksum(checksum_type, data, checksum_value, checksum_attachment):
        return False
    try:
        message.ParseFromString(DecompressData(compress_type, data))
    except (CompressError, DecodeError):
        return False
    return message.IsInitialized()


# ================================================================================================
# Whole frames
# ================================================================================================


def PackRpcHeader(meta_size: int, payload_size: int) -> bytes:
    """The 12-byte header: "PRPC", body_size = meta_size + payload_size, meta_size; big-endian.

    brpc: src/brpc/policy/baidu_rpc_protocol.cpp, PackRpcHeader
    """
    return _HEADER.pack(MAGIC, meta_size + payload_size, meta_size)


def _signed_correlation_id(correlation_id: int) -> int:
    # A bthread_id is a uint64 but RpcMeta.correlation_id is an int64; brpc stores the same 64 bits
    # and the receiver casts back. Values >= 2**63 become negative on the wire, as in brpc.
    if not _INT64_MIN <= correlation_id < _UINT64_LIMIT:
        raise ValueError(f"correlation_id must fit in 64 bits, got {correlation_id}")
    return correlation_id - _UINT64_LIMIT if correlation_id >= 1 << 63 else correlation_id


def _frame(meta: RpcMeta, *parts: bytes) -> bytes:
    meta_bytes = meta.SerializeToString(deterministic=True)
    payload_size = sum(len(part) for part in parts)
    return b"".join((PackRpcHeader(len(meta_bytes), payload_size), meta_bytes, *parts))


def PackRpcRequest(
    correlation_id: int,
    service_full_name: str,
    method_name: str,
    body: Data,
    attachment: Data = b"",
    log_id: Optional[int] = None,
    compress_type: int = COMPRESS_TYPE_NONE,
    checksum_type: int = CHECKSUM_TYPE_NONE,
    checksum_value: bytes = b"",
    request_id: Optional[str] = None,
    timeout_ms: Optional[int] = None,
    *,
    checksum_with_attachment: bool = False,
    content_type: int = CONTENT_TYPE_PB,
    user_fields: Optional[dict[str, str]] = None,
) -> bytes:
    """Build a request frame: header, RpcMeta, body (already serialized), attachment.

    brpc: src/brpc/policy/baidu_rpc_protocol.cpp, PackRpcRequest

    The meta holds what brpc puts there: service and method names; compress_type, checksum_type,
    checksum_value and content_type always, even when 0 or empty; log_id when given (brpc's client
    example sets it, to 0 for the first call); request_id when non-empty; correlation_id;
    user_fields when any; attachment_size only for a non-empty attachment; timeout_ms only when
    given and positive (brpc sends it only with FLAGS_baidu_std_protocol_deliver_timeout_ms);
    checksum_with_attachment only when true. protobuf writes fields in field-number order, which is
    what brpc's C++ protobuf does too, so the bytes match brpc's.
    """
    meta = RpcMeta()
    request_meta = meta.request
    request_meta.service_name = service_full_name
    request_meta.method_name = method_name
    meta.compress_type = compress_type
    meta.checksum_type = checksum_type
    meta.checksum_value = bytes(checksum_value)
    if checksum_with_attachment:
        meta.checksum_with_attachment = True
    if log_id is not None:
        request_meta.log_id = log_id
    if request_id:
        request_meta.request_id = request_id
    meta.correlation_id = _signed_correlation_id(correlation_id)
    if user_fields:
        meta.user_fields.update(user_fields)
    body_bytes = _to_bytes(body)
    attachment_bytes = _to_bytes(attachment)
    if attachment_bytes:
        meta.attachment_size = len(attachment_bytes)
    if timeout_ms is not None and timeout_ms > 0:
        request_meta.timeout_ms = timeout_ms
    meta.content_type = content_type
    return _frame(meta, body_bytes, attachment_bytes)


def PackRpcResponse(
    correlation_id: int,
    error_code: int,
    error_text: str,
    body: Optional[Data],
    attachment: Data = b"",
    compress_type: int = COMPRESS_TYPE_NONE,
    checksum_type: int = CHECKSUM_TYPE_NONE,
    checksum_value: bytes = b"",
    *,
    checksum_with_attachment: bool = False,
    content_type: int = CONTENT_TYPE_PB,
    user_fields: Optional[dict[str, str]] = None,
) -> bytes:
    """Build a response frame: header, RpcMeta, and on success the body and attachment.

    brpc: src/brpc/policy/baidu_rpc_protocol.cpp, SendRpcResponse (the part that builds the frame)

    Success means error_code == 0 and a body (b"" is a valid, empty body); otherwise body and
    attachment are left out, as brpc does for a failed Controller. error_code is always written,
    -1 becoming EINTERNAL (2001) as in brpc; error_text only when non-empty; correlation_id,
    compress_type, content_type, checksum_type and checksum_value always; user_fields when any;
    attachment_size only when a body goes out with a non-empty attachment.
    """
    if error_code == -1:
        # A bare -1 says "failed" without saying who failed; brpc reports it as a server error.
        error_code = EINTERNAL
    append_body = body is not None and error_code == 0
    meta = RpcMeta()
    meta.response.error_code = error_code
    if error_text:
        meta.response.error_text = error_text
    meta.correlation_id = _signed_correlation_id(correlation_id)
    meta.compress_type = compress_type
    meta.content_type = content_type
    meta.checksum_type = checksum_type
    meta.checksum_value = bytes(checksum_value)
    if checksum_with_attachment:
        meta.checksum_with_attachment = True
    if user_fields:
        meta.user_fields.update(user_fields)
    if not append_body:
        return _frame(meta)
    body_bytes = _to_bytes(body)
    attachment_bytes = _to_bytes(attachment)
    if attachment_bytes:
        meta.attachment_size = len(attachment_bytes)
    return _frame(meta, body_bytes, attachment_bytes)


# ================================================================================================
# Processing requests and responses (needs the runtime: sockets, controllers, bthreads)
#
# brpc: ProcessRpcRequest, ProcessRpcResponse, SendRpcResponse, VerifyRpcRequest.
# Added by the rpc layer; everything above is the wire format they build on.
# ================================================================================================

_CORRELATION_MASK = (1 << 64) - 1


def ProcessRpcResponse(msg) -> None:
    """Client: find the RPC by correlation id, lock it, parse the response, and let it end.

    brpc: src/brpc/policy/baidu_rpc_protocol.cpp, ProcessRpcResponse

    Order as in brpc: lock the Id, deserialize into the Controller's response, *then*
    ``OnVersionedRPCReturned`` checks the version — so a stale try's response is parsed into the
    user's response object before it is ignored (its error code is restored, not its message).
    A failed lock (EINVAL: the RPC is over; EPERM: it is being destroyed) drops the message.
    """
    s = msg.socket
    rt = s.runtime
    meta = ParseRpcMeta(msg.meta)
    if meta is None or not meta.HasField("response"):
        _log.warning("Fail to parse RpcMeta of a response from %s", s.label)
        return
    cid = meta.correlation_id & _CORRELATION_MASK
    pdata = []
    rc = bthread_id_lock(cid, pdata)
    if rc != 0:
        rt._emit("drop_response", rt._current_meta(), f"cid=0x{cid:x}: bthread_id_lock returned {rc}")
        return
    cntl = pdata[0]
    if rt.observed:
        rt.checkpoint("ProcessRpcResponse", f"cid=0x{cid:x} locked")
    saved_error = cntl.ErrorCode()
    if meta.response.error_code != 0:
        cntl.SetFailed(meta.response.error_code, "%s", meta.response.error_text)
    else:
        payload = msg.payload
        attachment_size = meta.attachment_size
        payload_size = len(payload)
        if attachment_size > payload_size:
            cntl.SetFailed(ERESPONSE, "attachment_size=%d is larger than payload_size=%d",
                           attachment_size, payload_size)
        else:
            body = payload.cutn(payload_size - attachment_size)
            cntl._response_attachment.clear()
            cntl._response_attachment.append(payload)
            response = cntl._response
            if response is not None and not DeserializeRpcMessage(
                    body, response, meta.content_type, meta.compress_type, meta.checksum_type,
                    meta.checksum_value, payload if meta.checksum_with_attachment else None):
                cntl.SetFailed(EREQUEST, "Fail to parse response=%s", type(response).__name__)
    cntl.OnVersionedRPCReturned(_controller.CompletionInfo(cid, True), False, saved_error)


def ProcessRpcRequest(msg) -> None:
    """Server: parse the meta, find the method, parse the request, and call the service.

    brpc: src/brpc/policy/baidu_rpc_protocol.cpp, ProcessRpcRequest

    A meta that does not parse closes the connection (no response); every other failure gets an
    error response and the connection stays open. Checks in brpc's order: the server is stopping
    (ELOGOFF), ``max_concurrency`` reached (ELIMIT), attachment_size, service, method, the
    connection overcrowded (EOVERCROWDED), the request parses. From here until its response is
    sent, the request holds its connection (the server's Stop and Join wait for it).
    """
    s = msg.socket
    server = msg.arg
    socket_id = getattr(msg, "socket_id", None)
    if socket_id is None:
        socket_id = s.id()
    meta = ParseRpcMeta(msg.meta)
    if meta is None:
        _log.warning("Fail to parse RpcMeta from %s", s.label)
        # only the connection the message came on: its Socket object may already serve another
        if _socket.Socket.Address(socket_id, s.runtime) is s:
            s.SetFailed(EREQUEST, f"Fail to parse RpcMeta from {s.label}")
        return
    # A meta that parses but has no `request` (a response meta sent to a server, say) is not a
    # parse failure: brpc reads the default RpcRequestMeta, whose empty service name has no "."
    # and matches no service, so the client gets ENOSERVICE "Fail to find service=" and the
    # connection stays (found by tests/rpc/test_rpc_bad_input.py: the kit closed it).
    request_meta = meta.request
    correlation_id = meta.correlation_id & _CORRELATION_MASK
    cntl = _controller.Controller()
    cntl._runtime = s.runtime
    cntl._server = server
    cntl._server_side = s.local_side
    cntl._remote_side = s.remote_side
    cntl._local_side = s.local_side
    cntl._received_us = msg.received_us
    # brpc: move_in_server_receiving_sock. SendRpcResponse also checks the connection is still
    # this one (the kit reuses Socket objects' slots).
    cntl._server_socket = socket_id
    acceptor = server._acceptor
    if acceptor is not None:
        acceptor.HoldConnection(socket_id)
    if request_meta.HasField("log_id"):
        cntl.set_log_id(request_meta.log_id)
    if request_meta.HasField("timeout_ms"):
        cntl._timeout_ms = request_meta.timeout_ms
    answered = False
    try:
        payload = msg.payload
        if not server.IsRunning():
            cntl.SetFailed(ELOGOFF, "Server is stopping")
            answered = True
            return SendRpcResponse(correlation_id, cntl, None, s, server)
        if not server._AddConcurrency(cntl):
            cntl.SetFailed(ELIMIT, "Reached server's max_concurrency=%d", server.options.max_concurrency)
            answered = True
            return SendRpcResponse(correlation_id, cntl, None, s, server)
        if meta.attachment_size > len(payload):
            cntl.SetFailed(EREQUEST, "attachment_size=%d is larger than request_size=%d",
                           meta.attachment_size, len(payload))
            answered = True
            return SendRpcResponse(correlation_id, cntl, None, s, server)
        service_name = _wire_str(request_meta.service_name)
        method_name = _wire_str(request_meta.method_name)
        entry = server.FindMethod(service_name, method_name)
        if entry is None:
            if "." not in service_name and server.FindServiceByName(service_name) is None:
                cntl.SetFailed(ENOSERVICE, "Fail to find service=%s", service_name)
            else:
                cntl.SetFailed(ENOMETHOD, "Fail to find method=%s/%s", service_name, method_name)
            answered = True
            return SendRpcResponse(correlation_id, cntl, None, s, server)
        if s._overcrowded and not server.options.ignore_eovercrowded:
            # the client does not read its answers fast enough: refuse work rather than queue more
            cntl.SetFailed(EOVERCROWDED, "Connection to %s is overcrowded", _socket.endpoint2str(s.remote_side))
            answered = True
            return SendRpcResponse(correlation_id, cntl, None, s, server)
        impl, method, request_class, response_class = entry
        body = payload.cutn(len(payload) - meta.attachment_size)
        cntl._request_attachment = payload
        request = request_class()
        if not DeserializeRpcMessage(body, request, meta.content_type, meta.compress_type,
                                     meta.checksum_type, meta.checksum_value,
                                     payload if meta.checksum_with_attachment else None):
            # brpc's text, naming all three types and the whole payload's size (attachment included)
            cntl.SetFailed(EREQUEST, "Fail to parse request=%s, ContentType=%s, CompressType=%s, "
                           "ChecksumType=%s, request_size=%d",
                           method.input_type.full_name, ContentTypeToCStr(meta.content_type),
                           CompressTypeToCStr(meta.compress_type), ChecksumTypeToCStr(meta.checksum_type),
                           len(body) + len(payload))
            answered = True
            return SendRpcResponse(correlation_id, cntl, None, s, server)
        response = response_class()
        done = _SendRpcResponseClosure(correlation_id, cntl, response, s, server)
        answered = True
        handler = getattr(impl, method.name, None)
        if handler is None:
            # protoc's default method body: the text-only SetFailed, code -1, sent as EINTERNAL
            cntl.SetFailed(f"Method {method.name}() not implemented.")
            return done.Run()
        if s.runtime._instruments:
            s.runtime._emit("ProcessRpcRequest", None, f"{service_name}.{method_name} cid=0x{correlation_id:x}")
        nref = sys.getrefcount(done)
        try:
            handler(cntl, request, response, done)
        except Exception as exc:  # user code: answer instead of killing the connection
            _log.exception("%s.%s raised", service_name, method_name)
            if not done.ran:
                cntl.SetFailed(EINTERNAL, "%s raised %s: %s", method.full_name, type(exc).__name__, exc)
                done.Run()
        # The method returned without running done, and nothing else holds it: it can never run.
        # brpc would leak the request, holding its connection (and Server::Join) forever; the kit
        # ends it without a response. The count is read first: once it is this low no other
        # bthread can run done, so `ran` cannot change after.
        if sys.getrefcount(done) <= nref and not done.ran:
            done.ran = True
            _EndServerRequest(cntl, server)
    finally:
        if not answered:    # an unexpected exception before anyone could answer
            _EndServerRequest(cntl, server)


def _wire_str(value) -> str:
    """A proto2 string field as text. brpc's C++ takes any bytes there; protobuf-python hands back
    ``bytes`` when they are not UTF-8, and the name lookup then raised TypeError in the server's
    bthread (found by tests/rpc/test_rpc_hypothesis_server.py). Undecodable bytes become U+FFFD,
    so the name matches no service, as in brpc, and the error text stays a valid string."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


class _SendRpcResponseClosure:
    """The ``done`` a service method gets: ``done.Run()`` (or ``done()``) sends the response once."""
    __slots__ = ("args", "ran")

    def __init__(self, *args):
        self.args = args
        self.ran = False

    def Run(self) -> None:
        if self.ran:
            raise RuntimeError("done.Run() called twice for one request")
        self.ran = True
        correlation_id, cntl, response, s, server = self.args
        SendRpcResponse(correlation_id, cntl, response, s, server)

    __call__ = Run


def SendRpcResponse(correlation_id, cntl, response, s, server) -> None:
    """Pack and write the response (an error response when the Controller failed), then let the
    request go: its ``max_concurrency`` slot and its hold on the connection.

    brpc: src/brpc/policy/baidu_rpc_protocol.cpp, SendRpcResponse
    """
    try:
        sid = cntl._server_socket
        if sid is not None and _socket.Socket.Address(sid, s.runtime) is not s:
            # The connection failed while the service ran: the client closed it, or Server.Join
            # gave up waiting (Stop itself leaves a connection open until its requests are
            # answered). brpc's response holds a socket reference, so its Write just fails; here
            # the slot may already be recycled and the object reused, and writing to it made an
            # unconnected socket "reconnect" to the client's port (found by tests/rpc).
            _log.info(
                "Fail to write the response of cid=0x%x: its connection is gone", correlation_id)
            return
        body = None
        attachment = b""
        if response is not None and not cntl.Failed():
            result = SerializeResponse(response)
            if result.error_code:
                cntl.SetFailed(ERESPONSE, "%s", result.error_text)
            else:
                body = result.body
                attachment = cntl.response_attachment().to_bytes()
        error_code = cntl.ErrorCode()
        if error_code == -1:
            error_code = EINTERNAL
        frame = PackRpcResponse(correlation_id, error_code, cntl.ErrorText(), body, attachment)
        rc = s.Write(frame, ignore_eovercrowded=True)
        if rc != 0 and not s.Failed():
            _log.warning("Fail to write the response into %s", s.label)
    finally:
        _EndServerRequest(cntl, server)


def _EndServerRequest(cntl, server) -> None:
    """The request is over. brpc: the end of SendRpcResponse — ConcurrencyRemover first, then the
    Controller is deleted and with it its reference on the connection."""
    server._RemoveConcurrency(cntl)
    acceptor = server._acceptor
    if acceptor is not None and cntl._server_socket is not None:
        acceptor.ReleaseConnection(cntl._server_socket)
