# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a roll-out replaces a group (``strategy``), and the analysis between its steps.

- ``rolling``: batches from ``batch_size``; with analysis, each batch that leaves old instances
  serving is baked and analysed before the next one.
- ``canary``: ``steps``, each a number of instances on the new version (``instances`` or ``percent``),
  baked for its ``bake_time`` while the new version takes ``weight`` percent of the traffic (load
  balancer weights), then analysed.
- ``blue_green``: a full new set started beside the old one without traffic, analysed through a
  preview (``preview_percent`` of the traffic), then switched at once by weights. The old set stays
  in service with weight 0 for ``rollback_window`` seconds: a roll-out back to its version within the
  window switches back without starting anything.

A bake is kept in the journal (``bake``: its step, start, snapshot of the load balancer's numbers and
the numbers so far), so a roll-out killed during a bake resumes the same window; each verdict is
appended to ``analysis``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .analysis import (
    FAILED,
    INCONCLUSIVE,
    SUCCESSFUL,
    ServerStats,
    Thresholds,
    parse_rate,
    snapshot_from_dict,
    snapshot_to_dict,
    verdict,
    windows,
)
from .interfaces import Instance
from .journal import _now
from .options import RolloutError, RolloutOptions, analysis_wanted, canary_steps, plan_batches

if TYPE_CHECKING:
    from .engine import Rollout

BASE_WEIGHT = 1  # what a server added to the load balancer starts with
POLL = 1.0  # seconds between looks at the load balancer's numbers during a bake


def thresholds(options: RolloutOptions) -> Thresholds:
    return Thresholds(parse_rate(options.max_error_rate), options.max_latency_ratio, options.min_requests)


def stats(lb: Any) -> dict[str, ServerStats] | None:
    """The load balancer's numbers, or None when it has none (analysis not available)."""
    method = getattr(lb, "stats", None)
    return method() if callable(method) else None


def check_available(rollout: Rollout) -> None:
    """Refuse, before anything changes, a roll-out whose analysis or weights the load balancer cannot give."""
    options = rollout.options
    if analysis_wanted(options) and stats(rollout.lb) is None:
        raise RolloutError(
            f"analysis (max_error_rate, max_latency_ratio) is not available with the load balancer of group "
            f"'{rollout.group}': it reports no numbers; drop the thresholds or use haproxy"
        )
    weighted = options.strategy == "blue_green" or any(s.get("weight") for s in options.steps or [])
    if weighted and not callable(getattr(rollout.lb, "set_weight", None)):
        raise RolloutError(
            f"strategy {options.strategy} needs load balancer weights, which the load balancer of group "
            f"'{rollout.group}' does not have"
        )


# ---------------------------------------------------------------------- planning


def forward_batches(
    options: RolloutOptions, todo: list[int], slots: list[int], done: int, passed: list[int]
) -> list[dict[str, Any]]:
    """The forward batches still to run: [{slots, step, bake_time, weight}], from one planner for the
    run and for check mode. ``done``: slots already on the target; ``passed``: canary steps passed."""
    analyse = analysis_wanted(options)
    if options.strategy == "blue_green":
        preview = {"step": "preview", "bake_time": options.bake_time, "weight": options.preview_percent}
        return [{"slots": list(todo), **preview}] if todo else []
    if options.strategy == "canary":
        out, rest = [], list(todo)
        for step in canary_steps(options, len(slots)):
            if step.index in passed:
                continue
            take = max(0, step.count - done)
            out.append(
                {"slots": rest[:take], "step": step.index, "bake_time": step.bake_time, "weight": step.weight}
            )
            rest, done = rest[take:], done + take
        return out
    return [
        {"slots": batch, "step": None, "bake_time": options.bake_time if analyse else 0.0, "weight": None}
        for batch in plan_batches(todo, options.batch_size, len(slots))
    ]


# ---------------------------------------------------------------------- weights


