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
  bound  one cold tar with --cache-size at --bound-fraction of v1's size, the size of the
         clone's STORE/cache sampled every 0.25 s: its peak against the bound. (`dsfs mount
         --cache-size` bounds a clone's local disk cache; builds before 36ddd16 called it
         --disk-cache-size, and the bench uses whichever `dsfs mount --help` shows.)

The parts after push are in bench_remote_read.py, the programs in bench_remote_tools.py, the
report in bench_remote_report.py.

Latency: 0 ms = straight to the server; N ms = through bench_remote_proxy.py adding N ms per
request (one proxy per measured session, so its request count belongs to one tool). Cold = the
page cache dropped and, for a mount, a fresh clone or an empty rclone VFS cache. Every repeat
runs every tool, in reversed order every other repeat. Servers, proxies and mounts are stopped
on exit, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_head_data import bench_module

B = bench_module()

import bench_remote_read as R  # noqa: E402  (uses B, loaded above)
import bench_remote_report  # noqa: E402
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
            os.sync()
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
            R.prepare_remotes(ctx)
        for rep in range(args.repeat):
            for latency in args.latencies if {"clone", "read"} & set(args.parts) else []:
                if "clone" in args.parts:
                    key = f"clone {R.lat_key(latency)}"
                    ctx.attempt(key, R.clone_many, latency)
                if "read" in args.parts:
                    for name in order([n for n in READ_TOOLS if n in args.tools], rep):
                        fn = R.read_dsfs if name == "dsfs" else R.read_rclone
                        B.log(f"read: repeat {rep + 1}/{args.repeat}: {name} {R.lat_key(latency)}")
                        key = f"read {name} {R.lat_key(latency)}"
                        ctx.attempt(key, fn, latency)
            if "bound" in args.parts and "dsfs" in args.tools:
                ctx.attempt("bound", R.bound_dsfs)
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
