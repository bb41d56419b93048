"""The collection as users get it: built with ansible-galaxy, installed outside the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "collections" / "ansible_collections" / "kiln" / "immutable"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The built tarball installed into a scratch folder; the environment that sees only it."""
    scratch = tmp_path_factory.mktemp("scratch")
    build = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", str(COLLECTION), "--output-path", str(scratch)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    [tarball] = scratch.glob("kiln-immutable-*.tar.gz")
    (scratch / "ansible.cfg").write_text(f"[defaults]\ncollections_path = {scratch / 'collections'}\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KILN_"))},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(scratch / "ansible.cfg"),
        "KILN_STATE_DIR": str(scratch / "state"),
    }
    # Galaxy is out of reach here; the dependencies come with the `ansible` package.
    install = subprocess.run(
        [
            str(BIN / "ansible-galaxy"),
            "collection",
            "install",
            str(tarball),
            "--no-deps",
            "-p",
            "collections",
        ],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    return scratch, env


def test_tarball_holds_the_build_modules(installed):
    scratch, _ = installed
    modules = scratch / "collections" / "ansible_collections" / "kiln" / "immutable" / "plugins" / "modules"
    assert {"packer_build.py", "packer_template_info.py"} <= {p.name for p in modules.iterdir()}
    assert not list(scratch.glob("collections/ansible_collections/kiln/immutable/tests/output"))


@pytest.mark.parametrize("module", ["packer_build", "packer_template_info"])
def test_ansible_doc_shows_the_installed_modules(installed, module):
    scratch, env = installed
    doc = subprocess.run(
        [str(BIN / "ansible-doc"), "--json", f"kiln.immutable.{module}"],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert doc.returncode == 0, doc.stderr
    found = json.loads(doc.stdout)[f"kiln.immutable.{module}"]
    assert found["doc"]["filename"].startswith(str(scratch))  # the installed copy, not the checkout
    assert "template" in found["doc"]["options"]
    assert found["examples"] and found["return"]


def test_a_play_outside_the_repository_describes_packer_web(installed):
    scratch, env = installed
    play = [
        {
            "name": "describe",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Describe the web template",
                    "kiln.immutable.packer_template_info": {"template": str(ROOT / "packer" / "web")},
                    "register": "web",
                },
                {
                    "name": "Check it",
                    "ansible.builtin.assert": {
                        "that": ["web.required_variables == ['version']", "'docker.web' in web.sources"]
                    },
                },
            ],
        }
    ]
    (scratch / "play.yml").write_text(json.dumps(play))
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), "play.yml"],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "ok=2" in run.stdout and "failed=0" in run.stdout
