# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The versioned image catalog: versions, channels, promotion, rollback, revocation, retention, audit.

Everything a stage records or asks about a baked image goes through :class:`Catalog`::

    catalog = Catalog(path)
    name = catalog.reserve_version("web")          # "1", "2", ...; a failed build leaves a gap
    catalog.register(Version(image="web", name=name, fingerprint=fp, artifacts={...}))
    catalog.promote("staging", version="web/7", policy=Policy.load("inventories/local/policy.yml"))
    catalog.rollback("web", "prod")

Every change is one transaction that also appends an event to a hash-chained audit trail
(:meth:`Catalog.verify` detects an edited or deleted event). Storage lives behind
:class:`~.catalog_store.SqliteStore`; nothing here depends on SQLite itself.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import getpass
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..common.paths import default_catalog_path
from .policy import PolicyRefused
from .store import CatalogBusy, CatalogError, SqliteStore, Tx
from .trust import Event, Trust

__all__ = [
    "Catalog",
    "CatalogBusy",
    "CatalogError",
    "ChannelMove",
    "PolicyRefused",
    "PruneResult",
    "Untrusted",
    "Version",
    "principal",
    "resolve_catalog_path",
]

ACTIVE = "active"
REVOKED = "revoked"
EXPORT_FORMAT = "kiln-catalog/1"
GENESIS = "0" * 64

_FROM_ENVIRONMENT = object()
_MOVES = ("promote", "rollback", "fallback")


class Untrusted(CatalogError):
    """The catalog cannot vouch for a channel: ``details`` name the event and the rule that failed."""


_NAME = re.compile(r"^[1-9][0-9]{0,17}$")
_IDENT = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def principal() -> str:
    """Who is acting: ``$KILN_PRINCIPAL`` (a CI identity) when set, else the OS user."""
    explicit = os.environ.get("KILN_PRINCIPAL")
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return f"uid:{os.getuid()}"


def resolve_catalog_path(path: str | None = None) -> str:
    """The module option ``catalog`` when given, else ``$KILN_CATALOG``, else the state folder's."""
    return os.path.abspath(os.path.expanduser(path)) if path else default_catalog_path()


