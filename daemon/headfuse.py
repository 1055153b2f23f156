"""The @head connection: FUSE requests for the writable `MNT/@head`, answered by
`daemon.headops.HeadAdapter`.

@head has its own FUSE connection, mounted on the `@head` directory of the versions mount,
because it needs what the versions connection switches off for speed: an OPEN and a RELEASE
for every open file (handles with their own state: append mode, whether they wrote, the open
count that keeps an unlinked file's data), FLUSH for `--sync-on-close`, and dropping cached
pages when a file is opened. The connection's root (inode 1) is @head's root directory; every
other inode is @head's mount inode (`vfs.inodes.to_head`). Runs in the trio thread.
"""

from __future__ import annotations

import errno
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
    readdir_reply,
)
from daemon.guard import guarded
from daemon.headops import HeadAdapter, mount_attr
from daemon.ops import entry_attributes, negative_entry, statfs_of
from vfs.errors import NoEntry
from vfs.head.fs import HEAD_TIMEOUT, HeadDirHandle
from vfs.head.state import HEAD_ROOT
from vfs.inodes import ROOT_INO, from_head, to_head
from vfs.view import Attr, VersionsView

HEAD_ROOT_INO = to_head(HEAD_ROOT)
_own_root = True
"""Whether @head is a connection of its own, whose root (inode 1) is @head's root; False in
a shared connection (daemon.combined), where inodes pass unchanged."""


def _in(ino: int) -> int:
    """A connection inode as @head's mount inode."""
    return HEAD_ROOT_INO if ino == ROOT_INO and _own_root else ino


def _out(attr: Attr) -> EntryAttributes:
    a = entry_attributes(attr)
    if a.st_ino == HEAD_ROOT_INO and _own_root:
        a.st_ino = ROOT_INO
    return a


def share_connection() -> None:
    """@head's handlers serve inside the versions' connection (daemon.combined)."""
    global _own_root
    _own_root = False


