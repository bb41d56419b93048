# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters the image test stage uses to compare an image's packages with the catalog."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.kiln.immutable.plugins.module_utils.test_stage.image_test import (
    package_drift,
    parse_dpkg,
)


def dpkg_packages(text):
    if not isinstance(text, str):
        raise AnsibleFilterError(
            f"dpkg_packages expects dpkg-query output as a string, got {type(text).__name__}"
        )
    return parse_dpkg(text)


def drift(expected, actual):
    if not isinstance(expected, dict) or not isinstance(actual, dict):
        raise AnsibleFilterError("package_drift compares two mappings of package name to version")
    return package_drift(dict(expected), dict(actual))


class FilterModule:
    def filters(self):
        return {"dpkg_packages": dpkg_packages, "package_drift": drift}
