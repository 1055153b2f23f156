"""`dsfs import`: record a directory tree as the next version.

Owns: walking the source tree, skipping unchanged files through the file cache, the chunking
pipeline (hashing and compression on worker threads, packs written in order by the calling
thread) and building trees bottom-up. Never imports: daemon, trio, pyfuse3. Runs in the caller's
thread plus a private pool of workers.

The walk is iterative (no recursion limit on depth). Work is queued in walk order: chunk
batches, then "file done" and "directory done" markers, so when a marker is reached everything it
depends on has been written. At most WINDOW bytes are in flight.
"""

from __future__ import annotations

import gc
import os
import stat
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfs import schema
from vfs.chunking import (
    FileResult,
    FileTask,
    Prepared,
    prepare_batch,
    prepare_file,
)
from vfs.errors import CorruptData, UserError
from vfs.ids import ObjType, hash_bytes
from vfs.model import (
    EMPTY_CONTENT,
    REF_CHUNK,
    REF_LIST,
    ChunkSpan,
    ContentRef,
    Entry,
    Kind,
    Version,
    VersionStats,
    Xattrs,
    chunk_list_ref,
    encode_chunk_list,
    ref_id,
    ref_kind,
    single_chunk_ref,
)
from vfs.objects import ObjectWriter
from vfs.progress import NoProgress, Progress
from vfs.store import Store
from vfs.tree import build_tree

WINDOW = 128 << 20
"""Work in flight, counting each file as min(size, BATCH_BYTES): workers write chunks to packs
themselves and return only chunk ids, so this bounds queued work, not memory of file data."""
BATCH_BYTES = 8 << 20
BATCH_ITEMS = 256
INLINE_MAX = 16 << 10
"""Files up to this size are read and stored by the walking thread itself."""
MAX_QUEUED = 8192
"""Bound on queued work items, so a tree of tiny files does not pile up in memory."""


@dataclass(frozen=True, slots=True)
class Skipped:
    path: str
    reason: str


@dataclass
class ImportResult:
    version: Version
    skipped: list[Skipped]
    warnings: list[str]


@dataclass(slots=True, eq=False)
class _Dir:
    rel: bytes
    st: os.stat_result
    xattrs: Xattrs
    parent: _Dir | None
    slot: int
    entries: list[Entry | None] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _File:
    dir: _Dir
    slot: int
    name: bytes
    rel: bytes
    st: os.stat_result
    xattrs: Xattrs
    link: int
    spans: list[Prepared] = field(default_factory=list)
    entry: Entry | None = None
    error: str = ""


