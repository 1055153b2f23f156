"""The client side of the control channel: what `dsfs commit/status/reset` use to talk to the
mount daemon. Kept free of trio and pyfuse3 so commands start fast.

Owns: the wire format (a 4-byte big-endian length, then that many bytes of UTF-8 JSON holding
one object), its limits, and `request`. The daemon's side is `daemon.control`.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

from vfs.errors import DsfsError, UserError

MAX_MESSAGE = 1 << 20
"""Largest JSON body, in bytes, either side accepts."""
READ_TIMEOUT = 10.0
"""Seconds a client has, from connecting, to send its whole request."""
REPLY_TIMEOUT = 10.0
"""Seconds the daemon waits for a client to take its reply before dropping it."""
PROBE_TIMEOUT = 2.0
"""Seconds to wait when checking whether a socket file has a live daemon behind it."""
LISTEN_BACKLOG = 64

HEADER = struct.Struct("!I")
NO_DAEMON = "no dsfs daemon is serving this store"


class ControlError(DsfsError):
    """The daemon could not be reached, or it refused or failed a request.

    `exit_code` is the daemon's code for a domain error it reported, else the class default.
    """

    exit_code = 11

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class BadMessage(Exception):
    """A message that breaks the protocol; the text is the one-line reason."""


def one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(body) > MAX_MESSAGE:
        raise ValueError(f"control message of {len(body)} bytes exceeds {MAX_MESSAGE}")
    return HEADER.pack(len(body)) + body


def body_length(header: bytes) -> int:
    (length,) = HEADER.unpack(header)
    if length > MAX_MESSAGE:
        raise BadMessage(f"message of {length} bytes exceeds the limit of {MAX_MESSAGE}")
    return int(length)


def decode(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadMessage(f"message is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadMessage("message is nested too deeply") from None
    except ValueError as exc:
        raise BadMessage(f"message is not JSON ({one_line(str(exc))})") from None
    if not isinstance(value, dict):
        raise BadMessage(f"message is a JSON {type(value).__name__}, not an object")
    return value



def request(path: Path, message: dict[str, Any], *, timeout: float | None = 30.0) -> dict[str, Any]:
    """Send one request to the daemon serving at `path` and return its reply.

    Blocking; `timeout` bounds the whole exchange (None: wait forever). Raises ControlError
    with a one-line message when no daemon serves there, when it does not answer in time,
    when the reply is malformed, or when the reply is an error (then with its message, and
    its exit code when it gives one).
    """
    frame = encode(message)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                _connect(sock, path, deadline)
            except (FileNotFoundError, ConnectionRefusedError):
                raise ControlError(NO_DAEMON) from None
            except PermissionError:
                raise ControlError(_no_access(path)) from None
            try:
                _settimeout(sock, deadline)
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon may have answered (refused) before reading: read its reply
            reply = _receive_reply(sock, deadline)
    except TimeoutError:
        raise ControlError(f"the dsfs daemon did not answer within {timeout:g} s") from None
    except ControlError:
        raise
    except OSError as exc:
        raise ControlError(f"cannot talk to the dsfs daemon: {one_line(str(exc))}") from exc
    ok = reply.get("ok")
    if ok is True:
        return reply
    if ok is False:
        error = reply.get("error")
        code = reply.get("code")
        raise ControlError(
            one_line(error) if isinstance(error, str) else "the dsfs daemon reported an error",
            code if isinstance(code, int) and not isinstance(code, bool) else None)
    raise ControlError('malformed reply from the dsfs daemon: no "ok" field')


def _connect(sock: socket.socket, path: Path, deadline: float | None) -> None:
    """Connect, waiting while the daemon's queue of new connections is full (EAGAIN)."""
    pause = 0.01
    while True:
        _settimeout(sock, deadline)
        try:
            sock.connect(os.fspath(path))
            return
        except BlockingIOError:
            if deadline is not None and time.monotonic() + pause > deadline:
                raise TimeoutError from None
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


def _settimeout(sock: socket.socket, deadline: float | None) -> None:
    if deadline is None:
        sock.settimeout(None)
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    sock.settimeout(remaining)


def _no_access(path: Path) -> str:
    try:
        owner = f"uid {os.stat(path).st_uid}"
    except OSError:
        owner = "another user"
    return (f"permission denied: this dsfs daemon belongs to {owner}; "
            "run the command as that user or root")


def _recv_exactly(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        _settimeout(sock, deadline)
        try:
            chunk = sock.recv(min(size - len(buf), 1 << 16))
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _receive_reply(sock: socket.socket, deadline: float | None) -> dict[str, Any]:
    header = _recv_exactly(sock, HEADER.size, deadline)
    if not header:
        raise ControlError("the dsfs daemon closed the connection without answering")
    try:
        if len(header) < HEADER.size:
            raise BadMessage("truncated length prefix")
        length = body_length(header)
        body = _recv_exactly(sock, length, deadline)
        if len(body) < length:
            raise BadMessage(f"truncated: {len(body)} of {length} bytes")
        return decode(body)
    except BadMessage as exc:
        raise ControlError(f"malformed reply from the dsfs daemon: {exc}") from None


def control_note(store_root: Path) -> Path:
    return store_root / "head" / "control.json"


def ask_daemon(store_root: Path, message: dict[str, Any], timeout: float | None = None
               ) -> dict[str, Any]:
    """Send a control request to the daemon serving @head of this store."""
    try:
        note = json.loads(control_note(store_root).read_text())
        path = Path(note["socket"])
    except (OSError, ValueError, KeyError):
        raise UserError(f"@head of {store_root} is held by another process, but no mount "
                        "daemon answers for it: retry when it has finished") from None
    return request(path, message, timeout=timeout)
