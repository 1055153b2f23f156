"""Damage a real store on disk and check that verify, reads and the CLI name exactly the harm.

The store is built with the real importer (no mocks): two versions sharing a text file and a
multi-chunk binary file, each with one file of its own. Damage is done by flipping bytes inside
pack records or deleting pack files, located through the LMDB index and cross-checked against the
pack's own footer (`vfs.pack.scan_pack`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from vfs import schema
from vfs.errors import CorruptData
from vfs.ids import ObjectId, ObjType
from vfs.importer import import_tree
from vfs.model import REF_CHUNK, REF_LIST, Entry, Version, ref_id, ref_kind
from vfs.pack import REC_HEADER, pack_path, scan_pack
from vfs.reach import version_object_id
from vfs.store import Store
from vfs.verify import verify_store

REPO = Path(__file__).resolve().parents[2]
SEED = 20260127
FIXED_NS = 1_700_000_000_123_456_789

BIG = "big.bin"
TEXT = "docs/readme.txt"
ONLY1 = "sub/only1.bin"
NEW2 = "added.bin"  # sorts before "docs": v2's root fits one tree page

# Which files each version holds (paths relative to the version root).
V1_FILES = (BIG, TEXT, ONLY1)
V2_FILES = (BIG, TEXT, NEW2)


@dataclass
class Built:
    """A store with v1 and v2 and the exact bytes each version must hold."""

    store: Path
    contents: dict[int, dict[str, bytes]]


def _write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _pin_times(root: Path) -> None:
    """Give every file and directory the same mtime, so equal subtrees get equal tree ids."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            os.utime(Path(dirpath) / name, ns=(FIXED_NS, FIXED_NS))
        os.utime(dirpath, ns=(FIXED_NS, FIXED_NS))


def _text(rng: random.Random) -> bytes:
    words = ["alpha", "beta", "gamma", "delta", "label", "cat", "dog", "train", "val", "test"]
    lines = [f"{i:05d}," + " ".join(rng.choice(words) for _ in range(8)) for i in range(600)]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def built(tmp_path: Path) -> Built:
    rng = random.Random(SEED)
    big = rng.randbytes(3 * 1024 * 1024 + 12345)  # > 2 MiB: several chunks (max chunk 2 MiB)
    text = _text(rng)
    only1 = rng.randbytes(150_000)
    new2 = rng.randbytes(200_000)
    v1 = {BIG: big, TEXT: text, ONLY1: only1}
    v2 = {BIG: big, TEXT: text, NEW2: new2}
    src1, src2 = tmp_path / "src1", tmp_path / "src2"
    for root, files in ((src1, v1), (src2, v2)):
        for rel, data in files.items():
            _write(root, rel, data)
        _pin_times(root)
    store_path = tmp_path / "store"
    with Store.create(store_path) as store:
        assert import_tree(store, src1, "first").version.number == 1
        assert import_tree(store, src2, "second").version.number == 2
    return Built(store_path, {1: v1, 2: v2})


def _entry(store: Store, number: int, rel: str) -> Entry:
    return store.lookup(store.version(number), rel.encode())


def _chunks(store: Store, entry: Entry) -> list[bytes]:
    return [s.cid for s in store.contents.spans(entry.content, entry.size) if s.cid is not None]


def _record_offset(store: Store, oid: bytes) -> tuple[Path, int, int]:
    """(pack file, record offset, stored length) of an object, from the index and the footer."""
    found = store.reader.locate(oid)
    assert found is not None, "object is not indexed"
    path = pack_path(store.packs_dir, found.pack)
    records, problems = scan_pack(path)
    assert problems == []
    matching = [r for r in records if r.oid == oid]
    assert len(matching) == 1, "the pack footer must list the object exactly once"
    rec = matching[0]
    assert (rec.offset, rec.stored_len) == (found.loc.offset, found.loc.stored_len), \
        "index and pack footer disagree about where the record is"
    return path, rec.offset, rec.stored_len


