"""The drift_info module: arguments in, the drift report out, never changed (fake provider, real catalog)."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.kiln.immutable.plugins.module_utils.observe import drift
from ansible_collections.kiln.immutable.plugins.modules import drift_info
from drift_fakes import FakeInspector, FakeProvider, inst, seeded_catalog


@pytest.fixture
def catalog(tmp_path):
    cat = seeded_catalog(str(tmp_path / "catalog.db"))
    yield cat
    cat.close()


def run_module(args: dict, capsys) -> dict:
    with patch_module_args(args), pytest.raises(SystemExit):
        drift_info.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def fake_backends(monkeypatch):
    instances = [inst(0, "web/2"), inst(1, "web/1")]
    changes = {"kiln-web-prod-0": [drift.PathChange("/etc/x", "added")]}
    monkeypatch.setattr(
        drift, "backends", lambda target: (FakeProvider(instances), FakeInspector(changes=changes))
    )


def test_module_reports_findings_and_never_changed(catalog, fake_backends, capsys):
    args = {"groups": [{"group": "web-prod", "image": "web", "channel": "prod"}], "catalog": catalog.path}
    for check in (False, True):
        out = run_module({**args, "_ansible_check_mode": check}, capsys)
        assert out["changed"] is False and out["drifted"] is True
        kinds = sorted((f["instance"], f["kind"]) for f in out["findings"])
        assert kinds == [("kiln-web-prod-0", "filesystem"), ("kiln-web-prod-1", "version")]
        fs = next(f for f in out["findings"] if f["kind"] == "filesystem")
        assert fs["paths"] == [{"path": "/etc/x", "kind": "added"}]
        assert out["groups"][0]["expected"] == "web/2"


def test_module_without_filesystem_check(catalog, fake_backends, capsys):
    args = {
        "groups": [{"group": "web-prod", "image": "web", "channel": "prod"}],
        "filesystem": False,
        "catalog": catalog.path,
    }
    out = run_module(args, capsys)
    assert [f["kind"] for f in out["findings"]] == ["version"]


def test_module_fails_naming_an_unknown_channel(catalog, fake_backends, capsys):
    args = {"groups": [{"group": "web-prod", "image": "web", "channel": "qa"}], "catalog": catalog.path}
    out = run_module(args, capsys)
    assert out["failed"] is True
    assert "group 'web-prod' follows channel 'qa'" in out["msg"]


def test_module_refuses_a_group_without_channel(capsys, tmp_path):
    out = run_module(
        {"groups": [{"group": "web-prod", "image": "web"}], "catalog": str(tmp_path / "c.db")}, capsys
    )
    assert out["failed"] is True and "channel" in out["msg"]
