"""A second mount of a store serves the versions only: `dsfs mount` says so on the command line.

Both mounts are real background mounts started by `dsfs mount`, as a user would.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from daemon.mount import daemon_pid, mounted_at
from tests.mountutil import dsfs_argv, force_unmount
from tests.treeutil import write


def dsfs(store: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(dsfs_argv(store, *args), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def test_a_second_mount_says_that_another_mount_serves_head(tmp_path: Path) -> None:
    store, first, second = tmp_path / "store", tmp_path / "first", tmp_path / "second"
    write(tmp_path / "src" / "a.txt", b"alpha\n")
    dsfs(store, "init")
    dsfs(store, "import", tmp_path / "src")
    first.mkdir()
    second.mkdir()
    try:
        one = dsfs(store, "mount", first)
        assert "@head" not in one.stderr, one.stderr
        assert sorted(os.listdir(first)) == ["@head", "@latest", "@v1"]
        two = dsfs(store, "mount", second)
        notes = [line for line in two.stderr.splitlines() if "@head" in line]
        assert len(notes) == 1, two.stderr
        assert notes[0].startswith(f"dsfs: note: @head of {store} is served by another mount")
        assert f"pid {daemon_pid(first)}" in notes[0] and str(first) in notes[0], notes[0]
        assert "versions only" in notes[0]
        assert sorted(os.listdir(second)) == ["@latest", "@v1"]
        assert (second / "@v1" / "a.txt").read_bytes() == b"alpha\n"
        dsfs(store, "umount", second)
        dsfs(store, "umount", first)
    finally:
        for mp in (second, first):
            if mounted_at(mp) is not None:
                subprocess.run(dsfs_argv(store, "umount", mp), capture_output=True, timeout=60)
            force_unmount(mp)
    assert mounted_at(first) is None and mounted_at(second) is None
