"""Crash safety and concurrent readers, with real processes, real kill -9 and a real disk.

* `dsfs import` is killed with SIGKILL at seeded random points of its run; after each kill the
  store must open, verify with its data read, export every earlier version byte for byte, and
  hold the interrupted version either completely or not at all.
* One process imports version after version while others list, cat, export and verify: no
  reader may ever see a version that is not complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.treeutil import write
from tests.vfs.test_head import path_ino, read_all, write_at
from tests.vfs.test_overlay_crash import crash
from vfs.exporter import export_version
from vfs.gc import collect_garbage
from vfs.head.session import open_head
from vfs.importer import import_tree
from vfs.store import Store
from vfs.verify import verify_store

REPO = Path(__file__).resolve().parents[2]
DSFS = [sys.executable, "-m", "daemon.cli", "-q"]
DEADLINE = 60.0
POLL = 0.001

Manifest = dict[str, str]
"""A tree's files: relative path -> sha256 hex."""

pytestmark = pytest.mark.slow


# -- source trees -------------------------------------------------------------------------------

def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _file_size(rng: random.Random) -> int:
    """Mostly small files, some medium, a few multi-chunk ones."""
    roll = rng.random()
    if roll < 0.70:
        return rng.randint(1_000, 80_000)
    if roll < 0.95:
        return rng.randint(80_000, 700_000)
    return rng.randint(2_000_000, 4_000_000)


