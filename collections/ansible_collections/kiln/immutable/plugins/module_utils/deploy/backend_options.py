# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backends (providers, load balancers) built from inventory options, refusing unknown keys."""

from __future__ import annotations

import inspect
from typing import Any

from ..common.errors import KilnError


def build(cls, param: str, options: dict[str, Any] | None, **fixed: Any):
    """``cls(**fixed, **options)``, refusing unknown keys with the parameter's name."""
    options = dict(options or {})
    known = set(inspect.signature(cls.__init__).parameters) - {"self"} - set(fixed)
    unknown = sorted(set(options) - known)
    if unknown:
        raise KilnError(f"{param}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**fixed, **options)
