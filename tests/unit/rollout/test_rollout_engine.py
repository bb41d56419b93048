"""The roll-out engine against a fake provider and load balancer: capacity, surge, rollback, lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.lock import (
    GroupLock,
    RolloutLocked,
    machine_lock_path,
)
from rollout_fakes import V1, VERSIONS, World, fake_prober
from rollout_fakes import fake_rollout as rollout


def slot_events(result: dict, slot: int) -> list[str]:
    return [e["event"] for e in result["events"] if e.get("slot") == slot]


@pytest.fixture
def world() -> World:
    w = World()
    w.seed(4, V1)
    return w


def test_good_version_replaces_every_instance_without_losing_capacity(world, tmp_path):
    engine = rollout(world, tmp_path, batch_size=2)
    engine.prober = fake_prober(world, interval=0.1, healthy_threshold=2)  # a batch's new ones meet
    result = engine.run()
    assert result["status"] == "succeeded" and result["changed"] is True
    world.assert_converged(4, "web/2")
    assert world.min_ready == 4  # default: surge the whole batch, min healthy 100%
    assert {i["mode"] for b in result["batches"] for i in b["instances"]} == {"surge"}
    assert world.max_alive == 6
    assert [b["slots"] for b in result["batches"]] == [[0, 1], [2, 3]]
    for batch in result["batches"]:
        assert batch["outcome"] == "ok" and batch["duration_s"] >= 0
        for inst in batch["instances"]:
            assert inst["outcome"] == "replaced" and inst["mode"] == "surge"
            assert inst["old"]["version"] == "web/1" and inst["new"]["version"] == "web/2"
            assert inst["health"]["healthy"] is True
    # A new instance takes traffic before the old one is drained, and the old is drained before it stops.
    events = slot_events(result, 0)
    order = ["launch", "launched", "server_added", "healthy", "enabled", "drain", "drained", "terminated"]
    assert [e for e in events if e in order] == order
    stamps = [e["t"] for e in result["events"]]
    assert stamps == sorted(stamps)


def test_second_run_changes_nothing(world, tmp_path):
    rollout(world, tmp_path, batch_size=2).run()
    world.calls.clear()
    result = rollout(world, tmp_path, batch_size=2).run()
    assert result["changed"] is False and result["status"] == "succeeded"
    assert result["batches"] == [] and world.mutations() == []


def test_result_is_written_as_json_under_the_group(world, tmp_path):
    result = rollout(world, tmp_path).run()
    path = tmp_path / world.group / f"{result['id']}.json"
    assert result["result_path"] == str(path)
    on_disk = json.loads(path.read_text())
    assert on_disk["status"] == "succeeded" and len(on_disk["batches"]) == 4
    assert on_disk["before"] == {str(s): "web/1" for s in range(4)}
    assert on_disk["after"] == {str(s): "web/2" for s in range(4)}
    assert json.loads((tmp_path / world.group / "journal.json").read_text())["status"] == "succeeded"


def test_in_place_keeps_the_minimum_healthy_level(world, tmp_path):
    world.launch_delay = 0.05  # both of a batch are down at once, while they start
    result = rollout(world, tmp_path, batch_size=2, max_surge=0, min_healthy_percentage=50).run()
    assert result["status"] == "succeeded"
    world.assert_converged(4, "web/2")
    assert world.min_ready == 2 and world.max_alive == 4
    assert {i["mode"] for b in result["batches"] for i in b["instances"]} == {"in_place"}


def test_surge_limit_splits_a_batch_into_waves(world, tmp_path):
    result = rollout(world, tmp_path, batch_size=4, max_surge=1).run()
    assert result["status"] == "succeeded"
    world.assert_converged(4, "web/2")
    assert world.max_alive == 5 and world.min_ready == 4


def test_surge_and_unavailability_together(tmp_path):
    world = World()
    world.seed(10, V1)
    result = rollout(world, tmp_path, batch_size="30%", max_surge="10%", min_healthy_percentage=80).run()
    assert result["status"] == "succeeded"
    world.assert_converged(10, "web/2")
    assert world.max_alive <= 11 and world.min_ready >= 8


def test_launches_within_a_batch_run_in_parallel(world, tmp_path):
    world.launch_delay = 0.3  # long enough to overlap on a busy machine
    rollout(world, tmp_path, batch_size=4).run()
    assert world.max_parallel_launches == 4
    other = World(group="web-other")
    other.seed(4, V1)
    other.launch_delay = 0.3  # long enough to overlap on a busy machine
    rollout(other, tmp_path, batch_size=4, parallel=2).run()
    assert other.max_parallel_launches == 2


def first(result: dict, event: str, slot: int) -> float:
    return next(e["t"] for e in result["events"] if e["event"] == event and e.get("slot") == slot)


def test_the_next_batch_starts_as_soon_as_a_slot_of_the_current_one_is_done(world, tmp_path):
    world.slot_delays[0] = 0.5  # the slow slot of the first batch
    result = rollout(world, tmp_path, batch_size=2).run()
    assert result["status"] == "succeeded"
    world.assert_converged(4, "web/2")
    # Slot 1 was done long before slot 0: the second batch did not wait for it, with at most a batch's
    # worth of slots in flight (2 surging at once).
    assert first(result, "launch", 2) < first(result, "healthy", 0)
    assert world.max_parallel_launches == 2 and world.max_alive <= 6 and world.min_ready == 4
    assert [b["slots"] for b in result["batches"]] == [[0, 1], [2, 3]]


def test_batches_wait_for_each_other_around_a_checkpoint(world, tmp_path):
    world.slot_delays[0] = 0.3
    result = rollout(world, tmp_path, batch_size=2, checkpoints=[50], checkpoint_delay=0.01).run()
    assert result["status"] == "succeeded"
    assert first(result, "launch", 2) > first(result, "checkpoint", None) > first(result, "healthy", 0)


def test_no_slot_starts_once_more_slots_failed_than_tolerated(world, tmp_path):
    world.bad_slots.add(("web/2", 1))
    world.slot_delays.update({1: 0.2, 2: 0.4})  # slot 1 fails while slot 2, started after slot 0, runs
    result = rollout(world, tmp_path, batch_size=2).run()
    assert result["status"] == "rolled_back" and result["failed_slots"] == [1]
    launched = {c[1] for c in world.calls if c[0] == "launch" and c[2] == "web/2"}
    assert launched == {0, 1, 2}  # slot 3 never started
    world.assert_converged(4, "web/1")
    assert world.min_ready == 4


def test_unhealthy_version_rolls_back_by_itself(world, tmp_path):
    world.bad_versions.add("web/2")
    result = rollout(world, tmp_path, batch_size=2).run()
    assert result["status"] == "rolled_back" and result["changed"] is True
    world.assert_converged(4, "web/1")
    assert world.min_ready == 4
    assert result["failed_slots"] == [0, 1]
    failed = result["batches"][0]["instances"][0]
    assert failed["outcome"] == "failed" and "503" in failed["detail"]
    assert failed["health"]["healthy"] is False and failed["health"]["attempts"] == 2  # unhealthy_threshold
    kinds = [e["event"] for e in result["events"]]
    assert kinds.index("stopped") < kinds.index("rollback") < kinds.index("finish")
    # The slots never got the new version, so the rollback has nothing to replace.
    assert [b["phase"] for b in result["batches"]] == ["forward"]


def test_failure_in_a_later_batch_rolls_back_the_replaced_slots(world, tmp_path):
    world.bad_slots.add(("web/2", 2))
    result = rollout(world, tmp_path, batch_size=1).run()
    assert result["status"] == "rolled_back"
    world.assert_converged(4, "web/1")
    assert world.min_ready == 4
    phases = [(b["phase"], b["slots"]) for b in result["batches"]]
    assert phases == [
        ("forward", [0]),
        ("forward", [1]),
        ("forward", [2]),
        ("rollback", [0]),
        ("rollback", [1]),
    ]
    assert all(
        i["outcome"] == "replaced"
        for b in result["batches"]
        if b["phase"] == "rollback"
        for i in b["instances"]
    )


def test_failures_up_to_the_threshold_are_tolerated(world, tmp_path):
    world.bad_slots.add(("web/2", 1))
    result = rollout(world, tmp_path, batch_size=1, max_failures=1).run()
    assert result["status"] == "partial" and result["failed_slots"] == [1]
    assert world.versions() == {0: ["web/2"], 1: ["web/1"], 2: ["web/2"], 3: ["web/2"]}
    assert world.min_ready == 4


def test_failure_threshold_as_a_percentage(world, tmp_path):
    world.bad_slots.update({("web/2", 1), ("web/2", 2)})
    result = rollout(world, tmp_path, batch_size=1, max_failures="25%").run()  # 1 of 4 tolerated
    assert result["status"] == "rolled_back" and result["failed_slots"] == [1, 2]
    world.assert_converged(4, "web/1")


def test_without_auto_rollback_it_stops_and_keeps_capacity(world, tmp_path):
    world.bad_slots.add(("web/2", 1))
    result = rollout(world, tmp_path, batch_size=1, auto_rollback=False).run()
    assert result["status"] == "failed"
    assert world.versions() == {0: ["web/2"], 1: ["web/1"], 2: ["web/1"], 3: ["web/1"]}
    assert world.min_ready == 4 and "rollback" not in [e["event"] for e in result["events"]]


def test_failed_in_place_replacement_puts_the_old_version_back(world, tmp_path):
    world.bad_versions.add("web/2")
    result = rollout(
        world, tmp_path, batch_size=1, max_surge=0, min_healthy_percentage=75, auto_rollback=False
    ).run()
    assert result["status"] == "failed"
    world.assert_converged(4, "web/1")
    assert world.min_ready == 3
    inst = result["batches"][0]["instances"][0]
    assert inst["mode"] == "in_place" and inst["outcome"] == "failed" and inst["restored"]["ok"] is True


def test_a_launch_error_counts_as_a_failure_and_rolls_back(world, tmp_path):
    world.launch_errors.add("web/2")
    result = rollout(world, tmp_path, batch_size=2).run()
    assert result["status"] == "rolled_back"
    world.assert_converged(4, "web/1")
    assert "image not found" in result["batches"][0]["instances"][0]["detail"]


def test_a_launched_instance_that_fails_before_it_is_in_service_is_terminated(world, tmp_path):
    # The load balancer restarted (with the Docker daemon) between adding the new server and enabling it.
    world.lost_servers.add("web/2")
    result = rollout(world, tmp_path, batch_size=1).run()
    assert result["status"] == "rolled_back"
    failed = result["batches"][0]["instances"][0]
    assert failed["outcome"] == "failed" and "no server" in failed["detail"]
    world.assert_converged(4, "web/1")  # no instance of web/2 left running out of service
    assert [e["event"] for e in result["events"]].count("terminated") == 1


def test_checkpoint_pauses_until_the_next_run(world, tmp_path):
    result = rollout(world, tmp_path, batch_size=1, checkpoints=[50]).run()
    assert result["status"] == "paused" and result["changed"] is True
    assert world.versions() == {0: ["web/2"], 1: ["web/2"], 2: ["web/1"], 3: ["web/1"]}
    resumed = rollout(world, tmp_path, batch_size=1, checkpoints=[50]).run()
    assert resumed["status"] == "succeeded" and resumed["id"] == result["id"]
    world.assert_converged(4, "web/2")
    assert [e["percentage"] for e in resumed["events"] if e["event"] == "checkpoint"] == [50]
    assert [e["event"] for e in resumed["events"]].count("resume") == 1


def test_checkpoint_with_a_delay_waits_and_goes_on(world, tmp_path):
    result = rollout(world, tmp_path, batch_size=1, checkpoints=[25, 75], checkpoint_delay=0.01).run()
    assert result["status"] == "succeeded"
    assert [e["percentage"] for e in result["events"] if e["event"] == "checkpoint"] == [25, 75]


def test_first_roll_out_fills_an_empty_group(tmp_path):
    world = World()
    result = rollout(world, tmp_path, size=3, batch_size="100%").run()
    assert result["status"] == "succeeded"
    world.assert_converged(3, "web/2")
    assert {i["mode"] for b in result["batches"] for i in b["instances"]} == {"fill"}


def test_a_second_roll_out_of_the_group_is_refused_while_one_runs(world, tmp_path):
    holder = GroupLock(machine_lock_path(world.group), world.group)
    holder.acquire()
    try:
        with pytest.raises(
            RolloutLocked, match=f"a roll-out of group '{world.group}' is already running .*pid"
        ):
            rollout(world, tmp_path).run()
        assert world.mutations() == []
    finally:
        holder.release()
    assert rollout(world, tmp_path).run()["status"] == "succeeded"


def test_the_lock_is_machine_wide_not_per_state_folder(world, tmp_path):
    """Two state folders on one machine (two checkouts, two CI jobs) still roll a group out one at a time."""
    holder = GroupLock(machine_lock_path(world.group), world.group)
    holder.acquire()
    try:
        with pytest.raises(RolloutLocked, match=f"a roll-out of group '{world.group}' is already running"):
            rollout(world, tmp_path / "other-state-folder").run()
        assert world.mutations() == []
    finally:
        holder.release()


def test_the_default_lock_folder_is_shared_by_every_user(monkeypatch):
    monkeypatch.delenv("KILN_LOCK_DIR", raising=False)
    path = machine_lock_path("web")
    assert path in ("/run/lock/kiln/web.lock", "/tmp/kiln-locks/web.lock")
    assert os.stat(os.path.dirname(path)).st_mode & 0o1777 == 0o1777


def test_the_lock_dies_with_its_holder(world, tmp_path):
    lock = machine_lock_path(world.group)
    code = (
        "import sys, time; sys.path.insert(0, 'collections');"
        "from ansible_collections.kiln.immutable.plugins.module_utils.rollout.lock import GroupLock;"
        f"GroupLock({str(lock)!r}, 'g').acquire(); print('locked', flush=True); time.sleep(60)"
    )
    root = str(Path(__file__).resolve().parents[3])
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RolloutLocked, match=f"pid {proc.pid}"):
            rollout(world, tmp_path).run()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert rollout(world, tmp_path).run()["status"] == "succeeded"


def test_progress_callback_sees_every_event(world, tmp_path):
    seen: list[str] = []
    r = rollout(world, tmp_path, batch_size=4)
    r.on_event = lambda e: seen.append(e["event"])
    result = r.run()
    assert seen == [e["event"] for e in result["events"]]


def test_versions_are_looked_up_on_the_calling_thread_only(world, tmp_path):
    # The catalog behind resolve_version is a SQLite connection bound to one thread.
    import threading

    caller = threading.get_ident()
    seen: list[int] = []

    def resolve(ref: str):
        seen.append(threading.get_ident())
        return VERSIONS[ref]

    world.bad_versions.add("web/2")
    r = rollout(world, tmp_path, batch_size=2, max_surge=0, min_healthy_percentage=50, auto_rollback=False)
    r.resolve_version = resolve
    result = r.run()
    assert result["status"] == "failed"
    world.assert_converged(4, "web/1")  # both in-place slots were restored from the looked-up version
    assert seen and set(seen) == {caller}
