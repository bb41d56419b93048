# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Roll-out reports: a static HTML page with an SVG timeline, made from a roll-out's result JSON.

The result (``<state_dir>/rollouts/<group>/<id>.json``, written by the roll-out engine) holds the
batches and a timestamped event list; :func:`build_timeline` turns the events into what the picture
shows: each slot's instances over time, coloured by version (starting, in service, draining), the
batches, every health check outcome, the number of instances in service per version, and, when a load
was measured during the roll-out, the request rate and error rate.

A measured load is read from the result's ``load`` key (or passed to :func:`render_html`)::

    {"samples": [{"t": <epoch seconds>, "requests": 100, "failed": 0}, ...]}

one sample per interval, each counting the requests sent and failed in it; :func:`bucket_load` makes
it from one ``(epoch seconds, ok)`` pair per request.

The page has no external assets and no script; its Content-Security-Policy forbids loading any, so a
page that tried would show the error in the browser.
"""

from __future__ import annotations

import glob
import html
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..common.errors import KilnError
from ..common.files import private_dirs
from ..common.paths import state_dir

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7"]
STATE_OPACITY = {"starting": 0.35, "serving": 1.0, "draining": 0.55, "failed": 0.35}
SLOT_EVENTS = ("healthy", "unhealthy", "error", "restored", "restore_failed")  # drawn on the slot's lane
GLOBAL_EVENTS = (
    "start",
    "resume",
    "checkpoint",
    "stopped",
    "rollback",
    "interrupted",
    "finish",
    "analysis",
    "switch",
)
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


@dataclass
class Segment:
    slot: int
    instance: str | None
    version: str | None
    state: str  # starting | serving | draining | failed
    start: float
    end: float
    track: int = 0  # row within the slot's lane: with surge, two instances share a slot for a while


@dataclass
class Marker:
    t: float
    slot: int | None  # None: the whole roll-out (checkpoint, rollback, ...)
    kind: str
    label: str


@dataclass
class Band:
    index: int
    phase: str
    start: float
    end: float
    outcome: str
    slots: list[int]


@dataclass
class LoadSample:
    t: float
    requests: int
    failed: int

    @property
    def error_rate(self) -> float:
        return self.failed / self.requests if self.requests else 0.0


@dataclass
class Timeline:
    t0: float
    t1: float
    slots: list[int]
    versions: list[str]
    segments: list[Segment] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    batches: list[Band] = field(default_factory=list)
    in_service: list[tuple[float, dict[str, int]]] = field(default_factory=list)  # step series
    tracks: dict[int, int] = field(default_factory=dict)  # slot -> rows its lane needs
    load: list[LoadSample] = field(default_factory=list)


# --------------------------------------------------------------------------- reading results


def load_result(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except OSError as exc:
        raise KilnError(f"cannot read roll-out result {path}: {exc.strerror}", path=path) from exc
    except json.JSONDecodeError as exc:
        raise KilnError(
            f"roll-out result {path} is not JSON (line {exc.lineno}): {exc.msg}", path=path
        ) from exc
    if not isinstance(doc, dict) or "events" not in doc or "group" not in doc:
        raise KilnError(f"{path} is not a roll-out result (no group or events)", path=path)
    return doc


def result_files(root: str | None = None, group: str | None = None) -> list[str]:
    """Every roll-out result under ``root`` (default ``<state_dir>/rollouts``), oldest first."""
    root = root or os.path.join(state_dir(), "rollouts")
    pattern = os.path.join(root, glob.escape(group) if group else "*", "*.json")
    found = [p for p in glob.glob(pattern) if os.path.basename(p) != "journal.json"]

    def started(path: str) -> tuple[float, str]:
        try:
            return float(load_result(path).get("started_at") or 0), path
        except KilnError:
            return os.path.getmtime(path), path

    return sorted(found, key=started)


def newest_result(root: str | None = None, group: str | None = None) -> str:
    """The newest roll-out result; an error that says where kiln looked when there is none."""
    files = result_files(root, group)
    if not files:
        where = root or os.path.join(state_dir(), "rollouts")
        scope = f" of group '{group}'" if group else ""
        raise KilnError(f"no roll-out result{scope} under {where}: run a roll-out first", path=where)
    return files[-1]


# --------------------------------------------------------------------------- the timeline model


def _load_samples(load: Any) -> list[LoadSample]:
    samples = (load or {}).get("samples") if isinstance(load, dict) else load
    out = []
    for item in samples or []:
        if isinstance(item, dict):
            failed = int(item.get("failed", item.get("errors", 0)) or 0)
            requests = item.get("requests")
            requests = int(requests) if requests is not None else int(item.get("ok", 0) or 0) + failed
            out.append(LoadSample(float(item["t"]), requests, failed))
        else:  # [t, requests, failed]
            out.append(LoadSample(float(item[0]), int(item[1]), int(item[2])))
    return sorted(out, key=lambda s: s.t)


def bucket_load(requests: Any, interval: float = 1.0) -> dict[str, Any]:
    """A measured load in the report's form, from one ``(epoch seconds, ok)`` pair per request."""
    if interval <= 0:
        raise KilnError(f"interval must be > 0, got {interval}")
    counts: dict[int, list[int]] = {}
    for t, ok in requests:
        slot = counts.setdefault(int(t // interval), [0, 0])
        slot[0] += 1
        slot[1] += 0 if ok else 1
    return {
        "interval": interval,
        "samples": [
            {"t": key * interval, "requests": n, "failed": failed}
            for key, (n, failed) in sorted(counts.items())
        ],
    }


def build_timeline(doc: dict[str, Any], load: Any = None) -> Timeline:
    """What the picture shows, from a roll-out result's events."""
    events = sorted(doc.get("events") or [], key=lambda e: e.get("t", 0))
    times = [e["t"] for e in events if "t" in e]
    t0 = float(doc.get("started_at") or (times[0] if times else time.time()))
    t1 = float(doc.get("finished_at") or (times[-1] if times else t0))
    samples = _load_samples(load if load is not None else doc.get("load"))
    if samples:
        t0, t1 = min(t0, samples[0].t), max(t1, samples[-1].t)
    t1 = max(t1, t0 + 1e-3)
    tl = Timeline(t0=t0, t1=t1, slots=[], versions=[], load=samples)

    slots: set[int] = {int(s) for s in (doc.get("before") or {})}
    versions: list[str] = []

    def note_version(ref: str | None) -> None:
        if ref and ref not in versions:
            versions.append(ref)

    # name -> [slot, version, state, since]; placeholders "@<slot>" for instances there before
    open_: dict[str, list[Any]] = {}
    for slot, ref in sorted((doc.get("before") or {}).items(), key=lambda kv: int(kv[0])):
        if ref:
            open_[f"@{slot}"] = [int(slot), ref, "serving", t0]
            note_version(ref)
    note_version(doc.get("target"))

    def close(name: str, t: float) -> list[Any]:
        slot, ref, state, since = open_[name]
        if t > since:
            tl.segments.append(Segment(slot, None if name.startswith("@") else name, ref, state, since, t))
        return open_[name]

    def switch(name: str, state: str, t: float) -> None:
        entry = close(name, t)
        entry[2], entry[3] = state, t

    starts: dict[int, float] = {}
    for e in events:
        kind, t, slot = e.get("event"), float(e.get("t", t0)), e.get("slot")
        name = e.get("instance")
        if isinstance(slot, int) and slot >= 0:
            slots.add(slot)
        if kind == "batch_start":
            starts[e["batch"]] = t
        elif kind == "batch_end":
            tl.batches.append(
                Band(e["batch"], e.get("phase", ""), starts.pop(e["batch"], t), t, e.get("outcome", ""), [])
            )
        elif kind in GLOBAL_EVENTS and kind not in ("start", "finish"):
            tl.markers.append(Marker(t, None, kind, _describe(e)))
        elif kind in SLOT_EVENTS and isinstance(slot, int):
            tl.markers.append(Marker(t, slot, kind, _describe(e)))
        if not name or not isinstance(slot, int):
            continue
        if kind == "launched":
            open_[name] = [slot, e.get("version"), "starting", t]
            note_version(e.get("version"))
            continue
        if name not in open_ and f"@{slot}" in open_:  # first sight of an instance that was there before
            open_[name] = open_.pop(f"@{slot}")
            for seg in tl.segments:
                if seg.slot == slot and seg.instance is None:
                    seg.instance = name
        if name not in open_:
            continue
        if kind == "unhealthy":
            switch(name, "failed", t)
        elif kind == "enabled":
            switch(name, "serving", t)
        elif kind == "drain":
            switch(name, "draining", t)
        elif kind == "terminated":
            close(name, t)
            del open_[name]
    for name in list(open_):
        close(name, t1)
    for index, start in starts.items():  # a batch the run never finished (interrupted)
        tl.batches.append(Band(index, "", start, t1, "unfinished", []))
    batch_slots = {b.get("index"): b.get("slots") or [] for b in doc.get("batches") or []}
    for band in tl.batches:
        band.slots = list(batch_slots.get(band.index, []))
        slots.update(band.slots)
    tl.batches.sort(key=lambda b: (b.start, b.index))
    tl.slots = sorted(slots)
    for seg in tl.segments:
        note_version(seg.version)
    tl.versions = versions
    tl.in_service = _in_service(tl.segments, t0)
    tl.tracks = _assign_tracks(tl.segments)
    return tl


def _assign_tracks(segments: list[Segment]) -> dict[int, int]:
    """Give each instance of a slot the first row free when it starts; returns rows per slot."""
    spans: dict[tuple[int, str], list[float]] = {}
    for seg in segments:
        key = (seg.slot, seg.instance or "")
        span = spans.setdefault(key, [seg.start, seg.end])
        span[0], span[1] = min(span[0], seg.start), max(span[1], seg.end)
    rows: dict[int, list[float]] = {}  # slot -> end of the last instance on each row
    track_of: dict[tuple[int, str], int] = {}
    for key, (start, end) in sorted(spans.items(), key=lambda kv: kv[1][0]):
        ends = rows.setdefault(key[0], [])
        free = next((i for i, last in enumerate(ends) if last <= start), len(ends))
        if free == len(ends):
            ends.append(end)
        ends[free] = end
        track_of[key] = free
    for seg in segments:
        seg.track = track_of[(seg.slot, seg.instance or "")]
    return {slot: len(ends) for slot, ends in rows.items()}


def _fields(e: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v}" for k, v in e.items() if k not in ("t", "at", "event") and v not in (None, "", [])
    )


def _describe(e: dict[str, Any]) -> str:
    fields = _fields(e)
    return f"{e.get('at', '')} {e.get('event')}" + (f": {fields}" if fields else "")


def _in_service(segments: list[Segment], t0: float) -> list[tuple[float, dict[str, int]]]:
    """Instances in service per version as a step series: (time, {version: count}) at every change."""
    changes: list[tuple[float, int, str]] = []
    for seg in segments:
        if seg.state == "serving" and seg.version:
            changes += [(seg.start, 1, seg.version), (seg.end, -1, seg.version)]
    counts: dict[str, int] = {}
    series: list[tuple[float, dict[str, int]]] = [(t0, {})]
    for t, delta, ref in sorted(changes, key=lambda c: (c[0], c[1])):
        counts[ref] = counts.get(ref, 0) + delta
        snapshot = {k: v for k, v in counts.items() if v}
        if series and series[-1][0] == t:
            series[-1] = (t, snapshot)
        else:
            series.append((t, snapshot))
    return series


# --------------------------------------------------------------------------- drawing

WIDTH = 1000
LEFT = 120
RIGHT = 20
LANE = 26
AXIS = 28


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float) -> str:
    text = f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return text.rstrip("0").rstrip(".")


