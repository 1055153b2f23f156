"""The shipped artefact works: build the wheel, install it into a fresh virtualenv outside the
checkout, and use dsfs from there (init, import, verify, mount, read, write, commit, umount,
push, clone, a lazy read).

Every other test runs from the editable checkout, which finds modules a wheel may lack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from daemon.mount import mounted_at
from tests.mountutil import force_unmount
from tests.treeutil import write

CHECKOUT = Path(__file__).resolve().parents[2]
NOT_SHIPPED = (".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache",
               ".ruff_cache", ".pytest_cache")


def run(argv: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 240
        ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, (f"{argv} exited {result.returncode}:\n"
                                    f"{result.stdout}\n{result.stderr}")
    return result


def build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    # Build from a copy of the sources: an in-tree build leaves build/lib behind, whose stale
    # modules a later wheel would ship.
    src = tmp / "src"
    shutil.copytree(CHECKOUT, src, ignore=shutil.ignore_patterns(*NOT_SHIPPED))
    wheels = tmp / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, src], tmp, env)
    (wheel,) = wheels.glob("dsfs-*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_venv_runs_every_command(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "DSFS_STORE", "VIRTUAL_ENV", "PYTHONHOME")}
    work = tmp_path / "work"
    work.mkdir()
    wheel = build_wheel(tmp_path, env)
    with zipfile.ZipFile(wheel) as z:
        shipped = set(z.namelist())
    sources = {p.relative_to(CHECKOUT).as_posix() for top in ("vfs", "daemon")
               for p in (CHECKOUT / top).rglob("*.py") if "__pycache__" not in p.parts}
    assert sources - shipped == set()
    packages = {s.rsplit("/", 1)[0] for s in sources if s.endswith("/__init__.py")}
    assert {f"{p}/py.typed" for p in packages} - shipped == set()
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], work, env)
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel], work, env)

    # the installed package, never the checkout, answers imports
    probe = run([venv / "bin" / "python", "-c",
                 "import json, sys, vfs, daemon, vfs.head.session, vfs.remote.s3backend; "
                 "print(json.dumps([vfs.__file__, daemon.__file__, sys.path]))"], work, env)
    vfs_file, daemon_file, path = json.loads(probe.stdout)
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    assert Path(vfs_file).is_relative_to(site) and Path(daemon_file).is_relative_to(site)
    assert not any(p and Path(p).resolve().is_relative_to(CHECKOUT) for p in path), path

    dsfs = venv / "bin" / "dsfs"
    expected = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["version"]
    assert run([dsfs, "--version"], work, env).stdout.strip() == f"dsfs {expected}"
    assert json.loads(run([dsfs, "version", "--json"], work, env).stdout)["version"] == expected

    store, source, mnt = work / "store", work / "data", work / "mnt"
    payload = os.urandom(300_000)
    write(source / "train" / "a.bin", payload)
    write(source / "labels.csv", b"1,cat\n2,dog\n")
    run([dsfs, "--store", store, "init"], work, env)
    assert run([dsfs, "--store", store, "import", source, "-m", "first"], work,
               env).stdout.strip() == "v1"
    run([dsfs, "--store", store, "verify", "--read-data"], work, env)
    mnt.mkdir()
    try:
        run([dsfs, "--store", store, "mount", mnt], work, env)
        assert (mnt / "@v1" / "train" / "a.bin").read_bytes() == payload
        (mnt / "@head" / "new.txt").write_bytes(b"written through the mount\n")
        assert run([dsfs, "--store", store, "commit", "-m", "second"], work,
                   env).stdout.strip() == "v2"
        assert (mnt / "@v2" / "new.txt").read_bytes() == b"written through the mount\n"
        run([dsfs, "--store", store, "umount", mnt], work, env)
    finally:
        if mounted_at(mnt) is not None:
            subprocess.run([dsfs, "--store", store, "umount", mnt], cwd=work, env=env,
                           capture_output=True, timeout=60)
        force_unmount(mnt)
    assert mounted_at(mnt) is None
    assert run([dsfs, "--store", store, "ls", "v2"], work, env).stdout.split() == [
        "labels.csv", "new.txt", "train/"]
    run([dsfs, "--store", store, "verify", "--read-data"], work, env)
    remote, clone = f"file://{work / 'remote'}", work / "clone"
    run([dsfs, "--store", store, "remote", "add", "origin", remote], work, env)
    run([dsfs, "--store", store, "push"], work, env)
    run([dsfs, "clone", remote, clone], work, env)
    assert run([dsfs, "--store", clone, "cat", "v2:new.txt"], work,
               env).stdout == "written through the mount\n"