def make_tree(root: Path, rng: random.Random, total: int) -> None:
    """Random, incompressible files in nested directories, about `total` bytes in all."""
    written = 0
    i = 0
    while written < total:
        rel = f"d{rng.randrange(6)}/s{rng.randrange(4)}/f{i:05d}.bin"
        size = _file_size(rng)
        _write(root / rel, rng.randbytes(size))
        written += size
        i += 1
    _write(root / "labels.csv", "".join(f"{k},{rng.randrange(10)}\n"
                                        for k in range(5000)).encode())


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def mutate(root: Path, rng: random.Random, new_bytes: int) -> None:
    """Rewrite some files (always with a new size), delete some, add some: ~new_bytes new."""
    files = _files(root)
    for path in rng.sample(files, max(1, len(files) // 20)):
        path.unlink()
    files = _files(root)
    written = 0
    while written < new_bytes // 2 and files:
        path = files.pop(rng.randrange(len(files)))
        size = path.stat().st_size
        new_size = size + rng.randint(1, 5000)  # a new size: the file cache cannot be fooled
        path.write_bytes(rng.randbytes(new_size))
        written += new_size
    n = 0
    while written < new_bytes:
        size = _file_size(rng)
        _write(root / f"added/g{rng.randrange(1 << 30):09d}/{n}.bin", rng.randbytes(size))
        written += size
        n += 1


def manifest(root: Path) -> Manifest:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in _files(root)}


# -- helpers ------------------------------------------------------------------------------------

def dsfs(store: Path, *args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DSFS, "--store", str(store), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)


def spawn_import(store: Path, src: Path, message: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*DSFS, "--store", str(store), "import", str(src), "-m", message],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _tmp_names(store: Path) -> set[str]:
    return set(os.listdir(store / "packs" / "tmp"))


def pack_files(store: Path) -> dict[str, int]:
    """Every file under packs/ (tmp/ included): 'dir/name' -> size. Tolerates renames."""
    out: dict[str, int] = {}
    for sub in os.scandir(store / "packs"):
        if not sub.is_dir():
            continue
        try:
            entries = list(os.scandir(sub.path))
        except FileNotFoundError:
            continue
        for f in entries:
            try:
                out[f"{sub.name}/{f.name}"] = f.stat().st_size
            except FileNotFoundError:
                continue
    return out


@dataclass(frozen=True)
class KillAt:
    """When to SIGKILL a writer, judged by what it has put on disk (not by the clock alone).

    "bytes": once its new pack files hold `amount` bytes; "sealed": as soon as it has sealed
    (renamed into place) a new pack; "time": `amount` seconds after it began a pack.
    """

    mode: str
    amount: float = 0.0


def run_until(proc: subprocess.Popen[bytes], store: Path, before: set[str],
              kill: KillAt) -> int:
    """Poll the writer's progress; SIGKILL it at `kill` unless it exits first. Returns rc."""
    deadline = time.monotonic() + DEADLINE
    began: float | None = None
    while (rc := proc.poll()) is None:
        new = {k: v for k, v in pack_files(store).items() if k not in before}
        now = time.monotonic()
        if new and began is None:
            began = now
        hit = ((kill.mode == "bytes" and sum(new.values()) >= kill.amount)
               or (kill.mode == "sealed" and any(not k.startswith("tmp/") for k in new))
               or (kill.mode == "time" and began is not None and now - began >= kill.amount))
        if hit:
            proc.send_signal(signal.SIGKILL)
            return proc.wait(timeout=DEADLINE)
        assert now < deadline, "the writer neither finished nor reached the kill point"
        time.sleep(POLL)
    return rc


def check_exports(store: Store, expected: dict[int, Manifest], scratch: Path) -> None:
    """Every version exports to exactly the tree it was imported from."""
    assert [v.number for v in store.versions()] == sorted(expected)
    for number, files in expected.items():
        dest = scratch / f"export-v{number}"
        export_version(store, store.version(number), dest)
        try:
            assert manifest(dest) == files, f"v{number} does not export byte-identical"
        finally:
            shutil.rmtree(dest)


@dataclass
class Trial:
    kill: KillAt
    killed: bool
    committed: bool


# -- kill -9 during import ----------------------------------------------------------------------

NEW_PER_TRIAL = 14 << 20


def import_kill_plan(rng: random.Random) -> list[KillAt]:
    """Seeded kill points. The first import (40 MB into an empty store) is always cut while
    its data is being written; the others land early or late in writing, at the moment a pack
    is sealed (just before the version is recorded), or at a random time."""
    first = KillAt("bytes", rng.uniform(0.2, 0.6) * (40 << 20))
    rest = [KillAt("bytes", rng.uniform(0.05, 0.5) * NEW_PER_TRIAL),
            KillAt("bytes", rng.uniform(0.5, 1.0) * NEW_PER_TRIAL),
            KillAt("sealed"),
            KillAt("time", rng.uniform(0.0, 0.2))]
    rng.shuffle(rest)
    return [first, *rest]


@dataclass
class History:
    """The versions a store must hold: number -> manifest, and their root tree ids."""

    store: Path
    scratch: Path
    expected: dict[int, Manifest] = field(default_factory=dict)
    roots: dict[int, bytes] = field(default_factory=dict)

    def check(self, message: str, want: Manifest, rc: int, exports: str = "all") -> bool:
        """After an import ended with `rc`: the store opens, verifies, holds every earlier
        version intact and the new one completely or not at all. True if it was recorded.
        With an empty `message` (no import ran), no new version may appear."""
        killed = rc == -signal.SIGKILL
        assert killed or rc == 0, f"{message}: import failed on its own (exit {rc})"
        # Another process can open and list the store (no lock left dangling by a kill).
        log = dsfs(self.store, "log", "--json")
        assert log.returncode == 0, log.stderr
        listed = {int(v["number"]): v["message"] for v in json.loads(log.stdout)}
        with Store.open(self.store) as store:
            versions = {v.number: v for v in store.versions()}
            assert {n: v.message for n, v in versions.items()} == listed
            new = [n for n in versions if n not in self.expected]
            assert len(new) <= (1 if message else 0), f"{message}: unexpected versions {new}"
            for n, root in self.roots.items():  # earlier versions untouched, down to the root
                assert versions[n].root == root
            if new:
                assert versions[new[0]].message == message
                self.expected[new[0]] = want
                self.roots[new[0]] = versions[new[0]].root
            else:
                assert killed or not message, f"{message}: import succeeded, recorded nothing"
            report = verify_store(store, read_data=True)
            assert report.ok, f"{message}: {report.problems} {report.damaged_objects}"
            check = self.expected if exports == "all" else {n: self.expected[n] for n in new}
            for number, files in check.items():
                dest = self.scratch / f"export-v{number}"
                export_version(store, store.version(number), dest)
                try:
                    assert manifest(dest) == files, f"v{number} does not export byte-identical"
                finally:
                    shutil.rmtree(dest)
        return bool(new)


def test_kill_during_import_leaves_store_consistent(tmp_path: Path) -> None:
    rng = random.Random(90210)
    src = tmp_path / "src"
    make_tree(src, rng, 40 << 20)
    store_path = tmp_path / "store"
    Store.create(store_path).close()
    history = History(store_path, tmp_path)
    trials: list[Trial] = []
    for k, kill in enumerate(import_kill_plan(rng)):
        if k:
            mutate(src, rng, NEW_PER_TRIAL)
        want = manifest(src)
        message = f"trial-{k}"
        before = set(pack_files(store_path))
        rc = run_until(spawn_import(store_path, src, message), store_path, before, kill)
        committed = history.check(message, want, rc)
        trials.append(Trial(kill, rc == -signal.SIGKILL, committed))
        if not committed:
            # Import the same tree again, uninterrupted, on top of what the kill left behind.
            again = f"trial-{k}-again"
            rc = spawn_import(store_path, src, again).wait(timeout=DEADLINE)
            assert rc == 0
            assert history.check(again, want, rc, exports="new")

    assert trials[0].killed and not trials[0].committed, \
        f"the first import was not cut while writing, so nothing was tested: {trials}"
    assert sum(t.killed and not t.committed for t in trials) >= 3, trials

    # gc clears what the kills left behind, and keeps every version.
    with Store.open(store_path) as store:
        gc_report = collect_garbage(store)
        assert gc_report.kept_damaged == []
        assert _tmp_names(store_path) == set()
    history.check("", {}, 0)


# -- one importer, concurrent readers -----------------------------------------------------------

@dataclass
class Importer:
    """Imports a changing tree again and again, each time as its own `dsfs import` process."""

    store: Path
    src: Path
    rounds: int
    seed: int
    manifest_dir: Path
    manifests: dict[str, Manifest] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        rng = random.Random(self.seed)
        try:
            for k in range(self.rounds):
                if k:
                    mutate(self.src, rng, 3 << 20)
                message = f"gen-{k}"
                files = manifest(self.src)
                with self.lock:
                    self.manifests[message] = files
                # For the reader process: written (atomically) before the import starts.
                tmp = self.manifest_dir / f".{message}.tmp"
                tmp.write_text(json.dumps(files))
                os.replace(tmp, self.manifest_dir / f"{message}.json")
                res = dsfs(self.store, "import", str(self.src), "-m", message)
                if res.returncode != 0:
                    self.errors.append(f"import {message}: exit {res.returncode}: {res.stderr}")
                    return
        except Exception as exc:  # reported by the test thread
            self.errors.append(repr(exc))
        finally:
            self.done.set()

    def manifest_of(self, message: str) -> Manifest:
        with self.lock:
            return self.manifests[message]


FAST_READER = """
import hashlib, json, sys, time
from pathlib import Path
from vfs.errors import DsfsError
from vfs.model import Kind
from vfs.store import Store
from vfs.verify import verify_store

store_path, manifests, stop = (Path(a) for a in sys.argv[1:4])


def files(store, entry, prefix):
    for e in store.list_dir(entry):
        name = prefix + e.name.decode()
        if e.kind == Kind.DIR:
            yield from files(store, e, name + "/")
        elif e.kind == Kind.FILE:
            yield name, e


def fail(text):
    print(json.dumps({"error": text}), flush=True)
    sys.exit(1)


checked, lists = 0, set()
with Store.open(store_path, cache_bytes=0) as store:
    while not stop.exists():
        versions = store.versions()
        lists.add(tuple(v.number for v in versions))
        if not versions:
            time.sleep(0.001)
            continue
        v = versions[-1]
        want = json.loads((manifests / (v.message + ".json")).read_text())
        try:
            got = {rel: hashlib.sha256(store.read(e, 0, e.size)).hexdigest()
                   for rel, e in files(store, v.root_entry, "")}
            report = verify_store(store) if checked % 4 == 0 else None
        except DsfsError as exc:
            fail(f"v{v.number} is listed but cannot be read: {exc}")
        if got != want:
            fail(f"v{v.number} is listed but does not hold what was imported")
        if report is not None and not report.ok:
            fail(f"verify failed while importing: {report.problems}")
        checked += 1
print(json.dumps({"checked": checked, "lists": len(lists)}), flush=True)
"""
"""A reader in its own process that reads the newest version again and again, as fast as it
can, each time completely (every file hashed) and now and then verifies the store."""


def _export_matches(store: Path, number: int, want: Manifest, dest: Path) -> None:
    res = dsfs(store, "export", f"v{number}", str(dest))
    assert res.returncode == 0, f"export v{number}: {res.stderr}"
    try:
        assert manifest(dest) == want, f"v{number} was listed but is not complete"
    finally:
        shutil.rmtree(dest)


def test_readers_never_see_a_half_written_version(tmp_path: Path) -> None:
    rng = random.Random(777)
    src = tmp_path / "src"
    make_tree(src, rng, 12 << 20)
    store_path = tmp_path / "store"
    Store.create(store_path).close()
    manifest_dir = tmp_path / "manifests"
    manifest_dir.mkdir()
    stop = tmp_path / "stop-reading"
    importer = Importer(store_path, src, rounds=8, seed=778, manifest_dir=manifest_dir)
    fast = subprocess.Popen([sys.executable, "-c", FAST_READER, str(store_path),
                             str(manifest_dir), str(stop)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    thread = threading.Thread(target=importer.run, name="importer")
    thread.start()
    seen_lists: set[tuple[int, ...]] = set()
    rounds = 0
    try:
        deadline = time.monotonic() + 4 * DEADLINE
        while not importer.done.is_set():
            assert time.monotonic() < deadline, "the importer did not finish in time"
            log = dsfs(store_path, "log", "--json")
            assert log.returncode == 0, log.stderr
            listed = [(int(v["number"]), str(v["message"])) for v in json.loads(log.stdout)]
            seen_lists.add(tuple(n for n, _ in listed))
            if not listed:
                time.sleep(POLL)
                continue
            rounds += 1
            # The newest version is the one most likely to be caught half-written.
            number, message = listed[-1]
            want = importer.manifest_of(message)
            _export_matches(store_path, number, want, tmp_path / f"r{rounds}")
            n2, m2 = listed[rng.randrange(len(listed))]
            want2 = importer.manifest_of(m2)
            rel = sorted(want2)[rng.randrange(len(want2))]
            cat = subprocess.run([*DSFS, "--store", str(store_path), "cat", f"v{n2}:{rel}"],
                                 cwd=REPO, capture_output=True, timeout=DEADLINE, check=False)
            assert cat.returncode == 0, cat.stderr
            assert hashlib.sha256(cat.stdout).hexdigest() == want2[rel], f"v{n2}:{rel}"
            if rounds % 2 == 0:
                ver = dsfs(store_path, "verify", "--json")
                assert ver.returncode == 0, ver.stdout
                assert json.loads(ver.stdout)["ok"] is True
    finally:
        thread.join(timeout=4 * DEADLINE)
        stop.touch()
        try:
            out, err = fast.communicate(timeout=DEADLINE)
        finally:
            if fast.poll() is None:
                fast.kill()
                fast.communicate()
    assert not thread.is_alive()
    assert importer.errors == []
    # The reads really overlapped the imports.
    assert rounds >= 2 and len(seen_lists) >= 3, (rounds, seen_lists)
    assert fast.returncode == 0, f"{out} {err}"
    summary = json.loads(out.splitlines()[-1])
    assert summary["checked"] >= 8 and summary["lists"] >= 5, summary

    with Store.open(store_path) as store:
        versions = store.versions()
        assert [v.message for v in versions] == [f"gen-{k}" for k in range(8)]
        assert verify_store(store, read_data=True).ok
        for v in versions[-2:]:
            dest = tmp_path / f"final-{v.number}"
            export_version(store, v, dest)
            assert manifest(dest) == importer.manifest_of(v.message)


def test_concurrent_importers_one_killed(tmp_path: Path) -> None:
    """Writers may run side by side; one dying by SIGKILL must not harm the other's version."""
    rng = random.Random(4711)
    src_a, src_b = tmp_path / "a", tmp_path / "b"
    make_tree(src_a, rng, 8 << 20)
    make_tree(src_b, rng, 8 << 20)
    store_path = tmp_path / "store"
    Store.create(store_path).close()
    expected: dict[str, Manifest] = {}
    plan = [KillAt("bytes", rng.uniform(1, 6) * (1 << 20)), KillAt("sealed"),
            KillAt("time", rng.uniform(0.0, 0.2))]
    b_killed = 0
    for k, kill in enumerate(plan):
        if k:
            mutate(src_a, rng, 2 << 20)
            mutate(src_b, rng, 2 << 20)
        want_a, want_b = manifest(src_a), manifest(src_b)
        before = set(pack_files(store_path))
        proc_b = spawn_import(store_path, src_b, f"b-{k}")
        proc_a = spawn_import(store_path, src_a, f"a-{k}")
        try:
            rc_b = run_until(proc_b, store_path, before, kill)
            assert rc_b in (0, -signal.SIGKILL)
            b_killed += rc_b != 0
            assert proc_a.wait(timeout=DEADLINE) == 0, "the surviving importer failed"
        finally:
            for proc in (proc_a, proc_b):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        expected[f"a-{k}"] = want_a
        with Store.open(store_path) as store:
            messages = [v.message for v in store.versions()]
            b_committed = f"b-{k}" in messages
            if b_committed:
                expected[f"b-{k}"] = want_b
            else:
                assert rc_b != 0
            assert sorted(messages) == sorted(expected)
            numbers = [v.number for v in store.versions()]
            assert len(set(numbers)) == len(numbers)
            report = verify_store(store, read_data=True)
            assert report.ok, report.problems
            for v in store.versions():
                dest = tmp_path / f"x-{v.number}"
                export_version(store, v, dest)
                assert manifest(dest) == expected[v.message], v.message
                shutil.rmtree(dest)
    assert b_killed, "no importer was killed, so nothing was tested"


# -- kill -9 during gc --------------------------------------------------------------------------

def _keep_fraction(src: Path, dest: Path, rng: random.Random, fraction: float) -> None:
    """Copy a seeded random `fraction` of src's files to dest (and one file of its own)."""
    files = _files(src)
    for path in rng.sample(files, max(1, int(len(files) * fraction))):
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    _write(dest / "only-in-v2.txt", b"v2\n" * 1000)


def _packs_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "packs").rglob("*") if p.is_file())


def test_kill_during_gc_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(31337)
    src1, src2 = tmp_path / "src1", tmp_path / "src2"
    make_tree(src1, rng, 40 << 20)
    _keep_fraction(src1, src2, rng, 0.2)  # v1's data packs end up mostly dead: gc rewrites them
    want = manifest(src2)
    pristine = tmp_path / "pristine"
    with Store.create(pristine) as store:
        import_tree(store, src1, "v1")
        import_tree(store, src2, "v2")
        store.drop("v1")
    size_before = _packs_bytes(pristine)

    with Store.open(pristine) as store:
        planned = collect_garbage(store, dry_run=True)
    assert planned.packs_rewritten > 0 and planned.bytes_rewritten > 1 << 20
    plan = [KillAt("bytes", rng.uniform(k / 4, (k + 1) / 4) * planned.bytes_rewritten)
            for k in range(4)]
    plan += [KillAt("sealed"), KillAt("time", rng.uniform(0.0, 0.1))]
    rng.shuffle(plan)
    killed = 0
    for k, kill in enumerate(plan):
        store_path = tmp_path / f"trial-{k}"
        shutil.copytree(pristine, store_path)
        before = set(pack_files(store_path))
        proc = subprocess.Popen([*DSFS, "--store", str(store_path), "gc"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rc = run_until(proc, store_path, before, kill)
        assert rc in (0, -signal.SIGKILL), f"trial {k}: gc failed on its own (exit {rc})"
        killed += rc == -signal.SIGKILL
        with Store.open(store_path) as store:
            assert [v.number for v in store.versions()] == [2]
            report = verify_store(store, read_data=True)
            assert report.ok, f"trial {k} {kill}: {report.problems} {report.damaged_objects}"
            check_exports(store, {2: want}, store_path.parent)
            # The next gc finishes the job and clears what the killed one left behind.
            collect_garbage(store)
            assert _tmp_names(store_path) == set()
            assert verify_store(store, read_data=True).ok
            check_exports(store, {2: want}, store_path.parent)
        assert _packs_bytes(store_path) < size_before // 2
        shutil.rmtree(store_path)
    assert killed, "no kill landed while gc was running, so nothing was tested"


def test_a_truncate_cut_short_by_a_crash_happens_entirely(store: Store, tmp_path: Path) -> None:
    """A truncate records the new size, then cuts the overlay. Killed between the two, the
    file must read as truncated, and extending it again must show zeros, not the old bytes
    (the old order - cut first, size after - left the old size over cut bytes: neither
    state, as the kill -9 torture found)."""
    write(tmp_path / "src" / "f.bin", b"base\n")
    import_tree(store, tmp_path / "src", message="v1")
    session = open_head(store)
    fs = session.fs
    write_at(fs, "f.bin", 0, b"W" * 20_000)
    fs.sync_all()
    ino = path_ino(fs, "f.bin")
    # the state a kill -9 leaves between the two steps: the size recorded, the bytes not cut
    node = fs.db.node(ino)
    assert node is not None
    fs.db.put_node(node.with_(size=5_000, base_len=min(node.base_len, 5_000)))
    crash(session)
    with open_head(store) as session:
        assert read_all(session.fs, "f.bin") == b"W" * 5_000
        session.fs.setattr(path_ino(session.fs, "f.bin"), size=20_000)
        assert read_all(session.fs, "f.bin") == b"W" * 5_000 + bytes(15_000)
