"""`dsfs export`: write a version out as an ordinary directory tree.

Owns: recreating files (holes kept sparse), directories, symlinks, fifos and hard links with
their modes, owners (as root), xattrs and mtimes. Never imports: daemon, trio, pyfuse3. Runs in
the caller's thread.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from vfs.config import is_empty_dir
from vfs.errors import CorruptData, UserError
from vfs.fsutil import no_space
from vfs.model import Entry, Kind, Version
from vfs.progress import NoProgress, Progress
from vfs.store import Store


@dataclass
class ExportResult:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    warnings: list[str] | None = None


def check_name(name: bytes) -> None:
    """Refuse names that could escape the destination (a damaged or forged tree)."""
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise CorruptData(f"tree holds an invalid name {name!r}: refusing to export it")


def _set_meta(path: bytes, e: Entry, as_root: bool, warnings: list[str]) -> None:
    link = e.kind == Kind.SYMLINK
    if as_root:
        os.chown(path, e.uid, e.gid, follow_symlinks=False)
    if not link:
        os.chmod(path, e.mode & 0o7777)
    for key, val in e.xattrs:
        try:
            os.setxattr(path, key, val, follow_symlinks=False)
        except OSError as exc:
            warnings.append(f"{os.fsdecode(path)}: xattr {key!r} not set ({exc.strerror})")
    os.utime(path, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)


class _NotPlaced(Exception):
    """An entry the exporter could not create (a device node without root): skipped."""


class Exporter:
    def __init__(self, store: Store, progress: Progress) -> None:
        self.store = store
        self.progress = progress
        self.as_root = os.geteuid() == 0
        self.links: dict[int, bytes] = {}
        self.no_devices: list[bytes] = []
        """Device nodes not made (not root): reported in one warning."""
        self.result = ExportResult(warnings=[])

    def _write_file(self, path: bytes, e: Entry) -> None:
        if e.link and e.link in self.links:
            os.link(self.links[e.link], path)
            self.result.files += 1
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            for offset, piece in self.store.contents.iter_pieces(e.content, e.size):
                if isinstance(piece, int):
                    continue
                view = memoryview(piece)
                pos = offset
                while view:
                    n = os.pwrite(fd, view, pos)
                    view = view[n:]
                    pos += n
                self.progress.advance(len(piece))
            os.ftruncate(fd, e.size)
        finally:
            os.close(fd)
        if e.link:
            self.links[e.link] = path
        self.result.files += 1
        self.result.bytes += e.size

    def _place(self, path: bytes, e: Entry) -> None:
        if os.path.lexists(path):
            if os.path.isdir(path) and not os.path.islink(path):
                if e.kind == Kind.DIR:
                    return
                raise UserError(f"{os.fsdecode(path)} is a directory in the destination")
            os.unlink(path)
        if e.kind == Kind.DIR:
            os.mkdir(path, 0o700)
        elif e.kind == Kind.FILE:
            self._write_file(path, e)
        elif e.kind == Kind.SYMLINK:
            os.symlink(e.ref, path)
            self.result.symlinks += 1
        elif e.kind == Kind.FIFO:
            os.mkfifo(path, 0o600)
        elif e.kind in (Kind.CHR, Kind.BLK, Kind.SOCK):
            self._make_special(path, e)

    def _make_special(self, path: bytes, e: Entry) -> None:
        """A device node (needs root) or a socket (a name only, as `cp -a` and tar make it)."""
        kind = stat.S_IFCHR if e.kind == Kind.CHR else stat.S_IFBLK if e.kind == Kind.BLK \
            else stat.S_IFSOCK
        try:
            os.mknod(path, kind | 0o600, e.rdev)
        except PermissionError:
            self.no_devices.append(path)
            raise _NotPlaced from None

    def run(self, version: Version, dest: Path) -> ExportResult:
        warnings = self.result.warnings
        assert warnings is not None
        root = os.fsencode(dest)
        os.makedirs(root, exist_ok=True)
        self.progress.start(f"export {version.name}", version.stats.logical_bytes, "bytes")
        # Directories get their metadata after their content (post-order), files at once.
        stack: list[tuple[bytes, Entry, bool]] = [(root, version.root_entry, False)]
        try:
            while stack:
                path, e, done = stack.pop()
                if e.kind == Kind.DIR:
                    if done:
                        _set_meta(path, e, self.as_root, warnings)
                        self.result.dirs += 1
                        continue
                    stack.append((path, e, True))
                    children = list(self.store.list_dir(e))
                    for child in reversed(children):
                        check_name(child.name)
                        cpath = path + b"/" + child.name
                        try:
                            self._place(cpath, child)
                        except _NotPlaced:
                            continue
                        if child.kind == Kind.DIR:
                            stack.append((cpath, child, False))
                        elif not (child.kind == Kind.FILE and child.link
                                  and self.links.get(child.link) != cpath):
                            _set_meta(cpath, child, self.as_root, warnings)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise no_space(dest) from None
            raise
        finally:
            self.progress.finish()
        if self.no_devices:
            first = os.fsdecode(self.no_devices[0])
            warnings.append(f"{len(self.no_devices)} device node(s) not created (first: {first}):"
                            " only root can make them; run `dsfs export` as root to keep them")
        return self.result


def export_version(store: Store, version: Version, dest: Path, force: bool = False,
                   progress: Progress | None = None) -> ExportResult:
    dest = Path(dest).absolute()
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest} exists and is not a directory: choose a new or empty directory")
    if not force and not is_empty_dir(dest):
        raise UserError(f"{dest} is not empty: choose an empty directory or pass --force")
    store_root = store.root.resolve()
    resolved = dest.resolve()
    if resolved == store_root or store_root in resolved.parents:
        raise UserError(f"{dest} is inside the store: choose a directory outside it")
    return Exporter(store, progress or NoProgress()).run(version, dest)