def _flip_payload_byte(store: Store, oid: bytes) -> None:
    """Invert one byte in the middle of an object's stored payload (not its header)."""
    path, offset, stored_len = _record_offset(store, oid)
    pos = offset + REC_HEADER.size + stored_len // 2
    os.chmod(path, 0o600)
    with open(path, "r+b") as f:
        f.seek(pos)
        old = f.read(1)
        f.seek(pos)
        f.write(bytes([old[0] ^ 0xFF]))


def _damage_chunk_of(store_path: Path, rel: str) -> bytes:
    """Damage one data chunk of `rel` (as stored in v1); returns the chunk id."""
    with Store.open(store_path) as store:
        chunks = _chunks(store, _entry(store, 1, rel))
        # The middle chunk, so a multi-chunk file keeps good chunks on both sides.
        cid = chunks[len(chunks) // 2]
        _flip_payload_byte(store, cid)
    return cid


def _versions_with(built: Built, rel: str) -> set[int]:
    return {n for n, files in built.contents.items() if rel in files}


def _problem_set(store: Store, read_data: bool) -> tuple[bool, set[tuple[int, str]]]:
    report = verify_store(store, read_data=read_data)
    return report.ok, {(p.version, p.path) for p in report.problems}


def _assert_reads_correct(store: Store, built: Built, skip: set[tuple[int, str]]) -> None:
    for number, files in built.contents.items():
        for rel, data in files.items():
            if (number, rel) in skip:
                continue
            entry = _entry(store, number, rel)
            assert store.read(entry, 0, entry.size + 10) == data, f"v{number}:{rel}"


def _dsfs(store: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "daemon.cli", "-q", "--store", str(store),
                           *args], cwd=REPO, capture_output=True, timeout=120, check=False)


# -- preconditions of the layout the damage tests rely on ---------------------------------------

def test_fixture_layout(built: Built) -> None:
    with Store.open(built.store) as store:
        big = _entry(store, 1, BIG)
        assert ref_kind(big.content) == REF_LIST
        assert len(_chunks(store, big)) >= 3
        assert ref_kind(_entry(store, 1, TEXT).content) == REF_CHUNK
        # Shared files are stored once: both versions point at the same content.
        for rel in (BIG, TEXT):
            assert _entry(store, 1, rel).ref == _entry(store, 2, rel).ref
        ok, problems = _problem_set(store, read_data=True)
        assert ok and problems == set()
        _assert_reads_correct(store, built, set())


# -- (a) one flipped byte in a chunk payload ----------------------------------------------------

@pytest.mark.parametrize("rel", [BIG, TEXT, ONLY1])
def test_flipped_chunk_byte_names_file_in_every_version(built: Built, rel: str) -> None:
    cid = _damage_chunk_of(built.store, rel)
    expected = {(n, rel) for n in _versions_with(built, rel)}
    assert expected  # the shared files appear in both versions, only1 in v1 alone

    with Store.open(built.store) as store:
        report = verify_store(store, read_data=True)
        assert not report.ok
        assert set(report.damaged_objects) == {cid}
        assert {(p.version, p.path) for p in report.problems} == expected
        assert len(report.problems) == len(expected), "each damaged file is named once"

        for number, path in expected:
            entry = _entry(store, number, path)
            with pytest.raises(CorruptData):
                store.read(entry, 0, entry.size)
            # Asking again must fail again: damaged bytes are never cached as good ones.
            with pytest.raises(CorruptData):
                store.read(entry, 0, entry.size)
        _assert_reads_correct(store, built, expected)


