"""`compressor search`: which candidate wins under each objective, when a family stops being
refined, the time budget (a wall-clock limit: the candidate running at it is stopped), dynamic
int8 skipped unless asked for, the record in the winner's manifest, and nothing else left on disk."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CORPUS

from compressor import search as search_module
from compressor.cli import main
from compressor.data import Examples
from compressor.errors import InputError
from compressor.search import Scoring, held_out_split, search
from variant.manifest import Runtime, read_manifest

LADDER = (("svd@0.2", "int8"), ("prune@0.5", "int8"), ("none", "int8"), ("none", None))
ORT = [Runtime()]
BOTH = [Runtime(), Runtime(backend="openvino")]
LABELLED = Examples(texts=CORPUS[:6], pairs=None, labels=["0", "1"] * 3)
ESTIMATE = re.compile(r"elapsed [\d.]+s, about [\d.]+s left")


def quiet(line: str) -> None:
    pass


def candidate_lines(lines: list[str]) -> list[str]:
    """The report's lines of attempts, without the time estimates between them."""
    return [line for line in lines[2:] if not ESTIMATE.fullmatch(line)]


def test_a_loose_bound_takes_the_first_rung_scored_for_real(checkpoints, tmp_path):
    manifest, trail = search(str(checkpoints["bert"]), "small", tmp_path, 100.0, calibration=CORPUS,
                             objective="size", ladder=LADDER, runtimes_here=ORT, report=quiet, batch_dependent=True,
                             threads=1)
    assert manifest.method == "svd@0.2+int8" and len(trail) == 1 and trail[0].held
    held_out = len(held_out_split(CORPUS)[1])  # agreement with the fp32 export on the held-out texts
    assert trail[0].score * held_out == pytest.approx(round(trail[0].score * held_out)) and 0 <= trail[0].score <= 1
    assert [p.name for p in tmp_path.iterdir()] == ["small"]  # the work folder is gone
    written = read_manifest(tmp_path / "small")
    assert written.name == "small" and written.runtime.backend == "onnxruntime"
    assert written.search["objective"] == "size" and written.search["bound"] == pytest.approx(0.0, abs=1e-9)
    assert [a["method"] for a in written.search["trail"]] == ["svd@0.2"]
    assert written.runtime.model_extra["latency_ms"].keys() == {"1", "32"}  # the mix profile
    assert 0 <= written.runtime.model_extra["parity_vs_onnxruntime"] == trail[0].parity


def score_by_method(holding: set[str]):
    """Scoring.score as a table: 1.0 for the reference and the methods in `holding`."""
    def score(self, variant):
        return 1.0 if variant.manifest.method in holding | {"none"} else 0.5
    return score


