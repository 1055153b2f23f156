"""`dsfs cache [--json] [--trim SIZE]` and the mount's `--cache-size`: a clone's local cache
of remote packs (`vfs.remote.diskcache`). (`--memory-cache` sizes the chunks kept in memory.)

Owns: showing and trimming the cache, parsing cache sizes, and resolving the mount's bound.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from daemon import fmt
from daemon.cli_common import emit_json, note, store_path
from vfs.config import read_config
from vfs.remote.diskcache import PackCache, cache_status, default_bound
from vfs.remote.remotes import Remotes

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_cache_size(text: str) -> int:
    """Bytes from 500M, 2G, 1.5GiB, 10GB, 4096 (units are powers of 1024)."""
    m = _SIZE.match(text)
    if m is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 500M, 2G or 1.5GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def cache_dir(store: Path) -> Path:
    return store / "cache"


def mount_cache_bytes(args: argparse.Namespace) -> int:
    """The bound of a mount's cache: --cache-size, else the default for its disk."""
    given: int | None = args.cache_size
    return given if given is not None else default_bound(cache_dir(store_path(args)))


def cmd_cache(args: argparse.Namespace) -> int:
    root = store_path(args)
    read_config(root)  # a missing or foreign store fails here
    lazy = Remotes(root).lazy()
    if args.trim is not None:
        cache = PackCache(cache_dir(root))
        try:
            used = cache.trim(args.trim)
        finally:
            cache.close()
        note(args, f"cache trimmed to {fmt.size(used)} ({used:,} bytes)")
    st = cache_status(cache_dir(root))
    counters = st.counters
    if args.json:
        out: dict[str, Any] = {"path": str(st.path), "bytes_used": st.used, "bound": st.bound,
                               "packs_cached": st.packs,
                               "remote": None if lazy is None else lazy.name, **counters}
        emit_json(out)
        return 0
    print(f"cache    {st.path}")
    print(f"remote   {lazy.name} ({lazy.url})" if lazy is not None else
          "remote   none: this store is not a clone, it reads only its own packs")
    print(f"used     {fmt.size(st.used)} of {fmt.size(st.bound)} ({st.used:,} bytes)")
    print(f"packs    {st.packs:,} cached in part or whole")
    if counters:
        reads = counters.get("hits", 0) + counters.get("misses", 0)
        rate = f", {100 * counters.get('hits', 0) / reads:.0f}% hits" if reads else ""
        print(f"reads    {counters.get('hits', 0):,} from the cache, "
              f"{counters.get('misses', 0):,} fetched{rate}; "
              f"{counters.get('gets', 0):,} GETs, {fmt.size(counters.get('bytes_fetched', 0))}"
              " fetched (saved now and then by the process using the cache)")
    return 0


def add_cache_command(add: Any) -> None:
    p = add("cache", cmd_cache, "a clone's local cache of its remote's packs: what it holds, "
            "and trimming it", json_=True)
    p.add_argument("--trim", type=parse_cache_size, default=None, metavar="SIZE",
                   help="evict least recently used data until the cache uses at most SIZE "
                        "(e.g. 0 or 500M); not while a mount of this store uses the cache")


def add_mount_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-size", type=parse_cache_size, default=None, metavar="SIZE",
                   help="for a clone: bytes of the remote's packs kept on local disk under "
                        "STORE/cache, least recently used evicted first (default: 10G or a "
                        "tenth of that disk's size, whichever is smaller); see `dsfs cache`")


__all__ = ["add_cache_command", "add_mount_option", "mount_cache_bytes", "parse_cache_size"]
