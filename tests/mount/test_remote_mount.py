"""A clone of an S3 remote (moto's server on 127.0.0.1) mounted for real: bytes fetched on
demand equal what was pushed, versions others push appear in the running mount, and bytes
damaged on the way are EIO naming file, version and object, never served or cached."""

from __future__ import annotations

import errno
import json
import random
import subprocess
from pathlib import Path

import pytest

from tests.mountutil import dsfs_argv, mounted, wait_for
from tests.remote.conftest import fault_proxy, moto_server, s3_bucket, s3_env  # noqa: F401
from tests.remote.faultproxy import FaultProxy, Rule
from tests.remote.s3util import MotoServer
from tests.treeutil import write

DEADLINE = 20.0


def _run(store: Path, *args: str | Path) -> str:
    result = subprocess.run(dsfs_argv(store, *args), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _origin(tmp_path: Path, bucket: str, files: dict[str, bytes]) -> tuple[Path, str]:
    store, src = tmp_path / "a", tmp_path / "src"
    for rel, data in files.items():
        write(src / rel, data)
    url = f"s3://{bucket}/team/ds"
    _run(store, "init")
    _run(store, "import", src, "-m", "first")
    _run(store, "remote", "add", "origin", url)
    _run(store, "push")
    return store, url


def _clone(tmp_path: Path, url: str, endpoint: str | None = None) -> Path:
    clone = tmp_path / "b"
    extra = ["--endpoint-url", endpoint] if endpoint else []
    result = subprocess.run(dsfs_argv(clone, "clone", url, clone, *extra),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return clone


def test_a_mounted_clone_reads_pushed_bytes_and_follows_new_pushes(
        tmp_path: Path, s3_bucket: str) -> None:  # noqa: F811
    rng = random.Random(11)
    files = {f"img/{i:02d}.jpg": rng.randbytes(rng.randrange(30_000, 120_000))
             for i in range(20)}
    files["shard.bin"] = rng.randbytes(5_000_000)
    origin, url = _origin(tmp_path, s3_bucket, files)
    clone = _clone(tmp_path, url)
    with mounted(clone, tmp_path / "mnt", "--pull-every", "1") as daemon:
        mnt = daemon.mountpoint
        for rel, data in files.items():
            assert (mnt / "@v1" / rel).read_bytes() == data, rel
        write(tmp_path / "src/new.txt", b"pushed later\n")
        _run(origin, "import", tmp_path / "src", "-m", "second")
        _run(origin, "push")
        wait_for(lambda: (mnt / "@v2").exists(), DEADLINE, "v2 to appear (--pull-every)",
                 daemon)
        assert (mnt / "@v2/new.txt").read_bytes() == b"pushed later\n"
        assert (mnt / "@latest/shard.bin").read_bytes() == files["shard.bin"]
        write(tmp_path / "src/third.txt", b"3\n")
        _run(origin, "import", tmp_path / "src", "-m", "third")
        _run(origin, "push")
        _run(clone, "pull")  # from a shell, while mounted
        wait_for(lambda: (mnt / "@v3/third.txt").exists(), DEADLINE, "v3 after dsfs pull",
                 daemon)
    cache = json.loads(_run(clone, "cache", "--json"))
    assert 5_000_000 <= cache["bytes_used"] <= cache["bound"]  # the shard at least, bounded


def test_bytes_damaged_on_the_way_are_eio_and_named_never_served(
        tmp_path: Path, s3_bucket: str, fault_proxy: FaultProxy,  # noqa: F811
        moto_server: MotoServer) -> None:  # noqa: F811
    rng = random.Random(12)
    victim, other = rng.randbytes(300_000), rng.randbytes(200_000)
    _, url = _origin(tmp_path, s3_bucket, {"train/victim.bin": victim, "other.bin": other})
    clone = _clone(tmp_path, url, endpoint=fault_proxy.endpoint)
    with mounted(clone, tmp_path / "mnt") as daemon:
        mnt = daemon.mountpoint
        rule = fault_proxy.add(Rule("GET", r"/packs/", "flip", times=None))
        with pytest.raises(OSError) as info:
            (mnt / "@v1/train/victim.bin").read_bytes()
        assert info.value.errno == errno.EIO
        assert rule.hits >= 1
        log = daemon.log_text()
        assert "@v1/train/victim.bin" in log, log[-3000:]
        assert "damaged" in log and "object" in log
        fault_proxy.clear()
        assert (mnt / "@v1/train/victim.bin").read_bytes() == victim  # nothing bad was kept
        assert (mnt / "@v1/other.bin").read_bytes() == other
        assert daemon.proc.poll() is None
