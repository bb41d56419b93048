"""Strategies and analysis in the engine, with the fake provider and load balancer's numbers."""

from __future__ import annotations

import json

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.engine import Rollout
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.interfaces import (
    SERVER_READY,
    NullLoadBalancer,
)
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.options import (
    RolloutError,
    RolloutOptions,
)
from rollout_fakes import V1, V2, VERSIONS, Crash, FakeProvider, World, fake_prober, fake_rollout

SIZE = 4
ANALYSIS = {"max_error_rate": "1%", "max_latency_ratio": 1.5, "min_requests": 50, "bake_time": 0.05}


@pytest.fixture
def world():
    w = World()
    w.seed(SIZE, V1)
    w.traffic = 1000  # per look at the numbers: enough for a verdict at a 10% share
    return w


def analyses(result):
    return [(a["step"], a["verdict"]) for a in result["analysis"]]


def launches(world):
    return [c for c in world.calls if c[0] == "launch"]


def test_rolling_with_analysis_goes_on_while_the_new_version_is_as_good(world, tmp_path):
    result = fake_rollout(world, tmp_path, batch_size=1, **ANALYSIS).run()
    assert result["status"] == "succeeded"
    world.assert_converged(SIZE, V2.ref)
    # Every batch that left old instances beside the new ones was analysed; the last had no baseline.
    assert analyses(result) == [
        ("batch-0", "Successful"),
        ("batch-1", "Successful"),
        ("batch-2", "Successful"),
    ]
    first = result["analysis"][0]
    assert first["versions"]["web/2"]["requests"] > 0 and first["versions"]["web/1"]["requests"] > 0


def test_rolling_errors_stop_at_the_first_analysed_batch_and_roll_back(world, tmp_path):
    world.faults[V2.ref] = (0.2, 1.0)
    result = fake_rollout(world, tmp_path, batch_size=1, **ANALYSIS).run()
    assert result["status"] == "rolled_back"
    world.assert_converged(SIZE, V1.ref)
    assert analyses(result) == [("batch-0", "Failed")]
    assert "error rate of web/2" in result["analysis"][0]["reasons"][0]
    assert len(launches(world)) == 2  # one bad instance, then its slot back on web/1
    # Once judged, the bad instance took no more requests: weight 0 before its slot was refilled.
    weighted = [i for i, c in enumerate(world.calls) if c[0] == "set_weight" and c[2] == 0]
    assert weighted and weighted[0] < [i for i, c in enumerate(world.calls) if c[0] == "launch"][1]
    assert world.min_ready >= SIZE  # a health check passed: capacity held all along


def test_a_slow_version_is_caught_by_the_latency_ratio(world, tmp_path):
    world.faults[V2.ref] = (0.0, 800.0)
    result = fake_rollout(world, tmp_path, batch_size=2, **ANALYSIS).run()
    assert result["status"] == "rolled_back"
    assert analyses(result) == [("batch-0", "Failed")]
    assert "max_latency_ratio 1.5" in result["analysis"][0]["reasons"][0]
    world.assert_converged(SIZE, V1.ref)


def test_too_little_traffic_is_inconclusive_and_pauses_then_the_next_run_waits_on(world, tmp_path):
    world.traffic = 1
    result = fake_rollout(world, tmp_path, batch_size=1, **ANALYSIS).run()
    assert result["status"] == "paused"
    assert analyses(result) == [("batch-0", "Inconclusive")]
    assert world.versions()[0] == [V2.ref] and world.versions()[1] == [V1.ref]
    journal = json.loads((tmp_path / world.group / "journal.json").read_text())
    assert journal["bake"]["step"] == "batch-0"

    world.traffic = 1000
    again = fake_rollout(world, tmp_path, batch_size=1, **ANALYSIS).run()
    assert again["status"] == "succeeded"
    # The verdicts of the paused run are kept; the same window went on.
    assert analyses(again)[:2] == [("batch-0", "Inconclusive"), ("batch-0", "Successful")]
    world.assert_converged(SIZE, V2.ref)


def test_without_auto_rollback_a_failed_analysis_stops(world, tmp_path):
    world.faults[V2.ref] = (0.5, 1.0)
    result = fake_rollout(world, tmp_path, batch_size=1, auto_rollback=False, **ANALYSIS).run()
    assert result["status"] == "failed"
    assert world.versions()[0] == [V2.ref]


CANARY = [{"instances": 1, "bake_time": 0.05, "weight": 10}, {"percent": 50}, {"percent": 100}]