def test_the_first_rung_that_holds_wins_and_the_trail_shows_the_rest(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(Scoring, "score", score_by_method({"int8"}))
    lines = []
    manifest, trail = search(str(checkpoints["bert"]), "small", tmp_path, 1.0, data=LABELLED, objective="size",
                             ladder=LADDER, runtimes_here=ORT, report=lines.append, batch_dependent=True, threads=1)
    assert manifest.method == "int8"
    assert [(a.method, a.held) for a in trail] == [("svd@0.2", False), ("prune@0.5", False), ("none", True)]
    assert trail[1].onnx_bytes is None and "needs --calibration" in trail[1].note  # skipped, not failed
    assert trail[0].onnx_bytes > 0 and trail[2].onnx_bytes > 0
    assert lines[0].startswith("fp32 export on onnxruntime/f32: accuracy 1.0000") and "holds at accuracy >= 0.9900" in lines[0]
    assert candidate_lines(lines) == [a.line("accuracy") for a in trail]  # one line an attempt, as it went
    assert "accuracy 0.5000" in lines[2] and "misses" in lines[2] and "skipped: prune needs --calibration" in lines[4]
    assert ESTIMATE.fullmatch(lines[3]) and ESTIMATE.fullmatch(lines[-1])  # after each candidate built, not skipped
    assert len(lines) == 2 + len(trail) + 2
    assert [p.name for p in tmp_path.iterdir()] == ["small"]


def test_latency_refines_a_family_while_it_holds_and_gets_faster(checkpoints, tmp_path, monkeypatch):
    # svd@0.8 holds and is the fastest so far, so its family goes on to svd@0.6, which
    # holds but is slower: not refined (svd@0.4 is never built). prune@0.9 holds, faster
    # still; prune@0.7 misses, ending that family.
    speed = {("svd@0.8", "onnxruntime"): 2.0, ("svd@0.8", "openvino"): 2.5, ("svd@0.6", "onnxruntime"): 1.5,
             ("svd@0.6", "openvino"): 1.8, ("prune@0.9", "onnxruntime"): 3.0, ("prune@0.9", "openvino"): 2.8}
    monkeypatch.setattr(Scoring, "score", score_by_method({"svd@0.8", "svd@0.6", "prune@0.9"}))
    real_latency = Scoring.latency

    def latency(self, variant):
        measured = real_latency(self, variant)  # timed for real, then steered
        key = (variant.manifest.method, variant.backend.runtime.backend)
        factor = speed.get(key, 1.0)
        if variant.manifest.method == "none" and key[1] == "onnxruntime":
            return {size: 12.0 for size in measured}
        return {size: 12.0 / factor for size in measured}

    monkeypatch.setattr(Scoring, "latency", latency)
    families = ((("svd@0.8", None), ("svd@0.6", None), ("svd@0.4", None)),
                (("prune@0.9", None), ("prune@0.7", None), ("prune@0.5", None)))
    manifest, trail = search(str(checkpoints["bert"]), "fast", tmp_path, 1.0, data=LABELLED, calibration=CORPUS,
                             objective="latency", families=families, runtimes_here=BOTH, report=quiet, threads=1)
    tried = [(a.method, a.runtime) for a in trail]
    assert tried == [("svd@0.8", "onnxruntime/f32"), ("svd@0.8", "openvino/f32"),
                     ("svd@0.6", "onnxruntime/f32"), ("svd@0.6", "openvino/f32"),
                     ("prune@0.9", "onnxruntime/f32"), ("prune@0.9", "openvino/f32"),
                     ("prune@0.7", "onnxruntime/f32"), ("prune@0.7", "openvino/f32")]
    assert manifest.method == "prune@0.9" and manifest.runtime.backend == "onnxruntime"
    assert manifest.runtime.model_extra["speedup"] == pytest.approx(3.0)
    assert read_manifest(tmp_path / "fast").runtime.label() == "onnxruntime/f32"  # recorded as it won
    assert len(manifest.search["trail"]) == len(trail)
    assert manifest.search["reference_onnx_bytes"] > manifest.onnx_bytes  # the fp32 export it was measured against


def test_threads_per_run_are_a_dimension_and_the_winner_records_them(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(Scoring, "score", score_by_method({"svd@0.8"}))
    real_latency = Scoring.latency
    seen = []

    def latency(self, variant):
        measured = real_latency(self, variant)  # timed for real, then steered: one thread per run wins
        runtime, parallel = variant.backend.runtime, variant.backend.parallel
        seen.append((variant.manifest.method, runtime.threads, parallel))
        factor = 2.0 if variant.manifest.method != "none" and runtime.threads == 1 else 1.0
        return {size: 12.0 / factor for size in measured}

    monkeypatch.setattr(Scoring, "latency", latency)
    lines = []
    manifest, trail = search(str(checkpoints["bert"]), "fast", tmp_path, 1.0, data=LABELLED, objective="latency",
                             families=((("svd@0.8", None),),), runtimes_here=ORT, report=lines.append, threads=2)
    assert ("svd@0.8", 2, 1) in seen and ("svd@0.8", 1, 2) in seen  # two threads alone, one thread two at once
    assert [(a.runtime, a.threads) for a in trail] == [("onnxruntime/f32", 2), ("onnxruntime/f32", 1)]
    assert trail[0].score == trail[1].score and trail[1].speedup == pytest.approx(2.0)
    assert manifest.runtime.threads == 1 and read_manifest(tmp_path / "fast").runtime.threads == 1
    assert "onnxruntime/f32 1t" in lines[3]


def test_min_speedup_skips_a_rung_too_slow_on_every_runtime_and_records_the_fastest(checkpoints, tmp_path,
                                                                                    monkeypatch):
    # svd@0.2 holds but is slower than the fp32 export everywhere; svd@0.5 is faster at
    # batch 1 on ONNX Runtime but slower at 32 there, and faster at both on OpenVINO.
    speed = {("svd@0.2", "onnxruntime"): {"1": 0.8, "32": 0.9}, ("svd@0.2", "openvino"): {"1": 0.7, "32": 0.95},
             ("svd@0.5", "onnxruntime"): {"1": 1.5, "32": 0.9}, ("svd@0.5", "openvino"): {"1": 1.2, "32": 1.1}}
    monkeypatch.setattr(Scoring, "score", score_by_method({"svd@0.2", "svd@0.5"}))
    real_latency = Scoring.latency

    def latency(self, variant):
        measured = real_latency(self, variant)  # timed for real, then steered
        factors = speed.get((variant.manifest.method, variant.backend.runtime.backend), {})
        return {size: 12.0 / factors.get(size, 1.0) for size in measured}

    monkeypatch.setattr(Scoring, "latency", latency)
    lines = []
    manifest, trail = search(str(checkpoints["bert"]), "small", tmp_path, 1.0, data=LABELLED, objective="size",
                             ladder=(("svd@0.2", None), ("svd@0.5", None), ("none", None)), runtimes_here=BOTH,
                             report=lines.append, threads=1, min_speedup=1.0)
    assert [(a.method, a.runtime, a.held) for a in trail] == [
        ("svd@0.2", "onnxruntime/f32", False), ("svd@0.2", "openvino/f32", False),
        ("svd@0.5", "onnxruntime/f32", False), ("svd@0.5", "openvino/f32", True)]
    assert all(a.note.startswith("too slow (b1 ") and a.score == 1.0 for a in trail if not a.held)
    assert "misses: too slow (b1 1.50x, b32 0.90x; --min-speedup 1)" in candidate_lines(lines)[2]
    assert manifest.method == "svd@0.5" and manifest.runtime.label() == "openvino/f32"
    assert manifest.runtime.model_extra["speedups"] == {"1": pytest.approx(1.2), "32": pytest.approx(1.1)}
    assert manifest.search["min_speedup"] == 1.0 and "at least 1x the fp32 export's speed" in lines[1]
    recorded = read_manifest(tmp_path / "small").search["trail"]
    assert [a["note"].split(" (")[0] for a in recorded if not a["held"]] == ["too slow"] * 3


def slow_build(classifier, recipe, out, calibration):
    """compressor.pipeline.build, except that svd@0.3 never finishes: it leaves a file in its
    folder, says where in `.blocked` beside the output, and sleeps (in the child process the
    budget stops)."""
    from compressor.pipeline import build

    if recipe.method == "svd@0.3":
        out.mkdir(parents=True)
        (out / "half-written.onnx").write_bytes(b"\0" * 1000)
        (out.parent.parent / ".blocked").write_text(str(out))
        time.sleep(3600)
    return build(classifier, recipe, out, calibration)


def nothing(classifier):
    return None


def warm_fork_server(model: str) -> None:
    """The first child waits while the fork server imports torch (seconds, once per process): not
    what the budget test measures."""
    assert search_module.Workers(model, time.monotonic() + 300).run(nothing) == ("done", None)


def test_a_candidate_still_running_at_the_budget_is_stopped_and_the_best_that_held_wins(checkpoints, tmp_path):
    model, out, budget = str(checkpoints["bert"]), tmp_path / "models", 15.0
    warm_fork_server(model)
    families = ((("svd@0.5", None),), (("svd@0.3", None),), (("svd@0.2", None),))
    lines = []
    begun = time.monotonic()
    manifest, trail = search(model, "fast", out, 100.0, data=LABELLED, objective="latency", families=families,
                             time_budget=budget, runtimes_here=ORT, report=lines.append, builder=slow_build, threads=1)
    wall = time.monotonic() - begun
    assert wall <= budget * 1.1
    assert manifest.method == "svd@0.5" and trail[0].held  # the best that held
    assert [a.method for a in trail] == ["svd@0.5", "svd@0.3"]  # svd@0.2 never starts
    assert trail[1].note.startswith("stopped at the time budget after") and trail[1].onnx_bytes is None
    assert lines[-2] == trail[1].line("accuracy") and ESTIMATE.fullmatch(lines[-1])
    recorded = read_manifest(out / "fast").search
    assert recorded["time_budget"] == budget and recorded["trail"][1]["note"] == trail[1].note
    cut = Path((out / ".blocked").read_text())
    assert cut.name.startswith("step-") and not cut.exists()  # its half-written folder went with it
    assert sorted(p.name for p in out.iterdir()) == [".blocked", "fast"]


@pytest.mark.slow
def test_what_the_fork_server_imports_starts_no_thread():
    # A fork while another thread holds a lock (an import's, say) leaves the child waiting for ever.
    code = f"import threading, time\nimport {', '.join(search_module.CHILD_MODULES)}\ntime.sleep(1)\n" \
        "print(threading.active_count())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert done.stdout.split()[-1] == "1"


def test_a_budget_that_cannot_hold_the_fp32_export_is_one_line_of_bad_input(checkpoints, tmp_path):
    begun = time.monotonic()
    with pytest.raises(InputError, match="ran out before the fp32 export"):
        search(str(checkpoints["bert"]), "fast", tmp_path, 1.0, data=LABELLED, objective="latency",
               time_budget=0.05, runtimes_here=ORT, report=quiet)
    assert time.monotonic() - begun < 1.0
    assert list(tmp_path.iterdir()) == []


def test_dynamic_int8_is_skipped_unless_asked_for(checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(search_module, "LATENCY_FAMILIES", ((("none", "int8"),),))
    args = ["search", str(checkpoints["bert"]), "--max-drop", "100", "--batch", "1", "--out", str(tmp_path)]
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS))
    args += ["--calibration", str(tmp_path / "corpus.txt")]
    main([*args, "--name", "default"])
    skipped = read_manifest(tmp_path / "default").search["trail"]
    assert [(a["method"], a.get("quantize"), a.get("runtime")) for a in skipped] == [("none", "int8", None)]
    assert "not batch-invariant" in skipped[0]["note"] and "--batch-dependent" in skipped[0]["note"]
    assert "skipped: int8 is not batch-invariant" in capsys.readouterr().out
    main([*args, "--name", "asked", "--batch-dependent"])
    tried = read_manifest(tmp_path / "asked").search["trail"]
    assert tried[0]["runtime"] == "onnxruntime/f32" and "score" in tried[0]  # then the other runtimes here
    assert all(a["method"] == "none" and a["quantize"] == "int8" and a["runtime"] for a in tried)


def test_a_search_that_fails_midway_leaves_nothing_on_disk(checkpoints, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the disk filled up")

    monkeypatch.setattr(search_module, "record", broken)
    with pytest.raises(RuntimeError, match="disk filled up"):
        search(str(checkpoints["bert"]), "small", tmp_path, 100.0, calibration=CORPUS, objective="size",
               ladder=LADDER[:1], runtimes_here=ORT, report=quiet)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--max-drop", "1"], "needs --data"),
    (["--max-drop", "-1", "--calibration", "{corpus}"], "--max-drop is in accuracy points"),
    (["--max-drop", "1", "--data", "{unlabelled}"], "no label column"),
    (["--max-drop", "1", "--calibration", "{corpus}", "--objective", "speed"], "--objective is latency or size"),
    (["--max-drop", "1", "--calibration", "{corpus}", "--batch", "8"], "--batch is one of 1, 32, mix"),
    (["--max-drop", "1", "--calibration", "{corpus}", "--time-budget", "0"], "--time-budget is in seconds"),
    (["--max-drop", "1", "--calibration", "{corpus}", "--min-speedup", "0"], "--min-speedup is a factor"),
    (["--max-drop", "1", "--calibration", "{corpus}", "--min-speedup", "-1"], "--min-speedup is a factor"),
    (["--max-drop", "1", "--calibration", "{corpus}", "--min-speedup", "fast"], "got 'fast'"),
    (["--max-drop", "1", "--calibration", "{corpus}", "--min-speedup", "inf"], "--min-speedup is a factor"),
])
def test_bad_input_exits_2_with_one_line(checkpoints, tmp_path, capsys, args, message):
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS))
    (tmp_path / "unlabelled.tsv").write_text("sentence\n" + "\n".join(CORPUS))
    places = {"corpus": str(tmp_path / "corpus.txt"), "unlabelled": str(tmp_path / "unlabelled.tsv")}
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["search", str(checkpoints["bert"]), "--name", "x", "--out", str(out),
              *[a.format(**places) for a in args]])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not out.exists() or list(out.iterdir()) == []


