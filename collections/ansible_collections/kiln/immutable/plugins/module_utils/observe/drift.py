# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drift: instances that differ from what the catalog says should run, or that changed after they started.

Per group (a :class:`GroupTarget`: the group, the image it runs and the channel it follows) kiln
finds five kinds of drift:

- ``version``: the instance runs another version than the one the channel points at;
- ``revoked``: the instance runs a version that was revoked (or that the catalog does not know);
- ``image``: the instance does not run the artifact of the version it claims (a container started by
  hand on another image, with kiln's labels);
- ``filesystem``: files changed after the instance was made, outside its data volumes and tmpfs
  mounts, with the changed paths;
- ``lb``: a running instance that the group's load balancer does not send traffic to (a load balancer
  that was recreated or restarted without its servers, or one that is not running at all).

Instances come from the roll-out's :class:`~..rollout.interfaces.Provider` (``list_instances``); what only the
runtime can tell (filesystem changes, the image actually running, health) comes from an
:class:`Inspector`. :class:`DockerInspector` is the Docker one; an AWS inspector (SSM, AMI id of the
instance) plugs in the same way.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..common.errors import KilnError
from ..rollout.health import HealthCheck, probe_once
from ..rollout.interfaces import SERVER_READY, Instance, LoadBalancer, Provider

DRIFT_KINDS = ("version", "revoked", "image", "filesystem", "lb", "unmanaged")
LOAD_BALANCERS = ("haproxy", "aws", "none")

# ``docker diff`` kinds
_DIFF_KINDS = {0: "changed", 1: "added", 2: "deleted"}


@dataclass
class GroupTarget:
    """A group and what it should run: the version ``channel`` of ``image`` points at.

    ``provider``/``provider_options`` say where its instances run (as for the roll-out); ``health``
    (options of health.HealthCheck) is probed once per running instance when given. With a
    ``load_balancer`` (``haproxy``), every running instance should be in service behind it.
    """

    group: str
    image: str
    channel: str
    provider: str = "docker"
    provider_options: dict[str, Any] = field(default_factory=dict)
    health: dict[str, Any] | None = None
    aws: dict[str, Any] = field(default_factory=dict)  # region, profile, endpoint_url for provider aws
    load_balancer: str = "none"
    load_balancer_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "groups") -> GroupTarget:
        missing = [key for key in ("group", "image", "channel") if not data.get(key)]
        if missing:
            raise KilnError(f"{where}: missing {', '.join(missing)} in {data!r}")
        return cls(
            group=str(data["group"]),
            image=str(data["image"]),
            channel=str(data["channel"]),
            provider=str(data.get("provider") or "docker"),
            provider_options=dict(data.get("provider_options") or {}),
            health=dict(data["health"]) if data.get("health") else None,
            aws=dict(data.get("aws") or {}),
            load_balancer=str(data.get("load_balancer") or "none"),
            load_balancer_options=dict(data.get("load_balancer_options") or {}),
        )

    @classmethod
    def from_inventory(cls, inventory: dict[str, Any], group_name: str = "kiln_groups") -> list[GroupTarget]:
        """Groups from ``ansible-inventory --list`` output: every host of ``kiln_groups``.

        Each host is a group of instances; its ``kiln_group_image``, ``kiln_group_channel``,
        ``kiln_group_provider``, ``kiln_group_provider_options``, ``kiln_group_health`` and
        ``kiln_group_load_balancer`` are used. A host without ``kiln_group_load_balancer`` is behind
        HAProxy, as the roll-out playbook puts it (the rolling_replace module's default).
        """
        hosts = (inventory.get(group_name) or {}).get("hosts") or []
        hostvars = (inventory.get("_meta") or {}).get("hostvars") or {}
        out = []
        for host in hosts:
            hv = hostvars.get(host) or {}
            data = {
                "group": host,
                "image": hv.get("kiln_group_image"),
                "channel": hv.get("kiln_group_channel"),
                "provider": hv.get("kiln_group_provider"),
                "provider_options": hv.get("kiln_group_provider_options"),
                "health": hv.get("kiln_group_health"),
                "aws": hv.get("kiln_group_aws"),
                "load_balancer": hv.get("kiln_group_load_balancer", LOAD_BALANCERS[0]),
                "load_balancer_options": hv.get("kiln_group_load_balancer_options"),
            }
            out.append(cls.from_dict(data, where=f"inventory host {host} (kiln_group_*)"))
        return out


@dataclass
class PathChange:
    path: str
    kind: str  # added | changed | deleted

    def __str__(self) -> str:
        return f"{self.kind[0].upper()} {self.path}"


