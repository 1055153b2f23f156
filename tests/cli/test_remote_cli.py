"""`dsfs remote`, `push`, `pull`, `clone`, `verify --remote`, `gc --remote` as a user runs them
(real processes, a file:// remote in a real directory): outputs, --json, and one-line errors
that change nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import assert_one_line_error, dsfs, store_state
from tests.treeutil import write


@pytest.fixture
def pushed(tmp_path: Path) -> tuple[Path, str]:
    store = tmp_path / "store"
    src = tmp_path / "src"
    write(src / "a.txt", b"alpha\n")
    write(src / "d/b.bin", bytes(range(256)) * 4000)
    dsfs("init", store=store)
    dsfs("import", src, "-m", "first", "--tag", "base", store=store)
    url = f"file://{tmp_path / 'remote'}"
    dsfs("remote", "add", "origin", url, store=store)
    out = json.loads(dsfs("push", "--json", store=store).stdout)
    assert out["pushed"] == ["v1"] and out["packs_uploaded"] >= 1 and out["events"] == 1
    return store, url


def test_remote_list_add_remove_and_their_mistakes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    dsfs("init", store=store)
    before = store_state(store)
    for args, words in [
        (("remote", "add", "origin", "ftp://host/x"), ("unsupported remote", "s3://")),
        (("remote", "add", "9bad", "file:///srv/x"), ("invalid remote name",)),
        (("remote", "add", "origin", "file://relative/x"), ("file:///ABSOLUTE/PATH",)),
        (("remote", "add", "origin"), ("usage: dsfs remote add NAME URL",)),
        (("remote", "remove", "nope"), ("no remote named 'nope'",)),
        (("push",), ("has no remote", "dsfs remote add")),
        (("pull",), ("has no remote",)),
        (("push", "nope"), ("no remote or version named 'nope'",)),
    ]:
        result = dsfs(*args, store=store, check=False)
        assert_one_line_error(result, *words)
        assert store_state(store) == before, args
    dsfs("remote", "add", "origin", f"file://{tmp_path}/r", store=store)
    dup = dsfs("remote", "add", "origin", f"file://{tmp_path}/r2", store=store, check=False)
    assert_one_line_error(dup, "already exists")
    listed = json.loads(dsfs("remote", "list", "--json", store=store).stdout)
    assert listed == [{"name": "origin", "url": f"file://{tmp_path}/r", "endpoint_url": None,
                       "profile": None, "lazy": False, "default": True}]
    assert dsfs("remote", store=store).stdout.startswith("origin\tfile://")
    dsfs("remote", "remove", "origin", store=store)
    assert json.loads(dsfs("remote", "list", "--json", store=store).stdout) == []


def test_push_clone_pull_as_a_user_runs_them(pushed: tuple[Path, str], tmp_path: Path) -> None:
    store, url = pushed
    again = json.loads(dsfs("push", "--json", store=store).stdout)
    assert again["pushed"] == [] and again["bytes_uploaded"] == 0
    clone = tmp_path / "clone"
    out = json.loads(dsfs("clone", url, clone, "--json").stdout)
    assert out["new_versions"] == ["v1"] and out["store"] == str(clone)
    assert dsfs("cat", "base:a.txt", store=clone).stdout == "alpha\n"
    write(tmp_path / "src2/c.txt", b"gamma\n")
    dsfs("import", tmp_path / "src2", "-m", "second", store=store)
    dsfs("push", store=store)
    pulled = json.loads(dsfs("pull", "--json", store=clone).stdout)
    assert pulled["new_versions"] == ["v2"] and pulled["renumbered"] == {}
    log = json.loads(dsfs("log", "--json", store=clone).stdout)
    assert [v["message"] for v in log] == ["first", "second"]
    fetched = json.loads(dsfs("pull", "--data", "--json", store=clone).stdout)
    assert fetched["packs_downloaded"] >= 1
    assert "ok:" in dsfs("verify", "--read-data", store=clone).stdout
    remote = json.loads(dsfs("remote", "list", "--json", store=clone).stdout)
    assert remote[0]["lazy"] is True
    assert_one_line_error(dsfs("remote", "remove", "origin", store=clone, check=False),
                          "reads on demand")


def test_clone_mistakes_leave_nothing_behind(pushed: tuple[Path, str], tmp_path: Path) -> None:
    _, url = pushed
    empty = tmp_path / "empty"
    empty.mkdir()
    result = dsfs("clone", f"file://{empty}", tmp_path / "c1", check=False)
    assert_one_line_error(result, "is not a dsfs remote")
    assert not (tmp_path / "c1").exists()
    busy = tmp_path / "busy"
    write(busy / "x", b"x")
    assert_one_line_error(dsfs("clone", url, busy, check=False), "is not empty")
    assert sorted(p.name for p in busy.iterdir()) == ["x"]


def test_verify_and_gc_of_a_remote(pushed: tuple[Path, str], tmp_path: Path) -> None:
    store, _ = pushed
    ok = dsfs("verify", "--remote", "--read-data", store=store)
    assert ok.stdout.startswith("ok: file://") and "structure and data intact" in ok.stdout
    checked = json.loads(dsfs("verify", "--remote", "--json", store=store).stdout)
    assert checked["ok"] is True and checked["versions"] == 1
    gc = json.loads(dsfs("gc", "--remote", "--dry-run", "--json", store=store).stdout)
    assert gc["packs_marked"] == 0 and gc["packs_deleted"] == 0
    assert_one_line_error(dsfs("verify", "--remote", "--repair", store=store, check=False),
                          "--read-data only")
