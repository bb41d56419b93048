"""`invoke pipeline` end to end on the local default, as a user runs it.

One module-wide world: its own state folder (catalog, logs), its own inventory with two small groups
whose load balancers Docker puts on free ports, and its own Docker repository for the web image, so it
never meets another test's containers, tags or ports. The tests run in order and build on each other:
a good image goes to prod; running again changes nothing; an unhealthy image fails its test and stops.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_support import World

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    made = World(tmp_path_factory.mktemp("pipeline"))
    yield made
    made.cleanup()


def _get(address: str, path: str) -> tuple[int, str]:
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode().strip()
    finally:
        conn.close()


def _lb_address(group: str) -> str:
    from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment

    return docker_environment.status(group)["load_balancer"]["address"]


def test_a_good_image_goes_from_build_to_prod(world):
    result = world.pipeline()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    stages = [
        "build",
        "promote dev",
        "test",
        "promote staging",
        f"rollout {world.groups['staging']}",
        "promote prod",
        f"rollout {world.groups['prod']}",
    ]
    for stage in stages:  # every stage ran, and says how long it took
        assert re.search(rf"^  {re.escape(stage)}\s+done\s+\d+\.\d+s", result.summary, re.M), result.summary
    assert "pipeline passed" in result.summary
    with world.catalog() as catalog:
        assert catalog.channels("web") == {"dev": "web/1", "staging": "web/1", "prod": "web/1"}
        (test,) = catalog.get("web/1").tests
    assert test["passed"] and test["details"]["scenario"] == "image" and Path(test["log_path"]).is_file()
    # what users reach through each group's load balancer is the new version
    for group in world.groups.values():
        assert _get(_lb_address(group), "/version") == (200, "web/1")
        assert [c.labels.get("kiln.version") for c in world.instances(group)] == ["web/1"]


def test_running_again_with_nothing_changed_does_nothing(world):
    before = world.snapshot()
    image_ids = {group: [c.image.id for c in world.instances(group)] for group in world.groups.values()}
    result = world.pipeline()
    assert result.returncode == 0, result.stdout[-6000:]
    assert "nothing to do" in result.summary, result.summary
    for stage in ("build", "promote dev", "test", "promote staging", "promote prod"):
        assert re.search(rf"^  {re.escape(stage)}\s+skipped", result.summary, re.M), result.summary
    assert world.snapshot() == before  # no new version, test result or channel move
    assert {
        group: [c.image.id for c in world.instances(group)] for group in world.groups.values()
    } == image_ids


def test_the_pipeline_playbook_agrees_that_everything_is_done(world):
    before = world.snapshot()
    result = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "kiln.immutable.pipeline",
            "-i",
            str(world.inventory),
            "-e",
            json.dumps({"kiln_pipeline_variables": {"repository": world.repository}}),
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "KILN_STATE_DIR": str(world.state),
            "KILN_CATALOG": str(world.state / "catalog.db"),
            "KILN_ROOT": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # localhost (build, promote, test) and each group (roll-out): nothing changed anywhere
    recaps = dict(re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", result.stdout, re.M))
    assert set(recaps) == {"localhost", *world.groups.values()}, result.stdout[-3000:]
    assert set(recaps.values()) == {"0"}, result.stdout[-3000:]
    assert "web/1 passed scenario 'image'" in result.stdout and "not run again" in result.stdout
    assert world.snapshot() == before


def test_an_unhealthy_image_is_recorded_failed_and_never_promoted(world):
    before = world.snapshot()
    result = world.pipeline("--var", "fault=unhealthy")
    assert result.returncode == 1, result.stdout[-6000:]
    assert "pipeline FAILED at stage 'test'" in result.summary
    assert "check failed: Health: /healthz answers 200" in result.summary
    assert "GET /healthz answered 503" in result.summary
    assert re.search(r"^  promote staging\s+not run", result.summary, re.M)
    with world.catalog() as catalog:
        failed = catalog.get("web/2")
        assert [t["passed"] for t in failed.tests] == [False]
        assert failed.tests[0]["details"]["check"] == "Health: /healthz answers 200"
        channels = catalog.channels("web")
    assert channels == {**before["channels"], "dev": "web/2"}  # built and on dev, no further
    for group in world.groups.values():
        assert _get(_lb_address(group), "/version") == (200, "web/1")

    # the policy holds even when the pipeline is bypassed
    refused = subprocess.run(
        [
            str(VENV_BIN / "invoke"),
            "-f",
            str(world.config),
            "promote",
            "--version",
            "web/2",
            "--channel",
            "staging",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0 and "requires_passing_test" in refused.stdout + refused.stderr
    with world.catalog() as catalog:
        assert catalog.channels("web")["staging"] == "web/1"
