# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The catalog in one SQLite file: the default store, embedded, for one machine."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from ...common.files import private_dirs, private_file
from ..errors import CatalogBusy, CatalogError
from .base import CatalogTx, Store
from .migrations import ensure_schema
from .schema import migrations

MIGRATIONS = migrations({"int": "INTEGER", "real": "REAL", "serial": "INTEGER PRIMARY KEY AUTOINCREMENT"})


class SqliteTx(CatalogTx):
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def _one(self, sql: str, params: Sequence = ()) -> tuple | None:
        return self._conn.execute(sql, tuple(params)).fetchone()

    def _all(self, sql: str, params: Sequence = ()) -> list[tuple]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def _run(self, sql: str, params: Sequence = ()) -> int:
        return self._conn.execute(sql, tuple(params)).rowcount

    def ddl(self, statement: str) -> None:
        self._conn.execute(statement)

    def schema_version(self) -> int | None:
        if not self._one("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"):
            return None
        value = self.meta("schema")
        return int(value) if value else None


class SqliteStore(Store):
    """WAL journal, a busy timeout and ``BEGIN IMMEDIATE`` writes.

    WAL lets readers run beside one writer; ``BEGIN IMMEDIATE`` takes the write lock before the
    first read of a read-modify-write, so concurrent writers queue instead of failing half-way;
    SQLite's journal makes every transaction all-or-nothing even when the process is killed.
    """

    def __init__(self, path: str, busy_timeout_s: float = 30.0):
        self.path = self.location = os.path.abspath(path)
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
        ensure_schema(self, MIGRATIONS)

    def close(self) -> None:
        self._conn.close()

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
    def read(self) -> Iterator[SqliteTx]:
        with self._guard("read"):
            self._conn.execute("BEGIN")
            try:
                yield SqliteTx(self._conn)
            finally:
                self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def write(self) -> Iterator[SqliteTx]:
        with self._guard("write"):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteTx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def describe(self) -> dict[str, Any]:
        return {"backend": "sqlite", "path": self.path}
