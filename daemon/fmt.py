"""Formatting for the command line: sizes, times, modes, version rows.

Owns: how values look to a person and in `--json`. Pure functions.
"""

from __future__ import annotations

import os
import stat
import time
from typing import Any

from vfs.model import Entry, Kind, Version


def size(n: int) -> str:
    """Binary units, three significant figures: 1.95 GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def when(time_ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time_ns / 1e9))


def iso(time_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time_ns / 1e9))


def path(p: bytes) -> str:
    """A path for a terminal: undecodable bytes escaped, control characters shown as escapes."""
    text = os.fsdecode(p)
    if any(ord(c) < 32 or 0xDC80 <= ord(c) <= 0xDCFF for c in text):
        return repr(text.encode("utf-8", "surrogateescape"))[1:]
    return text


def version_dict(v: Version, tags: list[str]) -> dict[str, Any]:
    d = {"version": v.name, "number": v.number, "parent": f"v{v.parent}" if v.parent else None,
         "time": iso(v.time_ns), "time_ns": v.time_ns, "message": v.message,
         "author": v.author, "source": v.source, "tags": tags, "stats": v.stats.to_dict(),
         "repaired": None}
    if v.repair is not None:
        d["repaired"] = {"time": iso(v.repair.time_ns),
                         "lost": [{"path": path(x.path) or ".", "problem": x.problem}
                                  for x in v.repair.lost]}
    return d


def version_line(v: Version, tags: list[str]) -> str:
    s = v.stats
    tag = f" ({', '.join(tags)})" if tags else ""
    if v.repair is not None:
        tag += f" [repaired: {len(v.repair.lost)} paths lost]"
    return (f"{v.name:<5} {when(v.time_ns)}  {s.files:>9,} files  {size(s.logical_bytes):>10}  "
            f"+{size(s.new_stored_bytes):>10} stored  {v.message}{tag}")


def entry_dict(e: Entry) -> dict[str, Any]:
    d: dict[str, Any] = {"name": os.fsdecode(e.name), "type": e.kind.name.lower(),
                         "mode": oct(stat.S_IMODE(e.mode)), "uid": e.uid, "gid": e.gid,
                         "mtime_ns": e.mtime_ns, "size": e.size}
    if e.kind == Kind.SYMLINK:
        d["target"] = os.fsdecode(e.ref)
    if e.kind in (Kind.CHR, Kind.BLK):
        d["rdev"] = [os.major(e.rdev), os.minor(e.rdev)]
    return d


def entry_line(e: Entry, long: bool) -> str:
    name = path(e.name) + ("/" if e.kind == Kind.DIR else "")
    if e.kind == Kind.SYMLINK:
        name += " -> " + path(e.ref)
    if not long:
        return name
    return (f"{stat.filemode(e.mode)} {e.uid:>5} {e.gid:>5} {e.size:>12} "
            f"{when(e.mtime_ns)} {name}")
