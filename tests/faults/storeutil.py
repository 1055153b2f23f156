"""Reading a whole store back in-process, for fault tests that compare versions."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from vfs.model import Kind
from vfs.store import Store

MiB = 1 << 20


def manifest(store_root: Path, dirs: bool = True) -> dict[str, dict[str, str]]:
    """version name -> {path: sha256 of a file, or 'dir' (with `dirs`)} for every version,
    read in-process (every object read is checked against its hash)."""
    out: dict[str, dict[str, str]] = {}
    with Store.open(store_root) as store:
        for v in store.versions():
            files: dict[str, str] = {}
            stack = [(v.root_entry, "")]
            while stack:
                entry, prefix = stack.pop()
                for e in store.list_dir(entry):
                    rel = prefix + os.fsdecode(e.name)
                    if e.kind == Kind.DIR:
                        if dirs:
                            files[rel] = "dir"
                        stack.append((e, rel + "/"))
                    elif e.kind == Kind.FILE:
                        h = hashlib.sha256()
                        for off in range(0, e.size, 4 * MiB):
                            h.update(store.read(e, off, min(4 * MiB, e.size - off)))
                        files[rel] = h.hexdigest()
            out[v.name] = files
    return out
