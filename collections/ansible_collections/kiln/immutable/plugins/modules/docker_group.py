#!/usr/bin/python
# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_group
short_description: Create or remove a group's local Docker environment - network, load balancer, instances
version_added: 0.1.0
description:
  - With O(state=present), creates the group's docker network C(kiln-<group>) and its load balancer, a
    container C(kiln-<group>-lb) of the C(lb) image baked by kiln, inside the network of
    C(kiln-<group>-lb-net), which holds the group's address on 127.0.0.1. Instances are added by a
    roll-out (M(kiln.immutable.rolling_replace)), which also creates this environment when missing.
  - With O(state=absent), removes the group's instances, its load balancer, its network and, unless
    O(keep_data=true), the data volumes of its slots.
  - A load balancer that serves the newest active version of its image is kept as it is (its servers are
    the live instances). One that does not serve (stopped, or left outside a restarted
    C(kiln-<group>-lb-net)) is started again with the servers last in service.
  - One that runs an older image is replaced without a failed request - the new HAProxy starts beside
    it on the same address with the same servers, and once they are all up the old one stops listening
    and finishes its requests (HAProxy's soft stop). This takes the group's roll-out lock, so it is
    refused while a roll-out of the group runs.
author:
  - kiln developers (@kiln)
extends_documentation_fragment:
  - kiln.immutable.attributes
  - kiln.immutable.attributes.actiongroup_kiln
  - kiln.immutable.catalog
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  name:
    description: The group, for example C(web-prod).
    type: str
    required: true
    aliases: [group]
  state:
    description: Whether the environment should exist.
    type: str
    choices: [present, absent]
    default: present
  provider_options:
    description:
      - Options of the docker provider (C(port), C(bind), C(data_path), C(tmpfs_size), C(stop_timeout),
        C(memory), C(publish)); the same as the roll-out's.
    type: dict
    default: {}
  load_balancer_options:
    description:
      - Options of the HAProxy load balancer - C(port) (host port on 127.0.0.1, 0 for one Docker picks),
        C(image) (a catalog image name whose newest active version runs, or a docker image reference;
        default C(lb)), C(bind), C(health_path), C(check_interval).
    type: dict
    default: {}
  keep_data:
    description: With O(state=absent), keep the slots' data volumes.
    type: bool
    default: false
notes:
  - Needs the Docker SDK for Python and a running Docker engine on the controller.
  - The C(lb) image must be in the catalog first (C(invoke build --image lb)); C(invoke up) builds it.
"""

EXAMPLES = r"""
- name: Create web-prod's network and load balancer on 127.0.0.1:8082
  kiln.immutable.docker_group:
    name: web-prod
    load_balancer_options:
      port: 8082

- name: Remove web-staging but keep its data volumes
  kiln.immutable.docker_group:
    name: web-staging
    state: absent
    keep_data: true
"""

RETURN = r"""
address:
  description: Where clients reach the group through its load balancer.
  returned: state=present
  type: str
  sample: 127.0.0.1:8082
before:
  description: What existed before - network, load balancer, instances, data volumes.
  returned: always
  type: dict
  sample:
    group: web-prod
    network: kiln-web-prod
    load_balancer:
      container: kiln-web-prod-lb
      address_holder: kiln-web-prod-lb-net
      status: running
      serving: true
      version: lb/2
      address: "127.0.0.1:8082"
      servers: {}
    instances: []
    volumes: [kiln-web-prod-0-data]
after:
  description: What exists afterwards (in check mode, the same as RV(before)).
  returned: state=present
  type: dict
removed:
  description: Containers, volumes and networks removed (in check mode, that would be removed).
  returned: state=absent
  type: dict
  sample:
    containers: [kiln-web-prod-lb, kiln-web-prod-lb-net, kiln-web-prod-0-3fa2c1]
    volumes: [kiln-web-prod-0-data]
    networks: [kiln-web-prod]
"""

from ansible_collections.kiln.immutable.plugins.module_utils.common.module import KilnModule
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment


def apply(params: dict, check: bool) -> dict:
    """Create or remove the group's environment; the diff maps what exists before and after."""
    if params["state"] == "present":
        result = docker_environment.up(
            params["name"],
            params["provider_options"],
            params["load_balancer_options"],
            check=check,
            catalog=params["catalog"],
        )
    else:
        result = docker_environment.down(
            params["name"],
            params["provider_options"],
            params["load_balancer_options"],
            keep_data=params["keep_data"],
            check=check,
            catalog=params["catalog"],
        )
    after = result.get("after") or {"network": None, "load_balancer": {"status": "absent"}, "instances": []}
    return {**result, "diff": {"before": result["before"], "after": after}}


def main() -> None:
    module = KilnModule(
        argument_spec=dict(
            name=dict(type="str", required=True, aliases=["group"]),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            provider_options=dict(type="dict", default={}),
            load_balancer_options=dict(type="dict", default={}),
            keep_data=dict(type="bool", default=False),
        ),
    )
    module.run(lambda: apply(module.params, module.check_mode))


if __name__ == "__main__":
    main()
