"""The Molecule scenarios, run for real: the golden_image role converges twice with no change, and the
image scenario catches an image whose packages are not the ones the catalog recorded.

The test stage end to end (pass, fail, record, promote) is in test_pipeline.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog, Version
from ansible_collections.kiln.immutable.plugins.module_utils.common.docker_api import client
from ansible_collections.kiln.immutable.plugins.module_utils.test_stage.image_test import (
    logged_instances,
    parse_dpkg,
)

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "collections" / "ansible_collections" / "kiln" / "immutable"
VENV_BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "NO_COLOR": "1", **extra}


def _leftovers(prefix: str) -> list[str]:
    engine = client()
    names = [c.name for c in engine.containers.list(all=True) if c.name.startswith(prefix)]
    return names + [v.name for v in engine.volumes.list() if v.name.startswith(prefix)]


def test_golden_image_role_converges_twice_and_the_second_run_changes_nothing(tmp_path):
    instance = f"kiln-molecule-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [str(VENV_BIN / "molecule"), "test", "-s", "golden_image", "--no-command-borders"],
        cwd=COLLECTION,
        env=_env(KILN_TEST_INSTANCE=instance, MOLECULE_EPHEMERAL_DIRECTORY=str(tmp_path / "molecule")),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    # the idempotence step ran the role a second time and found nothing to change
    assert re.search(r"golden_image > idempotence\]? Executed: Successful", out), out[-3000:]
    recaps = re.findall(rf"^{instance}\s+: ok=\d+\s+changed=(\d+)", out, re.M)
    assert recaps[0] != "0" and recaps[1] == "0", recaps
    assert "Serve: /version answers the version the role was given" in out
    assert _leftovers(instance) == []


@pytest.fixture
def web_image(_rollout_session):
    """A real web image baked from packer/web: the run's first good version (tests/rollout_fixtures.py;
    not its catalog). It answers web/1 on /version, as the version the test registers it as."""
    good = _rollout_session.version("good")
    assert good.ref == "web/1"
    return good.artifacts["docker"]["tag"], good.artifacts["docker"]["image_id"]


def test_image_scenario_fails_when_the_packages_differ_from_the_catalog(web_image, tmp_path):
    tag, built_id = web_image
    listed = client().containers.run(
        tag,
        entrypoint=["dpkg-query", "--show", "--showformat=${db:Status-Abbrev} ${Package} ${Version}\n"],
        remove=True,
    )
    packages = parse_dpkg(listed.decode())
    assert packages["nginx"], packages
    # the catalog remembers an older nginx and a package the image no longer has
    recorded = {**packages, "nginx": "1.0.0-1", "telnet": "0.17+2.4-2"}
    state = tmp_path / "state"
    with Catalog(str(state / "catalog.db")) as catalog:
        catalog.register(
            Version(
                image="web",
                name=catalog.reserve_version("web"),
                fingerprint="fp",
                artifacts={"docker": {"image_id": built_id, "tag": tag}},
                packages=recorded,
            )
        )
    result = subprocess.run(
        [str(VENV_BIN / "invoke"), "test", "--version", "web/1"],
        cwd=ROOT,
        env=_env(INVOKE_KILN_STATE_DIR=str(state)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stdout[-4000:]
    assert "check failed: Packages: the installed packages match the catalog" in result.stderr
    assert f"nginx is {packages['nginx']}, the catalog says 1.0.0-1" in result.stderr
    assert "telnet 0.17+2.4-2 is in the catalog but not installed" in result.stderr
    with Catalog(str(state / "catalog.db")) as catalog:
        last = catalog.get("web/1").last_test
    assert last["passed"] is False and last["details"]["check"].startswith("Packages:")
    log = Path(last["log_path"]).read_text()
    # every earlier check passed: the image itself is fine
    for check in (
        "Version: /version answers",
        "Health: /healthz answers 200",
        "Non-root:",
        "Read-only:",
        "Data:",
    ):
        assert check in log
    # this run's instance, named in its log: meanwhile other workers test a web/1 of their own
    (instance,) = logged_instances(log)
    assert instance.startswith("kiln-test-web-1-") and _leftovers(instance) == []
    assert json.loads(json.dumps(last))["duration_s"] > 0
