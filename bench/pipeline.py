"""Benchmark the no-op pipeline (nothing changed) against one `ansible-playbook --version`, in the same run.

    .venv/bin/python bench/pipeline.py [--rounds 3]

Sets up the pipeline tests' world (its own state folder, inventory of two one-instance groups, Docker
repository), runs `invoke pipeline` once to take a good image to prod, then times `invoke pipeline`
again with nothing changed, each round next to one `ansible-playbook --version` (the cost of starting
Ansible at all). Prints each round and the medians: the no-op pipeline in seconds (goal < 5 s) and its
ratio to `ansible-playbook --version`. Everything the world made is removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
sys.path[:0] = [str(ROOT / "collections"), str(ROOT / "tests")]

from pipeline_support import World


def timed(run) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    done = run()
    return time.monotonic() - started, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed no-op runs (default 3)")
    args = parser.parse_args()
    world = World(Path(tempfile.mkdtemp(prefix="kiln-bench-pipeline-")))
    try:
        first = world.pipeline()
        if first.returncode != 0:
            raise SystemExit(f"the first run failed:\n{first.stdout[-4000:]}\n{first.stderr[-2000:]}")
        noop, baseline = [], []
        for index in range(1, args.rounds + 1):
            noop_s, done = timed(world.pipeline)
            if done.returncode != 0 or "nothing to do" not in done.summary:
                raise SystemExit(f"round {index}: the pipeline did something:\n{done.stdout[-4000:]}")
            base_s, _ = timed(
                lambda: subprocess.run(
                    [str(BIN / "ansible-playbook"), "--version"], capture_output=True, check=True
                )
            )
            noop.append(noop_s)
            baseline.append(base_s)
            print(
                f"round {index}: no-op pipeline {noop_s:.2f} s, ansible-playbook --version {base_s:.2f} s, "
                f"ratio {noop_s / base_s:.1f}"
            )
        median, base = statistics.median(noop), statistics.median(baseline)
        print(f"no-op pipeline (median of {args.rounds}): {median:.2f} s (goal < 5 s)")
        print(f"ansible-playbook --version (median): {base:.2f} s")
        print(f"ratio no-op pipeline / ansible-playbook --version: {median / base:.1f}")
    finally:
        world.cleanup()


if __name__ == "__main__":
    main()
