"""`dsfs verify --repair` on real damaged stores: what is gone is dropped and listed, the rest
reads byte-identical, and the store verifies clean afterwards.

Built on the two-version store of test_verify_corruption (v1: big.bin, docs/readme.txt,
sub/only1.bin; v2: big.bin, docs/readme.txt, added.bin, sharing big.bin and docs/).
"""

from __future__ import annotations

import json

import pytest

from tests.vfs.test_verify_corruption import (
    BIG,
    NEW2,
    ONLY1,
    TEXT,
    Built,
    _chunks,
    _dsfs,
    _entry,
    _flip_payload_byte,
    _pack_of,
    _tree_of,
    built,
)
from vfs.errors import NotFound, StoreLocked
from vfs.gc import collect_garbage
from vfs.head.session import open_head
from vfs.pack import pack_path
from vfs.rebuild import rebuild_index
from vfs.repair import repair_store
from vfs.store import Store
from vfs.verify import verify_store

__all__ = ["built"]  # the fixture, shared with test_verify_corruption


def _files_of(store: Store, number: int, built: Built) -> dict[str, bytes]:
    """What version `number` holds now, among the paths it was built with."""
    out: dict[str, bytes] = {}
    for rel in built.contents[number]:
        try:
            e = _entry(store, number, rel)
        except NotFound:
            continue
        out[rel] = store.read(e, 0, e.size + 1)
    return out


def test_a_lost_chunk_drops_its_file_from_every_version_and_nothing_else(built: Built) -> None:
    with Store.open(built.store) as store:
        stats = {n: store.version(n).stats for n in (1, 2)}
        cid = _chunks(store, _entry(store, 1, BIG))[1]
        _flip_payload_byte(store, cid)
    report = repair_store(built.store)
    assert report.rewritten == [1, 2]
    assert [(n, x.path) for n, x in report.lost] == [(1, BIG.encode()), (2, BIG.encode())]
    assert all("is in no intact pack" in x.problem for _, x in report.lost)
    with Store.open(built.store) as store:
        assert verify_store(store, read_data=True).ok
        for n in (1, 2):
            expect = {k: v for k, v in built.contents[n].items() if k != BIG}
            assert _files_of(store, n, built) == expect
            v = store.version(n)
            assert v.repair is not None and [x.path for x in v.repair.lost] == [BIG.encode()]
            assert v.message == ("first" if n == 1 else "second")
        assert {n: store.version(n).stats for n in (1, 2)} == stats  # kept as committed
    # a second repair finds nothing more to do; a rebuild keeps the repaired records
    again = repair_store(built.store)
    assert again.rewritten == [] and again.lost == []
    rebuild_index(built.store)
    with Store.open(built.store) as store:
        assert all(store.version(n).repair is not None for n in (1, 2))
        assert verify_store(store, read_data=True).ok
        collect_garbage(store)
        assert verify_store(store, read_data=True).ok
        for n in (1, 2):
            assert BIG not in _files_of(store, n, built)


def test_a_deleted_pack_of_v2_data_loses_only_the_file_v2_added(built: Built) -> None:
    with Store.open(built.store) as store:
        pack = _pack_of(store, _chunks(store, _entry(store, 2, NEW2))[0])
    pack_path(built.store / "packs", pack).unlink()
    report = repair_store(built.store)
    assert report.rewritten == [2]
    assert [(n, x.path) for n, x in report.lost] == [(2, NEW2.encode())]
    with Store.open(built.store) as store:
        assert verify_store(store, read_data=True).ok
        assert _files_of(store, 1, built) == built.contents[1]
        assert _files_of(store, 2, built) == {k: v for k, v in built.contents[2].items()
                                              if k != NEW2}


def test_a_lost_directory_listing_empties_the_directory_and_names_it(built: Built) -> None:
    with Store.open(built.store) as store:
        docs = _tree_of(store, store.version(1), "docs")
        _flip_payload_byte(store, docs)
    report = repair_store(built.store)
    assert report.rewritten == [1, 2]
    lost = {(n, x.path) for n, x in report.lost}
    assert lost == {(1, b"docs/"), (2, b"docs/")}
    assert all("directory listing unreadable" in x.problem for _, x in report.lost)
    with Store.open(built.store) as store:
        assert verify_store(store, read_data=True).ok
        for n in (1, 2):
            expect = {k: v for k, v in built.contents[n].items() if k != TEXT}
            assert _files_of(store, n, built) == expect
            docs = store.lookup(store.version(n), b"docs")  # its own entry was readable
            assert docs.size == 0 and list(store.list_dir(docs)) == []


