"""Drift on the real Docker engine: instances launched by the Docker provider, containers changed or
started by hand, seen through drift.detect, the drift_info module in a real play, and invoke.

Everything created here is named ``kilnobs-<random>`` and removed at the end.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog, Version
from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api
from ansible_collections.kiln.immutable.plugins.module_utils.observe.drift import GroupTarget, detect
from ansible_collections.kiln.immutable.plugins.module_utils.providers.docker.provider import (
    LABEL_GROUP,
    LABEL_IMAGE,
    LABEL_SLOT,
    LABEL_VERSION,
    DockerProvider,
    volume_name,
)

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BASE = os.environ.get("KILN_BASE_IMAGE", "kiln/base:bookworm")
PREFIX = f"kilnobs-{uuid.uuid4().hex[:6]}"
GROUP = f"{PREFIX}-web"


@pytest.fixture(scope="module")
def images():
    """Two small app images (a Python web server on 8080) built from the base image, no registry."""
    if docker_api.image_id(BASE) is None:
        pytest.skip(f"base image {BASE} missing: run scripts/setup")
    engine = docker_api.client()
    built = {}
    for n in ("1", "2"):
        dockerfile = (
            f"FROM {BASE}\nLABEL kiln.test={PREFIX}-{n}\nWORKDIR /srv\n"
            'CMD ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0"]\n'
        )
        image, _ = engine.images.build(
            fileobj=io.BytesIO(dockerfile.encode()), tag=f"{PREFIX}/app:{n}", rm=True
        )
        built[f"web/{n}"] = image.id
    yield built
    for n in ("1", "2"):
        engine.images.remove(f"{PREFIX}/app:{n}", force=True)


@pytest.fixture(scope="module")
def group(images):
    """Two instances of web/1 in the group, launched by the real Docker provider (read-only root)."""
    provider = DockerProvider()
    try:
        for slot in (0, 1):
            provider.launch(GROUP, slot, _version("1", images["web/1"]))
        yield provider
    finally:
        provider.destroy(GROUP)


def _version(name: str, image_id: str) -> Version:
    return Version(
        image="web", name=name, fingerprint=f"fp-{name}", artifacts={"docker": {"image_id": image_id}}
    )


@pytest.fixture
def catalog(tmp_path, images):
    """A fresh catalog per test: web/1 and web/2 with the real image ids; prod -> web/1."""
    cat = Catalog(str(tmp_path / "catalog.db"))
    for ref, image_id in images.items():
        cat.register(_version(ref.split("/")[1], image_id))
    cat.promote("prod", version="web/1")
    yield cat
    cat.close()


@pytest.fixture
def by_hand(images):
    """Start a container by hand with kiln's labels, in slot 2 of the group, with its data volume."""
    engine = docker_api.client()
    started = []

    def start(image_id: str, version: str, read_only: bool):
        volume = volume_name(GROUP, 2)
        docker_api.ensure_volume(volume, {LABEL_GROUP: GROUP, LABEL_SLOT: "2"})
        container = engine.containers.run(
            image_id,
            name=f"{GROUP}-hand-{uuid.uuid4().hex[:4]}",
            detach=True,
            labels={LABEL_GROUP: GROUP, LABEL_SLOT: "2", LABEL_VERSION: version, LABEL_IMAGE: "web"},
            read_only=read_only,
            tmpfs={"/tmp": "rw,size=4m"},
            volumes={volume: {"bind": "/srv/data", "mode": "rw"}},
        )
        started.append(container.name)
        return container

    yield start
    for name in started:
        docker_api.remove_container(name, stop_timeout=0)


PROD = GroupTarget(GROUP, "web", "prod")


def test_a_clean_group_reports_no_drift(group, catalog):
    report = detect([PROD], catalog)
    assert report.findings == [], [f.detail for f in report.findings]
    [checked] = report.groups
    assert [(i.slot, i.version, i.health) for i in checked.instances] == [(0, "web/1", "running")] * 1 + [
        (1, "web/1", "running")
    ]


def test_a_container_changed_by_hand_is_reported_with_the_path(group, catalog, by_hand, images):
    container = by_hand(images["web/1"], "web/1", read_only=False)
    # inside the data volume and the tmpfs: not drift; /etc/x: drift
    container.exec_run(["sh", "-c", "touch /etc/x /srv/data/kept /tmp/scratch"], user="root")
    report = detect([PROD], catalog)
    [finding] = report.findings
    assert (finding.kind, finding.instance, finding.slot) == ("filesystem", container.name, 2)
    assert [(p.kind, p.path) for p in finding.paths] == [("added", "/etc/x")]


