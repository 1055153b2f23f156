"""`dsfs verify [--read-data | --read-data-subset N%] [--repair]`: check, and repair, the store.

Owns: printing what verify found and what a repair did, for people and (`--json`) for scripts.
Exit codes: 0 the store is intact and nothing was lost; 1 damage was found (or, with --repair,
files were lost and dropped from their versions: the store is consistent again).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from daemon import fmt
from daemon.cli_common import emit_json, make_progress, note, open_store, store_path
from vfs.errors import UserError

if TYPE_CHECKING:
    from vfs.repair import RepairReport
    from vfs.verify import VerifyReport


def parse_percent(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: {text!r} (try 10%)") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0% and 100%")
    return value


def cmd_verify(args: argparse.Namespace) -> int:
    from vfs.repair import repair_store
    from vfs.verify import verify_store

    subset = args.read_data_subset
    read_data = args.read_data or subset is not None
    if args.remote is not None:
        from daemon.remotecli import verify_remote_command

        if args.repair or subset is not None:
            raise UserError("--remote checks the remote: use it with --read-data only")
        return verify_remote_command(args)
    repaired: RepairReport | None = None
    if args.repair:
        repaired = repair_store(store_path(args), read_data=read_data,
                                progress=make_progress(args.quiet))
        read_data = False  # the repair read what was asked; what follows checks its result
        subset = None
    with open_store(args) as store:
        report = verify_store(store, read_data=read_data, progress=make_progress(args.quiet),
                              subset=None if subset is None else subset / 100)
        earlier = [v for v in store.readable_versions()[0] if v.repair is not None]
    lost = bool(repaired and repaired.lost)
    if args.json:
        out = _verify_dict(report)
        out["ok"] = report.ok and not lost
        out["repaired_earlier"] = [
            {"version": v.name, "time": fmt.iso(v.repair.time_ns), "lost": len(v.repair.lost)}
            for v in earlier if v.repair is not None]
        if repaired is not None:
            out["repair"] = _repair_dict(repaired)
        emit_json(out)
    else:
        if repaired is not None:
            _print_repair(args, repaired)
        _print_verify(args, report, subset)
        for v in earlier:
            if v.repair is not None and not (repaired and v.number in repaired.rewritten):
                note(args, f"note: {v.name} was repaired on {fmt.when(v.repair.time_ns)}; "
                           f"{len(v.repair.lost)} paths lost (`dsfs show {v.name}` lists them)")
    return 0 if report.ok and not lost else 1


def _verify_dict(report: VerifyReport) -> dict[str, Any]:
    return {"ok": report.ok, "versions": report.versions, "objects": report.objects,
            "bytes_read": report.bytes_read, "damaged_objects": len(report.damaged_objects),
            "problems": [p.to_dict() for p in report.problems],
            "head_problems": [p.to_dict() for p in report.head_problems]}


def _repair_dict(r: RepairReport) -> dict[str, Any]:
    rb = r.rebuild
    return {"packs": rb.packs, "objects": rb.objects, "versions": rb.versions, "tags": rb.tags,
            "damaged_records": rb.bad_records, "pack_problems": rb.problems,
            "damaged_objects": r.damaged_objects,
            "rewritten_versions": [f"v{n}" for n in r.rewritten],
            "lost": [{"version": f"v{n}", "path": fmt.path(x.path) or ".",
                      "problem": x.problem} for n, x in r.lost]}


def _print_repair(args: argparse.Namespace, r: RepairReport) -> None:
    rb = r.rebuild
    for problem in rb.problems:
        note(args, f"dsfs: repair: {problem}")
    note(args, f"rebuilt the index from {rb.packs} packs: {rb.objects:,} objects, "
               f"{rb.versions} versions, {rb.tags} tags, {rb.bad_records} damaged records")
    for n, x in r.lost:
        print(f"LOST v{n}:{fmt.path(x.path) or '.'}: {x.problem}")
    if r.rewritten:
        note(args, f"repair: {len(r.lost)} paths lost in {len(r.rewritten)} versions "
                   f"({', '.join(f'v{n}' for n in r.rewritten)}); those versions no longer "
                   "refer to missing data (`dsfs gc` frees what is left of it)")


def _print_verify(args: argparse.Namespace, report: VerifyReport, subset: float | None) -> None:
    for p in report.problems:
        print(f"DAMAGED v{p.version}:{p.path}: {p.problem}")
    for h in report.head_problems:
        print(f"DAMAGED {h.path}: {h.problem}")
    what = "structure and data" if report.bytes_read else "structure"
    if subset is not None and subset < 100:
        what = f"structure and a {subset:g}% sample of the data"
    if report.ok:
        print(f"ok: {report.versions} versions, {report.objects:,} objects, {what} intact"
              + (f", {fmt.size(report.bytes_read)} read" if report.bytes_read else ""))
    else:
        print(f"FAILED: {len(report.damaged_objects)} damaged objects affect "
              f"{len(report.problems)} files or directories"
              + (f"; {len(report.head_problems)} problems in @head"
                 if report.head_problems else ""))


def add_verify_command(add: Any) -> None:
    p = add("verify", cmd_verify, "check the store; exit 0 only when intact and nothing lost",
            json_=True)
    p.add_argument("--read-data", action="store_true",
                   help="also read and hash every chunk (slower)")
    p.add_argument("--read-data-subset", type=parse_percent, default=None, metavar="N%",
                   help="read and hash a random N%% of the stored data (whole packs), for "
                        "big stores; run it regularly to cover everything over time")
    p.add_argument("--repair", action="store_true",
                   help="rebuild the index from the packs, then rewrite every version that "
                        "needs data which is gone so it no longer refers to it, listing each "
                        "lost path (LOST vN:path); needs the store unmounted")
    p.add_argument("--remote", nargs="?", const="", default=None, metavar="NAME",
                   help="check a remote instead (default: the store's first remote): every "
                        "version's records and that every object it needs is in a pack there; "
                        "with --read-data also every byte of every pack")
