"""The pipeline's stages as the playbook runs them: order, timing, the first failure stops the pipeline,
and a summary that says why."""

from __future__ import annotations

from ansible_collections.kiln.immutable.plugins.module_utils.pipeline.stages import (
    Stage,
    StageRecorder,
    declared_stages,
)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.5
        return self.now


def recorder(stages, echoed=None) -> StageRecorder:
    return StageRecorder(
        stages, echo=(echoed.append if echoed is not None else lambda line: None), clock=Clock()
    )


def run(rec: StageRecorder, module: str, result: dict, host: str = "localhost", failed=False) -> None:
    rec.started(module, host)
    rec.finished(module, host, result, failed)


BUILT = {"changed": True, "version": "web/7"}
TESTED_EARLIER = {"changed": False, "summary": "web/7 passed scenario 'image' (recorded at x; not run again)"}


def test_the_declared_stages_follow_the_channels_and_their_groups():
    doc = {
        "image": "web",
        "prebuilt": ["lb"],
        "build_channel": "dev",
        "steps": [
            {"channel": "staging", "groups": ["web-staging"]},
            {"channel": "prod", "groups": ["web-prod", "api-prod"]},
        ],
    }
    stages = declared_stages(doc)
    assert [s.name for s in stages] == [
        "build lb",
        "build",
        "promote dev",
        "test",
        "promote staging",
        "rollout web-staging",
        "promote prod",
        "rollout web-prod",
        "rollout api-prod",
    ]
    assert stages[-1] == Stage("rollout api-prod", "rolling_replace", host="api-prod")


def test_every_stage_runs_in_order_and_is_timed():
    echoed: list[str] = []
    rec = recorder([Stage("build", "packer_build"), Stage("test", "image_test")], echoed)
    run(rec, "packer_build", BUILT)
    run(rec, "image_test", TESTED_EARLIER)
    report = rec.report
    assert report.ok and report.changed
    assert [(r.status, r.detail) for r in report.results] == [
        ("done", "web/7 built"),
        ("skipped", TESTED_EARLIER["summary"]),
    ]
    assert all(r.seconds == 1.5 for r in report.results)
    assert echoed[0] == "==> [1/2] build" and echoed[1].startswith("<== build: done in 1.5s")
    summary = rec.summary("web")
    assert summary.startswith("\nweb pipeline for web/7:\n")
    assert summary.splitlines()[-1].startswith("pipeline passed (")


def test_the_first_failure_stops_the_pipeline_and_names_the_stage():
    rec = recorder(
        [
            Stage("build", "packer_build"),
            Stage("test", "image_test"),
            Stage("promote staging", "image_channel"),
        ]
    )
    run(rec, "packer_build", {"changed": False, "version": "web/7"})
    run(
        rec,
        "image_test",
        {"changed": True, "msg": "test failed: web/7 FAILED: check failed: Health: /healthz answers 200"},
        failed=True,
    )
    report = rec.report
    assert not report.ok and report.failed.name == "test"
    assert [r.status for r in report.results] == ["skipped", "failed", "not run"]
    last = report.table().splitlines()[-1]
    assert last.startswith(
        "pipeline FAILED at stage 'test': test failed: web/7 FAILED: "
        "check failed: Health: /healthz answers 200"
    )


def test_a_stage_is_the_next_one_of_its_module_and_host():
    rec = recorder(
        [
            Stage("build lb", "packer_build"),
            Stage("build", "packer_build"),
            Stage("promote staging", "image_channel"),
            Stage("rollout web-staging", "rolling_replace", host="web-staging"),
        ]
    )
    run(rec, "packer_build", {"changed": False, "version": "lb/1"})
    run(rec, "packer_build", BUILT)
    run(rec, "image_info", {"changed": False})  # not a stage
    move = {"image": "web", "channel": "staging"}
    run(rec, "image_channel", {"changed": True, "before": "web/6", "after": "web/7", "move": move})
    run(
        rec,
        "rolling_replace",
        {"changed": True, "group": "web-staging", "target": "web/7", "after": {"0": "web/7", "1": "web/7"}},
        host="web-staging",
    )
    assert [r.detail for r in rec.report.results] == [
        "lb/1 (nothing changed since it was built)",
        "web/7 built",
        "web@staging: web/6 -> web/7",
        "web-staging runs web/7 (2 instances)",
    ]
    assert rec.version == "web/7"  # what the build stage produced, not the load balancer's


def test_nothing_to_do_is_said_so():
    rec = recorder([Stage("build", "packer_build")])
    run(rec, "packer_build", {"changed": False, "version": "web/7"})
    assert rec.report.table().splitlines()[-1].startswith("pipeline passed; nothing to do")


def test_a_pipeline_that_ended_early_does_not_pass():
    rec = recorder([Stage("build", "packer_build"), Stage("test", "image_test")])
    run(rec, "packer_build", BUILT)
    assert not rec.report.ok
    assert rec.report.table().splitlines()[-1].startswith("pipeline stopped before its end")
