"""The dsfs command line: the contract users and later issues rely on, and its error messages."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli import build_parser
from tests.treeutil import snapshot, write

COMMANDS = ["init", "import", "log", "show", "ls", "cat", "export", "diff", "tag", "tags",
            "verify", "drop", "gc", "stats"]


def dsfs(*args: str | Path, store: Path | None = None, check: bool = True,
         input_: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DSFS_STORE"}
    if store is not None:
        env["DSFS_STORE"] = str(store)
    result = subprocess.run([sys.executable, "-m", "daemon.cli", *map(str, args)],
                            capture_output=True, text=True, env=env)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def store_state(store: Path) -> str:
    """A digest of every file in the store, to prove a failed command changed nothing."""
    h = hashlib.sha256()
    for path in sorted(store.rglob("*")):
        if path.is_file() and path.name not in ("lock.mdb",):
            h.update(str(path.relative_to(store)).encode() + path.read_bytes())
    return h.hexdigest()


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    src = tmp_path / "src"
    write(src / "a.txt", b"alpha\n")
    write(src / "d/b.txt", b"beta\n")
    dsfs("init", store=store)
    assert dsfs("import", src, "-m", "first", "--tag", "base", store=store).stdout == "v1\n"
    write(src / "c.txt", b"gamma\n")
    (src / "a.txt").unlink()
    assert dsfs("import", src, "-m", "second", store=store).stdout == "v2\n"
    return store


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dsfs: error: ")
    assert "Traceback" not in result.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = dsfs(command, "--help")
    assert "usage: dsfs " + command in result.stdout


def test_log_show_ls_cat_diff_tags(populated: Path) -> None:
    log = json.loads(dsfs("log", "--json", store=populated).stdout)
    assert [v["version"] for v in log] == ["v1", "v2"]
    assert log[0]["tags"] == ["base"] and log[1]["parent"] == "v1"
    assert log[0]["stats"]["files"] == 2
    text = dsfs("log", store=populated).stdout.splitlines()
    assert text[0].startswith("v2") and "second" in text[0] and "(base)" in text[1]
    assert json.loads(dsfs("show", "base", "--json", store=populated).stdout)["number"] == 1
    assert dsfs("ls", "v2", store=populated).stdout.split() == ["c.txt", "d/"]
    assert dsfs("ls", "@v1:d", store=populated).stdout.split() == ["b.txt"]
    assert dsfs("cat", "latest:c.txt", store=populated).stdout == "gamma\n"
    assert dsfs("cat", "base:a.txt", store=populated).stdout == "alpha\n"
    assert dsfs("diff", "v1", "v2", store=populated).stdout.split() == ["D", "a.txt",
                                                                         "A", "c.txt"]
    d = json.loads(dsfs("diff", "v1", "v2", "--json", store=populated).stdout)
    assert d["summary"]["added"] == 1 and d["summary"]["removed"] == 1
    dsfs("tag", "v2", "second", store=populated)
    assert json.loads(dsfs("tags", "--json", store=populated).stdout) == {"base": "v1",
                                                                         "second": "v2"}
    dsfs("tag", "--delete", "second", store=populated)
    assert dsfs("tags", store=populated).stdout == "base\tv1\n"


def test_stats_counts_objects_by_kind(populated: Path) -> None:
    st = json.loads(dsfs("stats", "--json", store=populated).stdout)
    assert st["versions"] == 2 and st["tags"] == 1 and st["packs"] >= 2
    assert st["objects"]["chunk"] == 3 and st["objects"]["version"] == 2


def test_store_option_and_environment(populated: Path) -> None:
    assert "v2" in dsfs("--store", populated, "log").stdout
    assert "v2" in dsfs("log", "-s", populated).stdout


def test_export_refuses_non_empty_destination_unless_forced(populated: Path,
                                                            tmp_path: Path) -> None:
    dest = tmp_path / "out"
    write(dest / "existing", b"x")
    assert_one_line_error(dsfs("export", "v1", dest, store=populated, check=False),
                          "not empty", "--force")
    dsfs("export", "v1", dest, "--force", store=populated)
    assert (dest / "d/b.txt").read_bytes() == b"beta\n"
    clean = tmp_path / "clean"
    dsfs("export", "v2", clean, store=populated)
    assert snapshot(clean).keys() == {b".", b"c.txt", b"d", b"d/b.txt"}


@pytest.mark.parametrize("args,words", [
    (["show", "v9"], ["v9", "does not exist", "dsfs log"]),
    (["show", "nosuchtag"], ["nosuchtag", "dsfs tags"]),
    (["cat", "v1:missing.txt"], ["missing.txt", "does not exist"]),
    (["cat", "v1:d"], ["not a file"]),
    (["cat", "v1"], ["VERSION:PATH"]),
    (["tag", "v1", "base"], ["already exists"]),
    (["tag", "v1", "v3"], ["invalid tag name"]),
    (["tag", "--delete", "nope"], ["no tag named"]),
    (["drop", "base"], ["tagged", "--delete"]),
    (["import", "/nonexistent/dir"], ["does not exist"]),
    (["import", "/etc/hostname"], ["not a directory"]),
    (["init"], ["already a dsfs store"]),
])
def test_user_mistakes_get_one_line_and_leave_the_store_untouched(
        populated: Path, args: list[str], words: list[str]) -> None:
    before = store_state(populated)
    assert_one_line_error(dsfs(*args, store=populated, check=False), *words)
    assert store_state(populated) == before


def test_missing_and_foreign_stores_are_refused(tmp_path: Path) -> None:
    assert_one_line_error(dsfs("log", store=tmp_path / "nope", check=False),
                          "not a dsfs store", "dsfs init")
    foreign = tmp_path / "foreign"
    write(foreign / "photo.jpg", b"x")
    assert_one_line_error(dsfs("init", store=foreign, check=False), "not empty")
    assert_one_line_error(dsfs("log", store=foreign, check=False), "not a dsfs store")
    assert sorted(p.name for p in foreign.iterdir()) == ["photo.jpg"]
    write(foreign / "config", b"{not json")
    assert_one_line_error(dsfs("log", store=foreign, check=False), "damaged")


def test_store_from_a_newer_format_is_refused(populated: Path) -> None:
    config = json.loads((populated / "config").read_text())
    config["format"] = 99
    (populated / "config").write_text(json.dumps(config))
    assert_one_line_error(dsfs("log", store=populated, check=False), "format 99", "upgrade")


def test_import_is_refused_while_gc_holds_the_store(populated: Path, tmp_path: Path) -> None:
    import fcntl

    fd = os.open(populated / "locks/gc.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        before = store_state(populated)
        write(tmp_path / "src2/x", b"x")
        assert_one_line_error(dsfs("import", tmp_path / "src2", store=populated, check=False),
                              "locked", "gc")
        assert store_state(populated) == before
    finally:
        os.close(fd)


def test_import_json_lists_skipped_files_and_stats(populated: Path, tmp_path: Path) -> None:
    src = tmp_path / "src3"
    write(src / "x.txt", b"x")
    os.mkfifo(src / "pipe")
    out = json.loads(dsfs("import", src, "--json", "-m", "j", store=populated).stdout)
    assert out["version"] == "v3" and out["stats"]["files"] == 1 and out["skipped"] == []


def test_parser_lists_every_command() -> None:
    parser = build_parser()
    text = parser.format_help()
    for command in COMMANDS:
        assert command in text


def test_gc_tells_what_dropped_data_stays_and_compact_frees_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    dsfs("init", store=store)
    big = os.urandom(3_000_000)
    write(tmp_path / "src/big.bin", big)
    write(tmp_path / "src/small.bin", os.urandom(120_000))
    dsfs("import", tmp_path / "src", store=store)
    (tmp_path / "src/small.bin").unlink()
    dsfs("import", tmp_path / "src", store=store)
    dsfs("drop", "v1", store=store)
    out = dsfs("gc", store=store).stdout
    assert "of dropped data stays in 1 pack that is more than half live; " \
           "`dsfs gc --compact` rewrites them" in out, out
    report = json.loads(dsfs("gc", "--compact", "--json", store=store).stdout)
    assert report["compact"] is True and report["packs_rewritten"] == 1, report
    assert report["dead_bytes_kept"] == 0 and report["packs_kept_with_dead_data"] == 0
    assert report["bytes_freed"] > 100_000 and report["kept_for_open_files"] == []
    assert "stays" not in dsfs("gc", store=store).stdout
    dsfs("verify", "--read-data", store=store)
