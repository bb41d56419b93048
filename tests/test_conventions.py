"""The collection follows Ansible's own conventions: ansible-test sanity, ansible-lint (production), ruff."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLLECTION = ROOT / "collections" / "ansible_collections" / "kiln" / "immutable"
VENV_BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_ansible_test_sanity():
    cmd = [str(VENV_BIN / "ansible-test"), "sanity", "--python", "3.11", "--requirements", "--color", "no"]
    result = _run(cmd, COLLECTION)
    # ansible-test fetches pip's get-pip.py from a host outside PyPI; where that fails, it names the
    # path to save it to: give it the offline stand-in and run again.
    wanted = re.search(r"can be manually downloaded and saved to: (\S+)", result.stdout + result.stderr)
    if wanted:
        Path(wanted.group(1)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "scripts" / "get-pip-offline.py", wanted.group(1))
        result = _run(cmd, COLLECTION)
    output = (result.stdout + result.stderr).splitlines()
    problems = [line for line in output if line.startswith(("ERROR", "FATAL"))]
    assert result.returncode == 0, "ansible-test sanity failed:\n" + "\n".join(problems or output[-60:])


def test_ansible_lint_production_profile():
    result = _run([str(VENV_BIN / "ansible-lint"), "--nocolor"], ROOT)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_ruff():
    result = _run([str(VENV_BIN / "ruff"), "check", "--no-cache", "."], ROOT)
    assert result.returncode == 0, result.stdout[-6000:]
