"""A signed catalog against an attacker with write access to it, with the real ssh-keygen.

Every key here is made by ssh-keygen; every check runs ``ssh-keygen -Y verify`` against a real
allowed_signers file.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.audit import GENESIS
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import (
    Catalog,
    PolicyRefused,
    Untrusted,
    Version,
    event_hash,
)
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.policy import Policy
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.signing import Signer, SigningError
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.trust import Trust
from catalog_support import raw_sql

POLICY = """
signing:
  allowed_signers: allowed_signers
channels:
  dev: {}
  prod:
    signers: ["*@release.example.com"]
    approvals: 2
    requires_passing_test:
      signers: [ci@example.com]
    requires_channel: dev
"""


def make_key(folder: Path, name: str) -> Path:
    key = folder / "keys" / name
    key.parent.mkdir(exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def line(identity: str, key: Path, options: str = 'namespaces="kiln"') -> str:
    return f"{identity} {options} {key.with_suffix('.pub').read_text().strip()}\n"


class World:
    def __init__(self, tmp_path: Path, location: str):
        self.root = tmp_path
        self.db = location
        (tmp_path / "policy.yml").write_text(POLICY)
        self.keys = {name: make_key(tmp_path, name) for name in ("ci", "alice", "bob", "mallory", "stranger")}
        self.identities = {
            "ci": "ci@example.com",
            "alice": "alice@release.example.com",
            "bob": "bob@release.example.com",
            "mallory": "mallory@example.com",  # listed, but no release signer
        }
        self.write_allowed()

    def write_allowed(self, extra: str = "", skip: tuple = ()) -> None:
        text = "".join(line(self.identities[n], self.keys[n]) for n in self.identities if n not in skip)
        (self.root / "allowed_signers").write_text(text + extra)

    def policy(self) -> Policy:
        return Policy.load(str(self.root / "policy.yml"))

    def catalog(self, who: str) -> Catalog:
        return Catalog(self.db, trust=Trust(self.policy(), Signer(str(self.keys[who]))))

    def export(self) -> dict:
        with Catalog(self.db, trust=None) as plain:
            return plain.export()

    def sql(self, statement: str, params: tuple = ()) -> list[tuple]:
        return raw_sql(self.db, statement, params)[0]


@pytest.fixture
def world(tmp_path, monkeypatch, catalog_location):
    monkeypatch.delenv("KILN_POLICY", raising=False)
    monkeypatch.delenv("KILN_SIGNING_KEY", raising=False)
    world = World(tmp_path, catalog_location)
    with world.catalog("ci") as ci:
        for _ in range(2):
            name = ci.reserve_version("api")
            ci.register(Version(image="api", name=name, fingerprint=f"fp-{name}"))
        ci.promote("dev", "api/1", policy=world.policy())
        ci.record_test("api/1", passed=True)
    return world


def to_prod(world: World, *signers: str, version: str = "api/1"):
    moves = []
    for who in signers:
        with world.catalog(who) as catalog:
            moves.append(catalog.promote("prod", version, policy=world.policy()))
    return moves


def test_every_event_is_signed_and_the_trail_verifies(world):
    with world.catalog("ci") as catalog:
        report = catalog.verify()
        events = catalog.events(limit=100)
        created_by = catalog.get("api/1").created_by
    assert report["ok"] and report["signed"] and report["problems"] == []
    assert {e["action"] for e in events} == {"register", "promote", "test"}
    assert all(e["payload"]["signature"]["signer"] == "ci@example.com" == e["principal"] for e in events)
    assert created_by == "ci@example.com"


def test_kiln_principal_root_with_an_unlisted_key_changes_nothing(world, monkeypatch):
    monkeypatch.setenv("KILN_PRINCIPAL", "root")
    before = world.export()
    with pytest.raises(SigningError, match="is not in .*allowed_signers"):
        to_prod(world, "stranger")
    with pytest.raises(
        PolicyRefused, match="rule 'signers': 'mallory@example.com' may not move channel 'prod'"
    ):
        to_prod(world, "mallory")
    assert world.export() == before


def test_two_distinct_signers_are_needed_for_prod(world):
    first, again = to_prod(world, "alice", "alice")
    assert first.action == again.action == "approve" and first.after is None  # prod unchanged
    with world.catalog("ci") as catalog:
        assert catalog.channels("api") == {"dev": "api/1"}
    (second,) = to_prod(world, "bob")
    assert second.action == "promote" and second.after == "api/1" and len(second.approvals) == 1
    with world.catalog("ci") as catalog:
        assert catalog.channel_version("api", "prod").ref == "api/1"
        assert catalog.verify_channel("api", "prod")["signers"] == [
            "alice@release.example.com",
            "bob@release.example.com",
        ]


def test_prod_needs_a_passing_test_signed_by_ci(world):
    with world.catalog("alice") as alice:
        alice.promote("dev", "api/2", policy=world.policy())
        alice.record_test("api/2", passed=True)  # a pass, but not signed by CI
    with pytest.raises(
        PolicyRefused, match="signed by ci@example.com.*signed by 'alice@release.example.com'"
    ):
        to_prod(world, "alice", version="api/2")


def test_an_edited_channel_row_is_refused_where_it_is_used(world):
    to_prod(world, "alice", "bob")
    world.sql("UPDATE channels SET version='api/2' WHERE image='api' AND channel='prod'")
    before = world.export()
    with world.catalog("ci") as catalog:
        with pytest.raises(Untrusted, match="channel api@prod cannot be trusted.*points at api/2"):
            catalog.channel_version("api", "prod")
        with pytest.raises(Untrusted, match="api@prod"):
            catalog.rollback("api", "prod", policy=world.policy())
    assert world.export() == before


def edit_event(world: World, event_id: int, **changes) -> None:
    with Catalog(world.db, trust=None) as plain:
        (event,) = [e for e in plain.events(limit=1000) if e["id"] == event_id]
    payload = {**event["payload"], **changes}
    world.sql("UPDATE events SET payload=? WHERE id=?", (json.dumps(payload, sort_keys=True), event_id))


def test_an_edited_event_is_named(world):
    edit_event(world, 3, to="api/2")  # the promote of dev
    with world.catalog("ci") as catalog:
        report = catalog.verify()
    assert not report["ok"]
    assert any(p.startswith("event 3 (promote api@dev)") for p in report["problems"])


def test_a_deleted_or_inserted_event_is_named(world):
    with Catalog(world.db, trust=None) as plain:
        head = plain.events(limit=1)[0]
    payload = json.dumps({"from": "api/1", "to": "api/2", "reason": ""})
    at, event_id = head["at"], head["id"] + 1
    digest = event_hash(event_id, at, "ci@example.com", "promote", "api@dev", payload, head["hash"])
    world.sql(
        "INSERT INTO events (id, at, principal, action, subject, payload, prev_hash, hash)"
        " VALUES (?, ?, 'ci@example.com', 'promote', 'api@dev', ?, ?, ?)",
        (event_id, at, payload, head["hash"], digest),
    )
    world.sql("UPDATE meta SET value=? WHERE key='head'", (f"{event_id}:{digest}",))
    with world.catalog("ci") as catalog:
        assert f"event {event_id} (promote api@dev) is not signed" in catalog.verify()["problems"]
    world.sql("DELETE FROM events WHERE id=2")
    with world.catalog("ci") as catalog:
        assert "events 2..2 are missing (deleted)" in catalog.verify()["problems"][0]


def test_rewriting_the_whole_trail_with_a_fresh_head_is_detected(world):
    """An attacker recomputes every hash and the head: the hashes hold, the signatures do not."""
    edit_event(world, 3, to="api/2")
    rows = world.sql("SELECT id, at, principal, action, subject, payload FROM events ORDER BY id")
    prev, updates = GENESIS, []
    for event_id, at, who, action, subject, payload in rows:
        digest = event_hash(event_id, at, who, action, subject, payload, prev)
        updates.append(("UPDATE events SET prev_hash=?, hash=? WHERE id=?", (prev, digest, event_id)))
        prev = digest
    updates.append(("UPDATE meta SET value=? WHERE key='head'", (f"{rows[-1][0]}:{prev}",)))
    updates.append(("UPDATE channels SET version='api/2' WHERE channel='dev'", ()))
    raw_sql(world.db, updates)
    with Catalog(world.db, trust=None) as unsigned:
        assert unsigned.verify()["ok"]  # what an unsigned catalog cannot tell
    with world.catalog("ci") as catalog:
        problems = catalog.verify()["problems"]
        assert problems[0].startswith("event 3 (promote api@dev) has a bad signature")
        assert any(p.startswith("the head of the trail") for p in problems)
        with pytest.raises(Untrusted, match="event 3"):
            catalog.channel_version("api", "dev")


def test_a_retired_key_keeps_its_past_and_signs_nothing_new(world):
    to_prod(world, "alice", "bob")
    time.sleep(1.1)  # allowed_signers times have whole seconds: retire the key strictly between
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%SZ")
    new_key = make_key(world.root, "alice-2")
    world.write_allowed(
        skip=("alice",),
        extra=line(
            "alice@release.example.com", world.keys["alice"], f'namespaces="kiln",valid-before="{now}"'
        )
        + line("alice@release.example.com", new_key, f'namespaces="kiln",valid-after="{now}"'),
    )
    time.sleep(1.1)
    with world.catalog("ci") as catalog:
        assert catalog.verify()["ok"]  # her approval, made while the key was valid, still holds
        assert catalog.channel_version("api", "prod").ref == "api/1"
    before = world.export()
    with pytest.raises(SigningError, match="not valid now"):
        to_prod(world, "alice", version="api/2")
    assert world.export() == before
    with Catalog(world.db, trust=Trust(world.policy(), Signer(str(new_key)))) as catalog:
        assert catalog.promote("dev", "api/2", policy=world.policy()).principal == "alice@release.example.com"


def test_a_signer_removed_from_allowed_signers_no_longer_vouches(world):
    to_prod(world, "alice", "bob")
    world.write_allowed(skip=("bob",))
    with world.catalog("ci") as catalog:
        with pytest.raises(Untrusted, match=r"event \d+ \(promote api@prod\) has a bad signature"):
            catalog.channel_version("api", "prod")


def test_an_unsigned_catalog_works_as_before_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("KILN_POLICY", raising=False)
    with Catalog(str(tmp_path / "c.db")) as catalog:
        name = catalog.reserve_version("api")
        catalog.register(Version(image="api", name=name, fingerprint="f"))
        catalog.promote("dev", "api/1")
        assert catalog.verify()["signed"] is False
        assert catalog.verify_channel("api", "dev") == {"signed": False, "event": None, "signers": []}


def test_turning_signing_on_keeps_the_unsigned_past_and_signs_from_then_on(world, tmp_path):
    legacy = str(tmp_path / "legacy.db")
    with Catalog(legacy, trust=None) as unsigned:
        name = unsigned.reserve_version("api")
        unsigned.register(Version(image="api", name=name, fingerprint="f"))
        unsigned.promote("dev", "api/1")
    with Catalog(legacy, trust=Trust(world.policy(), Signer(str(world.keys["ci"])))) as signed:
        with pytest.raises(Untrusted, match=r"event 2 \(promote api@dev\) is not signed"):
            signed.channel_version("api", "dev")  # nobody is known to have put it there
        signed.promote(
            "dev", "api/1", reason="again, signed", policy=world.policy()
        )  # no change: same version
        signed.record_test("api/1", passed=True)
        assert signed.verify()["ok"]
    conn = sqlite3.connect(legacy)
    conn.execute("UPDATE events SET payload='{}' WHERE id=1")  # the unsigned past cannot change either
    conn.commit()
    conn.close()
    with Catalog(legacy, trust=Trust(world.policy(), Signer(str(world.keys["ci"])))) as signed:
        assert not signed.verify()["ok"]


def test_an_export_of_a_signed_catalog_imports_and_still_verifies(world, tmp_path):
    doc = world.export()
    assert doc["head_signature"]["signer"] == "ci@example.com"
    with Catalog(
        str(tmp_path / "copy.db"), trust=Trust(world.policy(), Signer(str(world.keys["ci"])))
    ) as copy:
        copy.import_(doc)
        assert copy.verify()["ok"] and copy.channel_version("api", "dev").ref == "api/1"
