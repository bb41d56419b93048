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

from ..common.files import dump_json, write_text_atomic
from .options import RolloutError

FINAL = ("succeeded", "partial", "rolled_back", "failed", "superseded")
UNFINISHED = ("running", "paused", "interrupted")
_CHANGES = {"launched", "enabled", "terminated", "server_removed", "server_added"}
# What a slot's replacement does to instances and servers, which the next run sees for itself (instance
# labels, the load balancer's servers): written behind, so that the slots never wait for the disk.
_OBSERVABLE = {
    "launch",
    "launched",
    "server_added",
    "healthy",
    "unhealthy",
    "enabled",
    "drain",
    "drained",
    "server_removed",
    "terminated",
}


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

    ``backend`` has ``read_journal(group) -> dict | None`` and ``write_journal(group, text)`` (the
    shared catalog's database; ``text`` is the document as JSON).
    """

    def __init__(self, backend: Any, group: str):
        self.backend = backend
        self.group = group

    def read(self, path: str) -> dict[str, Any] | None:
        return self.backend.read_journal(self.group)

    def write(self, path: str, text: str) -> None:
        self.backend.write_journal(self.group, text)
        write_text_atomic(path, text)


class FileJournal:
    """The journal in the state folder alone: one machine, one state folder."""

    @staticmethod
    def read(path: str) -> dict[str, Any] | None:
        return read_journal(path)

    @staticmethod
    def write(path: str, text: str) -> None:
        write_text_atomic(path, text)


class Journal:
    """The roll-out document, saved atomically: at once after every step, and behind the slots for what
    they do (``_OBSERVABLE``), by a writer of its own that writes what came since in one go. Also the
    result and its timeline. ``close()`` writes what is left and stops the writer.
    """

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
        self._lock = threading.RLock()  # the document
        self._write_lock = threading.Lock()  # the file: one write at a time, never an older document
        self._version = self._written = 0  # the document's, counted at each event and save; the file's
        self._on_event = on_event
        self._on_write_error = on_write_error
        self._keeper = keeper
        self._behind = threading.Condition()
        self._closed = False
        self._writer = threading.Thread(target=self._write_behind, name="kiln-journal", daemon=True)
        self._writer.start()

    def save(self) -> None:
        """Write the document; a failed write (a full disk) leaves the last good one and is reported once.

        It does not raise: the step under way completes, and ``on_write_error`` lets the roll-out stop
        at its next safe point, from where the next run resumes as after a crash.
        """
        with self._lock:
            self._version += 1
            version = self._version
            self.doc["updated_at"] = _now()
            text = dump_json(self.doc)
        with self._write_lock:
            if version < self._written:
                return  # a newer document, with all of this one, is written already
            self._written = version
            try:
                self._keeper.write(self.path, text)
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
            self._version += 1
        if kind in _OBSERVABLE:
            with self._behind:
                self._behind.notify()
        else:
            self.save()
        if self._on_event:
            self._on_event(entry)
        return entry

    def _write_behind(self) -> None:
        while True:
            with self._behind:
                while self._written >= self._version and not self._closed:
                    self._behind.wait()
                if self._closed:
                    return
            self.save()

    def close(self) -> None:
        """Write what the writer has not written yet, and stop it."""
        with self._behind:
            self._closed = True
            self._behind.notify()
        self._writer.join()
        if self._written < self._version:
            self.save()
