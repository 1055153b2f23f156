"""Time a first traversal of a version through `vfs.view` in-process (no FUSE, no kernel).

What a first `find` costs the daemon, without the request overhead: every directory is listed
as READDIRPLUS would list it (the entries in buffers of `--batch`, each with its attributes and
remembered), then, with `--lookups`, every name is looked up again as a cold `stat` of each path
would. With `--no-wait` the calls are made as the event loop makes them: `wait=False`, and a
`WouldBlock`'s load runs in this thread (counted) before the call is retried.

    .venv/bin/python scripts/view_walk.py STORE [--version 1] [--cold] [--lookups] [--no-wait]
        [--repeat 5] [--profile out.html]

`--cold` evicts the store's files from the page cache first (posix_fadvise DONTNEED on each, so
other work on the machine keeps its cache), as a fresh mount after `drop_caches` would find them.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vfs.model import Kind
from vfs.store import Store
from vfs.view import ROOT_INO, VersionsView

T = TypeVar("T")


class Walker:
    def __init__(self, view: VersionsView, batch: int, no_wait: bool) -> None:
        self.view = view
        self.batch = batch
        self.no_wait = no_wait and "wait" in inspect.signature(view.lookup).parameters
        self.blocked = 0
        self.entries = 0
        self.dirs = 0

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        if not self.no_wait:
            return fn(*args)
        from vfs.errors import WouldBlock

        for _ in range(8):
            try:
                return fn(*args, wait=False)
            except WouldBlock as exc:
                self.blocked += 1
                exc.load()
        return fn(*args)

    def listing(self, ino: int) -> list[tuple[bytes, int, bool]]:
        """One directory as READDIRPLUS lists it: (name, inode, is a directory)."""
        view = self.view
        handle = view.opendir(ino)
        out: list[tuple[bytes, int, bool]] = []
        offset = 0
        while True:
            if self.no_wait:
                chunk = self.call(self._chunk, handle, offset)
            else:
                chunk = self._chunk(handle, offset)
            for name, node, _attr, _ in chunk:
                view.remember(node)
                out.append((name, node.ino, node.entry.kind == Kind.DIR))
            if len(chunk) < self.batch:
                break
            offset = chunk[-1][3]
        self.dirs += 1
        self.entries += len(out)
        return out

    def _chunk(self, handle: Any, offset: int, wait: bool = True) -> list[Any]:
        """Up to `batch` entries from `offset`, with their attributes (all or nothing: what a
        retry after a WouldBlock needs)."""
        view = self.view
        plus = getattr(view, "readdirplus", None)
        got: list[Any] = []
        if plus is not None:
            it = plus(handle, offset, wait=wait)
            for name, node, attr, nxt in it:
                got.append((name, node, attr, nxt))
                if len(got) == self.batch:
                    break
            it.close()
            return got
        it = view.readdir(handle, offset)
        for name, node, nxt in it:
            got.append((name, node, view.attr(node), nxt))
            if len(got) == self.batch:
                break
        it.close()
        return got

    def walk(self, ino: int) -> list[tuple[int, bytes, bool]]:
        """Every entry under `ino` as (parent inode, name, is a directory)."""
        found: list[tuple[int, bytes, bool]] = []
        stack = [ino]
        while stack:
            d = stack.pop()
            for name, child, is_dir in self.listing(d):
                found.append((d, name, is_dir))
                if is_dir:
                    stack.append(child)
        return found

    def lookups(self, names: list[tuple[int, bytes, bool]]) -> None:
        for parent, name, _ in names:
            node, _attr = self.call(self.view.lookup, parent, name)
            self.view.remember(node)


def evict(store: Path) -> int:
    """Drop the store's files (packs, index) from the page cache, and only those: a global
    drop_caches would disturb whatever else runs on the machine. Returns the files evicted."""
    os.sync()
    n = 0
    for dirpath, _, files in os.walk(store):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                n += 1
            finally:
                os.close(fd)
    return n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store", type=Path)
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--cold", action="store_true",
                   help="evict the store's files from the page cache first")
    p.add_argument("--batch", type=int, default=64, help="entries per readdir call")
    p.add_argument("--lookups", action="store_true", help="then look every name up again")
    p.add_argument("--no-wait", action="store_true", help="call with wait=False, load inline")
    p.add_argument("--profile", type=Path, help="write a pyinstrument HTML profile here")
    p.add_argument("--gc-threshold", type=int, default=0,
                   help="gc.set_threshold(N) for the walk (what a daemon could set)")
    p.add_argument("--repeat", type=int, default=1,
                   help="walks, each with the store opened afresh; the best one is shown")
    args = p.parse_args()
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold)
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeat):
        if args.cold:
            evict(args.store)
        with Store.open(args.store) as store:  # a fresh mount: empty caches, index unmapped
            times = one_walk(store, args)
        for phase, (wall, cpu) in times.items():
            old = best.get(phase)
            best[phase] = (wall, cpu) if old is None else (min(old[0], wall), min(old[1], cpu))
    print("best of", args.repeat, "; ".join(
        f"{phase} {wall:.3f} s, CPU {cpu:.3f} s" for phase, (wall, cpu) in best.items()))
    if profiler is not None:
        profiler.stop()
        args.profile.write_text(profiler.output_html())
        print(profiler.output_text(unicode=False, color=False, show_all=False), file=sys.stderr)
    return 0


def one_walk(store: Store, args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    t0 = time.perf_counter()
    view = VersionsView(store)
    walker = Walker(view, args.batch, args.no_wait)
    vdir, _ = view.lookup(ROOT_INO, f"@v{args.version}".encode())
    view.remember(vdir)
    t1, c1 = time.perf_counter(), time.process_time()
    names = walker.walk(vdir.ino)
    t2, c2 = time.perf_counter(), time.process_time()
    if args.lookups:
        walker.lookups(names)
    t3, c3 = time.perf_counter(), time.process_time()
    files = sum(1 for *_, d in names if not d)
    n = max(1, walker.entries)
    print(f"view {t1 - t0:.3f} s; readdirplus walk {t2 - t1:.3f} s, CPU {c2 - c1:.3f} s "
          f"({walker.dirs} dirs, {walker.entries} entries, {files} files, "
          f"{(t2 - t1) / n * 1e6:.1f} us/entry, CPU {(c2 - c1) / n * 1e6:.1f})"
          + (f"; lookups {t3 - t2:.3f} s, CPU {c3 - c2:.3f} s ("
             f"{(t3 - t2) / n * 1e6:.1f} us/name, CPU {(c3 - c2) / n * 1e6:.1f})"
             if args.lookups else "")
          + (f"; WouldBlock {walker.blocked}" if walker.no_wait else "")
          + f"; inode table {len(view.inodes)} nodes", flush=True)
    out = {"walk": (t2 - t1, c2 - c1)}
    if args.lookups:
        out["lookups"] = (t3 - t2, c3 - c2)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
