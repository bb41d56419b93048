# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options every module that reads a Packer template shares."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  template:
    description:
      - The Packer HCL2 template folder (its C(*.pkr.hcl) files), for example C(packer/web), or one
        C(.pkr.hcl) file, which is then a template of its own (validated and built alone).
      - A folder's C(*.auto.pkrvars.hcl) and C(*.auto.pkrvars.json) files are applied as Packer applies
        them; a single file takes only the var files named in O(var_files), as with Packer.
      - A C(packer {}) block may stand in any file; for Packer older than 1.7, which rejects it, kiln
        leaves the block out of the copy it runs Packer on. Packer 1.7 and newer get C(packer init).
    type: path
    required: true
  variables:
    description:
      - Values for the template's variables, applied over the defaults and the var files.
      - A name the template does not declare is refused before Packer runs.
      - Values of variables the template marks C(sensitive) are masked in the results and errors, reach
        Packer through a var file only this user can read (removed after the run), never its command
        line, and only their keyed hash (HMAC with a secret kept per catalog) reaches the catalog.
    type: dict
    default: {}
  sensitive_variables:
    description:
      - Values for secret variables, as O(variables) takes them, in an option marked C(no_log), so that
        Ansible's own record of the module arguments never holds them either.
      - A name may be set here or in O(variables), not in both.
    type: dict
    default: {}
  var_files:
    description:
      - C(.pkrvars.hcl) or C(.pkrvars.json) files to apply, in order, before O(variables).
    type: list
    elements: path
    default: []
  packer_path:
    description:
      - The Packer executable. Default is C(packer) on E(PATH).
      - Packer 1.6 (Debian 12) and 1.7 or newer (with C(packer init) and plugins) are supported.
    type: path
"""
