"""Shared fixtures; each section belongs to one area of the test suite."""

# --- Docker roll-outs (tests/rollout_fixtures.py): one set of kiln-built images per session, shared by
# tests/integration and tests/reliability.
import itertools

import pytest
from rollout_fixtures import rollout_world  # noqa: F401


# --- The catalog's stores (tests/postgres_support.py): one throwaway PostgreSQL cluster per session,
# started only when a test asks for it; catalog tests run against every store via `catalog_location`.
@pytest.fixture(scope="session")
def postgres():
    from postgres_support import Cluster

    cluster = Cluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def new_catalog_location(request, tmp_path):
    """Makes empty catalogs of one store: SQLite files, or fresh schemas on the PostgreSQL cluster."""
    if request.param == "sqlite":
        names = (str(tmp_path / f"catalog{n or ''}.db") for n in itertools.count())
        return lambda: next(names)
    return request.getfixturevalue("postgres").fresh_dsn


@pytest.fixture
def catalog_location(new_catalog_location):
    """Where a test's empty catalog lives, once per store."""
    return new_catalog_location()


# --- In CI, scripts/setup has installed every prerequisite (Docker, the base image, Chromium, dpkg):
# a test that skips there points at a missing install step, so the run fails instead of passing quietly.
def pytest_sessionfinish(session, exitstatus):
    import os

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") == "true" and skipped and exitstatus == 0:
        reporter.write_line(f"{len(skipped)} test(s) skipped in CI: a prerequisite is missing", red=True)
        session.exitstatus = 1
