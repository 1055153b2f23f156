"""Inter-process locks of a store (flock on files under `STORE/locks/`).

Owns: who may run at the same time. Writers (import, commit) hold `gc.lock` shared, gc holds it
exclusively; recording a version holds `commit.lock` exclusively for the instant it takes to pick
the number and index it. Readers (a mount, `dsfs cat`) take no lock: LMDB snapshots and immutable
packs keep them consistent. Never imports: daemon, trio, pyfuse3.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vfs.errors import StoreLocked


@contextmanager
def flocked(path: Path, *, exclusive: bool, wait: bool, busy_message: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        flags = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, flags | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise StoreLocked(busy_message) from None
        yield
    finally:
        os.close(fd)
