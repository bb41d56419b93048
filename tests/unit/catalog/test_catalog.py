"""The catalog as the stages use it: versions, channels, rollback, revocation, retention, export."""

from __future__ import annotations

import json

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import (
    Catalog,
    CatalogError,
    Version,
)
from catalog_support import raw_sql


@pytest.fixture
def catalog(catalog_location):
    with Catalog(catalog_location) as opened:
        yield opened


def add(catalog: Catalog, image: str = "web", fingerprint: str | None = None, **fields) -> Version:
    name = catalog.reserve_version(image)
    return catalog.register(
        Version(image=image, name=name, fingerprint=fingerprint or f"fp-{name}", **fields)
    )


def test_versions_round_trip_with_every_field(catalog):
    fields = dict(
        artifacts={"docker": {"image_id": "sha256:abc", "tag": "kiln/web:1"}},
        base={"ref": "kiln/base:bookworm", "id": "sha256:base"},
        inputs={"template:web.pkr.hcl": "h1"},
        git_commit="0123abc",
        git_dirty=True,
        packer_version="1.6.6",
        ansible_version="2.19.0",
        duration_s=12.5,
        log_path="/tmp/build.log",
        packages={"nginx-light": "1.22.1-9"},
        extra={"note": "kept"},
    )
    registered = add(catalog, **fields)
    got = catalog.get("web/1")
    assert got == registered
    assert got.ref == "web/1" and got.status == "active" and got.created_by and got.created_at.endswith("Z")
    for key, value in fields.items():
        assert getattr(got, key) == value


def test_names_are_reserved_atomically_and_sort_numerically(catalog):
    names = [catalog.reserve_version("web") for _ in range(11)]
    assert names == [str(i) for i in range(1, 12)]
    for name in ("9", "10", "11"):  # "2".."8" are gaps, like failed builds
        catalog.register(Version(image="web", name=name, fingerprint=f"f{name}"))
    assert [v.name for v in catalog.list_versions("web")] == ["11", "10", "9"]
    assert catalog.reserve_version("web") == "12"
    assert catalog.reserve_version("lb") == "1"


def test_register_refuses_a_used_name_and_a_missing_fingerprint(catalog):
    add(catalog)
    with pytest.raises(CatalogError, match="web/1 is already registered"):
        catalog.register(Version(image="web", name="1", fingerprint="other"))
    with pytest.raises(CatalogError, match="no fingerprint"):
        catalog.register(Version(image="web", name="2", fingerprint=""))


def test_a_registered_name_moves_the_counter_past_it(catalog):
    catalog.register(Version(image="web", name="40", fingerprint="imported"))
    assert catalog.reserve_version("web") == "41"


def test_list_versions_pages_by_key(catalog):
    for _ in range(25):
        add(catalog)
    first = catalog.list_versions("web", limit=10)
    second = catalog.list_versions("web", limit=10, before=first[-1].name)
    third = catalog.list_versions("web", limit=10, before=f"web/{second[-1].name}")
    assert [v.name for v in first + second + third] == [str(i) for i in range(25, 0, -1)]


def test_find_by_fingerprint_returns_the_newest_valid_version(catalog):
    add(catalog, fingerprint="same")
    add(catalog, fingerprint="other")
    add(catalog, fingerprint="same")
    assert catalog.find_by_fingerprint("web", "same").ref == "web/3"
    catalog.revoke("web/3", "bad")
    assert catalog.find_by_fingerprint("web", "same").ref == "web/1"
    assert catalog.find_by_fingerprint("web", "nope") is None


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda c: c.get("web/99"), "unknown version web/99"),
        (lambda c: c.get("api/1"), "unknown image 'api'"),
        (lambda c: c.get("web"), "has no image"),
        (lambda c: c.get("web/seven"), "'seven' in 'web/seven' is not a positive whole number"),
        (lambda c: c.rollback("web", "qa"), "unknown channel 'qa' of image 'web'"),
        (lambda c: c.promote("dev", from_channel="qa", image="web"), "unknown channel 'qa'"),
        (lambda c: c.promote("dev", "web/42"), "unknown version web/42"),
        (lambda c: c.record_test("web/42", passed=True), "unknown version web/42"),
        (lambda c: c.promote("Bad Channel", "web/1"), "channel name 'Bad Channel' is not valid"),
    ],
)
def test_unknown_names_are_named_in_the_error(catalog, call, named):
    add(catalog)
    with pytest.raises(CatalogError, match=named.replace("(", r"\(").replace(")", r"\)")):
        call(catalog)


