# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The catalog's tables, written once for both stores; each store names its own column types.

``migrations(types)`` is the list a store passes to :func:`.migrations.ensure_schema`: entry N takes
a catalog from schema version N to N+1. Versions keep their searchable fields in columns and the
rest of the record in a JSON document, so adding a field to Version needs no migration.
"""

from __future__ import annotations

_VERSION_1 = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters (image TEXT PRIMARY KEY, last {int} NOT NULL)",
    """CREATE TABLE IF NOT EXISTS versions (
        image TEXT NOT NULL,
        seq {int} NOT NULL,
        name TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        revoke_at {real},
        parent TEXT,
        created_at {real} NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (image, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS versions_fingerprint ON versions (image, fingerprint, seq)",
    "CREATE INDEX IF NOT EXISTS versions_revoke_at ON versions (revoke_at) WHERE revoke_at IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS channels (
        image TEXT NOT NULL,
        channel TEXT NOT NULL,
        version TEXT,
        updated_at {real} NOT NULL,
        PRIMARY KEY (image, channel)
    )""",
    """CREATE TABLE IF NOT EXISTS channel_history (
        id {serial},
        image TEXT NOT NULL,
        channel TEXT NOT NULL,
        version TEXT,
        previous TEXT,
        action TEXT NOT NULL,
        principal TEXT NOT NULL,
        reason TEXT NOT NULL,
        at {real} NOT NULL,
        back {int}
    )""",
    "CREATE INDEX IF NOT EXISTS channel_history_channel ON channel_history (image, channel, id)",
    "CREATE INDEX IF NOT EXISTS channel_history_version ON channel_history (image, version, channel)",
    """CREATE TABLE IF NOT EXISTS tests (
        id {serial},
        image TEXT NOT NULL,
        name TEXT NOT NULL,
        passed INTEGER NOT NULL,
        duration_s {real},
        log_path TEXT,
        details TEXT NOT NULL,
        principal TEXT NOT NULL,
        at {real} NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS tests_version ON tests (image, name, id)",
    """CREATE TABLE IF NOT EXISTS events (
        id {int} PRIMARY KEY,
        at TEXT NOT NULL,
        principal TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        payload TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
)

# Revocation flags the children of a version: find them without reading every version.
_VERSION_2 = ("CREATE INDEX IF NOT EXISTS versions_parent ON versions (parent) WHERE parent IS NOT NULL",)


def migrations(types: dict[str, str], *extra: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """The shared migrations in a store's types (``int``, ``real``, ``serial``), then the store's own."""
    return tuple(tuple(sql.format(**types) for sql in step) for step in (_VERSION_1, _VERSION_2)) + extra
