"""Fixtures of the Docker roll-out tests (integration and reliability), loaded by tests/conftest.py.

The first test process of a run that needs them builds, with kiln itself (``ansible-playbook
kiln.immutable.build``), the images every roll-out test needs into a catalog of the run: the load
balancer ``lb``, two good versions of ``web``, one whose /healthz answers 503 (``fault=unhealthy``),
one whose page / answers 500 for a fifth of the requests (``fault=errors``), and one whose page / is
slow (``fault=slow``: about a second, or as long as a request asks with ``?rate=``), all healthy but the
first. Every process (each xdist worker) copies that catalog and shares the images. Each test gets
groups with unique names; whatever a test leaves (containers, volumes, networks, the load balancer) is
removed at the end of its process, and the images at the end of the run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog, Version
from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment
from ansible_collections.kiln.immutable.plugins.module_utils.providers.docker import provider
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.engine import (
    Rollout,
    RolloutOptions,
)
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.health import HealthCheck, Prober
from rollout_support import build_version, run_env, task_results, unique

# Fast probes: the sample image answers within a second of its start.
TEST_HEALTH = {
    "interval": 0.2,
    "timeout": 2,
    "healthy_threshold": 2,
    "unhealthy_threshold": 3,
    "deadline": 30,
}


@dataclass
class RolloutWorld:
    state: Path
    env: dict[str, str]
    repo: str  # docker repository prefix of this session's images
    versions: dict[str, Version] = field(default_factory=dict)  # good, next, bad, errors, slow, lb
    groups: list[str] = field(default_factory=list)

    @property
    def catalog_path(self) -> str:
        return self.env["KILN_CATALOG"]

    def version(self, key: str) -> Version:
        return self.versions[key]

    def group(self, name: str = "web") -> str:
        """A group name no other test or engineer uses; removed with everything in it at the end."""
        group = f"{unique('kt')}-{name}"
        self.groups.append(group)
        return group

    def journal(self, group: str) -> dict:
        """The group's roll-out journal as it is on disk now; empty when there is none (yet)."""
        path = self.state / "rollouts" / group / "journal.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def resolve(self, ref: str) -> Version:
        with Catalog(self.catalog_path) as catalog:
            return catalog.get(ref)


@contextlib.contextmanager
def _environ(**values: str):
    """``os.environ`` with ``values`` set for the block, as it was afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# What a run bakes: key -> (image, variables besides the repository, force). "good" comes first,
# alone with "lb": "next" is the same template and variables, forced to a version of its own.
FIRST = {"lb": ("lb", {}, False), "good": ("web", {}, False)}
THEN = {
    "next": ("web", {}, True),
    "bad": ("web", {"fault": "unhealthy"}, False),
    "errors": ("web", {"fault": "errors"}, False),
    "slow": ("web", {"fault": "slow"}, False),  # / takes about a second; /?rate=600 about five
}


def _bake(folder: Path) -> dict[str, Any]:
    """Bake the session's images into ``folder``'s catalog, each wave's builds at once."""
    env = run_env(folder)
    repo = unique("kt")
    refs: dict[str, str] = {}
    for wave in (FIRST, THEN):
        with ThreadPoolExecutor(max_workers=len(wave)) as pool:
            futures = {
                key: pool.submit(build_version, env, image, {"repository": f"{repo}/{image}", **extra}, force)
                for key, (image, extra, force) in wave.items()
            }
            refs.update({key: future.result().ref for key, future in futures.items()})
    return {"repo": repo, "catalog": env["KILN_CATALOG"], "refs": refs}


