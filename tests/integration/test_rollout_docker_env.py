"""invoke up / down through their playbooks: a group's network and load balancer, a newer load balancer
put in without a failed request, then nothing left."""

from __future__ import annotations

import http.client
import json
import time

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment
from rollout_fixtures import assert_converged, engine_rollout
from rollout_support import LoadGenerator, build_version, playbook, task_results

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _inventory(tmp_path, group: str) -> str:
    """Like inventories/local, with one group of instances whose load balancer port Docker picks."""
    path = tmp_path / "hosts.json"
    path.write_text(
        json.dumps(
            {
                "all": {
                    "children": {
                        "kiln_groups": {
                            "hosts": {group: {"kiln_group_load_balancer_options": {"port": 0}}},
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
    return str(path)


def _result(run, task: str) -> dict:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    [found] = [r["result"] for r in task_results(run) if r["task"] == task]
    return found


def _get(address: str, path: str) -> tuple[int, str]:
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode().strip()
    finally:
        conn.close()


def test_up_creates_a_load_balancer_and_down_removes_everything(rollout_world, tmp_path):
    world = rollout_world
    group = world.group()
    inventory = _inventory(tmp_path, group)
    up_task, down_task = "Create the network and the load balancer", "Remove the group"

    planned = _result(playbook(world.env, "up", {}, check=True, inventory=inventory), up_task)
    assert planned["changed"] is True
    assert docker_environment.status(group)["load_balancer"]["status"] == "absent"  # check mode made nothing

    created = _result(playbook(world.env, "up", {}, inventory=inventory), up_task)
    assert created["changed"] is True and created["address"].startswith("127.0.0.1:")
    assert _get(created["address"], "/version")[0] == 503  # a balancer with no instance yet
    again = _result(playbook(world.env, "up", {}, inventory=inventory), up_task)
    assert again["changed"] is False and again["address"] == created["address"]

    engine_rollout(world, group, "good", size=2, batch_size=2)
    assert _get(created["address"], "/version") == (200, world.version("good").ref)

    planned = _result(playbook(world.env, "down", {}, check=True, inventory=inventory), down_task)
    assert planned["changed"] is True and len(planned["removed"]["containers"]) == 4  # lb, its address, 2
    assert len(docker_environment.status(group)["instances"]) == 2  # check mode removed nothing

    removed = _result(playbook(world.env, "down", {}, inventory=inventory), down_task)
    assert removed["changed"] is True
    assert sorted(removed["removed"]["volumes"]) == [f"kiln-{group}-0-data", f"kiln-{group}-1-data"]
    status = docker_environment.status(group)
    assert (status["network"], status["instances"], status["volumes"]) == (None, [], [])
    assert status["load_balancer"]["status"] == "absent"
    assert _result(playbook(world.env, "down", {}, inventory=inventory), down_task)["changed"] is False


def test_up_replaces_an_outdated_load_balancer_without_a_failed_request(rollout_world, tmp_path):
    world = rollout_world
    group = world.group()
    inventory = _inventory(tmp_path, group)
    up_task = "Create the network and the load balancer"
    engine_rollout(world, group, "good", size=2, batch_size=2)
    before = docker_environment.status(group)["load_balancer"]
    assert before["version"] == world.version("lb").ref

    newer = build_version(world.env, "lb", {"repository": f"{world.repo}/lb"}, force=True)  # invoke build
    try:
        planned = _result(playbook(world.env, "up", {}, check=True, inventory=inventory), up_task)
        assert planned["changed"] is True
        assert docker_environment.status(group)["load_balancer"] == before  # check mode replaced nothing

        with LoadGenerator(before["address"], rate=150) as load:
            time.sleep(0.5)
            replaced = _result(playbook(world.env, "up", {}, inventory=inventory), up_task)
            time.sleep(0.5)
        assert not load.report.failed, load.report.summary()
        assert sum(load.report.bodies().values()) == load.report.total > 100

        after = replaced["after"]["load_balancer"]
        assert replaced["changed"] is True and after["version"] == newer.ref
        assert (after["address"], after["servers"]) == (before["address"], before["servers"])
        running = docker_api.client().containers.list(all=True, filters={"label": f"kiln.lb={group}"})
        assert sorted(c.name for c in running) == [f"kiln-{group}-lb", f"kiln-{group}-lb-net"]
        assert _result(playbook(world.env, "up", {}, inventory=inventory), up_task)["changed"] is False

        # The new balancer is the group's: a roll-out drives its servers.
        engine_rollout(world, group, "next", size=2, batch_size=1)
        assert_converged(group, world.version("next").ref, 2)
    finally:
        docker_environment.down(group)
        docker_api.client().images.remove(newer.artifacts["docker"]["image_id"], force=True)