class HeadOperations:
    """Handlers of @head's connection."""

    def __init__(self, head: HeadAdapter, view: VersionsView, serve_xattrs: bool) -> None:
        self.head = head
        self.view = view
        self.serve_xattrs = serve_xattrs
        self._dirs: dict[int, HeadDirHandle] = {}
        self._next_dh = 1

    def describe(self, op: str, args: Sequence[Any]) -> str:
        return f"@head ({op})"

    # -- names and attributes --------------------------------------------------------------

    @guarded
    def lookup(self, parent: int, name: bytes, ctx: RequestContext) -> EntryAttributes:
        try:
            return _out(self.head.lookup(_in(parent), name))
        except NoEntry:
            # every change to @head passes through the kernel, which drops cached negative
            # entries itself when a name appears: let it cache them
            return negative_entry(HEAD_TIMEOUT)

    @guarded
    def forget(self, inodes: Sequence[tuple[int, int]]) -> None:
        for ino, count in inodes:
            if ino != ROOT_INO or not _own_root:
                self.head.forget(ino, count)

    @guarded
    def getattr(self, ino: int, ctx: RequestContext) -> EntryAttributes:
        return _out(self.head.getattr(_in(ino)))

    @guarded
    async def setattr(self, ino: int, attr: EntryAttributes, fields: SetattrFields,
                      fh: int | None, ctx: RequestContext) -> EntryAttributes:
        return _out(await self.head.setattr(_in(ino), attr, fields))

    @guarded
    def readlink(self, ino: int, ctx: RequestContext) -> bytes:
        return self.head.readlink(_in(ino))

    # -- changing names ----------------------------------------------------------------------

    @guarded
    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int,
                    ctx: RequestContext) -> EntryAttributes:
        return _out(await self.head.create_node("mknod", _in(parent), name, mode, ctx,
                                                rdev=rdev))

    @guarded
    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: RequestContext
                    ) -> EntryAttributes:
        return _out(await self.head.create_node("mkdir", _in(parent), name, mode, ctx))

    @guarded
    async def symlink(self, parent: int, name: bytes, target: bytes, ctx: RequestContext
                      ) -> EntryAttributes:
        return _out(await self.head.create_node("symlink", _in(parent), name, 0, ctx, target))

    @guarded
    async def unlink(self, parent: int, name: bytes, ctx: RequestContext) -> None:
        await self.head.unlink(_in(parent), name)

    @guarded
    async def rmdir(self, parent: int, name: bytes, ctx: RequestContext) -> None:
        await self.head.rmdir(_in(parent), name)

    @guarded
    async def rename(self, p1: int, n1: bytes, p2: int, n2: bytes, flags: int,
                     ctx: RequestContext) -> None:
        await self.head.rename(_in(p1), n1, _in(p2), n2, flags)

    @guarded
    async def link(self, ino: int, parent: int, name: bytes, ctx: RequestContext
                   ) -> EntryAttributes:
        return _out(await self.head.link(_in(ino), _in(parent), name))

    # -- directories -------------------------------------------------------------------------

    @guarded
    def opendir(self, ino: int, ctx: RequestContext) -> int:
        dh = self._next_dh
        self._next_dh += 1
        self._dirs[dh] = self.head.fs.opendir(from_head(_in(ino)))
        return dh

    @guarded
    def readdir(self, ino: int, fh: int, start_id: int, token: ReaddirToken) -> None:
        handle = self._dirs[fh]
        fs = self.head.fs
        for name, local, attr, next_id in fs.readdir(handle, start_id):
            if not readdir_reply(token, name, _out(mount_attr(attr)), next_id):
                return
            if token.plus:
                fs.remember(local)

    @guarded
    def releasedir(self, ino: int, fh: int) -> None:
        self._dirs.pop(fh, None)

    @guarded
    async def fsyncdir(self, ino: int, fh: int, datasync: bool) -> None:
        await self.head.sync_database()

    # -- files -------------------------------------------------------------------------------

    @guarded
    async def open(self, ino: int, flags: int, ctx: RequestContext) -> FileInfo:
        return FileInfo(fh=await self.head.open(_in(ino), flags), keep_cache=False)

    @guarded
    async def create(self, parent: int, name: bytes, mode: int, flags: int,
                     ctx: RequestContext) -> tuple[FileInfo, EntryAttributes]:
        fh, attr = await self.head.create(_in(parent), name, mode, flags, ctx)
        return FileInfo(fh=fh, keep_cache=False), _out(attr)

    @guarded
    async def read(self, ino: int, fh: int, off: int, size: int) -> bytes:
        return await self.head.read(fh, off, size)

    @guarded
    async def write(self, ino: int, fh: int, off: int, data: bytes) -> int:
        return await self.head.write(fh, off, data)

    @guarded
    async def flush(self, ino: int, fh: int) -> None:
        await self.head.flush(fh)

    @guarded
    async def release(self, ino: int, fh: int) -> None:
        await self.head.release(fh)

    @guarded
    async def fsync(self, ino: int, fh: int, datasync: bool) -> None:
        await self.head.fsync(fh)

    # -- xattrs, statfs ----------------------------------------------------------------------

    def _xattrs_served(self) -> None:
        if not self.serve_xattrs:
            raise FUSEError(errno.ENOSYS)

    @guarded
    def listxattr(self, ino: int, ctx: RequestContext) -> list[bytes]:
        self._xattrs_served()
        return self.head.listxattr(_in(ino))

    @guarded
    def getxattr(self, ino: int, name: bytes, ctx: RequestContext) -> bytes:
        self._xattrs_served()
        return self.head.getxattr(_in(ino), name)

    @guarded
    async def setxattr(self, ino: int, name: bytes, value: bytes, ctx: RequestContext
                       ) -> None:
        if not self.serve_xattrs:
            raise FUSEError(errno.EOPNOTSUPP)
        await self.head.setxattr(_in(ino), name, value)

    @guarded
    async def removexattr(self, ino: int, name: bytes, ctx: RequestContext) -> None:
        if not self.serve_xattrs:
            raise FUSEError(errno.EOPNOTSUPP)
        await self.head.removexattr(_in(ino), name)

    @guarded
    def statfs(self, ctx: RequestContext) -> StatvfsData:
        return statfs_of(self.view)


__all__ = ["HeadOperations"]
