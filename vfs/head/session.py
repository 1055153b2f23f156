"""Opening @head of a store: the lock, the state, recovery, and following new versions.

Owns: `STORE/locks/head.lock` (one process serves or edits @head at a time: the mount daemon,
or a CLI command when nothing is mounted), choosing @head's base version, finishing an
interrupted commit, and removing what a crash left unreferenced. Never imports: daemon, trio,
pyfuse3.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from vfs.errors import DsfsError, HeadBusy, UnknownVersion, UserError
from vfs.head.commit import recover
from vfs.head.data import FileLocks
from vfs.head.fs import HeadFS
from vfs.head.overlay import Overlays
from vfs.head.state import HEAD_ROOT, HeadDB, HNode, open_head_db
from vfs.head.unsynced import SYNCED_FROM, zero_lost_writes
from vfs.model import Entry, Kind, Version
from vfs.store import Store

log = logging.getLogger("dsfs.head")


def empty_base(uid: int, gid: int) -> Version:
    """The base of @head in a store without versions: an empty directory."""
    root = Entry(b"", Kind.DIR, stat.S_IFDIR | 0o755, uid, gid, time.time_ns(), 0, b"")
    return Version(0, root, 0, 0, "", "")


@dataclass(slots=True)
class HeadSession:
    store: Store
    db: HeadDB
    overlays: Overlays
    fs: HeadFS
    lock_fd: int

    def close(self) -> None:
        # a clean stop leaves everything on disk (on a full disk, what was written stays in
        # the page cache and the log, and the next open treats this as a crash)
        with contextlib.suppress(DsfsError, OSError):
            self.fs.sync_all(checkpoint=True)
            self.db.set_meta("running", 0)
            self.db.sync()
            self.db.checkpoint()
        self.overlays.wait_for_purge()  # space a commit freed is free when the session ends
        self.overlays.close()
        self.db.close()
        os.close(self.lock_fd)

    def __enter__(self) -> HeadSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_clean(self) -> bool:
        root = self.db.node(HEAD_ROOT)
        return root is None or not root.dirty

    def follow_latest(self) -> bool:
        """If @head has no changes and a newer version exists, start over from it. Call only
        when no inode of @head is held (at open, or after the kernel was told to drop them)."""
        latest = self.store.latest()
        if latest is None or not self.is_clean() or latest.number == self.fs.base.number:
            return False
        self.fs.reserve_numbers()
        _reset_state(self.db, self.overlays, latest, self.fs.file_locks)
        self.fs = HeadFS(self.store, self.db, self.overlays, latest, self.fs.file_locks)
        return True

    def reset(self) -> Version:
        """Discard every change: @head becomes the newest version again. Waits for reads of
        overlays still running (each overlay is discarded under its file's lock), so the
        daemon calls it in a worker thread."""
        base = self.store.latest() or empty_base(os.getuid(), os.getgid())
        self.fs.reserve_numbers()
        _reset_state(self.db, self.overlays, base, self.fs.file_locks)
        self.fs = HeadFS(self.store, self.db, self.overlays, base, self.fs.file_locks)
        return base


def _root_node(base: Version) -> HNode:
    r = base.root_entry
    return HNode(HEAD_ROOT, Kind.DIR, r.mode, r.uid, r.gid, r.mtime_ns, r.mtime_ns, 0, 2, r.ref,
                 0, 0, r.xattrs, 0, False, b"")


def _reset_state(db: HeadDB, overlays: Overlays, base: Version, file_locks: FileLocks) -> None:
    with db.txn():
        db.wipe(keep_meta=("schema", "next_ino"))
        db.put_node(_root_node(base))
        db.set_meta("base", base.number)
    for ino in overlays.stored_inos():
        with file_locks.held(ino):  # not under a read of it: its descriptors close here
            overlays.discard(ino)
    overlays.purge_trash_in_background()


def head_in_use(root: Path) -> bool:
    """Whether a process (a mount) holds @head's lock right now."""
    try:
        fd = os.open(root / "locks" / "head.lock", os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def finish_renumbering(store: Store, db: HeadDB) -> None:
    """A `dsfs pull` that renumbers @head's base records the old number (`base_was`) and the
    version's identity before it changes the index, and clears both after (vfs.remote.pull).
    Found set, that pull stopped in between: @head's base is whichever of the two numbers now
    holds that very version (the index changed, or it did not)."""
    was = db.meta("base_was")
    if was is None:
        return
    identity = db.meta("base_identity")
    number = db.meta("base")
    for candidate in (number, was):
        try:
            if candidate is not None and store.version(int(candidate)).identity == identity:
                db.set_meta("base", int(candidate))
                break
        except UnknownVersion:
            continue
    with db.txn():
        db.set_meta("base_was", None)
        db.set_meta("base_identity", None)
    db.sync()


def open_head(store: Store) -> HeadSession:
    """Take @head's lock and open its state (creating it on first use)."""
    lock_path = store.root / "locks" / "head.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise HeadBusy(f"@head of {store.root} is served by a running `dsfs mount`") from None
    try:
        db = open_head_db(store.root / "head")
        overlays = Overlays(store.root / "head" / "data")
        finish_renumbering(store, db)
        number = db.meta("base")
        base: Version | None = None
        if number is not None and int(number) == 0 and db.node(HEAD_ROOT) is not None:
            base = empty_base(os.getuid(), os.getgid())  # @head of a store without versions
        elif number is not None and int(number) > 0:
            try:
                base = store.version(int(number))
            except UnknownVersion:
                root = db.node(HEAD_ROOT)
                if root is not None and root.dirty:
                    raise UserError(f"@head's base v{number} is gone: its changes cannot be "
                                    "read; run `dsfs reset --yes` to start over") from None
        if base is None or db.node(HEAD_ROOT) is None:
            base = store.latest() or empty_base(os.getuid(), os.getgid())
            _reset_state(db, overlays, base, FileLocks())  # at open: nothing reads yet
        unclean = db.meta("running") != 0  # 1, or None from an older dsfs
        synced_from: int | None = None
        lost: dict[int, int] = {}
        if unclean:
            # a later sync of the database must not make sizes durable before their bytes;
            # writes a power cut lost become zeros (vfs.head.unsynced), then all is synced
            synced_from = time.time_ns()
            overlays.sync_files()
            lost = zero_lost_writes(overlays, db.meta(SYNCED_FROM))
            overlays.sync_files()
        overlays.remove_orphan_sums()
        db.set_meta("running", 1)
        db.sync(synced_from=synced_from)
        overlays.purge_trash_in_background()
        session = HeadSession(store, db, overlays, HeadFS(store, db, overlays, base), fd)
        for ino, count in sorted(lost.items()):
            log.warning("%s: %d blocks of writes not yet synced were lost in a crash; they "
                        "read as zeros", session.fs.path_of(ino), count)
        recover(session.fs)
        _remove_unreferenced(db, overlays)
        if unclean:
            _settle_overlays(db, overlays)
        session.follow_latest()
        return session
    except BaseException:
        os.close(fd)
        raise


def _settle_overlays(db: HeadDB, overlays: Overlays) -> None:
    """After an unclean stop, each stored file's overlay against its row in head.db:
    - bytes past the file's size are cut: a truncate records the new size before it cuts the
      overlay, and a crash between the two must not let a later extension show them;
    - a file whose overlay holds bytes while head.db calls it clean (the overlay reached the
      disk, the database's log did not) is marked dirty with the names above it, as a write
      marks it: @head serves those bytes, status and commit must see them."""
    for ino in overlays.stored_inos():
        n = db.node(ino)
        if n is None or n.kind != Kind.FILE:
            continue
        try:
            end = os.stat(overlays.path(ino)).st_size
        except FileNotFoundError:
            continue
        if end > n.size:
            log.info("@head inode %d: cutting overlay bytes past its size %d (a truncate cut "
                     "short by a crash)", ino, n.size)
            overlays.truncate(ino, n.size)
        if not n.dirty and overlays.data_ranges(ino, 0, min(end, n.size), check=False):
            _mark_dirty(db, ino)
    overlays.close_all_but(set())


def _mark_dirty(db: HeadDB, ino: int) -> None:
    n = db.node(ino)
    if n is None or n.dirty:
        return
    db.put_node(n.with_(dirty=True))
    for parent, name in db.names_of(ino):
        found = db.dirent(parent, name)
        if found is not None and not found[1]:
            db.mark_dirent_dirty(parent, name)
        _mark_dirty(db, parent)


def _remove_unreferenced(db: HeadDB, overlays: Overlays) -> None:
    """Nodes unlinked while open when the last session ended, and overlay files of nothing."""
    for ino in db.orphan_inos():
        db.delete_node(ino)
        overlays.remove(ino)
    known = set(db.all_inos())
    for ino in overlays.stored_inos():
        if ino not in known:
            overlays.remove(ino)
