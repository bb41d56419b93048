"""Resume: the roll-out dies at every step (before or after the change lands); a re-run ends converged.

A :class:`Crash` is a BaseException, like SIGKILL it is not handled as a slot failure: the journal
stays as the last step left it and the group may hold two instances in a slot, a server in
maintenance or draining, or a server whose instance is gone.
"""

from __future__ import annotations

import json

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.engine import Rollout
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.interfaces import (
    SERVER_MAINT,
    Instance,
)
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.options import RolloutError
from rollout_fakes import V1, V2, V3, Crash, FakeProvider, World, fake_rollout

SIZE = 3
OPTIONS = {"batch_size": 2, "max_surge": 1, "min_healthy_percentage": 50}  # surge and in place both happen


def rollout(world: World, tmp_path, target=V2, **options) -> Rollout:
    return fake_rollout(world, tmp_path, target, **{**OPTIONS, **options})


def steps_of_a_clean_run(bad: bool) -> int:
    world = World()
    world.seed(SIZE, V1)
    if bad:
        world.bad_slots.add(("web/2", 2))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        rollout(world, tmp).run()
    return world.changes


GOOD_STEPS = steps_of_a_clean_run(bad=False)
BAD_STEPS = steps_of_a_clean_run(bad=True)


def crash_then_rerun(tmp_path, step: int, after: bool, bad: bool) -> tuple[World, dict, dict]:
    world = World()
    world.seed(SIZE, V1)
    if bad:
        world.bad_slots.add(("web/2", 2))
    world.crash_at, world.crash_after = step, after
    with pytest.raises(Crash):
        rollout(world, tmp_path).run()
    journal = json.loads((tmp_path / world.group / "journal.json").read_text())
    result = rollout(world, tmp_path).run()
    return world, journal, result


def test_a_clean_run_has_enough_steps_to_crash_in():
    assert GOOD_STEPS == SIZE * 6  # launch, add, enable, drain, remove, terminate per slot
    assert BAD_STEPS > GOOD_STEPS


@pytest.mark.parametrize("after", [False, True], ids=["before-change", "after-change"])
@pytest.mark.parametrize("step", range(1, GOOD_STEPS + 1))
def test_rerun_after_a_crash_ends_converged(tmp_path, step, after):
    world, journal, result = crash_then_rerun(tmp_path, step, after, bad=False)
    assert journal["status"] == "running"
    assert result["status"] == "succeeded" and result["id"] == journal["id"]
    world.assert_converged(SIZE, "web/2")  # one instance per slot, no orphan server, all in service
    assert result["before"] == {str(s): "web/1" for s in range(SIZE)}


@pytest.mark.parametrize("after", [False, True], ids=["before-change", "after-change"])
@pytest.mark.parametrize("step", range(1, BAD_STEPS + 1))
def test_rerun_after_a_crash_of_a_failing_roll_out_ends_rolled_back(tmp_path, step, after):
    world, journal, result = crash_then_rerun(tmp_path, step, after, bad=True)
    assert result["status"] == "rolled_back", result["events"][-5:]
    world.assert_converged(SIZE, "web/1")


def test_a_crash_in_the_rollback_phase_resumes_the_rollback(tmp_path):
    world = World()
    world.seed(SIZE, V1)
    world.bad_slots.add(("web/2", 2))
    world.crash_at = BAD_STEPS - 2  # well inside the rollback
    with pytest.raises(Crash):
        rollout(world, tmp_path).run()
    journal = json.loads((tmp_path / world.group / "journal.json").read_text())
    assert journal["phase"] == "rollback" and journal["status"] == "running"
    result = rollout(world, tmp_path).run()
    assert result["status"] == "rolled_back"
    assert [e["event"] for e in result["events"]].count("resume") == 1
    world.assert_converged(SIZE, "web/1")


def test_reconcile_removes_leftovers(tmp_path):
    world = World()
    world.seed(SIZE, V1)
    prov = FakeProvider(world)
    # A new instance left in maintenance next to the old one, and a server whose instance is gone.
    extra = prov.launch(world.group, 1, V2)
    world.servers[extra.name] = SERVER_MAINT
    world.servers["kiln-web-test-9-gone"] = SERVER_MAINT
    result = rollout(world, tmp_path).run()
    assert result["status"] == "succeeded"
    world.assert_converged(SIZE, "web/2")
    removed = [e.get("server") for e in result["events"] if e["event"] == "server_removed"]
    assert "kiln-web-test-9-gone" in removed


def test_a_new_target_supersedes_an_unfinished_roll_out(tmp_path):
    world = World()
    world.seed(SIZE, V1)
    world.crash_at = 6
    with pytest.raises(Crash):
        rollout(world, tmp_path).run()
    old_id = json.loads((tmp_path / world.group / "journal.json").read_text())["id"]
    result = rollout(world, tmp_path, target=V3).run()
    assert result["status"] == "succeeded" and result["id"] != old_id
    world.assert_converged(SIZE, "web/3")
    assert json.loads((tmp_path / world.group / f"{old_id}.json").read_text())["status"] == "superseded"


def test_a_damaged_journal_is_refused_naming_it(tmp_path):
    world = World()
    world.seed(SIZE, V1)
    folder = tmp_path / world.group
    folder.mkdir()
    (folder / "journal.json").write_text('{"status": "runn')
    with pytest.raises(RolloutError, match=r"journal .*journal.json cannot be read"):
        rollout(world, tmp_path).run()
    assert world.mutations() == []


def test_check_mode_after_a_crash_shows_the_remaining_plan(tmp_path):
    world = World()
    world.seed(SIZE, V1)
    world.crash_at = GOOD_STEPS // 2
    with pytest.raises(Crash):
        rollout(world, tmp_path).run()
    world.calls.clear()
    plan = rollout(world, tmp_path).plan()
    assert plan["resume"] is True and plan["changed"] is True
    planned = {s["slot"] for b in plan["batches"] for s in b["slots"]}
    on_old = {i.slot for i in world.instances.values() if i.version == "web/1"}
    # A slot replaced in place can be caught empty: its old instance gone, the new one not launched yet.
    empty = set(range(SIZE)) - {i.slot for i in world.instances.values()}
    assert planned <= on_old | set(plan["cleanup_slots"]) | empty and planned
    assert world.mutations() == []


def test_instance_round_trips_through_json():
    inst = Instance("id1", "n", "g", 2, "web/1", "127.0.0.1:1", "n:8080", 1.5, {"image": "x"})
    assert Instance.from_dict(json.loads(json.dumps(inst.to_dict()))) == inst


def test_stopped_instances_are_replaced_without_probing(tmp_path):
    world = World()
    world.seed(SIZE, V1)
    prov = FakeProvider(world)
    # Slot 0's only instance has exited; slot 1 has a live instance and an exited leftover.
    for inst in list(world.instances.values()):
        if inst.slot == 0:
            inst.alive, inst.probe_address = False, ""
    extra = prov.launch(world.group, 1, V2)
    extra.alive, extra.probe_address = False, ""
    world.calls.clear()
    plan = rollout(world, tmp_path).plan()
    assert plan["cleanup_slots"] == [0, 1]
    assert [(s["slot"], s["from"]) for b in plan["batches"] for s in b["slots"]][0] == (0, None)
    result = rollout(world, tmp_path).run()
    assert result["status"] == "succeeded"
    world.assert_converged(SIZE, "web/2")
    stopped = [
        e["instance"] for e in result["events"] if e["event"] == "terminated" and e["reason"] == "stopped"
    ]
    assert len(stopped) == 1
    assert not [e for e in result["events"] if e["event"] == "drain" and e["instance"] == extra.name]
