"""`dsfs verify --remote`: is every version on a remote whole and readable?

Owns: checking a remote's records, that every object each live version needs is in a pack on
the remote (walking its trees through ranged GETs: no local copy needed), and with `read_data`
every byte of every pack. Never imports: daemon, trio, pyfuse3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vfs.errors import CorruptData
from vfs.pack import check_record
from vfs.progress import NoProgress, Progress
from vfs.reach import walk_versions
from vfs.remote import layout
from vfs.remote.objects import RemoteObjects
from vfs.remote.packcheck import check_pack_bytes
from vfs.remote.session import RemoteView, parallel


@dataclass
class RemoteCheck:
    remote: str
    versions: int = 0
    packs: int = 0
    objects: int = 0
    bytes_read: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {"remote": self.remote, "ok": self.ok, "versions": self.versions,
                "packs": self.packs, "objects": self.objects, "bytes_read": self.bytes_read,
                "problems": self.problems}


def live_claims(view: RemoteView) -> list[int]:
    dropped = view.dropped()
    return sorted(n for n in view.claims if n not in dropped)


def verify_remote(view: RemoteView, read_data: bool = False,
                  progress: Progress | None = None) -> RemoteCheck:
    progress = progress or NoProgress()
    report = RemoteCheck(view.backend.url, packs=len(view.packs))
    objects = RemoteObjects(view)
    objects.load(progress)
    report.objects = len(objects.where)
    for _name, problem in sorted(objects.bad_packs.items()):
        report.problems.append(problem)
    report.problems += [problem for _, problem in sorted(view.damaged.items())]
    for n in live_claims(view):
        claim = view.claims[n]
        report.versions += 1
        if claim.version.number != n:
            report.problems.append(f"{layout.version_key(n)} holds the record of "
                                   f"v{claim.version.number}")
        missing = [p for p in claim.packs if p not in view.packs]
        if missing:
            report.problems.append(f"v{n} names {len(missing)} packs the remote lacks "
                                   f"(first: {missing[0][:12]})")
        found = walk_versions(objects, [claim.version.root], on_page=progress.advance)
        for problem in list(found.broken.values())[:5]:
            report.problems.append(f"v{n}: {problem}")
        absent = [oid for oid in found.objects if oid not in objects.where]
        if absent:
            report.problems.append(f"v{n} needs {len(absent)} objects no pack on the remote "
                                   f"holds (first: {absent[0].hex()[:12]})")
    if read_data:
        _read_every_pack(view, objects, progress, report)
    return report


def _read_every_pack(view: RemoteView, objects: RemoteObjects, progress: Progress,
                     report: RemoteCheck) -> None:
    names = sorted(n for n in view.packs if n not in objects.bad_packs)
    progress.start("remote: reading every pack", sum(view.packs[n] for n in names),
                   "bytes/packs")

    def check(name: str) -> tuple[int, list[str]]:
        what = f"pack {name[:12]} on {view.backend.url}"
        data = view.backend.get(layout.pack_key(name))
        problems: list[str] = []
        try:
            for rec in check_pack_bytes(data, what):
                try:
                    check_record(data[rec.offset:rec.end], rec.oid, rec.kind, rec.plain_len)
                except CorruptData as exc:
                    problems.append(f"{what}: {exc}")
        except CorruptData as exc:
            problems.append(str(exc))
        progress.advance(len(data), 1)
        return len(data), problems

    for size, problems in parallel(names, check, workers=4):
        report.bytes_read += size
        report.problems += problems
    progress.finish()


__all__ = ["RemoteCheck", "live_claims", "verify_remote"]
