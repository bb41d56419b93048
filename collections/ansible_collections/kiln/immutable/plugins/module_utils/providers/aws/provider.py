# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AWS provider: a group's instances are the EC2 instances of one Auto Scaling group.

kiln drives the replacement itself (Auto Scaling's instance refresh cannot be told which instance
to replace, nor rolled back on kiln's health verdict): for each slot it launches an instance from a
launch template version that carries the catalog version's AMI, attaches it to the group, and later
terminates the old one through the group, so the group's desired capacity follows. Instances carry
the tags ``kiln:group``, ``kiln:slot`` and ``kiln:version``; the version an instance runs is read
from its AMI's ``kiln:version`` tag (the AMI is the truth: an instance's launch template version is
not reliably reported). Instances the group launched by itself get the free slots.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from ...common import aws
from ...common.aws import TAG_GROUP, TAG_IMAGE, TAG_SLOT, TAG_VERSION, AWSError, AWSSettings
from ...rollout.health import ProbeResult
from ...rollout.interfaces import Instance

PROBE_ADDRESSES = ("private", "public", "none")
_GONE = ("shutting-down", "terminated")
_LEAVING = ("Terminating", "Terminating:Wait", "Terminating:Proceed", "Terminated", "Detaching", "Detached")


class ProviderError(AWSError):
    pass


def ami_of(version: Any, region: str) -> str:
    """The AMI of a catalog version in ``region``; refused when the version was not baked there."""
    amis = (getattr(version, "artifacts", None) or {}).get("ami") or {}
    if region not in amis:
        baked = ", ".join(sorted(amis)) or "no region: it was not built for AWS"
        raise ProviderError(f"version {version.ref} has no AMI in region {region} (baked in {baked})")
    return amis[region]