def _share_weights(share: int, new: list[Instance], old: list[Instance]) -> dict[str, int]:
    """Weights that send ``share`` percent of new requests to the ``new`` servers."""
    if not new or not old:
        return {}
    if share >= 100:
        return {**{i.name: 0 for i in old}, **{i.name: BASE_WEIGHT for i in new}}
    each = round(100 * share * len(old) / ((100 - share) * len(new)))
    return {**{i.name: 100 for i in old}, **{i.name: max(1, min(256, each)) for i in new}}


def set_weights(rollout: Rollout, weights: dict[str, int], instances: list[Instance]) -> None:
    """Apply ``weights`` (server name -> weight); the servers that gain traffic first."""
    order = sorted(instances, key=lambda i: -weights.get(i.name, BASE_WEIGHT))
    for inst in order:
        if inst.name in weights:
            rollout.lb.set_weight(inst, weights[inst.name])
    if weights:
        rollout.journal.event("weights", weights=weights)


# ---------------------------------------------------------------------- bake and analysis


def bake(
    rollout: Rollout,
    key: Any,
    bake_time: float,
    weight: int | None,
    new: list[Instance],
    old: list[Instance],
    standby: bool = False,
) -> str | None:
    """Bake the ``new`` servers beside the ``old`` ones for ``bake_time`` seconds and judge them.

    Returns the verdict (None when the run was asked to stop); a bake found in the journal for the same
    ``key`` goes on with its window.
    With ``weight``, the new servers take that share of the traffic during the bake; afterwards every
    server is back to the same weight, or (``standby``: a blue/green preview) the new ones to none.
    """
    doc = rollout.journal.doc
    opts = rollout.options
    pending = doc.get("bake")
    if pending and pending.get("step") == key:
        started = pending["started_at"]
        ends = _now() + bake_time if pending.get("verdict") == INCONCLUSIVE else started + bake_time
        rollout.journal.event("bake_resume", step=key, ends_in_s=round(max(0.0, ends - _now()), 3))
    else:
        started = _now()
        ends = started + bake_time
        first = stats(rollout.lb)
        pending = {
            "step": key,
            "started_at": started,
            "bake_time": bake_time,
            "weight": weight,
            "before": snapshot_to_dict(first or {}),
        }
        doc["bake"] = pending
        rollout.journal.event("bake_start", step=key, bake_time=bake_time, weight=weight)
    version_of = {i.name: i.version for i in [*new, *old]}
    target = rollout.target.ref
    baselines = sorted({i.version for i in old} - {target})
    if weight is not None:
        set_weights(rollout, _share_weights(weight, new, old), [*new, *old])
    before = snapshot_from_dict(pending["before"])
    while True:
        if rollout._interrupted():
            return None  # stopped: the bake stays in the journal and the next run goes on with it
        now_stats = stats(rollout.lb) or {}
        wins = windows(before, now_stats, version_of)
        pending["so_far"] = {v: w.to_dict() for v, w in wins.items()}
        pending["elapsed_s"] = round(_now() - started, 3)
        rollout.journal.save()
        left = ends - _now()
        if left <= 0:
            break
        time.sleep(min(POLL, left))
    limits = thresholds(opts)
    if limits.enabled:
        result, reasons = verdict(target, baselines, wins, limits)
    else:
        result, reasons = SUCCESSFUL, ["no thresholds: the bake is a wait"]
    record = {
        "step": key,
        "batch": len(doc["batches"]) - 1,
        "verdict": result,
        "reasons": reasons,
        "window_s": round(_now() - started, 3),
        "started_at": started,
        "weight": weight,
        "candidate": target,
        "baselines": baselines,
        "versions": pending["so_far"],
        "servers": {
            v: sorted(n for n, ver in version_of.items() if ver == v) for v in set(version_of.values())
        },
    }
    doc.setdefault("analysis", []).append(record)
    if weight is not None:
        after = {**{i.name: BASE_WEIGHT for i in old}, **{i.name: 0 if standby else BASE_WEIGHT for i in new}}
        set_weights(rollout, after, [*new, *old])
    if result == INCONCLUSIVE:
        pending["verdict"] = INCONCLUSIVE
    else:
        doc["bake"] = None
    rollout.journal.event("analysis", step=key, verdict=result, reasons=reasons, versions=pending["so_far"])
    return result


