"""Every rule of the promotion policy, on its own and through Catalog.promote."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import (
    Catalog,
    PolicyRefused,
    Version,
)
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.policy import Policy, PolicyError

ROOT = Path(__file__).resolve().parents[3]

POLICY = {
    "channels": {
        "dev": {},
        "staging": {"requires_passing_test": True, "requires_channel": "dev"},
        "prod": {
            "principals": ["release-*", "root"],
            "requires_passing_test": True,
            "requires_channel": "staging",
        },
    },
    "images": {"lb": {"channels": {"prod": {"principals": "ops"}}}},
}


@pytest.fixture
def policy():
    return Policy.from_dict(POLICY, source="test-policy.yml")


@pytest.fixture
def catalog(catalog_location, monkeypatch):
    monkeypatch.setenv("KILN_PRINCIPAL", "release-bot")
    with Catalog(catalog_location) as opened:
        for image in ("web", "web", "lb"):
            opened.register(Version(image=image, name=opened.reserve_version(image), fingerprint="f"))
        yield opened


def test_the_repository_policy_loads_and_guards_staging_and_prod():
    policy = Policy.load(str(ROOT / "inventories" / "local" / "policy.yml"))
    assert set(policy.channels) == {"dev", "staging", "prod"}
    assert (
        policy.channels["staging"].requires_passing_test
        and policy.channels["staging"].requires_channel == "dev"
    )
    assert (
        policy.channels["prod"].requires_channel == "staging" and "*" not in policy.channels["prod"].signers
    )
    assert policy.signed and policy.allowed_signers == str(ROOT / "inventories" / "local" / "allowed_signers")


def test_a_version_without_a_test_is_refused_and_nothing_changes(catalog, policy):
    catalog.promote("dev", "web/1", policy=policy)
    before = catalog.export()  # versions, channels, their history and the audit events
    with pytest.raises(PolicyRefused) as refused:
        catalog.promote("staging", "web/1", policy=policy)
    assert refused.value.details["rules"] == [
        "rule 'requires_passing_test': web/1 has no recorded test result"
    ]
    assert catalog.export() == before


def test_the_newest_test_must_pass(catalog, policy):
    catalog.promote("dev", "web/1", policy=policy)
    catalog.record_test("web/1", passed=True)
    catalog.record_test("web/1", passed=False)
    with pytest.raises(PolicyRefused, match="the newest test of web/1 failed"):
        catalog.promote("staging", "web/1", policy=policy)
    catalog.record_test("web/1", passed=True)
    assert catalog.promote("staging", "web/1", policy=policy).after == "web/1"


def test_the_version_must_have_been_on_the_required_channel(catalog, policy):
    catalog.record_test("web/2", passed=True)
    with pytest.raises(PolicyRefused, match="web/2 was never on channel 'dev'"):
        catalog.promote("staging", "web/2", policy=policy)
    catalog.promote("dev", "web/2", policy=policy)
    catalog.promote("dev", "web/1", policy=policy)  # no longer on dev: having been there is enough
    assert catalog.promote("staging", "web/2", policy=policy).changed


def test_only_listed_principals_move_a_channel(catalog, policy, monkeypatch):
    catalog.record_test("web/1", passed=True)
    catalog.promote("dev", "web/1", policy=policy)
    catalog.promote("staging", "web/1", policy=policy)
    monkeypatch.setenv("KILN_PRINCIPAL", "alice")
    with pytest.raises(
        PolicyRefused, match="'alice' may not move channel 'prod' \\(allowed: release-\\*, root\\)"
    ):
        catalog.promote("prod", from_channel="staging", image="web", policy=policy)
    monkeypatch.setenv("KILN_PRINCIPAL", "release-7")
    assert catalog.promote("prod", from_channel="staging", image="web", policy=policy).after == "web/1"


def test_rollback_checks_only_the_principal(catalog, policy, monkeypatch):
    for ref in ("web/1", "web/2"):
        catalog.record_test(ref, passed=True)
        catalog.promote("dev", ref, policy=policy)
        catalog.promote("staging", ref, policy=policy)
        catalog.promote("prod", ref, policy=policy)
    catalog.record_test("web/1", passed=False)  # a failed re-test does not block going back
    monkeypatch.setenv("KILN_PRINCIPAL", "mallory")
    with pytest.raises(PolicyRefused, match="'mallory' may not move channel 'prod'"):
        catalog.rollback("web", "prod", policy=policy)
    monkeypatch.setenv("KILN_PRINCIPAL", "root")
    assert catalog.rollback("web", "prod", policy=policy).after == "web/1"


def test_every_failed_rule_is_listed(catalog, policy, monkeypatch):
    monkeypatch.setenv("KILN_PRINCIPAL", "alice")
    before = catalog.export()
    with pytest.raises(PolicyRefused) as refused:
        catalog.promote("prod", "web/2", policy=policy)
    assert catalog.export() == before
    assert [rule.split(":")[0] for rule in refused.value.details["rules"]] == [
        "rule 'principals'",
        "rule 'requires_passing_test'",
        "rule 'requires_channel'",
    ]


def test_per_image_rules_replace_the_defaults(catalog, policy, monkeypatch):
    monkeypatch.setenv("KILN_PRINCIPAL", "ops")
    assert catalog.promote("prod", "lb/1", policy=policy).changed  # lb's prod: only the principal rule
    with pytest.raises(PolicyRefused, match="channel 'dev' of image 'lb' is not in the promotion policy"):
        catalog.promote("dev", "lb/1", policy=policy)


def test_a_channel_missing_from_the_policy_is_refused(catalog, policy):
    before = catalog.export()
    with pytest.raises(
        PolicyRefused,
        match="channel 'prdo' of image 'web' is not in the promotion policy "
        "test-policy.yml \\(known channels: dev, staging, prod\\)",
    ):
        catalog.promote("prdo", "web/1", policy=policy)
    assert catalog.export() == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("channels: [dev]\n", "needs a 'channels' mapping"),
        ("channels:\n  dev: {approvers: [x]}\n", "channels.dev has unknown rule\\(s\\) approvers"),
        (
            "channels:\n  prod: {requires_channel: stagin}\n",
            "requires_channel names unknown channel 'stagin'",
        ),
        ("channels:\n  dev: {principals: 3}\n", "channels.dev.principals must be a list"),
        ("channels:\n  dev: {}\nteams: {}\n", "unknown top-level key\\(s\\) teams"),
        ("channels:\n  dev: {\n", "line 3: not valid YAML"),
    ],
)
def test_a_wrong_policy_file_is_named_with_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "policy.yml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=f"promotion policy {path}.*{message}"):
        Policy.load(str(path))


def test_a_missing_policy_file_is_named(tmp_path):
    with pytest.raises(PolicyError, match="nowhere.yml does not exist"):
        Policy.load(str(tmp_path / "nowhere.yml"))


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"approvals": 0}, "channels.prod.approvals must be a number, 1 or more"),
        ({"signers": [1]}, "channels.prod.signers must be a list of names or patterns"),
        ({"requires_passing_test": {"by": "ci"}}, "channels.prod.requires_passing_test takes signers"),
    ],
)
def test_bad_signing_rules_are_named(rules, message):
    with pytest.raises(PolicyError, match=re.escape(message)):
        Policy.from_dict({"channels": {"prod": rules}}, source="p.yml")


def test_signers_and_approvals_count_distinct_allowed_signers():
    policy = Policy.from_dict({"channels": {"prod": {"signers": ["*@rel"], "approvals": 2}}}, source="p.yml")
    assert policy.check_signers("web", "prod", ["a@rel", "b@rel"]) == []
    assert policy.check_signers("web", "prod", ["a@rel", "a@rel"]) == [
        "rule 'approvals': channel 'prod' needs 2 distinct signers, has 1 (a@rel)"
    ]
    assert policy.check_signers("web", "prod", ["x@else"], needed=1)[0].startswith("rule 'signers': 'x@else'")
    assert not Policy.from_dict({"channels": {"dev": {}}}).signed
