"""The local AWS API for the AWS tests and bench/rollout.py --provider aws: moto's server on 127.0.0.1.

``moto_server()`` starts moto's ThreadedMotoServer on a free port and points the AWS SDK and Packer at
it through the environment (``AWS_ENDPOINT_URL``, dummy keys, a region), the way a user points
amazon.aws at another endpoint. ``AWSWorld`` makes what a real account would already have: a VPC and
subnets, kiln-tagged AMIs, a launch template, an Auto Scaling group and a target group.

``KILN_AWS_REAL=1`` (``invoke test-aws-real``) skips moto and uses the account the environment's
credentials name; never set in CI.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

REGION = "eu-west-1"
OTHER_REGION = "us-west-2"
SOURCE_AMI = "ami-03cf127a"  # one of the AMIs moto knows; a real run takes KILN_AWS_SOURCE_AMI


def real_account() -> bool:
    return os.environ.get("KILN_AWS_REAL") == "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_server() -> Iterator[dict[str, str]]:
    """The environment that points the SDK (and Packer) at a fresh moto server; stops it afterwards."""
    if real_account():
        yield {"AWS_REGION": os.environ.get("AWS_REGION", REGION)}
        return
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
    }
    try:
        yield env
    finally:
        server.stop()


def clients(region: str = REGION) -> dict[str, Any]:
    import boto3

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    return {
        name: boto3.client(name, region_name=region, endpoint_url=endpoint)
        for name in ("ec2", "autoscaling", "elbv2")
    }


def make_ami(ec2, image: str, ref: str, fingerprint: str = "fp") -> str:
    """An AMI tagged as kiln tags the AMIs it bakes (made from an instance, as Packer does)."""
    source = os.environ.get("KILN_AWS_SOURCE_AMI", SOURCE_AMI)
    instance = ec2.run_instances(ImageId=source, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    instance_id = instance["Instances"][0]["InstanceId"]
    ami = ec2.create_image(
        InstanceId=instance_id, Name=f"kiln-{ref.replace('/', '-')}-{uuid.uuid4().hex[:6]}"
    )
    ec2.terminate_instances(InstanceIds=[instance_id])
    tags = {"kiln:image": image, "kiln:version": ref, "kiln:fingerprint": fingerprint}
    ec2.create_tags(Resources=[ami["ImageId"]], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    return ami["ImageId"]


@dataclass
class AWSGroup:
    """One kiln group on AWS: an Auto Scaling group with its launch template and target group."""

    name: str
    asg: str
    template: str
    target_group: str
    target_group_arn: str
    subnets: list[str]
    region: str = REGION

    def provider_options(self, **extra: Any) -> dict[str, Any]:
        return {
            "auto_scaling_group": self.asg,
            "launch_template": self.template,
            "probe_address": "none",
            "poll_interval": 0.05,
            **extra,
        }

    def load_balancer_options(self, **extra: Any) -> dict[str, Any]:
        return {"target_group": self.target_group, "poll_interval": 0.05, **extra}

    def rollout(self, target: Any, catalog: Any, health: dict[str, Any], on_event=None, **options: Any):
        """The engine on this group's Auto Scaling group and target group, wired as the module wires it."""
        from ansible_collections.kiln.immutable.plugins.module_utils.deploy import rolling_replace
        from ansible_collections.kiln.immutable.plugins.module_utils.rollout.engine import Rollout
        from ansible_collections.kiln.immutable.plugins.module_utils.rollout.health import HealthCheck, Prober
        from ansible_collections.kiln.immutable.plugins.module_utils.rollout.options import RolloutOptions

        provider, lb = rolling_replace.build_backends(
            self.name,
            "aws",
            self.provider_options(),
            "aws",
            self.load_balancer_options(),
            None,
            {"region": self.region},
        )
        prober = Prober(HealthCheck.from_options(health), probe=rolling_replace.backend_probe(provider, lb))
        return Rollout(
            self.name,
            target,
            provider,
            lb,
            prober,
            RolloutOptions(**options),
            resolve_version=catalog.get,
            on_event=on_event,
        )


