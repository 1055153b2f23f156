"""The LMDB environment of a store: opening it and handing out transactions.

Owns: the one `lmdb.Environment` of a process's store, its settings and the translation of LMDB
errors (map full, disk full) into domain errors. The layout of keys and values lives in
`vfs.schema`. Never imports: daemon, trio, pyfuse3.

Threads: read transactions may be used from any thread (the environment is opened without
thread-local storage). A write transaction must begin, run and commit in one thread.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb

from vfs import schema
from vfs.errors import NewerFormat, NoSpace, NotAStore

MAP_SIZE = 1 << 40  # address space only; the file grows as data is written


class Index:
    """The store's LMDB environment with its named databases."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        if not create and not (path / "data.mdb").exists():
            raise NotAStore(f"{path.parent} has no index ({path} missing): "
                            "run `dsfs verify --repair` or check --store")
        try:
            self.env = lmdb.open(
                str(path), map_size=MAP_SIZE, max_dbs=len(schema.DATABASES) + 4, subdir=True,
                readahead=False, max_readers=1024, create=create,
                lock=True, max_spare_txns=4)
        except lmdb.Error as exc:
            raise translate(exc, path) from None
        self._check_length()
        self.clear_stale_readers()
        self.dbs: dict[str, Any] = {}
        try:
            with self.env.begin(write=True) as txn:
                for name in schema.DATABASES:
                    self.dbs[name] = self.env.open_db(name.encode(), txn=txn, create=True)
        except lmdb.Error as exc:
            raise translate(exc, path) from None
        if create:
            self._init_meta()
        self._check_format()

    def _check_length(self) -> None:
        """A data file shorter than the pages LMDB's meta page counts would kill the process
        with SIGBUS on the first read past its end (the file is mapped): refuse it now."""
        used = (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]
        have = (self.path / "data.mdb").stat().st_size
        if have < used:
            self.env.close()
            raise NotAStore(f"the index at {self.path} is damaged (cut short: {have:,} of "
                            f"{used:,} bytes): run `dsfs verify --repair`")

    def _init_meta(self) -> None:
        with self.write() as txn:
            meta = self.dbs["meta"]
            if txn.get(schema.META_FORMAT, db=meta) is None:
                txn.put(schema.META_FORMAT, schema.enc_u32(schema.INDEX_FORMAT), db=meta)
                txn.put(schema.META_NEXT_VERSION, schema.enc_u32(1), db=meta)

    def _check_format(self) -> None:
        with self.read() as txn:
            raw = txn.get(schema.META_FORMAT, db=self.dbs["meta"])
        if raw is None:
            raise NotAStore(f"index at {self.path} is incomplete: run `dsfs verify --repair`")
        fmt = schema.dec_u32(raw)
        if fmt > schema.INDEX_FORMAT:
            raise NewerFormat(f"index format {fmt} is newer than this dsfs: upgrade dsfs")

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A read-only snapshot; cheap, use one per operation. LMDB's errors (a damaged page,
        say) leave as domain errors that name the fix."""
        try:
            with self.env.begin(buffers=False) as txn:
                yield txn
        except lmdb.Error as exc:
            raise translate(exc, self.path) from None

    @contextmanager
    def write(self) -> Iterator[Any]:
        """A write transaction: committed on normal exit, aborted on an exception."""
        try:
            with self.env.begin(write=True) as txn:
                yield txn
        except lmdb.Error as exc:
            raise translate(exc, self.path) from None

    def clear_stale_readers(self) -> int:
        """Free the reader slots of processes that died in a read transaction (kill -9): a
        stale slot pins old pages, so the index could only grow. Returns how many were freed.
        Run at open and periodically by long-lived processes (the mount)."""
        try:
            return int(self.env.reader_check())
        except lmdb.Error as exc:
            raise translate(exc, self.path) from None

    def close(self) -> None:
        self.env.close()


def translate(exc: lmdb.Error, path: Path) -> Exception:
    if isinstance(exc, lmdb.MapFullError):
        return NoSpace(f"the index at {path} is full: run `dsfs gc`")
    code = getattr(exc, "errno", None) or (exc.args[0] if exc.args and
                                           isinstance(exc.args[0], int) else None)
    text = str(exc)
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text:
        return NoSpace(f"no space left on the device holding {path}: free space and retry "
                       "(what was already committed is intact)")
    if isinstance(exc, lmdb.ReadonlyError) or "Permission denied" in text:
        return NotAStore(f"cannot open the index at {path}: permission denied")
    if isinstance(exc, lmdb.InvalidError | lmdb.CorruptedError | lmdb.VersionMismatchError):
        return NotAStore(f"the index at {path} is damaged ({text}): run `dsfs verify --repair`")
    return exc
