"""Pack files: immutable containers of self-describing, checksummed object records.

Owns: the on-disk pack format, writing packs crash-safely and reading records back.
Never imports: daemon, trio, pyfuse3. Writers are used by one thread at a time; the reader is
thread-safe (pread on cached descriptors).

Format (all integers little-endian)::

    header   b"DSFSPACK" u16 format(=1) u16 0 u32 0                       (16 bytes)
    record*  b"DSR1" u8 type u8 codec u16 0 id[32] u32 plain_len u32 stored_len
             u32 crc32(payload) payload[stored_len]                      (52 + stored_len)
    footer   msgpack [[id, type, codec, offset, plain_len, stored_len, crc], ...]
    trailer  u32 footer_len u32 crc32(footer) b"DSFSEND1"                 (16 bytes)

A pack is written under `packs/tmp/`, fsynced, renamed to `packs/<2 hex>/<name>` and the directory
fsynced; only then is it recorded in the index. Every record carries enough to be found and checked
by a sequential scan even if the footer is lost, so the index can be rebuilt from packs alone.
"""

from __future__ import annotations

import errno
import os
import secrets
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgpack
import zstandard

from vfs.errors import CorruptData, ObjectMissing, StoreWriteError
from vfs.fsutil import fsync_dir, no_space
from vfs.ids import ObjectId, ObjType, PackName, hash_object, short
from vfs.readahead import ReadAhead

PACK_MAGIC = b"DSFSPACK"
PACK_HEADER = struct.Struct("<8sHHI")
REC_MAGIC = b"DSR1"
REC_HEADER = struct.Struct("<4sBBH32sIII")
TRAILER = struct.Struct("<II8s")
END_MAGIC = b"DSFSEND1"
PACK_FORMAT = 1

