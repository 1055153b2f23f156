"""Attributes of @head nodes: chmod, chown, utimens, size changes and extended attributes.

Owns: the `HeadAttrs` part of `vfs.head.fs.HeadFS`. Never imports: daemon, trio, pyfuse3.
Threads: the daemon's trio thread, except a size change (`setattr` with `size`), which may run
in a worker: it cuts the overlay and records the new size together under the file's lock (a
reader sees the old size and bytes or the new ones, never a mix), taking the database lock only
inside it, never the other way round.
"""

from __future__ import annotations

import stat
import time
from typing import Any

from vfs.errors import Invalid, IsADir, NoAttr
from vfs.head.acl import ACL_ACCESS, acl_mode
from vfs.head.data import HeadData
from vfs.head.state import HNode
from vfs.model import Kind
from vfs.view import Attr


def now_ns() -> int:
    return time.time_ns()


class HeadAttrs(HeadData):
    """The attribute half of HeadFS (a mixin: HeadFS provides the node methods below)."""

    def _store(self, ino: int) -> HNode:
        raise NotImplementedError

    def _update(self, node: HNode, **changes: Any) -> HNode:
        raise NotImplementedError

    def node(self, ino: int) -> HNode:
        raise NotImplementedError

    def attr(self, n: HNode) -> Attr:
        raise NotImplementedError

    def setattr(self, ino: int, *, mode: int | None = None, uid: int | None = None,
                gid: int | None = None, size: int | None = None, mtime_ns: int | None = None,
                atime_ns: int | None = None) -> Attr:
        """Change attributes; a size change cuts or extends the file, under the file's lock
        (the daemon calls `prepare_truncate` on its trio thread first, then this wherever the
        file's lock can be had without the trio thread waiting for it)."""
        if size is None:
            return self._set_attrs(ino, mode, uid, gid, None, mtime_ns, atime_ns)
        before = self.prepare_truncate(ino)
        with self.file_locks.held(ino):  # FILE before HEAD_DB, never the other way
            # the size first, then the bytes: a kill -9 between the two leaves the new size
            # over bytes the next open cuts (`vfs.head.session`), so a truncate happens
            # entirely or not at all; the other order left the old size over cut bytes
            attr = self._set_attrs(ino, mode, uid, gid, size, mtime_ns, atime_ns)
            try:
                self.truncate_data(ino, size)
            except BaseException:
                # the cut failed (a full disk): the old size again, over the bytes still there
                current = self.db.node(ino)
                if current is not None:
                    self.db.put_node(current.with_(size=before.size, base_len=before.base_len))
                raise
            return attr

    def prepare_truncate(self, ino: int) -> HNode:
        """Store the node a size change is about to cut (IsADir / Invalid if it is no file)."""
        n = self._store(ino)
        if n.kind == Kind.DIR:
            raise IsADir("is a directory")
        if n.kind != Kind.FILE:
            raise Invalid("not a regular file")
        return n

    def _set_attrs(self, ino: int, mode: int | None, uid: int | None, gid: int | None,
                   size: int | None, mtime_ns: int | None, atime_ns: int | None) -> Attr:
        with self.db.txn():
            n = self._store(ino)
            changes: dict[str, object] = {"ctime_ns": now_ns()}
            if mode is not None:
                changes["mode"] = stat.S_IFMT(n.mode) | stat.S_IMODE(mode)
            if uid is not None:
                changes["uid"] = uid
            if gid is not None:
                changes["gid"] = gid
            if mtime_ns is not None:
                changes["mtime_ns"] = mtime_ns
            if atime_ns is not None:
                changes["atime_ns"] = atime_ns
            if size is not None:
                if n.kind == Kind.DIR:
                    raise IsADir("is a directory")
                if n.kind != Kind.FILE:
                    raise Invalid("not a regular file")
                changes["size"] = size
                changes["base_len"] = min(n.base_len, size)
                if size != n.size and mtime_ns is None:
                    changes["mtime_ns"] = changes["ctime_ns"]
            n = self._update(n, **changes)
        return self.attr(n)

    def listxattr(self, ino: int) -> list[bytes]:
        return [k for k, _ in self.node(ino).xattrs]

    def getxattr(self, ino: int, name: bytes) -> bytes:
        for k, v in self.node(ino).xattrs:
            if k == name:
                return v
        raise NoAttr("no such attribute")

    def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        with self.db.txn():
            n = self._store(ino)
            changes: dict[str, object] = {"ctime_ns": now_ns()}
            keep = [(k, v) for k, v in n.xattrs if k != name]
            if name == ACL_ACCESS:
                # With POSIX ACLs on, the daemon keeps the mode in step with the access ACL,
                # and an ACL the mode says entirely is not kept (as local filesystems do).
                bits, minimal = acl_mode(value)
                changes["mode"] = (n.mode & ~0o777) | bits
                if not minimal:
                    keep.append((name, value))
            else:
                keep.append((name, value))
            self._update(n, xattrs=tuple(sorted(keep)), **changes)

    def removexattr(self, ino: int, name: bytes) -> None:
        with self.db.txn():
            n = self._store(ino)
            if all(k != name for k, _ in n.xattrs):
                raise NoAttr("no such attribute")
            self._update(n, xattrs=tuple((k, v) for k, v in n.xattrs if k != name),
                         ctime_ns=now_ns())
