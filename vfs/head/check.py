"""`dsfs verify` for @head: its database rows, overlay blocks and the objects it refers to.

Owns: checking @head without changing it, beside a running mount (a read-only SQLite
connection; overlay files are only read). Never imports: daemon, trio, pyfuse3.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass

from vfs.errors import CorruptData, DsfsError
from vfs.head.overlay import Overlays
from vfs.head.session import head_in_use
from vfs.head.state import (
    HEAD_ROOT,
    WHITEOUT,
    HNode,
    check_dirent,
    node_columns,
    row_to_node,
)
from vfs.head.unsynced import SYNCED_FROM, changed_since
from vfs.model import REF_LIST, ContentRef, Kind, ref_id, ref_kind
from vfs.store import Store


@dataclass(frozen=True, slots=True)
class HeadProblem:
    path: str
    problem: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "problem": self.problem}


def check_head(store: Store) -> list[HeadProblem]:
    """Problems of @head, each naming the path it affects ("@head/..." or the state file)."""
    db_path = store.root / "head" / "head.db"
    if not db_path.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [HeadProblem("@head", f"state database cannot be opened: {exc}")]
    try:
        return _check(store, conn)
    except sqlite3.DatabaseError as exc:
        return [HeadProblem("@head", f"state database is damaged: {exc}")]
    finally:
        conn.close()


def _check(store: Store, conn: sqlite3.Connection) -> list[HeadProblem]:
    problems: list[HeadProblem] = []
    row = conn.execute("PRAGMA quick_check").fetchone()
    if row is None or row[0] != "ok":
        problems.append(HeadProblem("@head", f"state database fails its check: {row}"))
    names: dict[int, tuple[int, bytes]] = {}
    for parent, name, ino, stored in conn.execute("SELECT parent, name, ino, sum FROM dirents"):
        try:
            check_dirent(parent, bytes(name), ino, stored)
        except CorruptData as exc:
            problems.append(HeadProblem(f"@head (directory {parent})", str(exc)))
            continue
        if ino != WHITEOUT:
            names.setdefault(ino, (parent, bytes(name)))

    def path_of(ino: int) -> str:
        parts: list[bytes] = []
        seen = 0
        while ino != HEAD_ROOT and ino in names and seen < 4096:
            ino, name = names[ino]
            parts.append(name)
            seen += 1
        return "@head/" + os.fsdecode(b"/".join(reversed(parts)))

    overlays = Overlays(store.root / "head" / "data", probe=False)
    running = conn.execute("SELECT value FROM meta WHERE key='running'").fetchone()
    synced = conn.execute("SELECT value FROM meta WHERE key=?", (SYNCED_FROM,)).fetchone()
    # beside a mount, or after a crash nothing has cleaned up yet, a block that matches neither
    # sum in an overlay changed since the last completed sync is a write in flight or one the
    # crash lost (it will read as zeros), not damage: see vfs.head.unsynced
    live = head_in_use(store.root)
    unclean = running is None or running[0] != 0
    synced_from = synced[0] if synced is not None else None
    try:
        layout = conn.execute("PRAGMA user_version").fetchone()[0]
        for row in conn.execute(f"SELECT {node_columns(layout)} FROM nodes"):
            try:
                n = row_to_node(row)
            except CorruptData as exc:
                problems.append(HeadProblem(path_of(row[0]), str(exc)))
                continue
            where = path_of(n.ino)
            if n.kind == Kind.FILE:
                damaged = _damaged(overlays, n, live, unclean and changed_since(
                    overlays, n.ino, synced_from))
                for offset in damaged:
                    problems.append(HeadProblem(where, f"written block at offset {offset} "
                                                       "fails its checksum or is gone"))
                problems.extend(HeadProblem(where, p) for p in _base_problems(store, n.base))
            elif n.kind == Kind.DIR and n.base and not store.reader.exists(n.base):
                problems.append(HeadProblem(where, "its base directory tree is missing"))
    finally:
        overlays.close()
    return problems


def _damaged(overlays: Overlays, n: HNode, live: bool, lost_ok: bool) -> list[int]:
    """Offsets of damaged blocks of a file. Beside a mount, a write may be between its sums
    and its bytes: only blocks found damaged twice, a moment apart, are. After a crash, in an
    overlay changed since the last completed sync, mismatches are lost unsynced writes. Sums
    of a clean file whose overlay is gone are what a commit's discard cut between its two
    renames leaves (the file's base already holds those bytes; the next open removes them)."""
    ino, size = n.ino, n.size
    if not live and lost_ok:
        return []
    if not n.dirty and not overlays.path(ino).exists():
        return []
    damaged = overlays.damaged_blocks(ino, size)
    if live and damaged:
        time.sleep(0.2)
        damaged = sorted(set(damaged) & set(overlays.damaged_blocks(ino, size)))
    return damaged


def _base_problems(store: Store, base: bytes) -> list[str]:
    if not base:
        return []
    ref = ContentRef(base)
    oid = ref_id(ref)
    if not store.reader.exists(oid):
        return ["its base content is missing from the store"]
    if ref_kind(ref) == REF_LIST:
        try:
            spans = store.contents.spans(ref, 0)
        except DsfsError as exc:
            return [f"its base chunk list is damaged: {exc}"]
        missing = sum(1 for s in spans if s.cid is not None and not store.reader.exists(s.cid))
        if missing:
            return [f"{missing} base chunks are missing from the store"]
    return []


__all__ = ["HeadProblem", "check_head"]
