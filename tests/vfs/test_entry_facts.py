"""What `stat` needs is recorded in the entries: a chunk-listed file's data bytes
(`Entry.allocated`, holes excluded) and a directory's subdirectories (`Entry.subdirs`), by import
and by commit, so the mount answers `stat` without reading a chunk list or a directory's pages.
Entries written before carry neither and read as before."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.treeutil import write
from tests.vfs.test_head import path_ino, write_at
from vfs.errors import CorruptData
from vfs.head.commit import commit
from vfs.head.session import open_head
from vfs.head.state import HEAD_ROOT
from vfs.ids import ObjectId
from vfs.importer import import_tree
from vfs.model import REF_LIST, Entry, Kind, ref_kind
from vfs.store import Store
from vfs.tree import TreeReader, build_tree

MiB = 1 << 20


def all_entries(store: Store, tree: bytes, path: bytes = b"") -> dict[bytes, Entry]:
    out: dict[bytes, Entry] = {}
    for e in store.trees.entries(tree):  # type: ignore[arg-type]
        rel = path + b"/" + e.name if path else e.name
        out[rel] = e
        if e.kind == Kind.DIR:
            out.update(all_entries(store, e.ref, rel))
    return out


def check_facts(store: Store, tree: bytes) -> int:
    """Every recorded fact equals what the chunk list or the pages say; how many are."""
    checked = 0
    for rel, e in all_entries(store, tree).items():
        if e.kind == Kind.DIR:
            assert e.subdirs == TreeReader(store.reader.get).subdir_count(e.tree), rel
            checked += 1
        elif e.kind == Kind.FILE and ref_kind(e.content) == REF_LIST:
            assert e.allocated == store.contents.allocated(e.content, e.size), rel
            checked += 1
    return checked


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    rnd = random.Random(5)
    write(root / "big.bin", rnd.randbytes(5 * MiB))
    write(root / "small.txt", b"small")
    for d in ("a/b/c", "a/d", "e"):
        (root / d).mkdir(parents=True, exist_ok=True)
    with open(root / "a/sparse.bin", "wb") as f:
        f.write(rnd.randbytes(200 << 10))
        f.seek(6 * MiB)
        f.write(rnd.randbytes(300 << 10))
    return root


def test_old_rows_decode_without_facts_and_encode_unchanged() -> None:
    file_row = [b"f", int(Kind.FILE), 0o100644, 1, 2, 3, 4, b"\x02" + b"x" * 32, None, 0]
    dir_row = [b"d", int(Kind.DIR), 0o40755, 1, 2, 3, 9, b"t" * 32, None, 0]
    for row in (file_row, dir_row, [*file_row, 2], [*file_row, 1, 7]):
        e = Entry.decode(row)
        assert (e.allocated, e.subdirs) == (-1, -1)
        assert e.encode() == row  # the same rows, so the same tree ids
    assert Entry.decode(file_row).data_bytes() == -1  # only the chunk list can tell


def test_facts_round_trip_and_older_readers_see_the_fields_they_know() -> None:
    f = Entry(b"f", Kind.FILE, 0o100644, 1, 2, 3, 10 * MiB, b"\x02" + b"x" * 32, allocated=MiB)
    d = Entry(b"d", Kind.DIR, 0o40755, 1, 2, 3, 9, b"t" * 32, subdirs=4)
    for e in (f, d):
        row = e.encode()
        assert row[10:12] == [1, 0]  # nlink and rdev where older dsfs reads them
        back = Entry.decode(row)
        assert (back.allocated, back.subdirs) == (e.allocated, e.subdirs)
        assert back == Entry.decode(row[:10])  # equality ignores what follows from content
    assert f.data_bytes() == MiB
    # one chunk is all data, an empty file none: nothing recorded, nothing to read
    one = Entry(b"o", Kind.FILE, 0o100644, 1, 2, 3, 5, b"\x01" + b"c" * 32, allocated=5)
    assert len(one.encode()) == 10 and one.data_bytes() == Entry.decode(one.encode()).data_bytes()
    assert Entry(b"e", Kind.FILE, 0o100644, 1, 2, 3, 0, b"").data_bytes() == 0


def test_import_records_facts_that_match_the_content(store: Store, src: Path) -> None:
    v = import_tree(store, src, "one").version
    assert check_facts(store, v.root) >= 6  # a, a/b, a/b/c, a/d, e, big.bin, a/sparse.bin
    assert v.root_entry.subdirs == 2  # a, e
    sparse = store.lookup(v, b"a/sparse.bin")
    assert sparse.allocated == 500 << 10 < sparse.size
    assert store.lookup(v, b"big.bin").allocated == 5 * MiB


def test_directories_of_small_files_keep_their_tree_ids(store: Store, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries of one-chunk files record nothing new: such directories are stored as before."""
    src = tmp_path / "small"
    for i in range(100):
        write(src / f"{i:03d}.txt", str(i).encode())
    new = import_tree(store, src, "new").version.root
    with monkeypatch.context() as m:
        m.setattr(Entry, "fact", lambda self: -1)
        old = import_tree(store, src, "old").version.root
    assert new == old


def test_a_reimport_skipping_unchanged_files_makes_the_same_trees(store: Store,
                                                                  src: Path) -> None:
    first = import_tree(store, src, "one").version
    again = import_tree(store, src, "two").version
    assert again.stats.reused_files >= 3  # read from the file cache, not the files
    assert again.root == first.root


def test_commit_records_facts_for_the_names_it_writes(store: Store, src: Path) -> None:
    import_tree(store, src, "one")
    with open_head(store) as session:
        fs = session.fs
        fs.mkdir(path_ino(fs, "e"), b"new", 0o755, 0, 0)
        fs.mkdir(path_ino(fs, "e/new"), b"newer", 0o755, 0, 0)
        fs.rmdir(path_ino(fs, "a/b"), b"c")
        write_at(fs, "big.bin", 3 * MiB, b"changed")
        ino, _ = fs.create(HEAD_ROOT, b"holes.bin", 0o644, 0, 0)
        fs.setattr(ino, size=64 * MiB)
        write_at(fs, "holes.bin", 32 * MiB, os.urandom(MiB))
        fs.rename(path_ino(fs, "a"), b"sparse.bin", HEAD_ROOT, b"moved.bin")
        v = commit(fs, "changes").version
    entries = all_entries(store, v.root)
    assert (entries[b"e"].subdirs, entries[b"e/new"].subdirs, entries[b"a/b"].subdirs) == \
        (1, 1, 0)
    assert entries[b"holes.bin"].allocated == MiB
    assert entries[b"moved.bin"].allocated == 500 << 10  # unchanged content, new name
    assert entries[b"big.bin"].allocated == 5 * MiB
    assert v.root_entry.subdirs == 2
    check_facts(store, v.root)


def test_a_page_with_a_name_leaving_its_directory_is_damage(store: Store) -> None:
    """Names that could leave their directory are still refused (one pass over the page)."""
    for bad in (b"", b".", b"..", b"a/b", b"a\0b"):
        writer = store.new_writer()
        rows = [Entry(n, Kind.FILE, 0o100644, 0, 0, 1, 0, b"") for n in sorted((b"ok", bad))]
        tree = build_tree(rows, writer.put_meta)
        writer.flush()
        with pytest.raises(CorruptData, match="invalid name"):
            TreeReader(store.reader.get).page(ObjectId(tree))
