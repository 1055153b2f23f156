"""The records of a pack on a remote, from its footer, without downloading the pack.

Owns: reading a remote pack's footer with ranged GETs. The format and its checks are
`vfs.pack`'s (`parse_footer`, the same code that reads a local pack's footer). Never imports:
daemon, trio, pyfuse3. Callable from any thread (the backend is thread-safe).
"""

from __future__ import annotations

from vfs.errors import CorruptData
from vfs.pack import PACK_HEADER, TRAILER, Record, footer_length, parse_footer
from vfs.remote.backend import Backend

TAIL = 256 << 10
"""Bytes read from a pack's end in the first GET: the footer of a pack of a few thousand
records fits (about 60 bytes a record), so one GET is the rule."""


def read_remote_footer(backend: Backend, key: str, size: int, tail: int = TAIL) -> list[Record]:
    """The records of the pack stored under `key` (`size` bytes, as listed on the remote).

    One ranged GET of the last `tail` bytes; a second one only if the footer is longer.
    CorruptData when the trailer or the footer fails its checks (magic, CRC, rows that point
    outside the pack): such a pack is not registered. RemoteKeyMissing if it is not there.
    """
    what = f"pack {key.rsplit('/', 1)[-1][:12]} on {backend.url}"
    if size < PACK_HEADER.size + TRAILER.size:
        raise CorruptData(f"{what} is too short ({size} bytes) to be a pack: it was not used")
    start = max(0, size - tail)
    data = backend.get(key, start, size - start)
    if len(data) != size - start:
        raise CorruptData(f"{what} is {start + len(data):,} bytes, not the {size:,} listed: "
                          "it was not used")
    flen = footer_length(data[-TRAILER.size:], size)
    if flen is None:
        raise CorruptData(f"{what} has a damaged trailer: it was not used")
    need = flen + TRAILER.size
    if need > len(data):
        more = backend.get(key, size - need, need - len(data))
        if len(more) != need - len(data):
            raise CorruptData(f"{what} changed while it was read: it was not used")
        data = more + data
    records = parse_footer(data, size)
    if records is None:
        raise CorruptData(f"{what} has a damaged footer (it fails its checksum): "
                          "it was not used")
    return records


__all__ = ["TAIL", "read_remote_footer"]