def _now() -> float:
    return time.time()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: str | float | int) -> float:
    """An ISO 8601 time (``2026-01-31T12:00:00Z``) or epoch seconds, as epoch seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CatalogError(f"time {value!r} is not ISO 8601 (e.g. 2026-01-31T12:00:00Z)") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def split_ref(ref: str, image: str | None = None) -> tuple[str, str]:
    """``"web/7"`` -> ``("web", "7")``; a bare name needs ``image``. Errors name the ref."""
    if not isinstance(ref, str) or not ref:
        raise CatalogError(f"version reference {ref!r} is empty; expected image/name like web/7")
    if "/" in ref:
        img, _sep, name = ref.partition("/")
        if image and img != image:
            raise CatalogError(f"version {ref!r} belongs to image {img!r}, not {image!r}")
    elif image:
        img, name = image, ref
    else:
        raise CatalogError(f"version reference {ref!r} has no image; expected image/name like web/7")
    check_ident("image", img)
    if not _NAME.match(name):
        raise CatalogError(f"version name {name!r} in {ref!r} is not a positive whole number")
    return img, name


def check_ident(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _IDENT.match(value):
        raise CatalogError(
            f"{kind} name {value!r} is not valid: use lower-case letters, digits, '.', '_' and '-'"
        )
    return value


@dataclass
class Version:
    """One successful build of an image, as recorded in the catalog."""

    image: str
    name: str
    fingerprint: str
    artifacts: dict = field(
        default_factory=dict
    )  # {"docker": {"image_id": "sha256:...", "tag": "kiln/web:7"}}
    base: dict = field(default_factory=dict)  # {"ref": "kiln/base:bookworm", "id": "sha256:..."}
    parent: str | None = None  # ref of the version this one was built from
    inputs: dict = field(default_factory=dict)  # build input name -> hash (what diff compares)
    git_commit: str | None = None
    git_dirty: bool = False
    packer_version: str | None = None
    ansible_version: str | None = None
    duration_s: float | None = None
    log_path: str | None = None
    created_at: str | None = None  # ISO 8601, UTC; set by register()
    created_by: str | None = None  # principal; set by register() when empty
    packages: dict = field(default_factory=dict)  # Debian package -> version, captured at build time
    status: str = ACTIVE  # "active" or "revoked"
    tests: list = field(default_factory=list)  # recorded test results, oldest first
    revocation: dict | None = None  # {"reason", "at", "by", "scheduled"} while revoked or scheduled
    flags: list = field(default_factory=list)  # computed: e.g. "parent-revoked:web/3"
    extra: dict = field(default_factory=dict)  # anything else a stage wants kept with the version

    @property
    def ref(self) -> str:
        return f"{self.image}/{self.name}"

    @property
    def revoked(self) -> bool:
        return self.status == REVOKED

    @property
    def last_test(self) -> dict | None:
        return self.tests[-1] if self.tests else None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["ref"] = self.ref
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Version:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - {"ref"})
        if unknown:
            raise CatalogError(f"version record has unknown fields: {', '.join(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in known})


# Fields that live in columns or in their own tables, not in the stored JSON document.
_COLUMN_FIELDS = ("status", "tests", "revocation", "flags")


@dataclass
class ChannelMove:
    """The outcome of promote, rollback or a fallback: what the channel pointed at before and after."""

    image: str
    channel: str
    before: str | None
    after: str | None
    action: str  # promote | rollback | fallback
    changed: bool
    reason: str = ""
    principal: str = ""
    skipped: list = field(default_factory=list)  # revoked versions a rollback stepped over
    approvals: list = field(default_factory=list)  # ids of the approve events the move counts

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class PruneResult:
    removed: list  # refs removed (or that would be, in check mode)
    kept: dict  # ref -> why it is kept
    images_removed: list = field(default_factory=list)  # docker tags removed
    warnings: list = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.removed)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "changed": self.changed}


class Catalog:
    """The catalog in one file. Safe to use from several processes at once."""

    def __init__(
        self,
        path: str | None = None,
        busy_timeout_s: float = 30.0,
        store: Any = None,
        trust: Any = _FROM_ENVIRONMENT,
    ):
        """``trust`` signs and checks events (see :mod:`.trust`); by default the one ``$KILN_POLICY`` sets."""
        self.store = store or SqliteStore(resolve_catalog_path(path), busy_timeout_s=busy_timeout_s)
        self.path = getattr(self.store, "path", None)
        self.trust: Trust | None = Trust.from_environment() if trust is _FROM_ENVIRONMENT else trust

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ versions

    def reserve_version(self, image: str) -> str:
        """The next version name for ``image``; never handed out twice, gaps are fine."""
        check_ident("image", image)
        with self.store.write() as tx:
            row = tx.one("SELECT last FROM counters WHERE image=?", (image,))
            last = (row[0] if row else 0) + 1
            tx.run("INSERT OR REPLACE INTO counters (image, last) VALUES (?, ?)", (image, last))
        return str(last)

    def next_version_name(self, image: str) -> str:
        """The name :meth:`reserve_version` would hand out now, without reserving it (check mode)."""
        with self.store.read() as tx:
            row = tx.one("SELECT last FROM counters WHERE image=?", (check_ident("image", image),))
        return str((row[0] if row else 0) + 1)

    def register(self, version: Version) -> Version:
        """Record a successful build. The name must be unused (take it from :meth:`reserve_version`)."""
        image, name = split_ref(version.name, version.image)
        if not version.fingerprint or not isinstance(version.fingerprint, str):
            raise CatalogError(f"version {image}/{name} has no fingerprint")
        if version.parent:
            split_ref(version.parent)
        now = _now()
        record = dataclasses.replace(
            version,
            image=image,
            name=name,
            created_at=version.created_at or _iso(now),
            created_by=version.created_by or self._who(),
            status=ACTIVE,
            tests=[],
            revocation=None,
            flags=[],
        )
        doc = self._doc(record)
        with self.store.write() as tx:
            self._apply_due_revocations(tx)
            if tx.one("SELECT 1 FROM versions WHERE image=? AND seq=?", (image, int(name))):
                raise CatalogError(f"version {record.ref} is already registered; reserve a new name")
            tx.run(
                "INSERT INTO versions (image, seq, name, fingerprint, status, revoke_at, parent, created_at,"
                " doc)"
                " VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?)",
                (image, int(name), name, record.fingerprint, ACTIVE, record.parent, now, doc),
            )
            # Names from elsewhere (an import, a hand-registered build) move the counter past them.
            tx.run(
                "INSERT INTO counters (image, last) VALUES (?, ?) "
                "ON CONFLICT(image) DO UPDATE SET last=max(last, excluded.last)",
                (image, int(name)),
            )
            self._event(
                tx, "register", record.ref, {"doc_sha256": _sha256(doc), "fingerprint": record.fingerprint}
            )
        return record

    def get(self, ref: str, image: str | None = None) -> Version:
        """The version ``ref`` ("web/7"); CatalogError naming it when unknown."""
        img, name = split_ref(ref, image)
        with self.store.read() as tx:
            version = self._get(tx, img, name)
        if version is None:
            raise CatalogError(f"unknown version {img}/{name}" + self._hint_image(img))
        return version

    def find(self, ref: str) -> Version | None:
        """Like :meth:`get` but None when there is no such version."""
        img, name = split_ref(ref)
        with self.store.read() as tx:
            return self._get(tx, img, name)

    def find_by_fingerprint(self, image: str, fingerprint: str) -> Version | None:
        """The newest non-revoked version of ``image`` built from exactly these inputs."""
        with self.store.read() as tx:
            row = tx.one(
                "SELECT seq FROM versions WHERE image=? AND fingerprint=? AND status=? "
                "AND (revoke_at IS NULL OR revoke_at > ?) ORDER BY seq DESC LIMIT 1",
                (image, fingerprint, ACTIVE, _now()),
            )
            return self._get(tx, image, str(row[0])) if row else None

    def list_versions(
        self, image: str, limit: int = 50, before: str | None = None, status: str | None = None
    ) -> list[Version]:
        """Versions of ``image``, newest first; ``before`` (a name or ref) gives the next page."""
        if limit < 1:
            raise CatalogError(f"limit must be at least 1, got {limit}")
        seq = int(split_ref(before, image)[1]) if before else None
        sql = "SELECT seq, name, status, revoke_at, doc FROM versions WHERE image=?"
        params: list[Any] = [image]
        if seq is not None:
            sql += " AND seq < ?"
            params.append(seq)
        if status:
            sql += " AND status=?"
            params.append(status)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        with self.store.read() as tx:
            rows = tx.all(sql, tuple(params))
            return self._hydrate(tx, image, rows)

    def images(self) -> list[str]:
        with self.store.read() as tx:
            rows = tx.all("SELECT image FROM counters UNION SELECT image FROM channels ORDER BY image")
        return [r[0] for r in rows]

    def record_test(
        self,
        ref: str,
        passed: bool,
        duration_s: float | None = None,
        log_path: str | None = None,
        details: dict | None = None,
    ) -> dict:
        """Append a test result to a version (the test stage calls this); returns the result."""
        img, name = split_ref(ref)
        result = {
            "passed": bool(passed),
            "duration_s": duration_s,
            "log_path": log_path,
            "details": details or {},
            "principal": self._who(),
            "at": _iso(_now()),
        }
        with self.store.write() as tx:
            self._require_version(tx, img, name)
            tx.run(
                "INSERT INTO tests (image, name, passed, duration_s, log_path, details, principal, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    img,
                    name,
                    int(result["passed"]),
                    duration_s,
                    log_path,
                    _canonical(result["details"]),
                    result["principal"],
                    parse_time(result["at"]),
                ),
            )
            self._event(tx, "test", f"{img}/{name}", {"passed": result["passed"], "duration_s": duration_s})
        return result

    # ------------------------------------------------------------------ channels

    def channel_version(self, image: str, channel: str) -> Version | None:
        """The version ``channel`` of ``image`` points at, or None (no such channel, or emptied).

        Untrusted, naming the event and the rule, unless the audit trail holds and, with signing on,
        a valid signed event that the policy accepts put the version there (see :meth:`verify_channel`).
        """
        with self.store.read() as tx:
            row = tx.one("SELECT version FROM channels WHERE image=? AND channel=?", (image, channel))
            due = row and row[0] and self._is_due(tx, row[0])
            if not due:
                if row:
                    self._verify_channel(tx, image, channel)
                return self._get(tx, *split_ref(row[0])) if row and row[0] else None
        # The version it points at reached its scheduled revocation: apply it, then answer.
        self._settle()
        return self.channel_version(image, channel)

    def channels(self, image: str) -> dict[str, str | None]:
        """Channel name -> the ref it points at, for one image."""
        self._settle()
        with self.store.read() as tx:
            rows = tx.all("SELECT channel, version FROM channels WHERE image=? ORDER BY channel", (image,))
        return dict(rows)

    def channel_history(
        self, image: str, channel: str | None = None, limit: int = 50, before: int | None = None
    ) -> list[dict]:
        """Moves of a channel (or of every channel of ``image``), newest first: who, when, why, from, to."""
        sql, params = _newest_first(
            "SELECT id, channel, version, previous, action, principal, reason, at FROM channel_history",
            {"image": image, "channel": channel},
            before,
            limit,
        )
        with self.store.read() as tx:
            rows = tx.all(sql, params)
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
                "at": _iso(r[7]),
            }
            for r in rows
        ]

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
        with self.store.write() as tx:
            self._apply_due_revocations(tx)
            if from_channel:
                img = check_ident("image", image)
                check_ident("channel", from_channel)
                row = tx.one("SELECT version FROM channels WHERE image=? AND channel=?", (img, from_channel))
                if not row:
                    raise CatalogError(
                        f"unknown channel {from_channel!r} of image {img!r}" + self._known(tx, img)
                    )
                if not row[0]:
                    raise CatalogError(f"channel {from_channel!r} of image {img!r} points at no version")
                img, name = split_ref(row[0])
            else:
                img, name = split_ref(version, image)
            target = self._require_version(tx, img, name)
            if target.revoked:
                raise CatalogError(
                    f"version {target.ref} is revoked "
                    f"({(target.revocation or {}).get('reason') or 'no reason'}); "
                    "it cannot be promoted"
                )
            self._enforce_policy(tx, policy, target, channel, who)
            current = self._current(tx, img, channel)
            move = ChannelMove(
                img, channel, current, target.ref, "promote", current != target.ref, reason, who
            )
            if move.changed and self.trust is not None and policy is not None:
                approvals = self._approvals(tx, policy, move)
                if approvals is None:  # recorded as one approval; the channel waits for more signers
                    move = dataclasses.replace(move, after=current, action="approve")
                    if not check:
                        self._event(
                            tx, "approve", f"{img}@{channel}", {"version": target.ref, "reason": reason}
                        )
                    return move
                move.approvals = approvals
            if move.changed and not check:
                self._move(tx, move, back=self._current_entry(tx, img, channel))
            return move

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
        with self.store.write() as tx:
            self._apply_due_revocations(tx)
            entry = self._current_entry(tx, image, channel)
            if entry is None:
                raise CatalogError(f"unknown channel {channel!r} of image {image!r}" + self._known(tx, image))
            self._verify_channel(tx, image, channel)
            current = self._current(tx, image, channel)
            skipped: list[str] = []
            if to:
                img, name = split_ref(to, image)
                ref = f"{img}/{name}"
                target_entry = tx.one(
                    "SELECT id, version, back FROM channel_history WHERE image=? AND channel=? AND version=? "
                    "ORDER BY id DESC LIMIT 1",
                    (image, channel, ref),
                )
                if not target_entry:
                    raise CatalogError(
                        f"version {ref} was never on channel {channel!r} of image {image!r}; "
                        "use promote to put it there"
                    )
                found = self._require_version(tx, img, name)
                if found.revoked:
                    raise CatalogError(
                        f"version {ref} is revoked; cannot roll channel {channel!r} back to it"
                    )
            else:
                target_entry = self._walk_back(tx, entry, current, skipped)
                if target_entry is None:
                    raise CatalogError(
                        f"channel {channel!r} of image {image!r} has no earlier version to roll back to"
                        + (f" (stepped over revoked {', '.join(skipped)})" if skipped else "")
                    )
            if policy is not None:
                failures = policy.check_principal(image, channel, who)
                if self.trust is not None:
                    failures += policy.check_signers(image, channel, [who], needed=1)
                    failures += self._signed_before(tx, image, channel, target_entry[1])
                if failures:
                    raise PolicyRefused(
                        f"rollback of channel {channel!r} refused: {'; '.join(failures)}", rules=failures
                    )
            after = target_entry[1]
            move = ChannelMove(
                image, channel, current, after, "rollback", after != current, reason, who, skipped
            )
            if move.changed and not check:
                self._move(tx, move, back=target_entry[2])
            return move

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
        now = _now()
        with self.store.write() as tx:
            self._apply_due_revocations(tx)
            version = self._require_version(tx, img, name)
            scheduled = when is not None and when > now
            out: dict[str, Any] = {"version": version.ref, "scheduled": scheduled, "moves": [], "flagged": []}
            if version.revoked:
                out["changed"] = False
                return out
            wanted = {"reason": reason, "by": self._who(), "fallback": fallback}
            if scheduled:
                same = version.revocation and version.revocation.get("at") == _iso(when)
                out["changed"] = not same
                out["at"] = _iso(when)
                if out["changed"] and not check:
                    tx.run("UPDATE versions SET revoke_at=? WHERE image=? AND seq=?", (when, img, int(name)))
                    self._set_revocation(tx, img, name, {**wanted, "at": _iso(when), "scheduled": True})
                    self._event(tx, "schedule-revoke", version.ref, {"at": _iso(when), "reason": reason})
                return out
            out["changed"] = True
            out["moves"] = self._revoke_now(tx, version, {**wanted, "at": _iso(now)}, fallback, check)
            out["flagged"] = self._children(tx, version.ref)
            return out

    def restore(self, ref: str, *, check: bool = False) -> dict:
        """Undo a revocation (or cancel a scheduled one). Channels that fell back stay where they are."""
        img, name = split_ref(ref)
        with self.store.write() as tx:
            self._apply_due_revocations(tx)
            version = self._require_version(tx, img, name)
            changed = version.revoked or version.revocation is not None
            if changed and not check:
                tx.run(
                    "UPDATE versions SET status=?, revoke_at=NULL WHERE image=? AND seq=?",
                    (ACTIVE, img, int(name)),
                )
                self._set_revocation(tx, img, name, None)
                self._event(tx, "restore", version.ref, {})
            return {"changed": changed, "version": version.ref}

    # ------------------------------------------------------------------ removal and retention

    def remove(self, ref: str, *, check: bool = False, running: set[str] | None = None) -> PruneResult:
        """Remove one version and its Docker image; refused while a channel or an instance uses it."""
        img, name = split_ref(ref)
        with self.store.write() as tx:
            version = self._require_version(tx, img, name)
            using = [
                r[0] for r in tx.all("SELECT channel FROM channels WHERE image=? AND version=?", (img, ref))
            ]
            if using:
                raise CatalogError(f"version {ref} is on channel(s) {', '.join(using)}; move them first")
            if version.ref in (running if running is not None else running_versions()):
                raise CatalogError(f"version {ref} is run by an instance; roll it out of use first")
            if not check:
                self._delete(tx, version)
        result = PruneResult(removed=[ref], kept={})
        if not check:
            self._remove_images([version], result)
        return result

    def prune(
        self,
        image: str | None = None,
        *,
        keep: int = 5,
        history_depth: int = 3,
        running: set[str] | None = None,
        check: bool = False,
        remove_images: bool = True,
    ) -> PruneResult:
        """Remove all but the newest ``keep`` versions of each image, and their Docker images.

        Never removed: a version a channel points at, one of the last ``history_depth`` versions a
        channel pointed at (so rollback keeps working), or one an instance runs (Docker containers
        labelled ``kiln.version``; pass ``running`` to decide without Docker).
        """
        if keep < 0 or history_depth < 0:
            raise CatalogError(f"keep ({keep}) and history_depth ({history_depth}) must be 0 or more")
        with self.store.write() as tx:
            self._apply_due_revocations(tx)
            images = (
                [check_ident("image", image)]
                if image
                else [r[0] for r in tx.all("SELECT image FROM counters")]
            )
            kept: dict[str, str] = {}
            doomed: list[Version] = []
            for img in images:
                protected = self._protected(tx, img, history_depth)
                rows = tx.all(
                    "SELECT seq, name, status, revoke_at, doc FROM versions WHERE image=? ORDER BY seq DESC",
                    (img,),
                )
                for index, row in enumerate(rows):
                    ref = f"{img}/{row[1]}"
                    if index < keep:
                        kept[ref] = f"one of the newest {keep}"
                    elif ref in protected:
                        kept[ref] = protected[ref]
                    else:
                        doomed.extend(self._hydrate(tx, img, [row]))
            if doomed:
                # Ask Docker only when something could go: a stopped engine must not block a no-op.
                in_use = running if running is not None else running_versions()
                for version in list(doomed):
                    if version.ref in in_use:
                        kept[version.ref] = "run by an instance"
                        doomed.remove(version)
            if not check:
                for version in doomed:
                    self._delete(tx, version)
        result = PruneResult(removed=[v.ref for v in doomed], kept=kept)
        if doomed and not check and remove_images:
            self._remove_images(doomed, result)
        return result

    def _protected(self, tx: Tx, image: str, history_depth: int) -> dict[str, str]:
        out: dict[str, str] = {}
        for channel, ref in tx.all("SELECT channel, version FROM channels WHERE image=?", (image,)):
            if ref:
                out[ref] = f"channel {channel} points at it"
            if history_depth:
                for (old,) in tx.all(
                    "SELECT version FROM channel_history WHERE image=? AND channel=? AND version IS NOT NULL "
                    "ORDER BY id DESC LIMIT ?",
                    (image, channel, history_depth + 1),
                ):
                    out.setdefault(old, f"in the recent history of channel {channel}")
        return out

    def _delete(self, tx: Tx, version: Version) -> None:
        img, name = version.image, version.name
        tx.run("DELETE FROM versions WHERE image=? AND seq=?", (img, int(name)))
        tx.run("DELETE FROM tests WHERE image=? AND name=?", (img, name))
        # The event keeps the whole record, so the audit trail still says what was removed.
        self._event(tx, "remove", version.ref, {"version": version.to_dict()})

    def _remove_images(self, versions: list[Version], result: PruneResult) -> None:
        """Untag each version's Docker image; Docker deletes it once no tag or container needs it."""
        wanted = [(v.ref, (v.artifacts or {}).get("docker") or {}) for v in versions]
        wanted = [(ref, docker) for ref, docker in wanted if docker.get("tag") or docker.get("image_id")]
        if not wanted:
            return
        try:
            from ..common.docker_api import client

            images = client().images
            import docker.errors
        except Exception as exc:  # no SDK or no engine: the catalog part is done, say what is left
            refs = ", ".join(ref for ref, _docker in wanted)
            result.warnings.append(f"Docker images not removed ({exc}): {refs}")
            return
        for ref, docker in wanted:
            try:
                target = images.get(docker.get("tag") or docker["image_id"])
                if docker.get("image_id") and target.id != docker["image_id"]:
                    result.warnings.append(
                        f"{ref}: tag {docker.get('tag')} now names another image; left alone"
                    )
                    continue
                if docker.get("tag"):
                    images.remove(docker["tag"])
                    result.images_removed.append(docker["tag"])
                elif not target.tags:
                    images.remove(docker["image_id"])
                    result.images_removed.append(docker["image_id"])
            except docker.errors.ImageNotFound:
                continue
            except docker.errors.APIError as exc:
                result.warnings.append(f"{ref}: Docker image not removed: {exc.explanation or exc}")

    # ------------------------------------------------------------------ audit, export, import

    def events(self, limit: int = 50, before: int | None = None, subject: str | None = None) -> list[dict]:
        """Audit events, newest first."""
        sql, params = _newest_first(
            "SELECT id, at, principal, action, subject, payload, prev_hash, hash FROM events",
            {"subject": subject},
            before,
            limit,
        )
        with self.store.read() as tx:
            return [_event_dict(row) for row in tx.all(sql, params)]

    def verify(self) -> dict:
        """Check the audit trail: every hash, every link, the head, and that the state agrees with it.

        Returns ``{"ok", "events", "head", "problems": [...]}``; an edited, inserted or deleted
        event (or a row changed behind kiln's back) is named in ``problems``.
        """
        with self.store.read() as tx:
            return self._verify_all(tx)

    def verify_channel(self, image: str, channel: str) -> dict:
        """Untrusted unless the channel's current version was put there as the trail and policy say.

        The audit trail must hold (hashes, links, head, rows agreeing with it); with signing on, the
        head and the event that made the channel point where it does must be signed by keys valid at
        the time, by signers the policy allows (with its approvals), the test it required signed too.
        Returns ``{"signed", "event", "signers"}``.
        """
        with self.store.read() as tx:
            return self._verify_channel(tx, image, channel)

    def export(self) -> dict:
        """The whole catalog as one JSON-ready document (stable order, for review and for git)."""
        with self.store.read() as tx:
            doc: dict[str, Any] = {"format": EXPORT_FORMAT}
            for table, columns, order in _EXPORT_TABLES:
                rows = tx.all(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")
                doc[table] = [_export_row(table, dict(zip(columns, row, strict=True))) for row in rows]
            doc["head"] = (tx.one("SELECT value FROM meta WHERE key='head'") or [None])[0]
        return doc

    def import_(self, doc: dict) -> dict:
        """Load an export into this (empty) catalog; the audit trail must verify or nothing is kept."""
        if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
            raise CatalogError(f"not a kiln catalog export (expected format {EXPORT_FORMAT!r})")
        with self.store.write() as tx:
            if tx.one("SELECT 1 FROM events LIMIT 1") or tx.one("SELECT 1 FROM counters LIMIT 1"):
                raise CatalogError(f"catalog {self.path} is not empty; import into a new catalog file")
            for table, columns, _order in _EXPORT_TABLES:
                for index, row in enumerate(doc.get(table) or []):
                    missing = [c for c in columns if c not in row]
                    if missing:
                        raise CatalogError(f"export {table}[{index}] lacks {', '.join(missing)}")
                    values = _import_row(table, row)
                    tx.run(
                        f"INSERT INTO {table} ({', '.join(columns)}) "
                        f"VALUES ({', '.join('?' * len(columns))})",
                        tuple(values[c] for c in columns),
                    )
            if doc.get("head"):
                tx.run("INSERT OR REPLACE INTO meta (key, value) VALUES ('head', ?)", (doc["head"],))
            report = _verify(tx)
            if not report["ok"]:
                raise CatalogError(
                    "export does not verify, nothing imported: " + "; ".join(report["problems"][:5]),
                    problems=report["problems"],
                )
        return report

    # ------------------------------------------------------------------ internals

    def _doc(self, version: Version) -> str:
        data = version.to_dict()
        for key in (*_COLUMN_FIELDS, "ref"):
            data.pop(key, None)
        return _canonical(data)

    def _get(self, tx: Tx, image: str, name: str) -> Version | None:
        row = tx.one(
            "SELECT seq, name, status, revoke_at, doc FROM versions WHERE image=? AND seq=?",
            (image, int(name)),
        )
        if not row:
            return None
        return self._hydrate(tx, image, [row])[0]

    def _hydrate(self, tx: Tx, image: str, rows: list[tuple]) -> list[Version]:
        """Versions from rows, with their test results and flags, in a fixed number of queries."""
        if not rows:
            return []
        names = [r[1] for r in rows]
        marks = ",".join("?" * len(names))
        tests: dict[str, list] = {n: [] for n in names}
        for name, passed, duration_s, log_path, details, who, at in tx.all(
            f"SELECT name, passed, duration_s, log_path, details, principal, at FROM tests "
            f"WHERE image=? AND name IN ({marks}) ORDER BY id",
            (image, *names),
        ):
            tests[name].append(
                {
                    "passed": bool(passed),
                    "duration_s": duration_s,
                    "log_path": log_path,
                    "details": json.loads(details),
                    "principal": who,
                    "at": _iso(at),
                }
            )
        out = []
        for _seq, name, status, _revoke_at, doc in rows:
            data = json.loads(doc)
            revocation = data.pop("revocation_state", None)
            version = Version.from_dict(
                {**data, "status": status, "tests": tests[name], "revocation": revocation}
            )
            out.append(version)
        self._flag_parents(tx, out)
        return out

    def _flag_parents(self, tx: Tx, versions: list[Version]) -> None:
        """Flag versions built on a revoked parent (one lookup per distinct parent on the page)."""
        revoked: dict[str, bool] = {}
        for version in versions:
            parent = version.parent
            if not parent:
                continue
            if parent not in revoked:
                img, name = split_ref(parent)
                row = tx.one("SELECT status FROM versions WHERE image=? AND seq=?", (img, int(name)))
                revoked[parent] = bool(row and row[0] == REVOKED)
            if revoked[parent]:
                version.flags.append(f"parent-revoked:{parent}")

    def _children(self, tx: Tx, ref: str) -> list[str]:
        """Refs of versions built directly on ``ref``."""
        rows = tx.all("SELECT image, name FROM versions WHERE parent=? ORDER BY image, seq", (ref,))
        return [f"{image}/{name}" for image, name in rows]

    def _require_version(self, tx: Tx, image: str, name: str) -> Version:
        version = self._get(tx, image, name)
        if version is None:
            raise CatalogError(f"unknown version {image}/{name}" + self._hint_image_tx(tx, image))
        return version

    def _hint_image(self, image: str) -> str:
        with self.store.read() as tx:
            return self._hint_image_tx(tx, image)

    def _hint_image_tx(self, tx: Tx, image: str) -> str:
        if tx.one("SELECT 1 FROM counters WHERE image=?", (image,)):
            return ""
        known = [r[0] for r in tx.all("SELECT image FROM counters ORDER BY image LIMIT 20")]
        return f" (unknown image {image!r}; known images: {', '.join(known) or 'none'})"

    def _known(self, tx: Tx, image: str) -> str:
        rows = tx.all("SELECT channel FROM channels WHERE image=? ORDER BY channel", (image,))
        return f"; known channels: {', '.join(r[0] for r in rows) or 'none'}"

    def _current(self, tx: Tx, image: str, channel: str) -> str | None:
        row = tx.one("SELECT version FROM channels WHERE image=? AND channel=?", (image, channel))
        return row[0] if row else None

    def _current_entry(self, tx: Tx, image: str, channel: str) -> tuple | None:
        """The history entry that made the channel point where it points now: (id, version, back)."""
        return tx.one(
            "SELECT id, version, back FROM channel_history WHERE image=? AND channel=? "
            "ORDER BY id DESC LIMIT 1",
            (image, channel),
        )

    def _walk_back(self, tx: Tx, entry: tuple, current: str | None, skipped: list[str]) -> tuple | None:
        """Follow ``back`` links from ``entry`` to the first assignment of a different, valid version."""
        back = entry[2]
        for _step in range(100_000):  # bounded: every link points at a strictly older entry
            if back is None:
                return None
            candidate = tx.one("SELECT id, version, back FROM channel_history WHERE id=?", (back,))
            if candidate is None:
                return None
            ref = candidate[1]
            if ref and ref != current:
                found = self._get(tx, *split_ref(ref))
                if found is not None and not found.revoked:
                    return candidate
                skipped.append(ref)
            back = candidate[2]
        return None

    def _move(self, tx: Tx, move: ChannelMove, back: Any) -> None:
        now = _now()
        back_id = back[0] if isinstance(back, tuple) else back
        tx.run(
            "INSERT INTO channels (image, channel, version, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(image, channel) DO UPDATE SET version=excluded.version, "
            "updated_at=excluded.updated_at",
            (move.image, move.channel, move.after, now),
        )
        tx.run(
            "INSERT INTO channel_history (image, channel, version, previous, action, principal, reason, at,"
            " back)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                move.image,
                move.channel,
                move.after,
                move.before,
                move.action,
                move.principal,
                move.reason,
                now,
                back_id,
            ),
        )
        self._event(
            tx,
            move.action,
            f"{move.image}@{move.channel}",
            {"from": move.before, "to": move.after, "reason": move.reason}
            | ({"approvals": move.approvals} if move.approvals else {}),
        )

    def _enforce_policy(self, tx: Tx, policy: Any, version: Version, channel: str, who: str) -> None:
        if policy is None:
            return
        seen = {
            r[0]
            for r in tx.all(
                "SELECT DISTINCT channel FROM channel_history WHERE image=? AND version=?",
                (version.image, version.ref),
            )
        }
        failures = policy.check_promote(version, channel, who, channels_seen=seen)
        if self.trust is not None:
            failures += policy.check_signers(version.image, channel, [who], needed=1)
            failures += self._signed_test(tx, version, channel)
        if failures:
            raise PolicyRefused(
                f"promotion of {version.ref} to channel {channel!r} refused: {'; '.join(failures)}",
                rules=failures,
            )

    def _set_revocation(self, tx: Tx, image: str, name: str, revocation: dict | None) -> None:
        row = tx.one("SELECT doc FROM versions WHERE image=? AND seq=?", (image, int(name)))
        data = json.loads(row[0])
        if revocation is None:
            data.pop("revocation_state", None)
        else:
            data["revocation_state"] = revocation
        tx.run("UPDATE versions SET doc=? WHERE image=? AND seq=?", (_canonical(data), image, int(name)))

    def _revoke_now(
        self, tx: Tx, version: Version, revocation: dict, fallback: bool, check: bool
    ) -> list[dict]:
        img, name = version.image, version.name
        channels = [
            r[0]
            for r in tx.all("SELECT channel FROM channels WHERE image=? AND version=?", (img, version.ref))
        ]
        if not check:
            tx.run(
                "UPDATE versions SET status=?, revoke_at=NULL WHERE image=? AND seq=?",
                (REVOKED, img, int(name)),
            )
            self._set_revocation(tx, img, name, {**revocation, "scheduled": False})
            self._event(tx, "revoke", version.ref, {"reason": revocation["reason"], "fallback": fallback})
        moves = []
        if not fallback:
            return moves
        for channel in channels:
            entry = self._current_entry(tx, img, channel)
            skipped: list[str] = []
            target = self._walk_back(tx, entry, version.ref, skipped) if entry else None
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
                self._move(tx, move, back=target[2] if target else None)
            moves.append(move.to_dict())
        return moves

    def _is_due(self, tx: Tx, ref: str) -> bool:
        img, name = split_ref(ref)
        row = tx.one("SELECT revoke_at FROM versions WHERE image=? AND seq=?", (img, int(name)))
        return bool(row and row[0] is not None and row[0] <= _now())

    def _settle(self) -> None:
        """Apply scheduled revocations that are due; takes the write lock only when there are some."""
        with self.store.read() as tx:
            due = tx.one(
                "SELECT 1 FROM versions WHERE revoke_at IS NOT NULL AND revoke_at <= ? LIMIT 1", (_now(),)
            )
        if due:
            with self.store.write() as tx:
                self._apply_due_revocations(tx)

    def _apply_due_revocations(self, tx: Tx) -> None:
        """Scheduled revocations whose time has come take effect inside the caller's transaction."""
        for image, name in tx.all(
            "SELECT image, name FROM versions WHERE revoke_at IS NOT NULL AND revoke_at <= ? "
            "ORDER BY revoke_at",
            (_now(),),
        ):
            version = self._get(tx, image, name)
            planned = version.revocation or {}
            self._revoke_now(
                tx,
                version,
                {
                    "reason": planned.get("reason", "scheduled"),
                    "by": planned.get("by", principal()),
                    "at": planned.get("at"),
                },
                planned.get("fallback", True),
                check=False,
            )

    # ------------------------------------------------------------------ signing

    def _adopt(self, policy: Any) -> None:
        """A move under a policy that turns signing on is signed by its rules, whatever the environment."""
        if policy is not None and policy.signed and (self.trust is None or self.trust.policy is not policy):
            self.trust = Trust(policy, self.trust.signer if self.trust else None)

    def _who(self) -> str:
        """Who acts: with signing on, the allowed_signers identity of the key; else the principal."""
        return self.trust.identity() if self.trust is not None else principal()

    def _events(self, tx: Tx, where: str = "", params: tuple = ()) -> list[Event]:
        rows = tx.all(
            "SELECT id, at, principal, action, subject, payload, prev_hash, hash FROM events"
            + (f" WHERE {where}" if where else "")
            + " ORDER BY id",
            params,
        )
        return [Event(**{**_event_dict(row), "payload": json.loads(row[5])}) for row in rows]

    def _signed_head(self, tx: Tx) -> tuple[str | None, dict | None]:
        head = tx.one("SELECT value FROM meta WHERE key='head'")
        signed = tx.one("SELECT value FROM meta WHERE key='head_signature'")
        return (head[0] if head else None), (json.loads(signed[0]) if signed else None)

    def _verify_all(self, tx: Tx) -> dict:
        report = _verify(tx)
        report["signed"] = self.trust is not None
        if self.trust is not None:
            report["problems"] += self.trust.trail_problems(self._events(tx), *self._signed_head(tx))
            report["ok"] = not report["problems"]
        return report

    def _verify_channel(self, tx: Tx, image: str, channel: str) -> dict:
        subject = f"{image}@{channel}"
        refuse = f"channel {subject} cannot be trusted"
        report = _verify(tx)
        if not report["ok"]:
            first = report["problems"][0]
            raise Untrusted(f"{refuse}: the audit trail does not hold: {first}", problems=report["problems"])
        if self.trust is None:
            return {"signed": False, "event": None, "signers": []}
        moves = self._events(tx, "subject=? AND action IN ('promote', 'rollback', 'fallback')", (subject,))
        if not moves:
            raise Untrusted(f"{refuse}: no event put a version on it", rule="signing")
        event = moves[-1]
        problem = self.trust.event_problem(event)
        if problem:
            raise Untrusted(f"{refuse}: {problem}", event=event.id, rule="signing")
        problem = self.trust.head_problem(*self._signed_head(tx))
        if problem:
            raise Untrusted(f"{refuse}: {problem}", rule="signing")
        signers = [event.principal]
        for approval in self._events_by_id(tx, event.payload.get("approvals") or []):
            problem = self.trust.event_problem(approval)
            wanted = (approval.action, approval.subject, approval.payload.get("version"))
            if wanted != ("approve", subject, event.payload.get("to")):
                problem = f"{approval.describe()} is no approval of {event.payload.get('to')} on {subject}"
            if problem:
                raise Untrusted(
                    f"{refuse}: {event.describe()} counts {problem}", event=event.id, rule="approvals"
                )
            signers.append(approval.principal)
        if event.action != "fallback":  # a fallback is the effect of a signed revoke, not a choice of version
            needed = None if event.action == "promote" else 1
            failures = self.trust.policy.check_signers(image, channel, signers, needed=needed)
            if failures:
                raise Untrusted(
                    f"{refuse}: {event.describe()} fails {'; '.join(failures)}",
                    event=event.id,
                    rule=failures[0],
                )
        return {"signed": True, "event": event.id, "signers": sorted(set(signers))}

    def _events_by_id(self, tx: Tx, ids: list) -> list[Event]:
        ids = [int(i) for i in ids]
        return self._events(tx, f"id IN ({', '.join('?' * len(ids))})", tuple(ids)) if ids else []

    def _signed_test(self, tx: Tx, version: Version, channel: str) -> list[str]:
        """The rule ``requires_passing_test: {signers}``: the newest test event is signed by one of them."""
        patterns = self.trust.policy.rule(version.image, channel).test_signers
        if patterns is None:
            return []
        tests = self._events(tx, "subject=? AND action='test'", (version.ref,))
        rule = f"rule 'requires_passing_test' (signed by {', '.join(patterns)})"
        if not tests:
            return [f"{rule}: {version.ref} has no signed test result"]
        newest = tests[-1]
        problem = self.trust.event_problem(newest)
        if problem:
            return [f"{rule}: {problem}"]
        if not newest.payload.get("passed"):
            return [f"{rule}: the newest test of {version.ref} ({newest.describe()}) failed"]
        if not any(fnmatch.fnmatchcase(newest.principal, p) for p in patterns):
            return [f"{rule}: the newest test of {version.ref} was signed by {newest.principal!r}"]
        return []

    def _approvals(self, tx: Tx, policy: Any, move: ChannelMove) -> list[int] | None:
        """The approve events that, with this signer, make enough distinct signers; None when too few.

        Approvals count from the channel's last move on, for the same version, from distinct signers.
        """
        needed = policy.rule(move.image, move.channel).approvals
        subject = f"{move.image}@{move.channel}"
        last_move = tx.one(
            "SELECT max(id) FROM events WHERE subject=? AND action IN ('promote', 'rollback', 'fallback')",
            (subject,),
        )
        since = (last_move[0] if last_move else None) or 0
        signers = {move.principal}
        ids = []
        for approval in self._events(tx, "subject=? AND action='approve' AND id>?", (subject, since)):
            if approval.payload.get("version") != move.after or approval.principal in signers:
                continue
            if self.trust.event_problem(approval) is None and not policy.check_signers(
                move.image, move.channel, [approval.principal], needed=1
            ):
                signers.add(approval.principal)
                ids.append(approval.id)
        return ids if len(signers) >= needed else None

    def _signed_before(self, tx: Tx, image: str, channel: str, version: str | None) -> list[str]:
        """A rollback target must be a version a valid signed event put on the channel before."""
        subject = f"{image}@{channel}"
        for event in reversed(
            self._events(tx, "subject=? AND action IN ('promote', 'rollback')", (subject,))
        ):
            if event.payload.get("to") == version and self.trust.event_problem(event) is None:
                return []
        return [f"rule 'signing': no valid signed event ever put {version} on channel {subject}"]

    def _event(self, tx: Tx, action: str, subject: str, payload: dict) -> None:
        """Append one event to the audit trail, chained by hash to the one before."""
        head = tx.one("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1")
        event_id, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
        at = _iso(_now())
        if self.trust is None:
            who = principal()
        else:  # signed over the event and the previous hash; kept in the payload, so chained too
            signature = self.trust.sign_event(payload, event_id, at, action, subject, prev)
            who, payload = signature.signer, {**payload, "signature": signature.to_dict()}
        body = _canonical(payload)
        digest = event_hash(event_id, at, who, action, subject, body, prev)
        tx.run(
            "INSERT INTO events (id, at, principal, action, subject, payload, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (event_id, at, who, action, subject, body, prev, digest),
        )
        # The head is kept apart from the chain so that deleting the newest events shows too.
        head = f"{event_id}:{digest}"
        tx.run("INSERT OR REPLACE INTO meta (key, value) VALUES ('head', ?)", (head,))
        if self.trust is not None:
            signed = _canonical(self.trust.sign_head(head, at))
            tx.run("INSERT OR REPLACE INTO meta (key, value) VALUES ('head_signature', ?)", (signed,))


