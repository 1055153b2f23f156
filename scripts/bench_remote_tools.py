"""The programs `scripts/bench remote` runs: the S3 server, the latency proxy, dsfs and its peers.

Owns: starting and stopping moto's standalone S3 server and bench_remote_proxy.py (each in its
own process group, ended by `stop()` whatever happened), the S3 settings every tool gets from its
environment, and the commands of dsfs (push, clone, lazy mount), DVC (`dvc push` to its S3
remote), restic (`backup` to an S3 repository) and rclone (`copy`, `mount --vfs-cache-mode
full`). Never imports: vfs, daemon (dsfs is run as a program, like its peers).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench_head_data import bench_module

B = bench_module()

Json = dict[str, Any]
REPO_ROOT = Path(__file__).resolve().parent.parent
PROXY = Path(__file__).resolve().with_name("bench_remote_proxy.py")
# moto accepts any credentials; every tool gets these (and never a real account's)
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
START_TIMEOUT = 60.0
# a syntactically valid SigV4 header: moto routes by it (it checks no signature)
FAKE_AUTH = (
    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
    "SignedHeaders=host, Signature=0"
)
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    """End a process group we started: sig, then SIGKILL after 10 s."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def default_moto() -> Path | None:
    venv = REPO_ROOT / ".venv" / "bin" / "moto_server"
    if venv.exists():
        return venv
    found = shutil.which("moto_server")
    return Path(found) if found else None


