"""The version model's value types: directory entries, file contents, versions, ref events.

Owns: the meaning and msgpack encoding of every metadata object stored in packs.
Never imports: daemon, trio, pyfuse3. Pure values, usable from any thread.

A file's content is named by a ContentRef:
  * b""                       an empty file
  * b"\\x01" + chunk id        a file that is exactly one chunk (most small files)
  * b"\\x02" + chunk-list id   a chunk list object: [[chunk id or nil for a hole, length], ...]
Identical files therefore have identical refs, whatever their names or versions.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NewType

import blake3
import msgpack

from vfs.ids import ID_LEN, ChunkId, ObjectId, TreeId

ContentRef = NewType("ContentRef", bytes)
EMPTY_CONTENT = ContentRef(b"")
REF_CHUNK = 1
REF_LIST = 2


def single_chunk_ref(cid: ChunkId) -> ContentRef:
    return ContentRef(bytes([REF_CHUNK]) + cid)


def chunk_list_ref(oid: ObjectId) -> ContentRef:
    return ContentRef(bytes([REF_LIST]) + oid)


def ref_kind(ref: ContentRef) -> int:
    return ref[0] if ref else 0


def ref_id(ref: ContentRef) -> ObjectId:
    return ObjectId(bytes(ref[1:1 + ID_LEN]))


class Kind(IntEnum):
    FILE = 1
    DIR = 2
    SYMLINK = 3
    FIFO = 4
    CHR = 5
    BLK = 6
    SOCK = 7
    """Device nodes and sockets are metadata only (kind, mode, rdev): no content is stored."""

    @classmethod
    def from_mode(cls, mode: int) -> Kind | None:
        return _KIND_OF_FORMAT.get(stat.S_IFMT(mode))

    @property
    def special(self) -> bool:
        """A fifo, device node or socket: a name with attributes and no content."""
        return self in (Kind.FIFO, Kind.CHR, Kind.BLK, Kind.SOCK)

    @property
    def letter(self) -> str:
        return {Kind.FILE: "-", Kind.DIR: "d", Kind.SYMLINK: "l", Kind.FIFO: "p", Kind.CHR: "c",
                Kind.BLK: "b", Kind.SOCK: "s"}[self]


_KIND_OF_FORMAT = {stat.S_IFREG: Kind.FILE, stat.S_IFDIR: Kind.DIR, stat.S_IFLNK: Kind.SYMLINK,
                   stat.S_IFIFO: Kind.FIFO, stat.S_IFCHR: Kind.CHR, stat.S_IFBLK: Kind.BLK,
                   stat.S_IFSOCK: Kind.SOCK}


Xattrs = tuple[tuple[bytes, bytes], ...]


@dataclass(slots=True, unsafe_hash=True)
class Entry:
    """One name in a directory. Never changed once made: decoded entries are shared by the
    cache of tree pages (make a new one with `dataclasses.replace`).

    `ref` is the ContentRef of a file, the TreeId of a directory, the target of a symlink.
    `size` is the byte size of a file or symlink target, the number of entries of a directory.
    `link` is non-zero for files that were hard links of each other (same value in one version).

    Not a frozen dataclass only for speed: its __init__ sets each field through
    object.__setattr__, which made decoding an entry 4x slower and dominated listing a big
    directory (profile in the commit that changed it).
    """

    name: bytes
    kind: Kind
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int
    ref: bytes
    xattrs: Xattrs = ()
    link: int = 0
    nlink: int = 1
    """For hard-linked files, the link count the source reported (what `stat` shows)."""
    rdev: int = 0
    """The device number of a device node (0 for every other kind)."""
    allocated: int = field(default=-1, compare=False)
    """A file with a chunk list: the bytes that hold data, holes excluded (what `st_blocks`
    counts). -1: not recorded (entries written before dsfs recorded it); only the chunk list
    tells then. Other files need no record: one chunk is all data, an empty file none."""
    subdirs: int = field(default=-1, compare=False)
    """A directory: how many of its entries are directories (its link count is 2 + this).
    -1: not recorded (older entries); only the tree's pages tell then.

    `allocated` and `subdirs` follow from the content, so equality ignores them: an entry that
    records them equals one written before they were recorded."""

    def encode(self) -> list[Any]:
        row = [self.name, int(self.kind), self.mode, self.uid, self.gid, self.mtime_ns,
               self.size, self.ref, [list(x) for x in self.xattrs] or None, self.link]
        # optional trailing fields, written only when not their default, so entries (and the
        # ids of the trees holding them) stay what older dsfs wrote; older dsfs reads the
        # fields it knows and ignores the rest
        fact = self.fact()
        if fact >= 0:
            row += [self.nlink, self.rdev, fact]
        elif self.nlink != 1 or self.rdev:
            row.append(self.nlink)
            if self.rdev:
                row.append(self.rdev)
        return row

    def fact(self) -> int:
        """What row[12] records: `allocated` of a file with a chunk list, `subdirs` of a
        directory, -1 for anything else or when not known."""
        if self.kind is _DIR:
            return self.subdirs
        if self.kind is _FILE and self.ref[:1] == _REF_LIST_BYTE:
            return self.allocated
        return -1

    @classmethod
    def decode(cls, row: list[Any]) -> Entry:
        if len(row) == 10:  # the common row (a file of one chunk): half the time of the rest
            name, kind, mode, uid, gid, mtime_ns, size, ref, xattrs, link = row
            k = _KINDS.get(kind)
            if k is not None and type(name) is bytes and type(ref) is bytes and not xattrs:
                return cls(name, k, mode, uid, gid, mtime_ns, size, ref, (), link)
        name, kind, mode, uid, gid, mtime_ns, size, ref, xattrs, link = row[:10]
        xa: Xattrs = tuple((bytes(k), bytes(v)) for k, v in xattrs) if xattrs else ()
        n = len(row)
        k = _KINDS.get(kind)
        if k is None:
            raise ValueError(f"{kind!r} is not a valid Kind")
        fact = row[12] if n > 12 and type(row[12]) is int and row[12] >= 0 else -1
        return cls(bytes(name), k, mode, uid, gid, mtime_ns, size, bytes(ref), xa, link,
                   row[10] if n > 10 else 1, row[11] if n > 11 else 0,
                   fact if k is _FILE else -1, fact if k is _DIR else -1)

    def data_bytes(self) -> int:
        """The bytes of this entry that hold data, holes excluded (what `st_blocks` counts),
        or -1 when only the file's chunk list can tell (an entry written before dsfs recorded
        it)."""
        kind = self.kind
        if kind is _FILE:
            if self.ref[:1] == _REF_LIST_BYTE:
                return self.allocated
            return self.size if self.ref else 0
        return self.size if kind is Kind.SYMLINK else 0

    @property
    def tree(self) -> TreeId:
        assert self.kind == Kind.DIR
        return TreeId(self.ref)

    @property
    def content(self) -> ContentRef:
        assert self.kind == Kind.FILE
        return ContentRef(self.ref)


_REF_LIST_BYTE = bytes([REF_LIST])
_KINDS: dict[int, Kind] = {int(k): k for k in Kind}
_FILE, _DIR = Kind.FILE, Kind.DIR


@dataclass(frozen=True, slots=True)
class ChunkSpan:
    """A piece of a file: a chunk id, or None for a hole of zeros."""

    cid: ChunkId | None
    length: int


def encode_chunk_list(spans: list[ChunkSpan]) -> list[Any]:
    return [[s.cid, s.length] for s in spans]


def decode_chunk_list(rows: list[Any]) -> list[ChunkSpan]:
    return [ChunkSpan(ChunkId(bytes(c)) if c is not None else None, n) for c, n in rows]


@dataclass(frozen=True, slots=True)
class VersionStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    logical_bytes: int = 0
    new_chunks: int = 0
    new_stored_bytes: int = 0
    reused_files: int = 0
    xattr_entries: int = 0
    """Entries carrying extended attributes (the mount serves xattrs only if some do)."""

    def to_dict(self) -> dict[str, int]:
        return {"files": self.files, "dirs": self.dirs, "symlinks": self.symlinks,
                "logical_bytes": self.logical_bytes, "new_chunks": self.new_chunks,
                "new_stored_bytes": self.new_stored_bytes, "reused_files": self.reused_files,
                "xattr_entries": self.xattr_entries}

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> VersionStats:
        return cls(**{k: int(v) for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class Version:
    """An immutable recorded version. `root_entry` describes the top directory itself."""

    number: int
    root_entry: Entry
    parent: int
    time_ns: int
    message: str
    author: str
    stats: VersionStats = field(default_factory=VersionStats)
    source: str = ""
    repair: Repair | None = None
    """Set when `dsfs verify --repair` rewrote this version without files whose data was gone."""
    pulled_ns: int = 0
    """When `dsfs pull` recorded this record here (a version from a remote, or one of this
    store's renumbered after the remote's); 0 for a record written where the version was made.
    Of several records of one number in the packs, a rebuild keeps the newest."""

    @property
    def name(self) -> str:
        return f"v{self.number}"

    @property
    def root(self) -> TreeId:
        return self.root_entry.tree

    def to_record(self) -> dict[str, Any]:
        record = {"n": self.number, "root": self.root_entry.encode(), "parent": self.parent,
                  "time_ns": self.time_ns, "message": self.message, "author": self.author,
                  "stats": self.stats.to_dict(), "source": self.source}
        if self.repair is not None:
            record["repair"] = self.repair.to_record()
        if self.pulled_ns:
            record["pulled_ns"] = self.pulled_ns
        return record

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Version:
        repair = d.get("repair")
        return cls(number=int(d["n"]), root_entry=Entry.decode(d["root"]),
                   parent=int(d["parent"]), time_ns=int(d["time_ns"]),
                   message=str(d["message"]), author=str(d["author"]),
                   stats=VersionStats.from_dict(d["stats"]), source=str(d.get("source", "")),
                   repair=Repair.from_record(repair) if repair is not None else None,
                   pulled_ns=int(d.get("pulled_ns", 0)))

    @property
    def repaired_ns(self) -> int:
        """When this record was written by a repair (0 for the record the version began with)."""
        return self.repair.time_ns if self.repair is not None else 0

    @property
    def identity(self) -> bytes:
        """What makes this version itself on every store: its tree, time, message and author
        (a renumbered version keeps it; number, parent and bookkeeping are not part of it)."""
        return blake3.blake3(msgpack.packb(
            [self.root_entry.encode(), self.time_ns, self.message, self.author],
            use_bin_type=True)).digest()

    @property
    def precedence(self) -> tuple[int, int]:
        """Of two records of one number, the one with the greater precedence is the version."""
        return (self.repaired_ns, self.pulled_ns)


@dataclass(frozen=True, slots=True)
class LostPath:
    """A file or directory a repair removed from a version: its data was gone."""

    path: bytes
    problem: str


@dataclass(frozen=True, slots=True)
class Repair:
    """What a repair did to a version. The newest record of a version number wins."""

    time_ns: int
    lost: tuple[LostPath, ...]
    original_root: bytes
    """The tree the version had before (its readable parts stay until `dsfs gc`)."""

    def to_record(self) -> dict[str, Any]:
        return {"time_ns": self.time_ns, "lost": [[x.path, x.problem] for x in self.lost],
                "original_root": self.original_root}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Repair:
        return cls(int(d["time_ns"]), tuple(LostPath(bytes(p), str(m)) for p, m in d["lost"]),
                   bytes(d["original_root"]))


@dataclass(frozen=True, slots=True)
class RefEvent:
    """A change of the version log kept in packs so the index can be rebuilt: tag, untag, drop."""

    op: str
    version: int
    name: str
    time_ns: int

    def to_record(self) -> dict[str, Any]:
        return {"op": self.op, "version": self.version, "name": self.name, "time_ns": self.time_ns}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> RefEvent:
        return cls(str(d["op"]), int(d["version"]), str(d["name"]), int(d["time_ns"]))


def replay_events(events: list[RefEvent]) -> tuple[dict[str, int], dict[int, int]]:
    """The tags (name -> version) and drops (version -> time) a log of ref events leaves,
    replayed in time order (a drop before a tag of the same instant)."""
    tags: dict[str, int] = {}
    dropped: dict[int, int] = {}
    for ev in sorted(events, key=lambda e: (e.time_ns, e.op != "drop")):
        if ev.op == "tag":
            tags[ev.name] = ev.version
        elif ev.op == "untag":
            if tags.get(ev.name) == ev.version:
                del tags[ev.name]
        elif ev.op == "drop":
            dropped[ev.version] = ev.time_ns
    return tags, dropped
