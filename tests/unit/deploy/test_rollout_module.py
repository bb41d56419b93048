"""The rolling_replace module: arguments in, plan or result out (real catalog, fake provider and balancer)."""

from __future__ import annotations

import json
import os
import re

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog, Version
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import rolling_replace as deploy
from ansible_collections.kiln.immutable.plugins.modules import rolling_replace
from rollout_fakes import FakeLoadBalancer, FakeProvider, World, fake_probe

FAST_HEALTH = {"interval": 0.001, "healthy_threshold": 1, "unhealthy_threshold": 2, "deadline": 2}


@pytest.fixture
def catalog(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    cat = Catalog(str(tmp_path / "catalog.db"))
    for n in ("1", "2", "3"):
        cat.register(
            Version(image="web", name=n, fingerprint=f"fp{n}", artifacts={"docker": {"tag": f"kiln/web:{n}"}})
        )
    cat.promote("prod", "web/1", reason="seed")
    cat.promote("prod", "web/2", reason="next")
    yield cat
    cat.close()


@pytest.fixture
def world(monkeypatch) -> World:
    w = World(group="web-prod")
    w.seed(4, _V("web", "1"))
    monkeypatch.setattr(deploy, "build_backends", lambda *a: (FakeProvider(w), FakeLoadBalancer(w)))
    monkeypatch.setattr(deploy, "probe_once", fake_probe(w))
    return w


class _V:
    def __init__(self, image, name):
        self.image, self.name, self.ref = image, name, f"{image}/{name}"


def run_module(args: dict, capsys) -> dict:
    with patch_module_args(args), pytest.raises(SystemExit):
        rolling_replace.main()
    return json.loads(capsys.readouterr().out)


def base(catalog, **more) -> dict:
    return {"group": "web-prod", "catalog": catalog.path, "health": FAST_HEALTH, **more}


def test_check_mode_returns_the_plan_and_changes_nothing(catalog, world, capsys, tmp_path):
    out = run_module(
        {
            **base(catalog, image="web", channel="prod", batch_size="50%"),
            "_ansible_check_mode": True,
            "_ansible_diff": True,
        },
        capsys,
    )
    assert out["changed"] is True and out["status"] == "planned" and out["target"] == "web/2"
    assert [[s["slot"] for s in b["slots"]] for b in out["plan"]["batches"]] == [[0, 1], [2, 3]]
    assert out["diff"] == {
        "before": {str(s): "web/1" for s in range(4)},
        "after": {str(s): "web/2" for s in range(4)},
    }
    assert world.mutations() == []
    assert not (tmp_path / "state").exists()


def test_rolls_out_the_channel_then_reports_no_change(catalog, world, capsys, tmp_path):
    out = run_module(base(catalog, image="web", channel="prod", batch_size=2), capsys)
    assert out["changed"] is True and out["status"] == "succeeded", out.get("msg")
    world.assert_converged(4, "web/2")
    assert os.path.exists(out["result_path"]) and out["result_path"].startswith(
        str(tmp_path / "state" / "rollouts")
    )
    log = (tmp_path / "state" / "rollouts" / "web-prod" / "progress.log").read_text()
    assert "batch_start" in log and "enabled" in log
    again = run_module(base(catalog, version="web/2"), capsys)
    assert again["changed"] is False and again["status"] == "succeeded"


def test_unhealthy_version_fails_the_task_after_rolling_back(catalog, world, capsys):
    world.bad_versions.add("web/3")
    out = run_module(base(catalog, version="web/3"), capsys)
    assert out["failed"] is True and out["status"] == "rolled_back"
    assert "was rolled back" in out["msg"] and "503" in out["msg"]
    world.assert_converged(4, "web/1")


def test_a_failed_analysis_fails_the_task_naming_the_verdict(catalog, world, capsys):
    world.traffic = 1000
    world.faults["web/3"] = (0.3, 1.0)
    analysis = {"max_error_rate": "1%", "min_requests": 50, "bake_time": 0.01}
    out = run_module(
        base(catalog, version="web/3", strategy="canary", steps=[{"instances": 1}], **analysis), capsys
    )
    assert out["failed"] is True and out["status"] == "rolled_back"
    assert "analysis of 0 failed: error rate of web/3" in out["msg"]
    assert [a["verdict"] for a in out["analysis"]] == ["Failed"]
    world.assert_converged(4, "web/1")


def test_check_mode_shows_the_canary_steps(catalog, world, capsys):
    steps = [{"instances": 1, "bake_time": 30, "weight": 5}, {"percent": 100}]
    args = base(catalog, version="web/2", strategy="canary", steps=steps, max_latency_ratio=2.0)
    out = run_module({**args, "_ansible_check_mode": True}, capsys)
    plan = out["plan"]
    assert plan["strategy"] == "canary" and plan["analysis"] is True
    assert [(b["step"], len(b["slots"]), b["bake_time"], b["weight"]) for b in plan["batches"]] == [
        (0, 1, 30, 5),
        (1, 3, 0, None),
    ]
    assert world.mutations() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"version": "web/2", "batch_size": 0}, "batch_size must be at least 1"),
        ({"version": "web/2", "strategy": "canary"}, "strategy canary needs steps"),
        ({"version": "web/2", "max_error_rate": "5 percent"}, "max_error_rate must be"),
        ({"version": "web/2", "batch_size": "150%"}, "batch_size 150% is over 100%"),
        ({"version": "web/2", "max_surge": "120%"}, "max_surge 120% is over 100%"),
        ({"image": "web", "channel": "qa"}, "channel 'qa' of image 'web' is unknown"),
        ({"version": "web/9"}, "version: unknown version web/9"),
        ({"version": "web/2", "health": {"path": "healthz"}}, "health.path must start with '/'"),
        ({"channel": "prod"}, "missing parameter\\(s\\) required by 'channel': image"),
        ({"version": "web/2", "channel": "prod", "image": "web"}, "mutually exclusive"),
    ],
)
def test_bad_input_is_refused_before_anything_changes(catalog, world, capsys, args, message, tmp_path):
    out = run_module({"group": "web-prod", "catalog": catalog.path, **args}, capsys)
    assert out["failed"] is True
    assert re.search(message, out["msg"]), out["msg"]
    assert world.mutations() == []
    assert not (tmp_path / "state" / "rollouts").exists()


def test_a_revoked_version_is_refused(catalog, world, capsys):
    catalog.revoke("web/3", reason="bad build")
    out = run_module(base(catalog, version="web/3"), capsys)
    assert out["failed"] is True and "web/3 is revoked" in out["msg"]
    assert world.mutations() == []


def test_an_unknown_group_is_refused(catalog, world, capsys):
    out = run_module({**base(catalog, version="web/2"), "group": "web-nope"}, capsys)
    assert out["failed"] is True and "group 'web-nope' has no instances" in out["msg"]
    assert world.mutations() == []


def test_a_channel_row_edited_behind_the_catalog_is_refused_and_nothing_changes(catalog, world, capsys):
    import sqlite3

    conn = sqlite3.connect(catalog.path)
    conn.execute("UPDATE channels SET version='web/3' WHERE image='web' AND channel='prod'")  # never promoted
    conn.commit()
    conn.close()
    out = run_module(base(catalog, image="web", channel="prod"), capsys)
    assert out["failed"] is True
    assert "channel web@prod cannot be trusted" in out["msg"]
    assert "points at web/3 but the trail says web/2" in out["msg"]
    assert world.mutations() == []
