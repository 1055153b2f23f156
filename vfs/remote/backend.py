"""The contract of an object store that holds a remote, and the errors it raises.

Owns: the `Backend` protocol, the remote error classes, and `open_backend` (a URL to a backend).
Never imports: daemon, trio, pyfuse3.

Every backend is safe to call from many threads at once (pushes and lazy reads run transfers
in parallel). Keys are '/'-separated relative names (`packs/ab/<name>`); a backend maps them under
its own prefix. Errors are one line that says what is wrong and what to do; a backend retries
what is worth retrying (timeouts, dropped connections, 500/503/SlowDown) with backoff before it
raises `RemoteUnavailable`. Nothing secret (keys, tokens, signed URLs) ever appears in a message.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from vfs.errors import DsfsError, UserError


class RemoteError(DsfsError):
    """Talking to a remote failed; the message names the remote and what to do."""

    exit_code = 11


class RemoteConfigError(UserError):
    """The remote as configured cannot work: unknown bucket, wrong endpoint, access denied,
    bad or expired credentials, not a dsfs remote."""

    exit_code = 11


class RemoteUnavailable(RemoteError):
    """The remote did not answer usefully after every retry (network down, 5xx, throttling)."""


class RemoteKeyMissing(RemoteError):
    """A key the caller asked for is not on the remote."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class RemoteKeyExists(RemoteError):
    """A conditional create (`put(..., if_absent=True)`) found the key already there."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class RemoteObject:
    key: str
    size: int
    mtime_ns: int
    """When the object was written, as the remote reports it (gc's grace period uses it)."""


class Backend(Protocol):
    url: str
    """How the remote is shown to users (s3://bucket/prefix, file:///path): never a secret."""

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """The object's bytes, or `length` bytes from `start` (one ranged GET). A range past
        the end returns what exists. Raises RemoteKeyMissing."""
        ...

    def put(self, key: str, data: bytes | memoryview, *, if_absent: bool = False) -> None:
        """Store `data` under `key` whole (readers never see a partial object). With
        `if_absent` the write happens only if no object has that key (If-None-Match: *);
        otherwise RemoteKeyExists, and the existing object is untouched."""
        ...

    def list(self, prefix: str) -> Iterator[RemoteObject]:
        """Every object whose key starts with `prefix`, in key order."""
        ...

    def stat(self, key: str) -> RemoteObject | None:
        """The object's size and time, or None if it is not there."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""
        ...

    def close(self) -> None:
        ...


def open_backend(url: str, endpoint_url: str | None = None, profile: str | None = None) -> Backend:
    """The backend for a remote URL: s3://bucket[/prefix] or file:///absolute/path."""
    if url.startswith("file://"):
        if endpoint_url or profile:
            raise UserError("--endpoint-url and --profile are for s3:// remotes only")
        from vfs.remote.filebackend import FileBackend

        return FileBackend.from_url(url)
    if url.startswith("s3://"):
        from vfs.remote.s3backend import S3Backend

        return S3Backend.from_url(url, endpoint_url=endpoint_url, profile=profile)
    raise UserError(f"unsupported remote {url!r}: use s3://BUCKET[/PREFIX] or file:///PATH")
