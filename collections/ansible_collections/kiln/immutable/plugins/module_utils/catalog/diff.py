# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What changed between two versions of an image: packages (from the recorded dpkg lists) and inputs."""

from __future__ import annotations

import re
from typing import Any

_EPOCH = re.compile(r"^(\d+):(.*)$")


def _order(char: str) -> int:
    """dpkg's ordering of one character in a version: '~' first, then end, letters, the rest."""
    if char == "~":
        return -1
    if char.isdigit():
        return 0
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    """Compare an upstream version or a Debian revision the way dpkg does (alternating runs)."""
    i = j = 0
    while i < len(a) or j < len(b):
        # Non-digit run, character by character.
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ca = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            cb = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ca != cb:
                return -1 if ca < cb else 1
            if i < len(a) and not a[i].isdigit():
                i += 1
            if j < len(b) and not b[j].isdigit():
                j += 1
        # Digit run, as a number.
        start_i, start_j = i, j
        while i < len(a) and a[i].isdigit():
            i += 1
        while j < len(b) and b[j].isdigit():
            j += 1
        na = int(a[start_i:i] or 0)
        nb = int(b[start_j:j] or 0)
        if na != nb:
            return -1 if na < nb else 1
    return 0


def compare_debian_versions(a: str, b: str) -> int:
    """-1, 0 or 1, as ``dpkg --compare-versions`` orders them (epoch, upstream, revision)."""

    def split(version: str) -> tuple[int, str, str]:
        epoch = 0
        match = _EPOCH.match(version)
        if match:
            epoch, version = int(match.group(1)), match.group(2)
        upstream, sep, revision = version.rpartition("-")
        if not sep:
            upstream, revision = version, ""
        return epoch, upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def _changed(a: Any, b: Any) -> dict | None:
    return None if a == b else {"from": a, "to": b}


def diff_versions(old: Any, new: Any) -> dict:
    """Packages added, removed, upgraded and downgraded, and which build inputs changed."""
    old_pkgs: dict = old.packages or {}
    new_pkgs: dict = new.packages or {}
    upgraded, downgraded = {}, {}
    for name in sorted(set(old_pkgs) & set(new_pkgs)):
        before, after = str(old_pkgs[name]), str(new_pkgs[name])
        order = compare_debian_versions(before, after)
        if order < 0:
            upgraded[name] = {"from": before, "to": after}
        elif order > 0:
            downgraded[name] = {"from": before, "to": after}
    old_inputs: dict = old.inputs or {}
    new_inputs: dict = new.inputs or {}
    other = {
        "base": _changed(old.base, new.base),
        "fingerprint": _changed(old.fingerprint, new.fingerprint),
        "git_commit": _changed(old.git_commit, new.git_commit),
        "packer_version": _changed(old.packer_version, new.packer_version),
        "ansible_version": _changed(old.ansible_version, new.ansible_version),
    }
    return {
        "from": old.ref,
        "to": new.ref,
        "packages": {
            "added": {n: new_pkgs[n] for n in sorted(set(new_pkgs) - set(old_pkgs))},
            "removed": {n: old_pkgs[n] for n in sorted(set(old_pkgs) - set(new_pkgs))},
            "upgraded": upgraded,
            "downgraded": downgraded,
            "unchanged": sum(1 for n in set(old_pkgs) & set(new_pkgs) if old_pkgs[n] == new_pkgs[n]),
        },
        "inputs": {
            "added": sorted(set(new_inputs) - set(old_inputs)),
            "removed": sorted(set(old_inputs) - set(new_inputs)),
            "changed": sorted(n for n in set(old_inputs) & set(new_inputs) if old_inputs[n] != new_inputs[n]),
        },
        "changed": {key: value for key, value in other.items() if value is not None},
    }


def format_diff(diff: dict) -> str:
    """A short human summary, as ``invoke diff`` prints it."""
    lines = [f"{diff['from']} -> {diff['to']}"]
    pkgs = diff["packages"]
    for name, version in pkgs["added"].items():
        lines.append(f"  + {name} {version}")
    for name, version in pkgs["removed"].items():
        lines.append(f"  - {name} {version}")
    for label, entries in (("^", pkgs["upgraded"]), ("v", pkgs["downgraded"])):
        for name, change in entries.items():
            lines.append(f"  {label} {name} {change['from']} -> {change['to']}")
    lines.append(
        f"  packages: {len(pkgs['added'])} added, {len(pkgs['removed'])} removed, {len(pkgs['upgraded'])} "
        f"upgraded, {len(pkgs['downgraded'])} downgraded, {pkgs['unchanged']} unchanged"
    )
    inputs = diff["inputs"]
    for label in ("added", "removed", "changed"):
        if inputs[label]:
            lines.append(f"  inputs {label}: {', '.join(inputs[label])}")
    for key, change in diff["changed"].items():
        if key != "fingerprint":
            lines.append(f"  {key}: {change['from']} -> {change['to']}")
    return "\n".join(lines)
