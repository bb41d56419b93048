#!/usr/bin/python
# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: drift_info
short_description: Find instances that drifted from what the catalog says a group should run
version_added: 0.1.0
description:
  - For each group, lists the instances whose version differs from the version the group's channel
    points at, the instances on a revoked version (or one the catalog does not know), the instances
    that do not run the artifact of the version they claim (a container started by hand on another
    image), and the instances whose filesystem changed after they were made, with the changed paths.
  - For Docker instances a filesystem change is any change C(docker diff) reports outside the data
    volumes and tmpfs mounts. Instances run with a read-only root filesystem, so any change means
    someone started a container by hand or changed a writable one.
  - Never changes anything and never reports changed. Use RV(drifted) to fail a play or alert.
author:
  - kiln developers (@kiln)
extends_documentation_fragment:
  - kiln.immutable.attributes
  - kiln.immutable.attributes.actiongroup_kiln
  - kiln.immutable.attributes.info_module
  - kiln.immutable.catalog
options:
  groups:
    description:
      - The groups to check, each with the image it runs and the channel it follows.
      - In the local inventory these are the hosts of C(kiln_groups) with their C(kiln_group_image),
        C(kiln_group_channel), C(kiln_group_provider), C(kiln_group_provider_options),
        C(kiln_group_health) and C(kiln_group_load_balancer) variables.
    type: list
    elements: dict
    required: true
    suboptions:
      group:
        description: The group's name, for example C(web-prod).
        type: str
        required: true
      image:
        description: The catalog image the group runs, for example C(web).
        type: str
        required: true
      channel:
        description: The channel the group follows, for example C(prod).
        type: str
        required: true
      provider:
        description: What runs the group's instances (C(aws) - an Auto Scaling group).
        type: str
        default: docker
        choices: [docker, aws]
      provider_options:
        description:
          - Options of the provider, as for the roll-out (for Docker, C(port) the app listens on; for AWS,
            C(auto_scaling_group) and C(launch_template)).
        type: dict
        default: {}
      aws:
        description:
          - For O(groups[].provider=aws) - C(region), C(profile), C(endpoint_url); keys come from the
            environment (E(AWS_ACCESS_KEY_ID), ...) or the profile, as in amazon.aws modules.
        type: dict
        default: {}
      health:
        description:
          - A health check (as for the roll-out - C(type), C(path), C(status), C(timeout)) probed once per
            running instance to report its health. Without it, the provider's own state is reported.
        type: dict
      load_balancer:
        description:
          - The group's load balancer. With C(haproxy), a running instance that the group's HAProxy does
            not send traffic to (a restarted or recreated load balancer without its servers, or none
            running) is drift of kind C(lb).
        type: str
        default: none
        choices: [haproxy, none]
  filesystem:
    description: Look for filesystem changes (one C(docker diff) per instance).
    type: bool
    default: true
"""

EXAMPLES = r"""
# In a play over the inventory's groups (hosts: kiln_groups), one task per group:
- name: Check this group for drift
  kiln.immutable.drift_info:
    groups:
      - group: "{{ inventory_hostname }}"
        image: "{{ kiln_group_image }}"
        channel: "{{ kiln_group_channel }}"
        provider_options: "{{ kiln_group_provider_options }}"
        health: "{{ kiln_group_health }}"
        load_balancer: "{{ kiln_group_load_balancer }}"
  register: kiln_drift

- name: Fail (and let the scheduler alert) when something drifted
  ansible.builtin.fail:
    msg: "{{ kiln_drift.findings | map(attribute='detail') | list }}"
  when: kiln_drift.drifted

- name: Check the prod group without looking at filesystems
  kiln.immutable.drift_info:
    groups:
      - {group: web-prod, image: web, channel: prod}
    filesystem: false
"""

RETURN = r"""
drifted:
  description: Whether any group has any finding.
  returned: always
  type: bool
  sample: true
findings:
  description: Every finding of every group.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: C(version), C(revoked), C(image) or C(filesystem).
      type: str
    group:
      description: The group.
      type: str
    instance:
      description: The instance's name.
      type: str
    slot:
      description: The instance's slot.
      type: int
    detail:
      description: What was found, in words.
      type: str
    expected:
      description: What should run (the channel's version, or the version's image id).
      type: str
    actual:
      description: What runs.
      type: str
    paths:
      description: For C(filesystem), the changed paths and how (C(added), C(changed), C(deleted)).
      type: list
      elements: dict
  sample:
    - kind: filesystem
      group: web-prod
      instance: kiln-web-prod-1-3fa2c1
      slot: 1
      detail: 1 path(s) changed outside data volumes since the instance was made
      expected: null
      actual: null
      paths: [{path: /etc/x, kind: added}]
groups:
  description: Per group - the version its channel points at, its instances (version, health, drift kinds)
    and its findings.
  returned: always
  type: list
  elements: dict
  sample:
    - group: web-prod
      image: web
      channel: prod
      expected: web/7
      drifted: false
      instances:
        - {name: kiln-web-prod-0-a1b2c3, slot: 0, version: web/7, health: healthy, drift: []}
      findings: []
"""

from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.common.module import KilnModule
from ansible_collections.kiln.immutable.plugins.module_utils.deploy.backends import PROVIDERS
from ansible_collections.kiln.immutable.plugins.module_utils.observe.drift import GroupTarget, detect


def find_drift(params: dict) -> dict:
    targets = [GroupTarget.from_dict(item, where=f"groups[{i}]") for i, item in enumerate(params["groups"])]
    with Catalog(params["catalog"]) as catalog:
        doc = detect(targets, catalog, filesystem=params["filesystem"]).to_dict()
    return {
        "changed": False,
        "drifted": doc["drifted"],
        "findings": [f for g in doc["groups"] for f in g["findings"]],
        "groups": doc["groups"],
    }


def main() -> None:
    module = KilnModule(
        argument_spec=dict(
            groups=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(
                    group=dict(type="str", required=True),
                    image=dict(type="str", required=True),
                    channel=dict(type="str", required=True),
                    provider=dict(type="str", default=PROVIDERS[0], choices=list(PROVIDERS)),
                    provider_options=dict(type="dict", default={}),
                    aws=dict(type="dict", default={}),
                    health=dict(type="dict"),
                    load_balancer=dict(type="str", default="none", choices=["haproxy", "none"]),
                ),
            ),
            filesystem=dict(type="bool", default=True),
        ),
    )
    module.run(lambda: find_drift(module.params))


if __name__ == "__main__":
    main()
