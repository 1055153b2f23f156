"""A remote in an S3-compatible bucket (s3://bucket/prefix): AWS S3, MinIO, Ceph RGW, moto.

Owns: mapping remote keys to object names under the URL's prefix, the one boto3 client all
threads share, the retry policy (`RetryPolicy`) and the translation of S3's answers into the
remote errors of vfs.remote.backend. Never imports: daemon, trio, pyfuse3.

Any thread may call any method at once: botocore clients are thread-safe and the client keeps a
pool of `POOL_CONNECTIONS` connections. Credentials, region and endpoint come from the standard
AWS chain (environment incl. AWS_ENDPOINT_URL, ~/.aws/config and its profiles, instance roles);
dsfs never reads, stores or prints them. botocore's own retries are switched off (one attempt per
call) so that this module alone decides what is retried and how often:

- retried with exponential backoff and jitter: connection errors and timeouts, a response body
  that is cut short (the whole GET is sent again), a whole object whose bytes do not match the
  checksum S3 keeps for it, 500/502/503/504, SlowDown and throttling, 409
  ConditionalRequestConflict. After `RetryPolicy.attempts` tries: RemoteUnavailable.
- never retried: everything that says the configuration is wrong (unknown bucket, access
  denied, bad keys, expired token, no credentials) -> RemoteConfigError, and answers about the
  key itself (RemoteKeyMissing, RemoteKeyExists).

A conditional create (`put(..., if_absent=True)`) is PutObject with If-None-Match: *. When an
earlier try of the same put may have reached the server (the connection dropped, a timeout, a
5xx) and a later try finds the key taken, the object is compared with the bytes being written:
if they are the same bytes, the earlier try wrote them and the put succeeded.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
import botocore.exceptions as bex
from botocore.config import Config

from vfs.remote.backend import (
    RemoteConfigError,
    RemoteError,
    RemoteKeyExists,
    RemoteKeyMissing,
    RemoteObject,
    RemoteUnavailable,
)

T = TypeVar("T")

POOL_CONNECTIONS = 32
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_RETRY_STATUS = frozenset({500, 502, 503, 504})
_THROTTLE_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException",
    "RequestThrottled", "RequestLimitExceeded", "TooManyRequestsException",
    "RequestTimeout", "InternalError", "ServiceUnavailable",
    "ConditionalRequestConflict", "OperationAborted",
})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a call is tried before RemoteUnavailable."""

    attempts: int = 6
    base_delay: float = 0.2
    """Seconds before the second try; each further wait doubles, up to `max_delay`."""
    max_delay: float = 5.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    """Seconds without a byte from the server before the try counts as failed."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError(f"bad retry policy {self}")

    def delay(self, failed: int) -> float:
        """The wait after the `failed`-th try failed: exponential, with jitter (half to whole)."""
        full = min(self.max_delay, self.base_delay * 2.0 ** (failed - 1))
        return full * random.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class _Transient:
    """A try that failed in a way worth trying again; `why` ends the final message."""

    why: str
    ambiguous: bool
    """The request may have reached the server and taken effect."""


def _parse_url(url: str) -> tuple[str, str]:
    """s3://bucket[/prefix] -> (bucket, prefix without slashes at either end)."""
    bad = RemoteConfigError(f"bad remote URL {url!r}: an S3 remote is s3://BUCKET[/PREFIX]")
    parts = urlsplit(url)
    if parts.scheme != "s3" or parts.query or parts.fragment or "@" in parts.netloc:
        raise bad
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not bucket:
        raise bad
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise RemoteConfigError(f"bad remote URL {url!r}: {bucket!r} is not a valid S3 bucket "
                                "name (3-63 characters: a-z 0-9 . -)")
    if prefix and any(seg in ("", ".", "..") for seg in prefix.split("/")):
        raise bad
    return bucket, prefix


def _mtime_ns(when: datetime) -> int:
    return (when - _EPOCH) // _ONE_US * 1000


def _client_error(exc: bex.ClientError) -> tuple[str, int]:
    response: dict[str, Any] = exc.response
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return code, status


def _host(endpoint: str) -> str:
    """The endpoint without user info, path or query: safe to show."""
    parts = urlsplit(endpoint)
    host = parts.hostname or endpoint
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}" if parts.scheme else host


