# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AMIs of catalog versions in AWS: marked when a version is revoked, removed when it is pruned.

The catalog does not call AWS: whoever prunes or revokes passes these functions the versions, as it
does for Docker images. An AMI that an instance runs or that a launch template version in use names
(a template's default or latest, or the version an Auto Scaling group launches from) is never
deregistered: it is reported as kept, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from ...common import aws
from ...common.aws import TAG_REVOKED, AWSSettings
from ...common.errors import KilnError


def _amis(version: Any) -> dict[str, str]:
    return dict((getattr(version, "artifacts", None) or {}).get("ami") or {})


def has_amis(versions: list[Any]) -> bool:
    return any(_amis(v) for v in versions)


def _in_use(ec2, autoscaling, amis: list[str]) -> dict[str, str]:
    """AMI -> why it is needed, among ``amis`` of one region."""
    needed: dict[str, str] = {}
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": "image-id", "Values": amis},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )
    for page in pages:
        for reservation in page["Reservations"]:
            for inst in reservation["Instances"]:
                needed.setdefault(inst["ImageId"], f"instance {inst['InstanceId']} runs it")
    wanted: dict[str, set[str]] = {}  # template id -> versions in use
    for page in ec2.get_paginator("describe_launch_templates").paginate():
        for template in page["LaunchTemplates"]:
            wanted.setdefault(template["LaunchTemplateId"], set()).update({"$Default", "$Latest"})
    for page in autoscaling.get_paginator("describe_auto_scaling_groups").paginate():
        for group in page["AutoScalingGroups"]:
            spec = group.get("LaunchTemplate") or {}
            if spec.get("LaunchTemplateId") and spec.get("Version"):
                wanted.setdefault(spec["LaunchTemplateId"], set()).add(str(spec["Version"]))
    for template_id, versions in wanted.items():
        found = ec2.describe_launch_template_versions(LaunchTemplateId=template_id, Versions=sorted(versions))
        for version in found["LaunchTemplateVersions"]:
            image = (version.get("LaunchTemplateData") or {}).get("ImageId")
            if image in amis:
                needed.setdefault(
                    image,
                    f"launch template {version['LaunchTemplateName']} version {version['VersionNumber']}",
                )
    return needed


def remove_amis(versions: list[Any], settings: AWSSettings | None = None) -> dict[str, Any]:
    """Deregister the AMIs of ``versions`` in every region and delete their snapshots, unless in use.

    Returns ``{"removed": [region:ami ...], "snapshots_deleted": [...], "kept": {region:ami: why}}``.
    """
    settings = settings or AWSSettings.from_options()
    out: dict[str, Any] = {"removed": [], "snapshots_deleted": [], "kept": {}}
    by_region: dict[str, dict[str, Any]] = {}
    for version in versions:
        for region, ami in _amis(version).items():
            by_region.setdefault(region, {})[ami] = version
    for region, amis in sorted(by_region.items()):
        ec2 = aws.client(settings, "ec2", region)
        autoscaling = aws.client(settings, "autoscaling", region)
        needed = _in_use(ec2, autoscaling, sorted(amis))
        for ami, version in sorted(amis.items()):
            key = f"{region}:{ami}"
            if ami in needed:
                out["kept"][key] = f"{version.ref}: {needed[ami]}"
                continue
            images = ec2.describe_images(Filters=[{"Name": "image-id", "Values": [ami]}])["Images"]
            if not images:
                continue  # already gone
            snaps = [
                m["Ebs"]["SnapshotId"]
                for m in images[0].get("BlockDeviceMappings") or []
                if (m.get("Ebs") or {}).get("SnapshotId")
            ]
            aws.call(
                f"deregistering AMI {ami} of {version.ref} in {region}", ec2.deregister_image, ImageId=ami
            )
            out["removed"].append(key)
            for snap in snaps:
                aws.call(
                    f"deleting snapshot {snap} of {ami} in {region}", ec2.delete_snapshot, SnapshotId=snap
                )
                out["snapshots_deleted"].append(f"{region}:{snap}")
    return out


def mark_revoked(version: Any, reason: str | None, settings: AWSSettings | None = None) -> list[str]:
    """Tag every AMI of ``version`` ``kiln:revoked=<reason>`` (``reason`` None: remove the tag)."""
    settings = settings or AWSSettings.from_options()
    marked = []
    for region, ami in sorted(_amis(version).items()):
        ec2 = aws.client(settings, "ec2", region)
        if reason is None:
            aws.call(
                f"untagging AMI {ami} in {region}",
                ec2.delete_tags,
                Resources=[ami],
                Tags=[{"Key": TAG_REVOKED}],
            )
        else:
            aws.call(
                f"marking AMI {ami} of {version.ref} revoked in {region}",
                ec2.create_tags,
                Resources=[ami],
                Tags=aws.tag_list({TAG_REVOKED: reason or "revoked"}),
            )
        marked.append(f"{region}:{ami}")
    return marked


def ami_remover(settings: AWSSettings, then: Callable[[str, dict], list[str]] | None = None):
    """A ``remove_artifact(ref, artifacts)`` for the catalog's retention: ``then`` first (Docker's
    image), then the version's AMIs and snapshots; an AMI in use is kept and reported as an error."""

    def remove(ref: str, artifacts: dict) -> list[str]:
        removed = list(then(ref, artifacts)) if then else []
        if not (artifacts or {}).get("ami"):
            return removed
        out = remove_amis([SimpleNamespace(ref=ref, artifacts=artifacts)], settings)
        removed += out["removed"] + out["snapshots_deleted"]
        if out["kept"]:
            kept = "; ".join(f"{ami} kept: {why}" for ami, why in sorted(out["kept"].items()))
            raise KilnError(f"{kept}" + (f" (removed {', '.join(removed)})" if removed else ""))
        return removed

    return remove
