"""`dsfs commit`, `dsfs status`, `dsfs reset`: @head from the command line.

Owns: running these commands in-process when no mount serves @head, or through the mount
daemon's control socket when one does (found from the store), and printing their results.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from daemon import fmt
from daemon.cli_common import emit_json, note, open_store
from daemon.control_client import ask_daemon
from vfs.errors import HeadBusy, UserError

if TYPE_CHECKING:
    from vfs.store import Store


def _run(store: Store, request: dict[str, Any]) -> dict[str, Any]:
    """Do a head request here if @head is free, else ask the daemon that holds it."""
    from vfs.head.commit import commit
    from vfs.head.session import open_head
    from vfs.head.status import status_report

    try:
        session = open_head(store)
    except HeadBusy:
        return ask_daemon(store.root, request, timeout=None)
    with session:
        op = request["op"]
        if op == "commit":
            return commit(session.fs, request["message"], request.get("tag"),
                          bool(request.get("allow_empty"))).to_json()
        if op == "status":
            return status_report(session.fs)
        if op == "reset":
            base = session.reset()
            return {"base": base.name if base.number else None}
    raise AssertionError(op)


def cmd_commit(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        if args.tag is not None:
            store.check_tag_name(args.tag)
        reply = _run(store, {"op": "commit", "message": args.message, "tag": args.tag,
                             "allow_empty": args.allow_empty})
    if args.json:
        emit_json({k: v for k, v in reply.items() if k != "ok"})
    else:
        print(reply["version"])
        note(args, f"committed @head as {reply['version']}: {reply['files_rebuilt']} files "
                   f"rebuilt, {fmt.size(int(reply['new_stored_bytes']))} newly stored")
    return 0


_LETTER = {"added": "A", "modified": "M", "deleted": "D", "renamed": "R"}


def cmd_status(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        report = _run(store, {"op": "status"})
    report.pop("ok", None)
    if args.json:
        emit_json(report)
        return 0
    base = report["base"] or "an empty directory"
    changes = report["changes"]
    if report["latest"] and report["base"] and report["latest"] != report["base"]:
        print(f"dsfs: note: @head is based on {base}; the newest version is "
              f"{report['latest']} (a commit records a version whose parent is {base})",
              file=sys.stderr)
    if not changes:
        print(f"no changes: @head equals {base}")
        return 0
    for c in changes:
        letter = _LETTER[c["change"]]
        path = c["path"] + ("/" if c["kind"] == "dir" else "")
        if c["change"] == "renamed":
            print(f"{letter} {c['old_path']} -> {path}")
        elif c["change"] == "modified" and c["bytes"]:
            print(f"{letter} {path}  ({fmt.size(c['bytes'])} written)")
        else:
            print(f"{letter} {path}")
    s = report["summary"]
    note(args, f"{s['added']} added, {s['modified']} modified, {s['deleted']} deleted, "
               f"{s['renamed']} renamed against {base}")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    if not args.yes:
        raise UserError("reset discards every uncommitted change in @head: run "
                        "`dsfs reset --yes` to do it (see `dsfs status` first)")
    with open_store(args) as store:
        reply = _run(store, {"op": "reset"})
    note(args, f"@head reset to {reply['base'] or 'an empty directory'}")
    return 0


def add_head_commands(add: Any) -> None:
    p = add("commit", cmd_commit, "record @head as the next version and print its name",
            json_=True)
    p.add_argument("-m", "--message", required=True, help="what this version is")
    p.add_argument("--tag", help="also tag the new version with this name")
    p.add_argument("--allow-empty", action="store_true",
                   help="record a version even when @head has no changes")
    add("status", cmd_status, "what @head changed against its base version", json_=True)
    p = add("reset", cmd_reset, "discard every uncommitted change in @head")
    p.add_argument("--yes", action="store_true", help="really discard the changes")


__all__ = ["add_head_commands", "os"]
