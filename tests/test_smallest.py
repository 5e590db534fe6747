"""`compressor smallest`: the first rung of the ladder that holds the bound, a trail of
what was tried, and nothing else left on disk."""

import pytest
from conftest import CORPUS

from compressor import smallest as smallest_module
from compressor.cli import main
from compressor.data import Examples
from compressor.smallest import held_out_split, smallest
from service.manifest import read_manifest

LADDER = (("svd@0.2", "int8"), ("prune@0.5", "int8"), ("none", "int8"), ("none", None))


def test_a_loose_bound_takes_the_first_rung_scored_for_real(checkpoints, tmp_path):
    manifest, trail = smallest(str(checkpoints["bert"]), "small", tmp_path, 100.0, calibration=CORPUS,
                               ladder=LADDER, report=lambda line: None)
    assert manifest.method == "svd@0.2+int8" and len(trail) == 1 and trail[0].held
    held_out = len(held_out_split(CORPUS)[1])  # agreement with the fp32 export on the held-out texts
    assert trail[0].score * held_out == pytest.approx(round(trail[0].score * held_out)) and 0 <= trail[0].score <= 1
    assert [p.name for p in tmp_path.iterdir()] == ["small"]  # the work folder is gone
    assert read_manifest(tmp_path / "small").name == "small"


def test_the_first_rung_that_holds_wins_and_the_trail_shows_the_rest(checkpoints, tmp_path, monkeypatch):
    # Score by recipe, so the test knows which rungs hold: only plain int8 and fp32 do.
    def by_recipe(data, held_out, reference, threads):
        return (lambda folder: 1.0 if read_manifest(folder).method in ("int8", "none") else 0.5), 1.0, "agreement"

    monkeypatch.setattr(smallest_module, "scorer", by_recipe)
    lines = []
    labelled = Examples(texts=CORPUS[:6], pairs=None, labels=["0", "1"] * 3)
    manifest, trail = smallest(str(checkpoints["bert"]), "small", tmp_path, 1.0, data=labelled,
                               ladder=LADDER, report=lines.append)
    assert manifest.method == "int8"
    assert [(a.method, a.held) for a in trail] == [("svd@0.2", False), ("prune@0.5", False), ("none", True)]
    assert trail[1].onnx_bytes is None and "needs --calibration" in trail[1].note  # skipped, not failed
    assert trail[0].onnx_bytes > 0 and trail[2].onnx_bytes > 0
    assert lines[0] == "fp32 export: agreement 1.0000; a rung holds at agreement >= 0.9900"
    assert lines[1:] == [a.line("agreement") for a in trail]  # one line an attempt, as it went
    assert "agreement 0.5000  misses" in lines[1] and "skipped: prune needs --calibration" in lines[2]
    assert "agreement 1.0000  holds" in lines[3]
    assert [p.name for p in tmp_path.iterdir()] == ["small"]


def test_a_search_that_fails_midway_leaves_nothing_on_disk(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(smallest_module, "scorer", lambda *a: ((lambda folder: 0.0), 1.0, "agreement"))
    with pytest.raises(AssertionError, match="the ladder ends with the plain export, which always holds"):
        smallest(str(checkpoints["bert"]), "small", tmp_path, 1.0, calibration=CORPUS, ladder=LADDER[:1],
                 report=lambda line: None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--max-drop", "1"], "needs --data"),
    (["--max-drop", "-1", "--calibration", "{corpus}"], "--max-drop is in accuracy points"),
    (["--max-drop", "1", "--data", "{unlabelled}"], "no label column"),
])
def test_bad_input_exits_2_with_one_line(checkpoints, tmp_path, capsys, args, message):
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS))
    (tmp_path / "unlabelled.tsv").write_text("sentence\n" + "\n".join(CORPUS))
    places = {"corpus": str(tmp_path / "corpus.txt"), "unlabelled": str(tmp_path / "unlabelled.tsv")}
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["smallest", str(checkpoints["bert"]), "--name", "x", "--out", str(out),
              *[a.format(**places) for a in args]])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not out.exists() or list(out.iterdir()) == []
