# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: pipeline
type: aggregate
short_description: Time each stage of kiln's pipeline playbook and print a summary of the stages
version_added: 0.1.0
description:
  - Follows the stages that the playbook C(kiln.immutable.pipeline) declares (build, promote, test, roll
    out), says when each starts and ends, and prints one line per stage at the end - done, skipped (its
    work was already done), failed or not run, with its time - and the verdict, naming the stage that failed.
  - Does nothing in playbooks that declare no pipeline.
author:
  - kiln developers (@kiln)
requirements:
  - Enabled in C(callbacks_enabled) of C(ansible.cfg) or E(ANSIBLE_CALLBACKS_ENABLED).
"""

from ansible.plugins.callback import CallbackBase
from ansible_collections.kiln.immutable.plugins.module_utils.pipeline.stages import (
    StageRecorder,
    declared_stages,
)

_COLLECTION = "kiln.immutable."


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kiln.immutable.pipeline"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._recorder = None
        self._image = ""

    @staticmethod
    def _module(task):
        action = task.action or ""
        if action.startswith(_COLLECTION):
            return action[len(_COLLECTION) :]
        return None

    def v2_runner_on_start(self, host, task):
        module = self._module(task)
        if self._recorder and module:
            self._recorder.started(module, host.get_name())

    def _finished(self, result, failed=False):
        facts = result._result.get("ansible_facts") or {}
        if "kiln_pipeline" in facts and self._recorder is None:
            doc = facts["kiln_pipeline"]
            self._image = doc["image"]
            self._recorder = StageRecorder(declared_stages(doc), echo=self._display.display)
            return
        module = self._module(result._task)
        if self._recorder and module:
            self._recorder.finished(module, result._host.get_name(), result._result, failed)

    def v2_runner_on_ok(self, result):
        self._finished(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._finished(result, failed=True)

    def v2_playbook_on_stats(self, stats):
        if self._recorder:
            self._display.display(self._recorder.summary(self._image))
