"""Reading the version log out of an index that may be damaged, before a repair replaces it.

Owns: salvaging version records, tags and tombstones from the old LMDB index, so a version whose
record in the packs is damaged or gone is not forgotten by a rebuild. Never imports: daemon,
trio, pyfuse3.

LMDB does not checksum its pages and can crash the process that reads a damaged one, so the old
index is read in a child process (`python -m vfs.salvage INDEX_DIR`), which prints what it
could read as msgpack; if it dies, nothing is salvaged and the repair goes on from the packs.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfs import schema
from vfs.errors import CorruptData
from vfs.fsutil import atomic_write
from vfs.model import Version

TIMEOUT = 300


@dataclass
class SalvagedLog:
    versions: dict[int, bytes] = field(default_factory=dict)
    """Version number -> its msgpack record, for records that decode as that version."""
    tags: dict[str, int] = field(default_factory=dict)
    """Tags whose entry carries a CRC of name and number (a flipped bit cannot forge one)."""
    legacy_tags: dict[str, int] = field(default_factory=dict)
    """Tags of an index written before tag CRCs: trusted only with other evidence of loss."""
    dropped: set[int] = field(default_factory=set)
    packs: set[str] = field(default_factory=set)
    """Names of the packs the old index knew."""
    problem: str = ""
    """Why nothing (or only part) could be read, for the repair's report."""


def salvage_log(index_dir: Path) -> SalvagedLog:
    """What the old index at `index_dir` still tells about versions and tags."""
    if not (index_dir / "data.mdb").exists():
        return SalvagedLog(problem="no old index to read")
    try:
        done = subprocess.run([sys.executable, "-m", "vfs.salvage", str(index_dir)],
                              capture_output=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return SalvagedLog(problem=f"reading the old index took over {TIMEOUT} s")
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or \
            [f"exit status {done.returncode}"]
        return SalvagedLog(problem=f"the old index could not be read: {why[0]}")
    try:
        return _decode(schema.dec_msg(done.stdout))
    except (ValueError, TypeError, KeyError, CorruptData) as exc:
        return SalvagedLog(problem=f"the old index could not be read: {exc}")


def saved_log(path: Path) -> SalvagedLog | None:
    """The log a repair that was cut short saved before it replaced the index."""
    try:
        raw = schema.dec_msg(path.read_bytes())
        log = _decode(raw)
        log.problem = str(raw.get("problem", ""))
        return log
    except FileNotFoundError:
        return None
    except (CorruptData, ValueError, TypeError, KeyError, AttributeError):
        return None


def save_log(path: Path, log: SalvagedLog) -> None:
    """Keep what the old index told (fsynced) until the repair has put it back."""
    raw = {"versions": sorted(log.versions.items()),
           "tags": [[k, n, True] for k, n in log.tags.items()]
           + [[k, n, False] for k, n in log.legacy_tags.items()],
           "dropped": sorted(log.dropped), "packs": sorted(log.packs), "problem": log.problem}
    atomic_write(path, schema.enc_msg(raw))


def _decode(raw: dict[str, Any]) -> SalvagedLog:
    log = SalvagedLog()
    for n, record in raw["versions"]:
        try:
            if Version.from_record(schema.dec_msg(record)).number == n:
                log.versions[int(n)] = bytes(record)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, CorruptData):
            log.problem = f"the old index's record of v{n} is damaged"
    for name, n, checked in raw["tags"]:
        (log.tags if checked else log.legacy_tags)[str(name)] = int(n)
    log.dropped = {int(n) for n in raw["dropped"]}
    log.packs = {str(name) for name in raw["packs"]}
    return log


def _dump(index_dir: Path) -> bytes:
    from vfs.index import Index

    index = Index(index_dir)  # read only in effect: nothing is written
    out: dict[str, list[Any]] = {"versions": [], "tags": [], "dropped": [], "packs": []}
    with index.read() as txn:
        for db, key in (("versions", "versions"), ("dropped", "dropped")):
            with txn.cursor(db=index.dbs[db]) as cur:
                for k, v in cur:
                    n = schema.dec_version_key(bytes(k))
                    out[key].append([n, bytes(v)] if key == "versions" else n)
        with txn.cursor(db=index.dbs["tags"]) as cur:
            for k, v in cur:
                try:
                    name, number = schema.dec_tag(bytes(k), bytes(v))
                except CorruptData:
                    continue
                out["tags"].append([name, number, len(v) > 4])  # with a CRC, or legacy
        with txn.cursor(db=index.dbs["packs"]) as cur:
            for _, v in cur:
                try:
                    out["packs"].append(str(schema.dec_msg(bytes(v))["name"]))
                except (CorruptData, KeyError, TypeError):
                    continue
    index.close()
    return schema.enc_msg(out)


if __name__ == "__main__":
    sys.stdout.buffer.write(_dump(Path(sys.argv[1])))
