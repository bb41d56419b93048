"""Shared fixtures; each section belongs to one area of the test suite."""

# --- Docker roll-outs (tests/rollout_fixtures.py): one set of kiln-built images per session, shared by
# tests/integration and tests/reliability.
from rollout_fixtures import rollout_world  # noqa: F401


# --- In CI, scripts/setup has installed every prerequisite (Docker, the base image, Chromium, dpkg):
# a test that skips there points at a missing install step, so the run fails instead of passing quietly.
def pytest_sessionfinish(session, exitstatus):
    import os

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") == "true" and skipped and exitstatus == 0:
        reporter.write_line(f"{len(skipped)} test(s) skipped in CI: a prerequisite is missing", red=True)
        session.exitstatus = 1


# --- The local AWS API (tests/aws_support.py): one moto server per session, stopped afterwards.
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def aws_env():
    from aws_support import moto_server

    with moto_server() as env:
        yield env
