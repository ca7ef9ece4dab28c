"""ParseRpcMessage on a stream: split points, bad input, and properties over arbitrary bytes."""

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brpc_mini.rpc.iobuf import IOBuf
from brpc_mini.rpc.policy import baidu_rpc_protocol as proto
from brpc_mini.rpc.policy.baidu_rpc_protocol import (
    HEADER_SIZE,
    PARSE_ERROR_NOT_ENOUGH_DATA,
    PARSE_ERROR_TOO_BIG_DATA,
    PARSE_ERROR_TRY_OTHERS,
    PARSE_OK,
    PackRpcRequest,
    PackRpcResponse,
    ParseError,
    ParseRpcMessage,
    ParseRpcMeta,
)

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "golden"
GOLDEN_NAMES = ["echo_request", "echo_response", "echo_attach_request", "echo_attach_response",
                "error_request", "error_response"]
GOLDEN_FRAMES = [(GOLDEN_DIR / f"{name}.bin").read_bytes() for name in GOLDEN_NAMES]
STREAM = b"".join(GOLDEN_FRAMES)
PARSER_RESULTS = {PARSE_OK, PARSE_ERROR_TRY_OTHERS, PARSE_ERROR_NOT_ENOUGH_DATA,
                  PARSE_ERROR_TOO_BIG_DATA}


def header(body_size, meta_size, magic=b"PRPC"):
    return struct.pack(">4sII", magic, body_size, meta_size)


def frame_bytes(message):
    """Reassemble a parsed frame, to compare with what was sent."""
    meta, payload = message.meta.to_bytes(), message.payload.to_bytes()
    return header(len(meta) + len(payload), len(meta)) + meta + payload


def cut_all(source):
    """Parse every complete frame at the front of source; return them and the last result."""
    frames = []
    while True:
        result, message = ParseRpcMessage(source)
        if result != PARSE_OK:
            return frames, result
        frames.append(frame_bytes(message))


# ----- streams of good frames ---------------------------------------------------------------------


def test_parse_error_values_follow_brpc():
    assert [(e.name, e.value) for e in ParseError] == [
        ("PARSE_OK", 0), ("PARSE_ERROR_TRY_OTHERS", 1), ("PARSE_ERROR_NOT_ENOUGH_DATA", 2),
        ("PARSE_ERROR_TOO_BIG_DATA", 3), ("PARSE_ERROR_NO_RESOURCE", 4),
        ("PARSE_ERROR_ABSOLUTELY_WRONG", 5)]


def test_whole_stream_at_once():
    source = IOBuf(STREAM)
    frames, last = cut_all(source)
    assert frames == GOLDEN_FRAMES and last == PARSE_ERROR_NOT_ENOUGH_DATA and source.empty()


def test_every_split_point_of_the_golden_stream():
    for split in range(len(STREAM) + 1):
        source = IOBuf(STREAM[:split])
        frames, last = cut_all(source)
        assert last == PARSE_ERROR_NOT_ENOUGH_DATA
        source.append(STREAM[split:])
        more, last = cut_all(source)
        assert frames + more == GOLDEN_FRAMES, f"split at {split}"
        assert last == PARSE_ERROR_NOT_ENOUGH_DATA and source.empty()


def test_byte_by_byte():
    source = IOBuf()
    frames = []
    for index in range(len(STREAM)):
        source.append(STREAM[index:index + 1])
        got, last = cut_all(source)
        assert last == PARSE_ERROR_NOT_ENOUGH_DATA
        frames += got
    assert frames == GOLDEN_FRAMES and source.empty()


def test_parsed_parts_share_memory_with_the_read_buffer():
    frame = GOLDEN_FRAMES[0]
    result, message = ParseRpcMessage(IOBuf(frame))
    assert result == PARSE_OK
    assert message.meta.chunks()[0].obj is frame and message.payload.chunks()[0].obj is frame
    assert len(message.meta) == 45 and len(message.payload) == 13


def test_source_must_be_an_iobuf():
    with pytest.raises(TypeError, match="IOBuf"):
        ParseRpcMessage(b"PRPC")


# ----- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n\r\n", b"prpc" + bytes(8), b"X", b"PX",
                                  b"PRX", b"PRPX", b"\x00\x00\x00\x00"])
def test_bad_magic_is_try_others_and_consumes_nothing(data):
    source = IOBuf(data)
    assert ParseRpcMessage(source) == (PARSE_ERROR_TRY_OTHERS, None)
    assert source == data


@pytest.mark.parametrize("data", [b"", b"P", b"PR", b"PRP", b"PRPC", b"PRPC" + bytes(7)])
def test_prefix_of_a_header_waits_for_more(data):
    source = IOBuf(data)
    assert ParseRpcMessage(source) == (PARSE_ERROR_NOT_ENOUGH_DATA, None)
    assert source == data


