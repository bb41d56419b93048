# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health probes for new instances: HTTP (path and status), TCP, or a command; with warm-up and thresholds.

A probe either gets an answer (the app is up and says "healthy" or "not healthy") or gets none
(connection refused, timeout: the app is still starting). Only wrong answers count towards the
unhealthy threshold, so a slow start is judged by the deadline alone and a version that answers 503
is declared unhealthy after a few probes instead of at the deadline.
"""

from __future__ import annotations

import http.client
import shlex
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..common.errors import KilnError
from .interfaces import Instance

PROBE_TYPES = ("http", "tcp", "command")


@dataclass
class HealthCheck:
    type: str = "http"
    path: str = "/healthz"
    status: list[int] = field(default_factory=lambda: [200])
    command: list[str] = field(default_factory=list)  # placeholders: {address} {host} {port} {name} {id}
    interval: float = 1.0  # seconds between probes
    timeout: float = 2.0  # seconds one probe may take
    healthy_threshold: int = 2  # consecutive successes to be healthy
    unhealthy_threshold: int = 3  # consecutive wrong answers to be unhealthy (0: only the deadline)
    warmup: float = 0.0  # seconds after launch before the first probe
    deadline: float = 60.0  # seconds from launch to be healthy, else unhealthy

    @classmethod
    def from_options(cls, options: dict[str, Any] | None, param: str = "health") -> HealthCheck:
        """Build from module/role options, refusing bad values with the parameter's name."""
        options = {k: v for k, v in (options or {}).items() if v is not None}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise KilnError(
                f"{param}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        check = cls(**options)
        if check.type not in PROBE_TYPES:
            raise KilnError(f"{param}.type must be one of {', '.join(PROBE_TYPES)}, got {check.type!r}")
        if isinstance(check.status, int | str):
            check.status = [check.status]
        try:
            check.status = [int(s) for s in check.status]
        except (TypeError, ValueError) as exc:
            raise KilnError(f"{param}.status must be HTTP status codes, got {check.status!r}") from exc
        if isinstance(check.command, str):
            check.command = shlex.split(check.command)
        if check.type == "command" and not check.command:
            raise KilnError(f"{param}.command is required when {param}.type is 'command'")
        if check.type == "http" and not str(check.path).startswith("/"):
            raise KilnError(f"{param}.path must start with '/', got {check.path!r}")
        for name in ("interval", "timeout", "warmup", "deadline"):
            value = float(getattr(check, name))
            if value < 0 or (name in ("interval", "timeout", "deadline") and value == 0):
                raise KilnError(
                    f"{param}.{name} must be {'>= 0' if name == 'warmup' else '> 0'}, got {value}"
                )
            setattr(check, name, value)
        if int(check.healthy_threshold) < 1:
            raise KilnError(f"{param}.healthy_threshold must be at least 1, got {check.healthy_threshold}")
        if int(check.unhealthy_threshold) < 0:
            raise KilnError(f"{param}.unhealthy_threshold must be 0 or more, got {check.unhealthy_threshold}")
        check.healthy_threshold = int(check.healthy_threshold)
        check.unhealthy_threshold = int(check.unhealthy_threshold)
        return check

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProbeResult:
    ok: bool
    answered: bool  # False: no answer yet (refused, timed out); only answers count as "unhealthy"
    detail: str


@dataclass
class HealthOutcome:
    healthy: bool
    attempts: int
    duration_s: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _split(address: str) -> tuple[str, int]:
    host, port = address.rpartition(":")[::2]
    if not host or not port.isdigit():
        raise KilnError(f"probe address {address!r} is not host:port")
    return host.strip("[]"), int(port)


def probe_once(check: HealthCheck, instance: Instance) -> ProbeResult:
    """One probe of ``instance.probe_address``."""
    if check.type == "command":
        host, port = _split(instance.probe_address) if instance.probe_address else ("", 0)
        values = {
            "address": instance.probe_address,
            "host": host,
            "port": port,
            "name": instance.name,
            "id": instance.id,
        }
        argv = [arg.format(**values) for arg in check.command]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=check.timeout, check=False)
        except subprocess.TimeoutExpired:
            return ProbeResult(False, False, f"command timed out after {check.timeout}s")
        except OSError as exc:
            return ProbeResult(False, True, f"command failed to start: {exc}")
        out = (proc.stdout + proc.stderr).strip()[-200:]
        return ProbeResult(proc.returncode == 0, True, f"command exited {proc.returncode}: {out}")
    host, port = _split(instance.probe_address)
    if check.type == "tcp":
        try:
            with socket.create_connection((host, port), timeout=check.timeout):
                return ProbeResult(True, True, f"tcp {host}:{port} open")
        except OSError as exc:
            return ProbeResult(False, False, f"tcp {host}:{port}: {exc}")
    conn = http.client.HTTPConnection(host, port, timeout=check.timeout)
    try:
        conn.request("GET", check.path, headers={"User-Agent": "kiln-health"})
        response = conn.getresponse()
        response.read(4096)
    except (OSError, http.client.HTTPException) as exc:
        return ProbeResult(False, False, f"GET {check.path}: {exc}")
    finally:
        conn.close()
    ok = response.status in check.status
    return ProbeResult(ok, True, f"GET {check.path} -> {response.status}")


