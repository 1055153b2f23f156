"""Attaching a /dev/fuse connection to a directory, and detaching it.

Root calls mount(2) itself; other users run the setuid `fusermount3`, which opens /dev/fuse,
mounts, and passes the descriptor back over a socket named in `_FUSE_COMMFD` (libfuse's
protocol with it). Unmounting: umount2(2) as root, `fusermount3 -u` otherwise.
"""

from __future__ import annotations

import array
import ctypes
import os
import shutil
import socket
import stat
import subprocess

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


class MountFailed(Exception):
    """mount(2) or fusermount3 refused: the message says why."""


def _fusermount() -> str:
    path = shutil.which("fusermount3")
    if path is None:
        raise MountFailed("fusermount3 not found: install the fuse3 package")
    return path


def mount(mountpoint: str, *, read_only: bool, allow_other: bool, fsname: str = "dsfs",
          subtype: str = "dsfs") -> int:
    """Mount a new FUSE connection at `mountpoint`; return its /dev/fuse descriptor
    (non-blocking, close-on-exec)."""
    if os.geteuid() == 0:
        fd = _mount_as_root(mountpoint, read_only, allow_other, fsname, subtype)
    else:
        fd = _mount_with_fusermount(mountpoint, read_only, allow_other, fsname, subtype)
    os.set_blocking(fd, False)
    os.set_inheritable(fd, False)
    return fd


def _mount_as_root(mountpoint: str, read_only: bool, allow_other: bool, fsname: str,
                   subtype: str) -> int:
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    mode = stat.S_IFMT(os.stat(mountpoint).st_mode)
    opts = [f"fd={fd}", f"rootmode={mode:o}", f"user_id={os.getuid()}",
            f"group_id={os.getgid()}", "default_permissions"]
    if allow_other:
        opts.append("allow_other")
    flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if read_only else 0)
    rc = _libc.mount(fsname.encode(), os.fsencode(mountpoint), f"fuse.{subtype}".encode(),
                     ctypes.c_ulong(flags), ",".join(opts).encode())
    if rc != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise MountFailed(f"mount {mountpoint}: {os.strerror(err)}")
    return fd


def _mount_with_fusermount(mountpoint: str, read_only: bool, allow_other: bool, fsname: str,
                           subtype: str) -> int:
    opts = [f"fsname={fsname}", f"subtype={subtype}", "nosuid", "nodev", "default_permissions",
            "ro" if read_only else "rw"]
    if allow_other:
        opts.append("allow_other")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
        proc = subprocess.Popen([_fusermount(), "-o", ",".join(opts), "--", mountpoint],
                                env=env, pass_fds=(theirs.fileno(),), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        _, stderr = proc.communicate()
        theirs.close()
        fds = array.array("i")
        try:
            _, ancdata, _, _ = ours.recvmsg(1, socket.CMSG_SPACE(fds.itemsize))
        except OSError:
            ancdata = []
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[:fds.itemsize])
    if proc.returncode != 0 or not fds:
        for fd in fds:
            os.close(fd)
        why = stderr.strip().splitlines()[-1] if stderr.strip() else "no descriptor"
        raise MountFailed(f"fusermount3 could not mount {mountpoint}: {why}")
    return fds[0]


def unmount(mountpoint: str, lazy: bool = False) -> None:
    """Detach a mount this process made (errors are the caller's to log)."""
    if os.geteuid() == 0:
        if _libc.umount2(os.fsencode(mountpoint), MNT_DETACH if lazy else 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), mountpoint)
        return
    cmd = [_fusermount(), "-u", "-q"] + (["-z"] if lazy else []) + ["--", mountpoint]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise OSError(0, proc.stderr.strip() or "fusermount3 -u failed", mountpoint)


__all__ = ["MountFailed", "mount", "unmount"]
