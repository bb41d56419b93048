"""Health probes: HTTP, TCP and command against a real server on 127.0.0.1; thresholds with a fake clock."""

from __future__ import annotations

import http.server
import socket
import sys
import threading

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.common.errors import KilnError
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.health import (
    HealthCheck,
    Prober,
    ProbeResult,
    probe_once,
    with_backend_health,
)
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.interfaces import Instance


class _Handler(http.server.BaseHTTPRequestHandler):
    status = {"/healthz": 200, "/broken": 503}

    def do_GET(self):  # noqa: N802 (http.server's name)
        code = self.status.get(self.path, 404)
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ok" if code == 200 else b"no")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed again when we return: connection refused


def inst(address: str) -> Instance:
    return Instance("id1", "kiln-web-test-0-aa", "web-test", 0, "web/1", address, "x:8080")


def test_http_probe_reads_the_status(server):
    assert probe_once(HealthCheck(), inst(server)) == ProbeResult(True, True, "GET /healthz -> 200")
    broken = probe_once(HealthCheck(path="/broken"), inst(server))
    assert (broken.ok, broken.answered, broken.detail) == (False, True, "GET /broken -> 503")
    assert probe_once(HealthCheck(path="/broken", status=[200, 503]), inst(server)).ok


def test_no_answer_is_not_a_wrong_answer():
    result = probe_once(HealthCheck(timeout=0.5), inst(_closed_port()))
    assert (result.ok, result.answered) == (False, False) and "refused" in result.detail.lower()


def test_tcp_probe(server):
    assert probe_once(HealthCheck(type="tcp"), inst(server)).ok
    assert not probe_once(HealthCheck(type="tcp", timeout=0.5), inst(_closed_port())).ok


def test_command_probe_gets_the_address(server):
    code = "import sys; sys.exit(0 if sys.argv[1] == sys.argv[2] + ':' + sys.argv[3] else 4)"
    check = HealthCheck(type="command", command=[sys.executable, "-c", code, "{address}", "{host}", "{port}"])
    assert probe_once(check, inst(server)).ok
    failing = HealthCheck(type="command", command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    result = probe_once(failing, inst(server))
    assert (result.ok, result.answered) == (False, True) and "exited 3" in result.detail


def test_a_real_prober_against_the_server(server):
    outcome = Prober(HealthCheck(interval=0.01, healthy_threshold=3)).wait_healthy(inst(server))
    assert outcome.healthy and outcome.attempts == 3
    outcome = Prober(HealthCheck(path="/broken", interval=0.01, unhealthy_threshold=2)).wait_healthy(
        inst(server)
    )
    assert not outcome.healthy and outcome.attempts == 2 and "503" in outcome.detail


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def scripted(*results: ProbeResult):
    """A probe answering ``results`` in turn, then repeating the last one."""
    seq = list(results)

    def probe(check, instance):
        return seq.pop(0) if len(seq) > 1 else seq[0]

    return probe


UP, DOWN, NO = (
    ProbeResult(True, True, "200"),
    ProbeResult(False, True, "503"),
    ProbeResult(False, False, "refused"),
)


def run(check: HealthCheck, *results: ProbeResult):
    t = FakeTime()
    return Prober(check, probe=scripted(*results), clock=t.clock, sleep=t.sleep).wait_healthy(inst("h:1")), t


def test_warmup_then_healthy_threshold_in_a_row():
    outcome, t = run(HealthCheck(warmup=5, interval=1, healthy_threshold=2), NO, UP, DOWN, UP, UP)
    assert outcome.healthy and outcome.attempts == 5
    assert t.sleeps == [5, 1, 1, 1, 1]


def test_a_slow_start_is_judged_by_the_deadline_only():
    outcome, t = run(HealthCheck(interval=1, unhealthy_threshold=2, deadline=10), NO)
    assert not outcome.healthy and "not healthy within 10s" in outcome.detail
    assert t.now == 10 and outcome.attempts == 11  # probes at 0, 1, ..., 10 s


def test_wrong_answers_in_a_row_are_unhealthy_before_the_deadline():
    outcome, t = run(HealthCheck(interval=1, unhealthy_threshold=3, deadline=60), DOWN, NO, DOWN, DOWN, DOWN)
    assert not outcome.healthy and outcome.attempts == 5 and "3 failed probes in a row" in outcome.detail
    outcome, _ = run(HealthCheck(interval=1, unhealthy_threshold=0, deadline=5), DOWN)
    assert not outcome.healthy and "within 5s" in outcome.detail


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"type": "grpc"}, "health.type must be one of http, tcp, command"),
        ({"path": "healthz"}, "health.path must start with '/'"),
        ({"interval": 0}, "health.interval must be > 0"),
        ({"warmup": -1}, "health.warmup must be >= 0"),
        ({"healthy_threshold": 0}, "health.healthy_threshold must be at least 1"),
        ({"type": "command"}, "health.command is required"),
        ({"status": ["ok"]}, "health.status must be HTTP status codes"),
        ({"bogus": 1}, "health: unknown option\\(s\\) bogus"),
    ],
)
def test_bad_health_options_are_refused_naming_them(options, message):
    with pytest.raises(KilnError, match=message):
        HealthCheck.from_options(options)


def test_options_from_yaml_shapes():
    check = HealthCheck.from_options(
        {"status": 204, "command": "curl -fs http://{address}/", "interval": "0.5"}
    )
    assert (
        check.status == [204]
        and check.command == ["curl", "-fs", "http://{address}/"]
        and check.interval == 0.5
    )


# --- backends' own verdicts (the AWS provider's group health, a target group's target health)


def _instance(address: str = ""):
    return Instance(
        id="i-1", name="i-1", group="g", slot=0, version="web/1", probe_address=address, backend_address=""
    )


def test_backend_verdicts_come_first_and_decide_without_a_probe_address():
    direct = []

    def probe(check, instance):
        direct.append(instance.probe_address)
        return ProbeResult(True, True, "GET /healthz -> 200")

    def healthy(_i):
        return ProbeResult(True, True, "target healthy")

    def unhealthy(_i):
        return ProbeResult(False, True, "marked Unhealthy")

    def no_answer(_i):
        raise KilnError("throttled")

    check = HealthCheck()
    assert (
        with_backend_health([healthy, lambda _i: None], probe)(check, _instance()).detail == "target healthy"
    )
    assert direct == [], "no probe address: the backends decide"
    assert with_backend_health([healthy, unhealthy], probe)(check, _instance("10.0.0.1:80")).answered
    assert not with_backend_health([healthy, unhealthy], probe)(check, _instance("10.0.0.1:80")).ok
    result = with_backend_health([no_answer], probe)(check, _instance("10.0.0.1:80"))
    assert not result.ok and not result.answered and "throttled" in result.detail
    assert (
        with_backend_health([healthy], probe)(check, _instance("10.0.0.1:80")).detail == "GET /healthz -> 200"
    )
    assert direct == ["10.0.0.1:80"]
    assert not with_backend_health([lambda _i: None], probe)(check, _instance()).ok
