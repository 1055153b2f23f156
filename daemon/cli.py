"""The `dsfs` command line: a thin layer over `vfs`.

Owns: argument parsing, resolving settings (store path from --store, $DSFS_STORE or the
default), printing results, and turning domain errors into one line and an exit code. Bugs are
not disguised: an unexpected exception keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from daemon import fmt
from daemon.cli_common import DEFAULT_STORE, emit_json, make_progress, note, open_store, store_path
from vfs.config import ChunkParams
from vfs.errors import DsfsError, UserError
from vfs.store import Store

Handler = Callable[[argparse.Namespace], int]


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in units and t[-1:] != "" and not t[-1:].isdigit() else ""
    try:
        return int(float(t[:-1] if unit else t) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 512K or 1M)") from None


def split_spec(spec: str) -> tuple[str, bytes]:
    version, _, path = spec.partition(":")
    return version, os.fsencode(path)


# -- commands --------------------------------------------------------------------------------

def cmd_init(args: argparse.Namespace) -> int:
    chunk = ChunkParams.for_average(args.chunk_avg) if args.chunk_avg else None
    try:
        store = Store.create(store_path(args), chunk=chunk, zstd_level=args.zstd_level)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    with store:
        note(args, f"initialized empty dsfs store at {store.root}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from vfs.importer import import_tree

    with open_store(args) as store:
        start = time.monotonic()
        result = import_tree(store, Path(args.dir), args.message or "", tag=args.tag,
                             progress=make_progress(args.quiet),
                             skip_special=args.skip_special)
        took = time.monotonic() - start
        v = result.version
        for sk in result.skipped:
            print(f"dsfs: skipped {sk.path}: {sk.reason}", file=sys.stderr)
        for w in result.warnings:
            print(f"dsfs: warning: {w}", file=sys.stderr)
        if args.json:
            emit_json({**fmt.version_dict(v, [args.tag] if args.tag else []),
                       "seconds": round(took, 3),
                       "skipped": [{"path": k.path, "reason": k.reason} for k in result.skipped],
                       "warnings": result.warnings})
        else:
            print(v.name)
            s = v.stats
            note(args, f"{v.name}: {s.files:,} files ({s.reused_files:,} unchanged), "
                       f"{fmt.size(s.logical_bytes)}, {fmt.size(s.new_stored_bytes)} new stored, "
                       f"{took:.1f} s")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        tags = store.tags_by_version()
        versions = store.versions()
        if args.json:
            emit_json([fmt.version_dict(v, tags.get(v.number, [])) for v in versions])
        elif not versions:
            note(args, "no versions yet: run `dsfs import DIR`")
        else:
            for v in reversed(versions):
                print(fmt.version_line(v, tags.get(v.number, [])))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        v = store.resolve(args.version)
        d = fmt.version_dict(v, store.tags_by_version().get(v.number, []))
        if args.json:
            emit_json(d)
            return 0
        print(f"version  {v.name}" + (f"  (tags: {', '.join(d['tags'])})" if d["tags"] else ""))
        print(f"parent   {d['parent'] or '-'}")
        print(f"date     {fmt.when(v.time_ns)}")
        print(f"author   {v.author}")
        print(f"source   {v.source}")
        s = v.stats
        print(f"files    {s.files:,} in {s.dirs:,} directories, {s.symlinks:,} symlinks")
        print(f"size     {fmt.size(s.logical_bytes)} ({s.logical_bytes:,} bytes)")
        print(f"stored   {fmt.size(s.new_stored_bytes)} new ({s.new_chunks:,} new objects)")
        print(f"\n    {v.message}")
        if v.repair is not None:
            print(f"\nrepaired {fmt.when(v.repair.time_ns)}: {len(v.repair.lost)} paths lost "
                  "(their data was gone):")
            for x in v.repair.lost:
                print(f"    {fmt.path(x.path) or '.'}: {x.problem}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from vfs.model import Kind

    spec, path = split_spec(args.spec)
    with open_store(args) as store:
        v = store.resolve(spec)
        e = store.lookup(v, path)
        entries = list(store.list_dir(e)) if e.kind == Kind.DIR else [e]
        if args.json:
            emit_json([fmt.entry_dict(x) for x in entries])
        else:
            for x in entries:
                print(fmt.entry_line(x, args.long))
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    from vfs.model import Kind

    spec, path = split_spec(args.spec)
    if not path:
        raise UserError("give a file as VERSION:PATH, e.g. `dsfs cat v3:labels.csv`")
    with open_store(args) as store:
        v = store.resolve(spec)
        e = store.lookup(v, path)
        if e.kind != Kind.FILE:
            raise UserError(f"{v.name}:{fmt.path(path)} is a {e.kind.name.lower()}, not a file")
        out = sys.stdout.buffer
        for _, piece in store.contents.iter_pieces(e.content, e.size):
            if isinstance(piece, int):
                zeros = bytes(min(piece, 1 << 20))
                left = piece
                while left:
                    n = min(left, len(zeros))
                    out.write(zeros[:n])
                    left -= n
            else:
                out.write(piece)
        out.flush()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from vfs.exporter import export_version

    with open_store(args) as store:
        v = store.resolve(args.version)
        result = export_version(store, v, Path(args.dest), force=args.force,
                                progress=make_progress(args.quiet))
        for w in result.warnings or []:
            print(f"dsfs: warning: {w}", file=sys.stderr)
        note(args, f"exported {v.name} to {args.dest}: {result.files:,} files, "
                   f"{fmt.size(result.bytes)}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from vfs.diff import diff_versions
    from vfs.model import Kind

    with open_store(args) as store:
        a, b = store.resolve(args.a), store.resolve(args.b)
        changes = diff_versions(store, a.root, b.root, renames=not args.no_renames)
        counts = {"A": 0, "D": 0, "M": 0, "T": 0, "R": 0}
        delta = 0
        for c in changes:
            counts[c.status] += 1
            for e, sign in ((c.old, -1), (c.new, 1)):
                if e is not None and e.kind == Kind.FILE:
                    delta += sign * e.size
        if args.json:
            emit_json({"from": a.name, "to": b.name,
                       "summary": {"added": counts["A"], "removed": counts["D"],
                                   "modified": counts["M"], "type_changed": counts["T"],
                                   "renamed": counts["R"], "bytes_delta": delta},
                       "changes": [] if args.stat else [
                           {"status": c.status, "path": os.fsdecode(c.path),
                            "type": (c.new or c.old).kind.name.lower(),  # type: ignore[union-attr]
                            **({"old_path": os.fsdecode(c.old_path)}
                               if c.old_path is not None else {})
                            } for c in changes]})
            return 0
        if args.stat:  # the summary is the result asked for: stdout, like the change lines
            print(f"{a.name}..{b.name}: {counts['A']:,} added, {counts['D']:,} removed, "
                  f"{counts['M']:,} modified, {counts['T']:,} type changed, "
                  f"{counts['R']:,} renamed, {'+' if delta >= 0 else '-'}{fmt.size(abs(delta))}")
            return 0
        for c in changes:
            e = c.new or c.old
            slash = "/" if e is not None and e.kind == Kind.DIR else ""
            if c.old_path is not None:
                print(f"{c.status} {fmt.path(c.old_path)} -> {fmt.path(c.path)}{slash}")
            else:
                print(f"{c.status} {fmt.path(c.path)}{slash}")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        if args.delete:
            if args.version is not None or args.name is not None:
                raise UserError("`dsfs tag --delete NAME` takes only the tag name")
            n = store.untag(args.delete)
            note(args, f"deleted tag {args.delete} (was v{n})")
            return 0
        if args.version is None or args.name is None:
            raise UserError("usage: dsfs tag VERSION NAME, or dsfs tag --delete NAME")
        v = store.tag(args.version, args.name)
        note(args, f"tagged {v.name} as {args.name}")
    return 0


def cmd_tags(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        tags = store.tags()
        if args.json:
            emit_json({k: f"v{n}" for k, n in sorted(tags.items())})
        else:
            for name, n in sorted(tags.items()):
                print(f"{name}\tv{n}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from vfs.stats import store_stats

    with open_store(args) as store:
        st = store_stats(store)
        if args.json:
            emit_json(st.to_dict())
            return 0
        print(f"versions  {st.versions} ({st.tags} tags)")
        print(f"packs     {st.packs:,}, {fmt.size(st.pack_bytes)}")
        print(f"index     {fmt.size(st.index_bytes)}")
        for kind, n in sorted(st.objects.items()):
            print(f"{kind:<9} {n:>12,} objects  {fmt.size(st.plain_bytes[kind]):>10} plain  "
                  f"{fmt.size(st.stored_bytes[kind]):>10} stored")
    return 0


def cmd_drop(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        v = store.drop(args.version)
        note(args, f"dropped {v.name}; run `dsfs gc` to free its space")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from vfs.gc import collect_garbage

    if args.remote is not None:
        from daemon.remotecli import gc_remote_command

        if args.compact:
            raise UserError("--compact is for the local store; remote packs are not rewritten")
        return gc_remote_command(args)

    with open_store(args) as store:
        r = collect_garbage(store, dry_run=args.dry_run, progress=make_progress(args.quiet),
                            compact=args.compact)
        if args.json:
            emit_json({"dry_run": r.dry_run, "compact": args.compact,
                       "bytes_freed": r.bytes_freed,
                       "packs_deleted": r.packs_deleted, "packs_rewritten": r.packs_rewritten,
                       "dead_objects": r.dead_objects, "live_objects": r.live_objects,
                       "orphan_files": r.orphan_files, "kept_damaged_packs": r.kept_damaged,
                       "dead_bytes_kept": r.dead_bytes_kept,
                       "packs_kept_with_dead_data": r.packs_kept_with_dead,
                       "kept_for_open_files": [f"v{n}" for n in r.kept_open]})
        else:
            verb = "would free" if r.dry_run else "freed"
            print(f"{verb} {fmt.size(r.bytes_freed)} ({r.bytes_freed:,} bytes): "
                  f"{r.dead_objects:,} dead objects, {r.packs_deleted} packs deleted, "
                  f"{r.packs_rewritten} rewritten, {r.orphan_files} orphan files")
            if r.dead_bytes_kept:
                stays = "would stay" if r.dry_run else "stays"
                packs = "1 pack that is" if r.packs_kept_with_dead == 1 else \
                    f"{r.packs_kept_with_dead} packs that are"
                print(f"{fmt.size(r.dead_bytes_kept)} of dropped data {stays} in {packs} "
                      "more than half live; `dsfs gc --compact` rewrites them")
            for n in r.kept_open:
                print(f"v{n} is dropped but a mount has files of it open: its data stays "
                      "until they are closed and gc runs again")
            for name in r.kept_damaged:
                print(f"dsfs: warning: pack {name[:12]} kept: it holds damaged live data "
                      "(run `dsfs verify --read-data`)", file=sys.stderr)
    return 0


def cmd_mount(args: argparse.Namespace) -> int:
    import logging

    from daemon import mount
    from daemon.cachecli import mount_cache_bytes

    opts = mount.MountOptions(store=store_path(args).absolute(),
                              mountpoint=Path(args.mountpoint).absolute(),
                              allow_other=args.allow_other, cache_bytes=args.memory_cache,
                              xattrs=args.xattrs, sync_on_close=args.sync_on_close,
                              disk_cache_bytes=mount_cache_bytes(args),
                              pull_every=args.pull_every)
    if args.pull_every is not None:
        from vfs.remote.remotes import Remotes

        if args.pull_every < 1:
            raise UserError("--pull-every takes at least 1 (seconds)")
        Remotes(opts.store).get(None)  # a store without a remote fails here, in the caller
    Store.open(opts.store).close()  # a missing or foreign store fails here, in the caller
    if args.foreground:
        level = logging.DEBUG if args.debug else logging.INFO
        journal = "JOURNAL_STREAM" in os.environ
        logging.basicConfig(level=level, stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s" if journal else
                            "%(asctime)s %(levelname)s %(name)s: %(message)s")
        ready_fd = args.ready_fd
        try:
            mount.serve(opts, ready_fd)
        except DsfsError:
            if ready_fd is not None:
                os.close(ready_fd)
            raise
        return 0
    mount.preflight(opts)
    argv = ["--store", str(opts.store), "mount", str(opts.mountpoint),
            "--memory-cache", str(args.memory_cache), "--xattrs", args.xattrs,
            "--cache-size", str(opts.disk_cache_bytes)]
    if args.allow_other:
        argv.append("--allow-other")
    if args.sync_on_close:
        argv.append("--sync-on-close")
    if args.pull_every is not None:
        argv += ["--pull-every", str(args.pull_every)]
    if args.debug:
        argv.append("--debug")
    log_path = mount.runtime_dir() / f"{mount.runtime_file(opts.mountpoint).stem}.log"
    ready = mount.spawn_background(argv, log_path)
    note(args, f"mounted {opts.store} at {opts.mountpoint} (log: {log_path})")
    if ready == "ok nohead":
        from daemon.headservice import head_holder

        print(f"dsfs: note: @head of {opts.store} is served by another mount "
              f"({head_holder(opts.store, mount.runtime_dir())}): this mount shows the "
              "versions only", file=sys.stderr)
    return 0


def cmd_umount(args: argparse.Namespace) -> int:
    from daemon import unmount

    if args.force:
        done = unmount.unmount_forcibly(Path(args.mountpoint))
        note(args, f"unmounted {args.mountpoint} ({', '.join(done) or 'nothing to stop'})")
        return 0
    unmount.unmount(Path(args.mountpoint), timeout=args.timeout)
    note(args, f"unmounted {args.mountpoint}")
    return 0


# -- parser ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-s", "--store", default=argparse.SUPPRESS,
                        help=f"store directory (default: $DSFS_STORE or {DEFAULT_STORE})")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars or summaries on stderr")
    parser = _Parser(
        prog="dsfs", parents=[common],
        description="Version ML datasets as a filesystem: deduplicated, every version kept.")
    sub: Any = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Handler, help_: str, json_: bool = False) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help_,
                                                    description=help_)
        p.set_defaults(func=fn)
        if json_:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = add("init", cmd_init, "create a new, empty store")
    p.add_argument("--chunk-avg", type=parse_size, default=None, metavar="SIZE",
                   help="average chunk size (default 512K; see BENCHMARKS.md)")
    p.add_argument("--zstd-level", type=int, default=3, choices=range(1, 20), metavar="N",
                   help="zstd compression level 1-19 (default 3)")
    p = add("import", cmd_import, "record DIR as the next version", json_=True)
    p.add_argument("dir", help="directory to record (exactly its content)")
    p.add_argument("-m", "--message", default="", help="what this version is")
    p.add_argument("--tag", help="also tag the new version with this name")
    p.add_argument("--skip-special", action="store_true",
                   help="leave out device nodes and sockets (kept by default, as metadata)")
    add("log", cmd_log, "list versions, newest first", json_=True)
    p = add("show", cmd_show, "details of one version", json_=True)
    p.add_argument("version", help="3, v3, @v3, a tag, or latest")
    p = add("ls", cmd_ls, "list a directory of a version", json_=True)
    p.add_argument("spec", metavar="VERSION[:PATH]")
    p.add_argument("-l", "--long", action="store_true", help="modes, owners, sizes, times")
    p = add("cat", cmd_cat, "write a file of a version to stdout")
    p.add_argument("spec", metavar="VERSION:PATH")
    p = add("export", cmd_export, "write a version into a directory")
    p.add_argument("version")
    p.add_argument("dest")
    p.add_argument("--force", action="store_true", help="write into a non-empty DEST")
    p = add("diff", cmd_diff, "paths added (A), removed (D), modified (M), type changed (T), "
            "renamed (R old -> new); everything goes to stdout, one change per line",
            json_=True)
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--stat", action="store_true",
                   help="print only the summary line (on stdout) instead of the changes")
    p.add_argument("--no-renames", action="store_true",
                   help="list a rename as a removal and an addition (by default a removed "
                        "and an added path with identical content, a file or a whole "
                        "directory, are one R line)")
    p = add("tag", cmd_tag, "name a version, or delete a name")
    p.add_argument("version", nargs="?")
    p.add_argument("name", nargs="?")
    p.add_argument("--delete", metavar="NAME", help="delete this tag")
    add("tags", cmd_tags, "list tags", json_=True)
    from daemon.verifycli import add_verify_command

    add_verify_command(add)
    add("stats", cmd_stats, "objects, packs and bytes the store holds", json_=True)
    p = add("mount", cmd_mount, "show every version under MOUNTPOINT (@v1, @latest, tags)")
    p.add_argument("mountpoint")
    p.add_argument("--foreground", action="store_true",
                   help="stay in the foreground (for systemd); logs go to stderr")
    p.add_argument("--allow-other", action="store_true",
                   help="let other users in (file permissions apply; needs user_allow_other "
                        "in /etc/fuse.conf unless root)")
    p.add_argument("--memory-cache", type=parse_size, default=512 << 20, metavar="SIZE",
                   help="bytes of decompressed chunks kept in memory (default 512M)")
    p.add_argument("--xattrs", choices=("auto", "on", "off"), default="auto",
                   help="serve extended attributes: auto (default) serves them when some "
                        "version has any, and otherwise tells the kernel there are none, which "
                        "keeps `ls -l` from asking the daemon once per file")
    p.add_argument("--sync-on-close", action="store_true",
                   help="close() of a file written in @head returns only once its bytes are "
                        "on disk (survives power loss without fsync; slower for many small "
                        "files)")
    from daemon.cachecli import add_cache_command, add_mount_option

    add_mount_option(p)
    p.add_argument("--pull-every", type=float, default=None, metavar="SECONDS",
                   help="pull from the store's remote this often, so versions others push "
                        "appear in the mount (a `dsfs pull` shows them at once)")
    p.add_argument("--debug", action="store_true", help="log every request")
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    p = add("umount", cmd_umount, "unmount and wait for the daemon to exit")
    p.add_argument("mountpoint")
    p.add_argument("--force", action="store_true",
                   help="for a daemon that does not answer: abort its FUSE connection "
                        "(processes waiting in the mount get an error), stop the daemon "
                        "(SIGTERM, SIGKILL after 3 s) and detach the mountpoint; the next "
                        "`dsfs mount` recovers as after a crash")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the daemon (default 30); then suggest --force")
    p = add("drop", cmd_drop, "remove a version from the log (gc frees its space)")
    p.add_argument("version")
    from daemon.headcli import add_head_commands

    add_head_commands(add)
    p = add("gc", cmd_gc, "free space no version, tag or head uses", json_=True)
    p.add_argument("--dry-run", action="store_true", help="only say what would be freed")
    p.add_argument("--compact", action="store_true",
                   help="rewrite every pack that holds dropped data, not only mostly-dead ones")
    p.add_argument("--remote", nargs="?", const="", default=None, metavar="NAME",
                   help="collect a remote's garbage instead: a run marks packs no version "
                        "there needs; a later run deletes those still unneeded once their mark "
                        "is older than --grace (safe while others push)")
    p.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                   help="with --remote: how old a mark (and a pack) must be (default 3600)")
    from daemon.remotecli import add_remote_commands

    add_remote_commands(add)
    add_cache_command(add)
    from daemon.versioncli import add_version_command

    add_version_command(parser, add)
    return parser


class _Parser(argparse.ArgumentParser):
    """Usage mistakes get one line, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"dsfs: error: {message} (see `{self.prog} --help`)\n")


DEEP_RECURSION = 20_000
"""Trees are walked recursively, one call per directory level: enough for paths thousands of
levels deep (Python 3.11 keeps these frames on the heap, not the C stack)."""


def main(argv: Sequence[str] | None = None) -> int:
    sys.setrecursionlimit(max(sys.getrecursionlimit(), DEEP_RECURSION))
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (("store", None), ("quiet", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    func: Handler = args.func
    try:
        return func(args)
    except DsfsError as exc:
        print(f"dsfs: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("dsfs: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            print(f"dsfs: error: no space left on device ({exc.filename or 'store'}): free "
                  "space and retry", file=sys.stderr)
            return 8
        where = f": {exc.filename}" if exc.filename else ""
        print(f"dsfs: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
