"""Read-ahead of packs: when a pack is read sequentially, have the kernel read the next
several MiB of it in the background.

Owns: recognising sequential reads of a pack and choosing what to read ahead. Never imports:
daemon, trio, pyfuse3. Thread-safe; its lock is a leaf held for a few list operations, never
across I/O (the caller issues the hint, `vfs.pack.PackReader.read`).

The files of a version lie in import order inside packs, so a cold sequential read (tar of a
version, one big file, the prefetch of either) asks for records one after another. When a
record starts where one of the last few reads of its pack ended (give or take NEAR bytes), the
pack is being read sequentially: the reader then asks the kernel (posix_fadvise WILLNEED) to
read the next WINDOW bytes asynchronously, again every WINDOW/2, and reads each record with
its own pread from the page cache. Records are checked one by one when read (BLAKE3), as
always.

The kernel reads ahead by itself too, up to the device's `read_ahead_kb`, but only as far as
its own heuristics follow: several threads reading one pack descriptor out of order, or a disk
with the common 128 KiB default, leave it short. Measured in process on the 1 GB benchmark
store (how: the commit message that added this), cold, medians; this machine's disk reads
ahead 8 MiB by itself, "off" disables the kernel's read-ahead on the packs (POSIX_FADV_RANDOM)
to stand for a disk that reads ahead little:

                                          no hints        hints
    every chunk in pack order, 8 MiB:     0.86 s          0.86 s
    tar order, 128 KiB requests, 8 MiB:   1.57 s          1.06 s
    big file, 4 prefetch threads, 8 MiB:  0.22 s          0.24 s
    every chunk in pack order, off:       2.72 s          0.94 s
    tar order, 128 KiB requests, off:     3.67 s          1.37 s
    big file, 4 prefetch threads, off:    0.26 s          0.19 s

Reading whole 4-8 MiB windows with one pread into a buffer of raw records, and decoding the
records that follow from it without a syscall, was measured too and lost to the hints in both
cases (tar order 0.99 / 1.57 s against 0.84 / 1.10 s, a threaded big file 0.20 / 0.36 s against
0.12 / 0.21 s): a record read from the page cache costs its copy, not its syscall, and a window
adds one more copy of every record stored raw (most of an image dataset) and reads
synchronously. Windows around small records read out of order made shuffled reads 2-3x slower.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

WINDOW = 8 << 20
"""Bytes the kernel is asked to read ahead of a sequential reader of a pack."""
NEAR = 256 << 10
"""A record starting up to this far past where one of the last reads of its pack ended (and
not before it) is read sequentially: a random reader lands there rarely."""
_ENDS = 4
"""Ends of the last reads remembered per pack (a few readers of one pack at once)."""
_TRACKED_PACKS = 256


class ReadAhead:
    """Where each pack was last read, and how far ahead of it the kernel was asked to read."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        """0: no hints."""
        self._lock = threading.Lock()
        self._ends: OrderedDict[str, list[int]] = OrderedDict()
        self._hinted: dict[str, int] = {}
        self.hints = 0

    def hint(self, pack: str, offset: int, length: int) -> tuple[int, int] | None:
        """Note a read of [offset, offset + length) of a pack; (start, length) of the pack to
        read ahead now when its reads are sequential and the last hint is half used."""
        end = offset + length
        with self._lock:
            ends = self._ends.pop(pack, None) or []
            sequential = any(e <= offset <= e + NEAR for e in ends)
            self._ends[pack] = ends
            ends.append(end)
            if len(ends) > _ENDS:
                del ends[0]
            if len(self._ends) > _TRACKED_PACKS:
                gone, _ = self._ends.popitem(last=False)
                self._hinted.pop(gone, None)
            if not sequential:
                return None
            hinted = self._hinted.get(pack, 0)
            if offset <= hinted and end + self.window // 2 <= hinted:
                return None  # well inside what the kernel is reading already
            start = max(end, hinted) if offset <= hinted else end
            self._hinted[pack] = end + self.window
            self.hints += 1
            return start, end + self.window - start

    def forget(self, pack: str) -> None:
        with self._lock:
            self._ends.pop(pack, None)
            self._hinted.pop(pack, None)

    def clear(self) -> None:
        with self._lock:
            self._ends.clear()
            self._hinted.clear()


__all__ = ["NEAR", "WINDOW", "ReadAhead"]
