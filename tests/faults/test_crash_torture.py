"""Crash torture, a sample: kill -9 the daemon or a command at random instants of import,
commit (command, daemon, client), gc, @head writes and `verify --repair`, then check the store
(see tests/faults/torture.py for what each trial checks).

Three trials per operation kind (two per commit variant: six commits in all). Each run draws a
new seed, printed with every failing trial; DSFS_TORTURE_SEED=S repeats a run's plans and
DSFS_TORTURE_TRIALS=N runs N trials of every kind. `scripts/faults torture` runs hundreds.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.torture import KINDS, Torture

pytestmark = pytest.mark.slow

TRIALS = {"import": 3, "commit-cli": 2, "commit-daemon": 2, "commit-client": 2, "gc": 3,
          "head-write": 3, "repair": 3}


@pytest.fixture(scope="module")
def torture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Torture]:
    raw = os.environ.get("DSFS_TORTURE_SEED")
    seed = int(raw) if raw else random.randrange(1 << 31)
    torture = Torture(Path(tmp_path_factory.mktemp("torture")), seed=seed)
    yield torture
    torture.cleanup()


@pytest.mark.parametrize("kind", KINDS)
def test_kill_9_at_a_random_instant(torture: Torture, kind: str) -> None:
    raw = os.environ.get("DSFS_TORTURE_TRIALS")
    count = int(raw) if raw else TRIALS[kind]
    torture.prepare(kind)
    trials = [torture.run(kind, seed) for seed in torture.trial_seeds(kind, count)]
    failed = [t for t in trials if t.outcome == "failed"]
    assert not failed, (f"{len(failed)} of {len(trials)} {kind} trials failed (run seed "
                        f"{torture.seed}):\n" + "\n".join(t.report() for t in failed))
