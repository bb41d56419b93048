"""Draining: an old instance leaves the load balancer only once its requests end, or at drain_timeout."""

from __future__ import annotations

import time

from rollout_fakes import V1, World, fake_rollout


def _with_requests(seconds: float) -> World:
    world = World()
    world.seed(2, V1)
    ends = time.monotonic() + seconds
    world.requests = {inst.name: ends for inst in world.instances.values()}
    return world


def _removed_at(world: World, rollout) -> dict[str, float]:
    result = rollout.run()
    assert result["status"] == "succeeded"
    return {e["server"]: e["t"] for e in result["events"] if e["event"] == "server_removed"}


def test_a_request_in_flight_ends_before_its_server_is_removed(tmp_path):
    world = _with_requests(0.3)
    started = time.time()
    removed = _removed_at(world, fake_rollout(world, tmp_path, batch_size=2, drain_timeout=10))
    assert world.cut == []  # nothing cut: each removal waited for its request
    assert min(removed.values()) - started >= 0.3


def test_a_request_longer_than_drain_timeout_is_cut_at_the_timeout(tmp_path):
    world = _with_requests(30)
    started = time.time()
    removed = _removed_at(world, fake_rollout(world, tmp_path, batch_size=2, drain_timeout=0.2))
    assert sorted(world.cut) == sorted(removed)  # both old servers were cut
    # Removed once the drain timeout had passed, and well before the request would have ended.
    assert all(0.2 <= t - started < 30 for t in removed.values())
