"""File contents: chunk lists, random-access reads, and loading chunks into the shared cache.

Owns: turning a ContentRef into bytes at an offset, and loading each chunk once. Never imports:
daemon, trio, pyfuse3. Thread-safe: the mount reads from several worker threads at once and
from its event-loop thread (`read_cached`, `read_parts(cached_only=True)`: they never wait for
disk, for decompression or for a lock held across either).

Chunks are verified (BLAKE3 of the plain bytes equals the id) when read from a pack, before they
enter the cache (`vfs.chunkcache`), so a cached chunk is always right and a hit is never hashed
again. Identical files share refs and so share cached chunks across versions.

Loads are single-flight: concurrent requests for one chunk (demand reads and prefetches, from
any threads) read, decompress and verify it once; the others wait for the load in flight and get
its bytes or its error (a CorruptData is raised to every waiter and nothing is cached, so the
next request tries the disk again and fails again: damaged bytes are never served).
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future

from vfs import schema
from vfs.chunkcache import CacheStats, ChunkCache
from vfs.errors import CorruptData
from vfs.ids import ChunkId, ObjectId, ObjType, short
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

_ZEROS = bytes(1 << 20)
"""Holes are served as views of this (never copied until a join)."""


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


def join_parts(parts: list[memoryview]) -> bytes | memoryview:
    """One buffer holding `parts`: the piece itself when there is one (no copy: a view of a
    cached chunk, which a FUSE reply can send as it is), else one joined copy."""
    if len(parts) == 1:
        return parts[0]
    return b"".join(parts)


def parts_to_bytes(parts: list[memoryview]) -> bytes:
    """`parts` as bytes: the cached chunk object itself when one piece covers all of it (a whole
    single-chunk file: no copy), else exactly one copy."""
    if len(parts) == 1:
        piece = parts[0]
        whole = piece.obj
        if isinstance(whole, bytes) and len(piece) == len(whole):
            return whole
        return piece.tobytes()
    return b"".join(parts)


def _zeros(n: int) -> Iterator[memoryview]:
    view = memoryview(_ZEROS)
    while n > 0:
        step = min(n, len(_ZEROS))
        yield view[:step]
        n -= step


class ContentReader:
    """Reads file contents by ref through a shared chunk cache, loading each chunk once."""

    def __init__(self, get: GetFn, cache: ChunkCache, max_layouts: int = 1024) -> None:
        self._get = get
        self.cache = cache
        self._layouts: OrderedDict[bytes, FileContent] = OrderedDict()
        self._max_layouts = max_layouts
        self._lock = threading.Lock()
        self._allocated: OrderedDict[bytes, int] = OrderedDict()
        self._flights: dict[bytes, Future[bytes]] = {}
        self._flight_lock = threading.Lock()
        self.loads = 0
        """Chunks read from the store (each one verified): what single-flight saves on."""
        self.shared_loads = 0
        """Requests that waited for a load already in flight instead of loading again."""

    # -- layouts ---------------------------------------------------------------------------

    def layout(self, ref: ContentRef) -> FileContent:
        kind = ref_kind(ref)
        if kind == 0:
            return FileContent([])
        found = self.cached_layout(ref)
        if found is not None:
            return found
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

    def cached_layout(self, ref: ContentRef) -> FileContent | None:
        """The layout if it is in memory (never reads the store)."""
        with self._lock:
            fc = self._layouts.get(ref)
            if fc is not None:
                self._layouts.move_to_end(ref)
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

    def spans(self, ref: ContentRef, size: int) -> list[ChunkSpan]:
        kind = ref_kind(ref)
        if kind == 0:
            return []
        if kind == REF_CHUNK:
            return [ChunkSpan(ChunkId(ref_id(ref)), size)]
        return self.layout(ref).spans

    # -- chunks ----------------------------------------------------------------------------

    def chunk(self, cid: ChunkId, start: int = 0, end: int | None = None) -> bytes:
        """The verified bytes of a chunk, as a use of its bytes [start, end) (default: all):
        from the cache, else loaded once however many threads ask (may block on disk)."""
        data = self.cache.get(cid, start, end)
        if data is None:
            data = self._load(cid, use_end=end, used=True)
        return data

    def load(self, cid: ChunkId) -> bytes:
        """Make sure a chunk is in the cache without counting a use of it (prefetch); shares a
        load in flight. Raises what the load raises."""
        data = self.cache.peek(cid)
        if data is None:
            data = self._load(cid, use_end=None, used=False)
        return data

    def _load(self, cid: ChunkId, use_end: int | None, used: bool) -> bytes:
        with self._flight_lock:
            flight = self._flights.get(cid)
            leader = flight is None
            if flight is None:
                flight = self._flights[cid] = Future()
            else:
                self.shared_loads += 1
        if not leader:
            return flight.result()  # the leader's bytes, or its error raised here too
        loaded = False
        try:
            # A load that ended after our miss has put its chunk in the cache before ending its
            # flight: look there first (no lock is held while the cache takes its own).
            data = self.cache.peek(cid)
            if data is None:
                loaded = True
                data = self._get(ObjectId(cid), ObjType.CHUNK)
                used_to = (len(data) if use_end is None else use_end) if used else 0
                self.cache.put(cid, data, used_to)  # before the flight ends, see above
        except BaseException as exc:
            flight.set_exception(exc)  # every waiter gets it; nothing is cached
            raise
        else:
            flight.set_result(data)
            return data
        finally:
            with self._flight_lock:
                del self._flights[cid]
                self.loads += loaded

    def cache_stats(self) -> CacheStats:
        return self.cache.stats()

    # -- reads -----------------------------------------------------------------------------

    def read(self, ref: ContentRef, size: int, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset` of a file of `size` bytes (may block on disk)."""
        parts = self.read_parts(ref, size, offset, length)
        assert parts is not None
        return parts_to_bytes(parts)

    def read_cached(self, ref: ContentRef, size: int, offset: int, length: int) -> bytes | None:
        """Like `read`, but None as soon as a needed chunk is not in the cache (never blocks on
        disk or decompression, so the FUSE loop can call it inline)."""
        parts = self.read_parts(ref, size, offset, length, cached_only=True)
        return None if parts is None else parts_to_bytes(parts)

    def read_parts(self, ref: ContentRef, size: int, offset: int, length: int,
                   cached_only: bool = False, layout: FileContent | None = None
                   ) -> list[memoryview] | None:
        """Up to `length` bytes at `offset` as views of the cached chunks (and of a shared zero
        buffer for holes), in order, without copying any byte. `join_parts` turns them into
        one buffer (no copy for one piece); a FUSE reply can send them as they are.

        `cached_only`: None as soon as a needed chunk (or the file's layout, unless `layout` is
        given) is not in memory; never blocks on disk, decompression or a lock held across
        either (the event loop's path). Otherwise loads what is missing (worker threads).
        """
        if offset >= size or length <= 0:
            return []
        length = min(length, size - offset)
        end = offset + length
        if ref_kind(ref) == REF_CHUNK:
            cid = ChunkId(ref_id(ref))
            if cached_only:
                found = self.cache.get(cid, offset, end, count_miss=False)
                if found is None:
                    return None
                whole = found
            else:
                whole = self.chunk(cid, offset, end)
            if len(whole) != size:
                raise CorruptData(f"the file's one chunk holds {len(whole):,} bytes, its entry "
                                  f"says {size:,}")
            view = memoryview(whole)
            return [view if length == size else view[offset:end]]
        fc = layout
        if fc is None:
            fc = self.cached_layout(ref) if cached_only else self.layout(ref)
            if fc is None:
                return None
        if fc.size != size:
            raise CorruptData(f"the file's chunks hold {fc.size:,} bytes, its entry says "
                              f"{size:,}")
        pieces: list[tuple[ChunkSpan, int, int]] = []  # (span, lo, hi) within the span
        i = fc.locate(offset)
        pos = offset
        while pos < end and i < len(fc.spans):
            start = fc.starts[i]
            hi = min(fc.spans[i].length, end - start)
            pieces.append((fc.spans[i], pos - start, hi))
            pos = start + hi
            i += 1
        chunks: Iterator[bytes] = iter(())
        if cached_only:  # all or nothing: a read the loop cannot serve whole counts no use
            found_all = self.cache.get_all([(s.cid, lo, hi) for s, lo, hi in pieces
                                            if s.cid is not None])
            if found_all is None:
                return None
            chunks = iter(found_all)
        out: list[memoryview] = []
        for span, lo, hi in pieces:
            if span.cid is None:
                out.extend(_zeros(hi - lo))
                continue
            chunk = next(chunks) if cached_only else self.chunk(span.cid, lo, hi)
            if len(chunk) != span.length:
                raise CorruptData(f"chunk {short(span.cid)} holds {len(chunk):,} bytes, the "
                                  f"file's chunk list says {span.length:,}", span.cid)
            view = memoryview(chunk)
            out.append(view if lo == 0 and hi == span.length else view[lo:hi])
        return out

    def iter_pieces(self, ref: ContentRef, size: int) -> Iterator[tuple[int, bytes | int]]:
        """Yield (offset, bytes) for data and (offset, hole_length) for holes, in order."""
        pos = 0
        for span in self.spans(ref, size):
            if span.cid is None:
                yield pos, span.length
            else:
                yield pos, self.chunk(span.cid)
            pos += span.length


__all__ = ["ChunkCache", "ContentReader", "FileContent", "join_parts", "parts_to_bytes"]
