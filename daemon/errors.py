"""The one place that turns dsfs's domain errors into errno values for FUSE.

Owns: the mapping from `vfs.errors` classes to errno. Nothing else in dsfs knows errno numbers
for filesystem replies.
"""

from __future__ import annotations

import errno

from vfs import errors as e

_ERRNO: list[tuple[type[BaseException], int]] = [
    (e.ReadOnly, errno.EROFS),
    (e.NoEntry, errno.ENOENT),
    (e.NotFound, errno.ENOENT),
    (e.NotADir, errno.ENOTDIR),
    (e.IsADir, errno.EISDIR),
    (e.NoAttr, errno.ENODATA),
    (e.StaleHandle, errno.ESTALE),
    (e.NoSpace, errno.ENOSPC),
    (e.CorruptData, errno.EIO),
    (e.Exists, errno.EEXIST),
    (e.NotEmpty, errno.ENOTEMPTY),
    (e.Invalid, errno.EINVAL),
    (e.NameTooLong, errno.ENAMETOOLONG),
    (e.NotPermitted, errno.EPERM),
    (e.CrossDevice, errno.EXDEV),
]


def errno_for(exc: BaseException) -> int:
    """The errno for a domain error; EIO for anything without a mapping."""
    for cls, code in _ERRNO:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.EIO
