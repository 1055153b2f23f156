from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfs import lockorder
from vfs.store import Store

# Every test runs with the lock order checked (vfs.lockorder): in this process, and in every
# daemon a test starts (the variable is inherited).
os.environ["DSFS_CHECK_LOCKS"] = "1"
lockorder.enable_checking()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.create(tmp_path / "store")
    try:
        yield s
    finally:
        s.close()
