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

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from .policy import Policy
from .signing import AllowedSigners, BadSignature, Signature, Signer, payload

SIGNATURE_KEY = "signature"
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
        return self.allowed.sign(self.signer, b"", datetime.now(UTC)).signer

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
        previous: Event | None = None
        signing = False
        for event in events:
            signing = signing or event.signature is not None
            if not signing:
                continue
            problem = self.event_problem(event)
            if problem:
                problems.append(problem)
            elif previous is not None and event.when < previous.when:
                problems.append(f"{event.describe()} is dated before the event it follows (backdated?)")
            previous = event
        head_problem = self.head_problem(head, signed_head)
        return problems + ([head_problem] if head_problem else [])
