# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One way into the Docker engine for the whole engine: a cached Docker SDK client.

Every docker call in kiln goes through :func:`client`, so a missing SDK or a stopped daemon gives
the same clear error everywhere.
"""

from __future__ import annotations

import functools

from .common import KilnError

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


def image_id(ref: str) -> str | None:
    """The id (sha256:...) of a local image, or None when there is no such image."""
    import docker.errors

    try:
        return client().images.get(ref).id
    except docker.errors.ImageNotFound:
        return None
