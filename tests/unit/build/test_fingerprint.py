"""The fingerprint: every input counts, nothing else does (dict order, paths, machines)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.build import fingerprint as fpm
from ansible_collections.kiln.immutable.plugins.module_utils.build import template as tm

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "templates"
BASE_ID = "sha256:" + "b" * 64
KEY = b"k" * 32


def fingerprint(folder, variables=None, packer_version="1.6.6", base_id=BASE_ID, key=KEY, **kwargs):
    template = tm.load(str(folder))
    values = tm.resolve_variables(template, variables or {}, provided_by_kiln=("version",))
    return fpm.compute(
        template, values, packer_version=packer_version, image_id=lambda ref: base_id, key=key, **kwargs
    )


@pytest.fixture
def role_template(tmp_path):
    folder = tmp_path / "a" / "ansible-role"
    shutil.copytree(FIXTURES / "ansible-role", folder)
    return folder


def test_same_inputs_same_fingerprint_anywhere(tmp_path, role_template):
    elsewhere = tmp_path / "b" / "deeper" / "ansible-role"
    shutil.copytree(role_template, elsewhere)
    first = fingerprint(role_template)
    assert first.value == fingerprint(role_template).value
    assert first.value == fingerprint(elsewhere).value  # no absolute path goes in


def test_the_playbook_folder_is_an_input_whole(role_template):
    inputs = fingerprint(role_template).inputs
    # playbook.yml, its roles and their dependencies sit in the template folder: one input, hashed whole
    assert "folder:." in inputs
    assert not [k for k in inputs if k.startswith(("file:", "role:motd", "role:base_files"))]


def test_collection_roles_resolve_through_the_ansible_config():
    inputs = fingerprint(ROOT / "packer" / "web", sources=["docker.web"]).inputs
    assert "role:kiln.immutable.golden_image" in inputs
    assert "file:../../ansible.cfg" in inputs


@pytest.mark.parametrize(
    "path",
    [
        "roles/motd/templates/motd.j2",
        "roles/base_files/tasks/main.yml",
        "playbook.yml",
        "ansible-role.pkr.hcl",
    ],
)
def test_a_changed_file_changes_the_fingerprint(role_template, path):
    before = fingerprint(role_template)
    with open(role_template / path, "a") as handle:
        handle.write("\n# changed\n")
    after = fingerprint(role_template)
    assert after.value != before.value
    changed = [k for k in after.inputs if after.inputs[k] != before.inputs.get(k)]
    assert changed == (["template:ansible-role.pkr.hcl"] if path.endswith(".pkr.hcl") else ["folder:."])


def test_a_new_role_file_changes_the_fingerprint(role_template):
    before = fingerprint(role_template).value
    (role_template / "roles" / "motd" / "files").mkdir()
    (role_template / "roles" / "motd" / "files" / "banner.txt").write_text("hi\n")
    assert fingerprint(role_template).value != before


def test_variables_base_image_and_packer_version_count(role_template):
    reference = fingerprint(role_template).value
    assert fingerprint(role_template, {"greeting": "hi"}).value != reference
    assert fingerprint(role_template, base_id="sha256:" + "c" * 64).value != reference
    assert fingerprint(role_template, packer_version="1.11.2").value != reference


def test_the_version_name_does_not_count():
    template = tm.load(str(FIXTURES / "tiny"))
    values = tm.resolve_variables(template, {}, provided_by_kiln=("version",))
    one = fpm.compute(
        template, {**values, "version": "1"}, packer_version="1.6.6", image_id=lambda r: BASE_ID, key=KEY
    )
    two = fpm.compute(
        template, {**values, "version": "2"}, packer_version="1.6.6", image_id=lambda r: BASE_ID, key=KEY
    )
    assert one.value == two.value


def test_dict_order_does_not_count():
    a = fpm.combine({"x": "1", "y": "2", "z": "3"})
    b = fpm.combine({"z": "3", "x": "1", "y": "2"})
    assert a == b
    assert fpm.value_hash("v", {"a": 1, "b": [1, 2]}) == fpm.value_hash("v", {"b": [1, 2], "a": 1})


def test_sensitive_values_are_never_in_clear():
    result = fingerprint(FIXTURES / "tiny", {"token": "hunter2-secret"})
    assert "hunter2-secret" not in json.dumps(result.inputs)
    assert result.value != fingerprint(FIXTURES / "tiny", {"token": "other"}).value


def test_missing_base_image_without_pull_is_named():
    with pytest.raises(
        fpm.FingerprintError, match="base image kiln/base:bookworm is not in the local Docker"
    ):
        fingerprint(FIXTURES / "tiny", base_id=None)


def test_only_the_sources_built_count():
    web = ROOT / "packer" / "web"
    docker_only = fingerprint(web, sources=["docker.web"])
    assert "base:docker.web" in docker_only.inputs
    assert docker_only.base == {"ref": "kiln/base:bookworm", "id": BASE_ID}
