"""Domain errors of the store, each with a one-line message and a stable exit code.

Owns: the exception hierarchy of `vfs`. The CLI prints `str(error)` and exits with
`error.exit_code`; the FUSE adapter maps these classes to errno in one place.
Never imports: daemon, trio, pyfuse3.
"""

from __future__ import annotations

from collections.abc import Callable


class DsfsError(Exception):
    """Base of every expected error. The message says what is wrong and what to do."""

    exit_code = 1


class UserError(DsfsError):
    """The user asked for something that cannot be done as asked (bad argument, bad path)."""

    exit_code = 2


class NotAStore(UserError):
    """The path is missing or is not a dsfs store."""

    exit_code = 3


class StoreExists(UserError):
    """`init` on a path that already holds something."""

    exit_code = 3


class NewerFormat(DsfsError):
    """The store was written by a newer dsfs."""

    exit_code = 4


class UnknownVersion(UserError):
    """A version number or tag that the store does not have."""

    exit_code = 5


class NotFound(UserError):
    """A path that does not exist in a version."""

    exit_code = 6


class StoreLocked(DsfsError):
    """Another process holds a lock the operation needs (gc, or another gc)."""

    exit_code = 7


class NoSpace(DsfsError):
    """The disk holding the store is full."""

    exit_code = 8


class StoreWriteError(DsfsError):
    """Writing to the store failed for a reason other than a full disk (EIO, EROFS, ...).

    Deliberately not an OSError, so no code that handles a source file's I/O errors can
    mistake it for one and carry on.
    """

    exit_code = 10


class CorruptData(DsfsError):
    """Stored bytes fail their checksum; they are never returned as data."""

    exit_code = 9

    def __init__(self, message: str, object_id: bytes = b"") -> None:
        super().__init__(message)
        self.object_id = object_id


class ObjectMissing(CorruptData):
    """An object the store references is not in the index or its pack is gone."""


class FsError(DsfsError):
    """Errors of filesystem operations; the FUSE adapter maps each class to one errno."""


class ReadOnly(FsError):
    """A mutation of an immutable version (EROFS)."""


class NoEntry(FsError):
    """No such name (ENOENT)."""


class NotADir(FsError):
    """A directory operation on something else (ENOTDIR)."""


class IsADir(FsError):
    """A file operation on a directory (EISDIR)."""


class NoAttr(FsError):
    """No such extended attribute (ENODATA)."""


class StaleHandle(FsError):
    """An inode or handle the filesystem no longer knows (ESTALE)."""


class Exists(FsError):
    """The name is taken (EEXIST)."""


class NotEmpty(FsError):
    """A directory that must be empty is not (ENOTEMPTY)."""


class Invalid(FsError):
    """An operation that makes no sense as asked (EINVAL), e.g. moving a directory into itself."""


class NameTooLong(FsError):
    """A name longer than 255 bytes (ENAMETOOLONG)."""


class NotPermitted(FsError):
    """An operation dsfs does not support on purpose (EPERM), e.g. device nodes in @head."""


class CrossDevice(FsError):
    """A rename or link between a version and @head (EXDEV): tools then copy instead."""


class HeadBusy(DsfsError):
    """Another process serves or edits @head of this store."""

    exit_code = 7


class UnsafeStore(UserError):
    """The store's files could be changed by another user: refused."""

    exit_code = 3


class WouldBlock(Exception):
    """A call made with `wait=False` needs data that is not in memory.

    Deliberately not a DsfsError: it maps to no errno. The event loop runs `load` in a worker
    thread (it reads what was missing into the store's caches; it touches only thread-safe parts
    of the store), then makes the same call again. The call left nothing half done, so the retry
    starts afresh (it may raise WouldBlock again if a cache evicted what was loaded meanwhile).
    `load` may raise the FsError or CorruptData the call itself would raise (a damaged page, a
    version gc removed): that is the call's answer.
    """

    def __init__(self, load: Callable[[], object], what: str = "") -> None:
        super().__init__(what or "data not in memory")
        self.load = load
