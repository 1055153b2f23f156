"""dsfs as a user other than root: a user made by the test mounts through the setuid
fusermount3, and is told in one line when /dev/fuse does not let them.

Needs root (to create the user and set /dev/fuse's mode, restored afterwards).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.mount import mounted_at
from tests.mountutil import force_unmount
from tests.treeutil import write

CHECKOUT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating a user needs root")


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path
    env: dict[str, str]

    def run(self, *argv: str | Path, check: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--",
             *map(str, argv)], cwd=self.home, env=self.env, capture_output=True,
            timeout=timeout)
        if check:
            logs = "".join(p.read_text(errors="replace")[-3000:]
                           for p in Path(f"/tmp/dsfs-{self.uid}").glob("*.log"))
            assert result.returncode == 0, (argv, result.stdout, result.stderr.decode(), logs)
        return result

    def dsfs(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return self.run(sys.executable, "-m", "daemon.cli", "--store", self.home / "store",
                        *args, check=check)


@contextmanager
def traversable(paths: list[Path]) -> Iterator[None]:
    """Let other users pass through every directory above `paths` (the interpreter may live
    under /root, mode 0700): adds o+x where missing, and puts every mode back afterwards."""
    changed: dict[Path, int] = {}
    try:
        for path in paths:
            for d in [path, *path.parents]:
                if d in changed or not d.is_dir():
                    continue
                mode = stat.S_IMODE(d.stat().st_mode)
                if not mode & stat.S_IXOTH:
                    changed[d] = mode
                    os.chmod(d, mode | stat.S_IXOTH)
        yield
    finally:
        for d, mode in changed.items():
            os.chmod(d, mode)


@pytest.fixture
def user() -> Iterator[User]:
    name = f"dsfst{os.getpid() % 100_000}"
    home = Path(tempfile.mkdtemp(prefix="dsfs-nonroot-", dir="/tmp"))
    python = [Path(sys.executable).resolve(), Path(sys.base_prefix), Path(sys.prefix)]
    subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell", "/bin/sh", name],
                   check=True, capture_output=True)
    with contextlib.ExitStack() as stack:
        stack.callback(_remove_user, name)  # also if making the paths traversable fails
        stack.enter_context(traversable(python))
        yield from _user(name, home)


def _user(name: str, home: Path) -> Iterator[User]:
    entry = None
    try:
        entry = pwd.getpwnam(name)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        os.chmod(home, 0o700)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(home),
               "LANG": "C.UTF-8"}
        u = User(name, entry.pw_uid, entry.pw_gid, home, env)
        probe = ["-c", "import vfs.head.session, daemon.cli, daemon.fuse"]
        if u.run(sys.executable, *probe, check=False).returncode != 0:
            # the checkout is not readable by others: run a copy of our sources the user can
            # read (the venv's third-party packages still come from the venv)
            code = home / "code"
            for top in ("vfs", "daemon"):
                shutil.copytree(CHECKOUT / top, code / top)
            subprocess.run(["chown", "-R", f"{u.uid}:{u.gid}", code], check=True)
            u.env["PYTHONPATH"] = str(code)
            u.run(sys.executable, *probe)
        yield u
    finally:
        for mp in home.glob("mnt*"):
            force_unmount(mp)
        if entry is not None:  # a daemon of the user left by a failed test: userdel needs it gone
            subprocess.run(["pkill", "-KILL", "-u", str(entry.pw_uid)], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
        if entry is not None:
            shutil.rmtree(f"/tmp/dsfs-{entry.pw_uid}", ignore_errors=True)


def _remove_user(name: str) -> None:
    """userdel refuses while a process of the user still runs (a daemon that is exiting):
    retry with a deadline, then force."""
    deadline = time.monotonic() + 20
    while subprocess.run(["userdel", name], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            subprocess.run(["userdel", "--force", name], capture_output=True)
            break
        time.sleep(0.1)
    assert subprocess.run(["id", name], capture_output=True).returncode != 0, f"{name} is left"


@pytest.fixture
def fuse_mode() -> Iterator[None]:
    """Whatever the test sets /dev/fuse to, its mode is restored afterwards."""
    original = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    try:
        yield
    finally:
        os.chmod("/dev/fuse", original)


@pytest.mark.slow
def test_a_user_mounts_reads_writes_commits_and_unmounts(user: User, fuse_mode: None) -> None:
    os.chmod("/dev/fuse", 0o666)
    payload = os.urandom(200_000)
    write(user.home / "data" / "sub" / "a.bin", payload)
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", user.home / "data"], check=True)
    user.dsfs("init")
    assert user.dsfs("import", "data").stdout.strip() == b"v1"
    mnt = user.home / "mnt"
    user.run("mkdir", mnt)
    try:
        user.dsfs("mount", mnt)
        assert mounted_at(mnt) is not None
        assert user.run("cat", mnt / "@v1" / "sub" / "a.bin").stdout == payload
        user.run(sys.executable, "-c",
                 f"open({str(mnt / '@head' / 'new.txt')!r}, 'w').write('from a user\\n')")
        assert user.dsfs("commit", "-m", "by a user").stdout.strip() == b"v2"
        assert user.run("cat", mnt / "@v2" / "new.txt").stdout == b"from a user\n"
        user.dsfs("umount", mnt)
        assert mounted_at(mnt) is None
    finally:
        if mounted_at(mnt) is not None:
            user.dsfs("umount", mnt, check=False)
        force_unmount(mnt)
    assert os.stat(user.home / "store").st_uid == user.uid


@pytest.mark.slow
def test_without_access_to_dev_fuse_a_user_is_told_in_one_line(user: User,
                                                               fuse_mode: None) -> None:
    os.chmod("/dev/fuse", 0o600)
    user.dsfs("init")
    mnt = user.home / "mnt"
    user.run("mkdir", mnt)
    for extra in ((), ("--foreground",)):
        result = user.dsfs("mount", mnt, *extra, check=False)
        lines = result.stderr.decode().splitlines()
        assert result.returncode == 2, lines
        assert len(lines) == 1 and lines[0].startswith("dsfs: error: /dev/fuse"), lines
        assert "chmod 0666 /dev/fuse" in lines[0] and "root" in lines[0]
        assert mounted_at(mnt) is None


@pytest.mark.slow
def test_a_fusermount3_that_is_not_setuid_is_named_in_one_line(user: User,
                                                               fuse_mode: None) -> None:
    os.chmod("/dev/fuse", 0o666)
    user.dsfs("init")
    mnt, bin_dir = user.home / "mnt", user.home / "bin"
    user.run("mkdir", mnt, bin_dir)
    plain = bin_dir / "fusermount3"
    user.run("cp", shutil.which("fusermount3") or "/usr/bin/fusermount3", plain)  # no setuid
    user.env["PATH"] = f"{bin_dir}:{user.env['PATH']}"
    result = user.dsfs("mount", mnt, check=False)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 2, lines
    assert lines == [f"dsfs: error: {plain} is not setuid root, so only root can mount: mount "
                     f"as root, or restore it with `chmod u+s {plain}` (as root)"]
    assert mounted_at(mnt) is None
