"""S3Backend against a misbehaving network and server (tests/remote/faultproxy.py in front of
moto), and against configurations that cannot work: each failure is retried or is one line."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.remote.conftest import FAST
from tests.remote.faultproxy import DROP_POINTS, FaultProxy, Rule
from tests.remote.s3util import MotoServer
from vfs.remote.backend import (
    RemoteConfigError,
    RemoteError,
    RemoteKeyExists,
    RemoteUnavailable,
)
from vfs.remote.s3backend import RetryPolicy, S3Backend

DATA = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture
def proxied(s3_bucket: str, fault_proxy: FaultProxy) -> Iterator[S3Backend]:
    """An S3Backend that reaches moto through the fault proxy."""
    backend = S3Backend.from_url(f"s3://{s3_bucket}/p", endpoint_url=fault_proxy.endpoint,
                                 retry=FAST)
    try:
        yield backend
    finally:
        backend.close()


def one_line(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message
    for secret in ("testing-secret", "X-Amz-Signature", "Signature=", "Credential="):
        assert secret not in message


def test_proxy_passes_everything_through(proxied: S3Backend, fault_proxy: FaultProxy) -> None:
    proxied.put("obj", DATA)
    assert proxied.get("obj") == DATA
    assert proxied.get("obj", 1000, 24) == DATA[1000:1024]
    assert [o.key for o in proxied.list("")] == ["obj"]
    found = proxied.stat("obj")
    assert found is not None and found.size == len(DATA)
    assert proxied.stat("none") is None
    proxied.delete("obj")
    assert fault_proxy.count("PUT", r"/p/obj$") == 1
    assert fault_proxy.count("GET", r"/p/obj$") == 2
    assert fault_proxy.count("HEAD", r"/p/obj$") == 1
    assert fault_proxy.count("DELETE", r"/p/obj$") == 1


def test_connections_are_kept_alive(proxied: S3Backend, fault_proxy: FaultProxy) -> None:
    """One thread's requests reuse one connection, also after an error answer; a dropped
    connection costs one new one."""
    proxied.put("obj", DATA)
    for n in range(10):
        assert proxied.get("obj", n, 10) == DATA[n:n + 10]
    assert proxied.stat("missing") is None
    fault_proxy.add(Rule("GET", r"/p/obj$", "slowdown", times=1))
    assert proxied.get("obj") == DATA
    assert fault_proxy.connections == 1
    fault_proxy.add(Rule("GET", r"/p/obj$", "drop", at="headers", times=1))
    assert proxied.get("obj") == DATA
    assert fault_proxy.connections == 2


def test_ranged_get_is_one_request(proxied: S3Backend, fault_proxy: FaultProxy) -> None:
    proxied.put("packs/ab/pack", DATA)
    fault_proxy.clear()
    assert proxied.get("packs/ab/pack", 4096, 100) == DATA[4096:4196]
    [seen] = fault_proxy.seen("GET", "packs/ab/pack")
    assert seen.range == "bytes=4096-4195" and seen.status == 206


def test_slowdown_twice_then_success(proxied: S3Backend, fault_proxy: FaultProxy) -> None:
    proxied.put("obj", DATA)
    get_rule = fault_proxy.add(Rule("GET", r"/p/obj$", "slowdown", times=2))
    assert proxied.get("obj") == DATA
    assert get_rule.hits == 2
    assert fault_proxy.count("GET", r"/p/obj$") == 3
    put_rule = fault_proxy.add(Rule("PUT", r"/p/new$", "slowdown", times=2))
    proxied.put("new", b"n", if_absent=True)
    assert put_rule.hits == 2
    assert fault_proxy.count("PUT", r"/p/new$") == 3
    assert proxied.get("new") == b"n"


def test_persistent_slowdown_gives_up(proxied: S3Backend, fault_proxy: FaultProxy) -> None:
    proxied.put("obj", DATA)
    fault_proxy.add(Rule(None, r"/p/|prefix=p/", "slowdown", times=None))
    for call, label in ((lambda: proxied.get("obj"), "503 SlowDown"),
                        (lambda: proxied.put("obj", b"x"), "503 SlowDown"),
                        (lambda: proxied.stat("obj"), "503"),  # a HEAD answer has no body
                        (lambda: list(proxied.list("")), "503 SlowDown")):
        fault_proxy.requests.clear()
        with pytest.raises(RemoteUnavailable) as info:
            call()
        assert str(info.value) == (f"remote {proxied.url}: the server kept answering "
                                   f"{label} after {FAST.attempts} tries: retry later")
        # exactly the policy's tries: botocore does not retry on its own
        assert fault_proxy.count() == FAST.attempts


@pytest.mark.parametrize(("status", "code"), [
    (500, "InternalError"), (502, "BadGateway"), (503, "ServiceUnavailable"),
    (504, "GatewayTimeout"), (503, "SlowDown"), (400, "RequestTimeout"),
    (429, "TooManyRequests"), (400, "ThrottlingException"),
])
def test_transient_errors_are_retried(proxied: S3Backend, fault_proxy: FaultProxy,
                                      status: int, code: str) -> None:
    proxied.put("obj", DATA)
    rule = fault_proxy.add(Rule("GET", r"/p/obj$", "error", status=status, code=code, times=3))
    assert proxied.get("obj", 5, 5) == DATA[5:10]
    assert rule.hits == 3 and fault_proxy.count("GET", r"/p/obj$") == 4


def test_conditional_conflict_is_retried(proxied: S3Backend, fault_proxy: FaultProxy) -> None:
    """409 ConditionalRequestConflict: another conditional write was under way; try again."""
    rule = fault_proxy.add(Rule("PUT", r"/p/claim$", "error", status=409,
                                code="ConditionalRequestConflict", times=1))
    proxied.put("claim", b"mine", if_absent=True)
    assert rule.hits == 1 and fault_proxy.count("PUT", r"/p/claim$") == 2
    fault_proxy.add(Rule("PUT", r"/p/claim$", "error", status=409,
                         code="ConditionalRequestConflict", times=1))
    with pytest.raises(RemoteKeyExists):
        proxied.put("claim", b"theirs", if_absent=True)
    assert proxied.get("claim") == b"mine"


@pytest.mark.parametrize(("status", "code"), [
    (403, "AccessDenied"), (400, "InvalidArgument"), (400, "ExpiredToken"),
    (403, "InvalidAccessKeyId"), (501, "NotImplemented"),
])
def test_other_errors_are_not_retried(proxied: S3Backend, fault_proxy: FaultProxy,
                                      status: int, code: str) -> None:
    proxied.put("obj", DATA)
    fault_proxy.add(Rule("GET", r"/p/obj$", "error", status=status, code=code, times=None))
    with pytest.raises((RemoteConfigError, RemoteError)) as info:
        proxied.get("obj")
    one_line(str(info.value))
    assert str(info.value).startswith(f"remote {proxied.url}: ")
    assert fault_proxy.count("GET", r"/p/obj$") == 1
    if code == "ExpiredToken":
        assert "session token has expired" in str(info.value)


@pytest.mark.parametrize("endpoint", ["not a url", "http://[::1", "localhost:9000"])
def test_bad_endpoint_url(s3_env: dict[str, str], endpoint: str) -> None:
    with pytest.raises(RemoteConfigError) as info:
        S3Backend.from_url("s3://some-bucket", endpoint_url=endpoint)
    assert str(info.value) == ("remote s3://some-bucket: bad endpoint URL: use "
                               "http(s)://HOST[:PORT]")


@pytest.mark.parametrize("at", DROP_POINTS)
def test_dropped_connection_then_success(proxied: S3Backend, fault_proxy: FaultProxy,
                                         at: str) -> None:
    proxied.put("obj", DATA)
    rule = fault_proxy.add(Rule("GET", r"/p/obj$", "drop", at=at, times=1))
    assert proxied.get("obj") == DATA
    assert proxied.get("obj", 100, 1000) == DATA[100:1100]
    assert rule.hits == 1
    assert fault_proxy.count("GET", r"/p/obj$") == 3
    if at in ("request", "response"):  # a PUT's answer has no body to cut
        rule = fault_proxy.add(Rule("PUT", r"/p/obj2$", "drop", at=at, times=2))
        proxied.put("obj2", DATA)
        assert rule.hits == 2
        assert fault_proxy.count("PUT", r"/p/obj2$") == 3
        assert proxied.get("obj2") == DATA


def test_truncated_ranged_body_is_fetched_again(proxied: S3Backend,
                                                fault_proxy: FaultProxy) -> None:
    proxied.put("obj", DATA)
    fault_proxy.add(Rule("GET", r"/p/obj$", "drop", at="body", times=3))
    assert proxied.get("obj", 10, 5000) == DATA[10:5010]
    assert [s.range for s in fault_proxy.seen("GET", r"/p/obj$")] == ["bytes=10-5009"] * 4


def test_dropped_connections_give_up(proxied: S3Backend, fault_proxy: FaultProxy) -> None:
    proxied.put("obj", DATA)
    fault_proxy.add(Rule("GET", r"/p/obj$", "drop", at="headers", times=None))
    with pytest.raises(RemoteUnavailable) as info:
        proxied.get("obj")
    one_line(str(info.value))
    assert "kept failing after 4 tries" in str(info.value)
    assert fault_proxy.count("GET", r"/p/obj$") == FAST.attempts


def test_conditional_create_whose_answer_was_lost(proxied: S3Backend,
                                                  fault_proxy: FaultProxy) -> None:
    """The first try stored the object but its answer never came: the retry finds the key
    taken by the same bytes, and the put succeeded."""
    rule = fault_proxy.add(Rule("PUT", r"/p/versions/", "drop", at="response", times=1))
    proxied.put("versions/0000000001", b"my claim", if_absent=True)
    assert rule.hits == 1
    assert fault_proxy.count("PUT", r"/p/versions/") == 2
    assert proxied.get("versions/0000000001") == b"my claim"
    # someone else's claim stays theirs, answer lost or not
    fault_proxy.add(Rule("PUT", r"/p/versions/", "drop", at="response", times=1))
    with pytest.raises(RemoteKeyExists):
        proxied.put("versions/0000000001", b"another claim", if_absent=True)
    assert proxied.get("versions/0000000001") == b"my claim"


def test_delay_is_waited_for(proxied: S3Backend, fault_proxy: FaultProxy) -> None:
    proxied.put("obj", DATA)
    rule = fault_proxy.add(Rule("GET", r"/p/obj$", "delay", delay_ms=200, times=None))
    assert proxied.get("obj", 0, 10) == DATA[:10]
    assert rule.hits == 1 and fault_proxy.count("GET", r"/p/obj$") == 1


def test_read_timeout_is_retried(s3_bucket: str, fault_proxy: FaultProxy) -> None:
    """The first GET hangs for longer than the read timeout; a later try answers. (Without
    the timeout, the one GET would wait and succeed.)"""
    policy = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.02, read_timeout=1.0)
    backend = S3Backend.from_url(f"s3://{s3_bucket}/p", endpoint_url=fault_proxy.endpoint,
                                 retry=policy)
    try:
        backend.put("obj", DATA)
        rule = fault_proxy.add(Rule("GET", r"/p/obj$", "delay", delay_ms=4000, times=1))
        assert backend.get("obj") == DATA
        assert rule.hits == 1
        assert fault_proxy.count("GET", r"/p/obj$") >= 2
    finally:
        backend.close()


def test_flipped_byte_reaches_the_caller(proxied: S3Backend, fault_proxy: FaultProxy) -> None:
    """The backend has nothing to check a range against: the pack layer verifies chunks.
    (This also shows the proxy's flip works, for the tests of that layer.)"""
    proxied.put("obj", DATA)
    fault_proxy.add(Rule("GET", r"/p/obj$", "flip", offset=3, times=1))
    got = proxied.get("obj", 100, 10)
    assert got != DATA[100:110]
    assert got[3] == DATA[103] ^ 0xFF and got[:3] + got[4:] == DATA[100:103] + DATA[104:110]
    assert proxied.get("obj", 100, 10) == DATA[100:110]


def test_flipped_byte_in_a_whole_object_is_fetched_again(proxied: S3Backend,
                                                         fault_proxy: FaultProxy) -> None:
    """A whole object is checked against the checksum S3 keeps for it (CRC32, sent by
    botocore with the PUT)."""
    proxied.put("obj", DATA)
    rule = fault_proxy.add(Rule("GET", r"/p/obj$", "flip", times=2))
    assert proxied.get("obj") == DATA
    assert rule.hits == 2 and fault_proxy.count("GET", r"/p/obj$") == 3


# --- configurations that cannot work ------------------------------------------------------


def test_unknown_bucket(moto_server: MotoServer, s3_env: dict[str, str]) -> None:
    backend = S3Backend.from_url("s3://no-such-bucket-here/p", endpoint_url=moto_server.endpoint,
                                 retry=FAST)
    try:
        for call in (lambda: backend.get("k"), lambda: backend.put("k", b"v"),
                     lambda: backend.stat("k"), lambda: list(backend.list("")),
                     lambda: backend.delete("k"), lambda: backend.get("k", 4, 4)):
            with pytest.raises(RemoteConfigError) as info:
                call()
            assert str(info.value) == ("remote s3://no-such-bucket-here/p: bucket "
                                       "no-such-bucket-here does not exist: create it or fix "
                                       "the URL")
    finally:
        backend.close()


def test_unreachable_endpoint(s3_env: dict[str, str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # nothing listens on the port now
    backend = S3Backend.from_url("s3://some-bucket/p", endpoint_url=f"http://127.0.0.1:{port}",
                                 retry=FAST)
    try:
        with pytest.raises(RemoteUnavailable) as info:
            backend.get("k")
        assert str(info.value) == (f"remote s3://some-bucket/p: cannot reach "
                                   f"http://127.0.0.1:{port}: check --endpoint-url and the "
                                   "network")
    finally:
        backend.close()


def test_endpoint_from_environment(s3_bucket: str, moto_server: MotoServer,
                                   s3_env: dict[str, str]) -> None:
    """AWS_ENDPOINT_URL (set by s3_env) is enough: no endpoint_url argument."""
    backend = S3Backend.from_url(f"s3://{s3_bucket}/p", retry=FAST)
    try:
        assert backend.endpoint == moto_server.endpoint
        backend.put("k", b"v")
        assert backend.get("k") == b"v"
    finally:
        backend.close()


def test_no_credentials(s3_bucket: str, moto_server: MotoServer,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    backend = S3Backend.from_url(f"s3://{s3_bucket}/p", endpoint_url=moto_server.endpoint,
                                 retry=FAST)
    try:
        with pytest.raises(RemoteConfigError) as info:
            backend.get("k")
        assert str(info.value) == (f"remote s3://{s3_bucket}/p: no AWS credentials found: "
                                   "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use "
                                   "--profile")
    finally:
        backend.close()


def test_unknown_profile(s3_env: dict[str, str]) -> None:
    with pytest.raises(RemoteConfigError) as info:
        S3Backend.from_url("s3://some-bucket", profile="nobody")
    assert str(info.value) == ("remote s3://some-bucket: AWS profile 'nobody' is not in "
                               "~/.aws/config: fix --profile or add the profile")


@pytest.mark.parametrize("url", [
    "s3://", "s3:///prefix", "s3://ab", "s3://Upper-Case", "s3://bucket/a//b", "s3://b_k/x",
    "s3://bucket/../x", "s3://bucket?x=1", "s3://user@bucket/x", "http://bucket/x",
    "s3://bucket#frag",
])
def test_malformed_url(url: str) -> None:
    with pytest.raises(RemoteConfigError) as info:
        S3Backend.from_url(url)
    one_line(str(info.value))
    assert "s3://BUCKET[/PREFIX]" in str(info.value) or "not a valid S3 bucket" in str(
        info.value)


def test_retry_policy_backoff() -> None:
    policy = RetryPolicy()
    assert (policy.attempts, policy.base_delay, policy.max_delay) == (6, 0.2, 5.0)
    for failed, full in ((1, 0.2), (2, 0.4), (3, 0.8), (5, 3.2), (6, 5.0), (30, 5.0)):
        waits = [policy.delay(failed) for _ in range(50)]
        assert all(full / 2 <= w <= full for w in waits), (failed, waits)
        assert len(set(waits)) > 1  # jitter
    for bad in ((0, 0.1, 1.0), (3, -1.0, 1.0), (3, 2.0, 1.0)):
        with pytest.raises(ValueError):
            RetryPolicy(*bad)
