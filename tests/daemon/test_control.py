"""The control channel over real Unix sockets: requests, errors, garbage, deadlines, credentials.

The daemon side runs in the test's trio loop; the blocking CLI client runs in a worker thread,
and as another uid in a forked child (which needs the tests to run as root).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import shutil
import socket
import stat
import struct
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon.control import (
    MAX_MESSAGE,
    NO_DAEMON,
    ControlError,
    Handler,
    Peer,
    request,
    serve_control,
)
from vfs.errors import UnknownVersion

NOBODY = 65534
ME = frozenset({os.getuid()})
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root to run a client as another uid")


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory (AF_UNIX paths are limited to 107 bytes) that other users can enter."""
    d = Path(tempfile.mkdtemp(prefix="dsfs-ctl-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def path(sockdir: Path) -> Path:
    return sockdir / "control.sock"


async def echo(message: dict[str, Any], peer: Peer) -> dict[str, Any]:
    return {"ok": True, "echo": message, "peer": {"pid": peer.pid, "uid": peer.uid,
                                                  "gid": peer.gid}}


@asynccontextmanager
async def serving(path: Path, handler: Handler = echo, *, allowed_uids: frozenset[int] = ME,
                  read_timeout: float = 10.0) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(
            serve_control, path, handler, allowed_uids=allowed_uids, read_timeout=read_timeout))
        yield
        nursery.cancel_scope.cancel()


async def call(path: Path, message: dict[str, Any], timeout: float | None = 5.0) -> dict[str, Any]:
    return await trio.to_thread.run_sync(functools.partial(request, path, message,
                                                           timeout=timeout))


async def call_error(path: Path, message: dict[str, Any], timeout: float = 5.0) -> ControlError:
    with pytest.raises(ControlError) as info:
        await call(path, message, timeout)
    return info.value


def frame(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


def raw_exchange(path: Path, data: bytes, *, send: bool = True) -> bytes:
    """Connect, send raw bytes and close our writing side; everything the daemon sends back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(os.fspath(path))
        if send:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass
        out = bytearray()
        while True:
            try:
                chunk = s.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)


def parse_reply(raw: bytes) -> dict[str, Any]:
    (length,) = struct.unpack("!I", raw[:4])
    assert len(raw) == 4 + length
    reply = json.loads(raw[4:].decode("utf-8"))
    assert isinstance(reply, dict)
    return reply


async def assert_still_serving(path: Path) -> None:
    reply = await call(path, {"op": "ping"})
    assert reply["ok"] is True
    assert reply["echo"] == {"op": "ping"}


# -- requests and replies --------------------------------------------------------------------

async def test_round_trip(path: Path) -> None:
    async with serving(path):
        message = {"op": "status", "args": ["ä", 1, None, {"deep": [True]}]}
        reply = await call(path, message)
    assert reply["ok"] is True
    assert reply["echo"] == message
    assert reply["peer"] == {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()}


async def test_socket_is_private_and_removed_on_exit(path: Path) -> None:
    async with serving(path):
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
    assert not os.path.lexists(path)


async def test_concurrent_clients(path: Path) -> None:
    n = 8
    arrived = 0
    all_in = trio.Event()

    async def gather(message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        nonlocal arrived
        arrived += 1
        if arrived == n:
            all_in.set()
        await all_in.wait()  # returns only if all n requests are in the daemon at once
        return {"ok": True, "i": message["i"]}

    results: dict[int, int] = {}

    async def one(i: int) -> None:
        results[i] = (await call(path, {"op": "gather", "i": i}))["i"]

    async with serving(path, gather):
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(one, i)
    assert results == {i: i for i in range(n)}


# -- handler errors --------------------------------------------------------------------------

async def test_domain_error_reaches_the_client_with_its_code(path: Path) -> None:
    async def fail(message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        if message["op"] == "ping":
            return await echo(message, peer)
        if message["op"] == "grouped":
            raise ExceptionGroup("in a nursery", [UnknownVersion("no version 8 in this store")])
        raise UnknownVersion("no version 7 in this store")

    async with serving(path, fail):
        err = await call_error(path, {"op": "show"})
        assert str(err) == "no version 7 in this store"
        assert err.exit_code == UnknownVersion.exit_code
        err = await call_error(path, {"op": "grouped"})
        assert str(err) == "no version 8 in this store"
        assert err.exit_code == UnknownVersion.exit_code
        await assert_still_serving(path)


async def test_unexpected_error_is_logged_and_answered_generically(
        path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def buggy(message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        if message["op"] == "ping":
            return await echo(message, peer)
        raise RuntimeError("a bug with\na multi-line message")

    caplog.set_level(logging.INFO, logger="dsfs.control")
    async with serving(path, buggy):
        err = await call_error(path, {"op": "commit"})
        assert str(err) == "internal error in the daemon: see its log"
        assert err.exit_code == ControlError.exit_code == 11
        await assert_still_serving(path)
    logged = [r for r in caplog.records if r.name == "dsfs.control" and r.exc_info]
    assert len(logged) == 1
    assert logged[0].levelno == logging.ERROR
    assert logged[0].exc_info is not None
    assert isinstance(logged[0].exc_info[1], RuntimeError)
    assert "'commit'" in logged[0].getMessage()


@pytest.mark.parametrize("result", [["not", "a", "dict"], {"ok": True, "x": object()},
                                    {"ok": True, "x": float("nan")},
                                    {"ok": True, "x": "y" * MAX_MESSAGE}],
                         ids=["list", "unserializable", "nan", "oversize"])
async def test_bad_handler_results_are_internal_errors(
        path: Path, result: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def bad(message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        if message["op"] == "ping":
            return await echo(message, peer)
        return result  # type: ignore[no-any-return]

    async with serving(path, bad):
        err = await call_error(path, {"op": "status"})
        assert str(err) == "internal error in the daemon: see its log"
        await assert_still_serving(path)
    assert any(r.levelno == logging.ERROR for r in caplog.records if r.name == "dsfs.control")


# -- garbage on the socket -------------------------------------------------------------------

GARBAGE = {
    "oversize": (struct.pack("!I", MAX_MESSAGE + 1) + b"x" * 100, "exceeds the limit"),
    "huge-length": (b"\xff\xff\xff\xff", "exceeds the limit"),
    "truncated-prefix": (b"\x00\x00", "truncated request"),
    "truncated-body": (struct.pack("!I", 100) + b'{"op": "st', "truncated request: 10 of 100"),
    "empty-body": (frame(b""), "not JSON"),
    "not-json": (frame(b"this is not json{"), "not JSON"),
    "not-utf8": (frame(b'{"op": "\xff\xfe"}'), "not UTF-8"),
    "json-array": (frame(b'[1, 2, {"op": "status"}]'), "not an object"),
    "json-string": (frame(b'"op"'), "not an object"),
    "missing-op": (frame(b'{"args": 1}'), '"op"'),
    "op-not-string": (frame(b'{"op": 3}'), '"op"'),
    "op-empty": (frame(b'{"op": ""}'), '"op"'),
}


@pytest.mark.parametrize("name", GARBAGE)
async def test_garbage_is_rejected_and_serving_continues(path: Path, name: str) -> None:
    data, expected = GARBAGE[name]
    calls = 0

    async def counting(message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return await echo(message, peer)

    async with serving(path, counting):
        raw = await trio.to_thread.run_sync(raw_exchange, path, data)
        reply = parse_reply(raw)
        assert reply["ok"] is False
        assert expected in reply["error"]
        assert "\n" not in reply["error"]
        assert calls == 0
        await assert_still_serving(path)


async def test_random_bytes_do_not_stop_the_server(path: Path) -> None:
    async with serving(path):
        for seed in range(20):
            rng = random.Random(seed)
            data = rng.randbytes(rng.randrange(1, 4096))
            raw = await trio.to_thread.run_sync(raw_exchange, path, data)
            if raw:  # an error reply, or else just a closed connection
                assert parse_reply(raw)["ok"] is False
        await assert_still_serving(path)


async def test_silent_client_is_dropped_after_the_deadline(path: Path) -> None:
    async with serving(path, read_timeout=0.2):
        with trio.fail_after(5):
            outcome: list[bytes] = []

            async def stay_silent() -> None:
                outcome.append(await trio.to_thread.run_sync(
                    functools.partial(raw_exchange, path, b"", send=False)))

            started = time.monotonic()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stay_silent)
                await assert_still_serving(path)  # served while the silent client waits
        elapsed = time.monotonic() - started
        reply = parse_reply(outcome[0])
        assert reply == {"ok": False, "error": "no complete request within 0.2 s"}
        assert 0.15 <= elapsed < 3
        await assert_still_serving(path)


async def test_client_that_hangs_up_early(path: Path) -> None:
    async with serving(path):
        for data in (b"", struct.pack("!I", 50) + b"{"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(os.fspath(path))
                s.sendall(data)
        await assert_still_serving(path)


# -- who may talk ------------------------------------------------------------------------------

def request_as(uid: int, path: Path) -> dict[str, Any]:
    """Run request() in a forked child as `uid`; what it got back, via a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest or trio
        status = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                out: dict[str, Any] = {"reply": request(path, {"op": "whoami"}, timeout=5)}
            except ControlError as exc:
                out = {"error": str(exc), "code": exc.exit_code}
            os.write(w, json.dumps(out).encode())
        except BaseException:
            os.write(w, json.dumps({"crash": traceback.format_exc()}).encode())
            status = 1
        finally:
            os._exit(status)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(data)
    assert "crash" not in result, result["crash"]
    assert os.waitstatus_to_exitcode(status) == 0
    assert isinstance(result, dict)
    return result


@needs_root
async def test_other_uid_is_refused(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def counting(message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return await echo(message, peer)

    async with serving(path, counting):
        path.chmod(0o666)  # let the connection through, so the credential check is what refuses
        result = await trio.to_thread.run_sync(request_as, NOBODY, path)
        assert result == {
            "error": f"permission denied: this dsfs daemon belongs to uid {os.geteuid()}; "
                     "run the command as that user or root",
            "code": 11,
        }
        assert calls == 0
        await assert_still_serving(path)  # root is always allowed
    assert any(f"uid {NOBODY}" in r.getMessage() for r in caplog.records
               if r.name == "dsfs.control" and r.levelno == logging.WARNING)


@needs_root
async def test_other_uid_is_served_when_allowed(path: Path) -> None:
    async with serving(path, allowed_uids=frozenset({NOBODY})):
        path.chmod(0o666)
        result = await trio.to_thread.run_sync(request_as, NOBODY, path)
    peer = result["reply"]["peer"]
    assert peer["uid"] == NOBODY
    assert peer["gid"] == NOBODY
    assert peer["pid"] != os.getpid()


@needs_root
async def test_other_uid_without_access_to_the_socket(path: Path) -> None:
    async with serving(path):  # mode 0600: the kernel refuses the connection itself
        result = await trio.to_thread.run_sync(request_as, NOBODY, path)
    assert result["error"].startswith(f"permission denied: this dsfs daemon belongs to uid "
                                      f"{os.geteuid()}")


# -- the socket file ---------------------------------------------------------------------------

def make_stale_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(os.fspath(path))  # closed without unlinking: what a killed daemon leaves


async def test_stale_socket_is_replaced(path: Path) -> None:
    make_stale_socket(path)
    async with serving(path):
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        await assert_still_serving(path)
    assert not os.path.lexists(path)


async def test_live_daemon_is_not_replaced(path: Path) -> None:
    async with serving(path):
        ino = os.lstat(path).st_ino
        with pytest.raises(ControlError, match="already serving"):
            await serve_control(path, echo, allowed_uids=ME)
        assert os.lstat(path).st_ino == ino
        await assert_still_serving(path)


async def test_non_socket_file_is_not_replaced(path: Path) -> None:
    path.write_text("precious")
    with pytest.raises(ControlError, match="is not a socket"):
        await serve_control(path, echo, allowed_uids=ME)
    assert path.read_text() == "precious"


async def test_exit_leaves_a_successors_socket_alone(path: Path) -> None:
    serve = functools.partial(serve_control, path, echo, allowed_uids=ME)
    async with trio.open_nursery() as new_nursery:
        async with trio.open_nursery() as old_nursery:
            await old_nursery.start(serve)
            os.unlink(path)  # e.g. removed by hand, then a new daemon started on the path
            await new_nursery.start(serve)
            old_nursery.cancel_scope.cancel()
        assert stat.S_ISSOCK(os.lstat(path).st_mode)  # the old daemon left it alone
        await assert_still_serving(path)
        new_nursery.cancel_scope.cancel()
    assert not os.path.lexists(path)


# -- the client --------------------------------------------------------------------------------

async def test_request_without_daemon(path: Path) -> None:
    err = await call_error(path, {"op": "status"})
    assert str(err) == NO_DAEMON == "no dsfs daemon is serving this store"
    assert err.exit_code == 11
    make_stale_socket(path)
    err = await call_error(path, {"op": "status"})
    assert str(err) == NO_DAEMON


async def test_request_times_out(path: Path) -> None:
    async def stuck(message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        if message["op"] == "ping":
            return await echo(message, peer)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with serving(path, stuck):
        started = time.monotonic()
        err = await call_error(path, {"op": "commit"}, timeout=0.3)
        assert str(err) == "the dsfs daemon did not answer within 0.3 s"
        assert time.monotonic() - started < 3
        await assert_still_serving(path)


async def fake_daemon(path: Path, reply: bytes, *,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Accept one connection, read the request, answer with raw bytes and close."""
    with trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        await sock.bind(os.fspath(path))
        sock.listen(1)
        task_status.started()
        conn, _ = await sock.accept()
        with conn:
            await conn.recv(1 << 16)
            view = memoryview(reply)
            while view:
                view = view[await conn.send(view):]


MALFORMED = {
    "closed": (b"", "the dsfs daemon closed the connection without answering"),
    "truncated-prefix": (b"\x00\x00", "malformed reply from the dsfs daemon: truncated"),
    "truncated-body": (struct.pack("!I", 10) + b"{}", "malformed reply from the dsfs daemon: "
                                                       "truncated: 2 of 10 bytes"),
    "oversize": (struct.pack("!I", MAX_MESSAGE + 1), "malformed reply from the dsfs daemon: "
                                                     "message of"),
    "not-json": (frame(b"hello"), "malformed reply from the dsfs daemon: message is not JSON"),
    "array": (frame(b"[1]"), "malformed reply from the dsfs daemon: message is a JSON list"),
    "no-ok": (frame(b'{"result": 1}'), 'malformed reply from the dsfs daemon: no "ok" field'),
}


@pytest.mark.parametrize("name", MALFORMED)
async def test_malformed_replies(path: Path, name: str) -> None:
    reply, expected = MALFORMED[name]
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(fake_daemon, path, reply))
        err = await call_error(path, {"op": "status"})
    assert str(err).startswith(expected)
    assert "\n" not in str(err)
    assert err.exit_code == 11


async def test_error_reply_is_one_line_with_its_code(path: Path) -> None:
    body = json.dumps({"ok": False, "error": "two\nlines", "code": 5}).encode()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(fake_daemon, path, frame(body)))
        err = await call_error(path, {"op": "status"})
    assert str(err) == "two lines"
    assert err.exit_code == 5
