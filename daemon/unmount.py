"""`dsfs umount`: unmounting, also when the daemon does not answer.

Owns: asking a mount whether its daemon answers (from a child process, never this one: a
request to a hung daemon never returns), the plain unmount, and `--force` (abort the FUSE
connection through the fuse control filesystem, stop the daemon, detach the mountpoint). Runs in
the CLI process; never stats a mountpoint itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemon.mount import (
    MountError,
    canonical,
    daemon_pid,
    device_of,
    fusermount,
    lazy_unmount,
    mounted_at,
    runtime_file,
)

log = logging.getLogger("dsfs.mount")


def unmount(mountpoint: Path, timeout: float = 30.0) -> None:
    """Unmount and wait for the daemon to exit. A daemon that does not answer is not waited
    for forever: the error says to use `unmount_forcibly` (`dsfs umount --force`)."""
    mp = mountpoint.absolute()
    current = mounted_at(mp)  # /proc, never the mountpoint itself: it may not answer
    if current is None:
        raise MountError(f"{mp} is not mounted")
    if not current[1].endswith("dsfs"):
        raise MountError(f"{mp} is a {current[1]} mount, not dsfs")
    pid = daemon_pid(mp)
    hung = (f"the daemon of {mp} does not answer: `dsfs umount --force {mp}` aborts its "
            "connection (processes waiting in the mount get an error) and stops it")
    users = users_of(mp)
    if users:
        raise MountError(f"{mp} is busy ({', '.join(users[:5])} use it): close the files and "
                         f"shells using it (`fuser -vm {mp}` lists them), then retry")
    head = mp / "@head"
    current_head = mounted_at(head)
    if current_head is not None and current_head[1].endswith("dsfs"):
        # @head is its own connection mounted inside: it goes first
        result = run_bounded([fusermount(), "-u", str(head)], timeout)
        if result is None:
            raise MountError(hung)
        status, err = result
        if status != 0 and mounted_at(head) is not None:
            if "busy" in err.lower():
                raise MountError(f"{head} is busy: close the files and shells using it "
                                 f"(`fuser -vm {head}` lists them), then retry")
            raise MountError(f"unmounting {head} failed: {err.strip()}")
    result = run_bounded([fusermount(), "-u", str(mp)], timeout)
    if result is None:
        raise MountError(hung)
    status, err = result
    if status != 0:  # only then ask the daemon (a child process each time)
        state = probe(mp)
        if state == "stale":
            lazy_unmount(mp)
            return
        if state == "hung":
            raise MountError(hung)
        if "busy" in err.lower():
            raise MountError(f"{mp} is busy: close the files and shells using it "
                             f"(`fuser -vm {mp}` lists them), then retry")
        raise MountError(f"unmounting {mp} failed: {err.strip()}")
    deadline = time.monotonic() + timeout
    while pid is not None and _alive(pid):
        if time.monotonic() > deadline:
            raise MountError(f"{mp} is unmounted, but its daemon (pid {pid}) has not exited "
                             f"after {timeout:.0f} s: `dsfs umount --force {mp}` stops it")
        time.sleep(0.02)


def users_of(mountpoint: Path) -> list[str]:
    """Processes with a directory or file open in the versions part of a mount ("pid N
    (comm)"), read from /proc without a request to the mount: what would make unmounting
    it fail after @head, mounted inside it, was already unmounted."""
    top = canonical(mountpoint)
    head = os.path.join(top, "@head")
    found: list[str] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        paths: list[str] = []
        with contextlib.suppress(OSError):
            paths.append(os.readlink(f"/proc/{entry.name}/cwd"))
            paths.append(os.readlink(f"/proc/{entry.name}/root"))
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry.name}/fd"):
                with contextlib.suppress(OSError):
                    paths.append(os.readlink(f"/proc/{entry.name}/fd/{fd}"))
        inside = [p for p in paths if (p == top or p.startswith(top + "/"))
                  and not (p == head or p.startswith(head + "/"))]
        if inside:
            comm = ""
            with contextlib.suppress(OSError), open(f"/proc/{entry.name}/comm") as f:
                comm = f.read().strip()
            found.append(f"pid {entry.name} ({comm})")
    return found


def probe(mountpoint: Path, timeout: float = 3.0) -> str:
    """"ok", "stale" (its daemon is gone) or "hung" (it does not answer within `timeout`),
    asked from a child process: a request to a hung daemon never returns, and the child is
    killed instead of this process. Looks up a name nobody uses, which the kernel cannot
    answer from its caches."""
    name = os.path.join(canonical(mountpoint), f".dsfs-probe-{os.getpid()}-{time.monotonic_ns()}")
    code = ("import errno, os, sys\n"
            "try:\n os.lstat(sys.argv[1])\n"
            "except OSError as e:\n sys.exit(3 if e.errno == errno.ENOTCONN else 0)\n")
    code_or_none = run_bounded([sys.executable, "-c", code, name], timeout)
    if code_or_none is None:
        return "hung"
    return "stale" if code_or_none[0] == 3 else "ok"


def run_bounded(argv: list[str], timeout: float) -> tuple[int, str] | None:
    """(exit status, stderr) of a child, or None if it did not finish within `timeout`. A
    child stuck in a hung mount may not even die of SIGKILL at once: it is killed and left
    behind rather than waited for without end."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
        return None
    return proc.returncode, err


FUSECTL = Path("/sys/fs/fuse/connections")


def ensure_fusectl() -> None:
    """Mount the fuse control filesystem where the kernel offers it and nothing is mounted
    (root only; systemd mounts it at boot, plain containers often do not)."""
    if os.getuid() == 0 and FUSECTL.is_dir() and not os.path.ismount(FUSECTL):
        subprocess.run(["mount", "-t", "fusectl", "fusectl", str(FUSECTL)],
                       capture_output=True, check=False)


def abort_connection(mountpoint: Path) -> bool:
    """Abort a FUSE mount's connection (what `echo 1 > .../abort` does): every request
    waiting in it fails at once. Mounts the fuse control filesystem if it is not (root)."""
    dev = device_of(mountpoint)
    if dev is None:
        return False
    abort = FUSECTL / dev.split(":")[1] / "abort"
    if not abort.exists():
        ensure_fusectl()
    try:
        abort.write_text("1")
    except OSError as exc:
        log.info("could not abort the connection of %s: %s", mountpoint, exc)
        return False
    return True


def unmount_forcibly(mountpoint: Path, grace: float = 3.0) -> list[str]:
    """`dsfs umount --force`: abort the connection, stop the daemon (SIGTERM, then SIGKILL
    after `grace` seconds), detach the mountpoint. Returns what was done, for the user. The
    next `dsfs mount` starts as after a kill -9 (@head recovers what was written)."""
    mp = mountpoint.absolute()
    current = mounted_at(mp)
    if current is None:
        raise MountError(f"{mp} is not mounted")
    if not current[1].endswith("dsfs"):
        raise MountError(f"{mp} is a {current[1]} mount, not dsfs")
    done: list[str] = []
    head = mp / "@head"
    if mounted_at(head) is not None and abort_connection(head):
        done.append("aborted @head's connection")
    if abort_connection(mp):
        done.append("aborted the connection")
    pid = daemon_pid(mp)
    if pid is not None and _alive(pid) and not _serves_fuse(pid):
        log.info("pid %d of %s's runtime file is not a dsfs daemon any more", pid, mp)
        pid = None  # its file outlived a killed daemon, and the number was reused
    if pid is not None and _alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + grace
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            done.append(f"killed daemon {pid}")
        else:
            done.append(f"stopped daemon {pid}")
        if _alive(pid):
            raise MountError(f"daemon {pid} of {mp} did not exit after SIGKILL; "
                             f"`cat /proc/{pid}/stack` shows where it waits")
    if mounted_at(mp) is not None:
        lazy_unmount(mp)
        done.append("detached the mountpoint")
    if mounted_at(mp) is not None:
        raise MountError(f"{mp} is still mounted: run `umount -l {mp}` as root")
    runtime_file(mp).unlink(missing_ok=True)
    return done


def _serves_fuse(pid: int) -> bool:
    """Whether a process is a dsfs daemon holding a FUSE connection (before signalling a pid
    read from a runtime file, which can outlive its daemon)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    if not any(b"dsfs" in a or b"daemon.cli" in a for a in argv) or b"mount" not in argv:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/fuse":
                return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
