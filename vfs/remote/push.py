"""`dsfs push`: put versions of a store on a remote.

Owns: choosing what to send, uploading packs, claiming version numbers, sending tags and drops.
Never imports: daemon, trio, pyfuse3. Runs in the caller's thread; uploads on a pool.

Order (nothing half-done is ever visible): every pack a version needs is uploaded first (packs are
named by their BLAKE3 hash, so one already there is skipped and an interrupted push resumes where
it stopped), then the version's claim is created with a conditional PUT. Two stores pushing the
same number at once: one claim wins; the other store gets `RemoteConflict` and keeps its version,
which `dsfs pull` renumbers after the winner's. Claims go in number order, and a push stops at
the first claim it loses, so a remote never holds a version whose parent it lacks from the same
push.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from vfs.errors import CorruptData, UserError
from vfs.model import RefEvent, Version
from vfs.pack import pack_path
from vfs.progress import NoProgress, Progress
from vfs.reach import walk_versions
from vfs.remote import layout
from vfs.remote.backend import Backend, RemoteKeyExists
from vfs.remote.layout import Claim, RemoteConfig, same_version
from vfs.remote.packcheck import check_pack_bytes
from vfs.remote.remotes import RemoteSpec
from vfs.remote.session import RemoteView, ensure_config, parallel, read_remote
from vfs.store import Store


class RemoteConflict(UserError):
    """The remote gave a number to another store's version: pull first."""

    exit_code = 12


def conflict(n: int) -> RemoteConflict:
    return RemoteConflict(f"the remote has v{n} from another store: run `dsfs pull`, then "
                          "`dsfs push`")


@dataclass
class PushReport:
    remote: str
    pushed: list[int] = field(default_factory=list)
    already: list[int] = field(default_factory=list)
    packs_uploaded: int = 0
    bytes_uploaded: int = 0
    packs_present: int = 0
    events: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"remote": self.remote, "pushed": [f"v{n}" for n in self.pushed],
                "already_on_remote": [f"v{n}" for n in self.already],
                "packs_uploaded": self.packs_uploaded, "bytes_uploaded": self.bytes_uploaded,
                "packs_already_there": self.packs_present, "events": self.events}


def packs_of(store: Store, version: Version) -> set[str]:
    """Names of the packs holding every object `version` needs; CorruptData if one is lost."""
    found = walk_versions(store, [version.root])
    if found.broken:
        oid, problem = next(iter(found.broken.items()))
        raise CorruptData(f"{version.name} cannot be pushed: {problem} (run `dsfs verify`)",
                          oid)
    names: set[str] = set()
    with store.index.read() as txn:
        for oid in found.objects:
            loc = store.reader.locate(oid, txn)
            if loc is None:
                raise CorruptData(f"{version.name} cannot be pushed: object {oid.hex()[:12]} "
                                  "is not in the index (run `dsfs verify`)", oid)
            names.add(loc.pack)
    return names


def check_numbering(local: dict[int, Version], view: RemoteView) -> None:
    for n, v in sorted(local.items()):
        if n in view.damaged:
            raise CorruptData(f"the remote's record of v{n} is damaged ({view.damaged[n]}): "
                              "see `dsfs verify --remote`; nothing was pushed")
        claim = view.claims.get(n)
        if claim is not None and not same_version(claim.version, v):
            raise conflict(n)


def check_no_gap(local: dict[int, Version], view: RemoteView, chosen: list[int]) -> None:
    """A pushed version's parent must be on the remote (or pushed with it): a number left
    unclaimed below it could be taken by another store's version."""
    if not chosen:
        return
    gaps = [n for n in local if n < chosen[-1] and n not in view.claims and n not in chosen]
    if gaps:
        names = " ".join(f"v{n}" for n in [*gaps, *chosen])
        raise UserError(f"v{gaps[0]} is not on the remote yet and v{chosen[-1]} comes after it: "
                        f"push them together (`dsfs push REMOTE {names}`) or push everything "
                        "(`dsfs push`)")


def push(store: Store, spec: RemoteSpec, targets: list[str] | None = None,
         progress: Progress | None = None) -> PushReport:
    """Push `targets` (version specs; default: every version the remote lacks) and tags."""
    progress = progress or NoProgress()
    with store.writer_lock():  # no local gc deletes a pack this push is sending
        return _push(store, spec, targets, progress)


