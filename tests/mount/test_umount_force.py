"""`dsfs umount --force`: the way out of a mount whose daemon no longer answers.

A hung daemon is simulated by stopping it (SIGSTOP): every request waits, as in a deadlock. A
plain `dsfs umount` must give up with one line that names `--force`; `--force` must abort the
FUSE connection (the process waiting in the mount gets an error instead of sleeping forever),
stop the daemon and detach the mountpoint, and the next mount must serve everything that was
written and closed before, as after a kill -9.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.mount import mounted_at
from tests.mountutil import dsfs_argv, mounted

pytestmark = pytest.mark.slow


def _dsfs(store: Path, *args: str | Path, timeout: float = 120
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dsfs_argv(store, *args), capture_output=True, text=True,
                          timeout=timeout)


def test_force_unmount_frees_a_process_stuck_in_a_hung_mount_and_the_next_mount_recovers(
        tmp_path: Path) -> None:
    store, src, mnt = tmp_path / "store", tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(200_000))
    assert _dsfs(store, "init").returncode == 0
    assert _dsfs(store, "import", src, "-m", "one").returncode == 0
    written = os.urandom(100_000)
    with mounted(store, mnt) as daemon:
        (mnt / "@head" / "closed.bin").write_bytes(written)
        os.kill(daemon.proc.pid, signal.SIGSTOP)
        stuck = subprocess.Popen([sys.executable, "-c",
                                  f"open({str(mnt / '@v1' / 'a.bin')!r}, 'rb').read()"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            plain = _dsfs(store, "umount", mnt, "--timeout", "3")
            assert plain.returncode != 0
            lines = plain.stderr.strip().splitlines()
            assert len(lines) == 1 and "--force" in lines[0], plain.stderr
            assert "Traceback" not in plain.stderr
            assert stuck.poll() is None, "the reader should still wait in the hung mount"

            forced = _dsfs(store, "umount", "--force", mnt, timeout=60)
            assert forced.returncode == 0, forced.stderr
            stuck.communicate(timeout=30)  # freed: it fails instead of waiting
            assert stuck.returncode != 0
            # stopped, it could not act on SIGTERM: --force went on to SIGKILL
            assert daemon.proc.wait(timeout=30) == -signal.SIGKILL
            assert mounted_at(mnt) is None
        finally:
            if daemon.proc.poll() is None:
                os.kill(daemon.proc.pid, signal.SIGCONT)
            if stuck.poll() is None:
                stuck.kill()
                stuck.wait()
    with mounted(store, mnt):
        assert (mnt / "@head" / "closed.bin").read_bytes() == written
        assert (mnt / "@v1" / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
    assert _dsfs(store, "verify").returncode == 0


def test_force_unmount_of_a_path_that_is_not_mounted_says_so(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    result = _dsfs(tmp_path / "store", "umount", "--force", tmp_path / "mnt")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "not mounted" in result.stderr, result.stderr
