# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Versioned schema migrations, applied when a store is opened.

Each store lists its migrations, oldest first: the statements that take a catalog from schema
version N to N+1. Opening a catalog applies the missing ones in one write transaction (so two
processes opening a fresh catalog at once create it once) and records the version in ``meta``;
a catalog written by a newer kiln is refused instead of being misread.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import CatalogError


def ensure_schema(store, migrations: Sequence[Sequence[str]]) -> int:
    """Bring the store's schema to ``len(migrations)``; returns the version it is at."""
    latest = len(migrations)
    with store.read() as tx:
        have = tx.schema_version()
    if have is None or have < latest:
        with store.write() as tx:
            have = tx.schema_version()  # another process may have migrated while we waited
            for version in range(have or 0, latest):
                for statement in migrations[version]:
                    tx.ddl(statement)
                tx.set_meta("schema", str(version + 1))
            have = tx.schema_version()
    if have != latest:
        raise CatalogError(
            f"catalog {store.location} has schema version {have}; this kiln reads version {latest}: "
            "upgrade kiln to use it",
            path=store.location,
        )
    return have
