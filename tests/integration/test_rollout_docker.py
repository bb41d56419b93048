"""Roll-outs against the real Docker engine and HAProxy, with clients on 127.0.0.1 the whole time."""

from __future__ import annotations

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment
from rollout_fixtures import assert_converged, engine_rollout, snapshot
from rollout_support import LoadGenerator

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _lb_address(group: str) -> str:
    address = docker_environment.load_balancer(group).address()
    assert address and address.startswith("127.0.0.1:"), address
    return address


def test_a_good_version_rolls_out_with_zero_failed_requests(rollout_world):
    world = rollout_world
    group = world.group()
    first = engine_rollout(world, group, "good", size=4, batch_size=4)
    assert first["status"] == "succeeded"
    assert_converged(group, world.version("good").ref, 4)
    address = _lb_address(group)

    with LoadGenerator(address, rate=100) as load:
        result = engine_rollout(world, group, "next", batch_size=2, max_surge=2)
    report = load.report
    assert result["status"] == "succeeded", result["events"][-5:]
    assert report.total >= 100 and not report.failed, report.summary()
    # Clients saw the old version, then the new one, and nothing else.
    assert set(report.bodies()) == {world.version("good").ref, world.version("next").ref}, report.summary()
    snap = assert_converged(group, world.version("next").ref, 4)
    assert [len(b["slots"]) for b in result["batches"]] == [2, 2]

    # Every instance is immutable and private: read-only root, /tmp on tmpfs, no port published on the host
    # (the load balancer reaches it on the group network; kiln probes it there too).
    for name, slot, _, _ in snap["instances"]:
        attrs = docker_api.client().containers.get(name).attrs
        assert attrs["HostConfig"]["ReadonlyRootfs"] is True
        assert "/tmp" in attrs["HostConfig"]["Tmpfs"]
        assert attrs["Config"]["Labels"]["kiln.slot"] == str(slot)
        mounts = {m["Destination"]: m.get("Name") for m in attrs["Mounts"]}
        assert mounts["/srv/data"] == f"kiln-{group}-{slot}-data"
        bindings = [b for ports in attrs["NetworkSettings"]["Ports"].values() for b in ports or []]
        assert bindings == [], bindings

    # Rolling out what already runs changes nothing.
    again = engine_rollout(world, group, "next", batch_size=2, max_surge=2)
    assert again["changed"] is False and again["batches"] == []
    assert snapshot(group)["instances"] == snap["instances"]


def test_an_unhealthy_version_rolls_back_by_itself_with_zero_failed_requests(rollout_world):
    world = rollout_world
    group = world.group()
    engine_rollout(world, group, "good", size=4, batch_size=4)
    before = assert_converged(group, world.version("good").ref, 4)

    # In place (no surge, half may be out): old instances really go before the bad ones fail.
    with LoadGenerator(_lb_address(group), rate=100) as load:
        result = engine_rollout(world, group, "bad", batch_size=2, max_surge=0, min_healthy_percentage=50)
    report = load.report
    assert result["status"] == "rolled_back", result["events"][-5:]
    failed = [i for b in result["batches"] for i in b["instances"] if i["outcome"] == "failed"]
    assert failed and all("503" in i["detail"] for i in failed), failed
    assert report.total >= 50 and not report.failed, report.summary()
    assert set(report.bodies()) == {world.version("good").ref}
    after = assert_converged(group, world.version("good").ref, 4)
    # The slots touched got new instances of the old version; none of the bad version is left.
    assert {n for n, *_ in after["instances"]} != {n for n, *_ in before["instances"]}
    assert not [
        c
        for c in docker_api.client().containers.list(all=True, filters={"label": f"kiln.group={group}"})
        if c.labels.get("kiln.version") == world.version("bad").ref
    ]


def test_data_in_a_slot_volume_survives_rollout_and_rollback(rollout_world):
    world = rollout_world
    group = world.group()
    engine_rollout(world, group, "good", size=2, batch_size=2)
    engine = docker_api.client()
    for name, slot, _, _ in snapshot(group)["instances"]:
        run = engine.containers.get(name).exec_run(["sh", "-c", f"echo slot-{slot} > /srv/data/note.txt"])
        assert run.exit_code == 0, run.output

    def notes() -> dict[int, str]:
        out = {}
        for inst in docker_environment.provider().list_instances(group):
            import urllib.request

            with urllib.request.urlopen(f"http://{inst.probe_address}/data/note.txt", timeout=5) as resp:
                out[inst.slot] = resp.read().decode().strip()
        return out

    assert notes() == {0: "slot-0", 1: "slot-1"}
    assert engine_rollout(world, group, "next", batch_size=1)["status"] == "succeeded"
    assert notes() == {0: "slot-0", 1: "slot-1"}
    rolled = engine_rollout(world, group, "bad", batch_size=1, max_surge=0, min_healthy_percentage=50)
    assert rolled["status"] == "rolled_back"
    assert_converged(group, world.version("next").ref, 2)
    assert notes() == {0: "slot-0", 1: "slot-1"}
