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
tags           tag name (utf-8, <=255 B)   version no (u32 BE) + CRC-32 of name and number
                                           (tag_value; 4-byte values of older indexes read)
filecache      blake3(root NUL relpath)    msgpack [size, mtime_ns, ino, ctime_ns, ref] + CRC
               [:20]                       (enc_checked): lets import skip unchanged files
                                           (not rebuilt; a damaged entry is a cache miss)
=============  ==========================  ===============================================
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack

from vfs.errors import CorruptData
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


DAMAGED = "run `dsfs verify --repair` (it rebuilds the index from the packs)"


def enc_loc(loc: ObjLoc) -> bytes:
    return _OBJ_LOC.pack(loc.pack_no, loc.offset, loc.stored_len, loc.plain_len, int(loc.kind),
                         loc.codec)


def dec_loc(b: bytes) -> ObjLoc:
    try:
        pack_no, offset, stored, plain, kind, codec = _OBJ_LOC.unpack(b)
        return ObjLoc(pack_no, offset, stored, plain, ObjType(kind), codec)
    except (struct.error, ValueError):
        raise CorruptData(f"an object location in the index is damaged: {DAMAGED}") from None


def enc_msg(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def dec_msg(b: bytes) -> Any:
    """Decode msgpack; malformed bytes (LMDB values have no checksum) are CorruptData."""
    try:
        return msgpack.unpackb(b, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptData(f"a damaged value ({exc}): {DAMAGED}") from None


def enc_checked(obj: Any) -> bytes:
    """msgpack followed by its CRC-32, for index values whose damage must not go unseen."""
    body = enc_msg(obj)
    return body + _U32.pack(zlib.crc32(body))


def dec_checked(raw: bytes) -> Any | None:
    """The value `enc_checked` wrote, or None if it is damaged or has no checksum."""
    body, tail = raw[:-4], raw[-4:]
    if len(raw) < 5 or _U32.unpack(tail)[0] != zlib.crc32(body):
        return None
    return dec_msg(body)


def tag_key(name: str) -> bytes:
    return name.encode("utf-8")


def tag_value(name: str, number: int) -> bytes:
    """A tag's value: the version number and a CRC-32 over name and number, so a flipped bit
    in either is seen instead of moving the tag to another version."""
    key = version_key(number)
    return key + _U32.pack(zlib.crc32(tag_key(name) + key))


def dec_tag(key: bytes, value: bytes) -> tuple[str, int]:
    """(name, version number) of a tag entry; CorruptData if either was damaged."""
    try:
        name = bytes(key).decode("utf-8")
        number = dec_version_key(bytes(value[:4]))
    except (UnicodeDecodeError, struct.error):
        number = -1
    if number < 0 or (len(value) != 4 and bytes(value) != tag_value(name, number)):
        raise CorruptData(f"the index's entry of tag {bytes(key)!r} is damaged: {DAMAGED}")
    return name, number


def filecache_key(root: bytes, relpath: bytes) -> bytes:
    return hash_bytes(root + b"\0" + relpath)[:20]


__all__ = ["DATABASES", "ObjLoc"]