def judge(rollout: Rollout, result: str | None) -> bool:
    """Act on a verdict: True to go on; Failed stops (and rolls back), Inconclusive pauses, None (the run
    was asked to stop during the bake) ends the run."""
    doc = rollout.journal.doc
    if result == SUCCESSFUL:
        return True
    if result is None:
        return False
    if result == INCONCLUSIVE:
        doc["status"] = "paused"
        rollout.journal.event("paused", reason="analysis inconclusive: waiting for more requests")
        return False
    # The failing servers get no more requests while the old version comes back in their slots.
    new, old = step_instances(rollout)
    if new and old and callable(getattr(rollout.lb, "set_weight", None)):
        set_weights(rollout, {i.name: 0 for i in new}, new)
    rollout.journal.event("stopped", reason="analysis failed")
    if rollout.options.auto_rollback:
        doc["phase"] = "rollback"
        rollout.journal.event("rollback", reason="analysis failed")
    else:
        doc["status"] = "failed"
        rollout.journal.save()
    return False


def step_instances(rollout: Rollout) -> tuple[list[Instance], list[Instance]]:
    """(instances on the target, the others) among those in service."""
    live = [i for i in rollout.current.values() if i is not None]
    target = rollout.target.ref
    return [i for i in live if i.version == target], [i for i in live if i.version != target]


# ---------------------------------------------------------------------- blue/green


def standby_of(doc: dict[str, Any] | None, instances: list[Instance]) -> list[Instance]:
    """The live instances a journal keeps beside the in-service ones: a blue/green set before its
    switch, or the old set after it (for its rollback window, ``standby_until``)."""
    if not doc or not doc.get("standby"):
        return []
    names = {brief["name"] for brief in doc["standby"].values()}
    return [i for i in instances if i.name in names and i.alive]


def window_open(doc: dict[str, Any] | None) -> bool:
    return bool(doc) and (doc.get("standby_until") or 0) >= _now()


def blue_green(rollout: Rollout, slots: list[int]) -> None:
    """Bring up the new set beside the old, preview and analyse it, switch, keep the old set."""
    doc = rollout.journal.doc
    target = rollout.target
    if all(rollout._version_of(s) == target.ref for s in slots):
        return  # switched already (a run killed after the switch)
    standby: dict[str, Any] = doc.setdefault("standby", {})
    todo = [s for s in slots if rollout._version_of(s) != target.ref and str(s) not in standby]
    green = {int(s): inst for s, inst in rollout.standby.items()}
    if todo:
        record = rollout._open_batch(todo, "forward")
        with ThreadPoolExecutor(max_workers=min(len(todo), rollout.options.parallel or len(todo))) as pool:
            results = list(pool.map(lambda s: _launch_green(rollout, s), todo))
        for slot, (rec, inst) in zip(todo, results, strict=True):
            record["instances"].append(rec)
            if inst is None:
                doc["failed_slots"].append(slot)
            else:
                green[slot] = inst
                standby[str(slot)] = inst.to_dict()
        rollout._close_batch(record)
    if doc["failed_slots"]:
        rollout.journal.event("stopped", failed_slots=doc["failed_slots"], reason="new set unhealthy")
        _drop_green(rollout, green)
        doc["phase"] = "rollback"
        rollout.journal.event("rollback", reason="the old set never stopped serving")
        return
    new = list(green.values())
    old = [i for i in rollout.current.values() if i is not None]
    if old and (analysis_wanted(rollout.options) or rollout.options.bake_time):
        result = bake(
            rollout, "preview", rollout.options.bake_time, rollout.options.preview_percent, new, old
        )
        if result == FAILED:
            _drop_green(rollout, green)
        if not judge(rollout, result):
            return
    switch(rollout, new, old)
    doc["standby"] = {str(i.slot): i.to_dict() for i in old}
    doc["standby_until"] = _now() + rollout.options.rollback_window
    for inst in new:
        rollout._set(inst.slot, inst)
    rollout.standby = {i.slot: i for i in old}
    if not rollout.options.rollback_window:
        retire_standby(rollout, "no rollback window")
    else:
        rollout.journal.event("standby", instances=[i.name for i in old], until=doc["standby_until"])


