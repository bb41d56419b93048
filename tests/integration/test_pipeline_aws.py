"""`invoke pipeline` on the AWS inventory against the local AWS API: build (docker image and AMI),
test (the docker artifact of the same version), promote, and roll out two Auto Scaling groups."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import docker.errors
import pytest
import yaml
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.common.docker_api import client
from aws_support import REGION, SOURCE_AMI, AWSWorld, make_ami

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_pipeline_on_the_aws_inventory(aws_env, tmp_path):
    world = AWSWorld()
    base = make_ami(world.c["ec2"], "base", "base/1")  # what the groups ran before kiln
    groups = {
        "staging": world.group("web-staging", base, size=2),
        "prod": world.group("web-prod", base, size=2),
    }
    inventory = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventories" / "aws", inventory)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    hosts["all"]["children"]["kiln_groups"]["hosts"] = {g.name: None for g in groups.values()}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    for channel, group in groups.items():
        host_vars = {
            "kiln_group_channel": channel,
            "kiln_group_provider_options": {
                "auto_scaling_group": group.asg,
                "launch_template": group.template,
                "poll_interval": 0.1,
            },
            "kiln_group_load_balancer_options": {"target_group": group.target_group, "poll_interval": 0.1},
            "kiln_group_health": {"interval": 0.1, "warmup": 0, "healthy_threshold": 2, "deadline": 30},
        }
        (inventory / "host_vars" / f"{group.name}.yml").write_text(yaml.safe_dump(host_vars))
    state = tmp_path / "state"
    config = tmp_path / "invoke.yaml"
    steps = [{"channel": ch, "group": g.name} for ch, g in groups.items()]
    config.write_text(
        yaml.safe_dump(
            {"kiln": {"state_dir": str(state), "inventory": str(inventory), "pipeline": {"steps": steps}}}
        )
    )
    repository = f"kiln-pipeline-aws-{tmp_path.name[-6:]}/web".lower()
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "NO_COLOR": "1",
        "KILN_AWS_PROBE_ADDRESS": "none",  # nothing boots on the local API: AWS's own checks decide
    }

    def invoke(*args: str, timeout: float) -> subprocess.CompletedProcess:
        cmd = [str(VENV_BIN / "invoke"), "-f", str(config), *args]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    try:
        result = invoke(
            "pipeline",
            "--var",
            f"repository={repository}",
            "--var",
            f"aws_source_ami={SOURCE_AMI}",
            timeout=1500,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        with Catalog(str(state / "catalog.db")) as catalog:
            version = catalog.channel_version("web", "prod")
            assert version is not None and catalog.channel_version("web", "staging").ref == version.ref
            assert version.last_test and version.last_test["passed"], "the docker artifact was tested"
            ami = version.artifacts["ami"][REGION]
            assert version.artifacts["docker"]["image_id"]
            assert not catalog.list_versions("lb", limit=1), "no group is behind HAProxy: no lb image to bake"
        for group in groups.values():
            ids = world.asg_instance_ids(group)
            assert len(ids) == 2
            assert {d["ImageId"] for d in world.instances(ids).values()} == {ami}, group.name
            assert set(world.targets(group)) == set(ids)
        assert f"rollout {groups['prod'].name}" in result.stdout
        # invoke rollout of a converged group changes nothing, and bakes no HAProxy image either
        again = invoke("rollout", "--channel", "prod", timeout=600)
        assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-2000:]
        with Catalog(str(state / "catalog.db")) as catalog:
            assert not catalog.list_versions("lb", limit=1), again.stdout[-2000:]
    finally:
        engine = client()
        with Catalog(str(state / "catalog.db")) as catalog:
            built = [
                v.artifacts.get("docker", {}).get("image_id")
                for image in catalog.images()
                for v in catalog.list_versions(image, limit=1000)
            ]
        for image_id in [i for i in built if i] + [i.id for i in engine.images.list(name=repository)]:
            try:
                engine.images.remove(image_id, force=True)
            except docker.errors.ImageNotFound:
                pass
