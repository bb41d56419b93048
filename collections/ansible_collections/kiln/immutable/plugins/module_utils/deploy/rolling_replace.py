# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the ``rolling_replace`` module does, kept here so pytest reaches it without Ansible.

Picks the target version (a ref or what a channel points at), builds the provider and load balancer
named by the module's options, and runs (or, in check mode, plans) the roll-out.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from ..catalog.catalog import Catalog, CatalogError
from ..common.aws import OPTION_NAMES as AWS_OPTION_NAMES
from ..common.files import line_appender, private_dirs
from ..observe import report
from ..rollout.engine import Rollout
from ..rollout.health import HealthCheck, Prober, probe_once, with_backend_health
from ..rollout.interrupt import StopRequest, stop_when_asked
from ..rollout.journal import SharedJournal
from ..rollout.lock import LeaseLock
from ..rollout.options import RolloutError, RolloutOptions, check_deployable
from .backends import LOAD_BALANCERS, PROVIDERS, build_backends

OPTION_NAMES = tuple(RolloutOptions.__dataclass_fields__)
FAILED = ("rolled_back", "failed")


def resolve_target(catalog: Catalog, version: str | None, channel: str | None, image: str | None) -> Any:
    """The Version to roll out; refuses an unknown version or channel and a revoked version, naming them."""
    if bool(version) == bool(channel):
        raise RolloutError("give exactly one of version (like web/7) or channel (with image)")
    try:
        if version:
            target = catalog.get(version, image)
        else:
            if not image:
                raise RolloutError(f"image is required with channel {channel!r}")
            target = catalog.channel_version(image, channel)
            if target is None:
                known = catalog.channels(image)
                if channel not in known:
                    names = ", ".join(sorted(known)) or "none yet"
                    raise RolloutError(f"channel {channel!r} of image {image!r} is unknown (known: {names})")
                raise RolloutError(f"channel {channel!r} of image {image!r} points at no version")
    except CatalogError as exc:
        raise RolloutError(f"{'version' if version else 'channel'}: {exc}") from exc
    check_deployable(target)
    return target


def backend_checks(target: Any, *backends: Any) -> None:
    """Each backend's own refusal of ``target`` (``check(version)``: unknown group, AMI missing, ...)."""
    for backend in backends:
        check = getattr(backend, "check", None)
        if callable(check):
            check(target)


def backend_probe(*backends: Any):
    """The health probe: the backends' own verdicts (``health(instance)``) first, then the direct probe."""
    hooks = [b.health for b in backends if callable(getattr(b, "health", None))]
    return with_backend_health(hooks, probe_once) if hooks else probe_once


class ProgressLog:
    """One line per roll-out event in ``progress.log`` beside the journal, for a terminal to follow."""

    def __init__(self, path: str):
        self.path = path
        private_dirs(os.path.dirname(path))
        self._append = line_appender(path)

    def __call__(self, event: dict[str, Any]) -> None:
        fields = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("t", "at", "event"))
        with contextlib.suppress(OSError):  # a full disk: the journal says so
            self._append(f"{event['at']} {event['event']} {fields}")


def execute(
    params: dict[str, Any],
    check: bool,
    provider: Any = None,
    load_balancer: Any = None,
) -> dict[str, Any]:
    """Run the module: ``params`` are its options; ``provider``/``load_balancer`` replace the built ones."""
    group = params["group"]
    options = RolloutOptions(**{k: params[k] for k in OPTION_NAMES if params.get(k) is not None})
    check_health = HealthCheck.from_options(params.get("health"))
    with Catalog(params.get("catalog")) as catalog, contextlib.ExitStack() as stack:
        target = resolve_target(catalog, params.get("version"), params.get("channel"), params.get("image"))
        if provider is None:
            provider, built_lb = build_backends(
                group,
                params.get("provider") or PROVIDERS[0],
                params.get("provider_options"),
                params.get("load_balancer") or LOAD_BALANCERS[0],
                params.get("load_balancer_options"),
                params.get("catalog"),
                {k: params.get(k) for k in AWS_OPTION_NAMES},
            )
            load_balancer = load_balancer or built_lb
        backend_checks(target, provider, load_balancer)
        # Journal, lock and results live in common.state_dir() ($KILN_STATE_DIR), like the load balancer's.
        prober = Prober(check_health, probe=backend_probe(provider, load_balancer))
        rollout = Rollout(
            group, target, provider, load_balancer, prober, options, resolve_version=catalog.get
        )
        # A shared catalog (PostgreSQL) keeps the group's lease and journal, for every runner to see.
        shared = catalog.shared_rollouts()
        if shared:
            stack.callback(shared.close)
            rollout.lock = LeaseLock(shared, group, ttl_s=options.lease_ttl)
            rollout.journal_keeper = SharedJournal(shared, group)
        if check:
            plan = rollout.plan()
            before = {str(s["slot"]): s["from"] for b in plan["batches"] for s in b["slots"]}
            after = {str(s["slot"]): s["to"] for b in plan["batches"] for s in b["slots"]}
            return {
                "changed": plan["changed"],
                "status": "planned",
                "plan": plan,
                "target": target.ref,
                "diff": {"before": before, "after": after},
            }
        rollout.on_event = ProgressLog(os.path.join(rollout.folder, "progress.log"))
        with stop_when_asked(StopRequest()) as rollout.stop:
            result = rollout.run()
    result["report_path"] = report.write_html(result)  # the page beside the result JSON
    touched = {s for b in result["batches"] for s in map(str, b["slots"])}
    result["diff"] = {
        "before": {s: v for s, v in result["before"].items() if s in touched},
        "after": {s: v for s, v in result["after"].items() if s in touched},
    }
    return result


def module_result(params: dict[str, Any], check: bool) -> dict[str, Any]:
    """The module's result; a roll-out that did not reach its target raises, carrying the result."""
    result = execute(params, check)
    message = failure_message(result)
    if message:
        raise RolloutError(message, **result)
    if result["status"] == "partial":
        result["warnings"] = [
            f"slot(s) {result['failed_slots']} kept their previous version: the new instance failed"
        ]
    return result


def failure_message(result: dict[str, Any]) -> str | None:
    """The module's failure message for a roll-out that did not reach its target, else None."""
    if result["status"] == "interrupted":
        stop = next((e for e in reversed(result["events"]) if e["event"] == "interrupted"), {})
        return (
            f"roll-out of group {result['group']} to {result['target']} was interrupted "
            f"({stop.get('reason') or 'stop requested'}) at a safe point with {stop.get('in_service')} "
            "instance(s) in service; run it again to resume"
        )
    if result["status"] not in FAILED:
        return None
    failed = ", ".join(map(str, result["failed_slots"])) or "none"
    details = [
        i.get("detail", "") for b in result["batches"] for i in b["instances"] if i["outcome"] == "failed"
    ]
    why = f" ({details[0]})" if details else ""
    verdicts = [a for a in result.get("analysis") or [] if a["verdict"] == "Failed"]
    if verdicts:
        why = f" (analysis of {verdicts[-1]['step']} failed: {'; '.join(verdicts[-1]['reasons'])})"
        failed = "of the analysed batch"
    if result["status"] == "rolled_back":
        return (
            f"roll-out of group {result['group']} to {result['target']} stopped after failed slot(s) {failed}"
            f"{why} and was rolled back: every slot it touched is back to what it ran before"
        )
    return f"roll-out of group {result['group']} to {result['target']} failed in slot(s) {failed}{why}"
