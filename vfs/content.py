"""File contents: chunk lists, random-access reads, and the shared cache of verified chunks.

Owns: turning a ContentRef into bytes at an offset. Never imports: daemon, trio, pyfuse3.
Thread-safe: the mount reads from several worker threads at once.

Chunks are verified (BLAKE3 of the plain bytes equals the id) when read from a pack, before they
enter the cache, so a cached chunk is always right. Identical files share refs and so share
cached chunks across versions.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

from vfs import schema
from vfs.errors import CorruptData
from vfs.ids import ChunkId, ObjectId, ObjType
from vfs.model import (
    REF_CHUNK,
    REF_LIST,
    ChunkSpan,
    ContentRef,
    decode_chunk_list,
    ref_id,
    ref_kind,
)

GetFn = Callable[[ObjectId, ObjType], bytes]


class ChunkCache:
    """A byte-bounded LRU of verified plain chunks."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, cid: bytes) -> bytes | None:
        with self._lock:
            data = self._items.get(cid)
            if data is not None:
                self._items.move_to_end(cid)
                self.hits += 1
            else:
                self.misses += 1
            return data

    def put(self, cid: bytes, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            if cid in self._items:
                return
            self._items[cid] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old)

    @property
    def size(self) -> int:
        return self._bytes


class FileContent:
    """The chunk layout of one file, with cumulative offsets for bisecting."""

    __slots__ = ("ends", "size", "spans", "starts")

    def __init__(self, spans: list[ChunkSpan]) -> None:
        self.spans = spans
        self.starts: list[int] = []
        pos = 0
        for s in spans:
            self.starts.append(pos)
            pos += s.length
        self.size = pos

    def locate(self, offset: int) -> int:
        """Index of the span containing `offset`."""
        return bisect.bisect_right(self.starts, offset) - 1


class ContentReader:
    """Reads file contents by ref through a shared chunk cache."""

    def __init__(self, get: GetFn, cache: ChunkCache, max_layouts: int = 1024) -> None:
        self._get = get
        self.cache = cache
        self._layouts: OrderedDict[bytes, FileContent] = OrderedDict()
        self._max_layouts = max_layouts
        self._lock = threading.Lock()
        self._allocated: OrderedDict[bytes, int] = OrderedDict()

    def layout(self, ref: ContentRef) -> FileContent:
        kind = ref_kind(ref)
        if kind == 0:
            return FileContent([])
        with self._lock:
            fc = self._layouts.get(ref)
            if fc is not None:
                self._layouts.move_to_end(ref)
                return fc
        if kind == REF_CHUNK:
            raise ValueError("single-chunk refs have no layout object; use read()")
        if kind != REF_LIST:
            raise ValueError(f"unknown content ref kind {kind}")
        spans = decode_chunk_list(schema.dec_msg(self._get(ref_id(ref), ObjType.CHUNKLIST)))
        fc = FileContent(spans)
        with self._lock:
            self._layouts[ref] = fc
            while len(self._layouts) > self._max_layouts:
                self._layouts.popitem(last=False)
        return fc

    def allocated(self, ref: ContentRef, size: int) -> int:
        """Bytes of a file that hold data (holes excluded): what `st_blocks` counts. Cached per
        ref (a chunk list is read once, not on every getattr)."""
        kind = ref_kind(ref)
        if kind != REF_LIST:
            return size if kind == REF_CHUNK else 0
        with self._lock:
            found = self._allocated.get(ref)
            if found is not None:
                self._allocated.move_to_end(ref)
                return found
        data = sum(s.length for s in self.layout(ref).spans if s.cid is not None)
        with self._lock:
            self._allocated[ref] = data
            while len(self._allocated) > 64 * self._max_layouts:
                self._allocated.popitem(last=False)
        return data

    def chunk(self, cid: ChunkId) -> bytes:
        data = self.cache.get(cid)
        if data is None:
            data = self._get(ObjectId(cid), ObjType.CHUNK)
            self.cache.put(cid, data)
        return data

    def spans(self, ref: ContentRef, size: int) -> list[ChunkSpan]:
        kind = ref_kind(ref)
        if kind == 0:
            return []
        if kind == REF_CHUNK:
            return [ChunkSpan(ChunkId(ref_id(ref)), size)]
        return self.layout(ref).spans

    def read(self, ref: ContentRef, size: int, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset` of a file of `size` bytes."""
        data = self._read(ref, size, offset, length, self.chunk)
        assert data is not None
        return data

    def read_cached(self, ref: ContentRef, size: int, offset: int, length: int) -> bytes | None:
        """Like `read`, but None as soon as a needed chunk is not in the cache (never blocks on
        disk or decompression, so the FUSE loop can call it inline)."""
        return self._read(ref, size, offset, length, self.cache.get)

    def _read(self, ref: ContentRef, size: int, offset: int, length: int,
              fetch: Callable[[ChunkId], bytes | None]) -> bytes | None:
        if offset >= size or length <= 0:
            return b""
        length = min(length, size - offset)
        if ref_kind(ref) == REF_CHUNK:
            whole = fetch(ChunkId(ref_id(ref)))
            if whole is not None and len(whole) != size:
                raise CorruptData(f"the file's one chunk holds {len(whole):,} bytes, its entry "
                                  f"says {size:,}")
            return None if whole is None else whole[offset:offset + length]
        fc = self.layout(ref)
        if fc.size != size:
            raise CorruptData(f"the file's chunks hold {fc.size:,} bytes, its entry says "
                              f"{size:,}")
        i = fc.locate(offset)
        out: list[bytes] = []
        end = offset + length
        pos = offset
        while pos < end and i < len(fc.spans):
            span = fc.spans[i]
            start = fc.starts[i]
            lo = pos - start
            hi = min(span.length, end - start)
            if span.cid is None:
                out.append(bytes(hi - lo))
            else:
                chunk = fetch(span.cid)
                if chunk is None:
                    return None
                out.append(chunk[lo:hi])
            pos = start + hi
            i += 1
        return b"".join(out)

    def iter_pieces(self, ref: ContentRef, size: int) -> Iterator[tuple[int, bytes | int]]:
        """Yield (offset, bytes) for data and (offset, hole_length) for holes, in order."""
        pos = 0
        for span in self.spans(ref, size):
            if span.cid is None:
                yield pos, span.length
            else:
                yield pos, self.chunk(span.cid)
            pos += span.length
