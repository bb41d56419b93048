"""Roll-outs of an Auto Scaling group behind a target group, against the local AWS API (moto's server).

The engine is the one the docker provider uses; these tests check what a user would see in the AWS
console: which instances the group has and on which AMI, which targets are registered and healthy,
which launch template versions exist, and how many instances served at every step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog, Version
from ansible_collections.kiln.immutable.plugins.module_utils.common.errors import KilnError
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import rolling_replace
from aws_support import OTHER_REGION, REGION, AWSWorld, FailedChecks, clients, make_ami

HEALTH = {"interval": 0.05, "healthy_threshold": 2, "unhealthy_threshold": 1, "warmup": 0.3, "deadline": 15}


@pytest.fixture
def world(aws_env, tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    return AWSWorld()


@pytest.fixture
def catalog_path(tmp_path):
    return str(tmp_path / "catalog.db")


def record(catalog_path: str, world: AWSWorld, regions=(REGION,)) -> Version:
    """A catalog version whose AMI exists in ``regions`` (tagged as a kiln build tags it)."""
    with Catalog(catalog_path) as catalog:
        name = catalog.reserve_version("web")
        ref = f"web/{name}"
        amis = {
            r: make_ami(world.c["ec2"] if r == REGION else clients(r)["ec2"], "web", ref) for r in regions
        }
        return catalog.register(
            Version(image="web", name=name, fingerprint=f"fp-{name}", artifacts={"ami": amis})
        )


def params(group, version: Version, catalog_path: str, **extra) -> dict:
    return {
        "group": group.name,
        "version": version.ref,
        "catalog": catalog_path,
        "provider": "aws",
        "provider_options": group.provider_options(),
        "load_balancer": "aws",
        "load_balancer_options": group.load_balancer_options(),
        "health": HEALTH,
        "region": REGION,
        "batch_size": 2,
        "max_surge": 2,
        "min_healthy_percentage": 100,
        **extra,
    }


def amis_of(world: AWSWorld, group) -> dict[str, str]:
    return {i: d["ImageId"] for i, d in world.instances(world.asg_instance_ids(group)).items()}


def test_good_version_rolls_out_in_batches_and_capacity_never_drops(world, catalog_path):
    old, new = record(catalog_path, world), record(catalog_path, world)
    group = world.group("web-prod", old.artifacts["ami"][REGION], size=4)
    good = {old.artifacts["ami"][REGION], new.artifacts["ami"][REGION]}
    samples: list[tuple[str, int]] = []

    def sample(event):
        samples.append((event["event"], world.in_service(group, good)))

    with Catalog(catalog_path) as catalog:
        rollout = group.rollout(
            catalog.get(new.ref),
            catalog,
            HEALTH,
            sample,
            batch_size=2,
            max_surge=2,
            min_healthy_percentage=100,
        )
        result = rollout.run()

    assert result["status"] == "succeeded", result
    assert [b["slots"] for b in result["batches"]] == [[0, 1], [2, 3]]
    final = amis_of(world, group)
    assert len(final) == 4 and set(final.values()) == {new.artifacts["ami"][REGION]}
    assert set(world.targets(group)) == set(final), "only the new instances stay registered"
    assert set(world.targets(group).values()) == {"healthy"}
    assert len(samples) > 20 and min(n for _e, n in samples) >= 4, samples
    # the group's launch template now launches the new AMI by default
    default = [v for v in world.template_versions(group) if v["DefaultVersion"]]
    assert default[0]["LaunchTemplateData"]["ImageId"] == new.artifacts["ami"][REGION]
    # nothing left running outside the group
    assert set(world.running_in_vpc()) == set(final)

    again = rolling_replace.execute(params(group, new, catalog_path), check=False)
    assert again["changed"] is False and amis_of(world, group) == final


def test_unhealthy_version_rolls_back_by_itself(world, catalog_path):
    old, bad = record(catalog_path, world), record(catalog_path, world)
    old_ami, bad_ami = old.artifacts["ami"][REGION], bad.artifacts["ami"][REGION]
    group = world.group("web-bad", old_ami, size=4)
    before = amis_of(world, group)
    with FailedChecks(world, group, bad_ami) as checks:
        result = rolling_replace.execute(params(group, bad, catalog_path), check=False)
    assert result["status"] == "rolled_back", result
    assert checks.marked, "the new instances were launched and marked unhealthy"
    assert "Unhealthy" in rolling_replace.failure_message(result)
    after = amis_of(world, group)
    assert len(after) == 4 and set(after.values()) == {old_ami}
    assert set(world.targets(group)) == set(after)
    assert not checks.marked & set(world.running_in_vpc()), "every bad instance is terminated"
    assert set(before) <= set(after) or len(after) == 4


def test_check_mode_creates_nothing(world, catalog_path):
    old, new = record(catalog_path, world), record(catalog_path, world)
    group = world.group("web-check", old.artifacts["ami"][REGION], size=4)
    versions, running = len(world.template_versions(group)), set(world.running_in_vpc())
    result = rolling_replace.execute(params(group, new, catalog_path), check=True)
    assert result["changed"] is True and result["status"] == "planned"
    assert [[s["slot"] for s in b["slots"]] for b in result["plan"]["batches"]] == [[0, 1], [2, 3]]
    assert len(world.template_versions(group)) == versions
    assert set(world.running_in_vpc()) == running


@pytest.mark.parametrize(
    "change, message",
    [
        ({"provider_options": {"auto_scaling_group": "no-such-asg", "launch_template": "x"}}, "no-such-asg"),
        ({"load_balancer_options": {"target_group": "no-such-tg"}}, "no-such-tg"),
        ({"region": "xx-nowhere-1"}, "xx-nowhere-1"),
        ("other-region-ami", f"no AMI in region {REGION}"),
    ],
)
def test_bad_input_is_refused_before_anything_changes(world, catalog_path, change, message):
    old = record(catalog_path, world)
    group = world.group("web-refuse", old.artifacts["ami"][REGION], size=2)
    if change == "other-region-ami":
        target, change = record(catalog_path, world, regions=(OTHER_REGION,)), {}
    else:
        target = record(catalog_path, world)
    versions, running, targets = (
        len(world.template_versions(group)),
        set(world.running_in_vpc()),
        world.targets(group),
    )
    p = params(group, target, catalog_path)
    for key, value in change.items():
        p[key] = {**p[key], **value} if isinstance(value, dict) and key != "provider_options" else value
    with pytest.raises(KilnError, match=message):
        rolling_replace.execute(p, check=False)
    assert len(world.template_versions(group)) == versions
    assert set(world.running_in_vpc()) == running and world.targets(group) == targets
    assert not os.path.exists(
        os.path.join(os.environ["KILN_STATE_DIR"], "rollouts", group.name, "journal.json")
    )


def test_sigkill_mid_batch_then_rerun_converges(world, catalog_path, tmp_path):
    old, new = record(catalog_path, world), record(catalog_path, world)
    group = world.group("web-kill", old.artifacts["ami"][REGION], size=4)
    slow = params(group, new, catalog_path, health={**HEALTH, "warmup": 2.0})
    script = (
        "import json, sys\n"
        "from ansible_collections.kiln.immutable.plugins.module_utils.deploy import rolling_replace\n"
        "rolling_replace.execute(json.loads(sys.argv[1]), check=False)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(slow)], env=env)
    log = os.path.join(os.environ["KILN_STATE_DIR"], "rollouts", group.name, "progress.log")
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.exists(log) and " launched " in open(log).read():
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the roll-out ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    result = rolling_replace.execute(params(group, new, catalog_path), check=False)
    assert result["status"] == "succeeded" and len(result["runs"]) == 2, "the re-run resumed the journal"
    final = amis_of(world, group)
    assert len(final) == 4 and set(final.values()) == {new.artifacts["ami"][REGION]}
    assert set(world.running_in_vpc()) == set(final), "no instance outside the group"
    assert set(world.targets(group)) == set(final), "no target left registered after termination"


def test_drift_shows_other_ami_revoked_version_and_instances_launched_outside_kiln(world, catalog_path):
    from ansible_collections.kiln.immutable.plugins.module_utils.observe import drift

    old, new = record(catalog_path, world), record(catalog_path, world)
    group = world.group("web-drift", old.artifacts["ami"][REGION], size=2)
    target = drift.GroupTarget(
        group=group.name,
        image="web",
        channel="prod",
        provider="aws",
        provider_options=group.provider_options(),
        aws={"region": REGION},
    )
    with Catalog(catalog_path) as catalog:
        catalog.promote("prod", old.ref)
        report = drift.detect([target], catalog)
    kinds = {(f.instance, f.kind) for f in report.findings}
    asg_ids = world.asg_instance_ids(group)
    assert kinds == {(i, "unmanaged") for i in asg_ids}, "the group launched them itself"

    rolling_replace.execute(params(group, old, catalog_path, size=3), check=False)  # kiln adds slot 2
    with Catalog(catalog_path) as catalog:
        catalog.promote("prod", new.ref)
        catalog.revoke(old.ref, reason="CVE-2026-0001", fallback=False)
        report = drift.detect([target], catalog)
    by_kind: dict[str, set[str]] = {}
    for finding in report.findings:
        by_kind.setdefault(finding.kind, set()).add(finding.instance)
    everyone = set(world.asg_instance_ids(group))
    assert len(everyone) == 3
    assert by_kind["version"] == everyone and by_kind["revoked"] == everyone
    assert len(by_kind["unmanaged"]) == 2, "the instance kiln launched is not reported as unmanaged"
    assert "CVE-2026-0001" in drift.render(report)
