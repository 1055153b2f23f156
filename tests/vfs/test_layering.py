"""vfs is a pure library: it must never import daemon, trio or pyfuse3 (vfs/head/ included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

VFS = Path(__file__).resolve().parents[2] / "vfs"
FORBIDDEN = ("daemon", "trio", "pyfuse3")


def vfs_sources() -> list[Path]:
    """Every module under vfs/, at any depth."""
    return sorted(p for p in VFS.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(VFS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_vfs_sources_do_not_import_the_daemon_side() -> None:
    offenders = []
    for path in vfs_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            offenders += [f"{module_name(path)}: {n}" for n in names
                          if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
    assert {"vfs.head.fs", "vfs.head.session", "vfs.store"} <= set(map(module_name,
                                                                       vfs_sources()))


def test_importing_every_vfs_module_loads_no_daemon_module() -> None:
    modules = [module_name(p) for p in vfs_sources()]
    assert "vfs.head.overlay" in modules
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
