# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a roll-out is asked to do: its options, checked before anything changes, and its batches."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..common.errors import KilnError
from .analysis import parse_rate

GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class RolloutError(KilnError):
    """Bad input or a state the roll-out cannot proceed from; nothing was changed by the refusal."""


def _count(value: Any, name: str, total: int, rounding: Callable[[float], float], minimum: int) -> int:
    """An absolute number from ``3``, ``"3"`` or ``"30%"`` of ``total``; refuses bad input naming ``name``."""
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"\d+(\.\d+)?%|\d+", text):
        raise RolloutError(f"{name} must be a whole number or a percentage like '30%', got {value!r}")
    if text.endswith("%"):
        pct = float(text[:-1])
        if pct > 100:
            raise RolloutError(f"{name} {text} is over 100%")
        if pct <= 0 and minimum > 0:
            raise RolloutError(f"{name} must be more than 0%, got {text}")
        return max(minimum, int(rounding(total * pct / 100)))
    number = int(text)
    if number < minimum:
        raise RolloutError(f"{name} must be at least {minimum}, got {number}")
    return number


def batch_sizes(spec: Any, total: int, name: str = "batch_size") -> list[int]:
    """Batch sizes like Ansible's ``serial``: a size, a percentage, or a list whose last entry repeats."""
    items = spec if isinstance(spec, list | tuple) else [spec]
    if not items:
        raise RolloutError(f"{name} must not be an empty list")
    labels = [f"{name}[{i}]" for i in range(len(items))] if isinstance(spec, list | tuple) else [name]
    return [_count(item, label, total, math.floor, 1) for item, label in zip(items, labels, strict=True)]


def plan_batches(slots: list[int], spec: Any, total: int) -> list[list[int]]:
    """Split ``slots`` into batches; percentages are of the group's size ``total``."""
    sizes = batch_sizes(spec, total)
    batches: list[list[int]] = []
    rest = list(slots)
    while rest:
        size = sizes[min(len(batches), len(sizes) - 1)]
        batches.append(rest[:size])
        rest = rest[size:]
    return batches


@dataclass
class RolloutOptions:
    batch_size: Any = 1  # 2, "25%", or [1, "50%", "100%"] like Ansible's serial
    max_surge: Any = None  # extra instances at once: a number or percentage; None: the whole batch
    min_healthy_percentage: int = 100  # instances in service never drop below this share of the group
    checkpoints: list[int] = field(default_factory=list)  # pause after this percentage is replaced
    checkpoint_delay: float = 0.0  # seconds to wait at a checkpoint; 0 pauses until the next run
    max_failures: Any = 0  # failed slots tolerated (number or percentage) before stopping
    auto_rollback: bool = True  # on stop, put the old version back in every slot touched
    drain_timeout: float = 30.0  # seconds to wait for a drained server's sessions to end
    parallel: int | None = None  # slots replaced at once; None: a whole batch
    size: int | None = None  # instances the group should have; None: the slots it has now
    strategy: str = "rolling"  # rolling, canary (steps) or blue_green (a full new set, then a switch)
    steps: list[dict[str, Any]] = field(default_factory=list)  # canary: [{instances: 1, bake_time: 60}, ...]
    # Analysis: after each batch or step, the new version's numbers against the old version's.
    bake_time: float = 0.0  # seconds of traffic each analysis looks at
    max_error_rate: Any = None  # "1%": more errors than the old version's rate plus this fails
    max_latency_ratio: float | None = None  # 1.5: a new version this much slower than the old fails
    min_requests: int = 100  # fewer requests to the new version in the window: inconclusive (pause)
    preview_percent: int = 10  # blue_green: share of traffic the new set takes while it is analysed
    rollback_window: float = 0.0  # blue_green: seconds the old set is kept, switched back in a second
    lease_ttl: float = 30.0  # shared catalog: seconds a runner's lease on the group outlives its last renewal

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Limits:
    """Options turned into absolute numbers for a group of ``total`` slots."""

    total: int
    min_in_service: int
    max_surge: int | None
    max_failures: int


def validate(options: RolloutOptions, total: int, room: bool = True) -> Limits:
    """Refuse bad options before anything changes; each message names the parameter.

    ``room``: also check that surge and min healthy leave room to replace anything, which needs the
    group's real size.
    """
    if options.size is not None and (isinstance(options.size, bool) or int(options.size) < 1):
        raise RolloutError(f"size must be at least 1, got {options.size!r}")
    batch_sizes(options.batch_size, max(total, 1))
    pct = options.min_healthy_percentage
    if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
        raise RolloutError(f"min_healthy_percentage must be a whole number from 0 to 100, got {pct!r}")
    surge = None if options.max_surge is None else _count(options.max_surge, "max_surge", total, math.ceil, 0)
    min_in_service = math.ceil(total * pct / 100)
    if room and surge == 0 and total - min_in_service < 1:
        raise RolloutError(
            f"max_surge 0 with min_healthy_percentage {pct} leaves no room to replace any of the {total} "
            "instances: allow a surge or lower min_healthy_percentage"
        )
    for i, cp in enumerate(options.checkpoints or []):
        if isinstance(cp, bool) or not isinstance(cp, int | float) or not 0 < cp <= 100:
            raise RolloutError(f"checkpoints[{i}] must be a percentage from 1 to 100, got {cp!r}")
    if options.checkpoint_delay < 0:
        raise RolloutError(f"checkpoint_delay must be 0 or more, got {options.checkpoint_delay}")
    if (
        isinstance(options.lease_ttl, bool)
        or not isinstance(options.lease_ttl, int | float)
        or options.lease_ttl <= 0
    ):
        raise RolloutError(f"lease_ttl must be more than 0 seconds, got {options.lease_ttl!r}")
    if options.drain_timeout < 0:
        raise RolloutError(f"drain_timeout must be 0 or more, got {options.drain_timeout}")
    if options.parallel is not None and options.parallel < 1:
        raise RolloutError(f"parallel must be at least 1, got {options.parallel}")
    failures = _count(options.max_failures, "max_failures", total, math.floor, 0)
    validate_strategy(options, total)
    return Limits(total, min_in_service, surge, failures)


