"""Versions share what they have in common: chunks, files and whole subtrees."""

from __future__ import annotations

import os
import random
from pathlib import Path

from tests.treeutil import write
from vfs.importer import import_tree
from vfs.store import Store


def test_unchanged_reimport_reads_nothing_and_stores_almost_nothing(store: Store,
                                                                    tmp_path: Path) -> None:
    src = tmp_path / "src"
    rnd = random.Random(1)
    for i in range(50):
        write(src / f"c{i % 5}/img{i}.jpg", rnd.randbytes(rnd.randint(20_000, 200_000)))
    v1 = import_tree(store, src, "one").version
    v2 = import_tree(store, src, "two").version
    assert v2.stats.reused_files == 50
    assert v2.stats.new_stored_bytes == 0
    assert v2.root == v1.root  # identical content -> identical tree id


def test_file_cache_notices_a_change_that_keeps_size_and_mtime_but_not_ctime(
        store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    f = write(src / "labels.csv", b"cat\n", mtime_ns=1_000_000_000)
    import_tree(store, src, "one")
    f.write_bytes(b"dog\n")
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    v2 = import_tree(store, src, "two").version
    assert store.read(store.lookup(v2, b"labels.csv"), 0, 10) == b"dog\n"


def test_edit_in_the_middle_of_a_large_file_stores_a_few_chunks(store: Store,
                                                                tmp_path: Path) -> None:
    src = tmp_path / "src"
    rnd = random.Random(2)
    data = bytearray(rnd.randbytes(24 * 1024 * 1024))
    write(src / "shard.bin", bytes(data))
    v1 = import_tree(store, src, "one").version
    data[12_000_000:12_000_010] = b"0123456789"
    data[20_000_000:20_000_000] = b"inserted bytes shift everything after them"
    write(src / "shard.bin", bytes(data))
    v2 = import_tree(store, src, "two").version
    avg = store.config.chunk.avg_size + store.config.chunk.min_size
    assert v1.stats.new_stored_bytes > 24 * 1024 * 1024
    # two edit sites: each rewrites about one chunk (CDC resynchronises after an insert)
    assert v2.stats.new_stored_bytes < 6 * avg
    assert v2.stats.new_chunks <= 8
    e = store.lookup(v2, b"shard.bin")
    assert store.read(e, 0, len(data)) == bytes(data)
    assert store.read(e, 19_999_990, 60) == bytes(data[19_999_990:20_000_050])


def test_identical_files_in_different_places_are_stored_once(store: Store,
                                                              tmp_path: Path) -> None:
    src = tmp_path / "src"
    blob = random.Random(3).randbytes(3 * 1024 * 1024)
    for d in ("a", "b", "c/d"):
        write(src / d / "same.bin", blob)
    v = import_tree(store, src, "one").version
    assert v.stats.logical_bytes == 3 * len(blob)
    assert v.stats.new_stored_bytes < len(blob) * 1.05
    refs = {store.lookup(v, p).ref for p in (b"a/same.bin", b"b/same.bin", b"c/d/same.bin")}
    assert len(refs) == 1
