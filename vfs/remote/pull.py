"""`dsfs pull`: bring versions, tags and drops others pushed into a store.

Owns: registering the remote's packs in the index (from their footers: no pack data moves),
recording the remote's versions under the remote's numbers, renumbering this store's unpushed
versions that lost their number to another store, and `--data` (fetching whole packs).
Never imports: daemon, trio, pyfuse3. Runs in the caller's thread; downloads on a pool.

Order: the packs a new version needs are registered (index transaction 1) before the version is
recorded (transaction 2), so a mount never lists a version whose objects it cannot find. The
versions, drops, tags and renumbering are one transaction: a crash leaves the store as it was,
or pulled. A store that pulled reads the remote's packs on demand (its remote becomes `lazy`).

Renumbering: this store's versions that are not on the remote keep their trees, messages and
times; they take the numbers after the remote's highest, in their order, and their parents follow
(a parent that moved is the parent's new number). @head's base follows its version; the change is
two-phase (`base_was` in @head's state, see vfs.head.session.open_head) so a crash in between
never puts @head's changes on the wrong version. It runs with @head's lock held: not while the
store is mounted.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

from vfs import schema
from vfs.errors import HeadBusy, UserError
from vfs.fsutil import fsync_dir
from vfs.head.session import finish_renumbering
from vfs.head.state import recorded_base
from vfs.ids import ObjType, PackName
from vfs.locks import flocked
from vfs.model import RefEvent, Version
from vfs.objects import register_pack
from vfs.pack import SealedPack, pack_path
from vfs.progress import NoProgress, Progress
from vfs.remote import layout
from vfs.remote.backend import Backend
from vfs.remote.footer import read_remote_footer
from vfs.remote.layout import Claim, same_version
from vfs.remote.packcheck import check_pack_bytes
from vfs.remote.remotes import Remotes, RemoteSpec
from vfs.remote.session import RemoteView, parallel, read_remote
from vfs.store import Store


@dataclass
class PullReport:
    remote: str
    new_versions: list[int] = field(default_factory=list)
    renumbered: dict[int, int] = field(default_factory=dict)
    dropped: list[int] = field(default_factory=list)
    tags: dict[str, int] = field(default_factory=dict)
    packs_registered: int = 0
    packs_downloaded: int = 0
    bytes_downloaded: int = 0
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"remote": self.remote, "new_versions": [f"v{n}" for n in self.new_versions],
                "renumbered": {f"v{a}": f"v{b}" for a, b in self.renumbered.items()},
                "dropped": [f"v{n}" for n in self.dropped],
                "tags_set": {k: f"v{v}" for k, v in sorted(self.tags.items())},
                "packs_registered": self.packs_registered,
                "packs_downloaded": self.packs_downloaded,
                "bytes_downloaded": self.bytes_downloaded, "problems": self.problems}


def known_pack_names(store: Store) -> set[str]:
    with store.index.read() as txn, txn.cursor(db=store.index.dbs["packnames"]) as cur:
        return {bytes(k).decode() for k in cur.iternext(keys=True, values=False)}


def wanted_packs(view: RemoteView) -> set[str]:
    """Packs the remote's live versions need (orphans of interrupted pushes and packs gc
    marked are left out: an object indexed there could vanish with them)."""
    dropped = view.dropped()
    return {p for n, c in view.claims.items() if n not in dropped for p in c.packs}


def register_remote_packs(store: Store, view: RemoteView, progress: Progress) -> int:
    """Index the packs the remote's versions need that this store does not know, from their
    footers alone. Runs under the store's writer lock (no local gc forgets them before the
    versions that need them are recorded)."""
    known = known_pack_names(store)
    todo = sorted(n for n in wanted_packs(view) if n not in known and n in view.packs)
    if not todo:
        return 0
    progress.start(f"pull: indexing {len(todo)} packs", len(todo), "packs")

    def footer(name: str) -> SealedPack:
        records = read_remote_footer(view.backend, layout.pack_key(name), view.packs[name])
        progress.advance(1)
        return SealedPack(PackName(name), view.packs[name], records)

    sealed = parallel(todo, footer)
    done = 0
    with store.index.write() as txn:
        for pack in sealed:
            if txn.get(pack.name.encode(), db=store.index.dbs["packnames"]) is None:
                register_pack(store.index, txn, pack)  # indexed objects keep their place
                done += 1
    progress.finish()
    return done


def plan_renumbering(local: dict[int, Version], view: RemoteView,
                     dropped: set[int]) -> dict[int, int]:
    """old -> new number for this store's versions that lost their number to another store's
    version (and every unpushed version after the first of them)."""
    unpushed = sorted(n for n, v in local.items()
                      if n not in view.claims or not same_version(view.claims[n].version, v))
    lost = [n for n in unpushed if n in view.claims]
    if not lost:
        return {}
    moving = [n for n in unpushed if n >= lost[0]]
    start = max([view.highest, *dropped, *(n for n in local if n not in moving)]) + 1
    return {old: start + i for i, old in enumerate(moving)}


def pull(store: Store, spec: RemoteSpec, data: list[str] | None = None,
         progress: Progress | None = None, renumber: bool = True) -> PullReport:
    """Pull versions, drops and tags; with `data` (version specs, [] = every version) also
    fetch the packs those versions need, so they read without the remote. With `renumber`
    False (a running mount's pull) a pull that would renumber this store's versions fails."""
    progress = progress or NoProgress()
    backend = spec.open()
    report = PullReport(backend.url)
    try:
        with flocked(store.root / "locks" / "pull.lock", exclusive=True, wait=True,
                     busy_message=""):
            view = read_remote(backend)
            _make_lazy(store, spec)
            store.attach_lazy_remote()
            with store.writer_lock():
                report.packs_registered = register_remote_packs(store, view, progress)
                with store.numbering_lock():
                    _record(store, view, report, renumber)
        if data is not None:
            numbers = ([store.resolve(s).number for s in data] if data
                       else [v.number for v in store.versions()])
            _fetch_packs(store, backend, view, numbers, progress, report)
    finally:
        backend.close()
    return report


def _make_lazy(store: Store, spec: RemoteSpec) -> None:
    remotes = Remotes(store.root)
    current = remotes.lazy()
    if current is not None and current.name != spec.name:
        raise UserError(f"this store reads missing data from remote {current.name!r}; pulling "
                        f"from {spec.name!r} too is not supported: push to {current.name!r}")
    if current is None and spec.name in remotes.specs:
        remotes.specs[spec.name] = replace(spec, lazy=True)
        remotes.save()


def _record(store: Store, view: RemoteView, report: PullReport, renumber: bool) -> None:
    local = {v.number: v for v in store.versions()}
    dropped = store.dropped_numbers()
    mapping = plan_renumbering(local, view, dropped)
    if mapping and not renumber:
        first = min(mapping)
        raise HeadBusy(f"v{first} of this store lost its number to another store's version: "
                       "unmount, then `dsfs pull` (it renumbers this store's unpushed versions)"
                       " and `dsfs push`")
    report.renumbered = mapping
    missing = {n: [p for p in c.packs if p not in view.packs] for n, c in view.claims.items()}
    report.problems = [f"v{n} on the remote lacks {len(m)} of its packs (first: {m[0][:12]}): "
                       "it was not pulled; see `dsfs verify --remote`"
                       for n, m in sorted(missing.items()) if m]
    remote_dropped = view.dropped()
    # a number dropped here stays dropped here: it is never handed out again, so another
    # store's version under it cannot be recorded without a rebuild reviving the drop
    new = sorted(n for n in view.claims
                 if n not in remote_dropped and not missing[n] and n not in dropped
                 and (n in mapping or n not in local))
    report.new_versions = new
    after = {n for n in local if n not in mapping} | set(mapping.values()) | set(new)
    base = recorded_base(store.root / "head")
    report.dropped = sorted(n for n in remote_dropped
                            if n in local and n not in mapping and n != base
                            and same_version(view.claims[n].version, local[n]))
    after -= set(report.dropped)
    remote_tags = view.tags()
    local_tags = store.tags()
    report.tags = {name: n for name, n in remote_tags.items()
                   if n in after and local_tags.get(name) != n
                   and (n in new or (n in local and n not in mapping
                                     and same_version(view.claims[n].version, local[n])))}
    now = time.time_ns()
    events: list[RefEvent] = [RefEvent("tag", n, name, now) for name, n in report.tags.items()]
    for name, n in local_tags.items():
        if n in mapping and name not in remote_tags:
            events.append(RefEvent("tag", mapping[n], name, now))
        elif n in report.dropped and name not in report.tags:
            events.append(RefEvent("untag", n, name, now))
    events += [RefEvent("drop", n, "", now) for n in report.dropped]
    moved = {mapping[n]: replace(local[n], number=mapping[n], pulled_ns=now,
                                 parent=mapping.get(local[n].parent, local[n].parent))
             for n in mapping}
    arrived = {n: replace(view.claims[n].version, pulled_ns=now) for n in new}
    records = {n: schema.enc_msg(v.to_record()) for n, v in (moved | arrived).items()}

    def apply(txn: Any) -> None:
        dbs = store.index.dbs
        for old in mapping:
            txn.delete(schema.version_key(old), db=dbs["versions"])
        for n, raw in records.items():
            txn.put(schema.version_key(n), raw, db=dbs["versions"])
        for n in report.dropped:
            txn.delete(schema.version_key(n), db=dbs["versions"])
            txn.put(schema.version_key(n), schema.enc_msg(
                {"time": now, "identity": local[n].identity}), db=dbs["dropped"])
        for ev in events:
            if ev.op == "tag":
                txn.put(schema.tag_key(ev.name), schema.tag_value(ev.name, ev.version),
                        db=dbs["tags"])
            elif ev.op == "untag":
                txn.delete(schema.tag_key(ev.name), db=dbs["tags"])
        highest = max([*view.claims, *view.damaged, *mapping.values(), *local, *dropped, 0])
        raw = txn.get(schema.META_NEXT_VERSION, db=dbs["meta"])
        if raw is None or schema.dec_u32(raw) <= highest:
            txn.put(schema.META_NEXT_VERSION, schema.enc_u32(highest + 1), db=dbs["meta"])

    def commit() -> None:
        writer = store.new_writer()
        try:
            # copies in the packs prove each record and let a rebuild find records and events
            for raw in records.values():
                writer.put_meta(ObjType.VERSION, raw)
            for ev in events:
                writer.put_meta(ObjType.REFEVENT, schema.enc_msg(ev.to_record()))
            writer.commit_with(apply)
        except BaseException:
            writer.abort()
            raise

    if not mapping:
        commit()
        return
    with _head_locked(store) as head_db, \
            flocked(store.root / "locks" / "mount.lock", exclusive=True, wait=False,
                    busy_message=RENUMBER_MOUNTED):
        _renumber(store, head_db, mapping, local, commit)


def _renumber(store: Store, head_db: Any, mapping: dict[int, int], local: dict[int, Version],
              commit: Any) -> None:
    """Renumber with @head's base following it, in two phases (vfs.head.session reads
    `base_was` and `base_identity` after a crash in between)."""
    if head_db is None:
        commit()
        return
    finish_renumbering(store, head_db)  # a pull that stopped halfway before this one
    raw = head_db.meta("base")
    base = int(raw) if raw is not None else 0
    follows = base in mapping
    if follows:
        with head_db.txn():
            head_db.set_meta("base_was", base)
            head_db.set_meta("base_identity", local[base].identity)
            head_db.set_meta("base", mapping[base])
        head_db.sync()
    commit()
    if follows:
        with head_db.txn():
            head_db.set_meta("base_was", None)
            head_db.set_meta("base_identity", None)
        head_db.sync()


RENUMBER_MOUNTED = ("this store's unpushed versions must be renumbered after the remote's, "
                    "which cannot happen while it is mounted: `dsfs umount`, then `dsfs pull`")


@contextlib.contextmanager
def _head_locked(store: Store) -> Any:
    from vfs.head.state import open_head_db

    lock_path = store.root / "locks" / "head.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HeadBusy(RENUMBER_MOUNTED) from None
        db = open_head_db(store.root / "head") if (store.root / "head" / "head.db").exists() \
            else None
        try:
            yield db
        finally:
            if db is not None:
                db.close()
    finally:
        os.close(fd)


def _fetch_packs(store: Store, backend: Backend, view: RemoteView, numbers: list[int],
                 progress: Progress, report: PullReport) -> None:
    names: set[str] = set()
    for n in numbers:
        claim: Claim | None = view.claims.get(n)
        if claim is not None:
            names.update(claim.packs)
    todo = sorted(n for n in names if not pack_path(store.packs_dir, n).exists())
    progress.start(f"pull: fetching {len(todo)} packs", sum(view.packs.get(n, 0) for n in todo),
                   "bytes/packs")

    def fetch(name: str) -> int:
        data = backend.get(layout.pack_key(name))
        check_pack_bytes(data, f"pack {name[:12]} on {backend.url} (it was not used; run "
                               "`dsfs verify --remote`)")
        path = pack_path(store.packs_dir, name)
        tmp = store.packs_dir / "tmp" / f"{name}.pull"
        tmp.parent.mkdir(exist_ok=True)
        path.parent.mkdir(exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
        progress.advance(len(data), 1)
        return len(data)

    got = parallel(todo, fetch)
    progress.finish()
    report.packs_downloaded = len(got)
    report.bytes_downloaded = sum(got)
