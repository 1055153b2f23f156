"""Cutting a file into content-defined chunks and preparing new chunks for packs.

Owns: reading a source file (holes kept as holes), FastCDC boundaries, and the worker step that
hashes, deduplicates and compresses a batch of chunks. Never imports: daemon, trio, pyfuse3.

Files are read with pread into large blocks rather than mmap, so a file truncated while it is
read gives short reads, never SIGBUS. CDC runs over each block from the last real boundary; only
the cut at a block's end is provisional and is carried into the next block, so boundaries are
exactly those of a whole-file pass.
"""

from __future__ import annotations

import errno
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

import pyfastcdc

from vfs.config import ChunkParams
from vfs.ids import ChunkId, ObjectId, ObjType, hash_chunk
from vfs.pack import encode_payload

BLOCK = 32 << 20

SEEK_DATA = getattr(os, "SEEK_DATA", 3)
SEEK_HOLE = getattr(os, "SEEK_HOLE", 4)


@dataclass(slots=True)
class Piece:
    """A hole (data is None) or a chunk's bytes, in file order."""

    length: int
    data: memoryview | bytes | None


@dataclass(slots=True)
class Prepared:
    """A chunk after the worker step: its id (None for a hole) and length."""

    cid: ChunkId | None
    length: int


@dataclass(slots=True)
class FileTask:
    """A whole file for a worker to open, read, chunk and prepare."""

    path: bytes


@dataclass(slots=True)
class FileResult:
    """What a worker made of a FileTask: the file's status as read, its chunks, or an error."""

    st: os.stat_result | None = None
    spans: list[Prepared] = field(default_factory=list)
    error: str = ""
    changed: bool = False


def data_extents(fd: int, size: int, blocks: int) -> list[tuple[int, int]]:
    """(start, end) ranges holding data; the rest of the file are holes."""
    if size == 0:
        return []
    if blocks * 512 >= size:
        return [(0, size)]
    extents: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break
            return [(0, size)]
        end = min(os.lseek(fd, start, SEEK_HOLE), size)
        extents.append((start, end))
        pos = end
    return extents


class Chunker:
    """Yields the pieces of a file. One instance per thread.

    Reads go into one reused buffer: a piece's data is valid only until the next piece is
    requested (the caller hashes, compresses and writes it before asking for more).
    """

    def __init__(self, params: ChunkParams) -> None:
        self.params = params
        self._cdc = pyfastcdc.FastCDC(avg_size=params.avg_size, min_size=params.min_size,
                                      max_size=params.max_size)
        self._buf = bytearray(BLOCK + params.max_size)

    def pieces(self, fd: int, size: int, blocks: int) -> Iterator[Piece]:
        pos = 0
        for start, end in data_extents(fd, size, blocks):
            if start > pos:
                yield Piece(start - pos, None)
            yield from self.extent(lambda view, at: os.preadv(fd, [view], at), start, end)
            pos = end
        if pos < size:
            yield Piece(size - pos, None)

    def extent(self, read_into: Callable[[memoryview, int], int], start: int,
               end: int) -> Iterator[Piece]:
        """The chunks of the bytes [start, end) that `read_into(view, offset)` reads (it fills
        the view and returns the count; short only at the end)."""
        buf = self._buf
        mv = memoryview(buf)
        carry = 0  # bytes at the front of buf that belong to the next chunk
        pos = start
        while True:
            want = min(BLOCK, end - pos)
            got = read_into(mv[carry:carry + want], pos) if want > 0 else 0
            pos += got
            at_end = pos >= end or got < want
            total = carry + got
            if total == 0:
                return
            view = mv[:total]
            if total <= self.params.min_size and not at_end:
                carry = total
                continue
            if total <= self.params.min_size:
                yield Piece(total, view)
                return
            cuts = [(c.offset, c.length) for c in self._cdc.cut_buf(view)]
            last = len(cuts) if at_end else len(cuts) - 1
            for off, length in cuts[:last]:
                yield Piece(length, view[off:off + length])
            if at_end:
                return
            off, length = cuts[-1]
            buf[:length] = bytes(mv[off:off + length])
            carry = length


class ChunkSink(Protocol):
    """Where workers put new chunks (vfs.objects.ObjectWriter)."""

    def known_checker(self) -> AbstractContextManager[Callable[[bytes], bool]]: ...

    def put_encoded(self, oid: ObjectId, kind: ObjType, plain_len: int, codec: int,
                    payload: bytes | memoryview, crc: int | None = None, *,
                    index_checked: bool = False) -> bool: ...


def prepare_piece(piece: Piece, is_known: Callable[[bytes], bool], level: int,
                  sink: ChunkSink) -> Prepared:
    """Hash a chunk; if the store lacks it, compress, checksum and write it to the sink."""
    if piece.data is None:
        return Prepared(None, piece.length)
    cid = hash_chunk(piece.data)
    if not is_known(cid):
        codec, payload = encode_payload(piece.data, level)
        sink.put_encoded(ObjectId(cid), ObjType.CHUNK, piece.length, codec, payload,
                         zlib.crc32(payload), index_checked=True)
    return Prepared(cid, piece.length)


_local = threading.local()


def thread_chunker(params: ChunkParams) -> Chunker:
    """This thread's chunker for these parameters (chunkers own a large buffer)."""
    return _chunker(params)


def _chunker(params: ChunkParams) -> Chunker:
    chunkers: dict[ChunkParams, Chunker] | None = getattr(_local, "chunkers", None)
    if chunkers is None:
        chunkers = _local.chunkers = {}
    if params not in chunkers:
        chunkers[params] = Chunker(params)
    return chunkers[params]


def open_source(path: bytes) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        return os.open(path, flags | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        return os.open(path, flags)


def prepare_file(task: FileTask, is_known: Callable[[bytes], bool], level: int,
                 params: ChunkParams, sink: ChunkSink) -> FileResult:
    """Worker step for a whole file: open, read, chunk, hash, compress new chunks."""
    result = FileResult()
    try:
        fd = open_source(task.path)
    except OSError as exc:
        result.error = f"cannot read: {exc.strerror}"
        return result
    try:
        st = result.st = os.fstat(fd)
        for piece in _chunker(params).pieces(fd, st.st_size, st.st_blocks):
            result.spans.append(prepare_piece(piece, is_known, level, sink))
        after = os.fstat(fd)
        result.changed = (after.st_mtime_ns, after.st_size) != (st.st_mtime_ns, st.st_size)
    except OSError as exc:
        result.error = f"read error: {exc.strerror}"
    finally:
        os.close(fd)
    return result


def prepare_batch(items: list[FileTask], sink: ChunkSink, level: int,
                  params: ChunkParams) -> list[FileResult]:
    """Worker step for a batch of files, in order.

    One index snapshot serves the batch's existence checks; new chunks are written by this
    worker thread into its own pack, so only chunk ids come back to the walking thread.
    """
    with sink.known_checker() as is_known:
        return [prepare_file(item, is_known, level, params, sink) for item in items]