def test_canary_steps_with_weights(world, tmp_path):
    result = fake_rollout(world, tmp_path, strategy="canary", steps=CANARY, **ANALYSIS).run()
    assert result["status"] == "succeeded"
    world.assert_converged(SIZE, V2.ref)
    assert [len(b["slots"]) for b in result["batches"]] == [1, 1, 2]
    assert analyses(result) == [(0, "Successful"), (1, "Successful")]
    assert result["steps_passed"] == [0, 1, 2]
    first = result["analysis"][0]["versions"]
    share = first["web/2"]["requests"] / (first["web/2"]["requests"] + first["web/1"]["requests"])
    assert share == pytest.approx(0.10, abs=0.02)  # the step's weight, not 1 in 4
    # Weights are back to equal after each bake.
    assert set(world.weights.values()) <= {1}


def test_canary_killed_during_a_bake_resumes_the_step_and_keeps_the_verdict_so_far(world, tmp_path):
    steps = [{"instances": 1, "bake_time": 0}, {"percent": 50, "bake_time": 1.5}, {"percent": 100}]
    options = {**ANALYSIS, "strategy": "canary", "steps": steps}
    first = fake_rollout(world, tmp_path, **options)
    # Looks at the numbers: 1 before the start, 2 in step 0's bake (snapshot and verdict), then step 1's
    # snapshot and first look; the roll-out dies at the next one, a second into step 1's bake.
    world.crash_at_stats = 6
    with pytest.raises(Crash):
        first.run()
    journal = json.loads((tmp_path / world.group / "journal.json").read_text())
    assert journal["status"] == "running" and journal["steps_passed"] == [0]
    assert journal["bake"]["step"] == 1 and journal["bake"]["so_far"]["web/2"]["requests"] > 0
    started = journal["bake"]["started_at"]
    launched = len(launches(world))

    result = fake_rollout(world, tmp_path, **options).run()
    assert result["status"] == "succeeded"
    assert analyses(result) == [(0, "Successful"), (1, "Successful")]
    step1 = result["analysis"][1]
    assert step1["started_at"] == started  # the same window, not a new one
    assert step1["versions"]["web/2"]["requests"] > journal["bake"]["so_far"]["web/2"]["requests"]
    assert len(launches(world)) == launched + 2  # only step 2's slots were launched after the crash
    world.assert_converged(SIZE, V2.ref)


def test_canary_failure_rolls_back_every_step(world, tmp_path):
    world.faults[V2.ref] = (0.0, 500.0)
    result = fake_rollout(world, tmp_path, strategy="canary", steps=CANARY, **ANALYSIS).run()
    assert result["status"] == "rolled_back"
    assert analyses(result) == [(0, "Failed")]
    world.assert_converged(SIZE, V1.ref)


BLUE_GREEN = {"strategy": "blue_green", "rollback_window": 60, **ANALYSIS}


def test_blue_green_switches_at_once_and_keeps_the_old_set(world, tmp_path):
    result = fake_rollout(world, tmp_path, **BLUE_GREEN).run()
    assert result["status"] == "succeeded"
    assert analyses(result) == [("preview", "Successful")]
    # Both sets run; the old one takes no traffic.
    assert world.versions() == {s: sorted([V1.ref, V2.ref]) for s in range(SIZE)}
    names = {i.name: i.version for i in world.instances.values()}
    assert {n: w for n, w in world.weights.items() if names[n] == V1.ref} == {
        n: 0 for n, v in names.items() if v == V1.ref
    }
    assert world.min_ready >= SIZE
    assert set(result["standby"]) == {str(s) for s in range(SIZE)}
    preview = result["analysis"][0]["versions"]
    share = preview["web/2"]["requests"] / (preview["web/2"]["requests"] + preview["web/1"]["requests"])
    assert share == pytest.approx(0.10, abs=0.02)

    # Rolling out the old version inside the window switches back: nothing is started.
    before = len(launches(world))
    back = fake_rollout(world, tmp_path, target=V1, **BLUE_GREEN).run()
    assert back["status"] == "succeeded", back["events"][-5:]
    assert len(launches(world)) == before
    world.assert_converged(SIZE, V1.ref)
    assert all(world.weights[i.name] == 1 for i in world.instances.values())
    assert [e["event"] for e in back["events"]].count("switch") == 1


def test_blue_green_after_the_window_retires_the_old_set(world, tmp_path):
    fake_rollout(world, tmp_path, **{**BLUE_GREEN, "rollback_window": 0.01}).run()
    import time

    time.sleep(0.05)
    again = fake_rollout(world, tmp_path, **BLUE_GREEN).run()
    assert again["changed"] is True
    world.assert_converged(SIZE, V2.ref)


def test_blue_green_without_a_window_retires_the_old_set_at_once(world, tmp_path):
    result = fake_rollout(world, tmp_path, **{**BLUE_GREEN, "rollback_window": 0}).run()
    assert result["status"] == "succeeded"
    world.assert_converged(SIZE, V2.ref)