def read_xattrs(path: bytes) -> Xattrs:
    """All extended attributes of a path (not following symlinks), sorted by name."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out: list[tuple[bytes, bytes]] = []
    for name in sorted(names):
        try:
            out.append((name.encode(), os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(out)


def _list_dir(path: bytes) -> list[tuple[bytes, os.stat_result]]:
    out: list[tuple[bytes, os.stat_result]] = []
    with os.scandir(path) as it:
        for de in it:
            try:
                out.append((de.name, de.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue
    out.sort(key=lambda t: t[0])
    return out


class Importer:
    """One import run. Use `import_tree`."""

    def __init__(self, store: Store, source: Path, progress: Progress,
                 workers: int | None = None, skip_special: bool = False) -> None:
        self.skip_special = skip_special
        self.store = store
        self.source = source
        self.src = os.fsencode(source)
        self.progress = progress
        self.level = store.config.zstd_level
        self.writer: ObjectWriter = store.new_writer()
        self.pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2,
                                       thread_name_prefix="dsfs-import")
        self.queue: deque[tuple[Any, ...]] = deque()
        self.inflight = 0
        self.batch: list[FileTask] = []
        self.batch_owners: list[_File] = []
        self.batch_bytes = 0
        self.markers: list[tuple[Any, ...]] = []
        self.skipped: list[Skipped] = []
        self.warnings: list[str] = []
        self.cache_updates: dict[bytes, bytes] = {}
        self.links: dict[tuple[int, int], _File] = {}
        self.files = self.dirs = self.symlinks = self.logical = self.reused = 0
        self.xattr_entries = 0
        self.root_entry: Entry | None = None
        st = store.root.stat()
        self.store_ident = (st.st_dev, st.st_ino)

    def _xattrs(self, path: bytes) -> Xattrs:
        found = read_xattrs(path)
        if found:
            self.xattr_entries += 1
        return found

    # -- pipeline --------------------------------------------------------------------------

    def _add_work(self, owner: _File, item: FileTask, nbytes: int) -> None:
        self.batch.append(item)
        self.batch_owners.append(owner)
        self.batch_bytes += nbytes
        if self.batch_bytes >= BATCH_BYTES or len(self.batch) >= BATCH_ITEMS:
            self._flush()

    def _mark(self, *item: Any) -> None:
        if self.batch:
            self.markers.append(item)
        else:
            self.queue.append(item)

    def _flush(self) -> None:
        if self.batch:
            fut = self.pool.submit(prepare_batch, self.batch, self.writer, self.level,
                                   self.store.config.chunk)
            self.queue.append(("batch", fut, self.batch_owners, self.batch_bytes))
            self.inflight += self.batch_bytes
            self.batch, self.batch_owners, self.batch_bytes = [], [], 0
        self.queue.extend(self.markers)
        self.markers = []
        while self.inflight > WINDOW or len(self.queue) > MAX_QUEUED:
            self._drain_one()

    def _drain_one(self) -> None:
        item = self.queue.popleft()
        kind = item[0]
        if kind == "batch":
            _, fut, owners, nbytes = item
            results: list[FileResult] = fut.result()
            self.inflight -= nbytes
            for owner, res in zip(owners, results, strict=True):
                self._take_result(owner, res)
        elif kind == "file":
            self._finish_file(item[1])
        elif kind == "link":
            _, first, job = item
            self._place_link(first.entry, job)
        elif kind == "dir":
            self._finish_dir(item[1])

    def _take_result(self, owner: _File, res: FileResult) -> None:
        if res.error:
            owner.error = res.error
            return
        assert res.st is not None
        owner.st = res.st
        if res.changed:
            self.warnings.append(f"{os.fsdecode(owner.rel)}: modified while being read; "
                                 "import it again for a consistent copy")
        owner.spans = res.spans

    def _drain_all(self) -> None:
        self._flush()
        while self.queue:
            self._drain_one()

    # -- files -----------------------------------------------------------------------------

    def _finish_file(self, job: _File) -> None:
        if job.error:
            self.skipped.append(Skipped(os.fsdecode(job.rel), job.error))
            return
        spans = job.spans
        size = sum(s.length for s in spans)
        ref: ContentRef
        if not spans:
            ref = EMPTY_CONTENT
        elif len(spans) == 1 and spans[0].cid is not None:
            ref = single_chunk_ref(spans[0].cid)
        else:
            rows = encode_chunk_list([ChunkSpan(s.cid, s.length) for s in spans])
            ref = chunk_list_ref(self.writer.put_meta(ObjType.CHUNKLIST, schema.enc_msg(rows)))
        if size != job.st.st_size:
            self.warnings.append(f"{os.fsdecode(job.rel)}: changed size while being read; "
                                 f"recorded the {size} bytes read")
        self._place_file(job, ref, size, sum(s.length for s in spans if s.cid is not None))
        self.cache_updates[schema.filecache_key(self.src, job.rel)] = schema.enc_checked(
            [size, job.st.st_mtime_ns, job.st.st_ino, job.st.st_ctime_ns, ref])
        self.progress.advance(size, 1)

    def _place_file(self, job: _File, ref: ContentRef, size: int, allocated: int) -> None:
        """`allocated`: the bytes holding data (holes excluded), recorded for `stat`."""
        st = job.st
        job.entry = Entry(job.name, Kind.FILE, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                          size, ref, job.xattrs, job.link, st.st_nlink if job.link else 1,
                          allocated=allocated)
        job.dir.entries[job.slot] = job.entry
        self.files += 1
        self.logical += size

    def _place_link(self, first: Entry | None, job: _File) -> None:
        if first is None:
            self.skipped.append(Skipped(os.fsdecode(job.rel), "hard link to a file that "
                                        "could not be read"))
            return
        self._place_file(job, ContentRef(first.ref), first.size, first.allocated)

    def _cached_ref(self, rel: bytes, st: os.stat_result) -> ContentRef | None:
        txn = self.writer.snapshot()
        raw = txn.get(schema.filecache_key(self.src, rel), db=self.store.index.dbs["filecache"])
        cached = schema.dec_checked(raw) if raw is not None else None
        if cached is None:
            return None  # never cached, or the entry is damaged: read the file again
        size, mtime_ns, ino, ctime_ns, ref = cached
        if (size, mtime_ns, ino, ctime_ns) != (st.st_size, st.st_mtime_ns, st.st_ino,
                                               st.st_ctime_ns):
            return None
        ref = ContentRef(bytes(ref))
        if ref_kind(ref) in (REF_CHUNK, REF_LIST) and not self.writer.has(ref_id(ref)):
            return None
        return ref

    def _add_file(self, ctx: _Dir, name: bytes, rel: bytes, path: bytes,
                  st: os.stat_result) -> None:
        link = 0
        if st.st_nlink > 1:
            first = self.links.get((st.st_dev, st.st_ino))
            if first is not None:
                link = first.link
                job = _File(ctx, len(ctx.entries), name, rel, st, first.xattrs, link)
                ctx.entries.append(None)
                self._mark("link", first, job)  # placed once the first path's content is known
                return
            link = int.from_bytes(hash_bytes(rel)[:7], "little") or 1
        job = _File(ctx, len(ctx.entries), name, rel, st, self._xattrs(path), link)
        ctx.entries.append(None)
        if link:
            self.links[(st.st_dev, st.st_ino)] = job
        ref = self._cached_ref(rel, st)
        allocated = st.st_size
        if ref is not None and ref_kind(ref) == REF_LIST:
            # its data bytes are read from its chunk list (one small metadata object): the
            # entry must be the same whether the file was read or skipped
            try:
                allocated = self.store.contents.allocated(ref, st.st_size)
            except CorruptData:
                ref = None  # read the file again
        if ref is not None:
            self._place_file(job, ref, st.st_size, allocated)
            self.reused += 1
            self.progress.advance(st.st_size, 1)
            return
        if st.st_size <= INLINE_MAX:
            # Handing a tiny file to a worker costs more (queues, GIL hand-offs) than reading,
            # hashing and storing it right here.
            self._take_result(job, prepare_file(FileTask(path), self.writer.has, self.level,
                                                self.store.config.chunk, self.writer))
        else:
            self._add_work(job, FileTask(path), min(st.st_size, BATCH_BYTES) + 4096)
        self._mark("file", job)

    # -- directories -----------------------------------------------------------------------

    def _finish_dir(self, ctx: _Dir) -> None:
        entries = [e for e in ctx.entries if e is not None]
        tree = build_tree(entries, self.writer.put_meta)
        st = ctx.st
        entry = Entry(os.path.basename(ctx.rel), Kind.DIR, st.st_mode, st.st_uid, st.st_gid,
                      st.st_mtime_ns, len(entries), tree, ctx.xattrs,
                      subdirs=sum(1 for e in entries if e.kind == Kind.DIR))
        self.dirs += 1
        if ctx.parent is None:
            self.root_entry = entry
        else:
            ctx.parent.entries[ctx.slot] = entry

    def _children(self, ctx: _Dir, path: bytes) -> Iterator[tuple[bytes, os.stat_result]]:
        try:
            yield from _list_dir(path)
        except OSError as exc:
            self.skipped.append(Skipped(os.fsdecode(ctx.rel) or ".",
                                        f"cannot list directory: {exc.strerror}"))

    def walk(self) -> None:
        root_st = os.lstat(self.src)
        root = _Dir(b"", root_st, self._xattrs(self.src), None, 0)
        stack: list[tuple[_Dir, bytes, Iterator[tuple[bytes, os.stat_result]]]] = [
            (root, self.src, self._children(root, self.src))]
        while stack:
            ctx, dpath, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                self._mark("dir", ctx)
                continue
            name, st = nxt
            rel = ctx.rel + b"/" + name if ctx.rel else name
            path = dpath + b"/" + name
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                if (st.st_dev, st.st_ino) == self.store_ident:
                    self.skipped.append(Skipped(os.fsdecode(rel), "is the dsfs store itself"))
                    continue
                sub = _Dir(rel, st, self._xattrs(path), ctx, len(ctx.entries))
                ctx.entries.append(None)
                stack.append((sub, path, self._children(sub, path)))
            elif stat.S_ISREG(mode):
                self._add_file(ctx, name, rel, path, st)
            elif stat.S_ISLNK(mode):
                try:
                    target = os.readlink(path)
                except OSError as exc:
                    self.skipped.append(Skipped(os.fsdecode(rel), f"unreadable symlink: "
                                                f"{exc.strerror}"))
                    continue
                ctx.entries.append(Entry(name, Kind.SYMLINK, mode, st.st_uid, st.st_gid,
                                         st.st_mtime_ns, len(target), target, self._xattrs(path)))
                self.symlinks += 1
            elif stat.S_ISFIFO(mode):
                ctx.entries.append(Entry(name, Kind.FIFO, mode, st.st_uid, st.st_gid,
                                         st.st_mtime_ns, 0, b"", self._xattrs(path)))
            elif not self.skip_special and Kind.from_mode(mode) in (Kind.CHR, Kind.BLK,
                                                                     Kind.SOCK):
                # metadata only: kind, mode, owner, times and the device number
                kind = Kind.from_mode(mode)
                assert kind is not None
                rdev = st.st_rdev if kind != Kind.SOCK else 0
                ctx.entries.append(Entry(name, kind, mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                                         0, b"", self._xattrs(path), rdev=rdev))
            else:
                what = ("socket" if stat.S_ISSOCK(mode) else "block device" if stat.S_ISBLK(mode)
                        else "character device" if stat.S_ISCHR(mode) else "special file")
                why = "--skip-special" if self.skip_special else "dsfs keeps files, " \
                    "directories, symlinks, fifos, device nodes and sockets"
                self.skipped.append(Skipped(os.fsdecode(rel), f"{what}: not stored ({why})"))

    def run(self, message: str, tag: str | None) -> ImportResult:
        self.progress.start(f"import {self.source}", None, "bytes")
        # The walk makes millions of small acyclic objects: cyclic GC passes over them cost
        # ~10% of an import (measured with py-spy) and free nothing.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            self.walk()
            self._drain_all()
            assert self.root_entry is not None
            stats = VersionStats(files=self.files, dirs=self.dirs, symlinks=self.symlinks,
                                 logical_bytes=self.logical,
                                 new_chunks=self.writer.stats.new_objects,
                                 new_stored_bytes=self.writer.stats.new_stored_bytes,
                                 reused_files=self.reused, xattr_entries=self.xattr_entries)
            cache = sorted(self.cache_updates.items())
            self.cache_updates.clear()

            def save_cache(txn: Any) -> None:
                with txn.cursor(db=self.store.index.dbs["filecache"]) as cur:
                    cur.putmulti(cache)

            version = self.store.record_version(self.writer, self.root_entry, message, stats,
                                                source=os.fsdecode(self.src), tag=tag,
                                                extra=save_cache)
        except BaseException:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.writer.abort()
            raise
        finally:
            self.progress.finish()
            if gc_was_enabled:
                gc.enable()
        self.pool.shutdown(wait=True)
        return ImportResult(version, self.skipped, self.warnings)


def import_tree(store: Store, source: Path, message: str = "", tag: str | None = None,
                progress: Progress | None = None, workers: int | None = None,
                skip_special: bool = False) -> ImportResult:
    """Record the directory `source` as the next version of `store`."""
    source = Path(source).absolute()
    try:
        st = os.stat(source)
    except FileNotFoundError:
        raise UserError(f"{source} does not exist: give a directory to import") from None
    except PermissionError:
        raise UserError(f"{source}: permission denied") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UserError(f"{source} is not a directory: give a directory to import")
    if tag is not None:
        store.check_tag_name(tag)
        if tag in store.tags():
            raise UserError(f"tag {tag!r} already exists: choose another name")
    with store.writer_lock():
        return Importer(store, source, progress or NoProgress(), workers,
                        skip_special).run(message, tag)


__all__ = ["ImportResult", "Skipped", "import_tree"]
