"""The FUSE adapter: pyfuse3 requests in, `vfs.view` calls out. No storage logic lives here.

Owns: translating between pyfuse3's types and the view's, file and directory handles, running
blocking reads in worker threads, and making sure no exception escapes a handler (it would kill
pyfuse3's main loop): domain errors become their errno (daemon.errors), anything else is logged
with its traceback and becomes EIO. Runs in the trio thread.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3
import trio

from daemon.errors import errno_for
from daemon.headops import HeadAdapter, mount_attr
from vfs.errors import CorruptData, DsfsError, NoEntry
from vfs.head.fs import HEAD_TIMEOUT, HeadDirHandle
from vfs.head.state import HEAD_ROOT
from vfs.ids import ChunkId
from vfs.inodes import ROOT_INO, from_head, is_head, to_head
from vfs.view import Attr, DirHandle, FileHandle, VersionsView

log = logging.getLogger("dsfs.mount")
T = TypeVar("T")
P = ParamSpec("P")
Handler = Callable[Concatenate["Operations", P], Coroutine[Any, Any, T]]
NEGATIVE_TIMEOUT = 24 * 3600.0
FILE_HANDLE_OPS = frozenset({"read", "write", "release", "flush", "fsync"})
DIR_HANDLE_OPS = frozenset({"readdir", "releasedir", "fsyncdir"})
"""Handlers whose first argument is a file or directory handle, not an inode."""
PREFETCH_BYTES = 8 << 20


def guarded(fn: Handler[P, T]) -> Handler[P, T]:
    """Every handler: FUSEError passes, domain errors map to errno, bugs log and become EIO."""

    @functools.wraps(fn)
    async def wrapper(self: Operations, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except CorruptData as exc:
            log.error("damaged data in %s: %s", self.describe(fn.__name__, args), exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except DsfsError as exc:
            raise pyfuse3.FUSEError(errno_for(exc)) from None
        except OSError as exc:
            log.warning("%s failed: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(errno_for(exc)) from None
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def entry_attributes(attr: Attr) -> pyfuse3.EntryAttributes:
    a = pyfuse3.EntryAttributes()
    a.st_ino = pyfuse3.InodeT(attr.ino)
    a.st_mode = pyfuse3.ModeT(attr.mode)
    a.st_nlink = attr.nlink
    a.st_uid = attr.uid
    a.st_gid = attr.gid
    a.st_size = attr.size
    a.st_blksize = 1 << 20
    a.st_blocks = attr.blocks
    a.st_mtime_ns = attr.mtime_ns
    a.st_ctime_ns = attr.ctime_ns
    a.st_atime_ns = attr.mtime_ns if attr.atime_ns is None else attr.atime_ns
    a.st_rdev = attr.rdev
    a.entry_timeout = attr.timeout
    a.attr_timeout = attr.timeout
    return a


class Operations(pyfuse3.Operations):
    """pyfuse3 handlers over a VersionsView."""

    def __init__(self, view: VersionsView, read_threads: int = 4,
                 serve_xattrs: bool = True) -> None:
        super().__init__()
        self.view = view
        self.serve_xattrs = serve_xattrs
        # With xattrs served, the kernel caches POSIX ACL lookups per inode (FUSE_POSIX_ACL), so
        # `ls -l` asks the daemon once per file for the ACL, not on every listing.
        self.enable_acl = serve_xattrs
        self.head: HeadAdapter | None = None
        self._dirs: dict[int, DirHandle | HeadDirHandle] = {}
        self._files: dict[int, FileHandle] = {}
        self._next_fh = 1
        self._limiter = trio.CapacityLimiter(read_threads)
        self._prefetching: set[bytes] = set()
        self.nursery: trio.Nursery | None = None

    def describe(self, op: str, args: Sequence[Any]) -> str:
        """The path a failed request was about, for the log (else the handler's name)."""
        if not args or not isinstance(args[0], int):
            return op
        first = args[0]
        if op in FILE_HANDLE_OPS:
            fh = self._files.get(first)
            return self.view.path_of(fh.node) if fh is not None else op
        if op in DIR_HANDLE_OPS:
            dh = self._dirs.get(first)
            return self.view.path_of(dh.node) if isinstance(dh, DirHandle) else op
        if is_head(first):
            return op
        try:
            return self.view.path_of(self.view.node(first))
        except DsfsError:
            return op

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    # -- names and attributes --------------------------------------------------------------

    @guarded
    async def lookup(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if self.head is not None:
            if is_head(parent_inode):
                try:
                    return entry_attributes(self.head.lookup(parent_inode, name))
                except NoEntry:
                    # every change to @head passes through the kernel, which drops cached
                    # negative entries itself when a name appears: let it cache them
                    neg = pyfuse3.EntryAttributes()
                    neg.st_ino = pyfuse3.InodeT(0)
                    neg.entry_timeout = HEAD_TIMEOUT
                    return neg
            if parent_inode == ROOT_INO and name == HEAD_NAME:
                self.head.remember(to_head(HEAD_ROOT))
                return entry_attributes(self.head.root_attr())
        try:
            node, attr = self.view.lookup(parent_inode, name)
        except NoEntry:
            if self.view.is_immutable(parent_inode):
                neg = pyfuse3.EntryAttributes()
                neg.st_ino = pyfuse3.InodeT(0)
                neg.entry_timeout = NEGATIVE_TIMEOUT
                return neg  # cached "no such name" in a version that never changes
            raise
        self.view.remember(node)
        return entry_attributes(attr)

    @guarded
    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        for ino, count in inode_list:
            if is_head(ino):
                if self.head is not None:
                    self.head.forget(ino, count)
            else:
                self.view.forget(ino, count)

    @guarded
    async def getattr(self, inode: pyfuse3.InodeT,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if is_head(inode):
            return entry_attributes(self._head().getattr(inode))
        return entry_attributes(self.view.getattr(inode))

    @guarded
    async def readlink(self, inode: pyfuse3.InodeT,
                       ctx: pyfuse3.RequestContext) -> pyfuse3.FileNameT:
        if is_head(inode):
            return pyfuse3.FileNameT(self._head().readlink(inode))
        return pyfuse3.FileNameT(self.view.readlink(inode))

    # -- directories -----------------------------------------------------------------------

    @guarded
    async def opendir(self, inode: pyfuse3.InodeT,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.FileHandleT:
        fh = self._new_fh()
        if is_head(inode):
            self._dirs[fh] = self._head().fs.opendir(from_head(inode))
        else:
            self._dirs[fh] = self.view.opendir(inode)
        return pyfuse3.FileHandleT(fh)

    @guarded
    async def readdir(self, fh: pyfuse3.FileHandleT, start_id: int,
                      token: pyfuse3.ReaddirToken) -> None:
        handle = self._dirs[fh]
        if isinstance(handle, HeadDirHandle):
            self._readdir_head(handle, start_id, token)
            return
        shift = 0
        if self.head is not None and handle.node.ino == ROOT_INO:
            shift = 1
            if start_id == 0:
                if not pyfuse3.readdir_reply(token, pyfuse3.FileNameT(HEAD_NAME),
                                             entry_attributes(self.head.root_attr()), 1):
                    return
                self.head.remember(to_head(HEAD_ROOT))
            start_id = max(0, start_id - 1)
        for name, node, next_id in self.view.readdir(handle, start_id):
            if not pyfuse3.readdir_reply(token, pyfuse3.FileNameT(name),
                                         entry_attributes(self.view.attr(node)),
                                         next_id + shift):
                self.view.inodes.drop_unreferenced(node)
                handle.position = next_id - 1
                handle.cursor = None
                return
            self.view.remember(node)

    def _readdir_head(self, handle: HeadDirHandle, start_id: int,
                      token: pyfuse3.ReaddirToken) -> None:
        head = self._head()
        for name, ino, attr, next_id in head.fs.readdir(handle, start_id):
            if not pyfuse3.readdir_reply(token, pyfuse3.FileNameT(name),
                                         entry_attributes(head_attr(attr)), next_id):
                return
            head.fs.remember(ino)

    def _head(self) -> HeadAdapter:
        if self.head is None:
            raise pyfuse3.FUSEError(errno.ESTALE)
        return self.head

    @guarded
    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        self._dirs.pop(fh, None)

    # -- files -----------------------------------------------------------------------------

    @guarded
    async def open(self, inode: pyfuse3.InodeT, flags: pyfuse3.FlagT,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if is_head(inode):
            fh = await self._head().open(inode, flags)
            return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=False)
        writing = (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)
        handle = self.view.open(inode, writing)
        fh = self._new_fh()
        self._files[fh] = handle
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=True)

    @guarded
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        if self.head is not None and fh in self.head.files:
            return await self.head.read(fh, off, size, self._limiter)
        handle = self._files[fh]
        for cid in self.view.prefetch_plan(handle, off, size, PREFETCH_BYTES):
            self._start_prefetch(cid)
        data = self.view.read_cached(handle, off, size)
        if data is None:
            data = await trio.to_thread.run_sync(self.view.read_blocking, handle, off, size,
                                                 limiter=self._limiter)
        return data

    def _start_prefetch(self, cid: ChunkId) -> None:
        if self.nursery is None or cid in self._prefetching:
            return
        self._prefetching.add(cid)

        async def fetch() -> None:
            try:
                await trio.to_thread.run_sync(self.view.prefetch, cid, limiter=self._limiter)
            finally:
                self._prefetching.discard(cid)

        self.nursery.start_soon(fetch)

    @guarded
    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        if self.head is not None and fh in self.head.files:
            await self.head.release(fh)
            return
        handle = self._files.pop(fh, None)
        if handle is not None:
            self.view.close(handle)

    @guarded
    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        if self.head is not None and fh in self.head.files:
            await self.head.flush(fh)

    @guarded
    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        if self.head is not None and fh in self.head.files:
            await self.head.fsync(fh)

    @guarded
    async def fsyncdir(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        handle = self._dirs.get(fh)
        if isinstance(handle, HeadDirHandle):
            await trio.to_thread.run_sync(self._head().fs.db.sync)

    # -- xattrs, statfs --------------------------------------------------------------------

    def _xattrs_served(self) -> None:
        if not self.serve_xattrs:
            # ENOSYS tells the kernel this mount has no xattrs: it stops asking (for good), so
            # `ls -l` no longer costs a round trip per file for security.selinux.
            raise pyfuse3.FUSEError(errno.ENOSYS)

    @guarded
    async def listxattr(self, inode: pyfuse3.InodeT,
                        ctx: pyfuse3.RequestContext) -> Sequence[pyfuse3.XAttrNameT]:
        self._xattrs_served()
        if is_head(inode):
            return [pyfuse3.XAttrNameT(n) for n in self._head().listxattr(inode)]
        return [pyfuse3.XAttrNameT(n) for n in self.view.listxattr(inode)]

    @guarded
    async def getxattr(self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT,
                       ctx: pyfuse3.RequestContext) -> bytes:
        self._xattrs_served()
        if is_head(inode):
            return self._head().getxattr(inode, name)
        return self.view.getxattr(inode, name)

    @guarded
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = self.view.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = st.f_bsize
        out.f_frsize = st.f_frsize
        out.f_blocks = st.f_blocks
        out.f_bfree = st.f_bfree
        out.f_bavail = st.f_bavail
        out.f_files = st.f_files
        out.f_ffree = st.f_ffree
        out.f_favail = st.f_favail
        out.f_namemax = 255
        return out

    # -- mutations: @head only; every version is read-only -----------------------------------

    def _writable(self, *inodes: int) -> HeadAdapter:
        """The head adapter if every inode is in @head; EROFS for versions, EXDEV across."""
        inside = [is_head(i) for i in inodes]
        if all(inside) and self.head is not None:
            return self.head
        if any(inside):
            raise pyfuse3.FUSEError(errno.EXDEV)
        raise pyfuse3.FUSEError(errno.EROFS)

    @guarded
    async def setattr(self, inode: pyfuse3.InodeT, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: pyfuse3.FileHandleT | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return entry_attributes(await self._writable(inode).setattr(inode, attr, fields))

    @guarded
    async def mknod(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT,
                    mode: pyfuse3.ModeT, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        head = self._writable(parent_inode)
        return entry_attributes(await head.create_node("mknod", parent_inode, name, mode, ctx,
                                                       rdev=rdev))

    @guarded
    async def mkdir(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT,
                    mode: pyfuse3.ModeT, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        head = self._writable(parent_inode)
        return entry_attributes(await head.create_node("mkdir", parent_inode, name, mode, ctx))

    @guarded
    async def unlink(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT,
                     ctx: pyfuse3.RequestContext) -> None:
        await self._writable(parent_inode).unlink(parent_inode, name)

    @guarded
    async def rmdir(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT,
                    ctx: pyfuse3.RequestContext) -> None:
        await self._writable(parent_inode).rmdir(parent_inode, name)

    @guarded
    async def symlink(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT,
                      target: pyfuse3.FileNameT,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        head = self._writable(parent_inode)
        return entry_attributes(await head.create_node("symlink", parent_inode, name, 0, ctx,
                                                       target))

    @guarded
    async def rename(self, parent_inode_old: pyfuse3.InodeT, name_old: pyfuse3.FileNameT,
                     parent_inode_new: pyfuse3.InodeT, name_new: pyfuse3.FileNameT,
                     flags: pyfuse3.FlagT, ctx: pyfuse3.RequestContext) -> None:
        head = self._writable(parent_inode_old, parent_inode_new)
        await head.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    @guarded
    async def link(self, inode: pyfuse3.InodeT, new_parent_inode: pyfuse3.InodeT,
                   new_name: pyfuse3.FileNameT,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        head = self._writable(inode, new_parent_inode)
        return entry_attributes(await head.link(inode, new_parent_inode, new_name))

    @guarded
    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        if self.head is not None and fh in self.head.files:
            return await self.head.write(fh, off, buf)
        raise pyfuse3.FUSEError(errno.EROFS)

    @guarded
    async def create(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT,
                     mode: pyfuse3.ModeT, flags: pyfuse3.FlagT, ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        head = self._writable(parent_inode)
        fh, attr = await head.create(parent_inode, name, mode, flags, ctx)
        return (pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=False),
                entry_attributes(attr))

    @guarded
    async def setxattr(self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        head = self._writable(inode)
        if not self.serve_xattrs:
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        await head.setxattr(inode, name, value)

    @guarded
    async def removexattr(self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT,
                          ctx: pyfuse3.RequestContext) -> None:
        head = self._writable(inode)
        if not self.serve_xattrs:
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        await head.removexattr(inode, name)


def head_attr(attr: Attr) -> Attr:
    """A head-local attribute with its mount inode."""
    return mount_attr(attr)


HEAD_NAME = b"@head"

__all__ = ["Operations"]
