"""The corners of push and pull a review found: drops across stores, dropped numbers, a rebuild
after pull, a crash in the middle of renumbering, gaps, a mount's pull, gc racing a push.
Real stores, a real file:// remote."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.remote.test_sync import _import, _spec, _store, _two_clones
from vfs.errors import HeadBusy, UserError
from vfs.head.session import open_head
from vfs.head.state import HEAD_ROOT
from vfs.rebuild import rebuild_index
from vfs.remote import layout
from vfs.remote.backend import open_backend
from vfs.remote.gc import gc_remote
from vfs.remote.pull import pull
from vfs.remote.push import push
from vfs.remote.session import read_remote
from vfs.store import Store


@pytest.fixture
def remote_url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'remote'}"


@pytest.fixture
def origin(tmp_path: Path, remote_url: str) -> Iterator[Store]:
    store = _store(tmp_path, "a", remote_url)
    try:
        yield store
    finally:
        store.close()


def test_a_drop_of_an_unpushed_version_never_drops_another_stores(
        origin: Store, tmp_path: Path, remote_url: str) -> None:
    b = _two_clones(tmp_path, remote_url, origin)
    try:
        _import(origin, tmp_path, "a2", {"a": b"a"}, "a's v2")
        origin.drop("v2")  # never pushed
        _import(b, tmp_path, "b2", {"b": b"b"}, "b's v2")
        push(b, _spec(b))
        push(origin, _spec(origin))  # its tombstone of v2 is not b's v2
        assert pull(b, _spec(b)).dropped == []
        assert [v.message for v in b.versions()] == ["v1", "b's v2"]
        report = pull(origin, _spec(origin))
        assert report.new_versions == []  # a number dropped here stays dropped here
        assert 2 in origin.dropped_numbers()
        assert _import(origin, tmp_path, "a3", {"c": b"c"}) == 3
    finally:
        b.close()


def test_a_rebuild_after_pull_keeps_what_the_pull_recorded(
        origin: Store, tmp_path: Path, remote_url: str) -> None:
    b = _two_clones(tmp_path, remote_url, origin)
    try:
        _import(origin, tmp_path, "a2", {"a": b"a"}, "a's v2")
        _import(origin, tmp_path, "a3", {"a3": b"a3"}, "a's v3")
        origin.tag("v2", "good")
        _import(b, tmp_path, "b2", {"b": b"b"}, "b's v2")
        b.tag("v2", "mine")
        push(origin, _spec(origin))
        origin.drop("v3")
        push(origin, _spec(origin))
        report = pull(b, _spec(b), data=[])  # every pack local: a rebuild can see them all
        assert report.renumbered == {2: 4} and report.new_versions == [2]
        assert report.dropped == []  # v3 arrived already dropped: never recorded here
        before = ([(v.number, v.message) for v in b.versions()], b.tags())
        assert before == ([(1, "v1"), (2, "a's v2"), (4, "b's v2")],
                          {"good": 2, "mine": 4})
        root = b.root
        b.close()
        rebuild_index(root)
        b = Store.open(root)
        assert ([(v.number, v.message) for v in b.versions()], b.tags()) == before
    finally:
        b.close()


def test_a_crash_in_the_middle_of_renumbering_keeps_head_on_its_version(
        origin: Store, tmp_path: Path, remote_url: str) -> None:
    b = _two_clones(tmp_path, remote_url, origin)
    try:
        _import(b, tmp_path, "b2", {"b": b"b"}, "b's v2")
        with open_head(b) as head:
            head.fs.mkdir(HEAD_ROOT, b"edited", 0o755, 0, 0)  # @head has changes on v2
            db = head.db
            v2 = b.version(2)
            # what pull writes before it changes the index, then the crash
            with db.txn():
                db.set_meta("base_was", 2)
                db.set_meta("base_identity", v2.identity)
                db.set_meta("base", 3)
            db.sync()
        _import(b, tmp_path, "b3", {"c": b"c"}, "an import took v3 meanwhile")
        with open_head(b) as head:
            assert head.db.meta("base") == 2 and head.db.meta("base_was") is None
    finally:
        b.close()


def test_a_push_never_leaves_an_unclaimed_number_below_what_it_claims(
        origin: Store, tmp_path: Path) -> None:
    _import(origin, tmp_path, "v1", {"a": b"a"})
    _import(origin, tmp_path, "v2", {"b": b"b"})
    with pytest.raises(UserError, match="v1 is not on the remote yet"):
        push(origin, _spec(origin), ["v2"])
    assert push(origin, _spec(origin), ["v1", "v2"]).pushed == [1, 2]


def test_a_mounts_pull_never_renumbers(origin: Store, tmp_path: Path, remote_url: str) -> None:
    b = _two_clones(tmp_path, remote_url, origin)
    try:
        _import(origin, tmp_path, "a2", {"a": b"a"}, "a's v2")
        _import(b, tmp_path, "b2", {"b": b"b"}, "b's v2")
        push(origin, _spec(origin))
        with pytest.raises(HeadBusy, match="lost its number"):
            pull(b, _spec(b), renumber=False)
        assert [v.message for v in b.versions()] == ["v1", "b's v2"]
    finally:
        b.close()


def test_pulled_versions_read_at_once_in_the_store_that_pulled(
        origin: Store, tmp_path: Path, remote_url: str) -> None:
    other = _store(tmp_path, "other", remote_url)
    try:
        _import(origin, tmp_path, "v1", {"data.bin": random.Random(3).randbytes(200_000)})
        push(origin, _spec(origin))
        pull(other, _spec(other))  # a store with its own history, not a clone
        entry = other.lookup(other.version(1), b"data.bin")
        assert other.read(entry, 0, 200_000) == random.Random(3).randbytes(200_000)
    finally:
        other.close()


def test_gc_that_looked_before_a_push_reused_a_marked_pack_keeps_it(
        origin: Store, tmp_path: Path, remote_url: str) -> None:
    shared = random.Random(8).randbytes(1_000_000)
    _import(origin, tmp_path, "v1", {"shared.bin": shared})
    push(origin, _spec(origin))
    _import(origin, tmp_path, "v2", {"x": b"x"})
    push(origin, _spec(origin))
    origin.drop("v1")
    push(origin, _spec(origin))
    backend = open_backend(remote_url)
    assert gc_remote(read_remote(backend), grace_s=0).marked
    stale = read_remote(backend)  # gc's second run reads the remote...
    _import(origin, tmp_path, "v3", {"shared.bin": shared})
    push(origin, _spec(origin))  # ...a push needing the marked pack claims v3...
    late = gc_remote(stale, grace_s=0)  # ...and gc goes on with what it read
    assert late.deleted == [] or all(
        layout.pack_key(n) in {o.key for o in backend.list(layout.PACKS)} for n in
        read_remote(backend).claims[3].packs)
    assert all(p in {layout.pack_name(o.key) for o in backend.list(layout.PACKS)}
               for p in read_remote(backend).claims[3].packs)
