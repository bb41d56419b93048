"""The world of the pipeline's tests and benchmark: its own state folder (catalog, logs), its own
inventory with two small groups whose load balancers Docker puts on free ports, and its own Docker
repository for the web image, so it never meets another test's containers, tags or ports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import docker.errors
import yaml
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.common.docker_api import client

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


class World:
    def __init__(self, base: Path):
        self.id = uuid.uuid4().hex[:6]
        self.base = base
        self.state = base / "state"
        self.repository = f"kiln-pipeline-{self.id}/web"
        self.groups = {"staging": f"kp{self.id}-staging", "prod": f"kp{self.id}-prod"}
        self.inventory = base / "inventory"
        self._write_inventory()
        self.config = base / "invoke.yaml"
        self.config.write_text(
            yaml.safe_dump({"kiln": {"state_dir": str(self.state), "inventory": str(self.inventory)}})
        )

    def _write_inventory(self) -> None:
        """inventories/local with this world's groups: one instance each, load balancers on free ports."""
        shutil.copytree(ROOT / "inventories" / "local", self.inventory)
        hosts = yaml.safe_load((self.inventory / "hosts.yml").read_text())
        kiln_groups = hosts["all"]["children"]["kiln_groups"]
        kiln_groups["hosts"] = {name: None for name in self.groups.values()}
        (self.inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
        for path in (self.inventory / "host_vars").iterdir():
            path.unlink()
        for channel, name in self.groups.items():
            host_vars = {
                "kiln_group_channel": channel,
                "kiln_group_size": 1,
                "kiln_group_load_balancer_options": {"port": 0},
            }
            (self.inventory / "host_vars" / f"{name}.yml").write_text(yaml.safe_dump(host_vars))

    def pipeline(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [
                str(VENV_BIN / "invoke"),
                "-f",
                str(self.config),
                "pipeline",
                "--var",
                f"repository={self.repository}",
                *args,
            ],
            cwd=ROOT,
            env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=1500,
        )
        # the summary is the last lines of the output: one per stage, then the verdict
        result.summary = result.stdout[result.stdout.rfind("\nweb pipeline") :]
        return result

    def catalog(self) -> Catalog:
        return Catalog(str(self.state / "catalog.db"))

    def snapshot(self) -> dict:
        """What a re-run must not change: versions, test results, channels and every channel move."""
        with self.catalog() as catalog:
            versions = catalog.list_versions("web")
            return {
                "versions": [
                    (v.ref, v.fingerprint, json.dumps(v.artifacts, sort_keys=True)) for v in versions
                ],
                "tests": {v.ref: len(v.tests) for v in versions},
                "channels": catalog.channels("web"),
                "moves": len(catalog.channel_history("web", limit=1000)),
            }

    def instances(self, group: str) -> list:
        return client().containers.list(filters={"label": f"kiln.group={group}"})

    def cleanup(self) -> None:
        subprocess.run(
            [str(VENV_BIN / "invoke"), "-f", str(self.config), "down"],
            cwd=ROOT,
            capture_output=True,
            timeout=300,
        )
        engine = client()
        for group in self.groups.values():  # whatever down could not remove
            for container in engine.containers.list(all=True, filters={"label": f"kiln.group={group}"}):
                container.remove(force=True)
        # every image this world's catalog recorded (web and the load balancer's lb), then the tags left
        with self.catalog() as catalog:
            built = [
                v.artifacts.get("docker", {}).get("image_id")
                for image in catalog.images()
                for v in catalog.list_versions(image, limit=1000)
            ]
        for image_id in [i for i in built if i] + [i.id for i in engine.images.list(name=self.repository)]:
            try:
                engine.images.remove(image_id, force=True)
            except docker.errors.ImageNotFound:
                pass
