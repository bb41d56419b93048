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

import contextlib
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


@contextlib.contextmanager
def fresh_account():
    """A new local AWS API, catalog and state for one measurement: moto's calls slow down as an
    account fills up, so each measurement starts from the same empty account."""
    with moto_server(), tempfile.TemporaryDirectory(prefix="kiln-bench-aws-") as state:
        os.environ["KILN_STATE_DIR"] = state
        world = AWSWorld()
        with Catalog(str(Path(state) / "catalog.db")) as catalog:
            versions = []
            for name in ("1", "2"):
                ami = make_ami(world.c["ec2"], "web", f"web/{name}")
                artifacts = {"ami": {REGION: ami}}
                versions.append(
                    catalog.register(Version(image="web", name=name, fingerprint=name, artifacts=artifacts))
                )
            yield world, catalog, versions[0], versions[1]


def best_floor(size: int, batch: int) -> float:
    times = []
    for _ in range(3):
        with fresh_account() as (world, _catalog, old, new):
            times.append(floor(world, old, new, size, batch))
    return min(times)


def run(args) -> int:
    batch = max(1, args.scale // 10)
    few, big = args.scale * 2 // 5, args.scale
    floors = {size: best_floor(size, batch) for size in (few, big)}
    for size, seconds in floors.items():
        say(f"floor: a batch of {batch} in a group of {size}, direct boto3 calls: {seconds:.3f}s (best of 3)")
    with fresh_account() as (world, catalog, old, new):
        small = kiln(world, catalog, old, new, few, batch)
    say(f"kiln {few} in batches of {batch}: {small['seconds']}s")
    with fresh_account() as (world, catalog, old, new):
        scale = kiln(world, catalog, old, new, big, "10%")
    say(f"kiln {big} in batches of 10%: {scale['seconds']}s")
    growth = scale["per_batch"] / small["per_batch"]
    api_growth = floors[big] / floors[few]
    print()
    print(f"AWS roll-out of {big} instances against the local AWS API")
    for size, result in ((big, scale), (few, small)):
        ratio = result["per_batch"] / floors[size]
        print(f"  kiln per batch / direct boto3 floor per batch, {size} instances: {ratio:.2f}")
    print(f"  per batch, {big} vs {few} instances, same batch size: kiln {growth:.2f}")
    extra = growth / api_growth
    print(f"  the API's own calls {api_growth:.2f}; kiln over the API {extra:.2f} (1.0: none added)")
    total = scale["seconds"] / small["seconds"]
    times = scale["batches"] / small["batches"]
    print(f"  total time {big}/{few}: {total:.2f} for {times:.2f} times the batches")
    return 0
