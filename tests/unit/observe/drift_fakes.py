"""Fakes for the drift, status and drift_info tests: a provider, an inspector, and a seeded catalog."""

from __future__ import annotations

from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog, Version
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.interfaces import Instance

IMAGE_IDS = {"web/1": "sha256:" + "1" * 64, "web/2": "sha256:" + "2" * 64, "web/3": "sha256:" + "3" * 64}


class FakeProvider:
    def __init__(self, instances: list[Instance]):
        self.instances = instances

    def list_instances(self, group: str) -> list[Instance]:
        return [i for i in self.instances if i.group == group]

    def launch(self, group, slot, version):  # pragma: no cover - not used by drift
        raise AssertionError("drift must not launch")

    def terminate(self, instance):  # pragma: no cover
        raise AssertionError("drift must not terminate")


class FakeInspector:
    def __init__(self, changes=None, images=None, health=None):
        self.changes = changes or {}
        self.images = images or {}
        self.healths = health or {}

    def filesystem_changes(self, instance):
        return self.changes.get(instance.name, [])

    def image_id(self, instance):
        return self.images.get(instance.name, IMAGE_IDS.get(instance.version))

    def health(self, instance):
        return self.healths.get(instance.name, "healthy")

    def expected_image(self, version, instance):
        return (version.artifacts.get("docker") or {}).get("image_id")

    def unmanaged(self, instance):
        return None


def inst(slot: int, version: str, group: str = "web-prod") -> Instance:
    return Instance(
        id=f"id{group}{slot}",
        name=f"kiln-{group}-{slot}",
        group=group,
        slot=slot,
        version=version,
        probe_address="127.0.0.1:1",
        backend_address="x:8080",
        started_at=1000.0 + slot,
    )


def seeded_catalog(path: str) -> Catalog:
    """web/1..3 with docker image ids; prod -> web/2, staging -> web/3."""
    cat = Catalog(path)
    for ref, image_id in IMAGE_IDS.items():
        name = ref.split("/")[1]
        cat.register(
            Version(
                image="web", name=name, fingerprint=f"fp{name}", artifacts={"docker": {"image_id": image_id}}
            )
        )
    cat.promote("prod", version="web/2")
    cat.promote("staging", version="web/3")
    return cat
