# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""AMIs a build baked: their ids per region (from Packer's artifact), their snapshots, kiln's tags.

Packer's amazon-ebs artifact id lists ``region:ami`` pairs separated by commas (escaped as
``%!(PACKER_COMMA)`` in machine-readable output, unescaped by the stream). Snapshots are not in the
artifact: kiln reads them from each AMI's block device mappings and tags AMIs and snapshots with
the image, version and fingerprint, so an account shows which catalog version each one is.
"""

from __future__ import annotations

from typing import Any

from ..common import aws
from ..common.aws import TAG_FINGERPRINT, TAG_IMAGE, TAG_VERSION, AWSSettings
from ..common.errors import KilnError

AMAZON_BUILDERS = ("mitchellh.amazonebs", "mitchellh.amazon.ebs")


def parse_ami_id(text: str) -> dict[str, str]:
    """``"eu-west-1:ami-a,us-west-2:ami-b"`` -> ``{"eu-west-1": "ami-a", "us-west-2": "ami-b"}``."""
    out = {}
    for pair in text.split(","):
        region, sep, ami = pair.strip().partition(":")
        if not sep or not region or not ami.startswith("ami-"):
            raise KilnError(f"cannot read the amazon-ebs artifact id {text!r}: expected region:ami-... pairs")
        out[region] = ami
    return out


def tag_and_describe(
    amis: dict[str, str], tags: dict[str, str], settings: AWSSettings | None = None
) -> dict[str, list[str]]:
    """Tag every AMI and its snapshots with ``tags``; returns region -> snapshot ids."""
    settings = settings or AWSSettings.from_options()
    snapshots: dict[str, list[str]] = {}
    for region, ami in sorted(amis.items()):
        ec2 = aws.client(settings, "ec2", region)
        images = aws.call(f"describing AMI {ami} in {region}", ec2.describe_images, ImageIds=[ami])["Images"]
        if not images:
            raise KilnError(f"AMI {ami} that Packer reported in {region} does not exist there")
        snaps = sorted(
            m["Ebs"]["SnapshotId"]
            for m in images[0].get("BlockDeviceMappings") or []
            if (m.get("Ebs") or {}).get("SnapshotId")
        )
        aws.call(
            f"tagging AMI {ami} and its snapshots in {region}",
            ec2.create_tags,
            Resources=[ami, *snaps],
            Tags=aws.tag_list(tags),
        )
        snapshots[region] = snaps
    return snapshots


def record_amis(artifacts: dict[str, Any], image: str, ref: str, fingerprint: str) -> dict[str, Any]:
    """The catalog's artifacts with the snapshots of each AMI added (``ami_snapshots``), AMIs tagged."""
    amis = artifacts.get("ami")
    if not amis:
        return artifacts
    tags = {TAG_IMAGE: image, TAG_VERSION: ref, TAG_FINGERPRINT: fingerprint}
    return {**artifacts, "ami_snapshots": tag_and_describe(amis, tags)}
