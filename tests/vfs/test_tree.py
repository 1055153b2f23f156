"""Large directories are paged: lookups read a few pages, a one-entry change writes a few."""

from __future__ import annotations

import random

from vfs.ids import ObjectId, ObjType, hash_object
from vfs.model import Entry, Kind
from vfs.tree import TreeReader, build_tree


class MemoryObjects:
    """An in-memory object map (content-addressed like the store) for pure tree tests."""

    def __init__(self) -> None:
        self.objects: dict[bytes, bytes] = {}
        self.writes = 0

    def put(self, kind: ObjType, data: bytes) -> ObjectId:
        oid = hash_object(kind, data)
        if oid not in self.objects:
            self.objects[oid] = data
            self.writes += 1
        return oid

    def get(self, oid: ObjectId, kind: ObjType) -> bytes:
        return self.objects[oid]


def entry(name: bytes, size: int = 1) -> Entry:
    return Entry(name, Kind.FILE, 0o100644, 0, 0, 0, size, b"")


def test_100k_entries_lookup_and_list_in_order() -> None:
    objs = MemoryObjects()
    names = sorted(f"img_{i:07d}.jpg".encode() for i in range(100_000))
    root = build_tree([entry(n) for n in names], objs.put)
    reader = TreeReader(objs.get)
    assert reader.count(root) == 100_000
    assert reader.lookup(root, b"img_0054321.jpg") == entry(b"img_0054321.jpg")
    assert reader.lookup(root, b"img_0054321.jpgx") is None
    assert reader.lookup(root, b"") is None
    assert [e.name for e in reader.entries(root)] == names
    after = [e.name for e in reader.entries(root, start_after=b"img_0099990.jpg")]
    assert after == names[-9:]
    # pages stay small: no page holds a large share of the directory
    assert len(objs.objects) > 100_000 // 200
    assert max(len(v) for v in objs.objects.values()) < 64 * 1024


def test_one_entry_change_in_a_large_directory_writes_only_a_path_of_pages() -> None:
    objs = MemoryObjects()
    rnd = random.Random(5)
    names = sorted({rnd.randbytes(12).hex().encode() for _ in range(50_000)})
    entries = [entry(n) for n in names]
    root1 = build_tree(entries, objs.put)
    before = objs.writes
    entries[25_000] = entry(names[25_000], size=2)
    root2 = build_tree(entries, objs.put)
    assert root1 != root2
    assert objs.writes - before <= 4  # leaf + inner pages up to the root
    entries.insert(100, entry(names[100] + b"-new"))
    before = objs.writes
    build_tree(entries, objs.put)
    assert objs.writes - before <= 6


def test_same_entries_give_the_same_root() -> None:
    objs = MemoryObjects()
    es = [entry(f"{i}".encode()) for i in range(1000)]
    es.sort(key=lambda e: e.name)
    assert build_tree(es, objs.put) == build_tree(list(es), objs.put)
    assert build_tree([], objs.put) == build_tree([], objs.put)


def test_positions_agree_between_lookup_entry_at_and_entries_from() -> None:
    objs = MemoryObjects()
    names = sorted(f"f{i:06d}".encode() for i in range(20_000))
    root = build_tree([entry(n) for n in names], objs.put)
    reader = TreeReader(objs.get)
    for i in (0, 1, 63, 64, 9_999, 19_999):
        found = reader.lookup_with_index(root, names[i])
        assert found is not None and found[1] == i
        at = reader.entry_at(root, i)
        assert at is not None and at.name == names[i]
    assert reader.entry_at(root, 20_000) is None
    assert [e.name for e in reader.entries_from(root, 12_345)] == names[12_345:]
    assert list(reader.entries_from(root, 20_000)) == []


def test_positions_lookups_and_listings_agree_at_every_level() -> None:
    """entry_at, lookup_with_index and entries_from (position-based, as the mount lists and
    numbers inodes) agree on a tree of three levels, also with wait=False once cached."""
    objs = MemoryObjects()
    names = sorted(f"n{i:06d}".encode() for i in range(30_000))
    root = build_tree([entry(n) for n in names], objs.put)
    reader = TreeReader(objs.get)
    assert reader.page(ObjectId(root)).level >= 2
    for i in (0, 1, 63, 64, 4_095, 12_345, 29_999):
        assert reader.entry_at(root, i) == entry(names[i])
        assert reader.lookup_with_index(root, names[i]) == (entry(names[i]), i)
        reader.load_from(root, i)  # what a listing's WouldBlock loads: then no page is missing
        listed = reader.entries_from(root, i, wait=False)
        assert [next(listed).name for _ in range(min(3, 30_000 - i))] == names[i:i + 3]
    assert reader.entry_at(root, 30_000) is None and reader.entry_at(root, -1) is None
    assert list(reader.entries_from(root, 30_000)) == []
    assert reader.lookup_with_index(root, b"a") is None
    assert reader.lookup_with_index(root, b"n0000005") is None


def test_a_damaged_row_is_damage_wherever_it_is_read() -> None:
    """Leaves decode their rows when read: a bad row is CorruptData there, not a crash."""
    from vfs import schema
    from vfs.errors import CorruptData

    objs = MemoryObjects()
    good = entry(b"a").encode()
    bad = [b"b", 99, *good[2:]]  # no such kind
    root = objs.put(ObjType.TREE, schema.enc_msg([0, 2, [good, bad]]))
    reader = TreeReader(objs.get)
    assert reader.lookup(root, b"a") == entry(b"a")  # type: ignore[arg-type]
    for read in (lambda: reader.lookup(root, b"b"), lambda: list(reader.entries(root)),  # type: ignore[arg-type]
                 lambda: list(reader.entries_from(root, 0)),  # type: ignore[arg-type]
                 lambda: reader.page(ObjectId(root)).entries):
        try:
            read()
        except CorruptData:
            continue
        raise AssertionError("a damaged row was read as an entry")
