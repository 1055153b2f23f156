"""A full disk under the store: imports, commits and @head writes fail cleanly and recover.

Each test puts its store on its own small ext4 filesystem (a loop device backed by an image
in tmp_path) and takes the free space away with a filler file (`loopfs.Filler`), so the disk
fills at a chosen point; deleting the filler gives the space back. Mountpoints, daemon logs and
source trees live outside the small filesystem.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.loopfs import Filler, LoopFs, MiB, free_bytes, loop_fs, require_loop, used_bytes
from tests.faults.storeutil import manifest
from tests.mountutil import dsfs_argv, mounted, wait_for
from tests.treeutil import snapshot, write

pytestmark = pytest.mark.slow

BLOCK = 4096


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[LoopFs]:
    require_loop()
    with loop_fs(tmp_path / "small.img", tmp_path / "small", size=128 * MiB) as fs:
        yield fs


def dsfs(store: Path, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(dsfs_argv(store, *args), capture_output=True, text=True,
                            timeout=300)
    if check:
        assert result.returncode == 0, f"dsfs {' '.join(map(str, args))}: {result.stderr}"
    return result


def assert_no_space_error(result: subprocess.CompletedProcess[str]) -> None:
    """Exit code 8 (disk full) with one clear line and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 8, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dsfs: error:"), lines
    assert "no space" in lines[0].lower(), lines


def random_tree(root: Path, seed: int, files: int, size: int) -> dict[str, bytes]:
    rnd = random.Random(seed)
    out = {f"d{i % 3}/f{i:02d}.bin": rnd.randbytes(size) for i in range(files)}
    out[f"notes-{seed}.txt"] = b"seed %d\n" % seed
    for rel, data in out.items():
        write(root / rel, data)
    return out


def expected(files: dict[str, bytes]) -> dict[str, str]:
    out = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    for rel in files:
        parts = rel.split("/")[:-1]
        for i in range(len(parts)):
            out["/".join(parts[: i + 1])] = "dir"
    return out


def contents(root: Path) -> dict[bytes, tuple[object, ...]]:
    return {k: v[6:8] if v[6:] else v[0:1] for k, v in snapshot(root, mtimes=False).items()
            if k != b"."}


