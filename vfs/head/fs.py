"""@head as a filesystem: POSIX operations over the base version plus the stored overlay.

Owns: the semantics of every operation on @head (lookup, create, write, rename, unlink...), the
inode numbers of @head (head-local; `vfs.inodes` maps them into the mount), copy-up of base
entries into stored nodes, and dirty marking for status and commit. Raises `vfs.errors.FsError`
subclasses. Never imports: daemon, trio, pyfuse3.

A name not touched since the base is served from the base version's trees and gets a number from
the same counter as stored nodes (kept in memory while the kernel holds it). The first change
below or at a name stores its node and pins the path above it (`_store`), so a node keeps its
number for good. Threads: every method runs in one thread (the daemon's trio thread), except
the data path inherited from `vfs.head.data.HeadData` (read, write_data, truncate_data,
read_into), which may run in worker threads under each file's lock; attributes live in
`vfs.head.attrs`. The lock order is written down in `vfs.lockorder`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from vfs.errors import (
    Exists,
    Invalid,
    IsADir,
    NameTooLong,
    NoEntry,
    NotADir,
    NotEmpty,
    NotPermitted,
    StaleHandle,
)
from vfs.head.attrs import HeadAttrs, now_ns
from vfs.head.data import FileLocks
from vfs.head.overlay import Overlays
from vfs.head.state import HEAD_ROOT, WHITEOUT, HeadDB, HNode
from vfs.ids import TreeId
from vfs.model import ContentRef, Entry, Kind, Version
from vfs.store import Store
from vfs.view import BLOCK, Attr, blocks_of

HEAD_TIMEOUT = 10.0
HEAD_LINK = 1 << 48
"""Hard-link group ids of links made in @head (import numbers its groups from 1)."""
NAME_MAX = 255
_DIR_NLINK = "dir_nlink"
"""Meta key: the stored directories' link counts are 2 + subdirectories (see _count_dir_links)."""


@dataclass(slots=True, eq=False)
class Live:
    """An inode the kernel may hold. `entry` is set while the node is not stored."""

    ino: int
    parent: int
    name: bytes
    entry: Entry | None
    origin: bytes
    """Path in the base version (for rename detection in status)."""
    lookups: int = 0


@dataclass(slots=True, eq=False)
class HeadDirHandle:
    ino: int
    names: list[bytes] | None = None


@dataclass(slots=True, eq=False)
class HeadFileHandle:
    ino: int
    writable: bool
    append: bool = False
    wrote: bool = False


def virtual_node(ino: int, entry: Entry, origin: bytes, subdirs: int = 0) -> HNode:
    """The node a base entry would be if stored now (`subdirs`: a directory's subdirectories,
    its link count is 2 + that)."""
    size = entry.size if entry.kind in (Kind.FILE, Kind.SYMLINK) else 0
    return HNode(ino, entry.kind, entry.mode, entry.uid, entry.gid, entry.mtime_ns,
                 entry.mtime_ns, size, entry.nlink if entry.kind != Kind.DIR else 2 + subdirs,
                 entry.ref, size if entry.kind == Kind.FILE else 0,
                 size if entry.kind == Kind.FILE else 0, entry.xattrs, entry.link, False, origin,
                 entry.rdev, entry.mtime_ns)


