"""Two runners (two state folders) building one image at once into one PostgreSQL catalog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = ROOT / "tests" / "fixtures" / "templates" / "tiny"


def test_two_builds_from_two_state_folders_get_distinct_versions(postgres, tmp_path):
    location = postgres.fresh_dsn()
    repository = f"kilnsb{uuid.uuid4().hex[:8]}/tiny"
    runs = []
    for runner in ("a", "b"):
        state = tmp_path / runner
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "KILN_STATE_DIR": str(state),
            "KILN_CATALOG": location,
            "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        }
        # Same inputs but a message per runner: two builds that really differ, started together.
        extra = {
            "kiln_image": "tiny",
            "kiln_template_dir": str(TINY),
            "kiln_variables": {"repository": repository, "message": f"from runner {runner}"},
        }
        cmd = [str(BIN / "ansible-playbook"), "kiln.immutable.build", "-e", json.dumps(extra)]
        runs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    try:
        outputs = [run.communicate(timeout=600) for run in runs]
        for run, (out, err) in zip(runs, outputs, strict=True):
            assert run.returncode == 0, out[-3000:].decode() + err[-2000:].decode()
        with Catalog(location) as catalog:
            versions = catalog.list_versions("tiny")
            assert sorted(v.name for v in versions) == ["1", "2"]  # distinct names, no lost record
            assert len({v.fingerprint for v in versions}) == 2
            tags = {v.artifacts["docker"]["tag"] for v in versions}
            assert tags == {f"{repository}:1", f"{repository}:2"}
            assert all(docker_api.image_id(tag) for tag in tags)
            assert catalog.verify()["ok"]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait(10)
        for image in docker_api.client().images.list(name=repository):
            for tag in image.tags:
                docker_api.client().images.remove(tag)
