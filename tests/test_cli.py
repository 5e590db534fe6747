"""The `compressor` command: summary lines, and exit 2 with one readable line on bad input."""

import json
import subprocess
import sys

import pytest

from compressor.cli import main


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return exit_info.value.code, capsys.readouterr()


def test_compress_prints_one_summary_line(checkpoints, tmp_path, capsys):
    main(["compress", str(checkpoints["distilbert"]), "--method", "svd", "--ratio", "0.4",
          "--name", "small", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wrote {tmp_path / 'small'}: svd")
    assert json.loads((tmp_path / "small" / "variant.json").read_text())["settings"]["svd"]["ratio"] == 0.4


def test_calibration_text_joins_the_parity_check(checkpoints, tmp_path, capsys):
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("first line of text\n\nsecond line of text\n")
    main(["compress", str(checkpoints["bert"]), "--method", "none", "--calibration", str(calibration),
          "--name", "calibrated", "--out", str(tmp_path / "models")])
    assert "parity" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["compress", "{missing}", "--method", "none", "--name", "x"], "not a checkpoint folder"),
    (["compress", "{encoder}", "--method", "none", "--name", "x"], "not a sequence classifier"),
    (["compress", "{bert}", "--method", "wavelets", "--name", "x"], "unknown method 'wavelets'"),
    (["compress", "{bert}", "--method", "svd", "--ratio", "0", "--name", "x"], "--ratio must be in (0, 1]"),
    (["compress", "{bert}", "--method", "svd", "--ratio", "2", "--name", "x"], "--ratio must be in (0, 1]"),
    (["compress", "{bert}", "--method", "svd", "--calibration", "{empty}", "--name", "x"], "holds no text"),
    (["compress", "{bert}", "--method", "none", "--name", "a/b"], "variant name"),
    (["evaluate", "{missing}"], "does not exist"),
    (["evaluate", "{missing}", "--data", "{missing}.tsv"], "does not exist"),
])
def test_bad_input_exits_2_with_one_line(checkpoints, tmp_path, capsys, args, message):
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    (tmp_path / "empty.txt").write_text("\n  \n")
    places = {"missing": str(tmp_path / "missing"), "encoder": str(encoder), "bert": str(checkpoints["bert"]),
              "empty": str(tmp_path / "empty.txt")}
    out = tmp_path / "out"
    code, captured = run_cli(capsys, *[a.format(**places) for a in args], *(["--out", str(out)] if args[0] == "compress" else []))
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("compressor: error:") and message in lines[0]
    assert not out.exists() or list(out.iterdir()) == []


def test_console_script_exit_code(tmp_path):
    result = subprocess.run([sys.executable, "-m", "compressor.cli", "compress", str(tmp_path / "nothing"),
                             "--method", "none", "--name", "x", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"compressor: error: {tmp_path / 'nothing'} is not a checkpoint folder (no config.json); use a local folder or 'default'"]
