# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``invoke status``: images, channels and groups at a glance, as one table or as JSON.

:func:`collect` gathers the facts (newest versions of each image with their test results, what each
channel points at and since when, each instance of each group with its version, health, age and
drift); :func:`render` prints them as one table that fits a terminal 100 columns wide.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from datetime import datetime
from typing import Any

from ..common.errors import KilnError
from .drift import DriftReport, GroupTarget, detect

WIDTH = 100
DRIFT_SHORT = {"version": "version", "revoked": "revoked", "image": "image", "filesystem": "fs", "lb": "lb"}


def inventory_targets(inventory: str, ansible_inventory: str = "ansible-inventory") -> list[GroupTarget]:
    """The groups of an Ansible inventory (hosts of ``kiln_groups``), read through ``ansible-inventory``."""
    cmd = [ansible_inventory, "-i", inventory, "--list"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except OSError as exc:
        raise KilnError(f"cannot run {ansible_inventory}: {exc}", cmd=cmd) from exc
    if proc.returncode != 0:
        raise KilnError(
            f"ansible-inventory could not read {inventory}: {proc.stderr.strip()[-500:]}",
            cmd=cmd,
            rc=proc.returncode,
            stderr=proc.stderr,
        )
    return GroupTarget.from_inventory(json.loads(proc.stdout))


def _iso_to_epoch(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _test_summary(tests: list[dict]) -> dict[str, Any] | None:
    if not tests:
        return None
    last = tests[-1]
    return {
        "passed": bool(last.get("passed")),
        "at": last.get("at"),
        "runs": len(tests),
        "scenario": (last.get("details") or {}).get("scenario"),
    }


def collect(
    catalog: Any,
    targets: list[GroupTarget],
    report: DriftReport | None = None,
    versions: int = 3,
    now: float | None = None,
    filesystem: bool = True,
) -> dict[str, Any]:
    """Everything ``invoke status`` shows, as one JSON-able document; changes nothing."""
    now = time.time() if now is None else now
    if report is None:
        report = detect(targets, catalog, filesystem=filesystem, strict=False)
    images = sorted(set(catalog.images()) | {t.image for t in targets})
    doc: dict[str, Any] = {"generated_at": now, "images": [], "channels": [], "groups": []}
    for image in images:
        listed = catalog.list_versions(image, limit=versions)
        doc["images"].append(
            {
                "image": image,
                "versions": [
                    {
                        "ref": v.ref,
                        "status": v.status,
                        "created_at": v.created_at,
                        "test": _test_summary(v.tests),
                        "flags": list(v.flags),
                    }
                    for v in listed
                ],
            }
        )
        for channel, ref in catalog.channels(image).items():
            last = catalog.channel_history(image, channel, limit=1)
            move = last[0] if last else {}
            try:
                trust = {"signed": catalog.verify_channel(image, channel)["signed"], "problem": None}
            except KilnError as exc:  # shown, not acted on: an edited row or a bad signature
                trust = {"signed": None, "problem": exc.msg}
            doc["channels"].append(
                {
                    "image": image,
                    "channel": channel,
                    "version": ref,
                    "since": move.get("at"),
                    "action": move.get("action"),
                    "by": move.get("principal"),
                    **trust,
                }
            )
    for group in report.groups:
        entry = group.to_dict()
        for inst in entry["instances"]:
            inst["age_s"] = round(now - inst["started_at"], 1) if inst["started_at"] else None
        doc["groups"].append(entry)
    doc["drifted"] = report.drifted
    return doc


# --------------------------------------------------------------------------- the table


def age(seconds: float | None) -> str:
    """3s, 4m12s, 2h05m, 3d04h: two units at most, so it stays short."""
    if seconds is None:
        return "-"
    s = max(int(seconds), 0)
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit}{(s % size) // subsize:02d}{sub}"
    return f"{s}s"


def _when(iso: str | None, now: float) -> str:
    ts = _iso_to_epoch(iso)
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) + f" ({age(now - ts)} ago)"


def _fit(rows: list[list[str]], width: int) -> list[str]:
    """Align columns (two spaces apart); shorten the widest column until a row fits in ``width``."""
    if not rows:
        return []
    ncols = max(len(r) for r in rows)
    rows = [r + [""] * (ncols - len(r)) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(ncols)]
    while sum(widths) + 2 * (ncols - 1) > width and max(widths) > 6:
        widths[widths.index(max(widths))] -= 1

    def cell(text: str, w: int) -> str:
        return text if len(text) <= w else text[: w - 1] + "…"

    return ["  ".join(cell(c, w).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def render(doc: dict[str, Any], width: int = WIDTH) -> str:
    """The status document as one table in ``width`` columns: images, channels, then each group."""
    now = doc.get("generated_at") or time.time()
    rows: list[list[str]] = [["IMAGE", "VERSION", "STATUS", "BUILT", "LAST TEST"]]
    for image in doc["images"]:
        if not image["versions"]:
            rows.append([image["image"], "-", "no versions", "", ""])
        for i, v in enumerate(image["versions"]):
            test = v["test"]
            if test is None:
                tested = "untested"
            else:
                verdict = "passed" if test["passed"] else "FAILED"
                scenario = f" ({test['scenario']})" if test.get("scenario") else ""
                tested = f"{verdict}{scenario} {_when(test['at'], now)}"
            rows.append(
                [image["image"] if i == 0 else "", v["ref"], v["status"], _when(v["created_at"], now), tested]
            )
    lines = _fit(rows, width)
    if doc["channels"]:
        rows = [["CHANNEL", "VERSION", "SINCE", "HOW"]]
        for ch in doc["channels"]:
            how = " by ".join(x for x in (ch["action"], ch["by"]) if x) or "-"
            rows.append(
                [f"{ch['image']}@{ch['channel']}", ch["version"] or "(none)", _when(ch["since"], now), how]
            )
        lines += [""] + _fit(rows, width)
        for ch in doc["channels"]:
            if ch.get("problem"):
                lines += textwrap.wrap(ch["problem"], width, initial_indent="  ! ", subsequent_indent="    ")
    for group in doc["groups"]:
        wants = group["expected"] or "no version"
        verdict = "DRIFT" if group["drifted"] else "in sync"
        if group.get("problem"):
            trouble = "no such channel" if "does not exist" in group["problem"] else "channel not trusted"
            verdict = f"{trouble}{'; DRIFT' if group['drifted'] else ''}"
        lines += [
            "",
            f"GROUP {group['group']}: follows {group['image']}@{group['channel']} = {wants}; {verdict}",
        ]
        if group.get("problem"):
            lines += textwrap.wrap(group["problem"], width, initial_indent="  ! ", subsequent_indent="    ")
        if not group["instances"]:
            lines.append("  no instances")
            continue
        rows = [["  INSTANCE", "SLOT", "VERSION", "HEALTH", "AGE", "DRIFT"]]
        paths = {f["instance"]: len(f["paths"]) for f in group["findings"] if f["kind"] == "filesystem"}
        for inst in group["instances"]:
            kinds = [
                f"fs:{paths[inst['name']]}" if k == "filesystem" else DRIFT_SHORT.get(k, k)
                for k in inst["drift"]
            ]
            rows.append(
                [
                    "  " + inst["name"],
                    str(inst["slot"]),
                    inst["version"] or "-",
                    inst["health"],
                    age(inst["age_s"]),
                    ",".join(kinds) or "-",
                ]
            )
        lines += _fit(rows, width)
    if not doc["groups"]:
        lines += ["", "no groups: add hosts to kiln_groups in the inventory"]
    return "\n".join(lines)
