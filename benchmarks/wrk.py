"""Load from `wrk`, a compiled generator: the server gets the cores, not the client.

A Python client on the same two cores takes about half the CPU from the server it
measures; wrk, one thread, event-driven, takes a few percent. The Lua script it runs
rotates through the given sentences, one JSON body each (prepared once, at start), so
the server tokenizes varied lengths as in real traffic, and prints the summary as one
JSON line that `run` parses: requests, seconds, non-2xx answers, socket errors, and the
latency percentiles wrk recorded (p50, p90, p99), in milliseconds.

Debian and Ubuntu package it (`apt-get install wrk`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

SCRIPT = """
local bodies = {%(bodies)s}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "%(path)s", {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "seconds": %%.6f, "non_2xx": %%d, "socket_errors": %%d, ' ..
    '"p50_ms": %%.3f, "p90_ms": %%.3f, "p99_ms": %%.3f}\\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def lua_string(text: str) -> str:
    """A Lua string literal of `text`'s UTF-8 bytes: printable ASCII as is, every other
    byte (and the quote and backslash) as a three-digit decimal escape."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}" for b in text.encode()) + '"'


def script(path: str, bodies: list[str]) -> str:
    return SCRIPT % {"path": path, "bodies": ",\n".join(lua_string(b) for b in bodies)}


def run(url: str, path: str, bodies: list[str], connections: int, seconds: float, timeout: float = 10) -> dict:
    """Drive `url` + `path` with `connections` open connections for `seconds`; the summary."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script(path, bodies))
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", f"--timeout={timeout:g}s", "-s", f.name, url],
            capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    finally:
        Path(f.name).unlink()
    summary = json.loads(out.strip().splitlines()[-1])
    summary["throughput_rps"] = round(summary["requests"] / summary["seconds"], 1)
    return summary


def classify_bodies(texts: list[str]) -> list[str]:
    """One v1 classify body per text."""
    return [json.dumps({"inputs": [t]}) for t in texts]
