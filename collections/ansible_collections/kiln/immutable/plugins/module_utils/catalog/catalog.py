# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The versioned image catalog: the one facade every stage uses.

Everything a stage records or asks about a baked image goes through :class:`Catalog`::

    catalog = Catalog(path)
    name = catalog.reserve_version("web")          # "1", "2", ...; a failed build leaves a gap
    catalog.register(Version(image="web", name=name, fingerprint=fp, artifacts={...}))
    catalog.promote("staging", version="web/7", policy=Policy.load("inventories/local/policy.yml"))
    catalog.rollback("web", "prod")

Each method is one transaction of the store (:mod:`.store`: an SQLite file, or PostgreSQL for a
team); the work is done by the pieces beside this file: :mod:`.versions`, :mod:`.channels`,
:mod:`.revocation`, :mod:`.retention`, :mod:`.audit` (every change appends a hash-chained event),
:mod:`.transfer` (export and import) and :mod:`.model` (the records).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..common.paths import catalog_location
from . import audit, channels, model, retention, revocation, transfer, versions
from . import trust as trust_mod
from .audit import event_hash
from .errors import CatalogBusy, CatalogError
from .model import ChannelMove, PruneResult, Version, check_ident, parse_time, split_ref
from .policy import PolicyRefused
from .principal import principal
from .store import Store, open_store
from .store.base import CatalogTx
from .transfer import EXPORT_FORMAT
from .trust import Trust, Untrusted

__all__ = [
    "EXPORT_FORMAT",
    "Catalog",
    "CatalogBusy",
    "CatalogError",
    "ChannelMove",
    "PolicyRefused",
    "PruneResult",
    "Untrusted",
    "Version",
    "event_hash",
    "principal",
    "split_ref",
]


_FROM_ENVIRONMENT = object()


