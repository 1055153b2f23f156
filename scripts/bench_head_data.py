"""Inputs of `scripts/bench head`, each made once and cached under WORKDIR/data.

- a file of random bytes for dd (1 GiB at --scale 1)
- the ~1 GiB ML-style tree (`scripts/dataset.py generate --scale 0.5`, shared with `bench ingest`)
- a tree of small files (10,000 of 1-16 KiB in 100 directories)
- a git repository (3,000 files in 150 directories, 300 commits), written with `git fast-import`
- a store holding a version of a million small files: the one `scripts/bench manyfiles --keep`
  left behind if present, else imported once from `dataset.py manyfiles`

Every cache carries a stamp.json of the parameters that made it; a different stamp remakes it.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

MIB = 1024 * 1024
GIB = 1024 * MIB
GEN_VERSION = 1  # bump when a generator below changes what it writes


def bench_module() -> ModuleType:
    """scripts/bench (no .py suffix): registered as `bench` by its `head` subcommand.

    Loaded from its file when this module is imported on its own.
    """
    mod = sys.modules.get("bench")
    if mod is None:
        path = Path(__file__).with_name("bench")
        loader = importlib.machinery.SourceFileLoader("bench", str(path))
        spec = importlib.util.spec_from_loader("bench", loader)
        assert spec is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench"] = mod
        loader.exec_module(mod)
    return mod


B = bench_module()
Runner = Any  # bench.Runner (a loaded module's classes cannot be named in annotations)


@dataclass(frozen=True)
class Sizes:
    """What --scale (and --count) make of the inputs."""

    random_bytes: int
    tree_scale: float  # dataset.py generate --scale
    manyfiles: int
    small_files: int
    small_dirs: int
    git_files: int
    git_dirs: int
    git_commits: int

    @classmethod
    def for_args(cls, scale: float, count: int | None) -> Sizes:
        git_files = max(100, round(3000 * scale))
        small = max(500, round(10_000 * scale))
        return cls(
            random_bytes=max(16 * MIB, round(GIB * scale / MIB) * MIB),
            tree_scale=0.5 * scale,
            manyfiles=count if count else max(1000, round(1_000_000 * scale)),
            small_files=small,
            small_dirs=max(1, min(100, small // 100)),
            git_files=git_files,
            git_dirs=max(5, git_files // 20),
            git_commits=max(20, round(300 * scale)),
        )


def _cached(base: Path, stamp: dict[str, Any], make: Any) -> None:
    """Run make() into a fresh `base` unless base/stamp.json equals stamp."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads((base / "stamp.json").read_text()) == stamp:
            B.log(f"reusing {base}")
            return
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    B.log(f"making {base}")
    t0 = time.perf_counter()
    make()
    (base / "stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
    B.log(f"made {base} in {time.perf_counter() - t0:.1f} s")


def random_file(workdir: Path, size: int) -> Path:
    base = workdir / "data" / f"head-random-{size}"
    path = base / "random.bin"

    def make() -> None:
        with open(path, "wb") as f:
            for off in range(0, size, 16 * MIB):
                f.write(os.urandom(min(16 * MIB, size - off)))

    _cached(base, {"kind": "head-random", "bytes": size, "v": GEN_VERSION}, make)
    return path


def ingest_tree(runner: Runner, workdir: Path, scale: float) -> Path:
    """v1 of the ingest dataset at this scale, at the path `bench ingest` would use for it."""
    base = workdir / "data" / f"ingest-seed1-scale{scale:g}"
    tree = base / "v1"
    gen = ["generate", str(tree), "--seed", "1", "--scale", f"{scale}"]
    B.reuse_or_generate(runner, base, tree, {"kind": "ingest", "seed": 1, "scale": scale}, gen)
    return tree


def small_tree(workdir: Path, files: int, dirs: int) -> Path:
    """`files` files of 1-16 KiB (incompressible) spread over `dirs` directories."""
    base = workdir / "data" / f"head-small-{files}-{dirs}"
    tree = base / "data"

    def make() -> None:
        rnd = random.Random("dsfs-bench:head-small")
        for i in range(files):
            d = tree / f"dir{i % dirs:03d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"file{i:05d}.bin").write_bytes(rnd.randbytes(rnd.randint(1024, 16 * 1024)))

    _cached(base, {"kind": "head-small", "files": files, "dirs": dirs, "v": GEN_VERSION}, make)
    return tree


WORDS = (
    "def",
    "return",
    "self",
    "import",
    "class",
    "value",
    "index",
    "store",
    "chunk",
    "version",
    "head",
    "commit",
    "mount",
    "read",
    "write",
    "path",
    "file",
    "data",
    "size",
    "time",
    "error",
    "open",
    "close",
    "lock",
    "tree",
    "node",
    "list",
    "dict",
    "bytes",
    "offset",
    "pack",
)


def _source_text(rnd: random.Random, lines: int) -> list[str]:
    out = []
    for _ in range(lines):
        indent = "    " * rnd.randint(0, 3)
        out.append(indent + " ".join(rnd.choices(WORDS, k=rnd.randint(2, 12))) + "\n")
    return out


def git_repo(workdir: Path, files: int, dirs: int, commits: int) -> Path:
    """A bare repository: the first commit adds every file, each later one edits 1-20 files."""
    base = workdir / "data" / f"head-git-{files}-{dirs}-{commits}"
    repo = base / "src.git"

    def make() -> None:
        rnd = random.Random("dsfs-bench:head-git")
        paths = [f"pkg{i % dirs:03d}/mod{i:04d}.py" for i in range(files)]
        content = {p: _source_text(rnd, rnd.randint(10, 600)) for p in paths}
        stream = base / "fast-import.stream"
        with open(stream, "wb") as out:
            for n in range(commits):
                touched = paths if n == 0 else rnd.sample(paths, rnd.randint(1, 20))
                for p in touched if n else ():
                    lines = content[p]
                    at = rnd.randrange(len(lines))
                    lines[at : at + rnd.randint(0, 5)] = _source_text(rnd, rnd.randint(1, 8))
                msg = f"commit {n}: {len(touched)} files\n".encode()
                stamp = 1_700_000_000 + n * 3600
                who = f"Bench <bench@example.org> {stamp} +0000"
                out.write(f"commit refs/heads/main\nmark :{n + 1}\n".encode())
                out.write(f"author {who}\ncommitter {who}\ndata {len(msg)}\n".encode() + msg)
                if n:
                    out.write(f"from :{n}\n".encode())
                for p in touched:
                    blob = "".join(content[p]).encode()
                    out.write(f"M 100644 inline {p}\ndata {len(blob)}\n".encode() + blob + b"\n")
        git = ["git", "-C", str(repo)]
        subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
        with open(stream, "rb") as f:
            subprocess.run([*git, "fast-import", "--quiet"], stdin=f, check=True)
        subprocess.run([*git, "symbolic-ref", "HEAD", "refs/heads/main"], check=True)
        subprocess.run([*git, "gc", "-q"], check=True)
        stream.unlink()

    stamp = {"kind": "head-git", "files": files, "dirs": dirs, "commits": commits}
    _cached(base, {**stamp, "v": GEN_VERSION}, make)
    return repo


def newest_version(runner: Runner, dsfs: Path, store: Path) -> dict[str, Any] | None:
    """`dsfs log --json`'s entry for the newest version of a store, or None."""
    if not (store / "config").is_file():
        return None
    out = runner.capture([str(dsfs), "--store", str(store), "log", "--json"])
    with contextlib.suppress(ValueError, TypeError, KeyError):
        return dict(max(json.loads(out or ""), key=lambda v: v["number"]))
    return None


def latest_files(runner: Runner, dsfs: Path, store: Path) -> int | None:
    newest = newest_version(runner, dsfs, store)
    return int(newest["stats"]["files"]) if newest else None


@dataclass(frozen=True)
class ManyfilesStore:
    source: Path  # the store as found or built
    how: str  # how it was obtained (for the report)
    tree_command: str  # the dataset.py command that made its files


def manyfiles_store(runner: Runner, workdir: Path, dsfs: Path, count: int) -> ManyfilesStore:
    """A store whose newest version holds `count` small files (1000 per directory)."""
    tree_cmd = f"scripts/dataset.py manyfiles --count {count} --seed 1"
    left = workdir / "repos" / "dsfs" / "store"  # by `scripts/bench manyfiles --keep`
    if latest_files(runner, dsfs, left) == count:
        return ManyfilesStore(
            left, f"the store `scripts/bench manyfiles --keep` left at {left}", tree_cmd
        )
    own = workdir / "head" / f"manyfiles-{count}" / "store"
    if latest_files(runner, dsfs, own) == count:
        return ManyfilesStore(own, f"built earlier by `scripts/bench head` at {own}", tree_cmd)
    base = workdir / "data" / f"manyfiles-{count}-dirs-seed1"  # shared with `bench manyfiles`
    tree = base / "data"
    stamp = {"kind": "manyfiles", "count": count, "flat": False, "seed": 1}
    gen = ["manyfiles", str(tree), "--count", str(count), "--seed", "1"]
    if B.reuse_or_generate(runner, base, tree, stamp, gen):
        B.TouchedFile(base, tree, runner).restore()  # a `bench manyfiles` run cut short
    shutil.rmtree(own, ignore_errors=True)
    own.parent.mkdir(parents=True, exist_ok=True)
    B.log(f"importing {count:,} files into {own} (once)")
    runner.run([str(dsfs), "--store", str(own), "init"], "head-manyfiles-init")
    cmd = [str(dsfs), "--store", str(own), "import", str(tree), "-m", "v1", "--quiet"]
    runner.run(cmd, "head-manyfiles-import")
    return ManyfilesStore(own, f"imported by `scripts/bench head` into {own}", tree_cmd)


def copy_store(source: Path, dest: Path, limit: int = 8 * GIB) -> tuple[Path, str]:
    """A private copy of source at dest (commits only add versions: a big store is used as is)."""
    size = B.tree_stats(source).allocated
    if size > limit:
        B.log(f"{source} holds {size / GIB:.1f} GiB: committing into it directly")
        return source, f"used in place ({size / GIB:.1f} GiB, too big to copy)"
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run(["cp", "--reflink=auto", "-a", str(source), str(dest)], check=True)
    took = time.perf_counter() - t0
    B.log(f"copied {source} ({size / 1e6:,.0f} MB) to {dest} in {took:.1f} s")
    return dest, f"a copy (`cp --reflink=auto -a`, {size / 1e6:,.0f} MB)"
