"""``bench/rollout.py --provider aws``: kiln's AWS roll-out against the same calls made directly.

Against the local AWS API (moto's server, started here and stopped at the end):
1. kiln replaces an Auto Scaling group of ``--scale`` instances (50) in batches of 10% with surge 10%
   behind a target group; the floor is one batch's calls made directly with boto3, a whole batch per
   call (run, wait running, attach, register, read target and group health, deregister, detach,
   terminate). Printed: kiln's time per batch over the floor's.
2. The same batch size on a group 2.5 times smaller: time per batch in both should be the same, so
   time grows with the number of batches and nothing else.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog, Version
from aws_support import REGION, AWSWorld, make_ami, moto_server

HEALTH = {"interval": 0.05, "healthy_threshold": 2, "unhealthy_threshold": 1, "deadline": 60}


def say(text: str) -> None:
    print(f"[bench aws] {text}", flush=True)


def kiln(world: AWSWorld, catalog: Catalog, old: Version, new: Version, size: int, batch) -> dict:
    group = world.group(f"bench{size}", old.artifacts["ami"][REGION], size=size)
    rollout = group.rollout(
        new, catalog, HEALTH, batch_size=batch, max_surge=batch, min_healthy_percentage=100
    )
    started = time.monotonic()
    result = rollout.run()
    seconds = time.monotonic() - started
    if result["status"] != "succeeded":
        raise SystemExit(f"kiln's roll-out of {size} ended {result['status']}")
    batches = len(result["batches"])
    return {
        "instances": size,
        "batches": batches,
        "seconds": round(seconds, 2),
        "per_batch": seconds / batches,
    }


def floor(world: AWSWorld, old: Version, new: Version, size: int, batch: int) -> float:
    """Seconds of one batch of ``batch`` instances replaced with direct boto3 calls."""
    group = world.group(f"floor{size}", old.artifacts["ami"][REGION], size=size)
    ec2, asg, elb = world.c["ec2"], world.c["autoscaling"], world.c["elbv2"]
    olds = world.asg_instance_ids(group)[:batch]
    started = time.monotonic()
    version = ec2.create_launch_template_version(
        LaunchTemplateName=group.template,
        SourceVersion="1",
        LaunchTemplateData={"ImageId": new.artifacts["ami"][REGION]},
    )["LaunchTemplateVersion"]["VersionNumber"]
    run = ec2.run_instances(
        LaunchTemplate={"LaunchTemplateName": group.template, "Version": str(version)},
        MinCount=batch,
        MaxCount=batch,
        SubnetId=group.subnets[0],
    )
    ids = [i["InstanceId"] for i in run["Instances"]]
    ec2.describe_instances(InstanceIds=ids)
    asg.attach_instances(InstanceIds=ids, AutoScalingGroupName=group.asg)
    elb.register_targets(TargetGroupArn=group.target_group_arn, Targets=[{"Id": i} for i in ids])
    for _ in range(HEALTH["healthy_threshold"]):
        elb.describe_target_health(TargetGroupArn=group.target_group_arn, Targets=[{"Id": i} for i in ids])
        asg.describe_auto_scaling_instances(InstanceIds=ids)
    elb.deregister_targets(TargetGroupArn=group.target_group_arn, Targets=[{"Id": i} for i in olds])
    asg.detach_instances(
        InstanceIds=olds, AutoScalingGroupName=group.asg, ShouldDecrementDesiredCapacity=True
    )
    ec2.terminate_instances(InstanceIds=olds)
    return time.monotonic() - started


def run(args) -> int:
    with moto_server(), tempfile.TemporaryDirectory(prefix="kiln-bench-aws-") as state:
        os.environ["KILN_STATE_DIR"] = state
        world = AWSWorld()
        with Catalog(str(Path(state) / "catalog.db")) as catalog:
            versions = []
            for name in ("1", "2"):
                ami = make_ami(world.c["ec2"], "web", f"web/{name}")
                versions.append(
                    catalog.register(
                        Version(image="web", name=name, fingerprint=name, artifacts={"ami": {REGION: ami}})
                    )
                )
            old, new = versions
            batch = max(1, args.scale // 10)
            floors = [floor(world, old, new, args.scale, batch) for _ in range(3)]
            floor_s = min(floors)
            say(f"floor: one batch of {batch} with direct boto3 calls: {floor_s:.3f}s (best of 3)")
            small = kiln(world, catalog, old, new, args.scale * 2 // 5, batch)
            say(f"kiln {small['instances']} in batches of {batch}: {small['seconds']}s")
            scale = kiln(world, catalog, old, new, args.scale, "10%")
            say(f"kiln {scale['instances']} in batches of 10%: {scale['seconds']}s")
    big, few = scale["instances"], small["instances"]
    print()
    print(f"AWS roll-out of {big} instances against the local AWS API")
    print(f"  kiln per batch / direct boto3 floor per batch: {scale['per_batch'] / floor_s:.2f}")
    print(
        f"  per batch, {big} vs {few} instances (same batch size; 1.0: time grows with the number of "
        f"batches only): {scale['per_batch'] / small['per_batch']:.2f}"
    )
    print(
        f"  total time {big}/{few}: {scale['seconds'] / small['seconds']:.2f} "
        f"for {scale['batches'] / small['batches']:.2f} times the batches"
    )
    return 0