def test_promote_records_who_when_why_and_is_idempotent(catalog, monkeypatch):
    monkeypatch.setenv("KILN_PRINCIPAL", "ci-runner")
    add(catalog)
    add(catalog)
    first = catalog.promote("dev", "web/1", reason="first")
    second = catalog.promote("dev", "web/2", reason="newer")
    again = catalog.promote("dev", "web/2")
    assert (first.before, first.after, first.changed) == (None, "web/1", True)
    assert (second.before, second.after) == ("web/1", "web/2")
    assert not again.changed
    history = catalog.channel_history("web", "dev")
    assert [(h["previous"], h["version"], h["reason"], h["principal"]) for h in history] == [
        ("web/1", "web/2", "newer", "ci-runner"),
        (None, "web/1", "first", "ci-runner"),
    ]
    assert catalog.channel_version("web", "dev").ref == "web/2"


def test_promote_from_another_channel(catalog):
    add(catalog)
    add(catalog)
    catalog.promote("staging", "web/2")
    move = catalog.promote("prod", from_channel="staging", image="web")
    assert move.after == "web/2"
    assert catalog.channels("web") == {"prod": "web/2", "staging": "web/2"}


def test_check_mode_computes_the_move_and_changes_nothing(catalog):
    add(catalog)
    move = catalog.promote("dev", "web/1", check=True)
    assert move.changed and move.after == "web/1"
    assert catalog.channels("web") == {}
    assert catalog.channel_history("web") == []
    assert catalog.verify()["events"] == 1  # only the registration


def test_rollback_walks_back_through_assignments(catalog):
    for _ in range(3):
        add(catalog)
    for ref in ("web/1", "web/2", "web/3"):
        catalog.promote("prod", ref)
    assert catalog.rollback("web", "prod").after == "web/2"
    # A second rollback goes further back, not forth again to web/3.
    assert catalog.rollback("web", "prod").after == "web/1"
    with pytest.raises(CatalogError, match="no earlier version to roll back to"):
        catalog.rollback("web", "prod")
    # A promotion after rollbacks starts a new step: rolling back returns to web/1.
    catalog.promote("prod", "web/3")
    assert catalog.rollback("web", "prod").after == "web/1"
    actions = [h["action"] for h in catalog.channel_history("web", "prod")]
    assert actions == ["rollback", "promote", "rollback", "rollback", "promote", "promote", "promote"]


def test_rollback_to_a_named_version_it_had_before(catalog):
    for _ in range(4):
        add(catalog)
    for ref in ("web/1", "web/2", "web/3"):
        catalog.promote("prod", ref)
    assert catalog.rollback("web", "prod", to="web/1").after == "web/1"
    with pytest.raises(CatalogError, match="web/4 was never on channel 'prod'"):
        catalog.rollback("web", "prod", to="web/4")


def test_rollback_steps_over_revoked_versions(catalog):
    for _ in range(3):
        add(catalog)
    for ref in ("web/1", "web/2", "web/3"):
        catalog.promote("prod", ref)
    catalog.revoke("web/2", "CVE-1", fallback=False)
    move = catalog.rollback("web", "prod")
    assert (move.after, move.skipped) == ("web/1", ["web/2"])


def test_revoked_versions_cannot_be_promoted(catalog):
    add(catalog)
    catalog.revoke("web/1", "CVE-2026-0001")
    with pytest.raises(CatalogError, match=r"web/1 is revoked \(CVE-2026-0001\)"):
        catalog.promote("dev", "web/1")


def test_revocation_makes_channels_fall_back_to_their_last_valid_version(catalog):
    for _ in range(3):
        add(catalog)
    catalog.promote("prod", "web/1")
    catalog.promote("prod", "web/2")
    catalog.promote("prod", "web/3")
    catalog.promote("staging", "web/3")
    catalog.revoke("web/2", "bad")  # not current anywhere: nothing moves
    outcome = catalog.revoke("web/3", "CVE-3")
    moved = {m["channel"]: (m["before"], m["after"], m["action"]) for m in outcome["moves"]}
    # prod steps over the revoked web/2 to web/1; staging had nothing before, so it is emptied.
    assert moved == {"prod": ("web/3", "web/1", "fallback"), "staging": ("web/3", None, "fallback")}
    assert catalog.channels("web") == {"prod": "web/1", "staging": None}
    assert catalog.channel_version("web", "staging") is None
    assert catalog.channel_history("web", "prod", limit=1)[0]["reason"] == "web/3 revoked: CVE-3"


def test_revocation_without_fallback_leaves_channels(catalog):
    add(catalog)
    add(catalog)
    catalog.promote("prod", "web/1")
    catalog.promote("prod", "web/2")
    assert catalog.revoke("web/2", "known issue", fallback=False)["moves"] == []
    assert catalog.channels("web") == {"prod": "web/2"}


