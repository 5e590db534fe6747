"""Live accuracy from labels sent back after the answers (POST /v1/feedback), against
`compressor evaluate`'s accuracy on the same sentences: SST-2 dev replayed through the service.

    python benchmarks/feedback_replay.py [--shared ../shared] [--models models] [--out benchmarks/results]

Needs ../shared/data/sst2/dev.tsv (`--shared` names another folder laid out the same way)
and a models folder (`make variants` builds the default set). The models folder is copied
aside first, since `compressor evaluate` records its figures in each variant.json. Every
variant of the copy, and every cascade over them, is scored on dev by `compressor evaluate`;
then the service is started on the copy and, for each of those models, asked each dev
sentence alone, one request at a time, and sent each sentence's label as feedback. The
service's slimserve_feedback_total and slimserve_feedback_accuracy give the live figures.
Evaluate runs sentences in batches and the replay one at a time, so a variant whose answers
move with its batch (manifest `batch_invariant` false) may differ by a sentence or two.
Prints a table (the right answers each way, and whether they are as many) and writes
benchmarks/results/feedback-replay.json.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import httpx
from common import ROOT, slimserve
from common import parser as common_parser

from compressor.data import label_ids, read_tsv
from compressor.evaluate import evaluate_all, table
from variant.manifest import MANIFEST_FILE

CLASSIFY = "/v1/models/{}/classify"
FEEDBACK_BATCH = 500  # items per POST /v1/feedback (the route takes at most 1000)


def dev_set(shared: Path, data: Path | None) -> Path:
    """The dev TSV, or exit 2 saying what is missing."""
    path = data or shared / "data" / "sst2" / "dev.tsv"
    if not path.is_file():
        print(f"benchmarks/feedback_replay.py: needs the ../shared folder: {path} not found "
              "(pass --shared or --data)", file=sys.stderr)
        sys.exit(2)
    return path


def counters(metrics: str, model: str) -> dict[str, float]:
    """slimserve_feedback_total of `model` by outcome, and its slimserve_feedback_accuracy."""
    found: dict[str, float] = {}
    for line in metrics.splitlines():
        if f'model="{model}"' not in line:
            continue
        if line.startswith("slimserve_feedback_total{"):
            found[line.split('outcome="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("slimserve_feedback_accuracy{"):
            found["accuracy"] = float(line.rsplit(" ", 1)[1])
    return found


def label_names(entries: dict[str, dict], model: str, cells: list[str]) -> list[str]:
    """The data's label cells (SST-2 writes class ids) as `model`'s label names, which feedback takes."""
    entry = entries[model]
    manifest = entries[entry["cascade"]["fast"]]["manifest"] if entry.get("cascade") else entry["manifest"]
    return [manifest["labels"][i] for i in label_ids(cells, manifest["labels"])]


def replay(url: str, models: list[str], texts: list[str], cells: list[str]) -> dict[str, dict[str, float]]:
    """Each ready model asked every text alone, then sent every label; the service's feedback
    figures per model (none for a model that does not serve)."""
    with httpx.Client(base_url=url, timeout=120) as http:
        entries = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
        ready = [m for m in models if m in entries and entries[m]["state"] == "ready"]
        for model in sorted(set(models) - set(ready)):
            print(f"{model:<16} not served: {entries.get(model, {}).get('reason', 'not found')}", flush=True)
        for model in ready:
            ids = []
            for text in texts:
                response = http.post(CLASSIFY.format(model), json={"inputs": [text]})
                response.raise_for_status()
                ids.append(response.headers["x-request-id"])
            items = [{"id": i, "label": label} for i, label in zip(ids, label_names(entries, model, cells))]
            for start in range(0, len(items), FEEDBACK_BATCH):
                http.post("/v1/feedback", json={"feedback": items[start:start + FEEDBACK_BATCH]}).raise_for_status()
            print(f"{model:<16} replayed {len(ids)} sentences", flush=True)
        metrics = http.get("/metrics").text
    return {model: counters(metrics, model) for model in ready}


def main() -> None:
    p = common_parser(__doc__)
    p.add_argument("--models", type=Path, default=ROOT / "models")
    p.add_argument("--data", type=Path, help="a labelled TSV instead of SHARED/data/sst2/dev.tsv")
    args = p.parse_args()
    data = dev_set(args.shared, args.data)
    folders = sorted(f for f in args.models.glob("*") if (f / MANIFEST_FILE).is_file())
    if not folders:
        sys.exit(f"benchmarks/feedback_replay.py: no variants in {args.models} (make variants builds them)")
    examples = read_tsv(data)
    if examples.labels is None:
        sys.exit(f"benchmarks/feedback_replay.py: {data} has no label column")
    with tempfile.TemporaryDirectory() as work:
        models = Path(shutil.copytree(args.models, Path(work) / "models"))
        offline = evaluate_all([models / f.name for f in folders], data, None, args.threads)
        print(table(offline), flush=True)
        with slimserve(models, threads=args.threads) as service:
            live = replay(service.url, [r["variant"] for r in offline], examples.texts, examples.labels)
    n = len(examples.texts)
    rows = {}
    print(f"\n{'model':<16} {'evaluate':>9} {'right':>6} {'live':>9} {'right':>6} {'wrong':>6}  same", flush=True)
    for result in offline:
        model = result["variant"]
        if model not in live:
            continue
        figures = live[model]
        right_offline = round(result["accuracy"] * n)
        right_live = int(figures.get("correct", 0))
        rows[model] = {"evaluate_accuracy": result["accuracy"], "evaluate_right": right_offline,
                       "live_accuracy": figures.get("accuracy"), "live_right": right_live,
                       "outcomes": {k: int(v) for k, v in figures.items() if k != "accuracy"},
                       "same": right_live == right_offline}
        print(f"{model:<16} {result['accuracy']:>9.4f} {right_offline:>6} {figures.get('accuracy', 0.0):>9.4f} "
              f"{right_live:>6} {int(figures.get('wrong', 0)):>6}  {'yes' if rows[model]['same'] else 'NO'}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "feedback-replay.json"
    out.write_text(json.dumps({"data": data.name, "sentences": n, "models": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
