"""The Docker daemon restarted in the middle of a roll-out: the roll-out fails cleanly (or waits), the
instances and the load balancer come back by their restart policy, and a re-run converges.

This test stops and starts the machine's dockerd, which would break every other Docker test running at
the same time, so it is deselected unless KILN_TEST_DOCKERD_RESTART=1 is set (tests/conftest.py), for a
run of its own once everything else is done:

    KILN_TEST_DOCKERD_RESTART=1 .venv/bin/pytest tests/reliability/test_docker_daemon_restart.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment
from rollout_fixtures import assert_converged, engine_rollout
from rollout_support import LoadGenerator
from test_rollout_docker_faults import _events, _start, _wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.dockerd_restart]


def _restart_dockerd() -> None:
    """Stop the daemon (it stops the containers) and start it again the way scripts/setup does."""
    pid = int(
        subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=True).stdout.split()[0]
    )
    os.kill(pid, signal.SIGTERM)
    _wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 60, "dockerd to stop")
    with open("/var/log/kiln-dockerd.log", "ab") as log:
        subprocess.Popen(
            ["dockerd"], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    _wait_for(lambda: subprocess.run(["docker", "info"], capture_output=True).returncode == 0, 60, "dockerd")


def test_a_docker_daemon_restart_mid_rollout_then_a_rerun_converges(rollout_world, tmp_path):
    world = rollout_world
    group = world.group()
    engine_rollout(world, group, "good", size=4, batch_size=4)
    proc = _start(world, tmp_path, group, 4, "next", {"batch_size": 1, "max_surge": 1}, {})
    try:
        _wait_for(lambda: len(_events(world, group, "launched", "next")) >= 2, 120, "the second launch")
        _restart_dockerd()
        out, _ = proc.communicate(timeout=300)  # ends by itself: failed cleanly or finished
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # The group is back by its restart policy: the load balancer serves without a roll-out.
    lb = docker_environment.load_balancer(group)
    _wait_for(lambda: lb.address() and LoadGenerator(lb.address())._one().ok, 60, "the group to serve again")
    rerun = _start(world, tmp_path, group, 4, "next", {"batch_size": 1, "max_surge": 1}, {})
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out[-3000:]
    assert_converged(group, world.version("next").ref, 4)
    with LoadGenerator(lb.address(), rate=50) as load:
        time.sleep(1)
    assert not load.report.failed, load.report.summary()
    assert docker_api.client().containers.get(lb.container_name).status == "running"
