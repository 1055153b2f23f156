"""A set of byte ranges: which parts of a pack the local cache holds.

Owns: the interval arithmetic of `vfs.remote.diskcache`. Never imports: daemon, trio, pyfuse3.
Not thread-safe: its owner's lock guards it.
"""

from __future__ import annotations

import bisect


class Spans:
    """Disjoint, sorted, non-adjacent half-open ranges [start, end)."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.starts)

    def total(self) -> int:
        return sum(e - s for s, e in zip(self.starts, self.ends, strict=True))

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends, strict=True))

    def covers(self, start: int, end: int) -> bool:
        """Whether every byte of [start, end) is in the set."""
        i = bisect.bisect_right(self.starts, start) - 1
        return i >= 0 and self.ends[i] >= end

    def covered_to(self, pos: int) -> int:
        """Where the range holding `pos` ends (`pos` itself if none holds it)."""
        i = bisect.bisect_right(self.starts, pos) - 1
        return self.ends[i] if i >= 0 and self.ends[i] > pos else pos

    def overlaps(self, start: int, end: int) -> bool:
        """Whether any byte of [start, end) is in the set."""
        i = bisect.bisect_left(self.ends, start + 1)
        return i < len(self.starts) and self.starts[i] < end

    def next_at(self, pos: int) -> int | None:
        """The first byte at or after `pos` in the set, or None."""
        i = bisect.bisect_right(self.ends, pos)  # first range ending after pos
        if i == len(self.starts):
            return None
        return max(pos, self.starts[i])

    def end_before(self, pos: int) -> int:
        """The end of the last range starting before `pos`, at most `pos` (0: none)."""
        i = bisect.bisect_left(self.starts, pos) - 1
        return 0 if i < 0 else min(pos, self.ends[i])

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        lo = bisect.bisect_left(self.ends, start)  # first range that ends at or after start
        hi = bisect.bisect_right(self.starts, end)  # ranges from lo to hi touch [start, end)
        if lo < hi:
            start = min(start, self.starts[lo])
            end = max(end, self.ends[hi - 1])
        self.starts[lo:hi] = [start]
        self.ends[lo:hi] = [end]

    def remove(self, start: int, end: int) -> None:
        if end <= start:
            return
        lo = bisect.bisect_right(self.ends, start)  # first range ending after start
        hi = bisect.bisect_left(self.starts, end)  # ranges from lo to hi overlap
        if lo >= hi:
            return
        keep_s: list[int] = []
        keep_e: list[int] = []
        if self.starts[lo] < start:
            keep_s.append(self.starts[lo])
            keep_e.append(start)
        if self.ends[hi - 1] > end:
            keep_s.append(end)
            keep_e.append(self.ends[hi - 1])
        self.starts[lo:hi] = keep_s
        self.ends[lo:hi] = keep_e


__all__ = ["Spans"]
