"""kiln's reading of the template corpus against Packer's own (`packer inspect`, `packer validate`).

Packer 1.6.6 is what runs here. It rejects a `packer {}` block, so each case is read from the folder kiln
stages for it (the block left out, as a build would do); a case whose plugins 1.6.6 lacks says so in the
corpus and is compared on what 1.6.6 can list.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.build import flow
from ansible_collections.kiln.immutable.plugins.module_utils.build import template as tm
from ansible_collections.kiln.immutable.plugins.module_utils.build.packer import packer_info
from template_corpus import CASES, CORPUS

# Cases Packer 1.6.6 can validate in full (their builders check nothing they cannot reach).
VALIDATES = {
    "tutorial-ubuntu",
    "tutorial-alpine",
    "dynamic-blocks",
    "docker-ansible-galaxy",
    "large-multi-build",
    "bom-sensitive",
    "json-varfiles",
    "aws-ebs-shell",
}


def packer_reading(case, target: str, cwd: str, command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **{f"PKR_VAR_{k}": str(v) for k, v in case.variables.items()}}
    env["PKR_VAR_version"] = "1"
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}"  # ansible-playbook
    args = [f"-var-file={CORPUS / f}" for f in case.var_files] if command == "validate" else []
    return subprocess.run(
        ["packer", command, *args, target], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def parse_inspect(text: str) -> dict:
    """`packer inspect`'s text: variable names (and which are masked) and, per build, its blocks."""
    variables = dict(re.findall(r"^var\.([\w-]+): (.*)$", text, re.M))
    builds = []
    for chunk in re.split(r"^  > ", text.split("> builds:", 1)[1], flags=re.M)[1:]:
        sections = re.split(r"^    (sources|provisioners|post-processors):$", chunk, flags=re.M)
        parts = dict(zip(sections[1::2], sections[2::2], strict=True))
        chains, current = [], None
        for line in parts["post-processors"].splitlines():
            if re.fullmatch(r"      \d+:", line):
                current = []
                chains.append(current)
            elif line.strip() and current is not None:
                current.append(line.strip())
        builds.append(
            {
                "sources": sorted(set(parts["sources"].split())),
                "provisioners": [p for p in parts["provisioners"].split() if not p.startswith("<")],
                "post_processors": chains,
            }
        )
    return {"variables": variables, "builds": builds}


def kiln_reading(template: tm.Template, values: dict) -> dict:
    described = template.to_dict(tm.scope(template, values))
    builds = []
    for build in described["builds"]:
        provisioners = []
        for plugin in build["provisioners"]:
            provisioners += [plugin["type"]] * (plugin["dynamic"]["count"] if "dynamic" in plugin else 1)
        builds.append(
            {
                "sources": sorted(set(build["sources"])),
                "provisioners": provisioners,
                "post_processors": [[p["type"] for p in chain] for chain in build["post_processors"]],
            }
        )
    return {"variables": described["variables"], "builds": builds}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_kiln_reads_what_packer_reads(case):
    template = tm.load(str(CORPUS / case.target))
    var_files = [str(CORPUS / f) for f in case.var_files]
    values = tm.resolve_variables(template, case.variables, var_files, provided_by_kiln=("version",))
    plan = flow.Plan(
        flow.BuildRequest(template.target), template.name, template, packer_info(), values, [], None, None, 0
    )
    with flow.staged(plan) as target:
        done = packer_reading(case, target, template.path, "inspect")
    assert done.returncode == 0, done.stdout + done.stderr
    packer, kiln = parse_inspect(done.stdout), kiln_reading(template, values)
    assert set(packer["variables"]) == set(kiln["variables"])
    masked = {n for n, v in packer["variables"].items() if v == '"<sensitive>"'}
    assert masked == {n for n, v in kiln["variables"].items() if v["sensitive"]}
    assert packer["builds"] == kiln["builds"], case.packer_1_6 or "kiln and Packer differ"


@pytest.mark.parametrize("case", [c for c in CASES if c.name in VALIDATES], ids=lambda c: c.name)
def test_packer_validates_what_kiln_stages(case):
    template = tm.load(str(CORPUS / case.target))
    values = tm.resolve_variables(
        template, case.variables, [str(CORPUS / f) for f in case.var_files], provided_by_kiln=("version",)
    )
    plan = flow.Plan(
        flow.BuildRequest(template.target), template.name, template, packer_info(), values, [], None, None, 0
    )
    with flow.staged(plan) as target:
        done = packer_reading(case, target, template.path, "validate")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_single_file_is_validated_alone():
    # Folder-wide, the two tutorial files declare docker_image twice: Packer refuses the folder ...
    folder = packer_reading(CASES[2], str(CORPUS / "tutorial-singles"), str(CORPUS), "validate")
    assert folder.returncode != 0
    # ... and kiln points Packer at the one file, as the user did.
    info = flow.template_info(
        str(CORPUS / "tutorial-singles" / "docker-ubuntu.pkr.hcl"), validate_with_packer=True
    )
    assert info["valid"] is True
    assert info["files"] == ["docker-ubuntu.pkr.hcl"]
