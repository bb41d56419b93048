"""The pipeline's stage runner: order, timing, stop at the first failure, a summary that says why."""

from __future__ import annotations

from ansible_collections.kiln.immutable.plugins.module_utils.pipeline.stages import (
    StageFailed,
    StopPipeline,
    run_stages,
)


def stage(result=None, error=None, calls=None, name=""):
    def fn():
        if calls is not None:
            calls.append(name)
        if error:
            raise error
        return result

    return fn


def test_every_stage_runs_in_order_and_is_timed():
    calls: list[str] = []
    echoed: list[str] = []
    report = run_stages(
        [
            ("build", stage((True, "web/7 built"), calls=calls, name="build")),
            ("test", stage((False, "web/7 passed earlier"), calls=calls, name="test")),
        ],
        echo=echoed.append,
    )
    assert calls == ["build", "test"] and report.ok and report.changed
    assert [(r.status, r.detail) for r in report.results] == [
        ("done", "web/7 built"),
        ("skipped", "web/7 passed earlier"),
    ]
    assert echoed[0] == "==> [1/2] build" and echoed[1].startswith("<== build: done in ")
    assert report.table().splitlines()[-1].startswith("pipeline passed (")


def test_the_first_failure_stops_the_pipeline_and_names_the_stage():
    calls: list[str] = []
    report = run_stages(
        [
            ("build", stage((False, "web/7 already built"), calls=calls, name="build")),
            ("test", stage(error=StageFailed("web/7 FAILED: check failed: Health: /healthz answers 200"))),
            ("promote staging", stage((True, "moved"), calls=calls, name="promote")),
        ],
        echo=lambda line: None,
    )
    assert calls == ["build"] and not report.ok
    assert report.failed.name == "test"
    assert [r.status for r in report.results] == ["skipped", "failed", "not run"]
    last = report.table().splitlines()[-1]
    assert last.startswith(
        "pipeline FAILED at stage 'test': web/7 FAILED: check failed: Health: /healthz answers 200"
    )


def test_a_stop_ends_the_pipeline_without_failing_it():
    report = run_stages(
        [
            ("promote staging", stage((True, "staging: web/6 -> web/7"))),
            ("rollout staging", stage(error=StopPipeline("the roll-out stage is not available yet"))),
            ("promote prod", stage((True, "moved"))),
        ],
        echo=lambda line: None,
    )
    assert report.ok and [r.status for r in report.results] == ["done", "stopped", "not run"]
    assert "the roll-out stage is not available yet" in report.table()
    assert report.table().splitlines()[-1].startswith("pipeline stopped early")


def test_nothing_to_do_is_said_so():
    report = run_stages([("build", stage((False, "already built")))], echo=lambda line: None)
    assert report.table().splitlines()[-1].startswith("pipeline passed; nothing to do")
