"""One FUSE connection served on the trio thread: read requests from /dev/fuse, call the
handler object, write replies.

Owns: the wire (decoding requests, encoding replies with one writev and no join of data),
protocol negotiation at INIT, counting the requests that reach the daemon (by opcode), and
kernel notifications. A handler method may return its answer (the request is answered at
once, on this thread, without a task: cache hits cost no scheduling) or a coroutine (run as a
task; it answers when done). Handler methods are named after the requests (`lookup`, `read`,
...); one the handler object lacks is answered ENOSYS, which for OPEN, OPENDIR and FLUSH tells
the kernel never to send them again on this connection (then every open of a file or a
directory costs no request at all, and the kernel keeps pages and listings cached).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import trio

from daemon.fuse import proto
from daemon.fuse.proto import Op
from daemon.fuse.types import (
    EntryAttributes,
    FileInfo,
    FUSEError,
    ReaddirToken,
    RequestContext,
    SetattrFields,
    StatvfsData,
)

log = logging.getLogger("dsfs.fuse")
MAX_PAGES = 256
MAX_WRITE = MAX_PAGES * 4096
BUFFER_SIZE = MAX_WRITE + 4096
BATCH = 32
"""Requests answered in a row before the loop lets started tasks run."""
IOV_MAX = 1024
NO_REPLY = frozenset({Op.FORGET, Op.BATCH_FORGET, Op.INTERRUPT})


@dataclass(frozen=True)
class Config:
    """What this connection asks of the kernel at INIT."""

    writeback_cache: bool = False
    posix_acl: bool = False
    atomic_o_trunc: bool = True
    max_readahead: int = 1 << 20


def _encode_attr(a: EntryAttributes) -> tuple[int, ...]:
    return (a.st_ino, a.st_size, a.st_blocks,
            a.st_atime_ns // 1_000_000_000, a.st_mtime_ns // 1_000_000_000,
            a.st_ctime_ns // 1_000_000_000, a.st_atime_ns % 1_000_000_000,
            a.st_mtime_ns % 1_000_000_000, a.st_ctime_ns % 1_000_000_000,
            a.st_mode, a.st_nlink, a.st_uid, a.st_gid, a.st_rdev & 0xFFFFFFFF, a.st_blksize, 0)


def entry_out(a: EntryAttributes) -> bytes:
    es, ens = proto.split_seconds(a.entry_timeout)
    as_, ans = proto.split_seconds(a.attr_timeout)
    return proto.ENTRY_OUT.pack(a.st_ino, a.generation, es, as_, ens, ans, *_encode_attr(a))


def attr_out(a: EntryAttributes) -> bytes:
    s, ns = proto.split_seconds(a.attr_timeout)
    return proto.ATTR_OUT.pack(s, ns, 0, *_encode_attr(a))


def readdir_reply(token: ReaddirToken, name: bytes, attr: EntryAttributes, next_id: int
                  ) -> bool:
    """Add one entry; False (nothing added) when the kernel's buffer is full. In a
    READDIRPLUS the kernel takes a lookup reference on each entry added (`token.plus`)."""
    dirent = proto.DIRENT.pack(attr.st_ino, next_id, len(name), (attr.st_mode >> 12) & 0xF)
    pad = -(len(dirent) + len(name)) % 8
    record = b"".join((entry_out(attr) if token.plus else b"", dirent, name, bytes(pad)))
    if token.used + len(record) > token.size:
        return False
    token.parts.append(record)
    token.used += len(record)
    return True


class Session:
    """One mounted connection: `fd` from daemon.fuse.mounting.mount, requests to `ops`."""

    def __init__(self, fd: int, ops: Any, config: Config, name: str) -> None:
        self.fd = fd
        self.ops = ops
        self.config = config
        self.name = name
        self.counts: Counter[str] = Counter()
        """Requests received, by opcode name (what reaches the daemon: tests and benchmarks
        read it over the control socket)."""
        self.proto_minor = 0
        self._nursery: trio.Nursery | None = None
        self.closed = False
        self.opening: trio.Event | None = None
        """While set and not yet fired, requests wait for it: the mount is not complete yet
        (daemon.mount mounts @head inside it). Requests of `opening_pids` (the thread or
        process mounting) and of the kernel itself pass."""
        self.opening_pids: set[int] = set()

    # -- the loop ------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Answer requests until the connection ends (unmounted or aborted)."""
        buf = bytearray(BUFFER_SIZE)
        view = memoryview(buf)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            in_row = 0
            while True:
                try:
                    n = os.readv(self.fd, [buf])
                except BlockingIOError:
                    in_row = 0
                    await trio.lowlevel.wait_readable(self.fd)
                    continue
                except InterruptedError:
                    continue
                except OSError as exc:
                    if exc.errno == errno.ENOENT:  # the request was interrupted meanwhile
                        continue
                    if exc.errno == errno.ENODEV:  # unmounted
                        break
                    raise
                if n == 0:
                    break
                self._dispatch(view[:n])
                in_row += 1
                if in_row >= BATCH:
                    in_row = 0
                    await trio.lowlevel.checkpoint()
            self.closed = True
            nursery.cancel_scope.cancel()

    def _dispatch(self, req: memoryview) -> None:
        _, opcode, unique, nodeid, uid, gid, pid, _, _ = proto.IN_HEADER.unpack_from(req)
        body = req[proto.IN_HEADER.size:]
        try:
            op = Op(opcode)
        except ValueError:
            self._reply_error(unique, errno.ENOSYS)
            return
        self.counts[op.name] += 1
        if self.opening is not None:
            if self.opening.is_set():
                self.opening = None
            elif pid and pid not in self.opening_pids and op not in NO_REPLY:
                self._wait_then_dispatch(bytes(req), self.opening)
                return
        ctx = RequestContext(uid, gid, pid)
        try:
            decoder = _DECODERS.get(op)
            if decoder is None:
                if op not in NO_REPLY:
                    self._reply_error(unique, errno.ENOSYS)
                return
            result = decoder(self, nodeid, body, ctx)
        except FUSEError as exc:
            if op not in NO_REPLY:  # FORGET and INTERRUPT are never answered, not even errors
                self._reply_error(unique, exc.errno)
            return
        except Exception:
            log.exception("%s: unexpected error decoding or answering %s", self.name, op.name)
            if op not in NO_REPLY:
                self._reply_error(unique, errno.EIO)
            return
        if op in NO_REPLY:
            if isinstance(result, Coroutine):
                self._start(op, unique, result, None)
            return
        encode: Callable[[Any], list[bytes | memoryview]] = result[1]
        value = result[0]
        if isinstance(value, Coroutine):
            self._start(op, unique, value, encode)
            return
        self._answer(unique, encode, value)

    def _wait_then_dispatch(self, req: bytes, opened: trio.Event) -> None:
        assert self._nursery is not None

        async def later() -> None:
            await opened.wait()
            self.counts[Op(proto.IN_HEADER.unpack_from(req)[1]).name] -= 1  # counted twice
            self._dispatch(memoryview(req))

        self._nursery.start_soon(later)

    def _start(self, op: Op, unique: int, coro: Coroutine[Any, Any, Any],
               encode: Callable[[Any], list[bytes | memoryview]] | None) -> None:
        assert self._nursery is not None

        async def finish() -> None:
            try:
                value = await coro
            except FUSEError as exc:
                if encode is not None:
                    self._reply_error(unique, exc.errno)
                return
            except Exception:
                log.exception("%s: unexpected error in %s", self.name, op.name)
                if encode is not None:
                    self._reply_error(unique, errno.EIO)
                return
            if encode is not None:
                self._answer(unique, encode, value)

        self._nursery.start_soon(finish)

    def _answer(self, unique: int, encode: Callable[[Any], list[bytes | memoryview]],
                value: Any) -> None:
        try:
            parts = encode(value)
        except FUSEError as exc:  # e.g. ERANGE: an xattr larger than the caller's buffer
            self._reply_error(unique, exc.errno)
            return
        self._reply(unique, parts)

    # -- replies -------------------------------------------------------------------------------

    def _reply(self, unique: int, parts: list[bytes | memoryview]) -> None:
        size = proto.OUT_HEADER.size + sum(len(p) for p in parts)
        self._write([proto.OUT_HEADER.pack(size, 0, unique), *parts], unique)

    def _reply_error(self, unique: int, err: int) -> None:
        self._write([proto.OUT_HEADER.pack(proto.OUT_HEADER.size, -err, unique)])

    def _write(self, parts: list[bytes | memoryview], unique: int = 0) -> None:
        if len(parts) > IOV_MAX:
            parts = [b"".join(parts)]
        try:
            os.writev(self.fd, parts)
        except OSError as exc:
            # ENOENT: the request was interrupted and is gone; ENODEV: unmounted
            if exc.errno in (errno.ENOENT, errno.ENODEV, errno.EBADF):
                return
            log.error("%s: the kernel refused an answer (%s)", self.name, exc)
            if unique and (len(parts) > 1 or len(parts[0]) > proto.OUT_HEADER.size):
                # never leave the caller waiting forever: answer with an error instead
                self._write([proto.OUT_HEADER.pack(proto.OUT_HEADER.size, -errno.EIO,
                                                   unique)])

    # -- notifications -------------------------------------------------------------------------

    async def invalidate_entry(self, parent: int, name: bytes) -> None:
        """Make the kernel forget `name` in directory `parent` (and what lies below it). In a
        worker thread: the kernel may wait for a request of this very connection to finish."""
        msg = proto.INVAL_ENTRY_OUT.pack(parent, len(name), 0) + name + b"\0"
        await trio.to_thread.run_sync(self._notify, proto.NOTIFY_INVAL_ENTRY, msg)

    def invalidate_entries_blocking(self, entries: list[tuple[int, bytes]]) -> None:
        """`invalidate_entry` for many names at once, in the calling (worker) thread."""
        for parent, name in entries:
            msg = proto.INVAL_ENTRY_OUT.pack(parent, len(name), 0) + name + b"\0"
            self._notify(proto.NOTIFY_INVAL_ENTRY, msg)

    async def invalidate_inode(self, ino: int) -> None:
        """Drop the kernel's cached attributes, pages and listing of an inode."""
        msg = proto.INVAL_INODE_OUT.pack(ino, 0, 0)
        await trio.to_thread.run_sync(self._notify, proto.NOTIFY_INVAL_INODE, msg)

    def _notify(self, code: int, msg: bytes) -> None:
        if self.closed:
            return
        header = proto.OUT_HEADER.pack(proto.OUT_HEADER.size + len(msg), code, 0)
        try:
            os.writev(self.fd, [header, msg])
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENODEV, errno.EBADF, errno.ENOTDIR):
                log.info("%s: invalidation not taken: %s", self.name, exc)

    # -- INIT ----------------------------------------------------------------------------------

    def init(self, body: memoryview) -> bytes:
        major, minor, max_readahead, kflags = proto.INIT_IN.unpack_from(body)
        if major != proto.KERNEL_MAJOR:
            raise FUSEError(errno.EPROTO)
        self.proto_minor = min(minor, proto.KERNEL_MINOR)
        want = (proto.ASYNC_READ | proto.BIG_WRITES | proto.DO_READDIRPLUS | proto.MAX_PAGES
                | proto.PARALLEL_DIROPS | proto.CACHE_SYMLINKS | proto.AUTO_INVAL_DATA
                | proto.ASYNC_DIO)
        if self.config.atomic_o_trunc:
            want |= proto.ATOMIC_O_TRUNC
        if self.config.writeback_cache:
            want |= proto.WRITEBACK_CACHE
        if self.config.posix_acl:
            want |= proto.POSIX_ACL
        flags = want & kflags
        log.debug("%s: FUSE %d.%d, flags %#x", self.name, major, minor, flags)
        return proto.INIT_OUT.pack(proto.KERNEL_MAJOR, self.proto_minor,
                                   min(max_readahead, self.config.max_readahead), flags,
                                   64, 48, MAX_WRITE, 1, MAX_PAGES, 0, 0)


