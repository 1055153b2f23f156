"""The Backend contract, the same tests on a directory (FileBackend) and on S3 (moto)."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.remote.s3util import MotoServer
from vfs.remote.backend import Backend, RemoteKeyExists, RemoteKeyMissing
from vfs.remote.filebackend import FileBackend
from vfs.remote.s3backend import S3Backend

DATA = bytes(range(256)) * 40  # 10240 bytes

ODD_KEYS = [
    "odd/with space",
    "odd/plus+sign",
    "odd/percent%20not-escaped",
    "odd/amp&eq=q?hash#",
    "odd/tilde~semi;comma,quote'dq\"",
    "odd/unicodé-中文-😀",
    "odd/brackets[]{}()<>",
    "odd/star*caret^pipe|backslash\\",
    "odd/.hidden",
]


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "file":
        fb = FileBackend.from_url(f"file://{tmp_path}/remote")
        yield fb
        fb.close()
    else:
        yield request.getfixturevalue("s3_backend")


def test_put_get_whole_and_ranged(backend: Backend) -> None:
    backend.put("packs/ab/one", DATA)
    assert backend.get("packs/ab/one") == DATA
    assert backend.get("packs/ab/one", 100, 50) == DATA[100:150]
    assert backend.get("packs/ab/one", 0, 1) == DATA[:1]
    assert backend.get("packs/ab/one", 5000) == DATA[5000:]
    assert backend.get("packs/ab/one", len(DATA) - 1, 1) == DATA[-1:]
    # a range past the end returns what exists
    assert backend.get("packs/ab/one", 10000, 1000) == DATA[10000:]
    assert backend.get("packs/ab/one", len(DATA), 10) == b""
    assert backend.get("packs/ab/one", 20000, 5) == b""
    assert backend.get("packs/ab/one", 20000) == b""
    assert backend.get("packs/ab/one", 7, 0) == b""


def test_memoryview_body(backend: Backend) -> None:
    backend.put("mv", memoryview(DATA)[10:20])
    assert backend.get("mv") == DATA[10:20]


def test_empty_object(backend: Backend) -> None:
    backend.put("empty", b"")
    assert backend.get("empty") == b""
    assert backend.get("empty", 0, 10) == b""
    assert backend.get("empty", 3) == b""
    found = backend.stat("empty")
    assert found is not None and found.size == 0


def test_missing_key(backend: Backend) -> None:
    for start, length in ((0, None), (5, 10), (0, 0)):
        with pytest.raises(RemoteKeyMissing) as info:
            backend.get("versions/0000000001", start, length)
        assert info.value.key == "versions/0000000001"
        assert "versions/0000000001" in str(info.value)
    assert backend.stat("versions/0000000001") is None
    backend.delete("versions/0000000001")  # not an error


def test_list_order_and_prefix(backend: Backend) -> None:
    keys = ["b/2", "a/1", "a/10", "a/2", "ab", "c", "a/11/deeper", "versions/0000000002",
            "versions/0000000010"]
    before = time.time_ns()
    for key in random.Random(7).sample(keys, len(keys)):
        backend.put(key, key.encode() * 3)
    after = time.time_ns()
    listed = list(backend.list(""))
    assert [o.key for o in listed] == sorted(keys)
    assert all(o.size == 3 * len(o.key) for o in listed)
    # S3 keeps whole seconds
    assert all(before - 2 * 10**9 <= o.mtime_ns <= after + 2 * 10**9 for o in listed)
    # (a key cannot also be a "directory" of other keys: FileBackend keeps keys as paths)
    assert [o.key for o in backend.list("a/")] == ["a/1", "a/10", "a/11/deeper", "a/2"]
    assert [o.key for o in backend.list("a")] == ["a/1", "a/10", "a/11/deeper", "a/2", "ab"]
    assert [o.key for o in backend.list("a/1")] == ["a/1", "a/10", "a/11/deeper"]
    assert [o.key for o in backend.list("versions/")] == [
        "versions/0000000002", "versions/0000000010"]
    assert list(backend.list("zz")) == []
    assert list(backend.list("b/3")) == []


def test_stat_overwrite_delete(backend: Backend) -> None:
    backend.put("k", b"first")
    found = backend.stat("k")
    assert found is not None and (found.key, found.size) == ("k", 5)
    backend.put("k", b"second, longer")
    assert backend.get("k") == b"second, longer"
    found = backend.stat("k")
    assert found is not None and found.size == len(b"second, longer")
    backend.put("keep", b"x")
    backend.delete("k")
    assert backend.stat("k") is None
    with pytest.raises(RemoteKeyMissing):
        backend.get("k")
    assert [o.key for o in backend.list("")] == ["keep"]
    backend.delete("k")


def test_conditional_create(backend: Backend) -> None:
    backend.put("versions/0000000001", b"mine", if_absent=True)
    with pytest.raises(RemoteKeyExists) as info:
        backend.put("versions/0000000001", b"theirs", if_absent=True)
    assert info.value.key == "versions/0000000001"
    assert "versions/0000000001" in str(info.value)
    assert backend.get("versions/0000000001") == b"mine"
    # a plain put still overwrites
    backend.put("versions/0000000001", b"overwritten")
    assert backend.get("versions/0000000001") == b"overwritten"


def _race(backend: Backend, key: str, racers: int) -> tuple[list[int], list[int]]:
    """`racers` threads put `key` if absent at once: (winners, losers)."""
    barrier = threading.Barrier(racers)
    winners: list[int] = []
    losers: list[int] = []
    other: list[BaseException] = []

    def claim(n: int) -> None:
        barrier.wait()
        try:
            backend.put(key, f"claim {n}".encode(), if_absent=True)
            winners.append(n)
        except RemoteKeyExists:
            losers.append(n)
        except BaseException as exc:
            other.append(exc)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert other == []
    return winners, losers


def test_conditional_create_race(backend: Backend) -> None:
    """8 threads create one key at once, 20 times: each time exactly one wins."""
    for round_no in range(20):
        key = f"versions/{round_no:010d}"
        winners, losers = _race(backend, key, 8)
        assert len(winners) == 1 and len(losers) == 7, (round_no, winners)
        assert backend.get(key) == f"claim {winners[0]}".encode()


def test_odd_keys(backend: Backend) -> None:
    for n, key in enumerate(ODD_KEYS):
        backend.put(key, f"{n}".encode())
    assert [o.key for o in backend.list("odd/")] == sorted(ODD_KEYS)
    for n, key in enumerate(ODD_KEYS):
        assert backend.get(key) == f"{n}".encode()
        assert backend.get(key, 0, 1) == f"{n}".encode()[:1]
        found = backend.stat(key)
        assert found is not None and found.key == key
    for key in ODD_KEYS:
        backend.delete(key)
    assert list(backend.list("odd/")) == []


def test_parallel_transfers(backend: Backend) -> None:
    """Many threads share one backend (one client and its connection pool)."""
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(5):
                key = f"packs/{n:02x}/{i}"
                backend.put(key, DATA[n:] + bytes([i]))
                assert backend.get(key, n, 100) == (DATA[n:] + bytes([i]))[n:n + 100]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list(backend.list("packs/"))) == 80


# --- S3 only ------------------------------------------------------------------------------


def test_s3_prefix_is_kept_apart(s3_backend: S3Backend, moto_server: MotoServer) -> None:
    """Objects outside the backend's prefix, even one that starts with the same letters,
    are neither listed nor reachable."""
    client = moto_server.client()
    try:
        client.put_object(Bucket=s3_backend.bucket, Key="some/prefixed/x", Body=b"no")
        client.put_object(Bucket=s3_backend.bucket, Key="other/y", Body=b"no")
        s3_backend.put("x", b"yes")
        names = [o["Key"] for o in client.list_objects_v2(Bucket=s3_backend.bucket)["Contents"]]
    finally:
        client.close()
    assert "some/prefix/x" in names
    assert [o.key for o in s3_backend.list("")] == ["x"]
    assert s3_backend.stat("y") is None


def test_s3_list_paginates(s3_backend: S3Backend) -> None:
    s3_backend.list_page = 3
    keys = [f"events/{n:04d}" for n in range(10)]
    for key in keys:
        s3_backend.put(key, b"e")
    assert [o.key for o in s3_backend.list("events/")] == keys


def test_s3_url_forms(s3_bucket: str, moto_server: MotoServer) -> None:
    whole = S3Backend.from_url(f"s3://{s3_bucket}", endpoint_url=moto_server.endpoint)
    nested = S3Backend.from_url(f"s3://{s3_bucket}/a/b/", endpoint_url=moto_server.endpoint)
    try:
        assert whole.url == f"s3://{s3_bucket}"
        assert nested.url == f"s3://{s3_bucket}/a/b"
        nested.put("k", b"v")
        assert whole.get("a/b/k") == b"v"
        assert [o.key for o in whole.list("")] == ["a/b/k"]
    finally:
        whole.close()
        nested.close()


def test_subprocess_reaches_the_server(moto_server: MotoServer, s3_bucket: str) -> None:
    """MotoServer.env() is all a subprocess (`dsfs push`, a mount) needs: credentials and
    AWS_ENDPOINT_URL, no --endpoint-url."""
    script = ("import sys\n"
              "from vfs.remote.backend import open_backend\n"
              "backend = open_backend(sys.argv[1])\n"
              "backend.put('k', b'from a subprocess', if_absent=True)\n"
              "print(backend.get('k').decode())\n")
    done = subprocess.run([sys.executable, "-c", script, f"s3://{s3_bucket}/sub"],
                          env=moto_server.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from a subprocess\n"
    backend = S3Backend.from_url(f"s3://{s3_bucket}", endpoint_url=moto_server.endpoint)
    try:
        assert backend.get("sub/k") == b"from a subprocess"
    finally:
        backend.close()
