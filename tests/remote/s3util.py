"""An S3 server for tests (moto, in its own process) and the environment that reaches it.

Owns: starting and stopping tests/remote/motoserver.py, test credentials, bucket helpers.
Never imports: daemon.

Other test modules and subprocesses (`dsfs push`, a mount) use it like this:

    server = MotoServer.start()                 # or the `moto_server` fixture
    env = server.env()                          # os.environ + test credentials + endpoint
    subprocess.run(["dsfs", "push", "s3://" + server.create_bucket()], env=env)
    server.stop()

`env()` also sets AWS_ENDPOINT_URL, so boto3 in a subprocess finds the server without
--endpoint-url; it points the AWS config files at nothing and turns the instance metadata
lookup off, so no developer's ~/.aws and no network address outside 127.0.0.1 take part.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

HERE = Path(__file__).parent
START_DEADLINE = 30.0

TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/dsfs-test/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/dsfs-test/aws-credentials",
}
UNSET = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
         "AWS_REGION", "AWS_ENDPOINT_URL_S3", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE",
         "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
         "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN")


def test_env(endpoint: str | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) with the test credentials and, if given, the endpoint."""
    env = dict(os.environ if base is None else base)
    for name in UNSET:
        env.pop(name, None)
    env.update(TEST_CREDENTIALS)
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    else:
        env.pop("AWS_ENDPOINT_URL", None)
    return env


class MotoServer:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.log = log

    @classmethod
    def start(cls, extra_env: dict[str, str] | None = None) -> MotoServer:
        """Start the server on a free port and wait (up to START_DEADLINE) until it answers.
        `extra_env` configures moto (INITIAL_NO_AUTH_ACTION_COUNT turns its IAM checks on)."""
        fd, name = tempfile.mkstemp(prefix="dsfs-moto-", suffix=".log")
        os.close(fd)
        log = Path(name)
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, str(HERE / "motoserver.py")], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log_file,
                env={**test_env(None), **(extra_env or {})})
        try:
            port = cls._read_port(process, log)
            server = cls(process, port, log)
            server._wait_ready()
        except BaseException:
            cls._end(process)
            raise
        return server

    @staticmethod
    def _read_port(process: subprocess.Popen[bytes], log: Path) -> int:
        assert process.stdout is not None
        deadline = time.monotonic() + START_DEADLINE
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or process.poll() is not None:
                raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}")
            ready, _, _ = select.select([process.stdout], [], [], min(left, 0.5))
            if ready:
                byte = os.read(process.stdout.fileno(), 1)
                if not byte:
                    raise RuntimeError(f"moto server exited: {log.read_text()[-2000:]}")
                line += byte
        return int(line)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answered
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"moto server at {self.endpoint} does not answer: "
                                       f"{self.log.read_text()[-2000:]}") from None
                time.sleep(0.05)

    @staticmethod
    def _end(process: subprocess.Popen[bytes]) -> None:
        for stream in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()  # the server exits when its stdin closes
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def stop(self) -> None:
        self._end(self.process)
        with contextlib.suppress(OSError):
            self.log.unlink()

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for a subprocess that talks to this server."""
        return test_env(self.endpoint, base)

    def client(self) -> Any:
        """A plain boto3 client on the server with the test credentials (for setup only)."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=TEST_CREDENTIALS[
                "AWS_ACCESS_KEY_ID"], aws_secret_access_key=TEST_CREDENTIALS[
                "AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
            config=Config(retries={"total_max_attempts": 3, "mode": "standard"}))

    def create_bucket(self, name: str | None = None) -> str:
        bucket = name or f"dsfs-test-{uuid.uuid4().hex[:16]}"
        client = self.client()
        try:
            client.create_bucket(Bucket=bucket)
        finally:
            client.close()
        return bucket

    def delete_bucket(self, bucket: str) -> None:
        """Remove the bucket and everything in it."""
        client = self.client()
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
            client.delete_bucket(Bucket=bucket)
        finally:
            client.close()
