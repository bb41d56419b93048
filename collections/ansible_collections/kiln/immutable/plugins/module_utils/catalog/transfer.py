# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Export and import: the whole catalog as one JSON document, and back, chain intact.

The document is the same whichever store wrote it, so it also moves a catalog between stores
(SQLite to PostgreSQL and back).
"""

from __future__ import annotations

import json
from typing import Any

from .audit import verify
from .errors import CatalogError
from .model import canonical
from .store.base import TABLES, CatalogTx

EXPORT_FORMAT = "kiln-catalog/1"

# JSON columns are exported as objects so that the file reads (and diffs) well.
_JSON_COLUMNS = {"versions": "doc", "tests": "details"}


def export(tx: CatalogTx) -> dict:
    doc: dict[str, Any] = {"format": EXPORT_FORMAT}
    for table, columns, _order in TABLES:
        doc[table] = [_export_row(table, dict(zip(columns, row, strict=True))) for row in tx.dump(table)]
    doc["head"] = tx.meta("head")
    if tx.meta("head_signature"):  # a signed catalog: its head's signature travels with it
        doc["head_signature"] = json.loads(tx.meta("head_signature"))
    return doc


def import_(tx: CatalogTx, doc: dict, location: str) -> dict:
    """Load ``doc`` into the empty catalog of ``tx``; raises (so nothing is kept) unless it verifies."""
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise CatalogError(f"not a kiln catalog export (expected format {EXPORT_FORMAT!r})")
    if not tx.is_empty():
        raise CatalogError(f"catalog {location} is not empty; import into a new catalog file")
    for table, columns, _order in TABLES:
        for index, row in enumerate(doc.get(table) or []):
            missing = [c for c in columns if c not in row]
            if missing:
                raise CatalogError(f"export {table}[{index}] lacks {', '.join(missing)}")
            values = _import_row(table, row)
            tx.load(table, tuple(values[c] for c in columns))
    tx.loaded()
    if doc.get("head"):
        tx.set_meta("head", doc["head"])
    if doc.get("head_signature"):
        tx.set_meta("head_signature", canonical(doc["head_signature"]))
    report = verify(tx)
    if not report["ok"]:
        raise CatalogError(
            "export does not verify, nothing imported: " + "; ".join(report["problems"][:5]),
            problems=report["problems"],
        )
    return report


def _export_row(table: str, row: dict) -> dict:
    column = _JSON_COLUMNS.get(table)
    if column:
        row[column] = json.loads(row[column])
    return row


def _import_row(table: str, row: dict) -> dict:
    column = _JSON_COLUMNS.get(table)
    if column and not isinstance(row[column], str):
        row = {**row, column: canonical(row[column])}
    return row
