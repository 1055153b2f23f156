"""Rebuilding the LMDB index from the packs alone (the packs are the source of truth).

Owns: scanning every pack, re-indexing every intact record, and replaying version records and
ref events (tags, untags, drops) in time order. Never imports: daemon, trio, pyfuse3. Runs in
the caller's thread, under the store's gc lock (no writer runs meanwhile).

The new index is built beside the old one and swapped in with renames; a crash in between
leaves either the old index or none, and running the rebuild again finishes the job.
"""

from __future__ import annotations

import os
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from vfs import schema
from vfs.config import read_config
from vfs.errors import CorruptData
from vfs.ids import ObjType, PackName
from vfs.index import Index
from vfs.locks import flocked
from vfs.model import RefEvent, Version, replay_events
from vfs.objects import register_pack
from vfs.pack import REC_HEADER, SealedPack, check_record, scan_pack
from vfs.progress import NoProgress, Progress


@dataclass
class RebuildReport:
    packs: int = 0
    objects: int = 0
    versions: int = 0
    dropped: int = 0
    tags: int = 0
    bad_records: int = 0
    problems: list[str] = field(default_factory=list)


def pack_files(packs_dir: Path) -> list[Path]:
    """Every sealed pack file (not those being written in packs/tmp), in name order."""
    out: list[Path] = []
    for sub in sorted(os.scandir(packs_dir), key=lambda d: d.name):
        if sub.is_dir() and sub.name != "tmp":
            out.extend(Path(f.path) for f in sorted(os.scandir(sub.path), key=lambda d: d.name))
    return out


def rebuild_index(root: Path, progress: Progress | None = None) -> RebuildReport:
    """Replace `root/index` with one rebuilt from `root/packs`."""
    progress = progress or NoProgress()
    read_config(root)  # refuse anything that is not a store
    report = RebuildReport()
    new_dir = root / "index.rebuild"
    shutil.rmtree(new_dir, ignore_errors=True)
    lock_dir = root / "locks"
    lock_dir.mkdir(exist_ok=True)
    with flocked(lock_dir / "gc.lock", exclusive=True, wait=False,
                 busy_message=f"store {root} is in use by an import or commit: retry later"):
        index = Index(new_dir, create=True)
        versions: dict[int, tuple[tuple[int, int], bytes]] = {}
        events: list[RefEvent] = []
        files = pack_files(root / "packs")
        progress.start("rebuild: scanning packs", len(files), "packs")
        for path in files:
            records, problems = scan_pack(path)
            report.problems += [f"pack {path.name[:12]}: {p}" for p in problems]
            data = path.read_bytes()
            good = []
            for rec in records:
                raw = data[rec.offset:rec.end]
                if rec.kind in (ObjType.VERSION, ObjType.REFEVENT):
                    try:
                        plain = check_record(raw, rec.oid, rec.kind, rec.plain_len)
                    except CorruptData as exc:
                        report.bad_records += 1
                        report.problems.append(str(exc))
                        continue
                    if rec.kind == ObjType.VERSION:
                        version = Version.from_record(schema.dec_msg(plain))
                        n = version.number
                        if n not in versions or version.precedence > versions[n][0]:
                            versions[n] = (version.precedence, plain)  # a repair's or a
                            # pull's record wins over the one the version began with
                    else:
                        events.append(RefEvent.from_record(schema.dec_msg(plain)))
                elif (len(raw) < REC_HEADER.size
                      or zlib.crc32(raw[REC_HEADER.size:]) != rec.crc):
                    report.bad_records += 1
                    report.problems.append(f"pack {path.name[:12]}: record at {rec.offset} "
                                           "fails its checksum; left out of the index")
                    continue
                good.append(rec)
            with index.write() as txn:
                register_pack(index, txn, SealedPack(PackName(path.name), len(data), good))
            report.packs += 1
            report.objects += len(good)
            progress.advance(1)
        progress.finish()
        _replay(index, versions, events, report)
        index.close()
        old = root / "index.old"
        shutil.rmtree(old, ignore_errors=True)
        if (root / "index").exists():
            os.rename(root / "index", old)
        os.rename(new_dir, root / "index")
        shutil.rmtree(old, ignore_errors=True)
    return report


def _replay(index: Index, versions: dict[int, tuple[tuple[int, int], bytes]],
            events: list[RefEvent], report: RebuildReport) -> None:
    dbs = index.dbs
    tags, dropped = replay_events(events)
    highest = max([*versions, *dropped, 0])
    with index.write() as txn:
        for n, (_, raw) in versions.items():
            if n not in dropped:
                txn.put(schema.version_key(n), raw, db=dbs["versions"])
                report.versions += 1
        for n, t in dropped.items():
            txn.put(schema.version_key(n), schema.enc_msg({"time": t}), db=dbs["dropped"])
        report.dropped = len(dropped)
        for name, n in tags.items():
            if n in versions and n not in dropped:
                txn.put(schema.tag_key(name), schema.tag_value(name, n), db=dbs["tags"])
                report.tags += 1
        txn.put(schema.META_NEXT_VERSION, schema.enc_u32(highest + 1), db=dbs["meta"])
