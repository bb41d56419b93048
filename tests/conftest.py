"""Shared fixtures; each section belongs to one area of the test suite."""

import itertools
import os
import tempfile

import pytest

# --- Docker roll-outs (tests/rollout_fixtures.py, a plugin of its own): one set of kiln-built images per
# run, shared by tests/integration and tests/reliability and by every worker.
pytest_plugins = ("rollout_fixtures",)

# --- Roll-out locks are machine-wide (rollout/lock.py). Each test process (every xdist worker, another
# checkout's run) takes a lock folder of its own, also for what runs at collection time, so fake groups
# of the same name never meet; runners started by one test share its folder, as on one machine.
os.environ["KILN_LOCK_DIR"] = tempfile.mkdtemp(prefix="kiln-test-locks-")


# --- Running at once (pytest-xdist, `-n 2 --dist loadfile --no-loadscope-reorder` in .ci/run): each file
# runs in one worker, in order, so its module-scoped fixtures (a pipeline world, a built image) are made
# once and its tests see them in the order they are written. Files are handed out in this order, longest
# first: the conventions test (ansible-test sanity, ansible-lint), the Docker roll-outs (the first to ask
# bakes the run's images while the other worker checks conventions), the other slow files; the many short
# unit test files come last and even out the end.
def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        if item.path.name == "test_conventions.py":
            return 0
        if "rollout_world" in item.fixturenames:
            return 1
        return 2 if item.get_closest_marker("slow") else 3

    ranks: dict = {}
    for item in items:
        ranks[item.path] = min(ranks.get(item.path, 3), rank(item))
    items.sort(key=lambda item: ranks[item.path])


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
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") == "true" and skipped and exitstatus == 0:
        reporter.write_line(f"{len(skipped)} test(s) skipped in CI: a prerequisite is missing", red=True)
        session.exitstatus = 1


# --- The local AWS API (tests/aws_support.py): one moto server per session, reset for each test file.
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def _aws_server():
    from aws_support import moto_server

    with moto_server() as env:
        yield env


@pytest.fixture(scope="module")
def _aws_account(_aws_server):
    """A fresh account for each test file: AMI names (kiln-web-1) are unique within one."""
    import urllib.request

    if "AWS_ENDPOINT_URL" in _aws_server:  # moto's own reset; never against a real account
        request = urllib.request.Request(f"{_aws_server['AWS_ENDPOINT_URL']}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()
    return _aws_server


@pytest.fixture
def aws_env(_aws_account, monkeypatch):
    """The SDK's (and Packer's) environment pointed at the session's moto server, for this test only: a
    Docker build later in the same worker must not see AWS_ENDPOINT_URL."""
    for key, value in _aws_account.items():
        monkeypatch.setenv(key, value)
    return _aws_account
