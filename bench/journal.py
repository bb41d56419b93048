#!/usr/bin/env python3
"""Journal benchmark: what writing the roll-out journal costs a roll-out.

    .venv/bin/python bench/journal.py [--instances 50] [--launch 0.2] [--runs 3] [--no-postgresql]

The engine rolls a group of fake instances (tests/unit/rollout_fakes.py: each launch takes --launch
seconds, everything else is instant) out in batches of 10%, three ways in this process:

1. baseline: a journal kept in memory, written nowhere;
2. file: the journal in the state folder (atomic writes, fsync), as on one machine;
3. postgresql: the journal in a shared PostgreSQL catalog and the state folder, as when runners share
   a catalog (a throwaway cluster, started here and stopped afterwards; it runs with fsync off).

It prints the median time of each and its ratio against the baseline (goal: at most 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "collections"), str(ROOT / "tests"), str(ROOT / "tests" / "unit")]

from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.journal import FileJournal, SharedJournal
from rollout_fakes import V1, World, fake_rollout


class InMemory:
    """A keeper that keeps nothing: the engine's own time, without the journal's writes."""

    @staticmethod
    def read(path: str):
        return None

    @staticmethod
    def write(path: str, text) -> None:
        pass


def one_rollout(keeper, size: int, launch: float) -> float:
    world = World()
    world.seed(size, V1)
    world.launch_delay = launch
    with tempfile.TemporaryDirectory(prefix="kiln-bench-journal-") as root:
        rollout = fake_rollout(world, root, batch_size="10%")
        rollout.journal_keeper = keeper
        started = time.monotonic()
        result = rollout.run()
        elapsed = time.monotonic() - started
    assert result["status"] == "succeeded", result["status"]
    world.assert_converged(size, "web/2")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--launch", type=float, default=0.2, help="seconds a fake launch takes")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-postgresql", dest="postgresql", action="store_false")
    args = parser.parse_args()

    keepers = {"baseline": lambda: InMemory, "file": lambda: FileJournal}
    cluster = None
    if args.postgresql:
        from postgres_support import Cluster

        cluster = Cluster().start()
        keepers["postgresql"] = lambda: SharedJournal(Catalog(cluster.fresh_dsn()).shared_rollouts(), "web")
    try:
        times: dict[str, list[float]] = {name: [] for name in keepers}
        for _ in range(args.runs):  # interleaved, so that a noisy moment hits every kind alike
            for name, keeper in keepers.items():
                times[name].append(one_rollout(keeper(), args.instances, args.launch))
    finally:
        if cluster is not None:
            cluster.stop()

    base = statistics.median(times["baseline"])
    print(f"{args.instances} fake instances, batches of 10%, launches of {args.launch:g}s, {args.runs} runs")
    print(f"{'journal':<12} {'median s':>9} {'x baseline':>11}")
    for name, values in times.items():
        print(f"{name:<12} {statistics.median(values):>9.3f} {statistics.median(values) / base:>11.2f}")


if __name__ == "__main__":
    main()
