# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signed audit events: what the catalog signs when the policy turns signing on, and how it checks.

Every event's signature covers its id, time, action, subject and payload together with the previous
event's hash (:func:`.signing.payload`); it is kept in the payload under ``signature``, so the hash
chain covers it too. The head of the trail (the newest event's id and hash) is signed on its own after
every append, so dropping the newest events, or rewriting the whole trail with a fresh head, needs a
key allowed_signers lists.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import audit
from .errors import CatalogError
from .policy import Policy
from .signing import AllowedSigners, BadSignature, Signature, Signer, payload
from .store.base import CatalogTx

SIGNATURE_KEY = "signature"
CLOCK_SKEW = timedelta(minutes=5)
POLICY_ENV = "KILN_POLICY"


@dataclass(frozen=True)
class Event:
    """One audit event as stored: its payload still holds the signature, if any."""

    id: int
    at: str
    principal: str
    action: str
    subject: str
    payload: dict
    prev_hash: str
    hash: str

    @property
    def signature(self) -> Signature | None:
        return Signature.from_dict(self.payload.get(SIGNATURE_KEY))

    @property
    def content(self) -> dict:
        """What the signature covers, besides the previous hash."""
        body = {k: v for k, v in self.payload.items() if k != SIGNATURE_KEY}
        return content(self.id, self.at, self.action, self.subject, body)

    @property
    def when(self) -> datetime:
        return _parse(self.at)

    def describe(self) -> str:
        return f"event {self.id} ({self.action} {self.subject})"


def content(event_id: int, at: str, action: str, subject: str, body: dict) -> dict:
    return {"id": event_id, "at": at, "action": action, "subject": subject, "payload": body}


def _parse(at: str) -> datetime:
    parsed = datetime.fromisoformat(at.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _head_payload(head: str) -> bytes:
    return payload({"head": head}, None)


class Trust:
    """The signing side of a policy: the key this process signs with and the allowed_signers file."""

    def __init__(self, policy: Policy, signer: Signer | None = None):
        self.policy = policy
        self.allowed = AllowedSigners(policy.allowed_signers)
        self.signer = signer or Signer()
        self._identity: str | None = None

    @classmethod
    def of(cls, policy: Policy | None, signer: Signer | None = None) -> Trust | None:
        """The trust of ``policy`` when it turns signing on, else None (an unsigned catalog)."""
        return cls(policy, signer) if policy is not None and policy.signed else None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Trust | None:
        """The trust of the policy ``$KILN_POLICY`` names, when it turns signing on."""
        path = (os.environ if environ is None else environ).get(POLICY_ENV)
        return cls.of(Policy.load(path)) if path else None

    # ---------------------------------------------------------------- signing

    def sign_event(
        self, body: dict, event_id: int, at: str, action: str, subject: str, prev: str
    ) -> Signature:
        data = payload(content(event_id, at, action, subject, body), prev)
        return self.allowed.sign(self.signer, data, _parse(at))

    def sign_head(self, head: str, at: str) -> dict:
        signature = self.allowed.sign(self.signer, _head_payload(head), _parse(at))
        return {**signature.to_dict(), "at": at}

    def identity(self) -> str:
        """Who this process signs as (a signature of nothing, named by allowed_signers)."""
        if self._identity is None:
            self._identity = self.allowed.sign(self.signer, b"", datetime.now(UTC)).signer
        return self._identity

    # ---------------------------------------------------------------- verifying

    def event_problem(self, event: Event) -> str | None:
        """Why ``event``'s signature does not hold, or None when it does."""
        signature = event.signature
        if signature is None:
            return f"{event.describe()} is not signed"
        try:
            self.allowed.verify(payload(event.content, event.prev_hash), signature, event.when)
        except BadSignature as exc:
            return f"{event.describe()} has a bad signature: {exc.msg}"
        if signature.signer != event.principal:
            return f"{event.describe()} names {event.principal!r} but was signed by {signature.signer!r}"
        return None

    def head_problem(self, head: str | None, signed: dict | None) -> str | None:
        if head is None:
            return None
        signature = Signature.from_dict(signed)
        if signature is None:
            return f"the head of the trail ({head}) is not signed"
        try:
            self.allowed.verify(_head_payload(head), signature, _parse(str(signed.get("at"))))
        except (BadSignature, ValueError) as exc:
            return f"the head of the trail ({head}) has a bad signature: {getattr(exc, 'msg', exc)}"
        return None

    def trail_problems(
        self, events: Iterable[Event], head: str | None, signed_head: dict | None
    ) -> list[str]:
        """Every signature of the trail that does not hold, oldest first, then the head's.

        Events from before signing was turned on (the unsigned ones before the first signed one) are
        no problem: the signed head vouches for the whole hash chain, so none of them can change
        without a key. Who made them is simply not known; a channel they moved must be moved again.
        """
        problems = []
        signing = False
        events = list(events)
        for event in events:
            signing = signing or event.signature is not None
            problem = self.event_problem(event) if signing else None
            if problem:
                problems.append(problem)
        head_problem = self.head_problem(head, signed_head)
        return problems + dating_problems(events, signed_head) + ([head_problem] if head_problem else [])


def dating_problems(events: list[Event], signed_head: dict | None) -> list[str]:
    """Times only move forward along the trail, and the head is signed at the newest event's time.

    A key retired with ``valid-before`` is checked at the time an event claims; without this, its
    holder could append an event dated back to when the key was still valid. ``CLOCK_SKEW`` allows
    for the clocks of several machines writing one shared catalog.
    """
    problems = [
        f"{event.describe()} is dated before the event it follows (backdated?)"
        for before, event in zip(events, events[1:], strict=False)
        if event.when < before.when - CLOCK_SKEW
    ]
    if signed_head and events and str(signed_head.get("at")) != events[-1].at:
        problems.append(
            f"the head's signature is dated {signed_head.get('at')}, not with {events[-1].describe()}"
        )
    return problems


# ------------------------------------------------------------------------------- the catalog's side


class Untrusted(CatalogError):
    """The catalog cannot vouch for a channel: ``details`` name the event and the rule that failed."""


MOVES = ("promote", "rollback", "fallback")


def trail(tx: CatalogTx) -> list[Event]:
    return [Event(**audit.event_dict(row)) for row in tx.all_events()]


def signed_head(tx: CatalogTx) -> tuple[str | None, dict | None]:
    signed = tx.meta("head_signature")
    return tx.meta("head"), (json.loads(signed) if signed else None)


def verify(tx: CatalogTx) -> dict:
    """:func:`.audit.verify`, and with signing on every signature of the trail and of its head."""
    report = audit.verify(tx)
    report["signed"] = tx.trust is not None
    if tx.trust is not None:
        report["problems"] += tx.trust.trail_problems(trail(tx), *signed_head(tx))
        report["ok"] = not report["problems"]
    return report


def verify_channel(tx: CatalogTx, image: str, channel: str) -> dict:
    """Untrusted unless the channel's current version was put there as the trail and the policy say.

    The audit trail must hold (hashes, links, head, rows agreeing with it); with signing on, the event
    that made the channel point where it does and the head must be signed by keys valid at the time,
    by signers the policy allows now, with the approvals it asks for. Returns
    ``{"signed", "event", "signers"}``.
    """
    subject = f"{image}@{channel}"
    refuse = f"channel {subject} cannot be trusted"
    report = audit.verify(tx)
    if not report["ok"]:
        raise Untrusted(
            f"{refuse}: the audit trail does not hold: {report['problems'][0]}", problems=report["problems"]
        )
    trust = tx.trust
    if trust is None:
        return {"signed": False, "event": None, "signers": []}
    events = trail(tx)
    moves = [e for e in events if e.subject == subject and e.action in MOVES]
    if not moves:
        raise Untrusted(f"{refuse}: no event put a version on it", rule="signing")
    event = moves[-1]
    problem = trust.event_problem(event)
    if problem:
        raise Untrusted(f"{refuse}: {problem}", event=event.id, rule="signing")
    head, head_signature = signed_head(tx)
    problem = trust.head_problem(head, head_signature) or next(
        iter(dating_problems(events, head_signature)), None
    )
    if problem:
        raise Untrusted(f"{refuse}: {problem}", rule="signing")
    signers = [event.principal]
    counted = {int(i) for i in event.payload.get("approvals") or []}
    for approval in (e for e in events if e.id in counted):
        problem = trust.event_problem(approval)
        if (approval.action, approval.subject, approval.payload.get("version")) != (
            "approve",
            subject,
            event.payload.get("to"),
        ):
            problem = f"{approval.describe()} is no approval of {event.payload.get('to')} on {subject}"
        if problem:
            raise Untrusted(
                f"{refuse}: {event.describe()} counts {problem}", event=event.id, rule="approvals"
            )
        signers.append(approval.principal)
    if event.action != "fallback":  # a fallback is the effect of a signed revoke, not a choice of version
        needed = None if event.action == "promote" else 1
        failures = trust.policy.check_signers(image, channel, signers, needed=needed)
        if failures:
            raise Untrusted(
                f"{refuse}: {event.describe()} fails {'; '.join(failures)}", event=event.id, rule=failures[0]
            )
    return {"signed": True, "event": event.id, "signers": sorted(set(signers))}


def approvals(
    tx: CatalogTx, policy: Policy, image: str, channel: str, version: str, who: str
) -> list[int] | None:
    """The approve events that, with ``who``, make enough distinct signers; None when too few.

    Approvals count from the channel's last move on, for the same version, from distinct signers the
    policy allows, each signature valid.
    """
    subject = f"{image}@{channel}"
    events = [e for e in trail(tx) if e.subject == subject]
    since = max((e.id for e in events if e.action in MOVES), default=0)
    signers, ids = {who}, []
    for approval in events:
        if approval.id <= since or approval.action != "approve" or approval.payload.get("version") != version:
            continue
        if approval.principal in signers or tx.trust.event_problem(approval) is not None:
            continue
        if not policy.check_signers(image, channel, [approval.principal], needed=1):
            signers.add(approval.principal)
            ids.append(approval.id)
    return ids if len(signers) >= policy.rule(image, channel).approvals else None


def signed_test(tx: CatalogTx, version: Any, channel: str) -> list[str]:
    """The rule ``requires_passing_test: {signers}``: the newest test event is signed by one of them."""
    patterns = tx.trust.policy.rule(version.image, channel).test_signers
    if patterns is None:
        return []
    tests = [e for e in trail(tx) if e.subject == version.ref and e.action == "test"]
    rule = f"rule 'requires_passing_test' (signed by {', '.join(patterns)})"
    if not tests:
        return [f"{rule}: {version.ref} has no signed test result"]
    newest = tests[-1]
    problem = tx.trust.event_problem(newest)
    if problem:
        return [f"{rule}: {problem}"]
    if not newest.payload.get("passed"):
        return [f"{rule}: the newest test of {version.ref} ({newest.describe()}) failed"]
    if not any(fnmatch.fnmatchcase(newest.principal, p) for p in patterns):
        return [f"{rule}: the newest test of {version.ref} was signed by {newest.principal!r}"]
    return []


def signed_before(tx: CatalogTx, image: str, channel: str, version: str | None) -> list[str]:
    """A rollback target must be a version a valid signed event put on the channel before."""
    subject = f"{image}@{channel}"
    for event in reversed(trail(tx)):
        if (
            event.subject == subject
            and event.action in ("promote", "rollback")
            and event.payload.get("to") == version
        ):
            if tx.trust.event_problem(event) is None:
                return []
    return [f"rule 'signing': no valid signed event ever put {version} on channel {subject}"]
