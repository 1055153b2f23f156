"""Making @head's overlay files durable: the syncs, in the order a power cut needs.

Owns: the record of which blocks were written since the last sync covering them (in memory),
and every fsync of `STORE/head/data/`. Part of vfs.head.overlay (its Overlays class inherits
OverlaySyncs). Never imports: daemon, trio, pyfuse3.

Order: every sync makes a node's .sum file durable before its data file, and syncs complete in
the order they start (`_sync_lock`), so the start time a completed sync returns means: every
write made before it is durable, with its sums (recorded in head.db: vfs.head.unsynced).
A sync takes the record of written blocks out before its first fsync: the next write of a block
after that is its first since the sync, which keeps the block's sum so far as the sum "at the
last completed sync" (vfs.head.overlay). Locks: `_sync_lock` (rank OVERLAY_SYNC) before `_lock`
(OVERLAYS), see vfs.lockorder.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from pathlib import Path

from vfs.fsutil import fsync_dir, no_space
from vfs.lockorder import OrderedLock

Snapshot = tuple[dict[int, bytearray], set[int]]
"""What a sync covers: per node, its written-blocks bitmap; the nodes whose file is new."""


class OverlaySyncs:
    """The sync half of Overlays (which sets these attributes and defines the paths)."""

    dir: Path
    trash: Path
    _lock: OrderedLock
    _sync_lock: OrderedLock
    _written: dict[int, bytearray]
    _created: set[int]

    def path(self, ino: int) -> Path:
        raise NotImplementedError

    def sum_path(self, ino: int) -> Path:
        raise NotImplementedError

    def _fd(self, ino: int, create: bool) -> int | None:
        raise NotImplementedError

    def sync_dirs(self) -> None:
        """Make renames into the trash durable (before a later head.db sync says the overlays
        are gone, so they cannot come back after a power cut)."""
        fsync_dir(self.dir)
        fsync_dir(self.trash)

    def sync_filesystem(self) -> int:
        """Flush every overlay's bytes in one call (syncfs) rather than one fsync a file.
        Returns the time it started (see sync_all). syncfs orders nothing between files, so
        the journal is committed first: every overlay's mtime is then durable before any of
        its bytes this call writes (what vfs.head.unsynced relies on)."""
        if _LIBC is None:
            return self.sync_all()
        with self._sync_lock:
            started, snapshot = self._take_written()
            failed = self._syncfs(snapshot)
        if failed:
            return self.sync_all()
        return started

    def _syncfs(self, snapshot: Snapshot) -> bool:
        """Commit the journal, then syncfs; whether syncfs failed (then nothing is covered)."""
        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.utime(fd)  # a change of the directory: its fsync commits the journal
                os.fsync(fd)
                failed = _LIBC is None or _LIBC.syncfs(fd) != 0
            finally:
                os.close(fd)
        except BaseException:
            self._put_back(snapshot)
            raise
        if failed:
            self._put_back(snapshot)
        return failed

    def _take_written(self) -> tuple[int, Snapshot]:
        """The start of a sync and what it covers: the record of writes so far, taken out
        before the first fsync (a write after that starts a new record)."""
        started = time.time_ns()
        with self._lock:
            snapshot = (self._written, self._created)
            self._written, self._created = {}, set()
        return started, snapshot

    def _put_back(self, snapshot: Snapshot) -> None:
        """A sync failed: what it was to cover is still unsynced."""
        written, created = snapshot
        with self._lock:
            for ino, marks in written.items():
                mine = self._written.setdefault(ino, bytearray())
                if len(mine) < len(marks):
                    mine += bytes(len(marks) - len(mine))
                for i, m in enumerate(marks):
                    mine[i] |= m
            self._created |= created

    def fsync(self, ino: int) -> None:
        """One node's overlay: its sums, then its bytes (sums durable no later than their
        data), then the directory if the file is new."""
        if self._fd(ino, create=False) is None:
            return
        with self._sync_lock:
            with self._lock:
                marks = self._written.pop(ino, None)
                created = ino in self._created
                self._created.discard(ino)
            try:
                _fsync_path(self.sum_path(ino))
                _fsync_path(self.path(ino))
                if created:
                    fsync_dir(self.dir)
            except BaseException:
                self._put_back(({ino: marks} if marks is not None else {},
                                {ino} if created else set()))
                raise

    def sync_all(self) -> int:
        """fsync every overlay written since the last sync (open or not): all their sums
        first, then all their bytes, then the directory. Returns the time it started (what a
        completed sync records in head.db, see vfs.head.unsynced)."""
        with self._sync_lock:
            started, snapshot = self._take_written()
            inos = sorted(snapshot[0])
            try:
                for ino in inos:
                    _fsync_path(self.sum_path(ino))
                for ino in inos:
                    _fsync_path(self.path(ino))
                fsync_dir(self.dir)
            except OSError as exc:
                self._put_back(snapshot)
                raise translate(exc, self.dir) from None
            except BaseException:
                self._put_back(snapshot)
                raise
        return started

    def sync_files(self) -> None:
        """fsync every overlay file, also those of earlier sessions (at open: a later sync of
        the database must not make their sizes durable before their bytes); sums first."""
        paths = sorted(self.dir.iterdir(), key=lambda p: not p.name.endswith(".sum"))
        for path in paths:
            _fsync_path(path)
        fsync_dir(self.dir)


def mark_blocks(marks: bytearray, first: int, last: int) -> bytes:
    """Set the bits of blocks first..last in `marks`; returns, per block, 1 if it was set."""
    need = last // 8 + 1
    if len(marks) < need:
        marks += bytes(need - len(marks))
    seen = bytes(marks[b >> 3] >> (b & 7) & 1 for b in range(first, last + 1))
    for b in range(first, last + 1):
        marks[b >> 3] |= 1 << (b & 7)
    return seen


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syncfs.argtypes = [ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def _fsync_path(path: Path) -> None:
    """fsync a file by name; a file that is gone needs nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def translate(exc: OSError, where: Path) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return no_space(where)
    return exc
