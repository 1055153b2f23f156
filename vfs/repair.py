"""`dsfs verify --repair`: make a damaged store consistent again and say exactly what was lost.

Owns: the repair sequence (rebuild the index from the packs, find every object that is gone or
damaged, rewrite each version that needs one so it no longer does) and the record of what each
version lost. Never imports: daemon, trio, pyfuse3. Runs in the caller's thread, with @head's lock
(no mount) and the gc lock (no import, commit or gc) held throughout.

A rewritten version keeps its number, message, author, time and stats; its record gains a
`Repair` (vfs.model) listing every lost path and the root it had before. Files whose chunks or
chunk list are gone are left out, and so are directories whose listing is unreadable (their
names are unknown); every path that could be read survives byte-identical. Repair never invents
bytes: a file is either whole or absent, so the mount never serves zeros in place of lost data.

Each version is rewritten in its own transaction (new tree pages and record sealed in a pack,
then the index entry replaced), so a crash leaves every version either old or repaired and
running the repair again finishes the job.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import lmdb

from vfs import schema
from vfs.config import read_config
from vfs.errors import CorruptData, DsfsError, UserError
from vfs.ids import ObjectId, TreeId
from vfs.locks import flocked
from vfs.model import Entry, Kind, LostPath, Repair, Version
from vfs.objects import ObjectWriter
from vfs.pack import pack_path
from vfs.progress import NoProgress, Progress
from vfs.reach import Reachable, content_objects
from vfs.rebuild import RebuildReport, pack_files, rebuild_index
from vfs.remote.remotes import Remotes
from vfs.salvage import SalvagedLog, salvage_log, save_log, saved_log
from vfs.store import Store
from vfs.tree import build_tree
from vfs.verify import VerifyReport, verify_store

SALVAGE_FILE = "repair-salvage.msgpack"
"""In the store: the old index's version log, from salvage until restore."""


@dataclass
class RepairReport:
    rebuild: RebuildReport
    damaged_objects: int = 0
    restored: list[int] = field(default_factory=list)
    """Versions only the old index still had a record of (now recorded in a pack again)."""
    restored_tags: list[str] = field(default_factory=list)
    rewritten: list[int] = field(default_factory=list)
    """Numbers of the versions rewritten by this repair."""
    lost: list[tuple[int, LostPath]] = field(default_factory=list)
    """(version number, what it lost) for this repair, in version and path order."""


@dataclass
class _Fixed:
    tree: TreeId
    count: int
    lost: list[LostPath]
    subdirs: int = -1
    """Directories among its entries (what the entry naming it records, `Entry.subdirs`)."""


