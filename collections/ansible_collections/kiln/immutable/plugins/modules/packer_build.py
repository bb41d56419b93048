#!/usr/bin/python
# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: packer_build
short_description: Bake a golden image with Packer and record it as a version in kiln's catalog
version_added: 0.1.0
description:
  - Loads a Packer HCL2 template, resolves its variables and computes the fingerprint of the build, a hash
    of every input (template and var files, variable values, every file or folder the sources and
    provisioners name, the playbook folders, roles and ansible.cfg the ansible provisioners use, the
    base image id and the Packer version). Sensitive values are hashed with a key kept per catalog.
  - When the catalog already holds a version of the image with that fingerprint, nothing is built and
    the module reports that version with RV(up_to_date=true) and the reason.
  - Otherwise it reserves the next version name, runs C(packer build) with the template's C(version)
    variable set to it, reads the artifacts (docker image id and tags, AMI ids), captures the image's
    Debian package list and registers the version.
  - A failed build registers nothing and leaves none of its containers behind; the error carries the
    Packer command, its exit code and the tail of its output, and the full log stays in RV(log_path).
  - The template must declare a variable C(version); kiln sets it.
author:
  - kiln developers (@kiln)
extends_documentation_fragment:
  - kiln.immutable.attributes
  - kiln.immutable.attributes.actiongroup_kiln
  - kiln.immutable.packer_template
  - kiln.immutable.catalog
attributes:
  check_mode:
    support: full
    details:
      - Loads the template, checks the variables, runs C(packer validate) and reports whether a build
        would run (and which version name it would get), without building or recording anything.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A second run with the same inputs finds the version in the catalog and builds nothing.
options:
  image:
    description:
      - The image name in the catalog. Default is the template folder's name (C(web) for C(packer/web)).
    type: str
  only:
    description:
      - Build only these sources, by name (C(docker.web)) or glob (C(docker.*)), as Packer's C(-only).
      - A pattern that matches no source of the template is refused.
    type: list
    elements: str
    default: []
  except:
    description: Build every source but these (names or globs), as Packer's C(-except).
    type: list
    elements: str
    default: []
  force:
    description: Build a new version even when one with the same fingerprint exists.
    type: bool
    default: false
  timeout:
    description:
      - Seconds the build may take; then Packer is interrupted, cleans up, and the module fails.
      - C(0) means no limit.
    type: int
    default: 3600
  on_error:
    description:
      - What Packer does when a step fails, as its C(-on-error).
      - C(cleanup) removes the build's container or instance.
      - C(abort) leaves it for debugging; kiln then leaves it too.
    type: str
    choices: [cleanup, abort]
    default: cleanup
  capture_packages:
    description: List the Debian packages of a docker image (C(dpkg-query) in a throwaway container).
    type: bool
    default: true
  progress_file:
    description:
      - Append Packer's progress to this file as the build runs, one line per message, for a terminal to
        follow (C(invoke build) shows it).
    type: path
notes:
  - The full machine-readable log is always kept under the state folder's C(logs/); O(progress_file) gets
    the progress as it happens.
  - SIGINT and SIGTERM are passed on to Packer so that it removes what it started.
seealso:
  - module: kiln.immutable.packer_template_info
  - module: kiln.immutable.image_version
"""

EXAMPLES = r"""
- name: Bake the web image (skipped when nothing changed)
  kiln.immutable.packer_build:
    template: packer/web
  register: web_build

- name: Bake with other values, into a given catalog
  kiln.immutable.packer_build:
    template: packer/web
    image: web
    variables:
      base_image: kiln/base:bookworm
    var_files:
      - packer/web/staging.pkrvars.hcl
    only:
      - docker.web
    catalog: /var/lib/kiln/catalog.db

- name: Would a build run?
  kiln.immutable.packer_build:
    template: packer/web
  check_mode: true
  register: would

- name: Rebuild although nothing changed
  kiln.immutable.packer_build:
    template: packer/web
    force: true
"""

RETURN = r"""
changed:
  description: Whether a new version was built (in check mode, whether one would be).
  returned: always
  type: bool