def _launch_green(rollout: Rollout, slot: int) -> tuple[dict[str, Any], Instance | None]:
    rec: dict[str, Any] = {"slot": slot, "mode": "blue_green", "phase": "forward", "started_at": _now()}
    rec["old"] = rollout._brief(rollout.current.get(slot))
    new = None
    try:
        new, outcome = rollout._bring_up(slot, rollout.target, weight=0)
        rec["new"], rec["health"] = rollout._brief(new), outcome.to_dict()
        if outcome.healthy:
            rec["outcome"] = "replaced"
        else:
            rollout._retire(new, reason=f"unhealthy: {outcome.detail}", serving=None)
            new = None
            rec["outcome"], rec["detail"] = "failed", outcome.detail
    except Exception as exc:  # a provider or load balancer error fails this slot
        rec["outcome"], rec["detail"] = "failed", f"{type(exc).__name__}: {exc}"
        rollout.journal.event("error", slot=slot, detail=rec["detail"])
        if new is not None:
            rollout._retire(new, reason="failed launch", serving=None)
            new = None
    rec["finished_at"] = _now()
    rec["duration_s"] = round(rec["finished_at"] - rec["started_at"], 3)
    return rec, new


def _drop_green(rollout: Rollout, green: dict[int, Instance]) -> None:
    for inst in green.values():
        rollout._retire(inst, reason="new set rejected")
    rollout.journal.doc["standby"] = {}
    rollout.standby = {}


def switch(rollout: Rollout, to: list[Instance], away: list[Instance]) -> None:
    """Send every new request to ``to`` and none to ``away``, at once, both staying in service."""
    started = time.monotonic()
    weights = {**{i.name: 0 for i in away}, **{i.name: BASE_WEIGHT for i in to}}
    set_weights(rollout, weights, [*to, *away])
    rollout.journal.event(
        "switch",
        to=sorted({i.version for i in to}),
        servers=[i.name for i in to],
        duration_s=round(time.monotonic() - started, 3),
    )


def retire_standby(rollout: Rollout, reason: str) -> None:
    for inst in rollout.standby.values():
        rollout._retire(inst, reason=f"standby: {reason}")
    rollout.standby = {}
    rollout.journal.doc["standby"] = {}
    rollout.journal.save()


def switch_back(rollout: Rollout) -> bool:
    """Within the rollback window, when the old set runs the target: switch to it and retire the
    set in service; True when done (nothing was started)."""
    standby = rollout.standby
    if not standby or any(i.version != rollout.target.ref for i in standby.values()):
        return False
    doc = rollout.journal.doc
    away = [i for i in rollout.current.values() if i is not None]
    record = rollout._open_batch(sorted(standby), "forward")
    switch(rollout, list(standby.values()), away)
    for slot, inst in sorted(standby.items()):
        old = rollout.current.get(slot)
        rollout._set(slot, inst)
        record["instances"].append(
            {
                "slot": slot,
                "mode": "switch_back",
                "phase": "forward",
                "old": rollout._brief(old),
                "new": rollout._brief(inst),
                "outcome": "replaced",
            }
        )
    rollout.standby = {}
    doc["standby"] = {}
    rollout._close_batch(record)
    for inst in away:
        rollout._retire(inst, reason="switched back")
    return True
