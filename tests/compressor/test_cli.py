"""The `compressor` command: summary lines, and exit 2 with one readable line on bad input."""

import json
import subprocess
import sys
from pathlib import Path

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
    assert lines[0].endswith("(max logit difference, fp32 export vs the compressed PyTorch model, limit 1e-04)")
    assert json.loads((tmp_path / "small" / "variant.json").read_text())["settings"]["svd"]["ratio"] == 0.4


def test_calibration_text_joins_the_parity_check(checkpoints, tmp_path, capsys):
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("first line of text\n\nsecond line of text\n")
    main(["compress", str(checkpoints["bert"]), "--method", "none", "--calibration", str(calibration),
          "--name", "calibrated", "--out", str(tmp_path / "models")])
    assert capsys.readouterr().out.rstrip().endswith("(max logit difference, fp32 export vs PyTorch, limit 1e-04)")


# Bad invocations: the arguments, what the one error line says, and whether the command
# can refuse it before importing torch (everything that needs no model).
BAD = [
    (["compress", "{missing}", "--method", "none", "--name", "x"], "does not exist", True),
    (["compress", "{encoder}", "--method", "none", "--name", "x"], "not a sequence classifier", True),
    (["compress", "{untokenized}", "--method", "none", "--name", "x"], "has no tokenizer", True),
    (["compress", "{bert}", "--method", "wavelets", "--name", "x"], "unknown method 'wavelets'", True),
    (["compress", "{bert}", "--method", "svd+prune", "--name", "x"], "prune must come before svd", True),
    (["compress", "{bert}", "--method", "svd+svd", "--name", "x"], "repeats a step", True),
    (["compress", "{bert}", "--method", "svd", "--ratio", "0", "--name", "x"], "--ratio must be in (0, 1]", True),
    (["compress", "{bert}", "--method", "svd", "--ratio", "2", "--name", "x"], "--ratio must be in (0, 1]", True),
    (["compress", "{bert}", "--method", "svd@1.5", "--name", "x"], "budget after '@' must be in (0, 1]", True),
    (["compress", "{bert}", "--method", "svd@half", "--name", "x"], "must be a number", True),
    (["compress", "{bert}", "--method", "none", "--quantize", "int3", "--name", "x"], "unknown --quantize 'int3'", True),
    (["compress", "{bert}", "--method", "none", "--quantize", "int4-b8", "--name", "x"], "'b8' is out of range", True),
    (["compress", "{bert}", "--method", "svd", "--allocation", "greedy", "--name", "x"], "unknown --allocation", True),
    (["compress", "{bert}", "--method", "drop-layers", "--layer-repair", "all", "--calibration", "{text}",
      "--name", "x"], "unknown --layer-repair", True),
    (["compress", "{bert}", "--method", "prune", "--name", "x"], "method prune needs --calibration", True),
    (["compress", "{bert}", "--method", "svd", "--calibration", "{missing}", "--name", "x"], "does not exist", True),
    (["compress", "{bert}", "--method", "svd", "--calibration", "{empty}", "--name", "x"], "holds no text", True),
    (["compress", "{bert}", "--method", "svd", "--calibration", "{latin}", "--name", "x"], "is not UTF-8 text", True),
    (["compress", "{bert}", "--method", "none", "--name", "a/b"], "variant name", True),
    (["compress", "{bert}", "--method", "none", "--name", "abc\n"], "variant name", True),
    (["compress", "default", "--method", "none", "--name", "x", "--out", "{text}"], "is a file, not a folder", True),
    (["compress", "{bert}", "--method", "none", "--max-length", "0", "--name", "x"],
     "--max-length must be between 1 and 64", False),
    (["compress", "{bert}", "--method", "none", "--max-length", "1000", "--name", "x"], "--max-length must be", False),
    (["compress", "{bert}", "--method", "none", "--max-length", "-3", "--name", "x"], "--max-length must be", False),
    (["evaluate", "{missing}"], "does not exist", True),
    (["evaluate", "{missing}", "--data", "{missing}.tsv"], "does not exist", True),
    (["smallest", "default", "--max-drop", "1", "--data", "{missing}", "--name", "x"], "does not exist", True),
    (["smallest", "default", "--max-drop", "200", "--calibration", "{text}", "--name", "x"], "--max-drop", True),
]
EARLY = [case[:2] for case in BAD if case[2]]


