"""`scripts/bench remote`: sharing versions through S3 (issue 11) against DVC, restic and rclone.

Every tool talks to the same S3 server, moto's standalone server on 127.0.0.1 started for the
run (bench_remote_tools.S3Server), with test credentials in its environment. Parts (--parts):

  push   v1 of `scripts/dataset.py generate --scale S`, then v2 (`mutate`), sent to the server:
         `dsfs import` + `dsfs push`, `dvc add` + `dvc push` (DVC's S3 remote), `restic backup`
         to an S3 repository. Each tool starts from an empty server (moto reset). Time, bytes
         and objects the bucket gained per version; for dsfs also what `push --json` reports,
         the pack bytes `import` added to the store, and whether any chunk is in two of the
         remote's packs (no chunk uploaded twice).
  clone  `dsfs clone` (metadata only) of a pushed version of --files small files
         (`dataset.py manyfiles`), at each --latencies.
  read   per latency: `dsfs clone` of the dataset's v1, `dsfs mount --cache-size`, time from
         the mount command's start to the first byte of a deep file, then a cold
         `tar cf - . | cat > /dev/null` of @v1; against `rclone mount --vfs-cache-mode full` of
         the same files uploaded as plain objects (`rclone copy`, timed once). Local cache
         after the tar: `dsfs cache --json` and the growth of the clone on disk.
  bound  one cold tar with --cache-size at --bound-fraction of v1's size, the clone's size on
         disk sampled every 0.25 s: the peak growth against --cache-size.

Latency: 0 ms = straight to the server; N ms = through bench_remote_proxy.py adding N ms per
request (one proxy per measured session, so its request count belongs to one tool). Cold = the
page cache dropped and, for a mount, a fresh clone or an empty rclone VFS cache. Every repeat
runs every tool, in reversed order every other repeat. Servers, proxies and mounts are stopped
on exit, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_head_data import bench_module

B = bench_module()

import bench_remote_report  # noqa: E402  (uses B, loaded above)
import bench_remote_tools as T  # noqa: E402

Json = dict[str, Any]
PARTS = ("push", "clone", "read", "bound")
TOOLS = ("dsfs", "dvc", "restic", "rclone")
PUSH_TOOLS = ("dsfs", "dvc", "restic")
READ_TOOLS = ("dsfs", "rclone")
# the remote's packs, read in the dsfs venv's python: (packs, records, chunks in 2+ packs, bytes)
DUP_CHECK = """
import struct, sys, json, msgpack
seen, dup, dup_bytes, records = set(), 0, 0, 0
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        f.seek(-16, 2)
        flen, _, _ = struct.unpack("<II8s", f.read(16))
        f.seek(-16 - flen, 2)
        for rec in msgpack.unpackb(f.read(flen)):
            records += 1
            oid = bytes(rec[0])
            if oid in seen:
                dup += 1
                dup_bytes += rec[5]
            seen.add(oid)
print(json.dumps({"packs": len(sys.argv) - 1, "records": records, "duplicates": dup,
                  "duplicate_bytes": dup_bytes}))
