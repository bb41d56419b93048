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
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import math
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from . import report
from .common import KilnError, state_dir
from .health import HealthOutcome, Prober
from .rollout_types import SERVER_DRAIN, SERVER_READY, Instance, LoadBalancer, Provider

GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
FINAL = ("succeeded", "partial", "rolled_back", "failed", "superseded")
UNFINISHED = ("running", "paused")
_CHANGES = {"launched", "enabled", "terminated", "server_removed", "server_added"}


class RolloutError(KilnError):
    """Bad input or a state the roll-out cannot proceed from; nothing was changed by the refusal."""


class RolloutLocked(RolloutError):
    """Another roll-out of the same group holds the group's lock."""


# --------------------------------------------------------------------------- options and planning


def _count(value: Any, name: str, total: int, rounding: Callable[[float], float], minimum: int) -> int:
    """An absolute number from ``3``, ``"3"`` or ``"30%"`` of ``total``; refuses bad input naming ``name``."""
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"\d+(\.\d+)?%|\d+", text):
        raise RolloutError(f"{name} must be a whole number or a percentage like '30%', got {value!r}")
    if text.endswith("%"):
        pct = float(text[:-1])
        if pct > 100:
            raise RolloutError(f"{name} {text} is over 100%")
        if pct <= 0 and minimum > 0:
            raise RolloutError(f"{name} must be more than 0%, got {text}")
        return max(minimum, int(rounding(total * pct / 100)))
    number = int(text)
    if number < minimum:
        raise RolloutError(f"{name} must be at least {minimum}, got {number}")
    return number


def batch_sizes(spec: Any, total: int, name: str = "batch_size") -> list[int]:
    """Batch sizes like Ansible's ``serial``: a size, a percentage, or a list whose last entry repeats."""
    items = spec if isinstance(spec, list | tuple) else [spec]
    if not items:
        raise RolloutError(f"{name} must not be an empty list")
    labels = [f"{name}[{i}]" for i in range(len(items))] if isinstance(spec, list | tuple) else [name]
    return [_count(item, label, total, math.floor, 1) for item, label in zip(items, labels, strict=True)]


def plan_batches(slots: list[int], spec: Any, total: int) -> list[list[int]]:
    """Split ``slots`` into batches; percentages are of the group's size ``total``."""
    sizes = batch_sizes(spec, total)
    batches: list[list[int]] = []
    rest = list(slots)
    while rest:
        size = sizes[min(len(batches), len(sizes) - 1)]
        batches.append(rest[:size])
        rest = rest[size:]
    return batches


@dataclass
class RolloutOptions:
    batch_size: Any = 1  # 2, "25%", or [1, "50%", "100%"] like Ansible's serial
    max_surge: Any = None  # extra instances at once: a number or percentage; None: the whole batch
    min_healthy_percentage: int = 100  # instances in service never drop below this share of the group
    checkpoints: list[int] = field(default_factory=list)  # pause after this percentage is replaced
    checkpoint_delay: float = 0.0  # seconds to wait at a checkpoint; 0 pauses until the next run
    max_failures: Any = 0  # failed slots tolerated (number or percentage) before stopping
    auto_rollback: bool = True  # on stop, put the old version back in every slot touched
    drain_timeout: float = 30.0  # seconds to wait for a drained server's sessions to end
    parallel: int | None = None  # slots replaced at once within a batch; None: the whole batch
    size: int | None = None  # instances the group should have; None: the slots it has now

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Limits:
    """Options turned into absolute numbers for a group of ``total`` slots."""

    total: int
    min_in_service: int
    max_surge: int | None
    max_failures: int


