"""The persistent state of @head: nodes changed against the base version, and their names.

Owns: the SQLite database `STORE/head/head.db` (schema below) and every query on it. Nothing
else in dsfs speaks SQL. Never imports: daemon, trio, pyfuse3.

Why SQLite and not the store's LMDB: @head changes on every create, write that extends a file,
chmod, rename... and each change must survive kill -9 as soon as the call returns, and the state
must stay consistent after a power loss. LMDB offers either a full fsync per transaction (374 us
per one-row transaction measured here) or MDB_NOSYNC, which can corrupt the database on power
loss. SQLite in WAL mode with synchronous=NORMAL appends each transaction to its log without an
fsync (46 us measured), survives a process crash with everything committed, and after a power
loss rolls back to a consistent earlier state; `sync()` makes everything durable (fsync).

Model. @head is its base version plus this overlay. Only nodes that were touched are stored:
`nodes` holds their attributes (files keep their base content reference; written bytes live in
overlay files, see vfs.head.overlay), `dirents` the names that differ from, or were pinned over,
the base tree of a stored directory (ino 0 marks a name deleted from the base). Everything not
stored is read from the base version. `dirty` marks what differs from the base: a dirty dirent
is a changed name, a dirty directory has a changed name somewhere below it, so status and commit
visit only changed paths.

==========  =================================================================================
table       columns
==========  =================================================================================
meta        key TEXT, value: base (version number), next_ino, pending (commit token), plan,
            running (1 while a session is open), synced_from_ns (start of the last sync),
            discard (msgpack list of overlays a commit has yet to discard)
nodes       ino, kind, mode, uid, gid, mtime_ns, ctime_ns, size, nlink, base, base_size,
            base_len, xattrs (msgpack), link (base hard-link group), dirty, origin (base path),
            sum, rdev (device nodes), atime_ns (NULL: as mtime; rows of layout 2)
dirents     parent, name, ino (0 = deleted), dirty
links       link (base hard-link group id) -> ino
plan        ino -> new base (NULL: unchanged), base_size, origin (its path in the new
            version): results of a commit, applied once its version exists
==========  =================================================================================
"""

from __future__ import annotations

import errno
import os
import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vfs import schema
from vfs.errors import CorruptData, NewerFormat, StoreWriteError
from vfs.fsutil import fsync_dir, no_space
from vfs.lockorder import OrderedLock, Rank
from vfs.model import Kind, Xattrs

HEAD_ROOT = 1
WHITEOUT = 0
CHECKPOINT_BYTES = 16 << 20
"""A periodic sync folds the write-ahead log into the database once it is this big."""
SCHEMA_VERSION = 3
"""Layout 3 added nodes.rdev and nodes.atime_ns; a layout-2 database is migrated in place (the
two columns are added with their defaults, and a row's checksum covers them only when they are
not the defaults, so every existing row stays valid as it is)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes(
    ino INTEGER PRIMARY KEY, kind INTEGER NOT NULL, mode INTEGER NOT NULL,
    uid INTEGER NOT NULL, gid INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL, size INTEGER NOT NULL, nlink INTEGER NOT NULL,
    base BLOB NOT NULL, base_size INTEGER NOT NULL, base_len INTEGER NOT NULL,
    xattrs BLOB, link INTEGER NOT NULL, dirty INTEGER NOT NULL, origin BLOB,
    sum INTEGER NOT NULL, rdev INTEGER NOT NULL DEFAULT 0, atime_ns INTEGER);
CREATE TABLE IF NOT EXISTS dirents(
    parent INTEGER NOT NULL, name BLOB NOT NULL, ino INTEGER NOT NULL,
    dirty INTEGER NOT NULL, sum INTEGER NOT NULL, PRIMARY KEY(parent, name)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dirents_by_ino ON dirents(ino) WHERE ino != 0;
CREATE TABLE IF NOT EXISTS links(link INTEGER PRIMARY KEY, ino INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS plan(ino INTEGER PRIMARY KEY, base BLOB,
    base_size INTEGER NOT NULL, origin BLOB);
"""


@dataclass(frozen=True, slots=True)
class HNode:
    """A stored node of @head.

    `base` is a file's base ContentRef, a directory's base TreeId (b"" for a directory made in
    @head), a symlink's target. A file's bytes are: overlay data where written, else base bytes
    below `base_len` (lowered by truncation), else zeros.
    """

    ino: int
    kind: Kind
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    size: int
    nlink: int
    base: bytes
    base_size: int
    base_len: int
    xattrs: Xattrs
    link: int
    dirty: bool
    origin: bytes | None
    rdev: int = 0
    atime_ns: int | None = None
    """Last access time; None (a node stored by layout 2) means the same as mtime."""

    def with_(self, **changes: Any) -> HNode:
        return replace(self, **changes)


