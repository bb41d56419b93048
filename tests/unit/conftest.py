"""Unit tests mirror module_utils, one folder per subpackage. Fakes that several folders use
(rollout_fakes.py) sit here, and this folder goes on sys.path for them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _private_lock_folder(tmp_path, monkeypatch):
    """Roll-out locks are machine-wide; each unit test gets a folder of its own, so that tests of other
    checkouts running at the same time on this machine never meet them."""
    monkeypatch.setenv("KILN_LOCK_DIR", str(tmp_path / "locks"))
