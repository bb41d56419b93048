"""Analysis: windows between two snapshots of a load balancer's numbers, and the verdict."""

from __future__ import annotations

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.loadbalancers.haproxy.loadbalancer import (
    parse_stat,
    server_stats,
)
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.analysis import (
    FAILED,
    INCONCLUSIVE,
    SUCCESSFUL,
    ServerStats,
    Thresholds,
    Window,
    parse_rate,
    verdict,
    windows,
)

LIMITS = Thresholds(max_error_rate=0.01, max_latency_ratio=1.5, min_requests=100)


def test_a_window_is_the_difference_per_version():
    before = {"a": ServerStats(1000, 5, 2.0), "b": ServerStats(10, 0, 2.0)}
    after = {
        "a": ServerStats(1300, 6, 2.0),
        "b": ServerStats(310, 0, 4.0),
        "c": ServerStats(100, 20, 10.0),  # new in the window: counts from zero
        "lb-only": ServerStats(50, 0, 1.0),  # not an instance of the group: left out
    }
    wins = windows(before, after, {"a": "web/1", "b": "web/1", "c": "web/2"})
    assert wins["web/1"].requests == 600 and wins["web/1"].errors == 1
    assert wins["web/1"].latency_ms == pytest.approx((300 * 2.0 + 300 * 4.0) / 600)
    assert (wins["web/2"].requests, wins["web/2"].errors, wins["web/2"].latency_ms) == (100, 20, 10.0)
    assert set(wins) == {"web/1", "web/2"}


def test_a_counter_that_went_down_counts_from_zero():
    wins = windows({"a": ServerStats(500, 9, 1.0)}, {"a": ServerStats(40, 1, 1.0)}, {"a": "web/2"})
    assert (wins["web/2"].requests, wins["web/2"].errors) == (40, 1)


@pytest.mark.parametrize(
    ("new", "old", "expected", "words"),
    [
        (Window(200, 0, 2.0), Window(600, 0, 2.0), SUCCESSFUL, "200 request(s)"),
        (Window(200, 40, 2.0), Window(600, 0, 2.0), FAILED, "error rate of web/2 20.00%"),
        (Window(200, 2, 2.0), Window(600, 0, 2.0), SUCCESSFUL, "1.00%"),  # at the limit passes
        (Window(200, 8, 2.0), Window(600, 18, 2.0), SUCCESSFUL, "4.00%"),  # no worse than the baseline
        (Window(200, 0, 900.0), Window(600, 0, 2.0), FAILED, "over max_latency_ratio 1.5"),
        (Window(200, 0, 1.2), Window(600, 0, 0.2), SUCCESSFUL, ""),  # sub-millisecond jitter
        (Window(99, 50, 900.0), Window(600, 0, 2.0), INCONCLUSIVE, "fewer than min_requests 100"),
        (Window(200, 0, 2.0), Window(20, 0, 2.0), INCONCLUSIVE, "latency cannot be compared"),
    ],
)
def test_verdicts(new, old, expected, words):
    result, reasons = verdict("web/2", ["web/1"], {"web/2": new, "web/1": old}, LIMITS)
    assert result == expected, reasons
    assert words in " ".join(reasons)


def test_errors_are_judged_even_when_the_baseline_saw_little_traffic():
    limits = Thresholds(max_error_rate=0.01, max_latency_ratio=None, min_requests=100)
    result, _ = verdict("web/2", ["web/1"], {"web/2": Window(150, 0, 1.0)}, limits)
    assert result == SUCCESSFUL
    result, reasons = verdict("web/2", ["web/1"], {"web/2": Window(150, 30, 1.0)}, limits)
    assert result == FAILED, reasons


@pytest.mark.parametrize(("value", "rate"), [("1%", 0.01), ("0.5%", 0.005), (0.02, 0.02), (None, None)])
def test_error_rates(value, rate):
    assert parse_rate(value) == rate


@pytest.mark.parametrize("value", ["lots", "150%", -0.1, True])
def test_bad_error_rates_are_refused_naming_the_option(value):
    with pytest.raises(ValueError, match="max_error_rate"):
        parse_rate(value)


HEADER = (
    "# pxname,svname,qcur,scur,econ,eresp,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,ttime,"
    "srv_abrt,"
)


def test_haproxy_numbers_per_server():
    text = "\n".join(
        [
            HEADER,
            "web,FRONTEND,0,0,,,0,900,0,0,0,0,,,",
            "app,kiln-g-0-aa,0,1,0,0,0,380,0,10,20,0,3,0,",
            # Three of its 200s were cut short by the server: failed requests for their clients.
            "app,kiln-g-1-bb,0,0,2,1,0,400,0,0,0,0,250,3,",
            "app,BACKEND,0,1,2,1,0,780,0,10,20,0,120,3,",
        ]
    )
    stats = {name: server_stats(row) for name, row in parse_stat(text, "app").items()}
    assert stats == {
        "kiln-g-0-aa": ServerStats(requests=410, errors=20, time_ms=3.0),
        "kiln-g-1-bb": ServerStats(requests=402, errors=5, time_ms=250.0),
    }
