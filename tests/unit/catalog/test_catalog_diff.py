"""Version diffs: Debian version order (checked against dpkg itself) and what changed between builds."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Version
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.diff import (
    compare_debian_versions,
    diff_versions,
    format_diff,
)

PAIRS = [
    ("1.0", "1.0"),
    ("1.0", "1.1"),
    ("1.9", "1.10"),
    ("1.0~rc1", "1.0"),
    ("1.0", "1.0+deb12u1"),
    ("3.0.11-1~deb12u1", "3.0.11-1~deb12u2"),
    ("3.0.11-1~deb12u2", "3.0.13-1~deb12u1"),
    ("1:1.0", "2.0"),
    ("2.36-9+deb12u4", "2.36-9+deb12u10"),
    ("1.22.1-9", "1.22.1-9"),
    ("0.5a", "0.5"),
    ("1.0-1", "1.0-1.1"),
    ("1.2.3", "1.2.3-0"),
    ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12"),
    ("a", "b"),
    ("1.0.", "1.0"),
]


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_debian_version_order_matches_dpkg(a, b):
    if not shutil.which("dpkg"):
        pytest.skip("dpkg is not installed")
    expected = 0
    for op, sign in (("lt", -1), ("gt", 1)):
        if subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode == 0:
            expected = sign
    assert compare_debian_versions(a, b) == expected
    assert compare_debian_versions(b, a) == -expected


def test_diff_lists_packages_and_inputs():
    old = Version(
        image="web",
        name="6",
        fingerprint="f6",
        packages={"nginx-light": "1.22.1-9", "openssl": "3.0.11-1~deb12u1", "curl": "7.88.1-10", "same": "1"},
        inputs={"template": "a", "role:golden_image/tasks/main.yml": "b", "var:port": "c"},
        packer_version="1.6.6",
    )
    new = Version(
        image="web",
        name="7",
        fingerprint="f7",
        packages={"nginx-light": "1.22.1-9~bpo", "openssl": "3.0.13-1~deb12u1", "jq": "1.6-2.1", "same": "1"},
        inputs={"template": "a", "role:golden_image/tasks/main.yml": "B", "var:workers": "d"},
        packer_version="1.6.6",
    )
    found = diff_versions(old, new)
    assert found["packages"] == {
        "added": {"jq": "1.6-2.1"},
        "removed": {"curl": "7.88.1-10"},
        "upgraded": {"openssl": {"from": "3.0.11-1~deb12u1", "to": "3.0.13-1~deb12u1"}},
        "downgraded": {"nginx-light": {"from": "1.22.1-9", "to": "1.22.1-9~bpo"}},
        "unchanged": 1,
    }
    assert found["inputs"] == {
        "added": ["var:workers"],
        "removed": ["var:port"],
        "changed": ["role:golden_image/tasks/main.yml"],
    }
    assert found["changed"] == {"fingerprint": {"from": "f6", "to": "f7"}}
    text = format_diff(found)
    assert "^ openssl 3.0.11-1~deb12u1 -> 3.0.13-1~deb12u1" in text and "+ jq 1.6-2.1" in text
    assert "inputs changed: role:golden_image/tasks/main.yml" in text
