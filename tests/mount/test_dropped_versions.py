"""Real mounts: a dropped version leaves the mount at once, its open files keep reading until
closed, and gc's deleted packs free their space while mounted."""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from tests.mountutil import dsfs_argv, mounted, wait_for
from tests.treeutil import write


def dsfs(store: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(dsfs_argv(store, *args), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def gc_json(store: Path) -> dict[str, object]:
    out: dict[str, object] = json.loads(dsfs(store, "gc", "--json").stdout)
    return out


def errno_of(fn: object, *args: object, **kwargs: object) -> int:
    try:
        fn(*args, **kwargs)  # type: ignore[operator]
    except OSError as exc:
        return exc.errno or 0
    return 0


@pytest.fixture
def two_versions(tmp_path: Path) -> tuple[Path, bytes]:
    store = tmp_path / "store"
    dsfs(store, "init")
    data = random.Random(7).randbytes(6 << 20)
    write(tmp_path / "src1/a.bin", data)
    write(tmp_path / "src1/sub/b.txt", b"only in v1")
    dsfs(store, "import", tmp_path / "src1", "-m", "one")
    write(tmp_path / "src2/other.txt", b"v2")
    dsfs(store, "import", tmp_path / "src2", "-m", "two")
    return store, data


def test_dropped_version_is_enoent_while_open_files_read_to_the_end(
        two_versions: tuple[Path, bytes], tmp_path: Path) -> None:
    store, data = two_versions
    with mounted(store, tmp_path / "mnt") as daemon:
        mnt = daemon.mountpoint
        assert sorted(os.listdir(mnt / "@v1")) == ["a.bin", "sub"]
        os.stat(mnt / "@v1/a.bin")
        os.stat(mnt / "@v1/sub/b.txt")
        with open(mnt / "@v1/a.bin", "rb", buffering=0) as f:
            assert f.read(4096) == data[:4096]
            dsfs(store, "drop", "v1")
            wait_for(lambda: errno_of(os.stat, mnt / "@v1/a.bin") == errno.ENOENT, 5,
                     "@v1/a.bin to be gone", daemon)
            for path in ("@v1", "@v1/sub/b.txt", "@v1/sub"):
                assert errno_of(os.stat, mnt / path) == errno.ENOENT, path
            assert "@v1" not in os.listdir(mnt)
            report = gc_json(store)
            assert report["kept_for_open_files"] == ["v1"], report
            rest = f.read()  # never read before: every byte comes from the store now
            assert data[:4096] + rest == data
        # closed: the next gc frees v1's data
        wait_for(lambda: gc_json(store)["kept_for_open_files"] == [], 10,
                 "gc to see v1 closed", daemon)
        assert "damaged data" not in daemon.log_text()
        assert "Traceback" not in daemon.log_text()


def test_a_cwd_inside_a_dropped_version_gets_estale_not_damage(
        two_versions: tuple[Path, bytes], tmp_path: Path) -> None:
    store, _ = two_versions
    with mounted(store, tmp_path / "mnt") as daemon:
        mnt = daemon.mountpoint
        fd = os.open(mnt / "@v1/sub", os.O_RDONLY | os.O_DIRECTORY)
        try:
            dsfs(store, "drop", "v1")
            wait_for(lambda: errno_of(os.stat, mnt / "@v1") == errno.ENOENT, 5,
                     "@v1 to be gone", daemon)
            gc_json(store)
            code = errno_of(os.open, "b.txt", os.O_RDONLY, 0, dir_fd=fd)
            assert code in (errno.ENOENT, errno.ESTALE), code
        finally:
            os.close(fd)
        assert "damaged data" not in daemon.log_text()


def _deleted_packs(pid: int) -> list[str]:
    out = []
    fds = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fds):
        try:
            target = os.readlink(fds / fd)
        except OSError:
            continue
        if "/packs/" in target and target.endswith("(deleted)"):
            out.append(target)
    return out


def test_gc_while_mounted_frees_the_space_of_deleted_packs(
        two_versions: tuple[Path, bytes], tmp_path: Path) -> None:
    store, data = two_versions
    with mounted(store, tmp_path / "mnt") as daemon:
        mnt = daemon.mountpoint
        assert (mnt / "@v1/a.bin").read_bytes() == data
        dsfs(store, "drop", "v1")
        wait_for(lambda: errno_of(os.stat, mnt / "@v1") == errno.ENOENT, 5, "@v1 to go", daemon)
        report = gc_json(store)
        assert report["packs_deleted"], report
        wait_for(lambda: not _deleted_packs(daemon.proc.pid), 10,
                 "the daemon to close the packs gc deleted", daemon)
