"""dsfs's own FUSE layer: the kernel protocol spoken directly over /dev/fuse.

Why not pyfuse3: its handlers never see the inode of a READ, WRITE, READDIR or FLUSH, only
the file handle an OPEN returned, so a filesystem built on it cannot answer OPEN with ENOSYS
(the kernel then sends no OPEN or RELEASE at all and every handle is 0). That switch - and
OPENDIR's, which is the only way to get the kernel's directory listing cache - is what makes a
warm open/read/close of a version file cost no request (issue 10). One process can also serve
several connections here (pyfuse3 keeps one session per process): the versions and @head each
get their own.
"""

from daemon.fuse.session import Config, Session, readdir_reply
from daemon.fuse.types import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    EntryAttributes,
    FileInfo,
    FUSEError,
    ReaddirToken,
    RequestContext,
    SetattrFields,
    StatvfsData,
)

__all__ = ["RENAME_EXCHANGE", "RENAME_NOREPLACE", "Config", "EntryAttributes", "FUSEError",
           "FileInfo", "ReaddirToken", "RequestContext", "Session", "SetattrFields",
           "StatvfsData", "readdir_reply"]
