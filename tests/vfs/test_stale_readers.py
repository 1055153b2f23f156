"""A process killed -9 inside a read transaction leaves an LMDB reader slot that pins old pages:
opening the index, and the mount's periodic check, free it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from vfs.store import Store

REPO = Path(__file__).resolve().parents[2]

READER = """
import sys, time
from pathlib import Path
from vfs.index import Index
index = Index(Path(sys.argv[1]))
txn = index.env.begin()
txn.get(b"x")
print("reading", flush=True)
time.sleep(600)
"""

OPENER = """
import sys
from pathlib import Path
from vfs.index import Index
index = Index(Path(sys.argv[1]))
print(index.env.readers())
"""


def _reader_killed(index_dir: Path) -> int:
    """Start a process that holds a read transaction, kill it -9; its pid."""
    proc = subprocess.Popen([sys.executable, "-c", READER, str(index_dir)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "reading"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        if proc.stdout is not None:
            proc.stdout.close()
    return proc.pid


def _listed(readers: str, pid: int) -> bool:
    return any(line.split()[:1] == [str(pid)] for line in readers.splitlines())


def test_open_and_the_periodic_check_free_slots_of_killed_readers(tmp_path: Path) -> None:
    with Store.create(tmp_path / "store") as store:
        # this process keeps the environment open throughout, as a mount would: LMDB only
        # resets the reader table when the first process opens it
        index_dir = store.index.path
        dead = _reader_killed(index_dir)
        assert _listed(store.index.env.readers(), dead)
        out = subprocess.run([sys.executable, "-c", OPENER, str(index_dir)], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
        assert not _listed(out, dead), out  # cleared when the other process opened the index
        assert not _listed(store.index.env.readers(), dead)

        dead = _reader_killed(index_dir)
        assert _listed(store.index.env.readers(), dead)
        assert store.index.clear_stale_readers() == 1
        assert not _listed(store.index.env.readers(), dead)
