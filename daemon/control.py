"""The control channel between CLI commands and a running mount daemon.

Owns: the Unix socket a daemon listens on for `dsfs commit`, `status`, `reset` (and later
`umount`), its wire format, who may use it, and the blocking client the CLI calls.

Protocol: one request per connection. Each message - the request, then the reply - is a 4-byte
big-endian length followed by that many bytes of UTF-8 JSON holding an object. A request has an
"op" string; a reply has "ok" (true, plus whatever the handler returns, or false with a one-line
"error" and, for domain errors, the "code" the CLI should exit with).

Who may talk: the socket is mode 0600, and the daemon also checks each peer's credentials
(SO_PEERCRED) before reading anything: only the allowed uids (the daemon's own) and root get
served; anyone else gets a one-line refusal. Garbage on the socket gets a one-line error reply
where possible and a closed connection; it never stops the daemon from serving.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from daemon.control_client import (
    HEADER,
    MAX_MESSAGE,
    NO_DAEMON,
    BadMessage,
    ControlError,
    body_length,
    decode,
    encode,
    one_line,
    request,
)
from vfs.errors import DsfsError

log = logging.getLogger("dsfs.control")


READ_TIMEOUT = 10.0
"""Seconds a client has, from connecting, to send its whole request."""
REPLY_TIMEOUT = 10.0
"""Seconds the daemon waits for a client to take its reply before dropping it."""
PROBE_TIMEOUT = 2.0
"""Seconds to wait when checking whether a socket file has a live daemon behind it."""
LISTEN_BACKLOG = 64
_UCRED = struct.Struct("3i")
_INTERNAL_ERROR = "internal error in the daemon: see its log"

@dataclass(frozen=True)
class Peer:
    """The process on the other end of a control connection, as the kernel reports it."""

    pid: int
    uid: int
    gid: int


Handler = Callable[[dict[str, Any], Peer], Awaitable[dict[str, Any]]]


class _Hangup(Exception):
    """The client closed the connection before sending anything."""


# -- the daemon's side ---------------------------------------------------------------------

async def serve_control(
    path: Path,
    handler: Handler,
    *,
    allowed_uids: frozenset[int],
    read_timeout: float = READ_TIMEOUT,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve control requests on a Unix socket at `path` until cancelled.

    A stale socket file (nothing listening) is replaced; a live one, or a file that is not a
    socket, is refused with ControlError. The socket is mode 0600 before it accepts anyone;
    `task_status.started()` is called once it listens. Clients are served concurrently, each
    with `read_timeout` seconds to send its request. The socket file is removed on exit,
    unless another daemon has replaced it meanwhile.
    """
    await _clear_stale(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound: tuple[int, int] | None = None
    try:
        try:
            await sock.bind(os.fspath(path))
            st = os.stat(path)
            bound = (st.st_dev, st.st_ino)
            # Nobody can connect before listen(), so there is no window with a wider mode.
            os.chmod(path, 0o600)
            sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            raise ControlError(f"cannot listen on {path}: {one_line(str(exc))}") from exc
        serve = functools.partial(
            _serve_connection, handler=handler, allowed_uids=allowed_uids,
            read_timeout=read_timeout)
        async with trio.SocketListener(sock) as listener:
            log.info("control socket listening at %s", path)
            task_status.started()
            await trio.serve_listeners(serve, [listener])
    finally:
        sock.close()
        if bound is not None:
            _unlink_if_ours(path, bound)


async def _clear_stale(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{path} exists and is not a socket: move it away")
    with trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            with trio.fail_after(PROBE_TIMEOUT):
                await probe.connect(os.fspath(path))
        except ConnectionRefusedError:
            log.warning("removing stale control socket %s (its daemon died)", path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        except trio.TooSlowError:
            raise ControlError(f"a process listens on {path} but does not accept: is another "
                               "dsfs daemon stuck?") from None
        except OSError as exc:
            raise ControlError(f"cannot check {path}: {one_line(str(exc))}") from exc
    raise ControlError(f"another dsfs daemon is already serving at {path}")


def _unlink_if_ours(path: Path, bound: tuple[int, int]) -> None:
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == bound:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove control socket %s: %s", path, exc)


def _peer_of(sock: trio.socket.SocketType) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return Peer(pid=pid, uid=uid, gid=gid)


async def _serve_connection(
    stream: trio.SocketStream, *, handler: Handler, allowed_uids: frozenset[int],
    read_timeout: float,
) -> None:
    """One connection, start to end. Nothing a client does escapes this function."""
    async with stream:
        try:
            await _converse(stream, handler, allowed_uids, read_timeout)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("control client went away")
        except Exception:
            log.exception("control connection failed")


async def _converse(
    stream: trio.SocketStream, handler: Handler, allowed_uids: frozenset[int],
    read_timeout: float,
) -> None:
    peer = _peer_of(stream.socket)
    if peer.uid != 0 and peer.uid not in allowed_uids:
        log.warning("refused control connection from pid %d uid %d", peer.pid, peer.uid)
        await _send_reply(stream, {
            "ok": False,
            "error": f"permission denied: this dsfs daemon belongs to uid {os.geteuid()}; "
                     "run the command as that user or root",
        })
        return
    message: dict[str, Any] | None = None
    error: str | None = None
    with trio.move_on_after(read_timeout):
        try:
            message = await _receive_request(stream)
        except _Hangup:
            return
        except BadMessage as exc:
            error = str(exc)
    if message is None:
        error = error or f"no complete request within {read_timeout:g} s"
        log.info("bad control request from pid %d: %s", peer.pid, error)
        await _send_reply(stream, {"ok": False, "error": error})
        return
    reply = await _dispatch(handler, message, peer)
    await _send_reply(stream, reply)


async def _receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = await stream.receive_some(size - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


async def _receive_request(stream: trio.SocketStream) -> dict[str, Any]:
    header = await _receive_exactly(stream, HEADER.size)
    if not header:
        raise _Hangup
    if len(header) < HEADER.size:
        raise BadMessage("truncated request: the length prefix is incomplete")
    length = body_length(header)
    body = await _receive_exactly(stream, length)
    if len(body) < length:
        raise BadMessage(f"truncated request: {len(body)} of {length} bytes")
    message = decode(body)
    op = message.get("op")
    if not isinstance(op, str) or not op:
        raise BadMessage('request has no "op" string')
    return message


def _domain_error(exc: BaseException) -> DsfsError | None:
    """The DsfsError itself, or the only one inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, DsfsError) else None


async def _dispatch(handler: Handler, message: dict[str, Any], peer: Peer) -> dict[str, Any]:
    op = message["op"]
    try:
        result = await handler(message, peer)
    except Exception as exc:
        domain = _domain_error(exc)
        if domain is None:
            log.exception("control request %r from pid %d failed", op, peer.pid)
            return {"ok": False, "error": _INTERNAL_ERROR}
        log.info("control request %r from pid %d: %s", op, peer.pid, domain)
        return {"ok": False, "error": one_line(str(domain) or type(domain).__name__),
                "code": domain.exit_code}
    if not isinstance(result, dict):
        log.error("control handler for %r returned %s, not a dict", op, type(result).__name__)
        return {"ok": False, "error": _INTERNAL_ERROR}
    return result


async def _send_reply(stream: trio.SocketStream, reply: dict[str, Any]) -> None:
    try:
        frame = encode(reply)
    except (TypeError, ValueError):
        log.exception("control reply cannot be sent: %.200r", reply)
        frame = encode({"ok": False, "error": _INTERNAL_ERROR})
    with trio.move_on_after(REPLY_TIMEOUT) as scope:
        await stream.send_all(frame)
    if scope.cancelled_caught:
        log.info("control client did not take its reply within %g s", REPLY_TIMEOUT)


# -- the CLI's side ------------------------------------------------------------------------


__all__ = ["MAX_MESSAGE", "NO_DAEMON", "ControlError", "request", "serve_control"]
