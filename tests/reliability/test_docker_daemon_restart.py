"""The Docker daemon restarted in the middle of a roll-out: the roll-out fails cleanly (or waits), the
instances come back by their restart policy, and a re-run converges.

The load balancer comes back by its restart policy too, unless Docker starts HAProxy before the
container that holds its address: Docker 20.10 neither orders the containers it restarts by the
network namespace one shares with another nor retries the one that could not start. Then kiln reports
a load balancer that does not serve and ``invoke up`` starts it again, without a roll-out.

The daemon restarted is a private one (tests/dockerd_support.py) that holds copies of the session's
images: kiln in this process, and the playbooks the test starts, reach it through DOCKER_HOST. The
machine's daemon, which the other worker's Docker tests use meanwhile, is never touched.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import signal
import subprocess
import time

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment
from dockerd_support import private_dockerd
from rollout_fixtures import assert_converged, engine_rollout, rollout_result, snapshot
from rollout_support import LoadGenerator
from test_rollout_docker_faults import _events, _start, _wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGES = ("lb", "good", "next")  # the session's versions this file runs


@pytest.fixture(scope="module")
def dockerd(_rollout_session):
    images = [_rollout_session.version(key).artifacts["docker"]["image_id"] for key in IMAGES]
    with private_dockerd(images) as daemon:
        timings = daemon.timings
        print(f"private dockerd: started in {timings['start']:.2f}s, images loaded in {timings['load']:.2f}s")
        yield daemon


@pytest.fixture
def world(rollout_world, dockerd):
    """The session's catalog and state folder, with kiln pointed at the private daemon."""
    with dockerd.serving():
        env = {**rollout_world.env, "DOCKER_HOST": dockerd.host}
        world = dataclasses.replace(rollout_world, env=env, groups=[])
        try:
            yield world
        finally:
            for group in world.groups:
                docker_environment.down(group)


def _listed(group: str) -> list:
    """The group's containers, its load balancer's included."""
    engine = docker_api.client()
    found = engine.containers.list(all=True, filters={"label": f"kiln.group={group}"})
    return found + engine.containers.list(all=True, filters={"label": f"kiln.lb={group}"})


def _containers(group: str) -> dict[str, str]:
    return {c.name: c.id for c in _listed(group)}


def _states(group: str) -> dict[str, str]:
    """Name -> status of the group's containers, with Docker's reason when one could not start."""
    return {c.name: " ".join(filter(None, (c.status, c.attrs["State"].get("Error")))) for c in _listed(group)}


def _answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _serves(lb) -> bool:
    address = lb.address()
    return bool(address) and LoadGenerator(address).once().ok


def _serving_within(lb, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _serves(lb):
            return True
        time.sleep(0.2)
    return False


def _assert_clean(group: str, size: int) -> None:
    """One live instance per slot, each a ready server of the balancer: nothing half-added or left over."""
    snap = snapshot(group)
    assert sorted(slot for _, slot, *_ in snap["instances"]) == list(range(size)), snap
    assert all(alive for *_, alive in snap["instances"]), snap
    assert snap["servers"] == {name: "ready" for name, *_ in snap["instances"]}, snap


def test_a_docker_daemon_restart_mid_rollout_then_a_rerun_converges(world, dockerd, tmp_path):
    group = world.group()
    engine_rollout(world, group, "good", size=4, batch_size=4)
    lb = docker_environment.load_balancer(group)
    options = {"batch_size": 1, "max_surge": 1}
    # Probes slow enough that the daemon restarts while the second new instance is being probed: added to
    # the load balancer, not yet in service.
    slow = {"interval": 0.5, "healthy_threshold": 6}
    proc = _start(world, tmp_path, group, 4, "next", options, slow)
    try:
        _wait_for(lambda: len(_events(world, group, "launched", "next")) >= 2, 120, "the second launch")
        container = docker_api.client().containers.get(_events(world, group, "launched", "next")[1]["id"])
        network = container.attrs["NetworkSettings"]["Networks"][docker_api.network_name(group)]
        address = f"{network['IPAddress']}:8080"
        _wait_for(lambda: _answers(address), 30, "the second new instance to answer")  # it handles SIGTERM
        before = _containers(group)
        print(f"private dockerd restarted in {dockerd.restart():.2f}s")
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("the roll-out did not end within 120 s of the Docker daemon's restart")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # It failed cleanly or finished: the journal has the outcome, the playbook says it, and nothing of the
    # interrupted replacement is left running out of service.
    journal = world.journal(group)
    print(f"the roll-out under the restart ended {journal['status']} (rc {proc.returncode})")
    assert journal["status"] in ("succeeded", "rolled_back", "failed", "partial"), journal["status"]
    assert (proc.returncode == 0) == (journal["status"] == "succeeded"), out[-3000:]
    result = rollout_result(subprocess.CompletedProcess(proc.args, proc.returncode, out, ""))
    assert result["status"] == journal["status"], out[-3000:]  # what the playbook says
    came_back = _serving_within(lb, 30)
    if came_back:
        _assert_clean(group, 4)
        after = _containers(group)
        assert after[lb.container_name] == before[lb.container_name]  # restarted, not replaced
        assert all(docker_api.client().containers.get(i).status == "running" for i in after.values())
        with LoadGenerator(lb.address(), rate=50) as load:  # every instance it sends requests to answers
            time.sleep(1)
        assert not load.report.failed, load.report.summary()
    else:
        # HAProxy started before its address holder and was not retried: kiln says so, and up mends it.
        print(f"the load balancer did not come back by itself: {_states(group)}")
        assert docker_environment.status(group)["load_balancer"]["serving"] is False
        assert docker_environment.up(group)["changed"] is True
        assert _serving_within(lb, 30), _states(group)

    rerun = _start(world, tmp_path, group, 4, "next", options, {})
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out[-3000:]
    assert_converged(group, world.version("next").ref, 4)
    with LoadGenerator(lb.address(), rate=50) as load:
        time.sleep(1)
    assert not load.report.failed, load.report.summary()
    if came_back:
        assert docker_api.client().containers.get(lb.container_name).id == before[lb.container_name]
