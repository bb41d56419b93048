#!/usr/bin/python
# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: packer_template_info
short_description: Describe a Packer HCL2 template - variables, sources, builds, provisioners
version_added: 0.1.0
description:
  - Reads a Packer HCL2 template folder with python-hcl2 (nothing is evaluated or run) and returns its
    variables (type, default, sensitive, required), sources, builds with their provisioners and
    post-processors, and the plugins it requires.
  - Resolves the values a build would use from the defaults, the auto var files, O(var_files) and
    O(variables); refuses a variable the template does not declare and reports required ones without a
    value.
  - With O(validate), also runs C(packer validate) with those values.
  - Malformed HCL fails with the file, line and column.
  - Never changes anything and never reports changed.
author:
  - kiln developers (@kiln)
extends_documentation_fragment:
  - kiln.immutable.attributes
  - kiln.immutable.attributes.actiongroup_kiln
  - kiln.immutable.attributes.info_module
  - kiln.immutable.packer_template
options:
  validate:
    description:
      - Run C(packer validate) on the template with the resolved values (and C(version=0) unless
        O(variables) sets it). Fails when a required variable has no value or Packer finds an error.
    type: bool
    default: false
seealso:
  - module: kiln.immutable.packer_build
"""

EXAMPLES = r"""
- name: Describe the web template
  kiln.immutable.packer_template_info:
    template: packer/web
  register: web_template

- name: Show its required variables
  ansible.builtin.debug:
    var: web_template.required_variables

- name: Check values against the template and let Packer validate it
  kiln.immutable.packer_template_info:
    template: packer/web
    variables:
      base_image: kiln/base:bookworm
    validate: true
"""

RETURN = r"""
path:
  description: The template folder, or the single template file.
  returned: always
  type: str
single_file:
  description: Whether O(template) is one C(.pkr.hcl) file read on its own.
  returned: always
  type: bool
files:
  description: The C(*.pkr.hcl) files read.
  returned: always
  type: list
  elements: str
  sample: [plugins.pkr.hcl, web.pkr.hcl]
auto_var_files:
  description: C(*.auto.pkrvars.hcl) and C(*.auto.pkrvars.json) files Packer applies by itself (a
    folder only).
  returned: always
  type: list
  elements: str
var_files:
  description: Other C(*.pkrvars.hcl) and C(*.pkrvars.json) files in the folder, applied only when named.
  returned: always
  type: list
  elements: str
plugins_files:
  description: Files holding a C(packer {}) block (the block is left out for Packer before 1.7).
  returned: always
  type: list
  elements: str
variables:
  description: Each declared variable with its type, description, file, whether it is required or
    sensitive, and its default (masked when sensitive).
  returned: always
  type: dict
  sample:
    version: {type: string, required: true, sensitive: false, description: Version name, file: web.pkr.hcl}
locals:
  description: The names of the template's locals.
  returned: always
  type: list
  elements: str
required_variables:
  description: Variables without a default.
  returned: always
  type: list
  elements: str
resolved_variables:
  description: The value of each variable a build would use (sensitive values masked).
  returned: always
  type: dict
missing_variables:
  description: Required variables without a value (C(version) is not listed; kiln sets it).
  returned: always
  type: list
  elements: str
kiln_ready:
  description: Whether the template declares the C(version) variable kiln sets.
  returned: always
  type: bool
sources:
  description: Each source (C(docker.web)) with its configuration as written (expressions unevaluated).
  returned: always
  type: dict
builds:
  description:
    - Each build with its sources, provisioners (in file order) and post-processor chains.
    - A C(dynamic) block is reported with its C(for_each) and C(count), the number of blocks it makes,
      or C(not known before Packer runs) when that depends on more than variables and locals.
    - C(sources) written as an expression (C(sources = var.x)) is C(not known before Packer runs), with
      the expression in C(sources_expression).
  returned: always
  type: list
  elements: dict
required_plugins:
  description: The plugins the template requires (Packer 1.7 and newer).
  returned: always
  type: dict
valid:
  description: True when O(validate) ran and Packer accepted the template.
  returned: when O(validate=true)
  type: bool
packer_version:
  description: The Packer version that validated it.
  returned: when O(validate=true)
  type: str
"""

from ansible_collections.kiln.immutable.plugins.module_utils.build.flow import module_variables, template_info
from ansible_collections.kiln.immutable.plugins.module_utils.common.module import KilnModule


def describe(module: KilnModule) -> dict:
    p = module.params
    variables, secrets = module_variables(p["template"], p["variables"], p["sensitive_variables"])
    module.no_log_values.update(secrets)
    info = template_info(
        p["template"],
        variables,
        p["var_files"],
        validate_with_packer=p["validate"],
        packer_path=p["packer_path"],
    )
    return {"changed": False, **info}


def main() -> None:
    module = KilnModule(
        argument_spec=dict(
            template=dict(type="path", required=True),
            variables=dict(type="dict", default={}),
            sensitive_variables=dict(type="dict", default={}, no_log=True),
            var_files=dict(type="list", elements="path", default=[]),
            packer_path=dict(type="path"),
            validate=dict(type="bool", default=False),
        ),
        catalog=False,
    )
    module.run(lambda: describe(module))


if __name__ == "__main__":
    main()