class HeadFS(HeadAttrs):
    """Operations on @head. Inode numbers here are head-local (the root is HEAD_ROOT)."""

    def __init__(self, store: Store, db: HeadDB, overlays: Overlays, base: Version,
                 file_locks: FileLocks | None = None) -> None:
        self.store = store
        self.db = db
        self.overlays = overlays
        self.base = base
        self.live: dict[int, Live] = {}
        self._keys: dict[tuple[object, ...], int] = {}
        self._next = db.next_ino()
        self.open_count: dict[int, int] = {}
        self.file_locks = file_locks or FileLocks()
        """Shared with the HeadFS that replaces this one (reset): a read still running in the
        old one and the discard of its overlay exclude each other."""
        self._link_paths: dict[int, list[bytes]] | None = None
        root = db.node(HEAD_ROOT)
        assert root is not None, "head state without a root (vfs.head.session creates it)"
        self.live[HEAD_ROOT] = Live(HEAD_ROOT, 0, b"", None, b"", lookups=1)
        if db.meta(_DIR_NLINK) is None:
            self._count_dir_links()

    # -- nodes -------------------------------------------------------------------------------

    def reserve_numbers(self) -> None:
        """Before this state is replaced (reset): numbers handed out in memory, which the
        kernel may still hold, must never be handed out again."""
        self.db.reserve_ino(self._next - 1)

    def _new_ino(self) -> int:
        ino = self._next
        self._next += 1
        return ino

    def node(self, ino: int) -> HNode:
        """The current state of a node, stored or not."""
        stored = self.db.node(ino)
        if stored is not None:
            return stored
        live, entry = self._unstored(ino)
        return self._virtual(ino, entry, live.origin)

    def _virtual(self, ino: int, entry: Entry, origin: bytes) -> HNode:
        subdirs = self.store.trees.subdir_count(entry.tree) if entry.kind == Kind.DIR and \
            entry.ref else 0
        return virtual_node(ino, entry, origin, subdirs)

    def _count_dir_links(self) -> None:
        """Set every stored directory's link count to 2 + its subdirectories: once per state
        (the root a reset stores, and directories a dsfs before link counting stored with 2);
        from then on mkdir, rmdir and rename keep them."""
        with self.db.txn():
            for ino in self.db.all_inos():
                n = self.db.node(ino)
                if n is None or n.kind != Kind.DIR:
                    continue
                base = _tree(n.base) if n.base else None
                count = self.store.trees.subdir_count(base) if base is not None else 0
                for name, child, _ in self.db.dirents(ino):
                    old = self.store.trees.lookup(base, name) if base is not None else None
                    if old is not None and old.kind == Kind.DIR:
                        count -= 1
                    c = self.db.node(child) if child != WHITEOUT else None
                    if c is not None and c.kind == Kind.DIR:
                        count += 1
                if n.nlink != 2 + count and n.nlink > 0:
                    self.db.put_node(n.with_(nlink=2 + count))
            self.db.set_meta(_DIR_NLINK, 1)

    def _unstored(self, ino: int) -> tuple[Live, Entry]:
        """The kernel-held inode of a base entry not stored yet, with that entry."""
        live = self.live.get(ino)
        if live is None or live.entry is None:
            raise StaleHandle(f"@head inode {ino} is not known")
        return live, live.entry

    def attr(self, n: HNode) -> Attr:
        if n.kind == Kind.FILE:
            size, used = n.size, self._allocated(n)
        elif n.kind == Kind.SYMLINK:
            size, used = n.size, n.size
        elif n.kind == Kind.DIR:
            size, used = BLOCK, BLOCK
        else:  # fifos, device nodes, sockets: no content
            size, used = 0, 0
        return Attr(n.ino, n.mode, n.nlink, n.uid, n.gid, size, blocks_of(used), n.mtime_ns,
                    n.ctime_ns, HEAD_TIMEOUT, n.atime_ns, n.rdev)

    def getattr(self, ino: int) -> Attr:
        return self.attr(self.node(ino))

    def _base_child(self, parent: int, entry: Entry, origin: bytes) -> int:
        if entry.link:
            stored = self.db.link_ino(entry.link)
            if stored is not None:
                return stored
            key: tuple[object, ...] = ("l", entry.link)
        else:
            key = ("n", parent, entry.name)
        ino = self._keys.get(key)
        if ino is None:
            ino = self._new_ino()
            self._keys[key] = ino
            self.live[ino] = Live(ino, parent, entry.name, entry, origin)
        return ino

    def _child(self, parent: int, name: bytes) -> int | None:
        """The inode a name of a directory resolves to now, or None."""
        p = self.node(parent)
        if p.kind != Kind.DIR:
            raise NotADir("not a directory")
        if self.db.node(parent) is not None:
            found = self.db.dirent(parent, name)
            if found is not None:
                return found[0] if found[0] != WHITEOUT else None
        if not p.base:
            return None
        entry = self.store.trees.lookup(_tree(p.base), name)
        if entry is None:
            return None
        return self._base_child(parent, entry, _join(p.origin or b"", name))

    def _must_child(self, parent: int, name: bytes) -> int:
        ino = self._child(parent, name)
        if ino is None:
            raise NoEntry("no such file or directory")
        return ino

    def lookup(self, parent: int, name: bytes) -> tuple[int, Attr]:
        _check_name(name)
        ino = self._must_child(parent, name)
        return ino, self.getattr(ino)

    def remember(self, ino: int, count: int = 1) -> None:
        live = self.live.get(ino)
        if live is None:
            live = self.live[ino] = Live(ino, 0, b"", None, b"")
        live.lookups += count

    def forget(self, ino: int, count: int) -> None:
        live = self.live.get(ino)
        if live is None or ino == HEAD_ROOT:
            return
        live.lookups -= count
        if live.lookups <= 0:
            del self.live[ino]
            if live.entry is not None:
                key = ("l", live.entry.link) if live.entry.link else ("n", live.parent, live.name)
                if self._keys.get(key) == ino:
                    del self._keys[key]
            self._reap(ino)

    def _reap(self, ino: int) -> None:
        """Delete a stored node nothing refers to any more (no name, no kernel ref, not open)."""
        n = self.db.node(ino)
        if n is None or ino in self.live or self.open_count.get(ino):
            return
        if n.nlink <= 0 or (n.kind == Kind.DIR and not self.db.names_of(ino)):
            self.db.delete_node(ino)
            self.overlays.remove(ino)

    # -- storing and dirty marks ---------------------------------------------------------------

    def _store(self, ino: int) -> HNode:
        """Store a node (and pin the path above it) so it can change."""
        stored = self.db.node(ino)
        if stored is not None:
            return stored
        live, entry = self._unstored(ino)
        self._store(live.parent)
        node = self._virtual(ino, entry, live.origin)
        with self.db.txn():
            self.db.put_node(node)
            self.db.put_dirent(live.parent, entry.name, ino, dirty=False)
            self.db.reserve_ino(ino)
            if entry.link:
                self.db.put_link(entry.link, ino)
                for path in self._group_paths(entry.link):
                    if path != live.origin:
                        self._pin(path, entry.link, ino)
        key = ("l", entry.link) if entry.link else ("n", live.parent, entry.name)
        if self._keys.get(key) == ino:
            del self._keys[key]
        live.entry = None
        return node

    def _pin(self, path: bytes, link: int, ino: int) -> None:
        """Point another base name of a hard-link group at the group's stored node."""
        parts = path.split(b"/")
        parent = HEAD_ROOT
        for part in parts[:-1]:
            child = self._child(parent, part)
            if child is None or self.node(child).kind != Kind.DIR:
                return
            parent = child
        if self.db.node(parent) is None:
            self._store(parent)
        if self.db.dirent(parent, parts[-1]) is None:
            self.db.put_dirent(parent, parts[-1], ino, dirty=False)

    def _group_paths(self, link: int) -> list[bytes]:
        if self._link_paths is None:
            groups: dict[int, list[bytes]] = {}
            if not self.base.root_entry.ref:
                return []
            stack: list[tuple[bytes, Entry]] = [(b"", self.base.root_entry)]
            while stack:
                path, dentry = stack.pop()
                for e in self.store.trees.entries(dentry.tree):
                    child = _join(path, e.name)
                    if e.kind == Kind.DIR:
                        stack.append((child, e))
                    elif e.link:
                        groups.setdefault(e.link, []).append(child)
            self._link_paths = groups
        return self._link_paths.get(link, [])

    def _update(self, node: HNode, **changes: object) -> HNode:
        """Write a changed node and mark it (and the names above it) dirty."""
        new = node.with_(dirty=True, **changes)
        with self.db.txn():
            self.db.put_node(new)
            if not node.dirty:
                for parent, name in self.db.names_of(node.ino):
                    self._dirty_name(parent, name)
        return new

    def _dirty_name(self, parent: int, name: bytes) -> None:
        found = self.db.dirent(parent, name)
        if found is not None and not found[1]:
            self.db.mark_dirent_dirty(parent, name)
        p = self.db.node(parent)
        if p is not None and not p.dirty:
            self._update(p)

    def _touch_dir(self, parent: int, subdirs: int = 0) -> None:
        """A directory's names changed: new mtime and ctime; `subdirs` directories more (or
        fewer) in it change its link count."""
        t = now_ns()
        p = self._store(parent)
        self._update(p, mtime_ns=t, ctime_ns=t, nlink=p.nlink + subdirs)

    def _unbind(self, parent: int, name: bytes) -> None:
        """Remove a name from a stored directory (a whiteout if the base has it)."""
        p = self._store(parent)
        in_base = bool(p.base) and self.store.trees.lookup(_tree(p.base), name) is not None
        if in_base:
            self.db.put_dirent(parent, name, WHITEOUT, dirty=True)
        else:
            self.db.delete_dirent(parent, name)
        self._dirty_name(parent, name)

    def _bind(self, parent: int, name: bytes, ino: int) -> None:
        self._store(parent)
        self.db.put_dirent(parent, name, ino, dirty=True)
        self._dirty_name(parent, name)

    # -- creating names ------------------------------------------------------------------------

    def _new_node(self, parent: int, name: bytes, kind: Kind, mode: int, uid: int, gid: int,
                  base: bytes = b"", size: int = 0, rdev: int = 0) -> tuple[int, Attr]:
        _check_name(name)
        if self._child(parent, name) is not None:
            raise Exists("file exists")
        p = self.node(parent)
        if p.mode & stat.S_ISGID:
            gid = p.gid
            if kind == Kind.DIR:
                mode |= stat.S_ISGID
        t = now_ns()
        ino = self._new_ino()
        node = HNode(ino, kind, mode, uid, gid, t, t, size, 2 if kind == Kind.DIR else 1, base,
                     0, 0, (), 0, True, None, rdev, t)
        with self.db.txn():
            self.db.put_node(node)
            self.db.reserve_ino(ino)
            self._bind(parent, name, ino)
            self._touch_dir(parent, 1 if kind == Kind.DIR else 0)
        return ino, self.attr(node)

    def create(self, parent: int, name: bytes, mode: int, uid: int, gid: int
               ) -> tuple[int, Attr]:
        return self._new_node(parent, name, Kind.FILE, stat.S_IFREG | stat.S_IMODE(mode), uid,
                              gid)

    def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> tuple[int, Attr]:
        return self._new_node(parent, name, Kind.DIR, stat.S_IFDIR | stat.S_IMODE(mode), uid,
                              gid)

    def mknod(self, parent: int, name: bytes, mode: int, uid: int, gid: int, rdev: int = 0
              ) -> tuple[int, Attr]:
        """A file, fifo, device node or socket. Device nodes and sockets are metadata only
        (kind, mode, rdev); the mount is nodev, so a device node here opens nothing."""
        if stat.S_ISREG(mode) or stat.S_IFMT(mode) == 0:
            return self.create(parent, name, mode, uid, gid)
        kind = Kind.from_mode(mode)
        if kind is None or not kind.special:
            raise Invalid("mknod makes files, fifos, device nodes and sockets")
        if kind not in (Kind.CHR, Kind.BLK):
            rdev = 0
        return self._new_node(parent, name, kind, stat.S_IFMT(mode) | stat.S_IMODE(mode), uid,
                              gid, rdev=rdev)

    def symlink(self, parent: int, name: bytes, target: bytes, uid: int, gid: int
                ) -> tuple[int, Attr]:
        return self._new_node(parent, name, Kind.SYMLINK, stat.S_IFLNK | 0o777, uid, gid,
                              base=target, size=len(target))

    def link(self, ino: int, parent: int, name: bytes) -> Attr:
        _check_name(name)
        n = self.node(ino)
        if n.kind == Kind.DIR:
            raise NotPermitted("hard links to directories are not allowed")
        if self._child(parent, name) is not None:
            raise Exists("file exists")
        with self.db.txn():
            n = self._store(ino)
            n = self._update(n, nlink=n.nlink + 1, ctime_ns=now_ns(),
                             link=n.link or HEAD_LINK | ino)
            self._bind(parent, name, ino)
            self._touch_dir(parent)
        return self.attr(n)

    def readlink(self, ino: int) -> bytes:
        n = self.node(ino)
        if n.kind != Kind.SYMLINK:
            raise Invalid("not a symlink")
        return n.base

    # -- removing and renaming -----------------------------------------------------------------

    def unlink(self, parent: int, name: bytes) -> None:
        ino = self._must_child(parent, name)
        if self.node(ino).kind == Kind.DIR:
            raise IsADir("is a directory")
        with self.db.txn():
            n = self._store(ino)
            self._unbind(parent, name)
            self._touch_dir(parent)
            self._drop_link(n)

    def _drop_link(self, n: HNode) -> None:
        n = self._update(n, nlink=n.nlink - 1, ctime_ns=now_ns())
        if n.nlink <= 0:
            self._reap(n.ino)

    def rmdir(self, parent: int, name: bytes) -> None:
        ino = self._must_child(parent, name)
        if self.node(ino).kind != Kind.DIR:
            raise NotADir("not a directory")
        if self._has_children(ino):
            raise NotEmpty("directory not empty")
        with self.db.txn():
            n = self._store(ino)
            self._unbind(parent, name)
            self._touch_dir(parent, -1)
            self.db.put_node(n.with_(nlink=0))
            for child_name, _, _ in self.db.dirents(ino):
                self.db.delete_dirent(ino, child_name)
            self._reap(ino)

    def _has_children(self, ino: int) -> bool:
        return next(iter(self.names(ino)), None) is not None

    def _parent_dir(self, ino: int) -> int | None:
        if ino == HEAD_ROOT:
            return None
        names = self.db.names_of(ino)
        if names:
            return names[0][0]
        live = self.live.get(ino)
        return live.parent if live is not None and live.entry is not None else None

    def _is_within(self, ino: int, ancestor: int) -> bool:
        current: int | None = ino
        while current is not None:
            if current == ancestor:
                return True
            current = self._parent_dir(current)
        return False

    def rename(self, p1: int, n1: bytes, p2: int, n2: bytes, noreplace: bool = False,
               exchange: bool = False) -> None:
        _check_name(n2)
        src = self._must_child(p1, n1)
        dst = self._child(p2, n2)
        if exchange:
            if dst is None:
                raise NoEntry("no such file or directory")
            self._exchange(p1, n1, src, p2, n2, dst)
            return
        if dst is not None and noreplace:
            raise Exists("file exists")
        if dst == src:
            return
        s = self.node(src)
        if s.kind == Kind.DIR and self._is_within(p2, src):
            raise Invalid("cannot move a directory into itself")
        if dst is not None:
            d = self.node(dst)
            if s.kind == Kind.DIR and d.kind != Kind.DIR:
                raise NotADir("not a directory")
            if s.kind != Kind.DIR and d.kind == Kind.DIR:
                raise IsADir("is a directory")
            if d.kind == Kind.DIR and self._has_children(dst):
                raise NotEmpty("directory not empty")
        with self.db.txn():
            s = self._store(src)
            dnode = self._store(dst) if dst is not None else None
            self._unbind(p1, n1)
            self._bind(p2, n2, src)
            self._update(s, ctime_ns=now_ns())
            moved = 1 if s.kind == Kind.DIR else 0  # the link counts of both parents change
            replaced = 1 if dnode is not None and dnode.kind == Kind.DIR else 0
            if p2 != p1:
                self._touch_dir(p1, -moved)
                self._touch_dir(p2, moved - replaced)
            else:
                self._touch_dir(p1, -replaced)
            if dnode is not None:
                if dnode.kind == Kind.DIR:
                    self.db.put_node(dnode.with_(nlink=0))
                    self._reap(dnode.ino)
                else:
                    self._drop_link(dnode)

    def _exchange(self, p1: int, n1: bytes, src: int, p2: int, n2: bytes, dst: int) -> None:
        if src == dst:
            return
        if (self.node(src).kind == Kind.DIR and self._is_within(p2, src)) or \
                (self.node(dst).kind == Kind.DIR and self._is_within(p1, dst)):
            raise Invalid("cannot move a directory into itself")
        with self.db.txn():
            s = self._store(src)
            d = self._store(dst)
            self._bind(p1, n1, dst)
            self._bind(p2, n2, src)
            # p1 gains dst and loses src (and p2 the reverse): link counts follow the kinds
            gain = (d.kind == Kind.DIR) - (s.kind == Kind.DIR) if p1 != p2 else 0
            self._touch_dir(p1, gain)
            self._touch_dir(p2, -gain)

    # -- attributes ------------------------------------------------------------------------------

    # -- directories -----------------------------------------------------------------------------

    def names(self, ino: int) -> Iterator[bytes]:
        """The names of a directory now, in byte order (base tree merged with stored names)."""
        n = self.node(ino)
        if n.kind != Kind.DIR:
            raise NotADir("not a directory")
        stored = self.db.dirents(ino) if self.db.node(ino) is not None else []
        base = self.store.trees.entries(_tree(n.base)) if n.base else iter(())
        over = iter(stored)
        o = next(over, None)
        for e in base:
            while o is not None and o[0] < e.name:
                if o[1] != WHITEOUT:
                    yield o[0]
                o = next(over, None)
            if o is not None and o[0] == e.name:
                if o[1] != WHITEOUT:
                    yield o[0]
                o = next(over, None)
                continue
            yield e.name
        while o is not None:
            if o[1] != WHITEOUT:
                yield o[0]
            o = next(over, None)

    def opendir(self, ino: int) -> HeadDirHandle:
        if self.node(ino).kind != Kind.DIR:
            raise NotADir("not a directory")
        return HeadDirHandle(ino)

    def readdir(self, handle: HeadDirHandle, offset: int) -> Iterator[tuple[bytes, int, Attr,
                                                                              int]]:
        """(name, ino, attr, next offset) from `offset` on; the listing is a snapshot of the
        names at the first call, each resolved again when it is returned."""
        if handle.names is None or offset == 0:
            handle.names = list(self.names(handle.ino))
        for i in range(offset, len(handle.names)):
            name = handle.names[i]
            ino = self._child(handle.ino, name)
            if ino is None:
                continue
            yield name, ino, self.getattr(ino), i + 1

    # -- files -----------------------------------------------------------------------------------

    def open(self, ino: int, writable: bool, truncate: bool, append: bool) -> HeadFileHandle:
        n = self.node(ino)
        if n.kind == Kind.DIR:
            raise IsADir("is a directory")
        if truncate and writable:
            self.setattr(ino, size=0)
        self.open_count[ino] = self.open_count.get(ino, 0) + 1
        return HeadFileHandle(ino, writable, append)

    def release(self, handle: HeadFileHandle) -> None:
        left = self.open_count.get(handle.ino, 1) - 1
        if left <= 0:
            self.open_count.pop(handle.ino, None)
            self._reap(handle.ino)
        else:
            self.open_count[handle.ino] = left

    def rebase(self, version: Version) -> None:
        """A commit made `version` the base (the stored nodes were updated by the caller)."""
        self.base = version
        self._link_paths = None

    def path_of(self, ino: int) -> str:
        """`@head/dir/file` for messages (one of its names for a hard link)."""
        parts: list[bytes] = []
        current = ino
        for _ in range(4096):
            if current == HEAD_ROOT:
                break
            names = self.db.names_of(current)
            if names:
                current, name = names[0]
            else:
                live = self.live.get(current)
                if live is None or live.entry is None:
                    break
                current, name = live.parent, live.name
            parts.append(name)
        return "@head/" + os.fsdecode(b"/".join(reversed(parts)))

    def write(self, handle: HeadFileHandle, offset: int, data: bytes) -> int:
        """A whole write in the calling thread (prepare, write_data, finish_write)."""
        node, offset = self.prepare_write(handle, offset)
        copied = self.write_data(node, offset, data)
        self.finish_write(handle.ino, offset, len(data), copied)
        return len(data)

    def prepare_write(self, handle: HeadFileHandle, offset: int) -> tuple[HNode, int]:
        """Store the node, settle the offset (O_APPEND); returns the node to write into."""
        n = self._store(handle.ino)
        if n.kind != Kind.FILE:
            raise Invalid("not a regular file")
        if handle.append:
            offset = n.size
        if not n.dirty:
            # marked before the bytes land: a crash between the two must not leave bytes that
            # @head serves but status and commit would not see
            n = self._update(n)
        return n, offset

    def finish_write(self, ino: int, offset: int, length: int, copied: bool = False) -> None:
        n = self.node(ino)
        t = now_ns()
        changes: dict[str, object] = {"mtime_ns": t, "ctime_ns": t,
                                      "size": max(n.size, offset + length)}
        if copied:
            changes["base_len"] = 0
        self._update(n, **changes)

def _check_name(name: bytes) -> None:
    if len(name) > NAME_MAX:
        raise NameTooLong("file name too long")
    if not name or b"/" in name or name in (b".", b".."):
        raise Invalid("invalid name")


def _join(path: bytes, name: bytes) -> bytes:
    return path + b"/" + name if path else name


def _tree(base: bytes) -> TreeId:
    return TreeId(base)


def _content(base: bytes) -> ContentRef:
    return ContentRef(base)
