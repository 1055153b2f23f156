"""Crash torture: kill -9 dsfs at random instants of an operation, then check what is left.

The harness shared by `tests/faults/test_crash_torture.py` (a few trials per kind) and
`scripts/faults torture` (hundreds). A trial copies a prepared store, starts one operation,
SIGKILLs the daemon or the command at a seeded random instant, and checks:

* the store opens and `dsfs verify --read-data` exits 0 (run once, right after the crash, before
  anything recovers or repairs; @head is checked by it too);
* every version recorded before the crash is byte-identical to what was recorded: read back
  from the store (every byte hashed) into the tuples `snapshot()` makes of its source or of the
  mounted @head it was committed from, modes, owners, mtimes, symlinks and hard links included;
* the interrupted operation happened entirely or not at all: a version is there with exactly the
  right content (and its tag), or neither is; @head changes are still uncommitted with the same
  content, or committed with it; gc and `verify --repair` leave every live version intact
  (with a pack deleted first, `lost-pack`: every version keeps its number, message and tags,
  every path it still has is byte-identical, every path it lost is listed in its repair
  record, and repairing again changes nothing);
* every @head change a writer saw complete before the crash (a file closed, a rename, an unlink)
  is there after a remount, with its bytes; and the store still works: what did not happen is
  done again to completion and checked.

Kinds (KINDS): `import`, `gc` and `repair` kill the command; `commit-cli` kills `dsfs commit`
running in-process (nothing mounted); `commit-daemon` kills the mount daemon while it commits;
`commit-client` kills `dsfs commit` while the daemon serves its request; `head-write` kills the
daemon while a writer edits @head.

When to kill: a dry run of each operation measures how long it works (from the moment the
command holds a file of the store open, or from the daemon's "control request commit" log line,
to the moment the command prints its result); a trial then kills at `early` (0-50 ms after work
starts), `uniform` (anywhere in the measured time) or `late` (80-130 % of it: around the commit
point, and sometimes after the end). A writer in @head writes continuously; the daemon is killed
0-2 s after the writer's first operation.

A trial's seed fixes its plan (mode, fraction, damage, the writer's operations), not the exact
instant: the clock decides that. Outcomes: "happened", "did not happen", "partial" (only where
that is the documented behaviour: gc frees space pack by pack, a repair of lost data rewrites
version by version, and a file open for writing in @head when the daemon died may hold any part
of what was being written), "failed".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.mount import is_stale, mounted_at
from tests.mountutil import Daemon, answers, dsfs_argv, force_unmount, wait_for
from tests.treeutil import snapshot, write
from vfs import schema
from vfs.errors import DsfsError
from vfs.gc import collect_garbage
from vfs.importer import import_tree
from vfs.model import Entry, Kind, Version
from vfs.store import Store
from vfs.verify import verify_store

REPO = Path(__file__).resolve().parents[2]
KINDS = ("import", "commit-cli", "commit-daemon", "commit-client", "gc", "head-write", "repair")
OUTCOMES = ("happened", "did not happen", "partial", "failed")
TEMPLATE_SEED = 1729
"""The trees and stores every trial starts from are the same whatever the trial seeds."""
MiB = 1 << 20
TIMEOUT = 60.0
"""Bound on every single wait: a trial never hangs."""
POLL = 0.001
WRITE_WINDOW = 2.0
"""Seconds after a writer's first operation within which the daemon is killed."""
REPAIR_DAMAGE = ("delete", "truncate", "garbage", "no-index", "intact", "lost-pack")
COMMIT_ARGS = ["commit", "-m", "torture", "--tag", "torture"]
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
CHILD_ENV.setdefault("PYTHONPYCACHEPREFIX", os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                         "dsfs-torture-pycache"))
"""Commands start ~0.5 s sooner with their bytecode cached (outside the repository)."""

Snap = dict[bytes, tuple]
Model = dict[str, tuple]
"""@head by content: relative path -> ("f", sha256) | ("d",) | ("l", target)."""


class TrialFailed(AssertionError):
    pass


def check(cond: object, message: str) -> None:
    if not cond:
        raise TrialFailed(message)


# -- trees ---------------------------------------------------------------------------------------

