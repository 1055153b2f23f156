"""The versions and @head in ONE connection: how a user other than root mounts.

`fusermount3` (setuid root) cannot mount @head's own connection inside the versions' one: the
kernel lets only the mounting user into a FUSE mount without `allow_other`, and fusermount3
runs as root. So a non-root mount serves everything from one read-write connection: requests
go to the versions' handlers (daemon.ops) or @head's (daemon.headfuse) by inode, OPEN and
OPENDIR are answered for versions too (a handle of 0, pages kept across opens), and a version
refuses changes itself (EROFS; EXDEV between @head and a version). Correct, but each open of a
version file costs the requests the root mount saves (README "Performance").
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Any

from daemon.fuse import (
    EntryAttributes,
    FileInfo,
    FUSEError,
    ReaddirToken,
    RequestContext,
    SetattrFields,
    StatvfsData,
)
from daemon.headfuse import HEAD_ROOT_INO, HeadOperations, share_connection
from daemon.ops import HEAD_NAME, Operations
from vfs.inodes import ROOT_INO, is_head

Maybe = Any
"""A value, or a coroutine that returns it (daemon.guard)."""


class CombinedOperations:
    """Routes each request to the versions' or @head's handlers."""

    def __init__(self, versions: Operations, head: HeadOperations) -> None:
        share_connection()
        self.versions = versions
        self.head = head
        versions.head_mounted.set()  # @head is served here from the start

    def _writable(self, *inodes: int) -> HeadOperations:
        inside = [is_head(i) for i in inodes]
        if all(inside):
            return self.head
        raise FUSEError(errno.EXDEV if any(inside) else errno.EROFS)

    def describe(self, op: str, args: Sequence[Any]) -> str:
        return self.versions.describe(op, args)

    # -- names and attributes --------------------------------------------------------------

    def lookup(self, parent: int, name: bytes, ctx: RequestContext) -> Maybe:
        if parent == ROOT_INO and name == HEAD_NAME:
            self.head.head.remember(HEAD_ROOT_INO)
            return self.head.getattr(HEAD_ROOT_INO, ctx)
        if is_head(parent):
            return self.head.lookup(parent, name, ctx)
        return self.versions.lookup(parent, name, ctx)

    def forget(self, inodes: Sequence[tuple[int, int]]) -> None:
        self.head.forget([(i, n) for i, n in inodes if is_head(i)])
        self.versions.forget([(i, n) for i, n in inodes if not is_head(i)])

    def getattr(self, ino: int, ctx: RequestContext) -> Maybe:
        return (self.head if is_head(ino) else self.versions).getattr(ino, ctx)

    def setattr(self, ino: int, attr: EntryAttributes, fields: SetattrFields,
                fh: int | None, ctx: RequestContext) -> Maybe:
        return self._writable(ino).setattr(ino, attr, fields, fh, ctx)

    def readlink(self, ino: int, ctx: RequestContext) -> Maybe:
        return (self.head if is_head(ino) else self.versions).readlink(ino, ctx)

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int,
              ctx: RequestContext) -> Maybe:
        return self._writable(parent).mknod(parent, name, mode, rdev, ctx)

    def mkdir(self, parent: int, name: bytes, mode: int, ctx: RequestContext) -> Maybe:
        return self._writable(parent).mkdir(parent, name, mode, ctx)

    def symlink(self, parent: int, name: bytes, target: bytes, ctx: RequestContext) -> Maybe:
        return self._writable(parent).symlink(parent, name, target, ctx)

    def unlink(self, parent: int, name: bytes, ctx: RequestContext) -> Maybe:
        return self._writable(parent).unlink(parent, name, ctx)

    def rmdir(self, parent: int, name: bytes, ctx: RequestContext) -> Maybe:
        return self._writable(parent).rmdir(parent, name, ctx)

    def rename(self, p1: int, n1: bytes, p2: int, n2: bytes, flags: int,
               ctx: RequestContext) -> Maybe:
        return self._writable(p1, p2).rename(p1, n1, p2, n2, flags, ctx)

    def link(self, ino: int, parent: int, name: bytes, ctx: RequestContext) -> Maybe:
        return self._writable(ino, parent).link(ino, parent, name, ctx)

    # -- directories -------------------------------------------------------------------------

    def opendir(self, ino: int, ctx: RequestContext) -> Maybe:
        return self.head.opendir(ino, ctx) if is_head(ino) else 0

    def readdir(self, ino: int, fh: int, start_id: int, token: ReaddirToken) -> Maybe:
        if is_head(ino):
            return self.head.readdir(ino, fh, start_id, token)
        if ino == ROOT_INO and start_id == 0 and token.plus:
            self.head.head.remember(HEAD_ROOT_INO)  # the root lists @head first
        return self.versions.readdir(ino, fh, start_id, token)

    def releasedir(self, ino: int, fh: int) -> Maybe:
        return self.head.releasedir(ino, fh) if is_head(ino) else None

    def fsyncdir(self, ino: int, fh: int, datasync: bool) -> Maybe:
        return self.head.fsyncdir(ino, fh, datasync) if is_head(ino) else None

    # -- files -------------------------------------------------------------------------------

    def open(self, ino: int, flags: int, ctx: RequestContext) -> Maybe:
        if is_head(ino):
            return self.head.open(ino, flags, ctx)
        if (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC:
            raise FUSEError(errno.EROFS)
        return FileInfo(fh=0, keep_cache=True)

    def create(self, parent: int, name: bytes, mode: int, flags: int,
               ctx: RequestContext) -> Maybe:
        return self._writable(parent).create(parent, name, mode, flags, ctx)

    def read(self, ino: int, fh: int, off: int, size: int) -> Maybe:
        return (self.head if is_head(ino) else self.versions).read(ino, fh, off, size)

    def write(self, ino: int, fh: int, off: int, data: bytes) -> Maybe:
        return self._writable(ino).write(ino, fh, off, data)

    def flush(self, ino: int, fh: int) -> Maybe:
        return self.head.flush(ino, fh) if is_head(ino) else None

    def release(self, ino: int, fh: int) -> Maybe:
        return self.head.release(ino, fh) if is_head(ino) else None

    def fsync(self, ino: int, fh: int, datasync: bool) -> Maybe:
        return self.head.fsync(ino, fh, datasync) if is_head(ino) else None

    # -- xattrs, statfs ----------------------------------------------------------------------

    def listxattr(self, ino: int, ctx: RequestContext) -> Maybe:
        return (self.head if is_head(ino) else self.versions).listxattr(ino, ctx)

    def getxattr(self, ino: int, name: bytes, ctx: RequestContext) -> Maybe:
        return (self.head if is_head(ino) else self.versions).getxattr(ino, name, ctx)

    def setxattr(self, ino: int, name: bytes, value: bytes, ctx: RequestContext) -> Maybe:
        return self._writable(ino).setxattr(ino, name, value, ctx)

    def removexattr(self, ino: int, name: bytes, ctx: RequestContext) -> Maybe:
        return self._writable(ino).removexattr(ino, name, ctx)

    def statfs(self, ctx: RequestContext) -> StatvfsData:
        return self.versions.statfs(ctx)


__all__ = ["CombinedOperations"]
