# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Revocation, now or scheduled: the version is marked, channels on it fall back to a valid one."""

from __future__ import annotations

import json
from typing import Any

from . import channels, model, versions
from .audit import acting, append_event
from .model import ACTIVE, REVOKED, ChannelMove, Version, canonical, split_ref
from .store.base import CatalogTx


def revoke(
    tx: CatalogTx, image: str, name: str, reason: str, when: float | None, fallback: bool, check: bool
) -> dict:
    version = versions.require(tx, image, name)
    scheduled = when is not None and when > model.now()
    out: dict[str, Any] = {"version": version.ref, "scheduled": scheduled, "moves": [], "flagged": []}
    if version.revoked:
        out["changed"] = False
        return out
    wanted = {"reason": reason, "by": acting(tx), "fallback": fallback}
    if scheduled:
        at = model.iso(when)
        same = version.revocation and version.revocation.get("at") == at
        out["changed"] = not same
        out["at"] = at
        if out["changed"] and not check:
            tx.set_revoke_at(image, int(name), when)
            _set_revocation(tx, image, name, {**wanted, "at": at, "scheduled": True})
            append_event(tx, "schedule-revoke", version.ref, {"at": at, "reason": reason})
        return out
    out["changed"] = True
    out["moves"] = _revoke_now(tx, version, {**wanted, "at": model.iso(model.now())}, fallback, check)
    out["flagged"] = versions.children(tx, version.ref)
    return out


def restore(tx: CatalogTx, image: str, name: str, check: bool) -> dict:
    version = versions.require(tx, image, name)
    changed = version.revoked or version.revocation is not None
    if changed and not check:
        tx.set_status(image, int(name), ACTIVE)
        _set_revocation(tx, image, name, None)
        append_event(tx, "restore", version.ref, {})
    return {"changed": changed, "version": version.ref}


def is_due(tx: CatalogTx, ref: str) -> bool:
    img, name = split_ref(ref)
    at = tx.revoke_at(img, int(name))
    return at is not None and at <= model.now()


def any_due(tx: CatalogTx) -> bool:
    return tx.any_due(model.now())


def apply_due(tx: CatalogTx) -> None:
    """Scheduled revocations whose time has come take effect inside the caller's transaction."""
    for image, name in tx.due(model.now()):
        version = versions.get(tx, image, name)
        planned = version.revocation or {}
        _revoke_now(
            tx,
            version,
            {
                "reason": planned.get("reason", "scheduled"),
                "by": planned.get("by") or acting(tx),
                "at": planned.get("at"),
            },
            planned.get("fallback", True),
            check=False,
        )


def _set_revocation(tx: CatalogTx, image: str, name: str, revocation: dict | None) -> None:
    data = json.loads(tx.version_doc(image, int(name)))
    if revocation is None:
        data.pop("revocation_state", None)
    else:
        data["revocation_state"] = revocation
    tx.set_version_doc(image, int(name), canonical(data))


def _revoke_now(tx: CatalogTx, version: Version, revocation: dict, fallback: bool, check: bool) -> list[dict]:
    img, name = version.image, version.name
    on = tx.channels_on(img, version.ref)
    if not check:
        tx.set_status(img, int(name), REVOKED)
        _set_revocation(tx, img, name, {**revocation, "scheduled": False})
        append_event(tx, "revoke", version.ref, {"reason": revocation["reason"], "fallback": fallback})
    moves: list[dict] = []
    if not fallback:
        return moves
    for channel in on:
        entry = tx.current_entry(img, channel)
        skipped: list[str] = []
        target = channels.walk_back(tx, entry, version.ref, skipped) if entry else None
        move = ChannelMove(
            img,
            channel,
            version.ref,
            target[1] if target else None,
            "fallback",
            True,
            f"{version.ref} revoked: {revocation['reason']}",
            revocation["by"],
            skipped,
        )
        if not check:
            channels.record_move(tx, move, back=target[2] if target else None)
        moves.append(move.to_dict())
    return moves
