"""Shared fixtures; each section belongs to one area of the test suite."""

# --- Docker roll-outs (tests/rollout_fixtures.py): one set of kiln-built images per session, shared by
# tests/integration and tests/reliability.
from rollout_fixtures import rollout_world  # noqa: F401
