# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Channels: promotion, rollback along the channel's history, and the move both end in."""

from __future__ import annotations

import dataclasses
from typing import Any

from . import model, trust, versions
from .audit import append_event
from .errors import CatalogError
from .model import ChannelMove, Version, check_ident, split_ref
from .policy import PolicyRefused
from .store.base import CatalogTx


def history(tx: CatalogTx, image: str, channel: str | None, limit: int, before: int | None) -> list[dict]:
    return [
        {
            "id": r[0],
            "image": image,
            "channel": r[1],
            "version": r[2],
            "previous": r[3],
            "action": r[4],
            "principal": r[5],
            "reason": r[6],
            "at": model.iso(r[7]),
        }
        for r in tx.history_page(image, channel, before, limit)
    ]


def promote(
    tx: CatalogTx,
    channel: str,
    version: str | None,
    image: str | None,
    from_channel: str | None,
    reason: str,
    policy: Any,
    who: str,
    check: bool,
) -> ChannelMove:
    if from_channel:
        img = check_ident("image", image)
        check_ident("channel", from_channel)
        row = tx.channel(img, from_channel)
        if not row:
            raise CatalogError(f"unknown channel {from_channel!r} of image {img!r}" + known(tx, img))
        if not row[0]:
            raise CatalogError(f"channel {from_channel!r} of image {img!r} points at no version")
        img, name = split_ref(row[0])
    else:
        img, name = split_ref(version, image)
    target = versions.require(tx, img, name)
    if target.revoked:
        raise CatalogError(
            f"version {target.ref} is revoked "
            f"({(target.revocation or {}).get('reason') or 'no reason'}); "
            "it cannot be promoted"
        )
    _enforce_policy(tx, policy, target, channel, who)
    current = _current(tx, img, channel)
    move = ChannelMove(img, channel, current, target.ref, "promote", current != target.ref, reason, who)
    if move.changed and tx.trust is not None and policy is not None:
        counted = trust.approvals(tx, policy, img, channel, target.ref, who)
        if counted is None:  # recorded as one approval; the channel waits for more signers
            if not check:
                append_event(tx, "approve", f"{img}@{channel}", {"version": target.ref, "reason": reason})
            return dataclasses.replace(move, after=current, action="approve")
        move.approvals = counted
    if move.changed and not check:
        record_move(tx, move, back=tx.current_entry(img, channel))
    return move


def rollback(
    tx: CatalogTx, image: str, channel: str, to: str | None, reason: str, policy: Any, who: str, check: bool
) -> ChannelMove:
    entry = tx.current_entry(image, channel)
    if entry is None:
        raise CatalogError(f"unknown channel {channel!r} of image {image!r}" + known(tx, image))
    trust.verify_channel(tx, image, channel)
    current = _current(tx, image, channel)
    skipped: list[str] = []
    if to:
        img, name = split_ref(to, image)
        ref = f"{img}/{name}"
        target_entry = tx.last_entry_of(image, channel, ref)
        if not target_entry:
            raise CatalogError(
                f"version {ref} was never on channel {channel!r} of image {image!r}; "
                "use promote to put it there"
            )
        if versions.require(tx, img, name).revoked:
            raise CatalogError(f"version {ref} is revoked; cannot roll channel {channel!r} back to it")
    else:
        target_entry = walk_back(tx, entry, current, skipped)
        if target_entry is None:
            raise CatalogError(
                f"channel {channel!r} of image {image!r} has no earlier version to roll back to"
                + (f" (stepped over revoked {', '.join(skipped)})" if skipped else "")
            )
    if policy is not None:
        failures = policy.check_principal(image, channel, who)
        if tx.trust is not None:
            failures += policy.check_signers(image, channel, [who], needed=1)
            failures += trust.signed_before(tx, image, channel, target_entry[1])
        if failures:
            raise PolicyRefused(
                f"rollback of channel {channel!r} refused: {'; '.join(failures)}", rules=failures
            )
    after = target_entry[1]
    move = ChannelMove(image, channel, current, after, "rollback", after != current, reason, who, skipped)
    if move.changed and not check:
        record_move(tx, move, back=target_entry[2])
    return move


def walk_back(tx: CatalogTx, entry: tuple, current: str | None, skipped: list[str]) -> tuple | None:
    """Follow ``back`` links from ``entry`` to the first assignment of a different, valid version."""
    back = entry[2]
    for _step in range(100_000):  # bounded: every link points at a strictly older entry
        if back is None:
            return None
        candidate = tx.entry(back)
        if candidate is None:
            return None
        ref = candidate[1]
        if ref and ref != current:
            found = versions.get(tx, *split_ref(ref))
            if found is not None and not found.revoked:
                return candidate
            skipped.append(ref)
        back = candidate[2]
    return None


def record_move(tx: CatalogTx, move: ChannelMove, back: Any) -> None:
    """Point the channel, add the history entry and the audit event: one move, all three."""
    now = model.now()
    back_id = back[0] if isinstance(back, tuple) else back
    tx.set_channel(move.image, move.channel, move.after, now)
    tx.add_history(
        move.image,
        move.channel,
        move.after,
        move.before,
        move.action,
        move.principal,
        move.reason,
        now,
        back_id,
    )
    append_event(
        tx,
        move.action,
        f"{move.image}@{move.channel}",
        {"from": move.before, "to": move.after, "reason": move.reason}
        | ({"approvals": move.approvals} if move.approvals else {}),
    )


def known(tx: CatalogTx, image: str) -> str:
    return f"; known channels: {', '.join(c for c, _v in tx.channels(image)) or 'none'}"


def _current(tx: CatalogTx, image: str, channel: str) -> str | None:
    row = tx.channel(image, channel)
    return row[0] if row else None


def _enforce_policy(tx: CatalogTx, policy: Any, version: Version, channel: str, who: str) -> None:
    if policy is None:
        return
    seen = tx.channels_seen(version.image, version.ref)
    failures = policy.check_promote(version, channel, who, channels_seen=seen)
    if tx.trust is not None:
        failures += policy.check_signers(version.image, channel, [who], needed=1)
        failures += trust.signed_test(tx, version, channel)
    if failures:
        raise PolicyRefused(
            f"promotion of {version.ref} to channel {channel!r} refused: {'; '.join(failures)}",
            rules=failures,
        )
