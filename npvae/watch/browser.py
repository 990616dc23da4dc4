"""Headless Chromium, driven over its DevTools pipe: load a page from disk and report what
a reader's browser would see (errors, sound lengths, images), or take its screenshot.

    with Chromium() as browser:                       # None found: ChromiumNotFound
        seen = browser.load("run/index.html")          # a PageReport
        browser.screenshot("run/index.html", "page.png")

Chromium is started with ``--remote-debugging-pipe`` (commands in on file descriptor 3,
replies out on 4, each a JSON message ended by a NUL byte), so nothing but the standard
library is needed and no port is opened. The checks of the pages' tests and the
screenshots of the docs (``scripts/page_screenshots.py``) use it.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NpvaeError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe")

# What the page itself says about its media once loaded (run in the page).
MEDIA_STATE = """JSON.stringify({
  audio: [...document.querySelectorAll('audio')].map(a => ({src: a.currentSrc || a.src, duration: a.duration,
          ready: a.readyState, error: a.error ? a.error.code : 0})),
  images: [...document.images].map(i => ({src: i.currentSrc || i.src, complete: i.complete,
           width: i.naturalWidth, height: i.naturalHeight}))})"""


class ChromiumNotFound(NpvaeError, FileNotFoundError):
    """No Chromium on this machine (the message says how to install one)."""


def find_chromium() -> str | None:
    """``$NPVAE_CHROMIUM``, else the first Chromium or Chrome on ``PATH``; None if none."""
    env = os.environ.get("NPVAE_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageReport:
    """What loading one page gave. errors : console errors, uncaught exceptions and failed
    loads, as text. requests : every URL the page asked for. audio, images : per element,
    as :data:`MEDIA_STATE` describes them (``duration`` in seconds)."""
    url: str
    errors: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    audio: list = field(default_factory=list)
    images: list = field(default_factory=list)


class Chromium:
    """One headless Chromium process (a context manager; :meth:`close` ends it)."""

    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise ChromiumNotFound("no Chromium found: install Debian's chromium (apt-get install chromium), or set "
                                   "NPVAE_CHROMIUM to a Chromium or Chrome executable")
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="npvae-chromium-")
        to_browser, self._cmd_in = os.pipe()
        self._reply_out, from_browser = os.pipe()

        def pipes():        # in the child: its fd 3 reads our commands, fd 4 takes its replies
            # (by way of free numbers: a pipe end may itself be 3 or 4); dup2 leaves them
            # inheritable, every other descriptor of ours is not, so exec closes it
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self._proc = subprocess.Popen([self.executable, *FLAGS, f"--user-data-dir={self._profile.name}",
                                       "about:blank"], close_fds=False, preexec_fn=pipes,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self._events = b"", 0, []

    # -- the protocol --------------------------------------------------------------
    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._cmd_in, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._reply_out], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer within {self.timeout:g} s")
            chunk = os.read(self._reply_out, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium ({self.executable}) closed its DevTools pipe: it has ended")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send a DevTools command and return its result (events meanwhile are kept)."""
        wanted = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._message(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"Chromium: {method} failed: {message['error']}")
                return message.get("result", {})
            self._events.append(message)

    def _wait_for(self, method: str, session: str, deadline: float) -> None:
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self._events):
            self._events.append(self._message(deadline))

    def _evaluate(self, expression: str, session: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        return result.get("result", {}).get("value")

    # -- pages ---------------------------------------------------------------------
    def _open(self, path, width: int = 1200, height: int = 900, settle: float = 0.0) -> tuple[str, str, str]:
        """A new tab showing file ``path`` (or an ``http://`` URL), loaded, its media settled,
        then ``settle`` seconds more (for a page that draws after loading): (target, session, URL)."""
        url = str(path) if str(path).startswith(("http://", "https://")) else Path(path).resolve().as_uri()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session)
        self._events.clear()
        self.call("Page.navigate", {"url": url}, session)
        deadline = time.monotonic() + self.timeout
        self._wait_for("Page.loadEventFired", session, deadline)
        while True:     # until every sound has its length (or has failed)
            state = json.loads(self._evaluate(MEDIA_STATE, session))
            if all(a["ready"] >= 1 or a["error"] for a in state["audio"]) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        time.sleep(settle)
        return target, session, url

    def load(self, path) -> PageReport:
        """Load the page file ``path`` and report what it did (:class:`PageReport`)."""
        target, session, url = self._open(path)
        report = PageReport(url)
        state = json.loads(self._evaluate(MEDIA_STATE, session))
        report.audio, report.images = state["audio"], state["images"]
        for event in self._events:
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent":
                report.requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                report.errors.append(f"failed to load ({params.get('errorText')}) request {params.get('requestId')}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                report.errors.append(f"{params['entry']['text']} {params['entry'].get('url', '')}".strip())
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                report.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                report.errors.append(f"{details.get('text', '')} "
                                     f"{details.get('exception', {}).get('description', '')}".strip())
        self.call("Target.closeTarget", {"targetId": target})
        return report

    def screenshot(self, path, png, width: int = 1100, height: int | None = None, settle: float = 0.0) -> Path:
        """A PNG of the page file (or URL) ``path``, ``width`` CSS pixels wide and ``height``
        high (None: the whole page), ``settle`` seconds after it loaded, saved to ``png``."""
        target, session, _ = self._open(path, width, height or 900, settle)
        if height is None:
            height = int(self.call("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"])
        shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                    "clip": {"x": 0, "y": 0, "width": width, "height": height,
                                                             "scale": 1}}, session)
        self.call("Target.closeTarget", {"targetId": target})
        png = Path(png)
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(base64.b64decode(shot["data"]))
        return png

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._send("Browser.close")
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        for fd in (self._cmd_in, self._reply_out):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["Chromium", "ChromiumNotFound", "PageReport", "find_chromium"]
