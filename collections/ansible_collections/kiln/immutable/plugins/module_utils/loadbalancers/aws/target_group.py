# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A group's load balancer on AWS: an Elastic Load Balancing v2 target group.

A registered target gets traffic once the load balancer's own checks find it healthy, so ``add``
registers and ``enable`` has nothing left to do. Draining is deregistration: the target group
keeps the connections for its deregistration delay, and ``wait_drained`` waits for the target to
leave the ``draining`` state. Targets are named by their instance id.
"""

from __future__ import annotations

import time
from typing import Any

from ...common import aws
from ...common.aws import AWSError, AWSSettings
from ...rollout.health import ProbeResult
from ...rollout.interfaces import SERVER_DRAIN, SERVER_MAINT, SERVER_READY, Instance

# target health state -> the engine's server state
_STATES = {
    "healthy": SERVER_READY,
    "draining": SERVER_DRAIN,
    "initial": SERVER_MAINT,
    "unhealthy": SERVER_MAINT,
    "unused": SERVER_MAINT,
    "unavailable": SERVER_MAINT,
}


class LoadBalancerError(AWSError):
    pass


class TargetGroupLoadBalancer:
    """The LoadBalancer of rollout.interfaces on one target group (``target_group``: a name or an ARN).

    ``port``: the port targets are registered with (default: the target group's).
    ``poll_interval``: seconds between target health reads while draining.
    """

    def __init__(
        self,
        settings: AWSSettings,
        group: str,
        target_group: str = "",
        port: int | None = None,
        poll_interval: float = 2.0,
    ):
        if not target_group:
            raise LoadBalancerError("load_balancer_options.target_group is required for load_balancer aws")
        self.settings = settings
        self.group = group
        self.target_group = target_group
        self.port = port
        self.poll_interval = float(poll_interval)
        self.region = aws.check_region(settings)
        self.elbv2 = aws.client(settings, "elbv2")
        self._arn: str | None = None
        self._delay: float | None = None

    def describe(self) -> dict[str, Any]:
        key = "TargetGroupArns" if self.target_group.startswith("arn:") else "Names"
        try:
            found = self.elbv2.describe_target_groups(**{key: [self.target_group]})["TargetGroups"]
        except Exception as exc:
            if aws.error_code(exc) not in ("TargetGroupNotFound", "TargetGroupNotFoundException"):
                raise LoadBalancerError(f"describing target group {self.target_group} failed: {exc}") from exc
            found = []
        if not found:
            raise LoadBalancerError(
                f"load_balancer_options.target_group: no target group {self.target_group!r} "
                f"in region {self.region}"
            )
        return found[0]

    @property
    def arn(self) -> str:
        if self._arn is None:
            self._arn = self.describe()["TargetGroupArn"]
        return self._arn

    def check(self, version: Any) -> None:
        self.describe()

    def deregistration_delay(self) -> float:
        if self._delay is None:
            attrs = aws.call(
                f"reading the attributes of target group {self.target_group}",
                self.elbv2.describe_target_group_attributes,
                TargetGroupArn=self.arn,
            )["Attributes"]
            values = {a["Key"]: a["Value"] for a in attrs}
            self._delay = float(values.get("deregistration_delay.timeout_seconds", 300))
        return self._delay

    def _target(self, instance: Instance) -> dict[str, Any]:
        return {"Id": instance.id, **({"Port": self.port} if self.port else {})}

    def _health(self, instance: Instance | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"TargetGroupArn": self.arn}
        if instance is not None:
            kwargs["Targets"] = [self._target(instance)]
        try:
            return self.elbv2.describe_target_health(**kwargs)["TargetHealthDescriptions"]
        except Exception as exc:
            if instance is not None and aws.error_code(exc) == "InvalidTarget":
                return []
            raise LoadBalancerError(f"reading target health of {self.target_group} failed: {exc}") from exc

    # ------------------------------------------------------------------ the LoadBalancer protocol

    def add(self, instance: Instance) -> None:
        aws.call(
            f"registering {instance.id} in target group {self.target_group}",
            self.elbv2.register_targets,
            TargetGroupArn=self.arn,
            Targets=[self._target(instance)],
        )

    def enable(self, instance: Instance) -> None:
        """Nothing to do: the target group sends traffic to a registered target once it is healthy."""

    def drain(self, instance: Instance) -> None:
        self.remove(instance)

    def wait_drained(self, instance: Instance, timeout: float) -> None:
        """Until the target has left ``draining`` (the deregistration delay), at most ``timeout`` seconds."""
        deadline = time.monotonic() + min(float(timeout), self.deregistration_delay() + self.poll_interval)
        while time.monotonic() < deadline:
            states = [t["TargetHealth"]["State"] for t in self._health(instance)]
            if "draining" not in states:
                return
            time.sleep(self.poll_interval)

    def remove(self, instance: Instance) -> None:
        try:
            self.elbv2.deregister_targets(TargetGroupArn=self.arn, Targets=[self._target(instance)])
        except Exception as exc:
            if aws.error_code(exc) != "InvalidTarget":  # not registered: already removed
                raise LoadBalancerError(
                    f"deregistering {instance.id} from target group {self.target_group} failed: {exc}"
                ) from exc

    def servers(self) -> dict[str, str]:
        return {
            t["Target"]["Id"]: _STATES.get(t["TargetHealth"]["State"], SERVER_MAINT) for t in self._health()
        }

    def health(self, instance: Instance) -> ProbeResult | None:
        """The target group's verdict: healthy passes, unhealthy fails, initial is no answer yet."""
        found = self._health(instance)
        if not found:
            return ProbeResult(False, False, f"{instance.id} is not registered in {self.target_group}")
        health = found[0]["TargetHealth"]
        state = health["State"]
        detail = f"target {instance.id} is {state}" + (
            f" ({health.get('Description') or health.get('Reason')})" if health.get("Reason") else ""
        )
        if state == "healthy":
            return ProbeResult(True, True, detail)
        return ProbeResult(False, state == "unhealthy", detail)
