"""Crash-safe file primitives: write to a temporary name, fsync, rename, fsync the directory.

Owns: every durable write of a whole file in the store. Never imports: daemon, trio, pyfuse3.
Callable from any thread; all calls block on disk I/O.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from vfs.errors import NoSpace


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def no_space(path: Path | str) -> NoSpace:
    return NoSpace(f"no space left on the device holding {path}: free space and retry "
                   "(what was already committed is intact)")


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of `data` to `fd` (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise no_space(path.parent) from None
        raise