def test_revocation_flags_descendants_and_can_be_undone(catalog):
    add(catalog)
    add(catalog, parent="web/1")
    add(catalog, parent="web/2")
    outcome = catalog.revoke("web/1", "base had a CVE")
    assert outcome["flagged"] == ["web/2"]
    assert catalog.get("web/2").flags == ["parent-revoked:web/1"]
    assert catalog.get("web/3").flags == []  # its own parent, web/2, is still valid
    assert catalog.revoke("web/1", "again")["changed"] is False
    assert catalog.restore("web/1")["changed"] is True
    assert catalog.get("web/1").status == "active" and catalog.get("web/1").revocation is None
    assert catalog.get("web/2").flags == []
    assert catalog.restore("web/1")["changed"] is False


def test_scheduled_revocation_takes_effect_at_its_time(catalog, monkeypatch):
    from ansible_collections.kiln.immutable.plugins.module_utils.catalog import model

    add(catalog)
    add(catalog)
    catalog.promote("prod", "web/1")
    catalog.promote("prod", "web/2")
    clock = [1_900_000_000.0]
    monkeypatch.setattr(model, "now", lambda: clock[0])
    outcome = catalog.revoke("web/2", "end of support", at=clock[0] + 3600)
    assert outcome["scheduled"] and outcome["moves"] == []
    assert catalog.get("web/2").status == "active"
    assert catalog.channel_version("web", "prod").ref == "web/2"
    clock[0] += 3601
    assert catalog.channel_version("web", "prod").ref == "web/1"
    assert catalog.get("web/2").status == "revoked"
    assert catalog.verify()["ok"]


def test_a_scheduled_revocation_can_be_cancelled(catalog):
    add(catalog)
    catalog.revoke("web/1", "later", at="2999-01-01T00:00:00Z")
    assert catalog.get("web/1").revocation["at"].startswith("2999-01-01")
    assert catalog.restore("web/1")["changed"]
    assert catalog.get("web/1").revocation is None


def test_record_test_keeps_results_in_order(catalog):
    add(catalog)
    catalog.record_test("web/1", passed=False, duration_s=3.0, details={"scenario": "image"})
    catalog.record_test("web/1", passed=True, duration_s=2.5, log_path="/tmp/t.log")
    tests = catalog.get("web/1").tests
    assert [t["passed"] for t in tests] == [False, True]
    assert tests[0]["details"] == {"scenario": "image"} and tests[1]["log_path"] == "/tmp/t.log"


# ---------------------------------------------------------------------------------- retention


def prune_setup(catalog):
    """web/1..10; prod history 2 -> 3 -> 4 (current), staging on 6; an instance runs web/1."""
    for _ in range(10):
        add(catalog)
    for ref in ("web/2", "web/3", "web/4"):
        catalog.promote("prod", ref)
    catalog.promote("staging", "web/6")
    return {"web/1"}


def test_prune_never_removes_a_protected_version(catalog):
    running = prune_setup(catalog)
    planned = catalog.prune(keep=3, history_depth=2, running=running, check=True)
    assert sorted(planned.removed) == ["web/5", "web/7"]
    assert planned.kept == {
        "web/10": "one of the newest 3",
        "web/9": "one of the newest 3",
        "web/8": "one of the newest 3",
        "web/6": "channel staging points at it",
        "web/4": "channel prod points at it",
        "web/3": "in the recent history of channel prod",
        "web/2": "in the recent history of channel prod",
        "web/1": "run by an instance",
    }
    assert len(catalog.list_versions("web", limit=100)) == 10  # check mode removed nothing
    done = catalog.prune(keep=3, history_depth=2, running=running)
    assert done.removed == planned.removed
    left = [v.name for v in catalog.list_versions("web", limit=100)]
    assert left == ["10", "9", "8", "6", "4", "3", "2", "1"]
    assert catalog.prune(keep=3, history_depth=2, running=running).removed == []
    # Rollback still works over what is left.
    assert catalog.rollback("web", "prod").after == "web/3"


def test_pruned_versions_stay_in_the_audit_trail(catalog):
    prune_setup(catalog)
    catalog.prune(keep=3, history_depth=2, running={"web/1"})
    removals = [e for e in catalog.events(limit=100) if e["action"] == "remove"]
    assert {e["subject"] for e in removals} == {"web/5", "web/7"}
    assert removals[0]["payload"]["version"]["fingerprint"].startswith("fp-")
    assert catalog.verify()["ok"]


def test_remove_refuses_a_version_in_use(catalog):
    add(catalog)
    add(catalog)
    catalog.promote("prod", "web/1")
    with pytest.raises(CatalogError, match="web/1 is on channel\\(s\\) prod"):
        catalog.remove("web/1", running=set())
    with pytest.raises(CatalogError, match="web/2 is run by an instance"):
        catalog.remove("web/2", running={"web/2"})
    catalog.remove("web/2", running=set())
    assert catalog.find("web/2") is None