class Catalog:
    """The catalog at ``location`` (a file path or a PostgreSQL URL). Safe to use from many processes."""

    def __init__(
        self,
        location: str | None = None,
        busy_timeout_s: float = 30.0,
        store: Store | None = None,
        trust: Any = _FROM_ENVIRONMENT,
    ):
        """``trust`` signs and checks events (see :mod:`.trust`); by default the one ``$KILN_POLICY`` sets."""
        self.store = store or open_store(catalog_location(location), busy_timeout_s=busy_timeout_s)
        self.path = self.store.location
        self.trust: Trust | None = Trust.from_environment() if trust is _FROM_ENVIRONMENT else trust

    @contextlib.contextmanager
    def _write(self) -> Iterator[CatalogTx]:
        with self.store.write() as tx:
            tx.trust = self.trust
            yield tx

    @contextlib.contextmanager
    def _read(self) -> Iterator[CatalogTx]:
        with self.store.read() as tx:
            tx.trust = self.trust
            yield tx

    def _adopt(self, policy: Any) -> None:
        """A move under a policy that turns signing on is signed by its rules, whatever the environment."""
        if policy is not None and policy.signed and (self.trust is None or self.trust.policy is not policy):
            self.trust = Trust(policy, self.trust.signer if self.trust else None)

    def _who(self) -> str:
        """Who acts: with signing on, the allowed_signers identity of the key; else the principal."""
        return self.trust.identity() if self.trust is not None else principal()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ versions

    def reserve_version(self, image: str) -> str:
        """The next version name for ``image``; never handed out twice, gaps are fine."""
        with self._write() as tx:
            return versions.reserve(tx, image)

    def next_version_name(self, image: str) -> str:
        """The name :meth:`reserve_version` would hand out now, without reserving it (check mode)."""
        with self._read() as tx:
            return str(tx.last_name(check_ident("image", image)) + 1)

    def register(self, version: Version) -> Version:
        """Record a successful build. The name must be unused (take it from :meth:`reserve_version`)."""
        with self._write() as tx:
            revocation.apply_due(tx)
            return versions.register(tx, version)

    def get(self, ref: str, image: str | None = None) -> Version:
        """The version ``ref`` ("web/7"); CatalogError naming it when unknown."""
        img, name = split_ref(ref, image)
        with self._read() as tx:
            return versions.require(tx, img, name)

    def find(self, ref: str) -> Version | None:
        """Like :meth:`get` but None when there is no such version."""
        img, name = split_ref(ref)
        with self._read() as tx:
            return versions.get(tx, img, name)

    def find_by_fingerprint(self, image: str, fingerprint: str) -> Version | None:
        """The newest non-revoked version of ``image`` built from exactly these inputs."""
        with self._read() as tx:
            seq = tx.newest_with_fingerprint(image, fingerprint, model.ACTIVE, model.now())
            return versions.get(tx, image, str(seq)) if seq is not None else None

    def list_versions(
        self, image: str, limit: int = 50, before: str | None = None, status: str | None = None
    ) -> list[Version]:
        """Versions of ``image``, newest first; ``before`` (a name or ref) gives the next page."""
        if limit < 1:
            raise CatalogError(f"limit must be at least 1, got {limit}")
        seq = int(split_ref(before, image)[1]) if before else None
        with self._read() as tx:
            return versions.hydrate(tx, image, tx.version_rows(image, limit, seq, status))

    def images(self) -> list[str]:
        with self._read() as tx:
            return tx.images()

    def record_test(
        self,
        ref: str,
        passed: bool,
        duration_s: float | None = None,
        log_path: str | None = None,
        details: dict | None = None,
    ) -> dict:
        """Append a test result to a version (the test stage calls this); returns the result."""
        with self._write() as tx:
            return versions.record_test(tx, ref, passed, duration_s, log_path, details or {})

    # ------------------------------------------------------------------ channels

    def channel_version(self, image: str, channel: str) -> Version | None:
        """The version ``channel`` of ``image`` points at, or None (no such channel, or emptied).

        Untrusted, naming the event and the rule, unless the audit trail holds and, with signing on,
        a valid signed event the policy accepts put the version there (see :meth:`verify_channel`).
        """
        with self._read() as tx:
            row = tx.channel(image, channel)
            if not (row and row[0] and revocation.is_due(tx, row[0])):
                if row:
                    trust_mod.verify_channel(tx, image, channel)
                return versions.get(tx, *split_ref(row[0])) if row and row[0] else None
        # The version it points at reached its scheduled revocation: apply it, then answer.
        self._settle()
        return self.channel_version(image, channel)

    def verify_channel(self, image: str, channel: str) -> dict:
        """Untrusted unless the channel's current version was put there as the trail and policy say.

        See :func:`.trust.verify_channel`; returns ``{"signed", "event", "signers"}``.
        """
        with self._read() as tx:
            return trust_mod.verify_channel(tx, image, channel)

    def channels(self, image: str) -> dict[str, str | None]:
        """Channel name -> the ref it points at, for one image."""
        self._settle()
        with self._read() as tx:
            return dict(tx.channels(image))

    def channel_history(
        self, image: str, channel: str | None = None, limit: int = 50, before: int | None = None
    ) -> list[dict]:
        """Moves of a channel (or of every channel of ``image``), newest first: who, when, why, from, to."""
        with self._read() as tx:
            return channels.history(tx, image, channel, limit, before)

    def promote(
        self,
        channel: str,
        version: str | None = None,
        *,
        image: str | None = None,
        from_channel: str | None = None,
        reason: str = "",
        policy: Any = None,
        check: bool = False,
    ) -> ChannelMove:
        """Point ``channel`` at ``version`` (a ref) or at what ``from_channel`` points at.

        The policy (see :mod:`.policy`) is checked inside the same transaction as the move, so
        no other writer can slip in between the check and the change. ``check`` computes the
        outcome, including refusals, without changing anything.
        """
        if bool(version) == bool(from_channel):
            raise CatalogError("promote needs exactly one of version (e.g. web/7) or from_channel")
        if from_channel and not image:
            raise CatalogError(f"promote from channel {from_channel!r} needs the image name")
        check_ident("channel", channel)
        self._adopt(policy)
        who = self._who()
        with self._write() as tx:
            revocation.apply_due(tx)
            return channels.promote(tx, channel, version, image, from_channel, reason, policy, who, check)

    def rollback(
        self,
        image: str,
        channel: str,
        *,
        to: str | None = None,
        reason: str = "",
        policy: Any = None,
        check: bool = False,
    ) -> ChannelMove:
        """Point ``channel`` back at its previous assignment, or at ``to``, a version it had before.

        Rolling back twice walks further back (not back and forth); revoked versions are stepped
        over. Only the policy's principals rule applies: the versions were on the channel before.
        """
        check_ident("image", image)
        check_ident("channel", channel)
        self._adopt(policy)
        who = self._who()
        with self._write() as tx:
            revocation.apply_due(tx)
            return channels.rollback(tx, image, channel, to, reason, policy, who, check)

    # ------------------------------------------------------------------ revocation

    def revoke(
        self,
        ref: str,
        reason: str,
        *,
        at: str | float | None = None,
        fallback: bool = True,
        check: bool = False,
    ) -> dict:
        """Revoke a version now or at ``at``; channels on it fall back to their last valid version.

        Returns ``{"changed", "version", "scheduled", "moves": [ChannelMove...], "flagged": [refs]}``;
        ``flagged`` lists the versions built directly on the revoked one.
        """
        if not reason:
            raise CatalogError(f"revoking {ref} needs a reason")
        img, name = split_ref(ref)
        when = parse_time(at) if at is not None else None
        with self._write() as tx:
            revocation.apply_due(tx)
            return revocation.revoke(tx, img, name, reason, when, fallback, check)

    def restore(self, ref: str, *, check: bool = False) -> dict:
        """Undo a revocation (or cancel a scheduled one). Channels that fell back stay where they are."""
        img, name = split_ref(ref)
        with self._write() as tx:
            revocation.apply_due(tx)
            return revocation.restore(tx, img, name, check)

    def _settle(self) -> None:
        """Apply scheduled revocations that are due; takes the write lock only when there are some."""
        with self._read() as tx:
            due = revocation.any_due(tx)
        if due:
            with self._write() as tx:
                revocation.apply_due(tx)

    # ------------------------------------------------------------------ removal and retention

    def remove(
        self,
        ref: str,
        *,
        check: bool = False,
        running: Iterable[str] | Callable[[], Iterable[str]] | None = None,
        remove_artifact: Callable[[str, dict], list[str]] | None = None,
    ) -> PruneResult:
        """Remove one version, and its artifacts when ``remove_artifact`` is given.

        Refused while a channel points at it or an instance runs it (``running``: the refs
        instances run, or a function that returns them).
        """
        with self._write() as tx:
            version = retention.remove(tx, ref, running, check)
        result = PruneResult(removed=[version.ref], kept={})
        if not check and remove_artifact:
            retention.remove_artifacts([version], result, remove_artifact)
        return result

    def prune(
        self,
        image: str | None = None,
        *,
        keep: int = 5,
        history_depth: int = 3,
        running: Iterable[str] | Callable[[], Iterable[str]] | None = None,
        check: bool = False,
        remove_artifact: Callable[[str, dict], list[str]] | None = None,
    ) -> PruneResult:
        """Remove all but the newest ``keep`` versions of each image, and their artifacts.

        Never removed: a version a channel points at, one of the last ``history_depth`` versions a
        channel pointed at (so rollback keeps working), or one an instance runs (``running``: the
        refs, or a function asked only when something could go).
        """
        if keep < 0 or history_depth < 0:
            raise CatalogError(f"keep ({keep}) and history_depth ({history_depth}) must be 0 or more")
        with self._write() as tx:
            revocation.apply_due(tx)
            doomed, kept = retention.prune(tx, image, keep, history_depth, running, check)
        result = PruneResult(removed=[v.ref for v in doomed], kept=kept)
        if doomed and not check and remove_artifact:
            retention.remove_artifacts(doomed, result, remove_artifact)
        return result

    def shared_rollouts(self) -> Any:
        """Roll-out leases and journals every runner of this catalog shares (PostgreSQL), else None."""
        return self.store.shared_rollouts()

    # ------------------------------------------------------------------ audit, export, import

    def events(self, limit: int = 50, before: int | None = None, subject: str | None = None) -> list[dict]:
        """Audit events, newest first."""
        with self._read() as tx:
            return audit.events(tx, limit, before, subject)

    def verify(self) -> dict:
        """Check the audit trail: every hash, every link, the head, and that the state agrees with it.

        Returns ``{"ok", "events", "head", "problems": [...]}``; an edited, inserted or deleted
        event (or a row changed behind kiln's back) is named in ``problems``.
        """
        with self._read() as tx:
            return trust_mod.verify(tx)

    def export(self) -> dict:
        """The whole catalog as one JSON-ready document (stable order, for review and for git)."""
        with self._read() as tx:
            return transfer.export(tx)

    def import_(self, doc: dict) -> dict:
        """Load an export into this (empty) catalog; the audit trail must verify or nothing is kept."""
        with self._write() as tx:
            return transfer.import_(tx, doc, self.path)
