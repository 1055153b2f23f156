"""Commit: record @head as the next version, then make that version @head's new base.

Owns: turning the dirty part of @head into trees and chunk lists, the commit protocol across the
store's index and the head database, and its recovery. Never imports: daemon, trio, pyfuse3.

Cost follows the change: only dirty names are visited (vfs.head.state), directories are updated
in place (vfs.tree.update_tree), and a written file keeps every base chunk its writes did not
touch; only the windows of base chunks that overlap written blocks, and bytes past the base, are
chunked again. Holes stay holes.

Protocol (the index and the head database cannot share a transaction):
  1. build trees and chunks; put the results (new base of each rebuilt node) into `plan`, with a
     token in meta `pending`, and fsync the head database;
  2. record the version (its `source` is `head:TOKEN`) - the atomic point of the commit;
  3. apply the plan: rebuilt nodes take their new base, dirty marks and whiteouts go, overlays
     of rebuilt files are emptied; clear `pending`.
A crash before 2 leaves the old state (the plan is dropped on open); after 2, `recover` finds the
version by its token and finishes step 3. @head's content is the same either way.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from vfs import schema
from vfs.chunking import Piece, prepare_piece, thread_chunker
from vfs.diff import diff_trees
from vfs.errors import UserError
from vfs.head.fs import HEAD_LINK, HeadFS
from vfs.head.state import HEAD_ROOT, WHITEOUT, HNode
from vfs.ids import ObjectId, ObjType, TreeId
from vfs.model import (
    EMPTY_CONTENT,
    REF_LIST,
    ChunkSpan,
    ContentRef,
    Entry,
    Kind,
    Version,
    VersionStats,
    chunk_list_ref,
    encode_chunk_list,
    ref_kind,
    single_chunk_ref,
)
from vfs.objects import ObjectWriter
from vfs.tree import TreeReader, build_tree, update_tree

DIR_NLINK_META = "dir_nlink"
"""vfs.head.fs's meta key: set once @head's directory link counts are 2 + subdirectories."""
HOLE_MIN = 64 << 10
"""Unwritten runs past the base at least this long are stored as holes."""

Progress = Callable[[int], None]


class NothingToCommit(UserError):
    """`dsfs commit` when @head equals its base."""


@dataclass(frozen=True, slots=True)
class CommitResult:
    version: Version
    files_rebuilt: int
    bytes_chunked: int

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version.name, "number": self.version.number,
                "files_rebuilt": self.files_rebuilt, "bytes_chunked": self.bytes_chunked,
                "new_stored_bytes": self.version.stats.new_stored_bytes}


class _Builder:
    def __init__(self, fs: HeadFS, writer: ObjectWriter, progress: Progress | None) -> None:
        self.fs = fs
        self.db = fs.db
        self.store = fs.store
        self.writer = writer
        self.progress = progress
        self.plan: dict[int, list[Any]] = {}
        """ino -> [new base or None, base size, path in the new version or None]"""
        self.pages: dict[bytes, bytes] = {}
        self.trees = TreeReader(self._get_page)
        self._pending: dict[int, Future[list[ChunkSpan] | None]] = {}
        self._lock = threading.Lock()
        self.files = 0
        self.chunked = 0
        self._contents: dict[int, tuple[bytes, int]] = {}
        self.links_counted = self.db.meta(DIR_NLINK_META) is not None
        """Whether @head's directories hold 2 + their subdirectories as link counts (what
        `vfs.head.fs` keeps from when it first counts them): then entries record them."""

    def _get_page(self, oid: ObjectId, kind: ObjType) -> bytes:
        page = self.pages.get(oid)
        return page if page is not None else self.store.get_object(oid, kind)

    def put(self, kind: ObjType, data: bytes) -> ObjectId:
        oid = self.writer.put_meta(kind, data)
        if kind == ObjType.TREE:
            self.pages[oid] = data
        return oid

    # -- entries -------------------------------------------------------------------------------

    def _plan(self, ino: int, *, base: bytes | None = None, size: int = 0,
              origin: bytes | None = None) -> None:
        row = self.plan.setdefault(ino, [None, 0, None])
        if base is not None:
            row[0], row[1] = base, size
        if origin is not None:
            row[2] = origin

    def plan_rows(self) -> list[tuple[int, bytes | None, int, bytes | None]]:
        return [(ino, b, s, o) for ino, (b, s, o) in self.plan.items()]

    def entry(self, ino: int, name: bytes, path: bytes = b"") -> Entry:
        n = self.db.node(ino)
        assert n is not None, f"dirent to a missing node {ino}"
        if n.origin != path:
            self._plan(ino, origin=path)  # status compares @head with the base by path
        if n.kind == Kind.DIR:
            tree = self._dir_tree(n, path)
            subdirs = n.nlink - 2 if self.links_counted and n.nlink >= 2 else -1
            return Entry(name, Kind.DIR, n.mode, n.uid, n.gid, n.mtime_ns,
                         self.trees.count(tree), tree, n.xattrs, subdirs=subdirs)
        ref = n.base
        allocated = -1
        if n.kind == Kind.FILE:
            if ino not in self._contents:
                self._contents[ino] = self._file_content(n) if n.dirty else \
                    (n.base, self._data_bytes(n.base, n.size))
            ref, allocated = self._contents[ino]
        elif n.kind.special:  # fifos, device nodes, sockets: metadata only
            ref = b""
        link = n.link or (HEAD_LINK | ino if n.nlink > 1 else 0)
        return Entry(name, n.kind, n.mode, n.uid, n.gid, n.mtime_ns, n.size, ref, n.xattrs,
                     link, max(n.nlink, 1), n.rdev if n.kind in (Kind.CHR, Kind.BLK) else 0,
                     allocated=allocated)

    def _data_bytes(self, ref: bytes, size: int) -> int:
        """What a new entry records as the data bytes of an unchanged content (a chunk list's
        are read from it: one small object, and only for the names this commit visits)."""
        return self.store.contents.allocated(ContentRef(ref), size) \
            if ref_kind(ContentRef(ref)) == REF_LIST else size

    def _dir_tree(self, n: HNode, path: bytes) -> TreeId:
        base = TreeId(n.base) if n.base else None
        if not n.dirty and base is not None:
            return base
        changes: dict[bytes, Entry | None] = {}
        for name, child in self.db.dirty_dirents(n.ino):
            changes[name] = None if child == WHITEOUT else \
                self.entry(child, name, path + b"/" + name if path else name)
        if base is None and not changes:
            tree = build_tree([], self.put)
        else:
            tree = update_tree(self.trees, base, changes, self.put)
        if tree != n.base:
            self._plan(n.ino, base=tree)
        return tree

    # -- file contents ---------------------------------------------------------------------------

    def start_files(self, pool: ThreadPoolExecutor) -> None:
        """Chunk every changed file in worker threads, before the trees are built."""
        stack = [HEAD_ROOT]
        while stack:
            ino = stack.pop()
            for _, child in self.db.dirty_dirents(ino):
                n = self.db.node(child) if child != WHITEOUT else None
                if n is None or not n.dirty or child in self._pending:
                    continue
                if n.kind == Kind.DIR:
                    stack.append(child)
                elif n.kind == Kind.FILE:
                    self._pending[child] = pool.submit(self._file_spans, n)

    def _file_content(self, n: HNode) -> tuple[bytes, int]:
        """The content ref of a changed file and its data bytes (holes excluded)."""
        future = self._pending.get(n.ino)
        spans = future.result() if future is not None else self._file_spans(n)
        if spans is None:
            return n.base, self._data_bytes(n.base, n.size)
        ref = bytes(self._ref(spans))
        self._plan(n.ino, base=ref, size=n.size)
        self.files += 1
        if self.progress is not None:
            self.progress(1)
        return ref, sum(s.length for s in spans if s.cid is not None)

    def _file_spans(self, n: HNode) -> list[ChunkSpan] | None:
        """The new chunk list of a changed file (None: its content is the base's). Any
        thread: base chunks no write touched are kept, the rest is chunked again."""
        base_spans = self.store.contents.spans(ContentRef(n.base), n.base_size) if n.base else []
        written = self.fs.overlays.data_ranges(n.ino, 0, n.size)
        if not written and n.base_len == n.base_size == n.size:
            return None
        spans: list[ChunkSpan] = []
        window: int | None = None  # start of the run of base spans being rechunked
        pos = 0
        w = 0
        base_data: list[tuple[int, int]] = []  # the base's data (not holes) below base_len
        for span in base_spans:
            if span.cid is not None and pos < n.base_len:
                base_data.append((pos, min(pos + span.length, n.base_len)))
            pos += span.length
        pos = 0
        for span in base_spans:
            start, end = pos, pos + span.length
            pos = end
            if start >= n.size:
                break
            while w < len(written) and written[w][1] <= start:
                w += 1
            touched = w < len(written) and written[w][0] < end
            clean = end <= n.base_len and end <= n.size and not touched
            if clean:
                if window is not None:
                    spans.extend(self._chunk_window(n, window, start, written, base_data))
                    window = None
                spans.append(span)
            elif window is None:
                window = start
        if window is None:
            window = min(pos, n.size)
        if window < n.size:
            spans.extend(self._chunk_window(n, window, n.size, written, base_data))
        return spans

    def _ref(self, spans: list[ChunkSpan]) -> ContentRef:
        if not spans:
            return EMPTY_CONTENT
        if len(spans) == 1 and spans[0].cid is not None:
            return single_chunk_ref(spans[0].cid)
        rows = encode_chunk_list(spans)
        return chunk_list_ref(self.put(ObjType.CHUNKLIST, schema.enc_msg(rows)))

    def _chunk_window(self, n: HNode, start: int, end: int, written: list[tuple[int, int]],
                      base_data: list[tuple[int, int]]) -> list[ChunkSpan]:
        """Chunk [start, end) of the file's current bytes; runs neither written nor base data
        (past the base, or the base's own holes) are holes."""
        out: list[ChunkSpan] = []
        for a, b, is_data in _runs(start, end, base_data, written):
            if not is_data:
                out.append(ChunkSpan(None, b - a))
                continue

            def read_into(view: memoryview, at: int) -> int:
                return self.fs.read_into(n, view, at)

            with self.writer.known_checker() as is_known:
                for piece in thread_chunker(self.store.config.chunk).extent(read_into, a, b):
                    p = prepare_piece(Piece(piece.length, piece.data), is_known,
                                      self.writer.zstd_level, self.writer)
                    out.append(ChunkSpan(p.cid, p.length))
            with self._lock:
                self.chunked += b - a
        return out


def _runs(start: int, end: int, base_data: list[tuple[int, int]],
          written: list[tuple[int, int]]) -> list[tuple[int, int, bool]]:
    """Split [start, end) into data runs and hole runs (neither written nor base data, long)."""
    data: list[tuple[int, int]] = []
    for a, b in [*base_data, *written]:
        a, b = max(a, start), min(b, end)
        if a < b:
            data.append((a, b))
    data.sort()
    merged: list[list[int]] = []
    for a, b in data:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out: list[tuple[int, int, bool]] = []
    pos = start
    for a, b in merged:
        if a > pos:
            out.append((pos, a, False))
        out.append((a, b, True))
        pos = b
    if pos < end:
        out.append((pos, end, False))
    # short gaps are not worth a hole: fold them into the data around them
    folded: list[tuple[int, int, bool]] = []
    for a, b, is_data in out:
        if not is_data and b - a < HOLE_MIN:
            is_data = True
        if folded and folded[-1][2] == is_data:
            folded[-1] = (folded[-1][0], b, is_data)
        else:
            folded.append((a, b, is_data))
    return folded


def _stats(builder: _Builder, base: Version, root: TreeId) -> VersionStats:
    s = base.stats
    files, dirs, links, logical, xattrs = s.files, s.dirs, s.symlinks, s.logical_bytes, \
        s.xattr_entries
    base_root = base.root if base.root_entry.ref else build_tree([], builder.put)
    for change in diff_trees(cast(Any, builder), base_root, root):
        for e, sign in ((change.old, -1), (change.new, 1)):
            if e is None:
                continue
            if e.kind == Kind.FILE:
                files += sign
                logical += sign * e.size
            elif e.kind == Kind.DIR:
                dirs += sign
            elif e.kind == Kind.SYMLINK:
                links += sign
            if e.xattrs:
                xattrs += sign
    w = builder.writer.stats
    return VersionStats(files=files, dirs=dirs, symlinks=links, logical_bytes=logical,
                        new_chunks=w.new_objects, new_stored_bytes=w.new_stored_bytes,
                        reused_files=0, xattr_entries=xattrs)


def commit(fs: HeadFS, message: str, tag: str | None = None, allow_empty: bool = False,
           progress: Progress | None = None) -> CommitResult:
    """Record @head as a new version and rebase @head onto it. Mutations of @head must be
    paused by the caller for the duration (reads may go on)."""
    store, db = fs.store, fs.db
    if tag is not None:
        store.check_tag_name(tag)
        if tag in store.tags():
            raise UserError(f"tag {tag!r} already exists: choose another name or "
                            f"`dsfs tag --delete {tag}` first")
    root = db.node(HEAD_ROOT)
    assert root is not None
    if not root.dirty and not allow_empty:
        raise NothingToCommit(f"nothing to commit: @head equals {fs.base.name} "
                              "(use --allow-empty to record it anyway)")
    with store.writer_lock():
        writer = store.new_writer()
        try:
            builder = _Builder(fs, writer, progress)
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 2,
                                    thread_name_prefix="dsfs-commit") as pool:
                try:
                    builder.start_files(pool)
                    root_entry = builder.entry(HEAD_ROOT, b"")
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
            stats = _stats(builder, fs.base, root_entry.tree)
            token = secrets.token_hex(16)
            db.put_plan(builder.plan_rows())
            db.set_meta("pending", token)
            # the plan and token must be durable before the version is: recovery finds its
            # way by them. The overlays' bytes first (data before the sizes that describe
            # it), all at once: one fsync a file cost a big commit seconds
            db.sync(synced_from=fs.overlays.sync_filesystem())
            version = store.record_version(writer, root_entry, message, stats,
                                           source=f"head:{token}", parent=fs.base.number,
                                           tag=tag)
        except BaseException:
            writer.abort()
            db.clear_plan()
            db.set_meta("pending", None)
            raise
    apply_plan(fs, version)
    return CommitResult(version, builder.files, builder.chunked)


def apply_plan(fs: HeadFS, version: Version) -> None:
    """Step 3: the committed version becomes @head's base."""
    db = fs.db
    cleared: list[int] = []
    with db.txn():
        for ino, base, base_size, origin in db.plan():
            n = db.node(ino)
            if n is None:
                continue
            if origin is not None:
                n = n.with_(origin=origin)
            if base is not None and n.kind == Kind.FILE:
                n = n.with_(base=base, base_size=base_size, base_len=base_size)
                cleared.append(ino)
            elif base is not None:
                n = n.with_(base=base)
            db.put_node(n)
        db.clear_dirty()
        db.clear_plan()
        db.set_meta("base", version.number)
        db.set_meta("pending", None)
        # the overlays to discard, recorded with the clean marks: after a crash before the
        # discards finish, the next open finishes them instead of taking those (committed)
        # bytes for writes whose dirty marks were lost (vfs.head.session)
        db.set_meta(DISCARD, schema.enc_msg(cleared) if cleared else None)
    try:
        _discard(fs, cleared)
    finally:
        fs.rebase(version)  # head.db says so already: serve it, even if a discard failed
    fs.overlays.purge_trash_in_background()


DISCARD = "discard"
"""head.db meta: overlays a commit made part of its version, not yet discarded."""


def _discard(fs: HeadFS, inos: list[int]) -> None:
    for ino in inos:
        with fs.file_locks.held(ino):
            fs.overlays.discard(ino)
    fs.overlays.sync_dirs()
    fs.db.set_meta(DISCARD, None)


def finish_discards(fs: HeadFS) -> int:
    """At open: discard what a commit cut short by a crash left (see apply_plan)."""
    raw = fs.db.meta(DISCARD)
    if raw is None:
        return 0
    inos = [int(i) for i in schema.dec_msg(bytes(raw))]
    _discard(fs, inos)
    return len(inos)


def recover(fs: HeadFS) -> Version | None:
    """Finish or drop a commit interrupted by a crash. Returns the version it finished."""
    finish_discards(fs)
    token = fs.db.meta("pending")
    if token is None:
        return None
    source = f"head:{token}"
    for v in reversed(fs.store.versions()):
        if v.source == source:
            apply_plan(fs, v)
            return v
    fs.db.clear_plan()
    fs.db.set_meta("pending", None)
    return None

