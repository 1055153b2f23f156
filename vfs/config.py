"""The store's `config` file: format version, chunking and compression settings.

Owns: reading and writing `STORE/config` (JSON, written once by `init`, crash-safely).
Never imports: daemon, trio, pyfuse3. The core never reads environment variables: settings are
resolved at the edge and passed down as frozen objects.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from vfs.errors import NewerFormat, NotAStore, UnsafeStore
from vfs.fsutil import atomic_write

FORMAT_VERSION = 1
CONFIG_NAME = "config"
MAGIC = "dsfs-store"


@dataclass(frozen=True, slots=True)
class ChunkParams:
    """FastCDC parameters. Chosen by `scripts/bench chunksweep` (see BENCHMARKS.md)."""

    avg_size: int = 512 * 1024
    min_size: int = 128 * 1024
    max_size: int = 2 * 1024 * 1024

    @classmethod
    def for_average(cls, avg: int) -> ChunkParams:
        """Parameters for a target average: min = avg/4, max = avg*4 (bounded by FastCDC)."""
        if not 4096 <= avg <= 4 * 1024 * 1024:
            raise ValueError("average chunk size must be between 4 KiB and 4 MiB")
        return cls(avg_size=avg, min_size=max(1024, avg // 4), max_size=min(16 << 20, avg * 4))


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Settings recorded in the store at `init` and fixed for its lifetime."""

    store_id: str
    chunk: ChunkParams
    zstd_level: int = 3
    pack_target_size: int = 32 * 1024 * 1024
    format: int = FORMAT_VERSION

    @classmethod
    def new(cls, chunk: ChunkParams | None = None, zstd_level: int = 3) -> StoreConfig:
        return cls(store_id=uuid.uuid4().hex, chunk=chunk or ChunkParams(), zstd_level=zstd_level)

    def to_json(self) -> bytes:
        data = {"magic": MAGIC, **asdict(self)}
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def write_config(root: Path, config: StoreConfig) -> None:
    atomic_write(root / CONFIG_NAME, config.to_json())


def read_config(root: Path) -> StoreConfig:
    """Read and validate `STORE/config`; raise NotAStore or NewerFormat with a clear message."""
    path = root / CONFIG_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotAStore(
            f"{root} is not a dsfs store (no config file): run `dsfs init` or pass --store"
        ) from None
    except NotADirectoryError:
        raise NotAStore(f"{root} is not a directory: pass --store with a dsfs store") from None
    except PermissionError:
        raise NotAStore(f"cannot read {path}: permission denied") from None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("magic") != MAGIC:
            raise ValueError("bad magic")
        fmt = int(data["format"])
        if fmt > FORMAT_VERSION:
            raise NewerFormat(
                f"store {root} uses format {fmt}, newer than this dsfs understands "
                f"({FORMAT_VERSION}): upgrade dsfs"
            )
        chunk = ChunkParams(**data["chunk"])
        return StoreConfig(
            store_id=str(data["store_id"]),
            chunk=chunk,
            zstd_level=int(data["zstd_level"]),
            pack_target_size=int(data["pack_target_size"]),
            format=fmt,
        )
    except NewerFormat:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise NotAStore(f"{path} is damaged or not a dsfs config ({exc}): check --store") from None


def is_empty_dir(path: Path) -> bool:
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except FileNotFoundError:
        return True


_GUARDED = ("", "index", "locks", "head", "packs", CONFIG_NAME)


def check_owner(root: Path) -> None:
    """Refuse a store another user could tamper with: its directory, index, locks, @head and
    packs must belong to the caller or root and be writable by no one else (a user who can
    swap a lock file for a symlink could make a root daemon write where they choose)."""
    me = os.geteuid()
    for name in _GUARDED:
        path = root / name if name else root
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise NotAStore(f"cannot inspect {path}: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode) and name:
            raise UnsafeStore(f"{path} is a symlink: a store's own parts must not be links "
                              "(someone may be tampering with it)")
        if st.st_uid not in (me, 0):
            raise UnsafeStore(f"{path} belongs to uid {st.st_uid}, not to you (uid {me}): run "
                              "dsfs as its owner, or `chown -R` the store")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (st.st_mode & stat.S_ISVTX):
            raise UnsafeStore(f"{path} is writable by other users: `chmod -R go-w {root}`")
