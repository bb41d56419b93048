"""Roll-outs from several runners sharing a PostgreSQL catalog: the group's lease and its journal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.journal import SharedJournal
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.lock import LeaseLock, RolloutLocked
from rollout_fakes import V1, V2, Crash, World
from rollout_fakes import fake_rollout as rollout

ROOT = Path(__file__).resolve().parents[3]
TTL = 1.5

_HOLDER = f"""
import time
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.lock import LeaseLock
LeaseLock(Catalog().shared_rollouts(), "web", ttl_s={TTL}).acquire()
print("leased", flush=True)
time.sleep(120)
"""


def _runner(location: str, group: str) -> tuple[LeaseLock, SharedJournal]:
    """What a runner's roll-out gets from the shared catalog: the lease and the journal."""
    shared = Catalog(location).shared_rollouts()
    return LeaseLock(shared, group, ttl_s=TTL), SharedJournal(shared, group)


def test_a_live_lease_is_never_taken_and_a_dead_ones_is_after_it_expires(postgres):
    location = postgres.fresh_dsn()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "collections"), "KILN_CATALOG": location}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "leased"
        lock, _journal = _runner(location, "web")
        with pytest.raises(RolloutLocked, match=f"group 'web' is already running .* pid {holder.pid}"):
            lock.acquire()
        time.sleep(TTL * 2)  # longer than the lease: the heartbeat keeps it
        with pytest.raises(RolloutLocked, match="last heartbeat [01]s ago"):
            lock.acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    killed = time.monotonic()
    while True:
        try:
            lock.acquire()
            break
        except RolloutLocked:
            assert time.monotonic() - killed < TTL * 4, "the dead runner's lease was never taken over"
            time.sleep(0.1)
    waited = time.monotonic() - killed
    try:
        # The holder's last heartbeat was at most TTL/3 before it died: its lease ran TTL from there.
        assert waited >= TTL * 2 / 3 - 0.1, (
            f"taken over {waited:.2f}s after the holder died: before its lease ended"
        )
    finally:
        lock.release()
    lock.acquire()  # released for real
    lock.release()


def test_a_second_runner_takes_a_dead_runners_roll_out_over_from_the_shared_journal(postgres, tmp_path):
    location = postgres.fresh_dsn()
    world = World()
    world.seed(4, V1)
    lock_a, journal_a = _runner(location, world.group)
    first = rollout(world, tmp_path / "runner-a", V2, batch_size=1)
    first.lock, first.journal_keeper = lock_a, journal_a
    lock_a.release = lambda: lock_a._stop.set()  # a runner killed mid-batch never releases its lease
    world.crash_at = 5
    with pytest.raises(Crash):
        first.run()

    lock_b, journal_b = _runner(location, world.group)
    second = rollout(world, tmp_path / "runner-b", V2, batch_size=1)
    second.lock, second.journal_keeper = lock_b, journal_b
    assert not (tmp_path / "runner-b").exists()  # runner B's state folder knows nothing of A's roll-out
    with pytest.raises(RolloutLocked, match=f"group '{world.group}' is already running"):
        second.run()
    time.sleep(TTL)
    result = second.run()
    assert result["status"] == "succeeded" and len(result["runs"]) == 2
    assert [e["event"] for e in result["events"]].count("resume") == 1
    world.assert_converged(4, "web/2")
    assert journal_b.read("") == journal_a.read("")  # both runners see the one journal