class AutoScalingProvider:
    """The Provider of rollout.interfaces on one Auto Scaling group.

    Options (``provider_options``): ``auto_scaling_group`` and ``launch_template`` (names),
    ``port`` the app listens on, ``probe_address`` which address kiln probes over HTTP (``private``,
    ``public``, or ``none`` to judge health by Auto Scaling and the target group alone; default:
    ``$KILN_AWS_PROBE_ADDRESS``, else ``private``),
    ``poll_interval`` seconds between state polls, ``launch_timeout`` seconds for an instance to run.
    ``settings`` are the module's AWS options (region, profile, keys, endpoint_url).
    """

    def __init__(
        self,
        settings: AWSSettings,
        auto_scaling_group: str = "",
        launch_template: str = "",
        port: int = 80,
        probe_address: str | None = None,
        poll_interval: float = 5.0,
        launch_timeout: float = 300.0,
    ):
        if not auto_scaling_group:
            raise ProviderError("provider_options.auto_scaling_group is required for provider aws")
        if not launch_template:
            raise ProviderError("provider_options.launch_template is required for provider aws")
        probe_address = probe_address or os.environ.get("KILN_AWS_PROBE_ADDRESS") or "private"
        if probe_address not in PROBE_ADDRESSES:
            raise ProviderError(
                f"provider_options.probe_address must be one of {', '.join(PROBE_ADDRESSES)}, "
                f"got {probe_address!r}"
            )
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ProviderError(f"provider_options.port must be a port number, got {port!r}")
        self.settings = settings
        self.region = aws.check_region(settings)
        self.asg_name = auto_scaling_group
        self.template_name = launch_template
        self.port = port
        self.probe_mode = probe_address
        self.poll_interval = float(poll_interval)
        self.launch_timeout = float(launch_timeout)
        self.ec2 = aws.client(settings, "ec2")
        self.autoscaling = aws.client(settings, "autoscaling")
        self._template_lock = threading.Lock()
        self._image_versions: dict[str, str] = {}  # AMI -> its kiln:version tag
        self._template_versions: dict[str, tuple[str, int]] = {}  # AMI -> (template id, version) made default
        self._subnets: list[str] | None = None

    # ------------------------------------------------------------------ reading AWS

    def describe_group(self) -> dict[str, Any]:
        found = aws.call(
            f"describing Auto Scaling group {self.asg_name}",
            self.autoscaling.describe_auto_scaling_groups,
            AutoScalingGroupNames=[self.asg_name],
        )["AutoScalingGroups"]
        if not found:
            raise ProviderError(
                f"provider_options.auto_scaling_group: no Auto Scaling group {self.asg_name!r} "
                f"in region {self.region}"
            )
        return found[0]

    def _template(self) -> dict[str, Any]:
        try:
            return self.ec2.describe_launch_templates(LaunchTemplateNames=[self.template_name])[
                "LaunchTemplates"
            ][0]
        except Exception as exc:
            raise ProviderError(
                f"provider_options.launch_template: no launch template {self.template_name!r} "
                f"in region {self.region} ({exc})"
            ) from exc

    def _describe_instances(self, **filters: Any) -> list[dict[str, Any]]:
        pages = self.ec2.get_paginator("describe_instances").paginate(**filters)
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def _in_other_groups(self, instance_ids: list[str]) -> set[str]:
        """Those of ``instance_ids`` that belong to an Auto Scaling group other than this one."""
        found = []
        for start in range(0, len(instance_ids), 50):  # the API takes at most 50 ids a call
            found += aws.call(
                "describing instances in Auto Scaling groups",
                self.autoscaling.describe_auto_scaling_instances,
                InstanceIds=instance_ids[start : start + 50],
            )["AutoScalingInstances"]
        return {i["InstanceId"] for i in found if i.get("AutoScalingGroupName") != self.asg_name}

    def _versions_of_images(self, image_ids: set[str]) -> dict[str, str]:
        missing = sorted(image_ids - set(self._image_versions))
        if missing:
            images = aws.call(
                "describing AMIs", self.ec2.describe_images, Filters=[{"Name": "image-id", "Values": missing}]
            )["Images"]
            for image in images:
                self._image_versions[image["ImageId"]] = aws.tag_dict(image.get("Tags")).get(TAG_VERSION, "")
        return {i: self._image_versions.get(i, "") for i in image_ids}

    def check(self, version: Any) -> None:
        """Refuse a roll-out that cannot work before anything changes: group, template, AMI in the region."""
        self.describe_group()
        self._template()
        ami = ami_of(version, self.region)
        images = aws.call(
            f"describing AMI {ami}", self.ec2.describe_images, Filters=[{"Name": "image-id", "Values": [ami]}]
        )["Images"]
        if not images or images[0].get("State") not in (None, "available"):
            raise ProviderError(
                f"AMI {ami} of version {version.ref} is not available in region {self.region}"
            )

    # ------------------------------------------------------------------ the Provider protocol

    def prepare(self, group: str) -> bool:
        """Tag the group's instances that have no slot yet (launched by the group itself) with the slot
        list_instances gives them, so slots stay put once kiln starts replacing; True when it tagged."""
        untagged = [i for i in self.list_instances(group) if not i.extra["slot_tagged"] and i.alive]
        for inst in untagged:
            aws.call(
                f"tagging instance {inst.id} with its slot",
                self.ec2.create_tags,
                Resources=[inst.id],
                Tags=aws.tag_list({TAG_GROUP: group, TAG_SLOT: str(inst.slot)}),
            )
        return bool(untagged)

    def list_instances(self, group: str) -> list[Instance]:
        members = {
            i["InstanceId"]: i
            for i in self.describe_group()["Instances"]
            if i["LifecycleState"] not in _LEAVING
        }
        found = (
            {i["InstanceId"]: i for i in self._describe_instances(InstanceIds=sorted(members))}
            if members
            else {}
        )
        # Instances kiln launched for the group but never attached (a crash in between) are reported
        # stopped, so the engine terminates them: nothing may run outside the group.
        tagged = self._describe_instances(Filters=[{"Name": f"tag:{TAG_GROUP}", "Values": [group]}])
        outside = sorted(i["InstanceId"] for i in tagged if i["InstanceId"] not in members)
        elsewhere = self._in_other_groups(outside)  # another ASG that uses the same kiln group name
        for inst in tagged:
            if inst["InstanceId"] not in elsewhere:
                found.setdefault(inst["InstanceId"], inst)
        found = {k: v for k, v in found.items() if v["State"]["Name"] not in _GONE}
        versions = self._versions_of_images({i["ImageId"] for i in found.values()})
        out: list[Instance] = []
        unslotted = []
        for instance_id, data in found.items():
            tags = aws.tag_dict(data.get("Tags"))
            slot = int(tags[TAG_SLOT]) if tags.get(TAG_SLOT, "").isdigit() else None
            inst = self._instance(
                data, group, slot if slot is not None else -1, versions, instance_id in members
            )
            (out if slot is not None else unslotted).append(inst)
        taken = {i.slot for i in out}
        free = (s for s in range(len(found) + 1) if s not in taken)
        for inst in sorted(unslotted, key=lambda i: (i.started_at, i.id)):
            inst.slot = next(free)
            out.append(inst)
        return sorted(out, key=lambda i: (i.slot, i.started_at))

    def launch(self, group: str, slot: int, version: Any) -> Instance:
        ami = ami_of(version, self.region)
        template_id, template_version = self._template_version(ami, version)
        if self._subnets is None:
            self._subnets = [
                s for s in (self.describe_group().get("VPCZoneIdentifier") or "").split(",") if s
            ]
        subnets = self._subnets
        tags = {
            "Name": f"kiln-{group}-{slot}",
            TAG_GROUP: group,
            TAG_SLOT: str(slot),
            TAG_VERSION: version.ref,
            TAG_IMAGE: version.image,
        }
        run: dict[str, Any] = {
            "LaunchTemplate": {"LaunchTemplateId": template_id, "Version": str(template_version)},
            "MinCount": 1,
            "MaxCount": 1,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": aws.tag_list(tags)}],
        }
        if subnets:
            run["SubnetId"] = subnets[slot % len(subnets)]
        what = f"launching {version.ref} ({ami}) into slot {slot} of group {group}"
        instance_id = aws.call(what, self.ec2.run_instances, **run)["Instances"][0]["InstanceId"]
        try:
            data = self._wait_running(instance_id)
            aws.call(
                f"attaching {instance_id} to Auto Scaling group {self.asg_name}",
                self.autoscaling.attach_instances,
                InstanceIds=[instance_id],
                AutoScalingGroupName=self.asg_name,
            )
        except Exception:
            # A failed launch leaves nothing behind: the engine never learns about this instance.
            self.ec2.terminate_instances(InstanceIds=[instance_id])
            raise
        self._image_versions.setdefault(ami, version.ref)
        return self._instance(data, group, slot, {ami: version.ref}, True)

    def terminate(self, instance: Instance) -> None:
        """Detach from the group (its desired capacity goes down by one), then terminate; gone is fine.

        Detaching first takes the instance out of the group's target groups, so a terminated
        instance never lingers there as a target.
        """
        if instance.extra.get("in_group", True):
            try:
                self.autoscaling.detach_instances(
                    InstanceIds=[instance.id],
                    AutoScalingGroupName=self.asg_name,
                    ShouldDecrementDesiredCapacity=True,
                )
            except Exception as exc:
                if aws.error_code(exc) != "ValidationError":  # not (or no longer) in the group
                    raise ProviderError(
                        f"cannot detach instance {instance.id} from {self.asg_name}: {exc}"
                    ) from exc
        try:
            self.ec2.terminate_instances(InstanceIds=[instance.id])
        except Exception as exc:
            if "NotFound" not in aws.error_code(exc):
                raise ProviderError(
                    f"cannot terminate instance {instance.id} of group {instance.group}: {exc}"
                ) from exc

    def health(self, instance: Instance) -> ProbeResult:
        """The group's verdict on the instance: Unhealthy (for example after failed ELB checks) fails it."""
        found = aws.call(
            f"describing instance {instance.id} in its Auto Scaling group",
            self.autoscaling.describe_auto_scaling_instances,
            InstanceIds=[instance.id],
        )["AutoScalingInstances"]
        if not found:
            return ProbeResult(
                False, False, f"{instance.id} is not in Auto Scaling group {self.asg_name} yet"
            )
        state = found[0]
        if state.get("HealthStatus", "").upper() == "UNHEALTHY":
            return ProbeResult(
                False, True, f"Auto Scaling group {self.asg_name} marks {instance.id} Unhealthy"
            )
        if state.get("LifecycleState") != "InService":
            return ProbeResult(False, False, f"{instance.id} is {state.get('LifecycleState')}")
        return ProbeResult(True, True, f"{instance.id} is InService and Healthy in {self.asg_name}")

    # ------------------------------------------------------------------ launch templates

    def _template_version(self, ami: str, version: Any) -> tuple[str, int]:
        """(template id, number) of a version of the launch template that runs ``ami``; made when missing.

        The new version becomes the template's default, so instances the group launches by itself
        (scaling out, replacing a failed instance) run what kiln last rolled out.
        """
        with self._template_lock:
            if ami in self._template_versions:  # made the default by this process, for this batch's peers
                return self._template_versions[ami]
            template = self._template()
            template_id = template["LaunchTemplateId"]
            pages = self.ec2.get_paginator("describe_launch_template_versions").paginate(
                LaunchTemplateId=template_id
            )
            existing = [v for page in pages for v in page["LaunchTemplateVersions"]]
            match = [v for v in existing if v.get("LaunchTemplateData", {}).get("ImageId") == ami]
            if match:
                number = max(v["VersionNumber"] for v in match)
            else:
                created = aws.call(
                    f"creating a version of launch template {self.template_name} with AMI {ami}",
                    self.ec2.create_launch_template_version,
                    LaunchTemplateId=template_id,
                    SourceVersion=str(template["DefaultVersionNumber"]),
                    VersionDescription=f"kiln {version.ref}",
                    LaunchTemplateData={"ImageId": ami},
                )
                number = created["LaunchTemplateVersion"]["VersionNumber"]
            if template["DefaultVersionNumber"] != number:
                aws.call(
                    f"making version {number} the default of launch template {self.template_name}",
                    self.ec2.modify_launch_template,
                    LaunchTemplateId=template_id,
                    DefaultVersion=str(number),
                )
            self._template_versions = {ami: (template_id, number)}
            return template_id, number

    # ------------------------------------------------------------------ instances

    def _wait_running(self, instance_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.launch_timeout
        while True:
            data = self._describe_instances(InstanceIds=[instance_id])[0]
            state = data["State"]["Name"]
            if state == "running":
                return data
            if state in _GONE or state in ("stopping", "stopped"):
                raise ProviderError(f"instance {instance_id} is {state} right after launch")
            if time.monotonic() > deadline:
                raise ProviderError(f"instance {instance_id} did not run within {self.launch_timeout:g}s")
            time.sleep(self.poll_interval)

    def _instance(
        self, data: dict[str, Any], group: str, slot: int, versions: dict[str, str], in_group: bool
    ) -> Instance:
        tags = aws.tag_dict(data.get("Tags"))
        ip = data.get("PrivateIpAddress") if self.probe_mode == "private" else data.get("PublicIpAddress")
        running = data["State"]["Name"] in ("pending", "running")
        launched = data.get("LaunchTime")
        return Instance(
            id=data["InstanceId"],
            name=data["InstanceId"],
            group=group,
            slot=slot,
            version=versions.get(data["ImageId"]) or tags.get(TAG_VERSION, ""),
            probe_address=f"{ip}:{self.port}" if ip and self.probe_mode != "none" and running else "",
            backend_address=f"{data['InstanceId']}:{self.port}",
            started_at=launched.timestamp() if hasattr(launched, "timestamp") else 0.0,
            alive=running and in_group,
            extra={
                "image_id": data["ImageId"],
                "state": data["State"]["Name"],
                "in_group": in_group,
                "slot_tagged": TAG_SLOT in tags,
                "launched_by_kiln": TAG_VERSION in tags,
                "region": self.region,
            },
        )
