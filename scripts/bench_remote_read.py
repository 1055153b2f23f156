"""The clone, read and bound parts of `scripts/bench remote` (see bench_remote.py).

Owns: what the server holds for them (v1 and a many-files version pushed by dsfs, v1 copied as
plain objects by rclone), the latency of each session (a fresh bench_remote_proxy.py above
0 ms), timing `dsfs clone`, the first byte and the cold tar through a lazily fetching clone's
mount against `rclone mount`, and the cache's size against --cache-size. Never imports: vfs,
daemon.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from bench_head_data import bench_module

B = bench_module()

import bench_remote_tools as T  # noqa: E402

Json = dict[str, Any]
Ctx = Any  # bench_remote.Ctx


def prepare_remotes(ctx: Ctx) -> None:
    """Untimed: v1 and the many-files version pushed by dsfs; v1 copied by rclone (timed once)."""
    args = ctx.args
    ctx.server.reset()
    if "dsfs" in args.tools and not ctx.dsfs_missing:
        ctx.server.create_bucket("dsfsread")
        sources = [("data", ctx.data.pristine)] if {"read", "bound"} & set(args.parts) else []
        if "clone" in args.parts:
            sources.append(("many", many_tree(ctx)))
        for name, tree in sources:
            tool = T.DsfsRemote(ctx.runner, ctx.home / "sources" / name, args.dsfs, ctx.server.url)
            try:
                B.log(f"dsfs: storing and pushing {tree} to s3://dsfsread/{name} (untimed)")
                tool.fresh(tree)
                tool.ingest(tree, "v1")
                tool.remote_add(f"s3://dsfsread/{name}")
                tool.push("v1")
                ctx.commands.setdefault(f"source {name}", {}).update(tool.commands)
            except (B.ToolFailed, OSError) as e:
                ctx.failed("clone" if name == "many" else "read dsfs", f"pushing {name}: {e}")
            finally:
                tool.cleanup(tree)
    if "rclone" in args.tools and "read" in args.parts:
        ctx.server.create_bucket("rclone")
        rclone = T.Rclone(ctx.runner, ctx.home / "rclone", ctx.server.url)
        ctx.versions.setdefault("rclone", rclone.version())
        try:
            os.sync()
            t = rclone.copy(ctx.data.pristine, "rclone/v1")
            objects, size = ctx.server.usage("rclone")
            run = {"seconds": t.seconds, "objects": objects, "uploaded": size}
            ctx.record("rclone copy v1", run, rclone.commands)
        except (B.ToolFailed, OSError) as e:
            ctx.failed("read rclone", f"rclone copy: {e}")
    ctx.facts["server_after_upload"] = ctx.server.memory()


def many_tree(ctx: Ctx) -> Path:
    args = ctx.args
    base: Path = args.workdir / "data" / f"manyfiles-{args.files}-dirs-seed{args.seed}"
    tree = base / "data"  # the tree `scripts/bench manyfiles --count N` makes and keeps
    gen = ["manyfiles", str(tree), "--count", str(args.files), "--seed", str(args.seed)]
    stamp = {"kind": "manyfiles", "count": args.files, "flat": False, "seed": args.seed}
    if B.reuse_or_generate(ctx.runner, base, tree, stamp, gen):
        B.TouchedFile(base, tree, ctx.runner).restore()  # left changed by an interrupted run
    ctx.many = B.tree_stats(tree)
    return tree


# ---------------------------------------------------------------------------------------------
# clone, read, bound


@contextlib.contextmanager
def endpoint(ctx: Ctx, latency: float, into: Json) -> Any:
    """The URL to reach the server at this latency (a fresh proxy above 0 ms)."""
    if latency <= 0:
        yield ctx.server.url
        return
    proxy = T.LatencyProxy(ctx.server.port, latency, ctx.runner.logdir)
    proxy.start()
    ctx.facts["proxy_command"] = proxy.command
    try:
        yield proxy.url
    finally:
        counts = proxy.stop()
        into.update({f"proxy_{k}": v for k, v in counts.items()})


def lat_key(latency: float) -> str:
    return f"{latency:g} ms"


def clone_many(ctx: Ctx, latency: float) -> None:
    r: Json = {}
    with endpoint(ctx, latency, r) as url:
        tool = T.DsfsRemote(ctx.runner, ctx.home / "clones" / "many", ctx.args.dsfs, url)
        try:
            ctx.drop()
            B.log(f"dsfs: clone of {ctx.args.files:,} files at {lat_key(latency)}")
            r["seconds"] = tool.clone(
                "s3://dsfsread/many", f"clone many {lat_key(latency)}"
            ).seconds
        finally:
            tool.cleanup(Path())
    ctx.record(f"clone {lat_key(latency)}", r, tool.commands)


def mount_session(ctx: Ctx, t: Any, r: Json, cold: bool, tar: bool) -> None:
    """Mount, first byte, then (if tar) drop caches and tar v1 cold; unmount.

    cold: the page cache dropped before the mount too (programs' code included); otherwise only
    the data is cold (a fresh clone, an empty rclone cache).
    """
    limit = 600 + 3600 * ctx.args.scale
    pre = "" if cold else "warm_"
    if cold:
        ctx.drop()
    start = time.perf_counter()
    try:
        r[f"{pre}mount_seconds"] = t.mount()
        path = t.root() / ctx.deep
        fb = B.with_deadline(
            lambda: B.read_first_byte(path, start), f"first byte of {path}", 120, t.hung
        )
        r[f"{pre}first_byte_seconds"] = fb
        r[f"{pre}first_byte_after_mount_seconds"] = fb - (t.ready_at - start)
        if tar:
            ctx.drop()
            r["tar_seconds"] = t.shell("tar (cold)", B.TAR, t.root(), limit)
            r["tar_mb_per_s"] = ctx.source.bytes / B.MB / r["tar_seconds"]
            memory = t.daemon_memory()
            r["daemon_rss_mib"] = memory.get("daemon_rss_mib")
            r["daemon_hwm_mib"] = memory.get("daemon_hwm_mib")
    finally:
        t.unmount()


def dsfs_target(ctx: Ctx, url: str) -> tuple[T.DsfsRemote, T.LazyDsfsMount]:
    tool = T.DsfsRemote(ctx.runner, ctx.home / "clones" / "data", ctx.args.dsfs, url)
    t = T.LazyDsfsMount("dsfs", ctx.runner, tool, ctx.home / "mnt" / "dsfs")
    t.cache_size = ctx.args.cache_size or 2 * ctx.source.bytes
    return tool, t


def read_dsfs(ctx: Ctx, latency: float) -> None:
    r: Json = {}
    key = f"read dsfs {lat_key(latency)}"
    with endpoint(ctx, latency, {}) as url:  # first byte, only the data cold
        tool, t = dsfs_target(ctx, url)
        try:
            tool.clone("s3://dsfsread/data", f"clone data {key} (first byte, warm)")
            mount_session(ctx, t, r, cold=False, tar=False)
        finally:
            t.unmount()
            tool.cleanup(Path())
    with endpoint(ctx, latency, r) as url:  # first byte and tar, all cold
        tool, t = dsfs_target(ctx, url)
        r["cache_size"] = t.cache_size
        try:
            r["clone_seconds"] = tool.clone("s3://dsfsread/data", f"clone data {key}").seconds
            clone_bytes = B.tree_stats(tool.store).allocated
            mount_session(ctx, t, r, cold=True, tar=True)
            r["cache"] = tool.cache_json()
            r["cache_bytes"] = cache_bytes(r["cache"])
            r["store_growth"] = B.tree_stats(tool.store).allocated - clone_bytes
            r["cache_disk_bytes"] = B.stored_stats(tool.store / "cache").allocated
        finally:
            t.unmount()
            tool.cleanup(Path())
    log_read(key, r)
    ctx.record(key, r, t.commands)


def read_rclone(ctx: Ctx, latency: float) -> None:
    r: Json = {}
    key = f"read rclone {lat_key(latency)}"
    for cold in (False, True):
        with endpoint(ctx, latency, r if cold else {}) as url:
            rclone = T.Rclone(ctx.runner, ctx.home / "rclone", url)
            mnt = ctx.home / "mnt" / "rclone"
            t = T.RcloneMount("rclone", ctx.runner, rclone, mnt, "rclone/v1")
            try:
                mount_session(ctx, t, r, cold=cold, tar=cold)
                if cold:
                    r["cache_bytes"] = B.tree_stats(rclone.home / "vfs-cache").allocated
            finally:
                t.unmount()
                shutil.rmtree(rclone.home, ignore_errors=True)
    log_read(key, r)
    ctx.record(key, r, t.commands)


def log_read(key: str, r: Json) -> None:
    fb = B.fmt_ms(r.get("first_byte_seconds"))
    warm = B.fmt_ms(r.get("warm_first_byte_seconds"))
    B.log(f"{key}: first byte {fb} ms (warm page cache {warm} ms), tar {r['tar_seconds']:.2f} s")


def cache_bytes(cache: Json) -> int | None:
    """The bytes in use from `dsfs cache --json` (the key's name is the command's to choose)."""
    for k in ("bytes_used", "used_bytes", "used", "bytes", "size", "cache_bytes"):
        if isinstance(cache.get(k), int):
            return int(cache[k])
    return None


class DiskSampler:
    """The peak on-disk size of a directory, sampled every period seconds in a thread."""

    def __init__(self, path: Path, period: float = 0.25) -> None:
        self.path = path
        self.period = period
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, B.tree_stats(self.path).allocated)
            self._stop.wait(self.period)

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bound_dsfs(ctx: Ctx) -> None:
    r: Json = {}
    tool = T.DsfsRemote(ctx.runner, ctx.home / "clones" / "bound", ctx.args.dsfs, ctx.server.url)
    t = T.LazyDsfsMount("dsfs-bound", ctx.runner, tool, ctx.home / "mnt" / "bound")
    t.cache_size = max(1, int(ctx.source.bytes * ctx.args.bound_fraction))
    r["cache_size"] = t.cache_size
    try:
        tool.clone("s3://dsfsread/data", "clone data (bound)")
        clone_bytes = B.tree_stats(tool.store).allocated
        with DiskSampler(tool.store / "cache") as sampler:  # where a clone keeps fetched packs
            mount_session(ctx, t, r, cold=True, tar=True)
        r["cache"] = tool.cache_json()
        r["cache_bytes"] = cache_bytes(r["cache"])
        r["store_growth"] = B.tree_stats(tool.store).allocated - clone_bytes
        r["cache_disk_bytes"] = B.stored_stats(tool.store / "cache").allocated
        r["cache_disk_peak"] = sampler.peak
        B.log(
            f"bound: tar {r['tar_seconds']:.2f} s, cache {B.fmt_mb(r['cache_bytes'])} MB, "
            f"peak on disk {B.fmt_mb(sampler.peak)} MB, bound {B.fmt_mb(t.cache_size)} MB"
        )
    finally:
        t.unmount()
        tool.cleanup(Path())
    ctx.record("bound", r, t.commands)
