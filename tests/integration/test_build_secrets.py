"""A sensitive Packer variable given on invoke's command line stays secret: real invoke, Packer and Docker."""

from __future__ import annotations

import glob
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REPOSITORY = f"kilnsec{uuid.uuid4().hex[:8]}/tiny"


@pytest.fixture
def project(tmp_path):
    """A copy of the project whose packer/ holds the tiny fixture (it declares ``token`` sensitive)."""
    root = tmp_path / "project"
    (root / "packer").mkdir(parents=True)
    shutil.copy(ROOT / "tasks.py", root / "tasks.py")
    for name in ("collections", "ansible.cfg", "inventories", ".venv"):
        (root / name).symlink_to(ROOT / name)
    (root / "packer" / "tiny").symlink_to(ROOT / "tests" / "fixtures" / "templates" / "tiny")
    yield root
    for image in docker_api.client().images.list(name=REPOSITORY):
        for tag in image.tags:
            docker_api.client().images.remove(tag)


def command_lines() -> dict[int, bytes]:
    out = {}
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            out[int(path.split("/")[2])] = Path(path).read_bytes()
        except OSError:  # the process ended meanwhile
            pass
    return out


def test_sensitive_variable_never_reaches_a_command_line_file_log_or_result(project, tmp_path):
    secret = f"tok-{uuid.uuid4().hex}"
    state = tmp_path / "state"
    private_tmp = tmp_path / "tmp"  # other workers' builds write their own var files to the shared /tmp
    private_tmp.mkdir()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "INVOKE_KILN_STATE_DIR": str(state),
        "KILN_CATALOG": str(state / "catalog.db"),
        "TMPDIR": str(private_tmp),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",  # the module's whole result, invocation included
    }
    cmd = [str(BIN / "invoke"), "build", "--image", "tiny"]
    cmd += ["--var", f"repository={REPOSITORY}", "--var", "sleep=6", "--var", f"token={secret}"]
    proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen_packer, seen_vars, leaked = [], [], []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for pid, line in command_lines().items():
                if b"packer" in line and b"build" in line and b"-machine-readable" in line:
                    seen_packer.append(pid)
                if secret.encode() in line and pid != proc.pid:  # the command the user typed holds it
                    leaked.append(line.replace(b"\0", b" ").decode(errors="replace"))
            seen_vars.extend(private_tmp.glob("kiln-vars-*"))
            done.wait(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        done.set()
        watcher.join()
    assert proc.returncode == 0, stdout.decode()[-3000:] + stderr.decode()[-2000:]
    assert seen_packer, "Packer was seen running"
    assert leaked == []
    assert secret.encode() not in stdout + stderr  # the echoed command, the task output, the module result
    text = stdout.decode()
    doc, _ = json.JSONDecoder().raw_decode(text[text.index("\n{") + 1 :])  # between the packer | lines
    result = next(
        t["hosts"]["localhost"]
        for play in doc["plays"]
        for t in play["tasks"]
        if "fingerprint" in t["hosts"]["localhost"]
    )
    assert result["changed"] is True and result["version"] == "tiny/1"

    holding = [str(p) for p in state.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert holding == []
    with Catalog(str(state / "catalog.db")) as catalog:
        assert secret not in json.dumps(catalog.export(), default=str)
    assert seen_vars, "the var file was written under TMPDIR"
    assert list(private_tmp.glob("kiln-vars-*")) == []  # the var files are gone
    assert [p for p in private_tmp.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()] == []
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "catalog.db").stat().st_mode) == 0o600
