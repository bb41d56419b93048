"""amazon-ebs artifact ids as Packer prints them, one region or several."""

from __future__ import annotations

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.build import ami, packer
from ansible_collections.kiln.immutable.plugins.module_utils.build.flow import read_artifacts
from ansible_collections.kiln.immutable.plugins.module_utils.common.errors import KilnError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("eu-west-1:ami-0a1", {"eu-west-1": "ami-0a1"}),
        ("eu-west-1:ami-0a1,us-west-2:ami-0b2", {"eu-west-1": "ami-0a1", "us-west-2": "ami-0b2"}),
        (" eu-west-1:ami-0a1, us-east-1:ami-0c3 ", {"eu-west-1": "ami-0a1", "us-east-1": "ami-0c3"}),
    ],
)
def test_regions_and_amis(text, expected):
    assert ami.parse_ami_id(text) == expected


@pytest.mark.parametrize("text", ["", "ami-0a1", "eu-west-1:", "eu-west-1:snap-1"])
def test_malformed_artifact_ids_are_refused_with_the_text(text):
    with pytest.raises(KilnError, match="amazon-ebs artifact id"):
        ami.parse_ami_id(text)


def test_machine_readable_lines_with_escaped_commas_give_every_region():
    # recorded from Packer 1.6.6's amazon-ebs against the local AWS API, with ami_regions = ["us-west-2"]
    lines = [
        "1796133020,amazon-ebs.web,artifact-count,1",
        "1796133020,amazon-ebs.web,artifact,0,builder-id,mitchellh.amazonebs",
        "1796133020,amazon-ebs.web,artifact,0,id,eu-west-1:ami-ef9b0c7f892040f46%!(PACKER_COMMA)"
        "us-west-2:ami-9f163c505f7e265d6",
        "1796133020,amazon-ebs.web,artifact,0,string,AMIs were created:\\neu-west-1: ami-ef9b0c7f892040f46\\n"
        "us-west-2: ami-9f163c505f7e265d6\\n",
        "1796133020,amazon-ebs.web,artifact,0,files-count,0",
        "1796133020,amazon-ebs.web,artifact,0,end",
    ]
    artifacts = read_artifacts(packer.BuildStream().feed_lines(lines))
    assert artifacts["ami"] == {"eu-west-1": "ami-ef9b0c7f892040f46", "us-west-2": "ami-9f163c505f7e265d6"}
