# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A group's local environment on Docker: its network and HAProxy load balancer; removal of everything.

``up`` creates what a roll-out needs before the first instance (the roll-out itself also does, through
the ``prepare`` hooks) and replaces a load balancer whose image is not the newest version without a
failed request (under the group's roll-out lock, so no roll-out changes its servers meanwhile);
``down`` removes the group's instances, load balancer, network and, unless kept, its data volumes.
Both compute ``changed`` from what exists, so check mode is exact.
"""

from __future__ import annotations

import functools
from typing import Any

from ..catalog.catalog import Catalog
from ..common import docker_api
from ..common.docker_api import network_name
from ..loadbalancers.haproxy.loadbalancer import HAProxyLoadBalancer, LoadBalancerError
from ..providers.docker.provider import DockerProvider
from ..rollout.lock import GroupLock
from .backend_options import build as _build


def provider(options: dict[str, Any] | None = None) -> DockerProvider:
    return _build(DockerProvider, "provider_options", options)


def load_balancer(
    group: str, options: dict[str, Any] | None = None, catalog: str | None = None
) -> HAProxyLoadBalancer:
    """The group's HAProxy; an ``image`` that names a catalog image runs its newest usable version."""
    return _build(
        HAProxyLoadBalancer,
        "load_balancer_options",
        options,
        group=group,
        resolve_image=functools.partial(lb_image, catalog=catalog),
    )


def lb_image(image: str, catalog: str | None = None) -> tuple[str, str]:
    """(docker image id, catalog ref) of the newest active version of ``image`` found in Docker."""
    with Catalog(catalog) as cat:
        versions = cat.list_versions(image, limit=20, status="active")
    for version in versions:
        ref = (version.artifacts.get("docker") or {}).get("image_id")
        if ref and docker_api.image_id(ref):
            return ref, version.ref
    raise LoadBalancerError(
        f"no usable version of image '{image}' in the catalog: build it first with "
        f"`invoke build --image {image}` (ansible-playbook kiln.immutable.build -e kiln_image={image})"
    )


def status(group: str, provider_options=None, load_balancer_options=None, catalog=None) -> dict[str, Any]:
    """What exists of the group: network, load balancer, instances, data volumes."""
    prov = provider(provider_options)
    lb = load_balancer(group, load_balancer_options, catalog)
    container, holder = lb._container(), lb._container(lb.holder_name)
    serving = lb.serving()
    return {
        "group": group,
        "network": network_name(group)
        if docker_api.client().networks.list(names=[network_name(group)])
        else None,
        "load_balancer": {
            "container": lb.container_name if container is not None else None,
            "status": container.status if container is not None else "absent",
            "address_holder": lb.holder_name if holder is not None else None,
            "serving": serving,
            "version": container.labels.get("kiln.version") or container.attrs.get("Image")
            if container is not None
            else None,
            "address": lb.address() if serving else None,
            "servers": lb.servers() if serving else {},
        },
        "instances": [
            {"name": i.name, "slot": i.slot, "version": i.version, "alive": i.alive, "probe": i.probe_address}
            for i in prov.list_instances(group)
        ],
        "volumes": prov.volumes(group),
    }


def up(
    group: str, provider_options=None, load_balancer_options=None, check: bool = False, catalog=None
) -> dict[str, Any]:
    """Create the group's network and load balancer unless they serve; replace an outdated load balancer."""
    prov = provider(provider_options)
    lb = load_balancer(group, load_balancer_options, catalog)
    before = status(group, provider_options, load_balancer_options, catalog)
    outdated = lb.outdated()  # a missing lb image is refused here, in check mode too
    changed = before["network"] is None or not before["load_balancer"]["serving"] or outdated
    if changed and not check:
        prov.prepare(group)
        lock = GroupLock(None, group)
        lock.acquire()
        try:
            lb.upgrade()
        finally:
            lock.release()
    after = before if check else status(group, provider_options, load_balancer_options, catalog)
    return {
        "changed": changed,
        "before": before,
        "after": after,
        "address": after["load_balancer"]["address"],
    }


def down(
    group: str,
    provider_options=None,
    load_balancer_options=None,
    keep_data: bool = False,
    check: bool = False,
    catalog=None,
) -> dict[str, Any]:
    """Remove the group's instances, load balancer, network and (unless ``keep_data``) data volumes."""
    prov = provider(provider_options)
    lb = load_balancer(group, load_balancer_options, catalog)
    before = status(group, provider_options, load_balancer_options, catalog)
    lb_containers = [
        n for n in (before["load_balancer"]["container"], before["load_balancer"]["address_holder"]) if n
    ]
    changed = bool(
        before["network"] or lb_containers or before["instances"] or (before["volumes"] and not keep_data)
    )
    removed: dict[str, list[str]] = {"containers": [], "volumes": [], "networks": []}
    warnings: list[str] = []
    if changed and not check:
        # The load balancer goes first, so no client is sent to an instance being removed.
        removed["containers"].extend(lb.destroy())
        gone = prov.destroy(group, keep_data=keep_data)
        warnings = gone.pop("warnings", [])
        for key, names in gone.items():
            removed[key].extend(names)
    elif changed:
        removed = {
            "containers": lb_containers + [i["name"] for i in before["instances"]],
            "volumes": [] if keep_data else before["volumes"],
            "networks": [before["network"]] if before["network"] else [],
        }
    result = {"changed": changed, "before": before, "removed": removed}
    return {**result, "warnings": warnings} if warnings else result
