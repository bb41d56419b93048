"""The roll-out report page in headless Chromium (Debian's chromium), driven over the DevTools protocol.

The roll-out is a real run of the engine (against the fake provider, with a failing slot so that it
rolls back: forward batches, a failed batch and rollback batches), with a measured load. Chromium
loads the page from a file, and the test checks what a user would see: no error in the console (the
page's Content-Security-Policy turns any external asset into one), every batch drawn with a visible
size, and a screenshot whose pixels show each batch band.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.observe import report
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.engine import (
    Rollout,
    RolloutOptions,
)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "unit"))
from rollout_fakes import FakeLoadBalancer, FakeProvider, FakeVersion, World, fake_prober  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium missing: run scripts/setup")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]
VIEW = {"width": 1100, "height": 1000}


def _pipe() -> tuple[int, int]:
    """A pipe whose ends are numbered 10 or more, so the child's move of them to 3 and 4 clobbers none."""
    ends = os.pipe()
    high = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in ends)
    for fd in ends:
        os.close(fd)
    return high


class DevTools:
    """A minimal DevTools protocol client over --remote-debugging-pipe (fd 3 in, fd 4 out, NUL-framed)."""

    def __init__(self, profile: Path):
        to_chrome_r, self._to_chrome = _pipe()
        self._from_chrome, from_chrome_w = _pipe()
        shell = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
        self.proc = subprocess.Popen(
            ["bash", "-c", shell, CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe (exit {self.proc.poll()})")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(deadline)
            if msg.get("id") == self._next:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        seen = len(self.events)
        while True:
            for msg in self.events[seen:]:
                if msg.get("method") == method:
                    return msg
            seen = len(self.events)
            self.events.append(self._read(deadline))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def errors_in(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and browser log errors (blocked or failed loads, CSP)."""
    out = []
    for msg in events:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            out.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            out.append(params["entry"].get("text", ""))
    return out


def open_page(tools: DevTools, url: str) -> tuple[str, list[str]]:
    """Load ``url`` in a fresh tab; returns (session, errors seen while loading)."""
    target = tools.call("Target.createTarget", url="about:blank")["targetId"]
    session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log"):
        tools.call(f"{domain}.enable", session)
    tools.call("Emulation.setDeviceMetricsOverride", session, deviceScaleFactor=1, mobile=False, **VIEW)
    start = len(tools.events)
    nav = tools.call("Page.navigate", session, url=url)
    assert "errorText" not in nav, nav
    tools.wait_event("Page.loadEventFired")
    # the page has no script; one round trip makes sure every log entry of the load has arrived
    tools.call("Runtime.evaluate", session, expression="1")
    return session, errors_in([m for m in tools.events[start:] if m.get("sessionId") == session])


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) into rows of pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows


@pytest.fixture(scope="module")
def rolled_back(tmp_path_factory) -> dict:
    """A real roll-out that fails on slot 3 and rolls back, with a measured load of 20 requests/0.05s."""
    v1, v2 = FakeVersion("web", "1"), FakeVersion("web", "2")
    world = World()
    world.seed(4, v1)
    world.bad_slots.add(("web/2", 3))
    world.launch_delay = 0.02
    result = Rollout(
        world.group,
        v2,
        FakeProvider(world),
        FakeLoadBalancer(world),
        fake_prober(world),
        RolloutOptions(batch_size=1, max_surge=1),
        resolve_version={v.ref: v for v in (v1, v2)}.__getitem__,
        root=str(tmp_path_factory.mktemp("rollouts")),
    ).run()
    assert result["status"] == "rolled_back"
    t0, t1 = result["started_at"], result["finished_at"]
    requests = [(t0 + i * 0.0025, i % 97 != 13) for i in range(int((t1 - t0) / 0.0025))]
    result["load"] = report.bucket_load(requests, interval=0.05)
    return result


def test_the_report_renders_in_chromium_without_errors_and_shows_every_batch(rolled_back, tmp_path):
    page = report.write_html(rolled_back, out=str(tmp_path / "report.html"))
    tools = DevTools(tmp_path / "profile")
    try:
        session, errors = open_page(tools, Path(page).as_uri())
        assert errors == []
        found = tools.call(
            "Runtime.evaluate",
            session,
            returnByValue=True,
            expression="""JSON.stringify({
              title: document.title,
              batches: [...document.querySelectorAll('svg g.batch')].map(g => {
                const r = g.querySelector('rect').getBoundingClientRect();
                return {index: +g.dataset.batch, label: g.querySelector('text').textContent,
                        x: r.x, y: r.y + window.scrollY, w: r.width, h: r.height};
              }),
              details: [...document.querySelectorAll('section.batch-detail h3')].map(h => h.textContent),
              svg: document.querySelector('svg#timeline').getBoundingClientRect().width,
            })""",
        )
        seen = json.loads(found["result"]["value"])
        shot = tools.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
        (tmp_path / "report.png").write_bytes(base64.b64decode(shot["data"]))
        # the batch bands, at 1:1, for a pixel check (decoding the whole page in Python is slow)
        x0 = min(b["x"] for b in seen["batches"])
        y0 = min(b["y"] for b in seen["batches"])
        clip = {
            "x": x0,
            "y": y0,
            "width": max(b["x"] + b["w"] for b in seen["batches"]) - x0,
            "height": max(b["y"] + b["h"] for b in seen["batches"]) - y0,
            "scale": 1,
        }
        bands = tools.call(
            "Page.captureScreenshot", session, format="png", captureBeyondViewport=True, clip=clip
        )
    finally:
        tools.close()

    batches = rolled_back["batches"]
    assert seen["title"] == "Roll-out of web-test to web/2: rolled_back"
    assert [b["index"] for b in seen["batches"]] == [b["index"] for b in batches]
    assert [b["label"] for b in seen["batches"]] == [f"Batch {b['index'] + 1}" for b in batches]
    assert all(b["w"] >= 2 and b["h"] > 50 for b in seen["batches"]), seen["batches"]
    assert len(seen["details"]) == len(batches)
    assert {b["phase"] for b in batches} == {"forward", "rollback"}
    assert seen["svg"] > 500

    # every batch band is visible in the screenshot: its fill colour in the middle of its box
    assert (tmp_path / "report.png").stat().st_size > 10_000
    width, bpp, rows = png_pixels(base64.b64decode(bands["data"]))
    fills = {"ok": {(0xE8, 0xEE, 0xF7), (0xFF, 0xF4, 0xD6)}, "failed": {(0xFD, 0xE2, 0xE1)}}
    for band, batch in zip(seen["batches"], batches, strict=True):
        x = min(int(band["x"] - x0 + band["w"] / 2), width - 1)
        column = {tuple(row[x * bpp : x * bpp + 3]) for row in rows}
        assert fills[batch["outcome"]] & column, f"batch {band['index'] + 1} not visible in the screenshot"


def test_an_external_asset_would_show_as_an_error(rolled_back, tmp_path):
    """The check above can fail: a page that loads anything from outside reports an error."""
    page = report.render_html(rolled_back).replace("</body>", '<img src="http://127.0.0.1:9/x.png"></body>')
    path = tmp_path / "tampered.html"
    path.write_text(page)
    tools = DevTools(tmp_path / "profile")
    try:
        _, errors = open_page(tools, path.as_uri())
    finally:
        tools.close()
    assert any("Content Security Policy" in e for e in errors), errors
