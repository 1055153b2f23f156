"""Lazy reads of a clone: records of remote-only packs are fetched on demand through a bounded
local cache, checked always, and never served wrong."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.remote.cloneutil import Clone, cache_blocks, flip, make_clone, open_clone
from tests.treeutil import snapshot
from vfs.errors import CorruptData
from vfs.exporter import export_version
from vfs.ids import ObjectId
from vfs.pack import REC_HEADER, Record
from vfs.remote.diskcache import SEGMENT, PackCache
from vfs.remote.lazy import open_lazy
from vfs.remote.spans import Spans
from vfs.store import Store

KiB = 1024
MiB = 1024 * KiB


def read(store: Store, name: str, rec: Record) -> bytes:
    return store.reader.packs.read(name, rec.offset, rec.oid, rec.kind, rec.plain_len,
                                   rec.stored_len)


def plains(clone: Clone) -> dict[bytes, bytes]:
    """Every chunk's plain bytes, read from store A (which has the packs)."""
    with Store.open(clone.a) as a:
        return {r.oid: read(a, n, r) for n, r in clone.chunk_records()}


def test_spans_add_remove_cover() -> None:
    s = Spans()
    s.add(0, 10)
    s.add(20, 30)
    s.add(10, 20)  # touching ranges merge
    assert s.ranges() == [(0, 30)]
    s.remove(5, 25)
    assert s.ranges() == [(0, 5), (25, 30)]
    assert s.covers(0, 5) and not s.covers(0, 6) and s.covers(26, 30)
    assert s.overlaps(4, 6) and not s.overlaps(5, 25) and s.overlaps(24, 26)
    assert s.next_at(5) == 25 and s.next_at(2) == 2 and s.next_at(30) is None
    assert s.covered_to(2) == 5 and s.covered_to(5) == 5 and s.covered_to(26) == 30
    assert s.end_before(20) == 5 and s.end_before(27) == 27 and s.end_before(0) == 0
    s.add(3, 27)
    assert s.ranges() == [(0, 30)] and s.total() == 30
    s.remove(0, 30)
    assert not s


def test_opening_a_clone_contacts_nothing_and_lists_versions(tmp_path: Path) -> None:
    clone = make_clone(tmp_path, count=4)
    with Store.open(clone.b) as store:
        assert store.remote is not None
        assert [v.number for v in store.versions()] == [1]
        assert not store.remote.connected
    with Store.open(clone.a) as store:
        assert store.remote is None  # no remotes.json: not a clone


def test_export_of_a_clone_equals_the_source(tmp_path: Path) -> None:
    clone = make_clone(tmp_path)
    store, backend = open_clone(clone)
    with store:
        export_version(store, store.resolve("latest"), tmp_path / "out")
    assert snapshot(tmp_path / "out") == snapshot(clone.source)
    # each file is read in order: its first record, then the rest in one read-ahead GET
    files = len(list(clone.source.rglob("*.bin")))
    assert len(backend.gets) <= 2 * files + 2 * len(clone.packs)
    assert len(backend.gets) < len(clone.chunk_records()) / 2


def test_a_pass_in_pack_order_reads_ahead_in_growing_windows(tmp_path: Path) -> None:
    clone = make_clone(tmp_path)
    expect = plains(clone)
    records = sorted(clone.chunk_records(), key=lambda c: (c[0], c[1].offset))
    assert len(records) > 100
    store, backend = open_clone(clone)
    with store:
        for name, rec in records:  # what a cold tar of a version does: import order
            assert read(store, name, rec) == expect[rec.oid]
    assert len(backend.gets) < len(records) / 10, (len(backend.gets), len(records))
    lengths = [length or 0 for _, _, length in backend.gets]
    assert max(lengths) >= 1 * MiB
    starts = [start for _, start, _ in backend.gets]
    assert starts == sorted(starts)  # nothing fetched twice, no step back


