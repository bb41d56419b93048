"""Roll-outs that are killed, raced or given bad input, against the real Docker engine and HAProxy."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.options import RolloutError
from rollout_fixtures import assert_converged, engine_rollout, group_inventory, snapshot
from rollout_support import ROOT, VENV_BIN, LoadGenerator
from rollout_support import wait_for as _wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _journal(world, group: str) -> dict:
    return world.journal(group)


def _start(world, tmp_path, group: str, size: int, key: str, rollout: dict, health: dict) -> subprocess.Popen:
    """``ansible-playbook kiln.immutable.rollout`` in its own process group."""
    extra = {"kiln_group": group, "kiln_version": world.version(key).ref, "kiln_rollout": rollout}
    extra["kiln_health"] = health
    return subprocess.Popen(
        [
            str(VENV_BIN / "ansible-playbook"),
            "kiln.immutable.rollout",
            "-i",
            group_inventory(tmp_path, group, size),
            "-e",
            json.dumps(extra),
        ],
        cwd=ROOT,
        env=world.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _events(world, group: str, kind: str, key: str) -> list[dict]:
    """Events of the roll-out to the session's version ``key`` (not of an earlier one)."""
    journal = _journal(world, group)
    if journal.get("target") != world.version(key).ref:
        return []
    return [e for e in journal.get("events", []) if e["event"] == kind]


def test_sigkill_mid_batch_then_rerun_converges_without_orphans(rollout_world, tmp_path):
    world = rollout_world
    group = world.group()
    engine_rollout(world, group, "good", size=4, batch_size=4)
    address = docker_environment.load_balancer(group).address()

    with LoadGenerator(address, rate=100) as load:
        slow = {"interval": 0.3, "healthy_threshold": 4}
        proc = _start(world, tmp_path, group, 4, "next", {"batch_size": 1, "max_surge": 1}, slow)
        try:
            # Kill it in the second batch, between launching the new instance and putting it in service:
            # the module process that runs the engine (its pid is in the journal), then ansible-playbook.
            _wait_for(lambda: len(_events(world, group, "launched", "next")) >= 2, 120, "the second launch")
            os.kill(_journal(world, group)["pid"], signal.SIGKILL)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        time.sleep(1)
        events = len(_journal(world, group)["events"])
        time.sleep(1)
        assert len(_journal(world, group)["events"]) == events  # nothing of the killed run goes on
        left = snapshot(group)
        assert len(left["instances"]) == 5, left  # the killed batch's new instance is still there
        assert _journal(world, group)["status"] == "running"

        rerun = _start(world, tmp_path, group, 4, "next", {"batch_size": 1, "max_surge": 1}, {})
        out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out[-3000:]
    journal = _journal(world, group)
    assert journal["status"] == "succeeded" and len(journal["runs"]) == 2
    assert [e["event"] for e in journal["events"]].count("resume") == 1
    assert_converged(group, world.version("next").ref, 4)
    assert not load.report.failed, load.report.summary()
    assert load.report.total >= 100


