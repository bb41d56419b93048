"""The group's HAProxy under faults: restarted, recreated, or missing servers, on the real Docker engine."""

from __future__ import annotations

import subprocess
import time

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment
from ansible_collections.kiln.immutable.plugins.module_utils.observe.drift import GroupTarget, detect
from rollout_fixtures import assert_converged, engine_rollout
from rollout_support import LoadGenerator

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _lb_findings(world, group: str) -> list[str]:
    """What ``invoke drift`` says about the group's load balancer (its lb findings), by instance."""
    target = GroupTarget(group, "web", "dev", load_balancer="haproxy")
    with Catalog(world.catalog_path) as catalog:
        report = detect([target], catalog, filesystem=False, strict=False)
    return sorted(f"{f.instance}: {f.detail}" for f in report.findings if f.kind == "lb")


def _serving(address: str, timeout: float) -> float:
    """Seconds until the address answers 200 to 20 requests in a row."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with LoadGenerator(address, rate=200, max_duration=0.1) as load:
            time.sleep(0.1)
        if load.report.total and not load.report.failed:
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"{address} did not serve within {timeout}s")


def test_a_restarted_load_balancer_serves_the_group_again_without_a_rollout(rollout_world):
    world = rollout_world
    group = world.group()
    engine_rollout(world, group, "good", size=2, batch_size=2)
    lb = docker_environment.load_balancer(group)
    names = sorted(assert_converged(group, world.version("good").ref, 2)["servers"])
    assert _lb_findings(world, group) == []

    # A server lost from the running HAProxy (as after a restart without its list): drift names it.
    lb._cmd(f"set server app/{names[0]} state maint")
    lb._cmd(f"del server app/{names[0]}", ok=("Server deleted",))
    [finding] = _lb_findings(world, group)
    assert finding.startswith(f"{names[0]}: is not served by the group's load balancer")

    # docker restart: HAProxy starts from its configuration, which lists the servers in service.
    subprocess.run(["docker", "restart", "-t", "1", lb.container_name], check=True, capture_output=True)
    lb = docker_environment.load_balancer(group)
    address = lb.address()  # Docker picked the port, and picks again on a restart
    assert _serving(address, timeout=15) < 10
    with LoadGenerator(address, rate=100) as load:
        time.sleep(1.5)
    assert not load.report.failed, load.report.summary()
    assert set(load.report.bodies()) and sum(load.report.bodies().values()) == load.report.total
    assert _lb_findings(world, group) == []
    assert_converged(group, world.version("good").ref, 2)


def test_a_recreated_load_balancer_starts_with_the_servers_last_in_service(rollout_world):
    world = rollout_world
    group = world.group()
    engine_rollout(world, group, "good", size=2, batch_size=1)
    lb = docker_environment.load_balancer(group)
    docker_api.remove_container(lb.container_name, stop_timeout=0)
    assert len(_lb_findings(world, group)) == 2  # no load balancer: neither instance is served

    docker_environment.up(group)  # what `invoke up` does: a new container, no roll-out
    lb = docker_environment.load_balancer(group)
    _serving(lb.address(), timeout=15)
    assert _lb_findings(world, group) == []
    assert_converged(group, world.version("good").ref, 2)


def test_a_restarted_address_holder_is_drift_until_up_starts_haproxy_in_it_again(rollout_world):
    world = rollout_world
    group = world.group()
    engine_rollout(world, group, "good", size=2, batch_size=2)
    lb = docker_environment.load_balancer(group)
    # The holder comes back with a new network namespace; HAProxy is left in the old one, serving nobody.
    subprocess.run(["docker", "restart", "-t", "0", lb.holder_name], check=True, capture_output=True)
    findings = _lb_findings(world, group)
    assert len(findings) == 2 and all("does not serve" in finding for finding in findings), findings

    assert docker_environment.up(group)["changed"] is True
    _serving(docker_environment.load_balancer(group).address(), timeout=15)
    assert _lb_findings(world, group) == []
    assert_converged(group, world.version("good").ref, 2)