@dataclass
class Finding:
    kind: str  # one of DRIFT_KINDS
    group: str
    instance: str
    slot: int
    detail: str
    expected: str | None = None
    actual: str | None = None
    paths: list[PathChange] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class InstanceState:
    """One instance as status and drift see it."""

    name: str
    id: str
    slot: int
    version: str
    started_at: float
    health: str
    drift: list[str] = field(default_factory=list)  # the kinds found

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GroupDrift:
    group: str
    image: str
    channel: str
    expected: str | None  # the ref the channel points at
    problem: str | None = None  # why the group could not be fully checked (status shows it)
    instances: list[InstanceState] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return bool(self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "image": self.image,
            "channel": self.channel,
            "expected": self.expected,
            "problem": self.problem,
            "drifted": self.drifted,
            "instances": [i.to_dict() for i in self.instances],
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class DriftReport:
    groups: list[GroupDrift]
    checked_at: float = field(default_factory=time.time)

    @property
    def drifted(self) -> bool:
        return any(g.drifted for g in self.groups)

    @property
    def findings(self) -> list[Finding]:
        return [f for g in self.groups for f in g.findings]

    def to_dict(self) -> dict[str, Any]:
        return {
            "drifted": self.drifted,
            "checked_at": self.checked_at,
            "findings": len(self.findings),
            "groups": [g.to_dict() for g in self.groups],
        }


@runtime_checkable
class Inspector(Protocol):
    """What only the runtime can tell about a running instance."""

    def filesystem_changes(self, instance: Instance) -> list[PathChange]: ...

    def image_id(self, instance: Instance) -> str | None: ...  # the artifact it actually runs

    def health(self, instance: Instance) -> str: ...  # healthy | unhealthy | starting | running | <state>

    def expected_image(self, version: Any, instance: Instance) -> str | None: ...  # what it should run

    def unmanaged(self, instance: Instance) -> str | None: ...  # why kiln did not make it, or None


class _Catalog(Protocol):  # the part of catalog.Catalog drift uses
    def channels(self, image: str) -> dict[str, str | None]: ...

    def channel_version(self, image: str, channel: str) -> Any: ...

    def find(self, ref: str) -> Any: ...


# --------------------------------------------------------------------------- filesystem changes


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def filter_changes(raw: list[dict[str, Any]] | None, excluded: list[str]) -> list[PathChange]:
    """``docker diff`` entries that count as drift, sorted by path.

    Left out: anything at or under an ``excluded`` mount point (data volumes, tmpfs, bind mounts);
    directories only reported as "changed" because something below them changed (``C /etc`` next to
    ``A /etc/x``), or because a mount point was made inside them.
    """
    roots = [posixpath.normpath(p) for p in excluded if p]
    entries = []
    for item in raw or []:
        path = posixpath.normpath(item.get("Path") or "")
        if not path.startswith("/") or any(_under(path, root) for root in roots):
            continue
        entries.append(PathChange(path=path, kind=_DIFF_KINDS.get(item.get("Kind"), "changed")))
    # Every path some other entry or mount point lives under: such a "changed" dir adds nothing.
    parents = set()
    for path in [e.path for e in entries] + roots:
        parent = posixpath.dirname(path)
        while parent not in parents and parent != path:
            parents.add(parent)
            path, parent = parent, posixpath.dirname(parent)
    kept = [e for e in entries if not (e.kind == "changed" and e.path in parents)]
    return sorted(kept, key=lambda e: e.path)


class DockerInspector:
    """The Docker view of an instance (a container), through docker_api.client()."""

    def _container(self, instance: Instance) -> Any:
        import docker.errors

        from ..common.docker_api import client

        try:
            return client().containers.get(instance.id or instance.name)
        except docker.errors.NotFound as exc:
            raise KilnError(f"instance {instance.name} (container {instance.id[:12]}) is gone") from exc

    def filesystem_changes(self, instance: Instance) -> list[PathChange]:
        container = self._container(instance)
        attrs = container.attrs
        excluded = [m.get("Destination", "") for m in attrs.get("Mounts") or []]
        excluded += list((attrs.get("HostConfig") or {}).get("Tmpfs") or {})
        try:
            raw = container.diff()
        except Exception as exc:  # the SDK's APIError: e.g. a storage driver without diff support
            raise KilnError(f"cannot list filesystem changes of instance {instance.name}: {exc}") from exc
        return filter_changes(raw, excluded)

    def image_id(self, instance: Instance) -> str | None:
        return self._container(instance).attrs.get("Image")

    def health(self, instance: Instance) -> str:
        state = self._container(instance).attrs.get("State") or {}
        status = (state.get("Health") or {}).get("Status")
        return status or state.get("Status") or "unknown"

    def expected_image(self, version: Any, instance: Instance) -> str | None:
        return _artifact_image_id(version)

    def unmanaged(self, instance: Instance) -> str | None:
        return None  # the provider only finds containers kiln labelled


class AWSInspector:
    """The AWS view of an instance of an Auto Scaling group, through the group's provider."""

    def __init__(self, provider: Any):
        self.provider = provider

    def filesystem_changes(self, instance: Instance) -> list[PathChange]:
        return []  # an EC2 instance's disk is not inspected from outside

    def image_id(self, instance: Instance) -> str | None:
        return instance.extra.get("image_id")

    def health(self, instance: Instance) -> str:
        verdict = self.provider.health(instance)
        if verdict.ok:
            return "healthy"
        return "unhealthy" if verdict.answered else "starting"

    def expected_image(self, version: Any, instance: Instance) -> str | None:
        amis = (getattr(version, "artifacts", None) or {}).get("ami") or {}
        return amis.get(instance.extra.get("region"))

    def unmanaged(self, instance: Instance) -> str | None:
        if instance.extra.get("launched_by_kiln"):
            return None
        return f"launched by Auto Scaling group {self.provider.asg_name} itself, not by a kiln roll-out"


# --------------------------------------------------------------------------- detection


def _artifact_image_id(version: Any) -> str | None:
    """The docker image id a catalog version was built as (``artifacts.docker.image_id``)."""
    artifacts = getattr(version, "artifacts", None) or {}
    docker = artifacts.get("docker") if isinstance(artifacts, dict) else None
    return docker.get("image_id") if isinstance(docker, dict) else None


def _is_revoked(version: Any) -> bool:
    return getattr(version, "status", "active") == "revoked"


def _finding(kind: str, inst: Instance, detail: str, **extra: Any) -> Finding:
    return Finding(kind, inst.group, inst.name, inst.slot, detail, **extra)


def _health(target: GroupTarget, inst: Instance, inspector: Inspector | None) -> str:
    """One look: the runtime's state for a stopped instance, else one probe when a check is configured."""
    if not getattr(inst, "alive", True) or not inst.probe_address or not target.health:
        return inspector.health(inst) if inspector is not None else "unknown"
    check = HealthCheck.from_options(
        {**target.health, "timeout": min(float(target.health.get("timeout") or 2), 2)}
    )
    result = probe_once(check, inst)
    if result.ok:
        return "healthy"
    return "unhealthy" if result.answered else "no answer"


def _served(lb: LoadBalancer | None) -> tuple[dict[str, str] | None, str]:
    """(server states, why none) of the group's load balancer; (None, "") when it has none."""
    if lb is None:
        return None, ""
    try:
        return lb.servers(), "it has no server for the instance"
    except KilnError as exc:
        return {}, f"it does not answer ({exc})"


def check_group(
    target: GroupTarget,
    provider: Provider,
    catalog: _Catalog,
    inspector: Inspector | None,
    filesystem: bool = True,
    strict: bool = True,
    load_balancer: LoadBalancer | None = None,
) -> GroupDrift:
    """Drift of one group; ``load_balancer`` is the group's, when it has one.

    An unknown channel is an error naming the group and the channel; with ``strict=False`` (status)
    it is noted in ``problem`` and the group is checked as if the channel pointed at no version.
    """
    channels = catalog.channels(target.image)
    problem = None
    if target.channel not in channels:
        known = ", ".join(sorted(channels)) or "none"
        problem = (
            f"group '{target.group}' follows channel '{target.channel}' of image '{target.image}', "
            f"which does not exist; known channels: {known}"
        )
        if strict:
            raise KilnError(problem)
    wanted = None
    if problem is None:
        try:  # the catalog refuses a channel it cannot vouch for (an edited row, a bad signature)
            wanted = catalog.channel_version(target.image, target.channel)
        except KilnError as exc:
            if strict:
                raise
            problem = f"group '{target.group}': {exc.msg}"
    expected = wanted.ref if wanted is not None else None
    result = GroupDrift(target.group, target.image, target.channel, expected, problem)
    versions: dict[str, Any] = {}
    served, why = _served(load_balancer)
    for inst in sorted(provider.list_instances(target.group), key=lambda i: (i.slot, i.started_at)):
        found: list[Finding] = []
        if inst.version != expected:
            wants = expected or f"no version (channel {target.channel} is empty)"
            detail = f"runs {inst.version or 'no version label'}, channel {target.channel} wants {wants}"
            found.append(_finding("version", inst, detail, expected=expected, actual=inst.version))
        if inst.version not in versions:
            versions[inst.version] = catalog.find(inst.version) if inst.version else None
        version = versions[inst.version]
        if version is None:
            detail = f"runs {inst.version or '?'}, which is not in the catalog"
            found.append(_finding("revoked", inst, detail, actual=inst.version))
        elif _is_revoked(version):
            reason = (getattr(version, "revocation", None) or {}).get("reason")
            detail = f"runs revoked {inst.version}" + (f" ({reason})" if reason else "")
            found.append(_finding("revoked", inst, detail, actual=inst.version))
        health = _health(target, inst, inspector)
        if served is not None and getattr(inst, "alive", True) and served.get(inst.name) != SERVER_READY:
            state = served.get(inst.name)
            reason = f"its server is in state {state}" if state else why
            detail = f"is not served by the group's load balancer: {reason}"
            found.append(_finding("lb", inst, detail, expected=SERVER_READY, actual=state))
        if inspector is not None:
            built = inspector.expected_image(version, inst) if version is not None else None
            running = inspector.image_id(inst)
            if built and running and built != running:
                detail = f"claims {inst.version} (image {built[:19]}) but runs image {running[:19]}"
                found.append(_finding("image", inst, detail, expected=built, actual=running))
            paths = inspector.filesystem_changes(inst) if filesystem else []
            if paths:
                detail = f"{len(paths)} path(s) changed outside data volumes since the instance was made"
                found.append(_finding("filesystem", inst, detail, paths=paths))
            origin = inspector.unmanaged(inst)
            if origin:
                found.append(_finding("unmanaged", inst, origin))
        result.findings.extend(found)
        result.instances.append(
            InstanceState(
                name=inst.name,
                id=inst.id,
                slot=inst.slot,
                version=inst.version,
                started_at=inst.started_at,
                health=health,
                drift=sorted({f.kind for f in found}, key=DRIFT_KINDS.index),
            )
        )
    return result


def load_balancer_of(target: GroupTarget) -> LoadBalancer | None:
    """The group's load balancer, for its ``load_balancer`` name; an unknown name is refused."""
    if target.load_balancer == "haproxy":
        from ..loadbalancers.haproxy.loadbalancer import HAProxyLoadBalancer

        return HAProxyLoadBalancer(target.group)
    if target.load_balancer == "aws":
        from ..common.aws import AWSSettings
        from ..loadbalancers.aws.target_group import TargetGroupLoadBalancer

        options = target.load_balancer_options
        return TargetGroupLoadBalancer(AWSSettings.from_options(target.aws), target.group, **options)
    if target.load_balancer == "none":
        return None
    known = ", ".join(LOAD_BALANCERS)
    raise KilnError(f"group '{target.group}': unknown load balancer '{target.load_balancer}'; known: {known}")


def backends(target: GroupTarget) -> tuple[Provider, Inspector]:
    """The provider and inspector for a group's ``provider`` name; an unknown name is refused."""
    if target.provider == "docker":
        from ..providers.docker.provider import DockerProvider

        try:
            return DockerProvider(**target.provider_options), DockerInspector()
        except TypeError as exc:
            raise KilnError(f"group '{target.group}': bad provider_options for docker: {exc}") from exc
    if target.provider == "aws":
        from ..common.aws import AWSSettings
        from ..providers.aws.provider import AutoScalingProvider

        try:
            provider = AutoScalingProvider(AWSSettings.from_options(target.aws), **target.provider_options)
        except TypeError as exc:
            raise KilnError(f"group '{target.group}': bad provider_options for aws: {exc}") from exc
        return provider, AWSInspector(provider)
    raise KilnError(f"group '{target.group}': unknown provider '{target.provider}'; known: docker, aws")


def detect(
    targets: list[GroupTarget],
    catalog: _Catalog,
    provider: Provider | None = None,
    inspector: Inspector | None = None,
    filesystem: bool = True,
    strict: bool = True,
    load_balancer: LoadBalancer | None = None,
) -> DriftReport:
    """Drift of every group in ``targets``; changes nothing.

    Without ``provider``, each group's own (``GroupTarget.provider``, ``GroupTarget.load_balancer``)
    and its inspector are used; with one, ``load_balancer`` (if any) is the group's load balancer.
    """
    groups = []
    for target in targets:
        if provider is None:
            group_provider, group_inspector = backends(target)
            group_lb = load_balancer_of(target)
        else:
            group_provider, group_inspector, group_lb = provider, inspector, load_balancer
        groups.append(
            check_group(target, group_provider, catalog, group_inspector, filesystem, strict, group_lb)
        )
    return DriftReport(groups=groups)


def render(report: DriftReport) -> str:
    """The findings as text, one block per group; what ``invoke drift`` prints."""
    lines: list[str] = []
    for group in report.groups:
        head = f"{group.group} ({group.image}@{group.channel} -> {group.expected or 'none'}):"
        if not group.drifted:
            lines.append(f"{head} no drift in {len(group.instances)} instance(s)")
            continue
        lines.append(f"{head} {len(group.findings)} finding(s)")
        for f in group.findings:
            lines.append(f"  {f.instance} [slot {f.slot}] {f.kind}: {f.detail}")
            if f.kind == "filesystem":
                lines.extend(f"      {p}" for p in f.paths)
    return "\n".join(lines)