def test_a_second_rollout_of_the_same_group_is_refused_while_one_runs(rollout_world, tmp_path):
    world = rollout_world
    group = world.group()
    engine_rollout(world, group, "good", size=2, batch_size=2)
    proc = _start(world, tmp_path, group, 2, "next", {"batch_size": 1}, {})
    try:
        _wait_for(lambda: _events(world, group, "launch", "next"), 120, "the first roll-out to start")
        # Hold the first roll-out right there (it holds the lock) until the second one has been refused.
        journal = _journal(world, group)
        os.kill(journal["pid"], signal.SIGSTOP)
        try:
            second = _start(world, tmp_path, group, 2, "next", {"batch_size": 1}, {})
            out2, _ = second.communicate(timeout=120)
        finally:
            os.kill(journal["pid"], signal.SIGCONT)
        assert second.returncode != 0
        assert f"a roll-out of group '{group}' is already running" in out2, out2[-3000:]
        journal_id = journal["id"]
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, out[-3000:]
    journal = _journal(world, group)
    assert journal["id"] == journal_id and journal["status"] == "succeeded" and len(journal["runs"]) == 1
    assert_converged(group, world.version("next").ref, 2)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_playbook_stops_its_rollout_at_a_safe_point_and_the_next_run_resumes(
    rollout_world, tmp_path, sig
):
    world = rollout_world
    group = world.group()
    engine_rollout(world, group, "good", size=4, batch_size=4)
    address = docker_environment.load_balancer(group).address()
    options = {"batch_size": 1, "max_surge": 1}
    with LoadGenerator(address, rate=100) as load:
        proc = _start(world, tmp_path, group, 4, "next", options, {})
        try:
            _wait_for(lambda: len(_events(world, group, "launched", "next")) >= 2, 120, "the second launch")
            # Ctrl-C reaches the terminal's process group: ansible-playbook, not the module (its own session).
            os.killpg(proc.pid, sig)
            proc.communicate(timeout=60)
            journal = _wait_for(
                lambda: (j := _journal(world, group)).get("status") == "interrupted" and j,
                60,
                "the module to stop at a safe point",
            )
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        [stop] = [e for e in journal["events"] if e["event"] == "interrupted"]
        first_id = journal["id"]
        # The module heard the signal itself, or saw ansible-playbook exit (when in another session).
        assert stop["in_service"] == 4
        assert stop["reason"] == sig.name or "exited" in stop["reason"], stop
        # The old instance of the slot replaced last is out of service and SIGTERMed; the module, in its own
        # session, reaps it on its way out. A half-added instance would stay: it fails the wait below.
        _wait_for(lambda: len(snapshot(group)["instances"]) == 4, 30, "the replaced instance to be reaped")
        left = snapshot(group)
        assert sorted(slot for _, slot, *_ in left["instances"]) == [0, 1, 2, 3], left  # nothing half-added
        assert set(left["servers"].values()) == {"ready"}, left
        assert 1 <= sum(v == world.version("next").ref for _, _, v, _ in left["instances"]) < 4

        rerun = _start(world, tmp_path, group, 4, "next", options, {})  # the lock was released
        out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out[-3000:]
    journal = _journal(world, group)
    assert journal["status"] == "succeeded" and journal["id"] == first_id
    assert [e["event"] for e in journal["events"]].count("resume") == 1
    assert_converged(group, world.version("next").ref, 4)
    assert not load.report.failed, load.report.summary()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"batch_size": "150%"}, "batch_size 150% is over 100%"),
        ({"batch_size": 1, "min_healthy_percentage": 101}, "min_healthy_percentage"),
    ],
)
def test_bad_options_are_refused_before_anything_changes(rollout_world, options, message):
    world = rollout_world
    group = _shared_group(world)
    before = snapshot(group)
    with pytest.raises(RolloutError, match=message):
        engine_rollout(world, group, "next", **options)
    assert snapshot(group) == before
    assert _journal(world, group)["target"] == world.version("good").ref  # no new roll-out recorded


def test_an_unknown_group_is_refused_and_nothing_is_created(rollout_world):
    world = rollout_world
    group = world.group("nothing")
    with pytest.raises(RolloutError, match=f"group '{group}' has no instances"):
        engine_rollout(world, group, "good", batch_size=1)
    status = docker_environment.status(group)
    assert status["network"] is None and status["instances"] == [] and status["volumes"] == []
    assert status["load_balancer"]["status"] == "absent"


def test_a_revoked_version_is_refused_before_anything_changes(rollout_world):
    world = rollout_world
    group = _shared_group(world)
    before = snapshot(group)
    good = world.version("good")
    with Catalog(world.catalog_path) as catalog:
        # A hand-registered build of the good image, then revoked: the catalog, not the test, says so.
        name = catalog.reserve_version("web")
        catalog.register(dataclasses.replace(good, name=name, fingerprint=f"revoked-{name}"))
        catalog.revoke(f"web/{name}", reason="reliability test")
        revoked = catalog.get(f"web/{name}")
    assert revoked.status == "revoked"
    world.versions["revoked"] = revoked
    with pytest.raises(RolloutError, match=f"version web/{name} is revoked"):
        engine_rollout(world, group, "revoked", batch_size=1)
    assert snapshot(group) == before


def _shared_group(world) -> str:
    """One small group on the good version for the refusal tests, which must leave it untouched."""
    if "refusals" not in world.__dict__:
        group = world.group("refusals")
        engine_rollout(world, group, "good", size=2, batch_size=2)
        world.__dict__["refusals"] = group
    return world.__dict__["refusals"]
