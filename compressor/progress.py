"""Progress of long steps that reads well both in a terminal and in a log file.

A step that runs long says how far it is at least every INTERVAL seconds, even when
nothing advances, and ends with a done line:

    prune@0.75+int8: building (elapsed 0.0s)
    prune@0.75+int8: prune: gradients 19/32 (elapsed 40s)
    prune@0.75+int8: building (elapsed 50s)
    prune@0.75+int8: done in 57s

`step(name)` wraps a unit of work (a candidate of `compressor search`): a line as it
starts, then, while it runs, lines that name the innermost tqdm bar then live (what it
counts and how far), or else what the step says it is doing. A tqdm bar made with `progress_options()` outside any
step reports the same way on its own: `prune: gradients 19/32 (elapsed 40s)` and, once
it has run DONE_AFTER seconds or more, `prune: gradients: done in 28s`.

In a terminal tqdm redraws its bar in place as it advances, and these lines are written
above it (only while the bar stands still, for a bar outside a step). Written to a file
or a pipe (a log, `make demo`), tqdm's redraws would pile into one unreadable line, and
with a long redraw interval they showed only `0%`: there tqdm writes nothing, and these
plain lines are all that is printed.

One daemon thread per process polls the live steps and bars (tqdm keeps its live bars in
`tqdm._instances`); a forked child starts its own on its first step or bar.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from tqdm import tqdm

INTERVAL = 10.0  # at most this many seconds between two lines of a running step or bar
DONE_AFTER = 2.0  # a bar outside a step that ran this long ends with a done line
POLL = 0.25  # how often the thread looks; a step with a shorter interval is looked at more often
REDRAW = 0.5  # tqdm's redraw interval off a terminal: it only keeps the bar's count current there


def seconds(value: float) -> str:
    return f"{value:.1f}s" if value < 10 else f"{value:.0f}s"


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def emit(stream: TextIO, line: str) -> None:
    """One line: above the live bars in a terminal, plain elsewhere."""
    try:
        if is_terminal(stream):
            tqdm.write(line, file=stream)
        else:
            stream.write(line + "\n")
            stream.flush()
    except (OSError, ValueError):  # a closed or broken stream: progress is not worth failing for
        pass


class Quiet:
    """tqdm's file off a terminal: it takes the redraws and drops them. `lines_to` is where
    this module writes the bar's plain lines instead."""

    def __init__(self, stream: TextIO):
        self.lines_to = stream

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def progress_options(stream: TextIO | None = None) -> dict[str, Any]:
    """Keyword arguments for tqdm: redraws in a terminal, plain timed lines elsewhere."""
    stream = stream or sys.stderr
    watch()
    if is_terminal(stream):
        return {"file": stream}
    return {"file": Quiet(stream), "mininterval": REDRAW}


@dataclass
class Step:
    """A running step; set `what` (and `done`, `total`) as it moves on."""

    name: str
    stream: TextIO
    interval: float
    what: str = "working"
    done: int | None = None
    total: int | None = None
    started: float = field(default_factory=time.monotonic)
    last_line: float = field(default_factory=time.monotonic)

    def line(self, bar: tqdm | None) -> str:
        if bar is not None:
            doing = bar_progress(bar)
        else:
            count = f" {self.done}/{self.total}" if self.done is not None and self.total else ""
            doing = f"{self.what}{count}"
        return f"{self.name}: {doing} (elapsed {seconds(time.monotonic() - self.started)})"


@contextlib.contextmanager
def step(name: str, what: str = "working", total: int | None = None, interval: float = INTERVAL,
         stream: TextIO | None = None) -> Iterator[Step]:
    """Report `name` as it starts, at least every `interval` seconds while the block runs, then
    its done line (or how long it ran before it failed)."""
    current = Step(name, stream or sys.stderr, interval, what, 0 if total else None, total)
    emit(current.stream, current.line(None))
    watch()
    with _state.lock:
        _state.steps.append(current)
    _state.wake.set()
    try:
        yield current
    except BaseException:
        end = f"failed after {seconds(time.monotonic() - current.started)}"
        raise
    else:
        end = f"done in {seconds(time.monotonic() - current.started)}"
    finally:
        with _state.lock:
            _state.steps.remove(current)
        emit(current.stream, f"{name}: {end}")


