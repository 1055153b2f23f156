"""The store: one directory holding packs, the LMDB index and the version log.

Owns: creating and opening a store, the version log (record, resolve, tag, drop) and reading
paths of a version. Import, export, diff, verify and gc live in their own modules and work
through this class. Never imports: daemon, trio, pyfuse3. Read methods are thread-safe;
methods that write run their LMDB write transactions in the calling thread.

Layout::

    STORE/config        format and settings (vfs.config), written last by `init`
    STORE/index/        LMDB environment (layout: vfs.schema)
    STORE/packs/ab/...  immutable packs (vfs.pack); packs/tmp/ holds packs being written
    STORE/head/         overlay files of @head
    STORE/locks/        inter-process locks (vfs.locks)
    STORE/remotes.json  remotes (vfs.remote.remotes); a clone's lazy remote holds its packs
    STORE/cache/        a clone's bounded cache of remote packs (vfs.remote.diskcache)
"""

from __future__ import annotations

import getpass
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from vfs import schema
from vfs.config import (
    ChunkParams,
    StoreConfig,
    check_owner,
    is_empty_dir,
    read_config,
    write_config,
)
from vfs.content import ChunkCache, ContentReader
from vfs.errors import CorruptData, NotFound, StoreExists, UnknownVersion, UserError
from vfs.ids import ObjectId, ObjType, hash_object
from vfs.index import Index
from vfs.locks import flocked
from vfs.model import Entry, Kind, RefEvent, Version, VersionStats
from vfs.objects import ObjectReader, ObjectWriter
from vfs.remote.lazy import RemotePacks, open_lazy
from vfs.tree import TreeReader

TAG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9._+-]{0,127}$")
RESERVED_TAGS = {"latest", "head"}
VERSION_RE = re.compile(r"^@?v?([0-9]+)$")
DEFAULT_CACHE = 256 << 20


