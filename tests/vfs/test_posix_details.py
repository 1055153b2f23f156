"""POSIX details in the library: entries with rdev (and old entries without), head.db layout 2
-> 3, directory link counts kept by mkdir/rmdir/rename, atime, holes kept through a commit."""

from __future__ import annotations

import os
import sqlite3
import stat
import zlib
from pathlib import Path

from tests.treeutil import write
from tests.vfs.test_head import path_ino, write_at
from vfs import schema
from vfs.head.check import check_head
from vfs.head.commit import commit
from vfs.head.fs import HeadFS
from vfs.head.session import open_head
from vfs.head.state import _SCHEMA, HEAD_ROOT, SCHEMA_VERSION, HeadDB
from vfs.importer import import_tree
from vfs.model import Entry, Kind
from vfs.store import Store
from vfs.view import VersionsView

MiB = 1 << 20


def test_entries_without_rdev_decode_and_encode_as_before() -> None:
    old = [b"f", int(Kind.FILE), 0o100644, 1, 2, 3, 4, b"", None, 0]
    assert Entry.decode(old).rdev == 0
    assert Entry.decode(old).encode() == old  # the same row, so the same tree ids
    assert Entry.decode([*old[:9], 7, 3]).encode() == [*old[:9], 7, 3]
    dev = Entry(b"null", Kind.CHR, stat.S_IFCHR | 0o666, 0, 0, 5, 0, b"", rdev=os.makedev(1, 3))
    assert Entry.decode(dev.encode()) == dev
    assert Kind.from_mode(stat.S_IFSOCK | 0o755) == Kind.SOCK
    assert [k.letter for k in (Kind.CHR, Kind.BLK, Kind.SOCK)] == ["c", "b", "s"]


