"""The LMDB index is a cache of the packs: deleting it loses nothing but the file cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.treeutil import tree_digest, write
from vfs.errors import NotAStore
from vfs.exporter import export_version
from vfs.importer import import_tree
from vfs.rebuild import rebuild_index
from vfs.store import Store
from vfs.verify import verify_store


def test_rebuild_restores_versions_tags_drops_and_numbering(tmp_path: Path) -> None:
    root = tmp_path / "store"
    src = tmp_path / "src"
    with Store.create(root) as store:
        write(src / "a.bin", b"a" * 3_000_000)
        import_tree(store, src, "one")
        write(src / "b.txt", b"b")
        import_tree(store, src, "two", tag="keep")
        write(src / "c.txt", b"c")
        import_tree(store, src, "three")
        store.tag("v3", "tmp")
        store.untag("tmp")
        store.drop("v1")
        digest_v2 = tree_digest(_export(store, "v2", tmp_path / "e2"))
        log_before = [(v.number, v.message, v.root) for v in store.versions()]
    shutil.rmtree(root / "index")
    with pytest.raises(NotAStore, match="verify --repair"):
        Store.open(root)
    report = rebuild_index(root)
    assert (report.versions, report.dropped, report.tags, report.bad_records) == (2, 1, 1, 0)
    with Store.open(root) as store:
        assert [(v.number, v.message, v.root) for v in store.versions()] == log_before
        assert store.tags() == {"keep": 2}
        assert verify_store(store, read_data=True).ok
        assert tree_digest(_export(store, "keep", tmp_path / "r2")) == digest_v2
        write(src / "d.txt", b"d")
        assert import_tree(store, src, "four").version.number == 4


def _export(store: Store, spec: str, dest: Path) -> Path:
    export_version(store, store.resolve(spec), dest)
    return dest