@pytest.fixture
def places(checkpoints, tmp_path) -> dict[str, str]:
    """The files and folders the bad invocations name, by placeholder."""
    encoder, untokenized = tmp_path / "encoder", tmp_path / "untokenized"
    for folder, architecture in ((encoder, "BertModel"), (untokenized, "BertForSequenceClassification")):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"architectures": [architecture], "model_type": "bert"}))
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "latin.txt").write_bytes("un café crème\n".encode("latin-1"))
    (tmp_path / "text.txt").write_text("some text\nmore text\n")
    return {"missing": str(tmp_path / "missing"), "encoder": str(encoder), "untokenized": str(untokenized),
            "bert": str(checkpoints["bert"]), "empty": str(tmp_path / "empty.txt"),
            "latin": str(tmp_path / "latin.txt"), "text": str(tmp_path / "text.txt")}


def command_line(args: list[str], places: dict[str, str], out: Path) -> list[str]:
    filled = [a.format(**places) for a in args]
    return filled + (["--out", str(out)] if args[0] == "compress" and "--out" not in args else [])


@pytest.mark.parametrize("args, message", [case[:2] for case in BAD])
def test_bad_input_exits_2_with_one_line(places, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code, captured = run_cli(capsys, *command_line(args, places, out))
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("compressor: error:") and message in lines[0]
    assert not out.exists() or list(out.iterdir()) == []


# A fresh interpreter runs the command, then prints which of the slow imports it made.
FRESH_RUN = """
import sys
from compressor.cli import main
try:
    main(sys.argv[1:])
finally:
    print(sorted(name for name in ("torch", "transformers") if name in sys.modules))
"""


@pytest.mark.parametrize("args, message", EARLY)
def test_bad_input_is_refused_before_torch_loads(places, tmp_path, args, message):
    result = subprocess.run([sys.executable, "-c", FRESH_RUN, *command_line(args, places, tmp_path / "out")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("compressor: error:") and message in lines[0]
    assert result.stdout == "[]\n"  # neither torch nor transformers was imported


def test_console_script_exit_code(tmp_path):
    result = subprocess.run([sys.executable, "-m", "compressor.cli", "compress", str(tmp_path / "nothing"),
                             "--method", "none", "--name", "x", "--out", str(tmp_path / "out")],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        (f"compressor: error: {tmp_path / 'nothing'} does not exist; give a checkpoint folder, an ORG/NAME model on "
         "the Hugging Face Hub, or 'default'")]


def test_out_and_json_paths_that_are_not_folders_or_files(checkpoints, models_dir, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    code, captured = run_cli(capsys, "compress", str(checkpoints["bert"]), "--method", "none", "--name", "x",
                             "--out", str(a_file))
    assert code == 2 and "is a file, not a folder" in captured.err
    before = (models_dir / "tiny-bert" / "variant.json").read_text()
    code, captured = run_cli(capsys, "evaluate", str(models_dir / "tiny-bert"), "--json", str(tmp_path))
    assert code == 2 and "is a folder" in captured.err
    assert (models_dir / "tiny-bert" / "variant.json").read_text() == before  # refused before touching anything


def test_parity_failure_is_one_line_and_exit_1(checkpoints, tmp_path, capsys, monkeypatch):
    from compressor import export

    monkeypatch.setattr(export, "measure_parity", lambda *a: 0.5)
    code, captured = run_cli(capsys, "compress", str(checkpoints["bert"]), "--method", "none", "--name", "x",
                             "--out", str(tmp_path))
    assert code == 1 and captured.err.strip().splitlines() == [
        "compressor: export failed: ONNX export differs from PyTorch by 5.00e-01 (limit 1e-04)"]
