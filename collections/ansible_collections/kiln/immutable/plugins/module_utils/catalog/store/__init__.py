# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the catalog keeps its rows: one store interface (:mod:`.base`) and its implementations.

:func:`open_store` picks the store from the catalog's location: a PostgreSQL URL
(``postgresql://kiln@db/kiln``) opens the shared PostgreSQL store, anything else is the path of an
SQLite file.
"""

from __future__ import annotations

from ...common.paths import is_database_url
from .base import CatalogTx, Store


def open_store(location: str, busy_timeout_s: float = 30.0) -> Store:
    if is_database_url(location):
        from .postgresql import PostgresStore

        return PostgresStore(location, busy_timeout_s=busy_timeout_s)
    from .sqlite import SqliteStore

    return SqliteStore(location, busy_timeout_s=busy_timeout_s)


__all__ = ["CatalogTx", "Store", "open_store"]
