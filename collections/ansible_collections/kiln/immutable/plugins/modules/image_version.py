#!/usr/bin/python
# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: image_version
short_description: Register, revoke, restore or remove a version of an image in kiln's catalog
version_added: 0.1.0
description:
  - Records a built image as a version in kiln's catalog (O(state=present)), with its fingerprint,
    artifacts and build facts. M(kiln.immutable.packer_build) does this for images kiln bakes; use this
    module for images built elsewhere.
  - Records a test result on a version (O(test_result)); promotion policies can require a passing one.
  - Revokes a version now or at a set time (O(state=revoked)); a revoked version can be neither promoted
    nor rolled out, channels pointing at it fall back to their last valid version, and versions built on
    it are flagged.
  - Undoes a revocation (O(state=active)) or removes a version and its Docker image (O(state=absent)).
  - Every change is appended to the catalog's hash-chained audit trail.
author:
  - kiln developers (@kiln)
extends_documentation_fragment:
  - kiln.immutable.attributes
  - kiln.immutable.attributes.actiongroup_kiln
  - kiln.immutable.catalog
  - kiln.immutable.aws
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: partial
    details:
      - Registering the same fingerprint again, revoking a revoked version or removing a missing one changes
        nothing.
      - Each O(test_result) is a new record.
options:
  image:
    description:
      - The image, for example C(web). Required unless O(version) is a reference such as C(web/7).
    type: str
  version:
    description:
      - The version, as C(image/name) (C(web/7)) or a bare name with O(image).
      - With O(state=present) and no O(version), kiln reuses the newest version with the same O(fingerprint)
        or reserves the next name.
      - Required for O(state=revoked), O(state=active) and O(state=absent).
    type: str
  state:
    description:
      - V(present) registers the version (and records O(test_result) when given).
      - V(revoked) revokes it; V(active) undoes a revocation; V(absent) removes it and its Docker image.
    type: str
    choices: [present, revoked, active, absent]
    default: present
  fingerprint:
    description: The hash of every input of the build; required to register a new version.
    type: str
  artifacts:
    description:
      - 'What the build produced, for example C({docker: {image_id: "sha256:...", tag: "kiln/web:7"}}).'
    type: dict
    default: {}
  base:
    description:
      - 'The base image, for example C({ref: "kiln/base:bookworm", id: "sha256:..."}).'
    type: dict
    default: {}
  parent:
    description: Reference of the version this one was built from (C(web/6)).
    type: str
  inputs:
    description: Build input name to hash, compared by C(invoke diff).
    type: dict
    default: {}
  packages:
    description: Debian package name to version, as installed in the image.
    type: dict
    default: {}
  git_commit:
    description: The commit the build was made from.
    type: str
  git_dirty:
    description: Whether the working tree had uncommitted changes.
    type: bool
    default: false
  packer_version:
    description: Packer's version.
    type: str
  ansible_version:
    description: Ansible's version.
    type: str
  duration_s:
    description: How long the build took, in seconds.
    type: float
  log_path:
    description: Where the build log is kept.
    type: path
  test_result:
    description:
      - A test result to record on the version (with O(state=present)).
    type: dict
    suboptions:
      passed:
        description: Whether the test passed.
        type: bool
        required: true
      duration_s:
        description: How long the test took, in seconds.
        type: float
      log_path:
        description: Where the test log is kept.
        type: path
      details:
        description: Anything else worth keeping (scenario name, checks run).
        type: dict
        default: {}
  reason:
    description: Why the version is revoked; required with O(state=revoked).
    type: str
  revoke_at:
    description:
      - Revoke at this time instead of now (ISO 8601, for example C(2026-01-31T12:00:00Z)).
      - Until then the version stays usable; O(state=active) cancels the schedule.
    type: str
  fallback:
    description:
      - With O(state=revoked), move channels that point at the version back to their last valid version.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Record an image built outside kiln
  kiln.immutable.image_version:
    image: web
    fingerprint: "{{ build_fingerprint }}"
    artifacts:
      docker: {image_id: "{{ built.image_id }}", tag: "kiln/web:custom"}
  register: kiln_registered

