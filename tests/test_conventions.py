"""The collection follows Ansible's own conventions: ansible-test sanity, ansible-lint (production), ruff."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COLLECTION = ROOT / "collections" / "ansible_collections" / "kiln" / "immutable"
VENV_BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_ansible_test_sanity():
    cmd = [str(VENV_BIN / "ansible-test"), "sanity", "--python", "3.11", "--requirements", "--color", "no"]
    result = _run(cmd, COLLECTION)
    # ansible-test fetches pip's get-pip.py from a host outside PyPI; where that fails, it names the
    # path to save it to: give it the offline stand-in and run again.
    wanted = re.search(r"can be manually downloaded and saved to: (\S+)", result.stdout + result.stderr)
    if wanted:
        Path(wanted.group(1)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "scripts" / "get-pip-offline.py", wanted.group(1))
        result = _run(cmd, COLLECTION)
    output = (result.stdout + result.stderr).splitlines()
    problems = [line for line in output if line.startswith(("ERROR", "FATAL"))]
    assert result.returncode == 0, "ansible-test sanity failed:\n" + "\n".join(problems or output[-60:])


def test_ansible_lint_production_profile():
    result = _run([str(VENV_BIN / "ansible-lint"), "--nocolor"], ROOT)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_ruff():
    result = _run([str(VENV_BIN / "ruff"), "check", "--no-cache", "."], ROOT)
    assert result.returncode == 0, result.stdout[-6000:]


def test_changelog_fragments_lint_and_generate_a_changelog(tmp_path):
    lint = _run([str(VENV_BIN / "antsibull-changelog"), "lint"], COLLECTION)
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
    # a release made from the fragments, in a copy (a release consumes them)
    copy = tmp_path / "ansible_collections" / "kiln" / "immutable"
    shutil.copytree(COLLECTION, copy, ignore=shutil.ignore_patterns("output", "__pycache__"))
    release = _run([str(VENV_BIN / "antsibull-changelog"), "release", "--version", "99.0.0"], copy)
    assert release.returncode == 0, release.stdout + release.stderr
    changelog = (copy / "CHANGELOG.rst").read_text()
    assert "v99.0.0" in changelog and "rolling_replace" in changelog and "progress_file" in changelog


def test_collection_docs_lint_clean():
    result = _run(
        [str(VENV_BIN / "antsibull-docs"), "lint-collection-docs", "--plugin-docs", "."], COLLECTION
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout[-6000:] + result.stderr[-2000:]


@pytest.mark.parametrize(
    "plugin",
    [
        *(f"module:{p.stem}" for p in sorted((COLLECTION / "plugins" / "modules").glob("*.py"))),
        *(f"role:{p.name}" for p in sorted((COLLECTION / "roles").iterdir())),
        "callback:pipeline",
    ],
)
def test_ansible_doc_documents_every_module_role_and_callback(plugin):
    kind, name = plugin.split(":")
    result = _run([str(VENV_BIN / "ansible-doc"), "-t", kind, "--json", f"kiln.immutable.{name}"], ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[f"kiln.immutable.{name}"], result.stdout[:2000]


def test_execution_environment_names_packer_and_the_docker_client(tmp_path):
    deps = _run([str(VENV_BIN / "ansible-builder"), "introspect", str(ROOT / "collections")], ROOT)
    assert deps.returncode == 0, deps.stderr
    found = yaml.safe_load(deps.stdout)
    system = " ".join(found["system"])
    assert "packer" in system and "docker.io [platform:dpkg]" in system
    assert any(line.startswith("python-hcl2") for line in found["python"])
    # an execution environment definition that installs this collection is accepted
    definition = tmp_path / "execution-environment.yml"
    definition.write_text(
        yaml.safe_dump(
            {
                "version": 3,
                "images": {"base_image": {"name": "registry.example/ee-minimal:latest"}},
                "dependencies": {
                    "galaxy": {"collections": [{"name": str(COLLECTION), "type": "dir"}]},
                    "python": str(COLLECTION / "requirements.txt"),
                    "system": str(COLLECTION / "bindep.txt"),
                },
            }
        )
    )
    context = tmp_path / "context"
    create = _run(
        [str(VENV_BIN / "ansible-builder"), "create", "-f", str(definition), "-c", str(context)], tmp_path
    )
    assert create.returncode == 0, create.stdout + create.stderr
    assert "packer" in (context / "_build" / "bindep.txt").read_text()


def test_setup_takes_the_debian_mirror_from_the_machines_apt_sources(tmp_path):
    script = (ROOT / "scripts" / "setup").read_text()
    function = script[
        script.index("apt_mirror() {") : script.index("\n}\n", script.index("apt_mirror() {")) + 3
    ]
    assert "deb.debian.org" not in script  # no host of its own
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
    )

    def mirror() -> str:
        done = subprocess.run(
            ["bash", "-c", f"{function}\napt_mirror {tmp_path}"], capture_output=True, text=True
        )
        return done.stdout.strip()

    assert mirror() == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text(
        "# one-line style\ndeb [arch=amd64 signed-by=/k.gpg] http://list.example/debian bookworm main\n"
    )
    assert mirror() == "http://list.example/debian"


def test_collection_docs_site_builds(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    init = _run(
        [
            str(VENV_BIN / "antsibull-docs"),
            "sphinx-init",
            "--use-current",
            "--dest-dir",
            str(site),
            "kiln.immutable",
        ],
        ROOT,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    (site / "rst").mkdir(exist_ok=True)
    rst = _run(
        [
            "env",
            f"ANSIBLE_CONFIG={ROOT / 'ansible.cfg'}",
            str(VENV_BIN / "antsibull-docs"),
            "--config-file",
            "antsibull-docs.cfg",
            "collection",
            "--use-current",
            "--dest-dir",
            "rst",
            "kiln.immutable",
        ],
        site,
    )
    assert rst.returncode == 0, rst.stdout + rst.stderr
    html = _run([str(VENV_BIN / "sphinx-build"), "-M", "html", "rst", "build", "-c", "."], site)
    assert html.returncode == 0, html.stdout[-3000:] + html.stderr[-3000:]
    pages = site / "build" / "html" / "collections" / "kiln" / "immutable"
    assert (pages / "rolling_replace_module.html").is_file() and (pages / "pipeline_callback.html").is_file()
    # offline, only the references into docs.ansible.com (intersphinx) stay unresolved
    external = ("common_return_values", "callback_plugins", "ansible_configuration_settings", "ANSIBLE_")
    problems = [
        line
        for line in html.stderr.splitlines()
        if "WARNING" in line
        and "failed to reach any of the inventories" not in line
        and not any(name in line for name in external)
    ]
    assert not problems, "\n".join(problems)


def test_role_and_playbooks_leave_the_module_defaults_to_the_module():
    role = COLLECTION / "roles" / "rolling_replace"
    options = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"][
        "options"
    ]
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    tasks = (role / "tasks" / "main.yml").read_text()
    module_options = (
        "size batch_size max_surge min_healthy_percentage max_failures auto_rollback checkpoints "
        "checkpoint_delay drain_timeout parallel strategy steps bake_time max_error_rate max_latency_ratio "
        "min_requests preview_percent rollback_window health provider provider_options load_balancer "
        "load_balancer_options"
    ).split()
    for name in module_options:
        var = f"rolling_replace_{name}"
        assert "default" not in options[var] and var not in defaults, var
        assert f'{name}: "{{{{ {var} | default(omit) }}}}"' in tasks, var
    for playbook in (COLLECTION / "playbooks").glob("*.yml"):
        assert "drain_timeout | default(30)" not in playbook.read_text(), playbook.name
