"""`dsfs --version` and `dsfs version [--json]`: which dsfs this is.

Owns: finding the installed version (the package metadata, read once at run time, so the
version lives only in pyproject.toml).
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable
from importlib import metadata

from daemon.cli_common import emit_json

UNKNOWN = "0+unknown"
"""What a copy of the sources that was never installed reports."""


def dsfs_version() -> str:
    try:
        return metadata.version("dsfs")
    except metadata.PackageNotFoundError:
        return UNKNOWN


def cmd_version(args: argparse.Namespace) -> int:
    if args.json:
        emit_json({"name": "dsfs", "version": dsfs_version(),
                   "python": platform.python_version()})
    else:
        print(f"dsfs {dsfs_version()}")
    return 0


def add_version_command(parser: argparse.ArgumentParser,
                        add: Callable[..., argparse.ArgumentParser]) -> None:
    parser.add_argument("--version", action="version", version=f"dsfs {dsfs_version()}",
                        help="print the version and exit")
    add("version", cmd_version, "print the version of dsfs", json_=True)


__all__ = ["add_version_command", "dsfs_version"]
