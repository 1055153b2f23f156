"""The data path of @head files: reading, writing and cutting their bytes, under per-file locks.

Owns: `FileLocks` (one lock per @head file) and the `HeadData` part of `vfs.head.fs.HeadFS`:
everything that touches a file's overlay bytes or its base content. Never imports: daemon, trio,
pyfuse3. Threads: these methods may run in worker threads; each takes the file's lock (rank FILE
in `vfs.lockorder`) before @head's database lock, never while holding it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vfs.errors import CorruptData
from vfs.head.overlay import Overlays
from vfs.head.state import HeadDB, HNode
from vfs.lockorder import OrderedLock, Rank
from vfs.model import ChunkSpan, ContentRef
from vfs.store import Store


@dataclass(slots=True, eq=False)
class _FileLock:
    lock: OrderedLock
    users: int = 0
    """Threads holding or waiting for it."""


class FileLocks:
    """One re-entrant lock per @head file (rank FILE in `vfs.lockorder`), made on first use and
    dropped when no thread holds or waits for it: two files never share a lock, so a read of
    one never waits for a truncate of another. Any thread."""

    def __init__(self) -> None:
        self._locks: dict[int, _FileLock] = {}
        self._guard = threading.Lock()
        """A leaf: held only to find or count a file's lock, never while taking one."""

    def acquire(self, ino: int, blocking: bool = True) -> bool:
        with self._guard:
            entry = self._locks.get(ino)
            if entry is None:
                entry = self._locks[ino] = _FileLock(
                    OrderedLock(Rank.FILE, f"file lock of @head inode {ino}", reentrant=True))
            entry.users += 1
        try:
            got = entry.lock.acquire(blocking)
        except BaseException:
            self._unref(ino)
            raise
        if not got:
            self._unref(ino)
        return got

    def release(self, ino: int) -> None:
        with self._guard:
            entry = self._locks[ino]
        entry.lock.release()
        self._unref(ino)

    def _unref(self, ino: int) -> None:
        with self._guard:
            entry = self._locks[ino]
            entry.users -= 1
            if entry.users == 0:
                del self._locks[ino]

    @contextmanager
    def held(self, ino: int) -> Iterator[None]:
        self.acquire(ino)
        try:
            yield
        finally:
            self.release(ino)

    def __len__(self) -> int:
        return len(self._locks)


class HeadData:
    """The data half of HeadFS (a mixin: HeadFS sets these attributes)."""

    store: Store
    db: HeadDB
    overlays: Overlays
    file_locks: FileLocks

    def path_of(self, ino: int) -> str:
        raise NotImplementedError

    def _allocated(self, n: HNode) -> int:
        """Bytes of a file holding data (what st_blocks counts): the base's data below
        base_len plus what the overlay file holds (an overlap counts twice, capped at size)."""
        base = 0
        if n.base_len > 0:
            ref = _content(n.base)
            if n.base_len >= n.base_size:
                base = self.store.contents.allocated(ref, n.base_size)
            else:
                base = _data_below(self.store.contents.spans(ref, n.base_size), n.base_len)
        written = 0
        if self.db.node(n.ino) is not None:  # only a stored node has an overlay file
            try:
                written = os.stat(self.overlays.path(n.ino)).st_blocks * 512
            except FileNotFoundError:
                written = 0
        return min(base + written, n.size)

    def truncate_data(self, ino: int, size: int) -> None:
        """Cut the overlay of a stored file at `size` (any thread; takes the file's lock)."""
        with self.file_locks.held(ino):
            self.overlays.truncate(ino, size)

    def read(self, n: HNode, offset: int, length: int) -> bytes:
        """Bytes of a file node (any thread; `n` is a snapshot taken by the caller)."""
        end = min(offset + length, n.size)
        if offset >= end:
            return b""
        if self.db.node(n.ino) is None:  # never written: straight from the base
            return self.store.contents.read(_content(n.base), n.base_size, offset, end - offset)
        try:
            with self.file_locks.held(n.ino):
                n = self.db.node(n.ino) or n  # a commit may have rebased it meanwhile
                return self._read_locked(n, offset, min(end, n.size))
        except CorruptData as exc:
            raise CorruptData(f"{self.path_of(n.ino)}: {exc}") from None

    def read_into(self, n: HNode, view: memoryview, offset: int) -> int:
        """Fill `view` with the file's bytes at `offset` (any thread); the count read. Written
        bytes go straight into `view` (commit reads every changed file this way)."""
        with self.file_locks.held(n.ino):
            n = self.db.node(n.ino) or n
            end = min(offset + len(view), n.size)
            if offset >= end:
                return 0
            pos = offset
            for a, b in self.overlays.data_ranges(n.ino, offset, end):
                if a > pos:
                    view[pos - offset:a - offset] = self._base_or_zeros(n, pos, a)
                self.overlays.read_into(n.ino, view[a - offset:b - offset], a)
                pos = b
            if pos < end:
                view[pos - offset:end - offset] = self._base_or_zeros(n, pos, end)
        return end - offset

    def _read_locked(self, n: HNode, offset: int, end: int) -> bytes:
        pieces: list[bytes] = []
        pos = offset
        for a, b in self.overlays.data_ranges(n.ino, offset, end):
            if a > pos:
                pieces.append(self._base_or_zeros(n, pos, a))
            pieces.append(self.overlays.pread(n.ino, a, b - a))
            pos = b
        if pos < end:
            pieces.append(self._base_or_zeros(n, pos, end))
        return b"".join(pieces)

    def _base_or_zeros(self, n: HNode, start: int, end: int) -> bytes:
        visible = min(end, n.base_len)
        data = b""
        if start < visible:
            data = self.store.contents.read(_content(n.base), n.base_size, start, visible - start)
        return data + bytes(end - start - len(data))

    def write_data(self, n: HNode, offset: int, data: bytes) -> bool:
        """Put the bytes into the overlay (any thread; takes the file's lock). Returns whether
        the file's whole content was copied up first (without exact hole reporting), which
        `finish_write` then records."""
        with self.file_locks.held(n.ino):
            current = self.db.node(n.ino) or n
            copied = False
            if self.overlays.whole_copy and current.base_len > 0:
                self.overlays.copy_whole(n.ino, current.size,
                                         lambda o, k: self._read_locked(current, o, o + k))
                copied = True
            self.overlays.write(n.ino, offset, data, current.size,
                                lambda o, k: self._read_locked(current, o, o + k))
            return copied

    def fsync(self, ino: int) -> None:
        """Everything written to @head so far is durable once this returns. All overlays are
        synced before the database: a size that survives a power cut never describes bytes
        that did not."""
        self.sync_all()

    def sync_all(self, checkpoint: bool = False) -> None:
        started = self.overlays.sync_all()
        self.db.sync(checkpoint, synced_from=started)


def _data_below(spans: list[ChunkSpan], end: int) -> int:
    """Bytes of data (not holes) in the first `end` bytes of a chunk list."""
    total = pos = 0
    for span in spans:
        if pos >= end:
            break
        if span.cid is not None:
            total += min(span.length, end - pos)
        pos += span.length
    return total


def _content(base: bytes) -> ContentRef:
    return ContentRef(base)
