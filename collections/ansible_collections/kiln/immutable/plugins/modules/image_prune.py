#!/usr/bin/python
# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: image_prune
short_description: Remove old versions of images from kiln's catalog, with their Docker images
version_added: 0.1.0
description:
  - Keeps the newest O(keep) versions of each image and removes the others from the catalog, untagging
    their Docker images so that Docker deletes them once nothing else needs them.
  - Never removes a version that a channel points at, one of the last O(history_depth) versions a channel
    pointed at (so that rollback keeps working), or one that an instance runs (a Docker container labelled
    C(kiln.version), running or stopped).
  - With O(remove_images), the AMIs of a removed version are deregistered in every region and their
    snapshots deleted, unless an instance runs one or a launch template version in use (a default,
    the latest, or the one an Auto Scaling group launches from) names it.
  - The catalog's audit trail keeps the full record of every removed version.
  - In check mode, lists what would be removed and why the rest is kept.
author:
  - kiln developers (@kiln)
extends_documentation_fragment:
  - kiln.immutable.attributes
  - kiln.immutable.attributes.actiongroup_kiln
  - kiln.immutable.catalog
  - kiln.immutable.aws
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  image:
    description: The image to prune; all images when not set.
    type: str
  keep:
    description: How many of the newest versions of each image to keep.
    type: int
    default: 5
  history_depth:
    description: How many of the latest versions of each channel's history are kept for rollback.
    type: int
    default: 3
  remove_images:
    description: Also remove the Docker images of removed versions.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Show what pruning to 5 versions would remove
  kiln.immutable.image_prune:
    keep: 5
  check_mode: true
  register: kiln_would_prune

- name: Keep the newest 10 versions of web
  kiln.immutable.image_prune:
    image: web
    keep: 10
"""

RETURN = r"""
removed:
  description: The versions removed (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [web/3, web/2]
kept:
  description: Every version kept, with the reason.
  returned: always
  type: dict
  sample: {web/9: one of the newest 5, web/4: channel prod points at it, web/1: run by an instance}
images_removed:
  description:
    - The Docker image tags removed, and the AMIs and snapshots deregistered and deleted (C(region:id)).
    - An AMI that an instance or a launch template version in use needs is kept and named in C(warnings).
  returned: always
  type: list
  elements: str
  sample: [kiln/web:3, kiln/web:2]
"""

from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.common import aws
from ansible_collections.kiln.immutable.plugins.module_utils.common.module import KilnModule
from ansible_collections.kiln.immutable.plugins.module_utils.providers.aws import images
from ansible_collections.kiln.immutable.plugins.module_utils.providers.docker.images import (
    remove_image,
    running_versions,
)


def prune(params: dict, check: bool) -> dict:
    settings = aws.AWSSettings.from_options({k: params[k] for k in aws.OPTION_NAMES})
    remover = images.ami_remover(settings, then=remove_image)  # AMIs only where a version has them
    with Catalog(params["catalog"]) as catalog:
        result = catalog.prune(
            params["image"],
            keep=params["keep"],
            history_depth=params["history_depth"],
            check=check,
            running=running_versions,
            remove_artifact=remover if params["remove_images"] else None,
        )
    diff = {"before": {"versions": sorted(result.removed)}, "after": {"versions": []}}
    return {**result.to_dict(), "diff": diff}


def main() -> None:
    module = KilnModule(
        argument_spec=dict(
            image=dict(type="str"),
            keep=dict(type="int", default=5),
            history_depth=dict(type="int", default=3),
            remove_images=dict(type="bool", default=True),
            **aws.argument_spec(),
        ),
        mutually_exclusive=[("profile", "access_key"), ("profile", "session_token")],
    )
    module.run(lambda: prune(module.params, module.check_mode))


if __name__ == "__main__":
    main()
