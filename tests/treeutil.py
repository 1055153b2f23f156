"""Helpers shared by tests: build source trees and compare two trees exactly."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def snapshot(root: Path, mtimes: bool = True, dir_mtimes: bool = True) -> dict[bytes, tuple]:
    """Everything a round trip must keep, per relative path (hard links as link groups)."""
    out: dict[bytes, tuple] = {}
    inode_first: dict[tuple[int, int], bytes] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(dirnames + filenames) + ([b""] if dirpath == base else []):
            path = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(path, base)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            try:
                xattrs = tuple(sorted(
                    (n, os.getxattr(path, n, follow_symlinks=False))
                    for n in os.listxattr(path, follow_symlinks=False) if n.startswith("user.")))
            except OSError:
                xattrs = ()
            keep_mtime = mtimes and (dir_mtimes or not stat.S_ISDIR(st.st_mode))
            item: tuple = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                           st.st_mtime_ns if keep_mtime else None, xattrs)
            if stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
                group = inode_first.setdefault((st.st_dev, st.st_ino), rel)
                item += (st.st_size, h.hexdigest(), group if st.st_nlink > 1 else None)
            elif stat.S_ISLNK(st.st_mode):
                item += (os.readlink(path),)
            out[rel] = item
    return out


def write(path: Path, data: bytes, mode: int = 0o644, mtime_ns: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def tree_digest(root: Path) -> dict[bytes, tuple]:
    """Contents only (for byte-identity checks that do not care about metadata)."""
    return {k: v[6:8] if v[0] == stat.S_IFREG else v[0:1] for k, v in snapshot(root).items()
            if k != b"."}
