"""Analysis and strategies against the real Docker engine and HAProxy's numbers, with load on 127.0.0.1.

The session's images include ``errors`` (healthy, but / answers 500 for a fifth of the requests) and
``slow`` (healthy, but / takes about a second): a health check lets both through; analysis must not.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment
from rollout_fixtures import assert_converged, engine_rollout, group_inventory, rollout_result, snapshot
from rollout_support import ROOT, VENV_BIN, LoadGenerator, playbook

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FAULT_SHARE = 0.2  # golden_image_fault_share of the errors image
ANALYSIS = {"max_error_rate": "1%", "min_requests": 40, "bake_time": 3}


def _address(group: str) -> str:
    address = docker_environment.load_balancer(group).address()
    assert address and address.startswith("127.0.0.1:"), address
    return address


def _wall(load: LoadGenerator, sample_t: float) -> float:
    """The epoch time of a sample (its ``t`` counts from the load's start)."""
    return load.started_wall + sample_t


def _loaded(address: str, **kwargs) -> LoadGenerator:
    load = LoadGenerator(address, **kwargs)
    load.started_wall = time.time()
    return load.start()


def _events(result: dict, kind: str, **match) -> list[dict]:
    return [
        e for e in result["events"] if e["event"] == kind and all(e.get(k) == v for k, v in match.items())
    ]


def test_errors_under_rolling_stop_at_the_first_analysed_batch_and_roll_back(rollout_world):
    world = rollout_world
    group = world.group()
    engine_rollout(world, group, "good", size=4, batch_size=4)
    bad = world.version("errors").ref

    load = _loaded(_address(group), rate=100, path="/")
    try:
        result = engine_rollout(world, group, "errors", batch_size=1, max_surge=1, **ANALYSIS)
    finally:
        report = load.stop()
    assert result["status"] == "rolled_back", result["events"][-5:]
    assert [(a["step"], a["verdict"]) for a in result["analysis"]] == [("batch-0", "Failed")]
    assert "error rate of " + bad in result["analysis"][0]["reasons"][0]
    assert [b["phase"] for b in result["batches"]] == ["forward", "rollback"]  # stopped at the first batch
    assert_converged(group, world.version("good").ref, 4)

    # The only failed requests are the bad instance's 500s during the bake: from its enable to the verdict,
    # after which it takes no new request while its slot gets the old version back.
    (enabled,) = _events(result, "enabled", version=bad)
    (judged,) = _events(result, "analysis")
    failed = report.failed
    assert failed and all(s.status == 500 and "fault injected" in s.body for s in failed), report.summary()
    assert all(enabled["t"] - 0.2 <= _wall(load, s.t) <= judged["t"] + 0.2 for s in failed)
    # At most what the window allows: requests in it x the instance's share (1 of 4 servers) x fault rate,
    # with four standard deviations of room for chance.
    in_window = [s for s in report.samples if enabled["t"] <= _wall(load, s.t) <= judged["t"]]
    mean = len(in_window) * (1 / 4) * FAULT_SHARE
    bound = math.ceil(mean + 4 * math.sqrt(mean * (1 - FAULT_SHARE)))
    assert len(failed) <= bound, f"{len(failed)} failed, bound {bound} over {judged['t'] - enabled['t']:.1f}s"


def test_a_slow_version_is_caught_by_the_latency_ratio_and_rolled_back(rollout_world):
    world = rollout_world
    group = world.group()
    engine_rollout(world, group, "good", size=4, batch_size=4)

    load = _loaded(_address(group), rate=60, path="/", workers=32)
    try:
        result = engine_rollout(
            world, group, "slow", batch_size=1, max_surge=1, max_latency_ratio=3, min_requests=15, bake_time=3
        )
    finally:
        report = load.stop()
    assert result["status"] == "rolled_back", result["events"][-5:]
    (verdict,) = result["analysis"]
    assert verdict["verdict"] == "Failed" and "max_latency_ratio 3" in verdict["reasons"][0], verdict
    slow, good = (
        verdict["versions"][world.version("slow").ref],
        verdict["versions"][world.version("good").ref],
    )
    assert slow["latency_ms"] > 3 * max(good["latency_ms"], 1.0)
    assert not report.failed, report.summary()  # slow, not failing
    assert_converged(group, world.version("good").ref, 4)


def test_too_little_traffic_is_inconclusive_and_the_roll_out_pauses(rollout_world):
    world = rollout_world
    group = world.group()
    engine_rollout(world, group, "good", size=3, batch_size=3)

    load = _loaded(_address(group), rate=5, path="/")
    try:
        result = engine_rollout(
            world, group, "next", batch_size=1, max_surge=1, **{**ANALYSIS, "bake_time": 2}
        )
    finally:
        report = load.stop()
    assert result["status"] == "paused", result["events"][-5:]
    assert [a["verdict"] for a in result["analysis"]] == ["Inconclusive"]
    assert "fewer than min_requests 40" in result["analysis"][0]["reasons"][0]
    versions = sorted(v for _, _, v, _ in snapshot(group)["instances"])
    assert versions.count(world.version("next").ref) == 1 and len(versions) == 3  # neither on nor back
    assert not report.failed, report.summary()


def _promote(world, channel: str, key: str) -> None:
    with Catalog(world.catalog_path) as catalog:
        catalog.promote(channel, world.version(key).ref)


def test_blue_green_switches_under_load_and_invoke_rollback_switches_back_without_a_launch(
    rollout_world, tmp_path
):
    world = rollout_world
    group = world.group()
    channel = f"bg{group[2:8]}"
    (tmp_path / "policy.yml").write_text(f"channels:\n  {channel}:\n    description: blue/green test\n")
    options = {"strategy": "blue_green", "rollback_window": 600, "preview_percent": 20, **ANALYSIS}
    inventory = group_inventory(
        tmp_path, group, size=2, kiln_group_channel=channel, kiln_group_rollout=options
    )
    engine_rollout(world, group, "good", size=2, batch_size=2)
    _promote(world, channel, "good")
    _promote(world, channel, "next")
    good, nxt = world.version("good").ref, world.version("next").ref

    load = _loaded(_address(group), rate=100)
    try:
        run = playbook(world.env, "rollout", {"kiln_group": group}, inventory=inventory)
    finally:
        report = load.stop()
    result = rollout_result(run)
    assert run.returncode == 0 and result["status"] == "succeeded", run.stdout[-3000:]
    assert [a["verdict"] for a in result["analysis"]] == ["Successful"]
    assert not report.failed and report.total >= 300, report.summary()
    (switch,) = _events(result, "switch")
    after = [s.body for s in report.samples if _wall(load, s.t) > switch["t"] + 0.2]
    assert after and set(after) == {nxt}, report.summary()  # every request on the new set at once
    kept = snapshot(group)["instances"]
    assert sorted(v for _, _, v, _ in kept) == sorted([good, good, nxt, nxt])  # the old set is kept

    env = {
        **world.env,
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "INVOKE_KILN_INVENTORY": inventory,
        "INVOKE_KILN_STATE_DIR": world.env["KILN_STATE_DIR"],
        "INVOKE_KILN_CATALOG": world.catalog_path,
        "KILN_POLICY": str(tmp_path / "policy.yml"),
    }
    load = _loaded(_address(group), rate=100)
    try:
        back = subprocess.run(
            [str(VENV_BIN / "invoke"), "rollback", "--channel", channel, "--group", group],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        report = load.stop()
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-2000:]
    journal = json.loads(
        (Path(world.env["KILN_STATE_DIR"]) / "rollouts" / group / "journal.json").read_text()
    )
    assert journal["target"] == good and journal["status"] == "succeeded"
    assert not _events(journal, "launch"), "the switch back started an instance"
    (switch,) = _events(journal, "switch")
    assert switch["duration_s"] < 1.0, switch
    (start,) = _events(journal, "start")
    assert switch["t"] - start["t"] < 2.0, "the switch came more than 2 s after the roll-out started"
    assert not report.failed and report.total >= 100, report.summary()
    after = [s.body for s in report.samples if _wall(load, s.t) > switch["t"] + 0.2]
    assert after and set(after) == {good}, report.summary()
    assert_converged(group, good, 2)


def test_a_canary_killed_during_a_bake_resumes_the_step_and_keeps_its_window(rollout_world, tmp_path):
    world = rollout_world
    group = world.group()
    engine_rollout(world, group, "good", size=4, batch_size=4)
    rollout = {
        "strategy": "canary",
        "steps": [{"instances": 1, "bake_time": 8}, {"percent": 100}],
        "max_error_rate": "1%",
        "min_requests": 40,
    }
    extra = {"kiln_group": group, "kiln_version": world.version("next").ref, "kiln_rollout": rollout}
    inventory = group_inventory(tmp_path, group, 4)
    cmd = [
        str(VENV_BIN / "ansible-playbook"),
        "kiln.immutable.rollout",
        "-i",
        inventory,
        "-e",
        json.dumps(extra),
    ]

    load = _loaded(_address(group), rate=100)
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=world.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not ((world.journal(group).get("bake") or {}).get("so_far") or {}).get(
                world.version("next").ref
            ):
                assert time.monotonic() < deadline, "no bake within 120 s"
                time.sleep(0.1)
            time.sleep(1.5)
            os.kill(world.journal(group)["pid"], signal.SIGKILL)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(10)
        killed = world.journal(group)
        assert killed["status"] == "running" and killed["bake"]["step"] == 0
        so_far = killed["bake"]["so_far"][world.version("next").ref]["requests"]

        rerun = playbook(world.env, "rollout", extra, inventory=inventory)
    finally:
        report = load.stop()
    result = rollout_result(rerun)
    assert rerun.returncode == 0 and result["status"] == "succeeded", rerun.stdout[-3000:]
    assert len(result["runs"]) == 2 and _events(result, "bake_resume")
    (step0,) = result["analysis"]
    assert step0["step"] == 0 and step0["verdict"] == "Successful"
    assert step0["started_at"] == killed["bake"]["started_at"]  # the same window went on
    assert step0["versions"][world.version("next").ref]["requests"] >= so_far
    assert not report.failed, report.summary()
    assert_converged(group, world.version("next").ref, 4)
