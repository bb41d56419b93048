"""The sample template's amazon-ebs source baked by real Packer against the local AWS API (moto)."""

from __future__ import annotations

import os
from pathlib import Path

from ansible_collections.kiln.immutable.plugins.module_utils.build import flow
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from aws_support import OTHER_REGION, REGION, SOURCE_AMI, clients

ROOT = Path(__file__).resolve().parents[2]


def test_sample_template_bakes_an_ami_in_every_region_and_records_it(aws_env, tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PATH", f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    catalog = str(tmp_path / "catalog.db")
    request = flow.BuildRequest(
        template=str(ROOT / "packer" / "web"),
        image="web",
        only=["amazon-ebs.*"],
        variables={"aws_source_ami": SOURCE_AMI, "aws_ami_regions": [OTHER_REGION]},
        catalog=catalog,
        timeout_s=300,
    )
    result = flow.run(request)
    assert result["changed"] is True, result
    amis = result["artifacts"]["ami"]
    assert set(amis) == {REGION, OTHER_REGION} and all(a.startswith("ami-") for a in amis.values())
    with Catalog(catalog) as opened:
        version = opened.get(result["version"])
    assert version.artifacts["ami"] == amis
    for region, ami in amis.items():
        ec2 = clients(region)["ec2"]
        image = ec2.describe_images(ImageIds=[ami])["Images"][0]
        tags = {t["Key"]: t["Value"] for t in image["Tags"]}
        assert tags["kiln:version"] == version.ref and tags["kiln:image"] == "web"
        assert tags["kiln:fingerprint"] == version.fingerprint
        snaps = version.artifacts["ami_snapshots"][region]
        assert snaps, f"no snapshot recorded in {region}"
        found = ec2.describe_snapshots(SnapshotIds=snaps)["Snapshots"]
        assert {t["Key"]: t["Value"] for t in found[0]["Tags"]}["kiln:version"] == version.ref

    again = flow.run(request)
    assert again["changed"] is False and again["version"] == version.ref
