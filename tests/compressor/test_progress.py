"""Progress lines: a step or a bar that runs long says how far it is every interval even when
nothing advances, and ends with a done line; off a terminal tqdm's own redraws are dropped.
The interval is made short here, and each test waits on the line it needs, never on a clock."""

import io
import re
import threading

import pytest
from tqdm import tqdm

from compressor import progress
from compressor.progress import Quiet, progress_options, step

WAIT = 10.0  # seconds a test waits for a line before it fails


class Log(io.StringIO):
    """A log file that lets a test wait until a line matching a pattern has been written."""

    def __init__(self):
        super().__init__()
        self.written = threading.Condition()

    def write(self, text: str) -> int:
        with self.written:
            count = super().write(text)
            self.written.notify_all()
        return count

    def wait_for(self, pattern: str) -> None:
        with self.written:
            assert self.written.wait_for(lambda: re.search(pattern, self.getvalue(), re.MULTILINE), WAIT), self.getvalue()

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()


def test_a_step_reports_while_nothing_advances_and_ends_with_a_done_line():
    log = Log()
    with step("prune@0.5+int8", "building", interval=0.02, stream=log) as status:
        log.wait_for(r"building \(elapsed")
        for _ in tqdm(range(3), desc="prune: gradients", unit="batch", **progress_options(log), leave=False):
            log.wait_for(r"prune: gradients \d/3 \(elapsed")  # the bar stands still until a line names it
        status.what = "measuring on onnxruntime/f32"
        log.wait_for(r"measuring on onnxruntime/f32 \(elapsed")
    lines = log.lines()
    assert re.fullmatch(r"prune@0\.5\+int8: building \(elapsed \d+\.\ds\)", lines[0])
    assert any(re.fullmatch(r"prune@0\.5\+int8: prune: gradients \d/3 \(elapsed \d+\.\ds\)", line) for line in lines)
    assert re.fullmatch(r"prune@0\.5\+int8: done in \d+\.\ds", lines[-1])
    assert "%" not in log.getvalue() and "\r" not in log.getvalue()  # no tqdm redraws in a log


def test_a_step_that_fails_says_how_long_it_ran():
    log = Log()
    with pytest.raises(RuntimeError), step("embed-ae@0.5", stream=log):
        raise RuntimeError("out of memory")
    assert re.fullmatch(r"embed-ae@0\.5: failed after \d+\.\ds", log.lines()[-1])


def test_a_bar_outside_a_step_reports_in_a_log_and_ends_with_a_done_line(monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL", 0.02)
    monkeypatch.setattr(progress, "DONE_AFTER", 0.0)
    log = Log()
    for _ in tqdm(range(2), desc="embed-ae", unit="epoch", **progress_options(log), leave=False):
        log.wait_for(r"^embed-ae \d/2 \(elapsed")
    log.wait_for(r"^embed-ae: done in")
    lines = log.lines()
    assert all(re.fullmatch(r"embed-ae \d/2 \(elapsed \d+\.\ds\)", line) for line in lines[:-1])
    assert re.fullmatch(r"embed-ae: done in \d+\.\ds", lines[-1])
    assert "%" not in log.getvalue() and "\r" not in log.getvalue()


def test_a_log_gets_none_of_tqdms_redraws():
    log = io.StringIO()
    options = progress_options(log)
    assert isinstance(options["file"], Quiet) and options["file"].lines_to is log
    for _ in tqdm(range(3), desc="work", miniters=1, **{**options, "mininterval": 0}):
        pass
    assert log.getvalue() == ""  # a short bar leaves no line at all


def test_a_terminal_keeps_tqdm_redrawing_in_place_and_gets_lines_above_it():
    class Terminal(Log):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    assert progress_options(terminal) == {"file": terminal}
    with step("svd@0.5", interval=0.02, stream=terminal):
        terminal.wait_for(r"svd@0\.5: working \(elapsed")
    assert re.search(r"svd@0\.5: done in \d+\.\ds\n$", terminal.getvalue())
