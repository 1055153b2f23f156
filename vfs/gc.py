"""`dsfs gc`: reclaim what no version, tag or head references.

Owns: marking reachable objects, deleting dead packs, rewriting mostly-dead packs (every pack
holding dead data with `compact`), removing orphan packs left by interrupted writers. Data of
a dropped version that a mount still has files open in (a held pin, vfs.locks) counts as live
until they are closed; the report names those versions. Never imports: daemon, trio, pyfuse3.
Holds the store's gc lock exclusively (no import or commit runs meanwhile); mounts keep reading
throughout.

Order, for crash safety: new packs are written and fsynced first; one index transaction then
points the moved objects at them and forgets dead objects and packs; old pack files are deleted
last. A crash at any point leaves every live object reachable; at worst orphan pack files remain,
which the next gc deletes. A reader that looked up an old location retries once (vfs.objects).

On a clone, packs that only the lazy remote holds are never rewritten (that would download
them) and never unlinked: a dead one is forgotten by the index and dropped from the cache;
one holding live objects stays registered (`dsfs gc --remote` frees space on the remote).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from vfs import schema
from vfs.errors import CorruptData
from vfs.ids import ObjectId, ObjType, TreeId
from vfs.locks import pinned_roots
from vfs.objects import register_pack
from vfs.pack import PACK_HEADER, REC_HEADER, TRAILER, PackWriter, pack_path
from vfs.progress import NoProgress, Progress
from vfs.reach import version_object_id, walk_versions
from vfs.store import Store

REWRITE_BELOW = 0.5
FOOTER_ROW_BYTES = 60
"""About what one record's row costs in a pack's footer (msgpack of id, kind, offsets, crc)."""


@dataclass
class GcReport:
    dry_run: bool
    live_objects: int = 0
    dead_objects: int = 0
    packs_deleted: int = 0
    packs_rewritten: int = 0
    orphan_files: int = 0
    bytes_freed: int = 0
    bytes_rewritten: int = 0
    kept_damaged: list[str] = field(default_factory=list)
    dead_bytes_kept: int = 0
    """Bytes of dead records left in packs gc chose not to rewrite (mostly live ones)."""
    packs_kept_with_dead: int = 0
    kept_open: list[int] = field(default_factory=list)
    """Dropped versions whose data stays because a mount has files of them open."""


@dataclass
class _PackInfo:
    no: int
    name: str
    size: int
    live: list[tuple[bytes, schema.ObjLoc]] = field(default_factory=list)
    records: int = 0
    dead: list[bytes] = field(default_factory=list)
    live_bytes: int = 0

    @property
    def has_dead(self) -> bool:
        """Dead records still indexed, or records an earlier gc forgot but left in the pack."""
        return bool(self.dead) or len(self.live) < self.records

    @property
    def dead_bytes(self) -> int:
        """Bytes of dead records (what rewriting would save, pack overhead aside)."""
        overhead = PACK_HEADER.size + TRAILER.size + FOOTER_ROW_BYTES * self.records
        return max(0, self.size - overhead - self.live_bytes)


def _live_set(store: Store, progress: Progress, report: GcReport) -> set[bytes]:
    versions = store.versions()
    # after listing versions (vfs.locks): a pin taken later is refused by its mount
    numbers = {v.number for v in versions}
    pinned = {n: root for n, root in pinned_roots(store.root).items() if n not in numbers}
    progress.start("gc: marking", None, "pages")
    try:
        found = walk_versions(store, [v.root for v in versions], on_page=progress.advance)
        # open files of dropped versions: keep what can still be read of them (a tree already
        # incomplete is no reason to stop, it is dropped data)
        held = walk_versions(store, [TreeId(r) for r in pinned.values()],
                             on_page=progress.advance) if pinned else None
    finally:
        progress.finish()
    if found.broken:
        # Never delete what a damaged tree might still reference: stop and ask for verify.
        raise CorruptData("gc stopped: some trees cannot be read (run `dsfs verify` to see "
                          "which files and versions are damaged); nothing was deleted")
    live = set(found.objects)
    if held is not None:
        report.kept_open = sorted(pinned)
        live.update(held.objects)
    with store.index.read() as txn, txn.cursor(db=store.index.dbs["versions"]) as cur:
        live.update(version_object_id(raw) for _, raw in cur)
    return live


def _survey(store: Store, live: set[bytes]) -> dict[int, _PackInfo]:
    packs: dict[int, _PackInfo] = {}
    dbs = store.index.dbs
    with store.index.read() as txn:
        with txn.cursor(db=dbs["packs"]) as cur:
            for k, v in cur:
                info = schema.dec_msg(v)
                no = schema.dec_pack_key(k)
                packs[no] = _PackInfo(no, str(info["name"]), int(info["size"]),
                                      records=int(info.get("records", 0)))
        with txn.cursor(db=dbs["objects"]) as cur:
            for oid, raw in cur:
                loc = schema.dec_loc(raw)
                info_ = packs.get(loc.pack_no)
                if info_ is None:
                    continue
                # Ref events (tags, drops) are history: always kept.
                if oid in live or loc.kind == ObjType.REFEVENT:
                    info_.live.append((oid, loc))
                    info_.live_bytes += REC_HEADER.size + loc.stored_len
                else:
                    info_.dead.append(oid)
    return packs


def _orphans(store: Store, known: set[str]) -> list[str]:
    out: list[str] = []
    for sub in os.scandir(store.packs_dir):
        if not sub.is_dir():
            continue
        for f in os.scandir(sub.path):
            if sub.name == "tmp" or f.name not in known:
                out.append(f.path)
    return out


def collect_garbage(store: Store, dry_run: bool = False,
                    progress: Progress | None = None, compact: bool = False) -> GcReport:
    """Free what nothing references. `compact` rewrites every pack holding dead data, not
    only those less than half live."""
    progress = progress or NoProgress()
    report = GcReport(dry_run)
    with store.gc_lock():
        live = _live_set(store, progress, report)
        packs = _survey(store, live)
        report.live_objects = sum(len(p.live) for p in packs.values())
        report.dead_objects = sum(len(p.dead) for p in packs.values())
        orphans = _orphans(store, {p.name for p in packs.values()})
        report.orphan_files = len(orphans)
        local = {p.name for p in packs.values()
                 if pack_path(store.packs_dir, p.name).exists()}
        to_delete = [p for p in packs.values() if p.has_dead and not p.live]
        # a clone's remote-only packs stay whole on their remote: never downloaded to rewrite
        to_rewrite = [p for p in packs.values() if p.has_dead and p.live and p.name in local
                      and (compact or p.live_bytes < REWRITE_BELOW * p.size)]
        kept = [p for p in packs.values()
                if p.has_dead and p.live and p not in to_rewrite and p.dead_bytes]
        report.packs_deleted = len(to_delete)
        report.packs_rewritten = len(to_rewrite)
        report.bytes_freed = (sum(p.size for p in to_delete if p.name in local)
                              + sum(p.size - p.live_bytes for p in to_rewrite)
                              + sum(os.lstat(o).st_size for o in orphans))
        report.bytes_rewritten = sum(p.live_bytes for p in to_rewrite)
        report.packs_kept_with_dead = len(kept)
        report.dead_bytes_kept = sum(p.dead_bytes for p in kept)
        if dry_run:
            return report
        for path in orphans:
            os.unlink(path)
        progress.start("gc: rewriting", report.bytes_rewritten, "bytes")
        try:
            for p in to_rewrite:
                if not _rewrite(store, p, progress):
                    report.kept_damaged.append(p.name)
                    report.bytes_freed -= p.size - p.live_bytes
                    report.packs_kept_with_dead += 1
                    report.dead_bytes_kept += p.dead_bytes
        finally:
            progress.finish()
        _forget(store, to_delete)
        for p in to_delete:
            store.reader.packs.forget(p.name)
            if p.name in local:
                pack_path(store.packs_dir, p.name).unlink(missing_ok=True)
            elif store.remote is not None:
                store.remote.forget_pack(p.name)  # its cached bytes; the remote keeps it
        # Dead objects in packs that stay are forgotten too, so they are never deduplicated
        # against (their bytes remain until that pack is rewritten).
        with store.index.write() as txn:
            rewritten = {p.no for p in to_rewrite if p.name not in report.kept_damaged}
            for p in packs.values():
                if p not in to_delete and p.no not in rewritten:
                    for oid in p.dead:
                        txn.delete(oid, db=store.index.dbs["objects"])
    return report


def _forget(store: Store, gone: list[_PackInfo]) -> None:
    dbs = store.index.dbs
    with store.index.write() as txn:
        for p in gone:
            for oid in p.dead:
                txn.delete(oid, db=dbs["objects"])
            txn.delete(schema.pack_key(p.no), db=dbs["packs"])
            txn.delete(p.name.encode(), db=dbs["packnames"])


def _rewrite(store: Store, p: _PackInfo, progress: Progress) -> bool:
    """Copy the live records of a pack into a new one. False (pack kept) if any is damaged."""
    writer = PackWriter(store.packs_dir)
    try:
        for oid, loc in sorted(p.live, key=lambda t: t[1].offset):
            raw = store.reader.packs.read_raw(p.name, loc.offset, REC_HEADER.size + loc.stored_len)
            try:
                store.reader.packs.read(p.name, loc.offset, ObjectId(oid), loc.kind,
                                        loc.plain_len, loc.stored_len)
            except CorruptData:
                writer.abort()
                return False
            payload = memoryview(raw)[REC_HEADER.size:]
            writer.add(ObjectId(oid), loc.kind, loc.codec, loc.plain_len, payload)
            progress.advance(len(raw))
        sealed = writer.seal()
    except BaseException:
        writer.abort()
        raise
    dbs = store.index.dbs
    with store.index.write() as txn:
        register_pack(store.index, txn, sealed, replace=True)
        for oid in p.dead:
            txn.delete(oid, db=dbs["objects"])
        txn.delete(schema.pack_key(p.no), db=dbs["packs"])
        txn.delete(p.name.encode(), db=dbs["packnames"])
    store.reader.packs.forget(p.name)
    pack_path(store.packs_dir, p.name).unlink(missing_ok=True)
    return True

