"""Layer dropping with a closed-form repair, on tiny 4-layer models."""

import json
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the compression methods need torch (the [compress] extra)")

import onnx
import torch
from conftest import ARCHITECTURES, CORPUS, tiny_classifier

from compressor.calibration import batches
from compressor.checkpoint import load_classifier, parameter_count
from compressor.cli import main
from compressor.methods import drop_layers
from compressor.pipeline import Recipe, compress

LAYERS = 4


@pytest.fixture(scope="module")
def deep(tmp_path_factory) -> dict[str, Path]:
    """4-layer tiny checkpoints. A wider initialisation than the default makes every layer
    move the prediction measurably, so there is something to choose and to repair."""
    root = tmp_path_factory.mktemp("deep")
    for arch in ARCHITECTURES:
        model, tokenizer = tiny_classifier(arch)
        model.config.num_hidden_layers = LAYERS  # DistilBERT maps it onto n_layers
        model.config.initializer_range = 0.2
        torch.manual_seed(0)
        type(model)(model.config).save_pretrained(root / arch)
        tokenizer.save_pretrained(root / arch)
    return {arch: root / arch for arch in ARCHITECTURES}


@pytest.fixture(scope="module")
def variants(deep, tmp_path_factory) -> Path:
    """Each architecture with half its layers dropped by sensitivity, exported."""
    out = tmp_path_factory.mktemp("dropped")
    for arch in ARCHITECTURES:
        compress(str(deep[arch]), Recipe(f"{arch}-half", "drop-layers", 0.5), out, CORPUS)
    return out


def test_budget_keeps_the_nearest_whole_number_of_layers():
    assert [drop_layers.kept_count(r, 6) for r in (0.5, 0.667, 0.833, 1.0, 0.01)] == [3, 4, 5, 6, 1]


def test_runs_group_consecutive_layers():
    assert drop_layers.runs([3, 0, 1, 5]) == [(0, 1), (3, 3), (5, 5)]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_repair_brings_the_predictions_closer_to_the_original(deep, arch):
    """`auto` may leave a gap alone, so no case may get worse than no repair on the text it
    chose on; and the refits must help where it counts: at least halve the total."""
    classifier = load_classifier(str(deep[arch]))
    data = list(batches(classifier.tokenizer, CORPUS, classifier.max_length))
    target = drop_layers.logits_of(classifier.model, data)
    total = {"auto": 0.0, "none": 0.0}
    for dropped in ([0], [1], [2], [3], [1, 2], [0, 3]):
        cost = {}
        for how in total:
            model = load_classifier(str(deep[arch])).model
            used = drop_layers.repair(classifier.model, model, dropped, data, how, (data, target))
            assert len(used) == len(drop_layers.runs(dropped)) and set(used) <= set(drop_layers.REPAIRS[1:])
            cost[how] = drop_layers.divergence(target, drop_layers.logits_of(model, data), classifier.task)
            total[how] += cost[how]
        assert cost["auto"] <= cost["none"] + 1e-9, (dropped, cost)
    assert total["auto"] < total["none"] / 2, total


def test_a_fixed_repair_is_used_for_every_gap(deep):
    classifier = load_classifier(str(deep["roberta"]))
    data = list(batches(classifier.tokenizer, CORPUS, classifier.max_length))
    model = load_classifier(str(deep["roberta"])).model
    assert drop_layers.repair(classifier.model, model, [0, 2], data, "inputs+norm") == ["inputs+norm"] * 2
    assert len(model.roberta.encoder.layer) == 2


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_exports_with_half_the_layers_and_parity(variants, arch):
    manifest = json.loads((variants / f"{arch}-half" / "variant.json").read_text())
    settings = manifest["settings"]["drop-layers"]
    assert manifest["method"] == "drop-layers" and manifest["parity"] < 1e-4
    assert len(settings["kept"]) == 2 and sorted(settings["kept"] + settings["dropped"]) == list(range(LAYERS))
    assert manifest["parameters"] < manifest["parameters_original"]
    assert settings["calibration_kl"] < settings["calibration_kl_unrepaired"]
    # Greedy: each step drops its cheapest candidate, and every step measures all that remain.
    first, second = settings["sensitivity"]
    cheapest = [int(min(step, key=step.get)) for step in (first, second)]
    assert sorted(cheapest) == settings["dropped"]
    assert len(first) == LAYERS and set(second) == set(first) - {str(cheapest[0])}
    graph = onnx.load(variants / f"{arch}-half" / "model.onnx").graph
    assert sum(n.op_type == "LayerNormalization" for n in graph.node) == 1 + 2 * 2  # embeddings + 2 per layer