def running_versions() -> set[str]:
    """Refs that instances run: the ``kiln.version`` label of every container, running or stopped.

    Retention asks this before removing anything; an unreachable Docker engine is an error here,
    since pruning blind could remove an image an instance still needs.
    """
    from ..common.docker_api import DockerUnavailable, client

    try:
        containers = client().containers.list(all=True, filters={"label": "kiln.version"})
    except DockerUnavailable as exc:
        raise CatalogError(
            f"cannot tell which versions instances run, so nothing is pruned: {exc.msg}"
        ) from exc
    return {c.labels["kiln.version"] for c in containers if c.labels.get("kiln.version")}


def event_hash(event_id: int, at: str, who: str, action: str, subject: str, payload: str, prev: str) -> str:
    return _sha256(_canonical([event_id, at, who, action, subject, payload, prev]))


# Table, columns, order: what export writes and import reads back, row for row.
_EXPORT_TABLES = (
    ("counters", ("image", "last"), "image"),
    (
        "versions",
        ("image", "seq", "name", "fingerprint", "status", "revoke_at", "parent", "created_at", "doc"),
        "image, seq",
    ),
    ("channels", ("image", "channel", "version", "updated_at"), "image, channel"),
    (
        "channel_history",
        ("id", "image", "channel", "version", "previous", "action", "principal", "reason", "at", "back"),
        "id",
    ),
    (
        "tests",
        ("id", "image", "name", "passed", "duration_s", "log_path", "details", "principal", "at"),
        "id",
    ),
    ("events", ("id", "at", "principal", "action", "subject", "payload", "prev_hash", "hash"), "id"),
)
# JSON columns are exported as objects so that the file reads (and diffs) well.
_JSON_COLUMNS = {"versions": "doc", "tests": "details"}


