"""The roll-out journal on disk: a step is written before event() returns; what a slot does to its
instances is written behind it, never lost by close(), and never holds the slot up."""

from __future__ import annotations

import json
import threading
import time

from ansible_collections.kiln.immutable.plugins.module_utils.rollout.journal import FileJournal, Journal


class GatedKeeper:
    """A file keeper whose writes wait for ``gate`` while it is closed, counting what it writes."""

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.writes: list[dict] = []

    def write(self, path: str, text: str) -> None:
        self.gate.wait(10)
        self.writes.append(json.loads(text))
        FileJournal.write(path, text)


def on_disk(path) -> list[str]:
    return [e["event"] for e in json.loads(path.read_text())["events"]]


def test_a_step_is_on_disk_when_event_returns(tmp_path):
    path = tmp_path / "journal.json"
    journal = Journal(str(path), {"status": "running", "events": []})
    try:
        journal.event("batch_start", batch=0)
        assert on_disk(path) == ["batch_start"]
        journal.doc["status"] = "interrupted"
        journal.event("interrupted", reason="stop")
        assert json.loads(path.read_text())["status"] == "interrupted"
    finally:
        journal.close()


def test_what_a_slot_does_is_written_behind_it_and_close_writes_the_rest(tmp_path):
    path = tmp_path / "journal.json"
    keeper = GatedKeeper()
    journal = Journal(str(path), {"status": "running", "events": []}, keeper=keeper)
    journal.event("batch_start", batch=0)
    keeper.gate.clear()  # the disk is slow from here
    done = threading.Event()

    def slot() -> None:
        for kind in ("launch", "launched", "server_added", "healthy", "enabled"):
            journal.event(kind, slot=0)
        done.set()

    threading.Thread(target=slot).start()
    assert done.wait(5), "a slot waited for the journal's disk"
    assert on_disk(path) == ["batch_start"]  # nothing of it written yet
    keeper.gate.set()
    journal.close()
    assert on_disk(path) == ["batch_start", "launch", "launched", "server_added", "healthy", "enabled"]
    # The writer wrote what came while the disk was slow in one go, not once an event.
    assert len(keeper.writes) <= 3, [len(w["events"]) for w in keeper.writes]
    assert [len(w["events"]) for w in keeper.writes] == sorted(len(w["events"]) for w in keeper.writes)


def test_a_write_behind_that_fails_is_reported_once(tmp_path):
    errors: list[OSError] = []

    class FullDisk:
        @staticmethod
        def write(path: str, text: str) -> None:
            raise OSError(28, "No space left on device")

    journal = Journal(
        str(tmp_path / "journal.json"), {"events": []}, on_write_error=errors.append, keeper=FullDisk
    )
    for kind in ("launch", "launched", "terminated"):
        journal.event(kind, slot=1)
    journal.close()
    assert [e.errno for e in errors] == [28]
    assert journal.write_error is errors[0]


def test_a_step_written_while_holding_the_document_does_not_wait_for_the_writer(tmp_path):
    path = tmp_path / "journal.json"
    journal = Journal(str(path), {"status": "running", "events": []})
    done = threading.Event()

    def step_under_the_lock() -> None:
        with journal._lock:  # as the engine does to edit the document
            journal.event("launched", slot=0)
            time.sleep(0.2)  # the writer has woken and waits for the document
            journal.event("batch_end", batch=0)  # written at once, whatever the writer does
        done.set()

    threading.Thread(target=step_under_the_lock, daemon=True).start()
    assert done.wait(5), "a step under the document's lock waited for the writer"
    journal.close()
    assert on_disk(path) == ["launched", "batch_end"]
