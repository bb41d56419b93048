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
    if key is not None:
        kwargs["key"] = key
    return fpm.compute(
        template, values, packer_version=packer_version, image_id=lambda ref: base_id, **kwargs
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
    result = fingerprint(role_template)
    # playbook.yml, its roles and their dependencies sit in the template folder, read whole
    assert result.folders == ["."]
    assert "file:playbook.yml" in result.inputs
    assert "file:roles/motd/templates/motd.j2" in result.inputs
    assert "file:roles/base_files/tasks/main.yml" in result.inputs  # a dependency from meta/main.yml
    assert "file:ansible-role.pkr.hcl" not in result.inputs  # hashed once, as template:


def test_collection_roles_resolve_through_the_ansible_config():
    inputs = fingerprint(ROOT / "packer" / "web", sources=["docker.web"]).inputs
    assert "role:kiln.immutable.golden_image/tasks/main.yml" in inputs
    assert "role:kiln.immutable.golden_image/templates/nginx.conf.j2" in inputs
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
    assert changed == [("template:" if path.endswith(".pkr.hcl") else "file:") + path]


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


# ------------------------------------------------------------------ inputs a build reads, however named

PLAYBOOK = "---\n- name: P\n  hosts: all\n  vars_files:\n    - vars/extra.yml\n  tasks:\n"
PLAYBOOK += "    - name: T\n      ansible.builtin.include_tasks: tasks/more.yml\n"
READS = {
    "templatefile": (
        'source "amazon-ebs" "vm" {\n  user_data = templatefile("${path.root}/cloud-init.yml", {})\n}\n',
        {"cloud-init.yml": "#cloud-config\n"},
        "cloud-init.yml",
    ),
    "shell script": (
        'provisioner "shell" {\n  script = "scripts/a.sh"\n}\n',
        {"scripts/a.sh": "echo a\n"},
        "scripts/a.sh",
    ),
    "shell scripts": (
        'provisioner "shell" {\n  scripts = ["${path.root}/one.sh", "two.sh"]\n}\n',
        {"one.sh": "echo 1\n", "two.sh": "echo 2\n"},
        "two.sh",
    ),
    "file source": (
        'provisioner "file" {\n  source = "${path.root}/files/app.conf"\n  destination = "/etc/a"\n}\n',
        {"files/app.conf": "a=1\n"},
        "files/app.conf",
    ),
    "group_vars": (
        'provisioner "ansible" {\n  playbook_file = "ansible/site.yml"\n}\n',
        {"ansible/site.yml": PLAYBOOK, "ansible/group_vars/all.yml": "a: 1\n"},
        "ansible/group_vars/all.yml",
    ),
    "vars_files": (
        'provisioner "ansible" {\n  playbook_file = "ansible/site.yml"\n}\n',
        {"ansible/site.yml": PLAYBOOK, "ansible/vars/extra.yml": "b: 2\n"},
        "ansible/vars/extra.yml",
    ),
    "include_tasks": (
        'provisioner "ansible" {\n  playbook_file = "ansible/site.yml"\n}\n',
        {"ansible/site.yml": PLAYBOOK, "ansible/tasks/more.yml": "[]\n"},
        "ansible/tasks/more.yml",
    ),
    "ansible-local playbook_dir": (
        'provisioner "ansible-local" {\n  playbook_file = "local/site.yml"\n  playbook_dir = "local"\n}\n',
        {"local/site.yml": "[]\n", "local/roles/r/tasks/main.yml": "[]\n"},
        "local/roles/r/tasks/main.yml",
    ),
    "ansible-local playbook_files": (
        'provisioner "ansible-local" {\n  playbook_files = ["plays/one.yml", "plays/two.yml"]\n}\n',
        {"plays/one.yml": "[]\n", "plays/two.yml": "[]\n"},
        "plays/two.yml",
    ),
    "error-cleanup-provisioner": (
        'error-cleanup-provisioner "shell-local" {\n  script = "cleanup.sh"\n}\n',
        {"cleanup.sh": "echo clean\n"},
        "cleanup.sh",
    ),
    "a build's source block": (
        'source "source.docker.web" {\n  name = "w"\n  volumes = { "data" = "/srv/data" }\n}\n',
        {"data/seed.sql": "select 1;\n"},
        "data/seed.sql",
    ),
    "only as an expression": (
        'provisioner "shell" {\n  only = var.targets\n  script = "s.sh"\n}\n',
        {"s.sh": "echo s\n"},
        "s.sh",
    ),
    "path.cwd": (
        'provisioner "ansible" {\n  playbook_file = "${path.cwd}/ansible/site.yml"\n}\n',
        {"ansible/site.yml": PLAYBOOK, "ansible/tasks/more.yml": "[]\n"},
        "ansible/tasks/more.yml",
    ),
}


def template_reading(folder, block, files):
    body = block if block.startswith('source "amazon-ebs"') else ""
    build = "" if body else block
    text = 'variable "targets" {\n  type = list(string)\n  default = ["docker.web"]\n}\n'
    text += 'source "docker" "web" {\n  image = "kiln/base:bookworm"\n}\n' + body
    text += 'build {\n  sources = ["source.docker.web"' + (', "source.amazon-ebs.vm"' if body else "")
    text += "]\n" + build + "}\n"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.pkr.hcl").write_text(text)
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content)
    (folder / "NOTES.txt").write_text("not read by the build\n")