def _export_row(table: str, row: dict) -> dict:
    column = _JSON_COLUMNS.get(table)
    if column:
        row[column] = json.loads(row[column])
    return row


def _import_row(table: str, row: dict) -> dict:
    column = _JSON_COLUMNS.get(table)
    if column and not isinstance(row[column], str):
        row = {**row, column: _canonical(row[column])}
    return row


def _newest_first(select: str, equal: dict[str, Any], before: int | None, limit: int) -> tuple[str, tuple]:
    """``select`` filtered on the given columns (None skips one), one keyset page newest first."""
    where = [f"{column}=?" for column, value in equal.items() if value]
    params: list[Any] = [value for value in equal.values() if value]
    if before is not None:
        where.append("id < ?")
        params.append(before)
    sql = select + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
    return sql, (*params, limit)


def _event_dict(row: tuple) -> dict:
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


def _verify(tx: Tx) -> dict:
    problems: list[str] = []
    prev, expected = GENESIS, 1
    registered: dict[str, str] = {}  # ref -> doc sha256 at registration, for versions still present
    status: dict[str, str] = {}
    moves: dict[str, list] = {}  # "image@channel" -> [to, ...]
    for row in tx.all(
        "SELECT id, at, principal, action, subject, payload, prev_hash, hash FROM events ORDER BY id"
    ):
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
    head = tx.one("SELECT value FROM meta WHERE key='head'")
    last = f"{expected - 1}:{prev}" if expected > 1 else None
    if (head[0] if head else None) != last:
        problems.append(
            f"the newest events were deleted: the head says {head[0] if head else None}, "
            f"the trail ends at {last}"
        )
    for image, name, state, doc in tx.all("SELECT image, name, status, doc FROM versions"):
        ref = f"{image}/{name}"
        data = json.loads(doc)
        data.pop("revocation_state", None)
        if ref not in registered:
            problems.append(f"version {ref} has no register event (added outside kiln?)")
        elif registered[ref] != _sha256(_canonical(data)):
            problems.append(f"version {ref} was edited after it was registered")
        elif status.get(ref) != state:
            problems.append(f"version {ref} is {state} but the trail says {status.get(ref)}")
    for ref in set(registered) - {f"{i}/{n}" for i, n in tx.all("SELECT image, name FROM versions")}:
        problems.append(f"version {ref} was deleted without a remove event")
    history_counts = {
        f"{image}@{channel}": count
        for image, channel, count in tx.all(
            "SELECT image, channel, count(*) FROM channel_history GROUP BY image, channel"
        )
    }
    for image, channel, version in tx.all("SELECT image, channel, version FROM channels"):
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