# -- decoding each request ---------------------------------------------------------------------
# Each decoder calls the handler and returns (value or coroutine, encoder of the value).

def _none(_: Any) -> list[bytes | memoryview]:
    return []


def _entry(a: EntryAttributes) -> list[bytes | memoryview]:
    return [entry_out(a)]


def _attr(a: EntryAttributes) -> list[bytes | memoryview]:
    return [attr_out(a)]


def _data(d: Any) -> list[bytes | memoryview]:
    return list(d) if isinstance(d, list) else [d]


def _open(fi: FileInfo) -> list[bytes | memoryview]:
    flags = (proto.FOPEN_KEEP_CACHE if fi.keep_cache else 0) | \
        (proto.FOPEN_DIRECT_IO if fi.direct_io else 0)
    return [proto.OPEN_OUT.pack(fi.fh, flags, 0)]


def _opendir(fh: int) -> list[bytes | memoryview]:
    return [proto.OPEN_OUT.pack(fh, 0, 0)]


def _handler(s: Session, name: str) -> Callable[..., Any]:
    fn = getattr(s.ops, name, None)
    if fn is None:
        raise FUSEError(errno.ENOSYS)
    return fn  # type: ignore[no-any-return]


def _d_init(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    return s.init(body), lambda out: [out]


def _d_destroy(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    return None, _none


def _d_lookup(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    name, _ = proto.cstring(body, 0)
    return _handler(s, "lookup")(nodeid, name, ctx), _entry


def _d_forget(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    (n,) = proto.FORGET_IN.unpack_from(body)
    return _handler(s, "forget")([(nodeid, n)])


def _d_batch_forget(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    (count, _) = proto.BATCH_FORGET_IN.unpack_from(body)
    items = [proto.FORGET_ONE.unpack_from(body, proto.BATCH_FORGET_IN.size + i * 16)
             for i in range(count)]
    return _handler(s, "forget")(items)


def _d_getattr(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    return _handler(s, "getattr")(nodeid, ctx), _attr


def _d_setattr(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    (valid, _, fh, size, _, atime, mtime, ctime, atimens, mtimens, ctimens, mode, _, uid, gid,
     _) = proto.SETATTR_IN.unpack_from(body)
    attr = EntryAttributes(st_ino=nodeid, st_mode=mode, st_uid=uid, st_gid=gid, st_size=size)
    fields = SetattrFields(update_mode=bool(valid & proto.FATTR_MODE),
                           update_uid=bool(valid & proto.FATTR_UID),
                           update_gid=bool(valid & proto.FATTR_GID),
                           update_size=bool(valid & proto.FATTR_SIZE),
                           update_ctime=bool(valid & proto.FATTR_CTIME))
    now = None
    if valid & (proto.FATTR_ATIME_NOW | proto.FATTR_MTIME_NOW):
        now = time.time_ns()
    if valid & proto.FATTR_ATIME:
        fields.update_atime = True
        attr.st_atime_ns = now if valid & proto.FATTR_ATIME_NOW and now else \
            atime * 1_000_000_000 + atimens
    if valid & proto.FATTR_MTIME:
        fields.update_mtime = True
        attr.st_mtime_ns = now if valid & proto.FATTR_MTIME_NOW and now else \
            mtime * 1_000_000_000 + mtimens
    attr.st_ctime_ns = ctime * 1_000_000_000 + ctimens
    handle = fh if valid & proto.FATTR_FH else None
    return _handler(s, "setattr")(nodeid, attr, fields, handle, ctx), _attr


def _d_readlink(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    return _handler(s, "readlink")(nodeid, ctx), lambda t: [t]


def _d_symlink(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    name, at = proto.cstring(body, 0)
    target, _ = proto.cstring(body, at)
    return _handler(s, "symlink")(nodeid, name, target, ctx), _entry


def _d_mknod(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    mode, rdev, umask, _ = proto.MKNOD_IN.unpack_from(body)
    name, _ = proto.cstring(body, proto.MKNOD_IN.size)
    return _handler(s, "mknod")(nodeid, name, mode, rdev, _with_umask(ctx, umask)), _entry


def _d_mkdir(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    mode, umask = proto.MKDIR_IN.unpack_from(body)
    name, _ = proto.cstring(body, proto.MKDIR_IN.size)
    return _handler(s, "mkdir")(nodeid, name, mode, _with_umask(ctx, umask)), _entry


def _with_umask(ctx: RequestContext, umask: int) -> RequestContext:
    return RequestContext(ctx.uid, ctx.gid, ctx.pid, umask)


def _d_unlink(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    name, _ = proto.cstring(body, 0)
    return _handler(s, "unlink")(nodeid, name, ctx), _none


def _d_rmdir(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    name, _ = proto.cstring(body, 0)
    return _handler(s, "rmdir")(nodeid, name, ctx), _none


def _d_rename(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    (newdir,) = proto.RENAME_IN.unpack_from(body)
    old, at = proto.cstring(body, proto.RENAME_IN.size)
    new, _ = proto.cstring(body, at)
    return _handler(s, "rename")(nodeid, old, newdir, new, 0, ctx), _none


def _d_rename2(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    newdir, flags, _ = proto.RENAME2_IN.unpack_from(body)
    old, at = proto.cstring(body, proto.RENAME2_IN.size)
    new, _ = proto.cstring(body, at)
    return _handler(s, "rename")(nodeid, old, newdir, new, flags, ctx), _none


def _d_link(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    (old,) = proto.LINK_IN.unpack_from(body)
    name, _ = proto.cstring(body, proto.LINK_IN.size)
    return _handler(s, "link")(old, nodeid, name, ctx), _entry


def _d_open(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    flags, _ = proto.OPEN_IN.unpack_from(body)
    return _handler(s, "open")(nodeid, flags, ctx), _open


def _d_read(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    fh, offset, size, _, _, _, _ = proto.READ_IN.unpack_from(body)
    return _handler(s, "read")(nodeid, fh, offset, size), _data


def _d_write(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    fh, offset, size, _, _, _, _ = proto.WRITE_IN.unpack_from(body)
    start = proto.WRITE_IN.size
    data = bytes(body[start:start + size])
    return _handler(s, "write")(nodeid, fh, offset, data), \
        lambda n: [proto.WRITE_OUT.pack(n, 0)]


def _d_statfs(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    def encode(st: StatvfsData) -> list[bytes | memoryview]:
        return [proto.STATFS_OUT.pack(st.f_blocks, st.f_bfree, st.f_bavail, st.f_files,
                                      st.f_ffree, st.f_bsize, st.f_namemax, st.f_frsize, 0)]
    return _handler(s, "statfs")(ctx), encode


def _d_release(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    fh, _, _, _ = proto.RELEASE_IN.unpack_from(body)
    return _handler(s, "release")(nodeid, fh), _none


def _d_releasedir(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    fh, _, _, _ = proto.RELEASE_IN.unpack_from(body)
    return _handler(s, "releasedir")(nodeid, fh), _none


def _d_flush(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    fh, _, _, _ = proto.FLUSH_IN.unpack_from(body)
    return _handler(s, "flush")(nodeid, fh), _none


def _d_fsync(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    fh, flags, _ = proto.FSYNC_IN.unpack_from(body)
    return _handler(s, "fsync")(nodeid, fh, bool(flags & 1)), _none


def _d_fsyncdir(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    fh, flags, _ = proto.FSYNC_IN.unpack_from(body)
    return _handler(s, "fsyncdir")(nodeid, fh, bool(flags & 1)), _none


def _d_setxattr(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    size, _ = proto.SETXATTR_IN.unpack_from(body)
    name, at = proto.cstring(body, proto.SETXATTR_IN.size)
    value = bytes(body[at:at + size])
    return _handler(s, "setxattr")(nodeid, name, value, ctx), _none


def _sized(size: int) -> Callable[[bytes], list[bytes | memoryview]]:
    def encode(value: bytes) -> list[bytes | memoryview]:
        if size == 0:
            return [proto.XATTR_SIZE_OUT.pack(len(value), 0)]
        if len(value) > size:
            raise FUSEError(errno.ERANGE)
        return [value]
    return encode


def _d_getxattr(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    size, _ = proto.GETXATTR_IN.unpack_from(body)
    name, _ = proto.cstring(body, proto.GETXATTR_IN.size)
    return _handler(s, "getxattr")(nodeid, name, ctx), _sized(size)


def _d_listxattr(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    size, _ = proto.GETXATTR_IN.unpack_from(body)
    encode = _sized(size)
    result = _handler(s, "listxattr")(nodeid, ctx)
    return result, lambda names: encode(b"".join(n + b"\0" for n in names))


def _d_removexattr(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    name, _ = proto.cstring(body, 0)
    return _handler(s, "removexattr")(nodeid, name, ctx), _none


def _d_opendir(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    return _handler(s, "opendir")(nodeid, ctx), _opendir


def _readdir(plus: bool) -> Callable[[Session, int, memoryview, RequestContext], Any]:
    def decode(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
        fh, offset, size, _, _, _, _ = proto.READ_IN.unpack_from(body)
        token = ReaddirToken(size=size, plus=plus)
        return _handler(s, "readdir")(nodeid, fh, offset, token), \
            lambda _: [b"".join(token.parts)]
    return decode


def _d_create(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    flags, mode, umask, _ = proto.CREATE_IN.unpack_from(body)
    name, _ = proto.cstring(body, proto.CREATE_IN.size)

    def encode(out: tuple[FileInfo, EntryAttributes]) -> list[bytes | memoryview]:
        return [entry_out(out[1]), *_open(out[0])]
    return _handler(s, "create")(nodeid, name, mode, flags, _with_umask(ctx, umask)), encode


def _d_interrupt(s: Session, nodeid: int, body: memoryview, ctx: RequestContext) -> Any:
    return None  # requests run to their end; the kernel drops the late answer if it must


_DECODERS: dict[Op, Callable[[Session, int, memoryview, RequestContext], Any]] = {
    Op.INIT: _d_init, Op.DESTROY: _d_destroy, Op.LOOKUP: _d_lookup, Op.FORGET: _d_forget,
    Op.BATCH_FORGET: _d_batch_forget, Op.GETATTR: _d_getattr, Op.SETATTR: _d_setattr,
    Op.READLINK: _d_readlink, Op.SYMLINK: _d_symlink, Op.MKNOD: _d_mknod, Op.MKDIR: _d_mkdir,
    Op.UNLINK: _d_unlink, Op.RMDIR: _d_rmdir, Op.RENAME: _d_rename, Op.RENAME2: _d_rename2,
    Op.LINK: _d_link, Op.OPEN: _d_open, Op.READ: _d_read, Op.WRITE: _d_write,
    Op.STATFS: _d_statfs, Op.RELEASE: _d_release, Op.RELEASEDIR: _d_releasedir,
    Op.FLUSH: _d_flush, Op.FSYNC: _d_fsync, Op.FSYNCDIR: _d_fsyncdir,
    Op.SETXATTR: _d_setxattr, Op.GETXATTR: _d_getxattr, Op.LISTXATTR: _d_listxattr,
    Op.REMOVEXATTR: _d_removexattr, Op.OPENDIR: _d_opendir, Op.READDIR: _readdir(False),
    Op.READDIRPLUS: _readdir(True), Op.CREATE: _d_create, Op.INTERRUPT: _d_interrupt,
}

__all__ = ["Config", "Session", "attr_out", "entry_out", "readdir_reply"]
