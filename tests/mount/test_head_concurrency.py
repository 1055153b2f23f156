"""Concurrency in @head on a real mount: reads, writes, truncates, renames, fsyncs, mmap writes,
copy_file_range and commits on the same files from several threads and processes at once.

What once hung the whole mount (a truncate holding @head's database lock waiting for a file's
lock while a read held that file's lock waiting for the database) must now finish within a
deadline, every time: the daemon runs with the lock order checked (DSFS_CHECK_LOCKS=1 from
tests/conftest.py), so an inversion fails the test even when the threads do not collide, and a
hang is caught by the deadline, after which the test aborts the FUSE connection so that nothing
stays stuck. Afterwards @head must read the same before and after a commit and a remount, and
the store must verify. `DSFS_LONG=1` runs the load for a minute instead of a few seconds.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from daemon.unmount import abort_connection, ensure_fusectl
from tests.mount.stress_worker import FILES
from tests.mountutil import Daemon, dsfs_argv, mounted

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SECONDS = 60.0 if os.environ.get("DSFS_LONG") == "1" else 8.0
DEADLINE = SECONDS + 60.0
"""A worker still running this long after the load should have ended is hung."""


def _dsfs(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dsfs_argv(store, *args), capture_output=True, text=True, timeout=120)


def _digests(root: Path) -> dict[str, str]:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in FILES}


def _make_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    rnd = random.Random(7)
    for name in FILES[:3]:  # half the files have base content, half are new in @head
        (src / "d" / name).write_bytes(rnd.randbytes(rnd.randrange(1 << 20, 3 << 20)))
    assert _dsfs(store, "init").returncode == 0
    result = _dsfs(store, "import", str(src), "-m", "base")
    assert result.returncode == 0, result.stderr
    return store


def _commit_now_and_then(store: Path, stop: threading.Event, failures: list[str]) -> None:
    while not stop.wait(1.5):
        result = _dsfs(store, "commit", "-m", "during the load")
        if result.returncode != 0 and "nothing to commit" not in result.stderr:
            failures.append(f"commit: {result.stderr.strip()}")


@pytest.fixture(autouse=True)
def _fusectl() -> None:
    """Ready before any hang: aborting a hung connection must not need a new process (a fork
    can wait behind a thread stuck in the mount)."""
    ensure_fusectl()


def _hung(daemon: Daemon, what: str) -> str:
    aborted = abort_connection(daemon.mountpoint)  # frees every process waiting in the mount
    return (f"{what} did not finish within {DEADLINE:.0f} s: the mount hung (connection "
            f"{'aborted' if aborted else 'NOT aborted'})\n{daemon.log_text()[-4000:]}")


def test_reads_writes_truncates_renames_fsyncs_and_commits_at_once_never_hang(
        tmp_path: Path) -> None:
    store = _make_store(tmp_path)
    mnt = tmp_path / "mnt"
    with mounted(store, mnt) as daemon:
        d = mnt / "@head" / "d"
        for name in FILES[3:]:
            (d / name).write_bytes(b"new file in head\n" * 1000)
        stop = threading.Event()
        failures: list[str] = []
        committer = threading.Thread(target=_commit_now_and_then, args=(store, stop, failures))
        procs = [subprocess.Popen([sys.executable, "-m", "tests.mount.stress_worker", str(d),
                                   str(seed), str(SECONDS), "3"],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
                 for seed in range(3)]
        committer.start()
        outputs: list[str] = []
        try:
            for proc in procs:
                try:
                    out, _ = proc.communicate(timeout=DEADLINE)
                except subprocess.TimeoutExpired:
                    pytest.fail(_hung(daemon, f"worker {proc.pid}"))
                outputs.append(out)
                assert proc.returncode == 0, f"a worker saw errors:\n{out}"
        finally:
            stop.set()
            committer.join(timeout=DEADLINE)
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert not committer.is_alive(), _hung(daemon, "a commit")
        assert not failures, failures
        ops = sum(int(out.rsplit("OPS ", 1)[1]) for out in outputs)
        assert ops > 50, f"the load did almost nothing ({ops} operations): {outputs}"
        log = daemon.log_text()
        assert "LockOrderError" not in log and "Traceback" not in log, log[-4000:]

        before = _digests(d)
        result = _dsfs(store, "commit", "-m", "after the load", "--json")
        assert result.returncode == 0 or "nothing to commit" in result.stderr, result.stderr
        assert _digests(d) == before
        assert _digests(mnt / "@latest" / "d") == before
    result = _dsfs(store, "verify", "--read-data")
    assert result.returncode == 0, result.stdout + result.stderr
    with mounted(store, mnt):
        assert _digests(mnt / "@head" / "d") == before


def test_a_read_and_a_truncate_of_files_whose_numbers_differ_by_64_do_not_wait_for_each_other(
        tmp_path: Path) -> None:
    """The old striped locks made files 64 inode numbers apart share one lock; the
    reproduction from the field: two readers dropping the page cache before each read, one
    thread doing ftruncate + pwrite, on different files."""
    store = _make_store(tmp_path)
    mnt = tmp_path / "mnt"
    with mounted(store, mnt) as daemon:
        d = mnt / "@head" / "many"
        d.mkdir()
        paths = [d / f"g{i}" for i in range(70)]
        for p in paths:
            p.write_bytes(os.urandom(300_000))
        end = time.monotonic() + min(SECONDS, 5.0)
        errors: list[BaseException] = []

        def reader(p: Path) -> None:
            try:
                while time.monotonic() < end:
                    fd = os.open(p, os.O_RDONLY)
                    try:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        os.pread(fd, 300_000, 0)
                    finally:
                        os.close(fd)
            except BaseException as exc:
                errors.append(exc)

        def truncater(p: Path) -> None:
            try:
                fd = os.open(p, os.O_RDWR)
                try:
                    while time.monotonic() < end:
                        os.ftruncate(fd, 100_000)
                        os.pwrite(fd, os.urandom(200_000), 50_000)
                finally:
                    os.close(fd)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(paths[0],), daemon=True),
                   threading.Thread(target=reader, args=(paths[64],), daemon=True),
                   threading.Thread(target=truncater, args=(paths[64],), daemon=True),
                   threading.Thread(target=truncater, args=(paths[0],), daemon=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=DEADLINE)
            if t.is_alive():
                pytest.fail(_hung(daemon, "a reader or truncater"))
        assert not errors, errors
        assert "LockOrderError" not in daemon.log_text()
