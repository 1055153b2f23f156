"""`dsfs gc` on a real store: frees what dropped versions alone used, keeps the rest intact.

Stores are built with the real importer; checks read pack files on disk, the LMDB index and
exported trees. Locks are taken for real (flock), from this process and from a child process.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import random
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from vfs.errors import CorruptData, StoreLocked, UnknownVersion, UserError
from vfs.exporter import export_version
from vfs.gc import collect_garbage
from vfs.importer import import_tree
from vfs.model import Entry
from vfs.pack import REC_HEADER, pack_path
from vfs.store import Store
from vfs.verify import verify_store

REPO = Path(__file__).resolve().parents[2]
SEED = 4242
DEADLINE = 30.0

Tree = dict[str, bytes]


@dataclass
class Built:
    store: Path
    src1: Path
    src2: Path
    tree1: Tree
    tree2: Tree


def _write_tree(root: Path, tree: Tree) -> None:
    root.mkdir(parents=True)
    for rel, data in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _trees(rng: random.Random) -> tuple[Tree, Tree]:
    """v1 and v2: v2 deletes the big files and a directory of v1, keeps some, adds others."""
    kept: Tree = {
        "labels.csv": "".join(f"{i},{rng.randrange(10)}\n" for i in range(4000)).encode(),
        "keep/model.bin": rng.randbytes(700_000),
        "keep/small.txt": b"unchanged\n" * 50,
    }
    only1: Tree = {
        "raw/a.bin": rng.randbytes(2_500_000),
        "raw/b.bin": rng.randbytes(1_800_000),
        "raw/c/d.bin": rng.randbytes(900_000),
        "old.txt": b"removed in v2\n" * 300,
    }
    only2: Tree = {
        "new/x.bin": rng.randbytes(600_000),
        "new/y.txt": b"added in v2\n" * 700,
        "labels2.csv": "".join(f"{i};{rng.random():.6f}\n" for i in range(3000)).encode(),
    }
    return {**kept, **only1}, {**kept, **only2}


@pytest.fixture
def built(tmp_path: Path) -> Built:
    tree1, tree2 = _trees(random.Random(SEED))
    src1, src2 = tmp_path / "src1", tmp_path / "src2"
    _write_tree(src1, tree1)
    _write_tree(src2, tree2)
    store_path = tmp_path / "store"
    with Store.create(store_path) as store:
        assert import_tree(store, src1, "v1").version.number == 1
        assert import_tree(store, src2, "v2").version.number == 2
    return Built(store_path, src1, src2, tree1, tree2)


def _digest_tree(root: Path) -> dict[str, str]:
    """Every file under root: relative path -> sha256 (directories implied by the paths)."""
    out: dict[str, str] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _digest(tree: Tree) -> dict[str, str]:
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in tree.items()}


def _pack_files(store: Path) -> dict[str, str]:
    """Every file under packs/ (tmp included): relative path -> sha256 of its bytes."""
    return _digest_tree(store / "packs")


def _packs_size(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "packs").rglob("*") if p.is_file())


def _assert_exports(store: Store, number: int, tree: Tree, dest: Path) -> None:
    export_version(store, store.version(number), dest)
    assert _digest_tree(dest) == _digest(tree)


def _chunk_ids(store: Store, entry: Entry) -> list[bytes]:
    return [s.cid for s in store.contents.spans(entry.content, entry.size) if s.cid is not None]


def _dsfs(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon.cli", "-q", "--store", str(store),
                           *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)


class Lines:
    """Lines of a child's stdout, each awaited with a deadline (a hung child fails the test)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buf = b""

    def next(self, timeout: float = DEADLINE) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line from the child within {timeout} s")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                data = os.read(self.fd, 1 << 16)
                if not data:
                    raise AssertionError(f"the child closed its output; got {self.buf!r}")
                self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()


