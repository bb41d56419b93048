"""Long requests in flight while their servers are drained, against the real Docker engine and HAProxy.

The group first runs the slow version of the sample image (``fault=slow``), whose page / asked for at
600 bytes a second (``/?rate=600``) takes about five seconds; its ``X-Kiln-Instance`` header names the
instance that sends it. Long requests start through the load balancer on 127.0.0.1 every quarter of a
second or so, next to a background load on /version, while the group rolls out to a good version: every
old server is drained with long requests still on it.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from dataclasses import dataclass

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment
from rollout_fixtures import assert_converged, engine_rollout
from rollout_support import LoadGenerator, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@dataclass
class LongRequest:
    start: float  # epoch seconds, as the journal's events
    end: float = 0.0  # 0 while in flight
    status: int | None = None
    instance: str = ""  # X-Kiln-Instance: the host name (the container id) of the instance sending it
    body: str = ""
    error: str = ""

    def served_by(self, container_id: str) -> bool:
        return bool(self.instance) and container_id.startswith(self.instance)

    def in_flight_at(self, t: float) -> bool:
        return self.start < t and (not self.end or self.end > t)


LONG_PATH = "/?rate=600"  # about five seconds a request


class LongRequests:
    """GET ``LONG_PATH`` on 127.0.0.1:port every ``interval`` seconds (jittered, so that round robin
    spreads them over the servers whatever the background load), each on its own connection, until
    stopped or ``limit`` requests; stopping waits for the ones in flight."""

    def __init__(self, address: str, interval: float = 0.25, limit: int = 200, timeout: float = 30.0):
        host, _, port = address.rpartition(":")
        assert host == "127.0.0.1", address
        self.host, self.port = host, int(port)
        self.interval, self.limit, self.timeout = interval, limit, timeout
        self.requests: list[LongRequest] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._starter = threading.Thread(target=self._start_all, name="long-requests", daemon=True)

    def _one(self, request: LongRequest) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", LONG_PATH)
            response = conn.getresponse()
            request.status = response.status
            request.instance = response.getheader("X-Kiln-Instance", "")
            request.body = response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            request.error = f"{type(exc).__name__}: {exc}"
        finally:
            request.end = time.time()
            conn.close()

    def _start_all(self) -> None:
        jitter = random.Random(7)
        while not self._stop.is_set() and len(self.requests) < self.limit:
            request = LongRequest(start=time.time())
            self.requests.append(request)
            thread = threading.Thread(target=self._one, args=(request,), daemon=True)
            thread.start()
            self._threads.append(thread)
            self._stop.wait(self.interval * jitter.uniform(0.5, 1.5))

    def on(self, container_id: str) -> list[LongRequest]:
        return [r for r in self.requests if r.served_by(container_id)]

    def __enter__(self) -> LongRequests:
        self._starter.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._starter.join()
        for thread in self._threads:
            thread.join(self.timeout + 1)


def _long_page(version) -> str:
    return f"{version.ref}\n{'x' * 3000}\n"  # the slow fault's page (roles/golden_image)


def _by_instance(result: dict, kind: str) -> dict[str, float]:
    """Instance name -> time of its ``kind`` event in the roll-out's journal."""
    return {e.get("instance") or e["server"]: e["t"] for e in result["events"] if e["event"] == kind}


def _backend_counters(group: str) -> dict[str, int]:
    """The load balancer's counters for the whole backend (servers deleted since included)."""
    lines = docker_environment.load_balancer(group).api().command("show stat -1 2 -1").splitlines()
    header = lines[0].lstrip("# ").split(",")
    fields = next(line for line in lines if line.startswith("app,BACKEND,")).split(",")
    row = dict(zip(header, fields, strict=False))
    return {key: int(row[key] or 0) for key in ("hrsp_5xx", "eresp", "econ", "srv_abrt")}


def _long_rollout(world, drain_timeout: float):
    """A group of two on the slow version, rolled out to the good one while long requests are on every old
    server and a background load goes on without a failed request: (group, roll-out result, {old instance
    name: container id}, the long requests)."""
    group = world.group("drain")
    engine_rollout(world, group, "slow", size=2, batch_size=2)
    address = docker_environment.load_balancer(group).address()
    old = {i.name: i.id for i in docker_environment.provider().list_instances(group)}
    with LoadGenerator(address, rate=40) as load, LongRequests(address) as long:
        # Steady: one long request has ended by itself, and each old instance has some in flight.
        wait_for(lambda: any(r.end for r in long.requests), 30, "a first long request to end")
        wait_for(
            lambda: all(any(r.in_flight_at(time.time()) for r in long.on(cid)) for cid in old.values()),
            30,
            "a long request on each old instance",
        )
        result = engine_rollout(world, group, "good", batch_size=1, max_surge=1, drain_timeout=drain_timeout)
    assert result["status"] == "succeeded", result["events"][-5:]
    assert_converged(group, world.version("good").ref, 2)
    assert set(_by_instance(result, "drain")) == set(old), result["events"]
    assert load.report.total >= 40 and not load.report.failed, load.report.summary()
    return group, result, old, long