def test_one_get_per_cold_record_then_none(tmp_path: Path) -> None:
    clone = make_clone(tmp_path, count=8)
    picked = clone.chunk_records()[::3][::-1]  # backwards: never a sequential run
    expect = plains(clone)
    store, backend = open_clone(clone)
    with store:
        for name, rec in picked:
            assert read(store, name, rec) == expect[rec.oid]
        assert len(backend.gets) == len(picked)
        for _key, start, length in backend.gets:  # one record, widened to 4 KiB blocks
            assert start % 4096 == 0 and length is not None and length < 64 * KiB
        for name, rec in picked:
            assert read(store, name, rec) == expect[rec.oid]
        assert len(backend.gets) == len(picked)  # all from the cache now
        assert store.remote is not None and store.remote.counters["hits"] == len(picked)


def test_concurrent_readers_of_a_record_share_one_get(tmp_path: Path) -> None:
    clone = make_clone(tmp_path, count=2)
    name, rec = clone.chunk_records()[3]
    expect = plains(clone)[rec.oid]
    store, backend = open_clone(clone)
    backend.gate = threading.Event()
    results: list[bytes | BaseException] = []

    def reader() -> None:
        try:
            results.append(read(store, name, rec))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    with store:
        try:
            for t in threads:
                t.start()
            end = time.monotonic() + 30
            assert store.remote is not None
            while store.remote.shared < 5 and time.monotonic() < end:
                time.sleep(0.005)
        finally:
            backend.gate.set()
            for t in threads:
                t.join(30)
        assert results == [expect] * 6
        assert len(backend.gets) == 1


def test_a_byte_flipped_in_the_cache_is_fetched_again(tmp_path: Path) -> None:
    clone = make_clone(tmp_path, count=2)
    name, rec = clone.chunk_records()[2]
    expect = plains(clone)[rec.oid]
    store, backend = open_clone(clone)
    with store:
        assert read(store, name, rec) == expect
        cached = store.remote.cache.path(name)  # type: ignore[union-attr]
        flip(cached, rec.offset + REC_HEADER.size + 7)
        gets = len(backend.gets)
        assert read(store, name, rec) == expect
        assert len(backend.gets) == gets + 1
        assert store.remote.counters["refetched"] == 1  # type: ignore[union-attr]
        assert read(store, name, rec) == expect  # the cache holds the right bytes again
        assert len(backend.gets) == gets + 1


def test_a_byte_flipped_on_the_remote_is_corrupt_and_never_cached(tmp_path: Path) -> None:
    clone = make_clone(tmp_path, count=6)
    chunks = clone.chunk_records()
    name, bad = chunks[10]
    flip(clone.pack_file(name), bad.offset + REC_HEADER.size + 11)
    expect = plains(clone)
    store, backend = open_clone(clone)
    with store:
        # read in pack order: the damaged record arrives inside a read-ahead window
        for n, rec in sorted((c for c in chunks if c[0] == name), key=lambda c: c[1].offset):
            if rec.oid != bad.oid:
                assert read(store, n, rec) == expect[rec.oid]
                continue
            for _ in range(2):
                gets = len(backend.gets)
                with pytest.raises(CorruptData) as info:
                    read(store, n, rec)
                assert info.value.object_id == bad.oid
                assert "remote origin" in str(info.value)
                assert len(backend.gets) == gets + 1  # fetched fresh each time: not cached
                assert store.remote.cache.read(n, rec.offset, rec.end) is None  # type: ignore[union-attr]


def test_usage_stays_within_the_bound_over_a_larger_scan(tmp_path: Path) -> None:
    clone = make_clone(tmp_path, count=30)
    total = sum(os.path.getsize(clone.pack_file(n)) for n in clone.packs)
    bound = 1 * MiB
    assert total > 3 * bound
    expect = plains(clone)
    store, _ = open_clone(clone, bound=bound)
    with store:
        cache = store.remote.cache  # type: ignore[union-attr]
        for _ in range(2):
            for name, rec in clone.chunk_records():
                assert read(store, name, rec) == expect[rec.oid]
                assert cache.usage() <= bound
                assert cache_blocks(clone) <= bound
        assert cache.usage() > bound // 2  # it was used, not bypassed


