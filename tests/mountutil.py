"""The one helper that owns mounting in tests: mount, wait until ready, always unmount.

`mounted()` starts `dsfs mount --foreground` in a subprocess, waits (polling with a deadline)
until the filesystem answers, fails fast with the daemon's log if it died, and on exit -
including when the test failed - unmounts, waits for the daemon, kills it if it hangs and
lazily detaches the mountpoint as a last resort, then checks nothing is left mounted.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from daemon.mount import mounted_at


class Daemon:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path, mountpoint: Path) -> None:
        self.proc = proc
        self.log = log
        self.mountpoint = mountpoint

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(check: Callable[[], bool], timeout: float, what: str,
             daemon: Daemon | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if daemon is not None and daemon.proc.poll() is not None:
            raise AssertionError(f"daemon exited ({daemon.proc.returncode}) while waiting for "
                                 f"{what}:\n{daemon.log_text()}")
        if time.monotonic() > deadline:
            extra = f"\n{daemon.log_text()}" if daemon is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(0.01)


def answers(mountpoint: Path) -> bool:
    """Whether a live FUSE mount answers at `mountpoint`."""
    if mounted_at(mountpoint) is None:
        return False
    try:
        os.listdir(mountpoint)
    except OSError:
        return False
    return True


def dsfs_argv(store: Path, *args: str | Path) -> list[str]:
    return [sys.executable, "-m", "daemon.cli", "--store", str(store), *map(str, args)]


def _ready(fd: int) -> bool:
    """Whether the daemon wrote its ready line (or closed the pipe: it died, or is ready)."""
    if not select.select([fd], [], [], 0)[0]:
        return False
    os.read(fd, 64)
    return True


def force_unmount(mountpoint: Path) -> None:
    """Unmount @head's connection (mounted inside), then the versions'; lazily if busy."""
    for args in (["-u"], ["-u", "-z"]):
        for target in (mountpoint / "@head", mountpoint):
            if mounted_at(target) is not None:
                subprocess.run(["fusermount3", *args, "-q", str(target)], capture_output=True)
        if mounted_at(mountpoint) is None:
            return


@contextmanager
def mounted(store: Path, mountpoint: Path, *extra: str, timeout: float = 20.0
            ) -> Iterator[Daemon]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    log = mountpoint.parent / f"{mountpoint.name}.daemon.log"
    ready_r, ready_w = os.pipe()
    with open(log, "wb") as logf:
        proc = subprocess.Popen(dsfs_argv(store, "mount", mountpoint, "--foreground",
                                          "--ready-fd", str(ready_w), *extra),
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                pass_fds=(ready_w,))
    os.close(ready_w)
    daemon = Daemon(proc, log, mountpoint)
    try:
        # ready: the versions and @head (its own mount inside) are both served
        wait_for(lambda: _ready(ready_r), timeout, f"{mountpoint} to be mounted", daemon)
        wait_for(lambda: answers(mountpoint), timeout, f"{mountpoint} to answer", daemon)
        yield daemon
    finally:
        os.close(ready_r)
        if proc.poll() is None:
            force_unmount(mountpoint)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        force_unmount(mountpoint)
        assert mounted_at(mountpoint) is None, f"{mountpoint} is still mounted"
