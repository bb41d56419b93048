"""What a killed build leaves: records of running builds, the guard that stops Packer, and the clean-up."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.build import leftovers
from ansible_collections.kiln.immutable.plugins.module_utils.common import processes


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path))
    return tmp_path


def _gone_process() -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = processes.start_time(proc.pid) or "1"
    proc.wait()
    return proc.pid, started


def test_a_record_lives_as_long_as_its_build(state):
    with leftovers.BuildRecord("web", "7", "/x.log") as record:
        saved = json.loads(Path(record.path).read_text())
        assert saved["kiln_pid"] and saved["kiln_start"] and saved["version"] == "7"
        record.container("c1")
        record.container("c1")
        assert json.loads(Path(record.path).read_text())["containers"] == ["c1"]
        assert leftovers.clean() == []  # this process still runs: its build is not a leftover
    assert list((state / "builds").iterdir()) == []


def test_the_next_build_stops_what_a_dead_kiln_left_and_says_so(state, tmp_path):
    packer = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        kiln, started = _gone_process()
        (state / "builds").mkdir()
        doc = {
            "image": "web",
            "version": "7",
            "log_path": "/logs/web-7.log",
            "kiln_pid": kiln,
            "kiln_start": started,
            "packer_pid": packer.pid,
            "packer_start": processes.start_time(packer.pid),
            "containers": [],
        }
        (state / "builds" / "b1.json").write_text(json.dumps(doc))
        [said] = leftovers.clean()
        assert packer.wait(5) == -9
        assert said == (
            f"removed what the interrupted build of web/7 (kiln process {kiln}, log /logs/web-7.log) left: "
            f"packer process {packer.pid}"
        )
        assert list((state / "builds").iterdir()) == []
    finally:
        if packer.poll() is None:
            packer.kill()


def test_the_guard_interrupts_packer_when_kiln_is_gone(tmp_path):
    """Packer's stand-in handles SIGINT and writes to its output while it cleans up, as Packer does.

    (Python, not a shell trap: a shell drops a SIGINT that comes as its foreground command exits.)"""
    log = tmp_path / "build.log"
    script = (
        "import signal, sys, time\n"
        "def clean(*_):\n"
        "    print('cleaning up', flush=True); time.sleep(0.3); print('cleaned', flush=True); sys.exit(1)\n"
        "signal.signal(signal.SIGINT, clean)\n"
        "signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # like Packer: killed by a write to a broken pipe\n"
        "while True: time.sleep(0.1)\n"
    )
    packer = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    kiln = subprocess.Popen(["sleep", "60"])
    record = leftovers.BuildRecord("web", "7", str(log))
    record.doc.update(kiln_pid=kiln.pid, kiln_start=processes.start_time(kiln.pid))
    record.path = str(tmp_path / "record.json")
    guard = record.started(packer, grace_s=10, log_path=str(log))
    packer.stdout.close()  # as when kiln is dead: only the guard holds Packer's output pipes
    packer.stderr.close()
    try:
        time.sleep(1)
        assert packer.poll() is None  # kiln runs: the guard leaves Packer alone
        kiln.kill()
        kiln.wait()
        assert packer.wait(10) == 1  # interrupted, cleaned up, not killed by a broken pipe
        guard.wait(10)
        text = log.read_text()
        assert f"process {kiln.pid} that ran this build is gone" in text
        assert "cleaning up" in text and "cleaned" in text
    finally:
        for proc in (packer, kiln, guard):
            if proc.poll() is None:
                proc.kill()
