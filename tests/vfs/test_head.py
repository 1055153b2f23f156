"""@head in the pure library: copy-on-write edits, names, commit and recovery (no FUSE)."""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.treeutil import snapshot, write
from vfs.errors import Exists, Invalid, IsADir, NoEntry, NoSpace, NotEmpty
from vfs.exporter import export_version
from vfs.head.commit import NothingToCommit, commit
from vfs.head.fs import HeadFS
from vfs.head.overlay import free_bytes, reserve_for
from vfs.head.session import HeadSession, open_head
from vfs.head.state import HEAD_ROOT
from vfs.importer import import_tree
from vfs.store import Store

MiB = 1 << 20


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    rnd = random.Random(3)
    write(root / "a.txt", b"alpha\n")
    write(root / "big.bin", rnd.randbytes(6 * MiB))
    write(root / "d/e/f.txt", b"deep\n")
    write(root / "d/g.txt", b"g\n")
    os.link(root / "a.txt", root / "d/a-link.txt")
    return root


@pytest.fixture
def head(store: Store, src: Path) -> Iterator[HeadSession]:
    import_tree(store, src, message="v1")
    session = open_head(store)
    try:
        yield session
    finally:
        session.close()


def path_ino(fs: HeadFS, path: str) -> int:
    ino = HEAD_ROOT
    for part in path.split("/"):
        if part:
            ino, _ = fs.lookup(ino, part.encode())
    return ino


def read_all(fs: HeadFS, path: str) -> bytes:
    ino = path_ino(fs, path)
    return fs.read(fs.node(ino), 0, fs.node(ino).size)


def write_at(fs: HeadFS, path: str, offset: int, data: bytes) -> None:
    h = fs.open(path_ino(fs, path), writable=True, truncate=False, append=False)
    fs.write(h, offset, data)
    fs.release(h)


def exported(store: Store, spec: str, dest: Path) -> dict[bytes, tuple]:
    export_version(store, store.resolve(spec), dest)
    return snapshot(dest, mtimes=False)


def test_unchanged_head_reads_the_base(head: HeadSession, src: Path) -> None:
    fs = head.fs
    assert read_all(fs, "big.bin") == (src / "big.bin").read_bytes()
    assert sorted(fs.names(HEAD_ROOT)) == [b"a.txt", b"big.bin", b"d"]
    with pytest.raises(NothingToCommit):
        commit(fs, "nothing")


def test_one_byte_edit_stores_about_one_chunk(head: HeadSession, store: Store, src: Path,
                                              tmp_path: Path) -> None:
    fs = head.fs
    write_at(fs, "big.bin", 3 * MiB + 5, b"X")
    expected = bytearray((src / "big.bin").read_bytes())
    expected[3 * MiB + 5] = ord("X")
    assert read_all(fs, "big.bin") == bytes(expected)
    result = commit(fs, "edit")
    assert result.bytes_chunked <= 2 * store.config.chunk.max_size
    assert result.version.stats.new_stored_bytes < 3 * MiB
    assert store.read(store.lookup(result.version, b"big.bin"), 0, 7 * MiB) == bytes(expected)
    # after the commit the overlay is empty and @head still reads the same bytes
    assert fs.overlays.data_ranges(path_ino(fs, "big.bin"), 0, 7 * MiB) == []
    assert read_all(fs, "big.bin") == bytes(expected)


