"""The FUSE wire layer in-process: requests as the kernel encodes them (include/uapi/linux/
fuse.h) written into `Session._dispatch`, replies read back from a pipe standing in for
/dev/fuse's write side. Real mounts test the kernel's side (tests/mount)."""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Iterator, Sequence

import pytest

from daemon.fuse import (
    Config,
    EntryAttributes,
    FUSEError,
    ReaddirToken,
    Session,
    proto,
    readdir_reply,
)
from daemon.fuse.proto import Op


class Handlers:
    def __init__(self) -> None:
        self.forgotten: list[tuple[int, int]] = []

    def describe(self, op: str, args: Sequence[object]) -> str:
        return op

    def forget(self, inodes: Sequence[tuple[int, int]]) -> None:
        self.forgotten.extend(inodes)
        raise FUSEError(5)

    def lookup(self, parent: int, name: bytes, ctx: object) -> EntryAttributes:
        return EntryAttributes(st_ino=7, st_mode=0o100644, st_size=len(name),
                               entry_timeout=1.5, attr_timeout=2.0)

    def readdir(self, ino: int, fh: int, start: int, token: ReaddirToken) -> None:
        for i in range(start, 5000):
            if not readdir_reply(token, b"n%d" % i, EntryAttributes(st_ino=i + 10,
                                                                    st_mode=0o100644), i + 1):
                return


@pytest.fixture
def wire() -> Iterator[tuple[Session, int, Handlers]]:
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)  # a whole reply fits: nobody reads meanwhile
    os.set_blocking(r, False)
    handlers = Handlers()
    yield Session(w, handlers, Config(), "test"), r, handlers
    os.close(r)
    os.close(w)


def request(op: Op, nodeid: int, body: bytes, unique: int = 42) -> memoryview:
    header = proto.IN_HEADER.pack(proto.IN_HEADER.size + len(body), op, unique, nodeid,
                                  0, 0, 1234, 0, 0)
    return memoryview(header + body)


def replies(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


def test_forget_is_never_answered_even_when_its_handler_fails(
        wire: tuple[Session, int, Handlers]) -> None:
    session, r, handlers = wire
    session._dispatch(request(Op.FORGET, 9, proto.FORGET_IN.pack(3)))
    body = proto.BATCH_FORGET_IN.pack(2, 0) + proto.FORGET_ONE.pack(11, 1) + \
        proto.FORGET_ONE.pack(12, 4)
    session._dispatch(request(Op.BATCH_FORGET, 0, body))
    assert handlers.forgotten == [(9, 3), (11, 1), (12, 4)]
    assert replies(r) == b""  # an answer to FORGET would be refused by the kernel


def test_lookup_reply_is_an_entry_out(wire: tuple[Session, int, Handlers]) -> None:
    session, r, _ = wire
    session._dispatch(request(Op.LOOKUP, 1, b"name\0", unique=77))
    out = replies(r)
    length, error, unique = proto.OUT_HEADER.unpack_from(out)
    assert (length, error, unique) == (len(out), 0, 77) and length == 16 + 128
    nodeid, _, entry_s, attr_s, entry_ns, attr_ns, ino, size = struct.unpack_from(
        "<QQQQIIQQ", out, 16)
    assert (nodeid, entry_s, entry_ns, attr_s, attr_ns) == (7, 1, 500_000_000, 2, 0)
    assert (ino, size) == (7, 4)


def test_a_listing_of_thousands_of_entries_is_one_message(
        wire: tuple[Session, int, Handlers]) -> None:
    session, r, _ = wire
    body = proto.READ_IN.pack(0, 0, 128 * 1024, 0, 0, 0, 0)
    session._dispatch(request(Op.READDIR, 5, body))
    out = replies(r)
    length, error, _ = proto.OUT_HEADER.unpack_from(out)
    assert error == 0 and length == len(out) and 100_000 < length <= 16 + 128 * 1024
    count = 0
    pos = 16
    while pos < length:  # dirents: ino, next offset, name length, type, name padded to 8
        ino, nxt, namelen, _ = proto.DIRENT.unpack_from(out, pos)
        assert ino == count + 10
        assert out[pos + 24:pos + 24 + namelen] == b"n%d" % count and nxt == count + 1
        pos += (24 + namelen + 7) // 8 * 8
        count += 1
    assert count > 1024  # more pieces than one writev takes


def test_an_unknown_request_is_enosys(wire: tuple[Session, int, Handlers]) -> None:
    session, r, _ = wire
    session._dispatch(request(Op.OPEN, 3, proto.OPEN_IN.pack(os.O_RDONLY, 0)))
    _, error, _ = proto.OUT_HEADER.unpack_from(replies(r))
    assert error == -38  # ENOSYS: the kernel stops sending OPEN on this connection
