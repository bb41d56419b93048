"""AMIs of pruned and revoked versions, against the local AWS API (moto's server)."""

from __future__ import annotations

from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Version
from ansible_collections.kiln.immutable.plugins.module_utils.providers.aws import images
from aws_support import OTHER_REGION, REGION, AWSWorld, clients, make_ami


def snapshots(ec2, ami: str) -> list[str]:
    found = ec2.describe_images(ImageIds=[ami])["Images"][0]
    return [m["Ebs"]["SnapshotId"] for m in found["BlockDeviceMappings"] if "Ebs" in m]


def exists(ec2, ami: str) -> bool:
    return bool(ec2.describe_images(Filters=[{"Name": "image-id", "Values": [ami]}])["Images"])


def test_prune_removes_amis_in_every_region_but_never_one_in_use(aws_env):
    world = AWSWorld()
    ec2, other = world.c["ec2"], clients(OTHER_REGION)["ec2"]
    running = make_ami(ec2, "web", "web/1")  # an Auto Scaling group's instances run it
    template_only = make_ami(ec2, "web", "web/2")  # a launch template's default names it
    free = {REGION: make_ami(ec2, "web", "web/3"), OTHER_REGION: make_ami(other, "web", "web/3")}
    world.group("web-prune", running, size=1)
    ec2.create_launch_template(
        LaunchTemplateName="kiln-prune-lt", LaunchTemplateData={"ImageId": template_only}
    )
    free_snaps = {region: snapshots(clients(region)["ec2"], ami) for region, ami in free.items()}
    versions = [
        Version(image="web", name="1", fingerprint="1", artifacts={"ami": {REGION: running}}),
        Version(image="web", name="2", fingerprint="2", artifacts={"ami": {REGION: template_only}}),
        Version(image="web", name="3", fingerprint="3", artifacts={"ami": free}),
    ]
    out = images.remove_amis(versions)
    assert sorted(out["removed"]) == sorted(f"{r}:{a}" for r, a in free.items())
    assert set(out["kept"]) == {f"{REGION}:{running}", f"{REGION}:{template_only}"}
    assert "runs it" in out["kept"][f"{REGION}:{running}"]
    assert "launch template kiln-prune-lt" in out["kept"][f"{REGION}:{template_only}"]
    assert exists(ec2, running) and exists(ec2, template_only)
    assert not exists(ec2, free[REGION]) and not exists(other, free[OTHER_REGION])
    deleted = {s.split(":", 1)[1] for s in out["snapshots_deleted"]}
    assert deleted == {s for snaps in free_snaps.values() for s in snaps} and deleted
    assert images.remove_amis(versions[2:])["removed"] == [], "already gone is fine"


def test_revocation_marks_the_amis_and_restore_clears_them(aws_env):
    world = AWSWorld()
    ami = make_ami(world.c["ec2"], "web", "web/4")
    version = Version(image="web", name="4", fingerprint="4", artifacts={"ami": {REGION: ami}})

    def tags() -> dict[str, str]:
        found = world.c["ec2"].describe_images(ImageIds=[ami])["Images"][0]
        return {t["Key"]: t["Value"] for t in found.get("Tags") or []}

    assert images.mark_revoked(version, "CVE-2026-0001") == [f"{REGION}:{ami}"]
    assert tags()["kiln:revoked"] == "CVE-2026-0001"
    images.mark_revoked(version, None)
    assert "kiln:revoked" not in tags() and tags()["kiln:version"] == "web/4"


def test_the_catalogs_remover_takes_the_docker_image_first_and_keeps_an_ami_in_use(aws_env):
    import pytest
    from ansible_collections.kiln.immutable.plugins.module_utils.common.aws import AWSSettings
    from ansible_collections.kiln.immutable.plugins.module_utils.common.errors import KilnError

    world = AWSWorld()
    ec2 = world.c["ec2"]
    free, running = make_ami(ec2, "web", "web/5"), make_ami(ec2, "web", "web/6")
    world.group("web-remover", running, size=1)
    docker = []
    remove = images.ami_remover(
        AWSSettings.from_options(), then=lambda ref, _a: docker.append(ref) or ["kiln/web:5"]
    )
    removed = remove("web/5", {"ami": {REGION: free}, "docker": {"tag": "kiln/web:5"}})
    assert removed[:2] == ["kiln/web:5", f"{REGION}:{free}"] and docker == ["web/5"]
    with pytest.raises(KilnError, match=f"{REGION}:{running} kept: web/6: instance"):
        remove("web/6", {"ami": {REGION: running}})
    assert exists(ec2, running) and not exists(ec2, free)