class _Scale:
    def __init__(self, t0: float, t1: float):
        self.t0, self.span = t0, max(t1 - t0, 1e-3)

    def x(self, t: float) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * (t - self.t0) / self.span


def _ticks(span: float) -> list[float]:
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if span / step <= 10:
            break
    n = int(span / step) + 1
    return [round(i * step, 3) for i in range(n)]


def _intervals(samples: list[LoadSample]) -> list[float]:
    """How long each sample counted requests: until the next sample; the last as long as the one before."""
    steps = [nxt.t - cur.t for cur, nxt in zip(samples, samples[1:], strict=False)]
    return steps + [steps[-1] if steps else 1.0]


def version_colors(versions: list[str]) -> dict[str, str]:
    return {ref: PALETTE[i % len(PALETTE)] for i, ref in enumerate(versions)}


def render_svg(tl: Timeline) -> str:
    """The timeline as one SVG: batches, slot lanes, instances in service by version, load."""
    sc = _Scale(tl.t0, tl.t1)
    colors = version_colors(tl.versions)
    parts: list[str] = []
    y = 34  # room for batch labels
    lanes_top = y
    lane_y = {slot: lanes_top + i * LANE for i, slot in enumerate(tl.slots)}
    lanes_bottom = lanes_top + LANE * max(len(tl.slots), 1)

    # batches: bands behind the lanes, labelled above them
    for band in tl.batches:
        x0, x1 = sc.x(band.start), max(sc.x(band.end), sc.x(band.start) + 2)
        fill = (
            "#fde2e1" if band.outcome == "failed" else ("#fff4d6" if band.phase == "rollback" else "#e8eef7")
        )
        title = (
            f"batch {band.index + 1} ({band.phase}): slots {', '.join(map(str, band.slots))}, "
            f"{band.outcome}, {_fmt(band.end - band.start)}s"
        )
        parts.append(
            f'<g class="batch" id="batch-{band.index}" data-batch="{band.index}" '
            f'data-outcome="{_esc(band.outcome)}">'
            f"<title>{_esc(title)}</title>"
            f'<rect x="{x0:.1f}" y="4" width="{x1 - x0:.1f}" height="{lanes_bottom - 4}" fill="{fill}" '
            f'stroke="#9aa8bd" stroke-dasharray="3 2"/>'
            f'<text x="{x0 + 3:.1f}" y="16" class="small">Batch {band.index + 1}</text>'
            f'<text x="{x0 + 3:.1f}" y="28" class="tiny">{_esc(band.phase)} · {_esc(band.outcome)}</text></g>'
        )
    # slot lanes
    for slot, ly in lane_y.items():
        parts.append(
            f'<text x="{LEFT - 8}" y="{ly + LANE / 2 + 4:.1f}" text-anchor="end" class="small">'
            f"slot {slot}</text>"
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ly + LANE:.1f}" y2="{ly + LANE:.1f}" '
            'stroke="#eee"/>'
        )
    for seg in tl.segments:
        if seg.slot not in lane_y:
            continue
        x0, x1 = sc.x(seg.start), sc.x(seg.end)
        row_h = (LANE - 8) / max(tl.tracks.get(seg.slot, 1), 1)
        ly = lane_y[seg.slot] + 4 + seg.track * row_h
        title = f"{seg.instance or 'instance'} {seg.version} {seg.state} {_fmt(seg.end - seg.start)}s"
        parts.append(
            f'<rect class="segment {seg.state}" x="{x0:.1f}" y="{ly}" width="{max(x1 - x0, 1):.1f}" '
            f'height="{row_h - 1:.1f}" fill="{colors.get(seg.version or "", "#999")}" '
            f'fill-opacity="{STATE_OPACITY[seg.state]}"><title>{_esc(title)}</title></rect>'
        )
    # health checks and per-slot events
    glyph = {"healthy": ("#1a7f37", "✓"), "unhealthy": ("#cf222e", "✗"), "restored": ("#1a7f37", "↺")}
    last_label: float | None = None
    for m in sorted(tl.markers, key=lambda m: m.t):
        x = sc.x(m.t)
        if m.slot is None:
            # stagger the labels of events that happen close together
            label_y = lanes_bottom - 3 - (10 if last_label is not None and x - last_label < 50 else 0)
            last_label = x
            parts.append(
                f'<g class="event {m.kind}"><title>{_esc(m.label)}</title>'
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="4" y2="{lanes_bottom}" stroke="#555" '
                'stroke-dasharray="2 3"/>'
                f'<text x="{x + 2:.1f}" y="{label_y}" class="tiny">{_esc(m.kind)}</text></g>'
            )
        elif m.slot in lane_y:
            color, char = glyph.get(m.kind, ("#cf222e", "!"))
            cy = lane_y[m.slot] + LANE / 2
            parts.append(
                f'<g class="health {m.kind}"><title>{_esc(m.label)}</title>'
                f'<circle cx="{x:.1f}" cy="{cy:.1f}" r="7" fill="#fff" stroke="{color}"/>'
                f'<text x="{x:.1f}" y="{cy + 4:.1f}" text-anchor="middle" class="small" '
                f'fill="{color}">{char}</text></g>'
            )
    y = lanes_bottom + 22

    # instances in service, stacked by version
    chart_h = 90
    peak = max([sum(counts.values()) for _t, counts in tl.in_service] + [1])
    parts.append(f'<text x="{LEFT - 8}" y="{y + 10}" text-anchor="end" class="small">in service</text>')
    parts.append(f'<text x="{LEFT - 8}" y="{y + 24}" text-anchor="end" class="tiny">(by version)</text>')
    base = y + chart_h
    steps = tl.in_service + [(tl.t1, tl.in_service[-1][1] if tl.in_service else {})]
    for ref in reversed(tl.versions):
        below = tl.versions[tl.versions.index(ref) + 1 :]
        top_pts, bottom_pts = [], []
        for (t, counts), (t_next, _next) in zip(steps, steps[1:], strict=False):
            low = sum(counts.get(v, 0) for v in below)
            high = low + counts.get(ref, 0)
            for tt in (t, t_next):
                top_pts.append((sc.x(tt), base - chart_h * high / peak))
                bottom_pts.append((sc.x(tt), base - chart_h * low / peak))
        if not any(b[1] - a[1] for a, b in zip(top_pts, bottom_pts, strict=True)):
            continue
        pts = top_pts + bottom_pts[::-1]
        parts.append(
            f'<polygon class="in-service" data-version="{_esc(ref)}" fill="{colors[ref]}" '
            f'points="{" ".join(f"{px:.1f},{py:.1f}" for px, py in pts)}">'
            f"<title>{_esc(ref)} in service</title></polygon>"
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}" stroke="#888"/>'
        f'<text x="{LEFT - 4}" y="{y + 8}" text-anchor="end" class="tiny">{peak}</text>'
    )
    y = base + 22

    # load: requests per second (bars) and error rate (line)
    if tl.load:
        load_h = 70
        base = y + load_h
        parts.append(f'<text x="{LEFT - 8}" y="{y + 10}" text-anchor="end" class="small">load</text>')
        parts.append(f'<text x="{LEFT - 8}" y="{y + 24}" text-anchor="end" class="tiny">error rate</text>')
        most = max(s.requests for s in tl.load) or 1
        line = []
        for s, step in zip(tl.load, _intervals(tl.load), strict=True):
            x0, x1 = sc.x(s.t), min(sc.x(s.t + step), WIDTH - RIGHT)
            h = load_h * s.requests / most
            parts.append(
                f'<rect class="load" x="{x0:.1f}" y="{base - h:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="#d0d7de">'
                f"<title>+{_fmt(s.t - tl.t0)}s: {s.requests} requests, {s.failed} failed</title></rect>"
            )
            line.append(f"{(x0 + x1) / 2:.1f},{base - load_h * s.error_rate:.1f}")
        parts.append(
            '<polyline class="error-rate" fill="none" stroke="#cf222e" stroke-width="2" '
            f'points="{" ".join(line)}"/>'
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}" stroke="#888"/>'
            f'<text x="{WIDTH - RIGHT}" y="{y + 8}" text-anchor="end" class="tiny">'
            f"bars: requests (max {most}); red: failed share (top = 100%)</text>"
        )
        y = base + 22

    # time axis
    for tick in _ticks(tl.t1 - tl.t0):
        x = sc.x(tl.t0 + tick)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y - 16}" y2="{y - 10}" stroke="#888"/>'
            f'<text x="{x:.1f}" y="{y + 2}" text-anchor="middle" class="tiny">+{tick:g}s</text>'
        )
    y += AXIS - 10
    # legend
    x = LEFT
    for ref in tl.versions:
        parts.append(
            f'<rect x="{x}" y="{y}" width="12" height="12" fill="{colors[ref]}"/>'
            f'<text x="{x + 16}" y="{y + 10}" class="small">{_esc(ref)}</text>'
        )
        x += 24 + 8 * len(ref)
    parts.append(
        f'<text x="{x + 10}" y="{y + 10}" class="tiny">pale: starting or failed; half: draining; '
        "✓/✗: health check</text>"
    )
    height = y + 22
    style = "<style>.small{font:12px sans-serif;fill:#24292f}.tiny{font:10px sans-serif;fill:#57606a}</style>"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="timeline" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-label="roll-out timeline">{style}'
        + "".join(parts)
        + "</svg>"
    )


