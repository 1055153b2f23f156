"""Build a clone without the clone command: store A's packs put on a file:// remote, A's
directory without its packs copied to B, and B told to read them from that remote lazily."""

from __future__ import annotations

import os
import random
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.treeutil import write
from vfs.config import ChunkParams
from vfs.importer import import_tree
from vfs.index import Index
from vfs.pack import Record, scan_pack
from vfs.remote import layout
from vfs.remote.backend import Backend, RemoteObject
from vfs.remote.diskcache import PackCache
from vfs.remote.filebackend import FileBackend
from vfs.remote.lazy import RemotePacks
from vfs.remote.remotes import Remotes, RemoteSpec
from vfs.store import Store


class WrappedBackend:
    """A real backend passed through unchanged; tests override one method to count or fail."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.url = inner.url

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        return self.inner.get(key, start, length)

    def put(self, key: str, data: bytes | memoryview, *, if_absent: bool = False) -> None:
        self.inner.put(key, data, if_absent=if_absent)

    def list(self, prefix: str) -> Iterator[RemoteObject]:
        return self.inner.list(prefix)

    def stat(self, key: str) -> RemoteObject | None:
        return self.inner.stat(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def close(self) -> None:
        self.inner.close()


class CountingBackend(WrappedBackend):
    """A real FileBackend that counts its GETs; `gate`, when set, holds every GET until it is
    set (to make readers meet a GET in flight)."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.gets: list[tuple[str, int, int | None]] = []
        self.gate: threading.Event | None = None
        self._lock = threading.Lock()

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        with self._lock:
            self.gets.append((key, start, length))
        if self.gate is not None:
            assert self.gate.wait(30), "gate never opened"
        return self.inner.get(key, start, length)


@dataclass
class Clone:
    source: Path
    a: Path
    b: Path
    remote: Path
    packs: dict[str, list[Record]]
    """A's packs (all on the remote, none in B) and their records."""

    def pack_file(self, name: str) -> Path:
        return self.remote / layout.pack_key(name)

    def chunk_records(self) -> list[tuple[str, Record]]:
        from vfs.ids import ObjType

        return [(n, r) for n, recs in self.packs.items() for r in recs
                if r.kind == ObjType.CHUNK]


def make_files(root: Path, count: int, size: int, seed: int = 1) -> dict[str, bytes]:
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for i in range(count):
        data = rng.randbytes(size + rng.randrange(size // 2))
        name = f"d{i % 3}/f{i:03d}.bin"
        write(root / name, data)
        files[name] = data
    return files


def make_clone(tmp: Path, count: int = 24, size: int = 96 << 10, chunk_avg: int = 16 << 10,
               source: Path | None = None) -> Clone:
    """A store A with one version of random files (many small chunks), its packs on a
    file:// remote, and clone B of it that has none of them locally."""
    if source is None:
        source = tmp / "src"
        make_files(source, count, size)
    a, b, remote = tmp / "a", tmp / "b", tmp / "remote"
    with Store.create(a, chunk=ChunkParams.for_average(chunk_avg)) as store:
        import_tree(store, source, "v1")
    backend = FileBackend(remote)
    packs: dict[str, list[Record]] = {}
    for path in sorted((a / "packs").glob("??/*")):
        backend.put(layout.pack_key(path.name), path.read_bytes())
        packs[path.name] = scan_pack(path)[0]
    shutil.copytree(a, b, ignore=lambda d, names: [n for n in names if n != "tmp"]
                    if Path(d) == a / "packs" else [])
    (b / "packs").mkdir(exist_ok=True)
    (b / "packs" / "tmp").mkdir(exist_ok=True)
    assert not list((b / "packs").glob("??/*"))
    Remotes(b).add(RemoteSpec("origin", "file://" + str(remote), lazy=True))
    return Clone(source, a, b, remote, packs)


def open_clone(clone: Clone, bound: int = 64 << 20) -> tuple[Store, CountingBackend]:
    """Store B reading through a counting backend, its cache bounded to `bound` bytes."""
    from vfs.config import read_config

    backend = CountingBackend(FileBackend(clone.remote))
    spec = Remotes(clone.b).get("origin")
    remote = RemotePacks(spec, PackCache(clone.b / "cache", bound), backend=backend)
    store = Store(clone.b, read_config(clone.b), Index(clone.b / "index"), remote=remote)
    return store, backend


def cache_blocks(clone: Clone) -> int:
    """Bytes the cache files occupy on disk, measured."""
    return sum(os.stat(p).st_blocks * 512 for p in (clone.b / "cache" / "packs").glob("??/*"))


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))