- name: Record a passing test
  kiln.immutable.image_version:
    version: web/7
    test_result:
      passed: true
      duration_s: 41.5
      details: {scenario: image}

- name: Revoke a version; channels on it fall back
  kiln.immutable.image_version:
    version: web/6
    state: revoked
    reason: CVE-2026-0001 in openssl

- name: Revoke at midnight instead
  kiln.immutable.image_version:
    version: web/6
    state: revoked
    reason: end of support
    revoke_at: "2026-12-31T23:59:59Z"

- name: Undo the revocation
  kiln.immutable.image_version:
    version: web/6
    state: active
"""

RETURN = r"""
amis_marked:
  description: The AMIs (C(region:ami)) tagged C(kiln:revoked) with the reason, or untagged on restore.
  returned: when the version has AMIs and its status changed
  type: list
  elements: str
ref:
  description: The version's reference.
  returned: always
  type: str
  sample: web/7
version:
  description: The version's catalog record after the change (absent after O(state=absent)).
  returned: when the version exists afterwards
  type: dict
  sample:
    ref: web/7
    image: web
    name: "7"
    fingerprint: 4f1c...
    status: active
    artifacts: {docker: {image_id: "sha256:0f3c...", tag: "kiln/web:7"}}
    tests: [{passed: true, duration_s: 41.5, at: "2026-11-27T02:31:22.000000Z"}]
    flags: []
moves:
  description: Channels that fell back because of the revocation.
  returned: when O(state=revoked)
  type: list
  elements: dict
  sample: [{channel: prod, before: web/6, after: web/5, action: fallback}]
flagged:
  description: Versions built on the revoked version.
  returned: when O(state=revoked)
  type: list
  elements: str
  sample: [web/8]
test_result:
  description: The test result recorded.
  returned: when O(test_result) is given
  type: dict
images_removed:
  description: Docker image tags removed with the version.
  returned: when O(state=absent)
  type: list
  elements: str
