"""`dsfs diff`: renames as one line like `dsfs status`, and every result on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import dsfs
from tests.treeutil import write


@pytest.fixture
def renamed(tmp_path: Path) -> Path:
    store, src = tmp_path / "store", tmp_path / "src"
    for i in range(4):
        write(src / f"train/cats/{i}.jpg", f"cat {i}".encode())
    write(src / "labels.csv", b"1,cat\n")
    dsfs("init", store=store)
    dsfs("import", src, store=store)
    (src / "train/cats").rename(src / "train/felines")
    (src / "labels.csv").rename(src / "labels-v2.csv")
    write(src / "new.txt", b"new\n")
    dsfs("import", src, store=store)
    return store


def test_diff_shows_a_renamed_directory_as_one_line(renamed: Path) -> None:
    result = dsfs("diff", "v1", "v2", store=renamed)
    assert result.stdout.splitlines() == ["R labels.csv -> labels-v2.csv", "A new.txt",
                                          "R train/cats -> train/felines/"]
    assert result.stderr == ""
    plain = dsfs("diff", "v1", "v2", "--no-renames", store=renamed).stdout.splitlines()
    assert len(plain) == 13 and "D train/cats/2.jpg" in plain and "A train/felines/" in plain
    assert "A labels-v2.csv" in plain and not any(line.startswith("R ") for line in plain)


def test_diff_json_carries_renames(renamed: Path) -> None:
    out = json.loads(dsfs("diff", "v1", "v2", "--json", store=renamed).stdout)
    assert out["summary"] == {"added": 1, "removed": 0, "modified": 0, "type_changed": 0,
                              "renamed": 2, "bytes_delta": 4}
    assert {"status": "R", "path": "train/felines", "old_path": "train/cats",
            "type": "dir"} in out["changes"]
    plain = json.loads(dsfs("diff", "v1", "v2", "--json", "--no-renames", store=renamed).stdout)
    assert plain["summary"]["renamed"] == 0 and plain["summary"]["removed"] == 6


def test_diff_stat_prints_its_summary_on_stdout_only(renamed: Path) -> None:
    result = dsfs("diff", "v1", "v2", "--stat", store=renamed)
    assert result.stdout == ("v1..v2: 1 added, 0 removed, 0 modified, 0 type changed, "
                             "2 renamed, +4 B\n")
    assert result.stderr == ""
    assert "stdout" in dsfs("diff", "--help").stdout
