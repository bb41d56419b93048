"""Two runners (two state folders) rolling out one group through one PostgreSQL catalog, for real:
ansible-playbook kiln.immutable.rollout, the Docker provider, SIGKILL and a takeover after the lease."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment
from catalog_support import raw_sql
from rollout_fixtures import group_inventory
from rollout_support import ROOT, VENV_BIN, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LEASE_S = 10  # the lease a dead runner leaves behind (the option lease_ttl; 30 s by default)


def _start(env: dict, inventory: str, group: str, ref: str, warmup: float = 0) -> subprocess.Popen:
    rollout = {"batch_size": 1, "max_surge": 1, "lease_ttl": LEASE_S}
    extra = {"kiln_group": group, "kiln_version": ref, "kiln_rollout": rollout}
    extra["kiln_health"] = {"interval": 0.3, "healthy_threshold": 4, "warmup": warmup}
    return subprocess.Popen(
        [
            str(VENV_BIN / "ansible-playbook"),
            "kiln.immutable.rollout",
            "-i",
            inventory,
            "-e",
            json.dumps(extra),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _journal(location: str, group: str) -> dict:
    rows = raw_sql(location, "SELECT doc FROM rollout_journals WHERE grp=?", (group,))[0]
    return json.loads(rows[0][0]) if rows else {}


def test_two_runners_one_refused_then_the_survivor_takes_over(rollout_world, postgres, tmp_path):
    world = rollout_world
    location = postgres.fresh_dsn()
    with Catalog(world.catalog_path) as local, Catalog(location) as shared:
        shared.import_(local.export())  # the session's versions, now in the shared catalog
    group = world.group()
    inventory = group_inventory(tmp_path, group, 3, kiln_group_load_balancer="none")
    runner = {
        name: {**world.env, "KILN_STATE_DIR": str(tmp_path / name), "KILN_CATALOG": location} for name in "ab"
    }
    good, target = world.version("good").ref, world.version("next").ref

    first = _start(runner["a"], inventory, group, good)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out[-3000:]

    a = _start(runner["a"], inventory, group, target, warmup=20)  # slow batches: B meets A running
    try:
        wait_for(lambda: _journal(location, group).get("target") == target, 120, "runner A to start")
        wait_for(
            lambda: [e for e in _journal(location, group)["events"] if e["event"] == "launched"],
            120,
            "a launch",
        )
        refused = _start(runner["b"], inventory, group, target)
        out_b, _ = refused.communicate(timeout=120)
        assert a.poll() is None, "runner A ended before runner B tried"
        assert refused.returncode != 0 and f"a roll-out of group '{group}' is already running" in out_b
        os.kill(_journal(location, group)["pid"], signal.SIGKILL)  # the module process of runner A
        os.killpg(a.pid, signal.SIGKILL)
    finally:
        a.wait(10)
    killed = time.monotonic()
    assert _journal(location, group)["status"] == "running"

    while True:  # runner B retries, as a CI job would, until A's lease has run out
        b = _start(runner["b"], inventory, group, target)
        out_b, _ = b.communicate(timeout=300)
        if b.returncode == 0:
            break
        assert "is already running" in out_b, out_b[-3000:]
        assert time.monotonic() - killed < LEASE_S * 3, "runner A's lease was never taken over"
        time.sleep(2)
    assert time.monotonic() - killed >= LEASE_S * 2 / 3  # not before A's lease could have ended
    journal = _journal(location, group)
    assert journal["status"] == "succeeded" and len(journal["runs"]) == 2
    assert [e["event"] for e in journal["events"]].count("resume") == 1
    instances = docker_environment.status(group)["instances"]
    assert sorted(i["slot"] for i in instances) == [0, 1, 2]
    assert {i["version"] for i in instances} == {target} and all(i["alive"] for i in instances)
