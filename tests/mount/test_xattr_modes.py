"""xattrs: served when some version has them; otherwise the kernel is told there are none, so
`ls -l` does not ask the daemon once per file."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.mountutil import dsfs_argv, mounted
from tests.treeutil import write


@pytest.fixture
def plain_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    write(tmp_path / "src/a.txt", b"a")
    subprocess.run(dsfs_argv(store, "init"), check=True, capture_output=True)
    subprocess.run(dsfs_argv(store, "import", tmp_path / "src"), check=True, capture_output=True)
    return store


def test_store_without_xattrs_answers_not_supported_by_default(plain_store: Path,
                                                               tmp_path: Path) -> None:
    with mounted(plain_store, tmp_path / "mnt") as daemon:
        path = daemon.mountpoint / "@v1/a.txt"
        with pytest.raises(OSError) as info:
            os.getxattr(path, "user.x")
        assert info.value.errno == errno.EOPNOTSUPP
        assert subprocess.run(["ls", "-l", str(path)], capture_output=True).returncode == 0
        assert "extended attributes off" in daemon.log_text()


def test_xattrs_on_serves_an_empty_list(plain_store: Path, tmp_path: Path) -> None:
    with mounted(plain_store, tmp_path / "mnt", "--xattrs", "on") as daemon:
        assert os.listxattr(daemon.mountpoint / "@v1/a.txt") == []
        with pytest.raises(OSError) as info:
            os.getxattr(daemon.mountpoint / "@v1/a.txt", "user.x")
        assert info.value.errno == errno.ENODATA
