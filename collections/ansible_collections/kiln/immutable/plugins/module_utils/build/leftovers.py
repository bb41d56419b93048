# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a build leaves when kiln is killed (SIGKILL) while Packer runs, and how it goes away.

Packer runs in a session of its own, so it and its build container can outlive kiln. Two things
bound that:

- a guard process, started next to Packer, that stops Packer (SIGINT, then SIGKILL after the grace
  period) as soon as the kiln process that started it is gone. It also holds Packer's output pipes
  open and keeps reading them into the build log, so Packer is not killed by a broken pipe while it
  removes its container;
- a record per running build under ``<state dir>/builds/`` (kiln's pid, Packer's pid, the build
  containers Packer reported). The next build removes what an earlier, killed build left and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from typing import Any

from ..common import docker_api, processes
from ..common.files import write_json_atomic
from ..common.paths import state_dir

# The guard, run as ``python -c GUARD <kiln pid> <kiln start> <packer pid> <grace s> <log> <fd> ...``.
# It is a string, not a module, so it also runs from an AnsiballZ zip.
GUARD = r"""
import contextlib, os, signal, sys, threading, time
kiln, kiln_start, packer = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
grace, log, fds = float(sys.argv[4]), sys.argv[5], [int(fd) for fd in sys.argv[6:]]

def started(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]

packer_start = started(packer)
while started(kiln) == kiln_start and started(packer) == packer_start:
    time.sleep(0.5)
if started(packer) != packer_start:
    sys.exit(0)

def drain(fd):
    with open(fd, "rb") as pipe, open(log, "ab") as out:
        for line in pipe:
            out.write(line)
            out.flush()

for fd in fds:
    threading.Thread(target=drain, args=(fd,), daemon=True).start()
with open(log, "a") as out:
    out.write(f"# kiln: process {kiln} that ran this build is gone; interrupting packer {packer}\n")
with contextlib.suppress(ProcessLookupError):
    os.killpg(packer, signal.SIGINT)
deadline = time.monotonic() + grace
while started(packer) == packer_start and time.monotonic() < deadline:
    time.sleep(0.2)
with contextlib.suppress(ProcessLookupError):
    os.killpg(packer, signal.SIGKILL)
"""


def _folder() -> str:
    return os.path.join(state_dir(), "builds")


class BuildRecord:
    """The record of one running build; removed when the build ends the way kiln sees it end."""

    def __init__(self, image: str, version: str, log_path: str):
        self.path = os.path.join(_folder(), f"{uuid.uuid4().hex}.json")
        pid = os.getpid()
        self.doc: dict[str, Any] = {
            "image": image,
            "version": version,
            "log_path": log_path,
            "kiln_pid": pid,
            "kiln_start": processes.start_time(pid),
            "packer_pid": None,
            "packer_start": None,
            "containers": [],
        }

    def __enter__(self) -> BuildRecord:
        os.makedirs(_folder(), exist_ok=True)
        write_json_atomic(self.path, self.doc)
        return self

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def started(self, proc: subprocess.Popen, grace_s: float, log_path: str) -> subprocess.Popen:
        """Note Packer's process and start its guard; returns the guard."""
        self.doc.update(packer_pid=proc.pid, packer_start=processes.start_time(proc.pid))
        write_json_atomic(self.path, self.doc)
        fds = [stream.fileno() for stream in (proc.stdout, proc.stderr) if stream is not None]
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                GUARD,
                str(self.doc["kiln_pid"]),
                str(self.doc["kiln_start"]),
                str(proc.pid),
                str(grace_s),
                log_path,
                *map(str, fds),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=fds,
            start_new_session=True,
        )

    def container(self, container_id: str) -> None:
        if container_id not in self.doc["containers"]:
            self.doc["containers"].append(container_id)
            write_json_atomic(self.path, self.doc)


def clean() -> list[str]:
    """Remove what earlier builds whose kiln process is gone left behind; one sentence per build."""
    try:
        names = sorted(n for n in os.listdir(_folder()) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    said = []
    for name in names:
        path = os.path.join(_folder(), name)
        try:
            with open(path) as handle:
                doc = json.load(handle)
        except (OSError, ValueError):
            continue  # being written, or not ours to judge
        if processes.alive(doc.get("kiln_pid") or 0, doc.get("kiln_start")):
            continue  # a build that still runs (another kiln process)
        removed = []
        packer = doc.get("packer_pid")
        if packer and processes.alive(packer, doc.get("packer_start")):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(packer, signal.SIGKILL)
            removed.append(f"packer process {packer}")
        for container_id in doc.get("containers") or []:
            if docker_api.remove_container(container_id, stop_timeout=0):
                removed.append(f"build container {container_id[:12]}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        what = ", ".join(removed) or "nothing that was still there"
        said.append(
            f"removed what the interrupted build of {doc.get('image')}/{doc.get('version')} "
            f"(kiln process {doc.get('kiln_pid')}, log {doc.get('log_path')}) left: {what}"
        )
    return said
