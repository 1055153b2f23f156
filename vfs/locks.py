"""Inter-process locks of a store (flock on files under `STORE/locks/`).

Owns: who may run at the same time. Writers (import, commit) hold `gc.lock` shared, gc holds it
exclusively; recording a version holds `commit.lock` exclusively for the instant it takes to pick
the number and index it. Readers (a mount, `dsfs cat`) take no lock: LMDB snapshots and immutable
packs keep them consistent. Never imports: daemon, trio, pyfuse3.

Pins (`STORE/locks/open/vN`, holding the hex id of vN's root tree): a mount holds a shared flock
on vN's pin while the kernel holds any inode of vN's files and directories (its lookup counts:
with zero-message opens the mount cannot tell open files from cached ones), so a `dsfs drop vN`
followed by `dsfs gc` keeps what those files need until the kernel forgets them (gc treats a
held pin's tree as live and says so). The kernel drops a flock when its process dies, so a killed
mount never pins anything for good. A pin is taken before the mount checks that vN is still
live, and gc lists versions before pins: so either gc sees the pin, or the mount sees the drop
and refuses the lookup (`vfs.view`).
"""

from __future__ import annotations

import fcntl
import os
import threading
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


def _pins_dir(store_root: Path) -> Path:
    return store_root / "locks" / "open"


class VersionPins:
    """The pins one process holds, counted per version. Thread-safe: its lock guards the table
    alone and is never held across a file operation, so a thread that only counts (the event
    loop) never waits for one that opens a pin file (a worker)."""

    def __init__(self, store_root: Path) -> None:
        self.dir = _pins_dir(store_root)
        self._held: dict[int, tuple[int, int]] = {}
        """version -> (descriptor, users)"""
        self._lock = threading.Lock()

    def held(self, number: int) -> bool:
        """Whether this process holds `number`'s pin (counting costs no file operation)."""
        with self._lock:
            return number in self._held

    def pin(self, number: int, root: bytes) -> bool:
        """Count one more user of `number`; True if this took the pin (not held before)."""
        with self._lock:
            held = self._held.get(number)
            if held is not None:
                self._held[number] = (held[0], held[1] + 1)
                return False
        fd = self._take(number, root)
        with self._lock:
            held = self._held.get(number)
            if held is None:
                self._held[number] = (fd, 1)
                return True
            self._held[number] = (held[0], held[1] + 1)
        os.close(fd)  # another thread took it meanwhile: count on theirs
        return False

    def _take(self, number: int, root: bytes) -> int:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        path = self.dir / f"v{number}"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # gc removed the file between our open and our lock: take the new one
        try:
            if root:
                os.pwrite(fd, root.hex().encode(), 0)
        except OSError:
            os.close(fd)  # and with it the shared lock
            raise
        return fd

    def unpin(self, number: int) -> None:
        """One user fewer. The pin itself stays until `release_idle`, so using a version's
        files one by one does not lock and check the version each time."""
        with self._lock:
            held = self._held.get(number)
            if held is not None:
                self._held[number] = (held[0], max(0, held[1] - 1))

    def release(self, number: int) -> None:
        """Drop `number`'s pin now if nobody uses it (a dropped version: nothing will reuse it)."""
        with self._lock:
            held = self._held.get(number)
            if held is None or held[1] > 0:
                return
            del self._held[number]
        os.close(held[0])

    def release_idle(self) -> None:
        """Drop the pins of versions nobody uses (the mount calls this on each poll)."""
        with self._lock:
            idle = [(n, fd) for n, (fd, count) in self._held.items() if count == 0]
            for number, _ in idle:
                del self._held[number]
        for _, fd in idle:
            os.close(fd)


def pinned_roots(store_root: Path) -> dict[int, bytes]:
    """Root tree ids of versions some live process holds files of (gc lock held by the caller).

    Pins nobody holds are removed."""
    out: dict[int, bytes] = {}
    pins = _pins_dir(store_root)
    if not pins.is_dir():
        return out
    for entry in os.scandir(pins):
        if not (entry.name.startswith("v") and entry.name[1:].isdigit()):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    root = bytes.fromhex(os.pread(fd, 64, 0).decode())
                except ValueError:
                    root = b""
                if root:  # empty: its holder has not checked the version yet, and will refuse
                    out[int(entry.name[1:])] = root
                continue
            os.unlink(entry.path)  # nobody holds it (we hold it exclusively while removing)
        finally:
            os.close(fd)
    return out
