"""`compressor report`: measure every variant of a models folder and compare them.

On top of `evaluate` (accuracy, agreement, latency, parameters, bytes) it adds:
- weight FLOPs per token: 2·K·N for every MatMul whose weight is a [K, N] constant
  (fp32, factorized, pruned, int8 or 4-bit alike; embedding lookups, quantized or not,
  count none), counted on the graph as ONNX Runtime runs it
  after folding constants, so weights generated in the graph count as the dense MatMuls
  they become. Attention scores, whose cost grows with the
  sequence, are left out: at SST-2 lengths they are a few percent of the total.
- RSS after load: resident memory of a fresh process that imported ONNX Runtime, loaded
  the variant and ran one request (the runtime's own share is the same for every row).
- compression wall time, from the manifest.
and writes report.json, report.md and pareto.png (accuracy against latency and size).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort

from compressor.errors import InputError
from compressor.evaluate import BATCH, evaluate_all
from variant.manifest import MANIFEST_FILE, ONNX_FILE, read_manifest

WEIGHT_MATMULS = ("MatMul", "MatMulInteger", "MatMulNBits")
RSS_PROBE = """
import sys
from pathlib import Path
from variant.folder import open_on, resident_bytes
from variant.measure import logits
v = open_on(Path(sys.argv[1]))
logits(v, ["a short sentence to run once"])
print(resident_bytes())
"""


def folded_graph(path: Path) -> onnx.GraphProto:
    """The graph after ONNX Runtime's basic optimizations: constants folded, no fusions."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath).graph


def weight_flops_per_token(path: Path) -> int:
    graph = folded_graph(path)
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    # Static QDQ keeps each int8 weight behind a DequantizeLinear, which is never folded.
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
    flops = 0
    for node in graph.node:
        if node.op_type not in WEIGHT_MATMULS or len(node.input) < 2:
            continue
        if node.op_type == "MatMulNBits":  # weights stored blocked; K and N are attributes
            attrs = {a.name: a.i for a in node.attribute}
            flops += 2 * attrs["K"] * attrs["N"]
        elif len(shapes.get(node.input[1], [])) == 2:
            k, n = shapes[node.input[1]]
            flops += 2 * k * n
    return flops


def rss_after_load(folder: Path) -> int:
    try:
        result = subprocess.run([sys.executable, "-c", RSS_PROBE, str(folder)], check=False, capture_output=True, text=True,
                                timeout=300)
    except subprocess.TimeoutExpired:
        raise InputError(f"loading {folder} to measure memory took over 300 s") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        raise InputError(f"cannot load {folder} to measure memory: {last}")
    return int(result.stdout.strip())


def variant_folders(models: Path) -> list[Path]:
    if not models.is_dir():
        raise InputError(f"models folder {models} does not exist")
    folders = sorted(p for p in models.iterdir() if (p / MANIFEST_FILE).is_file() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{models} holds no variants (folders with {MANIFEST_FILE})")
    return folders


def measure(folders: list[Path], data: Path, reference: Path | None, threads: int) -> list[dict]:
    # A report measures files (FLOPs, memory of a process that loaded one): variants only.
    results = evaluate_all(folders, data, reference, threads, cascades=False)
    base_flops = None
    for folder, r in zip(folders, results):
        r["flops_per_token"] = weight_flops_per_token(folder / ONNX_FILE)
        r["rss_bytes"] = rss_after_load(folder)
        r["compress_seconds"] = read_manifest(folder).settings.get("compress_seconds")
        if reference is not None and folder.resolve() == reference.resolve():
            base_flops = r["flops_per_token"]
    base_flops = base_flops or max(r["flops_per_token"] for r in results)
    for r in results:
        r["flops_ratio"] = round(r["flops_per_token"] / base_flops, 4)
    return results


def markdown(results: list[dict]) -> str:
    head = ("| variant | method | accuracy | agreement | GFLOPs/token | params | ONNX MB | RSS MB "
            f"| b1 p50 ms | b{BATCH} p50 ms | compress s |\n|" + "---|" * 11)
    rows = []
    for r in results:
        lat = r["latency_ms"]
        pct = lambda v: "–" if v is None else f"{100 * v:.2f}%"
        rows.append(f"| {r['variant']} | {r['method']} | {pct(r.get('accuracy'))} | {pct(r.get('agreement'))} "
                    f"| {r['flops_per_token'] / 1e9:.4f} | {r['parameters'] / 1e6:.2f}M | {r['onnx_bytes'] / 1e6:.1f} "
                    f"| {r['rss_bytes'] / 1e6:.0f} | {lat['batch_1']['p50']:.2f} | {lat[f'batch_{BATCH}']['p50']:.1f} "
                    f"| {r['compress_seconds'] if r['compress_seconds'] is not None else '–'} |")
    return "\n".join([head, *rows]) + "\n"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both cost (lower) and accuracy (higher)."""
    return [i for i, (c, a) in enumerate(points)
            if not any(c2 <= c and a2 >= a and (c2, a2) != (c, a) for c2, a2 in points)]


def pareto_plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = [r for r in results if r.get("accuracy") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, (key, label) in zip(axes, [(lambda r: r["latency_ms"][f"batch_{BATCH}"]["p50"], f"p50 latency at batch {BATCH} (ms)"),
                                       (lambda r: r["onnx_bytes"] / 1e6, "ONNX file (MB, log scale)")]):
        points = [(key(r), 100 * r["accuracy"]) for r in rows]
        front = set(pareto_front(points))
        for i, ((x, y), r) in enumerate(zip(points, rows)):
            ax.scatter(x, y, s=30, marker="o" if r.get("quantize") else "s",
                       color="tab:red" if i in front else "tab:gray", zorder=3)
            ax.annotate(r["variant"], (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
        line = sorted(points[i] for i in front)
        ax.plot([p[0] for p in line], [p[1] for p in line], color="tab:red", lw=1, zorder=2)
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        if "log" in label:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.suptitle(title + "  (red: Pareto front; circles: int8)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_report(results: list[dict], out: Path, title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(f"# {title}\n\n" + markdown(results), encoding="utf-8")
    pareto_plot(results, out / "pareto.png", title)
