"""The catalog under concurrent writers, SIGKILL in the middle of a write, and damaged files."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import (
    Catalog,
    CatalogBusy,
    CatalogError,
    Version,
)
from ansible_collections.kiln.immutable.plugins.module_utils.common.paths import is_database_url
from catalog_support import raw_sql

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = 20


def _seed(path: str, versions: int = VERSIONS) -> None:
    with Catalog(path) as catalog:
        for _ in range(versions):
            catalog.register(Version(image="web", name=catalog.reserve_version("web"), fingerprint="f"))


def _promote_when_told(path: str, ref: str, start, results) -> None:
    with Catalog(path) as catalog:
        start.wait(30)
        try:
            move = catalog.promote("prod", ref, reason=f"process {os.getpid()}")
            results.put(("ok", ref, move.before))
        except CatalogBusy as exc:
            results.put(("busy", ref, str(exc)))
        except Exception as exc:  # anything else is a failure the test reports
            results.put(("error", ref, repr(exc)))


def test_twenty_processes_promote_one_channel_at_once(catalog_location):
    path = catalog_location
    _seed(path)
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_promote_when_told, args=(path, f"web/{i}", start, results))
        for i in range(1, VERSIONS + 1)
    ]
    for proc in procs:
        proc.start()
    time.sleep(0.5)  # let every process open the catalog, so they really collide
    start.set()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
    assert [o for o in outcomes if o[0] == "error"] == []
    done = [o for o in outcomes if o[0] == "ok"]
    assert len(done) == VERSIONS, f"busy: {[o for o in outcomes if o[0] == 'busy']}"
    with Catalog(path) as catalog:
        history = list(reversed(catalog.channel_history("web", "prod", limit=100)))
        assert len(history) == VERSIONS
        # Serialised for real: every move starts from where the one before it ended.
        assert [h["previous"] for h in history] == [None] + [h["version"] for h in history[:-1]]
        assert catalog.channels("web") == {"prod": history[-1]["version"]}
        assert sorted(h["version"] for h in history) == sorted(f"web/{i}" for i in range(1, VERSIONS + 1))
        assert catalog.verify()["ok"]


def test_a_writer_that_holds_the_lock_too_long_gives_busy_retry(catalog_location):
    path = catalog_location
    _seed(path, 1)
    with Catalog(path) as holder, holder.store.write():  # another writer, holding the write lock
        with Catalog(path, busy_timeout_s=0.2) as catalog:
            with pytest.raises(CatalogBusy, match=r"catalog .* is busy .*; retry"):
                catalog.promote("prod", "web/1")
            assert catalog.get("web/1").ref == "web/1"  # readers are not blocked by the writer


_HALF_WRITE = """
import sys, time
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
catalog = Catalog()
with catalog.store.write() as tx:
    tx.set_channel("web", "prod", "web/3", 0)
    tx.add_history("web", "prod", "web/3", "web/2", "promote", "x", "", 0, None)
    tx.delete_version("web", 1)
    print("written", flush=True)
    time.sleep(60)
"""

_BUSY_LOOP = """
import sys
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog, Version
catalog = Catalog()
packages = {f"p{j}": "1" for j in range(50)}
for i in range(100000):
    name = catalog.reserve_version("web")
    catalog.register(Version(image="web", name=name, fingerprint=f"f{i}", packages=packages))
    catalog.promote("prod", f"web/{name}", reason="loop")
    catalog.record_test(f"web/{name}", passed=True)
    if i == 0:
        print("started", flush=True)
