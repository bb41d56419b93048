"""A fake provider and load balancer for the roll-out engine's unit tests.

They keep the real contracts (rollout/interfaces.py): a launched instance mounts its slot, `add` puts a
server in maintenance, terminate/remove are idempotent. They record what a test wants to check:
every call in order, the fewest servers in service and the most instances alive at any moment, how
many launches ran at once. ``crash_at`` raises :class:`Crash` (a BaseException, like SIGKILL it is
not handled as a slot failure) at the n-th changing call, before or after the change takes effect.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from ansible_collections.kiln.immutable.plugins.module_utils.common.errors import KilnError
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.analysis import ServerStats
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.engine import (
    Rollout,
    RolloutOptions,
)
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.health import (
    HealthCheck,
    Prober,
    ProbeResult,
)
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.interfaces import (
    SERVER_DRAIN,
    SERVER_MAINT,
    SERVER_READY,
    Instance,
)


class Crash(BaseException):
    """The roll-out process dies here."""


@dataclass
class FakeVersion:
    image: str
    name: str
    status: str = "active"
    artifacts: dict = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.image}/{self.name}"


class World:
    """Shared state of the fake provider and load balancer, so a 're-run' sees what the crash left."""

    def __init__(self, group: str = "web-test"):
        self.group = group
        self.instances: dict[str, Instance] = {}
        self.servers: dict[str, str] = {}
        self.calls: list[tuple] = []
        self.lock = threading.RLock()
        self.counter = itertools.count(1)
        self.bad_versions: set[str] = set()
        self.bad_slots: set[tuple[str, int]] = set()  # (version ref, slot) that fails health
        self.launch_errors: set[str] = set()  # versions whose launch raises
        self.lost_servers: set[str] = set()  # versions whose server is gone by enable (balancer restarted)
        self.launch_delay = 0.0
        self.slot_delays: dict[int, float] = {}  # slot -> its launch delay, instead of launch_delay
        self.crash_at: int | None = None
        self.crash_after = False  # crash after the change instead of before it
        self.changes = 0
        self.running_launches = 0
        self.max_parallel_launches = 0
        self.min_ready: int | None = None
        self.max_alive = 0
        # The load balancer's numbers: each look at them (stats()) counts ``traffic`` more requests,
        # shared by weight among the servers in service; a version's errors and time from ``faults``.
        self.weights: dict[str, int] = {}
        self.traffic = 100
        self.faults: dict[str, tuple[float, float]] = {}  # version ref -> (error share, time ms)
        self.counters: dict[str, list[float]] = {}  # server -> [requests, errors]
        self.stats_calls = 0
        self.crash_at_stats: int | None = None  # the roll-out dies at this look at the numbers (a bake)
        self.requests: dict[str, float] = {}  # server -> when the request in flight on it ends
        self.cut: list[str] = []  # servers removed while a request was still in flight

    # --- bookkeeping

    def _change(self, name: str, *args) -> int:
        """Count one changing call and return its number; crash before it when told to."""
        with self.lock:
            self.changes += 1
            self.calls.append((name, *args))
            if self.crash_at == self.changes and not self.crash_after:
                self.crash_at = None
                raise Crash(f"before {name} #{self.changes}")
            return self.changes

    def _after(self, name: str, number: int) -> None:
        """Crash after change ``number`` when told to (another slot's changes may have come since)."""
        with self.lock:
            if self.crash_at == number and self.crash_after:
                self.crash_at = None
                raise Crash(f"after {name} #{number}")

    def _measure(self) -> None:
        ready = sum(1 for s in self.servers.values() if s == SERVER_READY)
        self.min_ready = ready if self.min_ready is None else min(self.min_ready, ready)
        self.max_alive = max(self.max_alive, len(self.instances))

    def seed(self, size: int, version: FakeVersion) -> None:
        """Start a group of ``size`` healthy, enabled instances on ``version``."""
        for slot in range(size):
            inst = self._make(slot, version)
            self.instances[inst.id] = inst
            self.servers[inst.name] = SERVER_READY
        self.min_ready = None
        self.max_alive = len(self.instances)
        self.calls.clear()
        self.changes = 0

    def _make(self, slot: int, version: FakeVersion) -> Instance:
        n = next(self.counter)
        return Instance(
            id=f"id{n}",
            name=f"kiln-{self.group}-{slot}-{n:04d}",
            group=self.group,
            slot=slot,
            version=version.ref,
            probe_address=f"127.0.0.1:{20000 + n}",
            backend_address=f"kiln-{self.group}-{slot}-{n:04d}:8080",
            started_at=time.time() + n * 1e-6,  # strictly increasing, like real start times
        )

    # --- what tests check

    def versions(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for inst in self.instances.values():
            out.setdefault(inst.slot, []).append(inst.version)
        return {slot: sorted(v) for slot, v in sorted(out.items())}

    def assert_converged(self, size: int, ref: str) -> None:
        assert self.versions() == {slot: [ref] for slot in range(size)}
        assert self.servers == {inst.name: SERVER_READY for inst in self.instances.values()}

    def mutations(self) -> list[tuple]:
        return list(self.calls)


class FakeProvider:
    def __init__(self, world: World):
        self.world = world

    def list_instances(self, group: str) -> list[Instance]:
        with self.world.lock:
            return [i for i in self.world.instances.values() if i.group == group]

    def launch(self, group: str, slot: int, version: FakeVersion) -> Instance:
        w = self.world
        change = w._change("launch", slot, version.ref)
        with w.lock:
            w.running_launches += 1
            w.max_parallel_launches = max(w.max_parallel_launches, w.running_launches)
        try:
            time.sleep(w.slot_delays.get(slot, w.launch_delay))
            if version.ref in w.launch_errors:
                raise KilnError(f"cannot start {version.ref} in slot {slot}: image not found")
            with w.lock:
                inst = w._make(slot, version)
                w.instances[inst.id] = inst
                w._measure()
        finally:
            with w.lock:
                w.running_launches -= 1
        w._after("launch", change)
        return inst

    def terminate(self, instance: Instance) -> None:
        w = self.world
        change = w._change("terminate", instance.name)
        with w.lock:
            w.instances.pop(instance.id, None)
        w._after("terminate", change)


class FakeLoadBalancer:
    def __init__(self, world: World):
        self.world = world

    def _set(self, op: str, instance: Instance, state: str | None) -> None:
        w = self.world
        change = w._change(op, instance.name)
        with w.lock:
            if state is None:
                w.servers.pop(instance.name, None)
            else:
                if op != "add" and instance.name not in w.servers:
                    raise KilnError(f"no server {instance.name} to {op}")
                w.servers[instance.name] = state
            w._measure()
        w._after(op, change)

    def add(self, instance: Instance) -> None:
        self._set("add", instance, SERVER_MAINT)

    def enable(self, instance: Instance) -> None:
        if instance.version in self.world.lost_servers:
            with self.world.lock:
                self.world.servers.pop(instance.name, None)
        self._set("enable", instance, SERVER_READY)

    def drain(self, instance: Instance) -> None:
        self._set("drain", instance, SERVER_DRAIN)

    def _in_flight(self, instance: Instance) -> bool:
        with self.world.lock:
            return self.world.requests.get(instance.name, 0) > time.monotonic()

    def wait_drained(self, instance: Instance, timeout: float) -> None:
        """Until the request in flight on the server ends, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self._in_flight(instance) and time.monotonic() < deadline:
            time.sleep(0.005)

    def remove(self, instance: Instance) -> None:
        if self._in_flight(instance):
            self.world.cut.append(instance.name)
        self._set("remove", instance, None)
        with self.world.lock:
            self.world.weights.pop(instance.name, None)

    def servers(self) -> dict[str, str]:
        with self.world.lock:
            return dict(self.world.servers)

    def set_weight(self, instance: Instance, weight: int) -> None:
        w = self.world
        change = w._change("set_weight", instance.name, weight)
        with w.lock:
            w.weights[instance.name] = weight
        w._after("set_weight", change)

    def stats(self) -> dict[str, ServerStats]:
        w = self.world
        with w.lock:
            w.stats_calls += 1
            if w.crash_at_stats == w.stats_calls:
                w.crash_at_stats = None
                raise Crash(f"at look #{w.stats_calls} at the numbers")
            names = {i.name: i.version for i in w.instances.values()}
            serving = [n for n, state in w.servers.items() if state == SERVER_READY and n in names]
            total = sum(w.weights.get(n, 1) for n in serving)
            out = {}
            for name in w.servers:
                count = w.counters.setdefault(name, [0.0, 0.0])
                share, time_ms = w.faults.get(names.get(name, ""), (0.0, 1.0))
                if name in serving and total:
                    requests = w.traffic * w.weights.get(name, 1) / total
                    count[0] += requests
                    count[1] += requests * share
                out[name] = ServerStats(int(count[0]), int(count[1]), time_ms)
            return out


def fake_probe(world: World):
    """A probe that asks the fake world: a running instance of a good version answers 200."""

    def probe(check: HealthCheck, instance: Instance) -> ProbeResult:
        if not instance.probe_address:  # like the real probe: a stopped instance cannot be probed
            raise KilnError(f"probe address of {instance.name} is empty")
        with world.lock:
            alive = instance.id in world.instances
        if not alive:
            return ProbeResult(False, False, "connection refused")
        if instance.version in world.bad_versions or (instance.version, instance.slot) in world.bad_slots:
            return ProbeResult(False, True, "GET /healthz -> 503")
        return ProbeResult(True, True, "GET /healthz -> 200")

    return probe


def fake_prober(world: World, **overrides) -> Prober:
    """A fast prober over :func:`fake_probe`."""
    options = {"interval": 0.001, "healthy_threshold": 1, "unhealthy_threshold": 2, "deadline": 2.0}
    options.update(overrides)
    return Prober(HealthCheck(**options), probe=fake_probe(world))


V1, V2, V3 = FakeVersion("web", "1"), FakeVersion("web", "2"), FakeVersion("web", "3")
VERSIONS = {v.ref: v for v in (V1, V2, V3)}


def fake_rollout(world: World, root, target: FakeVersion = V2, **options) -> Rollout:
    """A roll-out of ``world``'s group to ``target`` with the fakes, its state under ``root``."""
    return Rollout(
        world.group,
        target,
        FakeProvider(world),
        FakeLoadBalancer(world),
        fake_prober(world),
        RolloutOptions(**options),
        resolve_version=VERSIONS.__getitem__,
        root=str(root),
    )