def test_namespace_changes_commit_like_a_plain_directory(head: HeadSession, store: Store,
                                                         src: Path, tmp_path: Path) -> None:
    fs = head.fs
    plain = tmp_path / "plain"
    export_version(store, store.resolve("v1"), plain)
    d = path_ino(fs, "d")
    ino, _ = fs.create(d, b"new.txt", 0o644, 0, 0)
    h = fs.open(ino, True, False, False)
    fs.write(h, 0, b"new file\n")
    fs.release(h)
    write(plain / "d/new.txt", b"new file\n", 0o644)
    fs.rename(HEAD_ROOT, b"a.txt", d, b"renamed.txt")
    os.rename(plain / "a.txt", plain / "d/renamed.txt")
    fs.unlink(path_ino(fs, "d/e"), b"f.txt")
    os.unlink(plain / "d/e/f.txt")
    fs.rmdir(d, b"e")
    os.rmdir(plain / "d/e")
    fs.mkdir(HEAD_ROOT, b"made", 0o755, 0, 0)
    (plain / "made").mkdir(mode=0o755)
    fs.symlink(path_ino(fs, "made"), b"ln", b"../d/g.txt", 0, 0)
    os.symlink("../d/g.txt", plain / "made/ln")
    fs.setattr(path_ino(fs, "d/g.txt"), mode=0o600, size=1)
    os.chmod(plain / "d/g.txt", 0o600)
    os.truncate(plain / "d/g.txt", 1)
    with pytest.raises(Exists):
        fs.mkdir(HEAD_ROOT, b"made", 0o755, 0, 0)
    with pytest.raises(NotEmpty):
        fs.rmdir(HEAD_ROOT, b"made")
    with pytest.raises(IsADir):
        fs.unlink(HEAD_ROOT, b"made")
    with pytest.raises(Invalid):
        fs.rename(HEAD_ROOT, b"d", d, b"inside")
    with pytest.raises(NoEntry):
        fs.lookup(HEAD_ROOT, b"a.txt")
    result = commit(fs, "names")
    got = exported(store, result.version.name, tmp_path / "out")
    want = snapshot(plain, mtimes=False)
    assert got == want
    # the hard link kept its group through the rename
    ino_a = path_ino(fs, "d/renamed.txt")
    assert fs.getattr(ino_a).nlink == 2 == fs.getattr(path_ino(fs, "d/a-link.txt")).nlink


def test_hard_link_edit_shows_through_every_name(head: HeadSession, store: Store) -> None:
    fs = head.fs
    write_at(fs, "a.txt", 0, b"ALPHA")
    assert read_all(fs, "d/a-link.txt") == b"ALPHA\n"
    v = commit(fs, "link").version
    assert store.read(store.lookup(v, b"d/a-link.txt"), 0, 100) == b"ALPHA\n"


def test_sparse_growth_stays_sparse(head: HeadSession, store: Store) -> None:
    fs = head.fs
    ino, _ = fs.create(HEAD_ROOT, b"sparse", 0o644, 0, 0)
    fs.setattr(ino, size=4 << 30)
    h = fs.open(ino, True, False, False)
    fs.write(h, (2 << 30) + 1, b"middle")
    fs.release(h)
    assert fs.read(fs.node(ino), (2 << 30) - 2, 10) == b"\0\0\0middle\0"
    v = commit(fs, "sparse").version
    assert v.stats.new_stored_bytes < MiB
    e = store.lookup(v, b"sparse")
    assert e.size == 4 << 30
    assert store.read(e, (2 << 30) - 2, 10) == b"\0\0\0middle\0"


def test_writes_stop_at_the_metadata_reserve_and_removal_still_works(head: HeadSession
                                                                     ) -> None:
    fs = head.fs
    assert reserve_for(100 * MiB) == 1 * MiB and reserve_for(1 << 40) == 64 * MiB
    assert fs.overlays.reserve >= 1 * MiB
    write_at(fs, "a.txt", 0, b"ALPHA")
    # a disk that is nearly full: what is free now is less than the reserve
    fs.overlays.reserve = free_bytes(fs.overlays.dir) + 1 * MiB
    with pytest.raises(NoSpace):
        write_at(fs, "big.bin", 5, b"x")
    with pytest.raises(NoSpace):
        write_at(fs, "d/g.txt", 0, b"G")
    assert read_all(fs, "d/g.txt") == b"g\n"
    assert read_all(fs, "a.txt")[:5] == b"ALPHA"
    fs.unlink(HEAD_ROOT, b"a.txt")
    ino, _ = fs.create(HEAD_ROOT, b"empty", 0o644, 0, 0)
    fs.rename(HEAD_ROOT, b"empty", HEAD_ROOT, b"renamed")
    assert fs.lookup(HEAD_ROOT, b"renamed")[0] == ino
    fs.overlays.reserve = reserve_for(1 << 30)
    write_at(fs, "renamed", 0, b"fits again")
    assert read_all(fs, "renamed") == b"fits again"


