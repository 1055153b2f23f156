"""Typed identifiers and the hash functions that produce them.

Owns: how every object id is computed (BLAKE3-256) and how ids are printed.
Never imports: daemon, trio, pyfuse3. Pure functions, callable from any thread.

Chunk ids are the BLAKE3 hash of the plain chunk bytes, so they can be checked by anyone holding
the bytes. Metadata objects (chunk lists, tree pages, version records, ref events) are hashed with
BLAKE3 in derive-key mode under a per-type context string: a data chunk can never collide with a
metadata object, even if its bytes equal that object's encoding.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NewType

import blake3

ObjectId = NewType("ObjectId", bytes)
"""32-byte id of any object stored in a pack (a chunk or a metadata object)."""
ChunkId = NewType("ChunkId", bytes)
"""32-byte BLAKE3 hash of a data chunk's plain bytes (a kind of ObjectId)."""
TreeId = NewType("TreeId", bytes)
"""Id of the root page of a directory tree (a kind of ObjectId)."""
PackName = NewType("PackName", str)
"""File name of a pack: 32 random hex digits, unique (packs never change once written)."""
VersionNo = NewType("VersionNo", int)
"""Version number: 1, 2, ... never reused."""

ID_LEN = 32


class ObjType(IntEnum):
    """Kinds of objects stored in packs. The value is written into each pack record."""

    CHUNK = 1
    CHUNKLIST = 2
    TREE = 3
    VERSION = 4
    REFEVENT = 5


_CONTEXTS: dict[ObjType, str] = {
    ObjType.CHUNKLIST: "dsfs 2026 chunk list v1",
    ObjType.TREE: "dsfs 2026 tree page v1",
    ObjType.VERSION: "dsfs 2026 version record v1",
    ObjType.REFEVENT: "dsfs 2026 ref event v1",
}

_THREADED_HASH_MIN = 4 << 20


def hash_chunk(data: bytes | memoryview) -> ChunkId:
    """Return the id of a data chunk (BLAKE3-256 of its plain bytes)."""
    if len(data) >= _THREADED_HASH_MIN:
        return ChunkId(blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest())
    return ChunkId(blake3.blake3(data).digest())


def hash_object(kind: ObjType, data: bytes | memoryview) -> ObjectId:
    """Return the id of an object of the given kind holding these plain bytes."""
    if kind == ObjType.CHUNK:
        return ObjectId(hash_chunk(data))
    return ObjectId(blake3.blake3(data, derive_key_context=_CONTEXTS[kind]).digest())


def hash_bytes(data: bytes | memoryview) -> bytes:
    """Plain BLAKE3-256, for pack names and cache keys."""
    return blake3.blake3(data).digest()


def short(oid: bytes) -> str:
    """A short hex form of an id for messages (12 hex digits)."""
    return oid.hex()[:12]
