"""Reading and writing objects by id: the bridge between packs and the index.

Owns: locating an object (index lookup, pack name), reading and verifying it, and writing new
objects into packs whose records are indexed as each pack is sealed. Never imports: daemon, trio,
pyfuse3.

Threads: `ObjectReader` is thread-safe. An `ObjectWriter` belongs to the one thread that created
it (it runs LMDB write transactions). Objects written are indexed pack by pack, so a crash leaves
at most unreferenced objects (gc reclaims them), never a reference to a missing object: a version
is recorded only after every pack it needs is sealed and indexed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfs import schema
from vfs.errors import DsfsError, ObjectMissing
from vfs.ids import ObjectId, ObjType, hash_object, short
from vfs.index import Index
from vfs.pack import PackReader, PackWriter, Record, RemoteReads, SealedPack, encode_payload
from vfs.readahead import ReadAhead


@dataclass(frozen=True, slots=True)
class Located:
    pack: str
    loc: schema.ObjLoc


class ObjectReader:
    """Finds objects through the index and returns their verified plain bytes."""

    def __init__(self, index: Index, packs_dir: Path, remote: RemoteReads | None = None
                 ) -> None:
        self.index = index
        self.packs = PackReader(packs_dir, readahead=ReadAhead.for_packs(packs_dir),
                                remote=remote)
        self._pack_names: dict[int, str] = {}
        self._lock = threading.Lock()

    def locate(self, oid: bytes, txn: Any = None) -> Located | None:
        if txn is None:
            with self.index.read() as t:
                return self.locate(oid, t)
        raw = txn.get(oid, db=self.index.dbs["objects"])
        if raw is None:
            return None
        loc = schema.dec_loc(raw)
        name = self._pack_names.get(loc.pack_no)
        if name is None:
            info = txn.get(schema.pack_key(loc.pack_no), db=self.index.dbs["packs"])
            if info is None:
                return None
            name = str(schema.dec_msg(info)["name"])
            with self._lock:
                self._pack_names[loc.pack_no] = name
        return Located(name, loc)

    def exists(self, oid: bytes, txn: Any = None) -> bool:
        if txn is None:
            with self.index.read() as t:
                return t.get(oid, db=self.index.dbs["objects"]) is not None
        return txn.get(oid, db=self.index.dbs["objects"]) is not None

    def get(self, oid: ObjectId, kind: ObjType) -> bytes:
        """Return the verified plain bytes of an object, or raise CorruptData/ObjectMissing."""
        for attempt in range(2):
            found = self.locate(oid)
            if found is None:
                raise ObjectMissing(f"object {short(oid)} is not in the index", oid)
            try:
                return self.packs.read(found.pack, found.loc.offset, oid, kind,
                                       found.loc.plain_len, found.loc.stored_len,
                                       readahead=kind == ObjType.CHUNK)
            except ObjectMissing:
                # gc may have moved the object to a new pack since we looked: look again once.
                self.packs.forget(found.pack)
                if attempt:
                    raise ObjectMissing(
                        f"object {short(oid)}: pack {found.pack[:12]} is missing", oid) from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.packs.close()


@dataclass
class WriteStats:
    new_objects: int = 0
    new_stored_bytes: int = 0
    new_plain_bytes: int = 0


class ObjectWriter:
    """Writes new objects into packs and indexes each sealed pack.

    Metadata goes to one pack written by the owning thread. Data chunks may be written from
    worker threads, each into a pack of its own, so compression, checksums and writes run in
    parallel. `pending` holds ids written but not yet indexed; claiming an id is atomic, so
    two threads never both write the same new chunk.
    """

    def __init__(self, index: Index, packs_dir: Path, reader: ObjectReader, zstd_level: int,
                 pack_target: int) -> None:
        self.index = index
        self.packs_dir = packs_dir
        self.reader = reader
        self.zstd_level = zstd_level
        self.pack_target = pack_target
        self._writers: dict[object, PackWriter] = {}
        self.pending: set[bytes] = set()
        self.stats = WriteStats()
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        """The first failure of a background seal: every later write and the commit raise it."""
        self._sealer: ThreadPoolExecutor | None = None
        self._sealing: list[Future[None]] = []
        self._txn: Any = None
        self._txn_uses = 0
        self._seals = 0
        self._txn_seals = 0

    def snapshot(self) -> Any:
        """A read snapshot of the index for the owning thread, renewed after each seal and
        every few thousand uses. A stale snapshot can only cause a duplicate write (harmless,
        gc reclaims it), never a missing object: `pending` covers objects not yet indexed."""
        if self._txn is None or self._txn_uses > 4096 or self._txn_seals != self._seals:
            if self._txn is not None:
                self._txn.abort()
            self._txn = self.index.env.begin(buffers=False)
            self._txn_uses = 0
            self._txn_seals = self._seals
        self._txn_uses += 1
        return self._txn

    def has(self, oid: bytes, txn: Any = None) -> bool:
        """Owning thread only (uses its snapshot unless given a transaction)."""
        if oid in self.pending:
            return True
        return self.reader.exists(oid, txn if txn is not None else self.snapshot())

    @contextmanager
    def known_checker(self) -> Iterator[Callable[[bytes], bool]]:
        """For worker threads: one snapshot for a batch of existence checks."""
        pending = self.pending
        db = self.index.dbs["objects"]
        with self.index.read() as txn:
            yield lambda oid: oid in pending or txn.get(oid, db=db) is not None

    def put_encoded(self, oid: ObjectId, kind: ObjType, plain_len: int, codec: int,
                    payload: bytes | memoryview, crc: int | None = None, *,
                    index_checked: bool = False) -> bool:
        """Store an encoded object unless it is stored already; True if written.

        Worker threads pass `index_checked=True` after their own snapshot said the id is new.
        """
        self._raise_seal_error()
        if not index_checked and self.reader.exists(oid, self.snapshot()):
            return False
        key: object = "meta" if kind != ObjType.CHUNK else threading.get_ident()
        with self._lock:
            if oid in self.pending:
                return False
            self.pending.add(oid)
            writer = self._writers.get(key)
            if writer is None:
                writer = self._writers[key] = PackWriter(self.packs_dir)
            self.stats.new_objects += 1
            self.stats.new_stored_bytes += len(payload)
            self.stats.new_plain_bytes += plain_len
        try:
            writer.add(oid, kind, codec, plain_len, payload, crc)  # only this thread uses it
        except BaseException as exc:
            # the pack is aborted (full disk, I/O error): nothing may write into it again, and
            # every later write and the commit report this first error, not a follow-on one
            with self._lock:
                if self._writers.get(key) is writer:
                    del self._writers[key]
                if self._error is None and isinstance(exc, DsfsError):
                    self._error = exc
            raise
        if writer.size >= self.pack_target:
            self._seal_in_background(key)
        return True

    def put_meta(self, kind: ObjType, plain: bytes) -> ObjectId:
        """Store a metadata object (deduplicated) and return its id. Owning thread only."""
        oid = hash_object(kind, plain)
        if not self.has(oid):
            codec, payload = encode_payload(plain, self.zstd_level)
            self.put_encoded(oid, kind, len(plain), codec, payload, index_checked=True)
        return oid

    def _raise_seal_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _seal_writer(self, writer: PackWriter, extra: Any = None) -> None:
        try:
            sealed = writer.seal()
            with self.index.write() as txn:
                register_pack(self.index, txn, sealed)
                if extra is not None:
                    extra(txn)
        except BaseException as exc:
            with self._lock:
                if self._error is None:
                    self._error = exc
            raise
        with self._lock:
            for rec in sealed.records:
                self.pending.discard(rec.oid)
            self._seals += 1

    def _seal_in_background(self, key: object) -> None:
        """Hand a full pack to the sealing thread: its fsync overlaps with writing the next.

        At most two packs wait for their fsync; an error in sealing is raised here or at
        `flush`/`commit_with`, before any version could reference the pack's objects.
        """
        with self._lock:
            writer = self._writers.pop(key)
            if self._sealer is None:
                self._sealer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsfs-seal")
            waits = self._sealing[:-1] if len(self._sealing) >= 2 else []
            self._sealing = [f for f in self._sealing if f not in waits]
            self._sealing.append(self._sealer.submit(self._seal_writer, writer))
        for fut in waits:
            fut.result()

    def _wait_sealing(self) -> None:
        with self._lock:
            waits, self._sealing = self._sealing, []
        for fut in waits:
            fut.result()

    def _take_writers(self) -> list[PackWriter]:
        """Every open pack, data packs first (call when no worker is writing)."""
        with self._lock:
            meta = self._writers.pop("meta", None)
            data = list(self._writers.values())
            self._writers.clear()
        return data + ([meta] if meta is not None else [])

    def flush(self) -> None:
        """Seal and index every open pack."""
        self._wait_sealing()
        self._raise_seal_error()
        for writer in self._take_writers():
            self._seal_writer(writer)

    def commit_with(self, fn: Any) -> None:
        """Seal everything; the last index transaction also runs `fn(txn)` (atomically)."""
        self._wait_sealing()
        self._raise_seal_error()
        self._end_snapshot()
        writers = self._take_writers()
        for writer in writers[:-1]:
            self._seal_writer(writer)
        if writers:
            self._seal_writer(writers[-1], fn)
        else:
            with self.index.write() as txn:
                fn(txn)
        self._close_sealer()

    def _end_snapshot(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None

    def _close_sealer(self) -> None:
        self._end_snapshot()
        if self._sealer is not None:
            self._sealer.shutdown(wait=True)
            self._sealer = None

    def abort(self) -> None:
        """Drop unsealed packs. Packs already sealed stay (unreferenced until gc)."""
        with self._lock:
            waits, self._sealing = self._sealing, []
        for fut in waits:
            with contextlib.suppress(Exception):
                fut.result()
        self._close_sealer()
        for writer in self._take_writers():
            writer.abort()


def register_pack(index: Index, txn: Any, sealed: SealedPack, records: list[Record] | None = None,
                  replace: bool = False) -> int:
    """Record a sealed pack and its objects in the index within `txn`. Returns its number."""
    meta = index.dbs["meta"]
    raw = txn.get(schema.META_NEXT_PACK, db=meta)
    pack_no = schema.dec_u32(raw) if raw else 1
    txn.put(schema.META_NEXT_PACK, schema.enc_u32(pack_no + 1), db=meta)
    recs = sealed.records if records is None else records
    txn.put(schema.pack_key(pack_no), schema.enc_msg(
        {"name": sealed.name, "size": sealed.size, "records": len(recs),
         "time": time.time_ns()}), db=index.dbs["packs"])
    txn.put(sealed.name.encode(), schema.pack_key(pack_no), db=index.dbs["packnames"])
    rows = sorted((r.oid, schema.enc_loc(schema.ObjLoc(pack_no, r.offset, r.stored_len,
                                                      r.plain_len, r.kind, r.codec)))
                  for r in recs)
    with txn.cursor(db=index.dbs["objects"]) as cur:
        cur.putmulti(rows, overwrite=replace)
    return pack_no