def test_trim_and_local_packs_are_never_touched(tmp_path: Path) -> None:
    clone = make_clone(tmp_path, count=10)
    from vfs.importer import import_tree

    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "new.bin").write_bytes(os.urandom(300 * KiB))
    with Store.open(clone.b) as b:
        import_tree(b, tmp_path / "more", "local data")
    local = {p: p.read_bytes() for p in (clone.b / "packs").glob("??/*")}
    assert local
    store, _ = open_clone(clone, bound=512 * KiB)
    with store:
        export_version(store, store.resolve("v1"), tmp_path / "out1")
        export_version(store, store.resolve("v2"), tmp_path / "out2")
        cache = store.remote.cache  # type: ignore[union-attr]
        assert 0 < cache.usage() <= 512 * KiB
        assert cache.trim(100 * KiB) <= 100 * KiB
        assert cache_blocks(clone) <= 100 * KiB
        assert cache.trim(0) == 0
        assert cache_blocks(clone) == 0
        assert not list((clone.b / "cache" / "packs").glob("??/*"))
    store, backend = open_clone(clone, bound=512 * KiB)
    with store:
        export_version(store, store.resolve("v1"), tmp_path / "again")
        assert backend.gets  # fetched again after the trim
    assert snapshot(tmp_path / "out1") == snapshot(clone.source)
    assert snapshot(tmp_path / "again") == snapshot(clone.source)
    assert snapshot(tmp_path / "out2") == snapshot(tmp_path / "more")
    assert {p: p.read_bytes() for p in (clone.b / "packs").glob("??/*")} == local


@pytest.mark.parametrize("state", ["kept", "lost", "damaged"])
def test_the_use_order_survives_a_restart_and_losing_it_is_harmless(tmp_path: Path,
                                                                    state: str) -> None:
    clone = make_clone(tmp_path, count=40)
    chunks = sorted(clone.chunk_records(), key=lambda c: (c[0], c[1].offset))[::4]
    # each half read backwards (one GET a record, no read-ahead); the first half long before
    old, recent = chunks[: len(chunks) // 2][::-1], chunks[len(chunks) // 2:][::-1]
    assert len({n for n, _ in chunks}) == 1 and recent[0][1].offset > 3 * SEGMENT
    store, _ = open_clone(clone)
    with store:
        for name, rec in old + recent:
            read(store, name, rec)
        used = store.remote.cache.usage()  # type: ignore[union-attr]
    state_file = clone.b / "cache" / "state.json"
    assert state_file.exists()
    if state == "lost":
        state_file.unlink()
    elif state == "damaged":
        state_file.write_bytes(b'{"packs": [1, 2], "lru": [[7, "x"], "junk"], "bound": "?"}')
    # a restart with room for about half: what was read last stays (when the order is known)
    cache = PackCache(clone.b / "cache", used // 2)
    try:
        assert cache.writable()
        assert cache.usage() <= used // 2
        assert cache_blocks(clone) <= used // 2
        if state == "kept":
            kept = [cache.read(n, r.offset, r.end) is not None for n, r in recent[-3:]]
            assert all(kept)
    finally:
        cache.close()
    expect = plains(clone)
    store, _ = open_clone(clone, bound=used // 2)
    with store:  # whatever survived, every record reads right
        for name, rec in old + recent:
            assert read(store, name, rec) == expect[rec.oid]


def test_a_second_process_reads_without_caching(tmp_path: Path) -> None:
    clone = make_clone(tmp_path, count=3)
    name, rec = clone.chunk_records()[1]
    first, _ = open_clone(clone)
    with first:
        read(first, name, rec)  # takes the cache
        remote = open_lazy(clone.b)
        assert remote is not None
        try:
            got = remote.read(name, rec.offset, ObjectId(rec.oid), rec.kind, rec.plain_len,
                              rec.stored_len)
            assert got == plains(clone)[rec.oid]
            assert not remote.cache.owned
            with pytest.raises(Exception, match="in use by another process"):
                remote.cache.trim(0)
        finally:
            remote.close()
