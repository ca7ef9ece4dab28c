"""IOBuf: chunked bytes with zero-copy cutn / pop_front / append, socket reads and writes."""

import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brpc_mini.rpc.iobuf import DEFAULT_BLOCK_SIZE, IOBuf


def make(*parts):
    buf = IOBuf()
    for part in parts:
        buf.append(part)
    return buf


def test_empty_buffer():
    buf = IOBuf()
    assert len(buf) == 0 and buf.empty() and buf == b""
    assert buf.to_bytes() == b"" and bytes(buf) == b""
    assert buf.copy_to() == b"" and buf.copy_to(5) == b""
    assert buf.cutn(3) == b"" and buf.pop_front(3) == 0
    assert buf.chunks() == [] and buf.backing_block_num() == 0


def test_append_kinds_and_length():
    buf = make(b"ab", bytearray(b"cd"), memoryview(b"ef"), IOBuf(b"gh"), b"")
    assert len(buf) == 8 == buf.length() == buf.size()
    assert buf == b"abcdefgh" and buf == bytearray(b"abcdefgh") and buf == IOBuf(b"abcdefgh")
    assert buf != b"abcdefg" and buf != b"abcdefgX"
    assert buf.backing_block_num() == 4  # the empty bytes added no chunk
    with pytest.raises(TypeError, match="data must be"):
        buf.append("text")


def test_bytes_are_shared_and_mutable_buffers_copied():
    original = b"hello world"
    buf = IOBuf(original)
    assert buf.chunks()[0].obj is original
    source = bytearray(b"mutable")
    buf = IOBuf(source)
    source[0:1] = b"X"
    assert buf == b"mutable"
    view = memoryview(bytearray(b"view"))
    buf = IOBuf(view)
    view[0] = ord("V")
    assert buf == b"view"


def test_append_iobuf_shares_chunks_and_leaves_source():
    payload = b"0123456789"
    src = IOBuf(payload)
    dst = IOBuf(b"head:")
    dst.append(src)
    assert dst == b"head:0123456789" and src == payload
    assert dst.chunks()[-1].obj is payload


def test_append_to_itself():
    buf = make(b"ab", b"cd")
    buf.append(buf)
    assert buf == b"abcdabcd" and len(buf) == 8


def test_cutn_is_zero_copy_and_splits_chunks():
    first, second = b"abcdef", b"ghijkl"
    buf = make(first, second)
    head = buf.cutn(8)
    assert head == b"abcdefgh" and buf == b"ijkl"
    assert [chunk.obj for chunk in head.chunks()] == [first, second]
    assert buf.chunks()[0].obj is second
    rest = buf.cutn(100)  # more than available: takes what is there
    assert rest == b"ijkl" and buf.empty()
    with pytest.raises(ValueError):
        buf.cutn(-1)


def test_pop_front():
    buf = make(b"abc", b"def", b"ghi")
    assert buf.pop_front(4) == 4 and buf == b"efghi"
    assert buf.pop_front(0) == 0 and buf == b"efghi"
    assert buf.pop_front(99) == 5 and buf.empty()
    with pytest.raises(ValueError):
        buf.pop_front(-2)


def test_copy_to_with_pos_across_chunks():
    buf = make(b"abc", b"def", b"ghi")
    assert buf.copy_to() == b"abcdefghi"
    assert buf.copy_to(4) == b"abcd"
    assert buf.copy_to(4, pos=2) == b"cdef"
    assert buf.copy_to(None, pos=7) == b"hi"
    assert buf.copy_to(10, pos=8) == b"i"
    assert buf.copy_to(3, pos=9) == b"" and buf.copy_to(3, pos=50) == b""
    assert buf == b"abcdefghi"  # nothing consumed
    with pytest.raises(ValueError):
        buf.copy_to(1, pos=-1)
    with pytest.raises(ValueError):
        buf.copy_to(-1)


def test_clear_chunks_iter_repr():
    buf = make(b"abc", b"def")
    assert [bytes(c) for c in buf] == [b"abc", b"def"]
    assert [bytes(c) for c in buf.chunks(1)] == [b"abc"]
    assert "len=6" in repr(buf) and "chunks=2" in repr(buf)
    buf.clear()
    assert buf.empty() and buf.chunks() == []


def test_iobuf_is_not_hashable():
    with pytest.raises(TypeError):
        hash(IOBuf(b"x"))


