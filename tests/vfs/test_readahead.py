"""Read-ahead of packs: sequential readers get the kernel reading ahead of them, random readers
do not, and what is read is checked as always."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from tests.treeutil import write
from vfs.config import ChunkParams
from vfs.errors import CorruptData
from vfs.importer import import_tree
from vfs.readahead import NEAR, WINDOW, ReadAhead, kernel_readahead, window_for
from vfs.store import Store

KiB = 1024
MiB = 1024 * KiB


def test_a_sequential_reader_is_kept_half_a_window_ahead_with_contiguous_hints() -> None:
    ra = ReadAhead(window=1 * MiB)
    hinted: list[tuple[int, int]] = []
    pos = 16
    for i in range(400):
        size = 20 * KiB + (i * 7919) % (40 * KiB)
        got = ra.hint("p", pos, size)
        pos += size
        if got is not None:
            hinted.append(got)
        if i > 0:  # the first read of a pack is not sequential yet
            assert hinted and hinted[-1][0] + hinted[-1][1] >= pos + ra.window // 2
    assert len(hinted) < 400 // 10  # one hint per half window, not one per read
    for (start, length), (nxt, _) in itertools.pairwise(hinted):
        assert nxt == start + length  # each hint continues where the last one ended
    assert ra.hints == len(hinted)


def test_random_reads_ask_for_nothing_much() -> None:
    ra = ReadAhead(window=8 * MiB)
    rnd = random.Random(3)
    for _ in range(1000):
        ra.hint("p", rnd.randrange(32 * MiB), rnd.randint(20 * KiB, 200 * KiB))
    assert ra.hints < 60  # a read lands just past a recent one now and then


def test_two_readers_of_one_pack_are_both_sequential() -> None:
    ra = ReadAhead(window=1 * MiB)
    a, b = 16, 20 * MiB
    for _ in range(50):
        ra.hint("p", a, 30 * KiB)
        ra.hint("p", b, 30 * KiB)
        a += 30 * KiB
        b += 30 * KiB
    assert ra.hints >= 4
    ra.forget("p")
    assert ra.hint("p", a, 10) is None  # forgotten: not known to be sequential any more


def test_a_gap_within_near_is_still_sequential_a_step_back_is_not() -> None:
    ra = ReadAhead(window=1 * MiB)
    ra.hint("p", 0, 100)
    assert ra.hint("p", 100 + NEAR, 100) is not None
    ra2 = ReadAhead(window=1 * MiB)
    ra2.hint("p", 10 * MiB, 100)
    assert ra2.hint("p", 10 * MiB - 100, 100) is None


def test_hints_only_where_the_kernel_reads_ahead_too_little() -> None:
    assert window_for(None) == WINDOW
    assert window_for(128 * KiB) == WINDOW
    assert window_for(8 * MiB) == 0
    found = kernel_readahead(Path("/"))
    assert found is None or found >= 0
    assert kernel_readahead(Path("/proc")) is None  # no device behind it
    assert kernel_readahead(Path("/does/not/exist")) is None
    assert ReadAhead.for_packs(Path("/")).window == window_for(found)


def test_hinted_reads_return_the_verified_bytes_and_damage_still_fails(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "store", chunk=ChunkParams.for_average(16 * KiB))
    data = random.Random(4).randbytes(3 * MiB)
    write(tmp_path / "src" / "big.bin", data)
    import_tree(store, tmp_path / "src", "v1")
    store.close()
    with Store.open(tmp_path / "store") as store:
        store.reader.packs.readahead = ReadAhead(window=1 * MiB)
        e = store.lookup(store.resolve("v1"), b"big.bin")
        assert store.contents.read(e.content, e.size, 0, e.size) == data
        assert store.reader.packs.readahead.hints > 1
        spans = store.contents.spans(e.content, e.size)
        victim = spans[len(spans) // 2].cid
        assert victim is not None
        found = store.reader.locate(victim)
        assert found is not None
    path = store.packs_dir / found.pack[:2] / found.pack
    with open(path, "r+b") as f:
        f.seek(found.loc.offset + found.loc.stored_len)
        byte = f.read(1)
        f.seek(found.loc.offset + found.loc.stored_len)
        f.write(bytes([byte[0] ^ 1]))
    with Store.open(tmp_path / "store") as store:
        store.reader.packs.readahead = ReadAhead(window=1 * MiB)
        with pytest.raises(CorruptData, match=victim.hex()[:12]):
            store.contents.read(e.content, e.size, 0, e.size)
