"""IOBuf: a byte buffer made of chunks, cut and appended without copying.

brpc: src/butil/iobuf.h, butil::IOBuf

brpc's IOBuf is a rope: a list of references to slices of reference-counted 8 KiB blocks. Cutting
the first n bytes off a read buffer, or appending a message to a write queue, moves references, not
bytes. That matters on the read path, where one connection's buffer grows by a `read()` at the back
and shrinks by a parsed message at the front, and on the write path, where a frame is handed to
`writev()` as a list of slices.

The Python version keeps the shape with a deque of `memoryview` chunks:
- a chunk is a read-only view, or a view of a block that nobody writes to any more; slicing a view
  shares memory, so `cutn`, `pop_front` and `append(IOBuf)` never copy payload bytes;
- every operation costs O(bytes touched + chunks touched), never O(whole buffer), so a buffer fed by
  many small reads is not quadratic;
- reads go into the unused tail of the buffer's last block with `recv_into` (brpc shares a block
  between successive reads in the same way), writes hand the chunks to `sendmsg`, the `writev` of
  Python sockets;
- reference counting is the garbage collector's job: a block lives as long as one view of it does.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Iterator, Union

BytesLike = Union[bytes, bytearray, memoryview]

# brpc's IOBuf blocks are 8 KiB (butil::IOBuf::DEFAULT_BLOCK_SIZE).
DEFAULT_BLOCK_SIZE = 8192
# At most this many chunks per sendmsg (brpc caps one writev at IOBUF_IOV_MAX = 256 slices; the
# kernel's limit, IOV_MAX, is 1024).
IOBUF_IOV_MAX = 256
# A read starts a fresh block when less than this is left in the current one, so a read is never
# squeezed into a few leftover bytes.
_MIN_READ_SPACE = 1024


def _shareable_view(data: bytearray | memoryview) -> memoryview:
    """A flat byte view of data that is safe to keep: shared if the memory is immutable, else a copy."""
    view = memoryview(data)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
    if isinstance(view.obj, bytes):
        return view
    return memoryview(view.tobytes())


class IOBuf:
    """A sequence of bytes kept as a deque of memoryview chunks.

    brpc: src/butil/iobuf.h, butil::IOBuf

    Differences from brpc: no block pool and no manual reference counts (views keep their block
    alive); appending a mutable buffer (bytearray, a view of one) copies it once, because the caller
    may change it afterwards, while bytes and other IOBufs are shared. Equality with bytes
    compares content, so tests can write `buf == b"PRPC"`.
    """

    __slots__ = ("_chunks", "_size", "_read_block", "_read_offset")
    __hash__ = None  # mutable

    def __init__(self, data: BytesLike | IOBuf | None = None) -> None:
        self._chunks: deque[memoryview] = deque()
        self._size = 0
        # The block that append_from_socket fills; bytes before _read_offset belong to chunks.
        self._read_block: bytearray | None = None
        self._read_offset = 0
        if data is not None:
            self.append(data)

    # ----- size -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._size

    def length(self) -> int:
        """Number of bytes in the buffer (brpc's `IOBuf::length()`, same as `len(buf)`)."""
        return self._size

    def size(self) -> int:
        """Number of bytes in the buffer (brpc's `IOBuf::size()`, same as `len(buf)`)."""
        return self._size

    def empty(self) -> bool:
        """True when the buffer holds no bytes."""
        return self._size == 0

    def backing_block_num(self) -> int:
        """Number of chunks the bytes are spread over (brpc: `IOBuf::backing_block_num`)."""
        return len(self._chunks)

    # ----- adding -----------------------------------------------------------------------------

    def append(self, data: BytesLike | IOBuf) -> None:
        """Add bytes at the back.

        brpc: src/butil/iobuf.h, IOBuf::append

        An IOBuf is appended by sharing its chunks (the source is left unchanged); bytes, and
        memoryviews of bytes, are shared too; anything mutable (a bytearray, a view of one) is
        copied, since its owner may change it later.
        """
        if isinstance(data, IOBuf):
            # list() first: appending a buffer to itself must not iterate a growing deque.
            for chunk in list(data._chunks):
                self._chunks.append(chunk)
            self._size += data._size
            return
        if isinstance(data, bytes):
            if data:
                self._chunks.append(memoryview(data))
                self._size += len(data)
            return
        if isinstance(data, (bytearray, memoryview)):
            view = _shareable_view(data)
            if len(view):
                self._chunks.append(view)
                self._size += len(view)
            return
        raise TypeError(
            f"IOBuf.append: data must be bytes, bytearray, memoryview or IOBuf, "
            f"got {type(data).__name__}"
        )

    # ----- removing from the front ------------------------------------------------------------

    def cutn(self, n: int) -> IOBuf:
        """Remove the first min(n, len) bytes and return them as a new IOBuf, without copying.

        brpc: src/butil/iobuf.h, IOBuf::cutn
        """
        if n < 0:
            raise ValueError(f"IOBuf.cutn: n must be >= 0, got {n}")
        out = IOBuf()
        chunks = self._chunks
        remaining = min(n, self._size)
        self._size -= remaining
        out._size = remaining
        while remaining:
            chunk = chunks[0]
            if len(chunk) <= remaining:
                out._chunks.append(chunks.popleft())
                remaining -= len(chunk)
            else:
                out._chunks.append(chunk[:remaining])
                chunks[0] = chunk[remaining:]
                remaining = 0
        return out

    def pop_front(self, n: int) -> int:
        """Drop the first min(n, len) bytes; return how many were dropped.

        brpc: src/butil/iobuf.h, IOBuf::pop_front
        """
        if n < 0:
            raise ValueError(f"IOBuf.pop_front: n must be >= 0, got {n}")
        chunks = self._chunks
        popped = min(n, self._size)
        self._size -= popped
        remaining = popped
        while remaining:
            chunk = chunks[0]
            if len(chunk) <= remaining:
                chunks.popleft()
                remaining -= len(chunk)
            else:
                chunks[0] = chunk[remaining:]
                remaining = 0
        return popped

    def clear(self) -> None:
        """Drop every byte (brpc: `IOBuf::clear`)."""
        self._chunks.clear()
        self._size = 0

    # ----- reading without consuming ----------------------------------------------------------

    def copy_to(self, n: int | None = None, pos: int = 0) -> bytes:
        """Copy up to n bytes starting at offset pos (all of them when n is None); nothing is removed.

        brpc: src/butil/iobuf.h, IOBuf::copy_to

        brpc copies into a caller's array and returns the count; here the bytes are returned and the
        count is their length, which may be less than n near the end of the buffer.
        """
        if pos < 0:
            raise ValueError(f"IOBuf.copy_to: pos must be >= 0, got {pos}")
        if n is None:
            n = self._size
        elif n < 0:
            raise ValueError(f"IOBuf.copy_to: n must be >= 0 or None, got {n}")
        n = min(n, self._size - pos)
        if n <= 0:
            return b""
        parts = []
        for chunk in self._chunks:
            length = len(chunk)
            if pos >= length:
                pos -= length
                continue
            piece = chunk[pos:pos + n]
            pos = 0
            parts.append(piece)
            n -= len(piece)
            if n == 0:
                break
        if len(parts) == 1:
            return parts[0].tobytes()
        return b"".join(parts)

    def to_bytes(self) -> bytes:
        """All the bytes, copied into one bytes object (brpc: `IOBuf::to_string`)."""
        if len(self._chunks) == 1:
            return self._chunks[0].tobytes()
        return b"".join(self._chunks)

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def chunks(self, max_count: int | None = None) -> list[memoryview]:
        """The first max_count chunks (all when None), ready for `socket.sendmsg`.

        The views share the buffer's memory; they are valid until the bytes are popped.
        """
        if max_count is None or max_count >= len(self._chunks):
            return list(self._chunks)
        return list(islice(self._chunks, max_count))

    def __iter__(self) -> Iterator[memoryview]:
        """Iterate over the chunks (not the bytes)."""
        return iter(self._chunks)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IOBuf):
            return self._size == other._size and self.to_bytes() == other.to_bytes()
        if isinstance(other, (bytes, bytearray, memoryview)):
            return self._size == len(other) and self.to_bytes() == bytes(other)
        return NotImplemented

    def __repr__(self) -> str:
        head = self.copy_to(16)
        more = "..." if self._size > len(head) else ""
        return f"IOBuf(len={self._size}, chunks={len(self._chunks)}, {head!r}{more})"

    # ----- sockets ----------------------------------------------------------------------------

    def append_from_socket(self, sock, max_bytes: int = DEFAULT_BLOCK_SIZE) -> int:
        """Read at most max_bytes from a socket into the back of the buffer; return the count.

        brpc: src/butil/iobuf.h, IOBufAppender / IOPortal::append_from_file_descriptor

        Returns 0 at EOF. A non-blocking socket with nothing to read raises BlockingIOError (and
        InterruptedError / OSError pass through too): the caller decides, as brpc's DoRead caller
        does with EAGAIN. The bytes land in the unused tail of the buffer's current block, which is
        never written again, so the new chunk is a view and nothing is copied. brpc reads into
        several blocks at once with readv; one recv_into per call is enough here, since the caller
        loops until EAGAIN anyway.
        """
        if max_bytes <= 0:
            raise ValueError(f"IOBuf.append_from_socket: max_bytes must be > 0, got {max_bytes}")
        block = self._read_block
        space = 0 if block is None else len(block) - self._read_offset
        if space < min(max_bytes, _MIN_READ_SPACE):
            block = self._read_block = bytearray(max(DEFAULT_BLOCK_SIZE, max_bytes))
            self._read_offset = 0
            space = len(block)
        start = self._read_offset
        want = min(space, max_bytes)
        nread = sock.recv_into(memoryview(block)[start:start + want], want)
        if nread > 0:
            self._chunks.append(memoryview(block)[start:start + nread].toreadonly())
            self._size += nread
            self._read_offset = start + nread
        return nread

    # Another name for the same operation, for readers who think in terms of "read from".
    read_from = append_from_socket

    def write_to(self, sock, max_chunks: int = IOBUF_IOV_MAX) -> int:
        """Write the front of the buffer with one `sendmsg` (writev) and drop what was written.

        brpc: src/butil/iobuf.h, IOBuf::cut_into_file_descriptor

        Returns the number of bytes written, which may be less than len(buf) (a partial write);
        0 when the buffer is empty. BlockingIOError and other OSErrors pass through untouched, with
        the buffer unchanged.
        """
        if not self._chunks:
            return 0
        written = sock.sendmsg(self.chunks(max_chunks))
        self.pop_front(written)
        return written