def test_unlinked_open_file_keeps_working_until_release(head: HeadSession) -> None:
    fs = head.fs
    ino = path_ino(fs, "d/g.txt")
    fs.remember(ino)
    h = fs.open(ino, True, False, False)
    fs.unlink(path_ino(fs, "d"), b"g.txt")
    fs.write(h, 0, b"still here")
    assert fs.read(fs.node(ino), 0, 100) == b"still here"
    fs.release(h)
    fs.forget(ino, 1)
    assert fs.db.node(ino) is None


def test_changes_survive_reopen_and_commit_recovers(store: Store, src: Path) -> None:
    import_tree(store, src, message="v1")
    with open_head(store) as s:
        write_at(s.fs, "d/g.txt", 0, b"changed")
    with open_head(store) as s:
        assert read_all(s.fs, "d/g.txt") == b"changed"
        v = commit(s.fs, "after reopen").version
    with open_head(store) as s:
        assert s.fs.base.number == v.number
        assert s.is_clean()
        assert read_all(s.fs, "d/g.txt") == b"changed"


def test_fifo_and_modes(head: HeadSession, store: Store) -> None:
    fs = head.fs
    _, attr = fs.mknod(HEAD_ROOT, b"pipe", stat.S_IFIFO | 0o640, 0, 0)
    assert stat.S_ISFIFO(attr.mode)
    v = commit(fs, "fifo").version
    assert stat.S_ISFIFO(store.lookup(v, b"pipe").mode)


def status_of(fs: HeadFS) -> set[tuple[str, str]]:
    from vfs.head.status import head_status

    return {(i.change, os.fsdecode(i.path)) for i in head_status(fs)}


def test_status_after_a_commit_and_an_editor_save(head: HeadSession) -> None:
    fs = head.fs
    fs.create(HEAD_ROOT, b"new.txt", 0o644, 0, 0)
    write_at(fs, "new.txt", 0, b"x")
    fs.rename(HEAD_ROOT, b"a.txt", HEAD_ROOT, b"r.txt")
    assert status_of(fs) == {("added", "new.txt"), ("renamed", "r.txt")}
    commit(fs, "two")
    assert status_of(fs) == set()
    write_at(fs, "new.txt", 1, b"y")
    write_at(fs, "r.txt", 0, b"R")
    assert status_of(fs) == {("modified", "new.txt"), ("modified", "r.txt"),
                             ("modified", "d/a-link.txt")}  # a hard link of r.txt
    # an editor's save: write a temporary file, rename it over the original
    fs.create(HEAD_ROOT, b".d.swp", 0o644, 0, 0)
    write_at(fs, ".d.swp", 0, b"saved")
    fs.rename(HEAD_ROOT, b".d.swp", path_ino(fs, "d"), b"g.txt")
    assert ("modified", "d/g.txt") in status_of(fs)
    # a directory replaced by a new one of the same name
    fs.unlink(path_ino(fs, "d/e"), b"f.txt")
    fs.rmdir(path_ino(fs, "d"), b"e")
    fs.mkdir(path_ino(fs, "d"), b"e", 0o755, 0, 0)
    st = status_of(fs)
    assert ("deleted", "d/e") in st and ("added", "d/e") in st


def test_access_acl_sets_the_mode_and_a_minimal_one_is_not_kept(head: HeadSession) -> None:
    import struct

    fs = head.fs
    ino = path_ino(fs, "a.txt")
    minimal = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, 0xFFFFFFFF)
                                             for tag, perm in ((1, 6), (4, 4), (0x20, 0)))
    fs.setxattr(ino, b"system.posix_acl_access", minimal)
    assert stat.S_IMODE(fs.getattr(ino).mode) == 0o640
    assert fs.listxattr(ino) == []
    extended = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, uid)
                                               for tag, perm, uid in ((1, 7, 0xFFFFFFFF),
                                                                      (2, 6, 1000),
                                                                      (4, 4, 0xFFFFFFFF),
                                                                      (0x10, 5, 0xFFFFFFFF),
                                                                      (0x20, 1, 0xFFFFFFFF)))
    fs.setxattr(ino, b"system.posix_acl_access", extended)
    assert stat.S_IMODE(fs.getattr(ino).mode) == 0o751
    assert fs.listxattr(ino) == [b"system.posix_acl_access"]