class S3Backend:
    """The Backend of vfs.remote.backend on one bucket and prefix."""

    def __init__(self, client: Any, bucket: str, prefix: str,
                 retry: RetryPolicy | None = None) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.retry = retry or RetryPolicy()
        self.endpoint = _host(str(client.meta.endpoint_url))
        self._bucket_seen = threading.Event()
        self.list_page = 1000
        """Keys per LIST request (S3's maximum)."""
        members = client.meta.service_model.operation_model("PutObject").input_shape.members
        if "IfNoneMatch" not in members:
            raise RemoteConfigError("the installed botocore cannot make conditional writes "
                                    "(If-None-Match): upgrade boto3 and botocore")

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None = None, profile: str | None = None,
                 retry: RetryPolicy | None = None) -> S3Backend:
        bucket, prefix = _parse_url(url)
        policy = retry or RetryPolicy()
        shown = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        config = Config(
            max_pool_connections=POOL_CONNECTIONS,
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=policy.connect_timeout,
            read_timeout=policy.read_timeout,
            # a checksum is of the whole object, which a ranged GET cannot match: get() asks
            # for the check (ChecksumMode) only when it reads a whole object
            response_checksum_validation="when_required",
        )
        try:
            session = boto3.session.Session(profile_name=profile)
            client = session.client("s3", endpoint_url=endpoint_url or None, config=config)
        except bex.ProfileNotFound:
            raise RemoteConfigError(f"remote {shown}: AWS profile {profile!r} is not in "
                                    "~/.aws/config: fix --profile or add the profile") from None
        except bex.BotoCoreError as exc:  # e.g. an invalid region name
            raise RemoteConfigError(f"remote {shown}: cannot set up the S3 client: "
                                    f"{type(exc).__name__}: check the AWS configuration") from None
        except ValueError:  # botocore's word on a malformed endpoint URL (not echoed: it
            # might carry a password)
            raise RemoteConfigError(f"remote {shown}: bad endpoint URL: use "
                                    "http(s)://HOST[:PORT]") from None
        return cls(client, bucket, prefix, policy)

    # --- keys ---------------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad remote key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _strip(self, name: str) -> str:
        return name[len(self.prefix) + 1:] if self.prefix else name

    # --- retries and errors -------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[_Transient | None], T]) -> T:
        """fn(the previous try's failure or None), tried per the policy."""
        last: _Transient | None = None
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn(last)
            except bex.ClientError as exc:
                last = self._transient_or_raise(exc, what)
            except bex.NoCredentialsError:
                raise RemoteConfigError(
                    f"remote {self.url}: no AWS credentials found: set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or use --profile") from None
            except bex.PartialCredentialsError:
                raise RemoteConfigError(
                    f"remote {self.url}: the AWS credentials are incomplete (a key id without "
                    "its secret key, or the reverse): fix them or use --profile") from None
            except (bex.CredentialRetrievalError, bex.TokenRetrievalError):
                raise RemoteConfigError(
                    f"remote {self.url}: the AWS credential provider failed: refresh the "
                    "credentials (e.g. aws sso login) or use another --profile") from None
            except bex.SSLError:
                raise RemoteConfigError(
                    f"remote {self.url}: TLS with {self.endpoint} failed: check --endpoint-url "
                    "and the server's certificate") from None
            except (bex.EndpointConnectionError, bex.ConnectTimeoutError,
                    bex.ProxyConnectionError):
                last = _Transient(f"cannot reach {self.endpoint}: check --endpoint-url and the "
                                  "network", ambiguous=False)
            except bex.ReadTimeoutError:
                last = _Transient(f"{self.endpoint} kept timing out after {attempt} tries: "
                                  "retry later", ambiguous=True)
            except bex.FlexibleChecksumError:
                last = _Transient(f"{self.endpoint} kept sending bytes that do not match the "
                                  f"object's checksum after {attempt} tries: check the network "
                                  "and any proxy in between", ambiguous=False)
            except (bex.ConnectionError, bex.HTTPClientError, bex.IncompleteReadError):
                last = _Transient(f"the connection to {self.endpoint} kept failing after "
                                  f"{attempt} tries: retry later", ambiguous=True)
            if attempt < self.retry.attempts:
                time.sleep(self.retry.delay(attempt))
        assert last is not None
        raise RemoteUnavailable(f"remote {self.url}: {last.why}")

    def _transient_or_raise(self, exc: bex.ClientError, what: str) -> _Transient:
        code, status = _client_error(exc)
        if status in _RETRY_STATUS or code in _THROTTLE_CODES or status == 429:
            label = f"{status} {code}" if code and code != str(status) else str(status)
            return _Transient(
                f"the server kept answering {label} after {self.retry.attempts} tries: "
                "retry later", ambiguous=status >= 500)
        raise self._permanent(code, status, what) from None

    def _permanent(self, code: str, status: int, what: str) -> RemoteError | RemoteConfigError:
        where = f"remote {self.url}"
        if code == "NoSuchBucket":
            return RemoteConfigError(
                f"{where}: bucket {self.bucket} does not exist: create it or fix the URL")
        if code == "InvalidAccessKeyId":
            return RemoteConfigError(
                f"{where}: the server does not know the AWS access key id: check "
                "AWS_ACCESS_KEY_ID or --profile")
        if code == "SignatureDoesNotMatch":
            return RemoteConfigError(
                f"{where}: the request signature was refused (wrong secret key): check "
                "AWS_SECRET_ACCESS_KEY or --profile")
        if code in ("ExpiredToken", "TokenRefreshRequired", "ExpiredTokenException"):
            return RemoteConfigError(
                f"{where}: the AWS session token has expired: refresh the credentials")
        if code in ("InvalidToken", "InvalidClientTokenId"):
            return RemoteConfigError(
                f"{where}: the AWS session token is not valid: check AWS_SESSION_TOKEN or "
                "--profile")
        if code in ("AccessDenied", "AllAccessDisabled", "AccountProblem", "403") \
                or status == 403:
            return RemoteConfigError(
                f"{where}: access denied to {what}: give these credentials access to bucket "
                f"{self.bucket} or use another --profile")
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "301") or status == 301:
            return RemoteConfigError(
                f"{where}: bucket {self.bucket} is in another region: set AWS_REGION (or the "
                "profile's region) to the bucket's")
        if code == "InvalidBucketName":
            return RemoteConfigError(f"{where}: {self.bucket!r} is not a valid bucket name")
        label = f"{status} {code}" if code and code != str(status) else str(status)
        return RemoteError(f"{where}: {what} failed: the server answered {label}")

    def _check_bucket(self) -> None:
        """A HEAD's 404 does not say whether the key or the bucket is missing: ask once."""
        if self._bucket_seen.is_set():
            return

        def head(_: _Transient | None) -> None:
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except bex.ClientError as exc:
                if _client_error(exc)[1] == 404:
                    raise self._permanent("NoSuchBucket", 404, "") from None
                raise

        self._call(f"bucket {self.bucket}", head)
        self._bucket_seen.set()

    # --- the Backend protocol -----------------------------------------------------------------

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        name = self._name(key)
        if start < 0 or (length is not None and length < 0):
            raise ValueError(f"bad range {start}+{length}")
        if length == 0:
            if self.stat(key) is None:
                raise RemoteKeyMissing(f"remote {self.url} has no {key}", key)
            return b""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": name}
        if length is not None:
            args["Range"] = f"bytes={start}-{start + length - 1}"
        elif start:
            args["Range"] = f"bytes={start}-"
        else:
            # the whole object: check it against the checksum S3 keeps (if it has one); a
            # mismatch is retried like a cut body
            args["ChecksumMode"] = "ENABLED"

        def fetch(_: _Transient | None) -> bytes:
            try:
                response = self._client.get_object(**args)
            except bex.ClientError as exc:
                code, status = _client_error(exc)
                if code == "NoSuchKey" or (status == 404 and code != "NoSuchBucket"):
                    raise RemoteKeyMissing(f"remote {self.url} has no {key}", key) from None
                if code == "InvalidRange" or status == 416:
                    return b""  # the range starts at or past the end: nothing of it exists
                raise
            body = response["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
            return data

        return self._call(f"read {key}", fetch)

    def put(self, key: str, data: bytes | memoryview, *, if_absent: bool = False) -> None:
        body = bytes(data)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._name(key), "Body": body}
        if if_absent:
            args["IfNoneMatch"] = "*"

        def store(previous: _Transient | None) -> None:
            try:
                self._client.put_object(**args)
            except bex.ClientError as exc:
                code, status = _client_error(exc)
                if if_absent and (code == "PreconditionFailed" or status == 412):
                    if previous is not None and previous.ambiguous and self._holds(key, body):
                        return  # an earlier try of this put wrote it
                    raise RemoteKeyExists(f"remote {self.url} already has {key}", key) from None
                raise

        self._call(f"write {key}", store)

    def _holds(self, key: str, body: bytes) -> bool:
        """Whether the object under `key` is exactly `body`."""
        found = self.stat(key)
        if found is None or found.size != len(body):
            return False
        try:
            return self.get(key) == body
        except RemoteKeyMissing:
            return False

    def list(self, prefix: str) -> Iterator[RemoteObject]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full,
                                    "MaxKeys": self.list_page}
            if token:
                args["ContinuationToken"] = token

            def page(_: _Transient | None, args: dict[str, Any] = args) -> dict[str, Any]:
                result: dict[str, Any] = self._client.list_objects_v2(**args)
                return result

            result = self._call(f"list {prefix or '/'}", page)
            for item in result.get("Contents", []):
                yield RemoteObject(self._strip(item["Key"]), int(item["Size"]),
                                   _mtime_ns(item["LastModified"]))
            token = result.get("NextContinuationToken")
            if not result.get("IsTruncated") or not token:
                return

    def stat(self, key: str) -> RemoteObject | None:
        name = self._name(key)

        def head(_: _Transient | None) -> RemoteObject | None:
            try:
                found = self._client.head_object(Bucket=self.bucket, Key=name)
            except bex.ClientError as exc:
                code, status = _client_error(exc)
                if status == 404 or code in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            return RemoteObject(key, int(found["ContentLength"]),
                                _mtime_ns(found["LastModified"]))

        result = self._call(f"stat {key}", head)
        if result is None:
            self._check_bucket()
        else:
            self._bucket_seen.set()
        return result

    def delete(self, key: str) -> None:
        name = self._name(key)

        def remove(_: _Transient | None) -> None:
            try:
                self._client.delete_object(Bucket=self.bucket, Key=name)
            except bex.ClientError as exc:
                code, status = _client_error(exc)
                if code == "NoSuchKey" or (status == 404 and code != "NoSuchBucket"):
                    return
                raise

        self._call(f"delete {key}", remove)

    def close(self) -> None:
        self._client.close()

