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
    parallel: int | None = None  # slots replaced at once within a batch; None: the whole batch
    size: int | None = None  # instances the group should have; None: the slots it has now

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
    if options.drain_timeout < 0:
        raise RolloutError(f"drain_timeout must be 0 or more, got {options.drain_timeout}")
    if options.parallel is not None and options.parallel < 1:
        raise RolloutError(f"parallel must be at least 1, got {options.parallel}")
    failures = _count(options.max_failures, "max_failures", total, math.floor, 0)
    return Limits(total, min_in_service, surge, failures)


def validate_group(group: str) -> None:
    if not isinstance(group, str) or not GROUP_RE.match(group):
        raise RolloutError(f"group must be a name of letters, digits, '-', '_' or '.', got {group!r}")


def check_deployable(version: Any) -> None:
    if getattr(version, "status", "active") == "revoked":
        raise RolloutError(
            f"version {version.ref} is revoked and may no longer be deployed; choose another one"
        )
