#!/usr/bin/python
# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: image_test
short_description: Test one version of an image with a Molecule scenario and record the result in the catalog
version_added: 0.1.0
description:
  - Runs C(molecule test) for a scenario against one version from kiln's catalog, chosen by O(version) or by
    what a O(channel) points at, then records the result (passed or failed, duration, log, the check that
    failed) on the version. Promotion policies read that result.
  - The scenario receives the candidate in environment variables - E(KILN_TEST_VERSION) (C(web/7)),
    E(KILN_TEST_IMAGE) (its Docker image id), E(KILN_TEST_INSTANCE) (a container name unique to the run),
    E(KILN_TEST_PACKAGES) (a JSON file of the packages captured at build time) and E(KILN_TEST_REPORT)
    (where to write a JSON object with the failed C(check) and its C(msg)). kiln's own C(image) scenario uses
    them; a scenario of your own can too.
  - The container of the run is removed afterwards, also when Molecule was stopped by O(timeout).
  - Runs on the controller, where Molecule, Ansible and the Docker engine are.
author:
  - kiln developers (@kiln)
extends_documentation_fragment:
  - kiln.immutable.attributes
  - kiln.immutable.attributes.actiongroup_kiln
  - kiln.immutable.catalog
attributes:
  check_mode:
    support: full
    details:
      - Resolves the version and the scenario and reports whether a test would run; runs nothing.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - With O(skip_passed=true) a version that passed the scenario is not tested again.
      - Otherwise each run records a new result.
options:
  version:
    description: The version to test, as C(image/name) (C(web/7)) or a bare name with O(image).
    type: str
  channel:
    description: Test what this channel of O(image) points at, for example C(dev).
    type: str
  image:
    description: The image, for example C(web); required with O(channel).
    type: str
  scenario:
    description: The Molecule scenario to run.
    type: str
    default: image
  project_dir:
    description:
      - Where Molecule runs - a collection root (scenarios in C(extensions/molecule/<scenario>)) or a role or
        project folder (C(molecule/<scenario>)).
      - kiln's own scenarios are in the collection; the C(kiln.immutable.test) playbook passes its path.
    type: path
    required: true
  state_dir:
    description:
      - Folder for the test log (C(logs/)) and the run's working files.
      - When not set, E(KILN_STATE_DIR), else C(.kiln) in the current folder.
    type: path
  skip_passed:
    description:
      - Do not test a version whose newest result for O(scenario) is a pass; return that result.
      - A version whose newest result is a failure is tested again.
      - The pipeline uses this so that running it again tests nothing again.
    type: bool
    default: false
  timeout:
    description: Seconds Molecule may run before it is stopped and the test recorded as failed.
    type: float
    default: 900
  fail_on_failure:
    description: Fail the task when the test fails (the result is recorded either way).
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Test web/7 with kiln's image scenario
  kiln.immutable.image_test:
    version: web/7
    project_dir: "{{ kiln_collection_dir }}"

- name: Test what dev points at, unless it was tested already
  kiln.immutable.image_test:
    image: web
    channel: dev
    skip_passed: true
    project_dir: "{{ kiln_collection_dir }}"
  register: kiln_tested

- name: Run a scenario of your own (molecule/smoke in your project) and keep going when it fails
  kiln.immutable.image_test:
    version: web/7
    scenario: smoke
    project_dir: "{{ playbook_dir }}"
    fail_on_failure: false
  register: smoke

- name: Show what failed
  ansible.builtin.debug:
    msg: "{{ smoke.failed_check }}: {{ smoke.failure }}"
  when: not smoke.passed
"""

RETURN = r"""
ref:
  description: The version tested.
  returned: always
  type: str
  sample: web/7
scenario:
  description: The scenario run.
  returned: always
  type: str
  sample: image
passed:
  description: Whether the test passed (in check mode, true when a test would run).
  returned: always
  type: bool
skipped_run:
  description: True when an earlier result was reused (O(skip_passed)) and nothing ran.
  returned: always
  type: bool
duration_s:
  description: How long the test took, in seconds.
  returned: always
  type: float
  sample: 17.4
log_path:
  description: The full Molecule output.
  returned: when a test ran or was reused
  type: str
  sample: /srv/kiln/.kiln/logs/test-web-7-image-20261127T023122Z.log
failed_check:
  description: The check (task name) that failed.
  returned: when the test failed and the check is known
  type: str
  sample: "Health: /healthz answers 200"
failure:
  description: What the failed check found.
  returned: when the test failed
  type: str
  sample: GET /healthz answered 503 'unhealthy'
summary:
  description: One line saying what happened.
  returned: always
  type: str
  sample: "web/7 passed scenario 'image' in 17.4s (log: .kiln/logs/test-web-7-image-20261127T023122Z.log)"
"""

from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.common.errors import KilnError
from ansible_collections.kiln.immutable.plugins.module_utils.common.module import KilnModule
from ansible_collections.kiln.immutable.plugins.module_utils.common.paths import state_dir
from ansible_collections.kiln.immutable.plugins.module_utils.test_stage.image_test import run_image_test


def run_test(p: dict, check: bool) -> dict:
    if p["timeout"] <= 0:
        raise KilnError(f"timeout must be more than 0 seconds, got {p['timeout']}")
    with Catalog(p["catalog"]) as catalog:
        outcome = run_image_test(
            catalog,
            version=p["version"],
            channel=p["channel"],
            image=p["image"],
            scenario=p["scenario"],
            project_dir=p["project_dir"],
            state_dir=p["state_dir"] or state_dir(),
            timeout_s=p["timeout"],
            skip_passed=p["skip_passed"],
            check_mode=check,
        )
    result = {
        "changed": not outcome.skipped,
        "ref": outcome.ref,
        "scenario": outcome.scenario,
        "passed": outcome.passed,
        "skipped_run": outcome.skipped,
        "duration_s": outcome.duration_s,
        "log_path": outcome.log_path,
        "failed_check": outcome.check,
        "failure": outcome.msg,
        "summary": outcome.summary(),
    }
    if not outcome.passed and p["fail_on_failure"]:
        raise KilnError(f"test failed: {outcome.summary()}", **result)
    return result


def main() -> None:
    module = KilnModule(
        argument_spec=dict(
            version=dict(type="str"),
            channel=dict(type="str"),
            image=dict(type="str"),
            scenario=dict(type="str", default="image"),
            project_dir=dict(type="path", required=True),
            state_dir=dict(type="path"),
            skip_passed=dict(type="bool", default=False),
            timeout=dict(type="float", default=900),
            fail_on_failure=dict(type="bool", default=True),
        ),
        mutually_exclusive=[("version", "channel")],
        required_one_of=[("version", "channel")],
        required_by={"channel": ("image",)},
    )
    module.run(lambda: run_test(module.params, module.check_mode))


if __name__ == "__main__":
    main()
