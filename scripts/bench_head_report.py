"""The markdown report and JSON data of `scripts/bench head` (see bench_head.py)."""

from __future__ import annotations

import argparse
import statistics
import subprocess
from collections.abc import Sequence
from typing import Any

from bench_head_data import B

MB = 1_000_000
MIB = 1024 * 1024
Json = dict[str, Any]
Part = Any  # bench_head.Part


def values(part: Part | None, key: str) -> list[float]:
    return [r[key] for r in part.runs if r.get(key) is not None] if part else []


def med(part: Part | None, key: str) -> float | None:
    v = values(part, key)
    return statistics.median(v) if v else None


def fmt(x: float | None, unit: str) -> str:
    if x is None:
        return "n/a"
    if unit == "MB/s":
        return f"{x:,.0f}"
    return f"{x:.3f}" if x < 1 else (f"{x:.2f}" if x < 10 else f"{x:.1f}")


def runs_text(part: Part | None, key: str, unit: str) -> str:
    return ", ".join(fmt(x, unit) for x in values(part, key)) or "n/a"


def compare_table(p: dict[str, Part]) -> tuple[str, Json]:
    """native against @head: one row per measured operation."""
    dd, c1, git, cp = (p.get(k) for k in ("dd", "commit1g", "git", "cp"))
    f = {k: (v.facts if v else {}) for k, v in (("dd", dd), ("c1", c1), ("git", git), ("cp", cp))}
    size = f"{f['dd'].get('bytes', 0) / MB:,.0f} MB"
    tree = f"{f['c1'].get('files', 0):,} files, {f['c1'].get('bytes', 0) / MB:,.0f} MB"
    repo = f"{f['git'].get('files', 0):,} files, {f['git'].get('commits', 0)} commits"
    small = f"{f['cp'].get('files', 0):,} files, {f['cp'].get('bytes', 0) / MB:,.0f} MB"
    rows = [
        (dd, "fsync", f"`dd bs=1M conv=fsync` of {size}", "MB/s"),
        (dd, "nofsync", f"`dd bs=1M`, no fsync, of {size}", "MB/s"),
        (c1, "cp", f"`cp -a` of the dataset tree ({tree}) + `sync`", "s"),
        (git, "clone", f"`git clone --no-local --no-hardlinks` ({repo}) + `sync`", "s"),
        (git, "status", "`git status` in the clone (warm)", "s"),
        (cp, "cp", f"`cp -a` of small files ({small}) + `sync`", "s"),
        (cp, "rm", "`rm -rf` of that copy + `sync`", "s"),
    ]
    lines = [
        "| operation | unit | native | dsfs @head | dsfs speed ÷ native | runs: native; dsfs |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    out: Json = {}
    for part, key, label, unit in rows:
        if part is None:
            continue
        n, d = med(part, f"{key}_native"), med(part, f"{key}_dsfs")
        ratio = None
        if n and d:
            ratio = d / n if unit == "MB/s" else n / d
        out[f"{part.key}.{key}"] = {"native": n, "dsfs": d, "speed_ratio": ratio, "unit": unit}
        runs = f"{runs_text(part, key + '_native', unit)}; {runs_text(part, key + '_dsfs', unit)}"
        cells = [label, unit, fmt(n, unit), fmt(d, unit), fmt_ratio(ratio), runs]
        lines.append("| " + " | ".join(cells) + " |")
    return ("\n".join(lines) if len(lines) > 2 else ""), out


def fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def mib(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def commit_table(p: dict[str, Part]) -> tuple[str, Json]:
    lines = ["| measurement | median | runs |", "| --- | ---: | --- |"]
    out: Json = {}

    def row(label: str, part: Part, key: str, unit: str = "s", extra: str = "") -> None:
        m = med(part, key)
        out[f"{part.key}.{key}"] = m
        cell = f"{fmt(m, unit)} {unit}{extra}" if m is not None else "n/a"
        lines.append(f"| {label} | {cell} | {runs_text(part, key, unit)} |")

    if (c := p.get("commit")) is not None:
        n = f"{c.facts.get('files', 0):,}"
        row(
            f"`dsfs commit`: one line appended to one file of a {n}-file version",
            c,
            "commit_seconds",
        )
        row("`dsfs status --json` with that change pending", c, "status_seconds")
        row("CPU of the `dsfs commit` command (client)", c, "commit_cpu_seconds")
        row("`dsfs --help` (start-up of the CLI, for comparison)", c, "cli_start_seconds")
        mounts = c.facts.get("mount_seconds") or [None]
        lines.append(f"| `dsfs mount` of that store | {fmt(mounts[0], 's')} s | |")
        for when in ("after_mount", "after_commits"):
            mem = c.facts.get(when, {})
            out[f"commit.{when}"] = mem
            lines.append(
                f"| mount daemon RSS {when.replace('_', ' ')} (peak) | "
                f"{mib(mem.get('daemon_rss_mib'))} MiB ({mib(mem.get('daemon_hwm_mib'))}) | |"
            )
    if (c1 := p.get("commit1g")) is not None:
        total = c1.facts.get("bytes", 0)
        for key, label in (
            ("commit", "`dsfs commit` of the tree copied into @head of an empty store"),
            ("import", "`dsfs import` of the same tree into an empty store"),
        ):
            m = med(c1, f"{key}_seconds")
            rate = f" ({total / MB / m:,.0f} MB/s)" if m else ""
            row(f"{label}, caches dropped, + `sync`", c1, f"{key}_seconds", extra=rate)
            out[f"commit1g.{key}_mb_per_s"] = total / MB / m if m else None
    return ("\n".join(lines) if len(lines) > 2 else ""), out


def targets(summary: Json) -> str:
    said = []
    ratio = (summary.get("dd.fsync") or {}).get("speed_ratio")
    if ratio is not None:
        verdict = "met" if ratio >= 0.5 else "**not met**"
        said.append(
            f"sequential 1 MiB writes with fsync at >= 0.5x native: {verdict} ({ratio:.2f}x)"
        )
    commit = summary.get("commit.commit_seconds")
    if commit is not None:
        verdict = "met" if commit < 1 else "**not met**"
        said.append(
            f"commit of a one-file change in the big version under 1 s: {verdict} "
            f"(median {commit:.2f} s)"
        )
    return "Targets (issue 4): " + "; ".join(said) + "." if said else ""


NOTES = (
    "Medians of the repeats, wall clock; MB = 10^6 bytes. native = a directory on the same disk "
    "as the stores. Each repeat runs native and dsfs back to back, alternating which goes first. "
    '"dsfs speed ÷ native" = native time / dsfs time (for dd: dsfs MB/s / native MB/s), so 0.50 '
    "is half the speed of the local disk. dd reads a random file that is in the page cache; the "
    "target is removed (and `sync`ed) between runs. Without conv=fsync, dd on the local disk "
    "ends when the data is in the page cache, while on a FUSE mount with the writeback cache "
    "close() waits until the kernel has handed every dirty page to the daemon. `+ sync` means "
    "the timed command line ends with `&& sync` (commit and import: `os.sync()` right after, "
    "timed with them). `git status` runs once untimed right before the timed run. Commits in the "
    "big version run through the mount daemon, one repeat after the other on the same mount, "
    "each appending a line to a different file; each is checked (status lists exactly that "
    "file; the new version holds the new content). Daemon RSS = VmRSS of the mount daemon (pid "
    "from its runtime file), peak = VmHWM."
)


def make(
    args: argparse.Namespace,
    commands: dict[str, dict[str, str]],
    parts: Sequence[Part],
    dsfs_version: str,
) -> Any:
    p = {part.key: part for part in parts if part.runs}
    m = B.machine_info(args.workdir)
    git = subprocess.run(["git", "--version"], capture_output=True, text=True, check=False)
    about = [
        f"- Date: {m['date']}",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, "
        f"Linux {m['kernel']}, {m['python3']}, work directory on {m['workdir_fs']}",
        f"- Versions: dsfs {dsfs_version}; {git.stdout.strip()}",
        "- Load average (1 min) at the start and end of each part, seconds per part: "
        + "; ".join(
            f"{part.key} {part.facts['load_1min'][0]:.1f} / {part.facts['load_1min'][1]:.1f}, "
            f"{part.facts['seconds']:.0f} s"
            for part in parts
            if "load_1min" in part.facts
        ),
    ]
    facts: list[str] = []
    if (c := p.get("commit")) is not None:
        facts.append(
            f"Big version: {c.facts['tree']}, store {c.facts['found']}, committed to "
            f"as {c.facts['copy']}."
        )
    if (c1 := p.get("commit1g")) is not None:
        facts.append(
            f"Dataset tree: `scripts/dataset.py generate --seed 1 --scale "
            f"{c1.facts['scale']:g}` at `{c1.facts['source']}`."
        )
    if (g := p.get("git")) is not None:
        facts.append(
            f"Git repository: generated with `git fast-import` ({g.facts['files']:,} "
            f"files in {g.facts['dirs']} directories, {g.facts['commits']} commits), "
            f"at `{g.facts['source']}`."
        )
    t1, s1 = compare_table(p)
    t2, s2 = commit_table(p)
    summary = {**s1, **s2}
    parts_md = [
        f"### @head: scale {args.scale:g}, {args.repeat} repeat(s)",
        "\n".join(about),
        " ".join(facts),
        "Against the local disk:" if t1 else "",
        t1,
        "Commits:" if t2 else "",
        t2,
        targets(summary),
        NOTES,
        B.commands_block([(k, v) for k, v in commands.items()]),
    ]
    failed = [part for part in parts if part.error]
    if failed:
        parts_md.append(
            "Failed:\n\n```\n" + "\n".join(f"{f.key}: {f.error}" for f in failed) + "\n```"
        )
    result = {
        "benchmark": "head",
        "machine": m,
        "versions": {"dsfs": dsfs_version, "git": git.stdout.strip()},
        "params": {"scale": args.scale, "repeat": args.repeat, "parts": args.parts},
        "summary": summary,
        "results": {
            part.key: {"runs": part.runs, "facts": part.facts, "error": part.error}
            for part in parts
        },
        "commands": commands,
    }
    return B.Report("\n\n".join(s for s in parts_md if s), result, failed=bool(failed))
