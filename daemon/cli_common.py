"""Helpers every `dsfs` command module shares: the store path, JSON output, notes.

Owns: how a command finds its store (--store, $DSFS_STORE, the default) and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from vfs.progress import NoProgress, Progress
from vfs.store import Store

DEFAULT_STORE = "~/.local/share/dsfs/store"


def store_path(args: argparse.Namespace) -> Path:
    raw = args.store or os.environ.get("DSFS_STORE") or DEFAULT_STORE
    return Path(os.path.expanduser(raw))


def open_store(args: argparse.Namespace) -> Store:
    return Store.open(store_path(args))


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def note(args: argparse.Namespace, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr)


def make_progress(quiet: bool) -> Progress:
    """A terminal bar when a person watches stderr; rich is imported only then."""
    if quiet or not sys.stderr.isatty():
        return NoProgress()
    from daemon.progress import TerminalProgress

    return TerminalProgress()
