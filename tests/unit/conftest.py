"""Unit tests mirror module_utils, one folder per subpackage. Fakes that several folders use
(rollout_fakes.py) sit here, and this folder goes on sys.path for them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _private_lock_folder(tmp_path, monkeypatch):
    """A lock folder per test: the fakes simulate crashes that leave a group's lock held, as SIGKILL would
    (tests/conftest.py gives each process one for what runs outside a test)."""
    monkeypatch.setenv("KILN_LOCK_DIR", str(tmp_path / "locks"))
