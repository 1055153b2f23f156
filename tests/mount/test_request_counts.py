"""Which requests reach the daemon: a version's files and directories, once the kernel has
them, are opened, read, closed and listed without asking (issue 10), while @head, on its own
connection, still sees every open and close."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from daemon.control_client import ask_daemon
from tests.mountutil import dsfs_argv, mounted
from tests.treeutil import write

QUIET = ("OPEN", "RELEASE", "FLUSH", "OPENDIR", "READDIR", "READDIRPLUS", "RELEASEDIR",
         "LOOKUP", "GETATTR", "READ")


def counts(store: Path, connection: str) -> dict[str, int]:
    reply = ask_daemon(store, {"op": "requests"}, timeout=10)
    return dict(reply["requests"][connection])


def read_whole(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_warm_opens_reads_and_listings_of_a_version_reach_no_daemon(tmp_path: Path) -> None:
    src, store, mnt = tmp_path / "src", tmp_path / "store", tmp_path / "mnt"
    payload = os.urandom(300_000)
    write(src / "d/one.bin", payload)
    write(src / "d/two.txt", b"two")
    subprocess.run(dsfs_argv(store, "init"), check=True, capture_output=True)
    subprocess.run(dsfs_argv(store, "import", src, "-m", "one"), check=True,
                   capture_output=True)
    with mounted(store, mnt):
        one, d = mnt / "@v1/d/one.bin", mnt / "@v1/d"
        assert read_whole(one) == payload  # cold: looked up, read
        assert sorted(os.listdir(d)) == ["one.bin", "two.txt"]
        before = counts(store, "versions")
        for _ in range(50):
            assert read_whole(one) == payload
            with open(one, "rb") as f:
                f.seek(123_456)
                assert f.read(1000) == payload[123_456:124_456]
            os.stat(one)
        for _ in range(10):
            assert sorted(os.listdir(d)) == ["one.bin", "two.txt"]
        after = counts(store, "versions")
        grew = {op: after.get(op, 0) - before.get(op, 0) for op in QUIET}
        assert not any(grew.values()), grew
        # the first OPEN, OPENDIR and FLUSH were answered ENOSYS, which ends them for the
        # connection; with no OPEN there is no RELEASE at all
        assert after.get("OPEN", 0) == 1 and after.get("OPENDIR", 0) == 1, after
        assert after.get("FLUSH", 0) == 1 and after.get("RELEASE", 0) == 0, after


def test_head_keeps_real_opens_on_its_own_connection(tmp_path: Path) -> None:
    src, store, mnt = tmp_path / "src", tmp_path / "store", tmp_path / "mnt"
    write(src / "a.txt", b"a")
    subprocess.run(dsfs_argv(store, "init"), check=True, capture_output=True)
    subprocess.run(dsfs_argv(store, "import", src, "-m", "one"), check=True,
                   capture_output=True)
    with mounted(store, mnt):
        target = mnt / "@head/a.txt"
        assert read_whole(target) == b"a"
        before = counts(store, "head")
        for i in range(5):
            target.write_bytes(b"x" * i)
            assert read_whole(target) == b"x" * i
        after = counts(store, "head")
        assert after.get("OPEN", 0) - before.get("OPEN", 0) >= 10
        assert after.get("RELEASE", 0) - before.get("RELEASE", 0) >= 5
        assert os.stat(mnt).st_dev != os.stat(mnt / "@head").st_dev  # its own connection
        # a process in another interpreter sees the same bytes (no stale page cache)
        code = f"import sys; sys.stdout.write(open({str(target)!r}).read())"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout
        assert out == "x" * 4
