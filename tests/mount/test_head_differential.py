"""Differential test of @head: one seeded random sequence of operations applied to @head and to
a plain directory on local disk must leave both trees identical (contents and attributes), and
so must the version committed from @head, across commits and remounts."""

from __future__ import annotations

import errno
import os
import random
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.mountutil import dsfs_argv, mounted
from tests.treeutil import snapshot, write

FIXED_NS = 1_650_000_000_123_456_789


def dsfs(store: Path, *args: str | Path) -> str:
    result = subprocess.run(dsfs_argv(store, *args), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def make_base(root: Path, rnd: random.Random) -> None:
    write(root / "labels.csv", b"".join(b"%d,cat\n" % i for i in range(5000)))
    write(root / "big.bin", rnd.randbytes(3 * 1024 * 1024 + 7))
    for i in range(12):
        write(root / f"img/c{i % 3}/{i:02d}.jpg", rnd.randbytes(rnd.randint(100, 40_000)))
    os.symlink("labels.csv", root / "link")
    os.link(root / "labels.csv", root / "img/labels-hardlink.csv")
    (root / "empty").mkdir()


class Ops:
    """Random operations, each done on both trees; the errors must match too."""

    def __init__(self, rnd: random.Random, a: Path, b: Path) -> None:
        self.rnd = rnd
        self.a = a
        self.b = b
        self.log: list[str] = []

    def _paths(self, root: Path, dirs: bool) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            names = dirnames if dirs else filenames
            out.extend(os.path.normpath(os.path.join(rel, n)) for n in names)
            if dirs:
                out.append(os.path.normpath(rel))
        return sorted(out)

    def pick_file(self) -> str:
        files = [p for p in self._paths(self.b, False)
                 if not os.path.islink(self.b / p) and os.path.isfile(self.b / p)]
        return self.rnd.choice(files) if files else "missing"

    def pick_dir(self) -> str:
        return self.rnd.choice(self._paths(self.b, True))

    def new_name(self) -> str:
        d = self.pick_dir()
        return os.path.normpath(os.path.join(d, f"n{self.rnd.randrange(50)}"))

    def both(self, what: str, fn: Callable[[Path], object]) -> None:
        self.log.append(what)
        results = []
        for root in (self.a, self.b):
            try:
                fn(root)
                results.append(0)
            except OSError as exc:
                results.append(exc.errno)
        assert results[0] == results[1], f"{what}: @head errno {results[0]}, plain {results[1]}" \
                                         f"\nops so far:\n" + "\n".join(self.log[-30:])

    def step(self) -> None:
        rnd = self.rnd
        op = rnd.choice(["write", "write", "write", "append", "create", "truncate", "unlink",
                         "mkdir", "rmdir", "rename", "rename", "link", "symlink", "chmod",
                         "utime", "xattr", "fifo", "read"])
        data = rnd.randbytes(rnd.choice([1, 17, 4096, 5000, 70_000, 300_000]))
        if op == "write":
            path, off = self.pick_file(), rnd.choice([0, 1, 4095, 4096, 100_000, 3 << 20,
                                                     rnd.randrange(4 << 20)])
            self.both(f"pwrite {path} @{off} +{len(data)}",
                      lambda r: _pwrite(r / path, off, data))
        elif op == "append":
            path = self.pick_file()
            self.both(f"append {path} +{len(data)}", lambda r: _append(r / path, data))
        elif op == "create":
            path = self.new_name()
            flags = os.O_WRONLY | os.O_CREAT | rnd.choice([0, os.O_EXCL, os.O_TRUNC])
            self.both(f"create {path} flags {flags:o}",
                      lambda r: _create(r / path, flags, data))
        elif op == "truncate":
            path, size = self.pick_file(), rnd.choice([0, 1, 4097, 200_000, 8 << 20])
            self.both(f"truncate {path} {size}", lambda r: os.truncate(r / path, size))
        elif op == "unlink":
            path = self.pick_file()
            self.both(f"unlink {path}", lambda r: os.unlink(r / path))
        elif op == "mkdir":
            path = self.new_name()
            self.both(f"mkdir {path}", lambda r: os.mkdir(r / path, 0o750))
        elif op == "rmdir":
            path = self.pick_dir()
            if path != ".":
                self.both(f"rmdir {path}", lambda r: os.rmdir(r / path))
        elif op == "rename":
            src = self.pick_file() if rnd.random() < 0.6 else self.pick_dir()
            dst = self.new_name() if rnd.random() < 0.6 else self.pick_file()
            if src != ".":
                self.both(f"rename {src} {dst}", lambda r: os.rename(r / src, r / dst))
        elif op == "link":
            src, dst = self.pick_file(), self.new_name()
            self.both(f"link {src} {dst}", lambda r: os.link(r / src, r / dst))
        elif op == "symlink":
            dst = self.new_name()
            target = rnd.choice(["labels.csv", "../x", "/etc/passwd", "n" * 200])
            self.both(f"symlink {dst} -> {target}", lambda r: os.symlink(target, r / dst))
        elif op == "chmod":
            path, mode = self.pick_file(), rnd.choice([0o600, 0o644, 0o755, 0o4755, 0o640])
            self.both(f"chmod {path} {mode:o}", lambda r: os.chmod(r / path, mode))
        elif op == "utime":
            path = self.pick_file()
            ns = rnd.randrange(1 << 60)
            self.both(f"utime {path}", lambda r: os.utime(r / path, ns=(ns, ns)))
        elif op == "xattr":
            path, value = self.pick_file(), rnd.randbytes(rnd.randrange(1, 60))
            name = f"user.k{rnd.randrange(3)}"
            if rnd.random() < 0.7:
                self.both(f"setxattr {path} {name}", lambda r: os.setxattr(r / path, name,
                                                                            value))
            else:
                self.both(f"removexattr {path} {name}",
                          lambda r: os.removexattr(r / path, name))
        elif op == "fifo":
            path = self.new_name()
            self.both(f"mkfifo {path}", lambda r: os.mkfifo(r / path, 0o640))
        else:
            path = self.pick_file()
            got = []
            for root in (self.a, self.b):
                with open(root / path, "rb") as f:
                    got.append(f.read())
            assert got[0] == got[1], f"read {path} differs\n" + "\n".join(self.log[-30:])


def _pwrite(path: Path, off: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _create(path: Path, flags: int, data: bytes) -> None:
    fd = os.open(path, flags, 0o640)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def settle_times(root: Path) -> None:
    """Operations stamp times at different instants in the two trees: pin them all."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(FIXED_NS, FIXED_NS),
                     follow_symlinks=False)
    os.utime(root, ns=(FIXED_NS, FIXED_NS))


def assert_same(head: Path, plain: Path, what: str) -> None:
    got, want = snapshot(head), snapshot(plain)
    if got != want:
        diff = sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))[:10]
        details = "\n".join(f"{k!r}:\n  head  {got.get(k)}\n  plain {want.get(k)}" for k in diff)
        raise AssertionError(f"{what}: trees differ\n{details}")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_head_matches_a_plain_directory(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    src, plain, store, mnt = (tmp_path / n for n in ("src", "plain", "store", "mnt"))
    make_base(src, random.Random(seed))
    subprocess.run(["cp", "-a", str(src), str(plain)], check=True)
    dsfs(store, "init", "-q")
    dsfs(store, "import", "-q", src, "-m", "base")
    rounds = [("commit", 120), ("remount", 120), ("end", 120)]
    for i, (then, count) in enumerate(rounds):
        with mounted(store, mnt, "--xattrs", "on"):
            head = mnt / "@head"
            ops = Ops(rnd, head, plain)
            for _ in range(count):
                ops.step()
            settle_times(head)
            settle_times(plain)
            assert_same(head, plain, f"round {i} @head")
            if then in ("commit", "end"):
                name = dsfs(store, "commit", "-m", f"round {i}")
                assert_same(mnt / f"@{name}", plain, f"round {i} {name}")
                assert_same(head, plain, f"round {i} @head after commit")
    result = subprocess.run(dsfs_argv(store, "verify", "--read-data"), capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_errors_match_for_impossible_operations(tmp_path: Path) -> None:
    src, store, mnt = tmp_path / "src", tmp_path / "store", tmp_path / "mnt"
    make_base(src, random.Random(0))
    dsfs(store, "init", "-q")
    dsfs(store, "import", "-q", src)
    with mounted(store, mnt):
        head = mnt / "@head"
        cases: list[tuple[Callable[[], object], int]] = [
            (lambda: os.rmdir(head / "img"), errno.ENOTEMPTY),
            (lambda: os.mkdir(head / "img"), errno.EEXIST),
            (lambda: os.unlink(head / "img"), errno.EISDIR),
            (lambda: os.rename(head / "img", head / "img/c0/inside"), errno.EINVAL),
            (lambda: os.rename(head / "labels.csv", head / "img"), errno.EISDIR),
            (lambda: os.rename(head / "img", head / "labels.csv"), errno.ENOTDIR),
            (lambda: os.link(head / "img", head / "dirlink"), errno.EPERM),
            (lambda: os.close(os.open(head / ("x" * 256), os.O_CREAT | os.O_WRONLY)),
             errno.ENAMETOOLONG),
            (lambda: os.rename(mnt / "@v1/labels.csv", head / "moved"), errno.EXDEV),
            (lambda: os.close(os.open(mnt / "@v1/labels.csv", os.O_RDWR)), errno.EROFS),
        ]
        for fn, code in cases:
            with pytest.raises(OSError) as info:
                fn()
            assert info.value.errno == code, (fn, info.value)
        # nothing above changed @head
        status = subprocess.run(dsfs_argv(store, "status", "--json"), capture_output=True,
                                text=True)
        assert '"changes": []' in status.stdout, status.stdout
