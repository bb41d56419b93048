"""The build stage for real: Packer 1.6.6, Docker, ansible-playbook kiln.immutable.build and invoke build."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FIXTURES = ROOT / "tests" / "fixtures" / "templates"
PREFIX = f"kilnbt{uuid.uuid4().hex[:8]}"  # docker repositories of this session, removed at the end


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    state = tmp_path_factory.mktemp("build-state")
    values = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "KILN_STATE_DIR": str(state),
        "INVOKE_KILN_STATE_DIR": str(state),
        "KILN_CATALOG": str(state / "catalog.db"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
    }
    yield values
    remove_session_images()


def remove_session_images() -> None:
    import docker.errors

    engine = docker_api.client()
    for image in engine.images.list():
        for tag in image.tags:
            if tag.startswith(f"{PREFIX}/"):
                try:
                    engine.images.remove(tag, noprune=False)
                except docker.errors.NotFound:
                    pass


def catalog(env) -> Catalog:
    return Catalog(env["KILN_CATALOG"])


def run_json(cmd: list[str], env: dict, timeout: float = 600) -> tuple[list[dict], float]:
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - started
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"no JSON from {cmd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}") from None
    return [task["hosts"]["localhost"] for play in doc["plays"] for task in play["tasks"]], elapsed


def build_playbook(env: dict, extra: dict, check: bool = False) -> tuple[dict, float]:
    """Run kiln.immutable.build; the packer_build task's result and the run's wall time."""
    cmd = [str(BIN / "ansible-playbook"), "kiln.immutable.build", "-e", json.dumps(extra)]
    results, elapsed = run_json(cmd + (["--check"] if check else []), env)
    build_results = [r for r in results if "fingerprint" in r or r.get("failed")]
    return build_results[-1], elapsed


def tiny(env, **variables) -> dict:
    extra = {
        "kiln_image": "tiny",
        "kiln_template_dir": str(FIXTURES / "tiny"),
        "kiln_variables": {"repository": f"{PREFIX}/tiny", **variables},
    }
    return extra


def leftover_containers(log_path: str) -> list[str]:
    ids = re.findall(r"Container ID: ([0-9a-f]{64})", Path(log_path).read_text())
    assert ids, "the log names the build's container"
    return [i for i in ids if docker_api.client().containers.list(all=True, filters={"id": i})]


@pytest.fixture(scope="module")
def web_built(env):
    """The sample web image, built once through the playbook (the expensive part of this module)."""
    extra = {"kiln_image": "web", "kiln_variables": {"repository": f"{PREFIX}/web"}}
    result, elapsed = build_playbook(env, extra)
    assert not result.get("failed"), result.get("msg")
    return extra, result, elapsed


def test_build_playbook_bakes_and_records_the_web_image(env, web_built):
    _, result, _ = web_built
    assert result["changed"] is True
    assert result["version"] == "web/1"
    docker = result["artifacts"]["docker"]
    assert docker["tag"] == f"{PREFIX}/web:1"
    assert docker_api.image_id(docker["tag"]) == docker["image_id"]
    with catalog(env) as opened:
        version = opened.get("web/1")
    assert version.fingerprint == result["fingerprint"]
    assert version.artifacts["docker"]["image_id"] == docker["image_id"]
    assert version.base["ref"] == "kiln/base:bookworm"
    assert version.base["id"] == docker_api.image_id("kiln/base:bookworm")
    assert "nginx" in version.packages and "python3" in version.packages
    assert version.packer_version == "1.6.6"
    assert "role:kiln.immutable.golden_image/tasks/main.yml" in version.inputs
    assert Path(version.log_path).is_file() and "Imported Docker image" in Path(version.log_path).read_text()


def test_second_run_changes_nothing_and_is_fast(env, web_built):
    extra, first, first_elapsed = web_built
    result, elapsed = build_playbook(env, extra)
    assert result["changed"] is False
    assert result["up_to_date"] is True
    assert result["version"] == "web/1"
    assert "built from the same inputs" in result["reason"]
    # A ratio, not a time limit (busy machines vary); bench/build.py measures the decision itself.
    assert result["decision_s"] < first_elapsed / 10
    assert elapsed < first_elapsed / 3
    with catalog(env) as opened:
        assert [v.ref for v in opened.list_versions("web")] == ["web/1"]


def test_invoke_build_with_nothing_changed(env, web_built):
    plain = {**env, "ANSIBLE_STDOUT_CALLBACK": "default"}
    cmd = [str(BIN / "invoke"), "build", "--image", "web", "--var", f"repository={PREFIX}/web"]
    done = subprocess.run(cmd, cwd=ROOT, env=plain, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "web/1: unchanged" in done.stdout
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", done.stdout)


def test_check_mode_says_a_changed_variable_would_build(env, web_built):
    extra, _, _ = web_built
    changed = {**extra, "kiln_variables": {**extra["kiln_variables"], "fault": "unhealthy"}}
    result, _ = build_playbook(env, changed, check=True)
    assert result["changed"] is True
    assert result["version"] == "web/2"
    assert result["reason"].startswith("would build web/2")
    with catalog(env) as opened:
        assert [v.ref for v in opened.list_versions("web")] == ["web/1"]
        assert opened.next_version_name("web") == "2"  # nothing reserved


def test_failed_provisioner_leaves_nothing(env, tmp_path):
    progress = tmp_path / "progress.txt"
    result, _ = build_playbook(env, {**tiny(env, fail=True), "kiln_progress_file": str(progress)})
    assert result["failed"] is True
    assert "Script exited with non-zero exit status: 3" in result["msg"]
    assert "failing on purpose, as asked" in result["msg"]
    assert result["rc"] == 1
    assert result["cmd"][1] == "build"
    assert "failing on purpose, as asked" in progress.read_text()  # what invoke build shows meanwhile
    with catalog(env) as opened:
        assert opened.list_versions("tiny") == []
    assert leftover_containers(result["log_path"]) == []
    assert not [
        t for i in docker_api.client().images.list() for t in i.tags if t.startswith(f"{PREFIX}/tiny")
    ]


def test_malformed_hcl_names_file_and_line(env):
    result, _ = build_playbook(env, {"kiln_image": "broken", "kiln_template_dir": str(FIXTURES / "broken")})
    assert result["failed"] is True
    assert "broken.pkr.hcl at line 11, column 1" in result["msg"]


def test_missing_required_variable_stops_before_packer(env, tmp_path):
    marker = tmp_path / "packer-ran"
    fake = tmp_path / "packer"
    fake.write_text(f'#!/bin/sh\ntouch {marker}\nexec /usr/bin/packer "$@"\n')
    fake.chmod(0o755)
    task = {
        "kiln.immutable.packer_build": {"template": str(FIXTURES / "needs-region"), "packer_path": str(fake)},
        "ignore_errors": True,
    }
    book = tmp_path / "play.yml"
    book.write_text(json.dumps([{"name": "p", "hosts": "localhost", "gather_facts": False, "tasks": [task]}]))
    [result], _ = run_json([str(BIN / "ansible-playbook"), str(book)], env)
    assert result["failed"] is True
    assert "required variable 'region'" in result["msg"]
    assert not marker.exists()
    with catalog(env) as opened:
        assert opened.next_version_name("needs-region") == "1"


def test_template_info_validates_the_web_template_with_packer(env, tmp_path):
    task = {
        "kiln.immutable.packer_template_info": {"template": str(ROOT / "packer" / "web"), "validate": True}
    }
    book = tmp_path / "info.yml"
    book.write_text(json.dumps([{"name": "p", "hosts": "localhost", "gather_facts": False, "tasks": [task]}]))
    [result], _ = run_json([str(BIN / "ansible-playbook"), str(book)], env)
    assert result["changed"] is False
    assert result["valid"] is True
    assert result["required_variables"] == ["version"]


def test_a_single_file_template_as_published_builds_alone(env, tmp_path):
    # A packer {} block beside the build, as most published templates have it, and a sibling template that
    # declares the same variables: built as a folder, Packer would refuse the duplicates.
    folder = tmp_path / "singles"
    folder.mkdir()
    text = (FIXTURES / "tiny" / "plugins.pkr.hcl").read_text() + (
        FIXTURES / "tiny" / "tiny.pkr.hcl"
    ).read_text()
    (folder / "alone.pkr.hcl").write_text(text)
    (folder / "sibling.pkr.hcl").write_text((FIXTURES / "tiny" / "tiny.pkr.hcl").read_text())
    task = {
        "kiln.immutable.packer_build": {
            "template": str(folder / "alone.pkr.hcl"),
            "variables": {"repository": f"{PREFIX}/alone"},
            "capture_packages": False,
        }
    }
    book = tmp_path / "alone.yml"
    book.write_text(json.dumps([{"name": "p", "hosts": "localhost", "gather_facts": False, "tasks": [task]}]))
    [first], _ = run_json([str(BIN / "ansible-playbook"), str(book)], env)
    assert first["changed"] is True, first.get("msg")
    assert first["version"] == "alone/1"
    assert docker_api.image_id(f"{PREFIX}/alone:1") == first["artifacts"]["docker"]["image_id"]
    (folder / "sibling.pkr.hcl").write_text("# not part of this template\n")
    [again], _ = run_json([str(BIN / "ansible-playbook"), str(book)], env)
    assert again["changed"] is False and again["version"] == "alone/1"
