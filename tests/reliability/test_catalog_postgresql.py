"""The shared PostgreSQL catalog as a team meets it: connection settings, a server that goes away,
and moving a catalog from SQLite to PostgreSQL and back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog import channels
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import (
    Catalog,
    CatalogError,
    Version,
)
from postgres_support import PASSWORD, Cluster

ROOT = Path(__file__).resolve().parents[2]


def _seed(location: str, versions: int = 3) -> None:
    with Catalog(location) as catalog:
        for _ in range(versions):
            catalog.register(Version(image="web", name=catalog.reserve_version("web"), fingerprint="f"))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_server_that_is_down_is_named_with_host_and_port():
    port = _free_port()
    with pytest.raises(CatalogError, match=f"catalog server 127.0.0.1:{port} is not reachable") as info:
        Catalog(f"postgresql://kiln:{PASSWORD}@127.0.0.1:{port}/kiln", busy_timeout_s=1)
    assert PASSWORD not in str(info.value) and PASSWORD not in json.dumps(info.value.details)


def test_the_password_is_never_shown(postgres):
    location = postgres.fresh_dsn()
    assert PASSWORD in location
    with Catalog(location) as catalog:
        assert PASSWORD not in catalog.path and PASSWORD not in json.dumps(catalog.store.describe())
        assert catalog.path.startswith(f"postgresql://kiln@127.0.0.1:{postgres.port}/postgres")
    wrong = location.replace(PASSWORD, "not-the-password")
    with pytest.raises(CatalogError, match=f"127.0.0.1:{postgres.port}") as info:
        Catalog(wrong)
    assert "not-the-password" not in str(info.value)


def test_libpq_environment_and_a_password_file(postgres, tmp_path, monkeypatch):
    """``KILN_CATALOG=postgresql://`` and the rest from PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSFILE."""
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres.port}:*:kiln:{PASSWORD}\n")
    passfile.chmod(0o600)
    schema = postgres.fresh_dsn().rpartition("%3D")[2]
    for key, value in {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(postgres.port),
        "PGUSER": "kiln",
        "PGDATABASE": "postgres",
        "PGPASSFILE": str(passfile),
        "PGOPTIONS": f"-csearch_path={schema}",
        "KILN_CATALOG": "postgresql://",
    }.items():
        monkeypatch.setenv(key, value)
    _seed("postgresql://", 2)
    with Catalog() as catalog:
        assert catalog.path.startswith(f"postgresql://kiln@127.0.0.1:{postgres.port}/postgres")
        assert [v.ref for v in catalog.list_versions("web")] == ["web/2", "web/1"]


def test_the_server_stopped_in_the_middle_of_a_promotion(monkeypatch):
    """A clear error naming the server, nothing half-written, and the next call works."""
    cluster = Cluster().start()
    try:
        location = cluster.fresh_dsn()
        _seed(location)
        with Catalog(location) as catalog:
            catalog.promote("prod", "web/1")
            before = catalog.export()
            record = channels.append_event

            def stop_then_append(tx, *args):  # the channel row is written; the event is next
                cluster.pg_ctl("stop")
                record(tx, *args)

            monkeypatch.setattr(channels, "append_event", stop_then_append)
            with pytest.raises(CatalogError, match=f"catalog server 127.0.0.1:{cluster.port} went away"):
                catalog.promote("prod", "web/2")
            monkeypatch.undo()
            with pytest.raises(
                CatalogError, match=f"catalog server 127.0.0.1:{cluster.port} is not reachable"
            ):
                catalog.channels("web")
            cluster.pg_ctl("start")
            # The same catalog object reconnects; the half-done promotion left nothing behind.
            with Catalog(location) as other:  # and a connection left idle across a restart is replaced
                cluster.pg_ctl("stop")
                cluster.pg_ctl("start")
                assert other.channels("web") == {"prod": "web/1"}
            assert catalog.export() == before
            assert catalog.verify()["ok"]
            assert catalog.promote("prod", "web/2").before == "web/1"
    finally:
        cluster.stop()


def _invoke(location: str, state: Path, *args: str) -> str:
    # The catalogs here are made unsigned: a policy without signing, not the local one (which signs).
    policy = state / "unsigned-policy.yml"
    policy.write_text("channels: {}\n")
    env = {**os.environ, "KILN_CATALOG": location, "KILN_STATE_DIR": str(state), "KILN_POLICY": str(policy)}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "invoke"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    return result.stdout


def test_sqlite_to_postgresql_and_back_with_the_chain_intact(postgres, tmp_path):
    sqlite = str(tmp_path / "catalog.db")
    _seed(sqlite, 4)
    with Catalog(sqlite) as catalog:
        catalog.promote("dev", "web/1")
        catalog.promote("dev", "web/3", reason="newer")
        catalog.record_test("web/3", passed=True, details={"checks": 3})
        catalog.revoke("web/2", "broken", fallback=False)
        catalog.rollback("web", "dev")
    shared, back = postgres.fresh_dsn(), str(tmp_path / "back.db")
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    _invoke(sqlite, tmp_path, "catalog-verify")
    _invoke(sqlite, tmp_path, "catalog-export", "--output", str(first))
    assert "imported 9 events into postgresql://kiln@" in _invoke(
        shared, tmp_path, "catalog-import", "--input", str(first)
    )
    assert "catalog verified: 9 events" in _invoke(shared, tmp_path, "catalog-verify")
    _invoke(shared, tmp_path, "catalog-export", "--output", str(second))
    assert first.read_text() == second.read_text()  # PostgreSQL gives back exactly what SQLite had
    _invoke(back, tmp_path, "catalog-import", "--input", str(second))
    _invoke(back, tmp_path, "catalog-verify")
    with Catalog(back) as catalog, Catalog(sqlite) as original:
        assert catalog.export() == original.export()
        assert catalog.reserve_version("web") == "5"
    with Catalog(shared) as catalog:  # the imported catalog takes writes: ids continue after its rows
        catalog.record_test("web/1", passed=True)
        assert catalog.promote("dev", "web/4").before == "web/1"
        assert catalog.verify()["ok"]


def test_every_runner_gets_the_same_key_for_sensitive_build_inputs(postgres):
    from ansible_collections.kiln.immutable.plugins.module_utils.build.fingerprint import catalog_key

    location = postgres.fresh_dsn()
    with Catalog(location) as one, Catalog(location) as other:
        key = catalog_key(one)
        assert len(key) == 32 and catalog_key(other) == key
