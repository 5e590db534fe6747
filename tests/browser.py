"""Headless Chromium for the tests that look at the page, driven over the Chrome DevTools
Protocol with the `websockets` client (uvicorn[standard] brings it): the system's browser
(Debian's `chromium`), nothing downloaded at test time.

`open_page` starts a browser with its own profile and hands back a `Page`: a session on
one tab that sends commands, waits for what the page does (an element appearing, through
a MutationObserver; never a fixed sleep), types and clicks as input events, keeps the
URL of every request the tab made, and can answer chosen requests itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
LISTENING = re.compile(r"DevTools listening on (ws://\S+)")
START_SECONDS = 60


def chromium() -> str | None:
    """The path of a Chromium-family browser on PATH, or None."""
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


class BrowserError(AssertionError):
    pass


class Page:
    """One tab, attached in flat mode: every command carries the tab's session id."""

    def __init__(self, socket: ClientConnection, session: str, timeout: float) -> None:
        self.socket, self.session, self.timeout = socket, session, timeout
        self.next_id = 0
        self.events: list[str] = []  # the names of the events received, in order
        self.requests: list[str] = []  # Network.requestWillBeSent URLs, in order
        self.answers: dict[str, bytes] = {}  # URL suffix → the JSON the browser gets instead of the server's
        self.answered = 0

    def answer(self, suffix: str, body: Any) -> None:
        """From now on, requests to URLs ending in `suffix` get `body` as JSON, without
        reaching the server: for a route the service under test does not have."""
        self.answers[suffix] = json.dumps(body).encode()
        self.send("Fetch.enable", patterns=[{"urlPattern": "*" + s} for s in self.answers])

    def fulfil(self, paused: dict[str, Any]) -> None:
        body = next(b for s, b in self.answers.items() if paused["request"]["url"].endswith(s))
        self.answered += 1
        # Its reply carries an id send() is not waiting for, and is dropped there.
        self.socket.send(json.dumps({
            "id": -self.answered, "sessionId": self.session, "method": "Fetch.fulfillRequest",
            "params": {"requestId": paused["requestId"], "responseCode": 200, "body": base64.b64encode(body).decode(),
                       "responseHeaders": [{"name": "content-type", "value": "application/json"}]}}))

    def receive(self) -> dict[str, Any]:
        # A little longer than the page's own deadline (wait_for), so that one reports first.
        message = json.loads(self.socket.recv(timeout=self.timeout + 10))
        if "method" in message:
            self.events.append(message["method"])
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
            elif message["method"] == "Fetch.requestPaused":
                self.fulfil(message["params"])
        return message

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run `method` and return its result; events that arrive meanwhile are recorded."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        while True:
            reply = self.receive()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression, awaited when it is a promise."""
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True,
                           timeout=self.timeout * 1000)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        """Open `url` and return once its load event has fired."""
        seen = len(self.events)
        frame = self.send("Page.navigate", url=url)
        if frame.get("errorText"):
            raise BrowserError(f"{url}: {frame['errorText']}")
        while "Page.loadEventFired" not in self.events[seen:]:
            self.receive()

    def wait_for(self, selector: str) -> None:
        """Wait until an element matches `selector`: resolved by the page's own mutations."""
        self.evaluate(f"""new Promise((resolve, reject) => {{
            const selector = {json.dumps(selector)};
            if (document.querySelector(selector)) return resolve(true);
            const observer = new MutationObserver(() => {{
                if (document.querySelector(selector)) {{ observer.disconnect(); resolve(true); }}
            }});
            observer.observe(document, {{subtree: true, childList: true, attributes: true, characterData: true}});
            setTimeout(() => {{ observer.disconnect(); reject(new Error("no element matches " + selector)); }},
                       {self.timeout * 1000});
        }})""")

    def text(self, selector: str) -> str:
        return self.evaluate(f"document.querySelector({json.dumps(selector)}).innerText")

    def type_into(self, selector: str, text: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def click(self, selector: str) -> None:
        """A mouse click at the element's centre, as a person's would land."""
        box = self.evaluate(f"""(() => {{
            const e = document.querySelector({json.dumps(selector)});
            e.scrollIntoView({{block: "center"}});
            const r = e.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2];
        }})()""")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, path: Path) -> bytes:
        """A PNG of the whole page at the window's width."""
        self.evaluate("window.scrollTo(0, 0)")
        height = self.evaluate("document.documentElement.scrollHeight")
        width = self.evaluate("document.documentElement.clientWidth")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        png = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(png)
        return png


def devtools_address(process: subprocess.Popen, lines: list[str]) -> str:
    """Chromium prints its DevTools address on stderr once it listens; a reader thread keeps
    draining stderr after that (a full pipe would stall the browser) and keeps the lines
    for the error message of a browser that does not start."""
    found: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stderr:
            lines.append(line)
            match = LISTENING.search(line)
            if match:
                found.put(match.group(1))
        found.put(None)  # stderr closed: the browser exited

    threading.Thread(target=read, daemon=True).start()
    try:
        address = found.get(timeout=START_SECONDS)
    except queue.Empty:
        address = None
    if address is None:
        raise BrowserError("chromium did not start:\n" + "".join(lines[-20:]))
    return address


@contextlib.contextmanager
def open_page(profile: Path, width: int = 1200, height: int = 900, timeout: float = 30.0) -> Iterator[Page]:
    """A headless Chromium with a fresh profile under `profile`, and a blank tab in it."""
    binary = chromium()
    if binary is None:
        raise BrowserError("no chromium on PATH")
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    process = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
         "--disable-component-update", "--disable-default-apps", "--hide-scrollbars", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        with connect(devtools_address(process, lines), max_size=None, open_timeout=timeout) as socket:
            browser = Page(socket, "", timeout)
            target = browser.send("Target.createTarget", url="about:blank")["targetId"]
            session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            page = Page(socket, session, timeout)
            for domain in ("Page", "Runtime", "Network"):
                page.send(f"{domain}.enable")
            page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
            yield page
            browser.send("Browser.close")
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if process.poll() is None:
            process.kill()
            process.wait()
