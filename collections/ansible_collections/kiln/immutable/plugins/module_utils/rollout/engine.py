# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rolling replacement engine: replace a group's instances with a version, batch by batch.

The engine converges every slot of a group to a desired version (forward: the target; rollback: the
version the slot ran before). It is driven by actual state: each run first reconciles what the
provider and load balancer report (two instances in one slot after a crash, servers left in
maintenance, orphan servers), then plans the remaining slots into batches. A journal written
atomically after every step keeps what actual state cannot tell: the phase (forward or rollback),
the versions slots ran before, failures, checkpoints passed, and the timeline for the report.

Capacity: a slot is replaced either with surge (the new instance starts next to the old one, which
is drained only once the new one is healthy and enabled) or in place (the old one is drained
first), in place only while the instances in service stay at or above the minimum healthy count.

Strategies (strategies.py) shape the forward phase: which batches run (one planner for the run and
for check mode), the bake and analysis after each, and blue/green's second set of instances, kept
beside the in-service ones (``standby``) until its switch or the end of its rollback window.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from ..common.files import write_json_atomic
from ..common.paths import state_dir
from . import strategies
from .health import HealthOutcome, Prober
from .interfaces import SERVER_DRAIN, SERVER_READY, Instance, LoadBalancer, NullLoadBalancer, Provider
from .interrupt import StopRequest
from .journal import UNFINISHED, FileJournal, Journal, _now
from .lock import GroupLock
from .options import (
    Limits,
    RolloutError,
    RolloutOptions,
    analysis_wanted,
    check_deployable,
    plan_batches,
    validate,
    validate_group,
)


def _brief(instance: Instance | None) -> dict[str, Any] | None:
    if instance is None:
        return None
    return {"id": instance.id, "name": instance.name, "version": instance.version, "slot": instance.slot}