def bar_progress(bar: tqdm) -> str:
    count = f"{bar.n}/{bar.total}" if bar.total else f"{bar.n}"
    return f"{bar.desc.rstrip(': ')} {count}".strip()


def bar_stream(bar: tqdm) -> TextIO:
    """Where a bar's plain lines go: its Quiet's stream, or the terminal it draws on."""
    fp = getattr(bar.fp, "_wrapped", bar.fp)  # tqdm wraps the file it is given
    return getattr(fp, "lines_to", fp)


@dataclass
class Seen:
    """A bar the thread has seen live."""

    stream: TextIO
    started: float  # on the bar's clock
    last_line: float
    count: int  # bar.n when last looked at
    moved: float  # when bar.n last changed


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()  # held while a poll reads or writes: a fork waits for it
        self.steps: list[Step] = []
        self.bars: dict[int, tuple[tqdm, Seen]] = {}
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None


_state = State()


def watch() -> None:
    """Start this process's polling thread, once."""
    with _state.lock:
        if _state.thread is None:
            _state.thread = threading.Thread(target=poll_forever, name="progress", daemon=True)
            _state.thread.start()


def poll_forever() -> None:
    state = _state  # a forked child gets a fresh State; this thread keeps its own
    while True:
        with state.lock:
            wait = min([POLL, *(s.interval / 2 for s in state.steps)])
        state.wake.wait(wait)
        state.wake.clear()
        with state.lock:
            poll(state)


def live_bars() -> list[tqdm]:
    lock = getattr(tqdm, "_lock", None)  # made with the first bar: none yet, no bars
    if lock is None:
        return []
    with lock:
        bars = list(getattr(tqdm, "_instances", ()))
    return sorted((b for b in bars if not b.disable and hasattr(b, "start_t")), key=lambda b: b.start_t)


def poll(state: State) -> None:
    now, bars = time.monotonic(), live_bars()
    for current in state.steps:  # a step's line names the innermost bar, which says nothing of its own
        if now - current.last_line >= current.interval:
            emit(current.stream, current.line(bars[-1] if bars else None))
            current.last_line = now
    in_step = bool(state.steps)
    for bar in bars:
        key, clock = id(bar), bar._time()
        if key not in state.bars:
            state.bars[key] = (bar, Seen(bar_stream(bar), bar.start_t, bar.start_t, bar.n, bar.start_t))
        seen = state.bars[key][1]
        if bar.n != seen.count:
            seen.count, seen.moved = bar.n, clock
        # A terminal's bar that advances redraws itself: a line only once it stands still.
        quiet_since = max(seen.last_line, seen.moved) if is_terminal(seen.stream) else seen.last_line
        if not in_step and clock - quiet_since >= INTERVAL:
            emit(seen.stream, f"{bar_progress(bar)} (elapsed {seconds(clock - seen.started)})")
            seen.last_line = clock
    live = {id(b) for b in bars}
    for key in [k for k in state.bars if k not in live]:
        bar, seen = state.bars.pop(key)
        ran = bar._time() - seen.started
        if not in_step and ran >= DONE_AFTER:
            emit(seen.stream, f"{bar.desc.rstrip(': ')}: done in {seconds(ran)}")


def lock_within_process() -> None:
    """Make tqdm's lock this process's alone. Its default also holds a semaphore shared between
    processes, which a child killed mid-step leaves behind (and Python warns of at exit)."""
    tqdm.set_lock(threading.RLock())


def _after_fork_in_child() -> None:
    """The parent's thread, steps and bars are not the child's."""
    global _state
    _state = State()


os.register_at_fork(before=lambda: _state.lock.acquire(), after_in_parent=lambda: _state.lock.release(),
                    after_in_child=_after_fork_in_child)
