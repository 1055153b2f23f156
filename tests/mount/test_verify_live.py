"""`dsfs verify` runs beside a mount (with @head changes) and a running import, stopping neither."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from tests.mountutil import dsfs_argv, mounted
from tests.treeutil import write


def run(store: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dsfs_argv(store, *args), capture_output=True, text=True)


def test_verify_while_mounted_and_importing(tmp_path: Path) -> None:
    rnd = random.Random(5)
    src, big, store, mnt = (tmp_path / n for n in ("src", "big", "store", "mnt"))
    write(src / "a.txt", b"alpha\n")
    for i in range(40):
        write(big / f"f{i:02d}.bin", rnd.randbytes(1 << 20))
    assert run(store, "init", "-q").returncode == 0
    assert run(store, "import", "-q", src).returncode == 0
    with mounted(store, mnt):
        (mnt / "@head" / "edited.txt").write_bytes(b"in head\n")
        importer = subprocess.Popen(dsfs_argv(store, "import", "-q", big, "-m", "big"),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            verify = run(store, "verify", "--read-data")
        finally:
            _, err = importer.communicate(timeout=120)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert importer.returncode == 0, err
        assert (mnt / "@head" / "edited.txt").read_bytes() == b"in head\n"
        assert (mnt / "@v1" / "a.txt").read_bytes() == b"alpha\n"
        again = run(store, "verify", "--read-data-subset", "50%", "--json")
        assert again.returncode == 0, again.stdout + again.stderr
        assert '"ok": true' in again.stdout