"""


def _child(code: str, location: str) -> subprocess.Popen:
    # The location goes in the environment: a PostgreSQL URL may carry a password.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "collections"), "KILN_CATALOG": location}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)


def test_sigkill_in_the_middle_of_a_transaction_leaves_the_catalog_as_before(catalog_location):
    path = catalog_location
    _seed(path, 3)
    with Catalog(path) as catalog:
        catalog.promote("prod", "web/1")
        catalog.promote("prod", "web/2")
        before = catalog.export()
    child = _child(_HALF_WRITE, path)
    try:
        assert child.stdout.readline().strip() == "written"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    with Catalog(path) as catalog:
        assert catalog.export() == before
        assert catalog.verify()["ok"]
        assert catalog.promote("prod", "web/3").before == "web/2"  # and it takes writes again


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3, 0.5])
def test_sigkill_during_a_stream_of_writes_leaves_a_consistent_catalog(catalog_location, delay):
    path = catalog_location
    child = _child(_BUSY_LOOP, path)
    try:
        assert child.stdout.readline().strip() == "started"
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    with Catalog(path) as catalog:
        report = catalog.verify()
        assert report["ok"], report["problems"]
        versions = catalog.list_versions("web", limit=100000)
        assert versions, "the writer was killed before its first write"
        on_prod = catalog.channel_version("web", "prod").ref
        # The last operation may be cut off, but never half of one: prod is at most one step behind.
        assert on_prod in {versions[0].ref, f"web/{int(versions[0].name) - 1}"}
        assert all(len(v.packages) == 50 for v in versions)
        moves = len(catalog.channel_history("web", "prod", limit=100000))
        assert moves in {len(versions), len(versions) - 1}


def test_a_file_that_is_not_a_catalog_gives_a_clear_error(tmp_path):
    path = tmp_path / "catalog.db"
    path.write_bytes(b"this is not a database, just some text that someone saved here\n" * 100)
    with pytest.raises(CatalogError, match=f"catalog {path} is damaged or not a kiln catalog"):
        Catalog(str(path))


def test_a_truncated_catalog_gives_a_clear_error(tmp_path):
    path = tmp_path / "catalog.db"
    _seed(str(path), 300)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CatalogError, match="is damaged or not a kiln catalog"):
        with Catalog(str(path)) as catalog:
            catalog.list_versions("web", limit=1000)
            catalog.verify()


def test_the_cli_reports_a_damaged_catalog_without_a_traceback(tmp_path):
    path = tmp_path / "catalog.db"
    path.write_bytes(b"\x00garbage" * 1000)
    env = {**os.environ, "KILN_CATALOG": str(path), "KILN_STATE_DIR": str(tmp_path)}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "invoke"), "catalog-verify"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert f"kiln: catalog {path} is damaged or not a kiln catalog" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_newer_schema_is_refused_by_name(catalog_location):
    path = catalog_location
    _seed(path, 1)
    reads = raw_sql(path, "SELECT value FROM meta WHERE key='schema'")[0][0][0]  # what this kiln writes
    raw_sql(path, "UPDATE meta SET value='99' WHERE key='schema'")
    with pytest.raises(CatalogError, match=f"has schema version 99; this kiln reads version {reads}"):
        Catalog(path)
    assert raw_sql(path, "SELECT count(*) FROM versions")[0][0][0] == 1  # and nothing was changed


def test_an_older_schema_is_migrated_when_opened(catalog_location):
    path = catalog_location
    _seed(path, 2)
    latest = raw_sql(path, "SELECT value FROM meta WHERE key='schema'")[0][0][0]
    # A catalog from the kiln before the parent index: schema version 1, no index.
    raw_sql(path, [("DROP INDEX versions_parent", ()), ("UPDATE meta SET value='1' WHERE key='schema'", ())])
    with Catalog(path) as catalog:
        assert [v.ref for v in catalog.list_versions("web")] == ["web/2", "web/1"]
        assert catalog.verify()["ok"]
    assert raw_sql(path, "SELECT value FROM meta WHERE key='schema'")[0][0][0] == latest
    if is_database_url(path):
        index = "SELECT indexname FROM pg_indexes WHERE schemaname=current_schema() AND indexname=?"
    else:
        index = "SELECT name FROM sqlite_master WHERE type='index' AND name=?"
    assert raw_sql(path, index, ("versions_parent",))[0] == [("versions_parent",)]
