"""Bit rot in the LMDB index: flipped bits and truncation never turn into wrong bytes, and
repair recovers.

LMDB pages carry no checksums, so a flipped bit in `index/data.mdb` can change a location, a
version record, a tag, or the B-tree itself. dsfs checks every object it reads against its
BLAKE3 id and every version record against its copy in the packs, so whatever the flip hits,
each trial must end in one of: the store reads correctly, or the damage is reported (verify
exits 1, reads fail with a dsfs error, or the store refuses to open with "run dsfs verify
--repair"). Never wrong bytes from a read that succeeded. Then `dsfs verify --repair` rebuilds
the index from the packs and every version must read byte-identical again.

Seeded; `DSFS_LONG=1` runs 60 trials instead of 12 (every fourth truncates the file at a page
boundary). A reader that dies of a signal (SIGBUS past a cut-short mapping, a crash inside
LMDB, which does not check page contents) fails the test: that is not a clear report.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mountutil import dsfs_argv
from tests.treeutil import write

REPO = Path(__file__).resolve().parents[2]
TRIALS = 60 if os.environ.get("DSFS_LONG") else 12
SEED = 20261127

READ_ALL = r"""
import hashlib, json, sys
from pathlib import Path
from vfs.store import Store
from vfs.model import Kind
from vfs.errors import DsfsError

out = {}
try:
    store = Store.open(Path(sys.argv[1]))
except DsfsError as exc:
    print(json.dumps({"open": str(exc)})); sys.exit(0)
def walk(version, entry, prefix):
    for e in store.list_dir(entry):
        rel = prefix + e.name.decode("utf-8", "surrogateescape")
        if e.kind == Kind.DIR:
            walk(version, e, rel + "/")
        elif e.kind == Kind.FILE:
            try:
                out[f"{version.name}:{rel}"] = hashlib.sha256(
                    store.read(e, 0, e.size + 1)).hexdigest()
            except DsfsError as exc:
                out[f"{version.name}:{rel}"] = "ERR " + type(exc).__name__
try:
    for v in store.versions():
        try:
            walk(v, v.root_entry, "")
        except DsfsError as exc:
            out[f"{v.name}:"] = "ERR " + type(exc).__name__
    out["tags"] = json.dumps(store.tags(), sort_keys=True)
except DsfsError as exc:
    out["index"] = "ERR " + type(exc).__name__
print(json.dumps(out))
"""


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          check=False)


def _read_all(store: Path) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-c", READ_ALL, str(store)])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A store with three versions and a tag, and the digest of every file in it."""
    base = tmp_path_factory.mktemp("index-rot")
    store = base / "store"
    rng = random.Random(SEED)
    src = base / "src"
    files = {f"d{i % 4}/f{i:03d}.bin": rng.randbytes(rng.choice([100, 5_000, 90_000]))
             for i in range(120)}
    files["big/one.bin"] = rng.randbytes(5 << 20)
    assert _run(dsfs_argv(store, "init", "-q")).returncode == 0
    for step in range(3):
        for rel, data in files.items():
            write(src / rel, data)
        res = _run(dsfs_argv(store, "import", src, "-m", f"step {step}", "-q"))
        assert res.returncode == 0, res.stderr
        for rel in rng.sample(sorted(files), 15):
            files[rel] = rng.randbytes(len(files[rel]) or 1)
        files[f"new/s{step}.txt"] = f"step {step}\n".encode() * 100
    assert _run(dsfs_argv(store, "tag", "v2", "baseline")).returncode == 0
    res = _read_all(store)
    assert res.returncode == 0, res.stderr
    expected = json.loads(res.stdout)
    assert not any(v.startswith("ERR") for v in expected.values())
    assert len(expected) == 121 + 122 + 123 + 1  # files of v1, v2, v3 and the tags
    return store, expected


def _flip_bits(path: Path, rng: random.Random, count: int) -> list[int]:
    size = path.stat().st_size
    offsets = sorted(rng.randrange(size) for _ in range(count))
    with open(path, "r+b") as f:
        for off in offsets:
            f.seek(off)
            b = f.read(1)[0]
            f.seek(off)
            f.write(bytes([b ^ (1 << rng.randrange(8))]))
    return offsets


def test_flipped_bits_in_the_index_are_reported_or_harmless_and_repair_restores_all(
        pristine: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    store0, expected = pristine
    rng = random.Random(SEED)
    counts = {"harmless": 0, "reported": 0, "refused to open": 0}
    for trial in range(TRIALS):
        store = tmp_path / f"t{trial}"
        shutil.copytree(store0, store, symlinks=True)
        data = store / "index" / "data.mdb"
        if trial % 4 == 3:
            size = rng.randrange(data.stat().st_size // 4096) * 4096
            os.truncate(data, size)
            what = f"trial {trial} (index truncated to {size} bytes)"
        else:
            offsets = _flip_bits(data, rng, rng.choice([1, 4, 16]))
            what = f"trial {trial} (bits flipped at {offsets})"

        verify = _run(dsfs_argv(store, "verify", "--read-data", "-q"))
        assert "Traceback" not in verify.stderr, (what, verify.stderr)
        got = _read_all(store)
        assert verify.returncode >= 0 and got.returncode >= 0, \
            f"{what}: a reader died of signal {-min(verify.returncode, got.returncode)}"
        assert got.returncode == 0, (what, got.stderr)
        result = json.loads(got.stdout)
        if "open" in result:
            assert "verify --repair" in result["open"], (what, result)
            assert verify.returncode != 0, what
            counts["refused to open"] += 1
        else:
            wrong = {k: v for k, v in result.items()
                     if k in expected and v != expected[k] and not v.startswith("ERR")}
            assert not wrong, f"{what}: wrong bytes served for {sorted(wrong)}"
            damaged = result != expected
            if verify.returncode == 0:
                assert not damaged, f"{what}: verify passed but reads differ: " + str(
                    {k: v for k, v in result.items() if expected.get(k) != v})
                counts["harmless"] += 1
            else:
                assert verify.returncode in (1, 3, 9), (what, verify.returncode, verify.stderr)
                counts["reported"] += 1

        repair = _run(dsfs_argv(store, "verify", "--repair", "-q"))
        assert repair.returncode == 0, (what, repair.stdout, repair.stderr)
        again = _read_all(store)
        assert again.returncode == 0 and json.loads(again.stdout) == expected, what
        shutil.rmtree(store)
    print(f"\nLMDB bit rot, {TRIALS} trials: {counts}")
    assert sum(counts.values()) == TRIALS
