"""The read-only view of every version: the protocol-neutral core of the mount.

Owns: what the mount shows (the root with `@v1..@vN`, `@latest` and one symlink per tag; each
version's tree below its `@vN`), attributes, directory listings, reads and xattrs, in dsfs's own
types, and which versions the mount pins (`vfs.locks`) because the kernel holds their inodes.
Raises `vfs.errors.FsError` subclasses; `daemon.errors` alone maps them to errno.
Never imports: daemon, trio, pyfuse3.

Threads: every method runs in the trio thread except `read_blocking`, `read_parts_blocking` and
`prefetch`, which may block on disk and decompression and run in worker threads (they touch
only thread-safe parts of the store: the object reader and the chunk cache; concurrent loads of
one chunk are shared, `vfs.content`), and the `load` of a `WouldBlock`.

Never waiting: `lookup`, `getattr`/`attr`, `node`, `readdir`/`readdirplus`, `readlink`,
`listxattr`/`getxattr` and `open` take `wait`. With wait=False they read nothing that is not in
memory (decoded tree pages, chunk lists, the facts of entries written before dsfs recorded them,
the version's pin): they raise `vfs.errors.WouldBlock` before changing anything, and its `load`,
run in a worker thread, reads what was missing into the caches (it touches the store's
thread-safe parts and the pins, never the inode table). The event loop then makes the same call
again. Entries record what `stat` needs (`Entry.allocated`, `Entry.subdirs`), so a warm call,
and a listing of a directory whose pages are cached, raises nothing.

Pins follow lookup counts: `remember` and `forget` count, per version, the references the kernel
holds to its files and directories, and the version stays pinned while any are held, so gc keeps
a dropped version's data while the kernel can still read it (with zero-message opens an open file
is known only as an inode the kernel holds). `lookup` and `readdir` take the pin before they hand
out a node, and refuse a version dropped since the last `refresh` (the race `vfs.locks` covers).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

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
    WouldBlock,
)
from vfs.ids import ChunkId, TreeId
from vfs.inodes import ROOT_INO, InodeTable, Node, Role, file_ino, split_file_ino
from vfs.locks import VersionPins
from vfs.model import REF_CHUNK, REF_LIST, ContentRef, Entry, Kind, Version, ref_id, ref_kind
from vfs.store import Store

LONG_TIMEOUT = 24 * 3600.0
DAMAGED_HINT = "run `dsfs verify` to see what else is damaged"
ROOT_TIMEOUT = 1.0
BLOCK = 4096
PREFETCH_MAX = 32 << 20
"""How far a long sequential read of one file plans ahead at most."""
PREFETCH_CHUNKS = 8
"""Chunks one read may start prefetching at most (each one costs a worker thread's turn)."""
MAX_LAYOUT_SPANS = 1 << 18
"""Chunk-list spans of the layouts kept for `open` (~100 bytes each): 16,000 files of two or
three chunks, or one 128 GiB file."""
MAX_MEMO = 1 << 16
"""Data sizes of files whose entries do not record them (stores written before that)."""

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


@dataclass(slots=True)
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
    """Root listing snapshot; version directories are listed from their trees by position."""
    cursor: Iterator[Entry] | None = None
    """Unused (listings start at their offset each call); kept for callers that reset it."""
    position: int = 0


@dataclass(slots=True, eq=False)
class FileHandle:
    node: Node
    layout: FileContent | None
    next_offset: int = 0
    """Where the last read ended: a read starting here is sequential and triggers prefetch."""
    ahead: int = 0
    """How far the current sequential run reads ahead (0: not sequential): `prefetch_plan`."""
    planned_to: int = 0
    """The file offset up to which prefetch of the current run has been planned."""


class _Lru(Generic[K, V]):
    """A small thread-safe LRU bounded by the sum of its values' costs."""

    def __init__(self, max_cost: int, cost: Callable[[V], int]) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._cost = cost
        self._max = max_cost
        self._total = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._total += self._cost(value)
            while self._total > self._max and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._total -= self._cost(old)


def blocks_of(used: int) -> int:
    """st_blocks (512-byte units) of `used` bytes of data, rounded up to whole 4 KiB blocks as a
    local filesystem allocates them."""
    return (used + BLOCK - 1) // BLOCK * (BLOCK // 512)


def _root_entry(uid: int, gid: int) -> Entry:
    return Entry(b"", Kind.DIR, stat.S_IFDIR | 0o555, uid, gid, time.time_ns(), 0, b"")


def _link_entry(name: bytes, target: bytes, when: int, uid: int, gid: int) -> Entry:
    return Entry(name, Kind.SYMLINK, stat.S_IFLNK | 0o777, uid, gid, when, len(target), target)


# enum members as module constants: `Kind.DIR` is a class attribute lookup through the enum's
# metaclass, 0.15 us each on Python 3.11, several per lookup
_ROOT, _IN_VERSION, _VERSION_DIR = Role.ROOT, Role.IN_VERSION, Role.VERSION_DIR
_DIR, _FILE, _SYMLINK = Kind.DIR, Kind.FILE, Kind.SYMLINK


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
        """Versions whose inodes the kernel holds keep their data from gc after a drop."""
        self._remembered: dict[int, int] = {}
        """version -> references the kernel holds to its files and directories (not @vN)"""
        self._layouts: _Lru[bytes, FileContent] = _Lru(MAX_LAYOUT_SPANS,
                                                       lambda fc: len(fc.spans) + 1)
        self._data_bytes: _Lru[bytes, int] = _Lru(MAX_MEMO, lambda _: 1)
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

    def _root_child(self, name: bytes, wait: bool) -> tuple[Node, Attr]:
        for child, target in self._root_targets():
            if child != name:
                continue
            if target is None:
                n = int(name[2:])
                root = self.versions[n].root_entry
                entry = Entry(name, Kind.DIR, root.mode, root.uid, root.gid, root.mtime_ns,
                              root.size, root.ref, root.xattrs, subdirs=root.subdirs)
                facts = self._facts(entry, n, wait)  # before the node: a WouldBlock leaves none
                node = self.inodes.node_for(("v", n), Role.VERSION_DIR, entry, n)
                return node, self._attr(node, facts)
            when = self.versions[int(target[2:])].time_ns
            entry = _link_entry(name, target, when, self.uid, self.gid)
            node = self.inodes.node_for(("link", name), Role.ROOT_LINK, entry, 0)
            return node, self._attr(node, (1, entry.size, entry.size))
        raise NoEntry(f"no {os.fsdecode(name)} in the mount root")

    # -- nodes and attributes --------------------------------------------------------------

    def node(self, ino: int, *, wait: bool = True) -> Node:
        """The node of an inode the kernel holds; StaleHandle if its version was dropped."""
        return self._node(ino, wait, kept=False)

    def _node(self, ino: int, wait: bool, kept: bool) -> Node:
        """`kept`: a node of a version dropped since is fine while the kernel holds some of
        its inodes (the version is pinned: its data is still there)."""
        node = self.inodes.get(ino)
        if node is not None:
            self._check_live(node, kept)
            return node
        where = split_file_ino(ino)
        if where is not None:
            parent = self.inodes.get(where[0])
            if parent is not None and parent.entry.kind is _DIR:
                self._check_live(parent, kept)
                tree, index, version = parent.entry.tree, where[1], parent.version
                entry = self._tree(version, lambda w: self.store.trees.entry_at(tree, index, w),
                                   wait)
                if entry is not None:
                    return Node(ino, _IN_VERSION, entry, version, None, parent.ino)
        raise StaleHandle(f"inode {ino} is not known")

    def _check_live(self, node: Node, kept: bool = False) -> None:
        """A path of a dropped version is gone (ESTALE), even where the kernel still holds it;
        with `kept`, only once the kernel holds nothing of it (its data may be gone)."""
        if (node.role is _IN_VERSION or node.role is _VERSION_DIR) \
                and node.version not in self.versions \
                and not (kept and self._remembered.get(node.version)):
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

    def _tree(self, version: int, call: Callable[[bool], T], wait: bool) -> T:
        """`call(wait)` (a read of the store) with a missing object of a dropped version made
        ESTALE, also when it happens in the load of a WouldBlock. (Not `dropped_is_stale`:
        a generator-based context manager cost a microsecond per lookup.)"""
        try:
            return call(wait)
        except WouldBlock as exc:
            raise WouldBlock(self._stale_load(version, exc.load), str(exc)) from None
        except ObjectMissing:
            if version and self._dropped(version):
                raise StaleHandle(f"v{version} was dropped and gc removed its data") from None
            raise

    def _stale_load(self, version: int, load: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            with self.dropped_is_stale(version):
                load()
        return run

    def _dropped(self, version: int) -> bool:
        try:
            self.store.version(version)
        except UnknownVersion:
            return True
        except CorruptData:
            return False
        return False

    def attr(self, node: Node, *, wait: bool = True) -> Attr:
        return self._attr(node, self._facts(node.entry, node.version, wait, node.role))

    def _facts(self, e: Entry, version: int, wait: bool, role: Role = _IN_VERSION
               ) -> tuple[int, int, int]:
        """(nlink, size, bytes holding data) of an entry: what `stat` shows beyond the entry.

        Entries record them; for those written before dsfs did, the tree's pages or the file's
        chunk list tell (cached; with wait=False a WouldBlock when not)."""
        kind = e.kind
        if kind is _FILE:
            used = e.data_bytes()
            if used < 0:
                used = self._chunk_list_data(e, version, wait)
            return e.nlink, e.size, used
        if kind is _DIR:
            if role is _ROOT:
                return 2 + len(self.versions), BLOCK, BLOCK
            subdirs = e.subdirs
            if subdirs < 0:
                tree = e.tree
                subdirs = self._tree(version, lambda w: self.store.trees.subdir_count(tree, w),
                                     wait) if e.ref else 0
            return 2 + subdirs, BLOCK, BLOCK
        if kind is _SYMLINK:
            return e.nlink, e.size, e.size
        return e.nlink, 0, 0  # fifos, device nodes, sockets: no content (as local filesystems)

    def _chunk_list_data(self, e: Entry, version: int, wait: bool) -> int:
        """Data bytes of a file whose entry does not record them, from its chunk list."""
        ref = e.content
        found = self._data_bytes.get(ref)
        if found is not None:
            return found

        def load() -> int:
            with self.dropped_is_stale(version):
                used = self.store.contents.allocated(ref, e.size)
            self._data_bytes.put(ref, used)
            return used

        if not wait:
            raise WouldBlock(load, "a chunk list")
        return load()

    @staticmethod
    def _attr(node: Node, facts: tuple[int, int, int]) -> Attr:
        e = node.entry
        nlink, size, used = facts
        role = node.role
        return Attr(node.ino, e.mode, nlink, e.uid, e.gid, size,
                    (used + BLOCK - 1) // BLOCK * (BLOCK // 512), e.mtime_ns, e.mtime_ns,
                    LONG_TIMEOUT if role is _IN_VERSION or role is _VERSION_DIR else ROOT_TIMEOUT,
                    None, e.rdev)

    def child_node(self, parent: Node, entry: Entry, index: int) -> Node:
        """The node of the entry at `index` of directory `parent`.

        Plain files, symlinks and fifos get a positional inode and no table entry; directories
        get a table node (one per path); hard links one per link group of a version.
        """
        if entry.kind is not _DIR and not entry.link:
            ino = file_ino(parent.ino, index)
            if ino is not None:
                return Node(ino, _IN_VERSION, entry, parent.version, None, parent.ino)
        if entry.kind is _DIR:
            key: object = ("d", parent.ino, entry.name)
        elif entry.link:
            key = ("l", parent.version, entry.link)
        else:
            key = ("f", parent.ino, entry.name)
        return self.inodes.node_for(key, _IN_VERSION, entry, parent.version, parent.ino)

    def lookup(self, parent_ino: int, name: bytes, *, wait: bool = True) -> tuple[Node, Attr]:
        """Find a name; the caller must `remember` the node if the kernel takes the reply."""
        parent = self.node(parent_ino, wait=wait)
        if parent.entry.kind is not _DIR:
            raise NotADir("not a directory")
        if parent.role is _ROOT:
            return self._root_child(name, wait)
        version = parent.version
        try:
            found = self.store.trees.lookup_with_index(TreeId(parent.entry.ref), name, wait)
        except WouldBlock as exc:
            raise WouldBlock(self._stale_load(version, exc.load), str(exc)) from None
        except ObjectMissing:
            if self._dropped(version):
                raise StaleHandle(f"v{version} was dropped and gc removed its data") from None
            raise
        if found is None:
            raise NoEntry("no such file")
        if not self._remembered.get(version):
            self._pin_for(version, wait)
        facts = self._facts(found[0], version, wait)  # before the node: a WouldBlock makes none
        node = self.child_node(parent, *found)
        return node, self._attr(node, facts)

    def is_immutable(self, ino: int) -> bool:
        node = self.inodes.get(ino)
        return node is not None and node.role in (Role.VERSION_DIR, _IN_VERSION)

    # -- lookup counts and pins ------------------------------------------------------------

    def remember(self, node: Node, count: int = 1) -> None:
        """The kernel took `count` references to `node` (a lookup or READDIRPLUS reply). The
        first reference to a version's files or directories pins it; `lookup` and `readdir`
        took the pin already, so this only counts."""
        if not self.inodes.remember(node, count) or node.role != _IN_VERSION \
                or not node.version:
            return
        number = node.version
        before = self._remembered.get(number, 0)
        self._remembered[number] = before + count
        if before == 0:
            version = self.versions.get(number)
            # not held (released since the lookup): take it now; a version dropped since
            # then records no root, so the pin keeps nothing gc could not take anyway
            self.pins.pin(number, version.root if version is not None else b"")

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped `count` references to `ino`. A version it holds nothing of any
        more is unpinned (the next `refresh` lets gc have it)."""
        node, taken = self.inodes.forget(ino, count)
        if node is None or not taken or not node.version:
            return
        if node.ino == ino and node.role != _IN_VERSION:
            return  # @vN itself pins nothing (its positional children do: node is then @vN)
        number = node.version
        left = self._remembered.get(number, 0) - taken
        if left > 0:
            self._remembered[number] = left
        elif self._remembered.pop(number, 0):
            self.pins.unpin(number)
            if number not in self.versions:
                self.pins.release(number)  # dropped: gc may have it now, not a poll later

    def held_names(self, version: int) -> Iterator[tuple[int, bytes]]:
        """(directory inode, name) of every name of `version` the kernel may hold, so that a
        mount can make the kernel let go of a dropped version: invalidating each entry makes
        the kernel forget it, at once if unused, at its last close if open, and the version's
        pin goes with the last forget. Every name of every directory of the version the kernel
        holds (positional files are not tracked one by one; invalidating a name the kernel
        does not hold costs it a hash lookup).

        Call on the event loop (it snapshots the inode table); iterate in a worker thread (it
        reads the directories' pages, which the pin keeps)."""
        dirs = [(n.ino, n.entry.tree) for n in self.inodes.nodes_of(version)
                if n.entry.kind is _DIR and n.entry.ref]
        return self._names_in(version, dirs)

    def _names_in(self, version: int, dirs: list[tuple[int, TreeId]]
                  ) -> Iterator[tuple[int, bytes]]:
        for ino, tree in dirs:
            try:
                with self.dropped_is_stale(version):
                    for entry in self.store.trees.entries(tree):
                        yield ino, entry.name
            except (StaleHandle, CorruptData):
                continue  # gone or damaged: nothing of it can be held past its readable names

    def remembered(self, version: int) -> int:
        """References the kernel holds to files and directories of `version`."""
        return self._remembered.get(version, 0)

    def _pin_for(self, number: int, wait: bool) -> None:
        """Hold `number`'s pin before handing out a node of it. With wait=False a WouldBlock
        when that needs file operations (the first node of a version since its pin was
        released)."""
        if self._remembered.get(number) or self.pins.held(number):
            return
        if not wait:
            raise WouldBlock(lambda: self._take_pin(number), "the version's pin")
        self._take_pin(number)

    def _take_pin(self, number: int) -> None:
        """Take `number`'s pin and leave it held but unused: `remember` counts on it, or the
        next `refresh` releases it. Any thread (the pins are thread-safe). StaleHandle if the
        version was dropped, also when only the index knows it yet: gc may have listed the pins
        before this one, so it cannot count on it (vfs.locks)."""
        version = self.versions.get(number)
        if version is None:
            raise StaleHandle(f"v{number} was dropped")
        took = self.pins.pin(number, version.root)
        try:
            dropped = took and self._dropped(number)
        finally:
            self.pins.unpin(number)
        if dropped:
            self.pins.release(number)  # taken too late to protect anything: not a pin to keep
            raise StaleHandle(f"v{number} was dropped")

    def getattr(self, ino: int, *, wait: bool = True) -> Attr:
        return self.attr(self.node(ino, wait=wait), wait=wait)

    def readlink(self, ino: int, *, wait: bool = True) -> bytes:
        node = self.node(ino, wait=wait)
        if node.entry.kind != Kind.SYMLINK:
            raise NoEntry("not a symlink")
        return node.entry.ref

    # -- directories -----------------------------------------------------------------------

    def opendir(self, ino: int, *, wait: bool = True) -> DirHandle:
        node = self.node(ino, wait=wait)
        if node.entry.kind != Kind.DIR:
            raise NotADir("not a directory")
        return DirHandle(node)

    def readdir(self, handle: DirHandle, offset: int, *, wait: bool = True
                ) -> Iterator[tuple[bytes, Node, int]]:
        """Entries from `offset` on, each with its node and the offset of the next one.

        The caller stops when the kernel's buffer is full and `remember`s each node taken. A
        WouldBlock (wait=False) comes before the entry it concerns: everything yielded before
        it stands, and the call again from the offset after the last entry taken goes on
        there, nothing lost or repeated.
        """
        for name, node, _, nxt in self._listing(handle, offset, wait, False):
            yield name, node, nxt

    def readdirplus(self, handle: DirHandle, offset: int, *, wait: bool = True
                    ) -> Iterator[tuple[bytes, Node, Attr, int]]:
        """`readdir` with each entry's attributes (READDIRPLUS). A WouldBlock for an entry's
        attributes too comes before its node is made."""
        return cast(Iterator[tuple[bytes, Node, Attr, int]],
                    self._listing(handle, offset, wait, True))

    def _listing(self, handle: DirHandle, offset: int, wait: bool, plus: bool
                 ) -> Iterator[tuple[bytes, Node, Attr | None, int]]:
        node = handle.node
        if node.role is _ROOT:
            if handle.names is None or offset == 0:
                handle.names = [(n, None) for n, _ in self._root_targets()]
            for i in range(offset, len(handle.names)):
                name = handle.names[i][0]
                try:
                    child, attr = self._root_child(name, wait)
                except NoEntry:
                    continue  # vanished since the listing began
                yield name, child, attr if plus else None, i + 1
            return
        self._check_live(node)
        version = node.version
        self._pin_for(version, wait)
        facts, make, child_node = self._facts, self._attr, self.child_node
        pos = offset
        try:
            for entry in self.store.trees.entries_from(node.entry.tree, offset, wait):
                attr_facts = facts(entry, version, wait) if plus else None
                child = child_node(node, entry, pos)
                pos += 1
                yield entry.name, child, \
                    make(child, attr_facts) if attr_facts is not None else None, pos
        except WouldBlock as exc:
            raise WouldBlock(self._stale_load(version, exc.load), str(exc)) from None
        except ObjectMissing:
            if self._dropped(version):
                raise StaleHandle(f"v{version} was dropped and gc removed its data") from None
            raise
        finally:
            handle.position = pos

    # -- files -----------------------------------------------------------------------------

    def open(self, ino: int, writing: bool, *, wait: bool = True) -> FileHandle:
        """The read state of a file: its node and chunk layout. Works for a file of a version
        dropped since, while the kernel holds inodes of that version (its pin keeps the data:
        with zero-message opens the kernel reads files it opened before the drop this way)."""
        node = self._node(ino, wait, kept=True)
        if writing:
            raise ReadOnly("versions are read-only")
        if node.entry.kind == Kind.DIR:
            raise IsADir("is a directory")
        layout = None
        e = node.entry
        if ref_kind(e.content) == REF_LIST:
            layout = self._layout(e.content, node.version, wait)
            if layout.size != e.size:
                raise CorruptData(
                    f"{self.path_of(node)}: its chunks hold {layout.size:,} bytes, "
                    f"its entry says {e.size:,}: {DAMAGED_HINT}")
        return FileHandle(node, layout)

    def _layout(self, ref: ContentRef, version: int, wait: bool) -> FileContent:
        found = self._layouts.get(ref)
        if found is not None:
            return found

        def load() -> FileContent:
            with self.dropped_is_stale(version):
                fc = self.store.contents.layout(ref)
            self._layouts.put(ref, fc)
            return fc

        if not wait:
            raise WouldBlock(load, "a chunk list")
        return load()

    def close(self, fh: FileHandle) -> None:
        """The kernel released a file handle. Nothing to do: pins follow lookup counts
        (`remember`/`forget`), not open files."""

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

    def listxattr(self, ino: int, *, wait: bool = True) -> list[bytes]:
        return [k for k, _ in self.node(ino, wait=wait).entry.xattrs]

    def getxattr(self, ino: int, name: bytes, *, wait: bool = True) -> bytes:
        for k, v in self.node(ino, wait=wait).entry.xattrs:
            if k == name:
                return v
        raise NoAttr("no such attribute")

    def statfs(self) -> os.statvfs_result:
        return os.statvfs(self.store.root)


__all__ = ["ROOT_INO", "Attr", "DirHandle", "FileHandle", "VersionsView"]
