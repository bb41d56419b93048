"""The rollout and rollback playbooks (role and module inside them) on Docker with kiln-built images.

One group of 2 instances behind its own HAProxy: check mode plans and creates nothing; a roll-out to
a channel converges, and a second run reports no change; a new version follows the channel; the
rollback playbook moves the channel back and the group with it; an unknown group is refused.
"""

from __future__ import annotations

import json

import pytest
import yaml
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment
from rollout_fixtures import TEST_HEALTH, assert_converged
from rollout_support import playbook, task_results, unique

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _rollout_result(run) -> dict:
    results = [
        r["result"] for r in task_results(run) if "Roll out group" in r["task"] and "status" in r["result"]
    ]
    assert results, run.stdout[-3000:] + run.stderr[-2000:]
    return results[-1]


@pytest.fixture
def setup(rollout_world, tmp_path):
    group = rollout_world.group("pb")
    channel = unique("ch")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "kiln_groups": {
                            "hosts": {
                                group: {
                                    "kiln_group_image": "web",
                                    "kiln_group_channel": channel,
                                    "kiln_group_size": 2,
                                    "kiln_group_load_balancer_options": {"port": 0},
                                    "kiln_group_rollout": {"batch_size": 1, "max_surge": 1},
                                    "kiln_group_health": TEST_HEALTH,
                                }
                            },
                            "vars": {
                                "ansible_connection": "local",
                                "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                            },
                        }
                    }
                }
            }
        )
    )
    policy = tmp_path / "policy.yml"
    policy.write_text(json.dumps({"channels": {channel: {"description": "playbook tests"}}}))
    return rollout_world, group, channel, inventory, policy


def test_rollout_and_rollback_playbooks(setup):
    world, group, channel, inventory, policy = setup
    good, nxt = world.version("good"), world.version("next")
    with Catalog(world.catalog_path) as catalog:
        catalog.promote(channel, good.ref, reason="start")

    def run(name: str, check: bool = False, **extra):
        return playbook(world.env, name, {"kiln_group": group, **extra}, check=check, inventory=inventory)

    planned = run("rollout", check=True)
    assert planned.returncode == 0, planned.stdout[-3000:]
    result = _rollout_result(planned)
    assert result["changed"] is True and result["status"] == "planned"
    assert [[(s["slot"], s["from"], s["to"]) for s in b["slots"]] for b in result["plan"]["batches"]] == [
        [(0, None, good.ref)],
        [(1, None, good.ref)],
    ]
    nothing = docker_environment.status(group)  # check mode created no instance, network or load balancer
    assert nothing["instances"] == [] and nothing["network"] is None and nothing["volumes"] == []
    assert nothing["load_balancer"]["status"] == "absent"

    first = run("rollout")
    assert first.returncode == 0, first.stdout[-3000:]
    assert _rollout_result(first)["status"] == "succeeded" and _rollout_result(first)["changed"] is True
    assert_converged(group, good.ref, 2)

    again = _rollout_result(run("rollout"))
    assert again["changed"] is False and again["batches"] == []

    with Catalog(world.catalog_path) as catalog:
        catalog.promote(channel, nxt.ref, reason="next")
    moved = _rollout_result(run("rollout"))
    assert moved["status"] == "succeeded" and [len(b["slots"]) for b in moved["batches"]] == [1, 1]
    assert_converged(group, nxt.ref, 2)

    back = run("rollback", kiln_channel=channel, kiln_image="web", kiln_policy=str(policy))
    assert back.returncode == 0, back.stdout[-3000:]
    assert _rollout_result(back)["target"] == good.ref
    with Catalog(world.catalog_path) as catalog:
        assert catalog.channel_version("web", channel).ref == good.ref
    assert_converged(group, good.ref, 2)


def test_an_unknown_group_is_refused_before_anything_changes(setup):
    world, group, _channel, inventory, _policy = setup
    run = playbook(world.env, "rollout", {"kiln_group": f"{group},nope-{group}"}, inventory=inventory)
    assert run.returncode != 0
    assert f"unknown group(s) nope-{group}" in run.stdout
    assert docker_environment.status(group)["instances"] == []
