"""The bounded local cache of a clone's remote packs: `STORE/cache/`.

Owns: the sparse cache files, which byte ranges they hold, their size bound and eviction, and
the loose record of their use. Never imports: daemon, trio, pyfuse3. Packs in `STORE/packs`
(written locally) are never touched: this module only ever opens files under `STORE/cache/`.

Layout::

    STORE/cache/packs/ab/<name>   a sparse file: the byte ranges of remote pack <name> read so
                                  far, each at its offset in the pack; holes elsewhere
    STORE/cache/state.json        the use order of segments, the bound and counters: written
                                  now and then; losing it loses only the order
    STORE/cache/lock              flock'ed by the one process that writes the cache

What is cached is not trusted: every record read from here is verified (BLAKE3) by its reader
(`vfs.remote.lazy`), and one that fails is dropped and fetched again. So the ranges known to be
present (kept in memory, block-aligned, rebuilt with SEEK_DATA when a process takes the cache)
only decide where to look first; a crash, a lost state file or another process punching holes
costs a fetch, never a wrong byte.

Bound: usage is what the files occupy on disk (st_blocks * 512), kept at most `bound`: before a
write, the least recently used 1 MiB segments are punched out (fallocate PUNCH_HOLE) until the
write fits, and a file left empty is removed. One process writes the cache at a time (the lock);
another process reading the same store fetches without caching until it can take the lock.

Threads: any thread may call. Two plain locks: `_io`, held by worker threads across cache
writes and hole punching (never by the event loop: the mount reads packs only in workers), and
the leaf `_lock` for the in-memory tables, taken inside `_io` and never across I/O.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfs.errors import DsfsError, StoreLocked
from vfs.fsutil import atomic_write
from vfs.remote.spans import Spans

BLOCK = 4096
"""Cached ranges start and end on these boundaries (but at a pack's end), so what SEEK_DATA
finds after a restart is exactly what was written."""
SEGMENT = 1 << 20
"""The unit of eviction and of the use order."""
SLACK = 64 << 10
"""Room kept for a filesystem's own blocks (extent trees) when a write is sized against the
bound."""
SAVE_EVERY = 30.0
"""Seconds between writes of the state file while the cache is in use."""
RETRY_LOCK = 1.0
"""Seconds between tries to take the cache from another process."""
MAX_DEFAULT = 10 << 30
STATE = "state.json"

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc: Any = None


def punch_hole(fd: int, start: int, length: int) -> None:
    """Free [start, start + length) of a file: it reads as zeros and occupies no blocks."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, start, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def data_regions(fd: int) -> list[tuple[int, int]]:
    """The ranges of a file that hold data (SEEK_DATA / SEEK_HOLE)."""
    size = os.fstat(fd).st_size
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        out.append((start, end))
        pos = end
    return out


def default_bound(root: Path) -> int:
    """10 GiB, or a tenth of the disk holding `root`, whichever is smaller."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    return min(MAX_DEFAULT, st.f_blocks * st.f_frsize // 10)


@dataclass
class CacheStatus:
    """What `dsfs cache` shows."""

    path: Path
    used: int
    bound: int
    packs: int
    counters: dict[str, int]


def _align_down(n: int) -> int:
    return n - n % BLOCK


def _align_up(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


class PackCache:
    """Byte ranges of remote packs on local disk, within `bound` bytes."""

    def __init__(self, root: Path, bound: int | None = None) -> None:
        self.root = root
        self.packs_dir = root / "packs"
        self._asked_bound = bound
        self.bound = bound if bound is not None else 0
        self._io = threading.Lock()
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._tried = -RETRY_LOCK
        self._present: dict[str, Spans] = {}
        self._alloc: dict[str, int] = {}
        self._lru: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._saved = time.monotonic()
        self._dirty = False
        self.counters: dict[str, int] = {"hits": 0, "misses": 0, "gets": 0,
                                         "bytes_fetched": 0, "refetched": 0}
        """Counted by the reader (`vfs.remote.lazy`); saved with the state, added up."""
        self._base: dict[str, int] = {}

    # -- ownership -------------------------------------------------------------------------

    @property
    def owned(self) -> bool:
        return self._lock_fd is not None

    def _own(self) -> bool:
        """Take the cache if no other process has it (retried at most every RETRY_LOCK s).
        Called with `_io` held."""
        if self._lock_fd is not None:
            return True
        now = time.monotonic()
        if now - self._tried < RETRY_LOCK:
            return False
        self._tried = now
        try:
            self.root.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        self._load()
        return True

    def _load(self) -> None:
        """Rebuild what is present from the files, the order from the state file."""
        state = self._read_state()
        if self._asked_bound is None:
            saved = state.get("bound")
            self.bound = saved if isinstance(saved, int) and saved >= 0 else \
                default_bound(self.root)
        base = state.get("counters")
        if isinstance(base, dict):
            self._base = {k: v for k, v in base.items() if isinstance(v, int)}
        present: dict[str, Spans] = {}
        alloc: dict[str, int] = {}
        for path in self._files():
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                spans = Spans()
                for start, end in data_regions(fd):
                    spans.add(start, end)
                alloc[path.name] = os.fstat(fd).st_blocks * 512
            finally:
                os.close(fd)
            present[path.name] = spans
        order: list[tuple[str, int]] = []
        packs = state.get("packs")
        lru = state.get("lru")
        if isinstance(packs, list) and isinstance(lru, list):
            for item in lru:
                with contextlib.suppress(TypeError, ValueError, IndexError):
                    order.append((str(packs[int(item[0])]), int(item[1])))
        segments = [(name, seg) for name, spans in present.items() for s, e in spans.ranges()
                    for seg in range(s // SEGMENT, (e - 1) // SEGMENT + 1)]
        with self._lock:
            self._present, self._alloc = present, alloc
            self._lru.clear()
            for key in segments:  # oldest: those the state file does not know
                self._lru[key] = None
            for key in order:
                if key in self._lru:
                    self._lru.move_to_end(key)
        self._evict_to(self.bound)

    def _files(self) -> list[Path]:
        try:
            subs = [d for d in self.packs_dir.iterdir() if d.is_dir()]
        except FileNotFoundError:
            return []
        return [f for d in subs for f in d.iterdir() if f.is_file()]

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / STATE).read_bytes())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    # -- reading ---------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.packs_dir / name[:2] / name

    def read(self, name: str, start: int, end: int) -> bytes | None:
        """[start, end) of a pack if the cache holds all of it (unverified: check it)."""
        data, whole = self.read_head(name, start, end)
        return data if whole else None

    def read_head(self, name: str, start: int, end: int) -> tuple[bytes, bool]:
        """What the cache holds of [start, end) of a pack from `start` on, and whether that is
        all of it (unverified: check it)."""
        if self._lock_fd is None:
            return b"", False
        with self._lock:
            spans = self._present.get(name)
            upto = min(end, spans.covered_to(start)) if spans is not None else start
            if upto <= start:
                return b"", False
            for seg in range(start // SEGMENT, (upto - 1) // SEGMENT + 1):
                if (name, seg) in self._lru:
                    self._lru.move_to_end((name, seg))
        try:  # a cache file that cannot be read is a miss (the remote has the bytes)
            fd = os.open(self.path(name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.pread(fd, upto - start, start)
            finally:
                os.close(fd)
        except OSError:
            return b"", False
        return data, upto == end and len(data) == end - start

    def next_present(self, name: str, pos: int) -> int | None:
        """Where the cache next holds bytes of a pack at or after `pos` (None: nowhere)."""
        if self._lock_fd is None:
            return None
        with self._lock:
            spans = self._present.get(name)
            return None if spans is None else spans.next_at(pos)

    def present_end_before(self, name: str, pos: int) -> int:
        """Where the last bytes the cache holds of a pack before `pos` end (at most `pos`;
        0: none)."""
        if self._lock_fd is None:
            return 0
        with self._lock:
            spans = self._present.get(name)
            return 0 if spans is None else spans.end_before(pos)

    def writable(self) -> bool:
        """Whether this process may write the cache (taking it if it can)."""
        if self._lock_fd is not None:
            return True  # never given up while open: no need to wait for a write
        with self._io:
            return self._own()

    # -- writing ---------------------------------------------------------------------------

    def store(self, name: str, start: int, data: bytes) -> bool:
        """Keep `data` as [start, start + len(data)) of a pack; False if not kept (another
        process has the cache, or it is larger than the bound). `start` is block-aligned."""
        end = start + len(data)
        with self._io:
            if not self._own() or len(data) + SLACK > self.bound:
                return False
            mine = set(range(start // SEGMENT, (end - 1) // SEGMENT + 1)) if data else set()
            if not self._evict_to(self.bound - len(data) - SLACK, keep=(name, mine)):
                return False
            path = self.path(name)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                return False
            try:
                view = memoryview(data)
                pos = start
                while view:
                    n = os.pwrite(fd, view, pos)
                    view, pos = view[n:], pos + n
                blocks = os.fstat(fd).st_blocks * 512
            except OSError:
                with contextlib.suppress(OSError):  # nothing half-written is taken as present
                    punch_hole(fd, start, len(data))
                return False
            finally:
                os.close(fd)
            with self._lock:
                self._alloc[name] = blocks
                self._present.setdefault(name, Spans()).add(start, end)
                for seg in sorted(mine):
                    self._lru[(name, seg)] = None
                    self._lru.move_to_end((name, seg))
                self._dirty = True
            self._evict_to(self.bound, keep=(name, mine))
            if time.monotonic() - self._saved > SAVE_EVERY:
                self._save()
        return True

    def drop(self, name: str, start: int, end: int) -> None:
        """Forget [start, end) of a pack (widened to blocks): it failed its check."""
        lo, hi = _align_down(start), _align_up(end)
        with self._io:
            if self._lock_fd is None:
                return
            with self._lock:
                spans = self._present.get(name)
                if spans is None:
                    return
                spans.remove(lo, hi)
            self._punch(name, lo, hi - lo)

    def forget_pack(self, name: str) -> None:
        """Remove a pack's cache file (gc forgot the pack)."""
        with self._io:
            if self._lock_fd is None:
                return
            self._remove_file(name)

    # -- eviction --------------------------------------------------------------------------

    def usage(self) -> int:
        with self._lock:
            return sum(self._alloc.values())

    def trim(self, target: int) -> int:
        """Evict until at most `target` bytes are used; returns the bytes used then."""
        with self._io:
            if not self._own():
                raise StoreLocked(f"the cache {self.root} is in use by another process (a "
                                  "mount of this store?): unmount it, then trim")
            self._evict_to(target)
            self._save()
            return self.usage()

    def _evict_to(self, target: int, keep: tuple[str, set[int]] | None = None) -> bool:
        """Punch out least recently used segments (but those in `keep`) until usage is at most
        `target`. False if it cannot get there. Called with `_io` held."""
        skipped: list[tuple[str, int]] = []
        try:
            while True:
                with self._lock:
                    if sum(self._alloc.values()) <= target:
                        return True
                    if self._lru:
                        victim = self._lru.popitem(last=False)[0]
                    else:  # blocks no segment accounts for: a file's own, or a stray file's
                        stray = [n for n, a in self._alloc.items()
                                 if a and (keep is None or n != keep[0])]
                        if not stray:
                            return False
                        victim = (stray[0], -1)
                if keep is not None and victim[0] == keep[0] and victim[1] in keep[1]:
                    skipped.append(victim)
                    continue
                name, seg = victim
                if seg < 0:
                    self._remove_file(name)
                    continue
                with self._lock:
                    spans = self._present.get(name)
                    if spans is not None:
                        spans.remove(seg * SEGMENT, (seg + 1) * SEGMENT)
                    empty = not spans
                if empty:
                    self._remove_file(name)
                else:
                    self._punch(name, seg * SEGMENT, SEGMENT)
        finally:
            with self._lock:
                for key in reversed(skipped):
                    self._lru[key] = None
                    self._lru.move_to_end(key, last=False)

    def _punch(self, name: str, start: int, length: int) -> None:
        try:
            fd = os.open(self.path(name), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            with self._lock:
                self._alloc.pop(name, None)
            return
        try:
            punch_hole(fd, start, length)
            blocks = os.fstat(fd).st_blocks * 512
        except OSError:  # no hole punching here (EOPNOTSUPP), or EIO: the whole file goes
            blocks = -1
        finally:
            os.close(fd)
        if blocks < 0:
            self._remove_file(name)
            return
        with self._lock:
            self._alloc[name] = blocks
            self._dirty = True

    def _remove_file(self, name: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path(name))
        with self._lock:
            self._alloc.pop(name, None)
            self._present.pop(name, None)
            for key in [k for k in self._lru if k[0] == name]:
                del self._lru[key]
            self._dirty = True

    # -- state -----------------------------------------------------------------------------

    def _save(self) -> None:
        """Write the use order, the bound and the counters. Called with `_io` held."""
        self._saved = time.monotonic()
        with self._lock:
            names = sorted({k[0] for k in self._lru})
            index = {n: i for i, n in enumerate(names)}
            lru = [[index[n], seg] for n, seg in self._lru]
            self._dirty = False
        counters = {k: self._base.get(k, 0) + v for k, v in self.counters.items()}
        data = {"bound": self.bound, "packs": names, "lru": lru, "counters": counters}
        with contextlib.suppress(OSError, DsfsError):  # a full disk: only the order is lost
            atomic_write(self.root / STATE, json.dumps(data).encode())

    def close(self) -> None:
        with self._io:
            if self._lock_fd is None:
                return
            self._save()
            os.close(self._lock_fd)
            self._lock_fd = None


def cache_status(root: Path) -> CacheStatus:
    """What the cache under `root` holds, read from disk (works while a mount writes it)."""
    cache = PackCache(root)
    files = cache._files()
    used = 0
    for f in files:
        with contextlib.suppress(FileNotFoundError):
            used += f.stat().st_blocks * 512
    state = cache._read_state()
    bound = state.get("bound")
    counters = state.get("counters")
    return CacheStatus(root, used, bound if isinstance(bound, int) else default_bound(root),
                       len(files),
                       {k: v for k, v in counters.items() if isinstance(v, int)}
                       if isinstance(counters, dict) else {})


__all__ = ["BLOCK", "SEGMENT", "CacheStatus", "PackCache", "cache_status", "data_regions",
           "default_bound", "punch_hole"]