class _Fixer:
    """Rewrites trees without what cannot be read; shared subtrees are visited once."""

    def __init__(self, store: Store, bad: dict[bytes, str]) -> None:
        self.store = store
        # the index was just rebuilt from the packs: what it lacks is in no intact pack
        self.bad = {k: v.replace("is missing from the index", "is in no intact pack")
                    for k, v in bad.items()}
        self.writer: ObjectWriter | None = None
        self.memo: dict[bytes, _Fixed] = {}
        self.files: dict[bytes, str | None] = {}
        self.holder = Reachable()

    def tree(self, tree: TreeId) -> _Fixed:
        done = self.memo.get(tree)
        if done is not None:
            return done
        entries, lost = self._salvage(tree)
        changed = bool(lost)
        kept: list[Entry] = []
        for e in entries:
            if e.kind == Kind.DIR:
                sub = self.tree(e.tree)
                if sub.tree != e.tree:
                    changed = True
                    e = dataclasses.replace(e, ref=bytes(sub.tree), size=sub.count,
                                            subdirs=sub.subdirs)
                lost += [LostPath(_join(e.name, x.path), x.problem) for x in sub.lost]
            elif e.kind == Kind.FILE:
                problem = self._file_problem(e)
                if problem is not None:
                    changed = True
                    lost.append(LostPath(e.name, problem))
                    continue
            kept.append(e)
        subdirs = sum(1 for e in kept if e.kind == Kind.DIR)
        if changed:
            assert self.writer is not None
            fixed = _Fixed(build_tree(kept, self.writer.put_meta), len(kept), lost, subdirs)
        else:
            fixed = _Fixed(tree, len(kept), [], subdirs)
        self.memo[tree] = fixed
        return fixed

    def _salvage(self, tree: TreeId) -> tuple[list[Entry], list[LostPath]]:
        """The entries of every readable leaf page of a directory, and what could not be read."""
        entries: list[Entry] = []
        lost: list[LostPath] = []
        stack: list[tuple[ObjectId, int | None]] = [(ObjectId(tree), None)]
        while stack:
            oid, count = stack.pop()
            problem = self.bad.get(oid)
            page = None
            if problem is None:
                try:
                    found = self.store.trees.page(oid)
                    leaf = found.entries  # decoded as they are read (vfs.tree.Page)
                    page = found
                except (CorruptData, ValueError, TypeError) as exc:
                    problem = str(exc)
            if page is None:
                names = "all its names" if count is None else f"{count:,} names"
                lost.append(LostPath(b"", f"directory listing unreadable ({names} lost): "
                                          f"{problem}"))
                continue
            if page.level == 0:
                entries.extend(leaf)
            else:
                stack.extend(reversed([(r[1], r[2]) for r in page.rows]))
        return entries, lost

    def _file_problem(self, e: Entry) -> str | None:
        ref = bytes(e.ref)
        if ref in self.files:
            return self.files[ref]
        problem = None
        for oid in content_objects(self.store, e, self.holder):
            problem = self.bad.get(oid) or self.holder.broken.get(oid)
            if problem is not None:
                break
        self.files[ref] = problem
        return problem


def _join(name: bytes, sub: bytes) -> bytes:
    return name + b"/" + sub if sub else name + b"/"


def repair_store(root: Path, read_data: bool = False,
                 progress: Progress | None = None) -> RepairReport:
    """Rebuild the index of the store at `root`, then drop every reference to what is gone."""
    progress = progress or NoProgress()
    read_config(root)  # refuse anything that is not a store before writing into it
    lazy = Remotes(root).lazy()
    if lazy is not None and _remote_only(root):
        # a rebuild from the local packs alone would lose every other one
        raise UserError(f"{root} is a clone: some of its packs are only on remote {lazy.name} "
                        f"({lazy.url}), so its index cannot be rebuilt from the local ones; "
                        "`dsfs pull --data` first, or clone again")
    with _no_mount(root):
        # what the old index knows is kept on disk until it is restored: a repair cut short
        # after replacing the index finds it there when run again
        kept = root / SALVAGE_FILE
        salvaged = saved_log(kept)
        if salvaged is None:
            salvaged = salvage_log(root / "index")
            save_log(kept, salvaged)
        report = RepairReport(rebuild_index(root, progress))
        with Store.open(root) as store:
            _restore_log(store, salvaged, report)
        kept.unlink(missing_ok=True)
        with Store.open(root) as store, store.gc_lock():
            found = verify_store(store, read_data=read_data, progress=progress, check_head=False)
            report.damaged_objects = len(found.damaged_objects)
            if found.damaged_objects:
                _rewrite_versions(store, found, report, progress)
    return report


def _remote_only(root: Path) -> bool:
    """Whether the index names a pack not in STORE/packs (an index that cannot be read: yes,
    as far as anyone can tell)."""
    try:
        with Store.open(root) as store, store.index.read() as txn, \
                txn.cursor(db=store.index.dbs["packs"]) as cur:
            return any(not pack_path(store.packs_dir, str(schema.dec_msg(v)["name"])).exists()
                       for _, v in cur)
    except (DsfsError, OSError, ValueError, KeyError, TypeError, lmdb.Error):
        return True