ProbeFn = Callable[[HealthCheck, Instance], ProbeResult]


class Prober:
    """Waits for an instance to become healthy, or decides it is not."""

    def __init__(
        self,
        check: HealthCheck,
        probe: ProbeFn = probe_once,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.check = check
        self._probe = probe
        self._clock = clock
        self._sleep = sleep

    def probe(self, instance: Instance) -> ProbeResult:
        return self._probe(self.check, instance)

    def wait_healthy(self, instance: Instance) -> HealthOutcome:
        check = self.check
        start = self._clock()
        if check.warmup:
            self._sleep(check.warmup)
        attempts = good = bad = 0
        while True:
            result = self._probe(check, instance)
            attempts += 1
            if result.ok:
                good, bad = good + 1, 0
                if good >= check.healthy_threshold:
                    return HealthOutcome(True, attempts, self._clock() - start, result.detail)
            else:
                good = 0
                bad = bad + 1 if result.answered else 0
                if check.unhealthy_threshold and bad >= check.unhealthy_threshold:
                    return HealthOutcome(
                        False,
                        attempts,
                        self._clock() - start,
                        f"{bad} failed probes in a row: {result.detail}",
                    )
            elapsed = self._clock() - start
            if elapsed + check.interval > check.deadline:
                return HealthOutcome(
                    False, attempts, elapsed, f"not healthy within {check.deadline:g}s: {result.detail}"
                )
            self._sleep(check.interval)


BackendHealth = Callable[[Instance], "ProbeResult | None"]


def with_backend_health(backends: list[BackendHealth], probe: ProbeFn = probe_once) -> ProbeFn:
    """A probe that asks the backends first (a provider's or load balancer's own verdict), then ``probe``.

    A backend returns a failed ProbeResult to fail the instance (answered: counts as a wrong answer;
    not answered: still starting), an ok one to vouch for it, or None when it has no opinion. The
    direct probe runs only where the instance has a probe address; without one, the backends decide.
    """

    def combined(check: HealthCheck, instance: Instance) -> ProbeResult:
        passed = []
        for backend in backends:
            try:
                result = backend(instance)
            except KilnError as exc:  # an API that cannot answer now is no verdict yet
                result = ProbeResult(False, False, str(exc))
            if result is None:
                continue
            if not result.ok:
                return result
            passed.append(result.detail)
        if instance.probe_address:
            return probe(check, instance)
        if not passed:
            return ProbeResult(
                False, False, f"{instance.name} has no probe address and no backend vouches for it"
            )
        return ProbeResult(True, True, "; ".join(passed))

    return combined
