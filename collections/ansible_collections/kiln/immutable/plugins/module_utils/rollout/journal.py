# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The roll-out journal: what actual state cannot tell, saved atomically after every step."""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from ..common.files import write_json_atomic
from .options import RolloutError

FINAL = ("succeeded", "partial", "rolled_back", "failed", "superseded")
UNFINISHED = ("running", "paused", "interrupted")
_CHANGES = {"launched", "enabled", "terminated", "server_removed", "server_added"}


def _now() -> float:
    return time.time()


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")


def read_journal(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as handle:
            doc = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RolloutError(
            f"roll-out journal {path} cannot be read ({exc}); move it away to start over"
        ) from exc
    if not isinstance(doc, dict) or "status" not in doc:
        raise RolloutError(f"roll-out journal {path} is not a kiln journal; move it away to start afresh")
    return doc


class SharedJournal:
    """Where a group's journal is kept when runners share it: the shared copy is the one read back
    (a runner taking a roll-out over resumes from it); the state folder keeps a copy for local tools.

    ``backend`` has ``read_journal(group) -> dict | None`` and ``write_journal(group, doc)`` (the
    shared catalog's database).
    """

    def __init__(self, backend: Any, group: str):
        self.backend = backend
        self.group = group

    def read(self, path: str) -> dict[str, Any] | None:
        return self.backend.read_journal(self.group)

    def write(self, path: str, doc: dict[str, Any]) -> None:
        self.backend.write_journal(self.group, doc)
        write_json_atomic(path, doc)


class FileJournal:
    """The journal in the state folder alone: one machine, one state folder."""

    @staticmethod
    def read(path: str) -> dict[str, Any] | None:
        return read_journal(path)

    @staticmethod
    def write(path: str, doc: dict[str, Any]) -> None:
        write_json_atomic(path, doc)


class Journal:
    """The roll-out document: saved atomically after every step; also the result and its timeline."""

    def __init__(
        self,
        path: str,
        doc: dict[str, Any],
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_write_error: Callable[[OSError], None] | None = None,
        keeper: Any = FileJournal,
    ):
        self.path = path
        self.doc = doc
        self.changed = False
        self.write_error: OSError | None = None
        self._lock = threading.RLock()
        self._on_event = on_event
        self._on_write_error = on_write_error
        self._keeper = keeper

    def save(self) -> None:
        """Write the document; a failed write (a full disk) leaves the last good one and is reported once.

        It does not raise: the step under way completes, and ``on_write_error`` lets the roll-out stop
        at its next safe point, from where the next run resumes as after a crash.
        """
        with self._lock:
            self.doc["updated_at"] = _now()
            try:
                self._keeper.write(self.path, self.doc)
            except OSError as exc:
                first = self.write_error is None
                self.write_error = exc
                if first and self._on_write_error:
                    self._on_write_error(exc)

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            ts = _now()
            entry = {"t": ts, "at": _iso(ts), "event": kind, **fields}
            self.doc.setdefault("events", []).append(entry)
            if kind in _CHANGES:
                self.changed = True
            self.save()
        if self._on_event:
            self._on_event(entry)
        return entry