def test_oversized_body_is_refused_from_the_header_alone(monkeypatch):
    limit = proto.FLAGS_max_body_size
    assert limit == 64 * 1024 * 1024
    source = IOBuf(header(limit + 1, 10))
    assert ParseRpcMessage(source) == (PARSE_ERROR_TOO_BIG_DATA, None)
    assert len(source) == HEADER_SIZE
    source = IOBuf(header(limit, 10))  # exactly the limit is allowed: wait for the body
    assert ParseRpcMessage(source) == (PARSE_ERROR_NOT_ENOUGH_DATA, None)
    source = IOBuf(header(0xFFFFFFFF, 0xFFFFFFFF))
    assert ParseRpcMessage(source)[0] == PARSE_ERROR_TOO_BIG_DATA


def test_body_limit_from_argument_and_from_the_flag(monkeypatch):
    frame = GOLDEN_FRAMES[0]  # body_size 58
    assert ParseRpcMessage(IOBuf(frame), max_body_size=57)[0] == PARSE_ERROR_TOO_BIG_DATA
    assert ParseRpcMessage(IOBuf(frame), max_body_size=58)[0] == PARSE_OK
    monkeypatch.setattr(proto, "FLAGS_max_body_size", 57)
    assert ParseRpcMessage(IOBuf(frame))[0] == PARSE_ERROR_TOO_BIG_DATA
    assert ParseRpcMessage(IOBuf(frame), max_body_size=100)[0] == PARSE_OK


def test_meta_larger_than_body_drops_the_frame():
    bad = header(5, 6) + b"12345"
    source = IOBuf(bad + GOLDEN_FRAMES[1])
    assert ParseRpcMessage(source) == (PARSE_ERROR_TRY_OTHERS, None)
    assert source == GOLDEN_FRAMES[1]  # exactly the bad frame was consumed
    result, message = ParseRpcMessage(source)
    assert result == PARSE_OK and frame_bytes(message) == GOLDEN_FRAMES[1]


def test_meta_larger_than_body_waits_until_the_frame_is_complete():
    source = IOBuf(header(5, 6) + b"123")
    assert ParseRpcMessage(source) == (PARSE_ERROR_NOT_ENOUGH_DATA, None)
    assert len(source) == HEADER_SIZE + 3


def test_empty_meta_and_payload_are_a_valid_cut():
    source = IOBuf(header(0, 0))
    result, message = ParseRpcMessage(source)
    assert result == PARSE_OK and message.meta.empty() and message.payload.empty()
    assert ParseRpcMeta(message.meta) is not None  # an empty RpcMeta parses


# ----- ParseRpcMeta -------------------------------------------------------------------------------


def test_minimal_request_meta_is_accepted():
    meta = proto.RpcMeta()
    meta.request.service_name = "example.EchoService"
    meta.request.method_name = "Echo"
    meta.correlation_id = 7
    parsed = ParseRpcMeta(meta.SerializeToString())
    assert parsed == meta and not parsed.HasField("compress_type")


def test_meta_missing_a_required_name_is_rejected():
    meta = proto.RpcMeta()
    meta.request.service_name = "example.EchoService"
    assert ParseRpcMeta(meta.SerializePartialToString()) is None


def test_meta_with_unknown_fields_and_any_order_is_accepted():
    # correlation_id (field 4) first, then an unknown varint field 99, then request (field 1).
    request = b"\x0a\x01S" + b"\x12\x01M"
    data = b"\x20\x05" + b"\x98\x06\x01" + b"\x0a" + bytes([len(request)]) + request
    parsed = ParseRpcMeta(IOBuf(data))
    assert parsed is not None and parsed.correlation_id == 5
    assert parsed.request.service_name == "S" and parsed.request.method_name == "M"


@pytest.mark.parametrize("data", [b"\x0a\x05", b"\xff", b"\x0a\x02\x0a"])
def test_corrupt_meta_is_rejected(data):
    assert ParseRpcMeta(data) is None


# ----- properties ---------------------------------------------------------------------------------


def reference_parse(data: bytes, limit: int):
    """What ParseRpcMessage must do with data: (result, bytes consumed)."""
    if data[:4] != b"PRPC"[: len(data[:4])]:
        return PARSE_ERROR_TRY_OTHERS, 0
    if len(data) < HEADER_SIZE:
        return PARSE_ERROR_NOT_ENOUGH_DATA, 0
    _, body_size, meta_size = struct.unpack(">4sII", data[:HEADER_SIZE])
    if body_size > limit:
        return PARSE_ERROR_TOO_BIG_DATA, 0
    if len(data) < HEADER_SIZE + body_size:
        return PARSE_ERROR_NOT_ENOUGH_DATA, 0
    if meta_size > body_size:
        return PARSE_ERROR_TRY_OTHERS, HEADER_SIZE + body_size
    return PARSE_OK, HEADER_SIZE + body_size


