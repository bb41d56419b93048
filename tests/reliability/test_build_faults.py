"""The build stage under faults: interrupted and timed-out Packer, broken tools, bad input.

Every failure must leave no catalog entry, no container of the build and no image tag of it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.build import flow as bm
from ansible_collections.kiln.immutable.plugins.module_utils.build.packer import (
    PackerError,
    PackerNotFound,
)
from ansible_collections.kiln.immutable.plugins.module_utils.build.template import TemplateError
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "templates"
PREFIX = f"kilnbf{uuid.uuid4().hex[:8]}"

# Runs one build in its own process (so it can be signalled) and prints the outcome as JSON.
RUNNER = """
import json, sys
from ansible_collections.kiln.immutable.plugins.module_utils.build import flow
from ansible_collections.kiln.immutable.plugins.module_utils.common.errors import KilnError
from ansible_collections.kiln.immutable.plugins.module_utils.common.files import line_appender
request = flow.BuildRequest(**json.loads(sys.argv[1]))
try:
    out = flow.run(request, on_progress=line_appender(sys.argv[2]))
except KilnError as exc:
    out = {"error": type(exc).__name__, "msg": exc.msg, "log_path": exc.details.get("log_path")}
print(json.dumps(out))
"""


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("KILN_CATALOG", str(tmp_path / "state" / "catalog.db"))
    return tmp_path / "state"


def start_build(state: Path, progress: Path, **request) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "collections"),
        "KILN_STATE_DIR": str(state),
        "KILN_CATALOG": str(state / "catalog.db"),
    }
    args = {"template": str(FIXTURES / "tiny"), "image": "tiny", **request}
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, json.dumps(args), str(progress)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def assert_nothing_left(state: Path, log_path: str) -> None:
    with Catalog(str(state / "catalog.db")) as opened:
        assert opened.list_versions("tiny") == []
    ids = re.findall(r"Container ID: ([0-9a-f]{64})", Path(log_path).read_text())
    assert ids, "the build started a container"
    engine = docker_api.client()
    assert [i for i in ids if engine.containers.list(all=True, filters={"id": i})] == []
    assert not [t for image in engine.images.list() for t in image.tags if t.startswith(f"{PREFIX}/")]


@pytest.mark.docker
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_is_passed_on_and_packer_cleans_up(state, tmp_path, signum):
    progress = tmp_path / "progress"
    variables = {"repository": f"{PREFIX}/tiny", "sleep": 120}
    proc = start_build(state, progress, variables=variables)
    try:
        wait_for(lambda: progress.exists() and "hello, world" in progress.read_text(), 60, "the provisioner")
        started = time.monotonic()
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    outcome = json.loads(out)
    assert outcome["error"] == "PackerInterrupted"
    assert signal.Signals(signum).name in outcome["msg"]
    assert time.monotonic() - started < 60  # Packer stopped, it did not sleep on
    assert_nothing_left(state, outcome["log_path"])


@pytest.mark.docker
def test_timeout_stops_packer_and_leaves_nothing(state, tmp_path):
    started = time.monotonic()
    proc = start_build(
        state, tmp_path / "progress", variables={"repository": f"{PREFIX}/tiny", "sleep": 120}, timeout_s=4
    )
    out, _ = proc.communicate(timeout=120)
    outcome = json.loads(out)
    assert outcome["error"] == "PackerTimeout"
    assert "timed out after" in outcome["msg"]
    assert time.monotonic() - started < 60
    assert_nothing_left(state, outcome["log_path"])


def fake_packer(tmp_path: Path, body: str) -> str:
    script = tmp_path / "packer"
    script.write_text('#!/bin/sh\nif [ "$1" = version ]; then echo "1,,version,1.6.6"; exit 0; fi\n' + body)
    script.chmod(0o755)
    return str(script)


@pytest.mark.docker
def test_packer_dying_mid_build_is_reported_with_rc_and_tail(state, tmp_path):
    packer = fake_packer(
        tmp_path,
        'echo "1,,ui,say,==> docker.tiny: Starting docker container..."\n'
        'echo "panic: runtime error: invalid memory address" >&2\n'
        "exit 2\n",
    )
    request = bm.BuildRequest(template=str(FIXTURES / "tiny"), image="tiny", packer_path=packer)
    with pytest.raises(PackerError) as caught:
        bm.run(request)
    assert caught.value.details["rc"] == 2
    assert "panic: runtime error" in caught.value.msg
    assert "Starting docker container" in caught.value.details["stdout"]
    assert Path(caught.value.details["log_path"]).is_file()
    with Catalog(None) as opened:
        assert opened.list_versions("tiny") == []


def test_missing_packer_is_named_with_how_to_install(state, tmp_path):
    request = bm.BuildRequest(template=str(FIXTURES / "tiny"), packer_path=str(tmp_path / "none"))
    with pytest.raises(PackerNotFound, match="apt-get install packer"):
        bm.run(request)
    with Catalog(None) as opened:
        assert opened.next_version_name("tiny") == "1"


def test_unreachable_docker_is_named(state):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "collections"), "DOCKER_HOST": "unix:///nonexistent.sock"}
    env["KILN_STATE_DIR"] = str(state)
    args = json.dumps({"template": str(FIXTURES / "tiny")})
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, args, str(state / "progress.log")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["error"] == "DockerUnavailable"
    assert "apt-get install docker.io" in outcome["msg"]


@pytest.mark.parametrize(
    ("request_args", "error", "words"),
    [
        ({"variables": {"version": "9"}}, bm.BuildError, "'version' is set by kiln"),
        ({"variables": {"colour": "red"}}, TemplateError, "unknown variable 'colour'"),
        ({"only": ["qemu.*"]}, bm.BuildError, "no source matches 'qemu.*'"),
        ({"only": ["docker.*"], "except_": ["docker.tiny"]}, bm.BuildError, "leave no source"),
        ({"var_files": ["/nonexistent/x.pkrvars.hcl"]}, TemplateError, "/nonexistent/x.pkrvars.hcl"),
        ({"on_error": "ask"}, bm.BuildError, "on_error must be one of"),
    ],
)
def test_bad_input_is_refused_before_anything_starts(state, request_args, error, words):
    with pytest.raises(error) as caught:
        bm.run(bm.BuildRequest(template=str(FIXTURES / "tiny"), **request_args))
    assert words in caught.value.msg
    assert not (state / "logs").exists()  # Packer never ran


def test_a_template_without_a_version_variable_is_refused(state, tmp_path):
    folder = tmp_path / "noversion"
    folder.mkdir()
    text = (
        (FIXTURES / "tiny" / "tiny.pkr.hcl").read_text().replace('variable "version"', 'variable "release"')
    )
    (folder / "t.pkr.hcl").write_text(text.replace("var.version", "var.release"))
    with pytest.raises(bm.BuildError, match=r"declares no variable 'version'"):
        bm.run(bm.BuildRequest(template=str(folder)))


def test_a_damaged_role_file_is_named(state, tmp_path):
    import shutil

    folder = tmp_path / "t" / "ansible-role"
    shutil.copytree(FIXTURES / "ansible-role", folder)
    (folder / "roles" / "motd" / "meta" / "main.yml").write_text("dependencies: [\n")
    with pytest.raises(bm.fingerprint_mod.FingerprintError, match=r"roles/motd/meta/main.yml"):
        bm.run(bm.BuildRequest(template=str(folder)))


@pytest.mark.docker
def test_kiln_killed_mid_build_leaves_nothing_for_long_and_the_next_build_says_so(state, tmp_path):
    """Packer runs in its own session: a SIGKILL of kiln does not reach it, its guard stops it."""
    progress = tmp_path / "progress"
    proc = start_build(state, progress, variables={"repository": f"{PREFIX}/tiny", "sleep": 120})
    try:
        wait_for(lambda: progress.exists() and "hello, world" in progress.read_text(), 60, "the provisioner")
    finally:
        proc.kill()
        proc.wait(10)
    [record] = [json.loads(p.read_text()) for p in (state / "builds").glob("*.json")]
    assert record["packer_pid"] and record["containers"]
    log_path = record["log_path"]
    wait_for(lambda: "Cleanly cancelled builds" in Path(log_path).read_text(), 90, "packer to clean up")
    wait_for(lambda: not Path(f"/proc/{record['packer_pid']}").exists(), 30, "packer to exit")
    assert_nothing_left(state, log_path)
    assert "interrupting packer" in Path(log_path).read_text()

    again = start_build(state, tmp_path / "progress2", variables={"repository": f"{PREFIX}/tiny"})
    out, _ = again.communicate(timeout=300)
    outcome = json.loads(out)
    assert outcome.get("changed"), outcome
    [said] = [w for w in outcome["warnings"] if "interrupted build" in w]
    assert f"removed what the interrupted build of tiny/{record['version']}" in said
    assert list((state / "builds").glob("*.json")) == []
    with Catalog(str(state / "catalog.db")) as opened:
        assert [v.ref for v in opened.list_versions("tiny")] == [
            outcome["version"]
        ]  # none for the killed one
    docker_api.client().images.remove(outcome["artifacts"]["docker"]["image_id"], force=True)
