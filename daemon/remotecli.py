"""`dsfs remote`, `dsfs push`, `dsfs pull`, `dsfs clone`: sharing versions through a remote.

Owns: the arguments and output of those commands; the work is `vfs.remote`'s.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from daemon.cli_common import emit_json, make_progress, note, open_store, store_path
from vfs.errors import UnknownVersion, UserError
from vfs.remote.remotes import Remotes, RemoteSpec
from vfs.remote.session import RemoteView


def cmd_remote(args: argparse.Namespace) -> int:
    root = store_path(args)
    with open_store(args):  # refuses anything that is not a store
        pass
    remotes = Remotes(root)
    if args.action == "add":
        if not args.name or not args.url:
            raise_usage("dsfs remote add NAME URL")
        remotes.add(RemoteSpec(args.name, args.url, args.endpoint_url, args.profile))
        note(args, f"added remote {args.name} ({args.url})")
    elif args.action == "remove":
        if not args.name or args.url:
            raise_usage("dsfs remote remove NAME")
        remotes.remove(args.name)
        note(args, f"removed remote {args.name} (nothing on it was touched)")
    else:
        if args.name:
            raise_usage("dsfs remote list [--json]")
        rows = [{"name": s.name, "url": s.url, "endpoint_url": s.endpoint_url,
                 "profile": s.profile, "lazy": s.lazy, "default": s.name == remotes.default}
                for _, s in sorted(remotes.specs.items())]
        if args.json:
            emit_json(rows)
        else:
            for r in rows:
                extra = [f"endpoint {r['endpoint_url']}"] if r["endpoint_url"] else []
                extra += [f"profile {r['profile']}"] if r["profile"] else []
                extra += ["reads missing data from it"] if r["lazy"] else []
                extra += ["default"] if r["default"] else []
                more = f"  ({', '.join(extra)})" if extra else ""
                print(f"{r['name']}\t{r['url']}{more}")
    return 0


def raise_usage(usage: str) -> None:
    raise UserError(f"usage: {usage}")


def cmd_push(args: argparse.Namespace) -> int:
    from vfs.remote.push import push

    with open_store(args) as store:
        remotes = Remotes(store.root)
        name, versions = args.remote, list(args.versions)
        if name is not None and name not in remotes.specs:
            try:  # `dsfs push v3`: a version, not a remote
                store.resolve(name)
            except UnknownVersion:
                known = ", ".join(sorted(remotes.specs)) or "none"
                raise UserError(f"no remote or version named {name!r} (remotes: {known}): see "
                                "`dsfs remote list` and `dsfs log`") from None
            name, versions = None, [name, *versions]
        spec = remotes.get(name)
        report = push(store, spec, versions or None, make_progress(args.quiet))
    if args.json:
        emit_json(report.to_dict())
        return 0
    if report.pushed:
        names = ", ".join(f"v{n}" for n in report.pushed)
        note(args, f"pushed {names} to {report.remote}: {report.packs_uploaded} packs, "
                   f"{report.bytes_uploaded:,} bytes ({report.packs_present} packs were there)")
    else:
        note(args, f"{report.remote} already has every version asked for")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from vfs.remote.pull import pull

    with open_store(args) as store:
        spec = Remotes(store.root).get(args.remote)
        report = pull(store, spec, args.data, make_progress(args.quiet))
    if args.json:
        emit_json(report.to_dict())
        return 0
    for problem in report.problems:
        note(args, f"dsfs: warning: {problem}")
    for old, new in sorted(report.renumbered.items()):
        note(args, f"v{old} of this store is now v{new} (the remote's v{old} is another "
                   "store's): `dsfs push` shares it")
    new_names = ", ".join(f"v{n}" for n in report.new_versions) or "no new versions"
    got = f"; fetched {report.packs_downloaded} packs, {report.bytes_downloaded:,} bytes" \
        if args.data is not None else ""
    note(args, f"pulled {new_names} from {report.remote}{got}")
    return 0


def cmd_clone(args: argparse.Namespace) -> int:
    from vfs.remote.clone import clone

    dest = Path(args.dest)
    report = clone(args.url, dest, args.endpoint_url, args.profile,
                   progress=make_progress(args.quiet))
    if args.json:
        emit_json({"store": str(dest.absolute()), **report.to_dict()})
        return 0
    names = ", ".join(f"v{n}" for n in report.new_versions) or "no versions yet"
    note(args, f"cloned {args.url} into {dest}: {names}; `dsfs -s {dest} mount MNT` reads "
               "them, fetching data as it is read")
    return 0


def _view_of(args: argparse.Namespace) -> RemoteView:
    from vfs.remote.session import read_remote

    with open_store(args) as store:
        spec = Remotes(store.root).get(args.remote or None)
    backend = spec.open()
    try:
        return read_remote(backend)
    except BaseException:
        backend.close()
        raise


def verify_remote_command(args: argparse.Namespace) -> int:
    from vfs.remote.check import verify_remote

    view = _view_of(args)
    try:
        report = verify_remote(view, read_data=args.read_data,
                               progress=make_progress(args.quiet))
    finally:
        view.backend.close()
    if args.json:
        emit_json(report.to_dict())
    else:
        for problem in report.problems:
            print(f"DAMAGED {problem}")
        what = "structure and data" if args.read_data else "structure"
        if report.ok:
            print(f"ok: {report.remote}: {report.versions} versions, {report.packs} packs, "
                  f"{report.objects:,} objects, {what} intact")
        else:
            print(f"FAILED: {report.remote}: {len(report.problems)} problems")
    return 0 if report.ok else 1


def gc_remote_command(args: argparse.Namespace) -> int:
    from vfs.remote.gc import gc_remote

    view = _view_of(args)
    try:
        r = gc_remote(view, grace_s=args.grace, dry_run=args.dry_run,
                      progress=make_progress(args.quiet))
    finally:
        view.backend.close()
    if args.json:
        emit_json(r.to_dict())
        return 0
    would = "would " if r.dry_run else ""
    print(f"{r.remote}: {would}delete {len(r.deleted)} packs ({r.bytes_freed:,} bytes), "
          f"{would}mark {len(r.marked)} unneeded packs for a later run; "
          f"{r.waiting} marked packs wait for the grace period, {r.kept_young} unneeded packs "
          f"are too young to mark (a push may be writing them)")
    return 0


def add_remote_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("remote", cmd_remote, "list, add or remove remotes (S3 buckets, shared directories)",
            json_=True)
    p.add_argument("action", nargs="?", choices=("list", "add", "remove"), default="list")
    p.add_argument("name", nargs="?", help="the remote's name, e.g. origin")
    p.add_argument("url", nargs="?", help="s3://BUCKET[/PREFIX] or file:///PATH")
    p.add_argument("--endpoint-url", help="S3 endpoint of a non-AWS server (MinIO, Ceph, R2); "
                   "default: the AWS chain ($AWS_ENDPOINT_URL, ~/.aws/config)")
    p.add_argument("--profile", help="AWS profile for credentials (~/.aws/config)")
    p = add("push", cmd_push, "put versions and tags on a remote (packs first, then each "
            "version's record: never half a version)", json_=True)
    p.add_argument("remote", nargs="?", help="remote name (default: the first one added)")
    p.add_argument("versions", nargs="*", metavar="VERSION",
                   help="versions to push (default: every version the remote lacks)")
    p = add("pull", cmd_pull, "bring versions, tags and drops from a remote; their data is "
            "read on demand (or fetched now with --data)", json_=True)
    p.add_argument("remote", nargs="?", help="remote name (default: the first one added)")
    p.add_argument("--data", nargs="*", metavar="VERSION", default=None,
                   help="also fetch the data of these versions (all without a VERSION) so "
                        "they read without the remote")
    p = add("clone", cmd_clone, "a new store reading a remote's versions on demand (only "
            "metadata is copied)", json_=True)
    p.add_argument("url", help="s3://BUCKET[/PREFIX] or file:///PATH")
    p.add_argument("dest", metavar="STORE", help="the new store's directory")
    p.add_argument("--endpoint-url", help="S3 endpoint of a non-AWS server")
    p.add_argument("--profile", help="AWS profile for credentials")
