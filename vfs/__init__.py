"""dsfs storage engine and version model: a pure, synchronous library.

Never imports daemon, trio or pyfuse3 (enforced by tests/vfs/test_layering.py).
"""

from vfs.errors import (
    CorruptData,
    DsfsError,
    NewerFormat,
    NoSpace,
    NotAStore,
    NotFound,
    StoreExists,
    StoreLocked,
    UnknownVersion,
    UserError,
)
from vfs.model import Entry, Kind, Version, VersionStats
from vfs.store import Store

__all__ = [
    "CorruptData",
    "DsfsError",
    "Entry",
    "Kind",
    "NewerFormat",
    "NoSpace",
    "NotAStore",
    "NotFound",
    "Store",
    "StoreExists",
    "StoreLocked",
    "UnknownVersion",
    "UserError",
    "Version",
    "VersionStats",
]