@dataclass
class AWSWorld:
    region: str = REGION
    vpc: str = ""
    subnets: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.c = clients(self.region)
        ec2 = self.c["ec2"]
        self.vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
        self.subnets = [
            ec2.create_subnet(
                VpcId=self.vpc, CidrBlock=f"10.20.{i * 16}.0/20", AvailabilityZone=f"{self.region}{z}"
            )["Subnet"]["SubnetId"]
            for i, z in enumerate("ab")
        ]

    def group(self, name: str, ami: str, size: int, deregistration_delay: int = 0) -> AWSGroup:
        """An ASG of ``size`` instances on ``ami`` (launched by the ASG itself) behind a new target group."""
        suffix = uuid.uuid4().hex[:6]
        ec2, asg, elb = self.c["ec2"], self.c["autoscaling"], self.c["elbv2"]
        template = f"kiln-{name}-{suffix}"
        ec2.create_launch_template(
            LaunchTemplateName=template, LaunchTemplateData={"ImageId": ami, "InstanceType": "t3.micro"}
        )
        tg = elb.create_target_group(
            Name=f"kiln-{name}-{suffix}"[:32], Protocol="HTTP", Port=80, VpcId=self.vpc, TargetType="instance"
        )["TargetGroups"][0]
        elb.modify_target_group_attributes(
            TargetGroupArn=tg["TargetGroupArn"],
            Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(deregistration_delay)}],
        )
        asg_name = f"kiln-{name}-{suffix}"
        asg.create_auto_scaling_group(
            AutoScalingGroupName=asg_name,
            LaunchTemplate={"LaunchTemplateName": template, "Version": "$Default"},
            MinSize=0,
            MaxSize=size * 3,
            DesiredCapacity=size,
            VPCZoneIdentifier=",".join(self.subnets),
            TargetGroupARNs=[tg["TargetGroupArn"]],
        )
        group = AWSGroup(name, asg_name, template, tg["TargetGroupName"], tg["TargetGroupArn"], self.subnets)
        # what a group looks like before kiln ever touched it: its instances registered in the target group
        ids = self.asg_instance_ids(group)
        if ids:
            elb.register_targets(TargetGroupArn=group.target_group_arn, Targets=[{"Id": i} for i in ids])
        return group

    # ------------------------------------------------------------------ what a user checks

    def asg_instance_ids(self, group: AWSGroup) -> list[str]:
        found = self.c["autoscaling"].describe_auto_scaling_groups(AutoScalingGroupNames=[group.asg])
        return sorted(i["InstanceId"] for i in found["AutoScalingGroups"][0]["Instances"])

    def instances(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        pages = self.c["ec2"].describe_instances(InstanceIds=ids)["Reservations"]
        return {i["InstanceId"]: i for r in pages for i in r["Instances"]}

    def running_in_vpc(self) -> dict[str, dict[str, Any]]:
        pages = self.c["ec2"].describe_instances(
            Filters=[
                {"Name": "vpc-id", "Values": [self.vpc]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ]
        )["Reservations"]
        return {i["InstanceId"]: i for r in pages for i in r["Instances"]}

    def targets(self, group: AWSGroup) -> dict[str, str]:
        found = self.c["elbv2"].describe_target_health(TargetGroupArn=group.target_group_arn)
        return {t["Target"]["Id"]: t["TargetHealth"]["State"] for t in found["TargetHealthDescriptions"]}

    def template_versions(self, group: AWSGroup) -> list[dict[str, Any]]:
        found = self.c["ec2"].describe_launch_template_versions(LaunchTemplateName=group.template)
        return found["LaunchTemplateVersions"]

    def in_service(self, group: AWSGroup, healthy_images: set[str]) -> int:
        """Instances serving: registered healthy targets that run, on an AMI that answers well."""
        targets = self.targets(group)
        running = self.instances([i for i, s in targets.items() if s == "healthy"])
        unhealthy = self.unhealthy(group)
        return sum(
            1
            for i, data in running.items()
            if data["State"]["Name"] == "running" and data["ImageId"] in healthy_images and i not in unhealthy
        )

    def unhealthy(self, group: AWSGroup) -> set[str]:
        ids = self.asg_instance_ids(group)
        if not ids:
            return set()
        found = self.c["autoscaling"].describe_auto_scaling_instances(InstanceIds=ids)["AutoScalingInstances"]
        return {i["InstanceId"] for i in found if i["HealthStatus"].upper() == "UNHEALTHY"}


class FailedChecks:
    """Marks every instance of ``bad_ami`` in the group Unhealthy, as Auto Scaling does after the load
    balancer's checks fail (moto's targets are always healthy); a bounded background poll."""

    def __init__(self, world: AWSWorld, group: AWSGroup, bad_ami: str, max_duration: float = 120.0):
        self.world, self.group, self.bad_ami, self.max_duration = world, group, bad_ami, max_duration
        self.marked: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asg = clients(self.world.region)["autoscaling"]
        deadline = time.monotonic() + self.max_duration
        while not self._stop.is_set() and time.monotonic() < deadline:
            ids = self.world.asg_instance_ids(self.group)
            for instance_id, data in self.world.instances(ids).items():
                if data["ImageId"] == self.bad_ami and instance_id not in self.marked:
                    asg.set_instance_health(InstanceId=instance_id, HealthStatus="Unhealthy")
                    self.marked.add(instance_id)
            self._stop.wait(0.02)

    def __enter__(self) -> FailedChecks:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
