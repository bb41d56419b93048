# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Docker provider: a group's instances are labelled containers on the group's own network.

Every instance runs the image a catalog version names, with a read-only root filesystem, ``/tmp`` on
tmpfs, no capabilities, and its slot's data volume at ``/srv/data``. The load balancer reaches it at
its address on the group network, and so does kiln's health probe: no port is published (a published
port costs a docker-proxy process and iptables rules per instance, which slows down starting many at
once). With ``publish``, it is also published on 127.0.0.1 with a port Docker picks, and probed
there. Labels carry everything kiln needs to find it again after a crash: group, slot, version and
image. Nothing else is remembered, so the provider's view is the engine's truth.
"""

from __future__ import annotations

import atexit
import threading
import time
import uuid
from typing import Any

from ...common import docker_api
from ...common.errors import KilnError
from ...rollout.health import ProbeResult
from ...rollout.interfaces import Instance

LABEL_GROUP = "kiln.group"
LABEL_SLOT = "kiln.slot"
LABEL_VERSION = "kiln.version"
LABEL_IMAGE = "kiln.image"


class ProviderError(KilnError):
    pass


def volume_name(group: str, slot: int) -> str:
    return f"kiln-{group}-{slot}-data"


def image_of(version: Any) -> str:
    """The docker image a catalog version names (id first: a tag can move)."""
    docker = (getattr(version, "artifacts", None) or {}).get("docker") or {}
    ref = docker.get("image_id") or docker.get("tag")
    if not ref:
        raise ProviderError(f"version {version.ref} has no docker artifact: it was not built for docker")
    if docker_api.image_id(ref) is None:
        raise ProviderError(
            f"the docker image {ref} of version {version.ref} is not in the local Docker engine; rebuild it"
        )
    return ref


# Containers this process is reaping after terminate(): id -> thread. settle() waits for them.
_REAPING: dict[str, threading.Thread] = {}
_REAPING_LOCK = threading.Lock()


def _reap(container_id: str, stop_timeout: int) -> None:
    try:
        # docker stop: the stop signal, SIGKILL after stop_timeout, and no restart by the restart policy.
        docker_api.remove_container(container_id, stop_timeout=stop_timeout)
    except Exception:  # an instance that outlives us is reported by list_instances and removed later
        pass
    finally:
        with _REAPING_LOCK:
            _REAPING.pop(container_id, None)


def settle(timeout: float = 60.0) -> None:
    """Wait until the containers this process terminated are removed (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        with _REAPING_LOCK:
            threads = list(_REAPING.values())
        if not threads:
            return
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if time.monotonic() >= deadline:
            return


atexit.register(settle)


class DockerProvider:
    """The Provider of rollout.interfaces on the local Docker engine.

    Options (``provider_options`` in the inventory): ``port`` the app listens on in the container,
    ``bind`` the host address it is published on, ``data_path`` where the slot volume is mounted,
    ``tmpfs_size``, ``stop_timeout`` (seconds between SIGTERM and SIGKILL on terminate),
    ``memory`` (a docker memory limit like "128m"), ``publish`` (also publish the app on ``bind``
    with a port Docker picks, for a probe that cannot reach the group network).
    """

    def __init__(
        self,
        port: int = 8080,
        bind: str = "127.0.0.1",
        data_path: str = "/srv/data",
        tmpfs_size: str = "16m",
        stop_timeout: int = 5,
        memory: str | None = None,
        publish: bool = False,
    ):
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ProviderError(f"provider_options.port must be a port number, got {port!r}")
        if not str(data_path).startswith("/"):
            raise ProviderError(f"provider_options.data_path must be an absolute path, got {data_path!r}")
        self.port = port
        self.bind = bind
        self.data_path = data_path
        self.tmpfs_size = tmpfs_size
        self.stop_timeout = int(stop_timeout)
        self.memory = memory
        self.publish = bool(publish)

    # ------------------------------------------------------------------ the Provider protocol

    def prepare(self, group: str) -> bool:
        """Create the group network; True when it was created."""
        return docker_api.ensure_network(docker_api.network_name(group), {LABEL_GROUP: group})

    def _containers(self, group: str) -> list:
        return docker_api.client().containers.list(
            all=True, filters={"label": [f"{LABEL_GROUP}={group}", LABEL_SLOT]}, ignore_removed=True
        )

    def list_instances(self, group: str) -> list[Instance]:
        settle()  # what this process terminated is gone before anyone looks
        out = []
        for container in self._containers(group):
            if container.status in ("removing", "dead"):
                continue
            out.append(self._instance(container, group))
        return sorted(out, key=lambda i: (i.slot, i.started_at))

    def launch(self, group: str, slot: int, version: Any) -> Instance:
        image = image_of(version)
        network = docker_api.network_name(group)
        volume = volume_name(group, slot)
        docker_api.ensure_network(network, {LABEL_GROUP: group})
        docker_api.ensure_volume(volume, {LABEL_GROUP: group, LABEL_SLOT: str(slot)})
        name = f"kiln-{group}-{slot}-{uuid.uuid4().hex[:6]}"
        labels = {
            LABEL_GROUP: group,
            LABEL_SLOT: str(slot),
            LABEL_VERSION: version.ref,
            LABEL_IMAGE: version.image,
        }
        extra: dict[str, Any] = {}
        if self.memory:
            extra["mem_limit"] = self.memory
        if self.publish:
            extra["ports"] = {f"{self.port}/tcp": (self.bind, None)}
        try:
            container = docker_api.client().containers.run(
                image,
                name=name,
                detach=True,
                labels=labels,
                read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={self.tmpfs_size}"},
                volumes={volume: {"bind": self.data_path, "mode": "rw"}},
                network=network,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                stop_signal="SIGTERM",
                # Back after a restart of the Docker daemon or of the machine; terminate() lifts it first.
                restart_policy={"Name": "unless-stopped"},
                **extra,
            )
            container.reload()
            instance = self._instance(container, group)
            if not instance.probe_address or not instance.backend_address:
                raise ProviderError(
                    f"container {name} is {container.status} right after start: "
                    + container.logs(tail=10).decode(errors="replace").strip()
                )
            return instance
        except Exception as exc:
            # A failed launch leaves nothing behind: the engine never learns about this container.
            docker_api.remove_container(name, stop_timeout=0)
            if isinstance(exc, KilnError):
                raise
            raise ProviderError(
                f"cannot launch {version.ref} into slot {slot} of group {group} from image {image}: {exc}"
            ) from exc

    def terminate(self, instance: Instance) -> None:
        """Stop and remove the container in the background (SIGTERM, SIGKILL after ``stop_timeout``).

        The instance is already out of the load balancer, so waiting for it would only hold up the
        roll-out; ``list_instances`` waits for what this process terminated. A reaping cut short by the
        death of this process leaves a container that ``list_instances`` reports and the next roll-out
        removes.
        """
        target = instance.id or instance.name
        reaper = threading.Thread(
            target=_reap, args=(target, self.stop_timeout), name=f"kiln-reap-{instance.name}", daemon=True
        )
        with _REAPING_LOCK:
            _REAPING[target] = reaper
        reaper.start()

    def health(self, instance: Instance) -> ProbeResult | None:
        """Docker's verdict on a new instance, asked before each probe; None while it runs as launched.

        A container that started again since its launch (a crash under its restart policy, a restart of
        the Docker daemon, which hands out new addresses) fails it: its old address may now answer for
        another container. One that is gone fails it too. A stopped container and an engine that does not
        answer are no verdict yet: the daemon may be restarting, and acting then would fail as well.
        """
        import docker.errors

        try:
            container = docker_api.client().containers.get(instance.id or instance.name)
        except docker.errors.NotFound:
            return ProbeResult(False, True, f"container {instance.name} is gone")
        except Exception as exc:  # the SDK raises several types for a daemon that does not answer
            return ProbeResult(
                False, False, f"the Docker engine does not answer about {instance.name}: {exc}"
            )
        state = container.attrs.get("State") or {}
        if container.status != "running":
            return ProbeResult(False, False, f"container {instance.name} is {container.status}")
        if abs(docker_api.started_at(state.get("StartedAt")) - instance.started_at) > 0.001:
            return ProbeResult(
                False,
                True,
                f"container {instance.name} started again since its launch: its address may have moved",
            )
        return None

    # ------------------------------------------------------------------ the environment

    def destroy(self, group: str, keep_data: bool = False) -> dict[str, list[str]]:
        """Remove every instance of the group, its data volumes (unless ``keep_data``) and its network.

        Names what it removed by kind, and under ``warnings`` what it had to leave.
        """
        import docker.errors

        settle()
        engine = docker_api.client()
        removed: dict[str, list[str]] = {"containers": [], "volumes": [], "networks": []}
        for container in self._containers(group):
            if docker_api.remove_container(container.id, stop_timeout=self.stop_timeout):
                removed["containers"].append(container.name)
        if not keep_data:
            for volume in engine.volumes.list(filters={"label": f"{LABEL_GROUP}={group}"}):
                try:
                    volume.remove()
                    removed["volumes"].append(volume.name)
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as exc:
                    raise ProviderError(
                        f"cannot remove data volume {volume.name} of group {group}: {exc}"
                    ) from exc
        network = docker_api.network_name(group)
        try:
            if docker_api.remove_network(network):
                removed["networks"].append(network)
        except KilnError as exc:
            if "active endpoints" not in str(exc) or engine.networks.get(network).attrs.get("Containers"):
                raise ProviderError(f"cannot remove the network of group {group}: {exc}") from exc
            # Nothing is attached, yet the engine still counts endpoints of removed containers (a Docker
            # bug, moby/moby#43286): the network is empty, the next `up` uses it, a daemon restart clears it.
            removed["warnings"] = [
                f"the empty network {network} of group {group} stays: the Docker engine still counts "
                "endpoints of removed containers (moby/moby#43286); the group's next up uses it again, "
                "and a restart of the Docker daemon clears it"
            ]
        return removed

    def volumes(self, group: str) -> list[str]:
        engine = docker_api.client()
        return sorted(v.name for v in engine.volumes.list(filters={"label": f"{LABEL_GROUP}={group}"}))

    # ------------------------------------------------------------------ reading a container

    def _instance(self, container, group: str) -> Instance:
        attrs = container.attrs
        labels = attrs.get("Config", {}).get("Labels") or {}
        settings = attrs.get("NetworkSettings") or {}
        net = (settings.get("Networks") or {}).get(docker_api.network_name(group)) or {}
        backend = f"{net['IPAddress']}:{self.port}" if net.get("IPAddress") else ""
        probe = backend
        for binding in (settings.get("Ports") or {}).get(f"{self.port}/tcp") or []:
            if binding.get("HostPort"):
                probe = f"{binding.get('HostIp') or self.bind}:{binding['HostPort']}"
                break
        try:
            slot = int(labels.get(LABEL_SLOT, "-1"))
        except ValueError:
            slot = -1
        state = attrs.get("State") or {}
        return Instance(
            id=container.id,
            name=container.name,
            group=group,
            slot=slot,
            version=labels.get(LABEL_VERSION, ""),
            probe_address=probe,
            backend_address=backend,
            started_at=docker_api.started_at(state.get("StartedAt")),
            alive=container.status == "running",
            extra={
                "state": container.status,
                "image_id": attrs.get("Image"),
                "volume": volume_name(group, slot),
                "exit_code": state.get("ExitCode"),
            },
        )
