# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the catalog keeps its rows: one small storage interface and its SQLite implementation.

:class:`~.catalog.Catalog` only ever talks to a store through :meth:`SqliteStore.read` and
:meth:`SqliteStore.write`, each yielding a :class:`Tx` with three calls (``one``, ``all``, ``run``)
over portable SQL with ``?`` placeholders. A shared backend for teams with several CI runners
(PostgreSQL, say) implements the same two context managers; nothing above this file changes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from typing import Any

from ..common.errors import KilnError
from ..common.files import private_dirs, private_file

SCHEMA_VERSION = 1

# Every table the catalog needs. Versions keep their searchable fields in columns and the rest of
# the record in a JSON document, so adding a field to Version needs no migration.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (image TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    image TEXT NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    revoke_at REAL,
    parent TEXT,
    created_at REAL NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (image, seq)
);
CREATE INDEX IF NOT EXISTS versions_fingerprint ON versions (image, fingerprint, seq);
CREATE INDEX IF NOT EXISTS versions_revoke_at ON versions (revoke_at) WHERE revoke_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS channels (
    image TEXT NOT NULL,
    channel TEXT NOT NULL,
    version TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (image, channel)
);
CREATE TABLE IF NOT EXISTS channel_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image TEXT NOT NULL,
    channel TEXT NOT NULL,
    version TEXT,
    previous TEXT,
    action TEXT NOT NULL,
    principal TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    back INTEGER
);
CREATE INDEX IF NOT EXISTS channel_history_channel ON channel_history (image, channel, id);
CREATE INDEX IF NOT EXISTS channel_history_version ON channel_history (image, version, channel);
CREATE TABLE IF NOT EXISTS tests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image TEXT NOT NULL,
    name TEXT NOT NULL,
    passed INTEGER NOT NULL,
    duration_s REAL,
    log_path TEXT,
    details TEXT NOT NULL,
    principal TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tests_version ON tests (image, name, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""


class CatalogError(KilnError):
    """Unknown image, version or channel; a refused move; a damaged or unreadable catalog file."""


class CatalogBusy(CatalogError):
    """Another writer held the catalog for longer than the busy timeout: safe to retry."""


class Tx:
    """One transaction: the only three calls the catalog makes on its storage."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def one(self, sql: str, params: tuple = ()) -> tuple | None:
        return self._conn.execute(sql, params).fetchone()

    def all(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self._conn.execute(sql, params).fetchall()

    def run(self, sql: str, params: tuple = ()) -> int:
        """Execute a statement; returns the number of rows it changed."""
        return self._conn.execute(sql, params).rowcount


class SqliteStore:
    """The catalog in one SQLite file: WAL journal, a busy timeout and ``BEGIN IMMEDIATE`` writes.

    WAL lets readers run beside one writer; ``BEGIN IMMEDIATE`` takes the write lock before the
    first read of a read-modify-write, so concurrent writers queue instead of failing half-way;
    SQLite's journal makes every transaction all-or-nothing even when the process is killed.
    """

    def __init__(self, path: str, busy_timeout_s: float = 30.0):
        self.path = os.path.abspath(path)
        self.busy_timeout_s = busy_timeout_s
        parent = os.path.dirname(self.path)
        try:
            private_dirs(parent)
        except OSError as exc:
            raise CatalogError(f"cannot create the folder for catalog {self.path}: {exc}") from exc
        with self._guard("open"):
            private_file(self.path)  # before SQLite opens it: its -wal and -shm files copy its mode
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so the write lock is explicit.
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a crash of the process never loses a committed transaction.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._ensure_schema()

    def close(self) -> None:
        self._conn.close()

    def _ensure_schema(self) -> None:
        have = self._schema_version()
        if have is None:
            with self.write() as tx:
                # Another process may have created it while we waited for the lock.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        tx.run(statement)
                tx.run("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            have = self._schema_version()
        if have != SCHEMA_VERSION:
            raise CatalogError(
                f"catalog {self.path} has schema version {have}; this kiln reads version {SCHEMA_VERSION}"
            )

    def _schema_version(self) -> int | None:
        with self.read() as tx:
            exists = tx.one("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'")
            if not exists:
                return None
            row = tx.one("SELECT value FROM meta WHERE key='schema'")
        return int(row[0]) if row else None

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn SQLite's exceptions into errors that name the file and say what to do."""
        try:
            yield
        except CatalogError:
            raise
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise CatalogBusy(
                    f"catalog {self.path} is busy (another writer held it for more than "
                    f"{self.busy_timeout_s:g}s); retry",
                    path=self.path,
                ) from exc
            raise CatalogError(f"catalog {self.path}: {what} failed: {text}", path=self.path) from exc
        except sqlite3.DatabaseError as exc:
            raise CatalogError(
                f"catalog {self.path} is damaged or not a kiln catalog ({exc}); restore it from a "
                "backup or an export (invoke catalog-import)",
                path=self.path,
            ) from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[Tx]:
        """A consistent snapshot for reading."""
        with self._guard("read"):
            self._conn.execute("BEGIN")
            try:
                yield Tx(self._conn)
            finally:
                self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def write(self) -> Iterator[Tx]:
        """An all-or-nothing write: committed when the block ends, rolled back when it raises."""
        with self._guard("write"):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def describe(self) -> dict[str, Any]:
        return {"backend": "sqlite", "path": self.path}
