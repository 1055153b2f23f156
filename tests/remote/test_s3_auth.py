"""S3Backend against a server that checks credentials: moto with its IAM checks on
(INITIAL_NO_AUTH_ACTION_COUNT: the first requests set up a user, its key and buckets; every
later request is authenticated, its SigV4 signature verified and its action authorized), and
credentials from a profile."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.remote.conftest import FAST
from tests.remote.s3util import TEST_CREDENTIALS, MotoServer
from vfs.remote.backend import RemoteConfigError
from vfs.remote.s3backend import S3Backend

ALLOWED = "dsfs-auth-allowed"
DENIED = "dsfs-auth-denied"
SETUP_REQUESTS = 5


@dataclass(frozen=True)
class AuthServer:
    server: MotoServer
    key_id: str
    secret: str


@pytest.fixture(scope="module")
def auth_server() -> Iterator[AuthServer]:
    server = MotoServer.start({"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)})
    try:
        import boto3

        args = {"endpoint_url": server.endpoint, "region_name": "us-east-1",
                "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **args)
        s3 = boto3.client("s3", **args)
        iam.create_user(UserName="dsfs")  # 1
        key = iam.create_access_key(UserName="dsfs")["AccessKey"]  # 2
        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{ALLOWED}", f"arn:aws:s3:::{ALLOWED}/*"]}]}
        iam.put_user_policy(UserName="dsfs", PolicyName="s3",  # 3
                            PolicyDocument=json.dumps(policy))
        s3.create_bucket(Bucket=ALLOWED)  # 4
        s3.create_bucket(Bucket=DENIED)  # 5
        iam.close()
        s3.close()
        yield AuthServer(server, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        server.stop()


def open_backend(auth: AuthServer, bucket: str, monkeypatch: pytest.MonkeyPatch,
                 key_id: str, secret: str) -> S3Backend:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    return S3Backend.from_url(f"s3://{bucket}/p", endpoint_url=auth.server.endpoint,
                              retry=FAST)


def check_message(message: str, *secrets: str) -> None:
    assert "\n" not in message
    for secret in secrets:
        assert secret not in message
    for part in ("Signature=", "X-Amz-", "Credential="):
        assert part not in message


def test_right_credentials(auth_server: AuthServer, s3_env: dict[str, str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    backend = open_backend(auth_server, ALLOWED, monkeypatch, auth_server.key_id,
                           auth_server.secret)
    try:
        backend.put("k", b"v", if_absent=True)
        assert backend.get("k") == b"v"
        assert [o.key for o in backend.list("")] == ["k"]
        backend.delete("k")
    finally:
        backend.close()


def test_wrong_secret_key(auth_server: AuthServer, s3_env: dict[str, str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "not-the-secret-" + auth_server.secret[:8]
    backend = open_backend(auth_server, ALLOWED, monkeypatch, auth_server.key_id, wrong)
    try:
        for call in (lambda: backend.get("k"), lambda: backend.put("k", b"v"),
                     lambda: list(backend.list(""))):
            with pytest.raises(RemoteConfigError) as info:
                call()
            assert str(info.value) == (
                f"remote s3://{ALLOWED}/p: the request signature was refused (wrong secret "
                "key): check AWS_SECRET_ACCESS_KEY or --profile")
            check_message(str(info.value), wrong, auth_server.secret)
    finally:
        backend.close()


def test_unknown_access_key_id(auth_server: AuthServer, s3_env: dict[str, str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    backend = open_backend(auth_server, ALLOWED, monkeypatch, "AKIANOTKNOWNTOMOTO00",
                           auth_server.secret)
    try:
        with pytest.raises(RemoteConfigError) as info:
            backend.get("k")
        assert str(info.value) == (
            f"remote s3://{ALLOWED}/p: the server does not know the AWS access key id: check "
            "AWS_ACCESS_KEY_ID or --profile")
        check_message(str(info.value), auth_server.secret, "AKIANOTKNOWNTOMOTO00")
    finally:
        backend.close()


def test_access_denied(auth_server: AuthServer, s3_env: dict[str, str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    backend = open_backend(auth_server, DENIED, monkeypatch, auth_server.key_id,
                           auth_server.secret)
    try:
        for call, what in ((lambda: backend.get("k"), "read k"),
                           (lambda: backend.put("k", b"v"), "write k"),
                           (lambda: list(backend.list("")), "list /")):
            with pytest.raises(RemoteConfigError) as info:
                call()
            assert str(info.value) == (
                f"remote s3://{DENIED}/p: access denied to {what}: give these credentials "
                f"access to bucket {DENIED} or use another --profile")
            check_message(str(info.value), auth_server.secret)
    finally:
        backend.close()


def test_credentials_from_a_profile(s3_bucket: str, moto_server: MotoServer, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With no key in the environment, `profile` picks the keys and region of a profile in
    the AWS config files (without it: no credentials)."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    config = tmp_path / "config"
    config.write_text("[profile dsfs-test]\nregion = us-east-1\n")
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[dsfs-test]\naws_access_key_id = profile-key\n"
                           f"aws_secret_access_key = {TEST_CREDENTIALS['AWS_SECRET_ACCESS_KEY']}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    url = f"s3://{s3_bucket}/p"
    plain = S3Backend.from_url(url, endpoint_url=moto_server.endpoint, retry=FAST)
    profiled = S3Backend.from_url(url, endpoint_url=moto_server.endpoint, profile="dsfs-test",
                                  retry=FAST)
    try:
        with pytest.raises(RemoteConfigError, match="no AWS credentials found"):
            plain.get("k")
        profiled.put("k", b"v")
        assert profiled.get("k") == b"v"
    finally:
        plain.close()
        profiled.close()
