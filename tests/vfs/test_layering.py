"""vfs is a pure library: it must never import daemon, trio or pyfuse3."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

VFS = Path(__file__).resolve().parents[2] / "vfs"
FORBIDDEN = ("daemon", "trio", "pyfuse3")


def test_vfs_sources_do_not_import_the_daemon_side() -> None:
    offenders = []
    for path in VFS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
    assert len(list(VFS.glob("*.py"))) > 10


def test_importing_every_vfs_module_loads_no_daemon_module() -> None:
    modules = [f"vfs.{p.stem}" for p in VFS.glob("*.py") if p.stem != "__init__"]
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