def _when(ts: Any) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(ts)))


def render_analysis(doc: dict[str, Any]) -> str:
    """The analysis section: per step, requests, errors and latency per version, and the verdict."""
    out = []
    for a in doc.get("analysis") or []:
        rows = "".join(
            f"<tr><td>{_esc(ref)}{' (new)' if ref == a.get('candidate') else ''}</td>"
            f"<td>{_esc(n.get('requests'))}</td><td>{_esc(n.get('errors'))}</td>"
            f"<td>{100.0 * float(n.get('error_rate') or 0):.2f}%</td>"
            f"<td>{_esc(n.get('latency_ms'))} ms</td></tr>"
            for ref, n in sorted((a.get("versions") or {}).items())
        )
        verdict = str(a.get("verdict"))
        weight = f" · new version at {a['weight']}% of the traffic" if a.get("weight") else ""
        out.append(
            f'<section class="analysis-step"><h3>{_esc(a.get("step"))} · '
            f'<span class="{_esc(verdict.lower())}">{_esc(verdict)}</span> · '
            f"{_fmt(float(a.get('window_s') or 0))} s window{_esc(weight)}</h3>"
            "<table><tr><th>version</th><th>requests</th><th>errors</th><th>error rate</th>"
            f"<th>latency</th></tr>{rows}</table><p>{_esc('; '.join(a.get('reasons') or []))}</p></section>"
        )
    if not out:
        return ""
    strategy = (doc.get("options") or {}).get("strategy", "rolling")
    return f"<h2>Analysis ({_esc(strategy)})</h2>" + "".join(out)