def test_a_flipped_bit_in_an_overlay_file_is_reported_not_served(head: HeadSession) -> None:
    from vfs.errors import CorruptData

    fs = head.fs
    write_at(fs, "big.bin", 10_000, b"Z" * 9000)
    ino = path_ino(fs, "big.bin")
    assert read_all(fs, "big.bin")[10_000:19_000] == b"Z" * 9000
    fd = os.open(fs.overlays.path(ino), os.O_RDWR)
    os.pwrite(fd, bytes([os.pread(fd, 1, 12_345)[0] ^ 0x10]), 12_345)
    os.close(fd)
    with pytest.raises(CorruptData, match="checksum"):
        fs.read(fs.node(ino), 12_300, 10)
    assert fs.overlays.damaged_blocks(ino, fs.node(ino).size) == [12_288]
    # bytes outside the damaged block still read
    assert fs.read(fs.node(ino), 16_384, 100) == b"Z" * 100


def test_an_overlay_cut_short_is_reported_not_served_as_base_bytes(store: Store,
                                                                   src: Path) -> None:
    from vfs.errors import CorruptData
    from vfs.verify import verify_store

    import_tree(store, src, message="v1")
    with open_head(store) as session:
        write_at(session.fs, "big.bin", 0, b"N" * 20_000)  # a first write of these blocks
        ino = path_ino(session.fs, "big.bin")
        path = session.fs.overlays.path(ino)
    os.truncate(path, 8192)  # at rest, after a clean stop: two blocks of five remain
    assert [p.problem for p in verify_store(store).head_problems] == [
        f"written block at offset {off} fails its checksum or is gone"
        for off in (8192, 12_288, 16_384)]
    with open_head(store) as session:
        fs = session.fs
        assert fs.read(fs.node(ino), 0, 8192) == b"N" * 8192
        with pytest.raises(CorruptData, match="gone from its overlay"):
            fs.read(fs.node(ino), 8000, 1000)
        from vfs.head.commit import commit as commit_head
        with pytest.raises(CorruptData):
            commit_head(fs, "must not record the base's bytes")


def test_after_a_crash_a_first_write_whose_bytes_never_landed_reads_old_or_zeros(
        store: Store, src: Path) -> None:
    import_tree(store, src, message="v1")
    base = (src / "big.bin").read_bytes()
    with open_head(store) as session:
        write_at(session.fs, "big.bin", 0, b"N" * 20_000)
        ino = path_ino(session.fs, "big.bin")
        path = session.fs.overlays.path(ino)
    import sqlite3
    conn = sqlite3.connect(session.db.path)  # as if that session had been killed
    conn.execute("INSERT OR REPLACE INTO meta VALUES('running', 1)")
    conn.commit()
    conn.close()
    os.truncate(path, 8192)  # sums landed, the bytes of the last three blocks did not
    with open_head(store) as session:
        got = read_all(session.fs, "big.bin")
        # lost unsynced writes read as zeros (vfs.head.unsynced), never as EIO
        assert got[:8192] == b"N" * 8192 and got[8192:20_480] in (base[8192:20_480],
                                                                   bytes(12_288))


def test_sums_left_by_a_discard_cut_short_do_not_haunt_the_file(store: Store,
                                                                 src: Path) -> None:
    import shutil

    import_tree(store, src, message="v1")
    with open_head(store) as session:
        write_at(session.fs, "d/g.txt", 0, b"G" * 10_000)
        ino = path_ino(session.fs, "d/g.txt")
        sums = session.fs.overlays.sum_path(ino)
        shutil.copy(sums, sums.parent.parent / "kept.sum")
        commit(session.fs, "v2")
    # a kill between a discard's two renames leaves the sums without their overlay file
    shutil.copy(sums.parent.parent / "kept.sum", sums)
    with open_head(store) as session:
        assert not sums.exists()
        assert read_all(session.fs, "d/g.txt") == b"G" * 10_000
        write_at(session.fs, "d/g.txt", 0, b"h")
        assert read_all(session.fs, "d/g.txt") == b"h" + b"G" * 9_999
    # and a new overlay file never inherits sums it did not write
    with open_head(store) as session:
        commit(session.fs, "v3")
        shutil.copy(sums.parent.parent / "kept.sum", sums)
        write_at(session.fs, "d/g.txt", 5_000, b"x")
        assert read_all(session.fs, "d/g.txt") == b"h" + b"G" * 4_999 + b"x" + b"G" * 4_999


