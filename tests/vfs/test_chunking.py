"""The block-wise chunker must cut exactly where one pass over the whole file would."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pyfastcdc

from vfs.chunking import BLOCK, Chunker
from vfs.config import ChunkParams


def test_block_boundaries_do_not_change_chunk_boundaries(tmp_path: Path) -> None:
    params = ChunkParams()
    data = random.Random(11).randbytes(2 * BLOCK + 3 * params.max_size + 12345)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    expect = [(c.offset, c.length) for c in pyfastcdc.FastCDC(
        avg_size=params.avg_size, min_size=params.min_size,
        max_size=params.max_size).cut_buf(data)]
    fd = os.open(path, os.O_RDONLY)
    try:
        got = []
        pos = 0
        joined = bytearray()
        for piece in Chunker(params).pieces(fd, len(data), os.fstat(fd).st_blocks):
            assert piece.data is not None
            got.append((pos, piece.length))
            joined += piece.data  # valid until the next piece is requested
            pos += piece.length
    finally:
        os.close(fd)
    assert got == expect
    assert bytes(joined) == data


def test_holes_are_reported_as_holes(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(64 << 20)
        f.seek(32 << 20)
        f.write(b"data")
    fd = os.open(path, os.O_RDONLY)
    try:
        pieces = list(Chunker(ChunkParams()).pieces(fd, 64 << 20, os.fstat(fd).st_blocks))
    finally:
        os.close(fd)
    assert sum(p.length for p in pieces) == 64 << 20
    assert sum(p.length for p in pieces if p.data is not None) < 1 << 20