"""


def add_remote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", type=float, default=1.0, help="dataset scale (default 1.0 = 2 GiB)")
    p.add_argument("--seed", type=int, default=1, help="dataset seed (default 1)")
    p.add_argument("--repeat", type=int, default=3, help="runs per tool (default 3)")
    p.add_argument(
        "--tools",
        type=lambda text: B.parse_tools(text, TOOLS),
        default=list(TOOLS),
        help=f"comma-separated subset of {','.join(TOOLS)} (default: all)",
    )
    p.add_argument(
        "--parts",
        type=lambda text: [x for x in PARTS if x in B.parse_tools(text, PARTS)],
        default=list(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)} (default: all)",
    )
    p.add_argument("--files", type=int, default=20_000, help="files of the clone part (20,000)")
    p.add_argument(
        "--latencies",
        type=lambda text: sorted({float(x) for x in text.split(",") if x.strip()}),
        default=[0.0, 20.0],
        help="ms added per request, comma-separated (default 0,20)",
    )
    p.add_argument(
        "--cache-size",
        type=int,
        help="bytes: `dsfs mount --cache-size` of the read part (default: 2 x v1's size)",
    )
    p.add_argument(
        "--bound-fraction",
        type=float,
        default=0.25,
        help="--cache-size of the bound part as a fraction of v1's size (default 0.25)",
    )
    p.add_argument("--moto", type=Path, default=T.default_moto(), help="moto_server executable")
    p.add_argument(
        "--no-drop-caches",
        action="store_true",
        help="never drop the page cache ('cold' figures are then warm): only for smoke tests",
    )


@dataclass
class Ctx:
    args: argparse.Namespace
    runner: Any
    server: T.S3Server
    home: Path  # WORKDIR/remote
    data: Any  # bench.IngestData: pristine v1 and the live tree that push mutates
    drop: Callable[[], None]
    source: Any = None  # TreeStats of v1
    v2: Any = None  # TreeStats of v2
    deep: Path = Path()  # the first-byte file, relative to v1's root
    many: Any = None  # TreeStats of the clone part's tree
    runs: dict[str, list[Json]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    commands: dict[str, dict[str, str]] = field(default_factory=dict)
    facts: Json = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    dsfs_missing: str = ""  # why the dsfs rows cannot run, if they cannot

    def record(self, key: str, run: Json, commands: dict[str, str]) -> None:
        self.runs.setdefault(key, []).append(run)
        self.commands.setdefault(key, {}).update(commands)

    def failed(self, key: str, error: str) -> None:
        B.log(f"{key} FAILED: {error}")
        self.errors.setdefault(key, error)

    def attempt(self, key: str, fn: Callable[..., None], *fn_args: Any) -> None:
        """fn(self, *fn_args) unless key already failed (or is dsfs without its commands)."""
        if key in self.errors:
            return
        if key.startswith(("push dsfs", "clone", "read dsfs", "bound")) and self.dsfs_missing:
            self.errors[key] = self.dsfs_missing
            return
        try:
            fn(self, *fn_args)
        except (B.ToolFailed, OSError) as e:
            self.failed(key, str(e))


def order(items: Sequence[str], rep: int) -> list[str]:
    return list(items) if rep % 2 == 0 else list(reversed(items))


def usage_delta(ctx: Ctx, bucket: str, before: tuple[int, int]) -> tuple[int, int]:
    objects, size = ctx.server.usage(bucket)
    return objects - before[0], size - before[1]


# ---------------------------------------------------------------------------------------------
# push


def fresh_bucket(ctx: Ctx, bucket: str) -> None:
    ctx.server.reset()
    ctx.server.create_bucket(bucket)


def push_dsfs(ctx: Ctx) -> None:
    live = ctx.data.live
    fresh_bucket(ctx, "dsfs")
    tool = T.DsfsRemote(ctx.runner, ctx.home / "push" / "dsfs", ctx.args.dsfs, ctx.server.url)
    r: Json = {}
    try:
        tool.fresh(live)
        tool.remote_add("s3://dsfs/data")
        before = (0, 0)
        packs = 0
        for label in ("v1", "v2"):
            if label == "v2":
                ctx.data.mutate()
                ctx.v2 = ctx.v2 or B.tree_stats(live)
            ctx.runner.before_timed(live)
            r[f"{label}_store_seconds"] = tool.ingest(live, label).seconds
            now = B.stored_stats(tool.store / "packs").bytes
            r[f"{label}_new_pack_bytes"], packs = now - packs, now
            B.log(f"dsfs: push {label}")
            t, summary = tool.push(label)
            r[f"{label}_seconds"] = t.seconds
            r[f"{label}_cpu_seconds"] = t.cpu_seconds
            r[f"{label}_objects"], r[f"{label}_uploaded"] = usage_delta(ctx, "dsfs", before)
            before = ctx.server.usage("dsfs")
            r[f"{label}_reported_bytes"] = summary.get("bytes_uploaded")
            r[f"{label}_reported_packs"] = summary.get("packs_uploaded")
            r[f"{label}_summary"] = summary
        r.update(duplicate_chunks(ctx, tool))
        r["server_rss_mib"] = ctx.server.memory().get("rss_mib")
        ctx.record("push dsfs", r, tool.commands)
    finally:
        if not ctx.args.keep:
            tool.cleanup(live)


def duplicate_chunks(ctx: Ctx, tool: T.DsfsRemote) -> Json:
    """Count the objects held by two of the remote's packs (the local copies of those packs)."""
    keys = ctx.server.keys("dsfs", "data/packs/")
    paths = [str(tool.store / "packs" / k.split("/")[-2] / k.split("/")[-1]) for k in keys]
    python = Path(tool.exe).parent / "python"
    out = subprocess.run(
        [str(python), "-c", DUP_CHECK, *paths], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        B.log(f"warning: the duplicate-chunk check failed: {out.stderr.strip()[-300:]}")
        return {}
    found: Json = json.loads(out.stdout)
    return {f"remote_{k}": v for k, v in found.items()}


def push_dvc(ctx: Ctx) -> None:
    live = ctx.data.live
    fresh_bucket(ctx, "dvc")
    venv = ctx.args.workdir / "remote" / "dvc-venv"
    tool = T.DvcRemote(ctx.runner, ctx.home / "push" / "dvc", venv, ctx.server.url, "s3://dvc/data")
    tool.ensure_installed()
    ctx.versions.setdefault("dvc", tool.version().split(" (")[0])
    r: Json = {}
    try:
        tool.fresh(live)
        before = (0, 0)
        for label in ("v1", "v2"):
            if label == "v2":
                ctx.data.mutate()
                ctx.v2 = ctx.v2 or B.tree_stats(live)
            ctx.runner.before_timed(live)
            r[f"{label}_store_seconds"] = tool.ingest(live, label).seconds
            B.log(f"dvc: push {label}")
            os_sync()
            t = tool.push(live, label)
            r[f"{label}_seconds"] = t.seconds
            r[f"{label}_cpu_seconds"] = t.cpu_seconds
            r[f"{label}_objects"], r[f"{label}_uploaded"] = usage_delta(ctx, "dvc", before)
            before = ctx.server.usage("dvc")
        r["server_rss_mib"] = ctx.server.memory().get("rss_mib")
        ctx.record("push dvc", r, tool.commands)
    finally:
        tool.cleanup(live)


def push_restic(ctx: Ctx) -> None:
    live = ctx.data.live
    fresh_bucket(ctx, "restic")
    tool = T.ResticRemote(ctx.runner, ctx.home / "push" / "restic", ctx.server.url, "restic/repo")
    tool.ensure_installed()
    ctx.versions.setdefault("restic", tool.version())
    r: Json = {}
    try:
        tool.fresh(live)
        before = (0, 0)
        for label in ("v1", "v2"):
            if label == "v2":
                ctx.data.mutate()
                ctx.v2 = ctx.v2 or B.tree_stats(live)
            ctx.runner.before_timed(live)
            B.log(f"restic: backup {label}")
            t = tool.ingest(live, label)
            r[f"{label}_seconds"] = t.seconds
            r[f"{label}_cpu_seconds"] = t.cpu_seconds
            r[f"{label}_objects"], r[f"{label}_uploaded"] = usage_delta(ctx, "restic", before)
            before = ctx.server.usage("restic")
        r["server_rss_mib"] = ctx.server.memory().get("rss_mib")
        ctx.record("push restic", r, tool.commands)
    finally:
        tool.cleanup(live)


def os_sync() -> None:
    os.sync()


PUSHERS: dict[str, Callable[[Ctx], None]] = {
    "dsfs": push_dsfs,
    "dvc": push_dvc,
    "restic": push_restic,
}


def run_push(ctx: Ctx, rep: int) -> None:
    tools = [t for t in PUSH_TOOLS if t in ctx.args.tools]
    for name in order(tools, rep):
        B.log(f"push: repeat {rep + 1}/{ctx.args.repeat}: {name}")
        ctx.data.reset()
        ctx.attempt(f"push {name}", PUSHERS[name])


# ---------------------------------------------------------------------------------------------
# the remotes the clone, read and bound parts read


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
            os_sync()
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


def tar_session(ctx: Ctx, t: Any, r: Json, first_byte: bool) -> None:
    """Mount (cold), first byte, drop caches, cold tar of v1, then unmount."""
    limit = 600 + 3600 * ctx.args.scale
    ctx.drop()
    start = time.perf_counter()
    try:
        r["mount_seconds"] = t.mount()
        if first_byte:
            path = t.root() / ctx.deep
            r["first_byte_seconds"] = B.with_deadline(
                lambda: B.read_first_byte(path, start), f"first byte of {path}", 120, t.hung
            )
        ctx.drop()
        r["tar_seconds"] = t.shell("tar (cold)", B.TAR, t.root(), limit)
        r["tar_mb_per_s"] = ctx.source.bytes / B.MB / r["tar_seconds"]
        r.update({f"daemon_{k}": v for k, v in t.daemon_memory().items() if k != "daemon_pids"})
    finally:
        t.unmount()


def read_dsfs(ctx: Ctx, latency: float) -> None:
    r: Json = {}
    key = f"read dsfs {lat_key(latency)}"
    with endpoint(ctx, latency, r) as url:
        tool = T.DsfsRemote(ctx.runner, ctx.home / "clones" / "data", ctx.args.dsfs, url)
        t = T.LazyDsfsMount("dsfs", ctx.runner, tool, ctx.home / "mnt" / "dsfs")
        t.cache_size = ctx.args.cache_size or 2 * ctx.source.bytes
        r["cache_size"] = t.cache_size
        try:
            r["clone_seconds"] = tool.clone("s3://dsfsread/data", f"clone data {key}").seconds
            clone_bytes = B.tree_stats(tool.store).allocated
            tar_session(ctx, t, r, first_byte=True)
            r["cache"] = tool.cache_json()
            r["cache_bytes"] = cache_bytes(r["cache"])
            r["store_growth"] = B.tree_stats(tool.store).allocated - clone_bytes
        finally:
            t.unmount()
            tool.cleanup(Path())
    log_read(key, r)
    ctx.record(key, r, t.commands)


def read_rclone(ctx: Ctx, latency: float) -> None:
    r: Json = {}
    key = f"read rclone {lat_key(latency)}"
    with endpoint(ctx, latency, r) as url:
        rclone = T.Rclone(ctx.runner, ctx.home / "rclone", url)
        t = T.RcloneMount("rclone", ctx.runner, rclone, ctx.home / "mnt" / "rclone", "rclone/v1")
        try:
            tar_session(ctx, t, r, first_byte=True)
            r["cache_bytes"] = B.tree_stats(rclone.home / "vfs-cache").allocated
        finally:
            t.unmount()
            shutil.rmtree(rclone.home, ignore_errors=True)
    log_read(key, r)
    ctx.record(key, r, t.commands)


def log_read(key: str, r: Json) -> None:
    fb = B.fmt_ms(r.get("first_byte_seconds"))
    B.log(f"{key}: first byte {fb} ms, tar {B.fmt_s(r.get('tar_seconds'))} s")


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
        with DiskSampler(tool.store) as sampler:
            tar_session(ctx, t, r, first_byte=False)
        r["cache"] = tool.cache_json()
        r["cache_bytes"] = cache_bytes(r["cache"])
        r["store_growth"] = B.tree_stats(tool.store).allocated - clone_bytes
        r["store_growth_peak"] = sampler.peak - clone_bytes
    finally:
        t.unmount()
        tool.cleanup(Path())
    ctx.record("bound", r, t.commands)


# ---------------------------------------------------------------------------------------------
# the run


def prepare(ctx: Ctx) -> None:
    args = ctx.args
    ctx.source = B.tree_stats(ctx.data.pristine)
    ctx.deep = B.sample_files(ctx.data.pristine)[0]
    if "dsfs" in args.tools:
        probe = T.DsfsRemote(ctx.runner, ctx.home / "probe", args.dsfs)
        probe.ensure_installed()
        ctx.versions["dsfs"] = probe.version()
        missing = probe.missing_commands()
        if missing:
            ctx.dsfs_missing = (
                f"{probe.exe} has no `dsfs {'`, `dsfs '.join(missing)}` (issue 11's commands "
                "are not merged into this build yet): merge main, rerun scripts/setup"
            )
            B.log(f"warning: dsfs rows cannot run: {ctx.dsfs_missing}")
    if "rclone" in args.tools:
        T.Rclone(ctx.runner, ctx.home / "rclone", "").ensure_installed()


def run_remote(args: argparse.Namespace) -> Any:
    if args.scale <= 0 or args.files < 1 or not 0 < args.bound_fraction < 1:
        raise B.BenchError("--scale must be > 0, --files >= 1, 0 < --bound-fraction < 1")
    if args.cold or args.no_sync:
        raise B.BenchError("remote takes neither --cold nor --no-sync: it says what is cold")
    home = args.workdir / "remote"
    home.mkdir(parents=True, exist_ok=True)
    runner = B.Runner(home, cold=False)
    drop: Callable[[], None] = (lambda: None) if args.no_drop_caches else B.drop_page_cache
    try:
        drop()
    except OSError as e:
        raise B.BenchError(f"remote needs a writable /proc/sys/vm/drop_caches: {e}") from e
    data = B.prepare_ingest_data(args, runner)
    data.live = home / "live" / "data"  # dvc's project is its parent
    server = T.S3Server(args.moto, home / "moto", runner.logdir)
    ctx = Ctx(args, runner, server, home, data, drop)
    started = time.perf_counter()
    restore = B.stop_signals()
    mounts = [home / "mnt" / n for n in ("dsfs", "rclone", "bound")]
    for mnt in mounts:  # left by a killed run
        if B.is_mounted(mnt):
            B.lazy_unmount(mnt)
    try:
        prepare(ctx)
        server.start()
        ctx.facts["moto_command"] = server.command
        ctx.versions["moto"] = T.moto_version(args.moto)
        for rep in range(args.repeat if "push" in args.parts else 0):
            run_push(ctx, rep)
        if {"clone", "read", "bound"} & set(args.parts):
            prepare_remotes(ctx)
        for rep in range(args.repeat):
            for latency in args.latencies if {"clone", "read"} & set(args.parts) else []:
                if "clone" in args.parts:
                    key = f"clone {lat_key(latency)}"
                    ctx.attempt(key, clone_many, latency)
                if "read" in args.parts:
                    for name in order([n for n in READ_TOOLS if n in args.tools], rep):
                        fn = read_dsfs if name == "dsfs" else read_rclone
                        B.log(f"read: repeat {rep + 1}/{args.repeat}: {name} {lat_key(latency)}")
                        key = f"read {name} {lat_key(latency)}"
                        ctx.attempt(key, fn, latency)
            if "bound" in args.parts and "dsfs" in args.tools:
                ctx.attempt("bound", bound_dsfs)
        ctx.facts["server_end"] = server.memory()
    except KeyboardInterrupt as e:
        raise B.BenchError(f"interrupted ({str(e) or 'SIGINT'}): mounts and servers stopped") from e
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
        try:
            for mnt in mounts:
                if B.is_mounted(mnt):
                    B.lazy_unmount(mnt)
                B.wait_gone(B.mount_daemons(mnt), B.STOP_TIMEOUT)
            server.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            restore()
    ctx.facts["minutes"] = (time.perf_counter() - started) / 60
    return bench_remote_report.make(ctx)