def test_a_bad_blue_green_set_never_takes_more_than_the_preview(world, tmp_path):
    world.faults[V2.ref] = (0.3, 1.0)
    result = fake_rollout(world, tmp_path, **BLUE_GREEN).run()
    assert result["status"] == "rolled_back"
    assert analyses(result) == [("preview", "Failed")]
    world.assert_converged(SIZE, V1.ref)
    assert len(launches(world)) == SIZE  # the new set only; the old set never stopped


def test_an_unhealthy_blue_green_set_is_dropped(world, tmp_path):
    world.bad_slots.add((V2.ref, 2))
    result = fake_rollout(world, tmp_path, **BLUE_GREEN).run()
    assert result["status"] == "rolled_back"
    assert result["failed_slots"] == [2]
    world.assert_converged(SIZE, V1.ref)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"strategy": "waterfall"}, "strategy must be one of"),
        ({"strategy": "canary"}, "strategy canary needs steps"),
        ({"steps": [{"percent": 50}]}, "steps are for strategy canary"),
        ({"strategy": "canary", "steps": [{"percent": 50, "instances": 1}]}, r"steps\[0\] needs exactly one"),
        ({"strategy": "canary", "steps": [{"pct": 50}]}, r"steps\[0\] has unknown key\(s\) pct"),
        ({"strategy": "canary", "steps": [{"percent": 50}, {"instances": 1}]}, r"steps\[1\] has fewer"),
        ({"strategy": "canary", "steps": [{"percent": 50, "weight": 0}]}, r"steps\[0\].weight"),
        ({"strategy": "canary", "steps": [{"percent": 150}]}, r"steps\[0\].percent"),
        ({"max_error_rate": "lots"}, "max_error_rate must be"),
        ({"max_latency_ratio": 0.5}, "max_latency_ratio must be"),
        ({"min_requests": 0}, "min_requests must be"),
        ({"bake_time": -1}, "bake_time must be"),
        ({"strategy": "blue_green", "preview_percent": 100}, "preview_percent"),
    ],
)
def test_bad_strategy_options_are_refused_before_anything_changes(world, tmp_path, options, message):
    with pytest.raises(RolloutError, match=message):
        fake_rollout(world, tmp_path, **options).run()
    assert world.calls == []


def test_analysis_is_not_available_without_a_load_balancer(world, tmp_path):
    rollout = Rollout(
        world.group,
        V2,
        FakeProvider(world),
        NullLoadBalancer(),
        fake_prober(world),
        RolloutOptions(**ANALYSIS),
        resolve_version=VERSIONS.__getitem__,
        root=str(tmp_path),
    )
    with pytest.raises(RolloutError, match="not available"):
        rollout.run()
    assert world.calls == []


def test_check_mode_prints_the_steps_of_each_strategy(world, tmp_path):
    canary = fake_rollout(world, tmp_path, strategy="canary", steps=CANARY, **ANALYSIS).plan()
    assert canary["strategy"] == "canary" and canary["analysis"] is True
    assert [(b["step"], len(b["slots"]), b["weight"]) for b in canary["batches"]] == [
        (0, 1, 10),
        (1, 1, None),
        (2, 2, None),
    ]
    green = fake_rollout(world, tmp_path, **BLUE_GREEN).plan()
    assert [len(b["slots"]) for b in green["batches"]] == [SIZE]
    assert world.calls == []
    fake_rollout(world, tmp_path, **BLUE_GREEN).run()
    back = fake_rollout(world, tmp_path, target=V1, **BLUE_GREEN).plan()
    assert back["switch_back"] is True and back["batches"][0]["step"] == "switch_back"
    assert all(state == SERVER_READY for state in world.servers.values())


def test_a_stop_during_a_bake_ends_the_run_and_the_next_goes_on_with_the_window(world, tmp_path):
    import threading

    from ansible_collections.kiln.immutable.plugins.module_utils.rollout.interrupt import StopRequest

    options = {**ANALYSIS, "bake_time": 1.5}
    rollout = fake_rollout(world, tmp_path, batch_size=2, **options)
    rollout.stop = StopRequest()
    threading.Timer(0.5, rollout.stop.set, args=("SIGTERM",)).start()
    result = rollout.run()
    assert result["status"] == "interrupted"
    assert result["bake"]["step"] == "batch-0" and not result.get("analysis")
    again = fake_rollout(world, tmp_path, batch_size=2, **options).run()
    assert again["status"] == "succeeded"
    assert [(a["step"], a["verdict"]) for a in again["analysis"]] == [("batch-0", "Successful")]
    assert again["analysis"][0]["started_at"] == result["bake"]["started_at"]
    world.assert_converged(SIZE, V2.ref)
