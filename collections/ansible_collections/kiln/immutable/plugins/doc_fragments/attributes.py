# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attribute descriptions every kiln module shares; each module states its own support."""

from __future__ import annotations


class ModuleDocFragment:
    # Standard fragment: the descriptions. Modules add `support:` for each attribute.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description:
      - Can run in C(check_mode) and return the changed status a real run would report, without changing
        anything.
  diff_mode:
    description:
      - Returns the state before and after the change (or the change that would be made in C(check_mode))
        in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode with the same arguments, the second run reports no change.
      - This assumes that what the module controls has not changed in between.
"""

    # Use with the standard fragment for *_info modules.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
  idempotent:
    support: full
    details:
      - This action does not modify state.
"""

    ACTIONGROUP_KILN = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/kiln.immutable.kiln) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - kiln.immutable.kiln
"""
