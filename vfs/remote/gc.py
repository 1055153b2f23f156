"""`dsfs gc --remote`: delete packs no version on a remote needs, safely while others push.

Owns: deciding which remote packs are dead and the two-phase deletion. Never imports: daemon,
trio, pyfuse3.

Why two phases: a pusher decides which packs it needs when it starts and claims its version at
the end; a pack that was dead when gc looked may be needed again by then (a new version sharing
data with a dropped one). So a gc run only *marks* a dead pack (`trash/<name>`); a later run
deletes it if it is still dead and its mark is older than the grace period. A push deletes the
mark of every pack it needs, and after claiming checks its packs are all there (re-uploading any
that went). Packs younger than the grace period are never marked: they may belong to a push in
flight whose claim is not written yet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from vfs.errors import UserError
from vfs.progress import NoProgress, Progress
from vfs.reach import walk_versions
from vfs.remote import layout
from vfs.remote.check import live_claims
from vfs.remote.objects import RemoteObjects
from vfs.remote.session import RemoteView, read_remote

DEFAULT_GRACE_S = 3600.0


@dataclass
class RemoteGcReport:
    remote: str
    dry_run: bool
    live_packs: int = 0
    marked: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    kept_young: int = 0
    waiting: int = 0
    """Packs marked by an earlier run whose grace period has not passed yet."""

    def to_dict(self) -> dict[str, object]:
        return {"remote": self.remote, "dry_run": self.dry_run, "live_packs": self.live_packs,
                "packs_marked": len(self.marked), "packs_deleted": len(self.deleted),
                "bytes_freed": self.bytes_freed, "kept_young": self.kept_young,
                "waiting_for_grace": self.waiting}


def gc_remote(view: RemoteView, grace_s: float = DEFAULT_GRACE_S, dry_run: bool = False,
              progress: Progress | None = None) -> RemoteGcReport:
    progress = progress or NoProgress()
    backend = view.backend
    report = RemoteGcReport(backend.url, dry_run)
    if view.damaged:
        n, problem = next(iter(sorted(view.damaged.items())))
        raise UserError(f"{problem}: gc cannot tell what v{n} needs, so nothing was deleted; "
                        "see `dsfs verify --remote`")
    objects = RemoteObjects(view)
    objects.load(progress)
    live: set[str] = set()
    for n in live_claims(view):
        claim = view.claims[n]
        live.update(claim.packs)
        found = walk_versions(objects, [claim.version.root])
        if found.broken:
            raise UserError(f"v{n} on {backend.url} cannot be read whole "
                            f"({next(iter(found.broken.values()))}): nothing was deleted; "
                            "see `dsfs verify --remote`")
        for oid in found.objects:
            where = objects.where.get(oid)
            if where is not None:
                live.add(where[0])
    report.live_packs = len(live & set(view.packs))
    now = time.time_ns()
    grace_ns = int(grace_s * 1e9)
    times = {layout.pack_name(o.key): o.mtime_ns for o in backend.list(layout.PACKS)}
    marks = {o.key[len(layout.TRASH):]: o.mtime_ns for o in backend.list(layout.TRASH)}
    due: list[str] = []
    for name in sorted(view.packs):
        if name in live:
            continue
        if now - times.get(name, now) < grace_ns:
            report.kept_young += 1
        elif name not in marks:
            report.marked.append(name)
            if not dry_run:
                backend.put(layout.trash_key(name), b"")
        elif now - marks[name] < grace_ns:
            report.waiting += 1
        else:
            due.append(name)
    if due and not dry_run:
        # a push may have claimed a version needing one of them since the walk: look again
        fresh = read_remote(backend, known_claims=view.claims)
        live.update(p for n in live_claims(fresh) for p in fresh.claims[n].packs)
        # skipped: needed again, or a push took its mark away
        due = [n for n in due if n not in live and backend.stat(layout.trash_key(n)) is not None]
        for name in due:
            backend.delete(layout.pack_key(name))
            backend.delete(layout.trash_key(name))
    report.deleted = due
    report.bytes_freed = sum(view.packs[n] for n in due)
    if not dry_run:
        for name in marks:  # marks of packs needed again, or already gone
            if name in live or name not in view.packs:
                backend.delete(layout.trash_key(name))
    return report
