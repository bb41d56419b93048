"""Stopping a roll-out at a safe point: a stop request at any step ends the run cleanly; a re-run resumes.

Unlike a crash (test_rollout_resume), an interrupted run leaves no instance half-added, keeps capacity at
or above the minimum, says so in its journal and releases the group's lock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.rollout import interrupt
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.interfaces import SERVER_READY
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.interrupt import (
    StopRequest,
    stop_when_asked,
)
from rollout_fakes import V1, V2, World, fake_rollout

SIZE = 4
OPTIONS = {"batch_size": 2, "max_surge": 1, "min_healthy_percentage": 50}
STEPS = SIZE * 6  # launch, add, enable, drain, remove, terminate per slot


class StoppingWorld(World):
    """Asks the roll-out to stop while its ``stop_at``-th change is under way."""

    def __init__(self, stop: StopRequest, stop_at: int):
        super().__init__()
        self.stop, self.stop_at = stop, stop_at

    def _change(self, name: str, *args) -> None:
        super()._change(name, *args)
        if self.changes == self.stop_at:
            self.stop.set("SIGTERM")


@pytest.mark.parametrize("step", range(1, STEPS + 1))
def test_a_stop_at_any_step_ends_at_a_safe_point_and_the_next_run_resumes(tmp_path, step):
    stop = StopRequest()
    world = StoppingWorld(stop, step)
    world.seed(SIZE, V1)
    first = fake_rollout(world, tmp_path, V2, **OPTIONS)
    first.stop = stop
    result = first.run()

    if result["status"] == "succeeded":  # the stop came during the last wave: nothing was left to stop
        assert step > STEPS // 2
        world.assert_converged(SIZE, "web/2")
        return
    assert result["status"] == "interrupted"
    journal = json.loads((tmp_path / world.group / "journal.json").read_text())
    assert journal["status"] == "interrupted"
    stopped = [e for e in journal["events"] if e["event"] == "interrupted"]
    assert len(stopped) == 1 and stopped[0]["reason"] == "SIGTERM"
    # A safe point: every server is in service, one instance per slot, at or above the minimum.
    assert set(world.servers.values()) == {SERVER_READY}
    assert sorted(i.slot for i in world.instances.values()) == list(range(SIZE))
    assert world.min_ready >= SIZE // 2
    assert stopped[0]["in_service"] == SIZE
    # The lock was released: the next run takes it, resumes the same roll-out and converges.
    again = fake_rollout(world, tmp_path, V2, **OPTIONS).run()
    assert again["status"] == "succeeded" and again["id"] == result["id"]
    world.assert_converged(SIZE, "web/2")


def test_a_stop_before_the_first_batch_changes_nothing(tmp_path):
    world = World()
    world.seed(SIZE, V1)
    rollout = fake_rollout(world, tmp_path, V2, **OPTIONS)
    rollout.stop.set("SIGINT")
    result = rollout.run()
    assert result["status"] == "interrupted" and world.mutations() == []
    assert result["changed"] is False


def test_a_checkpoint_delay_ends_early_on_a_stop(tmp_path):
    world = World()
    world.seed(SIZE, V1)
    rollout = fake_rollout(world, tmp_path, V2, batch_size=2, checkpoints=[50], checkpoint_delay=60)

    def on_event(entry: dict) -> None:
        if entry["event"] == "checkpoint":  # after the first batch: the stop comes during the delay
            threading.Timer(0.2, rollout.stop.set, args=("SIGINT",)).start()

    rollout.on_event = on_event
    started = time.monotonic()
    result = rollout.run()
    assert result["status"] == "interrupted"
    assert time.monotonic() - started < 60 / 2  # a fraction of the 60 s delay
    assert world.versions() == {0: ["web/2"], 1: ["web/2"], 2: ["web/1"], 3: ["web/1"]}


def test_signals_set_the_request_instead_of_ending_the_process():
    stop = StopRequest()
    before = signal.getsignal(signal.SIGTERM)
    with stop_when_asked(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert stop.reason == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_exit_of_the_starting_process_sets_the_request(tmp_path):
    """Ansible starts the module in its own session: its controller's exit is the only sign it gets."""
    out = tmp_path / "reason"
    child = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.join(os.getcwd(), "collections")!r})
        from ansible_collections.kiln.immutable.plugins.module_utils.rollout.interrupt import (
            StopRequest, stop_when_asked)
        stop = StopRequest()
        with stop_when_asked(stop, interval=0.05):
            print("watching", flush=True)
            stop.wait(20)
        open({str(out)!r}, "w").write(stop.reason or "timed out")
    """)
    # The parent starts the child in a new session (as Ansible does), waits until it watches, and exits.
    parent = textwrap.dedent(f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", {child!r}], stdout=subprocess.PIPE,
                                 start_new_session=True)
        child.stdout.readline()
        print(child.pid, flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=30)
    child_pid = int(proc.stdout.split()[-1])
    deadline = time.monotonic() + 20
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.read_text().startswith("process ") and out.read_text().endswith(" exited")
    assert interrupt.gone([(child_pid, "0")]) == child_pid
