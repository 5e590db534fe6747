"""Compress the fine-tuned SST-2 teacher with every slimserve recipe and compare them,
through ONNX Runtime, with the baseline a user would otherwise pick: Optimum's
per-channel avx512_vnni dynamic int8 (ORTQuantizer).

    python benchmarks/teacher.py [--shared ../shared] [--threads 2] [--out benchmarks/results]

Prints a table with ratios against the fp32 original (one run, same machine, same
threads) and writes benchmarks/results/teacher.json. Needs ../shared (the teacher and
SST-2 dev); says so and exits 2 when it is absent.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compressor.checkpoint import load_classifier  # noqa: E402
from compressor.evaluate import evaluate_all  # noqa: E402
from compressor.pipeline import Recipe, build  # noqa: E402
from service.manifest import ONNX_FILE, read_manifest, write_manifest  # noqa: E402

RECIPES = (
    Recipe("original"),
    Recipe("int8", quantize="int8"),
    Recipe("svd-50", "svd", 0.5),
    Recipe("svd-50-int8", "svd", 0.5, "int8"),
)
BASELINE = "optimum-int8"


def optimum_int8(original: Path, teacher: Path, out: Path) -> None:
    """Optimum's recipe applied to slimserve's own fp32 export, kept as a variant folder."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        shutil.copy(original / ONNX_FILE, work / ONNX_FILE)
        shutil.copy(teacher / "config.json", work / "config.json")
        quantizer = ORTQuantizer.from_pretrained(work, file_name=ONNX_FILE)
        config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
        quantizer.quantize(save_dir=work / "q", quantization_config=config)
        target = out / BASELINE
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(original, target)
        shutil.copy(work / "q" / "model_quantized.onnx", target / ONNX_FILE)
    manifest = read_manifest(target)
    manifest.name, manifest.method = BASELINE, "optimum"
    manifest.settings = {"quantize": "int8", "quantize_recipe": "Optimum avx512_vnni, per_channel=True, dynamic"}
    manifest.onnx_bytes, manifest.parity, manifest.evaluation = (target / ONNX_FILE).stat().st_size, None, None
    write_manifest(target, manifest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    teacher, dev = args.shared / "models" / "minilm-l6-sst2", args.shared / "data" / "sst2" / "dev.tsv"
    if not teacher.is_dir() or not dev.is_file():
        print(f"benchmarks/teacher.py: needs {teacher} and {dev} (the ../shared folder); not found", file=sys.stderr)
        sys.exit(2)

    models = args.out / "teacher-models"
    classifier = load_classifier(str(teacher))
    for recipe in RECIPES:
        build(classifier, recipe, models)
    optimum_int8(models / "original", teacher, models)

    names = [r.name for r in RECIPES] + [BASELINE]
    results = evaluate_all([models / n for n in names], dev, models / "original", args.threads)
    base = results[0]
    for r in results:
        r["size_ratio"] = round(base["onnx_bytes"] / r["onnx_bytes"], 2)
        for batch in ("batch_1", "batch_32"):
            r[f"speedup_{batch}"] = round(base["latency_ms"][batch]["p50"] / r["latency_ms"][batch]["p50"], 2)
    print(f"SST-2 dev ({base['examples']} rows), teacher {teacher.name}, ONNX Runtime {args.threads} threads; "
          "ratios against the fp32 original in this run")
    print(f"{'variant':<14}{'accuracy':>9}{'agree':>8}{'smaller':>9}{'b1 faster':>11}{'b32 faster':>12}{'MB':>8}")
    for r in results:
        print(f"{r['variant']:<14}{r['accuracy']:>9.4f}{r['agreement']:>8.4f}{r['size_ratio']:>8.2f}x"
              f"{r['speedup_batch_1']:>10.2f}x{r['speedup_batch_32']:>11.2f}x{r['onnx_bytes'] / 1e6:>8.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "teacher.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out / 'teacher.json'}")


if __name__ == "__main__":
    main()