class Store:
    """An open store. Use `Store.create` or `Store.open`; close it (or use `with`)."""

    def __init__(self, root: Path, config: StoreConfig, index: Index,
                 cache_bytes: int = DEFAULT_CACHE, remote: RemotePacks | None = None) -> None:
        self.root = root
        self.config = config
        self.index = index
        self.packs_dir = root / "packs"
        self.remote = remote
        """A clone's lazy remote: where records of packs not in `packs/` are read from."""
        self.reader = ObjectReader(index, self.packs_dir, remote)
        self.trees = TreeReader(self.reader.get)
        self.contents = ContentReader(self.reader.get, ChunkCache(cache_bytes))
        self._checked: dict[bytes, Version] = {}
        """Version records already proven against their copy in the packs."""

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, chunk: ChunkParams | None = None, zstd_level: int = 3) -> Store:
        """Create a new store in an empty or missing directory."""
        path = Path(path).absolute()
        if (path / "config").exists():
            raise StoreExists(f"{path} is already a dsfs store")
        if path.exists() and not path.is_dir():
            raise StoreExists(f"{path} exists and is not a directory: choose another path")
        if not is_empty_dir(path):
            raise StoreExists(f"{path} is not empty and not a dsfs store: choose an empty "
                              "or new directory")
        for sub in ("packs/tmp", "index", "head", "locks"):
            (path / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        config = StoreConfig.new(chunk, zstd_level)
        index = Index(path / "index", create=True)
        write_config(path, config)  # last: a store without config is not a store
        return cls(path, config, index)

    @classmethod
    def open(cls, path: Path, cache_bytes: int = DEFAULT_CACHE,
             disk_cache_bytes: int | None = None) -> Store:
        """Open a store. A clone (STORE/remotes.json names a lazy remote) reads what it lacks
        from that remote, keeping up to `disk_cache_bytes` of it under STORE/cache (None: the
        bound used last, else `vfs.remote.diskcache.default_bound`); nothing is contacted
        before the first such read."""
        path = Path(path).absolute()
        config = read_config(path)
        check_owner(path)
        index = Index(path / "index")
        try:
            remote = open_lazy(path, disk_cache_bytes)
        except BaseException:
            index.close()
            raise
        return cls(path, config, index, cache_bytes, remote)

    def close(self) -> None:
        self.reader.close()
        if self.remote is not None:
            self.remote.close()
        self.index.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- locks -----------------------------------------------------------------------------

    def writer_lock(self) -> AbstractContextManager[None]:
        """Held by import and commit: excludes gc, not other writers or readers."""
        return flocked(self.root / "locks" / "gc.lock", exclusive=False, wait=False,
                       busy_message=f"store {self.root} is locked by a running `dsfs gc`: "
                                    "retry when it has finished")

    def gc_lock(self) -> AbstractContextManager[None]:
        return flocked(self.root / "locks" / "gc.lock", exclusive=True, wait=False,
                       busy_message=f"store {self.root} is in use by an import or commit: "
                                    "retry gc when it has finished")

    def numbering_lock(self) -> AbstractContextManager[None]:
        """Held while version numbers are handed out or changed (record, pull's renumbering)."""
        return self._commit_lock()

    def _commit_lock(self) -> AbstractContextManager[None]:
        return flocked(self.root / "locks" / "commit.lock", exclusive=True, wait=True,
                       busy_message="")

    # -- version log -----------------------------------------------------------------------

    def _checked_version(self, txn: Any, key: bytes, raw: bytes) -> Version:
        """Decode a version record of the index, proving it against its copy in the packs:
        LMDB has no checksums, and a flipped bit must not change what a version is."""
        raw = bytes(raw)
        known = self._checked.get(raw)
        if known is not None and known.number == schema.dec_version_key(bytes(key)):
            return known  # proven before (a mount re-reads the log every second)
        number = schema.dec_version_key(bytes(key))
        where = txn.get(hash_object(ObjType.VERSION, bytes(raw)), db=self.index.dbs["objects"])
        try:
            if where is None or schema.dec_loc(where).kind != ObjType.VERSION:
                raise CorruptData("no matching copy in the packs")
            version = Version.from_record(schema.dec_msg(raw))
            if version.number != number:
                raise CorruptData(f"it names v{version.number}")
        except (CorruptData, ValueError, TypeError, KeyError, IndexError) as exc:
            raise CorruptData(f"the index's record of v{number} is damaged ({exc}): "
                              f"{schema.DAMAGED}") from None
        if len(self._checked) > 100_000:
            self._checked.clear()
        self._checked[raw] = version
        return version

    def versions(self) -> list[Version]:
        """Every live version, oldest first; CorruptData if a record is damaged."""
        good, damaged = self.readable_versions()
        if damaged:
            raise CorruptData(next(iter(damaged.values())))
        return good

    def readable_versions(self) -> tuple[list[Version], dict[int, str]]:
        """Every live version whose index record is intact, and what is wrong with the rest."""
        good: list[Version] = []
        damaged: dict[int, str] = {}
        with self.index.read() as txn, txn.cursor(db=self.index.dbs["versions"]) as cur:
            for k, v in cur:
                try:
                    good.append(self._checked_version(txn, k, v))
                except CorruptData as exc:
                    damaged[schema.dec_version_key(bytes(k))] = str(exc)
        return good, damaged

    def version(self, number: int) -> Version:
        with self.index.read() as txn:
            raw = txn.get(schema.version_key(number), db=self.index.dbs["versions"])
            if raw is None:
                dropped = txn.get(schema.version_key(number), db=self.index.dbs["dropped"])
                why = "was dropped" if dropped is not None else "does not exist"
                raise UnknownVersion(f"version v{number} {why}: see `dsfs log`")
            return self._checked_version(txn, schema.version_key(number), raw)

    def latest(self) -> Version | None:
        with self.index.read() as txn, txn.cursor(db=self.index.dbs["versions"]) as cur:
            if not cur.last():
                return None
            return self._checked_version(txn, cur.key(), cur.value())

    def tags(self) -> dict[str, int]:
        with self.index.read() as txn, txn.cursor(db=self.index.dbs["tags"]) as cur:
            return dict(schema.dec_tag(k, v) for k, v in cur)

    def dropped_numbers(self) -> set[int]:
        """Numbers of dropped versions (they are never handed out again)."""
        return set(self.dropped_identities())

    def dropped_identities(self) -> dict[int, bytes | None]:
        """Dropped version numbers and the identity (`Version.identity`) of the version each
        one was, where the tombstone recorded it (None for tombstones of older dsfs)."""
        out: dict[int, bytes | None] = {}
        with self.index.read() as txn, txn.cursor(db=self.index.dbs["dropped"]) as cur:
            for k, v in cur:
                try:
                    ident = schema.dec_msg(bytes(v)).get("identity")
                except (CorruptData, AttributeError):
                    ident = None
                out[schema.dec_version_key(bytes(k))] = bytes(ident) if ident else None
        return out

    def attach_lazy_remote(self) -> None:
        """Read missing packs from the store's lazy remote from now on (a pull just made one
        lazy: the versions it recorded must read in this process too)."""
        if self.remote is None:
            self.remote = open_lazy(self.root)
            self.reader.packs.remote = self.remote

    def tags_by_version(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for name, n in sorted(self.tags().items()):
            out.setdefault(n, []).append(name)
        return out

    def resolve(self, spec: str) -> Version:
        """A version named `3`, `v3`, `@v3`, a tag, `@tag`, or `latest`."""
        m = VERSION_RE.match(spec)
        if m:
            return self.version(int(m.group(1)))
        name = spec[1:] if spec.startswith("@") else spec
        if name == "latest":
            latest = self.latest()
            if latest is None:
                raise UnknownVersion("the store has no versions yet: run `dsfs import DIR`")
            return latest
        with self.index.read() as txn:
            raw = txn.get(schema.tag_key(name), db=self.index.dbs["tags"]) if name else None
        if raw is None:
            raise UnknownVersion(f"no version or tag named {spec!r}: see `dsfs log` and "
                                 "`dsfs tags`")
        return self.version(schema.dec_tag(schema.tag_key(name), raw)[1])

    def new_writer(self) -> ObjectWriter:
        return ObjectWriter(self.index, self.packs_dir, self.reader, self.config.zstd_level,
                            self.config.pack_target_size)

    def record_version(self, writer: ObjectWriter, root_entry: Entry, message: str,
                       stats: VersionStats, source: str = "", parent: int | None = None,
                       tag: str | None = None, extra: Any = None) -> Version:
        """Seal the writer's packs and record a new version atomically. Returns it.

        `extra(txn)` runs inside the same index transaction (e.g. the import's file cache).
        """
        if tag is not None:
            self.check_tag_name(tag)
        with self._commit_lock():
            with self.index.read() as txn:
                n = self._next_number(txn)
                if tag is not None and txn.get(schema.tag_key(tag),
                                               db=self.index.dbs["tags"]) is not None:
                    raise UserError(f"tag {tag!r} already exists: choose another name or "
                                    f"`dsfs tag --delete {tag}` first")
            latest = self.latest()
            version = Version(
                number=n, root_entry=root_entry,
                parent=(latest.number if latest else 0) if parent is None else parent,
                time_ns=time.time_ns(), message=message, author=_author(), stats=stats,
                source=source)
            record = schema.enc_msg(version.to_record())
            writer.put_meta(ObjType.VERSION, record)
            event = RefEvent("tag", n, tag, version.time_ns) if tag is not None else None
            if event is not None:
                writer.put_meta(ObjType.REFEVENT, schema.enc_msg(event.to_record()))

            def index_it(txn: Any) -> None:
                dbs = self.index.dbs
                txn.put(schema.version_key(n), record, db=dbs["versions"])
                txn.put(schema.META_NEXT_VERSION, schema.enc_u32(n + 1), db=dbs["meta"])
                if tag is not None:
                    txn.put(schema.tag_key(tag), schema.tag_value(tag, n), db=dbs["tags"])
                if extra is not None:
                    extra(txn)

            writer.commit_with(index_it)
        return version

    def rerecord_version(self, writer: ObjectWriter, version: Version,
                         replace: bool = True) -> bool:
        """Record `version` under its own number, replacing what the index holds for it
        (unless not `replace`: then False if the number is in use or dropped).

        For repairs only (vfs.repair): a rewritten version, or one whose record only the old
        index still had. The record goes into a pack too, so a rebuild finds it."""
        with self._commit_lock():
            if not replace:
                key = schema.version_key(version.number)
                with self.index.read() as txn:
                    if any(txn.get(key, db=self.index.dbs[db]) is not None
                           for db in ("versions", "dropped")):
                        return False
            record = schema.enc_msg(version.to_record())
            writer.put_meta(ObjType.VERSION, record)

            def index_it(txn: Any) -> None:
                dbs = self.index.dbs
                txn.put(schema.version_key(version.number), record, db=dbs["versions"])
                if self._next_number(txn) <= version.number:
                    txn.put(schema.META_NEXT_VERSION, schema.enc_u32(version.number + 1),
                            db=dbs["meta"])

            writer.commit_with(index_it)
        return True

    def _next_number(self, txn: Any) -> int:
        """The number the next version gets: never one in use or dropped, even if the counter
        in the index was damaged (a flipped bit must not overwrite a version)."""
        dbs = self.index.dbs
        raw = txn.get(schema.META_NEXT_VERSION, db=dbs["meta"])
        n = schema.dec_u32(raw) if raw is not None and len(raw) == 4 else 1
        for db in ("versions", "dropped"):
            with txn.cursor(db=dbs[db]) as cur:
                if cur.last():
                    n = max(n, schema.dec_version_key(cur.key()) + 1)
        return n

    @staticmethod
    def check_tag_name(name: str) -> None:
        if not TAG_RE.match(name) or name in RESERVED_TAGS or VERSION_RE.match(name):
            raise UserError(f"invalid tag name {name!r}: use letters, digits, '.', '_', '+', "
                            "'-', starting with a letter, and not a version name like v3")

    def _log_event(self, event: RefEvent, apply: Any) -> None:
        with self.writer_lock(), self._commit_lock():
            writer = self.new_writer()
            try:
                writer.put_meta(ObjType.REFEVENT, schema.enc_msg(event.to_record()))
                writer.commit_with(apply)
            except BaseException:
                writer.abort()
                raise

    def tag(self, spec: str, name: str) -> Version:
        self.check_tag_name(name)
        version = self.resolve(spec)
        if name in self.tags():
            raise UserError(f"tag {name!r} already exists: `dsfs tag --delete {name}` first")
        self._log_event(RefEvent("tag", version.number, name, time.time_ns()),
                        lambda txn: txn.put(schema.tag_key(name),
                                            schema.tag_value(name, version.number),
                                            db=self.index.dbs["tags"]))
        return version

    def untag(self, name: str) -> int:
        tags = self.tags()
        if name not in tags:
            raise UnknownVersion(f"no tag named {name!r}: see `dsfs tags`")
        self._log_event(RefEvent("untag", tags[name], name, time.time_ns()),
                        lambda txn: txn.delete(schema.tag_key(name), db=self.index.dbs["tags"]))
        return tags[name]

    def drop(self, spec: str) -> Version:
        version = self.resolve(spec)
        from vfs.head.state import recorded_base

        if recorded_base(self.root / "head") == version.number:
            raise UserError(f"{version.name} is the base of @head: commit or reset @head "
                            "first (`dsfs status` shows its changes)")
        tagged = self.tags_by_version().get(version.number)
        if tagged:
            raise UserError(f"{version.name} is tagged {', '.join(tagged)}: delete the tag "
                            "first (`dsfs tag --delete NAME`)")
        now = time.time_ns()

        def apply(txn: Any) -> None:
            key = schema.version_key(version.number)
            txn.delete(key, db=self.index.dbs["versions"])
            txn.put(key, schema.enc_msg({"time": now, "identity": version.identity}),
                    db=self.index.dbs["dropped"])

        self._log_event(RefEvent("drop", version.number, "", now), apply)
        return version

    # -- reading a version -----------------------------------------------------------------

    def lookup(self, version: Version, path: bytes) -> Entry:
        """The entry at `path` (bytes, '/'-separated, relative) in a version."""
        entry = version.root_entry
        for part in split_path(path):
            if entry.kind != Kind.DIR:
                raise NotFound(f"{version.name}:{_show(path)}: not a directory on the way")
            found = self.trees.lookup(entry.tree, part)
            if found is None:
                raise NotFound(f"{version.name}:{_show(path)} does not exist")
            entry = found
        return entry

    def list_dir(self, entry: Entry) -> Iterator[Entry]:
        return self.trees.entries(entry.tree)

    def read(self, entry: Entry, offset: int, length: int) -> bytes:
        return self.contents.read(entry.content, entry.size, offset, length)

    def get_object(self, oid: ObjectId, kind: ObjType) -> bytes:
        return self.reader.get(oid, kind)


def split_path(path: bytes) -> list[bytes]:
    parts = [p for p in path.split(b"/") if p and p != b"."]
    if any(p == b".." for p in parts):
        raise UserError(f"path {_show(path)} may not contain '..'")
    return parts


def _show(path: bytes) -> str:
    return os.fsdecode(path)


def _author() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"
