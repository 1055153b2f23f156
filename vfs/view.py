"""The read-only view of every version: the protocol-neutral core of the mount.

Owns: what the mount shows (the root with `@v1..@vN`, `@latest` and one symlink per tag; each
version's tree below its `@vN`), attributes, directory listings, reads and xattrs, in dsfs's own
types. Raises `vfs.errors.FsError` subclasses; `daemon.errors` alone maps them to errno.
Never imports: daemon, trio, pyfuse3.

Threads: every method runs in the trio thread except `read_blocking`, `read_parts_blocking` and
`prefetch`, which may block on disk and decompression and run in worker threads (they touch
only thread-safe parts of the store: the object reader and the chunk cache; concurrent loads of
one chunk are shared, `vfs.content`).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vfs.content import FileContent, parts_to_bytes
from vfs.errors import (
    CorruptData,
    IsADir,
    NoAttr,
    NoEntry,
    NotADir,
    ObjectMissing,
    ReadOnly,
    StaleHandle,
    UnknownVersion,
)
from vfs.ids import ChunkId
from vfs.inodes import ROOT_INO, InodeTable, Node, Role, file_ino, split_file_ino
from vfs.locks import VersionPins
from vfs.model import REF_CHUNK, REF_LIST, Entry, Kind, Version, ref_id, ref_kind
from vfs.store import Store

LONG_TIMEOUT = 24 * 3600.0
DAMAGED_HINT = "run `dsfs verify` to see what else is damaged"
ROOT_TIMEOUT = 1.0
BLOCK = 4096
PREFETCH_MAX = 32 << 20
"""How far a long sequential read of one file plans ahead at most."""
PREFETCH_CHUNKS = 8
"""Chunks one read may start prefetching at most (each one costs a worker thread's turn)."""


@dataclass(frozen=True, slots=True)
class Attr:
    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    blocks: int
    mtime_ns: int
    ctime_ns: int
    timeout: float
    atime_ns: int | None = None
    """None: the same as mtime (versions do not record atime)."""
    rdev: int = 0


@dataclass(slots=True, eq=False)
class DirHandle:
    node: Node
    names: list[tuple[bytes, Entry | None]] | None = None
    """Root listing snapshot; version directories are listed from their trees."""
    cursor: Iterator[Entry] | None = None
    position: int = 0


@dataclass(slots=True, eq=False)
class FileHandle:
    node: Node
    layout: FileContent | None
    next_offset: int = 0
    """Where the last read ended: a read starting here is sequential and triggers prefetch."""
    pinned: int = 0
    """The version whose pin this handle counts in (0: none); `close` releases it."""
    ahead: int = 0
    """How far the current sequential run reads ahead (0: not sequential): `prefetch_plan`."""
    planned_to: int = 0
    """The file offset up to which prefetch of the current run has been planned."""


def blocks_of(used: int) -> int:
    """st_blocks (512-byte units) of `used` bytes of data, rounded up to whole 4 KiB blocks as a
    local filesystem allocates them."""
    return (used + BLOCK - 1) // BLOCK * (BLOCK // 512)


def _root_entry(uid: int, gid: int) -> Entry:
    return Entry(b"", Kind.DIR, stat.S_IFDIR | 0o555, uid, gid, time.time_ns(), 0, b"")


def _link_entry(name: bytes, target: bytes, when: int, uid: int, gid: int) -> Entry:
    return Entry(name, Kind.SYMLINK, stat.S_IFLNK | 0o777, uid, gid, when, len(target), target)


class VersionsView:
    """Every version side by side, read-only."""

    def __init__(self, store: Store, uid: int | None = None, gid: int | None = None) -> None:
        self.store = store
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self.inodes = InodeTable()
        self.root = self.inodes.add_root(_root_entry(self.uid, self.gid))
        self.versions: dict[int, Version] = {}
        self.tags: dict[str, int] = {}
        self.pins = VersionPins(store.root)
        """Files open in a version keep its data from gc after a drop (vfs.locks)."""
        self.refresh()

    # -- the root --------------------------------------------------------------------------

    def refresh(self) -> list[bytes]:
        """Re-read the version log; return the root names that appeared, vanished or changed."""
        versions = {v.number: v for v in self.store.versions()}
        tags = self.store.tags()
        before = dict(self._root_targets())
        self.versions, self.tags = versions, tags
        after = dict(self._root_targets())
        # a version directory maps to None: a name present on one side only has changed too
        changed = [n for n in before.keys() | after.keys()
                   if n not in before or n not in after or before[n] != after[n]]
        self.pins.release_idle()
        if changed:
            newest = max((v.time_ns for v in versions.values()), default=time.time_ns())
            self.root.entry = Entry(b"", Kind.DIR, self.root.entry.mode, self.uid, self.gid,
                                    newest, 0, b"")
        return sorted(changed)

    def _root_targets(self) -> Iterator[tuple[bytes, bytes | None]]:
        """(name, symlink target or None for a version directory) for the root listing."""
        if self.versions:
            yield b"@latest", f"@v{max(self.versions)}".encode()
        for name, n in sorted(self.tags.items()):
            if n in self.versions:
                yield f"@{name}".encode(), f"@v{n}".encode()
        for n in sorted(self.versions):
            yield f"@v{n}".encode(), None

    def _root_child(self, name: bytes) -> Node:
        for child, target in self._root_targets():
            if child != name:
                continue
            if target is None:
                n = int(name[2:])
                v = self.versions[n]
                root = v.root_entry
                entry = Entry(name, Kind.DIR, root.mode, root.uid, root.gid, root.mtime_ns,
                              root.size, root.ref, root.xattrs)
                return self.inodes.node_for(("v", n), Role.VERSION_DIR, entry, n)
            when = self.versions[int(target[2:])].time_ns
            entry = _link_entry(name, target, when, self.uid, self.gid)
            return self.inodes.node_for(("link", name), Role.ROOT_LINK, entry, 0)
        raise NoEntry(f"no {os.fsdecode(name)} in the mount root")

    # -- nodes and attributes --------------------------------------------------------------

    def node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is not None:
            self._check_live(node)
            return node
        where = split_file_ino(ino)
        if where is not None:
            parent = self.inodes.get(where[0])
            if parent is not None and parent.entry.kind == Kind.DIR:
                self._check_live(parent)
                with self.dropped_is_stale(parent.version):
                    entry = self.store.trees.entry_at(parent.entry.tree, where[1])
                if entry is not None:
                    return Node(ino, Role.IN_VERSION, entry, parent.version, None, parent.ino)
        raise StaleHandle(f"inode {ino} is not known")

    def _check_live(self, node: Node) -> None:
        """A path of a dropped version is gone (ESTALE), even where the kernel still holds it."""
        if node.role in (Role.VERSION_DIR, Role.IN_VERSION) and node.version not in self.versions:
            raise StaleHandle(f"v{node.version} was dropped")

    @contextmanager
    def dropped_is_stale(self, version: int) -> Iterator[None]:
        """A missing object of a version dropped meanwhile is no damage: gc removed it (ESTALE).

        Only damage stays CorruptData, whose log line says "damaged data"."""
        try:
            yield
        except ObjectMissing:
            if version and self._dropped(version):
                raise StaleHandle(f"v{version} was dropped and gc removed its data") from None
            raise

    def _dropped(self, version: int) -> bool:
        try:
            self.store.version(version)
        except UnknownVersion:
            return True
        except CorruptData:
            return False
        return False

    def attr(self, node: Node) -> Attr:
        e = node.entry
        immutable = node.role in (Role.VERSION_DIR, Role.IN_VERSION)
        nlink = e.nlink
        if e.kind == Kind.DIR:
            size, used = BLOCK, BLOCK
            if node.role == Role.ROOT:
                nlink = 2 + len(self.versions)
            else:
                nlink = 2 + (self.store.trees.subdir_count(e.tree) if e.ref else 0)
        elif e.kind == Kind.FILE:
            size, used = e.size, self.store.contents.allocated(e.content, e.size)
        elif e.kind == Kind.SYMLINK:
            size, used = e.size, e.size
        else:  # fifos, device nodes, sockets: no content (as local filesystems report)
            size, used = 0, 0
        return Attr(node.ino, e.mode, nlink, e.uid, e.gid, size, blocks_of(used), e.mtime_ns,
                    e.mtime_ns, LONG_TIMEOUT if immutable else ROOT_TIMEOUT, rdev=e.rdev)

    def child_node(self, parent: Node, entry: Entry, index: int) -> Node:
        """The node of the entry at `index` of directory `parent`.

        Plain files, symlinks and fifos get a positional inode and no table entry; directories
        get a table node (one per path); hard links one per link group of a version.
        """
        if entry.kind != Kind.DIR and not entry.link:
            ino = file_ino(parent.ino, index)
            if ino is not None:
                return Node(ino, Role.IN_VERSION, entry, parent.version, None, parent.ino)
        if entry.kind == Kind.DIR:
            key: object = ("d", parent.ino, entry.name)
        elif entry.link:
            key = ("l", parent.version, entry.link)
        else:
            key = ("f", parent.ino, entry.name)
        return self.inodes.node_for(key, Role.IN_VERSION, entry, parent.version, parent.ino)

    def lookup(self, parent_ino: int, name: bytes) -> tuple[Node, Attr]:
        """Find a name; the caller must `remember` the node if the kernel takes the reply."""
        parent = self.node(parent_ino)
        if parent.entry.kind != Kind.DIR:
            raise NotADir("not a directory")
        if parent.role == Role.ROOT:
            node = self._root_child(name)
        else:
            with self.dropped_is_stale(parent.version):
                found = self.store.trees.lookup_with_index(parent.entry.tree, name)
            if found is None:
                raise NoEntry("no such file")
            node = self.child_node(parent, *found)
        return node, self.attr(node)

    def is_immutable(self, ino: int) -> bool:
        node = self.inodes.get(ino)
        return node is not None and node.role in (Role.VERSION_DIR, Role.IN_VERSION)

    def remember(self, node: Node, count: int = 1) -> None:
        self.inodes.remember(node, count)

    def forget(self, ino: int, count: int) -> None:
        self.inodes.forget(ino, count)

    def getattr(self, ino: int) -> Attr:
        return self.attr(self.node(ino))

    def readlink(self, ino: int) -> bytes:
        node = self.node(ino)
        if node.entry.kind != Kind.SYMLINK:
            raise NoEntry("not a symlink")
        return node.entry.ref

    # -- directories -----------------------------------------------------------------------

    def opendir(self, ino: int) -> DirHandle:
        node = self.node(ino)
        if node.entry.kind != Kind.DIR:
            raise NotADir("not a directory")
        return DirHandle(node)

    def readdir(self, handle: DirHandle, offset: int) -> Iterator[tuple[bytes, Node, int]]:
        """Entries from `offset` on, each with its node and the offset of the next one.

        The caller stops when the kernel's buffer is full and `remember`s each node taken.
        """
        node = handle.node
        if node.role == Role.ROOT:
            if handle.names is None or offset == 0:
                handle.names = [(n, None) for n, _ in self._root_targets()]
            for i in range(offset, len(handle.names)):
                name = handle.names[i][0]
                try:
                    child = self._root_child(name)
                except NoEntry:
                    continue  # vanished since the listing began
                yield name, child, i + 1
            return
        self._check_live(node)
        if handle.cursor is None or offset != handle.position:
            handle.cursor = self.store.trees.entries_from(node.entry.tree, offset)
            handle.position = offset
        try:
            with self.dropped_is_stale(node.version):
                for entry in handle.cursor:
                    handle.position += 1
                    yield entry.name, self.child_node(node, entry, handle.position - 1), \
                        handle.position
        except BaseException:
            handle.cursor = None  # a failed listing restarts from its offset next time
            raise

    # -- files -----------------------------------------------------------------------------

    def open(self, ino: int, writing: bool) -> FileHandle:
        node = self.node(ino)
        if writing:
            raise ReadOnly("versions are read-only")
        if node.entry.kind == Kind.DIR:
            raise IsADir("is a directory")
        pinned = self._pin(node)
        try:
            layout = None
            with self.dropped_is_stale(node.version):
                if ref_kind(node.entry.content) == REF_LIST:
                    layout = self.store.contents.layout(node.entry.content)
                    if layout.size != node.entry.size:
                        raise CorruptData(
                            f"{self.path_of(node)}: its chunks hold {layout.size:,} bytes, "
                            f"its entry says {node.entry.size:,}: {DAMAGED_HINT}")
        except BaseException:
            if pinned:
                self.pins.unpin(pinned)
            raise
        return FileHandle(node, layout, pinned=pinned)

    def _pin(self, node: Node) -> int:
        """Pin the version of a file being opened; the version it pinned (0 for none)."""
        if node.role != Role.IN_VERSION or not node.version:
            return 0
        version = self.versions.get(node.version)
        if version is None:
            raise StaleHandle(f"v{node.version} was dropped")
        if self.pins.pin(node.version, version.root) and self._dropped(node.version):
            # dropped since the last refresh: gc may not have seen our pin (vfs.locks)
            self.pins.unpin(node.version)
            raise StaleHandle(f"v{node.version} was dropped")
        return node.version

    def close(self, fh: FileHandle) -> None:
        """The kernel released a file handle: its version may be collected once unpinned."""
        if fh.pinned:
            self.pins.unpin(fh.pinned)
            fh.pinned = 0

    def read_cached(self, fh: FileHandle, offset: int, size: int) -> bytes | None:
        """The bytes if every chunk they need is in the cache, else None (then read_blocking).
        Never blocks on disk, decompression or a lock held across either (event loop)."""
        parts = self.read_parts_cached(fh, offset, size)
        return None if parts is None else parts_to_bytes(parts)

    def read_blocking(self, fh: FileHandle, offset: int, size: int) -> bytes:
        """Read through the store (may block on disk and decompression: worker thread)."""
        return parts_to_bytes(self.read_parts_blocking(fh, offset, size))

    def read_parts_cached(self, fh: FileHandle, offset: int, size: int
                          ) -> list[memoryview] | None:
        """Like `read_cached`, as views of the cached chunks (no byte copied): reply with
        `vfs.content.join_parts(parts)`, which copies nothing when the read is one piece."""
        e = fh.node.entry  # an open file pins its version: gc keeps its data
        return self.store.contents.read_parts(e.content, e.size, offset, size, cached_only=True,
                                              layout=fh.layout)

    def read_parts_blocking(self, fh: FileHandle, offset: int, size: int) -> list[memoryview]:
        """Like `read_blocking`, as views of the cached chunks (worker thread)."""
        e = fh.node.entry
        parts = self.store.contents.read_parts(e.content, e.size, offset, size,
                                               layout=fh.layout)
        assert parts is not None
        return parts

    def _chunks_for(self, fh: FileHandle, offset: int, size: int) -> list[ChunkId]:
        """The chunks holding bytes [offset, offset + size) of the file, in order."""
        return [cid for cid, _, _ in self._chunk_spans(fh, offset, size)]

    def _chunk_spans(self, fh: FileHandle, offset: int, size: int
                     ) -> Iterator[tuple[ChunkId, int, int]]:
        """(chunk, start, end in the file) for the chunks holding [offset, offset + size)."""
        e = fh.node.entry
        kind = ref_kind(e.content)
        if kind == REF_CHUNK:
            if offset < e.size:
                yield ChunkId(ref_id(e.content)), 0, e.size
            return
        if kind != REF_LIST or fh.layout is None:
            return
        layout = fh.layout
        i = max(layout.locate(offset), 0)
        end = min(offset + size, layout.size)
        while i < len(layout.spans) and layout.starts[i] < end:
            cid = layout.spans[i].cid
            if cid is not None:
                yield cid, layout.starts[i], layout.starts[i] + layout.spans[i].length
            i += 1

    def prefetch_plan(self, fh: FileHandle, offset: int, size: int, ahead: int) -> list[ChunkId]:
        """Chunks after this read worth loading now, when the reads are sequential.

        The distance read ahead starts at `ahead` and doubles with every sequential read up to
        PREFETCH_MAX (as the kernel's read-ahead does); each call plans only the chunks that
        entered the window since the last one (`fh.planned_to`), at most PREFETCH_CHUNKS, and
        skips those already cached (probing the cache is no use of a chunk). A read elsewhere
        starts over. Event loop: no I/O.
        """
        sequential = offset == fh.next_offset
        fh.next_offset = offset + size
        if not sequential or fh.layout is None:
            fh.ahead = 0
            fh.planned_to = 0
            return []
        fh.ahead = min(max(ahead, fh.ahead * 2), max(ahead, PREFETCH_MAX))
        start = max(offset + size, fh.planned_to)
        stop = min(offset + size + fh.ahead, fh.layout.size)
        if start >= stop:
            return []
        cache = self.store.contents.cache
        out: list[ChunkId] = []
        planned_to = stop
        for cid, begin, end in self._chunk_spans(fh, start, stop - start):
            if len(out) >= PREFETCH_CHUNKS:
                planned_to = max(begin, start)  # this chunk is for a later read to plan
                break
            planned_to = max(planned_to, end)
            if begin >= offset + size and cid not in cache:  # this read loads its own
                out.append(cid)
        fh.planned_to = planned_to
        return out

    def prefetch(self, cid: ChunkId) -> None:
        """Load one chunk into the cache (worker thread), sharing a load in flight, without
        counting a use of it; errors surface on the real read."""
        try:
            self.store.contents.load(cid)
        except Exception:
            return

    def path_of(self, node: Node) -> str:
        """`@v3/dir/file` for logs: follows parents while the kernel still holds them."""
        parts: list[bytes] = []
        current: Node | None = node
        while current is not None and current.role != Role.ROOT:
            parts.append(current.entry.name)
            current = self.inodes.get(current.parent) if current.parent else None
        return os.fsdecode(b"/".join(reversed(parts)))

    # -- xattrs and statfs -----------------------------------------------------------------

    def has_xattrs(self) -> bool:
        """Whether any version holds an extended attribute."""
        return any(v.stats.xattr_entries for v in self.versions.values())

    def listxattr(self, ino: int) -> list[bytes]:
        return [k for k, _ in self.node(ino).entry.xattrs]

    def getxattr(self, ino: int, name: bytes) -> bytes:
        for k, v in self.node(ino).entry.xattrs:
            if k == name:
                return v
        raise NoAttr("no such attribute")

    def statfs(self) -> os.statvfs_result:
        return os.statvfs(self.store.root)


__all__ = ["ROOT_INO", "Attr", "DirHandle", "FileHandle", "VersionsView"]