def _size(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.75:
        return rng.randint(0, 30_000)
    if roll < 0.98:
        return rng.randint(30_000, 200_000)
    return rng.randint(MiB // 2, MiB)


def _data(rng: random.Random, size: int) -> bytes:
    if rng.random() < 0.3:  # compressible: zstd pays
        line = b"%d,label-%d,%s\n" % (rng.randrange(10**6), rng.randrange(20),
                                      rng.randbytes(8).hex().encode())
        return (line * (size // len(line) + 1))[:size]
    return rng.randbytes(size)


def make_tree(root: Path, rng: random.Random, files: int = 180, big: int = 3) -> None:
    """~12 MB: small and medium files in nested directories, a few 1.5-2.5 MB ones, a symlink,
    a hard link, an empty directory, varied modes and fixed mtimes."""
    t0 = 1_650_000_000_000_000_000
    for i in range(files):
        rel = f"d{rng.randrange(5)}/s{rng.randrange(3)}/f{i:03d}.bin"
        write(root / rel, _data(rng, _size(rng)), rng.choice((0o644, 0o600, 0o755)),
               t0 + i * 1_000_003)
    for i in range(big):
        write(root / f"big/b{i}.bin", rng.randbytes(rng.randint(3 * MiB // 2, 5 * MiB // 2)),
               0o644, t0 - i)
    os.symlink("../d0/s0", root / "big/link-to-d0s0")
    os.link(root / "big/b0.bin", root / "big/b0-hardlink.bin")
    (root / "empty").mkdir()
    for d in sorted(root.rglob("*"), reverse=True):
        if d.is_dir() and not d.is_symlink():
            os.utime(d, ns=(t0 + 7, t0 + 7))


def mutate(root: Path, rng: random.Random) -> None:
    """The next release: some files deleted, some rewritten, new ones (two of them big), one big
    file changed in its middle."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                   and "hardlink" not in p.name)
    for p in rng.sample(files, len(files) // 10):
        p.unlink()
        files.remove(p)
    for p in rng.sample(files, len(files) // 10):
        p.write_bytes(_data(rng, _size(rng)))
    n = rng.randrange(1 << 20)
    for i in range(30):
        write(root / f"added{n}/f{i:03d}.bin", _data(rng, _size(rng)))
    for i in range(2):
        write(root / f"added{n}/big{i}.bin", rng.randbytes(rng.randint(MiB, 2 * MiB)))
    bigs = sorted(p for p in root.rglob("*.bin") if p.stat().st_size > MiB + 4096
                  and "hardlink" not in p.name and not p.is_symlink())
    big = rng.choice(bigs)
    data = bytearray(big.read_bytes())
    data[MiB:MiB + 4096] = rng.randbytes(4096)
    big.write_bytes(bytes(data))


def model_of(root: Path) -> Model:
    """Names, kinds and bytes of a tree (its top directory left out)."""
    return model_of_snap(snapshot(root, mtimes=False))


def model_of_snap(snap: Snap) -> Model:
    out: Model = {}
    for rel, item in snap.items():
        if rel == b".":
            continue
        name = os.fsdecode(rel)
        if item[0] == stat.S_IFREG:
            out[name] = ("f", item[7])
        elif item[0] == stat.S_IFDIR:
            out[name] = ("d",)
        elif item[0] == stat.S_IFLNK:
            out[name] = ("l", os.fsdecode(item[6]))
        else:
            out[name] = ("?", item[0])
    return out


def version_snap(store: Store, version: Version) -> Snap:
    """What `snapshot()` of an export of `version` would be, read from the store itself: every
    byte read (and checked against its hash by the store), no file written."""
    out: Snap = {}
    groups: dict[int, bytes] = {}
    zeros = bytes(MiB)

    def item(e: Entry, rel: bytes) -> tuple:
        xattrs = tuple(sorted((os.fsdecode(k), v) for k, v in e.xattrs
                              if k.startswith(b"user.")))
        it: tuple = (stat.S_IFMT(e.mode), stat.S_IMODE(e.mode), e.uid, e.gid, e.mtime_ns,
                     xattrs)
        if e.kind == Kind.FILE:
            h = hashlib.sha256()
            for _, piece in store.contents.iter_pieces(e.content, e.size):
                if isinstance(piece, int):
                    for at in range(0, piece, len(zeros)):
                        h.update(zeros[:min(len(zeros), piece - at)])
                else:
                    h.update(piece)
            group = groups.setdefault(e.link, rel) if e.link else rel
            it += (e.size, h.hexdigest(), group if e.nlink > 1 else None)
        elif e.kind == Kind.SYMLINK:
            it += (bytes(e.ref),)
        return it

    def walk(entry: Entry, prefix: bytes) -> None:
        children = list(store.list_dir(entry))
        for e in children:
            out[prefix + e.name] = item(e, prefix + e.name)
        for e in children:
            if e.kind == Kind.DIR:
                walk(e, prefix + e.name + b"/")

    out[b"."] = item(version.root_entry, b".")
    walk(version.root_entry, b"")
    return out


def diff_text(want: dict[Any, Any], got: dict[Any, Any], limit: int = 8) -> str:
    keys = sorted((k for k in set(want) | set(got) if want.get(k) != got.get(k)), key=repr)
    lines = [f"  {k!r}: expected {want.get(k, '<absent>')}, found {got.get(k, '<absent>')}"
             for k in keys[:limit]]
    if len(keys) > limit:
        lines.append(f"  ... and {len(keys) - limit} more")
    return "\n".join(lines)


# -- processes -----------------------------------------------------------------------------------

class Command:
    """One `dsfs` command in its own process, its output in files."""

    def __init__(self, store: Path, args: list[str], logdir: Path, name: str) -> None:
        self.store = store
        self.out_path = logdir / f"{name}.out"
        self.err_path = logdir / f"{name}.err"
        self.args = args
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(dsfs_argv(store, "-q", *args), cwd=REPO, env=CHILD_ENV,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self._prefix = os.path.realpath(store) + "/"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _holds_store_file(self) -> bool:
        fd_dir = f"/proc/{self.proc.pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            return False
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}").startswith(self._prefix):
                    return True
            except OSError:
                continue
        return False

    def wait_work(self) -> float | None:
        """When the command began working on the store (it holds one of its files open: the
        index, a lock, a pack), or None if it exited first."""
        deadline = time.monotonic() + TIMEOUT
        while self.alive():
            if self._holds_store_file():
                return time.monotonic()
            check(time.monotonic() < deadline, f"dsfs {' '.join(self.args)} never opened the "
                                               "store")
            time.sleep(POLL)
        return None

    def wait_output(self) -> float:
        """When the command printed its result (its work is done), or exited."""
        deadline = time.monotonic() + TIMEOUT
        while self.alive() and not self.out_path.stat().st_size:
            check(time.monotonic() < deadline, f"dsfs {' '.join(self.args)} printed nothing "
                                               f"within {TIMEOUT} s")
            time.sleep(POLL)
        return time.monotonic()

    def sleep_until(self, when: float) -> None:
        while self.alive() and time.monotonic() < when:
            time.sleep(POLL)

    def kill(self) -> bool:
        """SIGKILL; True if it was still running."""
        landed = self.alive()
        if landed:
            self.proc.send_signal(signal.SIGKILL)
        self.wait()
        return landed

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise TrialFailed(f"dsfs {' '.join(self.args)} did not finish within {TIMEOUT} s")\
                from None

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def check_exit(self, killed: bool, ok: tuple[int, ...] = (0,)) -> int:
        """A command that was not killed exits with an `ok` status, never with a traceback."""
        rc = self.wait()
        what = f"dsfs {' '.join(self.args)}"
        check("Traceback" not in self.stderr, f"{what} crashed:\n{self.stderr}")
        if not killed or rc != -signal.SIGKILL:
            check(rc in ok, f"{what} failed on its own (exit {rc}):\n{self.stderr}")
        return rc


def biggest_pack(store: Path) -> Path:
    """The pack whose loss costs the most files (the one a repair has most to rewrite for)."""
    packs = [p for p in (store / "packs").glob("*/*") if p.parent.name != "tmp"]
    return max(packs, key=lambda p: (p.stat().st_size, p.name))


def copy_store(src: Path, dest: Path) -> None:
    """A copy that keeps holes: @head's overlay files record which blocks were written by
    which are data and which are holes (a copy that fills holes makes @head unreadable)."""
    subprocess.run(["cp", "-a", "--sparse=auto", str(src), str(dest)], check=True)


def run_dsfs(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dsfs_argv(store, "-q", *args), cwd=REPO, env=CHILD_ENV,
                          capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)


def verify_read_data(store: Path, why: str) -> None:
    res = run_dsfs(store, "verify", "--read-data")
    check(res.returncode == 0, f"{why}: `dsfs verify --read-data` exited {res.returncode}:\n"
                               f"{res.stdout}{res.stderr}")


class Mounts:
    """Foreground mount daemons of one trial: started, killed, always cleaned up."""

    def __init__(self, store: Path, mountpoint: Path) -> None:
        self.store = store
        self.mountpoint = mountpoint
        self.count = 0
        self.daemons: list[Daemon] = []

    @contextlib.contextmanager
    def serving(self) -> Iterator[Daemon]:
        """Mount (a stale mountpoint left by a killed daemon is cleared by `dsfs mount` itself)
        and unmount on the way out; the daemon may be killed inside."""
        mp = self.mountpoint
        if not is_stale(mp):
            mp.mkdir(parents=True, exist_ok=True)
        self.count += 1
        log = mp.parent / f"{mp.name}.daemon{self.count}.log"
        with open(log, "wb") as logf:
            proc = subprocess.Popen(dsfs_argv(self.store, "mount", mp, "--foreground"),
                                    cwd=REPO, env=CHILD_ENV, stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=logf)
        daemon = Daemon(proc, log, mp)
        self.daemons.append(daemon)
        try:
            wait_for(lambda: answers(mp), 30, f"{mp} to be mounted", daemon)
            yield daemon
        finally:
            self.stop(daemon)

    def stop(self, daemon: Daemon) -> int | None:
        """Unmount cleanly if the daemon still runs; its exit code."""
        proc = daemon.proc
        if proc.poll() is None:
            force_unmount(self.mountpoint)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        force_unmount(self.mountpoint)
        return proc.returncode

    def close(self) -> None:
        for d in self.daemons:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGKILL)
                d.proc.wait(timeout=10)
        force_unmount(self.mountpoint)


def kill_daemon(daemon: Daemon) -> bool:
    landed = daemon.proc.poll() is None
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(timeout=10)
    # the kernel aborts the connection just after the daemon is reaped, not always before
    wait_for(lambda: is_stale(daemon.mountpoint) or mounted_at(daemon.mountpoint) is None, 5,
             "the mount to turn stale")
    return landed


def wait_log(daemon: Daemon, text: str, count: int, cmd: Command) -> float:
    deadline = time.monotonic() + TIMEOUT
    while daemon.log_text().count(text) < count:
        check(daemon.proc.poll() is None, f"the daemon died:\n{daemon.log_text()}")
        check(cmd.alive() or daemon.log_text().count(text) >= count,
              f"dsfs {' '.join(cmd.args)} exited ({cmd.proc.returncode}) before the daemon "
              f"logged {text!r}:\n{cmd.stderr}")
        check(time.monotonic() < deadline, f"the daemon never logged {text!r}")
        time.sleep(POLL)
    return time.monotonic()


def diagnose(daemon: Daemon, store: Path) -> str:
    """Where a hung daemon waits: each thread's kernel wait channel and stack, the locks held on
    the store's lock and state files, the end of its log."""
    lines = []
    pid = daemon.proc.pid
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        base = f"/proc/{pid}/task/{tid}"
        try:
            comm = Path(base, "comm").read_text().strip()
            wchan = Path(base, "wchan").read_text().strip()
            stack = " <- ".join(line.split()[-1] for line in
                                Path(base, "stack").read_text().splitlines()[:4])
        except OSError as exc:
            comm, wchan, stack = "?", "?", str(exc)
        lines.append(f"  thread {tid} {comm}: {wchan}: {stack}")
    inodes = {}
    for f in [*(store / "locks").glob("*"), store / "head" / "head.db"]:
        with contextlib.suppress(OSError):
            inodes[f.stat().st_ino] = f.name
    with open("/proc/locks") as f:
        for line in f:
            parts = line.split()
            ino = int(parts[5].split(":")[-1]) if len(parts) > 5 else -1
            if ino in inodes:
                lines.append(f"  lock on {inodes[ino]}: {line.strip()}")
    lines += ["  log: " + line for line in daemon.log_text().splitlines()[-15:]]
    gdb = shutil.which("gdb")
    if gdb:  # native stacks: a Python lock shows as a futex wait, a file lock as flock
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            res = subprocess.run([gdb, "-p", str(pid), "-batch", "-ex",
                                  "thread apply all bt 25"], capture_output=True, text=True,
                                 timeout=60)
            lines += ["  gdb: " + line for line in res.stdout.splitlines()
                      if line.startswith(("Thread", "#"))]
    return "\n".join(lines)


def ask_status(store: Path) -> dict[str, Any]:
    """`dsfs status --json`, answered by the daemon serving @head (callers make sure one
    runs: without one, the command opens @head itself and would finish a pending commit)."""
    res = run_dsfs(store, "status", "--json")
    check(res.returncode == 0, f"`dsfs status` exited {res.returncode}: {res.stderr}")
    return dict(json.loads(res.stdout))


# -- kill plans ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class KillPlan:
    mode: str  # early | uniform | late
    fraction: float

    @classmethod
    def draw(cls, rng: random.Random) -> KillPlan:
        mode = rng.choices(("early", "uniform", "late"), (0.2, 0.5, 0.3))[0]
        return cls(mode, rng.random())

    def delay(self, duration: float) -> float:
        if self.mode == "early":
            return self.fraction * min(0.05, duration)
        if self.mode == "uniform":
            return self.fraction * duration
        return (0.8 + 0.5 * self.fraction) * duration

    def describe(self, duration: float) -> str:
        return (f"{self.mode} {self.fraction:.3f}: {self.delay(duration) * 1000:.0f} ms of a "
                f"measured {duration * 1000:.0f} ms")


# -- results -------------------------------------------------------------------------------------

@dataclass
class Trial:
    kind: str
    seed: int
    outcome: str = "failed"
    killed: bool = False
    """The kill landed while the process still ran (else the operation had finished)."""
    plan: str = ""
    detail: str = ""
    seconds: float = 0.0
    error: str = ""
    workdir: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    """Seconds spent per step (where the time goes)."""
    _last: float = field(default_factory=time.monotonic, repr=False)

    def mark(self, stage: str) -> None:
        now = time.monotonic()
        self.stages[stage] = self.stages.get(stage, 0.0) + now - self._last
        self._last = now

    def line(self) -> str:
        kill = "killed" if self.killed else "finished before the kill"
        extra = f", {self.detail}" if self.detail else ""
        return (f"{self.kind} seed {self.seed}: {self.outcome} ({kill}; {self.plan}{extra}; "
                f"{self.seconds:.1f} s)")

    def report(self) -> str:
        return (f"{self.line()}\n  replay: scripts/faults torture --kind {self.kind} "
                f"--trial-seed {self.seed}\n  files: {self.workdir}\n{self.error}")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed, "outcome": self.outcome,
                "killed": self.killed, "plan": self.plan, "detail": self.detail,
                "seconds": round(self.seconds, 3), "error": self.error,
                "stages": {k: round(v, 3) for k, v in self.stages.items()}}


@dataclass
class Expect:
    message: str
    snap: Snap


@dataclass
class Template:
    store: Path
    versions: dict[int, Expect]
    tags: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)


# -- the harness ---------------------------------------------------------------------------------

class Torture:
    """Trees, template stores and measured durations, built once and shared by every trial."""

    def __init__(self, workdir: Path, seed: int | None = None,
                 log: Callable[[str], None] | None = None, keep: bool = False,
                 remeasure_every: int = 0) -> None:
        self.work = workdir
        self.work.mkdir(parents=True, exist_ok=True)
        self.seed = random.randrange(1 << 31) if seed is None else seed
        self.log = log or (lambda _msg: None)
        self.keep = keep
        self._trees: dict[str, Path] = {}
        self._snaps: dict[str, Snap] = {}
        self._templates: dict[str, Template] = {}
        self.durations: dict[str, float] = {}
        self.remeasure_every = remeasure_every
        """Measure a kind's dry run again after this many of its trials (the machine's load
        changes over a long run); 0: once."""
        self._per_kind: dict[str, int] = {}
        self._n = 0

    def import_args(self) -> list[str]:
        return ["import", str(self.tree("B")), "-m", "torture", "--tag", "torture"]

    def cleanup(self) -> None:
        """Remove the shared trees and stores (failed trials keep their own directories)."""
        for sub in ("trees", "templates"):
            shutil.rmtree(self.work / sub, ignore_errors=True)

    def trial_seeds(self, kind: str, count: int) -> list[int]:
        rng = random.Random(f"{self.seed}:{kind}")
        return [rng.randrange(1 << 31) for _ in range(count)]

    # -- trees and templates -----------------------------------------------------------------

    def tree(self, name: str) -> Path:
        """A: the base tree; B: its next release; J: unrelated junk; K: a third of A's files
        and new ones; L: K's next release."""
        if name not in self._trees:
            root = self.work / "trees" / name
            shutil.rmtree(root, ignore_errors=True)
            rng = random.Random(f"{TEMPLATE_SEED}:{name}")
            if name in ("A", "J"):
                make_tree(root, rng, *((180, 3) if name == "A" else (60, 2)))
            else:
                prev = {"B": "A", "K": "A", "L": "K"}[name]
                shutil.copytree(self.tree(prev), root, symlinks=True)
                if name == "K":
                    files = sorted(p for p in root.rglob("*") if p.is_file())
                    for p in rng.sample(files, len(files) * 2 // 3):
                        p.unlink()
                mutate(root, rng)
            self._trees[name] = root
            self._snaps[name] = snapshot(root)
        return self._trees[name]

    def snap(self, name: str) -> Snap:
        self.tree(name)
        return self._snaps[name]

    def template(self, name: str) -> Template:
        if name not in self._templates:
            start = time.monotonic()
            build = {"import": self._build_import, "commit": self._build_commit,
                     "gc": self._build_gc}[name]
            path = self.work / "templates" / name
            shutil.rmtree(path, ignore_errors=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._templates[name] = build(path)
            self.log(f"template {name}: {time.monotonic() - start:.1f} s")
        return self._templates[name]

    def _build_import(self, path: Path) -> Template:
        with Store.create(path) as store:
            import_tree(store, self.tree("A"), "base")
        return Template(path, {1: Expect("base", self.snap("A"))}, {})

    def _build_gc(self, path: Path) -> Template:
        """v1 (its tag deleted, then dropped: a third of its data stays live, so gc rewrites
        its pack), v2 (unrelated, dropped: gc deletes its pack), v3 tagged `third`, v4 tagged
        `fourth`. A rebuilt index has tags, an untag and drops to replay."""
        with Store.create(path) as store:
            import_tree(store, self.tree("A"), "first", tag="gone")
            import_tree(store, self.tree("J"), "junk")
            import_tree(store, self.tree("K"), "third", tag="third")
            import_tree(store, self.tree("L"), "fourth", tag="fourth")
            store.untag("gone")
            store.drop("v1")
            store.drop("v2")
            plan = collect_garbage(store, dry_run=True)
            with store.index.read() as txn:
                next_version = schema.dec_u32(txn.get(schema.META_NEXT_VERSION,
                                                      db=store.index.dbs["meta"]))
        assert plan.dead_objects and plan.packs_rewritten and plan.packs_deleted, plan
        return Template(path, {3: Expect("third", self.snap("K")),
                               4: Expect("fourth", self.snap("L"))},
                        {"third": 3, "fourth": 4},
                        {"plan": (plan.dead_objects, plan.packs_deleted, plan.packs_rewritten),
                         "next_version": next_version, "dropped": [1, 2]})

    def _build_commit(self, path: Path) -> Template:
        """v1 and uncommitted @head changes (written through a mount): new files, some big;
        base files overwritten in the middle, appended to, truncated, deleted, renamed."""
        base = self.template("import")
        copy_store(base.store, path)
        rng = random.Random(f"{TEMPLATE_SEED}:head")
        mounts = Mounts(path, path.parent / "commit-mnt")
        try:
            with mounts.serving():
                head = mounts.mountpoint / "@head"
                edit_head(head, rng)
                head_snap = snapshot(head)
                status = ask_status(path)
        finally:
            mounts.close()
        assert status["base"] == "v1" and status["changes"], status
        return Template(path, dict(base.versions), {},
                        {"head": head_snap, "status": status})

    # -- dry runs ------------------------------------------------------------------------------

    def duration(self, key: str) -> float:
        """How long an operation works, measured on a copy of its template (once, or again
        every `remeasure_every` trials of its kind)."""
        if key not in self.durations:
            scratch = self.work / f"dry-{key}"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            try:
                self._measure(key, scratch)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            self.log(f"dry run {key}: {self.durations[key] * 1000:.0f} ms")
        return self.durations[key]

    def _measure(self, key: str, scratch: Path) -> None:
        store = scratch / "store"
        if key in ("commit-daemon", "commit-client"):
            copy_store(self.template("commit").store, store)
            mounts = Mounts(store, scratch / "mnt")
            try:
                with mounts.serving() as daemon:
                    cmd = Command(store, COMMIT_ARGS, scratch, "commit")
                    began = cmd.wait_work()
                    logged = wait_log(daemon, "control request commit", 1, cmd)
                    end = cmd.wait_output()
                    cmd.check_exit(killed=False)
            finally:
                mounts.close()
            assert began is not None
            self.durations["commit-daemon"] = end - logged
            self.durations["commit-client"] = end - began
            return
        template, args = {
            "import": ("import", self.import_args()),
            "commit-cli": ("commit", COMMIT_ARGS),
            "gc": ("gc", ["gc"]),
            "repair": ("gc", ["verify", "--repair"]),
            "repair-lost-pack": ("gc", ["verify", "--repair"]),
        }[key]
        copy_store(self.template(template).store, store)
        if key == "repair":
            (store / "index" / "data.mdb").unlink()
        elif key == "repair-lost-pack":
            biggest_pack(store).unlink()
        cmd = Command(store, args, scratch, key)
        began = cmd.wait_work()
        end = cmd.wait_output()
        cmd.check_exit(killed=False, ok=(1,) if key == "repair-lost-pack" else (0,))
        assert began is not None, f"dry run of {key} exited before it opened the store"
        self.durations[key] = end - began

    # -- running trials ------------------------------------------------------------------------

    def prepare(self, kind: str) -> None:
        """Build what a kind needs before its first trial (so trials time only themselves)."""
        done = self._per_kind.get(kind, 0)
        self._per_kind[kind] = done + 1
        if self.remeasure_every and done and done % self.remeasure_every == 0:
            self.durations.pop(kind, None)
        if kind == "head-write":
            self.template("import")
        else:
            self.duration(kind)

    def run(self, kind: str, seed: int) -> Trial:
        self._n += 1
        trial = Trial(kind, seed)
        tdir = self.work / f"trial-{self._n:04d}-{kind}-{seed}"
        shutil.rmtree(tdir, ignore_errors=True)
        tdir.mkdir(parents=True)
        trial.workdir = str(tdir)
        start = trial._last = time.monotonic()
        mounts = Mounts(tdir / "store", tdir / "mnt")
        try:
            getattr(self, "_trial_" + kind.replace("-", "_"))(trial, random.Random(seed), tdir,
                                                              mounts)
        except Exception as exc:
            trial.outcome = "failed"
            trial.error = (str(exc) if isinstance(exc, TrialFailed)
                           else traceback.format_exc())
        finally:
            try:
                mounts.close()
            except Exception as exc:  # a mount that would not go away fails the trial
                trial.outcome = "failed"
                trial.error += f"\ncleanup: {exc!r}"
            trial.seconds = time.monotonic() - start
        if trial.outcome != "failed" and not self.keep:
            shutil.rmtree(tdir, ignore_errors=True)
        return trial

    # -- checks shared by the kinds ----------------------------------------------------------

    def check_store(self, store_path: Path, expected: dict[int, Expect], tags: dict[str, int],
                    why: str, only: set[int] | None = None, read_data: bool = False) -> None:
        """The store opens and holds exactly these versions and tags; each version (or each in
        `only`) holds exactly what was recorded. With `read_data`, also verify every chunk."""
        with Store.open(store_path) as store:
            versions = {v.number: v for v in store.versions()}
            check(sorted(versions) == sorted(expected),
                  f"{why}: versions {sorted(versions)}, expected {sorted(expected)}")
            for n, want in expected.items():
                check(versions[n].message == want.message,
                      f"{why}: v{n} has message {versions[n].message!r}, expected "
                      f"{want.message!r}")
            check(store.tags() == tags, f"{why}: tags {store.tags()}, expected {tags}")
            for n in sorted(expected if only is None else only):
                got = version_snap(store, versions[n])
                check(got == expected[n].snap, f"{why}: v{n} does not hold what was recorded:\n"
                                               f"{diff_text(expected[n].snap, got)}")
            if read_data:
                report = verify_store(store, read_data=True)
                check(report.ok, f"{why}: verify: {report.problems} {report.head_problems} "
                                 f"{report.damaged_objects}")

    def new_versions(self, store_path: Path, before: dict[int, Expect]) -> list[int]:
        with Store.open(store_path) as store:
            return [v.number for v in store.versions() if v.number not in before]

    # -- kind: import ------------------------------------------------------------------------

    def _kill_command(self, trial: Trial, cmd: Command, plan: KillPlan,
                      duration: float, ok: tuple[int, ...] = (0,)) -> int:
        """Kill `cmd` `plan.delay(duration)` after it began working on the store."""
        began = cmd.wait_work()
        if began is not None:
            cmd.sleep_until(began + plan.delay(duration))
        trial.killed = cmd.kill()
        trial.mark("kill")
        return cmd.check_exit(trial.killed, ok)

    def _trial_import(self, trial: Trial, rng: random.Random, tdir: Path,
                      mounts: Mounts) -> None:
        t = self.template("import")
        src = self.tree("B")
        duration = self.duration("import")
        plan = KillPlan.draw(rng)
        trial.plan = plan.describe(duration)
        store = tdir / "store"
        copy_store(t.store, store)
        cmd = Command(store, self.import_args(), tdir, "import")
        rc = self._kill_command(trial, cmd, plan, duration)
        new = self.new_versions(store, t.versions)
        check(len(new) <= 1, f"more than one new version: {new}")
        expected = dict(t.versions)
        tags = dict(t.tags)
        if new:
            trial.outcome = "happened"
            expected[new[0]] = Expect("torture", self.snap("B"))
            tags["torture"] = new[0]
            if rc == 0:
                check(cmd.stdout.strip() == f"v{new[0]}", f"import printed {cmd.stdout!r}, "
                                                          f"recorded v{new[0]}")
        else:
            trial.outcome = "did not happen"
            check(rc != 0, "import exited 0 but recorded no version")
        verify_read_data(store, "after the kill")
        trial.mark("verify")
        self.check_store(store, expected, tags, "after the kill")
        trial.mark("check")
        if not new:
            # the store still takes the same import, on top of whatever the kill left
            with Store.open(store) as s:
                v = import_tree(s, src, "again", tag="again").version
            expected[v.number] = Expect("again", self.snap("B"))
            tags["again"] = v.number
            self.check_store(store, expected, tags, "after importing again", only={v.number})
            trial.mark("again")

    # -- kind: gc ----------------------------------------------------------------------------

    def _trial_gc(self, trial: Trial, rng: random.Random, tdir: Path, mounts: Mounts) -> None:
        t = self.template("gc")
        duration = self.duration("gc")
        plan = KillPlan.draw(rng)
        trial.plan = plan.describe(duration)
        store = tdir / "store"
        copy_store(t.store, store)
        self._kill_command(trial, Command(store, ["gc"], tdir, "gc"), plan, duration)
        verify_read_data(store, "after the kill")
        trial.mark("verify")
        self.check_store(store, t.versions, t.tags, "after the kill")
        with Store.open(store) as s:
            left = collect_garbage(s, dry_run=True)
        state = (left.dead_objects, left.packs_deleted, left.packs_rewritten)
        if state == (0, 0, 0):
            trial.outcome = "happened"
        elif state == t.extra["plan"]:
            trial.outcome = "did not happen"
        else:
            trial.outcome = "partial"
        trial.detail = (f"left: {state[0]} dead objects, {state[1]} packs to delete, "
                        f"{state[2]} to rewrite, {left.orphan_files} orphan files")
        trial.mark("check")
        # the next gc finishes the job, and every live version is still intact
        with Store.open(store) as s:
            collect_garbage(s)
            after = collect_garbage(s, dry_run=True)
        check((after.dead_objects, after.packs_deleted, after.packs_rewritten,
               after.orphan_files) == (0, 0, 0, 0), f"a second gc left work: {after}")
        check(not os.listdir(store / "packs" / "tmp"), "packs/tmp not empty after a full gc")
        self.check_store(store, t.versions, t.tags, "after a second gc", read_data=True)
        trial.mark("again")

    # -- kind: repair ------------------------------------------------------------------------

    def _trial_repair(self, trial: Trial, rng: random.Random, tdir: Path,
                      mounts: Mounts) -> None:
        t = self.template("gc")
        duration = self.duration("repair")
        plan = KillPlan.draw(rng)
        damage = rng.choice(REPAIR_DAMAGE)
        trial.plan = plan.describe(duration)
        store = tdir / "store"
        copy_store(t.store, store)
        data = store / "index" / "data.mdb"
        if damage == "delete":
            data.unlink()
        elif damage == "truncate":
            with open(data, "r+b") as f:
                f.truncate(rng.randrange(0, 3 * 4096))
        elif damage == "garbage":
            with open(data, "r+b") as f:
                f.seek(rng.randrange(0, 4) * 4096)
                f.write(rng.randbytes(8192))
        elif damage == "no-index":
            shutil.rmtree(store / "index")
        elif damage == "lost-pack":  # the index is whole: repair's version rewriting is killed
            biggest_pack(store).unlink()
            duration = self.duration("repair-lost-pack")
            trial.plan = plan.describe(duration)
        old_ino = data.stat().st_ino if data.exists() else None
        self._kill_command(trial, Command(store, ["verify", "--repair"], tdir, "repair"), plan,
                           duration, ok=(1,) if damage == "lost-pack" else (0,))
        swapped = data.exists() and data.stat().st_ino != old_ino
        trial.outcome = "happened" if swapped else "did not happen"
        trial.detail = f"index {damage}" + ("" if data.exists() else ", none left by the kill")
        whole = damage != "lost-pack" and (swapped or (damage == "intact" and data.exists()))
        if whole:
            # the index in place is whole (the rebuilt one, or the intact one left alone): the
            # store works without another repair
            verify_read_data(store, "after the kill")
            trial.mark("verify")
            self._check_rebuilt(store, t, "after the kill")
            trial.mark("check")
        if damage == "lost-pack":
            try:
                with Store.open(store) as s:
                    rewritten = [v.name for v in s.versions() if v.repair is not None]
            except DsfsError:
                rewritten = []
            # each version is rewritten whole or not at all; some may be done at the kill
            trial.outcome = ("did not happen" if not rewritten else
                             "partial" if trial.killed else "happened")
            if rewritten:
                trial.detail += f", killed after rewriting {', '.join(rewritten)}"
        res = run_dsfs(store, "verify", "--repair")
        if damage == "lost-pack":
            # exit 1 if this run dropped what was lost, 0 if the killed one already had
            check(res.returncode in (0, 1), f"`dsfs verify --repair` after the kill exited "
                                            f"{res.returncode}:\n{res.stdout}{res.stderr}")
            trial.mark("repair")
            lost = self._check_repaired(store, t, "after a second repair")
            trial.detail += f", {lost} paths lost and listed"
            again = run_dsfs(store, "verify", "--repair")
            check(again.returncode == 0, f"a third repair still found damage:\n{again.stdout}")
            check(self._check_repaired(store, t, "after a third repair") == lost,
                  "a third repair changed what was lost")
            trial.mark("check")
            return
        check(res.returncode == 0, f"`dsfs verify --repair` after the kill exited "
                                   f"{res.returncode}:\n{res.stdout}{res.stderr}")
        trial.mark("repair")
        if not whole:
            verify_read_data(store, "after a second repair")
            trial.mark("verify")
        self._check_rebuilt(store, t, "after a second repair", read_data=whole)
        trial.mark("check")

    def _check_repaired(self, store_path: Path, t: Template, why: str) -> int:
        """After a repair of lost data: the same versions, tags and messages; every path a
        version still has is exactly what was recorded; every path it lost is listed in its
        repair record. Returns how many paths were listed as lost."""
        listed = 0
        with Store.open(store_path) as store:
            versions = {v.number: v for v in store.versions()}
            check(sorted(versions) == sorted(t.versions),
                  f"{why}: versions {sorted(versions)}, expected {sorted(t.versions)}")
            check(store.tags() == t.tags, f"{why}: tags {store.tags()}, expected {t.tags}")
            for n, want in t.versions.items():
                v = versions[n]
                check(v.message == want.message, f"{why}: v{n} message {v.message!r}")
                lost = [x.path for x in v.repair.lost] if v.repair is not None else []
                listed += len(lost)
                got = version_snap(store, v)

                def same(a: tuple, b: tuple) -> bool:
                    # a hard-link group is named after its first member, which may be lost
                    return a == b or (len(a) == len(b) == 9 and a[:8] == b[:8])

                wrong = [p for p in got if p not in want.snap or not same(got[p], want.snap[p])]
                check(not wrong, f"{why}: v{n} holds what was never recorded at {wrong[:5]}")
                unlisted = [p for p in want.snap if p not in got and not any(
                    p == x or x == b"" or (x.endswith(b"/") and p.startswith(x)) for x in lost)]
                check(not unlisted, f"{why}: v{n} lost {unlisted[:5]} without listing them")
            report = verify_store(store, read_data=True)
            check(report.ok, f"{why}: verify: {report.problems} {report.damaged_objects}")
        return listed

    def _check_rebuilt(self, store: Path, t: Template, why: str,
                       read_data: bool = False) -> None:
        self.check_store(store, t.versions, t.tags, why, read_data=read_data)
        with Store.open(store) as s, s.index.read() as txn:
            dbs = s.index.dbs
            nxt = schema.dec_u32(txn.get(schema.META_NEXT_VERSION, db=dbs["meta"]))
            dropped = [n for n in t.extra["dropped"]
                       if txn.get(schema.version_key(n), db=dbs["dropped"]) is not None]
        check(nxt == t.extra["next_version"], f"{why}: next version v{nxt}, expected "
                                              f"v{t.extra['next_version']}")
        check(dropped == t.extra["dropped"], f"{why}: dropped {dropped}, expected "
                                             f"{t.extra['dropped']}")

    # -- kinds: commit -----------------------------------------------------------------------

    def _commit_outcome(self, trial: Trial, store: Path, t: Template, cmd: Command,
                        rc: int) -> tuple[dict[int, Expect], dict[str, int]]:
        """Right after the crash, before anything opens @head (which finishes an interrupted
        commit): one new version with the right record and tag, or none."""
        expected = dict(t.versions)
        tags = dict(t.tags)
        with Store.open(store) as s:
            versions = {v.number: v for v in s.versions()}
        new = [n for n in versions if n not in t.versions]
        check(len(new) <= 1, f"more than one new version: {new}")
        if new:
            v = versions[new[0]]
            check(v.source.startswith("head:") and v.parent == 1,
                  f"v{v.number}: source {v.source!r}, parent {v.parent}")
            trial.outcome = "happened"
            expected[new[0]] = Expect("torture", t.extra["head"])
            tags["torture"] = new[0]
            if rc == 0:
                check(cmd.stdout.strip() == f"v{new[0]}",
                      f"commit printed {cmd.stdout!r}, recorded v{new[0]}")
        else:
            trial.outcome = "did not happen"
            check(rc != 0, "commit exited 0 but recorded no version")
        self.check_store(store, expected, tags, "after the kill")
        trial.mark("check")
        return expected, tags

    def _check_head(self, daemon: Daemon, store: Path, t: Template,
                    expected: dict[int, Expect], why: str) -> None:
        """@head holds exactly what it held before the commit, committed or not, and `dsfs
        status` agrees with the version log."""
        mp = daemon.mountpoint
        got = snapshot(mp / "@head")
        check(got == t.extra["head"], f"{why}: @head differs from before the commit:\n"
                                      f"{diff_text(t.extra['head'], got)}")
        status = ask_status(store)
        new = [n for n in expected if n not in t.versions]
        if new:
            check(status["base"] == f"v{new[0]}" and status["changes"] == [],
                  f"{why}: committed as v{new[0]} but @head is based on {status['base']} with "
                  f"{len(status['changes'])} changes")
            wait_for(lambda: (mp / f"@v{new[0]}").is_dir(), 5, f"@v{new[0]}", daemon)
            got = snapshot(mp / f"@v{new[0]}")
            check(got == t.extra["head"], f"{why}: @v{new[0]} differs from @head before the "
                                          f"commit:\n{diff_text(t.extra['head'], got)}")
        else:
            want = t.extra["status"]
            check(status["base"] == want["base"] and status["changes"] == want["changes"],
                  f"{why}: not committed, but `dsfs status` changed: base {status['base']} "
                  f"(expected {want['base']}), changes:\n"
                  + diff_text(dict(enumerate(want["changes"])),
                              dict(enumerate(status["changes"]))))

    def _commit_again(self, trial: Trial, daemon: Daemon, store: Path, t: Template,
                      expected: dict[int, Expect], tags: dict[str, int]) -> None:
        """The same commit, when it did not happen, now records the right version."""
        if any(n not in t.versions for n in expected):
            return
        res = run_dsfs(store, "commit", "-m", "torture", "--tag", "torture")
        check(res.returncode == 0, f"commit after the crash exited {res.returncode}: "
                                   f"{res.stderr}")
        n = int(res.stdout.strip().removeprefix("v"))
        expected[n] = Expect("torture", t.extra["head"])
        tags["torture"] = n
        self._check_head(daemon, store, t, expected, "after committing again")
        trial.mark("again")

    def _trial_commit_cli(self, trial: Trial, rng: random.Random, tdir: Path,
                          mounts: Mounts) -> None:
        t = self.template("commit")
        duration = self.duration("commit-cli")
        plan = KillPlan.draw(rng)
        trial.plan = plan.describe(duration)
        store = tdir / "store"
        copy_store(t.store, store)
        cmd = Command(store, COMMIT_ARGS, tdir, "commit")
        rc = self._kill_command(trial, cmd, plan, duration)
        self._after_commit_kill(trial, store, t, cmd, rc, mounts)

    def _after_commit_kill(self, trial: Trial, store: Path, t: Template, cmd: Command, rc: int,
                           mounts: Mounts) -> None:
        """After a commit was killed with nothing running: verify, the outcome, @head after a
        remount, the commit done again, and the store at the end."""
        verify_read_data(store, "after the kill")
        trial.mark("verify")
        expected, tags = self._commit_outcome(trial, store, t, cmd, rc)
        with mounts.serving() as daemon:
            trial.mark("mount")
            self._check_head(daemon, store, t, expected, "after the kill")
            trial.mark("head")
            self._commit_again(trial, daemon, store, t, expected, tags)
        self.check_store(store, expected, tags, "at the end", read_data=True)
        trial.mark("end")

    def _trial_commit_daemon(self, trial: Trial, rng: random.Random, tdir: Path,
                             mounts: Mounts) -> None:
        t = self.template("commit")
        duration = self.duration("commit-daemon")
        plan = KillPlan.draw(rng)
        trial.plan = plan.describe(duration) + " after the daemon took the request"
        store = tdir / "store"
        copy_store(t.store, store)
        with mounts.serving() as daemon:
            trial.mark("mount")
            cmd = Command(store, COMMIT_ARGS, tdir, "commit")
            logged = wait_log(daemon, "control request commit", 1, cmd)
            cmd.sleep_until(logged + plan.delay(duration))
            trial.killed = cmd.alive()
            kill_daemon(daemon)
            trial.mark("kill")
            rc = cmd.wait()
            check("Traceback" not in cmd.stderr, f"commit crashed:\n{cmd.stderr}")
        copy_store(store, tdir / "store-after-kill")  # for a failing trial: the state to replay
        self._after_commit_kill(trial, store, t, cmd, rc, mounts)

    def _trial_commit_client(self, trial: Trial, rng: random.Random, tdir: Path,
                             mounts: Mounts) -> None:
        t = self.template("commit")
        duration = self.duration("commit-client")
        plan = KillPlan.draw(rng)
        trial.plan = plan.describe(duration) + " after the command opened the store"
        store = tdir / "store"
        copy_store(t.store, store)
        with mounts.serving() as daemon:
            trial.mark("mount")
            cmd = Command(store, COMMIT_ARGS, tdir, "commit")
            rc = self._kill_command(trial, cmd, plan, duration)
            # a request the daemon took is served to its end: a status request queues behind
            # it (both hold @head alone), so once that is answered the commit is over
            time.sleep(0.3)
            ask_status(store)
            took = daemon.log_text().count("control request commit")
            check(daemon.proc.poll() is None, f"the daemon died:\n{daemon.log_text()}")
            verify_read_data(store, "after the kill")
            trial.mark("verify")
            expected, tags = self._commit_outcome(trial, store, t, cmd, rc)
            happened = len(expected) > len(t.versions)
            check(happened == (took == 1), f"the daemon took {took} commit requests, and the "
                                           f"commit {'happened' if happened else 'did not'}")
            self._check_head(daemon, store, t, expected, "after the kill")
            trial.mark("head")
            self._commit_again(trial, daemon, store, t, expected, tags)
            code = mounts.stop(daemon)
            check(code == 0, f"the daemon exited {code} on unmount:\n{daemon.log_text()}")
        self.check_store(store, expected, tags, "at the end", read_data=True)
        trial.mark("end")

    # -- kind: head-write --------------------------------------------------------------------

    def _trial_head_write(self, trial: Trial, rng: random.Random, tdir: Path,
                          mounts: Mounts) -> None:
        t = self.template("import")
        store = tdir / "store"
        copy_store(t.store, store)
        plan = KillPlan.draw(rng)
        trial.plan = plan.describe(WRITE_WINDOW) + " after the writer's first operation"
        model = model_of_snap(self.snap("A"))
        links = {os.fsdecode(k): os.fsdecode(v[8]) for k, v in self.snap("A").items()
                 if v[0] == stat.S_IFREG and v[8] is not None}
        manifest = tdir / "manifest.json"
        manifest.write_text(json.dumps({"model": model, "links": links}))
        out, err = tdir / "writer.out", tdir / "writer.err"
        writer: subprocess.Popen[bytes] | None = None
        try:
            with mounts.serving() as daemon:
                trial.mark("mount")
                with open(err, "wb") as errf:
                    writer = subprocess.Popen(
                        [sys.executable, "-c", WRITER, str(daemon.mountpoint / "@head"),
                         str(rng.randrange(1 << 31)), str(manifest), str(out)],
                        cwd=tdir, env=CHILD_ENV, stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=errf)
                deadline = time.monotonic() + TIMEOUT
                while not (out.exists() and out.stat().st_size):
                    check(writer.poll() is None, f"the writer died:\n{err.read_text()}")
                    check(time.monotonic() < deadline, "the writer never began")
                    time.sleep(POLL)
                began = time.monotonic()
                while time.monotonic() < began + plan.delay(WRITE_WINDOW):
                    check(writer.poll() is None,
                          f"the writer exited early ({writer.returncode}):\n{err.read_text()}")
                    time.sleep(POLL)
                trial.killed = kill_daemon(daemon)
                writer.send_signal(signal.SIGKILL)
                writer.wait(timeout=TIMEOUT)
                trial.mark("kill")
        finally:
            if writer is not None and writer.poll() is None:
                writer.kill()
                writer.wait()
        done, inflight = parse_writer(out.read_bytes())
        for op in done:
            for path, state in op["after"].items():
                if state is None:
                    model.pop(path, None)
                else:
                    model[path] = tuple(state)
        trial.detail = f"{len(done)} operations done" + (
            f", {inflight['op']} in flight" if inflight else "")
        copy_store(store, tdir / "store-after-kill")  # for a failing trial: the state to replay
        verify_read_data(store, "after the kill")
        trial.mark("verify")
        with mounts.serving() as daemon:
            trial.mark("mount")
            head = daemon.mountpoint / "@head"
            trial.outcome = judge_head(model, model_of(head), inflight)
            with Store.open(store) as s:
                check([v.number for v in s.versions()] == [1], "a version appeared")
            trial.mark("head")
            # what survived commits as it is
            before = snapshot(head)
            try:
                res = run_dsfs(store, "commit", "-m", "after the crash", "--allow-empty")
            except subprocess.TimeoutExpired:
                raise TrialFailed(f"the commit after the crash hung for {TIMEOUT} s; the daemon:"
                                  f"\n{diagnose(daemon, store)}") from None
            check(res.returncode == 0, f"commit after the crash exited {res.returncode}: "
                                       f"{res.stderr}")
            name = res.stdout.strip()
            wait_for(lambda: (daemon.mountpoint / f"@{name}").is_dir(), 5, f"@{name}", daemon)
            committed = snapshot(daemon.mountpoint / f"@{name}")
            check(committed == before, f"@{name} differs from the @head it committed:\n"
                                       f"{diff_text(before, committed)}")
            trial.mark("again")
        expected = dict(t.versions)
        expected[int(name[1:])] = Expect("after the crash", before)
        self.check_store(store, expected, {}, "at the end", read_data=True)
        trial.mark("end")


def edit_head(head: Path, rng: random.Random) -> None:
    """The uncommitted changes of the commit template (~12 MB new)."""
    new = head / "new"
    new.mkdir()
    for i in range(4):
        (new / f"big{i}.bin").write_bytes(rng.randbytes(rng.randint(MiB, 2 * MiB)))
    for i in range(25):
        (new / f"small{i:02d}.txt").write_bytes(_data(rng, rng.randint(0, 30_000)))
    with open(head / "big/b2.bin", "r+b") as f:
        f.seek(MiB + 12345)
        f.write(rng.randbytes(100_000))
    files = sorted(p for p in head.rglob("*.bin") if p.parent.name.startswith("s"))
    with open(files[0], "ab") as f:
        f.write(b"appended\n" * 100)
    os.truncate(files[1], files[1].stat().st_size // 2)
    for p in files[2:7]:
        p.unlink()
    for i, p in enumerate(files[7:10]):
        os.rename(p, p.parent / f"renamed{i}.bin")
    os.chmod(files[10], 0o600)
    os.symlink("big/b0.bin", head / "new/link")
    (head / "new/emptydir").mkdir()


# -- the @head writer ----------------------------------------------------------------------------

WRITER = r"""
import hashlib, json, os, random, sys
head, seed, manifest, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rng = random.Random(seed)
start = json.load(open(manifest))
model = {k: tuple(v) for k, v in start["model"].items()}
group = dict(start["links"])  # path -> its hard-link group, for files with several names
out = open(out_path, "a")


def say(obj):
    out.write(json.dumps(obj) + "\n")
    out.flush()


def sha(b):
    return hashlib.sha256(b).hexdigest()


def full(rel):
    return os.path.join(head, rel)


def size():
    r = rng.random()
    if r < 0.7:
        return rng.randint(0, 64 << 10)
    if r < 0.95:
        return rng.randint(64 << 10, 1 << 20)
    return rng.randint(1 << 20, 4 << 20)


def new_name(i, suffix):
    d = rng.choice([""] + sorted(p for p, v in model.items() if v[0] == "d"))
    name = f"w{i}-{rng.randrange(1 << 24):06x}{suffix}"
    return os.path.join(d, name) if d else name


def names(rel):
    g = group.get(rel)
    return sorted(p for p, x in group.items() if x == g) if g is not None else [rel]


def put(f, data):
    pos = 0
    while pos < len(data):
        n = rng.choice((4096, 65536, 131072, 1 << 20))
        f.write(data[pos:pos + n])
        pos += n
    if rng.random() < 0.2:
        f.flush()
        os.fsync(f.fileno())


OPS = ["create", "overwrite", "append", "truncate", "rename", "unlink", "mkdir", "symlink"]
for i in range(100000):
    op = rng.choices(OPS, [40, 12, 10, 6, 12, 10, 5, 5])[0]
    existing = sorted(p for p, v in model.items() if v[0] == "f")
    if op in ("overwrite", "append", "truncate", "rename", "unlink") and not existing:
        op = "create"
    if op == "create":
        rel = new_name(i, ".bin")
        data = rng.randbytes(size())
        after = {rel: ["f", sha(data)]}
        say({"begin": i, "op": op, "after": after})
        with open(full(rel), "wb") as f:
            put(f, data)
    elif op in ("overwrite", "append", "truncate"):
        rel = rng.choice(existing)
        with open(full(rel), "rb") as f:
            old = f.read()
        if op == "overwrite":
            at = rng.randint(0, len(old))
            patch = rng.randbytes(rng.randint(1, 200_000))
            data = old[:at] + patch + old[at + len(patch):]
        elif op == "append":
            patch = rng.randbytes(rng.randint(1, 300_000))
            data = old + patch
        else:
            grow = rng.random() < 0.3
            n = len(old) + rng.randint(1, 1 << 20) if grow else rng.randint(0, len(old))
            data = old[:n] + bytes(max(0, n - len(old)))
        after = {p: ["f", sha(data)] for p in names(rel)}
        say({"begin": i, "op": op, "after": after})
        if op == "overwrite":
            with open(full(rel), "r+b") as f:
                f.seek(at)
                put(f, patch)
        elif op == "append":
            with open(full(rel), "ab") as f:
                put(f, patch)
        else:
            os.truncate(full(rel), len(data))
    elif op == "rename":
        src = rng.choice(existing)
        others = [p for p in existing if p not in names(src)]  # a rename onto another name of
        dst = rng.choice(others) if others and rng.random() < 0.4 else new_name(i, ".bin")
        after = {src: None, dst: list(model[src])}  # the same file does nothing
        say({"begin": i, "op": op, "after": after})
        os.rename(full(src), full(dst))
        group.pop(dst, None)
        if src in group:
            group[dst] = group.pop(src)
    elif op == "unlink":
        rel = rng.choice(existing + sorted(p for p, v in model.items() if v[0] == "l"))
        after = {rel: None}
        say({"begin": i, "op": op, "after": after})
        os.unlink(full(rel))
        group.pop(rel, None)
    elif op == "mkdir":
        rel = new_name(i, ".d")
        after = {rel: ["d"]}
        say({"begin": i, "op": op, "after": after})
        os.mkdir(full(rel))
    else:
        rel = new_name(i, ".lnk")
        target = rng.choice(existing) if existing else "nowhere"
        after = {rel: ["l", target]}
        say({"begin": i, "op": op, "after": after})
        os.symlink(target, full(rel))
    say({"done": i})
    for p, state in after.items():
        if state is None:
            model.pop(p, None)
        else:
            model[p] = tuple(state)
"""
"""A process that edits @head without end and says what it does: a line {"begin": i, "op",
"after": {path: state or None}} before each operation, {"done": i} once it returned (a file
closed, a rename or unlink done). Its lines go to a file, flushed one by one."""

CONTENT_OPS = ("create", "overwrite", "append")
"""Operations that write a file through open/write/close: cut short, the file may hold any
mixture of old and new bytes (only close() promises them)."""


def parse_writer(raw: bytes) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The operations the writer finished, in order, and the one it had begun, if any."""
    begun: dict[int, dict[str, Any]] = {}
    done: list[dict[str, Any]] = []
    inflight: dict[str, Any] | None = None
    for line in raw.split(b"\n")[:-1]:  # a line cut by the kill has no newline
        msg = json.loads(line)
        if "begin" in msg:
            begun[msg["begin"]] = msg
            inflight = msg
        else:
            done.append(begun[msg["done"]])
            inflight = None
    return done, inflight


def judge_head(model: Model, got: Model, inflight: dict[str, Any] | None) -> str:
    """Compare @head after the crash with what the writer finished; the operation in flight
    happened, did not, or (a file being written) left it partly written."""
    uncertain = set(inflight["after"]) if inflight else set()
    settled_want = {k: v for k, v in model.items() if k not in uncertain}
    settled_got = {k: v for k, v in got.items() if k not in uncertain}
    check(settled_want == settled_got, "@head after the crash differs from what the writer had "
                                       f"finished:\n{diff_text(settled_want, settled_got)}")
    if inflight is None:
        return "happened"
    after = {k: tuple(v) if v is not None else None for k, v in inflight["after"].items()}
    before = {k: model.get(k) for k in after}
    now = {k: got.get(k) for k in after}
    if now == after:
        return "happened"
    if now == before:
        return "did not happen"
    if inflight["op"] in CONTENT_OPS:
        # every name of the file is a file, all with the same bytes
        check(all(v is not None and v[0] == "f" for v in now.values())
              and len(set(now.values())) == 1, f"{inflight['op']} in flight: found {now}")
        return "partial"
    raise TrialFailed(f"{inflight['op']} in flight left neither the old nor the new state:\n"
                      f"  before {before}\n  after  {after}\n  found  {now}")
