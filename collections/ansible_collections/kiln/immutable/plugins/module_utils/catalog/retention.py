# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention: which versions may go, removing them, and handing their artifacts to the caller.

The catalog never talks to an image store itself. The caller says which versions instances run
(a set, or a function asked only when something could go) and passes a function that removes one
version's artifacts: ``remove_artifact(ref, artifacts) -> [names removed]``, raising a KilnError
whose message becomes a warning when it cannot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..common.errors import KilnError
from . import versions
from .audit import append_event
from .errors import CatalogError
from .model import PruneResult, Version, check_ident, split_ref
from .store.base import CatalogTx


def in_use(running: Iterable[str] | Callable[[], Iterable[str]] | None) -> set[str]:
    if running is None:
        raise CatalogError(
            "cannot tell which versions instances run, so nothing is removed: pass the running versions"
        )
    return set(running() if callable(running) else running)


def remove(
    tx: CatalogTx, ref: str, running: Iterable[str] | Callable[[], Iterable[str]] | None, check: bool
) -> Version:
    img, name = split_ref(ref)
    version = versions.require(tx, img, name)
    using = tx.channels_on(img, ref)
    if using:
        raise CatalogError(f"version {ref} is on channel(s) {', '.join(using)}; move them first")
    if version.ref in in_use(running):
        raise CatalogError(f"version {ref} is run by an instance; roll it out of use first")
    if not check:
        _delete(tx, version)
    return version


def prune(
    tx: CatalogTx,
    image: str | None,
    keep: int,
    history_depth: int,
    running: Iterable[str] | Callable[[], Iterable[str]] | None,
    check: bool,
) -> tuple[list[Version], dict[str, str]]:
    """``(versions removed, {ref: why it is kept})``."""
    images = [check_ident("image", image)] if image else tx.counted_images()
    kept: dict[str, str] = {}
    doomed: list[Version] = []
    for img in images:
        protected = _protected(tx, img, history_depth)
        for index, row in enumerate(tx.version_rows(img)):
            ref = f"{img}/{row[1]}"
            if index < keep:
                kept[ref] = f"one of the newest {keep}"
            elif ref in protected:
                kept[ref] = protected[ref]
            else:
                doomed.extend(versions.hydrate(tx, img, [row]))
    if doomed:
        # Ask what runs only when something could go: a stopped engine must not block a no-op.
        running_now = in_use(running)
        for version in list(doomed):
            if version.ref in running_now:
                kept[version.ref] = "run by an instance"
                doomed.remove(version)
    if not check:
        for version in doomed:
            _delete(tx, version)
    return doomed, kept


def remove_artifacts(
    versions_gone: list[Version], result: PruneResult, remove_artifact: Callable[[str, dict], list[str]]
) -> None:
    """Hand each removed version's artifacts to ``remove_artifact``; what it cannot do is a warning."""
    for version in versions_gone:
        if not version.artifacts:
            continue
        try:
            result.images_removed.extend(remove_artifact(version.ref, version.artifacts))
        except KilnError as exc:
            result.warnings.append(f"{version.ref}: {exc.msg}")


def _protected(tx: CatalogTx, image: str, history_depth: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for channel, ref in tx.channels(image):
        if ref:
            out[ref] = f"channel {channel} points at it"
        if history_depth:
            for old in tx.recent_on(image, channel, history_depth + 1):
                out.setdefault(old, f"in the recent history of channel {channel}")
    return out


def _delete(tx: CatalogTx, version: Version) -> None:
    tx.delete_version(version.image, int(version.name))
    # The event keeps the whole record, so the audit trail still says what was removed.
    append_event(tx, "remove", version.ref, {"version": version.to_dict()})