STRATEGIES = ("rolling", "canary", "blue_green")
STEP_KEYS = ("instances", "percent", "bake_time", "weight")


@dataclass
class Step:
    """One canary step: ``count`` slots on the new version, then ``bake_time`` seconds of analysis while
    the new version takes ``weight`` percent of the traffic (None: its share of the instances)."""

    index: int
    count: int
    bake_time: float
    weight: int | None = None


def canary_steps(options: RolloutOptions, total: int) -> list[Step]:
    """The canary steps for a group of ``total`` slots; refuses bad steps naming ``steps[i]``."""
    out: list[Step] = []
    for i, raw in enumerate(options.steps or []):
        name = f"steps[{i}]"
        if not isinstance(raw, dict):
            raise RolloutError(f"{name} must be a mapping like {{percent: 50}}, got {raw!r}")
        unknown = sorted(set(raw) - set(STEP_KEYS))
        if unknown:
            raise RolloutError(
                f"{name} has unknown key(s) {', '.join(unknown)} (known: {', '.join(STEP_KEYS)})"
            )
        if ("instances" in raw) == ("percent" in raw):
            raise RolloutError(f"{name} needs exactly one of instances or percent")
        if "instances" in raw:
            count = min(total, _count(raw["instances"], f"{name}.instances", total, math.ceil, 1))
        else:
            count = _count(f"{raw['percent']}%", f"{name}.percent", total, math.ceil, 1)
        bake = raw.get("bake_time", options.bake_time)
        if isinstance(bake, bool) or not isinstance(bake, int | float) or bake < 0:
            raise RolloutError(f"{name}.bake_time must be 0 or more seconds, got {bake!r}")
        weight = raw.get("weight")
        if weight is not None and (
            isinstance(weight, bool) or not isinstance(weight, int) or not 0 < weight <= 100
        ):
            raise RolloutError(f"{name}.weight must be a percentage from 1 to 100, got {weight!r}")
        if out and count < out[-1].count:
            raise RolloutError(f"{name} has fewer instances ({count}) than the step before ({out[-1].count})")
        out.append(Step(i, count, float(bake), weight))
    if not out or out[-1].count < total:
        out.append(Step(len(out), total, float(options.bake_time)))
    return out


def analysis_wanted(options: RolloutOptions) -> bool:
    return options.max_error_rate is not None or options.max_latency_ratio is not None


def validate_strategy(options: RolloutOptions, total: int) -> None:
    """Refuse a bad strategy, canary steps or analysis threshold, naming the parameter."""
    if options.strategy not in STRATEGIES:
        raise RolloutError(f"strategy must be one of {', '.join(STRATEGIES)}, got {options.strategy!r}")
    if options.steps and options.strategy != "canary":
        raise RolloutError(f"steps are for strategy canary, not {options.strategy}")
    if options.strategy == "canary":
        if not options.steps:
            raise RolloutError(
                "strategy canary needs steps, like [{instances: 1, bake_time: 60}, {percent: 100}]"
            )
        canary_steps(options, max(total, 1))
    for name in ("bake_time", "rollback_window"):
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise RolloutError(f"{name} must be 0 or more seconds, got {value!r}")
    try:
        parse_rate(options.max_error_rate)
    except ValueError as exc:
        raise RolloutError(str(exc)) from None
    ratio = options.max_latency_ratio
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, int | float) or ratio < 1):
        raise RolloutError(f"max_latency_ratio must be a number of 1 or more, got {ratio!r}")
    if (
        isinstance(options.min_requests, bool)
        or not isinstance(options.min_requests, int)
        or options.min_requests < 1
    ):
        raise RolloutError(f"min_requests must be at least 1, got {options.min_requests!r}")
    pct = options.preview_percent
    if isinstance(pct, bool) or not isinstance(pct, int) or not 0 < pct < 100:
        raise RolloutError(f"preview_percent must be a percentage from 1 to 99, got {pct!r}")


def validate_group(group: str) -> None:
    if not isinstance(group, str) or not GROUP_RE.match(group):
        raise RolloutError(f"group must be a name of letters, digits, '-', '_' or '.', got {group!r}")


def check_deployable(version: Any) -> None:
    if getattr(version, "status", "active") == "revoked":
        raise RolloutError(
            f"version {version.ref} is revoked and may no longer be deployed; choose another one"
        )
