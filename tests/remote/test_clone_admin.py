"""A remote pack's footer read with ranged GETs; verify, gc and `dsfs cache` on a clone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.remote.cloneutil import CountingBackend, flip, make_clone, make_files, open_clone
from tests.treeutil import snapshot
from vfs.errors import CorruptData
from vfs.exporter import export_version
from vfs.gc import collect_garbage
from vfs.ids import ObjType
from vfs.importer import import_tree
from vfs.pack import REC_HEADER, TRAILER, scan_pack
from vfs.remote import layout
from vfs.remote.filebackend import FileBackend
from vfs.remote.footer import read_remote_footer
from vfs.store import Store
from vfs.verify import verify_store

KiB = 1024


def test_a_remote_footer_is_one_get_and_equals_the_local_scan(tmp_path: Path) -> None:
    clone = make_clone(tmp_path, count=6)
    backend = CountingBackend(FileBackend(clone.remote))
    for name, records in clone.packs.items():
        key = layout.pack_key(name)
        size = os.path.getsize(clone.pack_file(name))
        before = len(backend.gets)
        assert read_remote_footer(backend, key, size) == records
        assert len(backend.gets) == before + 1
        # a tail shorter than the footer: a second GET for the rest
        assert read_remote_footer(backend, key, size, tail=64) == records
        assert len(backend.gets) == before + 3


@pytest.mark.parametrize("where", ["trailer", "footer"])
def test_a_damaged_remote_footer_is_refused(tmp_path: Path, where: str) -> None:
    clone = make_clone(tmp_path, count=2)
    name = next(iter(clone.packs))
    path = clone.pack_file(name)
    size = os.path.getsize(path)
    flip(path, size - 3 if where == "trailer" else size - TRAILER.size - 5)
    with pytest.raises(CorruptData, match=f"damaged {where}"):
        read_remote_footer(FileBackend(clone.remote), layout.pack_key(name), size)


def test_verify_a_clone_structure_and_data_through_the_cache(tmp_path: Path) -> None:
    clone = make_clone(tmp_path, count=6)
    with Store.open(clone.b) as store:
        report = verify_store(store)
        assert report.ok, report.problems
        report = verify_store(store, read_data=True)
        assert report.ok and report.bytes_read > 0
    assert list((clone.b / "cache" / "packs").glob("??/*"))  # read through the cache
    name, rec = clone.chunk_records()[5]
    flip(clone.pack_file(name), rec.offset + REC_HEADER.size + 3)
    with Store.open(clone.b) as store:
        store.remote.cache.writable()  # type: ignore[union-attr]
        store.remote.cache.trim(0)  # type: ignore[union-attr]
        assert verify_store(store).ok  # the structure is intact
        report = verify_store(store, read_data=True)
        assert not report.ok
        assert rec.oid in report.damaged_objects
        assert len(report.problems) == 1 and report.problems[0].path.endswith(".bin")


def test_gc_on_a_clone_forgets_dead_remote_packs_and_keeps_live_ones(tmp_path: Path) -> None:
    src1, src2 = tmp_path / "s1", tmp_path / "s2"
    make_files(src1, 6, 64 * KiB, seed=1)
    make_files(src2, 6, 64 * KiB, seed=2)
    clone = make_clone(tmp_path, source=src2)
    # a clone whose v1 and v2 both come from the remote, then v1 dropped
    with Store.open(clone.a) as store:
        import_tree(store, src1, "two")
    backend = FileBackend(clone.remote)
    for path in sorted((clone.a / "packs").glob("??/*")):
        backend.put(layout.pack_key(path.name), path.read_bytes())
    for sub in ("index",):
        for f in (clone.a / sub).iterdir():
            (clone.b / sub / f.name).write_bytes(f.read_bytes())
    remote_files = sorted(p.name for p in (clone.remote / "packs").glob("??/*"))
    with Store.open(clone.b) as store:
        export_version(store, store.resolve("v1"), tmp_path / "warm")  # cache some of v1
        store.drop("v1")
        dry = collect_garbage(store, dry_run=True)
        report = collect_garbage(store)
        assert report.packs_deleted >= 1 and report.packs_rewritten == 0
        assert dry.bytes_freed == report.bytes_freed == 0  # nothing local was freed
        export_version(store, store.resolve("v2"), tmp_path / "out")
        assert verify_store(store, read_data=True).ok
        again = collect_garbage(store)
        assert again.packs_deleted == 0 and again.dead_objects == 0
    assert snapshot(tmp_path / "out") == snapshot(src1)
    assert sorted(p.name for p in (clone.remote / "packs").glob("??/*")) == remote_files
    local = [r.kind for p in (clone.b / "packs").glob("??/*") for r in scan_pack(p)[0]]
    assert local == [ObjType.REFEVENT]  # the drop's record: the only pack written here


def dsfs(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon.cli", "--store", str(store), *args],
                          capture_output=True, text=True, timeout=60)


def test_dsfs_cache_shows_and_trims(tmp_path: Path) -> None:
    clone = make_clone(tmp_path, count=6)
    out = dsfs(clone.b, "export", "v1", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    shown = dsfs(clone.b, "cache", "--json")
    assert shown.returncode == 0, shown.stderr
    st = json.loads(shown.stdout)
    assert st["remote"] == "origin" and st["packs_cached"] >= 1
    assert 0 < st["bytes_used"] <= st["bound"] and st["gets"] >= 1 and st["misses"] >= 1
    text = dsfs(clone.b, "cache")
    assert text.returncode == 0 and "origin" in text.stdout and "GETs" in text.stdout
    trimmed = dsfs(clone.b, "cache", "--trim", "0", "--json")
    assert trimmed.returncode == 0, trimmed.stderr
    assert json.loads(trimmed.stdout)["bytes_used"] == 0
    bad = dsfs(clone.b, "cache", "--trim", "lots")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "not a size" in bad.stderr
    bad = dsfs(clone.b, "mount", str(tmp_path / "mnt"), "--cache-size", "-1G")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    plain = dsfs(clone.a, "cache")
    assert plain.returncode == 0 and "not a clone" in plain.stdout


def test_cache_sizes_parse() -> None:
    from daemon.cachecli import parse_cache_size

    assert parse_cache_size("500M") == 500 << 20
    assert parse_cache_size("2G") == 2 << 30
    assert parse_cache_size("1.5GiB") == 3 << 29
    assert parse_cache_size("10gb") == 10 << 30
    assert parse_cache_size("0") == 0
    assert parse_cache_size("4096") == 4096


def test_a_trim_while_another_process_uses_the_cache_is_refused(tmp_path: Path) -> None:
    clone = make_clone(tmp_path, count=2)
    store, _ = open_clone(clone)
    with store:
        name, rec = clone.chunk_records()[0]
        store.reader.packs.read(name, rec.offset, rec.oid, rec.kind, rec.plain_len,
                                rec.stored_len)
        out = dsfs(clone.b, "cache", "--trim", "0")
        assert out.returncode == 7 and "in use by another process" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


def test_repair_refuses_a_clone_and_changes_nothing(tmp_path: Path) -> None:
    from vfs.errors import UserError
    from vfs.repair import repair_store

    clone = make_clone(tmp_path, count=2)
    index = (clone.b / "index" / "data.mdb").read_bytes()
    with pytest.raises(UserError, match="is a clone"):
        repair_store(clone.b)
    assert (clone.b / "index" / "data.mdb").read_bytes() == index
    with Store.open(clone.b) as store:
        assert verify_store(store, read_data=True).ok


def test_repair_runs_on_a_clone_whose_packs_are_all_local(tmp_path: Path) -> None:
    from vfs.repair import repair_store

    clone = make_clone(tmp_path, count=2)
    for name in clone.packs:  # what `dsfs pull --data` does: every pack brought home
        dest = clone.b / "packs" / name[:2] / name
        dest.parent.mkdir(exist_ok=True)
        dest.write_bytes(clone.pack_file(name).read_bytes())
    report = repair_store(clone.b)
    assert not report.lost
    with Store.open(clone.b) as store:
        assert verify_store(store, read_data=True).ok
        assert store.remote is not None and not store.remote.connected
