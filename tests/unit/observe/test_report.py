"""Roll-out reports from results the real engine writes (run against the fake provider), and bad input."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.common.errors import KilnError
from ansible_collections.kiln.immutable.plugins.module_utils.observe import report
from rollout_fakes import V1, World, fake_rollout


def run_rollout(root, world: World | None = None, **options) -> dict:
    if world is None:
        world = World()
        world.seed(4, V1)
    return fake_rollout(world, root, **options).run()


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict:
    return run_rollout(tmp_path_factory.mktemp("good"), batch_size=2)


@pytest.fixture(scope="module")
def rolled_back(tmp_path_factory) -> dict:
    world = World()
    world.seed(4, V1)
    world.bad_slots.add(("web/2", 3))
    return run_rollout(tmp_path_factory.mktemp("bad"), world, batch_size=1, max_surge=1)


def test_timeline_shows_each_slot_going_from_the_old_to_the_new_version(good):
    tl = report.build_timeline(good)
    assert tl.slots == [0, 1, 2, 3]
    assert tl.versions == ["web/1", "web/2"]
    for slot in tl.slots:
        serving = [s for s in tl.segments if s.slot == slot and s.state == "serving"]
        serving.sort(key=lambda s: s.start)
        assert [s.version for s in serving] == ["web/1", "web/2"]
        assert serving[0].start == pytest.approx(tl.t0)
        assert serving[-1].end == pytest.approx(tl.t1)
        # the instance that was there before gets its real name from the events
        assert all(s.instance for s in serving)
        # with surge, old and new instance overlap: they are drawn on two rows
        assert {s.track for s in tl.segments if s.slot == slot} == {0, 1}


def test_in_service_counts_never_drop_below_the_group_size_with_surge(good):
    tl = report.build_timeline(good)
    totals = [sum(counts.values()) for t, counts in tl.in_service if t < tl.t1]
    assert min(totals) == 4 and max(totals) > 4
    last_before_end = [counts for t, counts in tl.in_service if t < tl.t1][-1]
    assert last_before_end == {"web/2": 4}


def test_batches_and_health_checks_come_from_the_result(good):
    tl = report.build_timeline(good)
    assert [(b.index, b.phase, b.outcome, b.slots) for b in tl.batches] == [
        (0, "forward", "ok", [0, 1]),
        (1, "forward", "ok", [2, 3]),
    ]
    healthy = sorted(m.slot for m in tl.markers if m.kind == "healthy")
    assert healthy == [0, 1, 2, 3]


def test_a_rolled_back_rollout_shows_the_failed_batch_and_the_rollback_batches(rolled_back):
    assert rolled_back["status"] == "rolled_back"
    tl = report.build_timeline(rolled_back)
    phases = [(b.phase, b.outcome) for b in tl.batches]
    assert ("forward", "failed") in phases
    assert ("rollback", "ok") in phases
    assert [m.slot for m in tl.markers if m.kind == "unhealthy"] == [3]
    assert {m.kind for m in tl.markers if m.slot is None} >= {"stopped", "rollback"}
    assert [s.state for s in tl.segments if s.slot == 3 and s.version == "web/2"][-1] == "failed"


def test_the_page_has_every_batch_the_svg_is_well_formed_and_nothing_is_loaded_from_outside(rolled_back):
    page = report.render_html(rolled_back)
    for batch in rolled_back["batches"]:
        n = batch["index"] + 1
        assert f'id="batch-{batch["index"]}"' in page
        assert f">Batch {n}<" in page
        assert f'id="batch-detail-{batch["index"]}"' in page
    svg = re.search(r"<svg .*?</svg>", page, re.S).group(0)
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # the only URL in the page is the SVG namespace
    assert re.findall(r"https?://[^\s\"'<>]+", page) == ["http://www.w3.org/2000/svg"]
    assert "<script" not in page


def test_load_is_drawn_with_its_error_rate_when_measured(good):
    t0 = good["started_at"]
    samples = [{"t": t0 + i * 0.05, "requests": 20, "failed": 5 if i == 2 else 0} for i in range(6)]
    page = report.render_html(good, load={"samples": samples})
    assert "120 requests, 5 failed (4.17%)" in page
    assert 'class="error-rate"' in page
    assert page.count('class="load"') == 6
    # without a load there is no load chart
    assert 'class="error-rate"' not in report.render_html(good)


def test_load_samples_accept_ok_and_failed_counts_or_rows():
    samples = report._load_samples({"samples": [{"t": 2, "ok": 9, "failed": 1}, [1, 10, 0]]})
    assert [(s.t, s.requests, s.failed) for s in samples] == [(1.0, 10, 0), (2.0, 10, 1)]
    assert samples[1].error_rate == pytest.approx(0.1)


def test_an_interrupted_rollout_shows_its_unfinished_batch(good):
    doc = json.loads(json.dumps(good))
    end = max(i for i, e in enumerate(doc["events"]) if e["event"] == "batch_end")
    doc["events"] = doc["events"][:end]  # killed before the second batch ended
    doc["status"] = "running"
    doc.pop("finished_at")
    tl = report.build_timeline(doc)
    assert [(b.index, b.outcome) for b in tl.batches] == [(0, "ok"), (1, "unfinished")]
    assert "Batch 2" in report.render_html(doc)


def test_write_html_puts_the_page_next_to_the_result_and_newest_result_finds_it(tmp_path):
    first = run_rollout(tmp_path, batch_size=4)
    world = World()
    world.seed(2, V1)
    second = run_rollout(tmp_path, world, batch_size=1)
    assert report.newest_result(str(tmp_path)) == second["result_path"]
    assert report.newest_result(str(tmp_path), group="web-test") == second["result_path"]
    page = report.write_html(first["result_path"])
    assert page == os.path.splitext(first["result_path"])[0] + ".html"
    with open(page, encoding="utf-8") as handle:
        assert "Roll-out of web-test to web/2: succeeded" in handle.read()
    assert not [p for p in os.listdir(os.path.dirname(page)) if ".tmp" in p]


def test_newest_result_says_where_it_looked_when_there_is_none(tmp_path):
    with pytest.raises(KilnError, match=f"no roll-out result of group 'web-prod' under {tmp_path}"):
        report.newest_result(str(tmp_path), group="web-prod")


def test_a_broken_result_file_is_refused_naming_file_and_line(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"group": "g",\n "events": [\n')
    with pytest.raises(KilnError, match=rf"{re.escape(str(bad))} is not JSON \(line 3\)"):
        report.load_result(str(bad))
    other = tmp_path / "y.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(KilnError, match="is not a roll-out result"):
        report.load_result(str(other))


def test_text_from_the_result_is_escaped(good):
    doc = json.loads(json.dumps(good))
    doc["target"] = "web/<b>2</b>"
    page = report.render_html(doc)
    assert "<b>2</b>" not in page and "web/&lt;b&gt;2&lt;/b&gt;" in page


def test_bucket_load_counts_requests_and_failures_per_interval(good):
    t0 = 1000.0
    requests = [(t0 + 0.1, True), (t0 + 0.6, False), (t0 + 1.2, True), (t0 + 3.9, True)]
    load = report.bucket_load(requests, interval=1.0)
    assert load["samples"] == [
        {"t": 1000.0, "requests": 2, "failed": 1},
        {"t": 1001.0, "requests": 1, "failed": 0},
        {"t": 1003.0, "requests": 1, "failed": 0},
    ]
    with pytest.raises(KilnError, match="interval must be > 0"):
        report.bucket_load(requests, interval=0)


def test_the_page_shows_each_analysis_with_numbers_per_version_and_the_verdict(tmp_path):
    world = World()
    world.seed(4, V1)
    world.traffic = 1000
    world.faults["web/2"] = (0.25, 1.0)
    options = {"max_error_rate": "1%", "min_requests": 50, "bake_time": 0.01}
    doc = run_rollout(tmp_path, world, strategy="canary", steps=[{"instances": 1}], **options)
    assert doc["status"] == "rolled_back"
    page = report.render_html(doc)
    section = page[page.index("<h2>Analysis (canary)</h2>") : page.index("<h2>Batches</h2>")]
    assert '<span class="failed">Failed</span>' in section
    numbers = doc["analysis"][0]["versions"]
    for ref in ("web/1", "web/2"):
        assert (
            f"<td>{ref}{' (new)' if ref == 'web/2' else ''}</td><td>{numbers[ref]['requests']}</td>"
            in section
        )
    assert "error rate of web/2" in section
    assert "<th>verdict</th><td>Failed</td>" in page