def session_images(run_root: Path) -> dict[str, Any]:
    """The run's images, baked by whichever test process asks first; the others wait for them.

    ``run_root`` is one folder for every process of the run (the xdist workers' base temp's parent).
    A failed bake is written down too, so that the others fail at once with its message.
    """
    manifest = run_root / "rollout-images" / "manifest.json"
    with open(run_root / "rollout-images.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not manifest.exists():
            manifest.parent.mkdir()
            try:
                doc = _bake(manifest.parent)
            except Exception as exc:
                doc = {"error": str(exc)}
            manifest.write_text(json.dumps(doc))
    doc = json.loads(manifest.read_text())
    if "error" in doc:
        pytest.fail(doc["error"])
    return doc


def pytest_sessionfinish(session: pytest.Session) -> None:
    """At the very end of the run (its workers are done): remove every image ``session_images`` baked,
    also those of a bake that failed halfway."""
    if hasattr(session.config, "workerinput"):
        return
    baked = run_root(session.config) / "rollout-images" / "catalog.db"
    if not baked.exists():
        return
    with Catalog(str(baked)) as catalog:
        versions = [v for image in catalog.images() for v in catalog.list_versions(image, limit=100)]
    for image in filter(None, ((v.artifacts or {}).get("docker", {}).get("image_id") for v in versions)):
        try:
            docker_api.client().images.remove(image, force=True)
        except Exception as exc:
            print(f"cleanup of image {image} failed: {exc}", file=sys.stderr)


def run_root(config: pytest.Config) -> Path:
    """The folder every process of this run shares: xdist workers' base temps are folders in it."""
    base = config._tmp_path_factory.getbasetemp()
    return base.parent if hasattr(config, "workerinput") else base


@pytest.fixture(scope="session")
def _rollout_session(request, tmp_path_factory) -> Any:
    try:
        docker_api.client()
    except Exception as exc:  # no engine on this machine
        pytest.skip(f"Docker is not available: {exc}")
    images = session_images(run_root(request.config))
    state = tmp_path_factory.mktemp("rollout")
    env = run_env(state)
    shutil.copy(images["catalog"], env["KILN_CATALOG"])  # a catalog of this process's own
    world = RolloutWorld(state=state, env=env, repo=images["repo"])
    world.versions = {key: world.resolve(ref) for key, ref in images["refs"].items()}
    try:
        yield world
    finally:
        # In-process calls (docker_environment) find the session's state here, as in the tests.
        with _environ(KILN_STATE_DIR=env["KILN_STATE_DIR"], KILN_CATALOG=env["KILN_CATALOG"]):
            with ThreadPoolExecutor(max_workers=8) as pool:  # the groups left, at once
                pool.map(_down, world.groups)
            provider.settle()  # containers terminated in the background are gone before their images


def _down(group: str) -> None:
    try:
        docker_environment.down(group)
    except Exception as exc:  # keep cleaning the others
        print(f"cleanup of group {group} failed: {exc}", file=sys.stderr)


@pytest.fixture
def rollout_world(_rollout_session: RolloutWorld) -> Any:
    """The session's images and catalog; its state folder and catalog are in the environment for the test."""
    world = _rollout_session
    with _environ(KILN_STATE_DIR=world.env["KILN_STATE_DIR"], KILN_CATALOG=world.catalog_path):
        yield world


def engine_rollout(world: RolloutWorld, group: str, key: str, health: dict | None = None, **options: Any):
    """Roll ``group`` out to the session's version ``key``: the engine, the docker provider, HAProxy."""
    rollout = Rollout(
        group,
        world.version(key),
        docker_environment.provider(),
        docker_environment.load_balancer(group),
        Prober(HealthCheck.from_options({**TEST_HEALTH, **(health or {})})),
        RolloutOptions(**options),
        resolve_version=world.resolve,
    )
    return rollout.run()


def snapshot(group: str) -> dict[str, Any]:
    """What a user sees of a group: its containers (name, slot, version, state) and the balancer's servers."""
    status = docker_environment.status(group)
    return {
        "instances": sorted((i["name"], i["slot"], i["version"], i["alive"]) for i in status["instances"]),
        "servers": status["load_balancer"]["servers"],
        "volumes": status["volumes"],
    }


def assert_converged(group: str, version: str, size: int) -> dict[str, Any]:
    """One live instance per slot, all on ``version``, each a ready server of the balancer, nothing else."""
    snap = snapshot(group)
    slots = sorted(slot for _, slot, _, _ in snap["instances"])
    assert slots == list(range(size)), f"slots of {group}: {snap['instances']}"
    assert {v for _, _, v, _ in snap["instances"]} == {version}, snap["instances"]
    assert all(alive for *_, alive in snap["instances"]), snap["instances"]
    names = {name for name, *_ in snap["instances"]}
    assert snap["servers"] == dict.fromkeys(names, "ready"), snap
    return snap


def group_inventory(tmp_path, group: str, size: int, **overrides) -> str:
    """An inventory like inventories/local with one group of instances; Docker picks the balancer's port."""
    host = {
        "kiln_group_image": "web",
        "kiln_group_channel": "staging",
        "kiln_group_size": size,
        "kiln_group_load_balancer_options": {"port": 0},
        "kiln_group_rollout": {"batch_size": 2, "max_surge": 2, "min_healthy_percentage": 100},
        "kiln_group_health": TEST_HEALTH,
        **overrides,
    }
    doc = {
        "all": {
            "hosts": {
                "localhost": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                }
            },
            "children": {
                "kiln_groups": {
                    "hosts": {group: host},
                    "vars": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                    },
                }
            },
        }
    }
    path = tmp_path / f"{group}.json"
    path.write_text(json.dumps(doc))
    return str(path)


def rollout_result(run) -> dict:
    found = [r["result"] for r in task_results(run) if "Roll out group" in r["task"]]
    assert found, run.stdout[-3000:] + run.stderr[-2000:]
    return found[-1]
