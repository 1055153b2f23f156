"""The mount helper itself: it must unmount when the test fails, and notice a dead daemon."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from daemon.mount import mounted_at
from tests.mountutil import dsfs_argv, mounted
from tests.treeutil import write


def test_helper_unmounts_even_when_the_test_body_fails(tmp_path: Path) -> None:
    store = tmp_path / "store"
    subprocess.run(dsfs_argv(store, "init", "-q"), check=True)
    mnt = tmp_path / "mnt"
    with pytest.raises(RuntimeError, match="boom"), mounted(store, mnt):
        assert mounted_at(mnt) is not None
        raise RuntimeError("boom")
    assert mounted_at(mnt) is None


def test_helper_fails_fast_when_the_daemon_cannot_start(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    write(mnt / "occupied", b"x")  # a non-empty mountpoint is refused
    store = tmp_path / "store"
    subprocess.run(dsfs_argv(store, "init", "-q"), check=True)
    with pytest.raises(AssertionError, match="not empty"), mounted(store, mnt, timeout=20):
        pass
