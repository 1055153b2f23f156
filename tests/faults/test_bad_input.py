"""Bad input: hostile source trees, damaged or foreign stores, garbage on the control socket,
and misuse of the @head commands.

Everything here is real: real files under tmp_path, a real store, `dsfs` run as a subprocess the
way a user runs it, and real FUSE mounts through `tests.mountutil.mounted`. Each input must get
a clear one-line error (`dsfs: error: ...`, non-zero exit, no traceback, the store untouched) or
be handled on purpose as the README says, and the store must pass `dsfs verify --read-data`
afterwards.

Unreadable files and an unreadable packs directory need a user that permissions apply to: as
root (CAP_DAC_OVERRIDE reads mode-000 files), those tests run `dsfs` as uid/gid 65534 through
`setpriv`, on a store and source tree that user owns, under a world-searchable temporary
directory (pytest's own tmp root is private to root). Run as a non-root user, they run `dsfs`
as that user directly.

Results are checked in-process where that saves a process start (reading a recorded file or the
version list through `vfs`); the commands under test always run as subprocesses.

Set DSFS_LONG=1 to run the directory-with-many-entries test with 1,000,000 entries instead of
100,000.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from daemon.control import request as control_request
from daemon.mount import mounted_at
from tests.mountutil import dsfs_argv, force_unmount, mounted, wait_for
from tests.treeutil import snapshot, write
from vfs.errors import HeadBusy
from vfs.head.session import open_head
from vfs.head.status import status_report
from vfs.store import Store

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
NOBODY = 65534
AS_ROOT = os.geteuid() == 0
LONG = os.environ.get("DSFS_LONG") == "1"


# -- running dsfs --------------------------------------------------------------------------------

def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DSFS_STORE"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _as_user(argv: list[str], user: int | None) -> list[str]:
    if user is None or not AS_ROOT:
        return argv
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]


def dsfs(store: Path, *args: str | Path, check: bool = True, user: int | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`dsfs --store STORE ARGS...` as a subprocess (as `user` when given)."""
    result = subprocess.run(_as_user(dsfs_argv(store, *args), user), capture_output=True,
                            text=True, errors="surrogateescape", env=_env(), timeout=timeout)
    if check:
        assert result.returncode == 0, f"dsfs {' '.join(map(str, args))}: {result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
    return result


def dsfs_cat(store: Path, version: str, rel: bytes, user: int | None = None) -> bytes:
    argv = _as_user(dsfs_argv(store, "cat"), user)
    spec = os.fsencode(version) + b":" + rel
    result = subprocess.run([*argv, spec], capture_output=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str,
                          code: int | None = None, what: str = "") -> None:
    where = f"{what}: " if what else ""
    assert "Traceback" not in result.stderr, f"{where}traceback:\n{result.stderr}"
    assert result.returncode != 0, f"{where}exit 0; stdout={result.stdout!r}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"{where}{len(lines)} lines on stderr:\n{result.stderr}"
    assert lines[0].startswith("dsfs: error: "), f"{where}{lines[0]!r}"
    for word in words:
        assert word in lines[0], f"{where}{word!r} not in {lines[0]!r}"
    if code is not None:
        assert result.returncode == code, f"{where}exit {result.returncode}, not {code}: " \
                                          f"{lines[0]}"


def verify_read_data(store: Path, user: int | None = None) -> None:
    result = dsfs(store, "verify", "--read-data", check=False, user=user)
    assert result.returncode == 0, f"verify --read-data failed:\n{result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr


def import_json(store: Path, src: Path, *extra: str, user: int | None = None
                ) -> tuple[dict[str, Any], str]:
    result = dsfs(store, "import", src, "--json", *extra, user=user)
    return json.loads(result.stdout), result.stderr


def read_version_file(store: Path, version: str, rel: bytes) -> bytes:
    """A file's bytes as recorded, read in-process (checking results needs no subprocess)."""
    with Store.open(store) as s:
        entry = s.lookup(s.resolve(version), rel)
        return s.read(entry, 0, entry.size)


def new_store(root: Path, files: dict[str, bytes] | None = None, tag: str | None = None) -> Path:
    """A store at root/store (created in-process: `init` is not under test here); with
    `files`, `dsfs import` them as v1."""
    store = root / "store"
    Store.create(store).close()
    if files is not None:
        src = root / "v1src"
        for rel, data in files.items():
            write(src / rel, data)
        extra = ["--tag", tag] if tag else []
        assert dsfs(store, "import", src, "-m", "first", *extra).stdout == "v1\n"
    return store


def daemon_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


# -- comparing directories without following anything ------------------------------------------

def listing(root: Path, volatile: tuple[str, ...] = ()) -> dict[str, tuple[Any, ...]]:
    """Every path under root (root itself too) with type, mode, size and mtime; not following
    symlinks. Paths named in `volatile` are listed by kind only (LMDB's lock file, which every
    reader writes; @head's state, which opening @head rewrites)."""
    out: dict[str, tuple[Any, ...]] = {}
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return out
    todo = [(".", st)]
    while todo:
        rel, st = todo.pop()
        kind = stat.S_IFMT(st.st_mode)
        out[rel] = (kind,) if rel in volatile else (
            kind, stat.S_IMODE(st.st_mode), st.st_uid,
            None if kind == stat.S_IFDIR else st.st_size, st.st_mtime_ns)
        if kind == stat.S_IFDIR:
            try:
                names = os.listdir(root / rel)
            except PermissionError:
                continue
            for name in names:
                child = name if rel == "." else f"{rel}/{name}"
                todo.append((child, os.lstat(root / child)))
    return out