def verify(store: Path) -> None:
    result = dsfs(store, "verify", "--read-data", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# -- (a) import ----------------------------------------------------------------------------------

def small_packs(store: Path, size: int) -> None:
    """Set a fresh store's pack size (packs of 32 MiB would not fill a small disk several
    times over: each import worker writes a pack of its own)."""
    config = json.loads((store / "config").read_text())
    config["pack_target_size"] = size
    (store / "config").write_text(json.dumps(config))


def test_import_on_a_full_disk_fails_cleanly_and_gc_reclaims_what_it_left(
        tmp_path: Path, small_fs: LoopFs) -> None:
    store = small_fs.mountpoint / "store"
    filler = Filler(small_fs.mountpoint)
    dsfs(store, "init")
    small_packs(store, 4 * MiB)
    v1 = random_tree(tmp_path / "src1", 1, 6, 400_000)
    assert dsfs(store, "import", tmp_path / "src1", "-m", "first").stdout.strip() == "v1"
    before = manifest(store)
    assert before == {"v1": expected(v1)}

    # 40 MiB free for 60 MiB of incompressible data: packs are sealed and indexed until one
    # fails; they hold objects no version uses
    random_tree(tmp_path / "big", 2, 12, 5 * MiB)
    filler.leave(40 * MiB)
    used_before = used_bytes(small_fs.mountpoint)
    result = dsfs(store, "import", tmp_path / "big", "-m", "too big", check=False)
    assert_no_space_error(result)
    assert result.stdout == ""
    leftover = used_bytes(small_fs.mountpoint) - used_before
    print(f"\nfailed import: {result.stderr.strip()!r}; it left {leftover / MiB:.1f} MiB")
    assert leftover > 8 * MiB, "no sealed pack was left to test gc with"

    # still on the full disk: the store opens, verifies and reads as before
    verify(store)
    assert manifest(store) == before
    log = json.loads(dsfs(store, "log", "--json").stdout)
    assert [v["version"] for v in log] == ["v1"], log

    # space back: a new import (a different tree, so nothing of the failed one is reused)
    filler.remove()
    v2 = random_tree(tmp_path / "src2", 3, 4, 1 * MiB)
    assert dsfs(store, "import", tmp_path / "src2", "-m", "second").stdout.strip() == "v2"
    used_with_leftovers = used_bytes(small_fs.mountpoint)
    gc = json.loads(dsfs(store, "gc", "--json").stdout)
    freed = used_with_leftovers - used_bytes(small_fs.mountpoint)
    print(f"gc: {gc}; the filesystem got {freed / MiB:.1f} MiB back")
    assert gc["bytes_freed"] >= leftover - 4 * MiB, (gc, leftover)
    assert freed >= leftover - 4 * MiB, (gc, leftover, freed)
    # what stays is v1 + v2 (4 MiB of new data), not what the failed import left
    assert used_bytes(small_fs.mountpoint) < used_before + 8 * MiB, (gc, leftover, freed)
    assert manifest(store) == {"v1": expected(v1), "v2": expected(v2)}
    verify(store)


# -- (b) commit ----------------------------------------------------------------------------------

def test_commit_on_a_full_disk_fails_cleanly_and_keeps_head(
        tmp_path: Path, small_fs: LoopFs) -> None:
    store = small_fs.mountpoint / "store"
    filler = Filler(small_fs.mountpoint)
    dsfs(store, "init")
    v1 = random_tree(tmp_path / "src1", 1, 4, 300_000)
    dsfs(store, "import", tmp_path / "src1", "-m", "first")
    rnd = random.Random(4)
    with mounted(store, tmp_path / "mnt") as daemon:
        head = daemon.mountpoint / "@head"
        for i in range(8):  # 40 MiB of new files in @head's overlays
            write(head / f"new/{i}.bin", rnd.randbytes(5 * MiB))
        with open(head / "d0/f00.bin", "r+b") as f:
            f.seek(100_000)
            f.write(b"changed" * 1000)
        expect = contents(head)
        changes = json.loads(dsfs(store, "status", "--json").stdout)["changes"]
        assert len(changes) >= 9

        filler.leave(12 * MiB)
        result = dsfs(store, "commit", "-m", "does not fit", check=False)
        assert_no_space_error(result)
        assert daemon.proc.poll() is None
        assert sorted(n for n in os.listdir(daemon.mountpoint) if n.startswith("@v")) == ["@v1"]
        assert contents(head) == expect
        assert json.loads(dsfs(store, "status", "--json").stdout)["changes"] == changes
        assert manifest(store) == {"v1": expected(v1)}
        verify(store)

        filler.remove()
        assert dsfs(store, "commit", "-m", "fits now").stdout.strip() == "v2"
        v2 = daemon.mountpoint / "@v2"
        wait_for(v2.is_dir, 5, "@v2 to appear", daemon)
        assert contents(v2) == expect
        assert contents(head) == expect
        assert json.loads(dsfs(store, "status", "--json").stdout)["changes"] == []
        assert "Traceback" not in daemon.log_text(), daemon.log_text()
    verify(store)


# -- (c) writes into @head -----------------------------------------------------------------------

def _write_until_enospc(path: Path, data: bytes, piece: int, fsync: bool = True
                        ) -> tuple[int, list[str]]:
    """Write `data` in pieces, then fsync (if asked) and close; return how many bytes write()
    accepted and where which errors came (every error must be ENOSPC)."""
    errors: list[str] = []
    accepted = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off in range(0, len(data), piece):
            try:
                accepted += os.write(fd, data[off:off + piece])
            except OSError as exc:
                errors.append(f"write at {off}: {exc.errno}")
                assert exc.errno == errno.ENOSPC, exc
                break
        try:
            if fsync:
                os.fsync(fd)
        except OSError as exc:
            errors.append(f"fsync: {exc.errno}")
            assert exc.errno == errno.ENOSPC, exc
    finally:
        try:
            os.close(fd)
        except OSError as exc:
            errors.append(f"close: {exc.errno}")
            assert exc.errno == errno.ENOSPC, exc
    return accepted, errors


def _blocks_are_data_or_zero(got: bytes, data: bytes) -> None:
    """A file whose writes failed part-way holds, per block, what was written or nothing."""
    zero = bytes(BLOCK)
    for off in range(0, len(got), BLOCK):
        block = got[off:off + BLOCK]
        assert block in (data[off:off + len(block)], zero[:len(block)]), \
            f"block at {off} is neither the written bytes nor zeros"


def test_writes_into_head_on_a_full_disk_get_enospc_and_lose_nothing_closed(
        tmp_path: Path, small_fs: LoopFs) -> None:
    store = small_fs.mountpoint / "store"
    filler = Filler(small_fs.mountpoint)
    dsfs(store, "init")
    v1 = random_tree(tmp_path / "src1", 1, 3, 200_000)
    dsfs(store, "import", tmp_path / "src1", "-m", "first")
    rnd = random.Random(5)
    mnt = tmp_path / "mnt"
    kept = {"early/a.bin": rnd.randbytes(3 * MiB + 11), "early/b.txt": b"bravo\n" * 999,
            "d0/f00.bin": rnd.randbytes(200_000)}  # the last one replaces a v1 file
    big = rnd.randbytes(24 * MiB)
    again = rnd.randbytes(6 * MiB + 1)
    with mounted(store, mnt) as daemon:
        head = mnt / "@head"
        for rel, data in kept.items():
            write(head / rel, data)
        filler.leave(4 * MiB)
        assert free_bytes(small_fs.mountpoint) < 5 * MiB

        accepted, errors = _write_until_enospc(head / "big.bin", big, 256 * 1024)
        assert errors, f"24 MiB went into @head with 4 MiB free (accepted {accepted})"
        # a writer that never calls fsync learns it from write() or close()
        accepted, closed_errors = _write_until_enospc(head / "closed.bin", big, 256 * 1024,
                                                      fsync=False)
        assert closed_errors, f"close() reported success for 24 MiB with 4 MiB free " \
                              f"(write() accepted {accepted})"
        errors += closed_errors
        # nothing written before is lost, the daemon serves everything
        assert daemon.proc.poll() is None
        for rel, data in kept.items():
            assert (head / rel).read_bytes() == data, rel
        for rel, data in v1.items():
            assert (mnt / "@v1" / rel).read_bytes() == data, rel
        for name in ("big.bin", "closed.bin"):
            got = (head / name).read_bytes()
            assert len(got) <= len(big)
            _blocks_are_data_or_zero(got, big)
        # a small write may or may not fit in what is left; a failure is ENOSPC
        try:
            write(head / "small.txt", b"tiny\n")
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc

        # data writes leave a reserve free, so removing a file still works on the full disk
        os.unlink(head / "closed.bin")
        assert not (head / "closed.bin").exists()

        filler.remove()
        accepted, errors2 = _write_until_enospc(head / "big.bin", big, 1 * MiB)
        assert errors2 == [] and accepted == len(big)
        write(head / "later/again.bin", again)
        assert (head / "big.bin").read_bytes() == big
        assert (head / "later/again.bin").read_bytes() == again
        assert "Traceback" not in daemon.log_text(), daemon.log_text()
    with mounted(store, mnt) as daemon:
        for rel, data in [*kept.items(), ("big.bin", big), ("later/again.bin", again)]:
            assert (head / rel).read_bytes() == data, rel
        assert dsfs(store, "commit", "-m", "after the full disk").stdout.strip() == "v2"
        v2 = mnt / "@v2"
        wait_for(v2.is_dir, 5, "@v2 to appear", daemon)
        for rel, data in [*kept.items(), ("big.bin", big), ("later/again.bin", again)]:
            assert (v2 / rel).read_bytes() == data, rel
    verify(store)
    print(f"\nerrors seen while the disk was full: {errors}")
