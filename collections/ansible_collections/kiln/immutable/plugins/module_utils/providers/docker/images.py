# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Docker side of retention: which versions containers run, and untagging a version's image.

Retention in the catalog asks these through the functions it is given (see
``catalog.retention``); the catalog itself never talks to Docker.
"""

from __future__ import annotations

from ...common import docker_api
from .provider import LABEL_VERSION, ProviderError


def running_versions() -> set[str]:
    """Refs that instances run: the ``kiln.version`` label of every container, running or stopped.

    An unreachable Docker engine is an error here, since pruning blind could remove an image an
    instance still needs.
    """
    try:
        containers = docker_api.client().containers.list(all=True, filters={"label": LABEL_VERSION})
    except docker_api.DockerUnavailable as exc:
        raise ProviderError(
            f"cannot tell which versions instances run, so nothing is pruned: {exc.msg}"
        ) from exc
    return {c.labels[LABEL_VERSION] for c in containers if c.labels.get(LABEL_VERSION)}


def remove_image(ref: str, artifacts: dict) -> list[str]:
    """Untag the version's Docker image (Docker deletes it once no tag or container needs it).

    Returns the tag or id removed (none when the image is already gone); raises ProviderError
    when it cannot, with a message saying what is left.
    """
    wanted = artifacts.get("docker") or {}
    tag, wanted_id = wanted.get("tag"), wanted.get("image_id")
    if not (tag or wanted_id):
        return []
    try:
        images = docker_api.client().images
        import docker.errors
    except Exception as exc:  # no SDK or no engine: the catalog part is done, say what is left
        raise ProviderError(f"Docker image not removed ({exc})") from exc
    try:
        target = images.get(tag or wanted_id)
        if wanted_id and target.id != wanted_id:
            raise ProviderError(f"tag {tag} now names another image; left alone")
        if tag:
            images.remove(tag)
            return [tag]
        if not target.tags:
            images.remove(wanted_id)
            return [wanted_id]
    except docker.errors.ImageNotFound:
        return []
    except docker.errors.APIError as exc:
        raise ProviderError(f"Docker image not removed: {exc.explanation or exc}") from exc
    return []