def validate(options: RolloutOptions, total: int, room: bool = True) -> Limits:
    """Refuse bad options before anything changes; each message names the parameter.

    ``room``: also check that surge and min healthy leave room to replace anything, which needs the
    group's real size.
    """
    if options.size is not None and (isinstance(options.size, bool) or int(options.size) < 1):
        raise RolloutError(f"size must be at least 1, got {options.size!r}")
    batch_sizes(options.batch_size, max(total, 1))
    pct = options.min_healthy_percentage
    if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
        raise RolloutError(f"min_healthy_percentage must be a whole number from 0 to 100, got {pct!r}")
    surge = None if options.max_surge is None else _count(options.max_surge, "max_surge", total, math.ceil, 0)
    min_in_service = math.ceil(total * pct / 100)
    if room and surge == 0 and total - min_in_service < 1:
        raise RolloutError(
            f"max_surge 0 with min_healthy_percentage {pct} leaves no room to replace any of the {total} "
            "instances: allow a surge or lower min_healthy_percentage"
        )
    for i, cp in enumerate(options.checkpoints or []):
        if isinstance(cp, bool) or not isinstance(cp, int | float) or not 0 < cp <= 100:
            raise RolloutError(f"checkpoints[{i}] must be a percentage from 1 to 100, got {cp!r}")
    if options.checkpoint_delay < 0:
        raise RolloutError(f"checkpoint_delay must be 0 or more, got {options.checkpoint_delay}")
    if options.drain_timeout < 0:
        raise RolloutError(f"drain_timeout must be 0 or more, got {options.drain_timeout}")
    if options.parallel is not None and options.parallel < 1:
        raise RolloutError(f"parallel must be at least 1, got {options.parallel}")
    failures = _count(options.max_failures, "max_failures", total, math.floor, 0)
    return Limits(total, min_in_service, surge, failures)


def validate_group(group: str) -> None:
    if not isinstance(group, str) or not GROUP_RE.match(group):
        raise RolloutError(f"group must be a name of letters, digits, '-', '_' or '.', got {group!r}")


def check_deployable(version: Any) -> None:
    if getattr(version, "status", "active") == "revoked":
        raise RolloutError(
            f"version {version.ref} is revoked and may no longer be deployed; choose another one"
        )


# --------------------------------------------------------------------------- journal and lock


def _now() -> float:
    return time.time()


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")