def frame_like_bytes():
    """Byte strings that often start like a frame, with small sizes so bodies can complete."""
    small = st.integers(0, 40)
    framed = st.builds(lambda body, meta, rest: header(body, meta) + rest,
                       small, small, st.binary(max_size=60))
    complete = st.builds(lambda meta_size, body: header(len(body), meta_size) + body,
                         st.integers(0, 45), st.binary(max_size=40))
    magic_prefix = st.builds(lambda n, rest: b"PRPC"[:n] + rest, st.integers(0, 4),
                             st.binary(max_size=20))
    return st.one_of(st.binary(max_size=80), framed, complete, magic_prefix)


def chunked(data, cuts):
    points = sorted({cut % (len(data) + 1) for cut in cuts}) if data else []
    pieces, start = [], 0
    for point in points + [len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


@settings(max_examples=200, deadline=None)
@given(st.lists(frame_like_bytes(), min_size=1, max_size=4).map(b"".join),
       st.lists(st.integers(0, 400), max_size=6), st.integers(0, 50))
def test_parser_never_raises_and_consumes_consistently(data, cuts, limit):
    source = IOBuf()
    for piece in chunked(data, cuts):
        source.append(piece)
    seen = 0
    while True:
        before = source.to_bytes()
        expected, consumed = reference_parse(before, limit)
        result, message = ParseRpcMessage(source, max_body_size=limit)
        assert result in PARSER_RESULTS and result == expected
        assert source.to_bytes() == before[consumed:]
        if result == PARSE_OK:
            assert len(message.meta) + len(message.payload) + HEADER_SIZE == consumed
            assert frame_bytes(message) == before[:consumed]
            ParseRpcMeta(message.meta)  # must not raise either
        else:
            assert message is None
        if consumed == 0:
            break
        seen += consumed
    assert seen + len(source) == len(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_parse_meta_never_raises(data):
    meta = ParseRpcMeta(data)
    assert meta is None or meta.IsInitialized()


correlation_ids = st.integers(0, (1 << 64) - 1)
names = st.text(max_size=30)


@st.composite
def requests(draw):
    return dict(
        correlation_id=draw(correlation_ids),
        service_full_name=draw(names),
        method_name=draw(names),
        body=draw(st.binary(max_size=100)),
        attachment=draw(st.binary(max_size=50)),
        log_id=draw(st.none() | st.integers(-(1 << 63), (1 << 63) - 1)),
        request_id=draw(st.none() | names),
        timeout_ms=draw(st.none() | st.integers(-5, 1 << 20)),
    )


@settings(max_examples=200, deadline=None)
@given(requests(), st.lists(st.integers(0, 1000), max_size=5))
def test_request_round_trip(fields, cuts):
    frame = PackRpcRequest(**fields)
    source = IOBuf()
    frames = []
    for piece in chunked(frame, cuts):
        source.append(piece)
        got, last = cut_all(source)
        assert last == PARSE_ERROR_NOT_ENOUGH_DATA
        frames += got
    assert frames == [frame]
    result, message = ParseRpcMessage(IOBuf(frame))
    meta = ParseRpcMeta(message.meta)
    assert meta is not None and not meta.HasField("response")
    assert meta.correlation_id & ((1 << 64) - 1) == fields["correlation_id"]
    assert meta.request.service_name == fields["service_full_name"]
    assert meta.request.method_name == fields["method_name"]
    assert meta.request.HasField("log_id") == (fields["log_id"] is not None)
    assert meta.request.log_id == (fields["log_id"] or 0)
    assert meta.request.request_id == (fields["request_id"] or "")
    timeout = fields["timeout_ms"]
    assert meta.request.HasField("timeout_ms") == (timeout is not None and timeout > 0)
    assert meta.HasField("attachment_size") == bool(fields["attachment"])
    payload = message.payload.to_bytes()
    split = len(payload) - meta.attachment_size
    assert payload[:split] == fields["body"] and payload[split:] == fields["attachment"]


@settings(max_examples=200, deadline=None)
@given(correlation_ids, st.sampled_from([0, 0, -1, 1002, 2001, 1003]), names,
       st.none() | st.binary(max_size=100), st.binary(max_size=50))
def test_response_round_trip(correlation_id, error_code, error_text, body, attachment):
    frame = PackRpcResponse(correlation_id, error_code, error_text, body, attachment)
    result, message = ParseRpcMessage(IOBuf(frame))
    assert result == PARSE_OK
    meta = ParseRpcMeta(message.meta)
    assert meta is not None and not meta.HasField("request")
    assert meta.correlation_id & ((1 << 64) - 1) == correlation_id
    assert meta.response.HasField("error_code")
    assert meta.response.error_code == (2001 if error_code == -1 else error_code)
    assert meta.response.HasField("error_text") == bool(error_text)
    success = error_code == 0 and body is not None
    payload = message.payload.to_bytes()
    if success:
        assert payload == body + attachment
        assert meta.attachment_size == len(attachment)
        assert meta.HasField("attachment_size") == bool(attachment)
    else:
        assert payload == b"" and not meta.HasField("attachment_size")


def test_correlation_id_out_of_range_is_a_programming_error():
    with pytest.raises(ValueError, match="correlation_id"):
        PackRpcRequest(1 << 64, "s", "m", b"")
