"""Small ext4 filesystems on loop devices for fault tests: always unmounted and detached.

Every helper is a context manager whose exit undoes what it did, including when the test
failed: `attached()` detaches its loop device (and any other loop device still backed by the
same image), `mounted_fs()` unmounts (retrying, then lazily as a last resort), `frozen()`
thaws (see its note: start no process while a filesystem is frozen). `loop_fs()` combines
them: make an image, attach it, mount it.

Free space is controlled with a filler file (`Filler`): blocks reserved with fallocate, so
deleting the filler gives back exactly what it took.

Root is needed (losetup, mount); `require_loop()` skips a test when that or the tools are
missing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MiB = 1 << 20

TOOLS = ("losetup", "mount", "umount", "mountpoint", "mkfs.ext4", "e2fsck")


def require_loop() -> None:
    """Skip the calling test unless loop devices and the tools that drive them are usable."""
    if os.geteuid() != 0:
        pytest.skip("needs root (losetup, mount)")
    if not os.path.exists("/dev/loop-control") and not os.path.exists("/dev/loop0"):
        pytest.skip("no loop devices")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)}")


def run(*argv: str | Path, check: bool = True, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {result.returncode}:\n"
                             f"{result.stdout}{result.stderr}")
    return result


def make_ext4(image: Path, size: int, label: str = "dsfs-test") -> None:
    """A fresh ext4 image of `size` bytes: 4 KiB blocks (so @head's overlays see holes at
    block granularity), no blocks reserved for root (free space is what root can use), inode
    tables and journal initialized now (no lazy init writing behind the test's back)."""
    image.unlink(missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(size)
    run("mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-L", label,
        "-E", "lazy_itable_init=0,lazy_journal_init=0", image)


def loops_of(image: Path) -> list[str]:
    """Loop devices currently backed by `image`."""
    result = run("losetup", "-j", image.resolve(), check=False)
    return [line.split(":", 1)[0] for line in result.stdout.splitlines() if ":" in line]


def detach(device: str) -> None:
    for _ in range(50):
        result = run("losetup", "-d", device, check=False)
        if result.returncode == 0 or "No such device" in result.stderr:
            return
        time.sleep(0.1)
    # still busy: autoclear detaches it when its last user goes away
    run("losetup", "-d", device, check=False)


@contextlib.contextmanager
def attached(image: Path) -> Iterator[str]:
    """Attach `image` to a free loop device; always detach it again."""
    device = ""
    try:
        device = run("losetup", "--find", "--show", image.resolve()).stdout.strip()
        assert device.startswith("/dev/loop"), device
        yield device
    finally:
        for dev in {device, *loops_of(image)} - {""}:
            detach(dev)


def is_mountpoint(path: Path) -> bool:
    return run("mountpoint", "-q", path, check=False).returncode == 0


def unmount(mountpoint: Path) -> None:
    """Unmount, retrying while busy (a process that just exited may still hold it), and
    lazily as a last resort so that nothing stays mounted after a test."""
    for _ in range(50):
        if not is_mountpoint(mountpoint):
            return
        if run("umount", mountpoint, check=False).returncode == 0:
            return
        time.sleep(0.1)
    run("umount", "-l", mountpoint, check=False)


@contextlib.contextmanager
def mounted_fs(device: str, mountpoint: Path, options: str = "") -> Iterator[Path]:
    """Mount the filesystem on `device` at `mountpoint`; always unmount it."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    try:
        run("mount", *(["-o", options] if options else []), device, mountpoint)
        yield mountpoint
    finally:
        unmount(mountpoint)


@dataclass
class LoopFs:
    image: Path
    device: str
    mountpoint: Path

    def free(self) -> int:
        return free_bytes(self.mountpoint)


@contextlib.contextmanager
def loop_fs(image: Path, mountpoint: Path, size: int | None = None, options: str = ""
            ) -> Iterator[LoopFs]:
    """Mount the ext4 filesystem in `image` (made first, of `size` bytes, when given) on a
    loop device; always unmount and detach."""
    if size is not None:
        make_ext4(image, size)
    with attached(image) as device, mounted_fs(device, mountpoint, options):
        yield LoopFs(image, device, mountpoint)


FIFREEZE = 0xC0045877  # _IOWR('X', 119, int)
FITHAW = 0xC0045878  # _IOWR('X', 120, int)


@contextlib.contextmanager
def frozen(mountpoint: Path) -> Iterator[None]:
    """Freeze a filesystem (writes to it block; reads go on); always thaw it.

    Done with ioctls, not `fsfreeze`, and nothing inside may start a process: a forked child
    closes the descriptors it inherited, and closing a descriptor of a FUSE file sends FLUSH to
    its daemon, which (with `--sync-on-close`, or to write back cached pages) may wait for this
    frozen filesystem, while the thaw waits for the child: a deadlock.
    """
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, FIFREEZE, 0)
        try:
            yield
        finally:
            for _ in range(50):
                try:
                    fcntl.ioctl(fd, FITHAW, 0)
                    break
                except OSError as exc:
                    if exc.errno == errno.EINVAL:
                        break  # not frozen (any more)
                    time.sleep(0.1)
    finally:
        os.close(fd)


def sparse_copy(src: Path, dst: Path, piece: int = 4 * MiB) -> None:
    """Copy a file's data ranges (holes stay holes) without starting a process, so it may run
    while `src`'s filesystem is frozen (`dst` must be elsewhere)."""
    fi = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fo = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fi).st_size
            pos = 0
            while pos < size:
                try:
                    start = os.lseek(fi, pos, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:
                        break
                    raise
                end = os.lseek(fi, start, os.SEEK_HOLE)
                for off in range(start, end, piece):
                    data = os.pread(fi, min(piece, end - off), off)
                    view = memoryview(data)
                    at = off
                    while view:
                        n = os.pwrite(fo, view, at)
                        view, at = view[n:], at + n
                pos = end
            os.ftruncate(fo, size)
        finally:
            os.close(fo)
    finally:
        os.close(fi)


def e2fsck(device_or_image: str | Path) -> subprocess.CompletedProcess[str]:
    """`e2fsck -fy`: replay the journal, check everything, fix what it can. Exit 0: clean,
    1: errors corrected; 4 and up: errors left (see e2fsck(8))."""
    return run("e2fsck", "-fy", device_or_image, check=False, timeout=120)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def used_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class Filler:
    """A file that takes free space away, sized so exactly `leave` bytes stay free."""

    def __init__(self, directory: Path, name: str = "filler") -> None:
        self.path = directory / name

    def leave(self, free: int) -> None:
        """Grow or shrink the filler so that about `free` bytes (rounded to blocks) remain."""
        self.remove()
        fs_free = free_bytes(self.path.parent)
        want = fs_free - free
        if want <= 0:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # the filler's own extent blocks cost a little: step down until it fits
            while want > 0:
                try:
                    os.posix_fallocate(fd, 0, want)
                    break
                except OSError:
                    os.ftruncate(fd, 0)
                    want -= 64 * 1024
            os.fsync(fd)
        finally:
            os.close(fd)

    def fill(self) -> None:
        """Take every free block."""
        self.leave(0)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
