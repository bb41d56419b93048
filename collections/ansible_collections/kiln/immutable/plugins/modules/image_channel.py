#!/usr/bin/python
# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: image_channel
short_description: Promote an image version to a channel, or roll a channel back
version_added: 0.1.0
description:
  - Points a channel of an image (C(dev), C(staging), C(prod)) at a version of the image in kiln's catalog,
    either a named version or the version another channel points at, when the promotion policy allows it.
  - Rolls a channel back to its previous assignment, or to a named version it had before. Rolling back
    twice walks further back; revoked versions are stepped over.
  - Every move is recorded in the channel's history (time, principal, reason, previous version) and in the
    catalog's audit trail. The principal is the OS user, or E(KILN_PRINCIPAL) when set.
  - A refusal names every policy rule that failed and changes nothing.
author:
  - kiln developers (@kiln)
extends_documentation_fragment:
  - kiln.immutable.attributes
  - kiln.immutable.attributes.actiongroup_kiln
  - kiln.immutable.catalog
attributes:
  check_mode:
    support: full
    details:
      - Policy rules are checked in check mode too, so a move that would be refused fails.
  diff_mode:
    support: full
  idempotent:
    support: partial
    details:
      - Promoting to the version a channel already points at changes nothing.
      - Each O(state=rollback) moves the channel one step further back.
options:
  image:
    description:
      - The image whose channel moves, for example C(web).
      - Required unless O(version) is a reference such as C(web/7).
    type: str
  channel:
    description: The channel to move.
    type: str
    required: true
  state:
    description:
      - V(present) points the channel at O(version) or at what O(from_channel) points at (a promotion).
      - V(rollback) points the channel back at its previous assignment, or at O(to).
    type: str
    choices: [present, rollback]
    default: present
  version:
    description:
      - The version to promote, as C(image/name) (C(web/7)) or a bare name with O(image).
      - Mutually exclusive with O(from_channel).
    type: str
  from_channel:
    description: Promote the version that this channel of O(image) points at.
    type: str
  to:
    description:
      - With O(state=rollback), the version to go back to; it must have been on the channel before.
      - Without it, the channel goes back to its previous assignment.
    type: str
  reason:
    description: Why the channel moves; kept in the channel history and the audit trail.
    type: str
    default: ""
  policy:
    description:
      - Path of the promotion policy file (YAML) whose rules apply to this move.
      - When not set, the environment variable E(KILN_POLICY); when neither is set, no policy applies
        (only the catalog's own rules, such as refusing revoked versions).
      - When the policy turns C(signing) on, the move is signed and its rules speak of signers.
    type: path
  signing_key:
    description:
      - The SSH key that signs the move when the policy turns C(signing) on, a private key file or the
        public key of a key ssh-agent holds.
      - Default is E(KILN_SIGNING_KEY), else C(~/.config/kiln/signing_key), else the first key of ssh-agent.
    type: path
"""

EXAMPLES = r"""
- name: Promote a version to staging
  kiln.immutable.image_channel:
    channel: staging
    version: web/7
    reason: passed the image tests
    policy: inventories/local/policy.yml

- name: Promote whatever staging runs to prod
  kiln.immutable.image_channel:
    image: web
    channel: prod
    from_channel: staging

- name: Roll prod back to its previous version
  kiln.immutable.image_channel:
    image: web
    channel: prod
    state: rollback
    reason: error rate up after the last roll-out
  register: kiln_prod

- name: Roll prod back to a named version it had before
  kiln.immutable.image_channel:
    image: web
    channel: prod
    state: rollback
    to: web/5
"""

RETURN = r"""
before:
  description: The version the channel pointed at before the move (null for a new channel).
  returned: always
  type: str
  sample: web/6
after:
  description: The version the channel points at after the move (or would, in check mode).
  returned: always
  type: str
  sample: web/7
move:
  description: The move as recorded in the channel history.
  returned: always
  type: dict
  sample:
    image: web
    channel: prod
    before: web/6
    after: web/7
    action: promote
    changed: true
    reason: passed the image tests
    principal: ci-runner
    skipped: []
version:
  description: The catalog record of the version the channel points at after the move.
  returned: when the channel points at a version
  type: dict
  sample:
    ref: web/7
    image: web
    name: "7"
    status: active
    artifacts: {docker: {image_id: "sha256:0f3c...", tag: "kiln/web:7"}}
diff:
  description: The channel's assignment before and after, in diff mode.
  returned: when diff mode is on
  type: dict
  sample: {before: {prod: web/6}, after: {prod: web/7}}
"""

from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.policy import Policy
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.signing import Signer
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.trust import Trust
from ansible_collections.kiln.immutable.plugins.module_utils.common.module import KilnModule


def move_channel(p: dict, check: bool) -> dict:
    policy = Policy.locate(p["policy"])
    with Catalog(p["catalog"], trust=Trust.of(policy, Signer(p["signing_key"]))) as catalog:
        if p["state"] == "rollback":
            move = catalog.rollback(
                p["image"], p["channel"], to=p["to"], reason=p["reason"], policy=policy, check=check
            )
        else:
            move = catalog.promote(
                p["channel"],
                p["version"],
                image=p["image"],
                from_channel=p["from_channel"],
                reason=p["reason"],
                policy=policy,
                check=check,
            )
        result = {
            "changed": move.changed,
            "before": move.before,
            "after": move.after,
            "move": move.to_dict(),
            "diff": {"before": {move.channel: move.before}, "after": {move.channel: move.after}},
        }
        if move.after:
            result["version"] = catalog.get(move.after).to_dict()
    return result


def main() -> None:
    module = KilnModule(
        argument_spec=dict(
            image=dict(type="str"),
            channel=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "rollback"], default="present"),
            version=dict(type="str"),
            from_channel=dict(type="str"),
            to=dict(type="str"),
            reason=dict(type="str", default=""),
            policy=dict(type="path"),
            signing_key=dict(type="path", no_log=False),
        ),
        mutually_exclusive=[("version", "from_channel"), ("to", "version"), ("to", "from_channel")],
        required_if=[
            ("state", "present", ("version", "from_channel"), True),
            ("state", "rollback", ("image",)),
        ],
        required_by={"from_channel": "image"},
    )
    module.run(lambda: move_channel(module.params, module.check_mode))


if __name__ == "__main__":
    main()
