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

The kernel reads ahead by itself too, up to the device's `read_ahead_kb`: when that is at least
half a WINDOW (this machine's virtio disk: 8 MiB), hints gain nothing measurable (the table:
within this machine's noise, where the same code varies 2x between runs) for a syscall per
4 MiB, so `ReadAhead.for_packs` leaves them off; when it is small (128 KiB is the common
default) they pay 2.5x. Measured in process on the 1 GB benchmark store (how: the commit
message that added this), cold, interleaved runs on a machine loaded by other test suites, so
the best and the median of 9 runs (5 with read-ahead off); "off" disables the kernel's
read-ahead on the packs (POSIX_FADV_RANDOM) to stand for a disk that reads ahead little:

    kernel read-ahead 8 MiB (this disk)   no hints             hints
    every chunk in pack order             0.57 s / 0.69 s      0.70 s / 0.85 s, +0.3 s system
    tar order, 128 KiB requests           0.69 s / 1.18 s      0.92 s / 1.07 s
    big file, 4 prefetch threads          0.19 s / 0.22 s      0.18 s / 0.24 s
    kernel read-ahead off                 no hints             hints
    every chunk in pack order             1.95 s / 2.28 s      0.69 s / 0.83 s
    tar order, 128 KiB requests           2.66 s / 2.91 s      1.03 s / 1.10 s
    big file, 4 prefetch threads          0.25 s / 0.31 s      0.17 s / 0.21 s

Reading whole 4-8 MiB windows with one pread into a buffer of raw records, and decoding the
records that follow from it without a syscall, was measured too and lost to the hints in both
cases (tar order 0.99 / 1.57 s against 0.84 / 1.10 s, a threaded big file 0.20 / 0.36 s against
0.12 / 0.21 s), and to no hints on this disk (tar order 1.35 against 0.84 s): a record read
from the page cache costs its copy, not its syscall, and a window adds one more copy of every
record stored raw (most of an image dataset) and reads synchronously. Windows around small
records read out of order made shuffled reads 2-3x slower.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

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
        """0: no hints (the kernel's own read-ahead is enough)."""
        self._lock = threading.Lock()
        self._ends: OrderedDict[str, list[int]] = OrderedDict()
        self._hinted: dict[str, int] = {}
        self.hints = 0

    @classmethod
    def for_packs(cls, packs_dir: Path) -> ReadAhead:
        """Hints on unless the disk holding the packs reads ahead far enough by itself."""
        return cls(window_for(kernel_readahead(packs_dir)))

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


def window_for(kernel_bytes: int | None) -> int:
    """WINDOW, or 0 when the kernel reads at least half as far ahead by itself."""
    if kernel_bytes is not None and kernel_bytes >= WINDOW // 2:
        return 0
    return WINDOW


def kernel_readahead(path: Path) -> int | None:
    """The kernel's read-ahead in bytes for the device holding `path` (None: unknown, e.g. a
    filesystem without a block device)."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return None
    major, minor = os.major(dev), os.minor(dev)
    candidates = [Path(f"/sys/class/bdi/{major}:{minor}/read_ahead_kb")]
    block = Path(f"/sys/dev/block/{major}:{minor}")
    if block.exists():  # a partition has no queue of its own: its disk's
        real = block.resolve()
        candidates[:0] = [real / "queue/read_ahead_kb", real.parent / "queue/read_ahead_kb"]
    for candidate in candidates:
        try:
            return int(candidate.read_text().strip()) * 1024
        except (OSError, ValueError):
            continue
    return None


__all__ = ["NEAR", "WINDOW", "ReadAhead", "kernel_readahead", "window_for"]