class Rollout:
    """One roll-out of ``group`` to ``target`` (a catalog Version).

    ``resolve_version(ref)`` looks up the Version of a ref (``Catalog.get``); it is only called on
    the thread that calls :meth:`run`. ``on_event`` sees every journal event as it happens. When
    ``stop`` (an interrupt.StopRequest) is set, the run ends at the next safe point, between waves of
    slot replacements, with status ``interrupted``; the next run resumes.
    """

    _brief = staticmethod(_brief)  # for the strategies, which drive batches of their own

    def __init__(
        self,
        group: str,
        target: Any,
        provider: Provider,
        load_balancer: LoadBalancer | None,
        prober: Prober,
        options: RolloutOptions | None = None,
        resolve_version: Callable[[str], Any] | None = None,
        root: str | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        stop: StopRequest | None = None,
        lock: Any = None,
        journal_keeper: Any = None,
    ):
        validate_group(group)
        check_deployable(target)
        self.group = group
        self.target = target
        self.provider = provider
        self.lb = load_balancer or NullLoadBalancer()
        self.prober = prober
        self.options = options or RolloutOptions()
        self.resolve_version = resolve_version
        self.folder = os.path.join(root or os.path.join(state_dir(), "rollouts"), group)
        self.journal_path = os.path.join(self.folder, "journal.json")
        # One roll-out per group: on this machine (whatever the state folder), or in the shared catalog.
        self.lock = lock or GroupLock(None, group)
        self.journal_keeper = journal_keeper or FileJournal
        self.on_event = on_event
        self.stop = stop or StopRequest()
        self.journal: Journal | None = None
        self.limits: Limits | None = None
        self.current: dict[int, Instance | None] = {}
        # Instances kept in service beside the current ones without traffic (blue_green): slot -> instance.
        self.standby: dict[int, Instance] = {}
        self._state_lock = threading.Lock()
        self._versions: dict[str, Any] = {target.ref: target}
        # Refuse bad options now, before any call that could change something.
        validate(self.options, self.options.size or 1, room=False)

    # ------------------------------------------------------------------ reading state

    def _look(self) -> tuple[dict[str, Any] | None, str, bool, list[Instance], list[int]]:
        """A read-only look at the journal and the group: (journal, phase, resuming, instances, slots)."""
        journal = self.journal_keeper.read(self.journal_path)
        phase, resuming = self._decide(journal)
        instances = self.provider.list_instances(self.group)
        # A slot emptied just before a crash has no instance any more; an unfinished journal still knows
        # it, whether this run resumes that roll-out or supersedes it with a new target.
        unfinished = bool(journal) and journal.get("status") in UNFINISHED
        known = [int(s) for s in journal.get("before") or {}] if unfinished else []
        return journal, phase, resuming, instances, self._slots(instances, known)

    def _slots(self, instances: list[Instance], known: list[int]) -> list[int]:
        slots = {i.slot for i in instances} | set(known)
        if self.options.size:
            slots |= set(range(self.options.size))
        if not slots:
            raise RolloutError(
                f"group '{self.group}' has no instances and no size was given: check the group name, "
                "or set size to launch its first instances"
            )
        return sorted(slots)

    def _lb_states(self) -> dict[str, str] | None:
        return self.lb.servers()

    @staticmethod
    def _state(states: dict[str, str] | None, instance: Instance) -> str | None:
        return SERVER_READY if states is None else states.get(instance.name)

    @staticmethod
    def _pick(instances: list[Instance], desired: str | None, states: dict[str, str] | None) -> Instance:
        """The instance to keep in a slot: a live one, in service, on the desired version, newest."""

        def rank(inst: Instance) -> tuple:
            ready = Rollout._state(states, inst) == SERVER_READY
            return (inst.alive, ready, inst.version == desired, inst.started_at)

        return max(instances, key=rank)

    def _decide(self, journal: dict[str, Any] | None) -> tuple[str, bool]:
        """(phase, resuming): resume an unfinished journal for the same target, else start afresh."""
        if journal and journal.get("status") in UNFINISHED and journal.get("target") == self.target.ref:
            return journal.get("phase", "forward"), True
        return "forward", False

    def _desired_ref(self, slot: int, phase: str, before: dict[str, Any]) -> str | None:
        if phase == "rollback":
            return before.get(str(slot))
        return self.target.ref

    # ------------------------------------------------------------------ check mode

    def plan(self) -> dict[str, Any]:
        """What a run would do, computed from actual state; changes nothing and takes no lock."""
        journal, phase, resuming, instances, slots = self._look()
        limits = validate(self.options, len(slots))
        states = self._lb_states()
        by_slot = _by_slot(instances)
        current = {s: self._pick(by_slot[s], None, states) if s in by_slot else None for s in slots}
        current = {s: (i if i is not None and i.alive else None) for s, i in current.items()}
        before = (journal.get("before") or {}) if resuming and journal else {}
        if not before:
            before = {str(s): (current[s].version if current[s] else None) for s in slots}
        failed = set(journal.get("failed_slots", [])) if resuming and journal else set()
        todo, skipped = [], []
        for s in slots:
            want = self._desired_ref(s, phase, before)
            have = current[s].version if current[s] else None
            if phase == "rollback" and str(s) not in before:
                continue
            if have == want or (phase == "forward" and s in failed):
                skipped.append(s)
            else:
                todo.append(s)
        cleanup = sorted(
            s for s, insts in by_slot.items() if len(insts) > 1 or not all(i.alive for i in insts)
        )
        standby = strategies.standby_of(journal, instances)
        back = bool(standby) and not resuming and strategies.window_open(journal)
        back = back and all(i.version == self.target.ref for i in standby)
        if back:  # within the rollback window: a switch back, nothing started
            steps = [
                {
                    "slots": sorted(i.slot for i in standby),
                    "step": "switch_back",
                    "bake_time": 0,
                    "weight": None,
                }
            ]
        elif phase == "forward":
            done = sum(1 for s in slots if (current[s].version if current[s] else None) == self.target.ref)
            passed = (journal.get("steps_passed") or []) if resuming and journal else []
            steps = strategies.forward_batches(self.options, todo, slots, done, passed)
        else:
            steps = [
                {"slots": b, "step": None, "bake_time": 0, "weight": None}
                for b in plan_batches(todo, self.options.batch_size, len(slots))
            ]
        return {
            "group": self.group,
            "target": self.target.ref,
            "strategy": self.options.strategy,
            "analysis": analysis_wanted(self.options),
            "switch_back": back,
            "phase": phase,
            "resume": resuming,
            "size": len(slots),
            "min_in_service": limits.min_in_service,
            "max_surge": limits.max_surge,
            "max_failures": limits.max_failures,
            "checkpoints": list(self.options.checkpoints or []),
            "skipped": skipped,
            "cleanup_slots": cleanup,
            "batches": [
                {
                    "index": i,
                    "step": step["step"],
                    "bake_time": step["bake_time"],
                    "weight": step["weight"],
                    "slots": [
                        {
                            "slot": s,
                            "instance": current[s].name if current[s] else None,
                            "from": current[s].version if current[s] else None,
                            "to": self._desired_ref(s, phase, before),
                        }
                        for s in step["slots"]
                    ],
                }
                for i, step in enumerate(steps)
            ],
            "changed": bool(any(step["slots"] for step in steps) or cleanup),
        }

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        # Refuse what can be refused from a read-only look before taking the lock or writing anything.
        validate(self.options, len(self._look()[4]))
        strategies.check_available(self)
        self.lock.acquire()
        try:
            return self._run_locked()
        except BaseException as exc:
            # The journal stays "running": the next run resumes from here.
            if self.journal is not None:
                with contextlib.suppress(Exception):
                    self.journal.event("interrupted", detail=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if self.journal is not None:
                self.journal.close()  # all of it written before another run may take the group
            self.lock.release()

    def _run_locked(self) -> dict[str, Any]:
        previous, phase, resuming, instances, slots = self._look()
        self.limits = validate(self.options, len(slots))
        if resuming:
            doc = previous
            doc["status"] = "running"
            doc["pid"] = os.getpid()
            doc.setdefault("runs", []).append(_now())
        else:
            if previous and previous.get("status") in UNFINISHED:
                previous["status"] = "superseded"
                write_json_atomic(os.path.join(self.folder, f"{previous['id']}.json"), previous)
            started = _now()
            doc = {
                "id": datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y%m%dT%H%M%S")
                + "-"
                + uuid.uuid4().hex[:6],
                "group": self.group,
                "target": self.target.ref,
                "phase": "forward",
                "status": "running",
                "pid": os.getpid(),
                "started_at": started,
                "runs": [started],
                "options": self.options.to_dict(),
                "health": self.prober.check.to_dict(),
                "size": len(slots),
                "before": {},
                "failed_slots": [],
                "checkpoints_passed": [],
                "batches": [],
                "events": [],
            }
        self.journal = Journal(
            self.journal_path,
            doc,
            self.on_event,
            on_write_error=lambda exc: self.stop.set(f"journal {self.journal_path} cannot be written: {exc}"),
            keeper=self.journal_keeper,
        )
        self.journal.event("resume" if resuming else "start", target=self.target.ref, phase=phase)
        for hook_owner in (self.provider, self.lb):
            prepare = getattr(hook_owner, "prepare", None)
            if callable(prepare):
                prepare(self.group)
        standby = strategies.standby_of(previous, instances)
        if standby and not resuming and not strategies.window_open(previous):
            self.standby = {i.slot: i for i in standby}
            strategies.retire_standby(self, "rollback window over")
        elif standby:
            self.standby = {i.slot: i for i in standby}
            doc["standby"] = {str(i.slot): i.to_dict() for i in standby}
            doc["standby_until"] = previous.get("standby_until")
        kept = {i.name for i in standby}
        self._reconcile(instances, slots, phase, kept)
        if not doc["before"]:
            doc["before"] = {str(s): (i.version if i else None) for s, i in self.current.items()}
            self.journal.save()
        if self.standby and not resuming and not strategies.switch_back(self):
            strategies.retire_standby(self, f"superseded by {self.target.ref}")
        if phase == "forward":
            self._forward(slots)
        if doc["phase"] == "rollback" and doc["status"] == "running":
            self._rollback(slots)
        return self._finish()

    def _reconcile(
        self,
        instances: list[Instance],
        slots: list[int],
        phase: str,
        kept: set[str] | frozenset = frozenset(),
    ) -> None:
        """Bring provider and load balancer into one consistent picture: one in-service instance per slot
        (besides ``kept``: the standby instances of a blue/green roll-out)."""
        before = self.journal.doc.get("before") or {}
        states = self._lb_states()
        names = {i.name for i in instances}
        for name in sorted(set(states or {}) - names):
            orphan = Instance(
                id="", name=name, group=self.group, slot=-1, version="", probe_address="", backend_address=""
            )
            self.lb.remove(orphan)
            self.journal.event("server_removed", server=name, reason="no such instance")
        by_slot = _by_slot([i for i in instances if i.name not in kept])
        self.current = {s: None for s in slots}
        for slot, insts in sorted(by_slot.items()):
            keep = self._pick(insts, self._desired_ref(slot, phase, before), states)
            for extra in insts:
                if extra is not keep:
                    serving = self._state(states, extra) if extra.alive else None
                    self._retire(extra, reason="second instance in slot", serving=serving)
            state = self._state(states, keep)
            if not keep.alive:  # stopped: nothing to drain or probe; the slot is refilled
                self._retire(keep, reason="stopped", serving=None)
                keep = None
            elif state != SERVER_READY:
                outcome = self.prober.wait_healthy(keep)
                if outcome.healthy:
                    if state is None:
                        self.lb.add(keep)
                        self.journal.event("server_added", slot=slot, instance=keep.name)
                    self.lb.enable(keep)
                    self.journal.event(
                        "enabled", slot=slot, instance=keep.name, version=keep.version, reason="reconciled"
                    )
                else:
                    self._retire(keep, reason=f"unhealthy leftover: {outcome.detail}", serving=state)
                    keep = None
            self.current[slot] = keep

    # ------------------------------------------------------------------ phases

    def _forward(self, slots: list[int]) -> None:
        doc = self.journal.doc
        if self.options.strategy == "blue_green":
            strategies.blue_green(self, slots)
            return
        limits = self.limits
        failed = set(doc["failed_slots"])
        passed = doc.setdefault("steps_passed", [])
        pending = doc.get("bake")
        if pending and str(pending.get("step")).startswith("batch-"):  # killed or paused in a bake
            if not self._bake(pending["step"], pending["bake_time"], None):
                return
        todo = [s for s in slots if s not in failed and self._version_of(s) != self.target.ref]
        done = sum(1 for s in slots if self._version_of(s) == self.target.ref)
        items = strategies.forward_batches(self.options, todo, slots, done, passed)
        # Batches follow one another without a gap, unless a bake, an analysis or a checkpoint comes
        # between two of them.
        gaps = self.options.strategy != "rolling" or analysis_wanted(self.options) or self.options.checkpoints
        runs = [[item] for item in items] if gaps else [items] if items else []
        for run in runs:
            if self._interrupted():
                return
            batches = [item["slots"] for item in run if item["slots"]]
            if batches:
                self._run_batches(batches, {s: self.target for batch in batches for s in batch}, "forward")
            if len(doc["failed_slots"]) > limits.max_failures:
                self.journal.event(
                    "stopped", failed_slots=doc["failed_slots"], max_failures=limits.max_failures
                )
                if self.options.auto_rollback:
                    doc["phase"] = "rollback"
                    self.journal.event("rollback", reason=f"{len(doc['failed_slots'])} failed slot(s)")
                else:
                    doc["status"] = "failed"
                    self.journal.save()
                return
            item = run[-1]
            key = item["step"] if item["step"] is not None else f"batch-{len(doc['batches']) - 1}"
            if not self._bake(key, item["bake_time"], item["weight"]):
                return
            if item["step"] is not None:
                passed.append(item["step"])
                self.journal.save()
            if self._checkpoint(slots):
                return

    def _bake(self, key: Any, bake_time: float, weight: int | None) -> bool:
        """Bake and analyse the new version while old instances serve beside it; True to go on."""
        new, old = strategies.step_instances(self)
        if not new or not old or not (bake_time or analysis_wanted(self.options)):
            return True
        return strategies.judge(self, strategies.bake(self, key, bake_time, weight, new, old))

    def _checkpoint(self, slots: list[int]) -> bool:
        """True when the roll-out pauses here until the next run."""
        doc = self.journal.doc
        done = sum(1 for s in slots if self._version_of(s) == self.target.ref)
        if done >= len(slots):
            return False
        pct = 100.0 * done / len(slots)
        reached = [
            cp for cp in self.options.checkpoints or [] if cp <= pct and cp not in doc["checkpoints_passed"]
        ]
        if not reached:
            return False
        doc["checkpoints_passed"].extend(reached)
        self.journal.event(
            "checkpoint", percentage=max(reached), replaced=done, delay=self.options.checkpoint_delay
        )
        if self.options.checkpoint_delay:
            self.stop.wait(self.options.checkpoint_delay)
            return False
        doc["status"] = "paused"
        self.journal.save()
        return True

    def _rollback(self, slots: list[int]) -> None:
        doc = self.journal.doc
        before = doc["before"]
        todo = [s for s in slots if str(s) in before and self._version_of(s) != before[str(s)]]
        desired: dict[int, Any] = {}
        for s in todo:
            ref = before[str(s)]
            desired[s] = None if ref is None else self._version(ref)
        self._run_batches(plan_batches(todo, self.options.batch_size, len(slots)), desired, "rollback")
        left = [s for s in todo if self._version_of(s) != before[str(s)]]
        if left and not self._interrupted():
            doc["status"] = "failed"
            self.journal.event("rollback_incomplete", slots=left)

    def _finish(self) -> dict[str, Any]:
        doc = self.journal.doc
        if doc["status"] == "running":
            if doc["phase"] == "rollback":
                doc["status"] = "rolled_back"
            else:
                doc["status"] = "partial" if doc["failed_slots"] else "succeeded"
        if doc["status"] not in UNFINISHED:
            doc["phase"] = "done" if doc["status"] != "rolled_back" else "rollback"
        doc["after"] = {str(s): self._version_of(s) for s in sorted(self.current)}
        doc["finished_at"] = _now()
        doc["duration_s"] = round(doc["finished_at"] - doc["started_at"], 3)
        self.journal.event("finish", status=doc["status"])
        if self.journal.write_error is not None:
            raise RolloutError(
                f"roll-out of group '{self.group}' stopped at a safe point: its journal {self.journal_path} "
                f"cannot be written ({self.journal.write_error}); make room and run it again to resume",
                journal=self.journal_path,
            )
        result_path = os.path.join(self.folder, f"{doc['id']}.json")
        doc["result_path"] = result_path
        doc["journal_path"] = self.journal_path
        self.journal.save()
        write_json_atomic(result_path, doc)
        return {**doc, "changed": self.journal.changed}

    # ------------------------------------------------------------------ batches and slots

    def _interrupted(self) -> bool:
        """True once a stop was requested; the first time, the journal records where the run stopped."""
        if not self.stop.is_set():
            return False
        doc = self.journal.doc
        if doc["status"] == "running":
            doc["status"] = "interrupted"
            self.journal.event("interrupted", reason=self.stop.reason, in_service=self._in_service())
        return True

    def _version_of(self, slot: int) -> str | None:
        inst = self.current.get(slot)
        return inst.version if inst else None

    def _version(self, ref: str) -> Any:
        if ref not in self._versions:
            if self.resolve_version is None:
                raise RolloutError(f"cannot look up version {ref}: no catalog given")
            self._versions[ref] = self.resolve_version(ref)
        return self._versions[ref]

    def _in_service(self) -> int:
        with self._state_lock:
            return sum(1 for inst in self.current.values() if inst is not None)

    def _open_batch(self, batch: list[int], phase: str) -> dict[str, Any]:
        record = {
            "index": len(self.journal.doc["batches"]),
            "phase": phase,
            "slots": batch,
            "started_at": _now(),
            "instances": [],
        }
        with self.journal._lock:
            self.journal.doc["batches"].append(record)
        self.journal.event("batch_start", batch=record["index"], phase=phase, slots=batch)
        return record

    def _close_batch(self, record: dict[str, Any], interrupted: bool = False) -> None:
        record["finished_at"] = _now()
        record["duration_s"] = round(record["finished_at"] - record["started_at"], 3)
        outcomes = [r["outcome"] for r in record["instances"]]
        record["outcome"] = "failed" if "failed" in outcomes else "interrupted" if interrupted else "ok"
        self.journal.event(
            "batch_end",
            batch=record["index"],
            phase=record["phase"],
            outcome=record["outcome"],
            duration_s=record["duration_s"],
        )

    def _run_batches(self, batches: list[list[int]], desired: dict[int, Any], phase: str) -> None:
        """Replace the slots of ``batches``, in order, keeping the batch's width of slots in flight.

        A slot of the next batch starts as soon as one of the current batch is done (the next batch's
        width then applies), so the engine never waits for a batch's slowest slot with nothing to do;
        where something must happen between two batches (a bake, a checkpoint), the caller passes one
        batch at a time. Each slot is replaced with surge while fewer than ``max_surge`` surge, else in
        place while the instances in service stay at the minimum. No new slot starts once the run is
        asked to stop or (forward) more than ``max_failures`` slots failed; those in flight finish.
        """
        doc = self.journal.doc
        limits = self.limits
        queue = [(index, slot) for index, batch in enumerate(batches) for slot in batch]
        left = [len(batch) for batch in batches]
        records: dict[int, dict[str, Any]] = {}
        flight: dict[Any, tuple[int, int, str]] = {}  # future -> (batch index, slot, mode)

        def halted() -> bool:
            failed = phase == "forward" and len(doc["failed_slots"]) > limits.max_failures
            return failed or self.stop.is_set()

        def mode_of(slot: int) -> str | None:
            old, want = self.current.get(slot), desired[slot]
            if old is None or want is None:
                return "fill" if want is not None else "retire"
            modes = [m for _i, _s, m in flight.values()]
            if limits.max_surge is None or modes.count("surge") < limits.max_surge:
                return "surge"
            down = {s for _i, s, m in flight.values() if m == "in_place"}
            with self._state_lock:
                serving = sum(1 for s, inst in self.current.items() if inst is not None and s not in down)
            return "in_place" if serving - 1 >= limits.min_in_service else None

        width = self.options.parallel or max(map(len, batches), default=1)
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="kiln-slot") as pool:
            while queue or flight:
                while queue and not halted():
                    index, slot = queue[0]
                    mode = mode_of(slot)
                    if mode is None or len(flight) >= min(width, len(batches[index])):
                        break
                    queue.pop(0)
                    if index not in records:
                        records[index] = self._open_batch(batches[index], phase)
                    # A failed slot may be restored to its old version, looked up here on the calling
                    # thread: resolve_version may be a catalog bound to one thread (SQLite).
                    old = self.current.get(slot)
                    if old is not None:
                        with contextlib.suppress(Exception):  # unknown: the restore reports it
                            self._version(old.version)
                    future = pool.submit(self._replace_slot, slot, desired[slot], mode, phase)
                    flight[future] = (index, slot, mode)
                if not flight:
                    if queue and not halted():
                        pending = [s for _i, s in queue]
                        raise RolloutError(
                            f"replacing slot(s) {pending} would take group '{self.group}' below "
                            f"{limits.min_in_service} instances in service (min_healthy_percentage "
                            f"{self.options.min_healthy_percentage}, max_surge {self.options.max_surge})"
                        )
                    break
                done, _running = wait(flight, return_when=FIRST_COMPLETED)
                for future in done:
                    index, slot, _mode = flight.pop(future)
                    result = future.result()
                    with self.journal._lock:
                        records[index]["instances"].append(result)
                        if result["outcome"] == "failed" and phase == "forward":
                            bisect.insort(doc["failed_slots"], slot)
                    left[index] -= 1
                    if not left[index]:
                        self._close_batch(records.pop(index))
        if queue:  # stopped, with nothing in flight: the journal says so from this safe point
            self._interrupted()
        for record in records.values():
            self._close_batch(record, interrupted=True)

    def _replace_slot(self, slot: int, version: Any, mode: str, phase: str) -> dict[str, Any]:
        """Replace one slot's instance; never raises: a failure is the slot's outcome."""
        old = self.current.get(slot)
        rec: dict[str, Any] = {
            "slot": slot,
            "mode": mode,
            "phase": phase,
            "old": _brief(old),
            "new": None,
            "health": None,
            "started_at": _now(),
        }
        new: Instance | None = None
        try:
            if mode in ("in_place", "retire"):
                self._retire(old, reason=phase)
                self._set(slot, None)
            if mode == "retire":
                rec["outcome"] = "retired"
                return rec
            new, outcome = self._bring_up(slot, version)
            rec["new"], rec["health"] = _brief(new), outcome.to_dict()
            if not outcome.healthy:
                self._retire(new, reason=f"unhealthy: {outcome.detail}", serving=None)
                new = None
                rec["outcome"], rec["detail"] = "failed", outcome.detail
            else:
                self._set(slot, new)
                if mode == "surge":
                    self._retire(old, reason=phase)
                rec["outcome"] = "replaced"
        except Exception as exc:  # a provider or load balancer error fails this slot, not the roll-out
            rec["outcome"], rec["detail"] = "failed", f"{type(exc).__name__}: {exc}"
            self.journal.event("error", slot=slot, detail=rec["detail"])
            if new is not None and self.current.get(slot) is not new:
                with contextlib.suppress(Exception):
                    self._retire(new, reason="failed launch", serving=None)
        if rec["outcome"] == "failed" and old is not None and self.current.get(slot) is None:
            rec["restored"] = self._restore(slot, old)
        rec["finished_at"] = _now()
        rec["duration_s"] = round(rec["finished_at"] - rec["started_at"], 3)
        return rec

    def _bring_up(self, slot: int, version: Any, weight: int | None = None) -> tuple[Instance, HealthOutcome]:
        """Launch, add to the load balancer, probe, enable (with ``weight`` when given)."""
        self.journal.event("launch", slot=slot, version=version.ref)
        new = self.provider.launch(self.group, slot, version)
        self.journal.event("launched", slot=slot, instance=new.name, id=new.id, version=new.version)
        try:
            return new, self._put_in_service(slot, new, weight)
        except Exception:
            # The caller never learns of an instance that raises here: it must not outlive this run,
            # running out of service (a load balancer that restarted forgot its server, say).
            with contextlib.suppress(Exception):
                self._retire(new, reason="failed launch", serving=None)
            raise

    def _put_in_service(self, slot: int, new: Instance, weight: int | None) -> HealthOutcome:
        self.lb.add(new)
        self.journal.event("server_added", slot=slot, instance=new.name)
        outcome = self.prober.wait_healthy(new)
        self.journal.event(
            "healthy" if outcome.healthy else "unhealthy",
            slot=slot,
            instance=new.name,
            attempts=outcome.attempts,
            duration_s=round(outcome.duration_s, 3),
            detail=outcome.detail,
        )
        if outcome.healthy:
            if weight is not None:
                self.lb.set_weight(new, weight)
            self.lb.enable(new)
            self.journal.event("enabled", slot=slot, instance=new.name, version=new.version, weight=weight)
        return outcome

    def _restore(self, slot: int, old: Instance) -> dict[str, Any]:
        """Put the slot's old version back after its replacement failed, so capacity comes back."""
        try:
            new, outcome = self._bring_up(slot, self._version(old.version))
        except Exception as exc:
            self.journal.event("restore_failed", slot=slot, detail=str(exc))
            return {"ok": False, "detail": str(exc)}
        if outcome.healthy:
            self._set(slot, new)
            self.journal.event("restored", slot=slot, instance=new.name, version=new.version)
            return {"ok": True, "instance": _brief(new)}
        self._retire(new, reason="restore unhealthy", serving=None)
        self.journal.event("restore_failed", slot=slot, detail=outcome.detail)
        return {"ok": False, "detail": outcome.detail}

    def _set(self, slot: int, instance: Instance | None) -> None:
        with self._state_lock:
            self.current[slot] = instance

    def _retire(self, instance: Instance, reason: str, serving: str | None = SERVER_READY) -> None:
        """Drain (when the load balancer sends it traffic), remove from the load balancer, terminate."""
        if serving in (SERVER_READY, SERVER_DRAIN):
            self.lb.drain(instance)
            self.journal.event("drain", slot=instance.slot, instance=instance.name)
            self.lb.wait_drained(instance, self.options.drain_timeout)
            self.journal.event("drained", slot=instance.slot, instance=instance.name)
        self.lb.remove(instance)
        self.journal.event("server_removed", slot=instance.slot, server=instance.name)
        self.provider.terminate(instance)
        self.journal.event(
            "terminated", slot=instance.slot, instance=instance.name, version=instance.version, reason=reason
        )


def _by_slot(instances: list[Instance]) -> dict[int, list[Instance]]:
    out: dict[int, list[Instance]] = {}
    for inst in instances:
        out.setdefault(inst.slot, []).append(inst)
    return out