def test_multichunk_damage_is_confined_to_its_chunk(built: Built) -> None:
    cid = _damage_chunk_of(built.store, BIG)
    data = built.contents[1][BIG]
    with Store.open(built.store) as store:
        entry = _entry(store, 2, BIG)
        spans = store.contents.spans(entry.content, entry.size)
        starts = [0]
        for s in spans:
            starts.append(starts[-1] + s.length)
        i = next(k for k, s in enumerate(spans) if s.cid == cid)
        lo, hi = starts[i], starts[i + 1]
        # Bytes before and after the damaged chunk are still served, and right.
        assert store.read(entry, 0, lo) == data[:lo]
        assert store.read(entry, hi, entry.size - hi) == data[hi:]
        # Any read touching the damaged chunk fails, even a single byte of it.
        for off, n in ((lo, 1), (hi - 1, 1), (lo - 1, 2), (0, entry.size)):
            with pytest.raises(CorruptData):
                store.read(entry, off, n)


def test_structure_only_verify_does_not_pass_damaged_data_as_read(built: Built) -> None:
    """Without --read-data no chunk is read; with it, the damage is found (and bytes counted)."""
    _damage_chunk_of(built.store, ONLY1)
    with Store.open(built.store) as store:
        quick = verify_store(store, read_data=False)
        assert quick.bytes_read == 0
        full = verify_store(store, read_data=True)
        assert not full.ok
        assert full.bytes_read > 0


# -- (b) structural damage: a pack file deleted, a metadata record damaged ----------------------

def _pack_of(store: Store, oid: bytes) -> str:
    found = store.reader.locate(oid)
    assert found is not None
    return found.pack


def _tree_of(store: Store, version: Version, rel: str) -> bytes:
    return store.lookup(version, rel.encode()).tree


def test_deleted_pack_of_v2_data_damages_only_its_new_file(built: Built) -> None:
    with Store.open(built.store) as store:
        new2 = _chunks(store, _entry(store, 2, NEW2))
        pack = _pack_of(store, new2[0])
        # v2's data pack holds only what v2 added: every other chunk lives elsewhere.
        for number, files in built.contents.items():
            for rel in files:
                if rel != NEW2:
                    for cid in _chunks(store, _entry(store, number, rel)):
                        assert _pack_of(store, cid) != pack
    pack_path(built.store / "packs", pack).unlink()

    with Store.open(built.store) as store:
        ok, problems = _problem_set(store, read_data=False)
        assert not ok
        assert problems == {(2, NEW2)}
        ok_full, problems_full = _problem_set(store, read_data=True)
        assert not ok_full and problems_full == {(2, NEW2)}
        entry = _entry(store, 2, NEW2)
        with pytest.raises(CorruptData):
            store.read(entry, 0, entry.size)
        _assert_reads_correct(store, built, {(2, NEW2)})


def test_deleted_pack_of_v1_data_damages_shared_files_in_both_versions(built: Built) -> None:
    with Store.open(built.store) as store:
        pack = _pack_of(store, _chunks(store, _entry(store, 1, BIG))[0])
        for rel in V1_FILES:
            for cid in _chunks(store, _entry(store, 1, rel)):
                assert _pack_of(store, cid) == pack
    pack_path(built.store / "packs", pack).unlink()

    expected = {(1, rel) for rel in V1_FILES} | {(2, BIG), (2, TEXT)}
    with Store.open(built.store) as store:
        ok, problems = _problem_set(store, read_data=False)
        assert not ok
        assert problems == expected
        for number, rel in expected:
            entry = _entry(store, number, rel)
            with pytest.raises(CorruptData):
                store.read(entry, 0, entry.size)
        _assert_reads_correct(store, built, expected)


