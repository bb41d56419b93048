"""Shared by the Docker roll-out tests and bench/rollout.py: a bounded load generator and group helpers.

The load generator sends GET requests to 127.0.0.1 at a fixed rate from a few threads of a process of
its own, one new connection per request (what a user's client sees through the load balancer), and
records every answer: status, latency, body. It stops by itself after ``max_duration`` seconds.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"


@dataclass
class Sample:
    t: float  # seconds since the load started
    ok: bool
    status: int | None
    latency: float
    body: str


@dataclass
class LoadReport:
    samples: list[Sample] = field(default_factory=list)
    duration: float = 0.0

    @property
    def total(self) -> int:
        return len(self.samples)

    @property
    def failed(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    @property
    def rate(self) -> float:
        return self.total / self.duration if self.duration else 0.0

    def percentile(self, pct: float) -> float:
        values = sorted(s.latency for s in self.samples)
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(round(pct / 100 * (len(values) - 1))))]

    def bodies(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.samples:
            if s.ok:
                out[s.body] = out.get(s.body, 0) + 1
        return out

    def summary(self) -> str:
        failed = self.failed
        head = (
            f"{self.total} requests in {self.duration:.1f}s ({self.rate:.0f}/s), {len(failed)} failed, "
            f"p50 {self.percentile(50) * 1000:.1f} ms, p99 {self.percentile(99) * 1000:.1f} ms"
        )
        if failed:
            head += "; first failures: " + "; ".join(f"+{s.t:.2f}s {s.status} {s.body}" for s in failed[:5])
        return head


class LoadGenerator:
    """GET ``path`` on 127.0.0.1:port ``rate`` times a second until stopped or ``max_duration``.

    The clients run in a process of their own, as a user's would: what the caller's threads do meanwhile
    (a roll-out in the same process, say) neither delays their requests nor adds to their latency.
    """

    def __init__(
        self,
        address: str,
        rate: float = 100.0,
        path: str = "/version",
        workers: int = 8,
        timeout: float = 5.0,
        max_duration: float = 300.0,
    ):
        host, _, port = address.rpartition(":")
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"load goes to 127.0.0.1 only, not {address}")
        self._clients = _Clients(host, int(port), rate, path, workers, timeout, max_duration)
        self.report = LoadReport()
        self._process: subprocess.Popen | None = None

    def start(self) -> LoadGenerator:
        spec = json.dumps(asdict(self._clients))
        self._process = subprocess.Popen(
            [sys.executable, __file__, spec], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        if self._process.stdout.readline() != "started\n":  # else the first requests are on their way
            raise RuntimeError(f"the load generator did not start (exit code {self._process.wait()})")
        return self

    def stop(self) -> LoadReport:
        out, _ = self._process.communicate("stop\n", timeout=self._clients.timeout + 60)
        doc = json.loads(out)
        self.report.samples = [Sample(*fields) for fields in doc["samples"]]
        self.report.duration = doc["duration"]
        return self.report

    def once(self) -> Sample:
        """One request now, from this process."""
        return self._clients._one()

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class _Clients:
    """The load generator's own process: ``workers`` threads sharing one schedule, until a line on stdin."""

    host: str
    port: int
    rate: float
    path: str
    workers: int
    timeout: float
    max_duration: float

    def __post_init__(self) -> None:
        self._t0 = time.monotonic()

    def run(self) -> None:
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._next, self._samples = 0, []
        self._t0 = time.monotonic()
        threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.workers)]
        for thread in threads:
            thread.start()
        print("started", flush=True)
        threading.Thread(target=lambda: (sys.stdin.readline(), self._stop.set()), daemon=True).start()
        for thread in threads:
            thread.join()
        samples = sorted((astuple(s) for s in self._samples), key=lambda s: s[0])
        json.dump({"samples": samples, "duration": time.monotonic() - self._t0}, sys.stdout)

    def _one(self) -> Sample:
        start = time.monotonic()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", self.path)
            response = conn.getresponse()
            body = response.read().decode(errors="replace").strip()
            ok = response.status == 200
            return Sample(start - self._t0, ok, response.status, time.monotonic() - start, body[:80])
        except (OSError, http.client.HTTPException) as exc:
            return Sample(
                start - self._t0, False, None, time.monotonic() - start, f"{type(exc).__name__}: {exc}"
            )
        finally:
            conn.close()

    def _worker(self) -> None:
        interval = 1.0 / self.rate
        while not self._stop.is_set():
            with self._lock:
                due = self._t0 + self._next * interval
                self._next += 1
            if due - self._t0 > self.max_duration:
                return
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            sample = self._one()
            with self._lock:
                self._samples.append(sample)


def wait_for(predicate, timeout: float, what: str):
    """``predicate()``'s first true value, polled every 50 ms; the test fails after ``timeout`` seconds."""
    import pytest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def unique(prefix: str = "kt") -> str:
    """A short unique name part, so parallel runs never share a container, volume or network."""
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def run_env(state_dir: Path) -> dict[str, str]:
    """The environment of ansible-playbook / invoke runs against a private state folder and catalog."""
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        KILN_STATE_DIR=str(state_dir),
        KILN_CATALOG=str(state_dir / "catalog.db"),
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
        ANSIBLE_NOCOLOR="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def playbook(
    env: dict[str, str],
    name: str,
    extra: dict,
    check: bool = False,
    timeout: float = 900,
    inventory: str | Path | None = None,
):
    """Run ``kiln.immutable.<name>`` (default: the local inventory); returns the CompletedProcess."""
    cmd = [
        str(VENV_BIN / "ansible-playbook"),
        f"kiln.immutable.{name}",
        "-i",
        str(inventory or ROOT / "inventories" / "local"),
        "-e",
        json.dumps(extra),
    ]
    if check:
        cmd.append("--check")
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def build_version(env: dict[str, str], image: str, variables: dict[str, str], force: bool = False):
    """Bake one version with kiln's build playbook and return the version this run recorded."""
    sys.path.insert(0, str(ROOT / "collections"))
    from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog

    run = playbook(env, "build", {"kiln_image": image, "kiln_force": force, "kiln_variables": variables})
    results = [r["result"] for r in task_results(run)]
    built = [result["version"] for result in results if {"fingerprint", "version"} <= result.keys()]
    if run.returncode != 0 or not built:
        raise RuntimeError(
            f"kiln build of {image} failed (rc {run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
        )
    with Catalog(env["KILN_CATALOG"]) as catalog:
        return catalog.get(built[-1])


def task_results(run: subprocess.CompletedProcess) -> list[dict]:
    """Every task result of a run with the json callback, in order, as {task, host, result}."""
    try:
        doc = json.loads(run.stdout)
    except ValueError:
        return []
    out = []
    for play in doc.get("plays", []):
        for task in play.get("tasks", []):
            for host, result in task.get("hosts", {}).items():
                out.append({"task": task["task"]["name"], "host": host, "result": result})
    return out


if __name__ == "__main__":  # LoadGenerator's clients
    _Clients(**json.loads(sys.argv[1])).run()
