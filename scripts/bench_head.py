"""`scripts/bench head`: the writable @head of a dsfs mount against the local disk (issue 4).

Parts (each can be chosen with --parts; every one runs --repeat times):
  dd        dd of a random file (1 GiB at --scale 1, in the page cache) with bs=1M, with and
            without conv=fsync, into @head and into a directory on the same disk
  commit    `dsfs commit` of a one-line append to one file of a million-file version, through
            the mount daemon; `dsfs status --json` before it; the daemon's memory afterwards
  commit1g  `cp -a` of a ~1 GiB dataset tree into @head of an empty store (and to the disk),
            then `dsfs commit`; against `dsfs import` of the same tree into an empty store
  git       `git clone --no-local --no-hardlinks` of a local repository (3,000 files, 300
            commits) into @head and to the disk; `git status` in the clone
  cp        `cp -a` of 10,000 files of 1-16 KiB (100 directories) into @head and to the disk,
            then `rm -rf` of the copy

Native and dsfs run in the same repeat, in alternating order. Written data is flushed with a
`sync` inside the timed command line (dd: conv=fsync). Inputs are cached under WORKDIR/data
(see bench_head_data.py); stores, mounts and copies live under WORKDIR/head and WORKDIR/mnt/head
and are removed at the end (unless --keep); mounts are always unmounted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_head_data as data
import bench_head_report

B = data.B
MB = 1_000_000
TIMEOUT = 1800.0  # seconds until a timed command counts as hung
PARTS = ("dd", "commit", "commit1g", "git", "cp")
Json = dict[str, Any]
Mount = Any  # bench.DsfsMount
Timing = Any  # bench.Timing


@dataclass
class Part:
    key: str
    runs: list[Json] = field(default_factory=list)
    facts: Json = field(default_factory=dict)  # untimed: sizes, paths, memory, mount times
    error: str | None = None


def parse_parts(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = sorted(set(names) - set(PARTS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose parts from {','.join(PARTS)}")
    return [p for p in PARTS if p in names]


def add_head_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="size of the inputs: 1.0 = 1 GiB dd file, ~1 GiB tree, 3,000-file git repository, "
        "10,000 small files, 1,000,000-file version (default 1.0)",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of each part (default 3)")
    p.add_argument(
        "--count",
        type=int,
        help="files in the version the `commit` part changes (default 1,000,000 x scale)",
    )
    p.add_argument(
        "--parts",
        type=parse_parts,
        default=list(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)} (default: all)",
    )


def json_output(log: Path) -> Any:
    """The JSON a command printed (its log starts with the command line)."""
    text = log.read_text(errors="replace").split("\n", 1)[-1]
    start = text.find("{")
    if start < 0:
        raise B.ToolFailed(f"no JSON output (log: {log})")
    return json.JSONDecoder().raw_decode(text[start:])[0]


def daemon_pid(mnt: Path) -> int | None:
    """The mount daemon's pid from its runtime file (mount-<blake2b-8 of the mountpoint>.json)."""
    digest = hashlib.blake2b(os.fsencode(os.path.abspath(mnt)), digest_size=8).hexdigest()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    bases = [Path("/run/dsfs"), Path(f"/tmp/dsfs-{os.getuid()}")]
    if xdg:
        bases.insert(1, Path(xdg) / "dsfs")
    for base in bases:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return int(json.loads((base / f"mount-{digest}.json").read_text())["pid"])
    pids = B.mount_daemons(mnt)
    return pids[0] if pids else None


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def read_file(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(16 << 20):
            pass


def timed_sync() -> float:
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0


class Head:
    def __init__(self, args: argparse.Namespace, runner: Any, sizes: data.Sizes) -> None:
        self.args = args
        self.runner = runner
        self.sizes = sizes
        self.exe: Path = args.dsfs
        self.root = args.workdir / "head"
        self.native = self.root / "native"  # the same disk as the stores
        self.stores = self.root / "stores"
        self.mnt = args.workdir / "mnt" / "head"
        self.commands: dict[str, dict[str, str]] = {}

    # -- helpers ------------------------------------------------------------------------------

    def dsfs(self, store: Path, *args: str) -> list[str]:
        return [str(self.exe), "--store", str(store), *args]

    def repeats(self, part: Part) -> Iterator[int]:
        for rep in range(self.args.repeat):
            B.log(f"{part.key}: repeat {rep + 1}/{self.args.repeat}")
            yield rep

    @staticmethod
    def order(rep: int) -> tuple[str, str]:
        return ("native", "dsfs") if rep % 2 == 0 else ("dsfs", "native")

    def timed(
        self, part: Part, step: str, cmd: Sequence[str], m: Mount | None, cwd: Path | None = None
    ) -> Timing:
        self.commands.setdefault(part.key, {})[step] = B.describe(cmd, cwd, {})
        label = f"head-{part.key}-" + re.sub(r"[^A-Za-z0-9]+", "-", step).strip("-")
        hung = m.hung if m is not None else None
        return self.runner.run(cmd, label, cwd=cwd, timeout=TIMEOUT, on_hang=hung)

    def shell(self, part: Part, step: str, line: str, m: Mount | None) -> float:
        """Seconds of a shell command line (recorded as written, run with bash -o pipefail)."""
        t = self.timed(part, step, ["bash", "-o", "pipefail", "-c", line], m)
        self.commands[part.key][step] = line
        return float(t.seconds)

    @contextlib.contextmanager
    def mounted(self, part: Part, home: Path, fresh: bool) -> Iterator[Mount]:
        """Mount home/store at self.mnt (after `dsfs init` of a new store if fresh)."""
        tool = B.Dsfs(self.runner, home, self.exe)
        m = B.DsfsMount(part.key, self.runner, tool, self.mnt)
        m.clear_mountpoint()
        commands = self.commands.setdefault(part.key, {})
        try:
            if fresh:
                tool.fresh(Path())
            part.facts.setdefault("mount_seconds", []).append(m.mount())
            commands.update(m.commands)  # init and mount first, umount last
            yield m
        except B.ToolFailed as e:
            raise B.ToolFailed(f"{e}{m.failure_details()}") from e
        finally:
            m.unmount()
            commands.update(m.commands)

    def daemon_memory(self, mnt: Path) -> Json:
        pid = daemon_pid(mnt)
        if pid is None:
            return {}
        return {
            "daemon_pid": pid,
            "daemon_rss_mib": B.proc_status_mib(pid, "VmRSS"),
            "daemon_hwm_mib": B.proc_status_mib(pid, "VmHWM"),
        }

    # -- parts --------------------------------------------------------------------------------

    def part_dd(self, part: Part) -> None:
        src = data.random_file(self.args.workdir, self.sizes.random_bytes)
        size = src.stat().st_size
        part.facts.update(source=str(src), bytes=size)
        with self.mounted(part, self.stores / "scratch", fresh=True) as m:
            target = {"native": self.native / "dd.bin", "dsfs": m.mnt / "@head" / "dd.bin"}
            for rep in self.repeats(part):
                r: Json = {}
                for variant, extra in (("fsync", ["conv=fsync"]), ("nofsync", [])):
                    for who in self.order(rep):
                        read_file(src)  # in the page cache
                        os.sync()
                        cmd = ["dd", f"if={src}", f"of={target[who]}", "bs=1M", *extra]
                        t = self.timed(part, f"dd {variant} ({who})", cmd, m)
                        r[f"{variant}_{who}"] = size / MB / t.seconds
                        B.log(f"dd {variant} {who}: {r[f'{variant}_{who}']:.0f} MB/s")
                        got = target[who].stat().st_size
                        if got != size:
                            raise B.ToolFailed(
                                f"{target[who]} has {got} bytes after dd, not {size}"
                            )
                        os.sync()
                        target[who].unlink()
                        os.sync()
                part.runs.append(r)

    def part_commit(self, part: Part) -> None:
        count = self.sizes.manyfiles
        found = data.manyfiles_store(self.runner, self.args.workdir, self.exe, count)
        store, how = data.copy_store(found.source, self.stores / "manyfiles" / "store")
        part.facts.update(
            files=count,
            source=str(found.source),
            found=found.how,
            copy=how,
            store=str(store),
            tree=found.tree_command,
            versions_before=(data.newest_version(self.runner, self.exe, store) or {}).get("number"),
        )
        with self.mounted(part, store.parent, fresh=False) as m:
            part.facts["after_mount"] = self.daemon_memory(m.mnt)
            head = m.mnt / "@head"
            dirs = sorted(os.listdir(head))
            for rep in self.repeats(part):
                d = dirs[(17 + 389 * rep) % len(dirs)]
                names = sorted(os.listdir(head / d))
                rel = f"{d}/{names[(5 + 97 * rep) % len(names)]}"
                with open(head / rel, "ab") as f:
                    f.write(f"bench head: repeat {rep + 1} at {time.time():.3f}\n".encode())
                expected = (head / rel).read_bytes()
                status_cmd = self.dsfs(store, "status", "--json", "-q")
                t_status = self.timed(part, "status", status_cmd, m)
                status = json_output(self.runner.last_log)
                msg = f"bench head: one file changed ({rep + 1})"
                commit_cmd = self.dsfs(store, "commit", "--json", "-q", "-m", msg)
                t_commit = self.timed(part, "commit", commit_cmd, m)
                reply = json_output(self.runner.last_log)
                changes = [(c["change"], c["path"]) for c in status["changes"]]
                if changes != [("modified", rel)]:
                    raise B.ToolFailed(f"dsfs status after appending to {rel} lists {changes}")
                committed = m.mnt / f"@{reply['version']}" / rel
                if reply["files_rebuilt"] != 1 or committed.read_bytes() != expected:
                    raise B.ToolFailed(
                        f"commit {reply}: {committed} does not hold what @head/{rel} held"
                    )
                t_cli = self.timed(part, "CLI start-up", [str(self.exe), "--help"], m)
                part.runs.append(
                    {
                        "cli_start_seconds": t_cli.seconds,
                        "commit_seconds": t_commit.seconds,
                        "commit_cpu_seconds": t_commit.cpu_seconds,
                        "status_seconds": t_status.seconds,
                        "status_cpu_seconds": t_status.cpu_seconds,
                        "file": rel,
                        **{
                            k: reply[k]
                            for k in (
                                "version",
                                "files_rebuilt",
                                "bytes_chunked",
                                "new_stored_bytes",
                            )
                        },
                    }
                )
                B.log(f"commit: {t_commit.seconds:.2f} s, status {t_status.seconds:.2f} s")
            part.facts["after_commits"] = self.daemon_memory(m.mnt)

    def part_commit1g(self, part: Part) -> None:
        tree = data.ingest_tree(self.runner, self.args.workdir, self.sizes.tree_scale)
        st = B.tree_stats(tree)
        part.facts.update(
            source=str(tree), files=st.files, bytes=st.bytes, scale=self.sizes.tree_scale
        )
        native_dst = self.native / tree.name
        src = shlex.quote(str(tree))
        for rep in self.repeats(part):
            r: Json = {}
            steps = (*self.order(rep), "import") if rep % 2 == 0 else ("import", *self.order(rep))
            for who in steps:
                if who == "native":
                    remove(native_dst)
                    os.sync()
                    B.warm_tree(tree)
                    line = f"cp -a {src} {shlex.quote(str(native_dst))} && sync"
                    r["cp_native"] = self.shell(part, "cp -a (native)", line, None)
                    remove(native_dst)
                elif who == "dsfs":
                    r.update(self._copy_and_commit(part, tree, st))
                else:
                    r.update(self._import(part, tree, st))
            os.sync()
            part.runs.append(r)

    def _copy_and_commit(self, part: Part, tree: Path, st: Any) -> Json:
        home = self.stores / "commit1g"
        r: Json = {}
        with self.mounted(part, home, fresh=True) as m:
            dst = m.mnt / "@head" / tree.name
            B.warm_tree(tree)
            os.sync()
            line = f"cp -a {shlex.quote(str(tree))} {shlex.quote(str(dst))} && sync"
            r["cp_dsfs"] = self.shell(part, "cp -a (dsfs)", line, m)
            B.drop_page_cache()
            cmd = self.dsfs(home / "store", "commit", "--json", "-q", "-m", "bench head: tree")
            try:  # a failed commit still leaves the cp -a figures of this repeat
                t = self.timed(part, "commit", cmd, m)
            except B.ToolFailed as e:
                part.error = part.error or f"{e}{m.failure_details()}"
                B.log(f"commit1g: commit FAILED: {e}")
                r["commit_failed"] = True
                t = None
            if t is not None:
                flush = timed_sync()
                reply = json_output(self.runner.last_log)
                r.update(
                    commit_seconds=t.seconds + flush,
                    commit_command_seconds=t.seconds,
                    commit_sync_seconds=flush,
                    commit_cpu_seconds=t.cpu_seconds,
                    commit_new_stored_bytes=reply["new_stored_bytes"],
                    commit_files_rebuilt=reply["files_rebuilt"],
                    **self.daemon_memory(m.mnt),
                )
        if t is not None:
            self._check_version(home / "store", st, "commit")
        shutil.rmtree(home)
        return r

    def _import(self, part: Part, tree: Path, st: Any) -> Json:
        home = self.stores / "import1g"
        tool = B.Dsfs(self.runner, home, self.exe)
        tool.fresh(tree)
        self.commands.setdefault(part.key, {}).update(tool.commands)
        B.drop_page_cache()
        cmd = self.dsfs(home / "store", "import", str(tree), "-m", "bench head: tree", "-q")
        t = self.timed(part, "import", cmd, None)
        flush = timed_sync()
        self._check_version(home / "store", st, "import")
        shutil.rmtree(home)
        return {
            "import_seconds": t.seconds + flush,
            "import_command_seconds": t.seconds,
            "import_sync_seconds": flush,
            "import_cpu_seconds": t.cpu_seconds,
        }

    def _check_version(self, store: Path, st: Any, how: str) -> None:
        v = data.newest_version(self.runner, self.exe, store)
        got = (v["stats"]["files"], v["stats"]["logical_bytes"]) if v else None
        if got != (st.files, st.bytes):
            raise B.ToolFailed(
                f"after `dsfs {how}` the newest version of {store} holds (files, bytes) {got}, "
                f"the tree {(st.files, st.bytes)}"
            )

    def part_git(self, part: Part) -> None:
        s = self.sizes
        src = data.git_repo(self.args.workdir, s.git_files, s.git_dirs, s.git_commits)
        part.facts.update(
            source=str(src), files=s.git_files, dirs=s.git_dirs, commits=s.git_commits
        )
        with self.mounted(part, self.stores / "scratch", fresh=True) as m:
            dst = {"native": self.native / "clone", "dsfs": m.mnt / "@head" / "clone"}
            for rep in self.repeats(part):
                r: Json = {}
                for who in self.order(rep):
                    remove(dst[who])
                    os.sync()
                    B.warm_tree(src)
                    q = shlex.quote
                    line = (
                        f"git clone -q --no-local --no-hardlinks {q(str(src))} {q(str(dst[who]))}"
                    )
                    r[f"clone_{who}"] = self.shell(part, f"clone ({who})", line + " && sync", m)
                    self.timed(part, f"git status warm-up ({who})", ["git", "status"], m, dst[who])
                    t = self.timed(part, f"git status ({who})", ["git", "status"], m, dst[who])
                    r[f"status_{who}"] = t.seconds
                    dirty = self.runner.capture(["git", "status", "--porcelain"], cwd=dst[who])
                    if dirty != "":
                        raise B.ToolFailed(f"`git status --porcelain` in {dst[who]}: {dirty!r}")
                    remove(dst[who])
                    os.sync()
                part.runs.append(r)

    def part_cp(self, part: Part) -> None:
        src = data.small_tree(self.args.workdir, self.sizes.small_files, self.sizes.small_dirs)
        st = B.tree_stats(src)
        part.facts.update(
            source=str(src), files=st.files, bytes=st.bytes, dirs=self.sizes.small_dirs
        )
        with self.mounted(part, self.stores / "scratch", fresh=True) as m:
            dst = {"native": self.native / "small", "dsfs": m.mnt / "@head" / "small"}
            for rep in self.repeats(part):
                r: Json = {}
                for who in self.order(rep):
                    remove(dst[who])
                    os.sync()
                    B.warm_tree(src)
                    q = shlex.quote
                    line = f"cp -a {q(str(src))} {q(str(dst[who]))} && sync"
                    r[f"cp_{who}"] = self.shell(part, f"cp -a ({who})", line, m)
                    got = B.tree_stats(dst[who])
                    if (got.files, got.bytes) != (st.files, st.bytes):
                        raise B.ToolFailed(f"{dst[who]} holds {got} after cp -a, {src} {st}")
                    line = f"rm -rf {q(str(dst[who]))} && sync"
                    r[f"rm_{who}"] = self.shell(part, f"rm -rf ({who})", line, m)
                part.runs.append(r)

    def cleanup(self) -> None:
        if not self.args.keep:
            shutil.rmtree(self.root / "stores", ignore_errors=True)
            shutil.rmtree(self.native, ignore_errors=True)
        if not B.is_mounted(self.mnt):
            with contextlib.suppress(OSError):
                self.mnt.rmdir()


def run_head(args: argparse.Namespace) -> Any:
    if args.scale <= 0:
        raise B.BenchError("--scale must be > 0")
    if args.cold or args.no_sync:
        raise B.BenchError("head takes neither --cold nor --no-sync (see scripts/bench_head.py)")
    runner = B.Runner(args.workdir, cold=False)
    try:
        B.drop_page_cache()
    except OSError as e:
        raise B.BenchError(f"head needs a writable /proc/sys/vm/drop_caches: {e}") from e
    tool = B.Dsfs(runner, args.workdir / "head", args.dsfs)
    tool.ensure_installed()
    args.dsfs = tool.exe
    h = Head(args, runner, data.Sizes.for_args(args.scale, args.count))
    parts = [Part(key) for key in args.parts]
    methods: dict[str, Callable[[Part], None]] = {
        "dd": h.part_dd,
        "commit": h.part_commit,
        "commit1g": h.part_commit1g,
        "git": h.part_git,
        "cp": h.part_cp,
    }
    h.native.mkdir(parents=True, exist_ok=True)
    version = tool.version()  # the code the daemons run: others may change it during the run
    restore = B.stop_signals()
    try:
        for part in parts:
            B.log(f"part {part.key}")
            t0, load = time.perf_counter(), os.getloadavg()[0]
            try:
                methods[part.key](part)
            except (B.ToolFailed, OSError) as e:
                part.error = part.error or str(e)
                B.log(f"{part.key} FAILED: {e}")
            part.facts["seconds"] = time.perf_counter() - t0
            part.facts["load_1min"] = [load, os.getloadavg()[0]]  # at its start and its end
    except KeyboardInterrupt as e:
        raise B.BenchError(f"interrupted ({e or 'SIGINT'}): every mount was unmounted") from e
    finally:
        restore()
        h.cleanup()
    after = tool.version()
    if after != version:
        version += f"; at the end of the run: {after}"
    return bench_head_report.make(args, h.commands, parts, version)
