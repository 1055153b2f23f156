"""`scripts/bench read`: reading a version the way training does (issue 10).

Every figure is measured in one run, side by side, on the local disk ("native"), through dsfs
(`MNT/@v1`; with --dsfs-before also through a second dsfs build, rows "dsfs (before)") and
through `borg mount` of the same data: v1 of `scripts/dataset.py generate --scale S` (at 0.5:
9,500 images of 20-200 KB, two text files, one 190 MB shard). Parts (--parts):

  tar      `tar cf - . | cat > /dev/null` of the whole version, cold; the mount daemon's
           CPU-seconds (utime + stime from /proc/PID/stat) per GiB served
  ls       `ls -lR` of the version, warm (after one untimed run)
  epoch    every image read whole in a shuffled order (fixed seed), 1 and 2 reader processes
           (bench_read_workers.py epoch), cold then warm (the same epoch again at once)
  bigfile  `dd bs=1M` of the largest file, cold (with daemon CPU per GiB) then warm
  fio      `fio --rw=randread` of the largest file, bs 4k and 128k, 1 and 4 jobs, time-bound:
           cold (fresh mount, caches dropped, per configuration) and warm (file cached by dd)
  stall    dsfs only: latency of small whole-file reads of not-yet-cached files of @v1
           (bench_read_workers.py probe, one every --stall-interval-ms) while nothing else runs,
           while `dsfs commit` records ~--commit-mb MB written into @head, and while the
           daemon's periodic 30 s @head sync writes back what was just written into @head
  find     `find . -type f | wc -l` over a version of --files small files (the
           `bench manyfiles` tree, 1,000 a directory), first pass cold and a second pass warm;
           native and dsfs only (its stores are kept under WORKDIR/repos/find-* for the next
           run, keyed by the dsfs build)

Cold = page cache dropped (`echo 3 > /proc/sys/vm/drop_caches`) and, for a mount, the daemon
freshly mounted. Every repeat runs every target, the dsfs builds in alternating order.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_head_data import bench_module

B = bench_module()

import bench_read_report  # noqa: E402  (uses B, loaded above)

Json = dict[str, Any]
Target = Any  # bench.MountTarget
MB = 1_000_000
MIB = 1024 * 1024
GIB = 1024 * MIB
WORKERS = Path(__file__).resolve().with_name("bench_read_workers.py")
PARTS = ("tar", "ls", "epoch", "bigfile", "fio", "stall", "find")
READ_TOOLS = ("dsfs", "borg", "restic")
FIO_CONFIGS = (("4k", 1), ("4k", 4), ("128k", 1), ("128k", 4))
EPOCH_READERS = (1, 2)
HEAD_SYNC_PERIOD = 30.0  # daemon/headservice.py: HEAD_SYNC_SECONDS
# x86_64 system calls that write back to disk: a daemon thread inside one of them is syncing
SYNC_SYSCALLS = {74: "fsync", 75: "fdatasync", 162: "sync", 277: "sync_file_range", 306: "syncfs"}
STALL_MS = 20.0  # the bound for a pause


def parse_parts(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = sorted(set(names) - set(PARTS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose parts from {','.join(PARTS)}")
    return [p for p in PARTS if p in names]


def add_read_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", type=float, default=0.5, help="dataset scale (default 0.5 = ~1 GB)")
    p.add_argument("--seed", type=int, default=1, help="dataset and shuffle seed (default 1)")
    p.add_argument("--repeat", type=int, default=3, help="runs per target (default 3)")
    p.add_argument(
        "--tools",
        type=lambda text: B.parse_tools(text, READ_TOOLS),
        default=["dsfs", "borg"],
        help=f"comma-separated subset of {','.join(READ_TOOLS)} (default dsfs,borg); native is "
        "always measured",
    )
    p.add_argument(
        "--parts",
        type=parse_parts,
        default=list(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)} (default: all)",
    )
    p.add_argument(
        "--files",
        type=int,
        default=1_000_000,
        help="files in the version of the find part (default 1,000,000)",
    )
    p.add_argument(
        "--fio-seconds", type=float, default=3.0, help="runtime of each fio run (default 3)"
    )
    p.add_argument(
        "--commit-mb",
        type=int,
        default=1024,
        help="MiB written into @head (files of 64 MiB) for the commit of the stall part "
        "(default 1024)",
    )
    p.add_argument(
        "--sync-mb",
        type=int,
        default=256,
        help="MiB written into @head (files of 256 KiB) before the periodic sync of the stall "
        "part (default 256)",
    )
    p.add_argument(
        "--stall-interval-ms",
        type=float,
        default=5.0,
        help="one probe read starts every this many ms (default 5)",
    )
    p.add_argument(
        "--stall-idle-seconds",
        type=float,
        default=5.0,
        help="length of the probe without background work (default 5)",
    )
    p.add_argument(
        "--no-drop-caches",
        action="store_true",
        help="never drop the page cache, so 'cold' figures are warm: only for smoke tests",
    )
    B.add_dsfs_before_arg(p)


@dataclass
class Ctx:
    args: argparse.Namespace
    runner: Any
    drop: Callable[[], None]
    tree: Path
    source: Any  # TreeStats
    images: int
    image_bytes: int
    image_list: Path
    big: Path  # relative to the version root
    big_size: int
    limit: float
    facts: Json = field(default_factory=dict)


def image_files(tree: Path) -> list[tuple[str, int]]:
    """Every file under images/ (relative path, size), sorted."""
    found = []
    for dirpath, _, names in os.walk(tree / "images"):
        for name in names:
            path = Path(dirpath, name)
            found.append((str(path.relative_to(tree)), path.stat().st_size))
    return sorted(found)


def json_output(log: Path) -> Any:
    text = log.read_text(errors="replace").split("\n", 1)[-1]
    start = text.find("{")
    if start < 0:
        raise B.ToolFailed(f"no JSON output (log: {log})")
    return json.JSONDecoder().raw_decode(text[start:])[0]


def daemon_cpu(t: Target) -> float | None:
    return B.proc_cpu_seconds(B.mount_daemons(t.mnt)) if t.mnt else None


def cpu_per_gib(before: float | None, after: float | None, size: int) -> float | None:
    if before is None or after is None or not size:
        return None
    return (after - before) / (size / GIB)


@contextlib.contextmanager
def mounted(t: Target) -> Iterator[None]:
    """A fresh mount for one session (nothing for native)."""
    t.mount()
    try:
        yield
    finally:
        t.unmount()


# ---------------------------------------------------------------------------------------------
# sessions: each starts a fresh mount


def session_tar(ctx: Ctx, t: Target, r: Json) -> None:
    parts = ctx.args.parts
    ctx.drop()
    with mounted(t):
        if "tar" in parts:
            ctx.drop()
            c0 = daemon_cpu(t)
            r["tar_seconds"] = t.shell("tar (cold)", B.TAR, t.root(), ctx.limit)
            r["tar_daemon_cpu_per_gib"] = cpu_per_gib(c0, daemon_cpu(t), ctx.source.bytes)
            r.update(t.daemon_memory())
        if "ls" in parts:
            t.shell("ls -lR (warm-up)", B.LS_LR, t.root(), ctx.limit)
            r["ls_lR_seconds"] = t.shell("ls -lR (warm)", B.LS_LR, t.root(), ctx.limit)
    B.log(
        f"{t.key}: tar {B.fmt_s(r.get('tar_seconds'))} s, "
        f"{B.fmt_num(r.get('tar_daemon_cpu_per_gib'), 2)} daemon CPU s/GiB; "
        f"ls -lR {B.fmt_s(r.get('ls_lR_seconds'))} s"
    )


def run_epoch(ctx: Ctx, t: Target, readers: int, state: str) -> float:
    cmd = [
        sys.executable,
        str(WORKERS),
        "epoch",
        "--root",
        str(t.root()),
        "--list",
        str(ctx.image_list),
        "--readers",
        str(readers),
        "--expect-bytes",
        str(ctx.image_bytes),
    ]
    t.run(f"epoch, {readers} reader(s) ({state})", cmd, timeout=ctx.limit)
    return float(json_output(ctx.runner.last_log)["seconds"])


def session_epoch(ctx: Ctx, t: Target, r: Json, readers: int) -> None:
    with mounted(t):
        ctx.drop()
        r[f"epoch{readers}_cold_seconds"] = run_epoch(ctx, t, readers, "cold")
        r[f"epoch{readers}_warm_seconds"] = run_epoch(ctx, t, readers, "warm")
    r[f"epoch{readers}_warm_us_per_file"] = r[f"epoch{readers}_warm_seconds"] / ctx.images * 1e6
    B.log(
        f"{t.key}: epoch with {readers} reader(s): cold {r[f'epoch{readers}_cold_seconds']:.2f} "
        f"s, warm {r[f'epoch{readers}_warm_seconds']:.2f} s "
        f"({r[f'epoch{readers}_warm_us_per_file']:.0f} µs per file)"
    )


def fio_key(bs: str, jobs: int, state: str) -> str:
    return f"fio_{bs}_{jobs}j_{state}"


def run_fio(ctx: Ctx, t: Target, bs: str, jobs: int, state: str, r: Json) -> None:
    cmd = [
        "fio",
        "--name=randread",
        f"--filename={t.root() / ctx.big}",
        "--rw=randread",
        f"--bs={bs}",
        f"--numjobs={jobs}",
        "--direct=0",
        "--ioengine=psync",
        "--invalidate=0",  # keep the page cache as it is (fio drops the file's pages otherwise)
        "--readonly",
        # warm: the whole runtime; cold: one pass over the file in a random order (fio's random
        # map reads every block once), ending early when the runtime is up
        *(["--time_based"] if state == "warm" else []),
        f"--runtime={ctx.args.fio_seconds:g}",
        "--group_reporting",
        "--output-format=json",
    ]
    t.run(f"fio randread bs={bs} numjobs={jobs} ({state})", cmd, timeout=ctx.limit)
    job = json_output(ctx.runner.last_log)["jobs"][0]["read"]
    key = fio_key(bs, jobs, state)
    r[f"{key}_iops"] = float(job["iops"])
    r[f"{key}_mb_per_s"] = float(job["bw_bytes"]) / MB
    B.log(f"{t.key}: fio {bs} x{jobs} {state}: {job['iops']:,.0f} IOPS")


def session_big(ctx: Ctx, t: Target, r: Json) -> None:
    parts = ctx.args.parts
    with mounted(t):
        if "bigfile" in parts:
            dd = ["dd", f"if={ctx.big}", "of=/dev/null", "bs=1M"]
            ctx.drop()
            c0 = daemon_cpu(t)
            r["dd_cold_seconds"] = t.run("dd (cold)", dd, t.root(), ctx.limit).seconds
            r["dd_daemon_cpu_per_gib"] = cpu_per_gib(c0, daemon_cpu(t), ctx.big_size)
            r["dd_warm_seconds"] = t.run("dd (warm, right after)", dd, t.root(), ctx.limit).seconds
            r["dd_cold_mb_per_s"] = ctx.big_size / MB / r["dd_cold_seconds"]
            r["dd_warm_mb_per_s"] = ctx.big_size / MB / r["dd_warm_seconds"]
            B.log(
                f"{t.key}: dd cold {r['dd_cold_mb_per_s']:.0f} MB/s, warm "
                f"{r['dd_warm_mb_per_s']:.0f} MB/s"
            )
        if "fio" in parts:
            if "bigfile" not in parts:  # the warm fio runs read a cached file
                t.run("cat (warm-up)", ["cat", str(ctx.big)], t.root(), ctx.limit)
            for bs, jobs in FIO_CONFIGS:
                run_fio(ctx, t, bs, jobs, "warm", r)


def session_fio_cold(ctx: Ctx, t: Target, r: Json) -> None:
    for bs, jobs in FIO_CONFIGS:
        with mounted(t):
            ctx.drop()
            run_fio(ctx, t, bs, jobs, "cold", r)


# ---------------------------------------------------------------------------------------------
# stall: probe reads while a commit or the periodic @head sync runs


class SyncWatch:
    """Samples the system call of every thread of the processes serving a mount, every few ms,
    and keeps the times at which one of them was inside fsync/fdatasync/syncfs/sync."""

    def __init__(self, mnt: Path, period: float = 0.004) -> None:
        self.pids = B.mount_daemons(mnt)
        self.period = period
        self.hits: list[float] = []
        self.samples = 0
        self.readable = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tasks(self) -> list[str]:
        found = []
        for pid in self.pids:
            with contextlib.suppress(OSError):
                found += [
                    f"/proc/{pid}/task/{tid}/syscall" for tid in os.listdir(f"/proc/{pid}/task")
                ]
        return found

    def _run(self) -> None:
        tasks = self._tasks()
        refreshed = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now - refreshed > 0.5:  # threads come and go
                tasks, refreshed = self._tasks(), now
            self.samples += 1
            for path in tasks:
                try:
                    with open(path, "rb") as f:
                        first = f.read(16).split(b" ", 1)[0]
                except OSError:
                    continue
                self.readable = True
                if first.isdigit() and int(first) in SYNC_SYSCALLS:
                    self.hits.append(now)
                    break
            self._stop.wait(self.period)

    def start(self) -> SyncWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def last_quiet(self, since: float, quiet: float) -> bool:
        """A sync was seen after `since` and none for `quiet` seconds."""
        hits = [h for h in self.hits if h >= since]
        return bool(hits) and time.monotonic() - hits[-1] > quiet


def latency_stats(starts: Sequence[float], lats: Sequence[float], w0: float, w1: float) -> Json:
    """Statistics of the reads that overlap [w0, w1] (times from CLOCK_MONOTONIC)."""
    sel = sorted(lat for s, lat in zip(starts, lats, strict=True) if s <= w1 and s + lat >= w0)
    if not sel:
        return {"reads": 0}

    def pct(q: float) -> float:
        return sel[min(len(sel) - 1, round(q * (len(sel) - 1)))] * 1000

    return {
        "reads": len(sel),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": sel[-1] * 1000,
        "over_20ms": sum(1 for x in sel if x * 1000 > STALL_MS),
        "window_seconds": w1 - w0,
    }


def probe_during(
    ctx: Ctx, t: Target, scenario: str, action: Callable[[], tuple[float, float, Json]]
) -> Json:
    """Run the probe reader; 1 s later action() (returns its window and facts); 1 s after that
    stop the probe. Returns the statistics of the reads that overlap the window."""
    base = ctx.args.workdir / "read" / "probe"
    base.mkdir(parents=True, exist_ok=True)
    stop, ready, out = base / "stop", base / "ready", base / "out.json"
    for f in (stop, ready, out):
        f.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        str(WORKERS),
        "probe",
        "--root",
        str(t.root()),
        "--list",
        str(ctx.image_list),
        "--interval-ms",
        f"{ctx.args.stall_interval_ms:g}",
        "--max-seconds",
        "600",
        "--stop-file",
        str(stop),
        "--ready-file",
        str(ready),
        "--out",
        str(out),
    ]
    t.own_commands[f"probe ({scenario}; in the background)"] = B.describe(cmd, None, {}) + " &"
    logfile = ctx.runner.logdir / f"{t.key.replace(' ', '-')}-probe-{scenario}.log"
    with open(logfile, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise B.ToolFailed(f"the probe reader did not start (log: {logfile})")
            time.sleep(0.01)
        time.sleep(1.0)
        w0, w1, facts = action()
        time.sleep(1.0)
        stop.write_text("stop\n")
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or not out.exists():
        raise B.ToolFailed(f"the probe reader failed with {proc.returncode} (log: {logfile})")
    got = json.loads(out.read_text())
    stats = latency_stats(got["starts"], got["latencies"], w0, w1)
    stats.update(facts, wrapped=got["wrapped"], probe_reads=len(got["starts"]))
    B.log(
        f"{t.key}: stall {scenario}: {stats['reads']} reads in {w1 - w0:.1f} s, p50 "
        f"{B.fmt_num(stats.get('p50_ms'), 2)} ms, p99 {B.fmt_num(stats.get('p99_ms'), 1)} ms, "
        f"max {B.fmt_num(stats.get('max_ms'), 1)} ms"
    )
    return stats


def write_random(path: Path, size: int, seed: int) -> None:
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        for off in range(0, size, MIB):
            f.write(rnd.randbytes(min(MIB, size - off)))


def write_files(d: Path, total: int, each: int, seed: int) -> int:
    d.mkdir(parents=True, exist_ok=True)
    n = max(1, total // each)
    for i in range(n):
        write_random(d / f"part-{i:05d}.bin", each, seed * 1_000_003 + i)
    return n


def stall_idle(ctx: Ctx, t: Target) -> Json:
    def action() -> tuple[float, float, Json]:
        w0 = time.monotonic()
        time.sleep(ctx.args.stall_idle_seconds)
        return w0, time.monotonic(), {}

    with mounted(t):
        ctx.drop()
        return probe_during(ctx, t, "idle", action)


def stall_commit(ctx: Ctx, t: Target, rep: int) -> Json:
    with mounted(t):
        d = t.mnt / "@head" / f"bench-commit-{rep}"
        t0 = time.perf_counter()
        files = write_files(d, ctx.args.commit_mb * MIB, 64 * MIB, seed=1000 + rep)
        B.log(
            f"{t.key}: wrote {ctx.args.commit_mb} MiB into {d} in {time.perf_counter() - t0:.1f} s"
        )
        ctx.drop()  # also writes back the overlays: the commit reads them from the disk

        def action() -> tuple[float, float, Json]:
            cmd = t.tool._cmd("commit", "--json", "-q", "-m", f"bench read: stall {rep}")
            w0 = time.monotonic()
            timing = t.run("commit (under the probe)", cmd, timeout=ctx.limit, tool_env=True)
            w1 = time.monotonic()
            reply = json_output(ctx.runner.last_log)
            facts = {
                "commit_seconds": timing.seconds,
                "commit_files": files,
                "commit_version": reply.get("version"),
            }
            return w0, w1, facts

        return probe_during(ctx, t, "commit", action)


def stall_sync(ctx: Ctx, t: Target, rep: int) -> Json:
    with mounted(t):
        ready = time.monotonic()  # the daemon's sync timer started just before it said ready
        ctx.drop()
        d = t.mnt / "@head" / f"bench-sync-{rep}"
        files = write_files(d, ctx.args.sync_mb * MIB, 256 * 1024, seed=2000 + rep)
        written = time.monotonic()
        B.log(f"{t.key}: wrote {ctx.args.sync_mb} MiB into {d} in {written - ready:.1f} s")
        expected = ready + HEAD_SYNC_PERIOD
        while expected < written + 4:  # the sync came during the writes: wait for the next one
            expected += HEAD_SYNC_PERIOD
        watch = SyncWatch(t.mnt).start()
        try:
            time.sleep(max(0.0, expected - 4 - time.monotonic()))

            def action() -> tuple[float, float, Json]:
                start = time.monotonic()
                deadline = expected + 20
                while time.monotonic() < deadline and not watch.last_quiet(expected - 3, 1.5):
                    time.sleep(0.05)
                hits = [h for h in watch.hits if h >= start]
                facts: Json = {
                    "sync_observed": bool(hits),
                    "sync_files_written": files,
                    "sync_expected_after_mount": expected - ready,
                    "syscall_samples": watch.samples,
                    "syscall_readable": watch.readable,
                }
                if hits:
                    facts["sync_seconds"] = hits[-1] - hits[0]
                    return hits[0] - watch.period, hits[-1] + watch.period, facts
                return expected - 1, expected + 5, facts

            stats = probe_during(ctx, t, "sync", action)
        finally:
            watch.stop()
        t.run("reset (untimed)", t.tool._cmd("reset", "--yes", "-q"), timeout=120, tool_env=True)
        return stats


def session_stall(ctx: Ctx, t: Target, r: Json, rep: int) -> None:
    for scenario, fn in (
        ("idle", lambda: stall_idle(ctx, t)),
        ("commit", lambda: stall_commit(ctx, t, rep)),
        ("sync", lambda: stall_sync(ctx, t, rep)),
    ):
        stats = fn()
        r.update({f"stall_{scenario}_{k}": v for k, v in stats.items()})


def measure(ctx: Ctx, t: Target, r: Json, rep: int) -> None:
    parts = ctx.args.parts
    if "tar" in parts or "ls" in parts:
        session_tar(ctx, t, r)
    if "epoch" in parts:
        for readers in EPOCH_READERS:
            session_epoch(ctx, t, r, readers)
    if "bigfile" in parts or "fio" in parts:
        session_big(ctx, t, r)
    if "fio" in parts:
        session_fio_cold(ctx, t, r)
    if "stall" in parts and isinstance(t, B.DsfsMount):
        session_stall(ctx, t, r, rep)


# ---------------------------------------------------------------------------------------------
# find over a version of many files


@dataclass
class FindRow:
    key: str
    target: Target
    runs: list[Json] = field(default_factory=list)
    error: str | None = None
    median: Json | None = None
    facts: Json = field(default_factory=dict)


def find_store(ctx: Ctx, key: str, slug: str, exe: Path, tree: Path) -> Target:
    """A store holding the tree as v1, imported once per dsfs build and kept for later runs."""
    args = ctx.args
    tool = B.Dsfs(ctx.runner, Path(), exe)
    tool.ensure_installed()
    build = hashlib.blake2b(os.fsencode(os.path.realpath(tool.exe)), digest_size=4).hexdigest()
    home = args.workdir / "repos" / f"find-{args.files}-seed{args.seed}-{build}"
    tool.home, tool.store = home, home / "store"
    stamp = {"files": args.files, "seed": args.seed, "exe": str(tool.exe), "dsfs": tool.version()}
    t = B.DsfsMount(key, ctx.runner, tool, args.workdir / "mnt" / f"find-{slug}")
    t.rel, t.tree = Path("@v1"), tree
    t.clear_mountpoint()
    with contextlib.suppress(OSError, ValueError):
        if json.loads((home / "stamp.json").read_text()) == stamp and (home / "store").is_dir():
            B.log(f"{key}: reusing the store {home / 'store'}")
            return t
    B.log(f"{key}: importing {args.files:,} files into {home / 'store'}")
    tool.fresh(tree)
    timing = tool.ingest(tree, "v1")
    B.log(f"{key}: imported in {timing.seconds:.1f} s")
    (home / "stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
    return t


FIND = "find . -type f | wc -l"


def find_pass(ctx: Ctx, t: Target, state: str) -> float:
    seconds = t.shell(f"find ({state})", FIND, t.root(), ctx.limit + 3600)
    got = ctx.runner.last_log.read_text().splitlines()[-1].strip()
    if got != str(ctx.args.files):
        raise B.ToolFailed(f"`{FIND}` in {t.root()} counted {got}, not {ctx.args.files}")
    return seconds


def run_find(ctx: Ctx) -> list[FindRow]:
    args, runner = ctx.args, ctx.runner
    base = args.workdir / "data" / f"manyfiles-{args.files}-dirs-seed{args.seed}"
    tree = base / "data"  # the tree `scripts/bench manyfiles` makes and keeps
    gen = ["manyfiles", str(tree), "--count", str(args.files), "--seed", str(args.seed)]
    stamp = {"kind": "manyfiles", "count": args.files, "flat": False, "seed": args.seed}
    if B.reuse_or_generate(runner, base, tree, stamp, gen):
        B.TouchedFile(base, tree, runner).restore()  # left changed by an interrupted manyfiles
    native = B.MountTarget("native", runner, None, None)
    native.tree = tree
    rows = [FindRow("native", native)]
    for key, slug, exe in B.dsfs_builds(args):
        try:
            rows.append(FindRow(key, find_store(ctx, key, slug, exe, tree)))
        except B.ToolFailed as e:
            row = FindRow(key, None, error=f"import: {e}")
            rows.append(row)
            B.log(f"{key} FAILED: {row.error}")
    for rep in range(args.repeat):
        for row in B.alternate(rows, rep):
            if row.error:
                continue
            t, r = row.target, {}
            B.log(f"find: repeat {rep + 1}/{args.repeat}: {row.key}")
            try:
                ctx.drop()
                with mounted(t):
                    ctx.drop()
                    r["find_cold_seconds"] = find_pass(ctx, t, "first pass, cold")
                    r["find_warm_seconds"] = find_pass(ctx, t, "second pass, warm")
                    r.update(t.daemon_memory())
                B.log(
                    f"{row.key}: find cold {r['find_cold_seconds']:.2f} s, warm "
                    f"{r['find_warm_seconds']:.2f} s"
                )
            except (B.ToolFailed, OSError) as e:
                row.error = f"repeat {rep + 1}: {e}{t.failure_details()}"
                B.log(f"{row.key} FAILED: {row.error}")
            if r:
                row.runs.append(r)
    ctx.facts["find_tree"] = str(tree)
    return rows


# ---------------------------------------------------------------------------------------------


def prepare(args: argparse.Namespace, runner: Any, drop: Callable[[], None]) -> Ctx:
    if args.parts == ["find"]:  # the find part brings its own tree
        none = B.TreeStats(0, 0, 0)
        return Ctx(args, runner, drop, Path(), none, 0, 0, Path(), Path(), 0, 600 + 1800)
    data = B.prepare_ingest_data(args, runner)
    tree = data.pristine
    images = image_files(tree)
    if not images:
        raise B.BenchError(f"no files under {tree}/images")
    order = [name for name, _ in images]
    random.Random(args.seed).shuffle(order)
    image_list = args.workdir / "read" / f"epoch-scale{args.scale:g}-seed{args.seed}.txt"
    image_list.parent.mkdir(parents=True, exist_ok=True)
    image_list.write_text("\n".join(order) + "\n")
    _, big, big_size = B.sample_files(tree)
    return Ctx(
        args=args,
        runner=runner,
        drop=drop,
        tree=tree,
        source=B.tree_stats(tree),
        images=len(images),
        image_bytes=sum(size for _, size in images),
        image_list=image_list,
        big=big,
        big_size=big_size,
        limit=600 + 1800 * args.scale,
    )


def run_read(args: argparse.Namespace) -> Any:
    if args.scale <= 0 or args.files < 1:
        raise B.BenchError("--scale must be > 0 and --files >= 1")
    if args.cold or args.no_sync:
        raise B.BenchError("read takes neither --cold nor --no-sync: it says what is cold")
    runner = B.Runner(args.workdir, cold=False)
    drop: Callable[[], None] = (lambda: None) if args.no_drop_caches else B.drop_page_cache
    try:
        drop()
    except OSError as e:
        raise B.BenchError(f"read needs a writable /proc/sys/vm/drop_caches: {e}") from e
    if "fio" in args.parts and not shutil.which("fio"):
        B.apt_install("fio", "fio")
    mount_parts = [p for p in args.parts if p != "find"]
    targets = B.make_mount_targets(args, runner, prefix="read") if mount_parts else []
    ctx = prepare(args, runner, drop)
    load = [os.getloadavg()[0]]
    started = time.perf_counter()
    find_rows: list[FindRow] = []
    restore = B.stop_signals()
    try:
        for t in targets:
            try:
                t.setup(ctx.tree)
            except (B.ToolFailed, OSError) as e:
                t.error = f"setup: {e}{t.failure_details()}"
                B.log(f"{t.key} FAILED: {t.error}")
        for rep in range(args.repeat if targets else 0):
            for t in B.alternate(targets, rep):
                if t.error:
                    continue
                B.log(f"repeat {rep + 1}/{args.repeat}: {t.key}")
                r: Json = {}
                try:
                    measure(ctx, t, r, rep)
                except (B.ToolFailed, OSError) as e:
                    t.error = f"repeat {rep + 1}: {e}{t.failure_details()}"
                    r["failed"] = True
                    B.log(f"{t.key} FAILED: {t.error}")
                if r:
                    t.runs.append(r)
        if "find" in args.parts:
            find_rows = run_find(ctx)
    except KeyboardInterrupt as e:
        raise B.BenchError(f"interrupted ({str(e) or 'SIGINT'}): every mount was unmounted") from e
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
        try:
            for t in [*targets, *(row.target for row in find_rows if row.target)]:
                t.unmount()
                if t.mnt is not None and not B.is_mounted(t.mnt):
                    with contextlib.suppress(OSError):
                        t.mnt.rmdir()
            if not args.keep:
                for t in targets:
                    t.cleanup()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            restore()
    load.append(os.getloadavg()[0])
    ctx.facts.update(load_1min=load, minutes=(time.perf_counter() - started) / 60)
    for t in targets:
        t.median = summarize(t.runs) if t.runs else None
    for row in find_rows:
        row.median = summarize(row.runs) if row.runs else None
    return bench_read_report.make(ctx, targets, find_rows)


def summarize(runs: Sequence[Json]) -> Json:
    keys = sorted({k for r in runs for k, v in r.items() if isinstance(v, int | float)})
    out: Json = {}
    for k in keys:
        values = [r[k] for r in runs if isinstance(r.get(k), int | float)]
        if values and not isinstance(values[0], bool):
            out[k] = statistics.median(values)
    for k in keys:  # the worst pause over every repeat, beside the median
        if k.endswith("_max_ms"):
            out[k.replace("_max_ms", "_worst_ms")] = max(r[k] for r in runs if k in r)
    out["complete_runs"] = sum(1 for r in runs if not r.get("failed"))
    return out
