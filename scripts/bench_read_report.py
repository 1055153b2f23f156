"""The markdown report and JSON data of `scripts/bench read` (see bench_read.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench_head_data import B

Json = dict[str, Any]
MB = 1_000_000
FIO_CONFIGS = (("4k", 1), ("4k", 4), ("128k", 1), ("128k", 4))
EPOCH_READERS = (1, 2)
SCENARIOS = (
    ("idle", "nothing else running"),
    ("commit", "`dsfs commit` of the data written into @head"),
    ("sync", "the periodic @head sync"),
)


def num(x: float | None, digits: int = 2) -> str:
    return B.fmt_num(x, digits)


def secs(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3f}" if x < 1 else B.fmt_s(x)


def ratio(m: Json | None, base: Json | None, key: str, invert: bool = False) -> float | None:
    """m[key] / base[key] (or the inverse): x native for times, speed / native for rates."""
    if not m or not base or m.get(key) is None or not base.get(key):
        return None
    value = m[key] / base[key]
    return (1 / value if value else None) if invert else value


class Rows:
    """Rows of one table: (label, median) pairs, with the native row for ratios."""

    def __init__(self, rows: Sequence[tuple[str, Json | None]], native: Json | None) -> None:
        self.rows = rows
        self.native = native

    def table(self, columns: Sequence[tuple[str, Callable[[Json], str]]]) -> str:
        lines = [
            "| " + " | ".join(["tool", *(c[0] for c in columns)]) + " |",
            "| --- |" + " ---: |" * len(columns),
        ]
        for label, m in self.rows:
            cells = [fn(m) for _, fn in columns] if m else ["n/a"] * len(columns)
            lines.append("| " + " | ".join([label, *cells]) + " |")
        return "\n".join(lines)

    def x(self, key: str) -> Callable[[Json], str]:
        return lambda m: num(ratio(m, self.native, key))


def label(t: Any) -> str:
    return f"{t.key} (FAILED)" if t.error else t.key


def fio_table(targets: Sequence[Any]) -> str:
    native = targets[0].median if targets else None
    borg = next((t.median for t in targets if t.key == "borg"), None)
    lines = [
        "| fio randread | tool | cold IOPS | cold MB/s | cold ÷ native | cold ÷ borg "
        "| warm IOPS | warm MB/s | warm ÷ native | warm ÷ borg |",
        "| --- | --- |" + " ---: |" * 8,
    ]
    for bs, jobs in FIO_CONFIGS:
        for t in targets:
            m = t.median
            cells = []
            for state in ("cold", "warm"):
                key = f"fio_{bs}_{jobs}j_{state}"
                iops = m.get(f"{key}_iops") if m else None
                cells += [
                    num(iops, 0),
                    num(m.get(f"{key}_mb_per_s") if m else None, 1),
                    num(ratio(m, native, f"{key}_iops")),
                    num(ratio(m, borg, f"{key}_iops")) if borg else "-",
                ]
            lines.append(f"| bs={bs}, {jobs} job(s) | {label(t)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stall_table(targets: Sequence[Any]) -> str:
    lines = [
        "| build | while | reads | p50 ms | p99 ms | max ms | worst max ms | reads > 20 ms "
        "| background s |",
        "| --- | --- |" + " ---: |" * 7,
    ]
    for t in targets:
        m = t.median
        if m is None or "stall_idle_reads" not in m:
            continue
        for scen, what in SCENARIOS:
            p = f"stall_{scen}_"
            background = {
                "idle": None,
                "commit": m.get(p + "commit_seconds"),
                "sync": m.get(p + "sync_seconds"),
            }[scen]
            lines.append(
                f"| {label(t)} | {what} | {num(m.get(p + 'reads'), 0)} | "
                f"{num(m.get(p + 'p50_ms'))} | {num(m.get(p + 'p99_ms'), 1)} | "
                f"{num(m.get(p + 'max_ms'), 1)} | {num(m.get(p + 'worst_ms'), 1)} | "
                f"{num(m.get(p + 'over_20ms'), 0)} | {secs(background)} |"
            )
    return "\n".join(lines)


def stall_notes(ctx: Any, targets: Sequence[Any]) -> str:
    seen = []
    for t in targets:
        for i, r in enumerate(t.runs):
            if "stall_sync_sync_observed" in r:
                ok = r["stall_sync_sync_observed"]
                seen.append(
                    f"{t.key} repeat {i + 1}: "
                    + (
                        f"sync seen for {r.get('stall_sync_sync_seconds', 0):.2f} s"
                        if ok
                        else "no fsync seen (window: 1 s before to 5 s after the expected time)"
                    )
                )
    a = ctx.args
    return (
        f"Stall: a probe process reads whole images of `@v1` in the epoch's shuffled order, one "
        f"starting every {a.stall_interval_ms:g} ms (or as soon as the previous one ended), each "
        "on a fresh mount with the page cache dropped first, so every read is of a file neither "
        "the kernel nor the daemon has cached; latency = open to close. Statistics over the "
        "reads that overlap the background work: idle = "
        f"{a.stall_idle_seconds:g} s with nothing else; commit = `dsfs commit` of "
        f"{a.commit_mb:,} MiB of random bytes written into @head right before (files of 64 MiB, "
        "caches dropped after writing, so the commit reads them from the disk); sync = the "
        "daemon's periodic @head sync (every 30 s from the mount; nothing triggers it "
        f"sooner) after {a.sync_mb:,} MiB were written into @head as files of 256 KiB, its "
        "window found by sampling /proc/PID/task/*/syscall of the daemon every 4 ms for "
        "fsync/fdatasync/syncfs (then `dsfs reset --yes`). Medians over the repeats; worst "
        "max = the largest pause of any repeat. " + "; ".join(seen) + "."
    )


def find_table(rows: Sequence[Any]) -> str:
    native = rows[0].median if rows else None
    r = Rows(
        [(f"{row.key} (FAILED)" if row.error else row.key, row.median) for row in rows], native
    )
    return r.table(
        [
            ("first find s (cold)", lambda m: secs(m.get("find_cold_seconds"))),
            ("× native", r.x("find_cold_seconds")),
            ("second find s (warm)", lambda m: secs(m.get("find_warm_seconds"))),
            ("× native", r.x("find_warm_seconds")),
            ("daemon RSS MiB after", lambda m: num(m.get("daemon_rss_mib"), 0)),
        ]
    )


def make(ctx: Any, targets: Sequence[Any], find_rows: Sequence[Any]) -> Any:
    args = ctx.args
    m = B.machine_info(args.workdir)
    versions = {t.key: t.version() for t in targets}
    for row in find_rows:
        if row.target is not None and row.key not in versions:
            versions[row.key] = row.target.version()
    native = targets[0].median if targets else None
    rows = Rows([(label(t), t.median) for t in targets], native)
    parts = args.parts
    cache = (
        "cold = `sync; echo 3 > /proc/sys/vm/drop_caches` right before the timed command, on a "
        "mount made for it (the daemon's caches empty)"
        if not args.no_drop_caches
        else "**--no-drop-caches: nothing was dropped, the 'cold' figures are warm**"
    )
    load = ctx.facts.get("load_1min", [None, None])
    about = [
        f"- Date: {m['date']}; the run took {ctx.facts.get('minutes', 0):.1f} min; 1-minute "
        f"load {num(load[0])} at the start, {num(load[-1])} at the end",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, "
        f"Linux {m['kernel']}, {m['python3']}, work directory on {m['workdir_fs']}",
        f"- Page cache: {cache}; warm = the same command again right after",
        "- Versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()),
    ]
    st = ctx.source
    intro = (
        f"Dataset: v1 of `scripts/dataset.py generate --seed {args.seed} --scale {args.scale:g}` "
        f"at `{ctx.tree}`: {st.files:,} files, {st.bytes / MB:,.1f} MB; {ctx.images:,} images "
        f"({ctx.image_bytes / MB:,.1f} MB); the big file is `{ctx.big}` "
        f"({ctx.big_size / MB:,.1f} MB). Each tool stores it once (dsfs `import`, borg `create "
        "--compression zstd,3`) and serves it read-only over FUSE: dsfs `MNT/@v1`, borg "
        "`MNT/<source path>`. Medians of "
        f'{args.repeat} repeat(s). "× native" = time / native time (above 1 is slower); '
        '"÷ native" / "÷ borg" = IOPS / their IOPS (above 1 is faster). MB = 10^6 bytes.'
    )
    what = [] if parts == ["find"] else [f"dataset scale {args.scale:g}"]
    what += [f"find over {args.files:,} files"] if "find" in parts else []
    out = [f"### Reading a version (issue 10): {', '.join(what)}, {args.repeat} repeat(s)"]
    out += ["\n".join(about)]
    if parts != ["find"]:
        out.append(intro)
    if "epoch" in parts:
        cols: list[tuple[str, Callable[[Json], str]]] = []
        for n in EPOCH_READERS:
            k = f"epoch{n}"
            cols += [
                (
                    f"cold, {n} reader{'s' if n > 1 else ''} s",
                    lambda m, k=k: secs(m.get(f"{k}_cold_seconds")),
                ),
                ("× native", rows.x(f"{k}_cold_seconds")),
            ]
        for n in EPOCH_READERS:
            k = f"epoch{n}"
            cols += [
                (
                    f"warm, {n} reader{'s' if n > 1 else ''} s",
                    lambda m, k=k: secs(m.get(f"{k}_warm_seconds")),
                ),
                ("× native", rows.x(f"{k}_warm_seconds")),
                ("µs per file", lambda m, k=k: num(m.get(f"{k}_warm_us_per_file"), 0)),
            ]
        out += [
            f"Shuffled epoch: each of the {ctx.images:,} images read whole, in one shuffled "
            f"order (seed {args.seed}), by 1 or 2 reader processes (reader i takes items i, i+2, "
            "...); cold on a fresh mount after dropping the page cache, warm = the same epoch "
            "again right after. µs per file = warm wall time / images.",
            rows.table(cols),
        ]
    if "tar" in parts or "ls" in parts:
        out += [
            f"Whole version: `{B.TAR}` in the version root, cold (fresh mount, caches dropped); "
            "daemon CPU = utime + stime of the process(es) serving the mount, from "
            f"/proc/PID/stat before and after, per GiB read; `{B.LS_LR}`, warm (one untimed run "
            "first).",
            rows.table(
                [
                    ("tar s (cold)", lambda m: secs(m.get("tar_seconds"))),
                    ("× native", rows.x("tar_seconds")),
                    ("daemon CPU s/GiB", lambda m: num(m.get("tar_daemon_cpu_per_gib"))),
                    ("daemon RSS MiB after tar", lambda m: num(m.get("daemon_rss_mib"), 0)),
                    ("ls -lR s (warm)", lambda m: secs(m.get("ls_lR_seconds"))),
                    ("× native", rows.x("ls_lR_seconds")),
                ]
            ),
        ]
    if "bigfile" in parts:
        out += [
            f"Big file: `dd if={ctx.big} of=/dev/null bs=1M` on a fresh mount after dropping the "
            "page cache (cold), then at once again (warm).",
            rows.table(
                [
                    ("dd MB/s (cold)", lambda m: num(m.get("dd_cold_mb_per_s"), 0)),
                    ("× native", rows.x("dd_cold_seconds")),
                    ("daemon CPU s/GiB", lambda m: num(m.get("dd_daemon_cpu_per_gib"))),
                    ("dd MB/s (warm)", lambda m: num(m.get("dd_warm_mb_per_s"), 0)),
                    ("× native", rows.x("dd_warm_seconds")),
                ]
            ),
        ]
    if "fio" in parts:
        out += [
            f"Random reads of the big file: `fio --rw=randread --bs=BS --numjobs=N --direct=0 "
            f"--ioengine=psync --invalidate=0 --runtime={args.fio_seconds:g}` (IOPS and MB/s of "
            "all jobs together). Cold: a fresh mount and dropped caches for each configuration; "
            "each job reads every block of the file once in a random order (fio's random map), "
            f"cut at {args.fio_seconds:g} s, so the figure is of reads the caches did not serve "
            "(unless a job finished its pass: dsfs and borg load whole chunks, so neighbouring "
            "blocks become hits). Warm: the file in the page cache (right after the warm dd), "
            f"`--time_based`, {args.fio_seconds:g} s.",
            fio_table(targets),
        ]
    if "stall" in parts:
        out += [stall_notes(ctx, targets), stall_table(targets)]
    if "find" in parts:
        out += [
            f"Many files: `{find_rows_cmd()}` in a version of {args.files:,} files of 64-512 "
            "bytes in directories of 1,000 (`scripts/dataset.py manyfiles --count "
            f"{args.files} --seed {args.seed}`, at `{ctx.facts.get('find_tree')}`); first pass "
            "on a fresh mount with the page cache dropped, the second right after. Native: the "
            "source tree, caches dropped.",
            find_table(find_rows),
        ]
    groups = [(t.key, t.commands) for t in targets]
    groups += [(f"{row.key} (find)", row.target.commands) for row in find_rows if row.target]
    out.append(B.commands_block(groups))
    failed = [(t.key, t.error) for t in targets if t.error]
    failed += [(f"{row.key} (find)", row.error) for row in find_rows if row.error]
    if failed:
        out.append("Failed:\n\n```\n" + "\n".join(f"{k}: {e}" for k, e in failed) + "\n```")
    data = {
        "benchmark": "read",
        "title": out[0].lstrip("# "),
        "machine": m,
        "versions": versions,
        "params": {
            k: (str(v) if hasattr(v, "__fspath__") else v)
            for k, v in vars(args).items()
            if k not in ("func",)
        },
        "facts": {
            **ctx.facts,
            "source": str(ctx.tree),
            "source_files": st.files,
            "source_bytes": st.bytes,
            "images": ctx.images,
            "image_bytes": ctx.image_bytes,
            "big_file": str(ctx.big),
            "big_file_bytes": ctx.big_size,
            "image_list": str(ctx.image_list),
        },
        "results": {
            t.key: {"median": t.median, "runs": t.runs, "error": t.error, "commands": t.commands}
            for t in targets
        },
        "find": {
            row.key: {"median": row.median, "runs": row.runs, "error": row.error}
            for row in find_rows
        },
    }
    return B.Report("\n\n".join(out), data, failed=bool(failed))


def find_rows_cmd() -> str:
    return "find . -type f | wc -l"
