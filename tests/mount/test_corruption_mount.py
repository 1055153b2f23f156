"""A damaged chunk reads as EIO in the mount, the log names the file and version, and every
other file keeps reading correctly from the same daemon."""

from __future__ import annotations

import errno
import os
import random
import subprocess
from pathlib import Path

import pytest

from tests.mountutil import dsfs_argv, mounted
from tests.treeutil import write
from vfs.ids import ObjType
from vfs.model import ref_id
from vfs.pack import REC_HEADER, pack_path
from vfs.store import Store


def test_damaged_chunk_is_eio_and_named_while_the_rest_still_reads(tmp_path: Path) -> None:
    store_dir, src = tmp_path / "store", tmp_path / "src"
    rnd = random.Random(9)
    victim = rnd.randbytes(200_000)
    healthy = rnd.randbytes(150_000)
    write(src / "train/victim.bin", victim)
    write(src / "train/healthy.bin", healthy)
    subprocess.run(dsfs_argv(store_dir, "init"), check=True, capture_output=True)
    subprocess.run(dsfs_argv(store_dir, "import", src), check=True, capture_output=True)
    with Store.open(store_dir) as store:
        entry = store.lookup(store.resolve("v1"), b"train/victim.bin")
        found = store.reader.locate(ref_id(entry.content))
        assert found is not None and found.loc.kind == ObjType.CHUNK
        path = pack_path(store.packs_dir, found.pack)
        offset = found.loc.offset + REC_HEADER.size + found.loc.stored_len // 2
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))
    with mounted(store_dir, tmp_path / "mnt") as daemon:
        mnt = daemon.mountpoint
        with pytest.raises(OSError) as info:
            (mnt / "@v1/train/victim.bin").read_bytes()
        assert info.value.errno == errno.EIO
        assert (mnt / "@v1/train/healthy.bin").read_bytes() == healthy
        assert daemon.proc.poll() is None
        log = daemon.log_text()
        assert "@v1/train/victim.bin" in log and "damaged data" in log
        with pytest.raises(OSError):  # still EIO on a second try, never wrong bytes
            (mnt / "@v1/train/victim.bin").read_bytes()
        assert os.listdir(mnt / "@v1/train") == ["healthy.bin", "victim.bin"]