def tree_bytes(root: Path) -> dict[bytes, bytes | str]:
    """{relative path: file bytes, or 'dir', or 'link:'+target} without recursion limits."""
    out: dict[bytes, bytes | str] = {}
    base = os.fsencode(root)
    todo = [b""]
    while todo:
        rel = todo.pop()
        for name in os.listdir(os.path.join(base, rel) if rel else base):
            child = os.path.join(rel, name) if rel else name
            path = os.path.join(base, child)
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                out[child] = "dir"
                todo.append(child)
            elif stat.S_ISLNK(st.st_mode):
                out[child] = "link:" + os.fsdecode(os.readlink(path))
            else:
                with open(path, "rb") as f:
                    out[child] = f.read()
    return out


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory uid 65534 can reach (pytest's tmp root is mode 0700)."""
    d = Path(tempfile.mkdtemp(prefix="dsfs-bad-input-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        for dirpath, dirnames, _ in os.walk(d):
            for name in dirnames:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(dirpath, name), 0o700)
        shutil.rmtree(d, ignore_errors=True)


def chown_tree(root: Path, uid: int) -> None:
    if not AS_ROOT:
        return
    os.chown(root, uid, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)


# == hostile source trees ========================================================================

def test_symlink_loops_and_links_out_of_the_tree_are_stored_never_followed(
        tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "secret.txt", b"SECRET outside the imported tree\n")
    src = tmp_path / "src"
    write(src / "regular.txt", b"the only regular file\n")
    (src / "sub/deeper").mkdir(parents=True)
    links = {
        "loop_a": "loop_b", "loop_b": "loop_a",                 # a -> b -> a
        "self": "self",                                          # a -> a
        "sub/up": "..",                                          # dir link to its parent
        "sub/deeper/root": "../..",                              # dir link to the tree root
        "dot": ".",                                              # dir link to its own dir
        "abs_file": str(outside / "secret.txt"),                 # absolute, outside
        "abs_dir": str(outside),
        "abs_etc": "/etc/passwd",
        "sub/rel_out": "../../outside/secret.txt",               # ../.. out of the tree
        "sub/deeper/far_out": "../" * 40 + "etc/passwd",         # more .. than there are dirs
        "dangling": "no/such/target",
    }
    for rel, target in links.items():
        os.symlink(target, src / rel)

    store = new_store(tmp_path)
    out, err = import_json(store, src, "-m", "links")
    assert out["version"] == "v1" and out["skipped"] == [] and out["warnings"] == [], err
    assert out["stats"]["files"] == 1, "a link was followed: only regular.txt is a file"
    assert out["stats"]["symlinks"] == len(links)

    dest = tmp_path / "export"
    dsfs(store, "export", "v1", dest, "-q")
    assert snapshot(dest) == snapshot(src)
    for rel, target in links.items():
        assert os.readlink(dest / rel) == target
    assert sorted(os.listdir(outside)) == ["secret.txt"]  # export wrote nothing through a link

    with mounted(store, tmp_path / "mnt") as daemon:
        for top in ("@v1", "@head"):
            view = daemon.mountpoint / top
            for rel, target in links.items():
                st = os.lstat(view / rel)
                assert stat.S_ISLNK(st.st_mode), (top, rel)
                assert st.st_size == len(os.fsencode(target)), (top, rel)
                assert os.readlink(view / rel) == target, (top, rel)
            # The kernel resolves links with the text the daemon returns: a loop stays a loop.
            for rel in ("loop_a", "self"):
                with pytest.raises(OSError) as exc:
                    (view / rel).read_bytes()
                assert exc.value.errno == 40, (top, rel, exc.value)  # ELOOP
            # Relative links to parents stay inside the version.
            assert os.path.samefile(view / "sub/up", view)
            assert os.path.samefile(view / "sub/deeper/root", view)
            assert (view / "sub/up/regular.txt").read_bytes() == b"the only regular file\n"
            seen = {os.path.relpath(os.path.join(d, n), view)
                    for d, dirs, files in os.walk(view) for n in dirs + files}
            assert seen == {"regular.txt", "sub", "sub/deeper", *links}, top
        assert daemon.proc.poll() is None
    verify_read_data(store)


def test_unreadable_files_and_directories_are_reported_and_the_rest_imported(
        shared_tmp: Path) -> None:
    """Run as uid 65534 on a store it owns (as root, mode 000 does not stop reads)."""
    src = shared_tmp / "src"
    write(src / "ok.txt", b"readable\n")
    write(src / "locked.bin", b"you cannot read me\n" * 1000)
    write(src / "locked-small.txt", b"tiny secret\n")
    write(src / "closed/inner.txt", b"behind a closed directory\n")
    write(src / "big-ok.bin", random.Random(3).randbytes(3 * MiB))
    store = shared_tmp / "store"
    user = NOBODY if AS_ROOT else None
    chown_tree(shared_tmp, NOBODY)
    dsfs(store, "init", "-q", user=user)
    os.chmod(src / "locked.bin", 0)
    os.chmod(src / "locked-small.txt", 0)
    os.chmod(src / "closed", 0)

    result = dsfs(store, "import", src, "-m", "partly unreadable", "--json", user=user,
                  check=False)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    skipped = {s["path"]: s["reason"] for s in out["skipped"]}
    assert set(skipped) == {"locked.bin", "locked-small.txt", "closed"}, out
    assert all("Permission denied" in r for r in skipped.values()), skipped
    for path in skipped:
        assert f"dsfs: skipped {path}: " in result.stderr, result.stderr
    # Unreadable files are left out, never recorded as empty or wrong bytes; the directory that
    # could not be listed is recorded without entries (its own metadata was readable).
    dest = shared_tmp / "export"
    dest.mkdir()
    chown_tree(dest, NOBODY)
    dsfs(store, "export", "v1", dest, "--force", "-q", user=user)
    assert tree_bytes(dest) == {b"ok.txt": b"readable\n", b"closed": "dir",
                                b"big-ok.bin": (src / "big-ok.bin").read_bytes()}
    verify_read_data(store, user=user)


def _page(gen: int, page: int) -> bytes:
    return struct.pack("<QQ", gen, page) * 256  # 4 KiB naming its generation and position


def _gen_block(gen: int, first_page: int, pages: int) -> bytes:
    return b"".join(_page(gen, p) for p in range(first_page, first_page + pages))


def _is_a_real_state(data: bytes) -> bool:
    """True if `data` is a prefix, whole MiBs long, of one generation's stream: a state the
    file really had (the writer writes whole MiBs of one generation from offset 0)."""
    if not data or len(data) % MiB:
        return not data
    gen = struct.unpack_from("<Q", data)[0]
    return all(data[i:i + 4096] == _page(gen, i // 4096) for i in range(0, len(data), 4096))


class Rewriter:
    """A thread that keeps rewriting one file: each generation truncates it to 0 and writes
    8-24 MiB of its own pages; some also shrink it and grow it again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stop = threading.Event()
        self.generations = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            rnd = random.Random(11)
            gen = 0
            with open(self.path, "r+b", buffering=0) as f:
                while not self.stop.is_set():
                    gen += 1
                    f.truncate(0)
                    size = rnd.randrange(8, 25) * MiB
                    for off in range(0, size, MiB):
                        f.seek(off)
                        f.write(_gen_block(gen, off // 4096, 256))
                        time.sleep(0.002)
                    if gen % 3 == 0:                       # shrink, then grow again
                        f.truncate(size // 2 // MiB * MiB)
                        for off in range(size // 2 // MiB * MiB, size + 4 * MiB, MiB):
                            f.seek(off)
                            f.write(_gen_block(gen, off // 4096, 256))
                    self.generations = gen
        except BaseException as exc:  # reported by the test
            self.error = exc

    def __enter__(self) -> Rewriter:
        self.thread.start()
        wait_for(lambda: self.generations > 0 or self.error is not None, 30, "first generation")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        assert self.error is None, self.error


def test_file_rewritten_during_import_is_one_real_state_or_reported(tmp_path: Path) -> None:
    src = tmp_path / "src"
    steady = random.Random(5).randbytes(2 * MiB + 3)
    write(src / "steady.bin", steady)
    target = write(src / "changing.bin", b"")
    store = new_store(tmp_path)
    outcomes = []
    with Rewriter(target) as writer:
        for i in range(3):
            out, err = import_json(store, src, "-m", f"while rewriting {i}")
            data = read_version_file(store, out["version"], b"changing.bin")
            reported = [w for w in out["warnings"] if w.startswith("changing.bin:")]
            reported += [s["path"] for s in out["skipped"] if s["path"] == "changing.bin"]
            consistent = _is_a_real_state(data)
            outcomes.append((out["version"], len(data), consistent, reported))
            assert consistent or reported, (
                f"{out['version']} recorded {len(data)} bytes of changing.bin that were never "
                f"the file's content, without a warning: {out}\n{err}")
            for w in out["warnings"]:
                assert f"dsfs: warning: {w}" in err
            assert read_version_file(store, out["version"], b"steady.bin") == steady
        assert writer.generations > 1, "the writer did not rewrite during the imports"
    # Once the file is still, importing again records exactly its content.
    final = target.read_bytes()
    out, err = import_json(store, src, "-m", "after")
    assert out["warnings"] == [] and out["skipped"] == [], err
    assert dsfs_cat(store, out["version"], b"changing.bin") == final
    print("imports while rewriting (version, bytes, a real state, reported):",
          [(v, n, ok, bool(r)) for v, n, ok, r in outcomes])
    verify_read_data(store)


def test_files_deleted_during_import_are_skipped_or_recorded_intact(tmp_path: Path) -> None:
    src = tmp_path / "src"
    rnd = random.Random(9)
    originals: dict[str, bytes] = {}
    for d in range(30):
        for f in range(120):
            size = rnd.choice([10, 3000, 20 * KiB, 70 * KiB])
            originals[f"d{d:02d}/f{f:03d}"] = rnd.randbytes(size)
    for i in range(6):
        originals[f"big{i}.bin"] = rnd.randbytes(3 * MiB)
    for rel, data in originals.items():
        write(src / rel, data)
    store = new_store(tmp_path)

    victims = [f"d{d:02d}" for d in range(0, 30, 3)] + [
        rel for rel in originals if rel.startswith(("d01/", "d05/", "d22/")) or
        rel.startswith("big")]
    random.Random(2).shuffle(victims)
    proc = subprocess.Popen(dsfs_argv(store, "import", src, "--json", "-m", "shrinking"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    deleted = 0
    for rel in victims:  # deleting while the import walks and reads
        if proc.poll() is not None:
            break
        path = src / rel
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        deleted += 1
        time.sleep(0.004)
    stdout, stderr = proc.communicate(timeout=300)
    assert "Traceback" not in stderr, stderr
    assert proc.returncode == 0, stderr
    out = json.loads(stdout)
    print(f"deleted {deleted} of {len(victims)} paths during the import; "
          f"skipped {len(out['skipped'])}, warnings {len(out['warnings'])}")
    for s in out["skipped"]:
        assert any(w in s["reason"] for w in ("No such file", "cannot list", "cannot read")), s
    export = tmp_path / "export"
    dsfs(store, "export", out["version"], export, "-q")
    recorded = {os.fsdecode(k): v for k, v in tree_bytes(export).items()}
    for rel, data in recorded.items():
        if data != "dir":
            assert data == originals[rel], f"{rel} recorded with wrong bytes"
    kept = {rel for rel in originals if (src / rel).exists()}
    missing = sorted(kept - set(recorded))
    assert not missing, f"files never deleted are missing: {missing[:5]}"
    assert out["stats"]["files"] == sum(1 for v in recorded.values() if v != "dir")
    verify_read_data(store)


def test_sockets_and_device_nodes_are_kept_or_skipped_with_a_reason(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "keep.txt", b"kept\n")
    (src / "dev").mkdir()
    expected = {"dev/control.sock": "socket"}
    kept = [("control.sock", "sock")]
    if AS_ROOT:
        os.mknod(src / "dev/null-like", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        os.mknod(src / "dev/loop-like", stat.S_IFBLK | 0o600, os.makedev(7, 0))
        expected |= {"dev/null-like": "character device", "dev/loop-like": "block device"}
        kept += [("loop-like", "blk"), ("null-like", "chr")]
    os.mkfifo(src / "dev/pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "dev/control.sock"))
    try:
        store = new_store(tmp_path)
        result = dsfs(store, "import", src, "--json", "-m", "specials", "--skip-special")
        with_specials = json.loads(dsfs(store, "import", src, "--json").stdout)
    finally:
        sock.close()
    out = json.loads(result.stdout)
    reasons = {s["path"]: s["reason"] for s in out["skipped"]}
    assert {p: r.split(":")[0] for p, r in reasons.items()} == expected, reasons
    for path, reason in reasons.items():
        assert f"dsfs: skipped {path}: {reason}" in result.stderr
    ls = json.loads(dsfs(store, "ls", "v1:dev", "--json").stdout)
    assert [(e["name"], e["type"]) for e in ls] == [("pipe", "fifo")]
    assert with_specials["skipped"] == []
    ls = json.loads(dsfs(store, "ls", "v2:dev", "--json").stdout)
    assert sorted((e["name"], e["type"]) for e in ls) == sorted([*kept, ("pipe", "fifo")])
    assert [e.get("rdev") for e in ls if e["name"] == "null-like"] == ([[1, 3]] if AS_ROOT
                                                                       else [])
    verify_read_data(store)


ODD_NAMES = [
    b"line\nbreak", b"\nleading newline", b"trailing newline\n", b"tab\there", b"cr\rhere",
    b"latin1-\xe9\xff", b"\xff\xfe\xfd", b"bad-utf8-\xc3\x28", b"-dash-first", b" spaces ",
    b"...", b"back\\slash", b"quote\"'`$(x)", b"emoji-\xf0\x9f\x98\x80",
    b"n" * 255, b"\xc3\xa9" * 127 + b"x", b"\xff" * 255,
]


def test_odd_names_round_trip_through_import_export_and_the_mount(tmp_path: Path) -> None:
    src = tmp_path / "src"
    bsrc = os.fsencode(src)
    os.makedirs(bsrc)
    for i, name in enumerate(ODD_NAMES):
        with open(os.path.join(bsrc, name), "wb") as f:
            f.write(b"content %d of %r\n" % (i, name))
    long_dir = os.path.join(bsrc, b"d" * 255)
    os.makedirs(os.path.join(long_dir, b"dir\nwith\xffodd"))
    with open(os.path.join(long_dir, b"dir\nwith\xffodd", b"f" * 255), "wb") as f:
        f.write(b"nested under long and odd names\n")
    os.symlink(b"target\nwith\xfenewline", os.path.join(bsrc, b"link\n\xfe"))
    os.symlink(b"l" * 255, os.path.join(bsrc, b"L" * 255))

    store = new_store(tmp_path)
    out, err = import_json(store, src, "-m", "odd names")
    assert out["skipped"] == [] and out["warnings"] == [], err
    for name in (b"line\nbreak", b"\xff" * 255):  # names given on the command line
        i = ODD_NAMES.index(name)
        assert dsfs_cat(store, "v1", name) == b"content %d of %r\n" % (i, name)
    dest = tmp_path / "export"
    dsfs(store, "export", "v1", dest, "-q")
    assert snapshot(dest) == snapshot(src)
    with mounted(store, tmp_path / "mnt") as daemon:
        for top in ("@v1", "@head"):
            view = daemon.mountpoint / top
            assert sorted(os.listdir(os.fsencode(view))) == sorted(os.listdir(bsrc))
            assert snapshot(view) == snapshot(src), top
            assert os.readlink(os.path.join(os.fsencode(view), b"link\n\xfe")) == \
                b"target\nwith\xfenewline"
    verify_read_data(store)


DEPTH = 1000
CHAIN = "/".join(["d"] * DEPTH)
LEAF = f"{CHAIN}/leaf.txt"


def remove_deep(*paths: Path) -> None:
    """Remove trees too deep for shutil.rmtree (it recurses once per level; so does pytest's
    clean-up of old temporary directories, which would then fail a later session)."""
    for path in paths:
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


@pytest.fixture(scope="module")
def deep_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A tree 1,000 directories deep and a store holding it as v1 (tests work on copies)."""
    root = tmp_path_factory.mktemp("deep")
    try:
        yield _build_deep(root)
    finally:
        remove_deep(root)


def _build_deep(root: Path) -> tuple[Path, Path]:
    src = root / "src"
    at = src
    for _ in range(DEPTH):  # Path.mkdir(parents=True) recurses once per level
        at = at / "d"
        at.mkdir(parents=at == src / "d")
    (src / LEAF).write_bytes(b"at the bottom\n")
    write(src / "/".join(["d"] * (DEPTH // 2)) / "middle.txt", b"half way\n")
    store = new_store(root)
    out, err = import_json(store, src, "-m", "deep")
    assert out["stats"]["dirs"] == DEPTH + 1 and out["stats"]["files"] == 2, (out, err)
    return src, store


def test_a_thousand_levels_of_directories_import_mount_export(
        deep_store: tuple[Path, Path], tmp_path: Path) -> None:
    src, template = deep_store
    store = tmp_path / "store"
    shutil.copytree(template, store, symlinks=True)
    try:
        assert dsfs_cat(store, "v1", LEAF.encode()) == b"at the bottom\n"
        with mounted(store, tmp_path / "mnt") as daemon:
            for top in ("@v1", "@head"):
                view = daemon.mountpoint / top
                assert (view / LEAF).read_bytes() == b"at the bottom\n", top
                assert tree_bytes(view) == tree_bytes(src), top
        dest = tmp_path / "export"
        dsfs(store, "export", "v1", dest, "-q")
        assert tree_bytes(dest) == tree_bytes(src)
    finally:
        remove_deep(tmp_path / "export")
    verify_read_data(store)


def test_a_thousand_levels_of_directories_diff(deep_store: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    src, template = deep_store
    store = tmp_path / "store"
    shutil.copytree(template, store, symlinks=True)
    changed = tmp_path / "src2"
    try:
        subprocess.run(["cp", "-a", str(src), str(changed)], check=True)  # copytree recurses
        (changed / LEAF).write_bytes(b"changed at the bottom\n")
        assert dsfs(store, "import", changed, "-m", "v2").stdout == "v2\n"
    finally:
        remove_deep(changed)
    assert dsfs(store, "diff", "v1", "v2").stdout.splitlines() == [f"M {LEAF}"]
    verify_read_data(store)


def _commit_v2(store: Path) -> None:
    result = dsfs(store, "commit", "-m", "deeper", "--json", check=False)
    assert "Traceback" not in result.stderr and result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == "v2"


def test_a_file_written_at_the_bottom_of_a_thousand_levels_in_head_is_committed(
        deep_store: tuple[Path, Path], tmp_path: Path) -> None:
    _, template = deep_store
    store = tmp_path / "store"
    shutil.copytree(template, store, symlinks=True)
    rel = f"{CHAIN}/new.txt"
    with mounted(store, tmp_path / "mnt") as daemon:
        head = daemon.mountpoint / "@head"
        (head / rel).write_bytes(b"written at the bottom\n")
        assert (head / rel).read_bytes() == b"written at the bottom\n"
        _commit_v2(store)
        v2 = daemon.mountpoint / "@v2"
        wait_for(v2.exists, 10, "@v2")
        assert (v2 / rel).read_bytes() == b"written at the bottom\n"
        assert daemon.proc.poll() is None
    assert read_version_file(store, "v2", LEAF.encode()) == b"at the bottom\n"
    verify_read_data(store)


@pytest.mark.parametrize("commit_where", ["through the daemon", "in-process after unmounting"])
def test_a_thousand_levels_made_with_mkdir_p_in_head_are_committed(
        commit_where: str, tmp_path: Path) -> None:
    store = new_store(tmp_path, GOOD_FILES)
    rel = f"{CHAIN}/new.txt"
    with mounted(store, tmp_path / "mnt") as daemon:
        head = daemon.mountpoint / "@head"
        subprocess.run(["mkdir", "-p", str(head / CHAIN)], check=True)  # one level at a time
        (head / rel).write_bytes(b"made in head\n")
        if commit_where == "through the daemon":
            _commit_v2(store)
            assert (daemon.mountpoint / "@v2" / rel).read_bytes() == b"made in head\n"
        assert daemon.proc.poll() is None
    if commit_where != "through the daemon":
        _commit_v2(store)
    assert read_version_file(store, "v2", rel.encode()) == b"made in head\n"
    verify_read_data(store)


@pytest.mark.slow
@pytest.mark.timeout(7200 if LONG else 600)
def test_a_directory_with_many_entries(tmp_path: Path, record_property: Any) -> None:
    count = 1_000_000 if LONG else 100_000
    src = tmp_path / "src"
    big = src / "big"
    big.mkdir(parents=True)
    fd_dir = os.open(big, os.O_RDONLY)
    try:
        for i in range(count):
            fd = os.open(f"f{i:07d}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd_dir)
            os.write(fd, b"%d\n" % i)
            os.close(fd)
    finally:
        os.close(fd_dir)
    store = new_store(tmp_path)
    t0 = time.monotonic()
    out, err = import_json(store, src, "-m", "many")
    took_import = time.monotonic() - t0
    assert out["stats"]["files"] == count, err

    names = {f"f{i:07d}" for i in range(count)}
    with mounted(store, tmp_path / "mnt") as daemon:
        pid = daemon.proc.pid
        view = daemon.mountpoint / "@v1/big"
        t0 = time.monotonic()
        listed = os.listdir(view)
        took_list = time.monotonic() - t0
        assert len(listed) == count and set(listed) == names
        t0 = time.monotonic()
        with os.scandir(view) as it:
            sizes = {e.name: e.stat(follow_symlinks=False).st_size for e in it}
        took_stat = time.monotonic() - t0
        assert all(sizes[f"f{i:07d}"] == len(b"%d\n" % i) for i in range(0, count, 997))
        for i in random.Random(1).sample(range(count), 200):
            assert (view / f"f{i:07d}").read_bytes() == b"%d\n" % i
        mem = daemon_memory(pid)
        assert daemon.proc.poll() is None
    report = (f"{count:,} entries: import {took_import:.1f} s, listdir {took_list:.1f} s, "
              f"scandir+lstat {took_stat:.1f} s; daemon VmRSS {mem['VmRSS'] // 1024} MiB, "
              f"VmHWM {mem['VmHWM'] // 1024} MiB")
    print(report)
    record_property("many_entries", report)
    # README: the daemon keeps no state per inode the kernel holds; memory stays bounded by
    # its caches (the chunk cache here holds at most the files read: a few KiB).
    assert mem["VmHWM"] < 1024 * 1024, report
    verify_read_data(store)


def test_a_five_gib_sparse_file(tmp_path: Path) -> None:
    size = 5 * GiB
    payload = random.Random(4).randbytes(MiB)
    marks = {0: b"head", GiB - 3: b"across-1GiB", 4 * GiB - 5: b"across-4GiB-boundary",
             4 * GiB + GiB // 2: payload, size - 5: b"tail!"}
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse.img", "wb") as f:
        f.truncate(size)
        for off, data in marks.items():
            f.seek(off)
            f.write(data)
    store = new_store(tmp_path)
    out, err = import_json(store, src, "-m", "sparse")
    assert out["stats"]["logical_bytes"] == size, err
    assert out["stats"]["new_stored_bytes"] < 8 * MiB, out["stats"]

    def check(path: Path) -> None:
        assert os.stat(path).st_size == size
        with open(path, "rb") as f:
            for off, data in marks.items():
                start = max(0, off - 7)
                f.seek(start)
                want = (bytes(off - start) + data + bytes(7))[:size - start]
                assert f.read(len(want)) == want, (path, off)
            f.seek(2 * GiB + 12345)
            assert f.read(MiB) == bytes(MiB)
            f.seek(size - 2)
            assert f.read(100) == b"l!"

    with mounted(store, tmp_path / "mnt") as daemon:
        for top in ("@v1", "@head"):
            check(daemon.mountpoint / top / "sparse.img")
    dest = tmp_path / "export"
    dsfs(store, "export", "v1", dest, "-q")
    check(dest / "sparse.img")
    assert os.stat(dest / "sparse.img").st_blocks * 512 < 16 * MiB, "export filled the holes"
    verify_read_data(store)


# == damaged or foreign store directories ========================================================

GOOD_FILES = {"a.txt": b"alpha\n", "d/b.txt": b"bravo\n" * 100}


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with v1 (tag base) whose @head state exists; tests damage copies of it."""
    store = new_store(tmp_path_factory.mktemp("good"), GOOD_FILES, tag="base")
    assert "no changes" in dsfs(store, "status").stdout  # creates @head's state on first use
    return store


def _damage(kind: str, store: Path, good: Path) -> None:
    rnd = random.Random(kind)
    if kind == "empty directory":
        store.mkdir()
    elif kind == "regular file":
        store.write_bytes(rnd.randbytes(5000))
    elif kind == "directory of random files":
        write(store / "photo.jpg", rnd.randbytes(3000))
        write(store / "notes/readme.txt", b"not a store\n")
        write(store / "index", rnd.randbytes(100))
        write(store / "packs", b"")
    else:
        shutil.copytree(good, store, symlinks=True)
        config = store / "config"
        if kind == "garbage config":
            config.write_bytes(rnd.randbytes(700))
        elif kind == "config not an object":
            config.write_bytes(b"[1, 2, 3]\n")
        elif kind == "config with wrong types":
            data = json.loads(config.read_text())
            data["format"] = "one"
            config.write_text(json.dumps(data))
        elif kind == "empty config":
            config.write_bytes(b"")
        elif kind == "newer format":
            data = json.loads(config.read_text())
            data["format"] += 1
            config.write_text(json.dumps(data))
        elif kind == "index removed":
            shutil.rmtree(store / "index")
        elif kind == "garbage index":
            data_mdb = store / "index/data.mdb"
            data_mdb.write_bytes(rnd.randbytes(data_mdb.stat().st_size))
        else:
            raise AssertionError(kind)


DAMAGE = {  # kind: (exit code, words the one line must hold)
    "empty directory": (3, ["not a dsfs store"]),
    "regular file": (3, ["not a directory"]),
    "directory of random files": (3, ["not a dsfs store"]),
    "garbage config": (3, ["damaged"]),
    "newer format": (4, ["format 2", "upgrade"]),
    "index removed": (3, ["index", "verify --repair"]),
}
MORE_DAMAGE = {  # the same code paths as above: checked with `log` only
    "config not an object": (3, ["damaged"]),
    "config with wrong types": (3, ["damaged"]),
    "empty config": (3, ["damaged"]),
    "garbage index": (3, ["index", "verify --repair"]),
}


def _store_commands(tmp: Path) -> dict[str, list[str | Path]]:
    src = tmp / "importme"
    write(src / "x.txt", b"x\n")
    (tmp / "mnt").mkdir()
    return {
        "log": ["log"], "ls": ["ls", "v1"], "cat": ["cat", "v1:a.txt"],
        "import": ["import", src, "-m", "x"], "mount": ["mount", tmp / "mnt"],
        "verify": ["verify"], "commit": ["commit", "-m", "x"], "status": ["status"],
    }


@pytest.mark.parametrize("kind", list(DAMAGE) + list(MORE_DAMAGE))
def test_every_command_refuses_a_damaged_or_foreign_store_and_leaves_it_alone(
        kind: str, good_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    _damage(kind, store, good_store)
    code, words = {**DAMAGE, **MORE_DAMAGE}[kind]
    commands = _store_commands(tmp_path)
    if kind in MORE_DAMAGE:
        commands = {"log": commands["log"]}
    elif kind != "index removed":  # repairing a lost index is what --repair is for
        commands["verify --repair"] = ["verify", "--repair"]
    volatile = ("index/lock.mdb",)  # LMDB's lock file: written by every reader
    before = listing(store, volatile)
    try:
        with ThreadPoolExecutor(2) as pool:
            results = dict(zip(commands, pool.map(
                lambda args: dsfs(store, *args, check=False), commands.values()), strict=True))
    finally:
        force_unmount(tmp_path / "mnt")
    assert mounted_at(tmp_path / "mnt") is None
    if listing(store, volatile) != before:  # find the culprit, one command at a time
        for name, args in commands.items():
            shutil.rmtree(store) if store.is_dir() else store.unlink()
            _damage(kind, store, good_store)
            once = listing(store, volatile)
            dsfs(store, *args, check=False)
            force_unmount(tmp_path / "mnt")
            assert listing(store, volatile) == once, f"`dsfs {name}` changed the {kind} store"
        raise AssertionError(f"the {kind} store changed")
    failures = []
    for name, result in results.items():
        try:
            assert_one_line_error(result, *words, code=code, what=f"dsfs {name}")
            assert result.stdout == "", f"dsfs {name}: stdout {result.stdout!r}"
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, f"{kind}:\n" + "\n".join(failures)


@pytest.mark.parametrize("kind", ["index removed", "garbage index"])
def test_verify_repair_rebuilds_a_lost_or_damaged_index(kind: str, good_store: Path,
                                                        tmp_path: Path) -> None:
    store = tmp_path / "store"
    _damage(kind, store, good_store)
    dsfs(store, "verify", "--repair", "-q")
    with Store.open(store) as s:
        assert [v.name for v in s.versions()] == ["v1"] and s.tags() == {"base": 1}
    assert read_version_file(store, "base", b"d/b.txt") == GOOD_FILES["d/b.txt"]
    verify_read_data(store)


def test_unreadable_packs_directory(good_store: Path, shared_tmp: Path) -> None:
    """As uid 65534 on a store it owns, with packs/ mode 000: commands that need no pack
    (log, tags, status) work; every command that needs one gives one line and changes
    nothing."""
    store = shared_tmp / "store"
    shutil.copytree(good_store, store, symlinks=True)
    commands = _store_commands(shared_tmp)
    if AS_ROOT:
        # The mount daemon is a new interpreter: uid 65534 may not exec this one when it lives
        # under /root (here: pyenv), which says nothing about packs. Mounts of damaged stores
        # are covered by the test above.
        del commands["mount"]
    chown_tree(shared_tmp, NOBODY)
    user = NOBODY if AS_ROOT else None
    os.chmod(store / "packs", 0)
    # Opening @head's state (status, commit) rewrites head.db (every time, on a healthy store
    # too) and creates and removes SQLite's WAL files in these directories.
    volatile = ("index/lock.mdb", "head", "head/data", "head/head.db")
    try:
        before = listing(store, volatile)
        results: dict[str, subprocess.CompletedProcess[str]] = {}
        for name, args in commands.items():
            results[name] = dsfs(store, *args, check=False, user=user)
            force_unmount(shared_tmp / "mnt")
            assert listing(store, volatile) == before, f"`dsfs {name}` changed the store"
    finally:
        os.chmod(store / "packs", 0o700)
    failures = []
    for name, result in results.items():
        try:
            if name == "log":  # the version log is in the index: no pack needed
                assert result.returncode == 0, result.stderr
                assert result.stdout.startswith("v1 "), result.stdout
            elif name == "status":  # a clean @head needs no pack either
                assert result.returncode == 0, result.stderr
                assert "no changes" in result.stdout, result.stdout
            elif name == "commit":  # nothing to commit, and it says so
                assert_one_line_error(result, "nothing to commit", what=f"dsfs {name}")
            else:
                assert_one_line_error(result, "Permission denied", what=f"dsfs {name}")
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)
    verify_read_data(store, user=user)


# == garbage on the control socket ===============================================================

def _frame(body: bytes, length: int | None = None) -> bytes:
    return struct.pack("!I", len(body) if length is None else length) + body


def _exchange(path: str, raw: bytes, timeout: float = 20) -> bytes:
    """Send raw bytes on a new connection, close our side, return everything answered."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)  # blocking: with a timeout, a full backlog is EAGAIN at once
        s.settimeout(timeout)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def _reply(raw: bytes) -> dict[str, Any] | None:
    if not raw:
        return None
    (length,) = struct.unpack("!I", raw[:4])
    assert len(raw) == 4 + length, raw[:200]
    value = json.loads(raw[4:])
    assert isinstance(value, dict)
    return value


def _fds(pid: int) -> set[str]:
    """The sockets a process holds open, as 'fd->socket:[inode]' texts."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:"):
                out.add(f"{fd}->{target}")
    return out


def _json(obj: Any) -> bytes:
    return _frame(json.dumps(obj).encode())


GARBAGE: dict[str, bytes] = {
    "nothing": b"",
    "half a length prefix": b"\x00\x00",
    "oversized length": struct.pack("!I", 0xFFFFFFFF) + b"{}",
    "one byte over the limit": struct.pack("!I", (1 << 20) + 1) + b"{" * 100,
    "truncated body": _frame(b'{"op": "commit", "message": "trunc', length=200),
    "zero length": _frame(b""),
    "not UTF-8": _frame(b'{"op": "\xff\xfe"}'),
    "not JSON": _frame(b"commit please"),
    "JSON list": _frame(b'["commit", "x"]'),
    "JSON string": _frame(b'"commit"'),
    "JSON null": _frame(b"null"),
    "deeply nested JSON": _frame(b"[" * 200_000 + b"]" * 200_000),
    "no op": _json({"message": "m"}),
    "op is a number": _json({"op": 5}),
    "op is a list": _json({"op": ["commit"]}),
    "op is empty": _json({"op": ""}),
    "unknown op": _json({"op": "format-disk"}),
    "op with NUL": _json({"op": "commit\x00"}),
    "commit with number message and list tag": _json(
        {"op": "commit", "message": 123, "tag": ["x"]}),
    "commit with number message": _json({"op": "commit", "message": 123}),
    "commit with object message": _json({"op": "commit", "message": {"a": 1}}),
    "commit with number tag": _json({"op": "commit", "message": "m", "tag": 5}),
    "commit with invalid tag": _json({"op": "commit", "message": "m", "tag": "no spaces!"}),
    "commit with version-like tag": _json({"op": "commit", "message": "m", "tag": "v7"}),
    "commit with existing tag": _json({"op": "commit", "message": "m", "tag": "base"}),
    "commit with list allow_empty": _json(
        {"op": "commit", "message": ["m"], "allow_empty": [True]}),
    "two frames, second garbage": _json({"op": "status"}) + b"\xde\xad\xbe\xef" * 10,
}
# Replies that are not errors: a frame after the first request is not read.
ACCEPTED = {"two frames, second garbage"}


def test_garbage_on_the_control_socket_changes_nothing_and_serving_goes_on(
        tmp_path: Path) -> None:
    store = new_store(tmp_path, GOOD_FILES, tag="base")
    rnd = random.Random(99)
    garbage = dict(GARBAGE)
    for i in range(15):
        garbage[f"random bytes {i}"] = rnd.randbytes(rnd.randrange(1, 5000))
        garbage[f"random body {i}"] = _frame(rnd.randbytes(rnd.randrange(1, 3000)))

    def versions() -> list[str]:
        with Store.open(store) as s:
            return [v.name for v in s.versions()]

    problems: list[str] = []
    with mounted(store, tmp_path / "mnt") as daemon:
        mnt = daemon.mountpoint
        write(mnt / "@head/uncommitted.txt", b"an uncommitted change\n")
        status_before = json.loads(dsfs(store, "status", "--json").stdout)
        assert [c["path"] for c in status_before["changes"]] == ["uncommitted.txt"]
        path = json.loads((store / "head/control.json").read_text())["socket"]
        pid = daemon.proc.pid
        fds_before = _fds(pid)

        replies: dict[str, dict[str, Any] | None] = {}
        seen = versions()
        for name, raw in garbage.items():
            replies[name] = _reply(_exchange(path, raw))
            assert daemon.proc.poll() is None, f"daemon died after {name!r}"
            now = versions()
            if now != seen:
                problems.append(f"{name!r} committed {now[len(seen):]} (reply {replies[name]})")
                seen = now
                # Give @head a change again, so the next request meets the same situation.
                write(mnt / f"@head/again-{len(now)}.txt", b"another change\n")

        # Many connections at once: silent ones, dribbling ones and garbage, while a user
        # asks for status and reads files.
        socks = []
        try:
            for i in range(400):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                socks.append(s)
                s.connect(path)
                if i % 4 == 1:
                    s.sendall(b"\x00")
                elif i % 4 == 2:
                    s.sendall(rnd.randbytes(64))
            # 300 of them stay open until the daemon's read timeout: wait until it holds most
            # of them, so the requests below do not just queue behind a full listen backlog.
            wait_for(lambda: len(_fds(pid) - fds_before) >= 250, 60,
                     "the daemon to accept the connections")
            t0 = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                concurrent = list(pool.map(lambda _: _reply(_exchange(path, _json(
                    {"op": "status"}))), range(40)))
            status_during = json.loads(dsfs(store, "status", "--json", timeout=60).stdout)
            took = time.monotonic() - t0
            assert (mnt / "@v1/a.txt").read_bytes() == GOOD_FILES["a.txt"]
            assert (mnt / "@head/uncommitted.txt").read_bytes() == b"an uncommitted change\n"
        finally:
            for s in socks:
                s.close()
        assert all(r is not None and r["ok"] is True for r in concurrent), concurrent[:3]
        assert took < 30, f"status took {took:.1f} s while 400 connections were open"
        assert daemon.proc.poll() is None
        assert (mnt / "@v1/d/b.txt").read_bytes() == GOOD_FILES["d/b.txt"]
        with contextlib.suppress(AssertionError):
            wait_for(lambda: len(_fds(pid) - fds_before) <= 2, 15, "")
        left = _fds(pid) - fds_before
        if len(left) > 2:
            problems.append(f"the daemon holds {len(left)} more sockets after the garbage "
                            f"connections closed: {sorted(left)[:8]}")
        if not problems:  # else the status changed for the reason already reported
            assert status_during == status_before
            assert json.loads(dsfs(store, "status", "--json").stdout) == status_before
            assert sorted(n for n in os.listdir(mnt) if n.startswith("@v")) == ["@v1"]
        with Store.open(store) as s:
            tags = s.tags()
        if tags != {"base": 1}:
            problems.append(f"tags changed: {tags}")

        for name, reply in replies.items():
            if name in ACCEPTED:
                if reply is None or reply["ok"] is not True:
                    problems.append(f"{name!r}: expected a status reply, got {reply}")
            elif reply is None and name == "nothing":
                continue  # hung up before sending anything: nothing to answer
            elif (reply is None or reply.get("ok") is not False
                  or not isinstance(reply.get("error"), str) or "\n" in reply["error"]
                  or "internal error" in reply["error"]):
                problems.append(f"{name!r}: no clear one-line error reply: {reply}")
    assert not problems, "garbage on the control socket:\n" + "\n".join(problems)
    verify_read_data(store)


# == misuse of the @head commands ================================================================

def _head_state(store: Path) -> tuple[Any, ...]:
    """Versions, tags, @head's status and the packs: read in-process (the daemon's control
    socket answers status while it holds @head)."""
    with Store.open(store) as s:
        versions = [v.name for v in s.versions()]
        tags = s.tags()
        try:
            session = open_head(s)
        except HeadBusy:
            note = json.loads((store / "head/control.json").read_text())
            status = control_request(Path(note["socket"]), {"op": "status"})
            status.pop("ok")
        else:
            with session:
                status = status_report(session.fs)
    return versions, tags, status, listing(store / "packs")


MISUSE: dict[str, tuple[list[str], list[str]]] = {
    "commit without -m": (["commit"], ["-m"]),
    "commit with an invalid tag": (["commit", "-m", "x", "--tag", "no spaces"],
                                   ["invalid tag name"]),
    "commit with an existing tag": (["commit", "-m", "x", "--tag", "base"], ["already exists"]),
    "reset without --yes": (["reset"], ["--yes"]),
}


def _with_changes(mnt: Path) -> None:
    write(mnt / "@head/new.txt", b"not committed yet\n")
    (mnt / "@head/a.txt").unlink()


@pytest.fixture(scope="module")
def head_mounted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A store (v1 tagged base), mounted, with uncommitted changes in @head."""
    root = tmp_path_factory.mktemp("misuse-mounted")
    store = new_store(root, GOOD_FILES, tag="base")
    with mounted(store, root / "mnt") as daemon:
        _with_changes(daemon.mountpoint)
        yield store, daemon.mountpoint


@pytest.fixture(scope="module")
def head_unmounted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same, unmounted again: the commands then run in-process."""
    root = tmp_path_factory.mktemp("misuse-unmounted")
    store = new_store(root, GOOD_FILES, tag="base")
    with mounted(store, root / "mnt") as daemon:
        _with_changes(daemon.mountpoint)
    return store


@pytest.mark.parametrize("case", list(MISUSE))
@pytest.mark.parametrize("where", ["mounted", "unmounted"])
def test_head_command_misuse_gets_one_line_and_records_nothing(
        case: str, where: str, request: pytest.FixtureRequest) -> None:
    mnt: Path | None = None
    if where == "mounted":
        store, mnt = request.getfixturevalue("head_mounted")
    else:
        store = request.getfixturevalue("head_unmounted")
    args, words = MISUSE[case]
    before = _head_state(store)
    assert [c["path"] for c in before[2]["changes"]] == ["a.txt", "new.txt"]
    result = dsfs(store, *args, check=False)
    assert_one_line_error(result, *words, code=2)
    assert result.stdout == ""
    assert _head_state(store) == before, f"{case} changed the store"
    if mnt is not None:
        assert (mnt / "@head/new.txt").read_bytes() == b"not committed yet\n"
        assert sorted(n for n in os.listdir(mnt) if n.startswith("@v")) == ["@v1"]
