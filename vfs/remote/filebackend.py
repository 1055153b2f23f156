"""A remote in a directory (file:///shared/dsfs): a shared filesystem, or a local disk.

Owns: mapping remote keys to files under one directory. Never imports: daemon, trio, pyfuse3.

Objects appear whole: each is written to a temporary name in `tmp/`, fsynced, then renamed into
place (or, for a conditional create, hard-linked: link(2) fails with EEXIST if the name is
taken, which is atomic on local filesystems and on NFSv3+), and the directory fsynced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from vfs.errors import UserError
from vfs.fsutil import fsync_dir, write_all
from vfs.remote.backend import (
    RemoteConfigError,
    RemoteError,
    RemoteKeyExists,
    RemoteKeyMissing,
    RemoteObject,
)

TMP = "tmp"


class FileBackend:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = "file://" + str(root)

    @classmethod
    def from_url(cls, url: str) -> FileBackend:
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise UserError(f"bad remote {url!r}: a directory remote is file:///ABSOLUTE/PATH")
        root = Path(unquote(parsed.path))
        if root.exists() and not root.is_dir():
            raise RemoteConfigError(f"remote {url}: {root} is not a directory")
        return cls(root)

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad remote key {key!r}")
        return self.root / key

    def _fail(self, exc: OSError, what: str) -> RemoteError | RemoteConfigError:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return RemoteConfigError(f"remote {self.url}: cannot {what}: {reason}; check the "
                                     "directory's permissions")
        return RemoteError(f"remote {self.url}: cannot {what}: {reason}")

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                if length is None:
                    f.seek(start)
                    return f.read()
                return os.pread(f.fileno(), length, start)
        except FileNotFoundError:
            raise RemoteKeyMissing(f"remote {self.url} has no {key}", key) from None
        except OSError as exc:
            raise self._fail(exc, f"read {key}") from None

    def put(self, key: str, data: bytes | memoryview, *, if_absent: bool = False) -> None:
        path = self._path(key)
        tmp_dir = self.root / TMP
        tmp = tmp_dir / f"{secrets.token_hex(8)}.tmp"
        try:
            tmp_dir.mkdir(parents=True, exist_ok=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if if_absent:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise RemoteKeyExists(f"remote {self.url} already has {key}", key) from None
                finally:
                    os.unlink(tmp)
            else:
                os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._fail(exc, f"write {key}") from None

    def list(self, prefix: str) -> Iterator[RemoteObject]:
        base = self.root
        # walk only the directory the prefix names (keys are '/'-separated like paths)
        head, _, _ = prefix.rpartition("/")
        start = base / head if head else base
        found: list[RemoteObject] = []
        try:
            for dirpath, dirnames, filenames in os.walk(start):
                rel_dir = os.path.relpath(dirpath, base)
                if rel_dir == TMP or rel_dir.startswith(TMP + "/"):
                    dirnames[:] = []
                    continue
                for name in filenames:
                    key = name if rel_dir == "." else f"{rel_dir}/{name}"
                    if key.startswith(prefix):
                        with contextlib.suppress(FileNotFoundError):
                            st = os.stat(os.path.join(dirpath, name))
                            found.append(RemoteObject(key, st.st_size, st.st_mtime_ns))
        except OSError as exc:
            raise self._fail(exc, f"list {prefix}") from None
        found.sort(key=lambda o: o.key)
        yield from found

    def stat(self, key: str) -> RemoteObject | None:
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._fail(exc, f"stat {key}") from None
        return RemoteObject(key, st.st_size, st.st_mtime_ns)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._fail(exc, f"delete {key}") from None

    def close(self) -> None:
        pass