"""

from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import (
    Catalog,
    Version,
    split_ref,
)
from ansible_collections.kiln.immutable.plugins.module_utils.common import aws
from ansible_collections.kiln.immutable.plugins.module_utils.common.errors import KilnError
from ansible_collections.kiln.immutable.plugins.module_utils.common.module import KilnModule
from ansible_collections.kiln.immutable.plugins.module_utils.providers.aws import images
from ansible_collections.kiln.immutable.plugins.module_utils.providers.docker.images import (
    remove_image,
    running_versions,
)

_RECORD_FIELDS = (
    "fingerprint",
    "artifacts",
    "base",
    "parent",
    "inputs",
    "packages",
    "git_commit",
    "git_dirty",
    "packer_version",
    "ansible_version",
    "duration_s",
    "log_path",
)


def _present(p: dict, check: bool, catalog: Catalog) -> dict:
    existing = None
    if p["version"]:
        image, name = split_ref(p["version"], p["image"])
        existing = catalog.find(f"{image}/{name}")
    else:
        image, name = p["image"], None
        if p["fingerprint"]:
            existing = catalog.find_by_fingerprint(image, p["fingerprint"])
    if existing is not None and p["fingerprint"] and existing.fingerprint != p["fingerprint"]:
        raise KilnError(
            f"version {existing.ref} is already registered with another fingerprint ({existing.fingerprint})"
        )
    result: dict = {"changed": False}
    if existing is None:
        if not p["fingerprint"]:
            target = f"{image}/{name}" if name else image
            raise KilnError(f"unknown version {target}; registering it needs the fingerprint option")
        result["changed"] = True
        fields = {key: p[key] for key in _RECORD_FIELDS}
        if check:
            name = name or catalog.next_version_name(image)
            existing = Version(image=image, name=name, **fields)
        else:
            existing = catalog.register(
                Version(image=image, name=name or catalog.reserve_version(image), **fields)
            )
    if p["test_result"]:
        result["changed"] = True
        if not check:
            result["test_result"] = catalog.record_test(existing.ref, **p["test_result"])
    result["ref"] = existing.ref
    found = catalog.find(existing.ref)
    result["version"] = (found or existing).to_dict()
    result["diff"] = {
        "before": {} if result["changed"] and found is None else {"ref": existing.ref},
        "after": {"ref": existing.ref},
    }
    return result


def _status(p: dict, check: bool, catalog: Catalog) -> dict:
    """Revoke, restore or remove a version."""
    image, name = split_ref(p["version"], p["image"])
    ref = f"{image}/{name}"
    before = catalog.find(ref)
    settings = aws.AWSSettings.from_options({k: p[k] for k in aws.OPTION_NAMES})
    if p["state"] == "absent":
        if before is None:
            return {"changed": False, "ref": ref, "images_removed": []}
        removed = catalog.remove(
            ref,
            check=check,
            running=running_versions,
            remove_artifact=images.ami_remover(settings, then=remove_image),
        )
        result = {
            "changed": True,
            "ref": ref,
            "images_removed": removed.images_removed,
            "warnings": removed.warnings,
        }
    elif before is None:
        raise KilnError(f"unknown version {ref}")
    elif p["state"] == "revoked":
        outcome = catalog.revoke(ref, p["reason"], at=p["revoke_at"], fallback=p["fallback"], check=check)
        result = {"ref": ref, **outcome}
    else:
        result = {"ref": ref, **catalog.restore(ref, check=check)}
    after = catalog.find(ref)
    if after is not None:
        result["version"] = after.to_dict()
        if not check and result.get("changed") and images.has_amis([after]):
            # the AMIs say so too, in every region (kiln:revoked), for whoever looks in AWS
            reason = (after.revocation or {}).get("reason") if after.status == "revoked" else None
            result["amis_marked"] = images.mark_revoked(after, reason, settings)
    result["diff"] = {
        "before": {"status": before.status, "revocation": before.revocation} if before else {},
        "after": {"status": p["state"] if p["state"] != "absent" else None},
    }
    return result


def apply(p: dict, check: bool) -> dict:
    with Catalog(p["catalog"]) as catalog:
        return (_present if p["state"] == "present" else _status)(p, check, catalog)


def main() -> None:
    module = KilnModule(
        argument_spec=dict(
            image=dict(type="str"),
            version=dict(type="str"),
            state=dict(type="str", choices=["present", "revoked", "active", "absent"], default="present"),
            fingerprint=dict(type="str"),
            artifacts=dict(type="dict", default={}),
            base=dict(type="dict", default={}),
            parent=dict(type="str"),
            inputs=dict(type="dict", default={}),
            packages=dict(type="dict", default={}),
            git_commit=dict(type="str"),
            git_dirty=dict(type="bool", default=False),
            packer_version=dict(type="str"),
            ansible_version=dict(type="str"),
            duration_s=dict(type="float"),
            log_path=dict(type="path"),
            test_result=dict(
                type="dict",
                options=dict(
                    passed=dict(type="bool", required=True),
                    duration_s=dict(type="float"),
                    log_path=dict(type="path"),
                    details=dict(type="dict", default={}),
                ),
            ),
            reason=dict(type="str"),
            revoke_at=dict(type="str"),
            fallback=dict(type="bool", default=True),
            **aws.argument_spec(),
        ),
        mutually_exclusive=[("profile", "access_key"), ("profile", "session_token")],
        required_one_of=[("image", "version")],
        required_if=[
            ("state", "revoked", ("version", "reason")),
            ("state", "active", ("version",)),
            ("state", "absent", ("version",)),
        ],
    )
    module.run(lambda: apply(module.params, module.check_mode))


if __name__ == "__main__":
    main()