def test_deleted_metadata_pack_names_unreadable_directories(built: Built) -> None:
    with Store.open(built.store) as store:
        v1, v2 = store.version(1), store.version(2)
        meta1 = _pack_of(store, v1.root)
        # v2 reuses v1's `docs` tree page and big.bin's chunk list (same ids, stored once)...
        assert _tree_of(store, v2, "docs") == _tree_of(store, v1, "docs")
        assert _pack_of(store, _tree_of(store, v2, "docs")) == meta1
        assert _pack_of(store, ref_id(_entry(store, 2, BIG).content)) == meta1
        # ...but its own root (a single leaf page: see NEW2) is in v2's metadata pack.
        assert store.trees.page(ObjectId(v2.root)).level == 0
        assert _pack_of(store, v2.root) != meta1
    pack_path(built.store / "packs", meta1).unlink()

    with Store.open(built.store) as store:
        ok, problems = _problem_set(store, read_data=False)
        assert not ok
        assert problems == {(1, "."), (2, "docs"), (2, BIG)}
        # What v2 holds on its own is still readable.
        assert store.read(_entry(store, 2, NEW2), 0, 1 << 20) == built.contents[2][NEW2]


def test_damaged_chunk_list_found_without_reading_data(built: Built) -> None:
    with Store.open(built.store) as store:
        _flip_payload_byte(store, ref_id(_entry(store, 1, BIG).content))
    with Store.open(built.store) as store:
        ok, problems = _problem_set(store, read_data=False)
        assert not ok
        assert problems == {(1, BIG), (2, BIG)}
        for number in (1, 2):
            entry = _entry(store, number, BIG)
            with pytest.raises(CorruptData):
                store.read(entry, 0, 10)
        _assert_reads_correct(store, built, {(1, BIG), (2, BIG)})


def test_truncated_pack_found_without_reading_data(built: Built) -> None:
    with Store.open(built.store) as store:
        path, offset, _ = _record_offset(store, _chunks(store, _entry(store, 2, NEW2))[0])
    with open(path, "r+b") as f:
        f.truncate(offset + REC_HEADER.size + 10)  # cut inside the record's payload
    with Store.open(built.store) as store:
        ok, problems = _problem_set(store, read_data=False)
        assert not ok
        assert problems == {(2, NEW2)}
        entry = _entry(store, 2, NEW2)
        with pytest.raises(CorruptData):
            store.read(entry, 0, entry.size)
        _assert_reads_correct(store, built, {(2, NEW2)})


def test_damage_to_content_stored_once_names_every_path_holding_it(tmp_path: Path) -> None:
    """Identical files are stored once: one damaged chunk names each of their paths."""
    rng = random.Random(SEED + 1)
    same = rng.randbytes(90_000)
    src = tmp_path / "src"
    files = {"a/one.bin": same, "b/two.bin": same, "b/c/three.bin": same,
             "other.bin": rng.randbytes(90_000)}
    for rel, data in files.items():
        _write(src, rel, data)
    store_path = tmp_path / "store"
    with Store.create(store_path) as store:
        import_tree(store, src, "dups")
        (tmp_path / "src" / "a" / "one.bin").unlink()
        import_tree(store, src, "one copy fewer")
        cids = {rel: _chunks(store, _entry(store, 1, rel)) for rel in files}
        assert cids["a/one.bin"] == cids["b/two.bin"] == cids["b/c/three.bin"]
        _flip_payload_byte(store, cids["a/one.bin"][0])
    with Store.open(store_path) as store:
        ok, problems = _problem_set(store, read_data=True)
        assert not ok
        assert problems == {(1, "a/one.bin"), (1, "b/two.bin"), (1, "b/c/three.bin"),
                            (2, "b/two.bin"), (2, "b/c/three.bin")}
        assert store.read(_entry(store, 2, "other.bin"), 0, 1 << 20) == files["other.bin"]


def test_damaged_version_record_is_reported(built: Built) -> None:
    """A version's record in its pack is what rebuilding the index from packs relies on
    (vfs.schema: the index is a cache of the packs). Damage to it must not pass as intact."""
    with Store.open(built.store) as store:
        with store.index.read() as txn:
            raw = txn.get(schema.version_key(2), db=store.index.dbs["versions"])
        oid = version_object_id(raw)
        found = store.reader.locate(oid)
        assert found is not None and found.loc.kind == ObjType.VERSION
        _flip_payload_byte(store, oid)
        with pytest.raises(CorruptData):
            store.get_object(ObjectId(oid), ObjType.VERSION)
    with Store.open(built.store) as store:
        report = verify_store(store, read_data=True)
        assert not report.ok, "verify --read-data calls a store with a damaged version intact"
        assert 2 in {p.version for p in report.problems}


