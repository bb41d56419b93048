# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the catalog records: versions, channel moves, prune outcomes, and how they are named."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import CatalogError

ACTIVE = "active"
REVOKED = "revoked"

_NAME = re.compile(r"^[1-9][0-9]{0,17}$")
_IDENT = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def now() -> float:
    """The catalog's clock (epoch seconds); one function, so that tests can move it."""
    return time.time()


def iso(ts: float | None) -> str | None:
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


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256(text: str) -> str:
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
    images_removed: list = field(default_factory=list)  # artifacts (Docker tags) removed
    warnings: list = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.removed)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "changed": self.changed}
