# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The providers and load balancers a group can name, and the one place that builds them from names.

A new provider (``providers/<name>/``) or load balancer (``loadbalancers/<name>/``) is added to the
names below and to :func:`build_backends`; the modules take their choices from these names.
"""

from __future__ import annotations

from typing import Any

from ..common.aws import AWSSettings
from ..rollout.interfaces import NullLoadBalancer
from ..rollout.options import RolloutError

PROVIDERS = ("docker", "aws")  # the first is the default
LOAD_BALANCERS = ("haproxy", "aws", "none")  # "none": instances are replaced without one


def build_backends(
    group: str,
    provider: str,
    provider_options: dict[str, Any] | None,
    load_balancer: str,
    load_balancer_options: dict[str, Any] | None,
    catalog_path: str | None,
    aws_options: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """(provider, load balancer) for ``group``; an unknown name or option is refused, naming it.

    ``aws_options``: region, profile, keys and endpoint_url, for the aws provider and load balancer.
    """
    if provider not in PROVIDERS:
        raise RolloutError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    if load_balancer not in LOAD_BALANCERS:
        raise RolloutError(f"load_balancer must be one of {', '.join(LOAD_BALANCERS)}, got {load_balancer!r}")
    # Each environment is imported when used: docker needs the Docker SDK, aws needs boto3.
    if "aws" in (provider, load_balancer):
        from . import aws_environment

        settings = AWSSettings.from_options(aws_options)
    if provider == "docker" or load_balancer == "haproxy":
        from . import docker_environment
    if provider == "aws":
        prov = aws_environment.provider(settings, provider_options)
    else:
        prov = docker_environment.provider(provider_options)
    if load_balancer == "none":
        return prov, NullLoadBalancer()
    if load_balancer == "aws":
        return prov, aws_environment.load_balancer(settings, group, load_balancer_options)
    return prov, docker_environment.load_balancer(group, load_balancer_options, catalog_path)
