# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store interface: every query the catalog makes, named for what it asks, in SQL both stores run.

A store hands out transactions (:meth:`Store.read`, :meth:`Store.write`); a transaction is a
:class:`CatalogTx`, whose methods are the only SQL in the catalog. The SQL here is the common
subset of SQLite and PostgreSQL (``?`` placeholders, ``ON CONFLICT`` upserts); a store supplies
the three primitives ``_one``, ``_all`` and ``_run`` for its driver.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

VERSION_COLUMNS = "seq, name, status, revoke_at, doc"
EVENT_COLUMNS = "id, at, principal, action, subject, payload, prev_hash, hash"

# Table, columns, order: what an export writes and an import reads back, row for row.
TABLES = (
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
    ("events", tuple(EVENT_COLUMNS.split(", ")), "id"),
)
TABLE_COLUMNS = {table: columns for table, columns, _order in TABLES}


class CatalogTx:
    """One transaction over the catalog's tables. Subclasses provide ``_one``, ``_all`` and ``_run``."""

    trust: Any = None  # what signs the events this transaction appends (see ..trust); None: unsigned

    def _one(self, sql: str, params: Sequence = ()) -> tuple | None:
        raise NotImplementedError

    def _all(self, sql: str, params: Sequence = ()) -> list[tuple]:
        raise NotImplementedError

    def _run(self, sql: str, params: Sequence = ()) -> int:
        raise NotImplementedError

    # ------------------------------------------------------------------ meta

    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key=?", (key,))
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._run(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    # ------------------------------------------------------------------ images and counters

    def last_name(self, image: str) -> int:
        row = self._one("SELECT last FROM counters WHERE image=?", (image,))
        return row[0] if row else 0

    def raise_counter(self, image: str, last: int) -> None:
        """Move the image's counter to ``last`` unless it is already past it."""
        self._run(
            "INSERT INTO counters (image, last) VALUES (?, ?) ON CONFLICT (image) DO UPDATE SET "
            "last=CASE WHEN excluded.last > counters.last THEN excluded.last ELSE counters.last END",
            (image, last),
        )

    def has_image(self, image: str) -> bool:
        return self._one("SELECT 1 FROM counters WHERE image=?", (image,)) is not None

    def counted_images(self, limit: int | None = None) -> list[str]:
        sql = "SELECT image FROM counters ORDER BY image"
        params: tuple = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        return [r[0] for r in self._all(sql, params)]

    def images(self) -> list[str]:
        rows = self._all("SELECT image FROM counters UNION SELECT image FROM channels ORDER BY image")
        return [r[0] for r in rows]

    # ------------------------------------------------------------------ versions

    def version_row(self, image: str, seq: int) -> tuple | None:
        """``(seq, name, status, revoke_at, doc)`` of one version."""
        return self._one(f"SELECT {VERSION_COLUMNS} FROM versions WHERE image=? AND seq=?", (image, seq))

    def version_rows(
        self, image: str, limit: int | None = None, before: int | None = None, status: str | None = None
    ) -> list[tuple]:
        """Versions of ``image``, newest first, one keyset page."""
        sql = f"SELECT {VERSION_COLUMNS} FROM versions WHERE image=?"
        params: list[Any] = [image]
        if before is not None:
            sql += " AND seq < ?"
            params.append(before)
        if status:
            sql += " AND status=?"
            params.append(status)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self._all(sql, params)

    def newest_with_fingerprint(self, image: str, fingerprint: str, status: str, at: float) -> int | None:
        row = self._one(
            "SELECT seq FROM versions WHERE image=? AND fingerprint=? AND status=? "
            "AND (revoke_at IS NULL OR revoke_at > ?) ORDER BY seq DESC LIMIT 1",
            (image, fingerprint, status, at),
        )
        return row[0] if row else None

    def insert_version(
        self,
        image: str,
        seq: int,
        fingerprint: str,
        status: str,
        parent: str | None,
        created_at: float,
        doc: str,
    ) -> None:
        self._run(
            "INSERT INTO versions (image, seq, name, fingerprint, status, revoke_at, parent, created_at, doc)"
            " VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?)",
            (image, seq, str(seq), fingerprint, status, parent, created_at, doc),
        )

    def version_status(self, image: str, seq: int) -> str | None:
        row = self._one("SELECT status FROM versions WHERE image=? AND seq=?", (image, seq))
        return row[0] if row else None

    def version_doc(self, image: str, seq: int) -> str:
        return self._one("SELECT doc FROM versions WHERE image=? AND seq=?", (image, seq))[0]

    def set_version_doc(self, image: str, seq: int, doc: str) -> None:
        self._run("UPDATE versions SET doc=? WHERE image=? AND seq=?", (doc, image, seq))

    def set_status(self, image: str, seq: int, status: str) -> None:
        """Set the status and clear a scheduled revocation time."""
        self._run(
            "UPDATE versions SET status=?, revoke_at=NULL WHERE image=? AND seq=?", (status, image, seq)
        )

    def set_revoke_at(self, image: str, seq: int, at: float) -> None:
        self._run("UPDATE versions SET revoke_at=? WHERE image=? AND seq=?", (at, image, seq))

    def revoke_at(self, image: str, seq: int) -> float | None:
        row = self._one("SELECT revoke_at FROM versions WHERE image=? AND seq=?", (image, seq))
        return row[0] if row else None

    def any_due(self, at: float) -> bool:
        sql = "SELECT 1 FROM versions WHERE revoke_at IS NOT NULL AND revoke_at <= ? LIMIT 1"
        return self._one(sql, (at,)) is not None

    def due(self, at: float) -> list[tuple[str, str]]:
        """``(image, name)`` of versions whose scheduled revocation time has come, oldest first."""
        return self._all(
            "SELECT image, name FROM versions WHERE revoke_at IS NOT NULL AND revoke_at <= ? "
            "ORDER BY revoke_at",
            (at,),
        )

    def children(self, ref: str) -> list[tuple[str, str]]:
        return self._all("SELECT image, name FROM versions WHERE parent=? ORDER BY image, seq", (ref,))

    def delete_version(self, image: str, seq: int) -> None:
        """The version and its test results."""
        self._run("DELETE FROM versions WHERE image=? AND seq=?", (image, seq))
        self._run("DELETE FROM tests WHERE image=? AND name=?", (image, str(seq)))

    def all_versions(self) -> list[tuple[str, str, str, str]]:
        """``(image, name, status, doc)`` of every version."""
        return self._all("SELECT image, name, status, doc FROM versions")

    # ------------------------------------------------------------------ tests

    def insert_test(
        self,
        image: str,
        name: str,
        passed: bool,
        duration_s: float | None,
        log_path: str | None,
        details: str,
        who: str,
        at: float,
    ) -> None:
        self._run(
            "INSERT INTO tests (image, name, passed, duration_s, log_path, details, principal, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (image, name, int(passed), duration_s, log_path, details, who, at),
        )

    def tests_of(self, image: str, names: list[str]) -> list[tuple]:
        """``(name, passed, duration_s, log_path, details, principal, at)``, oldest first."""
        marks = ",".join("?" * len(names))
        return self._all(
            f"SELECT name, passed, duration_s, log_path, details, principal, at FROM tests "
            f"WHERE image=? AND name IN ({marks}) ORDER BY id",
            (image, *names),
        )

    # ------------------------------------------------------------------ channels

    def channel(self, image: str, channel: str) -> tuple[str | None] | None:
        """``(version,)`` when the channel exists (version None when emptied), else None."""
        return self._one("SELECT version FROM channels WHERE image=? AND channel=?", (image, channel))

    def channels(self, image: str) -> list[tuple[str, str | None]]:
        return self._all("SELECT channel, version FROM channels WHERE image=? ORDER BY channel", (image,))

    def channels_on(self, image: str, ref: str) -> list[str]:
        rows = self._all(
            "SELECT channel FROM channels WHERE image=? AND version=? ORDER BY channel", (image, ref)
        )
        return [r[0] for r in rows]

    def all_channels(self) -> list[tuple[str, str, str | None]]:
        return self._all("SELECT image, channel, version FROM channels")

    def set_channel(self, image: str, channel: str, version: str | None, at: float) -> None:
        self._run(
            "INSERT INTO channels (image, channel, version, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (image, channel) DO UPDATE SET version=excluded.version, "
            "updated_at=excluded.updated_at",
            (image, channel, version, at),
        )

    # ------------------------------------------------------------------ channel history

    def add_history(
        self,
        image: str,
        channel: str,
        version: str | None,
        previous: str | None,
        action: str,
        who: str,
        reason: str,
        at: float,
        back: int | None,
    ) -> None:
        self._run(
            "INSERT INTO channel_history (image, channel, version, previous, action, principal, reason, at,"
            " back) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (image, channel, version, previous, action, who, reason, at, back),
        )

    def current_entry(self, image: str, channel: str) -> tuple | None:
        """The history entry that made the channel point where it points now: ``(id, version, back)``."""
        return self._one(
            "SELECT id, version, back FROM channel_history WHERE image=? AND channel=? "
            "ORDER BY id DESC LIMIT 1",
            (image, channel),
        )

    def entry(self, entry_id: int) -> tuple | None:
        return self._one("SELECT id, version, back FROM channel_history WHERE id=?", (entry_id,))

    def last_entry_of(self, image: str, channel: str, ref: str) -> tuple | None:
        """The newest entry that put ``ref`` on the channel: ``(id, version, back)``."""
        return self._one(
            "SELECT id, version, back FROM channel_history WHERE image=? AND channel=? AND version=? "
            "ORDER BY id DESC LIMIT 1",
            (image, channel, ref),
        )

    def channels_seen(self, image: str, ref: str) -> set[str]:
        rows = self._all(
            "SELECT DISTINCT channel FROM channel_history WHERE image=? AND version=?", (image, ref)
        )
        return {r[0] for r in rows}

    def recent_on(self, image: str, channel: str, count: int) -> list[str]:
        """The last ``count`` versions the channel pointed at, newest first."""
        rows = self._all(
            "SELECT version FROM channel_history WHERE image=? AND channel=? AND version IS NOT NULL "
            "ORDER BY id DESC LIMIT ?",
            (image, channel, count),
        )
        return [r[0] for r in rows]

    def history_page(self, image: str, channel: str | None, before: int | None, limit: int) -> list[tuple]:
        """``(id, channel, version, previous, action, principal, reason, at)``, newest first."""
        return self._newest_first(
            "SELECT id, channel, version, previous, action, principal, reason, at FROM channel_history",
            {"image": image, "channel": channel},
            before,
            limit,
        )

    def history_counts(self) -> list[tuple[str, str, int]]:
        return self._all("SELECT image, channel, count(*) FROM channel_history GROUP BY image, channel")

    # ------------------------------------------------------------------ events

    def event_head(self) -> tuple[int, str] | None:
        """``(id, hash)`` of the newest event."""
        return self._one("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1")

    def insert_event(self, row: tuple) -> None:
        """One row of ``EVENT_COLUMNS``."""
        self._run(f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({', '.join('?' * len(row))})", row)

    def events_page(self, subject: str | None, before: int | None, limit: int) -> list[tuple]:
        return self._newest_first(f"SELECT {EVENT_COLUMNS} FROM events", {"subject": subject}, before, limit)

    def all_events(self) -> list[tuple]:
        return self._all(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY id")

    # ------------------------------------------------------------------ whole tables (export, import)

    def is_empty(self) -> bool:
        return not (self._one("SELECT 1 FROM events LIMIT 1") or self._one("SELECT 1 FROM counters LIMIT 1"))

    def dump(self, table: str) -> list[tuple]:
        columns, order = TABLE_COLUMNS[table], dict((t, o) for t, _c, o in TABLES)[table]
        return self._all(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")

    def load(self, table: str, values: tuple) -> None:
        columns = TABLE_COLUMNS[table]
        self._run(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values
        )

    def loaded(self) -> None:
        """Called after an import: a store whose ids come from sequences moves them past the rows."""

    # ------------------------------------------------------------------ helpers

    def _newest_first(
        self, select: str, equal: dict[str, Any], before: int | None, limit: int
    ) -> list[tuple]:
        """``select`` filtered on the given columns (None skips one), one keyset page newest first."""
        where = [f"{column}=?" for column, value in equal.items() if value]
        params: list[Any] = [value for value in equal.values() if value]
        if before is not None:
            where.append("id < ?")
            params.append(before)
        sql = select + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
        return self._all(sql, (*params, limit))


class Store:
    """What the catalog needs from a store: transactions, a description, and ``close``.

    ``read()`` is a context manager giving a consistent snapshot; ``write()`` one giving an
    all-or-nothing write, serialised against every other writer, from any machine. Both yield a
    :class:`CatalogTx`.
    """

    location: str

    def read(self) -> contextlib.AbstractContextManager[CatalogTx]:
        raise NotImplementedError

    def write(self) -> contextlib.AbstractContextManager[CatalogTx]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def shared_rollouts(self) -> Any:
        """Roll-out leases and journals every runner of this catalog shares (see rollout.lock.Leases
        and rollout.journal.SharedJournal), or None when the store lives on one machine, where the
        machine-wide lock and the state folder's journal are enough."""
        return None