def moto_version(exe: Path) -> str:
    query = "import importlib.metadata as m; print(m.version('moto'))"
    out = subprocess.run(
        [str(exe.parent / "python"), "-c", query], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or "?"


class S3Server:
    """moto's standalone server on 127.0.0.1, objects over 5 MB spilled to files in home/tmp."""

    def __init__(self, exe: Path | None, home: Path, logdir: Path) -> None:
        if exe is None or not exe.exists():
            raise B.BenchError(
                "moto_server not found (.venv/bin/moto_server): "
                f"{REPO_ROOT}/.venv/bin/pip install 'moto[server]', or pass --moto PATH"
            )
        self.exe = exe
        self.home = home
        self.logdir = logdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.command = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
        (self.home / "tmp").mkdir(parents=True)
        self.port = free_port()
        cmd = [str(self.exe), "-H", "127.0.0.1", "-p", str(self.port)]
        env = {"TMPDIR": str(self.home / "tmp")}
        self.command = B.describe(cmd, None, env)
        with open(self.logdir / "moto-server.log", "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.request("GET", "/moto-api/data.json")
                break
            except OSError as e:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise B.BenchError(f"moto server did not start ({e}); see {out.name}") from e
                time.sleep(0.1)
        B.log(f"S3 server (moto) at {self.url}, pid {self.proc.pid}")

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.home / "tmp", ignore_errors=True)

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        req.add_header("Authorization", FAKE_AUTH)
        with urllib.request.urlopen(req, timeout=120) as resp:
            return bytes(resp.read())

    def reset(self) -> None:
        """Forget every bucket (frees the server's memory and spill files)."""
        self.request("POST", "/moto-api/reset", b"")

    def create_bucket(self, name: str) -> None:
        self.request("PUT", f"/{name}", b"")

    def usage(self, bucket: str, prefix: str = "") -> tuple[int, int]:
        """(objects, bytes) under prefix, from ListObjectsV2."""
        count = total = 0
        token = ""
        while True:
            query = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
            if token:
                query["continuation-token"] = token
            root = ET.fromstring(self.request("GET", f"/{bucket}?{urllib.parse.urlencode(query)}"))
            for item in root.iter(f"{S3_NS}Contents"):
                count += 1
                total += int(item.findtext(f"{S3_NS}Size") or 0)
            token = root.findtext(f"{S3_NS}NextContinuationToken") or ""
            if root.findtext(f"{S3_NS}IsTruncated") != "true" or not token:
                return count, total

    def keys(self, bucket: str, prefix: str) -> list[str]:
        found: list[str] = []
        token = ""
        while True:
            query = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
            if token:
                query["continuation-token"] = token
            root = ET.fromstring(self.request("GET", f"/{bucket}?{urllib.parse.urlencode(query)}"))
            found += [k.text or "" for k in root.iter(f"{S3_NS}Key")]
            token = root.findtext(f"{S3_NS}NextContinuationToken") or ""
            if root.findtext(f"{S3_NS}IsTruncated") != "true" or not token:
                return found

    def memory(self) -> Json:
        if self.proc is None:
            return {}
        return {
            "rss_mib": B.proc_status_mib(self.proc.pid, "VmRSS"),
            "peak_rss_mib": B.proc_status_mib(self.proc.pid, "VmHWM"),
        }


class LatencyProxy:
    """bench_remote_proxy.py in front of the server, adding delay_ms per request."""

    def __init__(self, upstream: int, delay_ms: float, logdir: Path) -> None:
        self.upstream = upstream
        self.delay_ms = delay_ms
        self.logdir = logdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.stats_file = logdir / f"proxy-{int(delay_ms)}ms-{time.strftime('%H%M%S')}.json"
        self.command = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [
            sys.executable,
            str(PROXY),
            "--upstream",
            str(self.upstream),
            "--delay-ms",
            f"{self.delay_ms:g}",
            "--stats",
            str(self.stats_file),
        ]
        self.command = shlex.join(cmd)
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "listening":
            self.stop()
            raise B.BenchError(f"the latency proxy did not start: {self.command}")
        self.port = int(line[1])
        B.log(f"latency proxy +{self.delay_ms:g} ms per request at {self.url}")

    def stop(self) -> Json:
        """Stop it; its counts (requests, bytes each way) since start."""
        stop_process(self.proc)
        with contextlib.suppress(OSError, ValueError):
            value = json.loads(self.stats_file.read_text())
            return value if isinstance(value, dict) else {}
        return {}


# ---------------------------------------------------------------------------------------------
# the tools


class DsfsRemote(B.Dsfs):  # type: ignore[misc,name-defined]
    """dsfs with a store at home/store and the S3 settings in its environment."""

    REMOTE_COMMANDS = ("remote", "push", "clone", "cache")

    def __init__(self, runner: Any, home: Path, exe: Path | None, endpoint: str = "") -> None:
        super().__init__(runner, home, exe)
        self.endpoint = endpoint

    def env(self) -> dict[str, str]:
        return {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint} if self.endpoint else {}

    def missing_commands(self) -> list[str]:
        """The issue 11 commands this dsfs build lacks (all of them before they are merged)."""
        out = self.runner.capture([str(self.exe), "--help"]) or ""
        names = set()
        for line in out.splitlines():
            words = line.split()
            if words and line.startswith("    ") and not line.startswith("     "):
                names.add(words[0])
        return [c for c in self.REMOTE_COMMANDS if c not in names]

    def remote_add(self, url: str) -> None:
        cmd = self._cmd("remote", "add", "origin", url, "--endpoint-url", self.endpoint)
        self._run("remote add", cmd)

    def push(self, label: str) -> tuple[Any, Json]:
        t = self._run(f"push {label}", self._cmd("push", "origin", "--json"))
        return t, json_from_log(self.runner.last_log)

    def clone(self, url: str, step: str) -> Any:
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)
        assert self.exe is not None
        cmd = [str(self.exe), "clone", url, str(self.store), "--endpoint-url", self.endpoint]
        return self._run(step, cmd)

    def cache_json(self) -> Json:
        out = self.runner.capture(self._cmd("cache", "--json"), env=self.env())
        try:
            value = json.loads(out) if out else None
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


def json_from_log(logfile: Path | None) -> Json:
    """The JSON object a command printed last in its log (stdout and stderr share the log)."""
    if logfile is None:
        return {}
    text = logfile.read_text(errors="replace")
    decoder = json.JSONDecoder()
    for start in [i + 1 for i in range(len(text)) if text.startswith("\n{", i)][::-1]:
        with contextlib.suppress(ValueError):
            value, _ = decoder.raw_decode(text[start:])
            if isinstance(value, dict):
                return value
    return {}