def _layout2_db(path: Path) -> None:
    """A head.db as layout 2 wrote it: no rdev/atime_ns columns, sums over the old fields."""
    c = sqlite3.connect(str(path), isolation_level=None)
    c.executescript("""
CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE nodes(
    ino INTEGER PRIMARY KEY, kind INTEGER NOT NULL, mode INTEGER NOT NULL,
    uid INTEGER NOT NULL, gid INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL, size INTEGER NOT NULL, nlink INTEGER NOT NULL,
    base BLOB NOT NULL, base_size INTEGER NOT NULL, base_len INTEGER NOT NULL,
    xattrs BLOB, link INTEGER NOT NULL, dirty INTEGER NOT NULL, origin BLOB,
    sum INTEGER NOT NULL);
""")
    row = (7, int(Kind.FILE), 0o100600, 1, 2, 1000, 2000, 5, 1, b"", 0, 0, None, 0, 1, b"x")
    total = zlib.crc32(schema.enc_msg(list(row[:14] + row[15:16])))
    c.execute("INSERT INTO nodes VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (*row, total))
    c.execute("PRAGMA user_version = 2")
    c.close()


def test_head_db_layout_2_is_migrated_in_place_and_its_rows_stay_valid(tmp_path: Path) -> None:
    path = tmp_path / "head.db"
    _layout2_db(path)
    db = HeadDB(path)
    try:
        n = db.node(7)
        assert n is not None and (n.size, n.rdev, n.atime_ns, n.origin) == (5, 0, None, b"x")
        db.put_node(n.with_(ino=8, kind=Kind.CHR, rdev=os.makedev(1, 5), atime_ns=1234))
    finally:
        db.close()
    db = HeadDB(path)  # reopened: layout 3, both rows read back and pass their checksums
    try:
        assert db.node(7) == n
        m = db.node(8)
        assert m is not None and (m.kind, m.rdev, m.atime_ns) == (Kind.CHR, os.makedev(1, 5),
                                                                  1234)
    finally:
        db.close()
    c = sqlite3.connect(str(path))
    assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    c.close()


def _nlink(fs: HeadFS, path: str) -> int:
    return fs.getattr(path_ino(fs, path)).nlink


def test_directory_link_counts_follow_mkdir_rmdir_rename_and_exchange(
        store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "a/one/f", b"1")
    (src / "a/two").mkdir()
    write(src / "b/f", b"3")
    import_tree(store, src, message="v1")
    with open_head(store) as s:
        fs = s.fs
        assert (_nlink(fs, ""), _nlink(fs, "a"), _nlink(fs, "b")) == (4, 4, 2)
        fs.mkdir(path_ino(fs, "b"), b"new", 0o755, 0, 0)
        assert _nlink(fs, "b") == 3
        fs.rmdir(path_ino(fs, "a"), b"two")
        assert _nlink(fs, "a") == 3
        fs.rename(path_ino(fs, "a"), b"one", path_ino(fs, "b"), b"moved")
        assert (_nlink(fs, "a"), _nlink(fs, "b")) == (2, 4)
        fs.create(path_ino(fs, "a"), b"file", 0o644, 0, 0)
        fs.rename(path_ino(fs, "a"), b"file", path_ino(fs, "b"), b"new", exchange=True)
        assert (_nlink(fs, "a"), _nlink(fs, "b")) == (3, 3)
        fs.mkdir(path_ino(fs, "b"), b"empty", 0o755, 0, 0)
        fs.rename(path_ino(fs, "a"), b"file", path_ino(fs, "b"), b"empty")  # replaces a directory
        assert (_nlink(fs, "a"), _nlink(fs, "b")) == (2, 4)
        # a state stored by a dsfs before link counting (every directory 2): counted at open
        for ino in (HEAD_ROOT, path_ino(fs, "a"), path_ino(fs, "b")):
            node = fs.db.node(ino)
            assert node is not None
            fs.db.put_node(node.with_(nlink=2))
        fs.db.set_meta("dir_nlink", None)
        v = commit(fs, "links").version
    with open_head(store) as s:
        assert (_nlink(s.fs, ""), _nlink(s.fs, "a"), _nlink(s.fs, "b")) == (4, 2, 4)
    view = VersionsView(store)
    vdir, _ = view.lookup(view.root.ino, f"@v{v.number}".encode())
    _, battr = view.lookup(vdir.ino, b"b")
    assert (view.attr(vdir).nlink, battr.nlink) == (4, 4)


def test_atime_is_kept_and_survives_reopen(store: Store, tmp_path: Path) -> None:
    write(tmp_path / "src/f", b"f")
    import_tree(store, tmp_path / "src", message="v1")
    with open_head(store) as s:
        ino = path_ino(s.fs, "f")
        assert s.fs.getattr(ino).atime_ns == s.fs.getattr(ino).mtime_ns
        s.fs.setattr(ino, atime_ns=42)
        assert s.fs.getattr(ino).atime_ns == 42
        assert s.fs.getattr(ino).mtime_ns != 42
        s.fs.setattr(ino, mtime_ns=77)
        assert (s.fs.getattr(ino).atime_ns, s.fs.getattr(ino).mtime_ns) == (42, 77)
    with open_head(store) as s:
        assert s.fs.getattr(path_ino(s.fs, "f")).atime_ns == 42


def test_commit_keeps_the_base_holes_of_a_written_sparse_file(
        store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse.bin", "wb") as f:
        f.truncate(50 * MiB)
        f.seek(50 * MiB - 3)
        f.write(b"end")
    import_tree(store, src, message="v1")
    with open_head(store) as s:
        fs = s.fs
        ino = path_ino(fs, "sparse.bin")
        assert fs.getattr(ino).blocks * 512 < MiB
        write_at(fs, "sparse.bin", 10 * MiB, b"middle")
        assert fs.getattr(ino).blocks * 512 < 2 * MiB
        fs.setattr(ino, size=20 * MiB)  # below the base's size: base data is cut at base_len
        assert fs.getattr(ino).blocks * 512 < MiB
        v = commit(fs, "sparse").version
    e = store.lookup(v, b"sparse.bin")
    assert e.size == 20 * MiB
    assert store.contents.allocated(e.content, e.size) < MiB
    assert store.contents.read(e.content, e.size, 10 * MiB, 6) == b"middle"


def test_verify_reads_a_layout_2_head_db_before_any_open_migrated_it(store: Store) -> None:
    head = store.root / "head"
    head.mkdir(exist_ok=True)
    _layout2_db(head / "head.db")
    c = sqlite3.connect(str(head / "head.db"))
    c.executescript(_SCHEMA)  # the other tables, as layout 2 had them (nodes stays layout 2)
    c.execute("PRAGMA user_version = 2")
    c.close()
    assert check_head(store) == []
