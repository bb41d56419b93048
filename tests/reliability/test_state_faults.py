"""A full disk under the state folder (a small tmpfs): the catalog refuses a write and stays intact, a
roll-out whose journal cannot be written stops at a safe point and resumes once there is room."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import (
    Catalog,
    CatalogError,
    Version,
)
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.interfaces import SERVER_READY
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.options import RolloutError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # the engine's shared fakes
from rollout_fakes import V1, V2, World, fake_rollout  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, and a way to fill it up and to free it again."""
    mount = tmp_path / "state"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    filler = mount / "filler"

    def fill() -> None:
        with contextlib.suppress(OSError), open(filler, "ab") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
                os.fsync(handle.fileno())

    def free() -> None:
        filler.unlink(missing_ok=True)

    try:
        yield mount, fill, free
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_catalog_write_on_a_full_disk_is_refused_and_the_catalog_stays_intact(small_disk):
    mount, fill, free = small_disk
    path = str(mount / "catalog.db")
    with Catalog(path) as catalog:
        for _ in range(2):
            catalog.register(Version(image="web", name=catalog.reserve_version("web"), fingerprint="f"))
        catalog.promote("dev", "web/1")
        before = catalog.export()
        fill()
        with pytest.raises(CatalogError) as refused:
            for n in range(200):  # until SQLite needs a new page
                catalog.promote("dev", f"web/{n % 2 + 1}", reason="x" * 2000)
        assert f"catalog {path}" in refused.value.msg and "full" in refused.value.msg
        free()
    with Catalog(path) as catalog:
        assert catalog.verify()["ok"]
        after = catalog.export()
    # Promotions that went through before the disk filled up are whole; the refused one is not there.
    assert after["versions"] == before["versions"]
    moves = [e for e in after["events"] if e not in before["events"]]
    assert all(json.dumps(e).count("x" * 2000) == 1 for e in moves)


class FillingWorld(World):
    """Fills the disk while the ``at``-th change of the roll-out is under way."""

    def __init__(self, at: int, fill):
        super().__init__()
        self.at, self.fill = at, fill

    def _change(self, name: str, *args) -> None:
        super()._change(name, *args)
        if self.changes == self.at:
            self.fill()


@pytest.mark.parametrize("at", [1, 4, 8, 13])
def test_a_journal_that_cannot_be_written_stops_the_rollout_at_a_safe_point(small_disk, at):
    mount, fill, free = small_disk
    world = FillingWorld(at, fill)
    world.seed(4, V1)
    options = {"batch_size": 2, "max_surge": 1, "min_healthy_percentage": 50}
    with pytest.raises(RolloutError, match="cannot be written .*No space left on device.*run it again"):
        fake_rollout(world, mount, V2, **options).run()
    assert set(world.servers.values()) == {SERVER_READY}  # nothing half-added
    assert sorted(i.slot for i in world.instances.values()) == [0, 1, 2, 3]
    assert world.min_ready >= 2
    free()
    again = fake_rollout(world, mount, V2, **options).run()  # the lock was released
    assert again["status"] == "succeeded"
    world.assert_converged(4, "web/2")
