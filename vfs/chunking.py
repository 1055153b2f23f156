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
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyfastcdc

from vfs.config import ChunkParams
from vfs.ids import ChunkId, hash_chunk
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
    """A chunk after the worker step: its id, and its encoded payload if it is new."""

    cid: ChunkId | None
    length: int
    codec: int = 0
    payload: bytes | None = None


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
    """Yields the pieces of a file. One instance per thread."""

    def __init__(self, params: ChunkParams) -> None:
        self.params = params
        self._cdc = pyfastcdc.FastCDC(avg_size=params.avg_size, min_size=params.min_size,
                                      max_size=params.max_size)

    def pieces(self, fd: int, size: int, blocks: int) -> Iterator[Piece]:
        pos = 0
        for start, end in data_extents(fd, size, blocks):
            if start > pos:
                yield Piece(start - pos, None)
            yield from self._extent(fd, start, end)
            pos = end
        if pos < size:
            yield Piece(size - pos, None)

    def _extent(self, fd: int, start: int, end: int) -> Iterator[Piece]:
        carry = b""
        pos = start
        while pos < end or carry:
            want = min(BLOCK, end - pos)
            block = os.pread(fd, want, pos) if want > 0 else b""
            pos += len(block)
            at_end = pos >= end or len(block) < want
            buf = carry + block if carry else block
            if not buf:
                return
            if len(buf) <= self.params.min_size:
                if at_end:
                    yield Piece(len(buf), buf)
                    return
                carry = buf
                continue
            view = memoryview(buf)
            cuts = [(c.offset, c.length) for c in self._cdc.cut_buf(view)]
            last = len(cuts) if at_end else len(cuts) - 1
            for off, length in cuts[:last]:
                yield Piece(length, view[off:off + length])
            if at_end:
                return
            off, length = cuts[-1]
            carry = bytes(view[off:off + length])


def prepare_batch(pieces: list[Piece], is_known: Callable[[bytes], bool],
                  level: int) -> list[Prepared]:
    """Worker step: hash each chunk; compress it only if the store does not have it yet."""
    out: list[Prepared] = []
    for piece in pieces:
        if piece.data is None:
            out.append(Prepared(None, piece.length))
            continue
        cid = hash_chunk(piece.data)
        if is_known(cid):
            out.append(Prepared(cid, piece.length))
        else:
            codec, payload = encode_payload(piece.data, level)
            out.append(Prepared(cid, piece.length, codec, payload))
    return out