def test_a_container_started_by_hand_on_another_image_is_reported(group, catalog, by_hand, images):
    container = by_hand(images["web/2"], "web/1", read_only=True)
    [finding] = detect([PROD], catalog).findings
    assert (finding.kind, finding.instance) == ("image", container.name)
    assert (finding.expected, finding.actual) == (images["web/1"], images["web/2"])


def test_promoting_and_revoking_show_version_and_revoked_drift(group, catalog):
    catalog.promote("prod", version="web/2")
    catalog.revoke("web/1", reason="CVE in openssl")
    report = detect([PROD], catalog)
    kinds = sorted((f.slot, f.kind) for f in report.findings)
    assert kinds == [(0, "revoked"), (0, "version"), (1, "revoked"), (1, "version")]
    assert all("CVE in openssl" in f.detail for f in report.findings if f.kind == "revoked")


# --------------------------------------------------------------------------- through Ansible and invoke


@pytest.fixture
def setup(tmp_path, catalog):
    """An inventory with the test group as the only host of kiln_groups, and the environment to use it."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "children": {
                        "kiln_groups": {
                            "hosts": {
                                GROUP: {
                                    "kiln_group_image": "web",
                                    "kiln_group_channel": "prod",
                                    "kiln_group_provider": "docker",
                                    "kiln_group_provider_options": {"port": 8080},
                                    "kiln_group_health": {"type": "tcp", "timeout": 1},
                                    "kiln_group_load_balancer": "none",  # the test's containers only
                                }
                            },
                            "vars": {
                                "ansible_connection": "local",
                                "ansible_python_interpreter": sys.executable,
                            },
                        }
                    }
                }
            }
        )
    )
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "INVOKE_KILN_INVENTORY": str(inventory),
        "INVOKE_KILN_CATALOG": catalog.path,
        "INVOKE_KILN_STATE_DIR": str(tmp_path / "state"),
        "KILN_CATALOG": catalog.path,
    }
    return {"inventory": inventory, "env": env, "tmp": tmp_path}


def invoke(setup, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "invoke"), *args], cwd=ROOT, env=setup["env"], capture_output=True, text=True, timeout=300
    )


def test_invoke_drift_exits_non_zero_with_the_path_and_zero_when_clean(group, setup, by_hand, images):
    clean = invoke(setup, "drift")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "no drift in 2 instance(s)" in clean.stdout
    container = by_hand(images["web/1"], "web/1", read_only=False)
    container.exec_run(["touch", "/etc/x"])
    found = invoke(setup, "drift")
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"{container.name} [slot 2] filesystem" in found.stdout
    assert "A /etc/x" in found.stdout
    assert "drift found: 1 finding(s)" in found.stderr
    shown = invoke(setup, "status")
    assert shown.returncode == 0, shown.stderr
    assert max(len(line) for line in shown.stdout.splitlines()) <= 100
    row = next(line for line in shown.stdout.splitlines() if container.name in line)
    # started by hand without a published port: nothing to probe, so the engine's state is shown
    assert row.split()[1:] == ["2", "web/1", "running"] + row.split()[4:5] + ["fs:1"]
    doc = json.loads(invoke(setup, "status", "--json").stdout)
    assert [g["group"] for g in doc["groups"]] == [GROUP]
    healths = {i["slot"]: i["health"] for i in doc["groups"][0]["instances"]}
    assert healths == {0: "healthy", 1: "healthy", 2: "running"}  # the tcp probe of 8080 answers


def test_drift_info_in_a_play_reports_without_changing(group, setup, by_hand, images):
    container = by_hand(images["web/2"], "web/1", read_only=True)
    play = [
        {
            "hosts": "kiln_groups",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "drift",
                    "kiln.immutable.drift_info": {
                        "groups": [
                            {
                                "group": "{{ inventory_hostname }}",
                                "image": "{{ kiln_group_image }}",
                                "channel": "{{ kiln_group_channel }}",
                                "provider_options": "{{ kiln_group_provider_options }}",
                            }
                        ]
                    },
                    "register": "kiln_drift",
                },
                {"ansible.builtin.copy": {"content": "{{ kiln_drift | to_json }}", "dest": "{{ out }}"}},
            ],
        }
    ]
    book = setup["tmp"] / "drift.yml"
    book.write_text(json.dumps(play))
    out = setup["tmp"] / "drift.json"
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(setup["inventory"]), str(book), "-e", f"out={out}"],
        cwd=ROOT,
        env=setup["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["changed"] is False and result["drifted"] is True
    assert [(f["kind"], f["instance"]) for f in result["findings"]] == [("image", container.name)]
