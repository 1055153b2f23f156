"""`dsfs verify`: prove the store is intact, or name every damaged file and version.

Owns: structural checks (every version's trees and chunk lists read and hash-checked, every
referenced chunk indexed and its pack present) and, with `read_data`, reading and hashing every
reachable chunk in pack order. On a clone, a pack only its lazy remote holds is present (its
size is the index's); reading its data fetches it through the cache (`vfs.remote.lazy`).
Never imports: daemon, trio, pyfuse3. Takes no lock: it reads LMDB snapshots and immutable
packs, so it runs beside a mount or an import.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

from vfs import schema
from vfs.errors import CorruptData
from vfs.head.check import HeadProblem
from vfs.head.check import check_head as head_problems
from vfs.ids import ObjectId, ObjType, TreeId, short
from vfs.model import Entry, Kind, Version
from vfs.pack import REC_HEADER, pack_path
from vfs.progress import NoProgress, Progress
from vfs.reach import Reachable, content_objects, version_object_id, walk_versions
from vfs.store import Store


@dataclass(frozen=True, slots=True)
class Problem:
    version: int
    path: str
    problem: str

    def to_dict(self) -> dict[str, object]:
        return {"version": f"v{self.version}", "path": self.path, "problem": self.problem}


@dataclass
class VerifyReport:
    versions: int = 0
    objects: int = 0
    bytes_read: int = 0
    damaged_objects: dict[bytes, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    head_problems: list[HeadProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged_objects and not self.problems and not self.head_problems


def _check_locations(store: Store, objects: dict[bytes, ObjType], bad: dict[bytes, str]) -> \
        list[tuple[str, int, bytes, ObjType, int, int]]:
    """Every reachable object must be indexed inside an existing pack. Returns read jobs."""
    sizes: dict[str, int | None] = {}
    jobs: list[tuple[str, int, bytes, ObjType, int, int]] = []
    with store.index.read() as txn:
        for oid, kind in objects.items():
            found = store.reader.locate(oid, txn)
            if found is None:
                bad[oid] = f"{kind.name.lower()} {short(oid)} is missing from the index"
                continue
            if found.pack not in sizes:
                sizes[found.pack] = _pack_size(store, txn, found.pack, found.loc.pack_no)
            if sizes[found.pack] is None:
                # gc may have moved it since our snapshot: look again in a fresh one
                again = store.reader.locate(oid)
                if again is not None and again.pack != found.pack:
                    found = again
                    if found.pack not in sizes:
                        sizes[found.pack] = _pack_size(store, None, found.pack,
                                                       found.loc.pack_no)
            size = sizes[found.pack]
            loc = found.loc
            if size is None:
                bad[oid] = f"pack {found.pack[:12]} holding {short(oid)} is missing"
            elif loc.offset + REC_HEADER.size + loc.stored_len > size:
                bad[oid] = f"pack {found.pack[:12]} is truncated ({short(oid)} cut off)"
            elif kind == ObjType.CHUNK:
                jobs.append((found.pack, loc.offset, oid, kind, loc.plain_len, loc.stored_len))
    return jobs


def _pack_size(store: Store, txn: Any, name: str, pack_no: int) -> int | None:
    """A pack's size on disk; a clone's remote-only pack has the size its index records
    (reading its data, with `read_data`, fetches it through the cache). None: missing."""
    try:
        return os.stat(pack_path(store.packs_dir, name)).st_size
    except FileNotFoundError:
        if store.remote is None:
            return None
    if txn is None:
        with store.index.read() as t:
            return _pack_size(store, t, name, pack_no)
    raw = txn.get(schema.pack_key(pack_no), db=store.index.dbs["packs"])
    return None if raw is None else int(schema.dec_msg(raw)["size"])


def _name_damage(store: Store, versions: list[Version], bad: dict[bytes, str]) -> list[Problem]:
    """Every file and directory, in every version, that needs a damaged object."""
    memo: dict[bytes, list[tuple[str, str]]] = {}

    def subtree(tree: TreeId) -> list[tuple[str, str]]:
        if tree in memo:
            return memo[tree]
        out: list[tuple[str, str]] = []
        if tree in bad:
            out.append(("", f"directory listing unreadable: {bad[tree]}"))
        else:
            try:
                entries: list[Entry] = list(store.trees.entries(tree))
            except CorruptData as exc:
                entries = []
                out.append(("", f"directory listing unreadable: {exc}"))
            for e in entries:
                name = os.fsdecode(e.name)
                if e.kind == Kind.DIR:
                    out.extend((f"{name}/{p}" if p else name, m) for p, m in subtree(e.tree))
                elif e.kind == Kind.FILE:
                    holder = Reachable()
                    for oid in content_objects(store, e, holder):
                        if oid in bad or oid in holder.broken:
                            out.append((name, bad.get(oid) or holder.broken[oid]))
                            break
        memo[tree] = out
        return out

    problems: list[Problem] = []
    for v in versions:
        for path, msg in subtree(v.root):
            problems.append(Problem(v.number, path or ".", msg))
    return problems


def _subset(jobs: list[tuple[str, int, bytes, ObjType, int, int]], fraction: float
            ) -> list[tuple[str, int, bytes, ObjType, int, int]]:
    """Whole packs, picked at random, until `fraction` of the stored bytes is covered."""
    by_pack: dict[str, list[tuple[str, int, bytes, ObjType, int, int]]] = {}
    for job in jobs:
        by_pack.setdefault(job[0], []).append(job)
    packs = list(by_pack)
    random.shuffle(packs)
    total = sum(j[5] for j in jobs)
    picked: list[tuple[str, int, bytes, ObjType, int, int]] = []
    size = 0
    for name in packs:
        if size >= total * fraction:
            break
        picked.extend(by_pack[name])
        size += sum(j[5] for j in by_pack[name])
    return picked


def verify_store(store: Store, read_data: bool = False, progress: Progress | None = None,
                 subset: float | None = None, check_head: bool = True) -> VerifyReport:
    """Check every version (and @head); with `read_data`, read and hash every chunk, or a
    random `subset` (0-1] of the packs' bytes."""
    progress = progress or NoProgress()
    report = VerifyReport()
    versions, unreadable = store.readable_versions()
    report.versions = len(versions)
    progress.start("verify: structure", None, "pages")
    try:
        found = walk_versions(store, [v.root for v in versions], on_page=progress.advance)
    finally:
        progress.finish()
    bad: dict[bytes, str] = dict(found.broken)
    jobs = _check_locations(store, found.objects, bad)
    report.objects = len(found.objects)
    if read_data:
        if subset is not None and subset < 1:
            jobs = _subset(jobs, subset)
        jobs.sort()
        progress.start("verify: data", sum(j[5] for j in jobs), "bytes")
        try:
            for pack, offset, oid, kind, plain_len, stored_len in jobs:
                try:
                    store.reader.packs.read(pack, offset, ObjectId(oid), kind, plain_len,
                                            stored_len)
                except CorruptData as exc:
                    bad[oid] = str(exc)
                report.bytes_read += stored_len
                progress.advance(stored_len)
        finally:
            progress.finish()
    record_problems = _check_version_records(store, bad, skip=set(unreadable))
    record_problems += [Problem(n, ".", why) for n, why in unreadable.items()]
    if check_head:
        report.head_problems = head_problems(store)
    report.damaged_objects = bad
    report.problems = record_problems + (_name_damage(store, versions, bad) if bad else [])
    return report


def _check_version_records(store: Store, bad: dict[bytes, str], skip: set[int]
                           ) -> list[Problem]:
    """The packed copy of each version record (what a rebuild of the index would use)."""
    problems: list[Problem] = []
    with store.index.read() as txn, txn.cursor(db=store.index.dbs["versions"]) as cur:
        records = [(schema.dec_version_key(k), bytes(v)) for k, v in cur]
    for number, raw in records:
        if number in skip:
            continue
        oid = version_object_id(raw)
        try:
            store.get_object(oid, ObjType.VERSION)
        except CorruptData as exc:
            bad[oid] = str(exc)
            problems.append(Problem(number, ".", f"version record damaged in its pack: {exc}"))
    return problems