NODE_COLUMNS = ("ino, kind, mode, uid, gid, mtime_ns, ctime_ns, size, nlink, base, base_size, "
            "base_len, xattrs, link, dirty, origin, sum, rdev, atime_ns")


def node_columns(layout: int) -> str:
    """The SELECT list of a node row for a database of `layout` (read-only readers such as
    verify see a layout-2 database before any open migrated it: rdev 0, no atime)."""
    if layout == 2:
        return NODE_COLUMNS.replace("rdev, atime_ns", "0 AS rdev, NULL AS atime_ns")
    return NODE_COLUMNS


def _row_sum(fields: tuple[Any, ...]) -> int:
    """Checksum of a row (all but its dirty mark): a flipped bit in head.db is caught on read,
    never served (SQLite has no checksums of its own)."""
    return zlib.crc32(schema.enc_msg(list(fields)))


def _check_row(fields: tuple[Any, ...], stored: int, what: str) -> None:
    if _row_sum(tuple(bytes(f) if isinstance(f, memoryview) else f for f in fields)) != stored:
        raise CorruptData(f"@head state is damaged ({what} fails its checksum): run "
                          "`dsfs verify` for details")


def _summed(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The fields of a node row its checksum covers: all but dirty and the sum itself; rdev and
    atime_ns (added by layout 3) only when not their defaults, so layout-2 rows keep their sum."""
    fields = row[:14] + row[15:16]
    rdev, atime = row[17], row[18]
    return (*fields, rdev, atime) if rdev or atime is not None else fields


def row_to_node(row: tuple[Any, ...]) -> HNode:
    (ino, kind, mode, uid, gid, mtime, ctime, size, nlink, base, base_size, base_len, xattrs,
     link, dirty, origin, stored, rdev, atime) = row
    _check_row(_summed(row), stored, f"node {ino}")
    xa: Xattrs = tuple((bytes(k), bytes(v)) for k, v in schema.dec_msg(xattrs)) if xattrs \
        else ()
    return HNode(ino, Kind(kind), mode, uid, gid, mtime, ctime, size, nlink, bytes(base),
                 base_size, base_len, xa, link, bool(dirty),
                 bytes(origin) if origin is not None else None, rdev, atime)


def _node_to_row(n: HNode) -> tuple[Any, ...]:
    xattrs = schema.enc_msg([list(x) for x in n.xattrs]) if n.xattrs else None
    row = (n.ino, int(n.kind), n.mode, n.uid, n.gid, n.mtime_ns, n.ctime_ns, n.size, n.nlink,
           n.base, n.base_size, n.base_len, xattrs, n.link, int(n.dirty), n.origin)
    return (*row, _row_sum(_summed((*row, 0, n.rdev, n.atime_ns))), n.rdev, n.atime_ns)


class HeadDB:
    """One connection to the head database, for the thread that opened it.

    Node rows are cached (write-through): only the process holding the head lock writes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._lock = OrderedLock(Rank.HEAD_DB, "@head database", reentrant=True)
        """Serializes use of the one connection (any thread); see vfs.lockorder for what may
        be taken while it is held. Never held across an fsync."""
        self._log_path = Path(f"{path}-wal")
        self._log_dir_synced = False
        self._cache: dict[int, HNode | None] = {}
        c = self._conn
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        # no automatic checkpoints: they fsync the log, which would make sizes durable before
        # the overlay bytes they describe; `sync` checkpoints after the caller synced those
        c.execute("PRAGMA wal_autocheckpoint=0")
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if version == 2:
            _migrate_from_2(c)
            version = SCHEMA_VERSION
        if version not in (0, SCHEMA_VERSION):
            self._conn.close()
            raise NewerFormat(f"@head state {path} has layout {version}, this dsfs knows "
                              f"{SCHEMA_VERSION}: use the dsfs that wrote it (or move "
                              f"{path.parent} away to start @head over)")
        c.executescript(_SCHEMA)
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._conn.close()

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def txn(self) -> Iterator[None]:
        """One atomic change. Nested uses join the outer transaction."""
        with self._lock:
            if self._conn.in_transaction:
                yield
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    self._cache.clear()
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._cache.clear()
                raise _translate(exc, self.path) from None

    def sync(self, checkpoint: bool = False, synced_from: int | None = None) -> None:
        """Make every committed change durable. Callers sync the overlay files first: data
        before the metadata that describes it; `synced_from` is the time that overlay sync
        started, recorded with it (see vfs.head.unsynced).

        The write-ahead log is fsynced outside the connection's lock, so a sync (every 30 s,
        every fsync() in @head) never makes another thread's query wait for the disk. That is
        what synchronous=FULL would do at this commit, done by hand: SQLite's recovery keeps
        exactly the transactions whose frames are whole in the log. With `checkpoint`, a log
        grown past CHECKPOINT_BYTES is folded into the database file (under the lock: rare);
        `checkpoint()` does it always (a clean stop)."""
        with self.txn():
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES('synced', 1)")
            if synced_from is not None:
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES('synced_from_ns', ?)",
                                   (synced_from,))
        try:
            self._fsync_log()
        except OSError as exc:
            raise _translate_os(exc, self.path) from None
        if checkpoint and self.log_bytes() >= CHECKPOINT_BYTES:
            self.checkpoint()

    def _fsync_log(self) -> None:
        try:
            fd = os.open(self._log_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # no log: everything is in the database file, synced by its checkpoint
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if not self._log_dir_synced:
            fsync_dir(self.path.parent)  # the log's name, once per session
            self._log_dir_synced = True

    def log_bytes(self) -> int:
        try:
            return self._log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def checkpoint(self) -> None:
        """Fold the log into the database file and empty it (after `sync`)."""
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from None

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        with self._lock:
            return self._conn.execute(sql, args).fetchone()

    # -- meta --------------------------------------------------------------------------------

    def meta(self, key: str) -> Any:
        row = self._one("SELECT value FROM meta WHERE key=?", (key,))
        return None if row is None else row[0]

    def set_meta(self, key: str, value: Any) -> None:
        with self.txn():
            if value is None:
                self._conn.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES(?, ?)", (key, value))

    # -- nodes -------------------------------------------------------------------------------

    def node(self, ino: int) -> HNode | None:
        with self._lock:
            if ino in self._cache:
                return self._cache[ino]
            row = self._one(f"SELECT {NODE_COLUMNS} FROM nodes WHERE ino=?", (ino,))
            node = None if row is None else row_to_node(row)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[ino] = node
            return node

    def put_node(self, node: HNode) -> None:
        with self.txn():
            self._conn.execute(f"INSERT OR REPLACE INTO nodes({NODE_COLUMNS}) VALUES "
                               "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", _node_to_row(node))
            self._cache[node.ino] = node

    def delete_node(self, ino: int) -> None:
        with self.txn():
            self._conn.execute("DELETE FROM nodes WHERE ino=?", (ino,))
            self._conn.execute("DELETE FROM links WHERE ino=?", (ino,))
            self._cache[ino] = None

    def dirty_nodes(self) -> list[HNode]:
        rows = self._all(f"SELECT {NODE_COLUMNS} FROM nodes WHERE dirty=1")
        return [row_to_node(r) for r in rows]

    def all_inos(self) -> list[int]:
        return [r[0] for r in self._all("SELECT ino FROM nodes")]

    def orphan_inos(self) -> list[int]:
        """Stored nodes no name points at (unlinked while open when the daemon stopped)."""
        rows = self._all("SELECT ino FROM nodes WHERE ino != ? AND ino NOT IN "
                         "(SELECT ino FROM dirents WHERE ino != 0)", (HEAD_ROOT,))
        return [r[0] for r in rows]

    def next_ino(self) -> int:
        value = self.meta("next_ino")
        return int(value) if value is not None else HEAD_ROOT + 1

    def reserve_ino(self, ino: int) -> None:
        """Make sure no later session hands out `ino` again (called when a node is stored)."""
        if ino >= self.next_ino():
            self.set_meta("next_ino", ino + 1)

    # -- names -------------------------------------------------------------------------------

    def dirent(self, parent: int, name: bytes) -> tuple[int, bool] | None:
        row = self._one("SELECT ino, dirty, sum FROM dirents WHERE parent=? AND name=?",
                        (parent, name))
        if row is None:
            return None
        check_dirent(parent, name, row[0], row[2])
        return row[0], bool(row[1])

    def put_dirent(self, parent: int, name: bytes, ino: int, dirty: bool) -> None:
        with self.txn():
            self._conn.execute("INSERT OR REPLACE INTO dirents VALUES(?,?,?,?,?)",
                               (parent, name, ino, int(dirty), _row_sum((parent, name, ino))))

    def delete_dirent(self, parent: int, name: bytes) -> None:
        with self.txn():
            self._conn.execute("DELETE FROM dirents WHERE parent=? AND name=?", (parent, name))

    def dirents(self, parent: int) -> list[tuple[bytes, int, bool]]:
        """(name, ino, dirty) of a directory's stored names, in byte order of the name."""
        rows = self._all("SELECT name, ino, dirty, sum FROM dirents WHERE parent=? ORDER BY name",
                         (parent,))
        for n, i, _, stored in rows:
            check_dirent(parent, bytes(n), i, stored)
        return [(bytes(n), i, bool(d)) for n, i, d, _ in rows]

    def has_dirents(self, parent: int) -> bool:
        return self._one("SELECT 1 FROM dirents WHERE parent=? LIMIT 1", (parent,)) is not None

    def dirty_dirents(self, parent: int) -> list[tuple[bytes, int]]:
        rows = self._all("SELECT name, ino, sum FROM dirents WHERE parent=? AND dirty=1 "
                         "ORDER BY name", (parent,))
        for n, i, stored in rows:
            check_dirent(parent, bytes(n), i, stored)
        return [(bytes(n), i) for n, i, _ in rows]

    def names_of(self, ino: int) -> list[tuple[int, bytes]]:
        """(parent, name) of every name pointing at a node."""
        rows = self._all("SELECT parent, name, sum FROM dirents WHERE ino=?", (ino,))
        for p, n, stored in rows:
            check_dirent(p, bytes(n), ino, stored)
        return [(p, bytes(n)) for p, n, _ in rows]

    def mark_dirent_dirty(self, parent: int, name: bytes) -> None:
        with self.txn():
            self._conn.execute("UPDATE dirents SET dirty=1 WHERE parent=? AND name=?",
                               (parent, name))

    # -- hard-link groups of the base ----------------------------------------------------------

    def link_ino(self, link: int) -> int | None:
        row = self._one("SELECT ino FROM links WHERE link=?", (link,))
        return None if row is None else int(row[0])

    def put_link(self, link: int, ino: int) -> None:
        with self.txn():
            self._conn.execute("INSERT OR REPLACE INTO links VALUES(?, ?)", (link, ino))

    # -- commit plans and resets -----------------------------------------------------------------

    def put_plan(self, rows: list[tuple[int, bytes | None, int, bytes | None]]) -> None:
        with self.txn():
            self._conn.execute("DELETE FROM plan")
            self._conn.executemany("INSERT INTO plan VALUES(?, ?, ?, ?)", rows)

    def plan(self) -> list[tuple[int, bytes | None, int, bytes | None]]:
        rows = self._all("SELECT ino, base, base_size, origin FROM plan")
        return [(i, None if b is None else bytes(b), s, None if o is None else bytes(o))
                for i, b, s, o in rows]

    def clear_plan(self) -> None:
        with self.txn():
            self._conn.execute("DELETE FROM plan")

    def clear_dirty(self) -> None:
        """After a commit: everything stored now equals the new base."""
        with self.txn():
            self._conn.execute("UPDATE nodes SET dirty=0 WHERE dirty=1")
            self._conn.execute("DELETE FROM dirents WHERE ino=0")
            self._conn.execute("UPDATE dirents SET dirty=0 WHERE dirty=1")
            self._cache.clear()

    def wipe(self, keep_meta: tuple[str, ...] = ("schema",)) -> None:
        """Forget every change (reset)."""
        with self.txn():
            for table in ("nodes", "dirents", "links", "plan"):
                self._conn.execute(f"DELETE FROM {table}")
            marks = ",".join("?" * len(keep_meta))
            self._conn.execute(f"DELETE FROM meta WHERE key NOT IN ({marks})", keep_meta)
            self._cache.clear()

    def counts(self) -> dict[str, int]:
        nodes = self._one("SELECT count(*) FROM nodes")[0]
        dirty = self._one("SELECT count(*) FROM nodes WHERE dirty=1")[0]
        return {"nodes": int(nodes), "dirty": int(dirty)}


def _migrate_from_2(c: sqlite3.Connection) -> None:
    """Layout 2 -> 3 in place, in one transaction: nodes gain rdev (0) and atime_ns (NULL)."""
    c.execute("BEGIN IMMEDIATE")
    try:
        c.execute("ALTER TABLE nodes ADD COLUMN rdev INTEGER NOT NULL DEFAULT 0")
        c.execute("ALTER TABLE nodes ADD COLUMN atime_ns INTEGER")
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise


def check_dirent(parent: int, name: bytes, ino: int, stored: int) -> None:
    _check_row((parent, name, ino), stored, f"name {name!r} in directory {parent}")


def _translate(exc: sqlite3.Error, path: Path) -> Exception:
    text = str(exc).lower()
    if "full" in text or "no space" in text:
        return no_space(path.parent)
    return StoreWriteError(f"@head state {path} could not be written: {exc}")


def _translate_os(exc: OSError, path: Path) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return no_space(path.parent)
    return StoreWriteError(f"@head state {path} could not be synced: {exc}")


def open_head_db(head_dir: Path) -> HeadDB:
    head_dir.mkdir(mode=0o700, exist_ok=True)
    return HeadDB(head_dir / "head.db")


def recorded_base(head_dir: Path) -> int | None:
    """@head's base version if @head has changes on it (None without changes: a clean @head
    simply follows the newest version), read without the lock."""
    path = head_dir / "head.db"
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='base'").fetchone()
            dirty = conn.execute("SELECT dirty FROM nodes WHERE ino=?", (HEAD_ROOT,)).fetchone()
            if not dirty or not dirty[0]:
                row = None
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return int(row[0]) if row is not None and row[0] else None
