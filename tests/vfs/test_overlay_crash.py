"""@head overlays after a power cut: the on-disk states a power cut can leave, made by hand.

A power cut keeps, of each file, whatever the kernel had written back: a data file may hold
bytes whose sums never landed, head.db may miss the dirty mark of bytes that did. These tests
build those states directly (no loop device): a session is stopped without its closing sync
(`crash`, as kill -9 or a power cut leaves it: `running` stays 1), then files are set back to
what the disk could hold, and @head is opened again.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.treeutil import write
from tests.vfs.test_head import path_ino, read_all, status_of, write_at
from vfs import schema
from vfs.errors import CorruptData
from vfs.head.commit import commit
from vfs.head.session import HeadSession, open_head
from vfs.importer import import_tree
from vfs.store import Store
from vfs.verify import verify_store

BLOCK = 4096


@pytest.fixture
def base(store: Store, tmp_path: Path) -> Iterator[bytes]:
    data = random.Random(5).randbytes(64 * 1024)
    write(tmp_path / "src" / "f.bin", data)
    write(tmp_path / "src" / "other.txt", b"other\n")
    import_tree(store, tmp_path / "src", message="v1")
    yield data


def crash(session: HeadSession) -> None:
    """Stop a session as kill -9 does: no closing sync, `running` stays 1."""
    session.overlays.wait_for_purge()
    session.overlays.close()
    session.db.close()
    os.close(session.lock_fd)


def set_meta(session: HeadSession, key: str, value: int | bytes) -> None:
    conn = sqlite3.connect(session.db.path)
    conn.execute("INSERT OR REPLACE INTO meta VALUES(?, ?)", (key, value))
    conn.commit()
    conn.close()


def age(*paths: Path, seconds: float = 60) -> None:
    """Set back the mtime of files, as if nothing had touched them for a while."""
    t = time.time_ns() - int(seconds * 1e9)
    for p in paths:
        os.utime(p, ns=(t, t))


def test_bytes_of_an_unsynced_write_whose_sums_did_not_land_read_old_or_zeros(
        store: Store, base: bytes) -> None:
    """(a) A second write's bytes reached the disk, its sums did not: the .sum file holds what
    the last sync left. Not damage: the block reads as zeros (or old bytes), never EIO."""
    session = open_head(store)
    fs = session.fs
    ino = path_ino(fs, "f.bin")
    write_at(fs, "f.bin", 0, b"A" * 3 * BLOCK)
    fs.sync_all()
    sums_at_sync = fs.overlays.sum_path(ino).read_bytes()
    write_at(fs, "f.bin", BLOCK, b"B" * BLOCK)
    sums = fs.overlays.sum_path(ino)
    crash(session)
    sums.write_bytes(sums_at_sync)  # the page cache wrote the data file back, not the sums
    assert verify_store(store, read_data=True).ok  # right after the cut, before any open
    with open_head(store) as session:
        got = read_all(session.fs, "f.bin")
    assert got[:BLOCK] == b"A" * BLOCK and got[2 * BLOCK:3 * BLOCK] == b"A" * BLOCK
    assert got[BLOCK:2 * BLOCK] in (b"A" * BLOCK, bytes(BLOCK))
    assert got[3 * BLOCK:] == base[3 * BLOCK:]
    assert verify_store(store, read_data=True).ok


def test_two_writes_between_syncs_whose_bytes_did_not_land_read_the_synced_bytes(
        store: Store, base: bytes) -> None:
    """(b) Two writes to one block since the last sync, the bytes of neither reached the disk
    (the sums of both did): the block holds what the sync made durable, which its sums still
    vouch for (the second field means "at the last completed sync")."""
    session = open_head(store)
    fs = session.fs
    ino = path_ino(fs, "f.bin")
    write_at(fs, "f.bin", 0, b"S" * 2 * BLOCK)
    fs.sync_all()
    data = fs.overlays.path(ino)
    synced = data.read_bytes()
    write_at(fs, "f.bin", 0, b"1" * BLOCK)
    write_at(fs, "f.bin", 0, b"2" * BLOCK)
    crash(session)
    with open(data, "r+b") as f:
        f.write(synced)
    set_meta(session, "running", 0)  # no repair at open: the sums alone must accept it
    assert verify_store(store, read_data=True).ok
    with open_head(store) as session:
        assert read_all(session.fs, "f.bin")[:2 * BLOCK] == b"S" * 2 * BLOCK


def test_rot_in_an_overlay_untouched_since_the_last_sync_stays_damage(
        store: Store, base: bytes) -> None:
    """(c) After a clean stop, and after an unclean one, a flipped byte in an overlay that no
    write touched since the last completed sync reads EIO and verify reports it."""
    with open_head(store) as session:
        fs = session.fs
        ino = path_ino(fs, "f.bin")
        write_at(fs, "f.bin", 0, b"R" * 2 * BLOCK)
        data, sums = fs.overlays.path(ino), fs.overlays.sum_path(ino)
    age(data, sums)
    session = open_head(store)  # its closing sync starts now, long after the write
    write_at(session.fs, "other.txt", 0, b"x")
    session.fs.sync_all()
    write_at(session.fs, "other.txt", 0, b"y")  # an unsynced change elsewhere
    crash(session)
    st = data.stat()
    with open(data, "r+b") as f:
        f.seek(5000)
        f.write(bytes([f.read(1)[0] ^ 1]))
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))  # rot does not move the mtime
    for running in (1, 0):
        set_meta(session, "running", running)
        problems = verify_store(store, read_data=True).head_problems
        assert [(p.path, "4096" in p.problem) for p in problems] == [("@head/f.bin", True)]
    set_meta(session, "running", 1)
    with open_head(store) as session:
        fs = session.fs
        with pytest.raises(CorruptData, match="checksum"):
            fs.read(fs.node(ino), 4096, 10)
        assert read_all(fs, "other.txt")[:1] == b"y"
    assert not verify_store(store).ok


def test_overlay_bytes_whose_dirty_mark_was_lost_show_in_status(store: Store,
                                                                 base: bytes) -> None:
    """(d) head.db says a stored file is clean while its overlay holds durable bytes (the
    database's log reached the disk later than the overlay): after the unclean stop @head
    serves those bytes, so status and commit must see them."""
    session = open_head(store)
    fs = session.fs
    write_at(fs, "f.bin", 0, b"first")
    commit(fs, "v2")
    write_at(fs, "f.bin", 0, b"second")
    ino = path_ino(fs, "f.bin")
    crash(session)
    conn = sqlite3.connect(session.db.path)  # as the database was before the second write
    conn.execute("UPDATE nodes SET dirty=0")
    conn.execute("UPDATE dirents SET dirty=0")
    conn.commit()
    conn.close()
    with open_head(store) as session:
        fs = session.fs
        assert read_all(fs, "f.bin")[:6] == b"second"
        assert status_of(fs) == {("modified", "f.bin")}
        assert fs.overlays.exists(ino)


def test_sums_left_by_a_discard_cut_between_its_two_renames_are_not_damage(
        store: Store, base: bytes) -> None:
    """A commit discards a committed file's overlay by renaming the data file, then its sums,
    into the trash. A kill -9 between the two leaves the sums alone beside a clean file whose
    base already holds those bytes: verify (before any open) must not call that damage, and the
    next open removes them (found by the kill -9 torture, commit-daemon)."""
    session = open_head(store)
    fs = session.fs
    write_at(fs, "f.bin", 0, b"C" * 3 * BLOCK)
    ino = path_ino(fs, "f.bin")
    sums = fs.overlays.sum_path(ino).read_bytes()
    commit(fs, "c")
    crash(session)
    fs.overlays.sum_path(ino).write_bytes(sums)  # the second rename never happened
    age(fs.overlays.sum_path(ino))  # written long before the commit's sync
    assert not fs.overlays.path(ino).exists()
    report = verify_store(store, read_data=True)
    assert report.ok, report.head_problems
    with open_head(store) as session:
        assert read_all(session.fs, "f.bin") == b"C" * 3 * BLOCK + base[3 * BLOCK:]
        assert not session.fs.overlays.sum_path(ino).exists()


def test_a_commit_killed_before_its_discards_leaves_head_clean_on_its_version(
        store: Store, base: bytes) -> None:
    """A commit marks everything clean on its new version, then discards the overlays it
    committed. Killed in between, the next open must finish the discards - not take those
    overlay bytes (already in the version) for writes whose dirty marks were lost (found by
    the kill -9 torture, commit-daemon: '@head is based on v2 with 10 changes')."""
    session = open_head(store)
    fs = session.fs
    write_at(fs, "f.bin", 0, b"D" * 2 * BLOCK)
    ino = path_ino(fs, "f.bin")
    data, sums = fs.overlays.path(ino), fs.overlays.sum_path(ino)
    kept = data.read_bytes(), sums.read_bytes()
    commit(fs, "c")
    crash(session)
    data.write_bytes(kept[0])  # the state between the clean marks and the discards
    sums.write_bytes(kept[1])
    set_meta(session, "discard", schema.enc_msg([ino]))
    with open_head(store) as session:
        assert status_of(session.fs) == set()
        assert read_all(session.fs, "f.bin") == b"D" * 2 * BLOCK + base[2 * BLOCK:]
        assert not data.exists()
        assert session.fs.base.number == 2

