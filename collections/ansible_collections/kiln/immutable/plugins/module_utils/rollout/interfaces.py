# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The contract between the roll-out engine and what it drives: providers and load balancers.

The engine (``rollout.py``) only ever talks to these two protocols, so a new provider (AWS launch
templates and Auto Scaling groups) or load balancer plugs in without touching it.

How backends are found (the module ``rolling_replace`` takes ``provider``/``provider_options`` and
``load_balancer``/``load_balancer_options``; ``deploy/rolling_replace.py`` maps the names):

- ``provider: docker`` -> ``deploy.docker_environment.provider(provider_options)``, a ``DockerProvider``
- ``load_balancer: haproxy`` -> ``deploy.docker_environment.load_balancer(group, load_balancer_options)``,
  a ``HAProxyLoadBalancer`` (the module adds ``catalog`` to its options)
- ``load_balancer: none`` -> no load balancer (``rollout.NullLoadBalancer``).

Both constructors take only plain keyword arguments (they come from inventory variables) and
must not change anything: check mode builds them too.

Optional hook: when a provider or load balancer has ``prepare(group: str) -> None``, the engine
calls it once before the first change of a roll-out (never in check mode). It creates what the
group needs (network, data volumes, the HAProxy container) and must be idempotent.

Optional hooks that ``deploy/rolling_replace.py`` uses (the engine does not see them):
``check(version) -> None`` refuses a target before anything changes (an unknown Auto Scaling group or
target group, no AMI in the region), also in check mode; ``health(instance) -> ProbeResult | None`` is
the backend's own verdict on a new instance (Auto Scaling's instance health, the target's health, a
docker container that started again since its launch), asked before the direct probe
(``health.with_backend_health``).

- ``provider: aws`` -> ``deploy.aws_environment.provider(settings, provider_options)``, an
  ``AutoScalingProvider``; ``load_balancer: aws`` -> a ``TargetGroupLoadBalancer``; ``settings`` are
  the module's AWS options (``common.aws.AWSSettings``).

Where the settings come from (inventories/local): each group of instances is an inventory host
in the Ansible group ``kiln_groups`` (``web-staging``, ``web-prod``; ``inventory_hostname`` is the
kiln group), with ``kiln_group_image``, ``kiln_group_channel``, ``kiln_group_size``,
``kiln_group_provider`` + ``kiln_group_provider_options``, ``kiln_group_load_balancer`` +
``kiln_group_load_balancer_options``, ``kiln_group_rollout`` (rolling_replace options: batch_size,
max_surge, ...) and ``kiln_group_health`` (HealthCheck fields). ``kiln.immutable.docker_group``
creates (``invoke up``) and removes (``invoke down``) a group's network, load balancer, instances
and data volumes.

Optional numbers and weights (analysis and the canary and blue_green strategies): a load balancer may
have ``stats() -> dict[str, ServerStats]`` (server name -> cumulative responses, errors, average time;
see analysis.py) and ``set_weight(instance, weight: int)`` (0..256; a new server starts at 1; 0 sends it
no new requests while it stays in service). One without them, or whose ``stats()`` answers None, has
no numbers: analysis is "not available" there and a roll-out that asks for it is refused.

Conventions both sides keep:

- A load balancer server is named after ``Instance.name`` and reaches ``Instance.backend_address``.
- ``LoadBalancer.servers()`` reports each server's administrative state as one of
  ``SERVER_READY``, ``SERVER_DRAIN``, ``SERVER_MAINT`` (HAProxy's ``srv_admin_state`` mapped).
- ``Provider.launch`` returns once the instance is started (not necessarily healthy: the engine
  probes ``probe_address``). Launching into a slot mounts the slot's data volume, also while the
  slot's old instance still runs (max surge), so volumes must allow two users at once.
- ``Provider.terminate`` and ``LoadBalancer.remove`` are idempotent: an already gone instance or
  server is not an error. ``terminate`` may return once the instance is shutting down (docker:
  SIGTERM sent, reaped in the background); ``list_instances`` of the same process no longer shows
  it. Everything else raises ``KilnError`` (or a subclass) naming the instance and the operation.
- ``Provider.list_instances`` returns every instance of the group, including several in one slot
  (after a crash mid-batch) and stopped ones (``alive`` False, empty ``probe_address``): the engine
  reconciles them.
- The docker provider's names: network ``kiln-<group>``, data volume ``kiln-<group>-<slot>-data``,
  instance ``kiln-<group>-<slot>-<6 hex>``, load balancer container ``kiln-<group>-lb`` and its
  address holder ``kiln-<group>-lb-net`` (labels ``kiln.lb=<group>``, never ``kiln.group``, so they are
  not instances).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # the catalog's Version: image, name, ref, status, artifacts
    from ..catalog.catalog import Version

SERVER_READY = "ready"
SERVER_DRAIN = "drain"
SERVER_MAINT = "maint"
SERVER_STATES = (SERVER_READY, SERVER_DRAIN, SERVER_MAINT)


@dataclass
class Instance:
    id: str  # provider id (container id)
    name: str  # e.g. kiln-web-prod-3-<short>; also the load balancer's server name
    group: str  # "web-prod"
    slot: int  # 0..n-1; the slot owns a data volume that moves to the replacement
    version: str  # catalog ref "web/7"
    probe_address: str  # "127.0.0.1:49153": where kiln on the host probes it
    backend_address: str  # "kiln-web-prod-3-ab12:8080": where the load balancer reaches it
    started_at: float = 0.0  # epoch seconds
    extra: dict[str, Any] = field(default_factory=dict)  # provider specific (image id, ports, ...)
    # False when the provider knows the instance has stopped (an exited container): it cannot serve,
    # has no probe address, and is replaced without probing.
    alive: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Instance:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@runtime_checkable
class Provider(Protocol):
    """Starts and stops a group's instances: docker now; AWS launch templates / Auto Scaling groups later."""

    def list_instances(self, group: str) -> list[Instance]: ...

    def launch(self, group: str, slot: int, version: Version) -> Instance: ...

    def terminate(self, instance: Instance) -> None: ...


@runtime_checkable
class LoadBalancer(Protocol):
    """The group's load balancer; one per group."""

    # added in maintenance (HAProxy `add server` starts in maint) until enable()
    def add(self, instance: Instance) -> None: ...

    def enable(self, instance: Instance) -> None: ...

    def drain(self, instance: Instance) -> None: ...

    def wait_drained(self, instance: Instance, timeout: float) -> None: ...  # until no sessions

    def remove(self, instance: Instance) -> None: ...

    def servers(self) -> dict[str, str]: ...  # server name -> SERVER_READY / SERVER_DRAIN / SERVER_MAINT


class NullLoadBalancer:
    """No load balancer: every instance counts as in service; nothing to drain."""

    def add(self, instance: Instance) -> None:
        pass

    def enable(self, instance: Instance) -> None:
        pass

    def drain(self, instance: Instance) -> None:
        pass

    def wait_drained(self, instance: Instance, timeout: float) -> None:
        pass

    def remove(self, instance: Instance) -> None:
        pass

    def servers(self) -> dict[str, str] | None:
        return None

    def stats(self) -> None:
        return None  # no numbers: analysis is not available