@pytest.mark.parametrize("case", sorted(READS))
def test_a_file_the_build_reads_is_an_input(tmp_path, monkeypatch, case):
    block, files, edited = READS[case]
    folder = tmp_path / "t"
    template_reading(folder, block, files)
    monkeypatch.chdir(tmp_path)  # not the template folder: kiln runs Packer from there, not from here
    before = fingerprint(folder, key=None)
    (folder / edited).write_text((folder / edited).read_text() + "# edited\n")
    after = fingerprint(folder, key=None).value
    assert after != before.value
    (folder / "NOTES.txt").write_text("edited, still not read\n")
    assert fingerprint(folder, key=None).value == after


def test_an_only_known_when_packer_runs_is_named_in_a_warning(tmp_path):
    block, files, dummy = READS["only as an expression"]
    template_reading(tmp_path / "t", block.replace("var.targets", "local.unknowable"), files)
    result = fingerprint(tmp_path / "t", key=None)
    assert any("only = '${local.unknowable}' is not known before Packer runs" in w for w in result.warnings)
    assert "file:s.sh" in result.inputs


def test_a_path_known_only_when_packer_runs_hashes_its_folder_and_says_so(tmp_path):
    template_reading(
        tmp_path / "t",
        'provisioner "shell" {\n  script = "${path.root}/scripts/${build.name}.sh"\n}\n',
        {"scripts/x.sh": "echo x\n"},
    )
    result = fingerprint(tmp_path / "t", key=None)
    assert result.folders == ["scripts"] and "file:scripts/x.sh" in result.inputs
    assert any("is not known before Packer runs" in w and "(scripts)" in w for w in result.warnings)


def test_sensitive_values_are_keyed_per_catalog():
    one = fingerprint(FIXTURES / "tiny", {"token": "hunter2"}, key=b"1" * 32)
    two = fingerprint(FIXTURES / "tiny", {"token": "hunter2"}, key=b"2" * 32)
    assert one.inputs["var:token"] != two.inputs["var:token"]
    assert one.inputs["var:token"] != fpm.value_hash("token", "hunter2")  # no bare hash to try values on
    assert one.inputs["var:message"] == two.inputs["var:message"]  # others compare across catalogs
    # the file holding the sensitive default is keyed too
    assert one.inputs["template:tiny.pkr.hcl"] != two.inputs["template:tiny.pkr.hcl"]


def test_the_catalog_key_is_made_once_and_kept_private(tmp_path):
    from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog

    with Catalog(str(tmp_path / "catalog.db")) as catalog:
        key = fpm.catalog_key(catalog)
        assert fpm.catalog_key(catalog) == key and len(key) == 32
    path = tmp_path / "catalog.db.fingerprint-key"
    assert path.stat().st_mode & 0o777 == 0o600
