"""Packer's machine-readable output, parsed from recorded real runs of Packer 1.6.6."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.build import packer
from ansible_collections.kiln.immutable.plugins.module_utils.build.flow import read_artifacts

RECORDED = Path(__file__).resolve().parents[2] / "fixtures" / "packer-output"


def stream(name: str) -> packer.BuildStream:
    return packer.BuildStream().feed_lines((RECORDED / name).read_text().splitlines())


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1795747994,,ui,say,==> docker.tiny: Starting", ("", "ui", ("say", "==> docker.tiny: Starting"))),
        ("1,docker.tiny,artifact-count,2", ("docker.tiny", "artifact-count", ("2",))),
        ("1,,ui,message,hello%!(PACKER_COMMA) world", ("", "ui", ("message", "hello, world"))),
        ("1,,ui,say,\\n==> Wait completed", ("", "ui", ("say", "\n==> Wait completed"))),
        ("1,,ui,error,a%!(PACKER_COMMA)b%!(PACKER_COMMA)c", ("", "ui", ("error", "a,b,c"))),
        (
            "1,amazon-ebs.web,artifact,0,id,eu-west-1:ami-1%!(PACKER_COMMA)us-east-1:ami-2",
            ("amazon-ebs.web", "artifact", ("0", "id", "eu-west-1:ami-1,us-east-1:ami-2")),
        ),
        ("1,,version,1.6.6\r\n", ("", "version", ("1.6.6",))),
    ],
)
def test_parse_line(line, expected):
    message = packer.parse_line(line)
    assert (message.target, message.type, message.data) == expected


@pytest.mark.parametrize("line", ["", 'Error: Unset variable "version"', "not,a-number,ui", "123,,", "   "])
def test_plain_lines_are_not_messages(line):
    assert packer.parse_line(line) is None


def test_successful_build_with_escaped_commas():
    recorded = stream("success-escaped-commas.log")
    texts = [text for _, text in recorded.ui]
    assert "    docker.tiny: hello, world" in texts
    assert "\n==> Builds finished. The artifacts of successful builds are:" in texts
    assert recorded.errors == [] and recorded.error_count is None
    assert recorded.container_ids == ["a49af55d54d4e87ba4d4927f35af6bc41cd6b8bb663b09a6e7d763ee6319cb11"]
    [tiny] = recorded.artifacts.values()
    assert [(a.index, a.builder_id) for a in tiny] == [
        (0, "packer.post-processor.docker-import"),
        (1, "packer.post-processor.docker-tag"),
    ]
    assert tiny[0].id.startswith("sha256:")
    assert tiny[1].id == "kilnbuild-rec/tiny:1"
    assert tiny[1].string == "Imported Docker image: kilnbuild-rec/tiny:1 with tags kilnbuild-rec/tiny:1"


def test_failed_provisioner():
    recorded = stream("failed-provisioner.log")
    assert recorded.error_count == 1
    assert recorded.errors == [
        ("docker.tiny", "Script exited with non-zero exit status: 3.Allowed exit codes are: [0]")
    ]
    assert recorded.failed_builds == ["docker.tiny"]
    assert recorded.artifacts == {}
    assert ("error", "==> docker.tiny: failing on purpose, as asked") in recorded.ui
    assert len(recorded.container_ids) == 1


def test_two_builds_each_with_two_artifacts():
    recorded = stream("two-builds.log")
    assert sorted(recorded.artifacts) == ["docker.left", "docker.right"]
    for build, artifacts in recorded.artifacts.items():
        assert len(artifacts) == 2
        assert artifacts[1].id == f"kilnbuild-rec/pair:{build.split('.')[1]}-1"
    assert len(recorded.container_ids) == 2


def test_artifacts_as_the_catalog_keeps_them():
    artifacts = read_artifacts(stream("two-builds.log"))
    assert artifacts["docker"]["tag"] == "kilnbuild-rec/pair:left-1"  # the first build by name
    assert artifacts["docker"]["image_id"].startswith("sha256:")
    assert set(artifacts["docker_builds"]) == {"docker.left", "docker.right"}
    assert artifacts["docker_builds"]["docker.right"]["tags"] == ["kilnbuild-rec/pair:right-1"]


def test_ami_ids_per_region():
    lines = [
        "1,amazon-ebs.web,artifact-count,1",
        "1,amazon-ebs.web,artifact,0,builder-id,mitchellh.amazonebs",
        "1,amazon-ebs.web,artifact,0,id,eu-west-1:ami-0a1%!(PACKER_COMMA)us-east-1:ami-0b2",
        "1,amazon-ebs.web,artifact,0,end",
    ]
    artifacts = read_artifacts(packer.BuildStream().feed_lines(lines))
    assert artifacts["ami"] == {"eu-west-1": "ami-0a1", "us-east-1": "ami-0b2"}
    assert "docker" not in artifacts


def test_failure_message_leads_with_packer_errors_and_the_step_output():
    recorded = stream("failed-provisioner.log")
    result = packer.RunResult(["/usr/bin/packer", "build", "."], 1, recorded, "/tmp/x.log", 1.0, ["tail"], "")
    with pytest.raises(packer.PackerError) as caught:
        packer.raise_for(result)
    msg = caught.value.msg
    assert msg.startswith("packer build failed: docker.tiny: Script exited with non-zero exit status: 3")
    assert "failing on purpose, as asked" in msg
    assert caught.value.details["rc"] == 1
    assert caught.value.details["cmd"] == ["/usr/bin/packer", "build", "."]
    assert caught.value.details["stdout"] == "tail"


def test_success_does_not_raise():
    result = packer.RunResult(["packer", "build"], 0, stream("success-escaped-commas.log"), "x", 1.0, [], "")
    packer.raise_for(result)


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("1795748015,,version,1.6.6\n1795748015,,version-prelease,\n1,,ui,say,Packer v1.6.6\n", "1.6.6"),
        ("1,,version,v1.11.2\n", "1.11.2"),
        ("Packer v1.9.4\n\nYour version of Packer is out of date!", "1.9.4"),
        ("garbage", None),
    ],
)
def test_version(output, version):
    assert packer.parse_version(output) == version


@pytest.mark.parametrize(("version", "modern"), [("1.6.6", False), ("1.7.0", True), ("1.11.2", True)])
def test_modern_packer(version, modern):
    assert packer.PackerInfo("/usr/bin/packer", version).modern is modern


def test_command_line_values():
    with packer.var_args({"b": True, "a": ["x", "y"], "c": 3, "d": "s p"}, ["/v/x.pkrvars.hcl"]) as args:
        assert args == [
            "-var-file=/v/x.pkrvars.hcl",
            '-var=a=["x", "y"]',
            "-var=b=true",
            "-var=c=3",
            "-var=d=s p",
        ]


def test_sensitive_values_go_to_a_private_var_file_removed_afterwards():
    variables = {"token": "hunter2", "region": "eu-west-1", "keys": ["k1"]}
    with packer.var_args(variables, ["/v/x.pkrvars.hcl"], sensitive=["token", "keys", "unset"]) as args:
        assert not any("hunter2" in a or "k1" in a for a in args)
        assert args[:2] == ["-var-file=/v/x.pkrvars.hcl", "-var=region=eu-west-1"]
        path = args[-1].removeprefix("-var-file=")
        assert path.endswith(".pkrvars.json")  # last: it wins over the other var files, as -var would
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
        assert json.loads(Path(path).read_text()) == {"keys": ["k1"], "token": "hunter2"}
    assert not os.path.exists(os.path.dirname(path))
    assert packer.filter_args(["docker.web"], []) == ["-only=docker.web"]


def test_secrets_are_masked_in_the_command():
    assert packer._display_cmd(["packer", "-var=token=hunter2"], ["hunter2"]) == [
        "packer",
        "-var=token=********",
    ]


def test_missing_packer_says_how_to_install(tmp_path):
    with pytest.raises(packer.PackerNotFound, match="apt-get install packer"):
        packer.find_packer(str(tmp_path / "no-packer"))


def test_interrupted_build():
    recorded = stream("interrupted.log")
    assert ("error", "Cancelling build after receiving interrupt") in recorded.ui
    assert recorded.artifacts == {}
    assert recorded.ui[-1] == ("say", "Cleanly cancelled builds after being interrupted.")
