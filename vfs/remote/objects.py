"""Reading objects straight from a remote's packs, with no local store: for verify and gc.

Owns: the map of every object on a remote (from its packs' footers) and fetching one object
with one ranged GET, checked (CRC, BLAKE3, decode) before it is returned.
Never imports: daemon, trio, pyfuse3. Thread-safe after `load`.
"""

from __future__ import annotations

from vfs.errors import CorruptData, ObjectMissing
from vfs.ids import ObjectId, ObjType, short
from vfs.pack import REC_HEADER, Record, check_record
from vfs.progress import NoProgress, Progress
from vfs.remote import layout
from vfs.remote.backend import Backend
from vfs.remote.footer import read_remote_footer
from vfs.remote.session import RemoteView, parallel
from vfs.tree import TreeReader


class RemoteObjects:
    """Every object of a remote's packs, readable by id (an `vfs.reach.ObjectSource`)."""

    def __init__(self, view: RemoteView) -> None:
        self.backend: Backend = view.backend
        self.view = view
        self.where: dict[bytes, tuple[str, Record]] = {}
        self.bad_packs: dict[str, str] = {}
        self.trees = TreeReader(self.get_object)

    def load(self, progress: Progress | None = None) -> None:
        """Read every pack's footer (one ranged GET each, in parallel)."""
        progress = progress or NoProgress()
        names = sorted(self.view.packs)
        progress.start("remote: reading pack footers", len(names), "packs")

        def footer(name: str) -> tuple[str, list[Record] | str]:
            try:
                recs: list[Record] | str = read_remote_footer(
                    self.backend, layout.pack_key(name), self.view.packs[name])
            except CorruptData as exc:
                recs = str(exc)
            progress.advance(1)
            return name, recs

        for name, recs in parallel(names, footer):
            if isinstance(recs, str):
                self.bad_packs[name] = recs
                continue
            for rec in recs:
                self.where.setdefault(rec.oid, (name, rec))
        progress.finish()

    def get_object(self, oid: ObjectId, kind: ObjType) -> bytes:
        found = self.where.get(oid)
        if found is None:
            raise ObjectMissing(f"object {short(oid)} is in no pack on {self.backend.url}", oid)
        name, rec = found
        raw = self.backend.get(layout.pack_key(name), rec.offset, REC_HEADER.size + rec.stored_len)
        try:
            return check_record(raw, oid, kind, rec.plain_len)
        except CorruptData as exc:
            raise CorruptData(f"pack {name[:12]} on {self.backend.url}: {exc}", oid) from None