def _push(store: Store, spec: RemoteSpec, targets: list[str] | None,
          progress: Progress) -> PushReport:
    backend = spec.open()
    report = PushReport(backend.url)
    try:
        ensure_config(backend, RemoteConfig.from_store(store.config))
        view = read_remote(backend)
        local = {v.number: v for v in store.versions()}
        check_numbering(local, view)
        if targets:
            chosen = sorted({store.resolve(t).number for t in targets})
        else:
            chosen = sorted(n for n in local if n not in view.claims)
        check_no_gap(local, view, [n for n in chosen if n not in view.claims])
        report.already = [n for n in chosen if n in view.claims]
        todo = [local[n] for n in chosen if n not in view.claims]
        needs = {v.number: packs_of(store, v) for v in todo}
        wanted = sorted(set().union(*needs.values()) - set(view.packs)) if needs else []
        report.packs_present = len(set().union(*needs.values()) & set(view.packs)) \
            if needs else 0
        _upload_packs(store, backend, wanted, progress, report)
        needed = set().union(*needs.values()) if needs else set()
        for obj in backend.list(layout.TRASH):  # a gc found these dead: they are needed again
            if obj.key[len(layout.TRASH):] in needed:
                backend.delete(obj.key)
        now = time.time_ns()
        for v in todo:
            claim = Claim(v, tuple(sorted(needs[v.number])), store.config.store_id, now)
            key = layout.version_key(v.number)
            try:
                backend.put(key, claim.encode(), if_absent=True)
            except RemoteKeyExists:
                theirs = Claim.decode(backend.get(key), f"remote record {backend.url}/{key}")
                if not same_version(theirs.version, v):
                    raise conflict(v.number) from None
                report.already.append(v.number)
                continue
            view.claims[v.number] = claim
            report.pushed.append(v.number)
        if report.pushed:  # a gc that looked before the marks went may have deleted one
            there = {layout.pack_name(o.key) for o in backend.list(layout.PACKS)}
            _upload_packs(store, backend, sorted(needed - there), progress, report)
        report.events = _push_events(store, backend, view)
    finally:
        backend.close()
    return report


def _upload_packs(store: Store, backend: Backend, names: list[str], progress: Progress,
                  report: PushReport) -> None:
    sizes = {}
    for name in names:
        path = pack_path(store.packs_dir, name)
        try:
            sizes[name] = os.stat(path).st_size
        except FileNotFoundError:
            raise CorruptData(f"pack {name[:12]} is neither in this store nor on the remote: "
                              "run `dsfs verify`") from None
    progress.start(f"push: uploading {len(names)} packs", sum(sizes.values()), "bytes/packs")

    def upload(name: str) -> int:
        data = pack_path(store.packs_dir, name).read_bytes()
        check_pack_bytes(data, f"pack {name[:12]} of this store (run `dsfs verify`; nothing of "
                               "it was pushed)")
        backend.put(layout.pack_key(name), data)
        progress.advance(len(data), 1)
        return len(data)

    sent = parallel(names, upload)
    progress.finish()
    report.packs_uploaded += len(sent)
    report.bytes_uploaded += sum(sent)


def _push_events(store: Store, backend: Backend, view: RemoteView) -> int:
    """Send tags of versions on the remote that the remote does not have as this store does,
    and drops of versions this store dropped that the remote still lists."""
    remote_tags = view.tags()
    remote_dropped = view.dropped()
    now = time.time_ns()
    events = [RefEvent("tag", n, name, now) for name, n in sorted(store.tags().items())
              if n in view.claims and remote_tags.get(name) != n]
    mine = store.config.store_id
    for n, ident in sorted(store.dropped_identities().items()):
        claim = view.claims.get(n)
        if claim is None or n in remote_dropped:
            continue
        # only the version this store dropped: the remote's vN may be another store's
        if ident == claim.version.identity or (ident is None and claim.store_id == mine):
            events.append(RefEvent("drop", n, "", now))
    for ev in events:
        backend.put(layout.event_key(ev), layout.encode_event(ev))
    return len(events)