def _summary(requests: list[LongRequest]) -> str:
    return "; ".join(
        f"{r.instance or '?'} {r.start % 100:.2f}-{r.end % 100:.2f} {r.status} {r.error or len(r.body)}"
        for r in requests
    )


def test_long_requests_in_flight_complete_and_their_server_is_removed_after_them(rollout_world):
    world = rollout_world
    drain_timeout = 30
    group, result, old, long = _long_rollout(world, drain_timeout)
    drain, drained = _by_instance(result, "drain"), _by_instance(result, "drained")
    removed, terminated = _by_instance(result, "server_removed"), _by_instance(result, "terminated")

    # What the users saw: every long request answered 200 with the whole page, none failed.
    requests = long.requests
    assert len(requests) >= 20, _summary(requests)
    bad = [r for r in requests if r.error or r.status != 200]
    assert not bad, _summary(bad)
    pages = {_long_page(world.version("slow")), f"{world.version('good').ref}\n"}
    assert {r.body for r in requests} == pages, _summary(requests)

    for name, container_id in old.items():
        served = long.on(container_id)
        # The server was drained with long requests still on it, and they all ended with the whole page
        # (above): it left HAProxy, which cuts what is left (the next test), and stopped only after them.
        assert any(r.in_flight_at(drain[name]) for r in served), (name, drain[name] % 100, _summary(served))
        # The journal shows it: the drain, then the removal from HAProxy, then the instance stopped; the drain
        # lasted as long as the server's last request needed, and no longer: well inside the timeout.
        assert drain[name] < drained[name] <= removed[name] <= terminated[name]
        last = max(r.end for r in served)
        waited = drained[name] - drain[name]
        assert 0.9 * (last - drain[name]) <= waited < drain_timeout / 2, (name, last % 100, waited)

    # HAProxy counted no long request as failed or aborted (its numbers are what analysis reads).
    counters = _backend_counters(group)
    assert not any(counters.values()), counters


def test_a_drain_timeout_shorter_than_the_requests_cuts_them_at_the_timeout(rollout_world):
    world = rollout_world
    drain_timeout = 1.0
    group, result, old, long = _long_rollout(world, drain_timeout)
    drain, drained = _by_instance(result, "drain"), _by_instance(result, "drained")
    requests = long.requests
    # How long a long request takes when nothing cuts it, measured here: those that ended with the page.
    duration = min(r.end - r.start for r in requests if r.body == _long_page(world.version("slow")))
    assert duration > 4 * drain_timeout, _summary(requests)

    cut = [r for r in requests if r.error or r.status != 200]
    for name, container_id in old.items():
        # Requests on the server that, when its drain began, had more than twice the timeout still to go.
        pending = [
            r
            for r in long.on(container_id)
            if r.in_flight_at(drain[name]) and r.start + duration > drain[name] + 2 * drain_timeout
        ]
        assert pending, (name, drain[name] % 100, _summary(long.on(container_id)))
        # The roll-out waited the drain timeout for them, and about no longer: not until they ended.
        waited = drained[name] - drain[name]
        assert 1 <= waited / drain_timeout < 2, waited
        assert drained[name] < min(r.start + duration for r in pending)
        # What kiln documents for what is left at the timeout: HAProxy cuts it when the server is removed.
        # The client had the status and the headers; the page stops short and the connection closes.
        for r in pending:
            assert r in cut and r.status == 200 and r.error.startswith("IncompleteRead"), _summary([r])
            assert drained[name] <= r.end, (name, drained[name] % 100, _summary([r]))
    # Only those failed: each request that did was on an old server when its drain timed out.
    assert cut and all(
        any(r.served_by(cid) and r.in_flight_at(drained[name]) for name, cid in old.items()) for r in cut
    ), _summary(cut)
    counters = _backend_counters(group)
    # HAProxy counts a cut request as a 2xx response aborted by the server side, not as a 5xx.
    assert counters["srv_abrt"] == len(cut) and counters["hrsp_5xx"] == 0, (counters, len(cut))
