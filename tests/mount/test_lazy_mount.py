"""A mounted clone reads its remote's packs on demand: every byte equals the source, the cache
stays within --cache-size, and a byte flipped on the remote is EIO for that file only."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from tests.mountutil import mounted
from tests.remote.cloneutil import cache_blocks, flip, make_clone, make_files
from vfs.pack import REC_HEADER
from vfs.store import Store

KiB = 1024
MiB = 1024 * KiB


def test_a_mounted_clone_reads_right_within_its_cache_and_refuses_remote_damage(
        tmp_path: Path) -> None:
    source = tmp_path / "src"
    make_files(source, 40, 96 * KiB)
    files = sorted(p for p in source.rglob("*") if p.is_file())
    # the victim: a small file, its first chunk damaged on the remote
    victim_data = os.urandom(9000)
    (source / "victim.bin").write_bytes(victim_data)
    clone = make_clone(tmp_path, source=source)
    with Store.open(clone.a) as a:
        entry = a.lookup(a.resolve("v1"), b"victim.bin")
        oid = a.contents.spans(entry.content, entry.size)[0].cid
    name, rec = next((n, r) for n, r in clone.chunk_records() if r.oid == oid)
    flip(clone.pack_file(name), rec.offset + REC_HEADER.size + 100)
    total = sum(os.path.getsize(clone.pack_file(n)) for n in clone.packs)
    bound = 2 * MiB
    assert total > 2 * bound
    with mounted(clone.b, tmp_path / "mnt", "--cache-size", "2M",
                 "--memory-cache", "1M") as daemon:
        mnt = daemon.mountpoint / "@v1"
        for path in files:  # diff -r, byte for byte
            rel = path.relative_to(clone.source)
            assert (mnt / rel).read_bytes() == path.read_bytes(), rel
            assert cache_blocks(clone) <= bound
        assert sorted(p.relative_to(mnt) for p in mnt.rglob("*") if p.is_file()) == \
            sorted([p.relative_to(clone.source) for p in files] + [Path("victim.bin")])
        for _ in range(2):  # EIO each time, never wrong bytes
            with pytest.raises(OSError) as info:
                (mnt / "victim.bin").read_bytes()
            assert info.value.errno == errno.EIO
        first = files[0]
        assert (mnt / first.relative_to(clone.source)).read_bytes() == first.read_bytes()
        assert daemon.proc.poll() is None
        log = daemon.log_text()
        assert "@v1/victim.bin" in log and "remote origin" in log
    assert 0 < cache_blocks(clone) <= bound


def test_a_big_file_read_through_a_mounted_clone_makes_few_large_gets(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    data = os.urandom(12 * MiB)
    (source / "big.bin").write_bytes(data)
    clone = make_clone(tmp_path, source=source)  # 16 KiB chunks: about 750 records
    records = len(clone.chunk_records())
    with mounted(clone.b, tmp_path / "mnt", "--memory-cache", "1M") as daemon:
        with open(daemon.mountpoint / "@v1/big.bin", "rb") as f:
            got = b"".join(iter(lambda: f.read(128 * KiB), b""))
        assert got == data
    # the mount's prefetch of a sequential file drives the read-ahead (saved at unmount)
    counters = json.loads((clone.b / "cache" / "state.json").read_bytes())["counters"]
    assert counters["gets"] < records / 12, (counters, records)
    assert counters["bytes_fetched"] < 1.2 * len(data)
