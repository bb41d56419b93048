# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Versions and their test results: reserving names, registering builds, reading them back."""

from __future__ import annotations

import dataclasses
import json

from . import model
from .audit import acting, append_event
from .errors import CatalogError
from .model import ACTIVE, REVOKED, Version, canonical, check_ident, sha256, split_ref
from .store.base import CatalogTx

# Fields that live in columns or in their own tables, not in the stored JSON document.
_COLUMN_FIELDS = ("status", "tests", "revocation", "flags")


def reserve(tx: CatalogTx, image: str) -> str:
    last = tx.last_name(check_ident("image", image)) + 1
    tx.raise_counter(image, last)
    return str(last)


def register(tx: CatalogTx, version: Version) -> Version:
    image, name = split_ref(version.name, version.image)
    if not version.fingerprint or not isinstance(version.fingerprint, str):
        raise CatalogError(f"version {image}/{name} has no fingerprint")
    if version.parent:
        split_ref(version.parent)
    now = model.now()
    record = dataclasses.replace(
        version,
        image=image,
        name=name,
        created_at=version.created_at or model.iso(now),
        created_by=version.created_by or acting(tx),
        status=ACTIVE,
        tests=[],
        revocation=None,
        flags=[],
    )
    doc = _doc(record)
    if tx.version_row(image, int(name)):
        raise CatalogError(f"version {record.ref} is already registered; reserve a new name")
    tx.insert_version(image, int(name), record.fingerprint, ACTIVE, record.parent, now, doc)
    # Names from elsewhere (an import, a hand-registered build) move the counter past them.
    tx.raise_counter(image, int(name))
    append_event(tx, "register", record.ref, {"doc_sha256": sha256(doc), "fingerprint": record.fingerprint})
    return record


def record_test(
    tx: CatalogTx, ref: str, passed: bool, duration_s: float | None, log_path: str | None, details: dict
) -> dict:
    img, name = split_ref(ref)
    result = {
        "passed": bool(passed),
        "duration_s": duration_s,
        "log_path": log_path,
        "details": details,
        "principal": acting(tx),
        "at": model.iso(model.now()),
    }
    require(tx, img, name)
    tx.insert_test(
        img,
        name,
        result["passed"],
        duration_s,
        log_path,
        canonical(details),
        result["principal"],
        model.parse_time(result["at"]),
    )
    append_event(tx, "test", f"{img}/{name}", {"passed": result["passed"], "duration_s": duration_s})
    return result


def get(tx: CatalogTx, image: str, name: str) -> Version | None:
    row = tx.version_row(image, int(name))
    return hydrate(tx, image, [row])[0] if row else None


def require(tx: CatalogTx, image: str, name: str) -> Version:
    version = get(tx, image, name)
    if version is None:
        raise CatalogError(f"unknown version {image}/{name}" + hint_image(tx, image))
    return version


def hint_image(tx: CatalogTx, image: str) -> str:
    if tx.has_image(image):
        return ""
    known = tx.counted_images(limit=20)
    return f" (unknown image {image!r}; known images: {', '.join(known) or 'none'})"


def hydrate(tx: CatalogTx, image: str, rows: list[tuple]) -> list[Version]:
    """Versions from rows, with their test results and flags, in a fixed number of queries."""
    if not rows:
        return []
    names = [r[1] for r in rows]
    tests: dict[str, list] = {n: [] for n in names}
    for name, passed, duration_s, log_path, details, who, at in tx.tests_of(image, names):
        tests[name].append(
            {
                "passed": bool(passed),
                "duration_s": duration_s,
                "log_path": log_path,
                "details": json.loads(details),
                "principal": who,
                "at": model.iso(at),
            }
        )
    out = []
    for _seq, name, status, _revoke_at, doc in rows:
        data = json.loads(doc)
        revocation = data.pop("revocation_state", None)
        out.append(
            Version.from_dict({**data, "status": status, "tests": tests[name], "revocation": revocation})
        )
    _flag_parents(tx, out)
    return out


def children(tx: CatalogTx, ref: str) -> list[str]:
    """Refs of versions built directly on ``ref``."""
    return [f"{image}/{name}" for image, name in tx.children(ref)]


def _flag_parents(tx: CatalogTx, versions: list[Version]) -> None:
    """Flag versions built on a revoked parent (one lookup per distinct parent on the page)."""
    revoked: dict[str, bool] = {}
    for version in versions:
        parent = version.parent
        if not parent:
            continue
        if parent not in revoked:
            img, name = split_ref(parent)
            revoked[parent] = tx.version_status(img, int(name)) == REVOKED
        if revoked[parent]:
            version.flags.append(f"parent-revoked:{parent}")


def _doc(version: Version) -> str:
    data = version.to_dict()
    for key in (*_COLUMN_FIELDS, "ref"):
        data.pop(key, None)
    return canonical(data)
