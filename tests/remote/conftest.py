"""Fixtures of the remote tests: a moto S3 server for the session, a fresh bucket and an
S3Backend on it per test (test credentials in the environment, restored after), and a
fault-injecting proxy in front of the server.

Other test packages can use them with `from tests.remote.conftest import moto_server, ...`
(pytest picks up fixtures imported into a test module or a conftest).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.remote.faultproxy import FaultProxy
from tests.remote.s3util import MotoServer, test_env
from vfs.remote.s3backend import RetryPolicy, S3Backend

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, connect_timeout=2.0,
                   read_timeout=5.0)
"""Retries for tests: quick, and still more than one try."""


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Test credentials (and AWS_ENDPOINT_URL) in os.environ for this test only."""
    env = test_env(moto_server.endpoint)
    for name in set(env) | set(os.environ):
        if name.startswith("AWS_"):
            if name in env:
                monkeypatch.setenv(name, env[name])
            else:
                monkeypatch.delenv(name, raising=False)
    return env


@pytest.fixture
def s3_bucket(moto_server: MotoServer, s3_env: dict[str, str]) -> Iterator[str]:
    bucket = moto_server.create_bucket()
    try:
        yield bucket
    finally:
        moto_server.delete_bucket(bucket)


@pytest.fixture
def s3_backend(moto_server: MotoServer, s3_bucket: str) -> Iterator[S3Backend]:
    backend = S3Backend.from_url(f"s3://{s3_bucket}/some/prefix",
                                 endpoint_url=moto_server.endpoint, retry=FAST)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def fault_proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(moto_server.endpoint)
    try:
        yield proxy
    finally:
        proxy.close()