def render_html(doc: dict[str, Any], load: Any = None) -> str:
    """The report page: summary, timeline picture, analysis, batches with their instances, the event log."""
    tl = build_timeline(doc, load)
    title = f"Roll-out of {doc.get('group')} to {doc.get('target')}: {doc.get('status')}"
    summary = [
        ("group", doc.get("group")),
        ("target", doc.get("target")),
        ("status", doc.get("status")),
        ("started", _when(doc.get("started_at"))),
        ("duration", f"{_fmt(float(doc.get('duration_s') or tl.t1 - tl.t0))} s"),
        ("instances", doc.get("size")),
        ("batches", len(doc.get("batches") or [])),
        ("failed slots", ", ".join(map(str, doc.get("failed_slots") or [])) or "none"),
        ("strategy", (doc.get("options") or {}).get("strategy", "rolling")),
        ("id", doc.get("id")),
    ]
    verdicts = [str(a.get("verdict")) for a in doc.get("analysis") or []]
    if verdicts:
        summary.append(("verdict", verdicts[-1]))
    if tl.load:
        sent = sum(s.requests for s in tl.load)
        failed = sum(s.failed for s in tl.load)
        rate = 100.0 * failed / sent if sent else 0.0
        summary.append(("load", f"{sent} requests, {failed} failed ({rate:.2f}%)"))
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in summary)
    batches = []
    for b in doc.get("batches") or []:
        inner = []
        for r in b.get("instances") or []:
            health = r.get("health") or {}
            hdesc = (
                f"{'healthy' if health.get('healthy') else 'unhealthy'} after {health.get('attempts')} "
                f"probe(s), {_fmt(float(health.get('duration_s') or 0))}s"
                if health
                else "-"
            )
            old, new = r.get("old") or {}, r.get("new") or {}
            inner.append(
                "<tr>"
                f"<td>{_esc(r.get('slot'))}</td><td>{_esc(old.get('version') or '-')} → "
                f"{_esc(new.get('version') or '-')}</td><td>{_esc(r.get('mode'))}</td>"
                f'<td>{_esc(hdesc)}</td><td class="{_esc(r.get("outcome"))}">{_esc(r.get("outcome"))}'
                f"{(' - ' + _esc(r['detail'])) if r.get('detail') else ''}</td></tr>"
            )
        batches.append(
            f'<section class="batch-detail" id="batch-detail-{b.get("index")}">'
            f"<h3>Batch {int(b.get('index', 0)) + 1} · {_esc(b.get('phase'))} · "
            f'<span class="{_esc(b.get("outcome"))}">{_esc(b.get("outcome", "unfinished"))}</span> · '
            f"{_fmt(float(b.get('duration_s') or 0))} s</h3>"
            "<table><tr><th>slot</th><th>version</th><th>mode</th><th>health</th><th>outcome</th></tr>"
            + "".join(inner)
            + "</table></section>"
        )
    events = "".join(
        f"<tr><td>{_esc(e.get('at', ''))}</td><td>+{_fmt(float(e.get('t', tl.t0)) - tl.t0)}s</td>"
        f"<td>{_esc(e.get('event'))}</td><td>{_esc(_fields(e))}</td></tr>"
        for e in doc.get("events") or []
    )
    css = (
        "body{font:14px/1.4 sans-serif;color:#24292f;margin:24px;max-width:1040px}"
        "table{border-collapse:collapse;margin:6px 0 14px}th,td{padding:2px 10px;text-align:left;"
        "border-bottom:1px solid #eaeef2}h1{font-size:20px}h2{font-size:16px;margin-top:24px}"
        "h3{font-size:14px;margin:12px 0 4px}.failed,.rolled_back{color:#cf222e}"
        ".ok,.replaced,.succeeded,.successful{color:#1a7f37}.inconclusive{color:#9a6700}"
        "svg{max-width:100%;height:auto}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{_esc(title)}</title><style>{css}</style></head><body>"
        f'<h1>{_esc(title)}</h1><table class="summary">{rows}</table>'
        f"<h2>Timeline</h2>{render_svg(tl)}"
        f"{render_analysis(doc)}"
        f"<h2>Batches</h2>{''.join(batches) or '<p>No batch ran: every instance was on the target.</p>'}"
        f"<h2>Events</h2><details><summary>{len(doc.get('events') or [])} events</summary>"
        f"<table>{events}</table></details></body></html>\n"
    )


def write_html(result: str | dict[str, Any], out: str | None = None, load: Any = None) -> str:
    """Write the report page for a result (a path or the result dict); returns the page's path.

    By default the page sits next to the result JSON, with the same name and ``.html``.
    """
    doc = load_result(result) if isinstance(result, str) else result
    if out is None:
        source = result if isinstance(result, str) else doc.get("result_path")
        if not source:
            raise KilnError("write_html needs an output path for a result that has no result_path")
        out = os.path.splitext(source)[0] + ".html"
    page = render_html(doc, load)
    folder = os.path.dirname(os.path.abspath(out))
    private_dirs(folder)
    tmp = f"{out}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(page)
    os.replace(tmp, out)  # a reader never sees half a page
    return out
