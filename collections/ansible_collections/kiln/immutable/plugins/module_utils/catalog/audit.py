# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit trail: every change appends one event, chained by hash to the one before.

:func:`append_event` is the only place an event is written; :func:`verify` walks the chain and
checks that the tables agree with it (an edited, inserted or deleted event, or a row changed
behind kiln's back, is named).
"""

from __future__ import annotations

import json

from . import model
from .model import ACTIVE, REVOKED, canonical, sha256
from .principal import principal
from .store.base import CatalogTx

GENESIS = "0" * 64


def event_hash(event_id: int, at: str, who: str, action: str, subject: str, payload: str, prev: str) -> str:
    return sha256(canonical([event_id, at, who, action, subject, payload, prev]))


def append_event(tx: CatalogTx, action: str, subject: str, payload: dict) -> None:
    """Append one event to the audit trail, inside the caller's write transaction.

    Writers are serialised by the store, so the head read here is the head the event links to:
    the chain never forks.
    """
    head = tx.event_head()
    event_id, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
    at = model.iso(model.now())
    if tx.trust is None:
        who = principal()
    else:  # signed over the event and the previous hash; kept in the payload, so chained too
        signature = tx.trust.sign_event(payload, event_id, at, action, subject, prev)
        who, payload = signature.signer, {**payload, "signature": signature.to_dict()}
    body = canonical(payload)
    digest = event_hash(event_id, at, who, action, subject, body, prev)
    tx.insert_event((event_id, at, who, action, subject, body, prev, digest))
    # The head is kept apart from the chain so that deleting the newest events shows too; signed,
    # so that neither dropping the newest events nor rewriting the whole trail goes unseen.
    head = f"{event_id}:{digest}"
    tx.set_meta("head", head)
    if tx.trust is not None:
        tx.set_meta("head_signature", canonical(tx.trust.sign_head(head, at)))


def acting(tx: CatalogTx) -> str:
    """Who acts in ``tx``: with signing on, the allowed_signers identity of the key; else the principal."""
    return tx.trust.identity() if tx.trust is not None else principal()


def event_dict(row: tuple) -> dict:
    event_id, at, who, action, subject, payload, prev, digest = row
    return {
        "id": event_id,
        "at": at,
        "principal": who,
        "action": action,
        "subject": subject,
        "payload": json.loads(payload),
        "prev_hash": prev,
        "hash": digest,
    }


def events(tx: CatalogTx, limit: int, before: int | None, subject: str | None) -> list[dict]:
    return [event_dict(row) for row in tx.events_page(subject, before, limit)]


def verify(tx: CatalogTx) -> dict:
    """``{"ok", "events", "head", "problems": [...]}`` for the whole catalog."""
    problems: list[str] = []
    prev, expected = GENESIS, 1
    registered: dict[str, str] = {}  # ref -> doc sha256 at registration, for versions still present
    status: dict[str, str] = {}
    moves: dict[str, list] = {}  # "image@channel" -> [to, ...]
    for row in tx.all_events():
        event_id, at, who, action, subject, payload, prev_hash, digest = row
        if event_id != expected:
            problems.append(f"events {expected}..{event_id - 1} are missing (deleted)")
        if prev_hash != prev:
            problems.append(
                f"event {event_id} does not link to the event before it (one was deleted or edited)"
            )
        if event_hash(event_id, at, who, action, subject, payload, prev_hash) != digest:
            problems.append(f"event {event_id} ({action} {subject}) was edited: its hash does not match")
        prev, expected = digest, event_id + 1
        try:
            data = json.loads(payload)
        except ValueError:
            problems.append(f"event {event_id} has a payload that is not JSON")
            continue
        if action == "register":
            registered[subject] = data.get("doc_sha256", "")
            status[subject] = ACTIVE
        elif action == "remove":
            registered.pop(subject, None)
            status.pop(subject, None)
        elif action == "revoke":
            status[subject] = REVOKED
        elif action == "restore":
            status[subject] = ACTIVE
        elif action in ("promote", "rollback", "fallback"):
            moves.setdefault(subject, []).append(data.get("to"))
    head = tx.meta("head")
    last = f"{expected - 1}:{prev}" if expected > 1 else None
    if head != last:
        problems.append(f"the newest events were deleted: the head says {head}, the trail ends at {last}")
    present = set()
    for image, name, state, doc in tx.all_versions():
        ref = f"{image}/{name}"
        present.add(ref)
        data = json.loads(doc)
        data.pop("revocation_state", None)
        if ref not in registered:
            problems.append(f"version {ref} has no register event (added outside kiln?)")
        elif registered[ref] != sha256(canonical(data)):
            problems.append(f"version {ref} was edited after it was registered")
        elif status.get(ref) != state:
            problems.append(f"version {ref} is {state} but the trail says {status.get(ref)}")
    for ref in set(registered) - present:
        problems.append(f"version {ref} was deleted without a remove event")
    history_counts = {f"{image}@{channel}": count for image, channel, count in tx.history_counts()}
    for image, channel, version in tx.all_channels():
        subject = f"{image}@{channel}"
        trail = moves.get(subject) or []
        if not trail or trail[-1] != version:
            problems.append(
                f"channel {subject} points at {version} but the trail says {trail[-1] if trail else None}"
            )
        if history_counts.get(subject, 0) != len(trail):
            problems.append(
                f"channel {subject} has {history_counts.get(subject, 0)} history entries; "
                f"the trail has {len(trail)}"
            )
    return {"ok": not problems, "events": expected - 1, "head": last, "problems": problems}
