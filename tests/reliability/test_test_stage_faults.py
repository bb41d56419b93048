"""The test stage under bad input and faults: clear refusals that record nothing, a candidate that does
not start, a run stopped by its timeout; no container or volume is left behind.

The candidates here need no build: a version whose Docker image is the base image (its command exits
at once) stands in for a broken image.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog, Version
from ansible_collections.kiln.immutable.plugins.module_utils.common.docker_api import client, image_id
from ansible_collections.kiln.immutable.plugins.module_utils.test_stage.image_test import logged_instances

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
BASE = os.environ.get("KILN_BASE_IMAGE", "kiln/base:bookworm")


@pytest.fixture
def state(tmp_path):
    """A catalog with web/1, whose image is the base image: it has no web server and exits at once."""
    with Catalog(str(tmp_path / "catalog.db")) as catalog:
        catalog.register(
            Version(
                image="web",
                name=catalog.reserve_version("web"),
                fingerprint=uuid.uuid4().hex,
                artifacts={"docker": {"image_id": image_id(BASE), "tag": BASE}},
            )
        )
    return tmp_path


def clean_env() -> dict[str, str]:
    """This process's environment without kiln's own settings, which other fixtures may have set."""
    return {k: v for k, v in os.environ.items() if k not in ("KILN_STATE_DIR", "KILN_CATALOG")}


def invoke_test(state: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "invoke"), "test", *args],
        cwd=ROOT,
        env={**clean_env(), "INVOKE_KILN_STATE_DIR": str(state), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def recorded_results(state: Path, ref: str = "web/1") -> list[dict]:
    with Catalog(str(state / "catalog.db")) as catalog:
        return catalog.get(ref).tests


def leftovers(state: Path) -> list[str]:
    """Containers and volumes left by this test's runs, which their logs name: meanwhile other workers
    test a web/1 of their own, under names of the same shape."""
    names: set[str] = set()
    for log in (state / "logs").glob("test-*.log"):
        names.update(logged_instances(log.read_text()))
    assert names, "the runs' logs name their instances"
    engine = client()
    found = [c.name for c in engine.containers.list(all=True) if c.name in names]
    return found + [v.name for v in engine.volumes.list() if v.name.removesuffix("-data") in names]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--version", "web/9"], "unknown version web/9"),
        (["--version", "web/1", "--channel", "dev"], "exactly one of --version"),
        (["--channel", "prod"], "channel 'prod' of image 'web' points at no version"),
        (["--version", "web/1", "--scenario", "nope"], "no Molecule scenario 'nope' in"),
        (
            ["--version", "web/1", "--scenario", "smoke", "--project-dir", "/nonexistent"],
            "no Molecule scenario",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_runs(state, args, message):
    result = invoke_test(state, *args, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert recorded_results(state) == [] and not (state / "logs").exists()


@pytest.mark.docker
@pytest.mark.slow
def test_a_candidate_that_does_not_start_fails_the_first_check(state):
    result = invoke_test(state, "--version", "web/1")
    assert result.returncode == 1, result.stdout[-3000:]
    assert (
        "check failed: Starts: the instance is running with its port published on 127.0.0.1" in result.stderr
    )
    assert "exited (exit code 0)" in result.stderr
    (last,) = recorded_results(state)
    assert last["passed"] is False and last["details"]["check"].startswith("Starts:")
    assert Path(last["log_path"]).is_file()
    assert leftovers(state) == []


@pytest.mark.docker
@pytest.mark.slow
def test_a_run_stopped_by_its_timeout_is_recorded_failed_and_cleaned_up(state):
    result = invoke_test(state, "--version", "web/1", "--timeout", "4", timeout=120)
    assert result.returncode == 1
    assert "timed out after 4s" in result.stderr
    (last,) = recorded_results(state)
    assert last["passed"] is False and last["details"]["rc"] is None
    assert "stopped after the 4s timeout" in Path(last["log_path"]).read_text()
    assert leftovers(state) == []
