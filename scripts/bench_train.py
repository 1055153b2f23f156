"""`scripts/bench train`: a real data loader over a version and over the local disk (issue 10).

--images JPEG images of 20-200 KB (mixed sizes and shapes, 10 classes, an annotations.csv
index) are generated once with Pillow (bench_train_loader.py generate) under WORKDIR/data and
stored by each tool (dsfs `import`; with --tools also borg). Each epoch runs
bench_train_loader.py epoch over the version root: a PyTorch-style Dataset (open, PIL decode,
RGB, resize to 224x224, float32 CHW array) through a DataLoader-style loader (shuffled indices,
batches of 32, 0 workers = in-process, 2 workers = two processes as torch's DataLoader uses
them); torch's own DataLoader when torch is importable in the bench's environment.

Pillow and numpy live in the bench's own virtualenv (WORKDIR/train-venv, made on first use with
`pip install pillow numpy`), never in dsfs's. For every worker count: a fresh mount, the page
cache dropped, one epoch (cold), then the same epoch again (warm). Every repeat runs every
target, the dsfs builds in alternating order.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench_head_data import bench_module

B = bench_module()

Json = dict[str, Any]
Target = Any  # bench.MountTarget
MB = 1_000_000
LOADER = Path(__file__).resolve().with_name("bench_train_loader.py")
TRAIN_TOOLS = ("dsfs", "borg")
PACKAGES = ("pillow", "numpy")
STATES = ("cold", "warm")


def parse_workers(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 0:
        raise argparse.ArgumentTypeError("a comma-separated list of worker counts, e.g. 0,2")
    return list(dict.fromkeys(counts))


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=int, default=3000, help="JPEG images (default 3,000)")
    p.add_argument("--seed", type=int, default=1, help="images and shuffle seed (default 1)")
    p.add_argument("--repeat", type=int, default=3, help="runs per target (default 3)")
    p.add_argument(
        "--tools",
        type=lambda text: B.parse_tools(text, TRAIN_TOOLS),
        default=["dsfs"],
        help=f"comma-separated subset of {','.join(TRAIN_TOOLS)} (default dsfs); native is "
        "always measured",
    )
    p.add_argument(
        "--workers", type=parse_workers, default=[0, 2], help="loader workers (default 0,2)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    p.add_argument(
        "--no-drop-caches",
        action="store_true",
        help="never drop the page cache, so 'cold' figures are warm: only for smoke tests",
    )
    B.add_dsfs_before_arg(p)


def ensure_venv(workdir: Path) -> Path:
    """WORKDIR/train-venv with Pillow and numpy; its python."""
    venv = workdir / "train-venv"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import PIL, numpy"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    B.log(f"creating {venv} with {' '.join(PACKAGES)} (the bench's own environment)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", *PACKAGES],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    except (OSError, subprocess.CalledProcessError) as e:
        raise B.BenchError(f"could not install {', '.join(PACKAGES)} into {venv}: {e}") from e
    return python


def package_versions(runner: Any, python: Path) -> str:
    code = (
        "import PIL, numpy\n"
        "try:\n import torch; t = 'torch ' + torch.__version__\n"
        "except ImportError:\n t = 'no torch'\n"
        "print(f'Pillow {PIL.__version__}, numpy {numpy.__version__}, {t}')"
    )
    return (runner.capture([str(python), "-c", code]) or "?").strip()


def images_tree(args: argparse.Namespace, runner: Any, python: Path) -> Path:
    base = args.workdir / "data" / f"train-{args.images}-seed{args.seed}"
    tree = base / "data"
    stamp = {
        "kind": "train",
        "images": args.images,
        "seed": args.seed,
        "generator_sha256": hashlib.sha256(LOADER.read_bytes()).hexdigest(),
    }
    with contextlib.suppress(OSError, ValueError):
        if json.loads((base / "stamp.json").read_text()) == stamp and tree.is_dir():
            B.log(f"reusing {tree}")
            return tree
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    B.log(f"generating {args.images:,} JPEG images in {tree}")
    t0 = time.perf_counter()
    cmd = [str(python), str(LOADER), "generate", str(tree), "--images", str(args.images)]
    runner.run([*cmd, "--seed", str(args.seed)], "train-generate")
    B.log(f"generated in {time.perf_counter() - t0:.1f} s")
    (base / "stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
    return tree


def run_epoch(
    args: argparse.Namespace, runner: Any, python: Path, t: Target, workers: int, state: str
) -> Json:
    """One epoch; its JSON, plus the CPU-seconds of the loader (with its workers) and of the
    mount daemon(s) during it."""
    cmd = [
        str(python),
        str(LOADER),
        "epoch",
        "--root",
        str(t.root()),
        "--workers",
        str(workers),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        str(args.seed),
    ]
    daemons = B.mount_daemons(t.mnt) if t.mnt else []
    before = B.proc_cpu_seconds(daemons)
    timing = t.run(f"epoch, {workers} workers ({state})", cmd, timeout=3600)
    after = B.proc_cpu_seconds(daemons)
    text = runner.last_log.read_text(errors="replace").split("\n", 1)[-1]
    start = text.find("{")
    if start < 0:
        raise B.ToolFailed(f"no JSON from the loader (log: {runner.last_log})")
    out: Json = json.JSONDecoder().raw_decode(text[start:])[0]
    out["loader_cpu_seconds"] = timing.cpu_seconds
    out["daemon_cpu_seconds"] = after - before if before is not None and after else None
    return out


def measure(
    args: argparse.Namespace,
    runner: Any,
    python: Path,
    drop: Callable[[], None],
    t: Target,
    workers: int,
    r: Json,
) -> None:
    """A fresh mount, the page cache dropped, one epoch (cold), the same again (warm)."""
    drop()
    t.mount()
    try:
        drop()
        got = {state: run_epoch(args, runner, python, t, workers, state) for state in STATES}
    finally:
        t.unmount()
    for state, e in got.items():
        r[f"w{workers}_{state}_seconds"] = e["seconds"]
        r[f"w{workers}_{state}_loader_cpu_seconds"] = e["loader_cpu_seconds"]
        if e["daemon_cpu_seconds"] is not None:
            r[f"w{workers}_{state}_daemon_cpu_seconds"] = e["daemon_cpu_seconds"]
    r["loader"] = got["cold"]["loader"]
    B.log(
        f"{t.key}: {workers} workers: cold {got['cold']['seconds']:.2f} s, warm "
        f"{got['warm']['seconds']:.2f} s ({r['loader']})"
    )


def summarize(runs: Sequence[Json]) -> Json:
    keys = sorted({k for r in runs for k, v in r.items() if isinstance(v, int | float)})
    out: Json = {k: statistics.median([r[k] for r in runs if k in r]) for k in keys}
    out["loader"] = runs[-1].get("loader")
    return out


def run_train(args: argparse.Namespace) -> Any:
    if args.images < 1 or args.batch_size < 1:
        raise B.BenchError("--images and --batch-size must be >= 1")
    if args.cold or args.no_sync:
        raise B.BenchError("train takes neither --cold nor --no-sync: it says what is cold")
    runner = B.Runner(args.workdir, cold=False)
    drop: Callable[[], None] = (lambda: None) if args.no_drop_caches else B.drop_page_cache
    try:
        drop()
    except OSError as e:
        raise B.BenchError(f"train needs a writable /proc/sys/vm/drop_caches: {e}") from e
    python = ensure_venv(args.workdir)
    packages = package_versions(runner, python)
    tree = images_tree(args, runner, python)
    source = B.tree_stats(tree)
    targets = B.make_mount_targets(args, runner, prefix="train")
    started, load = time.perf_counter(), [os.getloadavg()[0]]
    restore = B.stop_signals()
    try:
        for t in targets:
            try:
                t.setup(tree)
            except (B.ToolFailed, OSError) as e:
                t.error = f"setup: {e}{t.failure_details()}"
                B.log(f"{t.key} FAILED: {t.error}")
        for rep in range(args.repeat):
            runs: dict[str, Json] = {t.key: {} for t in targets}
            for workers in args.workers:  # the targets take turns every two epochs
                for t in B.alternate(targets, rep):
                    if t.error:
                        continue
                    B.log(f"repeat {rep + 1}/{args.repeat}, {workers} workers: {t.key}")
                    try:
                        measure(args, runner, python, drop, t, workers, runs[t.key])
                    except (B.ToolFailed, OSError) as e:
                        t.error = f"repeat {rep + 1}: {e}{t.failure_details()}"
                        B.log(f"{t.key} FAILED: {t.error}")
            for t in targets:
                if runs[t.key]:
                    t.runs.append(runs[t.key])
    except KeyboardInterrupt as e:
        raise B.BenchError(f"interrupted ({str(e) or 'SIGINT'}): every mount was unmounted") from e
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for t in targets:
                t.unmount()
                if not args.keep:
                    t.cleanup()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            restore()
    load.append(os.getloadavg()[0])
    for t in targets:
        t.median = summarize(t.runs) if t.runs else None
    facts = {
        "minutes": (time.perf_counter() - started) / 60,
        "load_1min": load,
        "packages": packages,
        "source": str(tree),
        "files": source.files,
        "bytes": source.bytes,
    }
    return report(args, targets, facts)


def runs_of(targets: Sequence[Target], key: str) -> Callable[[Json], str]:
    by_key = {t.key: t for t in targets}

    def cell(m: Json) -> str:
        values = [r.get(key) for r in by_key[m["key"]].runs]
        return ", ".join(B.fmt_s(v) for v in values if v is not None) or "n/a"

    return cell


def report(args: argparse.Namespace, targets: Sequence[Target], facts: Json) -> Any:
    m = B.machine_info(args.workdir)
    versions = {t.key: t.version() for t in targets}
    native = targets[0].median

    def x(key: str) -> Callable[[Json], str]:
        def cell(med: Json) -> str:
            base = native.get(key) if native else None
            return B.fmt_num(med[key] / base, 2) if base and med.get(key) else "n/a"

        return cell

    def secs(key: str) -> Callable[[Json], str]:
        return lambda med: B.fmt_s(med.get(key))

    cols: list[tuple[str, Callable[[Json], str]]] = []
    for w in args.workers:
        cols += [
            (f"{w} workers: cold s", secs(f"w{w}_cold_seconds")),
            ("× native", x(f"w{w}_cold_seconds")),
            (f"{w} workers: warm s", secs(f"w{w}_warm_seconds")),
            ("× native", x(f"w{w}_warm_seconds")),
        ]
    cpu_cols: list[tuple[str, Callable[[Json], str]]] = []
    run_cols: list[tuple[str, Callable[[Json], str]]] = []
    for w in args.workers:
        for state in STATES:
            k = f"w{w}_{state}"
            cpu_cols += [
                (f"{w} workers, {state}: loader", secs(f"{k}_loader_cpu_seconds")),
                ("daemon", secs(f"{k}_daemon_cpu_seconds")),
            ]
            run_cols.append((f"{w} workers, {state}", runs_of(targets, f"{k}_seconds")))
    rows = [B.TableRow(f"{t.key} (FAILED)" if t.error else t.key, t.median) for t in targets]
    run_rows = [B.TableRow(t.key, {"key": t.key} if t.runs else None) for t in targets]
    loader = next((t.median["loader"] for t in targets if t.median), "?")
    cache = (
        "cold = a fresh mount and `sync; echo 3 > /proc/sys/vm/drop_caches` before the epoch"
        if not args.no_drop_caches
        else "**--no-drop-caches: nothing was dropped, the 'cold' figures are warm**"
    )
    about = [
        f"- Date: {m['date']}; the run took {facts['minutes']:.1f} min; 1-minute load "
        f"{facts['load_1min'][0]:.2f} at the start, {facts['load_1min'][-1]:.2f} at the end",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, "
        f"Linux {m['kernel']}, {m['python3']}, work directory on {m['workdir_fs']}",
        f"- Page cache: {cache}; warm = the same epoch again right after",
        f"- Loader: {loader}; {facts['packages']}",
        "- Versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()),
    ]
    intro = (
        f"Images: `bench_train_loader.py generate --images {args.images} --seed {args.seed}`: "
        f"{facts['files'] - 1:,} JPEGs of 20-200 KB and annotations.csv, "
        f"{facts['bytes'] / MB:,.1f} MB at `{facts['source']}`. One epoch = every image once "
        f"in a shuffled order (seed {args.seed}), batches of {args.batch_size}: open, PIL "
        "decode, RGB, resize to 224x224 (bilinear), float32 CHW array; timed from the start of "
        f'iteration to the last batch. Medians of {args.repeat} repeat(s); "× native" = '
        "epoch time / native epoch time."
    )
    out = [
        f"### Training loader (issue 10): {args.images:,} JPEG images, {args.repeat} repeat(s)",
        "\n".join(about),
        intro,
        B.md_table("tool", rows, cols),
        "CPU-seconds of an epoch (medians): the loader = user + system time of the epoch "
        "process and its workers (from wait4); daemon = utime + stime of the mount's daemon "
        "from /proc/PID/stat before and after. On 2 cores shared with other work these move "
        "less than wall times do.",
        B.md_table("tool", rows, cpu_cols),
        "Every repeat's epoch, s (in run order):",
        B.md_table("tool", run_rows, run_cols),
        B.commands_block([(t.key, t.commands) for t in targets]),
    ]
    failed = [t for t in targets if t.error]
    if failed:
        out.append("Failed:\n\n```\n" + "\n".join(f"{t.key}: {t.error}" for t in failed) + "\n```")
    data = {
        "benchmark": "train",
        "title": out[0].lstrip("# "),
        "machine": m,
        "versions": versions,
        "params": {
            "images": args.images,
            "seed": args.seed,
            "repeat": args.repeat,
            "workers": args.workers,
            "batch_size": args.batch_size,
            "dropped_caches": not args.no_drop_caches,
        },
        "facts": facts,
        "results": {
            t.key: {"median": t.median, "runs": t.runs, "error": t.error, "commands": t.commands}
            for t in targets
        },
    }
    return B.Report("\n\n".join(out), data, failed=bool(failed))
