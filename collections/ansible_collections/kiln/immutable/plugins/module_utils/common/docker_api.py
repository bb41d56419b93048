# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One way into the Docker engine for the whole engine: a cached Docker SDK client.

Every docker call in kiln goes through :func:`client`, so a missing SDK or a stopped daemon gives
the same clear error everywhere.
"""

from __future__ import annotations

import datetime
import functools

from .errors import KilnError

HOW_TO_INSTALL = (
    "install the Docker engine (Debian: apt-get install docker.io), start it (dockerd), "
    "and the Python SDK in the interpreter running kiln (pip install docker)"
)


class DockerUnavailable(KilnError):
    pass


@functools.lru_cache(maxsize=1)
def client():
    try:
        import docker
    except ImportError as exc:
        raise DockerUnavailable(f"the Docker SDK for Python is missing ({exc}); {HOW_TO_INSTALL}") from exc
    try:
        engine = docker.from_env(timeout=120)
        engine.ping()
    except Exception as exc:  # the SDK raises several types for "no daemon"
        raise DockerUnavailable(f"cannot reach the Docker engine: {exc}; {HOW_TO_INSTALL}") from exc
    return engine


def started_at(text: str | None) -> float:
    """Docker's RFC 3339 time with nanoseconds ("2024-05-01T10:00:00.123456789Z") as epoch seconds."""
    if not text or text.startswith("0001-"):
        return 0.0
    head, frac = (text.rstrip("Z").split(".", 1) + [""])[:2]
    stamp = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.UTC)
    return stamp.timestamp() + (float(f"0.{frac[:6]}") if frac else 0.0)


def image_id(ref: str) -> str | None:
    """The id (sha256:...) of a local image, or None when there is no such image."""
    import docker.errors

    try:
        return client().images.get(ref).id
    except docker.errors.ImageNotFound:
        return None


def ensure_network(name: str, labels: dict[str, str]) -> bool:
    """Create the bridge network ``name`` unless it exists; True when it was created."""
    import docker.errors

    engine = client()
    if engine.networks.list(names=[name]):
        return False
    try:
        engine.networks.create(name, driver="bridge", labels=labels, check_duplicate=True)
    except docker.errors.APIError as exc:
        if engine.networks.list(names=[name]):  # created by a concurrent caller
            return False
        raise KilnError(f"cannot create docker network {name}: {exc}") from exc
    return True


def ensure_volume(name: str, labels: dict[str, str]) -> bool:
    """Create the named volume unless it exists; True when it was created."""
    import docker.errors

    engine = client()
    try:
        engine.volumes.get(name)
        return False
    except docker.errors.NotFound:
        pass
    try:
        engine.volumes.create(name, labels=labels)  # idempotent on the engine side
    except docker.errors.APIError as exc:
        raise KilnError(f"cannot create docker volume {name}: {exc}") from exc
    return True


def remove_container(name_or_id: str, stop_timeout: int = 5) -> bool:
    """Stop and remove a container; True when there was one. A container already gone is not an error."""
    import docker.errors

    try:
        container = client().containers.get(name_or_id)
    except docker.errors.NotFound:
        return False
    try:
        if container.status in ("running", "restarting", "paused"):
            container.stop(timeout=stop_timeout)
        container.remove(v=False, force=True)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        if "already in progress" in str(exc) or "No such container" in str(exc):
            return True
        raise KilnError(f"cannot remove container {name_or_id}: {exc}") from exc
    return True


def remove_network(name: str) -> bool:
    """Remove a network; True when there was one. A network already gone is not an error."""
    import docker.errors

    try:
        client().networks.get(name).remove()
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        raise KilnError(f"cannot remove docker network {name}: {exc}") from exc
    return True


def network_name(group: str) -> str:
    """The Docker network of a kiln group: its instances and its load balancer meet there."""
    return f"kiln-{group}"
