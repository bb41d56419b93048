"""Batch planning and input validation: what is refused; how batches, surge and min healthy are computed."""

from __future__ import annotations

import os

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.engine import Rollout
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.options import (
    RolloutError,
    RolloutOptions,
    batch_sizes,
    plan_batches,
    validate,
)
from rollout_fakes import V1, V2, FakeProvider, FakeVersion, World, fake_prober
from rollout_fakes import fake_rollout as rollout


@pytest.mark.parametrize(
    ("spec", "total", "expected"),
    [
        (1, 4, [[0], [1], [2], [3]]),
        (3, 4, [[0, 1, 2], [3]]),
        ("2", 4, [[0, 1], [2, 3]]),
        ("50%", 4, [[0, 1], [2, 3]]),
        ("30%", 10, [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]),
        ("10%", 4, [[0], [1], [2], [3]]),  # rounds down, but never to 0
        ("100%", 4, [[0, 1, 2, 3]]),
        ([1, "50%", "100%"], 10, [[0], [1, 2, 3, 4, 5], [6, 7, 8, 9]]),
        ([1, 2], 6, [[0], [1, 2], [3, 4], [5]]),  # the last size repeats, like Ansible's serial
        (10, 4, [[0, 1, 2, 3]]),
    ],
)
def test_batches_like_ansible_serial(spec, total, expected):
    assert plan_batches(list(range(total)), spec, total) == expected


def test_percentages_are_of_the_group_not_of_what_is_left():
    # 2 of 10 slots left to replace, batches of 50% of the group: one batch.
    assert plan_batches([3, 7], "50%", 10) == [[3, 7]]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (0, "batch_size must be at least 1, got 0"),
        ("0", "batch_size must be at least 1, got 0"),
        ("150%", "batch_size 150% is over 100%"),
        ("0%", "batch_size must be more than 0%"),
        ([1, 0], "batch_size[1] must be at least 1"),
        ([1, "101%"], "batch_size[1] 101% is over 100%"),
        ("ten", "batch_size must be a whole number or a percentage"),
        (-1, "batch_size must be a whole number or a percentage"),
        (True, "batch_size must be a whole number or a percentage"),
        ([], "batch_size must not be an empty list"),
    ],
)
def test_bad_batch_size_is_refused_naming_it(spec, message):
    with pytest.raises(RolloutError, match=message.replace("[", r"\[").replace("]", r"\]")):
        batch_sizes(spec, 4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_healthy_percentage": 101}, "min_healthy_percentage must be a whole number from 0 to 100"),
        ({"max_surge": "200%"}, "max_surge 200% is over 100%"),
        ({"max_surge": 0}, "max_surge 0 with min_healthy_percentage 100 leaves no room"),
        ({"checkpoints": [0]}, r"checkpoints\[0\] must be a percentage"),
        ({"checkpoints": [50, 150]}, r"checkpoints\[1\] must be a percentage"),
        ({"max_failures": "x"}, "max_failures must be a whole number or a percentage"),
        ({"parallel": 0}, "parallel must be at least 1"),
        ({"size": 0}, "size must be at least 1"),
        ({"drain_timeout": -1}, "drain_timeout must be 0 or more"),
        ({"lease_ttl": 0}, "lease_ttl must be more than 0 seconds"),
    ],
)
def test_bad_options_are_refused_naming_them(options, message):
    with pytest.raises(RolloutError, match=message):
        validate(RolloutOptions(**options), 4)


def test_limits_in_absolute_numbers():
    limits = validate(RolloutOptions(min_healthy_percentage=90, max_surge="25%", max_failures="50%"), 6)
    assert (limits.min_in_service, limits.max_surge, limits.max_failures) == (6, 2, 3)  # ceil, ceil, floor
    assert validate(RolloutOptions(), 6).max_surge is None  # default: the whole batch


def test_bad_input_is_refused_before_anything_changes(tmp_path):
    world = World()
    world.seed(4, V1)
    for options in ({"batch_size": 0}, {"batch_size": "150%"}, {"max_surge": "x"}):
        with pytest.raises(RolloutError):
            rollout(world, tmp_path, **options).run()
    with pytest.raises(RolloutError, match="web/2 is revoked"):
        rollout(world, tmp_path, target=FakeVersion("web", "2", status="revoked"))
    with pytest.raises(RolloutError, match="group must be a name"):
        Rollout("web prod; rm", V2, FakeProvider(world), None, fake_prober(world), root=str(tmp_path))
    assert world.mutations() == []
    assert not os.listdir(tmp_path)


def test_an_unknown_group_is_refused(tmp_path):
    world = World()
    world.seed(2, V1)
    other = World(group="web-nope")
    other.instances = world.instances  # same engine, other group name: it has no instances
    with pytest.raises(RolloutError, match="group 'web-nope' has no instances"):
        rollout(other, tmp_path).run()
    assert world.mutations() == []


def test_surge_zero_refused_only_when_the_group_leaves_no_room(tmp_path):
    world = World()
    world.seed(4, V1)
    with pytest.raises(RolloutError, match="leaves no room"):
        rollout(world, tmp_path, max_surge=0, min_healthy_percentage=80).run()  # ceil(3.2) = 4
    assert world.mutations() == []
    result = rollout(world, tmp_path, max_surge=0, min_healthy_percentage=75).run()
    assert result["status"] == "succeeded"


def test_check_mode_plan_shows_batches_and_changes_nothing(tmp_path):
    world = World()
    world.seed(4, V1)
    plan = rollout(world, tmp_path, batch_size=2).plan()
    assert plan["changed"] is True
    assert [[(s["slot"], s["from"], s["to"]) for s in b["slots"]] for b in plan["batches"]] == [
        [(0, "web/1", "web/2"), (1, "web/1", "web/2")],
        [(2, "web/1", "web/2"), (3, "web/1", "web/2")],
    ]
    assert all(s["instance"].startswith("kiln-web-test-") for b in plan["batches"] for s in b["slots"])
    assert world.mutations() == []
    assert not os.listdir(tmp_path)


def test_plan_skips_instances_already_on_the_target(tmp_path):
    world = World()
    world.seed(4, V1)
    rollout(world, tmp_path, batch_size=1).run()
    world.calls.clear()
    plan = rollout(world, tmp_path).plan()
    assert plan["changed"] is False and plan["batches"] == [] and plan["skipped"] == [0, 1, 2, 3]
    # Two slots back on the old version: only they are planned.
    for inst in list(world.instances.values()):
        if inst.slot in (1, 3):
            inst.version = "web/1"
    plan = rollout(world, tmp_path, batch_size=5).plan()
    assert [[s["slot"] for s in b["slots"]] for b in plan["batches"]] == [[1, 3]]
    assert plan["skipped"] == [0, 2]


def test_plan_with_a_size_fills_empty_slots(tmp_path):
    world = World()
    plan = rollout(world, tmp_path, size=3, batch_size="100%").plan()
    assert [(s["slot"], s["from"], s["to"]) for s in plan["batches"][0]["slots"]] == [
        (0, None, "web/2"),
        (1, None, "web/2"),
        (2, None, "web/2"),
    ]