def test_many_small_appends_and_cuts_stay_linear():
    # 200k one-byte appends then 200k one-byte cuts: a quadratic buffer would take minutes.
    buf = IOBuf()
    piece = b"x"
    start = time.perf_counter()
    for _ in range(200_000):
        buf.append(piece)
    for _ in range(200_000):
        buf.cutn(1)
    assert buf.empty()
    assert time.perf_counter() - start < 10


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["append", "cutn", "pop", "copy"]),
                          st.binary(max_size=20), st.integers(0, 30), st.integers(0, 30))))
def test_iobuf_matches_a_bytearray_model(operations):
    buf, model = IOBuf(), bytearray()
    for op, data, n, pos in operations:
        if op == "append":
            buf.append(data)
            model += data
        elif op == "cutn":
            assert buf.cutn(n) == bytes(model[:n])
            del model[:n]
        elif op == "pop":
            assert buf.pop_front(n) == min(n, len(model))
            del model[:n]
        else:
            assert buf.copy_to(n, pos) == bytes(model[pos:pos + n])
        assert len(buf) == len(model) and buf == bytes(model)


# ----- sockets ------------------------------------------------------------------------------------


@pytest.fixture
def socket_pair():
    left, right = socket.socketpair()
    try:
        yield left, right
    finally:
        left.close()
        right.close()


def test_read_from_socket_appends_and_reports_eof(socket_pair):
    left, right = socket_pair
    right.setblocking(False)
    buf = IOBuf(b">")
    with pytest.raises(BlockingIOError):
        buf.append_from_socket(right, 4096)
    left.sendall(b"PRPC")
    assert buf.read_from(right, 4096) == 4
    left.sendall(b"more")
    assert buf.append_from_socket(right, 4096) == 4
    assert buf == b">PRPCmore"
    # Successive reads fill the same block: the two chunks are views of one bytearray.
    read_chunks = buf.chunks()[1:]
    assert read_chunks[0].obj is read_chunks[1].obj and read_chunks[0].readonly
    left.shutdown(socket.SHUT_WR)
    assert buf.append_from_socket(right, 4096) == 0
    assert buf == b">PRPCmore"


def test_read_respects_max_bytes_and_starts_new_blocks(socket_pair):
    left, right = socket_pair
    data = bytes(range(256)) * 100  # 25600 bytes, more than one 8 KiB block
    left.sendall(data)
    buf = IOBuf()
    assert buf.append_from_socket(right, 10) == 10
    while len(buf) < len(data):
        assert buf.append_from_socket(right, DEFAULT_BLOCK_SIZE) > 0
    assert buf == data
    assert len({id(chunk.obj) for chunk in buf.chunks()}) >= 3
    with pytest.raises(ValueError):
        buf.append_from_socket(right, 0)


def test_write_to_socket_sends_everything(socket_pair):
    left, right = socket_pair
    buf = make(b"PRPC", b"\x00\x00\x00\x01", b"\x00\x00\x00\x00", b"!")
    assert buf.write_to(left) == 13 and buf.empty()
    assert buf.write_to(left) == 0
    assert right.recv(100) == b"PRPC\x00\x00\x00\x01\x00\x00\x00\x00!"


class PartialWriter:
    """A socket stand-in whose sendmsg accepts only a few bytes per call."""

    def __init__(self, limit):
        self.limit = limit
        self.received = bytearray()
        self.calls = []

    def sendmsg(self, buffers):
        self.calls.append(len(buffers))
        data = b"".join(buffers)[: self.limit]
        self.received += data
        return len(data)


def test_write_to_pops_only_what_was_sent():
    buf = make(b"abc", b"defg", b"hij")
    writer = PartialWriter(5)
    assert buf.write_to(writer) == 5 and buf == b"fghij"
    assert buf.write_to(writer) == 5 and buf.empty()
    assert bytes(writer.received) == b"abcdefghij"


def test_write_to_limits_chunks_per_call():
    buf = make(*[b"x"] * 300)
    writer = PartialWriter(10_000)
    assert buf.write_to(writer, max_chunks=256) == 256
    assert writer.calls == [256] and len(buf) == 44


def test_write_to_passes_blocking_errors_through():
    class Full:
        def sendmsg(self, buffers):
            raise BlockingIOError

    buf = IOBuf(b"data")
    with pytest.raises(BlockingIOError):
        buf.write_to(Full())
    assert buf == b"data"