CODEC_RAW = 0
CODEC_ZSTD = 1

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cctx: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "cctx", None)
    if cctx is None:
        cctx = _local.cctx = {}
    if level not in cctx:
        cctx[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cctx[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


PROBE = 8 * 1024


def encode_payload(data: bytes | memoryview, level: int) -> tuple[int, bytes | memoryview]:
    """Compress `data` with zstd; keep it raw when compression saves less than 2%.

    Chunks over 16 KiB are probed first: if their first 8 KiB do not shrink by 3% at level 1
    (JPEG, video, encrypted or already compressed shards), the chunk is stored raw without
    paying for a full compression pass. This halves the CPU cost of importing image datasets.
    """
    if len(data) < 64:
        return CODEC_RAW, bytes(data)
    if len(data) > 2 * PROBE:
        probe = _compressor(1).compress(data[:PROBE])
        if len(probe) > PROBE * 0.97:
            return CODEC_RAW, data  # no copy: the caller's buffer lives until it is written
    packed = _compressor(level).compress(data)
    if len(packed) > len(data) * 0.98:
        return CODEC_RAW, bytes(data)
    return CODEC_ZSTD, packed


def decode_payload(codec: int, stored: bytes | memoryview, plain_len: int) -> bytes:
    if codec == CODEC_RAW:
        return bytes(stored)
    if codec == CODEC_ZSTD:
        return _decompressor().decompress(stored, max_output_size=plain_len)
    raise ValueError(f"unknown codec {codec}")


@dataclass(frozen=True, slots=True)
class Record:
    """Where one object sits in a pack and how to check it."""

    oid: ObjectId
    kind: ObjType
    codec: int
    offset: int
    plain_len: int
    stored_len: int
    crc: int

    @property
    def end(self) -> int:
        return self.offset + REC_HEADER.size + self.stored_len


@dataclass(frozen=True, slots=True)
class SealedPack:
    name: PackName
    size: int
    records: list[Record]


def pack_path(packs_dir: Path, name: str) -> Path:
    return packs_dir / name[:2] / name


class PackWriter:
    """Appends records to a new pack under `packs/tmp`; `seal` makes it durable and visible."""

    def __init__(self, packs_dir: Path) -> None:
        self.packs_dir = packs_dir
        self.name = PackName(secrets.token_hex(16))
        tmp_dir = packs_dir / "tmp"
        self.tmp_path = tmp_dir / f"{self.name}.tmp"
        self.records: list[Record] = []
        self.size = 0
        try:
            self._file = open(self.tmp_path, "xb", buffering=1 << 20)  # noqa: SIM115
            self._write(PACK_HEADER.pack(PACK_MAGIC, PACK_FORMAT, 0, 0))
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.abort()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise no_space(self.packs_dir) from None
        raise StoreWriteError(f"writing pack {self.name[:12]} in {self.packs_dir} failed: "
                              f"{exc.strerror or exc}") from None

    def _write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self.size += len(data)

    def add(self, oid: ObjectId, kind: ObjType, codec: int, plain_len: int,
            payload: bytes | memoryview, crc: int | None = None) -> Record:
        """Append one record (`crc` of the payload if the caller computed it already)."""
        if crc is None:
            crc = zlib.crc32(payload)
        rec = Record(oid, kind, codec, self.size, plain_len, len(payload), crc)
        try:
            self._write(REC_HEADER.pack(REC_MAGIC, int(kind), codec, 0, oid, plain_len,
                                        len(payload), crc))
            self._write(payload)
        except OSError as exc:
            self._fail(exc)
        self.records.append(rec)
        return rec

    def seal(self) -> SealedPack:
        """Write the footer, fsync, rename into place and fsync the directory."""
        footer = msgpack.packb(
            [[r.oid, int(r.kind), r.codec, r.offset, r.plain_len, r.stored_len, r.crc]
             for r in self.records], use_bin_type=True)
        final = pack_path(self.packs_dir, self.name)
        try:
            self._write(footer)
            self._write(TRAILER.pack(len(footer), zlib.crc32(footer), END_MAGIC))
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            made_dir = not final.parent.exists()
            final.parent.mkdir(exist_ok=True)
            os.rename(self.tmp_path, final)
            fsync_dir(final.parent)
            if made_dir:
                fsync_dir(self.packs_dir)
        except OSError as exc:
            self._fail(exc)
        return SealedPack(self.name, self.size, self.records)

    def abort(self) -> None:
        try:
            if not self._file.closed:
                self._file.close()
        except (OSError, AttributeError):
            pass
        self.tmp_path.unlink(missing_ok=True)


def check_record(rec_bytes: bytes | memoryview, expect: ObjectId, kind: ObjType,
                 plain_len: int) -> bytes:
    """Validate a record read from disk and return its plain bytes, or raise CorruptData."""
    if len(rec_bytes) < REC_HEADER.size:
        raise CorruptData(f"object {short(expect)} is truncated", expect)
    payload = memoryview(rec_bytes)[REC_HEADER.size:]
    return check_parts(bytes(rec_bytes[:REC_HEADER.size]), payload, expect, kind, plain_len,
                       check_crc=True)


def check_parts(header: bytes, payload: bytes | memoryview, expect: ObjectId, kind: ObjType,
                plain_len: int, *, check_crc: bool) -> bytes:
    """Validate a record given as header and payload; return the plain bytes.

    The BLAKE3 id check is what guarantees the bytes; the CRC is a cheaper early check that the
    read path skips (it would cost a third pass over every chunk served).
    """
    magic, rkind, codec, _, oid, rplain, stored_len, crc = REC_HEADER.unpack_from(header)
    if (magic != REC_MAGIC or oid != expect or rkind != kind or rplain != plain_len
            or len(payload) != stored_len):
        raise CorruptData(f"object {short(expect)} has a damaged record header", expect)
    if check_crc and zlib.crc32(payload) != crc:
        raise CorruptData(f"object {short(expect)} fails its checksum", expect)
    try:
        if codec == CODEC_RAW and isinstance(payload, bytes):
            plain = payload  # read straight into its own buffer: no copy
        else:
            plain = decode_payload(codec, payload, plain_len)
    except (zstandard.ZstdError, ValueError):
        raise CorruptData(f"object {short(expect)} cannot be decompressed", expect) from None
    if len(plain) != plain_len or hash_object(kind, plain) != expect:
        raise CorruptData(f"object {short(expect)} fails its hash check", expect)
    return plain


class RemoteReads(Protocol):
    """Where `PackReader.read` finds a record whose pack is not on the local disk (a clone's
    packs stay on its remote: `vfs.remote.lazy.RemotePacks`)."""

    def read(self, name: str, offset: int, oid: ObjectId, kind: ObjType, plain_len: int,
             stored_len: int) -> bytes:
        """The verified plain bytes of the record, like `PackReader.read`; ObjectMissing when
        the remote does not have the pack either."""
        ...


class PackReader:
    """Reads records from packs with a small LRU of open descriptors. Thread-safe.

    A descriptor is closed (on eviction or `forget`) only when no read is using it, so a number
    can never be reused for another pack while a thread is about to pread from it. A record of
    a pack not on the local disk is read through `remote` when there is one.
    """

    def __init__(self, packs_dir: Path, max_open: int = 64,
                 readahead: ReadAhead | None = None, remote: RemoteReads | None = None) -> None:
        self.packs_dir = packs_dir
        self.remote = remote
        self.max_open = max_open
        self.readahead = readahead if readahead is not None else ReadAhead(window=0)
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._users: dict[int, int] = {}
        self._doomed: set[int] = set()
        self._lock = threading.Lock()

    def _acquire(self, name: str) -> int:
        with self._lock:
            fd = self._fds.get(name)
            if fd is not None:
                self._fds.move_to_end(name)
                self._users[fd] = self._users.get(fd, 0) + 1
                return fd
        new = os.open(pack_path(self.packs_dir, name), os.O_RDONLY | os.O_CLOEXEC)
        with self._lock:
            fd = self._fds.get(name)
            if fd is None:
                fd = self._fds[name] = new
            else:
                os.close(new)  # another thread opened it meanwhile
            self._users[fd] = self._users.get(fd, 0) + 1
            while len(self._fds) > self.max_open:
                _, old = self._fds.popitem(last=False)
                self._close_when_unused(old)
        return fd

    def _release(self, fd: int) -> None:
        with self._lock:
            self._users[fd] -= 1
            if self._users[fd] == 0:
                del self._users[fd]
                if fd in self._doomed:
                    self._doomed.discard(fd)
                    os.close(fd)

    def _close_when_unused(self, fd: int) -> None:
        """Called with the lock held."""
        if self._users.get(fd):
            self._doomed.add(fd)
        else:
            os.close(fd)

    def forget(self, name: str) -> None:
        """Close the descriptor of a pack (after gc replaced it)."""
        with self._lock:
            fd = self._fds.pop(name, None)
            if fd is not None:
                self._close_when_unused(fd)
        self.readahead.forget(name)

    def close_deleted(self) -> list[str]:
        """Close the descriptors of packs deleted from disk (by gc): their space comes back
        once no read uses them. Returns their names."""
        with self._lock:
            gone = [name for name, fd in self._fds.items() if os.fstat(fd).st_nlink == 0]
            for name in gone:
                self._close_when_unused(self._fds.pop(name))
        for name in gone:
            self.readahead.forget(name)
        return gone

    def read_raw(self, name: str, offset: int, length: int) -> bytes:
        return self.read_parts(name, [(offset, length)])[0]

    def read_parts(self, name: str, parts: list[tuple[int, int]]) -> list[bytes]:
        """pread each (offset, length) from one pack, holding its descriptor throughout."""
        try:
            fd = self._acquire(name)
        except FileNotFoundError:
            raise ObjectMissing(f"pack {name[:12]} is missing", b"") from None
        try:
            return [os.pread(fd, length, offset) for offset, length in parts]
        finally:
            self._release(fd)

    def read(self, name: str, offset: int, oid: ObjectId, kind: ObjType, plain_len: int,
             stored_len: int, *, readahead: bool = False) -> bytes:
        """The verified plain bytes of the record at `offset` (CorruptData names the object).

        `readahead`: when this pack is being read sequentially, the kernel is asked to read the
        next few MiB of it in the background (`vfs.readahead`).
        """
        if readahead and self.readahead.window:
            ahead = self.readahead.hint(name, offset, REC_HEADER.size + stored_len)
            if ahead is not None:
                self._advise(name, *ahead)
        try:
            header, payload = self.read_parts(
                name, [(offset, REC_HEADER.size), (offset + REC_HEADER.size, stored_len)])
        except ObjectMissing:
            if self.remote is None:
                raise
            return self.remote.read(name, offset, oid, kind, plain_len, stored_len)
        try:
            if len(header) < REC_HEADER.size:
                raise CorruptData(f"object {short(oid)} is truncated", oid)
            return check_parts(header, payload, oid, kind, plain_len, check_crc=False)
        except CorruptData as exc:
            raise CorruptData(f"{exc} (pack {name[:12]} offset {offset})", oid) from None

    def _advise(self, name: str, start: int, length: int) -> None:
        """Ask the kernel to read [start, start + length) of a pack in the background."""
        try:
            fd = self._acquire(name)
        except OSError:
            return  # the read that follows reports it
        try:
            os.posix_fadvise(fd, start, length, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            self._release(fd)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                self._close_when_unused(fd)
            self._fds.clear()
        self.readahead.clear()


def scan_pack(path: Path) -> tuple[list[Record], list[str]]:
    """Return the records of a pack and a list of problems found reading its structure.

    Uses the footer when it is intact; otherwise walks the records from the start.
    """
    problems: list[str] = []
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < PACK_HEADER.size or data[:8] != PACK_MAGIC:
        return [], ["bad pack header"]
    if len(data) >= PACK_HEADER.size + TRAILER.size:
        flen = footer_length(data[-TRAILER.size:], len(data))
        if flen is not None:
            records = parse_footer(data[len(data) - TRAILER.size - flen:], len(data))
            if records is not None:
                return records, problems
        problems.append("pack footer damaged; scanned records sequentially")
    return list(_walk_records(data)), problems


def footer_length(trailer: bytes, pack_size: int) -> int | None:
    """The footer's length from a pack's last TRAILER.size bytes, or None when the trailer is
    damaged or names a footer that cannot fit in a pack of `pack_size` bytes."""
    if len(trailer) != TRAILER.size:
        return None
    flen, _, end = TRAILER.unpack(trailer)
    if end != END_MAGIC or pack_size - TRAILER.size - flen < PACK_HEADER.size:
        return None
    return int(flen)


def parse_footer(tail: bytes, pack_size: int) -> list[Record] | None:
    """The records listed by a pack's footer, given the pack's last bytes (footer and trailer,
    anything before them is ignored), or None when the trailer or the footer is damaged (bad
    magic, CRC, or rows that do not decode or point outside the pack)."""
    flen = footer_length(tail[-TRAILER.size:], pack_size)
    if flen is None or len(tail) < TRAILER.size + flen:
        return None
    _, fcrc, _ = TRAILER.unpack_from(tail, len(tail) - TRAILER.size)
    footer = tail[len(tail) - TRAILER.size - flen:len(tail) - TRAILER.size]
    if zlib.crc32(footer) != fcrc:
        return None
    try:
        rows = msgpack.unpackb(footer, raw=False)
        records = [Record(ObjectId(bytes(r[0])), ObjType(r[1]), int(r[2]), int(r[3]),
                          int(r[4]), int(r[5]), int(r[6])) for r in rows]
    except (ValueError, TypeError, IndexError, KeyError, msgpack.UnpackException):
        return None
    limit = pack_size - TRAILER.size - flen
    if any(r.offset < PACK_HEADER.size or r.end > limit for r in records):
        return None
    return records


def _walk_records(data: bytes) -> Iterator[Record]:
    pos = PACK_HEADER.size
    while pos + REC_HEADER.size <= len(data):
        magic, kind, codec, _, oid, plain_len, stored_len, crc = REC_HEADER.unpack_from(data, pos)
        if magic != REC_MAGIC or kind not in ObjType._value2member_map_:
            return
        if pos + REC_HEADER.size + stored_len > len(data):
            return
        yield Record(ObjectId(bytes(oid)), ObjType(kind), codec, pos, plain_len, stored_len, crc)
        pos += REC_HEADER.size + stored_len


__all__ = ["CODEC_RAW", "CODEC_ZSTD", "PackReader", "PackWriter", "Record", "RemoteReads",
           "SealedPack", "check_record", "encode_payload", "footer_length", "pack_path",
           "parse_footer", "scan_pack"]
