"""compressor report: graph FLOPs, the Pareto front, and the written files."""

import json

import pytest

pytest.importorskip("onnx", reason="the report reads graphs with onnx (the [compress] extra)")

import onnx
from conftest import TINY

from compressor.cli import main
from compressor.report import pareto_front, weight_flops_per_token


def test_flops_count_every_weight_matmul(models_dir):
    hidden, inner, layers = TINY["hidden_size"], TINY["intermediate_size"], TINY["num_hidden_layers"]
    per_layer = 2 * (4 * hidden * hidden + 2 * hidden * inner)
    plain = weight_flops_per_token(models_dir / "tiny-bert" / "model.onnx")
    # The pooler and classifier may export as MatMul too: allow for them, nothing more.
    assert layers * per_layer <= plain <= layers * per_layer + 2 * (hidden * hidden + hidden * 2)
    factored = weight_flops_per_token(models_dir / "tiny-bert-svd" / "model.onnx")
    assert factored < plain
    graph = onnx.load(models_dir / "tiny-roberta-int8" / "model.onnx").graph
    assert any(n.op_type == "MatMulInteger" for n in graph.node)
    assert weight_flops_per_token(models_dir / "tiny-roberta-int8" / "model.onnx") >= layers * per_layer


def test_pareto_front():
    points = [(1.0, 80.0), (2.0, 90.0), (3.0, 85.0), (0.5, 70.0), (2.0, 89.0)]
    assert pareto_front(points) == [0, 1, 3]


def test_report_writes_table_json_and_plot(models_copy, tmp_path, capsys):
    # A copy: the report evaluates every variant, which records the evaluation in its variant.json.
    # A cascade beside the variants is not a file to measure: the report leaves it out.
    (models_copy / "cascades.json").write_text(json.dumps(
        {"svd-first": {"fast": "tiny-bert-svd", "reference": "tiny-bert", "threshold": 0.5}}))
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"text number {i}\t{i % 2}\n" for i in range(12)))
    out = tmp_path / "report"
    main(["report", str(models_copy), "--data", str(data), "--reference", str(models_copy / "tiny-bert"),
          "--out", str(out), "--threads", "1"])
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1].startswith(f"wrote {out}/report.md")
    rows = json.loads((out / "report.json").read_text())
    assert {r["variant"] for r in rows} == {"tiny-bert", "tiny-bert-svd", "tiny-roberta-int8"}
    for r in rows:
        assert r["flops_per_token"] > 0 and r["rss_bytes"] > 10_000_000 and r["flops_ratio"] > 0
    assert next(r for r in rows if r["variant"] == "tiny-bert")["flops_ratio"] == 1.0
    assert "| tiny-bert-svd |" in (out / "report.md").read_text()
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
