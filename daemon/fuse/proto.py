"""The FUSE kernel protocol (include/uapi/linux/fuse.h, version 7.31+): opcodes, flags and the
byte layouts dsfs reads and writes on /dev/fuse. Pure data: no I/O here."""

from __future__ import annotations

import struct
from enum import IntEnum

KERNEL_MAJOR = 7
KERNEL_MINOR = 38
"""The protocol minor we speak; the kernel's own if older (then it ignores newer fields)."""


class Op(IntEnum):
    LOOKUP = 1
    FORGET = 2
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    GETLK = 31
    SETLK = 32
    SETLKW = 33
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36
    BMAP = 37
    DESTROY = 38
    IOCTL = 39
    POLL = 40
    NOTIFY_REPLY = 41
    BATCH_FORGET = 42
    FALLOCATE = 43
    READDIRPLUS = 44
    RENAME2 = 45
    LSEEK = 46
    COPY_FILE_RANGE = 47
    SETUPMAPPING = 48
    REMOVEMAPPING = 49
    SYNCFS = 50
    TMPFILE = 51
    STATX = 52


# FUSE_INIT flags (fuse_init_in.flags / fuse_init_out.flags)
ASYNC_READ = 1 << 0
ATOMIC_O_TRUNC = 1 << 3
BIG_WRITES = 1 << 5
AUTO_INVAL_DATA = 1 << 12
DO_READDIRPLUS = 1 << 13
ASYNC_DIO = 1 << 15
WRITEBACK_CACHE = 1 << 16
NO_OPEN_SUPPORT = 1 << 17
PARALLEL_DIROPS = 1 << 18
POSIX_ACL = 1 << 20
MAX_PAGES = 1 << 22
CACHE_SYMLINKS = 1 << 23
NO_OPENDIR_SUPPORT = 1 << 24

# fuse_open_out.open_flags
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_CACHE_DIR = 1 << 3

# fuse_setattr_in.valid
FATTR_MODE = 1 << 0
FATTR_UID = 1 << 1
FATTR_GID = 1 << 2
FATTR_SIZE = 1 << 3
FATTR_ATIME = 1 << 4
FATTR_MTIME = 1 << 5
FATTR_FH = 1 << 6
FATTR_ATIME_NOW = 1 << 7
FATTR_MTIME_NOW = 1 << 8
FATTR_CTIME = 1 << 10

NOTIFY_INVAL_INODE = 2
NOTIFY_INVAL_ENTRY = 3

IN_HEADER = struct.Struct("<IIQQIIIHH")
"""len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding (40 bytes)"""
OUT_HEADER = struct.Struct("<IiQ")
"""len, error (negative errno), unique (16 bytes)"""
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
"""ino, size, blocks, atime, mtime, ctime, atimensec, mtimensec, ctimensec, mode, nlink, uid,
gid, rdev, blksize, flags (88 bytes)"""
ENTRY_OUT = struct.Struct("<QQQQII" + ATTR.format[1:])
"""nodeid, generation, entry_valid, attr_valid, entry_valid_nsec, attr_valid_nsec, attr"""
ATTR_OUT = struct.Struct("<QII" + ATTR.format[1:])
"""attr_valid, attr_valid_nsec, dummy, attr"""
OPEN_OUT = struct.Struct("<QII")
WRITE_OUT = struct.Struct("<II")
XATTR_SIZE_OUT = struct.Struct("<II")
STATFS_OUT = struct.Struct("<QQQQQIIII24x")
"""blocks, bfree, bavail, files, ffree, bsize, namelen, frsize, padding, spare[6]"""
INIT_IN = struct.Struct("<IIII")
INIT_OUT = struct.Struct("<IIIIHHIIHHI28x")
DIRENT = struct.Struct("<QQII")
"""ino, off, namelen, type; then the name, padded to 8 bytes"""
INVAL_ENTRY_OUT = struct.Struct("<QII")
INVAL_INODE_OUT = struct.Struct("<Qqq")

GETATTR_IN = struct.Struct("<IIQ")
SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")
MKNOD_IN = struct.Struct("<IIII")
MKDIR_IN = struct.Struct("<II")
RENAME_IN = struct.Struct("<Q")
RENAME2_IN = struct.Struct("<QII")
LINK_IN = struct.Struct("<Q")
OPEN_IN = struct.Struct("<II")
READ_IN = struct.Struct("<QQIIQII")
WRITE_IN = struct.Struct("<QQIIQII")
RELEASE_IN = struct.Struct("<QIIQ")
FSYNC_IN = struct.Struct("<QII")
SETXATTR_IN = struct.Struct("<II")
GETXATTR_IN = struct.Struct("<II")
FORGET_IN = struct.Struct("<Q")
BATCH_FORGET_IN = struct.Struct("<II")
FORGET_ONE = struct.Struct("<QQ")
CREATE_IN = struct.Struct("<IIII")
FLUSH_IN = struct.Struct("<QIIQ")


def split_seconds(seconds: float) -> tuple[int, int]:
    """A timeout as (whole seconds, nanoseconds)."""
    if seconds <= 0:
        return 0, 0
    whole = int(seconds)
    return whole, int((seconds - whole) * 1e9)


def cstring(buf: memoryview, start: int) -> tuple[bytes, int]:
    """The NUL-terminated name at `start`, and the offset just after its NUL."""
    raw = bytes(buf[start:])
    end = raw.index(b"\0")
    return raw[:end], start + end + 1