def _restore_log(store: Store, salvaged: SalvagedLog, report: RepairReport) -> None:
    """Put back what only the old index still knew: versions whose record in the packs is
    damaged or gone and, when some pack record was damaged, tags and drops whose event was.

    The old index may itself be what is damaged (LMDB pages carry no checksums), so it only
    fills gaps: a version is restored only under the number its own record names."""
    present = {f.name for f in pack_files(store.packs_dir)}
    missing = sorted(salvaged.packs - present)
    damaged_packs = bool(report.rebuild.problems or report.rebuild.bad_records or missing)
    report.rebuild.problems += [f"pack {name[:12]} (known to the old index) is missing"
                                for name in missing]
    if salvaged.problem:
        report.rebuild.problems.append(salvaged.problem)
    known = {v.number for v in store.versions()}
    with store.index.read() as txn, txn.cursor(db=store.index.dbs["dropped"]) as cur:
        dropped = {schema.dec_version_key(bytes(k)) for k, _ in cur}
    for n, raw in sorted(salvaged.versions.items()):
        if n in known or n in dropped or n in salvaged.dropped:
            continue
        with store.writer_lock():
            writer = store.new_writer()
            try:
                done = store.rerecord_version(writer, Version.from_record(schema.dec_msg(raw)),
                                              replace=False)
            except BaseException:
                writer.abort()
                raise
        if not done:
            writer.abort()
            report.rebuild.problems.append(f"v{n} of the old index was not restored: its "
                                           "number was taken meanwhile")
            continue
        report.restored.append(n)
        known.add(n)
    tags = store.tags()
    # tags with a CRC are trusted; drops and legacy tags of an index that may be what is
    # damaged only when something shows that events were lost from the packs
    restore = dict(salvaged.tags)
    if damaged_packs:
        restore.update(salvaged.legacy_tags)
    for name, n in sorted(restore.items()):
        if name not in tags and n in known and n not in salvaged.dropped:
            try:
                store.tag(f"v{n}", name)
            except UserError as exc:
                report.rebuild.problems.append(f"tag {name!r} of the old index not restored: "
                                               f"{exc}")
                continue
            report.restored_tags.append(name)
    if not damaged_packs:
        return
    for n in sorted(salvaged.dropped - dropped):
        if n in known:
            try:
                store.drop(f"v{n}")
            except UserError as exc:
                report.rebuild.problems.append(f"v{n} was dropped but its drop was lost; "
                                               f"it is back: {exc}")


def _rewrite_versions(store: Store, found: VerifyReport, report: RepairReport,
                      progress: Progress) -> None:
    bad = found.damaged_objects
    needing = sorted({p.version for p in found.problems})
    fixer = _Fixer(store, bad)  # shared: a subtree common to many versions is rewritten once
    progress.start("repair: rewriting versions", len(needing), "versions")
    try:
        for number in needing:
            version = store.version(number)
            writer = fixer.writer = store.new_writer()
            try:
                fixed = fixer.tree(version.root)
                if fixed.tree == version.root:
                    writer.abort()
                    progress.advance(1)
                    continue
                previous = version.repair.lost if version.repair is not None else ()
                original = version.repair.original_root if version.repair else version.root
                root_entry = dataclasses.replace(version.root_entry, ref=bytes(fixed.tree),
                                                 size=fixed.count, subdirs=fixed.subdirs)
                repair = Repair(time.time_ns(), (*previous, *fixed.lost), bytes(original))
                store.rerecord_version(writer, dataclasses.replace(
                    version, root_entry=root_entry, repair=repair))
            except BaseException:
                writer.abort()
                raise
            report.rewritten.append(number)
            report.lost += [(number, x) for x in sorted(fixed.lost, key=lambda x: x.path)]
            progress.advance(1)
    finally:
        progress.finish()


@contextmanager
def _no_mount(root: Path) -> Iterator[None]:
    """Hold @head's lock: a running mount serves from the index a repair replaces."""
    locks = root / "locks"
    if not locks.is_dir():
        yield  # not a store, or one too damaged to have locks: rebuild_index says which
        return
    with flocked(locks / "head.lock", exclusive=True, wait=False,
                 busy_message=f"store {root} is mounted: `dsfs umount` it first, then repair"):
        yield