def test_explicit_layers_are_honoured(deep):
    original = load_classifier(str(deep["bert"]))
    classifier = load_classifier(str(deep["bert"]))
    settings = drop_layers.compress(classifier, 0.5, CORPUS, layers=(1, 2), repair_with="inputs")
    assert settings["dropped"] == [1, 2] and settings["kept"] == [0, 3] and settings["selection"] == "given"
    assert settings["repairs"] == [{"layers": [1, 2], "repair": "inputs"}]
    layers, before = classifier.model.bert.encoder.layer, original.model.bert.encoder.layer
    assert len(layers) == 2 and classifier.model.config.num_hidden_layers == 2
    # The repair refits only what reads across the gap: layer 3's Q, K and V.
    assert all(torch.equal(a, b) for a, b in zip(layers[0].parameters(), before[0].parameters()))
    assert torch.equal(layers[1].intermediate.dense.weight, before[3].intermediate.dense.weight)
    assert not torch.equal(layers[1].attention.self.query.weight, before[3].attention.self.query.weight)


def test_without_repair_the_kept_layers_are_the_originals(deep):
    original = load_classifier(str(deep["distilbert"]))
    classifier = load_classifier(str(deep["distilbert"]))
    settings = drop_layers.compress(classifier, 0.5, CORPUS, layers=(3,), repair_with="none")
    assert settings["calibration_kl"] == settings["calibration_kl_unrepaired"]
    assert settings["repairs"] == [{"layers": [3], "repair": "none"}]
    kept = dict(classifier.model.named_parameters())
    assert len(classifier.model.distilbert.transformer.layer) == 3
    assert all(torch.equal(p, kept[n]) for n, p in original.model.named_parameters() if n in kept)
    assert parameter_count(classifier.model) < parameter_count(original.model)


def test_composes_before_pruning_and_factorizing(deep, tmp_path):
    both = compress(str(deep["bert"]), Recipe("both", "drop-layers@0.75+prune", 0.5, "int8"), tmp_path, CORPUS)
    assert both.method == "drop-layers@0.75+prune+int8"
    assert len(both.settings["drop-layers"]["kept"]) == 3 and len(both.settings["prune"]["heads"]) == 3
    given = compress(str(deep["roberta"]), Recipe("given", "drop-layers+svd", 0.5, drop_layers=(1,)), tmp_path, CORPUS)
    assert given.settings["drop-layers"]["dropped"] == [1] and given.settings["svd"]["ratio"] == 0.5
    assert given.parity < 1e-4


def test_serves_through_the_service(variants, client_for):
    client = client_for(variants)
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert {m["state"] for m in listed.values()} == {"ready"} and len(listed) == len(ARCHITECTURES)
    for name in listed:
        response = client.post(f"/v1/models/{name}/classify", json={"inputs": CORPUS[:3]})
        assert response.status_code == 200 and len(response.json()["predictions"]) == 3


@pytest.mark.parametrize("args, message", [
    (["--method", "drop-layers", "--drop-layers", "1,x"], "must be layer numbers counted from 0"),
    (["--method", "drop-layers", "--drop-layers", "1,1"], "must name distinct layers"),
    (["--method", "drop-layers", "--drop-layers", "-1"], "must name distinct layers counted from 0"),
    (["--method", "drop-layers", "--drop-layers", "0,1,2,3"], "at least one must stay"),
    (["--method", "drop-layers", "--drop-layers", "4"], "the model has layers 0-3"),
    (["--method", "drop-layers@0.5", "--drop-layers", "1"], "not both"),
    (["--method", "svd", "--drop-layers", "1"], "apply to method drop-layers"),
    (["--method", "drop-layers", "--layer-repair", "magic"], "unknown --layer-repair 'magic'"),
    (["--method", "svd+drop-layers"], "drop-layers must come before svd"),
    (["--method", "prune+drop-layers"], "drop-layers must come before prune"),
    (["--method", "drop-layers", "--no-calibration"], "method drop-layers needs --calibration"),
])
def test_bad_input_exits_2_with_one_line(deep, tmp_path, capsys, args, message):
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("\n".join(CORPUS))
    extra = [] if "--no-calibration" in args else ["--calibration", str(calibration)]
    argv = ["compress", str(deep["bert"]), *[a for a in args if a != "--no-calibration"], *extra,
            "--name", "x", "--out", str(tmp_path / "models")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "models" / "x").exists()
