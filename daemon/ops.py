"""The versions connection: FUSE requests for the mount root and every `@vN`, answered from
`vfs.view`. No storage logic lives here.

Owns: translating between the FUSE layer's types and the view's, the per-file read state of
version files, and running blocking reads in worker threads. Every handler is `guarded`.
Runs in the trio thread.

Versions never change, so this connection asks the kernel to ask as little as possible: it
answers OPEN, OPENDIR and FLUSH with ENOSYS (the handlers are simply absent), after which the
kernel opens, closes and lists cached directories of the whole mount without a request, keeps
file pages across opens (FOPEN_KEEP_CACHE) and listings across opendirs (FOPEN_CACHE_DIR);
entries, attributes and missing names are cached for a day. The connection is mounted
read-only, so an open for writing fails in the kernel (EROFS) without reaching us. `@head`,
which must see every open, is another connection mounted on the `@head` directory shown here
(daemon.headfuse).
"""

from __future__ import annotations

import errno
import logging
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeAlias, TypeVar

import trio

from daemon.fuse import (
    EntryAttributes,
    FUSEError,
    ReaddirToken,
    RequestContext,
    StatvfsData,
    readdir_reply,
)
from daemon.guard import guarded
from vfs.errors import DsfsError, NoEntry, WouldBlock
from vfs.head.state import HEAD_ROOT
from vfs.ids import ChunkId
from vfs.inodes import ROOT_INO, to_head
from vfs.view import Attr, DirHandle, FileHandle, VersionsView

log = logging.getLogger("dsfs.mount")
T = TypeVar("T")
Answer: TypeAlias = T | Coroutine[Any, Any, T]
"""A handler's answer now, or the coroutine that will answer (daemon.fuse.session)."""
LOAD_TRIES = 3
Parts: TypeAlias = list[memoryview]
NEGATIVE_TIMEOUT = 24 * 3600.0
PREFETCH_BYTES = 8 << 20
HEAD_NAME = b"@head"
HEAD_DIR_INO = to_head(HEAD_ROOT)
"""The inode of the `@head` directory in the root, the mountpoint of @head's own connection
(whose root it is there)."""
READ_STATES = 4096
"""Per-file read states (chunk layout, where the last read ended) kept for files the kernel
reads; the kernel's FORGET of a file drops its state too."""


def entry_attributes(attr: Attr) -> EntryAttributes:
    return EntryAttributes(
        st_ino=attr.ino, st_mode=attr.mode, st_nlink=attr.nlink, st_uid=attr.uid,
        st_gid=attr.gid, st_size=attr.size, st_blksize=1 << 20, st_blocks=attr.blocks,
        st_mtime_ns=attr.mtime_ns, st_ctime_ns=attr.ctime_ns,
        st_atime_ns=attr.mtime_ns if attr.atime_ns is None else attr.atime_ns,
        st_rdev=attr.rdev, entry_timeout=attr.timeout, attr_timeout=attr.timeout)


def negative_entry(timeout: float) -> EntryAttributes:
    return EntryAttributes(st_ino=0, entry_timeout=timeout)