def test_prune_refuses_negative_numbers(catalog):
    with pytest.raises(CatalogError, match="keep \\(-1\\)"):
        catalog.prune(keep=-1, running=set())


# ---------------------------------------------------------------------------------- audit trail


def tamper(location: str, sql: str, params: tuple = ()) -> None:
    raw_sql(location, sql, params)


@pytest.fixture
def busy_catalog(catalog):
    for _ in range(3):
        add(catalog)
    catalog.promote("dev", "web/1")
    catalog.promote("dev", "web/2")
    catalog.record_test("web/2", passed=True)
    catalog.promote("prod", "web/2")
    expected = {"ok": True, "events": 7, "head": catalog.verify()["head"], "problems": [], "signed": False}
    assert catalog.verify() == expected
    return catalog


def test_verify_catches_an_edited_event(busy_catalog, catalog_location):
    tamper(
        catalog_location,
        "UPDATE events SET payload=? WHERE id=5",
        ('{"from":null,"to":"web/3","reason":""}',),
    )
    report = busy_catalog.verify()
    assert not report["ok"]
    assert "event 5 (promote web@dev) was edited: its hash does not match" in report["problems"]


def test_verify_catches_a_deleted_event_in_the_middle(busy_catalog, catalog_location):
    tamper(catalog_location, "DELETE FROM events WHERE id=4")
    problems = busy_catalog.verify()["problems"]
    assert "events 4..4 are missing (deleted)" in problems
    assert "event 5 does not link to the event before it (one was deleted or edited)" in problems


def test_verify_catches_a_deleted_newest_event(busy_catalog, catalog_location):
    tamper(catalog_location, "DELETE FROM events WHERE id=7")
    problems = busy_catalog.verify()["problems"]
    assert any(p.startswith("the newest events were deleted") for p in problems)


def test_verify_catches_rows_changed_behind_kilns_back(busy_catalog, catalog_location):
    tamper(catalog_location, "UPDATE channels SET version='web/3' WHERE channel='prod'")
    tamper(catalog_location, "UPDATE versions SET doc=replace(doc, 'fp-1', 'fp-x') WHERE seq=1")
    tamper(catalog_location, "DELETE FROM channel_history WHERE id=1")
    problems = busy_catalog.verify()["problems"]
    assert "channel web@prod points at web/3 but the trail says web/2" in problems
    assert "version web/1 was edited after it was registered" in problems
    assert "channel web@dev has 1 history entries; the trail has 2" in problems


def test_a_rehashed_chain_still_fails_against_the_head(busy_catalog, catalog_location):
    """Rewriting one event and rehashing everything after it still leaves the stored head stale."""
    from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import event_hash

    (rows,) = raw_sql(
        catalog_location,
        "SELECT id, at, principal, action, subject, payload, prev_hash FROM events ORDER BY id",
    )
    prev = None
    updates = []
    for event_id, at, who, action, subject, payload, prev_hash in rows:
        if event_id == 3:
            who = "someone-else"
        prev_hash = prev or prev_hash
        digest = event_hash(event_id, at, who, action, subject, payload, prev_hash)
        updates.append(
            (
                "UPDATE events SET principal=?, prev_hash=?, hash=? WHERE id=?",
                (who, prev_hash, digest, event_id),
            )
        )
        prev = digest
    raw_sql(catalog_location, updates)
    assert any(p.startswith("the newest events were deleted") for p in busy_catalog.verify()["problems"])


# ---------------------------------------------------------------------------------- export / import


def test_export_import_round_trip(busy_catalog, new_catalog_location):
    busy_catalog.revoke("web/1", "old", fallback=False)
    doc = json.loads(json.dumps(busy_catalog.export()))
    with Catalog(new_catalog_location()) as copy:
        report = copy.import_(doc)
        assert report["ok"] and report["head"] == busy_catalog.verify()["head"]
        assert copy.export() == doc
        assert copy.channel_history("web") == busy_catalog.channel_history("web")
        assert copy.get("web/2") == busy_catalog.get("web/2")
        assert copy.reserve_version("web") == "4"


def test_import_refuses_a_tampered_export_and_keeps_nothing(busy_catalog, new_catalog_location):
    doc = busy_catalog.export()
    doc["channels"][-1]["version"] = "web/3"
    with Catalog(new_catalog_location()) as copy:
        with pytest.raises(CatalogError, match="export does not verify, nothing imported"):
            copy.import_(doc)
        assert copy.export()["events"] == [] and copy.images() == []


def test_import_refuses_a_non_empty_catalog(busy_catalog):
    with pytest.raises(CatalogError, match="is not empty"):
        busy_catalog.import_(busy_catalog.export())


def test_import_refuses_something_else(catalog):
    with pytest.raises(CatalogError, match="not a kiln catalog export"):
        catalog.import_({"format": "other"})
