"""Progress bars that read well both in a terminal and in a log file.

In a terminal tqdm redraws one line in place. Written to a file or a pipe, those redraws
(carriage returns, cursor moves) pile into one unreadable line, so there each update
becomes a plain line of its own, at most one every LOG_INTERVAL seconds.
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

LOG_INTERVAL = 30.0
_CONTROL = re.compile(r"\r|\x1b\[[0-9;]*[A-Za-z]")


class LineWriter:
    """A file for tqdm that turns each redraw into one line and drops blank clears."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        line = _CONTROL.sub("", text).strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_options(stream: TextIO | None = None) -> dict[str, Any]:
    """Keyword arguments for tqdm: redraws in a terminal, timed plain lines elsewhere."""
    stream = stream or sys.stderr
    if stream.isatty():
        return {"file": stream}
    return {"file": LineWriter(stream), "mininterval": LOG_INTERVAL, "ascii": True, "dynamic_ncols": False, "ncols": 100}
