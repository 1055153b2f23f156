"""`dsfs status`: what @head changed against its base version.

Owns: the list of added, modified, deleted and renamed paths of @head. Visits only dirty names
(vfs.head.state), so its cost follows the size of the change. Never imports: daemon, trio,
pyfuse3.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from vfs.head.fs import HeadFS
from vfs.head.state import HEAD_ROOT, WHITEOUT
from vfs.ids import TreeId
from vfs.model import Entry, Kind


@dataclass(frozen=True, slots=True)
class StatusItem:
    change: str
    """added, modified, deleted or renamed"""
    path: bytes
    kind: Kind
    nbytes: int = 0
    """Bytes written (modified), the size (added, deleted)."""
    old_path: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"change": self.change, "path": os.fsdecode(self.path),
                               "kind": self.kind.name.lower(), "bytes": self.nbytes}
        if self.old_path is not None:
            out["old_path"] = os.fsdecode(self.old_path)
        return out


def head_status(fs: HeadFS) -> list[StatusItem]:
    added: list[tuple[StatusItem, bytes | None]] = []
    deleted: dict[bytes, StatusItem] = {}
    modified: list[StatusItem] = []

    def walk(ino: int, path: bytes) -> None:
        n = fs.db.node(ino)
        if n is None or not n.dirty:
            return
        for name, child in fs.db.dirty_dirents(ino):
            p = path + b"/" + name if path else name
            base = fs.store.trees.lookup(TreeId(n.base), name) if n.base else None
            if child == WHITEOUT:
                if base is not None:
                    deleted[p] = StatusItem("deleted", p, base.kind, _size(base))
                continue
            c = fs.db.node(child)
            if c is None:
                continue
            same_link = base is not None and base.link != 0 and base.link == c.link
            moved_here = c.origin is not None and c.origin != p and not same_link
            new_dir = c.kind == Kind.DIR and base is not None and c.base != base.ref
            if base is not None and (base.kind != c.kind or moved_here or new_dir):
                deleted[p] = StatusItem("deleted", p, base.kind, _size(base))
                base = None
            if base is None:
                added.append((StatusItem("added", p, c.kind,
                                         c.size if c.kind == Kind.FILE else 0), c.origin))
                if c.kind == Kind.DIR:
                    walk(child, p)
                continue
            if c.kind == Kind.DIR:
                if (c.mode, c.uid, c.gid, c.xattrs) != (base.mode, base.uid, base.gid,
                                                        base.xattrs):
                    modified.append(StatusItem("modified", p, c.kind))
                walk(child, p)
            elif c.dirty:
                written = fs.overlays.written_bytes(child, c.size) if c.kind == Kind.FILE else 0
                if _differs(c, base, written):
                    modified.append(StatusItem("modified", p, c.kind, written))

    walk(HEAD_ROOT, b"")
    out: list[StatusItem] = list(modified)
    for item, origin in added:
        if origin is not None and origin in deleted and deleted[origin].kind == item.kind:
            del deleted[origin]
            out.append(StatusItem("renamed", item.path, item.kind, item.nbytes, origin))
        else:
            out.append(item)
    out.extend(deleted.values())
    out.sort(key=lambda i: i.path)
    return out


def _size(e: Entry) -> int:
    return e.size if e.kind == Kind.FILE else 0


def _differs(c: Any, base: Entry, written: int) -> bool:
    if written or c.size != base.size or c.base_len != c.base_size:
        return True
    return bool((c.mode, c.uid, c.gid, c.mtime_ns, c.xattrs, c.base) !=
                (base.mode, base.uid, base.gid, base.mtime_ns, base.xattrs, base.ref))


def summary(items: list[StatusItem]) -> dict[str, int]:
    out = {"added": 0, "modified": 0, "deleted": 0, "renamed": 0, "bytes": 0}
    for i in items:
        out[i.change] += 1
        out["bytes"] += i.nbytes
    return out


def status_report(fs: HeadFS) -> dict[str, Any]:
    """What `dsfs status --json` prints."""
    items = head_status(fs)
    latest = fs.store.latest()
    return {"base": fs.base.name if fs.base.number else None,
            "latest": latest.name if latest is not None else None,
            "summary": summary(items), "changes": [i.to_json() for i in items]}
