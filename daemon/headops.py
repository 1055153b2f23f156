"""The FUSE side of @head: request arguments in, `vfs.head.fs` calls out.

Owns: the gate that pauses @head's mutations while a commit or reset runs (reads go on), head
file handles, and running @head reads in worker threads. @head's connection
(`daemon.headfuse`, whose handlers are all `daemon.guard.guarded`) calls it.
Runs in the trio thread.

Locks (the whole order is in `vfs.lockorder`): the gate, then a file's trio lock (writes and
size changes of one file run one at a time, in order), then the threading locks of `vfs.head`.
The trio thread never waits for a file's threading lock: it tries it, and when a worker holds
it (a read in the middle of disk I/O) the step goes to a worker thread instead.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

import trio

from daemon.fuse import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    EntryAttributes,
    RequestContext,
    SetattrFields,
)
from vfs.head.commit import CommitResult, commit
from vfs.head.fs import HeadFileHandle, HeadFS
from vfs.head.session import HeadSession
from vfs.head.status import status_report
from vfs.inodes import from_head, to_head
from vfs.model import Version
from vfs.view import Attr

T = TypeVar("T")

INLINE_WRITE = 128 << 10
"""Writes up to this size run on the trio thread; bigger ones in a worker thread."""


class Gate:
    """Mutations of @head pass it shared; a commit or reset holds it alone (reads never wait).
    A waiting commit stops new mutations from entering, then waits for those inside."""

    def __init__(self) -> None:
        self._door = trio.Lock()
        self._inside = 0
        self._empty = trio.Event()
        self._empty.set()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._door:
            self._inside += 1
            if self._inside == 1:
                self._empty = trio.Event()
        try:
            yield
        finally:
            self._inside -= 1
            if self._inside == 0:
                self._empty.set()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._door:
            await self._empty.wait()
            yield

    def busy(self) -> bool:
        return self._door.locked() or self._inside > 0


def mount_attr(attr: Attr) -> Attr:
    return replace(attr, ino=to_head(attr.ino))


class HeadAdapter:
    """@head's handlers. Inode arguments are mount inodes; results carry mount inodes."""

    def __init__(self, session: HeadSession) -> None:
        self.session = session
        self.gate = Gate()
        self.kernel_appends = False
        self.sync_on_close = False
        """--sync-on-close: close() returns once the file's writes are on disk."""
        """True with the kernel's writeback cache: it places O_APPEND writes itself."""
        self.write_limiter = trio.CapacityLimiter(4)
        self.read_limiter = trio.CapacityLimiter(4)
        self.files: dict[int, HeadFileHandle] = {}
        self._changing: dict[int, tuple[trio.Lock, list[int]]] = {}
        """Per-file trio locks of writes and size changes (with their user counts)."""

    @property
    def fs(self) -> HeadFS:
        return self.session.fs

    # -- names ---------------------------------------------------------------------------------

    def root_attr(self) -> Attr:
        return mount_attr(self.fs.getattr(from_head(to_head(1))))

    def lookup(self, parent: int, name: bytes) -> Attr:
        ino, attr = self.fs.lookup(from_head(parent), name)
        self.fs.remember(ino)
        return mount_attr(attr)

    def remember(self, ino: int, count: int = 1) -> None:
        self.fs.remember(from_head(ino), count)

    def forget(self, ino: int, count: int) -> None:
        self.fs.forget(from_head(ino), count)

    def getattr(self, ino: int) -> Attr:
        return mount_attr(self.fs.getattr(from_head(ino)))

    def readlink(self, ino: int) -> bytes:
        return self.fs.readlink(from_head(ino))

    async def setattr(self, ino: int, attr: EntryAttributes,
                      fields: SetattrFields) -> Attr:
        mode = attr.st_mode if fields.update_mode else None
        uid = attr.st_uid if fields.update_uid else None
        gid = attr.st_gid if fields.update_gid else None
        mtime_ns = attr.st_mtime_ns if fields.update_mtime else None
        atime_ns = attr.st_atime_ns if fields.update_atime else None
        async with self.gate.shared():
            if not fields.update_size:
                return mount_attr(self.fs.setattr(from_head(ino), mode=mode, uid=uid, gid=gid,
                                                  mtime_ns=mtime_ns, atime_ns=atime_ns))
            return mount_attr(await self._truncate(from_head(ino), attr.st_size, mode=mode,
                                                   uid=uid, gid=gid, mtime_ns=mtime_ns,
                                                   atime_ns=atime_ns))

    async def _truncate(self, ino: int, size: int, *, mode: int | None = None,
                        uid: int | None = None, gid: int | None = None,
                        mtime_ns: int | None = None, atime_ns: int | None = None) -> Attr:
        """A size change: the node is stored here, then the overlay is cut and the size
        recorded together under the file's lock (here if free, else in a worker)."""
        async with self._changing_file(ino):
            self.fs.prepare_truncate(ino)
            return await self._file_locked(ino, True, partial(
                self.fs.setattr, ino, mode=mode, uid=uid, gid=gid, size=size,
                mtime_ns=mtime_ns, atime_ns=atime_ns))

    @asynccontextmanager
    async def _changing_file(self, ino: int) -> AsyncIterator[None]:
        entry = self._changing.get(ino)
        if entry is None:
            entry = self._changing[ino] = (trio.Lock(), [0])
        entry[1][0] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1][0] -= 1
            if not entry[1][0]:
                del self._changing[ino]

    async def _file_locked(self, ino: int, inline: bool, fn: Callable[..., T], *args: Any
                           ) -> T:
        # `fn` may run in a worker: it may touch only the file's overlay and @head's database
        # (which has its own lock), never HeadFS's in-memory tables of names
        """Run `fn` (which takes the file's lock itself) without the trio thread ever
        waiting for that lock: here when `inline` and the lock is free, else in a worker."""
        locks = self.fs.file_locks
        if inline and locks.acquire(ino, blocking=False):
            try:
                return fn(*args)
            finally:
                locks.release(ino)
        return await trio.to_thread.run_sync(fn, *args, limiter=self.write_limiter)

    async def create_node(self, kind: str, parent: int, name: bytes, mode: int,
                          ctx: RequestContext, target: bytes = b"", rdev: int = 0
                          ) -> Attr:
        async with self.gate.shared():
            p = from_head(parent)
            if kind == "mkdir":
                ino, attr = self.fs.mkdir(p, name, mode, ctx.uid, ctx.gid)
            elif kind == "symlink":
                ino, attr = self.fs.symlink(p, name, target, ctx.uid, ctx.gid)
            else:
                ino, attr = self.fs.mknod(p, name, mode, ctx.uid, ctx.gid, rdev)
            self.fs.remember(ino)
            return mount_attr(attr)

    async def create(self, parent: int, name: bytes, mode: int, flags: int,
                     ctx: RequestContext) -> tuple[int, Attr]:
        async with self.gate.shared():
            ino, attr = self.fs.create(from_head(parent), name, mode, ctx.uid, ctx.gid)
            self.fs.remember(ino)
            handle = self.fs.open(ino, writable=True, truncate=False,
                                  append=self._append(flags))
            return self._add_file(handle), mount_attr(attr)

    async def link(self, ino: int, parent: int, name: bytes) -> Attr:
        async with self.gate.shared():
            attr = self.fs.link(from_head(ino), from_head(parent), name)
            self.fs.remember(from_head(ino))
            return mount_attr(attr)

    async def unlink(self, parent: int, name: bytes) -> None:
        async with self.gate.shared():
            self.fs.unlink(from_head(parent), name)

    async def rmdir(self, parent: int, name: bytes) -> None:
        async with self.gate.shared():
            self.fs.rmdir(from_head(parent), name)

    async def rename(self, p1: int, n1: bytes, p2: int, n2: bytes, flags: int) -> None:
        async with self.gate.shared():
            self.fs.rename(from_head(p1), n1, from_head(p2), n2,
                           noreplace=bool(flags & RENAME_NOREPLACE),
                           exchange=bool(flags & RENAME_EXCHANGE))

    async def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        async with self.gate.shared():
            self.fs.setxattr(from_head(ino), name, value)

    async def removexattr(self, ino: int, name: bytes) -> None:
        async with self.gate.shared():
            self.fs.removexattr(from_head(ino), name)

    def listxattr(self, ino: int) -> list[bytes]:
        return self.fs.listxattr(from_head(ino))

    def getxattr(self, ino: int, name: bytes) -> bytes:
        return self.fs.getxattr(from_head(ino), name)

    # -- files ---------------------------------------------------------------------------------

    def _append(self, flags: int) -> bool:
        return bool(flags & os.O_APPEND) and not self.kernel_appends

    def _add_file(self, handle: HeadFileHandle) -> int:
        fh = _next_fh()
        self.files[fh] = handle
        return fh

    async def open(self, ino: int, flags: int) -> int:
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        truncate = bool(flags & os.O_TRUNC)
        if writable or truncate:
            async with self.gate.shared():
                handle = self.fs.open(from_head(ino), writable, False, self._append(flags))
                try:
                    if truncate and writable:
                        await self._truncate(handle.ino, 0)
                except BaseException:
                    self.fs.release(handle)
                    raise
        else:
            handle = self.fs.open(from_head(ino), False, False, False)
        return self._add_file(handle)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self.files[fh]
        node = self.fs.node(handle.ino)
        return await trio.to_thread.run_sync(self.fs.read, node, offset, size,
                                             limiter=self.read_limiter)

    async def sync_database(self) -> None:
        """fsync of a directory: @head's names and attributes reach the disk."""
        await trio.to_thread.run_sync(self.fs.db.sync)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self.files[fh]
        async with self.gate.shared(), self._changing_file(handle.ino):
            handle.wrote = True
            node, offset = self.fs.prepare_write(handle, offset)
            # small writes here when the file's lock is free: cheaper than a thread hand-off
            copied = await self._file_locked(handle.ino, len(data) <= INLINE_WRITE,
                                             self.fs.write_data, node, offset, data)
            self.fs.finish_write(handle.ino, offset, len(data), copied)
            return len(data)

    async def release(self, fh: int) -> None:
        handle = self.files.pop(fh, None)
        if handle is None:
            return
        async with self.gate.shared():
            self.fs.release(handle)
            if not self.fs.open_count.get(handle.ino):
                # one descriptor pair per open file, not per file ever written
                self.fs.overlays.close_file(handle.ino)

    async def flush(self, fh: int) -> None:
        handle = self.files.get(fh)
        if handle is not None and handle.wrote and self.sync_on_close:
            await trio.to_thread.run_sync(self.fs.fsync, handle.ino)
            handle.wrote = False

    async def fsync(self, fh: int) -> None:
        handle = self.files.get(fh)
        if handle is not None:
            await trio.to_thread.run_sync(self.fs.fsync, handle.ino)

    # -- control requests ----------------------------------------------------------------------

    async def commit(self, message: str, tag: str | None, allow_empty: bool) -> CommitResult:
        async with self.gate.exclusive():
            try:
                return await trio.to_thread.run_sync(commit, self.fs, message, tag, allow_empty)
            finally:
                self.fs.overlays.close_all_but(self.fs.open_count)

    async def status_report(self) -> dict[str, Any]:
        async with self.gate.exclusive():
            try:
                return await trio.to_thread.run_sync(status_report, self.fs)
            finally:
                self.fs.overlays.close_all_but(self.fs.open_count)

    async def reset(self) -> Version:
        async with self.gate.exclusive():
            self.files.clear()
            # a worker: the discard waits for reads of the overlays still running
            return await trio.to_thread.run_sync(self.session.reset)

    async def sync_now(self) -> None:
        """Make @head durable (overlays, then its database), as fsync would; run periodically
        so a power cut loses at most that period of unsynced work."""
        async with self.gate.exclusive():
            await trio.to_thread.run_sync(self.fs.sync_all, True)

    def follow_latest(self) -> bool:
        if self.gate.busy() or self.files:
            return False
        return self.session.follow_latest()


_fh_counter = iter(range(1 << 40, 1 << 62))


def _next_fh() -> int:
    """Head file handles: their own range, apart from the read-only views' handles."""
    return next(_fh_counter)


__all__ = ["HeadAdapter", "mount_attr"]
