"""The markdown report and JSON of `scripts/bench remote` (from bench_remote.Ctx).

Owns: medians of the repeats, the ratios (each within this run), the tables and the verdict on
each of issue 11's targets. Never imports: vfs, daemon.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from bench_head_data import bench_module

B = bench_module()

Json = dict[str, Any]
MB = 1_000_000


def summarize(runs: Sequence[Json]) -> Json:
    """The median of every numeric figure over the runs."""
    keys = sorted({k for r in runs for k, v in r.items() if isinstance(v, int | float)})
    out: Json = {}
    for k in keys:
        values = [r[k] for r in runs if isinstance(r.get(k), int | float)]
        if values and not isinstance(values[0], bool):
            out[k] = statistics.median(values)
    out["runs"] = len(runs)
    return out


def fs(x: float | None) -> str:
    return str(B.fmt_s(x))


def fmb(x: float | None) -> str:
    return str(B.fmt_mb(x))


def num(x: float | None, digits: int = 0) -> str:
    return str(B.fmt_num(x, digits))


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def push_section(ctx: Any, med: dict[str, Json]) -> tuple[str, list[str]]:
    dvc = med.get("push dvc", {})
    rows = []
    for name in ("dsfs", "dvc", "restic"):
        key = f"push {name}"
        if key not in med and key not in ctx.errors:
            continue
        m = med.get(key)
        if not m:
            rows.append([f"{name} (FAILED)", *["n/a"] * 8])
            continue
        total = [
            (m.get(f"{v}_store_seconds") or 0) + m[f"{v}_seconds"] if f"{v}_seconds" in m else None
            for v in ("v1", "v2")
        ]
        rows.append(
            [
                name if name != "restic" else "restic (backup)",
                f"{fs(m.get('v1_seconds'))} / {fs(m.get('v2_seconds'))}",
                f"{num(ratio(dvc.get('v1_seconds'), m.get('v1_seconds')), 2)} / "
                f"{num(ratio(dvc.get('v2_seconds'), m.get('v2_seconds')), 2)}",
                f"{fmb(m.get('v1_uploaded'))} / {fmb(m.get('v2_uploaded'))}",
                f"{num(m.get('v1_objects'))} / {num(m.get('v2_objects'))}",
                f"{fs(m.get('v1_store_seconds'))} / {fs(m.get('v2_store_seconds'))}",
                f"{fs(total[0])} / {fs(total[1])}",
                f"{fs(m.get('v1_cpu_seconds'))} / {fs(m.get('v2_cpu_seconds'))}",
                num(m.get("server_rss_mib")),
            ]
        )
    if not rows:
        return "", []
    header = [
        "tool",
        "push s v1 / v2",
        "× dvc v1 / v2",
        "uploaded MB v1 / v2",
        "objects v1 / v2",
        "import (add) s v1 / v2",
        "import + push s v1 / v2",
        "push CPU s v1 / v2",
        "server RSS MiB after",
    ]
    verdicts = []
    d = med.get("push dsfs")
    if d and dvc:
        r1 = ratio(dvc.get("v1_seconds"), d.get("v1_seconds"))
        r2 = ratio(dvc.get("v2_seconds"), d.get("v2_seconds"))
        ok = bool(r1 and r2 and r1 >= 2 and r2 >= 2)
        verdicts.append(
            f"push at least 2x faster than DVC: {'met' if ok else 'NOT met'} "
            f"(dvc push / dsfs push = {num(r1, 2)} for v1, {num(r2, 2)} for v2)"
        )
    if d:
        dup = d.get("remote_duplicates")
        new = d.get("v2_new_pack_bytes")
        up = d.get("v2_uploaded")
        ok = dup == 0 and bool(new and up and up <= new * 1.05 + 1e6)
        verdicts.append(
            f"no chunk uploaded twice across versions: {'met' if ok else 'NOT met'} "
            f"(v2 push added {fmb(up)} MB to the bucket for {fmb(new)} MB of packs that "
            f"`dsfs import` of v2 wrote; `push --json` said {fmb(d.get('v2_reported_bytes'))} MB "
            f"in {num(d.get('v2_reported_packs'))} packs; of {num(d.get('remote_records'))} "
            f"objects in the remote's {num(d.get('remote_packs'))} packs, "
            f"{num(dup)} are in two packs)"
        )
    notes = (
        "Push: medians, wall clock; MB = 10^6 bytes. Each tool starts from an empty server "
        "(moto reset) and the tree reset to v1. push = `dsfs push` / `dvc push` alone; restic "
        "has no separate step, so its push is `restic backup` (reading, chunking and "
        "uploading). import (add) = `dsfs import` / `dvc add` of the same tree before the "
        "push. uploaded / objects = what the bucket gained (ListObjectsV2). × dvc = dvc push "
        "time / tool's push time (above 1: faster than DVC)."
    )
    return "\n\n".join([table(header, rows), notes]), verdicts


def clone_section(ctx: Any, med: dict[str, Json]) -> tuple[str, list[str]]:
    rows, verdicts = [], []
    for lat in ctx.args.latencies:
        key = f"clone {lat:g} ms"
        m = med.get(key)
        if not m and key not in ctx.errors:
            continue
        rows.append([f"{lat:g}", fs(m.get("seconds")) if m else "FAILED"])
        if m:
            ok = m["seconds"] < 5
            verdicts.append(
                f"clone of a {num(ctx.many.files if ctx.many else None)}-file version under 5 s "
                f"at {lat:g} ms: {'met' if ok else 'NOT met'} ({fs(m['seconds'])} s)"
            )
    if not rows:
        return "", verdicts
    files = ctx.many.files if ctx.many else ctx.args.files
    text = table(["added latency ms", f"`dsfs clone` of {files:,} files, s"], rows)
    return text, verdicts


def read_section(ctx: Any, med: dict[str, Json]) -> tuple[str, list[str]]:
    rows, verdicts = [], []
    for lat in ctx.args.latencies:
        rc = med.get(f"read rclone {lat:g} ms", {})
        for name in ("dsfs", "rclone"):
            key = f"read {name} {lat:g} ms"
            m = med.get(key)
            if not m and key not in ctx.errors:
                continue
            if not m:
                rows.append([f"{lat:g}", f"{name} (FAILED)", *["n/a"] * 11])
                continue
            x = ratio(rc.get("tar_seconds"), m.get("tar_seconds"))
            rows.append(
                [
                    f"{lat:g}",
                    name,
                    fs(m.get("clone_seconds")),
                    fs(m.get("mount_seconds")),
                    B.fmt_ms(m.get("first_byte_seconds")),
                    B.fmt_ms(m.get("first_byte_after_mount_seconds")),
                    B.fmt_ms(m.get("warm_first_byte_seconds")),
                    B.fmt_ms(m.get("warm_first_byte_after_mount_seconds")),
                    fs(m.get("tar_seconds")),
                    num(m.get("tar_mb_per_s")),
                    num(x, 2),
                    fmb(m.get("cache_bytes")),
                    num(m.get("proxy_requests")),
                ]
            )
            if name == "dsfs":
                for pre, state in (("", "page cache dropped"), ("warm_", "programs cached")):
                    fb = m.get(f"{pre}first_byte_seconds")
                    after = m.get(f"{pre}first_byte_after_mount_seconds")
                    verdicts.append(
                        f"first byte under 0.3 s at {lat:g} ms, {state}: "
                        f"{'met' if fb is not None and fb < 0.3 else 'NOT met'} "
                        f"({B.fmt_ms(fb)} ms from the mount command's start, "
                        f"{B.fmt_ms(after)} ms after it returned)"
                    )
                if rc:
                    verdicts.append(
                        f"lazy cold tar faster than rclone mount at {lat:g} ms: "
                        f"{'met' if x and x > 1 else 'NOT met'} (dsfs {fs(m.get('tar_seconds'))}"
                        f" s, rclone {fs(rc.get('tar_seconds'))} s)"
                    )
    if not rows:
        return "", verdicts
    header = [
        "added latency ms",
        "tool",
        "clone s",
        "mount s",
        "first byte ms",
        "of which after mount ms",
        "first byte ms, code cached",
        "of which after mount ms",
        "cold tar s",
        "tar MB/s",
        "tar × rclone",
        "cache after tar MB",
        "requests (proxy)",
    ]
    copy = med.get("rclone copy v1")
    notes = (
        "Read: medians; each session a fresh `dsfs clone` (metadata only) or an empty rclone "
        "VFS cache. Two sessions per tool and latency: (1) page cache dropped, mount, first "
        "byte, page cache dropped, tar; (2, 'code cached') the same mount and first byte "
        "without dropping the page cache, so the programs' code is in memory and only the "
        "data is cold (it is on the server alone). mount s = session 1. first byte "
        f"= from the mount command's start to `read(1)` of `{ctx.deep}` returning (mount + "
        "lookups + fetch); of which after mount = from the mount command's return (dsfs) or the "
        "mountpoint's appearance (rclone, which stays in the foreground). tar = "
        "`tar cf - . | cat > /dev/null` in @v1 (dsfs) or the mount's root (rclone), the same "
        "files. tar × rclone = rclone tar time / tool's (above 1: "
        "faster than rclone). cache after tar = `dsfs cache --json` bytes_used (dsfs; mounted "
        "with --cache-size 2 x v1 unless given), the disk blocks of "
        "rclone's --cache-dir (rclone). requests = requests through the latency proxy (0 ms "
        "goes straight to the server, uncounted)."
    )
    if copy:
        notes += (
            f" The plain objects for rclone: `rclone copy` of v1 took {fs(copy.get('seconds'))} "
            f"s ({num(copy.get('objects'))} objects, {fmb(copy.get('uploaded'))} MB)."
        )
    return "\n\n".join([table(header, rows), notes]), verdicts


def bound_section(ctx: Any, med: dict[str, Json]) -> tuple[str, list[str]]:
    m = med.get("bound")
    if not m:
        return ("Bounded cache: FAILED" if "bound" in ctx.errors else ""), []
    size = m["cache_size"]
    peak = m.get("cache_disk_peak")
    used = m.get("cache_bytes")
    slack = 1024 * 1024  # directory blocks of STORE/cache
    ok = used is not None and used <= size and (peak is None or peak <= size + slack)
    text = (
        f"Bounded cache: a cold tar of v1 ({fmb(ctx.source.bytes)} MB) through a clone mounted "
        f"with `--cache-size {size}` ({ctx.args.bound_fraction:g} of v1) at 0 ms took "
        f"{fs(m.get('tar_seconds'))} s. After it `dsfs cache --json` said {fmb(used)} MB in "
        f"use; STORE/cache held {fmb(m.get('cache_disk_bytes'))} MB of disk blocks, at most "
        f"{fmb(peak)} MB while the tar ran (sampled every 0.25 s)."
    )
    verdict = (
        f"local cache never above its bound: {'met' if ok else 'NOT met'} "
        f"(`cache --json` {fmb(used)} MB, peak on disk {fmb(peak)} MB, bound {fmb(size)} MB)"
    )
    return text, [verdict]


def make(ctx: Any) -> Any:
    args = ctx.args
    med = {k: summarize(v) for k, v in ctx.runs.items()}
    m = B.machine_info(args.workdir)
    v2 = ctx.v2
    about = [
        f"- Date: {m['date']}; run took {ctx.facts.get('minutes', 0):.0f} min",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, "
        f"Linux {m['kernel']}, {m['python3']}, work directory on {m['workdir_fs']}",
        "- Versions: " + "; ".join(f"{k} {v}" for k, v in ctx.versions.items()),
        f"- S3 server: moto standalone on 127.0.0.1 (`{ctx.facts.get('moto_command', '?')}`), "
        "objects over 5 MB spilled to files; every tool gets AWS_ACCESS_KEY_ID=testing, "
        "AWS_SECRET_ACCESS_KEY=testing and the server's URL; its peak RSS over the run: "
        f"{num((ctx.facts.get('server_end') or {}).get('peak_rss_mib'))} MiB",
        f"- Latency: `{ctx.facts.get('proxy_command', 'bench_remote_proxy.py')}` per session",
    ]
    sizes = f"v1 {ctx.source.files:,} files, {fmb(ctx.source.bytes)} MB"
    if v2:
        sizes += f"; v2 {v2.files:,} files, {fmb(v2.bytes)} MB"
    intro = (
        f"Dataset: `scripts/dataset.py generate --seed {args.seed} --scale {args.scale:g}` "
        f"then `mutate --seed {B.MUTATE_SEED}`: {sizes}. Clone part: `dataset.py manyfiles "
        f"--count {args.files}`. Medians of {args.repeat} repeat(s); every ratio is within "
        "this run."
    )
    sections: list[str] = []
    verdicts: list[str] = []
    for fn in (push_section, clone_section, read_section, bound_section):
        text, found = fn(ctx, med)
        if text:
            sections.append(text)
        verdicts += found
    title = f"### Sharing through S3: dataset scale {args.scale:g}, {args.repeat} repeat(s)"
    parts = [title, "\n".join(about), intro, *sections]
    if verdicts:
        parts.append("Targets:\n\n" + "\n".join(f"- {v}" for v in verdicts))
    groups = sorted(ctx.commands.items())
    parts.append(B.commands_block(groups))
    if ctx.errors:
        parts.append(
            "Could not run:\n\n```\n"
            + "\n".join(f"{k}: {v}" for k, v in sorted(ctx.errors.items()))
            + "\n```"
        )
    data = {
        "benchmark": "remote",
        "title": title.lstrip("# "),
        "machine": m,
        "versions": ctx.versions,
        "params": {
            "scale": args.scale,
            "seed": args.seed,
            "repeat": args.repeat,
            "files": args.files,
            "latencies_ms": args.latencies,
            "tools": args.tools,
            "parts": args.parts,
            "source_files": ctx.source.files,
            "source_bytes": ctx.source.bytes,
            "first_byte_file": str(ctx.deep),
        },
        "medians": med,
        "runs": ctx.runs,
        "errors": ctx.errors,
        "facts": ctx.facts,
        "verdicts": verdicts,
        "commands": ctx.commands,
    }
    return B.Report("\n\n".join(parts), data, failed=bool(ctx.errors))
