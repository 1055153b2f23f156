"""Lazy reads of a clone: records of packs that stay on the remote, fetched on demand.

Owns: reading a record of a remote-only pack (`vfs.pack.PackReader` hands those here), through
the local cache (`vfs.remote.diskcache`): fetching what is missing with ranged GETs, reading
ahead for sequential readers, sharing fetches in flight, and what happens to bytes that fail
their check. Never imports: daemon, trio, pyfuse3. Thread-safe: the mount's worker threads
call `read` at once; its lock is a leaf, never held across I/O.

A record missing from the cache is one ranged GET, widened to 4 KiB blocks. A reader that
moves through a pack in order (a record starting near where one of the last reads of that pack
ended) gets a read-ahead window with each further miss, doubling from FIRST_WINDOW to
MAX_WINDOW (at most an eighth of the cache's bound), cut short where the cache holds bytes
already, and starting where the run had got to when the chunks before it are not fetched yet:
a cold `tar` of a version, which reads records in pack order, makes a few GETs of several MiB
per pack, and so does one big file read through the mount's prefetch threads. Concurrent readers
of a range already being fetched (the mount's prefetch threads) wait for that GET instead of
making their own.

Trust: every record is verified (BLAKE3 of its plain bytes, `vfs.pack.check_parts`) before it
is returned, whether it came from the cache or the network. A record that fails from the cache
is dropped from it and fetched once more; a record that fails fresh from the remote is
CorruptData naming the object, and is dropped from the cache (the mount answers EIO and logs
file and version). Bytes read ahead are written to the cache before they are checked, and are
checked when they are read: so wrong bytes can sit in the cache, but are never served.

The backend is opened on the first fetch, never when the store is opened.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from vfs.errors import CorruptData, ObjectMissing
from vfs.ids import ObjectId, ObjType, short
from vfs.pack import REC_HEADER, check_parts
from vfs.remote import layout
from vfs.remote.backend import Backend, RemoteKeyMissing
from vfs.remote.diskcache import BLOCK, PackCache
from vfs.remote.remotes import Remotes, RemoteSpec

log = logging.getLogger("dsfs.remote")

FIRST_WINDOW = 512 << 10
MAX_WINDOW = 8 << 20
NEAR = 4 << 20
"""A record starting up to this far (or twice the current window) from the end of one of the
last reads of its pack is read sequentially (a reader's prefetch asks for up to 8 chunks
ahead of it at once, 4 MiB of 512 KiB chunks)."""
_ENDS = 8
_STREAMS = 256


@dataclass
class _Flight:
    start: int
    end: int
    done: Future[bytes] = field(default_factory=Future)


@dataclass
class _Stream:
    ends: list[int] = field(default_factory=list)
    window: int = 0


class RemotePacks:
    """Records of packs on the clone's lazy remote, through the local cache."""

    def __init__(self, spec: RemoteSpec, cache: PackCache, backend: Backend | None = None
                 ) -> None:
        self.spec = spec
        self.cache = cache
        self._backend = backend
        self._open_lock = threading.Lock()
        self._lock = threading.Lock()
        self._flights: dict[str, list[_Flight]] = {}
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        self.shared = 0
        """Reads that waited for a GET already in flight instead of making their own."""

    @property
    def connected(self) -> bool:
        """Whether the backend was opened (by a first fetch)."""
        return self._backend is not None

    @property
    def counters(self) -> dict[str, int]:
        return self.cache.counters

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.cache.counters[name] = self.cache.counters.get(name, 0) + n

    def backend(self) -> Backend:
        with self._open_lock:
            if self._backend is None:
                self._backend = self.spec.open()
            return self._backend

    # -- reads -----------------------------------------------------------------------------

    def read(self, name: str, offset: int, oid: ObjectId, kind: ObjType, plain_len: int,
             stored_len: int) -> bytes:
        end = offset + REC_HEADER.size + stored_len
        front, near = self._note(name, offset, end)
        cached, whole = self.cache.read_head(name, offset, end)
        if whole:
            try:
                plain = _check(cached, oid, kind, plain_len)
            except CorruptData as exc:
                return self._again(name, offset, end, oid, kind, plain_len, exc)
            self._count("hits")
            return plain
        self._count("misses")
        ahead = 0 if front is None and near else self._window(name, front is not None)
        # the head of a record that a read-ahead window ended in is in the cache: fetch the rest
        data = cached + self._fetch(name, offset + len(cached), end, ahead, oid,
                                    front if ahead else None)
        try:
            return _check(data, oid, kind, plain_len)
        except CorruptData as exc:
            if cached:
                return self._again(name, offset, end, oid, kind, plain_len, exc)
            self.cache.drop(name, offset, end)
            raise self._damaged(exc, name, offset, oid) from None

    def _again(self, name: str, offset: int, end: int, oid: ObjectId, kind: ObjType,
               plain_len: int, exc: CorruptData) -> bytes:
        """A record read from the cache (in whole or in part) failed: drop it there and fetch
        it whole, once, fresh."""
        log.warning("cached %s failed its check (%s): fetching it again", short(oid), exc)
        self.cache.drop(name, offset, end)
        self._count("refetched")
        data = self._fetch(name, offset, end, 0, oid)
        try:
            return _check(data, oid, kind, plain_len)
        except CorruptData as again:
            self.cache.drop(name, offset, end)
            raise self._damaged(again, name, offset, oid) from None

    def _damaged(self, exc: CorruptData, name: str, offset: int, oid: ObjectId) -> CorruptData:
        return CorruptData(f"{exc} (pack {name[:12]} offset {offset}, as read from remote "
                           f"{self.spec.name} {self.spec.url})", oid)

    def _note(self, name: str, offset: int, end: int) -> tuple[int | None, bool]:
        """Record a read of [offset, end) of a pack. Returns where a sequential run had got to
        when this read continues it (it starts at most `reach` past where a recent read
        ended), else None; and whether it lies that near behind (the chunks a reader's prefetch
        asks for at once arrive in any order: those behind neither grow nor reset the run)."""
        with self._lock:
            stream = self._streams.pop(name, None) or _Stream()
            self._streams[name] = stream
            if len(self._streams) > _STREAMS:
                self._streams.popitem(last=False)
            reach = max(NEAR, 2 * stream.window)
            ahead = any(e <= offset <= e + reach for e in stream.ends)
            near = ahead or any(e - reach <= offset <= e for e in stream.ends)
            front = max(stream.ends) if ahead else None
            stream.ends.append(end)
            del stream.ends[:-_ENDS]
            return front, near

    def _window(self, name: str, grow: bool) -> int:
        """Bytes to read past a missing record: grows while a pack is read in order, back to
        none when a read lands far from the run."""
        if not grow or not self.cache.writable():
            window = 0
        else:
            limit = min(MAX_WINDOW, self.cache.bound // 8)
            with self._lock:
                stream = self._streams.get(name)
                window = 0 if stream is None else stream.window
            window = min(max(window * 2, FIRST_WINDOW), limit)
            if window < BLOCK:
                window = 0
        with self._lock:
            stream = self._streams.get(name)
            if stream is not None:
                stream.window = window
        return window

    def _fetch(self, name: str, start: int, end: int, ahead: int, oid: ObjectId,
               front: int | None = None) -> bytes:
        """Fresh bytes [start, end) of a pack (plus `ahead` bytes read into the cache): from
        the GETs in flight that cover them, else one GET of what no GET in flight covers
        (waiting for those that fetch the record's head already).

        A record past `front` (where a sequential run had got to) fetches up to `ahead` bytes
        of the gap before it too, from where the cache or a GET in flight stops: the chunks a
        reader's prefetch asks for at once arrive in any order, and the first to come is often
        the last of them."""
        lo = _down(start)
        least = _up(end)
        hi = _up(end + ahead)
        if ahead:  # read ahead only up to what the cache holds already
            cached = self.cache.next_present(name, end)
            if cached is not None and cached < hi:
                hi = max(least, _down(cached))
        gap: int | None = None
        if front is not None and front < lo:
            gap = _down(max(front, start - ahead, self.cache.present_end_before(name, start)))
        chain: list[_Flight] = []
        with self._lock:
            flights = self._flights.setdefault(name, [])
            pos = start
            while pos < end:
                found = next((f for f in flights if f.start <= pos < f.end), None)
                if found is None:
                    break
                chain.append(found)
                pos = found.end
            flight: _Flight | None = None
            if chain:
                self.shared += 1
            if pos < end:
                if chain:
                    lo = pos
                elif gap is not None:
                    for f in flights:  # nor what a GET in flight before us fetches
                        if f.start < start:
                            gap = max(gap, f.end)
                    lo = min(lo, gap)
                for f in flights:  # nor what a GET in flight after us fetches
                    if lo < f.start < hi:
                        hi = max(least, f.start)
                flight = _Flight(lo, hi)
                flights.append(flight)
        if flight is not None:
            self._lead(name, flight, oid)
            chain.append(flight)
        parts: list[bytes] = []
        pos = start
        for f in chain:
            piece = f.done.result()[pos - f.start:min(end, f.end) - f.start]
            parts.append(piece)
            pos += len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _lead(self, name: str, flight: _Flight, oid: ObjectId) -> None:
        try:
            try:
                data = self.backend().get(layout.pack_key(name), flight.start,
                                          flight.end - flight.start)
            except RemoteKeyMissing:
                raise ObjectMissing(f"object {short(oid)}: pack {name[:12]} is missing on "
                                    f"remote {self.spec.name} ({self.spec.url})", oid) from None
            self._count("gets")
            self._count("bytes_fetched", len(data))
            if data:
                try:
                    self.cache.store(name, flight.start, data)  # before the flight ends
                except OSError as exc:  # a cache that cannot be written is no cache
                    log.warning("cannot write the cache of pack %s: %s", name[:12], exc)
        except BaseException as exc:
            flight.done.set_exception(exc)
        else:
            flight.done.set_result(data)
        finally:
            with self._lock:
                flights = self._flights[name]
                flights.remove(flight)
                if not flights:
                    del self._flights[name]

    def forget_pack(self, name: str) -> None:
        self.cache.forget_pack(name)

    def close(self) -> None:
        self.cache.close()
        with self._open_lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None


def _down(n: int) -> int:
    return n - n % BLOCK


def _up(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _check(data: bytes, oid: ObjectId, kind: ObjType, plain_len: int) -> bytes:
    if len(data) < REC_HEADER.size:
        raise CorruptData(f"object {short(oid)} is truncated", oid)
    return check_parts(data[:REC_HEADER.size], data[REC_HEADER.size:], oid, kind, plain_len,
                       check_crc=False)


def open_lazy(root: Path, cache_bound: int | None = None) -> RemotePacks | None:
    """The lazy remote of the store at `root` (None if it has none), with its cache under
    `root/cache` bounded to `cache_bound` bytes (None: the bound last used, else
    `vfs.remote.diskcache.default_bound`). Contacts nothing."""
    spec = Remotes(root).lazy()
    if spec is None:
        return None
    return RemotePacks(spec, PackCache(root / "cache", cache_bound))


__all__ = ["FIRST_WINDOW", "MAX_WINDOW", "RemotePacks", "open_lazy"]
