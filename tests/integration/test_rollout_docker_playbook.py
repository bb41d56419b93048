"""ansible-playbook kiln.immutable.rollout on Docker as a user runs it: under load, check mode, refusals."""

from __future__ import annotations

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment
from rollout_fixtures import assert_converged, group_inventory, rollout_result, snapshot
from rollout_support import LoadGenerator, playbook

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_the_rollout_playbook_replaces_a_group_under_load_without_a_failed_request(rollout_world, tmp_path):
    world = rollout_world
    group = world.group()
    inventory = group_inventory(tmp_path, group, size=4)
    good, nxt = world.version("good").ref, world.version("next").ref

    first = playbook(world.env, "rollout", {"kiln_group": group, "kiln_version": good}, inventory=inventory)
    assert first.returncode == 0, first.stdout[-3000:]
    assert_converged(group, good, 4)
    before = snapshot(group)
    group_before = docker_environment.status(group)

    plan = playbook(
        world.env, "rollout", {"kiln_group": group, "kiln_version": nxt}, check=True, inventory=inventory
    )
    planned = rollout_result(plan)
    assert plan.returncode == 0 and planned["changed"] is True
    assert [[s["to"] for s in b["slots"]] for b in planned["plan"]["batches"]] == [[nxt, nxt], [nxt, nxt]]
    assert snapshot(group) == before  # check mode changed nothing: instances, servers, volumes,
    assert docker_environment.status(group) == group_before  # the network and the load balancer

    address = docker_environment.load_balancer(group).address()
    with LoadGenerator(address, rate=100) as load:
        run = playbook(world.env, "rollout", {"kiln_group": group, "kiln_version": nxt}, inventory=inventory)
    result = rollout_result(run)
    assert run.returncode == 0 and result["status"] == "succeeded", run.stdout[-3000:]
    assert not load.report.failed and load.report.total >= 100, load.report.summary()
    assert_converged(group, nxt, 4)

    again = playbook(world.env, "rollout", {"kiln_group": group, "kiln_version": nxt}, inventory=inventory)
    assert again.returncode == 0 and rollout_result(again)["changed"] is False


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"kiln_rollout": {"batch_size": 0}}, "batch_size must be at least 1"),
        ({"kiln_rollout": {"batch_size": "150%"}}, "batch_size 150% is over 100%"),
        ({"kiln_channel": "nosuch"}, "channel 'nosuch' of image 'web' is unknown"),
        ({"kiln_group": "kt-no-such-group"}, "unknown group(s) kt-no-such-group"),
    ],
    ids=["batch-size-0", "percentage-over-100", "unknown-channel", "unknown-group"],
)
def test_the_rollout_playbook_refuses_bad_input_before_anything_changes(
    rollout_world, tmp_path, extra, message
):
    world = rollout_world
    group = _running_group(world, tmp_path)
    before = snapshot(group)
    run = playbook(
        world.env,
        "rollout",
        {"kiln_group": group, "kiln_version": world.version("next").ref, **extra}
        if "kiln_channel" not in extra
        else {"kiln_group": group, **extra},
        inventory=group_inventory(tmp_path, group, size=2),
    )
    assert run.returncode != 0
    assert message in run.stdout, run.stdout[-3000:]
    assert snapshot(group) == before


def _running_group(world, tmp_path) -> str:
    """One 2-instance group on the good version, shared by the refusal cases, which must not touch it."""
    if "playbook_refusals" not in world.__dict__:
        group = world.group("refused")
        run = playbook(
            world.env,
            "rollout",
            {"kiln_group": group, "kiln_version": world.version("good").ref},
            inventory=group_inventory(tmp_path, group, size=2),
        )
        assert run.returncode == 0, run.stdout[-3000:]
        world.__dict__["playbook_refusals"] = group
    return world.__dict__["playbook_refusals"]
