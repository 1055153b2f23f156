"""The LMDB layout of the store's index: every named database, key and value, in one place.

Owns: encoding and decoding of every LMDB key and value. Nothing else in `vfs` builds LMDB keys.
Never imports: daemon, trio, pyfuse3. Pure functions, callable from any thread.

The index is a cache of the packs: everything in it except `filecache` can be rebuilt by
scanning the packs (`vfs.rebuild`). Keys never contain paths (LMDB keys are at most 511 bytes).

=============  ==========================  ===============================================
database       key                         value
=============  ==========================  ===============================================
meta           b"format"                   u32 LE: index layout version (INDEX_FORMAT)
               b"next_version"             u32 LE: the next version number to hand out;
                                           never decreases, so numbers are never reused
               b"next_pack"                u32 LE: the next pack number to hand out
objects        object id (32 bytes)        OBJ_LOC: pack_no u32, offset u64, stored_len u32,
                                           plain_len u32, kind u8, codec u8
packs          pack_no (u32 BE)            msgpack {"name", "size", "records", "time"}
packnames      pack name (ascii)           pack_no (u32 BE)
versions       version no (u32 BE)         msgpack version record (see vfs.model.Version)
dropped        version no (u32 BE)         msgpack {"time": ns}: tombstone, keeps the number
tags           tag name (utf-8, <=255 B)   version no (u32 BE)
filecache      blake3(root NUL relpath)    msgpack [size, mtime_ns, ino, ctime_ns, ref]:
               [:20]                       lets import skip unchanged files (not rebuilt)
=============  ==========================  ===============================================
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from vfs.ids import ObjType, hash_bytes

INDEX_FORMAT = 1
DATABASES = ("meta", "objects", "packs", "packnames", "versions", "dropped", "tags", "filecache")

META_FORMAT = b"format"
META_NEXT_VERSION = b"next_version"
META_NEXT_PACK = b"next_pack"

_U32 = struct.Struct("<I")
_BE32 = struct.Struct(">I")
_OBJ_LOC = struct.Struct("<IQIIBB")


@dataclass(frozen=True, slots=True)
class ObjLoc:
    """Where an object lives: pack number, record offset, lengths, kind and codec."""

    pack_no: int
    offset: int
    stored_len: int
    plain_len: int
    kind: ObjType
    codec: int


def enc_u32(n: int) -> bytes:
    return _U32.pack(n)


def dec_u32(b: bytes) -> int:
    return int(_U32.unpack(b)[0])


def version_key(n: int) -> bytes:
    return _BE32.pack(n)


def dec_version_key(b: bytes) -> int:
    return int(_BE32.unpack(b)[0])


pack_key = version_key
dec_pack_key = dec_version_key


def enc_loc(loc: ObjLoc) -> bytes:
    return _OBJ_LOC.pack(loc.pack_no, loc.offset, loc.stored_len, loc.plain_len, int(loc.kind),
                         loc.codec)


def dec_loc(b: bytes) -> ObjLoc:
    pack_no, offset, stored, plain, kind, codec = _OBJ_LOC.unpack(b)
    return ObjLoc(pack_no, offset, stored, plain, ObjType(kind), codec)


def enc_msg(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def dec_msg(b: bytes) -> Any:
    return msgpack.unpackb(b, raw=False)


def tag_key(name: str) -> bytes:
    return name.encode("utf-8")


def filecache_key(root: bytes, relpath: bytes) -> bytes:
    return hash_bytes(root + b"\0" + relpath)[:20]


__all__ = ["DATABASES", "ObjLoc"]
