"""push, pull and clone between real stores, through a file:// remote (a real directory) and
through an s3:// remote (moto's S3 server on 127.0.0.1): every test runs on both.

Two stores on one machine stand in for two machines.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.remote.cloneutil import WrappedBackend
from tests.treeutil import tree_digest
from vfs.errors import UserError
from vfs.exporter import export_version
from vfs.importer import import_tree
from vfs.remote import layout
from vfs.remote.backend import Backend, RemoteUnavailable, open_backend
from vfs.remote.clone import clone
from vfs.remote.footer import read_remote_footer
from vfs.remote.pull import pull
from vfs.remote.push import RemoteConflict, push
from vfs.remote.remotes import Remotes, RemoteSpec
from vfs.store import Store


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def _dataset(rng: random.Random) -> dict[str, bytes]:
    files = {f"img/{i:03d}.jpg": rng.randbytes(rng.randrange(20_000, 90_000)) for i in range(40)}
    files["big.bin"] = rng.randbytes(3_000_000)
    files["labels.csv"] = "".join(f"{i},{i % 7}\n" for i in range(3000)).encode()
    return files


@pytest.fixture(params=["file", "s3"])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path / 'remote'}"
    bucket = request.getfixturevalue("s3_bucket")  # credentials and AWS_ENDPOINT_URL set
    return f"s3://{bucket}/datasets/imagenet"


def _backend(url: str) -> Backend:
    return open_backend(url)


def _store(tmp_path: Path, name: str, url: str) -> Store:
    store = Store.create(tmp_path / name)
    Remotes(store.root).add(RemoteSpec("origin", url))
    return store


def _spec(store: Store) -> RemoteSpec:
    return Remotes(store.root).get(None)


@pytest.fixture
def origin(tmp_path: Path, remote_url: str) -> Iterator[Store]:
    store = _store(tmp_path, "a", remote_url)
    try:
        yield store
    finally:
        store.close()


def _import(store: Store, tmp_path: Path, name: str, files: dict[str, bytes],
            message: str = "") -> int:
    src = _write(tmp_path / "src" / name, files)
    return import_tree(store, src, message=message or name).version.number


def _same_tree(store: Store, number: int, expect: Path, out: Path) -> None:
    export_version(store, store.version(number), out)
    assert tree_digest(out) == tree_digest(expect)


def _remote_chunks(url: str) -> list[bytes]:
    backend = _backend(url)
    ids: list[bytes] = []
    for obj in backend.list(layout.PACKS):
        ids += [r.oid for r in read_remote_footer(backend, obj.key, obj.size)
                if r.kind == 1]
    return ids


def test_clone_lists_every_pushed_version_and_reads_its_bytes(origin: Store, tmp_path: Path,
                                                              remote_url: str) -> None:
    rng = random.Random(1)
    files = _dataset(rng)
    _import(origin, tmp_path, "v1", files)
    files["big.bin"] = files["big.bin"][:1_000_000] + b"changed" + files["big.bin"][1_000_007:]
    files["img/new.jpg"] = rng.randbytes(50_000)
    _import(origin, tmp_path, "v2", files)
    origin.tag("v1", "baseline")
    report = push(origin, _spec(origin))
    assert report.pushed == [1, 2] and report.events == 1
    cloned = clone(remote_url, tmp_path / "b")
    assert cloned.new_versions == [1, 2]
    with Store.open(tmp_path / "b") as b:
        assert [(v.number, v.message, v.root) for v in b.versions()] == \
            [(v.number, v.message, v.root) for v in origin.versions()]
        assert b.tags() == {"baseline": 1}
        _same_tree(b, 2, tmp_path / "src" / "v2", tmp_path / "out2")
        _same_tree(b, 1, tmp_path / "src" / "v1", tmp_path / "out1")


def test_push_sends_each_chunk_once_and_a_second_push_sends_nothing(
        origin: Store, tmp_path: Path, remote_url: str) -> None:
    rng = random.Random(2)
    files = _dataset(rng)
    _import(origin, tmp_path, "v1", files)
    first = push(origin, _spec(origin))
    files["labels.csv"] += b"3000,1\n"
    _import(origin, tmp_path, "v2", files)
    second = push(origin, _spec(origin))
    assert second.pushed == [2]
    assert 0 < second.bytes_uploaded < first.bytes_uploaded / 10
    chunks = _remote_chunks(remote_url)
    assert len(chunks) == len(set(chunks))
    again = push(origin, _spec(origin))
    assert again.pushed == [] and again.packs_uploaded == 0 and again.bytes_uploaded == 0


class _FailAfter(WrappedBackend):
    """A backend that drops the connection for good after `puts` successful PUTs."""

    def __init__(self, inner: Backend, puts: int) -> None:
        super().__init__(inner)
        self.left = puts

    def put(self, key: str, data: bytes | memoryview, *, if_absent: bool = False) -> None:
        if self.left <= 0:
            raise RemoteUnavailable(f"remote {self.url}: connection lost")
        self.left -= 1
        self.inner.put(key, data, if_absent=if_absent)


def test_an_interrupted_push_shows_no_partial_version_and_a_rerun_completes_it(
        origin: Store, tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    files = _dataset(rng)
    _import(origin, tmp_path, "v1", files)
    push(origin, _spec(origin))
    files.update({f"more/{i}.bin": rng.randbytes(400_000) for i in range(30)})
    _import(origin, tmp_path, "v2", files)
    packs_needed = len(list(_backend(remote_url).list(layout.PACKS)))
    real_open = RemoteSpec.open

    def flaky(self: RemoteSpec) -> Backend:
        return _FailAfter(real_open(self), puts=1)

    monkeypatch.setattr(RemoteSpec, "open", flaky)
    with pytest.raises(RemoteUnavailable):
        push(origin, _spec(origin))
    monkeypatch.setattr(RemoteSpec, "open", real_open)
    remote = _backend(remote_url)
    assert [o.key for o in remote.list(layout.VERSIONS)] == [layout.version_key(1)]
    assert len(list(remote.list(layout.PACKS))) >= packs_needed
    mid = clone(remote_url, tmp_path / "mid")
    assert mid.new_versions == [1]
    done = push(origin, _spec(origin))
    assert done.pushed == [2]
    assert done.packs_present >= 1  # what arrived before the cut was not sent again
    final = clone(remote_url, tmp_path / "final")
    assert final.new_versions == [1, 2]
    with Store.open(tmp_path / "final") as b:
        _same_tree(b, 2, tmp_path / "src" / "v2", tmp_path / "out")


def _two_clones(tmp_path: Path, remote_url: str, origin: Store) -> Store:
    _import(origin, tmp_path, "v1", _dataset(random.Random(4)))
    push(origin, _spec(origin))
    clone(remote_url, tmp_path / "b")
    return Store.open(tmp_path / "b")


def test_a_lost_number_is_one_clear_line_and_pull_renumbers_the_loser(
        origin: Store, tmp_path: Path, remote_url: str) -> None:
    b = _two_clones(tmp_path, remote_url, origin)
    try:
        _import(origin, tmp_path, "a2", {"a.txt": b"from a"}, "a's v2")
        _import(b, tmp_path, "b2", {"b.txt": b"from b"}, "b's v2")
        b.tag("v2", "mine")
        push(origin, _spec(origin))
        with pytest.raises(RemoteConflict) as err:
            push(b, _spec(b))
        assert str(err.value) == ("the remote has v2 from another store: run `dsfs pull`, "
                                  "then `dsfs push`")
        report = pull(b, _spec(b))
        assert report.renumbered == {2: 3} and report.new_versions == [2]
        assert [(v.number, v.message, v.parent) for v in b.versions()] == \
            [(1, "v1", 0), (2, "a's v2", 1), (3, "b's v2", 1)]
        assert b.tags() == {"mine": 3}
        _same_tree(b, 3, tmp_path / "src" / "b2", tmp_path / "out3")
        assert push(b, _spec(b)).pushed == [3]
        assert pull(origin, _spec(origin)).new_versions == [3]
        assert [v.message for v in origin.versions()] == ["v1", "a's v2", "b's v2"]
        assert origin.tags() == {"mine": 3}
        assert _import(origin, tmp_path, "a4", {"c": b"c"}) == 4
    finally:
        b.close()


def test_two_stores_pushing_at_once_never_lose_a_version(origin: Store, tmp_path: Path,
                                                        remote_url: str) -> None:
    b = _two_clones(tmp_path, remote_url, origin)
    try:
        stores = {"a": origin, "b": b}
        for round_no in range(6):
            for name, s in stores.items():
                _import(s, tmp_path, f"{name}{round_no}", {f"{name}.txt": f"{round_no}".encode()},
                        f"{name} {round_no}")
            outcome: dict[str, BaseException | None] = {}
            barrier = threading.Barrier(2)

            def go(name: str, s: Store, barrier: threading.Barrier = barrier,
                   outcome: dict[str, BaseException | None] = outcome) -> None:
                barrier.wait()
                try:
                    push(s, _spec(s))
                    outcome[name] = None
                except RemoteConflict as exc:
                    outcome[name] = exc

            threads = [threading.Thread(target=go, args=kv) for kv in stores.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            losers = [n for n, e in outcome.items() if e is not None]
            assert len(losers) <= 1, outcome
            for name in losers:
                pull(stores[name], _spec(stores[name]))
                push(stores[name], _spec(stores[name]))
            for s in stores.values():
                pull(s, _spec(s))
        messages = {(v.number, v.message) for v in origin.versions()}
        assert messages == {(v.number, v.message) for v in b.versions()}
        assert sorted(m for _, m in messages) == sorted(
            ["v1"] + [f"{n} {r}" for n in "ab" for r in range(6)])
        claims = list(_backend(remote_url).list(layout.VERSIONS))
        assert len(claims) == 13
    finally:
        b.close()


def test_drops_travel_and_clone_of_a_non_remote_is_refused_cleanly(
        origin: Store, tmp_path: Path, remote_url: str) -> None:
    b = _two_clones(tmp_path, remote_url, origin)
    try:
        _import(origin, tmp_path, "v2", {"x": b"x"})
        push(origin, _spec(origin))
        origin.drop("v1")
        push(origin, _spec(origin))
        report = pull(b, _spec(b))
        assert report.dropped == [1] and [v.number for v in b.versions()] == [2]
    finally:
        b.close()
    empty = tmp_path / "not-a-remote"
    empty.mkdir()
    with pytest.raises(UserError, match="is not a dsfs remote"):
        clone(f"file://{empty}", tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_verify_remote_finds_a_flipped_byte_and_a_missing_pack(origin: Store, tmp_path: Path,
                                                               remote_url: str) -> None:
    from vfs.remote.check import verify_remote
    from vfs.remote.session import read_remote

    _import(origin, tmp_path, "v1", _dataset(random.Random(5)))
    push(origin, _spec(origin))
    backend = _backend(remote_url)
    assert verify_remote(read_remote(backend), read_data=True).ok
    pack = max(backend.list(layout.PACKS), key=lambda o: o.size)  # data, not trees
    data = bytearray(backend.get(pack.key))
    data[len(data) // 3] ^= 0x01
    backend.put(pack.key, bytes(data))
    assert verify_remote(read_remote(backend)).ok  # structure alone cannot see it
    found = verify_remote(read_remote(backend), read_data=True)
    assert not found.ok and pack.key.rsplit("/", 1)[-1][:12] in found.problems[0]
    backend.delete(pack.key)
    gone = verify_remote(read_remote(backend))
    assert not gone.ok and any("no pack on the remote holds" in p or "lacks" in p
                               for p in gone.problems)


def test_gc_remote_marks_then_deletes_only_what_no_version_needs(
        origin: Store, tmp_path: Path, remote_url: str) -> None:
    from vfs.remote.check import verify_remote
    from vfs.remote.gc import gc_remote
    from vfs.remote.session import read_remote

    rng = random.Random(6)
    _import(origin, tmp_path, "v1", {"old.bin": rng.randbytes(2_000_000)})
    push(origin, _spec(origin))
    _import(origin, tmp_path, "v2", {"new.bin": rng.randbytes(2_000_000)})
    push(origin, _spec(origin))
    origin.drop("v1")
    push(origin, _spec(origin))
    backend = _backend(remote_url)
    before = {o.key for o in backend.list(layout.PACKS)}
    dry = gc_remote(read_remote(backend), grace_s=0, dry_run=True)
    assert dry.marked and not list(backend.list(layout.TRASH))
    first = gc_remote(read_remote(backend), grace_s=0)
    assert first.marked == dry.marked and first.deleted == []
    assert {o.key for o in backend.list(layout.PACKS)} == before
    second = gc_remote(read_remote(backend), grace_s=0)
    assert second.deleted == first.marked and second.bytes_freed > 2_000_000
    assert {o.key for o in backend.list(layout.PACKS)} == before - {
        layout.pack_key(name) for name in first.marked}
    assert not list(backend.list(layout.TRASH))
    assert verify_remote(read_remote(backend), read_data=True).ok
    young = gc_remote(read_remote(backend), grace_s=3600)
    assert young.marked == [] and young.deleted == []


def test_a_push_needing_a_marked_pack_again_keeps_it(origin: Store, tmp_path: Path,
                                                     remote_url: str) -> None:
    from vfs.remote.gc import gc_remote
    from vfs.remote.session import read_remote

    shared = random.Random(7).randbytes(1_500_000)
    _import(origin, tmp_path, "v1", {"shared.bin": shared})
    push(origin, _spec(origin))
    _import(origin, tmp_path, "v2", {"other.bin": b"x" * 1000})
    push(origin, _spec(origin))
    origin.drop("v1")
    push(origin, _spec(origin))
    backend = _backend(remote_url)
    assert gc_remote(read_remote(backend), grace_s=0).marked
    _import(origin, tmp_path, "v3", {"shared.bin": shared, "more": b"m"})  # dedups into v1's pack
    push(origin, _spec(origin))
    assert not list(backend.list(layout.TRASH))
    assert gc_remote(read_remote(backend), grace_s=0).deleted == []
    out = clone(remote_url, tmp_path / "c")
    assert out.new_versions == [2, 3]
    with Store.open(tmp_path / "c") as c:
        _same_tree(c, 3, tmp_path / "src" / "v3", tmp_path / "out")
