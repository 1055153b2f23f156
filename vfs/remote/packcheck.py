"""Checking a whole pack's bytes before they cross to or from a remote.

Owns: `check_pack_bytes`. Never imports: daemon, trio, pyfuse3. Callable from any thread.

Pack names are unique, not content hashes, so a whole pack is checked by its own structure:
header magic, trailer and footer (magic, CRC) and the CRC-32 of every record's payload. That is
what catches a flipped bit on a disk or in transit at memory speed; every object is still checked
against its BLAKE3 id whenever it is read.
"""

from __future__ import annotations

import zlib

from vfs.errors import CorruptData
from vfs.pack import PACK_MAGIC, REC_HEADER, Record, parse_footer


def check_pack_bytes(data: bytes, what: str) -> list[Record]:
    """The pack's records if `data` is an intact pack; CorruptData naming `what` if not."""
    records = parse_footer(data, len(data)) if data[:8] == PACK_MAGIC else None
    if records is None:
        raise CorruptData(f"{what} is damaged (bad header, trailer or footer)")
    view = memoryview(data)
    for rec in records:
        if zlib.crc32(view[rec.offset + REC_HEADER.size:rec.end]) != rec.crc:
            raise CorruptData(f"{what} is damaged (the record at byte {rec.offset:,} fails its "
                              "checksum)", rec.oid)
    return records