up_to_date:
  description:
    - True when the catalog already had a version with the same fingerprint, so nothing was built.
    - Named so that Ansible does not take the task itself for skipped.
  returned: always
  type: bool
reason:
  description: Why the module built, would build or skipped.
  returned: always
  type: str
  sample: version web/7 was built from the same inputs (fingerprint 4f1c2a9e0b3d)
version:
  description: The version built, found (when skipped), or that would be built (check mode).
  returned: always
  type: str
  sample: web/7
version_name:
  description: The version name alone, as passed to the template's C(version) variable.
  returned: always
  type: str
  sample: "7"
image:
  description: The image name in the catalog.
  returned: always
  type: str
  sample: web
fingerprint:
  description: The hash of every input of the build.
  returned: always
  type: str
inputs:
  description: The hash of each input by name (C(template:web.pkr.hcl), C(var:base_image), C(file:...),
    C(folder:...), C(fileset:...), C(role:...)).
  returned: always
  type: dict
artifacts:
  description: What the build produced (or the found version holds).
  returned: always
  type: dict
  sample:
    docker:
      image_id: sha256:0aae14b78e8f
      tag: kiln/web:7
      tags: [kiln/web:7]
duration_s:
  description: Seconds the build took (0 when skipped).
  returned: always
  type: float
decision_s:
  description: Seconds spent deciding (template, variables, fingerprint, catalog lookup).
  returned: always
  type: float
log_path:
  description: The full Packer log of the build (of the found version's build when skipped).
  returned: always
  type: str
packer_version:
  description: The Packer version used.
  returned: always
  type: str
  sample: 1.6.6
cmd:
  description: The Packer command run, sensitive values masked.
  returned: when a build ran, and on failure
  type: list
  elements: str
rc:
  description: Packer's exit code.
  returned: on failure
  type: int
stdout:
  description: The last lines of Packer's output.
  returned: on failure
  type: str
stderr:
  description: Packer's error output.
  returned: on failure
  type: str
"""

from ansible_collections.kiln.immutable.plugins.module_utils.build.flow import (
    BuildRequest,
    module_variables,
    run,
)
from ansible_collections.kiln.immutable.plugins.module_utils.common.errors import KilnError
from ansible_collections.kiln.immutable.plugins.module_utils.common.files import line_appender
from ansible_collections.kiln.immutable.plugins.module_utils.common.module import KilnModule


def bake(module: KilnModule) -> dict:
    p = module.params
    if p["timeout"] < 0:
        raise KilnError(f"timeout must be 0 (no limit) or more seconds, got {p['timeout']}")
    variables, secrets = module_variables(p["template"], p["variables"], p["sensitive_variables"])
    module.no_log_values.update(secrets)
    request = BuildRequest(
        template=p["template"],
        image=p["image"],
        variables=variables,
        var_files=p["var_files"],
        only=p["only"],
        except_=p["except"],
        force=p["force"],
        catalog=p["catalog"],
        packer_path=p["packer_path"],
        timeout_s=p["timeout"] or None,
        on_error=p["on_error"],
        capture_packages=p["capture_packages"],
    )
    progress = line_appender(p["progress_file"]) if p["progress_file"] else None
    return run(request, check_mode=module.check_mode, on_progress=progress)


def main() -> None:
    module = KilnModule(
        argument_spec=dict(
            template=dict(type="path", required=True),
            image=dict(type="str"),
            variables=dict(type="dict", default={}),
            sensitive_variables=dict(type="dict", default={}, no_log=True),
            var_files=dict(type="list", elements="path", default=[]),
            only=dict(type="list", elements="str", default=[]),
            # "except" is Packer's name; Python cannot use it as an identifier, hence the dict key
            **{"except": dict(type="list", elements="str", default=[])},
            force=dict(type="bool", default=False),
            packer_path=dict(type="path"),
            timeout=dict(type="int", default=3600),
            on_error=dict(type="str", choices=["cleanup", "abort"], default="cleanup"),
            capture_packages=dict(type="bool", default=True),
            progress_file=dict(type="path"),
        ),
        mutually_exclusive=[("only", "except")],
    )
    module.run(lambda: bake(module))


if __name__ == "__main__":
    main()
