"""`dsfs mount` returns only once everything a next command needs is there: the control socket
that `dsfs commit`, `status` and `reset` use is served before the mount reports ready (a commit
run right after `dsfs mount` returned used to find no daemon and fail with "@head is served by a
running dsfs mount")."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.mountutil import dsfs_argv, force_unmount

pytestmark = pytest.mark.slow


def _dsfs(store: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dsfs_argv(store, *args), capture_output=True, text=True, timeout=120)


def test_commit_right_after_mount_returns_reaches_the_daemon(tmp_path: Path) -> None:
    store, src, mnt = tmp_path / "store", tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    (src / "a.txt").write_bytes(b"a\n")
    assert _dsfs(store, "init").returncode == 0
    assert _dsfs(store, "import", src, "-m", "one").returncode == 0
    for round_ in range(3):
        mounted = _dsfs(store, "mount", mnt)
        try:
            assert mounted.returncode == 0, mounted.stderr
            # no wait of any kind: the control note must already be there
            note = json.loads((store / "head" / "control.json").read_text())
            assert note["pid"] > 0
            status = _dsfs(store, "status", "--json")
            assert status.returncode == 0, status.stderr
            (mnt / "@head" / f"r{round_}.txt").write_bytes(os.urandom(100))
            committed = _dsfs(store, "commit", "-m", f"round {round_}")
            assert committed.returncode == 0, committed.stderr
        finally:
            result = _dsfs(store, "umount", mnt)
            if result.returncode != 0:
                force_unmount(mnt)
    assert _dsfs(store, "verify").returncode == 0