class Operations:
    """Handlers of the versions connection over a VersionsView."""

    def __init__(self, view: VersionsView, read_threads: int = 4,
                 serve_xattrs: bool = True) -> None:
        self.view = view
        self.serve_xattrs = serve_xattrs
        self.head_dir: EntryAttributes | None = None
        """The `@head` directory in the root while @head is served (its own connection is
        mounted on it); None: no @head in this mount."""
        self.head_mounted = trio.Event()
        """Set once @head's connection is mounted on the `@head` directory: until then the
        connection makes every request but the mounting thread's wait (Session.opening)."""
        self._readers: OrderedDict[int, FileHandle] = OrderedDict()
        self._dirs: dict[int, DirHandle] = {}
        """Listing cursors of directories being read (a listing's next READDIR goes on
        where the last one ended); dropped with the kernel's FORGET."""
        self._limiter = trio.CapacityLimiter(read_threads)
        self._prefetching: set[bytes] = set()
        self.nursery: trio.Nursery | None = None

    def show_head_dir(self, uid: int, gid: int) -> None:
        now = time.time_ns()
        self.head_dir = EntryAttributes(
            st_ino=HEAD_DIR_INO, st_mode=stat.S_IFDIR | 0o755, st_nlink=2, st_uid=uid,
            st_gid=gid, st_size=4096, st_blksize=4096, st_blocks=8, st_atime_ns=now,
            st_mtime_ns=now, st_ctime_ns=now, entry_timeout=NEGATIVE_TIMEOUT,
            attr_timeout=NEGATIVE_TIMEOUT)

    def describe(self, op: str, args: Sequence[Any]) -> str:
        """The path a failed request was about, for the log (else the handler's name)."""
        if not args or not isinstance(args[0], int):
            return op
        try:
            return self.view.path_of(self.view.node(args[0]))
        except DsfsError:
            return op

    # -- names and attributes --------------------------------------------------------------

    @guarded
    def lookup(self, parent: int, name: bytes, ctx: RequestContext) -> Answer[EntryAttributes]:
        if self.head_dir is not None:
            if parent == ROOT_INO and name == HEAD_NAME:
                return self.head_dir
            if parent == HEAD_DIR_INO:
                raise FUSEError(errno.ENOENT)  # the empty directory under @head's mount

        def attempt(wait: bool) -> EntryAttributes:
            try:
                node, attr = self.view.lookup(parent, name, wait=wait)
            except NoEntry:
                if self.view.is_immutable(parent):
                    return negative_entry(NEGATIVE_TIMEOUT)  # cached: a version never changes
                raise
            self.view.remember(node)
            return entry_attributes(attr)
        return self._nowait(attempt)

    @guarded
    def forget(self, inodes: Sequence[tuple[int, int]]) -> None:
        for ino, count in inodes:
            self._dirs.pop(ino, None)
            self._readers.pop(ino, None)
            self.view.forget(ino, count)

    @guarded
    def getattr(self, ino: int, ctx: RequestContext) -> Answer[EntryAttributes]:
        if ino == HEAD_DIR_INO and self.head_dir is not None:
            return self.head_dir
        return self._nowait(lambda wait: entry_attributes(self.view.getattr(ino, wait=wait)))

    @guarded
    def readlink(self, ino: int, ctx: RequestContext) -> Answer[bytes]:
        return self._nowait(lambda wait: self.view.readlink(ino, wait=wait))

    # -- directories: no OPENDIR (the kernel caches listings); READDIR carries the inode ---

    @guarded
    def readdir(self, ino: int, fh: int, start_id: int, token: ReaddirToken) -> Answer[None]:
        if ino == HEAD_DIR_INO:
            return None  # @head's connection is mounted on it; its own listing is empty
        resume = [start_id]  # where a retry after a WouldBlock goes on: nothing lost or repeated
        return self._nowait(lambda wait: self._fill(ino, resume, token, wait))

    def _fill(self, ino: int, resume: list[int], token: ReaddirToken, wait: bool) -> None:
        handle = self._dirs.get(ino)
        if handle is None:
            handle = self._dirs[ino] = self.view.opendir(ino, wait=wait)
        shift = 0
        if handle.node.ino == ROOT_INO and self.head_dir is not None:
            shift = 1
            if resume[0] == 0:
                if not readdir_reply(token, HEAD_NAME, self.head_dir, 1):
                    return
                resume[0] = 1
        offset = max(0, resume[0] - shift)
        if token.plus:
            for name, node, attr, nxt in self.view.readdirplus(handle, offset, wait=wait):
                if not readdir_reply(token, name, entry_attributes(attr), nxt + shift):
                    self.view.inodes.drop_unreferenced(node)
                    return
                self.view.remember(node)
                resume[0] = nxt + shift
            return
        for name, node, nxt in self.view.readdir(handle, offset, wait=wait):
            brief = EntryAttributes(st_ino=node.ino, st_mode=node.entry.mode)
            added = readdir_reply(token, name, brief, nxt + shift)
            self.view.inodes.drop_unreferenced(node)  # a plain READDIR takes no reference
            if not added:
                return
            resume[0] = nxt + shift

    # -- never waiting: what is not in memory is loaded in a worker, then the call again ----

    def _nowait(self, attempt: Callable[[bool], T]) -> Answer[T]:
        """`attempt(False)` now; if it needs data not in memory (WouldBlock), a coroutine
        that loads it in a worker thread and tries again (the event loop never waits)."""
        try:
            return attempt(False)
        except WouldBlock as exc:
            return self._after_load(exc, attempt)

    async def _after_load(self, exc: WouldBlock, attempt: Callable[[bool], T]) -> T:
        for _ in range(LOAD_TRIES):
            await trio.to_thread.run_sync(exc.load, limiter=self._limiter)
            try:
                return attempt(False)
            except WouldBlock as again:  # evicted meanwhile: load again
                exc = again
        # caches too small to hold what one request needs: load in the worker and answer there
        # is not possible (the inode table is the loop's), so the last try may wait here
        log.info("a request needed more than the caches hold; answered on the event loop")
        return attempt(True)

    # -- files: no OPEN, RELEASE or FLUSH; READ carries the inode ---------------------------

    def _reader(self, ino: int, wait: bool) -> FileHandle:
        state = self._readers.get(ino)
        if state is not None:
            self._readers.move_to_end(ino)
            return state
        state = self.view.open(ino, False, wait=wait)
        self._readers[ino] = state
        while len(self._readers) > READ_STATES:
            self._readers.popitem(last=False)
        return state

    @guarded
    def read(self, ino: int, fh: int, off: int, size: int) -> Answer[Parts]:
        handle = self._readers.get(ino)
        if handle is None:
            opened = self._nowait(lambda wait: self._reader(ino, wait))
            if not isinstance(opened, FileHandle):
                return self._read_after_open(opened, off, size)
            handle = opened
        else:
            self._readers.move_to_end(ino)
        return self._read(handle, off, size)

    async def _read_after_open(self, opened: Coroutine[Any, Any, FileHandle], off: int,
                               size: int) -> Parts:
        result = self._read(await opened, off, size)
        return result if isinstance(result, list) else await result

    def _read(self, handle: FileHandle, off: int, size: int) -> Answer[Parts]:
        """The bytes as views of cached chunks: the reply is written from them (no copy)."""
        for cid in self.view.prefetch_plan(handle, off, size, PREFETCH_BYTES):
            self._start_prefetch(cid)
        parts = self.view.read_parts_cached(handle, off, size)
        if parts is not None:
            return parts
        return trio.to_thread.run_sync(self.view.read_parts_blocking, handle, off, size,
                                       limiter=self._limiter)

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

    # -- xattrs, statfs --------------------------------------------------------------------

    def _xattrs_served(self) -> None:
        if not self.serve_xattrs:
            # ENOSYS tells the kernel this mount has no xattrs: it stops asking (for good), so
            # `ls -l` no longer costs a round trip per file for security.selinux.
            raise FUSEError(errno.ENOSYS)

    @guarded
    def listxattr(self, ino: int, ctx: RequestContext) -> Answer[list[bytes]]:
        self._xattrs_served()
        if ino == HEAD_DIR_INO:
            return []
        return self._nowait(lambda wait: self.view.listxattr(ino, wait=wait))

    @guarded
    def getxattr(self, ino: int, name: bytes, ctx: RequestContext) -> Answer[bytes]:
        self._xattrs_served()
        if ino == HEAD_DIR_INO:
            raise FUSEError(errno.ENODATA)
        return self._nowait(lambda wait: self.view.getxattr(ino, name, wait=wait))

    @guarded
    def statfs(self, ctx: RequestContext) -> StatvfsData:
        return statfs_of(self.view)


def statfs_of(view: VersionsView) -> StatvfsData:
    st = view.statfs()
    return StatvfsData(f_bsize=st.f_bsize, f_frsize=st.f_frsize, f_blocks=st.f_blocks,
                       f_bfree=st.f_bfree, f_bavail=st.f_bavail, f_files=st.f_files,
                       f_ffree=st.f_ffree, f_favail=st.f_favail, f_namemax=255)


__all__ = ["HEAD_NAME", "Operations", "entry_attributes", "statfs_of"]
