"""What handlers take and return: plain containers with the field names of the kernel's
structures (st_ino, st_mode, ... as in struct stat), so adapters read like the FUSE docs."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


class FUSEError(Exception):
    """Answer the request with this errno."""

    def __init__(self, errno_: int) -> None:
        super().__init__(errno_)
        self.errno = errno_

    def __str__(self) -> str:
        return errno.errorcode.get(self.errno, str(self.errno))


@dataclass(slots=True)
class EntryAttributes:
    st_ino: int = 0
    generation: int = 0
    entry_timeout: float = 0.0
    attr_timeout: float = 0.0
    st_mode: int = 0
    st_nlink: int = 1
    st_uid: int = 0
    st_gid: int = 0
    st_rdev: int = 0
    st_size: int = 0
    st_blksize: int = 4096
    st_blocks: int = 0
    st_atime_ns: int = 0
    st_mtime_ns: int = 0
    st_ctime_ns: int = 0


@dataclass(slots=True)
class SetattrFields:
    update_atime: bool = False
    update_mtime: bool = False
    update_ctime: bool = False
    update_mode: bool = False
    update_uid: bool = False
    update_gid: bool = False
    update_size: bool = False


@dataclass(slots=True)
class FileInfo:
    fh: int = 0
    keep_cache: bool = False
    direct_io: bool = False


@dataclass(frozen=True, slots=True)
class RequestContext:
    uid: int = 0
    gid: int = 0
    pid: int = 0
    umask: int = 0


@dataclass(slots=True)
class StatvfsData:
    f_bsize: int = 0
    f_frsize: int = 0
    f_blocks: int = 0
    f_bfree: int = 0
    f_bavail: int = 0
    f_files: int = 0
    f_ffree: int = 0
    f_favail: int = 0
    f_namemax: int = 255


@dataclass(slots=True)
class ReaddirToken:
    """The reply buffer of one READDIR(PLUS): entries are added until `size` bytes are used."""

    size: int
    plus: bool
    parts: list[bytes] = field(default_factory=list)
    used: int = 0


__all__ = ["RENAME_EXCHANGE", "RENAME_NOREPLACE", "EntryAttributes", "FUSEError", "FileInfo",
           "ReaddirToken", "RequestContext", "SetattrFields", "StatvfsData"]
