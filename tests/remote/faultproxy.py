"""A fault-injecting HTTP reverse proxy on 127.0.0.1, controlled from the test that runs it.

Owns: the proxy's listening socket, its connection threads and its rules. Never imports: vfs,
daemon.

    with FaultProxy(moto_endpoint) as proxy:
        proxy.add(Rule("GET", r"packs/", "slowdown", times=2))
        backend = S3Backend.from_url(url, endpoint_url=proxy.endpoint, ...)
        ...
        assert proxy.count("GET", r"packs/") == 3

Each request from a client is read whole (Content-Length or chunked), matched against the rules
(method and a regex searched in the unquoted URL path and query: /BUCKET/KEY for path-style
requests, /BUCKET?list-type=2&prefix=PREFIX for a listing; an `Expect: 100-continue` is answered
at once), then sent to the upstream server on a fresh connection; the answer is read whole and
sent back with a Content-Length on the client's connection, which stays open for its next
request (keep-alive) unless a rule closes it. Actions of a rule, each for its next `times`
matches (None: every match):

- "delay": wait `delay_ms` before forwarding.
- "slowdown": answer 503 SlowDown (S3's XML error) without forwarding.
- "error": answer `status` with S3's XML error `code` without forwarding (e.g. 409
  ConditionalRequestConflict, 500 InternalError, 403 AccessDenied).
- "drop": close the client's connection: `at="request"` before forwarding, `"response"` after
  the upstream server handled the request but before any answer byte, `"headers"` after the
  status line and headers, `"body"` after half of the body.
- "flip": invert one byte of a successful response's body (at `offset`, default the middle).

The first matching rule with matches left acts; rules are checked in the order added. Every
request is logged (`requests`), matched or not, for counting.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

ERROR_BODY = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
              "<Message>injected by the test proxy</Message>"
              "<RequestId>faultproxy</RequestId></Error>")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-connection", "content-length", "expect"}
ACTIONS = ("delay", "slowdown", "error", "drop", "flip")
DROP_POINTS = ("request", "response", "headers", "body")


@dataclass
class Rule:
    method: str | None
    """HTTP method to match (None: any)."""
    key: str
    """Regex searched in the unquoted URL path and query."""
    action: str
    times: int | None = 1
    delay_ms: int = 0
    at: str = "body"
    offset: int | None = None
    status: int = 503
    code: str = "SlowDown"
    hits: int = 0
    """How many requests this rule acted on."""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS or self.at not in DROP_POINTS:
            raise ValueError(f"bad rule {self}")
        self._pattern = re.compile(self.key)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and bool(
            self._pattern.search(path))


@dataclass
class Seen:
    """One request the proxy received (logged on arrival; `status` once answered)."""

    method: str
    path: str
    range: str | None
    action: str | None
    status: int | None = None


@dataclass
class _Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    close: bool = False
    path: str = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        self.path = unquote(parts.path) + ("?" + unquote(parts.query) if parts.query else "")

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def _read_chunked(rfile: BinaryIO) -> bytes:
    body = bytearray()
    while True:
        size_line = rfile.readline(65537)
        if not size_line:
            raise ConnectionError("connection closed in a chunked body")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(body)
        body += rfile.read(size)
        rfile.readline(65537)


def _read_request(rfile: BinaryIO, sock: socket.socket) -> _Request | None:
    line = rfile.readline(65537)
    while line in (b"\r\n", b"\n"):
        line = rfile.readline(65537)
    if not line:
        return None
    method, target, version = line.decode("latin-1").split()
    headers: list[tuple[str, str]] = []
    while True:
        raw = rfile.readline(65537)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    request = _Request(method, target, headers, b"")
    if (request.header("expect") or "").lower() == "100-continue":
        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    if (request.header("transfer-encoding") or "").lower() == "chunked":
        request.body = _read_chunked(rfile)
    else:
        length = int(request.header("content-length") or 0)
        request.body = rfile.read(length) if length else b""
        if len(request.body) != length:
            return None
    connection = (request.header("connection") or "").lower()
    request.close = connection == "close" or (version == "HTTP/1.0" and
                                              connection != "keep-alive")
    return request


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port
        self.upstream = (parts.hostname, parts.port)
        self.rules: list[Rule] = []
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closing = threading.Event()
        self.connections = 0
        """How many client connections the proxy accepted (keep-alive reuses one)."""
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            block_on_close = False

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    # --- control ------------------------------------------------------------------------------

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Forget every rule and every logged request."""
        with self._lock:
            self.rules.clear()
            self.requests.clear()

    def count(self, method: str | None = None, key: str = "") -> int:
        """How many requests with `method` (None: any) whose path matches regex `key`."""
        pattern = re.compile(key)
        with self._lock:
            return sum(1 for seen in self.requests
                       if (method is None or seen.method == method)
                       and pattern.search(seen.path))

    def seen(self, method: str | None = None, key: str = "") -> list[Seen]:
        pattern = re.compile(key)
        with self._lock:
            return [seen for seen in self.requests
                    if (method is None or seen.method == method) and pattern.search(seen.path)]

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- serving ------------------------------------------------------------------------------

    def _pick(self, request: _Request) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(request.method, request.path) and (
                        rule.times is None or rule.hits < rule.times):
                    rule.hits += 1
                    return rule
            return None

    def _log(self, request: _Request, rule: Rule | None) -> Seen:
        seen = Seen(request.method, request.path, request.header("range"),
                    rule.action if rule else None)
        with self._lock:
            self.requests.append(seen)
        return seen

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)
            self.connections += 1
        try:
            rfile = sock.makefile("rb")
            while True:
                try:
                    request = _read_request(rfile, sock)
                except (OSError, ValueError):
                    return
                if request is None:
                    return
                try:
                    keep = self._answer(sock, request)
                except OSError:  # the client went away (e.g. it timed out)
                    return
                if not keep or request.close:
                    return
        finally:
            with self._lock:
                self._sockets.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _answer(self, sock: socket.socket, request: _Request) -> bool:
        """Handle one request; False if the client's connection is to be closed."""
        rule = self._pick(request)
        action = rule.action if rule else None
        seen = self._log(request, rule)
        if rule and action == "delay" and self._closing.wait(rule.delay_ms / 1000):
            return False  # the proxy is closing
        if rule and action == "drop" and rule.at == "request":
            return False
        if rule and action in ("slowdown", "error"):
            seen.status = rule.status
            body = ERROR_BODY.format(code=rule.code).encode()
            head = (f"HTTP/1.1 {rule.status} Injected\r\nContent-Type: application/xml\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            sock.sendall(head + (body if request.method != "HEAD" else b""))
            return True
        try:
            status, reason, headers, body = self._forward(request)
        except OSError:
            return False
        seen.status = status
        if rule and action == "drop" and rule.at == "response":
            return False
        if rule and action == "flip" and 200 <= status < 300 and body:
            at = len(body) // 2 if rule.offset is None else rule.offset
            body = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1:]
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{name}: {value}" for name, value in headers
                  if name.lower() not in HOP_BY_HOP]
        length = headers_length(headers) if request.method == "HEAD" else len(body)
        if length is not None:
            lines.append(f"Content-Length: {length}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if request.method == "HEAD" or status in (204, 304):
            body = b""
        if rule and action == "drop" and rule.at == "headers":
            sock.sendall(head)
            return False
        if rule and action == "drop" and rule.at == "body":
            sock.sendall(head + body[: len(body) // 2])
            return False
        sock.sendall(head + body)
        return True

    def _forward(self, request: _Request) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.putrequest(request.method, request.target, skip_host=True,
                            skip_accept_encoding=True)
            for name, value in request.headers:
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(request.body)))
            conn.putheader("Connection", "close")
            conn.endheaders(request.body)
            response = conn.getresponse()
            body = response.read()
            return response.status, response.reason, response.getheaders(), body
        finally:
            conn.close()


def headers_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value)
    return None
