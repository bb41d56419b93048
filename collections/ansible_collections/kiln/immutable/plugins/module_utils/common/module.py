# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The base of every kiln module: the shared options, check mode, and errors turned into results.

A module declares its own options, then hands one call to :meth:`KilnModule.run`:

    module = KilnModule(argument_spec=dict(...))
    module.run(lambda: do_the_work(module.params, check=module.check_mode))

The call returns the result dict. A :class:`KilnError` becomes ``fail_json`` with its message and
details, without ``path``: Ansible would add that file's owner and mode to the error. ``warnings`` in a
result reach the user through ``module.warn``; ``diff`` is returned only in diff mode. Option defaults
that belong to a dataclass come from it (:func:`dataclass_spec`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from .errors import KilnError

# the option every module that reads or writes the image catalog has (doc fragment kiln.immutable.catalog)
CATALOG_SPEC = {"catalog": {"type": "path"}}

# Ansible adds a file's owner, mode and gid to any result with this key; kiln's messages name the file
_FILE_INFO_KEYS = ("path",)

_ANSIBLE_TYPES = {
    "str": {"type": "str"},
    "int": {"type": "int"},
    "float": {"type": "float"},
    "bool": {"type": "bool"},
    "dict": {"type": "dict"},
    "Any": {"type": "raw"},
    "list[int]": {"type": "list", "elements": "int"},
    "list[str]": {"type": "list", "elements": "str"},
    "list[dict[str, Any]]": {"type": "list", "elements": "dict"},
}


def dataclass_spec(cls: type, **extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An argument spec with one option per field of the dataclass ``cls``: its type and its default.

    ``extra`` adds to a field's entry (``choices``, ``aliases``); a default of None means no default.
    """
    spec = {}
    for item in dataclasses.fields(cls):
        annotation = str(item.type).replace(" | None", "")
        if annotation not in _ANSIBLE_TYPES:
            raise TypeError(f"{cls.__name__}.{item.name}: no Ansible type for {item.type!r}")
        entry = dict(_ANSIBLE_TYPES[annotation])
        if item.default_factory is not dataclasses.MISSING:
            entry["default"] = item.default_factory()
        elif item.default is not dataclasses.MISSING and item.default is not None:
            entry["default"] = item.default
        spec[item.name] = {**entry, **extra.get(item.name, {})}
    return spec


class KilnModule(AnsibleModule):
    """AnsibleModule with kiln's shared options (``catalog`` unless ``catalog=False``) and check mode.

    ``diff_mode=False`` for info modules, whose result may have a ``diff`` of its own (image_info).
    """

    def __init__(self, argument_spec: dict, catalog: bool = True, diff_mode: bool = True, **kwargs: Any):
        spec = {**CATALOG_SPEC, **argument_spec} if catalog else dict(argument_spec)
        super().__init__(argument_spec=spec, supports_check_mode=True, **kwargs)
        self._kiln_diff_mode = diff_mode

    def run(self, action: Callable[[], dict[str, Any]]) -> None:
        """Exit with ``action()``'s result, or fail with the KilnError it raised."""
        try:
            result = action()
        except KilnError as exc:
            # details may carry what was done so far (a test that failed, a roll-out rolled back)
            self.fail_json(msg=exc.msg, **self._shaped(exc.details))
        self.exit_json(**self._shaped(result))

    def fail_json(self, msg: str, **kwargs: Any) -> None:
        for key in _FILE_INFO_KEYS:
            kwargs.pop(key, None)
        super().fail_json(msg=msg, **kwargs)

    def _shaped(self, result: dict[str, Any]) -> dict[str, Any]:
        out = dict(result)
        for warning in out.pop("warnings", None) or []:
            self.warn(warning)
        if self._kiln_diff_mode and not self._diff:
            out.pop("diff", None)
        return out
