import io

from tqdm import tqdm

from compressor.progress import LineWriter, progress_options


def test_a_log_gets_one_plain_line_per_update_and_no_redraw_codes():
    log = io.StringIO()
    options = progress_options(log)
    assert isinstance(options["file"], LineWriter)
    options["mininterval"] = 0  # every update, so the test sees several
    for _ in tqdm(range(3), desc="work", miniters=1, **options):
        pass
    lines = log.getvalue().splitlines()
    assert len(lines) >= 3 and all(line.startswith("work:") for line in lines)
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    assert "3/3" in lines[-1]


def test_a_cleared_bar_leaves_nothing_behind():
    log = io.StringIO()
    writer = LineWriter(log)
    writer.write("\r" + " " * 40 + "\r")
    writer.write("\x1b[A")
    assert log.getvalue() == ""


def test_a_terminal_keeps_tqdm_redrawing_in_place():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    assert progress_options(terminal) == {"file": terminal}
