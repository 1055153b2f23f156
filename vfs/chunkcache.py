"""The shared cache of verified plain chunks: byte-bounded and scan-resistant.

Owns: which decompressed chunks stay in memory. Never imports: daemon, trio, pyfuse3.
Thread-safe: worker threads and the event-loop thread call it at once; every method holds the
one lock for a few dictionary operations only (never across I/O, never taking another lock).

Policy (a segmented LRU):

- A chunk enters *probation* when it is loaded (`put`). Probation is evicted first, oldest
  first, so a one-pass scan (tar of a version, one big file, the prefetch of either) flows
  through probation and leaves the rest alone.
- A second *reference* while in probation promotes the chunk to *protected*, an LRU of at most
  `protected_share` of the bytes. When protected grows past that, its least recently used chunk
  goes back to probation (newest end) and gets a second chance there.
- What counts as a reference: a `get` for bytes of the chunk that start before the furthest byte
  already used. A sequential reader takes a chunk in several requests, each starting where the
  previous one ended: that is one reference, not many, and never promotes. Reading the same
  bytes again (the next epoch, another process, a random reader coming back) does.
- `peek` and `in` are not uses: they neither count nor reorder (the prefetch planner's probes).
  `get_all` takes the chunks of one read all or nothing: the event loop's try at a read it
  cannot serve whole counts nothing, so the worker that serves it counts each chunk once.

Chunks are only ever put here after their BLAKE3 check (`vfs.pack.check_parts`): a cached chunk
is right, and a hit is never hashed again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    promotions: int
    evictions: int
    probation_bytes: int
    protected_bytes: int
    max_bytes: int


class _Slot:
    __slots__ = ("data", "mark")

    def __init__(self, data: bytes, mark: int) -> None:
        self.data = data
        self.mark = mark
        """The end of the furthest byte used so far (a `get` starting below it is a reuse)."""


class ChunkCache:
    """A byte-bounded, scan-resistant cache of verified plain chunks (segmented LRU)."""

    def __init__(self, max_bytes: int, protected_share: float = 0.8) -> None:
        if not 0 <= protected_share < 1:
            raise ValueError("protected_share must be in [0, 1)")
        self.max_bytes = max_bytes
        self.protected_max = int(max_bytes * protected_share)
        self._probation: OrderedDict[bytes, _Slot] = OrderedDict()
        self._protected: OrderedDict[bytes, _Slot] = OrderedDict()
        self._probation_bytes = 0
        self._protected_bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.promotions = 0
        self.evictions = 0

    def get(self, cid: bytes, start: int = 0, end: int | None = None, *,
            count_miss: bool = True) -> bytes | None:
        """The chunk, as a use of its bytes [start, end) (default: all of it); None on a miss.

        `count_miss=False` for a lookup whose miss is followed by a counted one.
        """
        with self._lock:
            data = self._use(cid, start, end)
            if data is not None:
                self.hits += 1
            elif count_miss:
                self.misses += 1
            return data

    def get_all(self, uses: Sequence[tuple[bytes, int, int]]) -> list[bytes] | None:
        """The chunks of several uses (cid, start, end) if every one is cached, else None; only
        when all are there do they count, as hits and as uses, at once (the event loop's try:
        a read it cannot serve whole is served by a worker, whose `get`s are the uses, so no
        read counts twice)."""
        with self._lock:
            if any(cid not in self._protected and cid not in self._probation
                   for cid, _, _ in uses):
                return None
            out = []
            for cid, start, end in uses:
                data = self._use(cid, start, end)
                assert data is not None  # a promotion moves chunks, it evicts none
                out.append(data)
            self.hits += len(out)
            return out

    def _use(self, cid: bytes, start: int, end: int | None) -> bytes | None:
        """Record a use of [start, end) of a chunk (lock held); its bytes, or None."""
        slot = self._protected.get(cid)
        if slot is not None:
            self._protected.move_to_end(cid)
            return slot.data
        slot = self._probation.get(cid)
        if slot is None:
            return None
        stop = len(slot.data) if end is None else end
        if start < slot.mark:
            self._promote(cid, slot)
        elif stop > slot.mark:
            slot.mark = stop
        return slot.data

    def peek(self, cid: bytes) -> bytes | None:
        """The chunk if cached, without counting or reordering anything (probes)."""
        with self._lock:
            slot = self._protected.get(cid) or self._probation.get(cid)
            return None if slot is None else slot.data

    def __contains__(self, cid: object) -> bool:
        with self._lock:
            return cid in self._protected or cid in self._probation

    def put(self, cid: bytes, data: bytes, used_to: int = 0) -> None:
        """Add a verified chunk to probation; `used_to`: the end of the bytes the loading read
        uses (0 for a prefetch, which is no use). A chunk larger than the cache is not kept."""
        if len(data) > self.max_bytes:
            return
        with self._lock:
            if cid in self._protected or cid in self._probation:
                return
            self._probation[cid] = _Slot(data, used_to)
            self._probation_bytes += len(data)
            self._evict()

    def _promote(self, cid: bytes, slot: _Slot) -> None:
        """Move a chunk from probation to protected (lock held)."""
        del self._probation[cid]
        size = len(slot.data)
        self._probation_bytes -= size
        slot.mark = size
        self._protected[cid] = slot
        self._protected_bytes += size
        self.promotions += 1
        while self._protected_bytes > self.protected_max and self._protected:
            old, demoted = self._protected.popitem(last=False)
            self._protected_bytes -= len(demoted.data)
            self._probation[old] = demoted  # newest end of probation: a second chance
            self._probation_bytes += len(demoted.data)
        self._evict()

    def _evict(self) -> None:
        """Drop chunks until the bytes fit: probation's oldest first (lock held)."""
        while self._probation_bytes + self._protected_bytes > self.max_bytes:
            if self._probation:
                _, slot = self._probation.popitem(last=False)
                self._probation_bytes -= len(slot.data)
            else:
                _, slot = self._protected.popitem(last=False)
                self._protected_bytes -= len(slot.data)
            self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._probation.clear()
            self._protected.clear()
            self._probation_bytes = self._protected_bytes = 0

    @property
    def size(self) -> int:
        """Bytes held (never more than `max_bytes`)."""
        with self._lock:
            return self._probation_bytes + self._protected_bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._probation) + len(self._protected)

    def segment_of(self, cid: bytes) -> str | None:
        """"protected", "probation" or None (for tests and debugging)."""
        with self._lock:
            if cid in self._protected:
                return "protected"
            return "probation" if cid in self._probation else None

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self.hits, self.misses, self.promotions, self.evictions,
                              self._probation_bytes, self._protected_bytes, self.max_bytes)


__all__ = ["CacheStats", "ChunkCache"]
