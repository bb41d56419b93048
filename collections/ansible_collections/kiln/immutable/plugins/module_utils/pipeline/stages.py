# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pipeline's stages as the playbook runs them: which they are, how each went, and the summary.

``playbooks/pipeline.yml`` runs the stages (build, promote, test, roll out) in one ansible-playbook
process and declares them up front (the fact ``kiln_pipeline``); the callback plugin
``kiln.immutable.pipeline`` feeds each stage task's start and result to :class:`StageRecorder`, which
times it, notes whether it changed something, and prints the table at the end. A stage is one task of
a kiln module on one host: the first stage not yet run that names that module and host is the one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DONE = "done"
SKIPPED = "skipped"  # the stage found its work already done
FAILED = "failed"
NOT_RUN = "not run"
RUNNING = "running"


@dataclass
class Stage:
    name: str
    module: str  # the kiln module whose task is the stage: packer_build, image_channel, image_test, ...
    host: str = "localhost"


def declared_stages(doc: dict[str, Any]) -> list[Stage]:
    """The stages of the pipeline the playbook declares in ``kiln_pipeline``, in the order they run.

    ``doc``: ``prebuilt`` (images built first, like the load balancer's), ``build_channel``, and
    ``steps``: each a ``channel`` to promote to and the ``groups`` that follow it and are rolled out.
    """
    stages = [Stage(f"build {image}", "packer_build") for image in doc.get("prebuilt") or []]
    stages += [
        Stage("build", "packer_build"),
        Stage(f"promote {doc['build_channel']}", "image_channel"),
        Stage("test", "image_test"),
    ]
    for step in doc.get("steps") or []:
        stages.append(Stage(f"promote {step['channel']}", "image_channel"))
        stages += [Stage(f"rollout {group}", "rolling_replace", host=group) for group in step["groups"]]
    return stages


def describe(module: str, result: dict[str, Any], failed: bool = False) -> str:
    """One line for the summary from a stage task's result."""
    if failed:
        return str(result.get("msg") or "failed")
    changed = bool(result.get("changed"))
    if module == "packer_build":
        return f"{result.get('version')} " + ("built" if changed else "(nothing changed since it was built)")
    if module == "image_channel":
        move = result.get("move") or {}
        where = f"{move.get('image')}@{move.get('channel')}"
        if not changed:
            return f"{where} is already on {result.get('after')}"
        return f"{where}: {result.get('before') or 'nothing'} -> {result.get('after')}"
    if module == "image_test":
        return str(result.get("summary") or "")
    if module == "rolling_replace":
        slots = len(result.get("after") or {})
        runs = "runs" if changed else "already runs"
        return f"{result.get('group')} {runs} {result.get('target')} ({slots} instances)"
    return str(result.get("msg") or "")


@dataclass
class StageResult:
    name: str
    status: str = NOT_RUN
    seconds: float = 0.0
    detail: str = ""


@dataclass
class PipelineReport:
    results: list[StageResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> StageResult | None:
        return next((r for r in self.results if r.status == FAILED), None)

    @property
    def ok(self) -> bool:
        return self.failed is None and all(r.status != NOT_RUN for r in self.results)

    @property
    def changed(self) -> bool:
        return any(r.status == DONE for r in self.results)

    def table(self) -> str:
        width = max((len(r.name) for r in self.results), default=0)
        lines = [
            f"  {r.name:<{width}}  {r.status:<7}  {r.seconds:7.1f}s  {r.detail}".rstrip()
            for r in self.results
        ]
        failed = self.failed
        if failed:
            verdict = f"pipeline FAILED at stage {failed.name!r}: {failed.detail}"
        elif not self.ok:
            verdict = "pipeline stopped before its end"
        elif self.changed:
            verdict = "pipeline passed"
        else:
            verdict = "pipeline passed; nothing to do, every stage was already done"
        return "\n".join([*lines, f"{verdict} ({self.seconds:.1f}s)"])


class StageRecorder:
    """Follows the stage tasks as they start and end; ``echo`` says each start and end."""

    def __init__(
        self,
        stages: list[Stage],
        echo: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stages = stages
        self.report = PipelineReport([StageResult(stage.name) for stage in stages])
        self._echo = echo
        self._clock = clock
        self._began = clock()
        self._t0: dict[int, float] = {}
        self.version: str | None = None  # what the build stage produced

    def _next(self, module: str, host: str, status: str) -> int | None:
        for index, (stage, result) in enumerate(zip(self.stages, self.report.results, strict=True)):
            if stage.module == module and stage.host == host and result.status == status:
                return index
        return None

    def started(self, module: str, host: str) -> None:
        index = self._next(module, host, NOT_RUN)
        if index is None:
            return
        self.report.results[index].status = RUNNING
        self._t0[index] = self._clock()
        self._echo(f"==> [{index + 1}/{len(self.stages)}] {self.stages[index].name}")

    def finished(self, module: str, host: str, result: dict[str, Any], failed: bool = False) -> None:
        index = self._next(module, host, RUNNING)
        if index is None:
            return
        stage, record = self.stages[index], self.report.results[index]
        record.seconds = self._clock() - self._t0.pop(index)
        record.status = FAILED if failed else DONE if result.get("changed") else SKIPPED
        record.detail = describe(module, result, failed)
        if stage.name == "build" and result.get("version"):
            self.version = result["version"]
        self._echo(f"<== {stage.name}: {record.status} in {record.seconds:.1f}s: {record.detail}")

    def summary(self, image: str) -> str:
        self.report.seconds = self._clock() - self._began
        title = f"{image} pipeline" + (f" for {self.version}" if self.version else "")
        return f"\n{title}:\n{self.report.table()}"
