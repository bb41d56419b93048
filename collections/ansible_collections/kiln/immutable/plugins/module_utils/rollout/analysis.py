# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Analysis: compare a new version's live numbers with the old version's over one window.

The numbers come from the load balancer (``LoadBalancer.stats()``, see interfaces.py): per server,
cumulative counts of responses and errors and an average response time. A window is the difference
between two snapshots; servers are grouped by the version their instance runs. The verdict is
``Successful`` (continue), ``Failed`` (stop and roll back) or ``Inconclusive`` (too few requests to tell:
pause and wait for more).

A load balancer without numbers answers None: analysis is "not available" there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

SUCCESSFUL = "Successful"
FAILED = "Failed"
INCONCLUSIVE = "Inconclusive"


@dataclass
class ServerStats:
    """One server's cumulative counters, as the load balancer reports them."""

    requests: int = 0  # responses of any status, plus errors without a response
    errors: int = 0  # 5xx responses and failed responses (connection closed, timeout)
    time_ms: float = 0.0  # average total time of its recent requests

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerStats:
        return cls(int(data.get("requests", 0)), int(data.get("errors", 0)), float(data.get("time_ms", 0.0)))


@dataclass
class Window:
    """What one version's servers did over a window."""

    requests: int = 0
    errors: int = 0
    latency_ms: float = 0.0  # the servers' average times, weighted by their requests in the window

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 5),
            "latency_ms": round(self.latency_ms, 2),
        }


def snapshot_to_dict(stats: dict[str, ServerStats]) -> dict[str, dict[str, Any]]:
    return {name: s.to_dict() for name, s in stats.items()}


def snapshot_from_dict(data: dict[str, Any]) -> dict[str, ServerStats]:
    return {name: ServerStats.from_dict(s) for name, s in (data or {}).items()}


def windows(
    before: dict[str, ServerStats], after: dict[str, ServerStats], version_of: dict[str, str]
) -> dict[str, Window]:
    """Per version, the requests and errors between two snapshots; ``version_of`` maps server -> version.

    A server missing from ``before`` started inside the window and counts from zero; a counter that went
    down (the server was re-created) counts from zero too.
    """
    out: dict[str, Window] = {}
    weighted: dict[str, float] = {}
    for name, now in after.items():
        version = version_of.get(name)
        if version is None:
            continue
        then = before.get(name) or ServerStats()
        if now.requests < then.requests or now.errors < then.errors:
            then = ServerStats()
        requests = now.requests - then.requests
        win = out.setdefault(version, Window())
        win.requests += requests
        win.errors += now.errors - then.errors
        weighted[version] = weighted.get(version, 0.0) + requests * now.time_ms
    for version, win in out.items():
        win.latency_ms = weighted[version] / win.requests if win.requests else 0.0
    return out


@dataclass
class Thresholds:
    max_error_rate: float | None  # a share (0.01 = 1%) above the baseline's error rate
    max_latency_ratio: float | None  # the new version's latency over the baseline's
    min_requests: int

    @property
    def enabled(self) -> bool:
        return self.max_error_rate is not None or self.max_latency_ratio is not None


def parse_rate(value: Any, name: str = "max_error_rate") -> float | None:
    """``"1%"`` as 0.01, or a share like ``0.01``; None stays None. Raises ValueError naming ``name``."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        rate = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(
            f"{name} must be a percentage like '1%' or a share like 0.01, got {value!r}"
        ) from None
    if isinstance(value, bool) or not 0 <= rate <= 1 or math.isnan(rate):
        raise ValueError(f"{name} must be from 0% to 100%, got {value!r}")
    return rate


def verdict(
    candidate: str, baselines: list[str], wins: dict[str, Window], limits: Thresholds
) -> tuple[str, list[str]]:
    """(verdict, reasons) for ``candidate`` against the ``baselines`` versions' windows."""
    new = wins.get(candidate, Window())
    old = Window()
    weighted = 0.0
    for ref in baselines:
        win = wins.get(ref)
        if win is None:
            continue
        old.requests += win.requests
        old.errors += win.errors
        weighted += win.requests * win.latency_ms
    old.latency_ms = weighted / old.requests if old.requests else 0.0
    if new.requests < limits.min_requests:
        return INCONCLUSIVE, [
            f"{candidate} served {new.requests} request(s) in the window, fewer than min_requests "
            f"{limits.min_requests}"
        ]
    reasons: list[str] = []
    if limits.max_error_rate is not None:
        allowed = old.error_rate + limits.max_error_rate
        if new.error_rate > allowed:
            reasons.append(
                f"error rate of {candidate} {new.error_rate:.2%} ({new.errors}/{new.requests}) is over "
                f"{allowed:.2%} (baseline {old.error_rate:.2%} + max_error_rate {limits.max_error_rate:.2%})"
            )
    if limits.max_latency_ratio is not None and old.requests:
        # A floor of 1 ms keeps a baseline of near-zero times from making any jitter a failure.
        ratio = new.latency_ms / max(old.latency_ms, 1.0)
        if ratio > limits.max_latency_ratio:
            reasons.append(
                f"latency of {candidate} {new.latency_ms:.1f} ms is {ratio:.1f}x the baseline's "
                f"{old.latency_ms:.1f} ms, over max_latency_ratio {limits.max_latency_ratio:g}"
            )
    if reasons:
        return FAILED, reasons
    if limits.max_latency_ratio is not None and old.requests < limits.min_requests:
        return INCONCLUSIVE, [
            f"the baseline served {old.requests} request(s) in the window, fewer than min_requests "
            f"{limits.min_requests}, so latency cannot be compared"
        ]
    return SUCCESSFUL, [
        f"{candidate}: {new.requests} request(s), error rate {new.error_rate:.2%}, {new.latency_ms:.1f} ms "
        f"(baseline {old.requests} request(s), {old.error_rate:.2%}, {old.latency_ms:.1f} ms)"
    ]