def write_json_atomic(path: str, doc: Any) -> None:
    """Write ``doc`` so a reader (or a re-run after SIGKILL) sees the old file or the new one, never half."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(doc, handle, separators=(",", ":"), sort_keys=True, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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


class GroupLock:
    """An exclusive flock per group; the kernel releases it when the holder dies, even by SIGKILL."""

    def __init__(self, path: str, group: str):
        self.path = path
        self.group = group
        self._fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RolloutLocked(
                f"a roll-out of group '{self.group}' is already running ({holder or 'holder unknown'}); "
                f"wait for it to end (lock {self.path})",
                lock=self.path,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {_iso(_now())}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Journal:
    """The roll-out document: saved atomically after every step; also the result and its timeline."""

    def __init__(
        self, path: str, doc: dict[str, Any], on_event: Callable[[dict[str, Any]], None] | None = None
    ):
        self.path = path
        self.doc = doc
        self.changed = False
        self._lock = threading.RLock()
        self._on_event = on_event

    def save(self) -> None:
        with self._lock:
            self.doc["updated_at"] = _now()
            write_json_atomic(self.path, self.doc)

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


# --------------------------------------------------------------------------- the engine


class NullLoadBalancer:
    """No load balancer: every instance counts as in service; nothing to drain."""

    def add(self, instance: Instance) -> None:
        pass

    def enable(self, instance: Instance) -> None:
        pass

    def drain(self, instance: Instance) -> None:
        pass

    def wait_drained(self, instance: Instance, timeout: float) -> None:
        pass

    def remove(self, instance: Instance) -> None:
        pass

    def servers(self) -> dict[str, str] | None:
        return None


def _brief(instance: Instance | None) -> dict[str, Any] | None:
    if instance is None:
        return None
    return {"id": instance.id, "name": instance.name, "version": instance.version, "slot": instance.slot}


class Rollout:
    """One roll-out of ``group`` to ``target`` (a catalog Version).

    ``resolve_version(ref)`` looks up the Version of a ref (``Catalog.get``); it is only called on
    the thread that calls :meth:`run`. ``on_event`` sees every journal event as it happens.
    """

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
        self.lock = GroupLock(os.path.join(self.folder, "lock"), group)
        self.on_event = on_event
        self.journal: Journal | None = None
        self.limits: Limits | None = None
        self.current: dict[int, Instance | None] = {}
        self._state_lock = threading.Lock()
        self._versions: dict[str, Any] = {target.ref: target}
        # Refuse bad options now, before any call that could change something.
        validate(self.options, self.options.size or 1, room=False)

    # ------------------------------------------------------------------ reading state

    def _look(self) -> tuple[dict[str, Any] | None, str, bool, list[Instance], list[int]]:
        """A read-only look at the journal and the group: (journal, phase, resuming, instances, slots)."""
        journal = read_journal(self.journal_path)
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
        batches = plan_batches(todo, self.options.batch_size, len(slots))
        return {
            "group": self.group,
            "target": self.target.ref,
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
                    "slots": [
                        {
                            "slot": s,
                            "instance": current[s].name if current[s] else None,
                            "from": current[s].version if current[s] else None,
                            "to": self._desired_ref(s, phase, before),
                        }
                        for s in batch
                    ],
                }
                for i, batch in enumerate(batches)
            ],
            "changed": bool(batches or cleanup),
        }

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        # Refuse what can be refused from a read-only look before taking the lock or writing anything.
        validate(self.options, len(self._look()[4]))
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
        self.journal = Journal(self.journal_path, doc, self.on_event)
        self.journal.event("resume" if resuming else "start", target=self.target.ref, phase=phase)
        for hook_owner in (self.provider, self.lb):
            prepare = getattr(hook_owner, "prepare", None)
            if callable(prepare):
                prepare(self.group)
        self._reconcile(instances, slots, phase)
        if not doc["before"]:
            doc["before"] = {str(s): (i.version if i else None) for s, i in self.current.items()}
            self.journal.save()
        if phase == "forward":
            self._forward(slots)
        if doc["phase"] == "rollback" and doc["status"] == "running":
            self._rollback(slots)
        return self._finish()

    def _reconcile(self, instances: list[Instance], slots: list[int], phase: str) -> None:
        """Bring provider and load balancer into one consistent picture: one in-service instance per slot."""
        before = self.journal.doc.get("before") or {}
        states = self._lb_states()
        names = {i.name for i in instances}
        for name in sorted(set(states or {}) - names):
            orphan = Instance(
                id="", name=name, group=self.group, slot=-1, version="", probe_address="", backend_address=""
            )
            self.lb.remove(orphan)
            self.journal.event("server_removed", server=name, reason="no such instance")
        by_slot = _by_slot(instances)
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
        limits = self.limits
        failed = set(doc["failed_slots"])
        todo = [s for s in slots if s not in failed and self._version_of(s) != self.target.ref]
        for batch in plan_batches(todo, self.options.batch_size, len(slots)):
            self._run_batch(batch, {s: self.target for s in batch}, "forward")
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
            if self._checkpoint(slots):
                return

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
            time.sleep(self.options.checkpoint_delay)
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
        for batch in plan_batches(todo, self.options.batch_size, len(slots)):
            self._run_batch(batch, {s: desired[s] for s in batch}, "rollback")
        left = [s for s in todo if self._version_of(s) != before[str(s)]]
        if left:
            doc["status"] = "failed"
            self.journal.event("rollback_incomplete", slots=left)

    def _finish(self) -> dict[str, Any]:
        doc = self.journal.doc
        if doc["status"] == "running":
            if doc["phase"] == "rollback":
                doc["status"] = "rolled_back"
            else:
                doc["status"] = "partial" if doc["failed_slots"] else "succeeded"
        if doc["status"] != "paused":
            doc["phase"] = "done" if doc["status"] != "rolled_back" else "rollback"
        doc["after"] = {str(s): self._version_of(s) for s in sorted(self.current)}
        doc["finished_at"] = _now()
        doc["duration_s"] = round(doc["finished_at"] - doc["started_at"], 3)
        self.journal.event("finish", status=doc["status"])
        result_path = os.path.join(self.folder, f"{doc['id']}.json")
        doc["result_path"] = result_path
        doc["report_path"] = os.path.splitext(result_path)[0] + ".html"
        doc["journal_path"] = self.journal_path
        self.journal.save()
        write_json_atomic(result_path, doc)
        report.write_html(doc, out=doc["report_path"])
        return {**doc, "changed": self.journal.changed}

    # ------------------------------------------------------------------ batches and slots

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

    def _run_batch(self, batch: list[int], desired: dict[int, Any], phase: str) -> None:
        doc = self.journal.doc
        record = {
            "index": len(doc["batches"]),
            "phase": phase,
            "slots": batch,
            "started_at": _now(),
            "instances": [],
        }
        with self.journal._lock:
            doc["batches"].append(record)
        self.journal.event("batch_start", batch=record["index"], phase=phase, slots=batch)
        surge_cap = self.limits.max_surge if self.limits.max_surge is not None else len(batch)
        pending = list(batch)
        while pending:
            budget = self._in_service() - self.limits.min_in_service
            wave: list[tuple[int, str]] = []
            surged = down = 0
            for slot in pending:
                old, want = self.current.get(slot), desired[slot]
                if old is None or want is None:
                    wave.append((slot, "fill" if want is not None else "retire"))
                elif surged < surge_cap:
                    surged += 1
                    wave.append((slot, "surge"))
                elif down < budget:
                    down += 1
                    wave.append((slot, "in_place"))
            if not wave:
                raise RolloutError(
                    f"replacing slot(s) {pending} would take group '{self.group}' below "
                    f"{self.limits.min_in_service} instances in service (min_healthy_percentage "
                    f"{self.options.min_healthy_percentage}, max_surge {self.options.max_surge})"
                )
            # Versions a failed slot may be restored to are looked up here, on the calling thread:
            # resolve_version may be a catalog bound to one thread (SQLite).
            for slot, _mode in wave:
                old = self.current.get(slot)
                if old is not None:
                    with contextlib.suppress(Exception):  # unknown: the restore reports it
                        self._version(old.version)
            workers = min(len(wave), self.options.parallel or len(wave))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kiln-slot") as pool:
                results = list(
                    pool.map(lambda item: self._replace_slot(item[0], desired[item[0]], item[1], phase), wave)
                )
            with self.journal._lock:
                record["instances"].extend(results)
                for res in results:
                    if res["outcome"] == "failed" and phase == "forward":
                        doc["failed_slots"].append(res["slot"])
            done = {item[0] for item in wave}
            pending = [s for s in pending if s not in done]
        record["finished_at"] = _now()
        record["duration_s"] = round(record["finished_at"] - record["started_at"], 3)
        outcomes = [r["outcome"] for r in record["instances"]]
        record["outcome"] = "failed" if "failed" in outcomes else "ok"
        self.journal.event(
            "batch_end",
            batch=record["index"],
            phase=phase,
            outcome=record["outcome"],
            duration_s=record["duration_s"],
        )

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

    def _bring_up(self, slot: int, version: Any) -> tuple[Instance, HealthOutcome]:
        self.journal.event("launch", slot=slot, version=version.ref)
        new = self.provider.launch(self.group, slot, version)
        self.journal.event("launched", slot=slot, instance=new.name, id=new.id, version=new.version)
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
            self.lb.enable(new)
            self.journal.event("enabled", slot=slot, instance=new.name, version=new.version)
        return new, outcome

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