def test_the_command_ends_with_one_summary_line(checkpoints, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(search_module, "SIZE_LADDER", (("none", None),))
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS))
    main(["search", str(checkpoints["bert"]), "--max-drop", "1", "--calibration", str(tmp_path / "corpus.txt"),
          "--objective", "size", "--batch", "1", "--name", "x", "--out", str(tmp_path / "out")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"wrote {tmp_path / 'out' / 'x'}: none on onnxruntime/f32") and "batch 1" in last
    assert read_manifest(tmp_path / "out" / "x").search["batch"] == "1"


def test_a_budget_too_small_exits_2_with_one_line(checkpoints, tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS))
    with pytest.raises(SystemExit) as exit_info:
        main(["search", str(checkpoints["bert"]), "--max-drop", "1", "--calibration", str(tmp_path / "corpus.txt"),
              "--time-budget", "0.001", "--name", "x", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--time-budget 0.001 s ran out before the fp32 export" in lines[0]


def test_a_method_the_family_refuses_is_a_candidate_less(tmp_path, monkeypatch):
    pytest.importorskip("torch", reason="building a checkpoint needs torch (the [compress] extra)")
    from families import save_family_checkpoint

    monkeypatch.setattr(Scoring, "score", score_by_method({"prune@0.5+int8", "none+int8", "int8"}))
    checkpoint = save_family_checkpoint("modernbert", tmp_path / "modernbert")
    manifest, trail = search(str(checkpoint), "small", tmp_path / "models", 1.0, data=LABELLED, calibration=CORPUS,
                             objective="size", ladder=LADDER[1:], runtimes_here=ORT, report=quiet,
                             batch_dependent=True)
    assert trail[0].method == "prune@0.5" and trail[0].onnx_bytes is None
    assert trail[0].note.startswith("prune does not support ModernBERT")
    assert manifest.method == "int8"


def test_a_runtime_that_moves_answers_with_the_batch_does_not_hold_unless_asked(checkpoints, tmp_path, monkeypatch):
    """svd@0.8 is faster on OpenVINO, but there its answers move with what shares their run:
    the search takes it on ONNX Runtime, and on OpenVINO only with batch_dependent."""
    monkeypatch.setattr(Scoring, "score", score_by_method({"svd@0.8"}))
    real_latency = Scoring.latency

    def latency(self, variant):
        measured = real_latency(self, variant)
        fast = variant.manifest.method != "none"
        factor = 3.0 if fast and variant.backend.runtime.backend == "openvino" else 2.0 if fast else 1.0
        return {size: 12.0 / factor for size in measured}

    def variation(opened, texts):
        return 1e-3 if opened.manifest.method != "none" and opened.backend.runtime.backend == "openvino" else 0.0

    monkeypatch.setattr(Scoring, "latency", latency)
    monkeypatch.setattr(search_module.measure, "batch_variation", variation)
    families = ((("svd@0.8", None),),)
    for allowed, backend in ((False, "onnxruntime"), (True, "openvino")):
        out = tmp_path / backend
        manifest, trail = search(str(checkpoints["bert"]), "fast", out, 1.0, data=LABELLED, objective="latency",
                                 families=families, runtimes_here=BOTH, report=quiet, batch_dependent=allowed)
        assert manifest.runtime.backend == backend
        on_openvino = next(a for a in trail if a.runtime == "openvino/f32")
        assert on_openvino.batch_variation == 1e-3 and on_openvino.held is allowed
        assert ("answers move by 0.001" in on_openvino.note) is not allowed
        assert manifest.batch_invariant is not allowed and manifest.batch_variation == (1e-3 if allowed else 0.0)
