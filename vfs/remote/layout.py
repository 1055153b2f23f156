"""What a remote holds, key by key, and how its own records are encoded.

Owns: every key name on a remote and the encoding of the records dsfs writes there.
Never imports: daemon, trio, pyfuse3.

==============================  ===========================================================
key                             object
==============================  ===========================================================
dsfs-remote                     JSON: magic "dsfs-remote", format, remote_id, and the
                                settings a clone adopts (chunking, zstd level, pack size).
                                Written once, by the first push (conditional create).
packs/<2 hex>/<name>            a pack, byte for byte as in a store (`vfs.pack`); its name is
                                unique and packs never change, so pushing it twice is harmless.
versions/<10 digits>            the claim of a version number: the version's record and the
                                packs that hold the objects it added. Created only with
                                If-None-Match: * (one writer wins a number); never rewritten.
events/<20 digits>-<16 hex>     a tag, untag or drop (`vfs.model.RefEvent`), named by time.
trash/<name>                    `dsfs gc --remote` found pack <name> unreferenced (empty body;
                                its time is the object's). A later gc deletes the pack if it
                                is still unreferenced and the mark is older than the grace
                                period; a push that needs the pack again deletes the mark.
==============================  ===========================================================

A push writes packs first and the claim last, so a remote never shows a version whose data
is not all there; an interrupted push leaves only packs no claim names (gc --remote removes
them after its grace period). Every record ends with the BLAKE3-256 of its body: a damaged
record is named and refused, never used.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import blake3
import msgpack

from vfs.config import ChunkParams, StoreConfig
from vfs.errors import CorruptData
from vfs.model import RefEvent, Version

REMOTE_CONFIG = "dsfs-remote"
REMOTE_MAGIC = "dsfs-remote"
REMOTE_FORMAT = 1
PACKS = "packs/"
VERSIONS = "versions/"
EVENTS = "events/"
TRASH = "trash/"
_DIGEST = 32


def pack_key(name: str) -> str:
    return f"{PACKS}{name[:2]}/{name}"


def pack_name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def trash_key(name: str) -> str:
    return f"{TRASH}{name}"


def version_key(number: int) -> str:
    return f"{VERSIONS}{number:010d}"


def version_number(key: str) -> int | None:
    tail = key[len(VERSIONS):]
    return int(tail) if key.startswith(VERSIONS) and tail.isdigit() and len(tail) == 10 else None


def event_key(event: RefEvent) -> str:
    return f"{EVENTS}{event.time_ns:020d}-{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    remote_id: str
    chunk: ChunkParams
    zstd_level: int
    pack_target_size: int
    format: int = REMOTE_FORMAT

    @classmethod
    def from_store(cls, config: StoreConfig) -> RemoteConfig:
        return cls(secrets.token_hex(16), config.chunk, config.zstd_level,
                   config.pack_target_size)

    def encode(self) -> bytes:
        return (json.dumps({"magic": REMOTE_MAGIC, "format": self.format,
                            "remote_id": self.remote_id,
                            "chunk": {"avg_size": self.chunk.avg_size,
                                      "min_size": self.chunk.min_size,
                                      "max_size": self.chunk.max_size},
                            "zstd_level": self.zstd_level,
                            "pack_target_size": self.pack_target_size},
                           indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def decode(cls, raw: bytes, url: str) -> RemoteConfig:
        try:
            data = json.loads(raw)
            if data.get("magic") != REMOTE_MAGIC:
                raise ValueError("bad magic")
            return cls(str(data["remote_id"]), ChunkParams(**data["chunk"]),
                       int(data["zstd_level"]), int(data["pack_target_size"]),
                       int(data["format"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptData(f"remote {url}: {REMOTE_CONFIG} is damaged or not a dsfs "
                              f"remote's ({exc})") from None


def seal(obj: Any) -> bytes:
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return body + blake3.blake3(body).digest()


def unseal(raw: bytes, what: str) -> Any:
    body, digest = raw[:-_DIGEST], raw[-_DIGEST:]
    if len(raw) <= _DIGEST or blake3.blake3(body).digest() != digest:
        raise CorruptData(f"{what} is damaged (it fails its BLAKE3 check): it was not used")
    try:
        return msgpack.unpackb(body, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptData(f"{what} is damaged ({exc}): it was not used") from None


@dataclass(frozen=True, slots=True)
class Claim:
    """The record that gives a version its number on a remote."""

    version: Version
    packs: tuple[str, ...]
    """Packs pushed with this version (its new objects are in them or in earlier versions')."""
    store_id: str
    """The store that pushed it (so that store knows the number is its own version)."""
    pushed_ns: int

    def encode(self) -> bytes:
        return seal({"version": self.version.to_record(), "packs": list(self.packs),
                     "store": self.store_id, "pushed_ns": self.pushed_ns})

    @classmethod
    def decode(cls, raw: bytes, what: str) -> Claim:
        data = unseal(raw, what)
        try:
            return cls(Version.from_record(data["version"]), tuple(map(str, data["packs"])),
                       str(data["store"]), int(data["pushed_ns"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptData(f"{what} is damaged ({exc}): it was not used") from None


def encode_event(event: RefEvent) -> bytes:
    return seal(event.to_record())


def decode_event(raw: bytes, what: str) -> RefEvent:
    data = unseal(raw, what)
    try:
        return RefEvent.from_record(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptData(f"{what} is damaged ({exc}): it was not used") from None


def same_version(a: Version, b: Version) -> bool:
    """Whether two records describe the same version (a renumbered one keeps everything but
    its number and parent)."""
    return a.identity == b.identity