# -- (c) the command line -----------------------------------------------------------------------

def _damaged_lines(stdout: bytes) -> set[str]:
    out: set[str] = set()
    for line in stdout.decode().splitlines():
        if line.startswith("DAMAGED "):
            where, sep, why = line[len("DAMAGED "):].partition(": ")
            assert sep and why, f"DAMAGED line without a reason: {line!r}"
            out.add(where)
    return out


def test_cli_verify_exit_codes_and_damaged_lines(built: Built) -> None:
    for extra in ([], ["--read-data"]):
        intact = _dsfs(built.store, "verify", *extra)
        assert intact.returncode == 0, intact.stderr
        assert intact.stdout.decode().startswith("ok: 2 versions")
        assert _damaged_lines(intact.stdout) == set()

    _damage_chunk_of(built.store, BIG)
    _damage_chunk_of(built.store, ONLY1)

    bad = _dsfs(built.store, "verify", "--read-data")
    assert bad.returncode == 1, bad.stderr
    assert _damaged_lines(bad.stdout) == {f"v1:{BIG}", f"v2:{BIG}", f"v1:{ONLY1}"}
    assert bad.stdout.decode().splitlines()[-1].startswith("FAILED: 2 damaged objects")

    as_json = _dsfs(built.store, "verify", "--read-data", "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert report["damaged_objects"] == 2
    assert {(p["version"], p["path"]) for p in report["problems"]} == {
        ("v1", BIG), ("v2", BIG), ("v1", ONLY1)}


def test_cli_cat_of_damaged_file_fails_without_wrong_bytes(built: Built) -> None:
    _damage_chunk_of(built.store, BIG)
    data = built.contents[1][BIG]
    for number in (1, 2):
        res = _dsfs(built.store, "cat", f"v{number}:{BIG}")
        assert res.returncode == CorruptData.exit_code, res.stderr
        assert b"dsfs: error:" in res.stderr
        # Whatever was written before the error is a true prefix of the file, never bad bytes.
        assert len(res.stdout) < len(data)
        assert res.stdout == data[:len(res.stdout)]
    good = _dsfs(built.store, "cat", f"v2:{TEXT}")
    assert good.returncode == 0
    assert hashlib.sha256(good.stdout).digest() == hashlib.sha256(
        built.contents[2][TEXT]).digest()


def test_cli_export_of_damaged_version_fails(built: Built, tmp_path: Path) -> None:
    _damage_chunk_of(built.store, ONLY1)
    res = _dsfs(built.store, "export", "v1", str(tmp_path / "out1"))
    assert res.returncode == CorruptData.exit_code, res.stderr
    ok = _dsfs(built.store, "export", "v2", str(tmp_path / "out2"))
    assert ok.returncode == 0, ok.stderr
    for rel, data in built.contents[2].items():
        assert (tmp_path / "out2" / rel).read_bytes() == data


def test_damaged_object_ids_have_expected_kind(built: Built) -> None:
    """The corruption helpers really hit the intended object kinds (guards the tests above)."""
    with Store.open(built.store) as store:
        cid = _chunks(store, _entry(store, 1, TEXT))[0]
        found = store.reader.locate(cid)
        assert found is not None and found.loc.kind == ObjType.CHUNK
        lid = ref_id(_entry(store, 1, BIG).content)
        found = store.reader.locate(lid)
        assert found is not None and found.loc.kind == ObjType.CHUNKLIST
        assert store.get_object(ObjectId(cid), ObjType.CHUNK) == built.contents[1][TEXT]