def test_a_version_whose_record_is_gone_from_the_packs_comes_back_from_the_old_index(
        built: Built) -> None:
    from vfs.ids import ObjType
    from vfs.reach import version_object_id

    with Store.open(built.store) as store:
        with store.index.read() as txn:
            from vfs import schema
            raw = bytes(txn.get(schema.version_key(1), db=store.index.dbs["versions"]))
        record = version_object_id(raw)
        store.get_object(record, ObjType.VERSION)
        _flip_payload_byte(store, record)
        store.tag("v1", "baseline")
    report = repair_store(built.store)
    assert report.restored == [1]
    assert report.lost == []
    with Store.open(built.store) as store:
        assert [v.number for v in store.versions()] == [1, 2]
        assert store.tags() == {"baseline": 1}
        assert _files_of(store, 1, built) == built.contents[1]
        assert verify_store(store, read_data=True).ok
    # the record is in a pack again: a rebuild alone now finds v1
    rebuild_index(built.store)
    with Store.open(built.store) as store:
        assert [v.number for v in store.versions()] == [1, 2]


def test_repair_refuses_a_mounted_store_and_changes_nothing(built: Built) -> None:
    with Store.open(built.store) as store:
        session = open_head(store)  # what a mount holds
        try:
            before = sorted(p.name for p in (built.store / "index").iterdir())
            with pytest.raises(StoreLocked, match="umount"):
                repair_store(built.store)
            assert sorted(p.name for p in (built.store / "index").iterdir()) == before
        finally:
            session.close()


def test_cli_repair_lists_lost_paths_and_exits_1_then_verify_is_clean(built: Built) -> None:
    with Store.open(built.store) as store:
        pack = _pack_of(store, _chunks(store, _entry(store, 1, ONLY1))[0])
    # v1's data pack holds big.bin, docs/readme.txt and sub/only1.bin
    pack_path(built.store / "packs", pack).unlink()
    res = _dsfs(built.store, "verify", "--repair")
    assert res.returncode == 1, res.stderr
    lines = res.stdout.decode().splitlines()
    lost = {line.split(": ")[0] for line in lines if line.startswith("LOST ")}
    assert lost == {f"LOST v{n}:{rel}" for n, rel in
                    [(1, BIG), (1, TEXT), (1, ONLY1), (2, BIG), (2, TEXT)]}, lines
    assert lines[-1].startswith("ok: 2 versions"), lines
    assert b"Traceback" not in res.stderr

    res = _dsfs(built.store, "verify", "--json")
    assert res.returncode == 0, res.stdout
    out = json.loads(res.stdout)
    assert out["ok"] is True
    assert {(r["version"], r["lost"]) for r in out["repaired_earlier"]} == {("v1", 3), ("v2", 2)}
    shown = _dsfs(built.store, "show", "v1").stdout.decode()
    assert "repaired" in shown and f"    {ONLY1}: " in shown
    log = json.loads(_dsfs(built.store, "log", "--json").stdout)
    assert [len(v["repaired"]["lost"]) for v in log] == [3, 2]
    assert "[repaired: 3 paths lost]" in _dsfs(built.store, "log").stdout.decode()


def test_a_tag_whose_event_pack_is_gone_is_restored_from_the_old_index(built: Built) -> None:
    with Store.open(built.store) as store:
        before = {p.name for p in store.packs_dir.glob("*/*")}
        store.tag("v1", "baseline")
        [event_pack] = [p for p in store.packs_dir.glob("*/*") if p.name not in before]
    event_pack.unlink()
    report = repair_store(built.store)
    assert report.restored_tags == ["baseline"] and report.lost == []
    assert any("is missing" in p for p in report.rebuild.problems)
    with Store.open(built.store) as store:
        assert store.tags() == {"baseline": 1}
        assert verify_store(store, read_data=True).ok
    rebuild_index(built.store)  # the restored tag's event is in a pack again
    with Store.open(built.store) as store:
        assert store.tags() == {"baseline": 1}


def test_a_repair_cut_after_replacing_the_index_still_restores_what_only_it_knew(
        built: Built) -> None:
    from vfs import schema
    from vfs.reach import version_object_id
    from vfs.repair import SALVAGE_FILE
    from vfs.salvage import salvage_log, save_log

    with Store.open(built.store) as store:
        with store.index.read() as txn:
            raw = bytes(txn.get(schema.version_key(1), db=store.index.dbs["versions"]))
        _flip_payload_byte(store, version_object_id(raw))
    # what a repair killed right after its rebuild leaves: the saved log, an index without v1
    save_log(built.store / SALVAGE_FILE, salvage_log(built.store / "index"))
    rebuild_index(built.store)
    with Store.open(built.store) as store:
        assert [v.number for v in store.versions()] == [2]
    report = repair_store(built.store)
    assert report.restored == [1]
    assert not (built.store / SALVAGE_FILE).exists()
    with Store.open(built.store) as store:
        assert [v.number for v in store.versions()] == [1, 2]
        assert _files_of(store, 1, built) == built.contents[1]