class DvcRemote(B.Dvc):  # type: ignore[misc,name-defined]
    """DVC (with dvc-s3) tracking the tree; `dvc push` to an S3 remote with endpointurl."""

    def __init__(self, runner: Any, home: Path, venv: Path, endpoint: str, url: str) -> None:
        super().__init__(runner, home, venv)
        self.endpoint = endpoint
        self.url = url

    def env(self) -> dict[str, str]:
        return {"DVC_NO_ANALYTICS": "1", **S3_CREDENTIALS}

    def ensure_installed(self) -> None:
        python = self.venv / "bin" / "python"
        if self.exe.exists() and self.runner.capture([str(python), "-c", "import dvc_s3"]) == "":
            return
        B.log(f"dvc with S3 support not found: pip-installing 'dvc[s3]' into {self.venv}")
        try:
            if not python.exists():
                subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)
            subprocess.run(
                [str(self.venv / "bin" / "pip"), "install", "-q", "dvc[s3]"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        except (OSError, subprocess.CalledProcessError) as e:
            raise B.BenchError(f"could not install dvc[s3] into {self.venv}: {e}") from e

    def fresh(self, tree: Path) -> None:
        super().fresh(tree)
        project = self._project(tree)
        dvc = str(self.exe)
        self._run("remote add", [dvc, "remote", "add", "-d", "origin", self.url], cwd=project)
        cmd = [dvc, "remote", "modify", "origin", "endpointurl", self.endpoint]
        self._run("remote modify", cmd, cwd=project)

    def push(self, tree: Path, label: str) -> Any:
        return self._run(f"push {label}", [str(self.exe), "push"], cwd=self._project(tree))


class ResticRemote(B.Restic):  # type: ignore[misc,name-defined]
    """restic with its repository in S3 (`s3:http://HOST:PORT/BUCKET/PREFIX`)."""

    def __init__(self, runner: Any, home: Path, endpoint: str, bucket_path: str) -> None:
        super().__init__(runner, home)
        self.repo = f"s3:{endpoint}/{bucket_path}"  # str(): used as --repo by B.Restic

    def env(self) -> dict[str, str]:
        return {**super().env(), **S3_CREDENTIALS}


class Rclone:
    """rclone's S3 backend configured from the environment (remote name `bench`)."""

    name = "rclone"

    def __init__(self, runner: Any, home: Path, endpoint: str) -> None:
        self.runner = runner
        self.home = home
        self.endpoint = endpoint
        self.commands: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        return {
            "RCLONE_CONFIG": "/dev/null",
            "RCLONE_CONFIG_BENCH_TYPE": "s3",
            "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ENDPOINT": self.endpoint,
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
            # a CA bundle in the environment makes rclone's S3 client fail even for http://
            "AWS_CA_BUNDLE": "",
        }

    def ensure_installed(self) -> None:
        B.apt_install("rclone", "rclone")

    def version(self) -> str:
        out = (self.runner.capture(["rclone", "version"]) or "rclone ?").split()
        return out[1] if len(out) > 1 else "?"

    def copy(self, tree: Path, dest: str) -> Any:
        cmd = ["rclone", "copy", str(tree), f"bench:{dest}"]
        self.commands["copy v1"] = B.describe(cmd, None, self.env())
        return self.runner.run(cmd, "rclone-copy", env=self.env())

    def cleanup(self, tree: Path) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


class LazyDsfsMount(B.MountTarget):  # type: ignore[misc,name-defined]
    """`dsfs -s CLONE mount MNT --cache-size N` of a clone (N bounds its local disk cache;
    builds before 36ddd16 called it --disk-cache-size); v1 at MNT/@v1."""

    def __init__(self, key: str, runner: Any, tool: DsfsRemote, mnt: Path) -> None:
        super().__init__(key, runner, tool, mnt)
        self.rel = Path("@v1")
        self.cache_size = 0
        self._flag = ""

    def cache_flag(self) -> str:
        if not self._flag:
            assert isinstance(self.tool, DsfsRemote)
            out = self.runner.capture(self.tool._cmd("mount", "--help")) or ""
            self._flag = "--disk-cache-size" if "--disk-cache-size" in out else "--cache-size"
        return self._flag

    def mount(self) -> float | None:
        assert isinstance(self.tool, DsfsRemote) and self.mnt is not None
        self.mnt.mkdir(parents=True, exist_ok=True)
        size = str(self.cache_size)
        cmd = self.tool._cmd("mount", str(self.mnt), self.cache_flag(), size)
        t = self.run("mount", cmd, timeout=B.MOUNT_TIMEOUT, tool_env=True)
        self.ready_at = time.perf_counter()
        return float(t.seconds)

    def _tool_unmount(self) -> None:
        assert isinstance(self.tool, DsfsRemote) and self.mnt is not None
        cmd = self.tool._cmd("umount", str(self.mnt))
        self.run("umount", cmd, timeout=B.STOP_TIMEOUT * 2, tool_env=True)


class RcloneMount(B.MountTarget):  # type: ignore[misc,name-defined]
    """`rclone mount bench:BUCKET/v1 MNT --vfs-cache-mode full` in the background."""

    def __init__(self, key: str, runner: Any, tool: Rclone, mnt: Path, source: str) -> None:
        super().__init__(key, runner, None, mnt)
        self.rclone = tool
        self.source = source
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def commands(self) -> dict[str, str]:
        return {**self.rclone.commands, **self.own_commands}

    def env(self) -> dict[str, str]:
        return self.rclone.env()

    def version(self) -> str:
        return self.rclone.version()

    def mount(self) -> float | None:
        assert self.mnt is not None
        self.mnt.mkdir(parents=True, exist_ok=True)
        cache = self.rclone.home / "vfs-cache"
        shutil.rmtree(cache, ignore_errors=True)  # cold: an empty VFS cache each mount
        cmd = [
            "rclone",
            "mount",
            f"bench:{self.source}",
            str(self.mnt),
            "--read-only",
            "--vfs-cache-mode",
            "full",
            "--cache-dir",
            str(cache),
        ]
        line = B.describe(cmd, None, self.env())
        self.own_commands["mount (in the background; ready when mounted)"] = line + " &"
        logfile = self.runner.logdir / f"rclone-mount-{time.strftime('%H%M%S')}.log"
        with open(logfile, "wb") as out:
            out.write(f"$ {line}\n".encode())
            out.flush()
            start = time.perf_counter()
            self.proc = subprocess.Popen(
                cmd,
                env={**os.environ, **self.env()},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while not B.is_mounted(self.mnt):
            if self.proc.poll() is not None:
                tail = logfile.read_text(errors="replace").splitlines()[-8:]
                raise B.ToolFailed("rclone mount exited before mounting:\n  " + "\n  ".join(tail))
            if time.perf_counter() - start > B.MOUNT_TIMEOUT:
                raise B.ToolFailed(f"rclone mount: not mounted after {B.MOUNT_TIMEOUT:.0f} s")
            time.sleep(0.005)
        self.ready_at = time.perf_counter()
        return self.ready_at - start

    def _stop(self) -> None:
        self.own_commands["umount (SIGTERM to rclone mount)"] = "kill $!"
        stop_process(self.proc)

    def unmount(self) -> None:
        try:
            super().unmount()
        finally:
            stop_process(self.proc, signal.SIGKILL)


def run_env(cmd: Sequence[str], env: Mapping[str, str]) -> str:
    """A quick untimed command's stdout; raises ToolFailed when it fails."""
    done = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, check=False, timeout=600
    )
    if done.returncode != 0:
        raise B.ToolFailed(f"{shlex.join(cmd)} exited with {done.returncode}: {done.stderr[-500:]}")
    return done.stdout
