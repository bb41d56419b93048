# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A group's environment on AWS: its Auto Scaling group (provider ``aws``) and target group
(load balancer ``aws``), built from the module's AWS options and the inventory's options."""

from __future__ import annotations

from typing import Any

from ..common.aws import AWSSettings
from ..loadbalancers.aws.target_group import TargetGroupLoadBalancer
from ..providers.aws.provider import AutoScalingProvider
from .backend_options import build as _build


def provider(settings: AWSSettings, options: dict[str, Any] | None = None) -> AutoScalingProvider:
    return _build(AutoScalingProvider, "provider_options", options, settings=settings)


def load_balancer(
    settings: AWSSettings, group: str, options: dict[str, Any] | None = None
) -> TargetGroupLoadBalancer:
    return _build(TargetGroupLoadBalancer, "load_balancer_options", options, settings=settings, group=group)
