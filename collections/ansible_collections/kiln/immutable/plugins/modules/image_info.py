#!/usr/bin/python
# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: image_info
short_description: Query kiln's image catalog - versions, channels, history, diffs and the audit trail
version_added: 0.1.0
description:
  - Returns versions of an image (newest first, one page at a time), a single version, what a channel
    points at and the channel's history, the difference between two versions, the audit trail, or the
    result of verifying the audit trail.
  - Never changes anything and never reports changed.
author:
  - kiln developers (@kiln)
extends_documentation_fragment:
  - kiln.immutable.attributes
  - kiln.immutable.attributes.actiongroup_kiln
  - kiln.immutable.attributes.info_module
  - kiln.immutable.catalog
options:
  image:
    description:
      - The image to list versions and channels of. Without it (and without O(version)), the list of images.
    type: str
  version:
    description: One version to return, as C(image/name) (C(web/7)) or a bare name with O(image).
    type: str
  channel:
    description: A channel of O(image); returns the version it points at and, with O(history), its moves.
    type: str
  history:
    description: Return the channel history (of O(channel), or of every channel of O(image)).
    type: bool
    default: false
  diff:
    description:
      - Two versions to compare, oldest first, for example C([web/6, web/7]).
      - Returns the packages added, removed, upgraded and downgraded, and the build inputs that changed.
    type: list
    elements: str
  events:
    description: Return the newest entries of the audit trail.
    type: bool
    default: false
  verify:
    description:
      - Check the whole audit trail (every hash, every link, the head) and that the catalog agrees with it.
      - The task fails, naming each problem, when an event was edited or deleted.
    type: bool
    default: false
  limit:
    description: Page size for versions, history and events.
    type: int
    default: 50
  before:
    description:
      - For the next page of versions, the name of the last version of the previous page
        (see RV(next_before)).
    type: str
"""

EXAMPLES = r"""
- name: What does prod run?
  kiln.immutable.image_info:
    image: web
    channel: prod
    history: true
  register: kiln_prod

- name: The newest 20 versions of web
  kiln.immutable.image_info:
    image: web
    limit: 20

- name: What changed between two versions
  kiln.immutable.image_info:
    diff: [web/6, web/7]

- name: Fail when the audit trail was tampered with
  kiln.immutable.image_info:
    verify: true
"""

RETURN = r"""
images:
  description: The images in the catalog.
  returned: when neither O(image) nor O(version) is given
  type: list
  elements: str
  sample: [lb, web]
versions:
  description: One page of versions of O(image), newest first (catalog records).
  returned: when O(image) is given without O(version) and O(channel)
  type: list
  elements: dict
next_before:
  description: Pass as O(before) to get the next page; null on the last page.
  returned: with RV(versions)
  type: str
  sample: "31"
channels:
  description: Channel name to the version it points at, for O(image).
  returned: when O(image) is given
  type: dict
  sample: {dev: web/8, staging: web/7, prod: web/6}
version:
  description: The requested version, or the one O(channel) points at (null when it points at none).
  returned: when O(version) or O(channel) is given
  type: dict
  sample:
    ref: web/7
    status: active
    artifacts: {docker: {image_id: "sha256:0f3c...", tag: "kiln/web:7"}}
    flags: []
history:
  description: Channel moves, newest first - who, when, why, from which version to which.
  returned: when O(history=true)
  type: list
  elements: dict
  sample:
    - channel: prod
      version: web/7
      previous: web/6
      action: promote
      principal: ci
      reason: release
      at: "2026-11-27T02:31:22.000000Z"
diff:
  description: What changed from the first version of O(diff) to the second.
  returned: when O(diff) is given
  type: dict
  sample:
    from: web/6
    to: web/7
    packages:
      added: {}
      removed: {}
      upgraded: {openssl: {from: 3.0.11-1~deb12u1, to: 3.0.13-1~deb12u1}}
      downgraded: {}
      unchanged: 212
    inputs: {added: [], removed: [], changed: ["role:golden_image/tasks/main.yml"]}
events:
  description: The newest audit events.
  returned: when O(events=true)
  type: list
  elements: dict
verify:
  description: The audit trail check - C(ok), the number of events, the head hash and the problems found.
  returned: when O(verify=true)
  type: dict
  sample: {ok: true, events: 1042, head: "1042:9c1e...", problems: []}
"""

from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog, split_ref
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.diff import diff_versions
from ansible_collections.kiln.immutable.plugins.module_utils.common.errors import KilnError
from ansible_collections.kiln.immutable.plugins.module_utils.common.module import KilnModule


def query(catalog: Catalog, p: dict) -> dict:
    """Everything the options ask for, in one result."""
    out: dict = {}
    image = p["image"]
    if p["version"]:
        image, name = split_ref(p["version"], image)
        out["version"] = catalog.get(f"{image}/{name}").to_dict()
    if image:
        out["channels"] = catalog.channels(image)
        if p["channel"]:
            if p["channel"] not in out["channels"]:
                known = ", ".join(out["channels"]) or "none"
                raise KilnError(
                    f"unknown channel {p['channel']!r} of image {image!r}; known channels: {known}"
                )
            current = catalog.channel_version(image, p["channel"])
            out["version"] = current.to_dict() if current else None
        if p["history"]:
            out["history"] = catalog.channel_history(image, p["channel"], limit=p["limit"])
        if not p["version"] and not p["channel"]:
            page = catalog.list_versions(image, limit=p["limit"], before=p["before"])
            out["versions"] = [v.to_dict() for v in page]
            out["next_before"] = page[-1].name if len(page) == p["limit"] else None
    elif not p["diff"] and not p["events"] and not p["verify"]:
        out["images"] = catalog.images()
    if p["diff"]:
        if len(p["diff"]) != 2:
            raise KilnError(f"diff takes two versions (oldest first), got {len(p['diff'])}")
        out["diff"] = diff_versions(catalog.get(p["diff"][0], image), catalog.get(p["diff"][1], image))
    if p["events"]:
        out["events"] = catalog.events(limit=p["limit"])
    if p["verify"]:
        out["verify"] = catalog.verify()
    return out


def answer(p: dict) -> dict:
    with Catalog(p["catalog"]) as catalog:
        result = query(catalog, p)
    report = result.get("verify")
    if report and not report["ok"]:
        raise KilnError(
            "the catalog's audit trail does not verify: " + "; ".join(report["problems"]), **result
        )
    return {"changed": False, **result}


def main() -> None:
    module = KilnModule(
        argument_spec=dict(
            image=dict(type="str"),
            version=dict(type="str"),
            channel=dict(type="str"),
            history=dict(type="bool", default=False),
            diff=dict(type="list", elements="str"),
            events=dict(type="bool", default=False),
            verify=dict(type="bool", default=False),
            limit=dict(type="int", default=50),
            before=dict(type="str"),
        ),
        required_by={"channel": "image"},
        diff_mode=False,
    )
    module.run(lambda: answer(module.params))


if __name__ == "__main__":
    main()
