# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The providers and load balancers a group can name, and the one place that builds them from names.

A new provider (``providers/<name>/``) or load balancer (``loadbalancers/<name>/``) is added to the
names below and to :func:`build_backends`; the modules take their choices from these names.
"""

from __future__ import annotations

from typing import Any

from ..rollout.interfaces import NullLoadBalancer
from ..rollout.options import RolloutError

PROVIDERS = ("docker",)  # the first is the default
LOAD_BALANCERS = ("haproxy", "none")  # "none": instances are replaced without one


def build_backends(
    group: str,
    provider: str,
    provider_options: dict[str, Any] | None,
    load_balancer: str,
    load_balancer_options: dict[str, Any] | None,
    catalog_path: str | None,
) -> tuple[Any, Any]:
    """(provider, load balancer) for ``group``; an unknown name or option is refused, naming it."""
    if provider not in PROVIDERS:
        raise RolloutError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    if load_balancer not in LOAD_BALANCERS:
        raise RolloutError(f"load_balancer must be one of {', '.join(LOAD_BALANCERS)}, got {load_balancer!r}")
    from . import docker_environment  # imported when used: the docker provider needs the Docker SDK

    prov = docker_environment.provider(provider_options)
    if load_balancer == "none":
        return prov, NullLoadBalancer()
    return prov, docker_environment.load_balancer(group, load_balancer_options, catalog_path)
