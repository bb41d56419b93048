"""`invoke status`: facts from a real catalog and a fake provider, and the table's 100 columns."""

from __future__ import annotations

import json
import time

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.observe import status
from ansible_collections.kiln.immutable.plugins.module_utils.observe.drift import (
    GroupTarget,
    PathChange,
    detect,
)
from drift_fakes import FakeInspector, FakeProvider, inst, seeded_catalog

NOW = time.time()


@pytest.fixture
def catalog(tmp_path):
    cat = seeded_catalog(str(tmp_path / "catalog.db"))
    cat.record_test("web/2", passed=True, details={"scenario": "image"})
    cat.record_test("web/3", passed=False, details={"scenario": "image"})
    yield cat
    cat.close()


TARGETS = [GroupTarget("web-prod", "web", "prod"), GroupTarget("web-staging", "web", "staging")]


def make_doc(catalog, instances, changes=None):
    provider = FakeProvider(instances)
    report = detect(TARGETS, catalog, provider, FakeInspector(changes=changes or {}))
    return status.collect(catalog, TARGETS, report=report, now=NOW)


def test_status_collects_versions_tests_channels_and_instances(catalog):
    prod = [inst(0, "web/2"), inst(1, "web/1")]
    prod[0].started_at = NOW - 3700
    doc = make_doc(catalog, prod + [inst(0, "web/3", group="web-staging")])
    [web] = doc["images"]
    assert [v["ref"] for v in web["versions"]] == ["web/3", "web/2", "web/1"]
    assert [v["test"] and v["test"]["passed"] for v in web["versions"]] == [False, True, None]
    channels = {c["channel"]: c for c in doc["channels"]}
    assert channels["prod"]["version"] == "web/2" and channels["prod"]["action"] == "promote"
    assert channels["prod"]["since"]
    groups = {g["group"]: g for g in doc["groups"]}
    assert groups["web-prod"]["drifted"] and not groups["web-staging"]["drifted"]
    first = groups["web-prod"]["instances"][0]
    assert first["age_s"] == pytest.approx(3700, abs=1)
    assert doc["drifted"] is True
    json.dumps(doc)  # --json prints exactly this


def test_the_table_shows_each_part_within_100_columns(catalog):
    long_name = "kiln-web-prod-0-" + "x" * 80
    prod = [inst(0, "web/2"), inst(1, "web/1")]
    prod[0].name = long_name
    prod[1].started_at = NOW - 125
    changes = {"kiln-web-prod-1": [PathChange("/etc/x", "added"), PathChange("/etc/y", "added")]}
    doc = make_doc(catalog, prod + [inst(0, "web/3", group="web-staging")], changes)
    text = status.render(doc)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0].split() == ["IMAGE", "VERSION", "STATUS", "BUILT", "LAST", "TEST"]
    assert any("web/3" in line and "FAILED (image)" in line for line in lines)
    assert any("web/1" in line and "untested" in line for line in lines)
    assert any(line.startswith("web@prod") and "web/2" in line and "promote by" in line for line in lines)
    assert "GROUP web-prod: follows web@prod = web/2; DRIFT" in text
    assert "GROUP web-staging: follows web@staging = web/3; in sync" in text
    row = next(line for line in lines if "kiln-web-prod-1" in line)
    assert row.split()[1:] == ["1", "web/1", "healthy", "2m05s", "version,fs:2"]
    assert any(line.strip().startswith("kiln-web-prod-0-xxx") and line.endswith("-") for line in lines)
    assert "…" in text  # the long name was shortened, not wrapped


def test_a_narrower_terminal_is_respected(catalog):
    doc = make_doc(catalog, [inst(0, "web/2")])
    assert max(len(line) for line in status.render(doc, width=72).splitlines()) <= 72


def test_an_empty_setup_says_what_to_do(tmp_path):
    with Catalog(str(tmp_path / "c.db")) as catalog:
        doc = status.collect(catalog, [], report=detect([], catalog), now=NOW)
    assert doc == {"generated_at": NOW, "images": [], "channels": [], "groups": [], "drifted": False}
    assert "no groups: add hosts to kiln_groups" in status.render(doc)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m00s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (90061, "1d01h"),
    ],
)
def test_age(seconds, text):
    assert status.age(seconds) == text


def test_a_group_whose_channel_does_not_exist_is_shown_not_refused(catalog):
    targets = [GroupTarget("web-qa", "web", "qa")]
    provider = FakeProvider([inst(0, "web/2", group="web-qa")])
    report = detect(targets, catalog, provider, FakeInspector(), strict=False)
    doc = status.collect(catalog, targets, report=report, now=NOW)
    text = status.render(doc)
    assert "GROUP web-qa: follows web@qa = no version; no such channel; DRIFT" in text
    assert "  ! group 'web-qa' follows channel 'qa' of image 'web', which does not exist" in text
    assert max(len(line) for line in text.splitlines()) <= 100