def test_a_damaged_row_of_the_head_database_is_reported(head: HeadSession) -> None:
    import sqlite3

    from vfs.errors import CorruptData

    fs = head.fs
    write_at(fs, "a.txt", 0, b"x")
    ino = path_ino(fs, "a.txt")
    conn = sqlite3.connect(head.db.path)
    conn.execute("UPDATE nodes SET size = size + 1000 WHERE ino = ?", (ino,))
    conn.commit()
    conn.close()
    head.db._cache.clear()
    with pytest.raises(CorruptData, match="damaged"):
        fs.getattr(ino)


def test_verify_names_damaged_head_files(head: HeadSession, store: Store) -> None:
    from vfs.verify import verify_store

    fs = head.fs
    write_at(fs, "d/g.txt", 0, b"g" * 10_000)
    assert verify_store(store, read_data=True).ok
    fd = os.open(fs.overlays.path(path_ino(fs, "d/g.txt")), os.O_RDWR)
    os.pwrite(fd, b"\xff", 5000)
    os.close(fd)
    report = verify_store(store)
    assert not report.ok
    assert [(p.path, "4096" in p.problem) for p in report.head_problems] == [("@head/d/g.txt",
                                                                              True)]


def test_a_write_cut_between_its_sums_and_its_bytes_leaves_old_bytes_or_zeros(
        store: Store, src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.vfs.test_overlay_crash import crash
    from vfs.head import overlay
    from vfs.verify import verify_store

    import_tree(store, src, message="v1")
    head = open_head(store)
    fs = head.fs
    write_at(fs, "big.bin", 0, b"A" * 8192)
    fs.sync_all()
    write_at(fs, "big.bin", 8192, b"C" * 8192)
    real = overlay._pwrite_all
    calls: list[int] = []

    def crash_on_data(fd: int, data: bytes, offset: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the sums landed, the process dies before the bytes do
            raise KeyboardInterrupt
        real(fd, data, offset)

    monkeypatch.setattr(overlay, "_pwrite_all", crash_on_data)
    with pytest.raises(KeyboardInterrupt):
        fs.overlays.write(path_ino(fs, "big.bin"), 100, b"B" * 14_000, fs.node(
            path_ino(fs, "big.bin")).size, lambda o, k: b"")
    monkeypatch.setattr(overlay, "_pwrite_all", real)
    crash(head)  # the process died there
    assert verify_store(store).ok
    with open_head(store) as session:
        got = read_all(session.fs, "big.bin")
    # blocks first written since the last sync keep their durable bytes, which their sums
    # still vouch for; blocks written twice since lost the first write's bytes' sum: zeros
    assert got[:8192] == b"A" * 8192
    assert got[8192:16_384] == bytes(8192)


def test_head_of_a_store_without_versions_keeps_its_changes_and_commits(store: Store) -> None:
    with open_head(store) as s:
        ino, _ = s.fs.create(HEAD_ROOT, b"first.txt", 0o644, 0, 0)
        h = s.fs.open(ino, True, False, False)
        s.fs.write(h, 0, b"from scratch\n")
        s.fs.release(h)
    with open_head(store) as s:
        assert read_all(s.fs, "first.txt") == b"from scratch\n"
        v = commit(s.fs, "first").version
    assert v.number == 1 and v.stats.files == 1
    assert store.read(store.lookup(v, b"first.txt"), 0, 100) == b"from scratch\n"


def test_the_base_of_a_changed_head_cannot_be_dropped(head: HeadSession, store: Store,
                                                      src: Path) -> None:
    from vfs.errors import UserError

    import_tree(store, src, message="v2")
    assert store.drop("v2").number == 2  # a clean @head pins nothing
    write_at(head.fs, "a.txt", 0, b"x")
    with pytest.raises(UserError, match="base of @head"):
        store.drop("v1")
