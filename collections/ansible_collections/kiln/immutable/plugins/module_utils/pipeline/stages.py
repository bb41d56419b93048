# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run stages in order, time each, stop at the first failure, and say what happened.

A stage is a name and a function. The function returns ``(changed, detail)``: whether it did
something (False: it found its work already done) and one line for the summary. It raises
:class:`StageFailed` to fail the pipeline, or :class:`StopPipeline` to end it early on purpose.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..common.errors import KilnError

DONE = "done"
SKIPPED = "skipped"  # the stage found its work already done
FAILED = "failed"
STOPPED = "stopped"  # the pipeline ended here on purpose
NOT_RUN = "not run"

StageFn = Callable[[], tuple[bool, str]]


class StageFailed(KilnError):
    """A stage failed; the message says what failed and why."""


class StopPipeline(Exception):
    """End the pipeline after this stage without failing it (for example: a stage is not available)."""


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
        return self.failed is None

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
        elif any(r.status == STOPPED for r in self.results):
            verdict = "pipeline stopped early"
        elif self.changed:
            verdict = "pipeline passed"
        else:
            verdict = "pipeline passed; nothing to do, every stage was already done"
        return "\n".join([*lines, f"{verdict} ({self.seconds:.1f}s)"])


def run_stages(stages: Sequence[tuple[str, StageFn]], echo: Callable[[str], None]) -> PipelineReport:
    """Run ``stages`` in order, saying each start and end through ``echo``; the first failure (or stop)
    leaves the rest 'not run'."""
    report = PipelineReport([StageResult(stage[0]) for stage in stages])
    started = time.monotonic()
    for index, ((name, fn), result) in enumerate(zip(stages, report.results, strict=True), start=1):
        echo(f"==> [{index}/{len(stages)}] {name}")
        t0 = time.monotonic()
        try:
            changed, result.detail = fn()
            result.status = DONE if changed else SKIPPED
        except StopPipeline as stop:
            result.status, result.detail = STOPPED, str(stop)
        except KilnError as exc:
            result.status, result.detail = FAILED, exc.msg
        result.seconds = time.monotonic() - t0
        echo(f"<== {name}: {result.status} in {result.seconds:.1f}s: {result.detail}")
        if result.status in (FAILED, STOPPED):
            break
    report.seconds = time.monotonic() - started
    return report