def _tell(proc: subprocess.Popen[bytes], text: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(text.encode())
    proc.stdin.flush()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_gc_after_drop_frees_space_and_keeps_v2(built: Built, tmp_path: Path) -> None:
    with Store.open(built.store) as store:
        v1 = store.version(1)
        only1 = {rel: _chunk_ids(store, store.lookup(v1, rel.encode()))
                 for rel in built.tree1 if rel not in built.tree2}
        v2 = store.version(2)
        kept = {rel: _chunk_ids(store, store.lookup(v2, rel.encode())) for rel in built.tree2}
        store.drop("v1")
        with pytest.raises(UnknownVersion):
            store.version(1)
        size_before = _packs_size(built.store)
        report = collect_garbage(store)

        assert not report.dry_run
        assert report.bytes_freed > 0
        assert report.dead_objects > 0
        assert report.packs_deleted + report.packs_rewritten > 0
        assert report.kept_damaged == []
        size_after = _packs_size(built.store)
        freed_on_disk = size_before - size_after
        # v1 held ~5.2 MB of random data that v2 does not use: it must be gone from disk.
        assert freed_on_disk > 5_000_000
        # The report tells the truth about it (rewritten packs get a new header and footer).
        assert abs(report.bytes_freed - freed_on_disk) < 64 * 1024, (report, freed_on_disk)

        # What only v1 used is no longer indexed; everything v2 uses still is.
        for rel, cids in only1.items():
            for cid in cids:
                assert not store.reader.exists(cid), f"{rel}: dead chunk still indexed"
        for rel, cids in kept.items():
            for cid in cids:
                assert store.reader.exists(cid), f"{rel}: live chunk forgotten"

        _assert_exports(store, 2, built.tree2, tmp_path / "out-same-process")
        # ...and byte for byte like the directory it was imported from.
        for rel in built.tree2:
            assert filecmp.cmp(tmp_path / "out-same-process" / rel, built.src2 / rel,
                               shallow=False), rel
        assert verify_store(store, read_data=True).ok
        assert list(os.scandir(built.store / "packs" / "tmp")) == []

    # A fresh process view agrees.
    with Store.open(built.store) as store:
        assert [v.number for v in store.versions()] == [2]
        report2 = verify_store(store, read_data=True)
        assert report2.ok, report2.problems
        _assert_exports(store, 2, built.tree2, tmp_path / "out-reopened")
        # gc is idempotent: a second run finds nothing to free.
        again = collect_garbage(store)
        assert (again.bytes_freed, again.dead_objects, again.packs_deleted,
                again.packs_rewritten, again.orphan_files) == (0, 0, 0, 0, 0)


def test_reimport_after_gc_does_not_reuse_freed_data(built: Built, tmp_path: Path) -> None:
    """The file cache and dedup must not point a new version at chunks gc deleted."""
    with Store.open(built.store) as store:
        store.drop("1")
        assert collect_garbage(store).bytes_freed > 0
        v3 = import_tree(store, built.src1, "v1 again").version
        assert v3.number == 3
        assert verify_store(store, read_data=True).ok
        _assert_exports(store, 3, built.tree1, tmp_path / "out3")
        _assert_exports(store, 2, built.tree2, tmp_path / "out2")


def test_gc_keeps_data_of_live_and_tagged_versions(built: Built, tmp_path: Path) -> None:
    with Store.open(built.store) as store:
        before = _pack_files(built.store)
        report = collect_garbage(store)
        # Nothing was dropped: every object is live and no pack file changes.
        assert report.dead_objects == 0 and report.bytes_freed == 0
        assert _pack_files(built.store) == before
        store.tag("1", "baseline")
        store.drop("2")
        collect_garbage(store)
        assert [v.number for v in store.versions()] == [1]
        _assert_exports(store, 1, built.tree1, tmp_path / "out1")
        assert verify_store(store, read_data=True).ok


def test_dry_run_changes_nothing(built: Built) -> None:
    orphan = built.store / "packs" / "tmp" / "deadbeef.tmp"
    with Store.open(built.store) as store:
        store.drop("v1")
        orphan.write_bytes(b"x" * 1000)
        before = _pack_files(built.store)
        with store.index.read() as txn:
            objects_before = sum(1 for _ in txn.cursor(db=store.index.dbs["objects"]))
        dry = collect_garbage(store, dry_run=True)
        assert dry.dry_run
        assert dry.bytes_freed > 0 and dry.orphan_files == 1
        assert _pack_files(built.store) == before
        with store.index.read() as txn:
            assert sum(1 for _ in txn.cursor(db=store.index.dbs["objects"])) == objects_before

    cli = _dsfs(built.store, "gc", "--dry-run", "--json")
    assert cli.returncode == 0, cli.stderr
    as_json = json.loads(cli.stdout)
    assert as_json["dry_run"] is True
    assert as_json["bytes_freed"] == dry.bytes_freed
    assert _pack_files(built.store) == before

    # The real run frees what the dry run announced.
    with Store.open(built.store) as store:
        real = collect_garbage(store)
        assert real.bytes_freed == dry.bytes_freed
        assert (real.dead_objects, real.packs_deleted, real.packs_rewritten) == (
            dry.dead_objects, dry.packs_deleted, dry.packs_rewritten)
    assert not orphan.exists()


def test_gc_refused_while_writer_lock_held_in_this_process(built: Built) -> None:
    with Store.open(built.store) as store:
        store.drop("1")
        before = _pack_files(built.store)
        with store.writer_lock():  # its own open file description, like another process
            with pytest.raises(StoreLocked):
                collect_garbage(store)
            with pytest.raises(StoreLocked):
                collect_garbage(store, dry_run=True)
        assert _pack_files(built.store) == before
        assert collect_garbage(store).bytes_freed > 0


def test_import_refused_while_gc_lock_held(built: Built, tmp_path: Path) -> None:
    with Store.open(built.store) as store:
        with store.gc_lock(), pytest.raises(StoreLocked):
            import_tree(store, built.src2, "blocked")
        assert [v.number for v in store.versions()] == [1, 2]


def test_second_gc_refused_while_one_runs(built: Built) -> None:
    with Store.open(built.store) as store:
        store.drop("1")
        with store.gc_lock():
            with pytest.raises(StoreLocked):
                collect_garbage(store)
            with pytest.raises(StoreLocked):
                store.drop("2")  # dropping (a writer) waits for no gc either: it is refused
        assert [v.number for v in store.versions()] == [2]


def _big_then_small_dropped(store: Store, tmp_path: Path, seed: int
                            ) -> tuple[bytes, bytes, list[bytes], Path]:
    """v1 = big.bin + small.bin (one data pack), v2 = big.bin alone, v1 dropped: the pack is
    mostly live and holds small.bin's dead chunks. Returns (big, small, small's chunks, pack)."""
    rng = random.Random(seed)
    big = rng.randbytes(3_000_000)
    small = rng.randbytes(120_000)
    src = tmp_path / "src"
    _write_tree(src, {"big.bin": big, "small.bin": small})
    import_tree(store, src, "both")
    small_cids = _chunk_ids(store, store.lookup(store.version(1), b"small.bin"))
    found = store.reader.locate(small_cids[0])
    assert found is not None
    (src / "small.bin").unlink()
    import_tree(store, src, "big only")
    store.drop("1")
    return big, small, small_cids, pack_path(store.packs_dir, found.pack)


def test_dead_data_in_a_pack_that_stays_is_not_deduplicated_against(tmp_path: Path) -> None:
    """A pack mostly live is kept as is; its dead objects are forgotten, not reused later."""
    with Store.create(tmp_path / "store") as store:
        big, small, small_cids, data_pack = _big_then_small_dropped(store, tmp_path, SEED + 1)
        data_before = data_pack.read_bytes()
        report = collect_garbage(store)
        assert report.dead_objects > 0
        # The data pack of v1 is mostly live (big.bin): it stays, byte for byte.
        assert data_pack.read_bytes() == data_before
        for cid in small_cids:
            assert not store.reader.exists(cid)
        _write_tree(tmp_path / "src2", {"big.bin": big, "small.bin": small})
        v3 = import_tree(store, tmp_path / "src2", "small again").version
        assert v3.stats.new_chunks >= len(small_cids)
        for cid in small_cids:
            assert store.reader.exists(cid)
        assert verify_store(store, read_data=True).ok
        _assert_exports(store, v3.number, {"big.bin": big, "small.bin": small},
                        tmp_path / "out3")
        # A later gc that rewrites or keeps that pack still leaves v3 whole.
        store.drop("2")
        collect_garbage(store)
        assert verify_store(store, read_data=True).ok
        _assert_exports(store, v3.number, {"big.bin": big, "small.bin": small},
                        tmp_path / "out3b")


HOLDER = """
import sys
from pathlib import Path
from vfs.store import Store
with Store.open(Path(sys.argv[1])) as store, store.writer_lock():
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_gc_refused_while_another_process_holds_writer_lock(built: Built) -> None:
    with Store.open(built.store) as store:
        store.drop("1")
    before = _pack_files(built.store)
    with subprocess.Popen([sys.executable, "-c", HOLDER, str(built.store)], cwd=REPO,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0) as holder:
        try:
            assert Lines(holder).next() == "locked"
            with Store.open(built.store) as store, pytest.raises(StoreLocked):
                collect_garbage(store)
            cli = _dsfs(built.store, "gc")
            assert cli.returncode == StoreLocked.exit_code, cli.stderr
            assert "dsfs: error:" in cli.stderr
            assert _pack_files(built.store) == before
            _tell(holder, "\n")
            assert holder.wait(timeout=DEADLINE) == 0
        finally:
            _stop(holder)
    # The lock died with its holder: gc runs now.
    with Store.open(built.store) as store:
        assert collect_garbage(store).bytes_freed > 0


def test_orphan_pack_files_are_removed(built: Built, tmp_path: Path) -> None:
    packs = built.store / "packs"
    indexed = set(_pack_files(built.store))
    tmp_orphans = [packs / "tmp" / "0123abcd.tmp", packs / "tmp" / "feedface.tmp"]
    rng = random.Random(SEED + 2)
    for i, path in enumerate(tmp_orphans):
        path.write_bytes(rng.randbytes(1000 + i))
    # A sealed pack that never got indexed (a writer died between rename and index commit).
    stray = packs / "ee" / ("ee" + "5" * 30)
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"DSFSPACK" + bytes(4000))

    with Store.open(built.store) as store:
        report = collect_garbage(store)
        assert report.orphan_files == 3
        assert report.bytes_freed >= 1000 + 1001 + 4008
        for path in [*tmp_orphans, stray]:
            assert not path.exists(), path
        # Indexed packs are untouched (nothing was dropped).
        assert set(_pack_files(built.store)) == indexed
        assert verify_store(store, read_data=True).ok
        _assert_exports(store, 1, built.tree1, tmp_path / "o1")
        _assert_exports(store, 2, built.tree2, tmp_path / "o2")


def test_tagged_version_cannot_be_dropped_until_untagged(built: Built) -> None:
    with Store.open(built.store) as store:
        store.tag("v1", "gold")
        with pytest.raises(UserError):
            store.drop("v1")
        with pytest.raises(UserError):
            store.drop("gold")
        assert [v.number for v in store.versions()] == [1, 2]

    cli = _dsfs(built.store, "drop", "v1")
    assert cli.returncode == UserError.exit_code, cli.stderr
    assert "gold" in cli.stderr

    with Store.open(built.store) as store:
        assert [v.number for v in store.versions()] == [1, 2]
        assert store.untag("gold") == 1
        assert store.drop("v1").number == 1
        assert [v.number for v in store.versions()] == [2]
        assert collect_garbage(store).bytes_freed > 0
        assert verify_store(store, read_data=True).ok


def test_reader_in_another_process_keeps_reading_across_gc(built: Built) -> None:
    """A reader that opened the store before gc rewrote packs reads the right bytes after it."""
    reader_src = """
import hashlib, sys
from pathlib import Path
from vfs.store import Store
rels = sys.argv[2:]
with Store.open(Path(sys.argv[1]), cache_bytes=0) as store:
    for round_ in range(2):
        v = store.version(2)
        for rel in rels:
            e = store.lookup(v, rel.encode())
            print(rel, hashlib.sha256(store.read(e, 0, e.size)).hexdigest(), flush=True)
        if round_ == 0:
            print("waiting", flush=True)
            sys.stdin.readline()
"""
    rels = sorted(built.tree2)
    expected = _digest(built.tree2)
    with subprocess.Popen([sys.executable, "-c", reader_src, str(built.store), *rels],
                          cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          bufsize=0) as reader:
        try:
            lines = Lines(reader)
            first = dict(lines.next().split() for _ in rels)
            assert first == expected
            assert lines.next() == "waiting"
            with Store.open(built.store) as store:
                store.drop("1")
                report = collect_garbage(store)
                assert report.packs_deleted + report.packs_rewritten > 0
            _tell(reader, "go\n")
            second = dict(lines.next().split() for _ in rels)
            assert second == expected
            assert reader.wait(timeout=DEADLINE) == 0
        finally:
            _stop(reader)


def _flip_byte(path: Path, pos: int) -> None:
    with open(path, "r+b") as f:
        f.seek(pos)
        old = f.read(1)
        f.seek(pos)
        f.write(bytes([old[0] ^ 0xFF]))


def test_gc_never_rewrites_or_deletes_damaged_live_data(built: Built, tmp_path: Path) -> None:
    """A live chunk with bad bytes in a pack gc wants to rewrite: the pack is kept as it is."""
    with Store.open(built.store) as store:
        entry = store.lookup(store.version(2), b"keep/model.bin")
        cid = _chunk_ids(store, entry)[0]
        found = store.reader.locate(cid)
        assert found is not None
        damaged_pack = pack_path(store.packs_dir, found.pack)
        # The chunk is in v1's data pack, which v1's dropping leaves mostly dead.
        big = store.reader.locate(_chunk_ids(store, store.lookup(store.version(1),
                                                                 b"raw/a.bin"))[0])
        assert big is not None and big.pack == found.pack
        _flip_byte(damaged_pack, found.loc.offset + REC_HEADER.size + found.loc.stored_len // 2)
        damaged_bytes = damaged_pack.read_bytes()
        store.drop("1")
        report = collect_garbage(store)
        assert report.kept_damaged == [found.pack]
        assert damaged_pack.read_bytes() == damaged_bytes
        # What is intact in v2 stays readable; the damage is reported, not spread or hidden.
        for rel, data in built.tree2.items():
            e = store.lookup(store.version(2), rel.encode())
            if rel != "keep/model.bin":
                assert store.read(e, 0, e.size) == data, rel
        ver = verify_store(store, read_data=True)
        assert {(p.version, p.path) for p in ver.problems} == {(2, "keep/model.bin")}


def test_gc_stops_when_a_tree_is_unreadable(built: Built) -> None:
    """gc never deletes what an unreadable directory might still reference."""
    with Store.open(built.store) as store:
        root_pack = store.reader.locate(store.version(2).root)
        assert root_pack is not None
        store.drop("1")
    pack_path(built.store / "packs", root_pack.pack).unlink()
    before = _pack_files(built.store)
    with Store.open(built.store) as store, pytest.raises(CorruptData):
        collect_garbage(store)
    assert _pack_files(built.store) == before


def test_gc_says_what_dropped_data_it_leaves_and_compact_rewrites_it(tmp_path: Path) -> None:
    with Store.create(tmp_path / "store") as store:
        big, _, _, data_pack = _big_then_small_dropped(store, tmp_path, SEED + 2)
        report = collect_garbage(store)
        assert report.packs_kept_with_dead == 1
        assert 100_000 < report.dead_bytes_kept < 130_000, report
        assert data_pack.exists()
        # a plain gc again leaves it (it forgot the dead objects, not the bytes) and says so
        again = collect_garbage(store, dry_run=True)
        assert again.packs_kept_with_dead == 1 and again.dead_bytes_kept == report.dead_bytes_kept
        compacted = collect_garbage(store, compact=True)
        assert compacted.packs_rewritten >= 1 and compacted.dead_bytes_kept == 0
        assert compacted.bytes_freed > 100_000
        assert not data_pack.exists()
        assert collect_garbage(store).dead_bytes_kept == 0
        assert verify_store(store, read_data=True).ok
        _assert_exports(store, 2, {"big.bin": big}, tmp_path / "out2")
