"""The `compressor` command.

Examples:
    compressor build-default --out models
    compressor compress default --method prune --ratio 0.75 --quantize int8 --calibration texts.txt --name prune75-int8
    compressor compress ./my-bert-sst2 --method none --name original
    compressor evaluate models/prune75-int8 --data sst2/dev.tsv --reference models/original --json prune75-int8.json
    compressor report models --data sst2/dev.tsv --out reports
    compressor search ./my-bert-sst2 --objective latency --max-drop 1 --data sst2/dev.tsv --calibration sst2/train.tsv --name fast
    compressor search ./my-bert-sst2 --objective size --max-drop 1.5 --data sst2/dev.tsv --calibration sst2/train.tsv --name small
    compressor train-default --train sst2/train.tsv --dev sst2/dev.tsv

Every command ends with one summary line. Bad input exits 2 with one readable line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Only modules that import no torch: the inputs are checked before it loads (seconds).
from compressor.data import read_calibration, read_tsv
from compressor.errors import InputError, ParityError
from compressor.inputs import check_compress, check_out
from compressor.recipe import QUANTIZERS, Recipe, parse_layers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="compressor", description="Compress text classifiers offline and export ONNX variants.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    commands = parser.add_subparsers(dest="command", required=True)

    c = commands.add_parser("compress", help="compress one model into one variant folder")
    c.add_argument("model", help="local Hugging Face checkpoint folder, a Hub name ORG/NAME[@REVISION], or 'default'")
    c.add_argument("--method", required=True,
                   help="a method (svd, svd-aware, prune, ae, kronecker, ...; a wrong name lists them all), "
                        "a '+'-joined pipeline such as prune@0.7+embed-ae@0.5, or none to export as is")
    c.add_argument("--ratio", type=float, default=0.5, help="kept fraction of the compressed parameters, 0 < R <= 1")
    c.add_argument("--calibration", type=Path, help="unlabeled text: one per line, or a .tsv column")
    c.add_argument("--text-col", help="text column of a .tsv calibration file (default: sentence)")
    c.add_argument("--text-pair-col", help="second text column of a .tsv calibration file, for pair tasks "
                                           "(paraphrase, NLI, rerankers): the methods see each row as a pair")
    c.add_argument("--quantize", help=", ".join(
        f"{name} ({q.summary}{', needs --calibration' if q.needs_calibration else ''})"
        for name, q in QUANTIZERS.items()) + "; applied last")
    c.add_argument("--allocation", default="uniform",
                   help="uniform, or sensitivity: per-layer budgets searched on calibration text (SVD family)")
    c.add_argument("--drop-layers", help="drop-layers: remove these layers (counted from 0, e.g. 1,3) "
                                         "instead of choosing by --ratio")
    c.add_argument("--layer-repair", default="auto",
                   help="drop-layers: inputs (refit the next layer's Q, K, V by least squares), inputs+norm "
                        "(also the LayerNorm before the gap), none, or auto: per gap, whichever helps most")
    c.add_argument("--max-length", type=int, help="tokens per input (default: what the model allows)")
    c.add_argument("--name", required=True, help="variant name: the folder under --out and the served model name")
    c.add_argument("--out", type=Path, default=Path("models"))

    e = commands.add_parser("evaluate", help="accuracy, agreement, latency and size of variants")
    e.add_argument("variants", nargs="+", type=Path, help="variant folders, e.g. models/int8")
    e.add_argument("--data", type=Path, help="labelled TSV with a header (GLUE style)")
    e.add_argument("--reference", type=Path, help="variant folder to measure agreement against")
    e.add_argument("--text-col")
    e.add_argument("--text-pair-col")
    e.add_argument("--label-col")
    e.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="thread budget: a variant runs on the threads per run it records, within it")
    e.add_argument("--json", type=Path, help="also write the results here")

    r = commands.add_parser("report", help="measure every variant of a folder: table, JSON and Pareto plot")
    r.add_argument("models", type=Path, help="folder of variants")
    r.add_argument("--data", type=Path, required=True, help="labelled TSV with a header (GLUE style)")
    r.add_argument("--reference", type=Path, help="variant to measure agreement against (default: MODELS/original)")
    r.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="thread budget: a variant runs on the threads per run it records, within it")
    r.add_argument("--out", type=Path, default=Path("reports"))

    searches = {"search": "the fastest (--objective latency) or smallest (size) variant within --max-drop points "
                          "of the original, measured on this machine",
                "smallest": "search --objective size, under its older name"}
    for command, summary in searches.items():
        s = commands.add_parser(command, help=summary)
        s.add_argument("model", help="local Hugging Face checkpoint folder, a Hub name ORG/NAME[@REVISION], or 'default'")
        s.add_argument("--max-drop", type=float, required=True,
                       help="accuracy points (or points of agreement, without --data) the variant may lose")
        if command == "search":
            s.add_argument("--objective", default="latency", help="latency (default) or size")
            s.add_argument("--batch", default="mix", help="batch profile timed: 1, 32 or mix (both; default)")
            s.add_argument("--time-budget", type=float,
                           help="seconds of wall-clock time for the whole search: the candidate running when it "
                                "is spent is stopped and the best that held so far wins (exits 2 if the fp32 "
                                "export, which every candidate is measured against, does not fit in it)")
            s.add_argument("--min-speedup",
                           help="a candidate holds only if it runs at least this many times the fp32 export's "
                                "speed at every batch size of --batch on some runtime (1: at least as fast); "
                                "one that is slower misses as too slow")
        s.add_argument("--batch-dependent", action="store_true",
                       help="also try quantizers whose answers depend on the batch (dynamic int8: one activation "
                            "scale per batch, so a text's answer moves with what shares its batch); skipped "
                            "by default")
        s.add_argument("--data", type=Path, help="labelled TSV to score accuracy on (GLUE style)")
        s.add_argument("--text-col", help="text column of --data and of a .tsv --calibration (default: sentence)")
        s.add_argument("--text-pair-col", help="second text column of both, for pair tasks")
        s.add_argument("--label-col")
        s.add_argument("--calibration", type=Path,
                       help="unlabeled text for the methods (and, without --data, to score on)")
        s.add_argument("--calibration-col", help="text column of a .tsv calibration file, where it differs "
                                                 "from --text-col")
        s.add_argument("--threads", type=int, help="the thread budget candidates are timed within (default: all cores)")
        s.add_argument("--name", required=True)
        s.add_argument("--out", type=Path, default=Path("models"))

    b = commands.add_parser("build-default", help="build the embedded default set of variants")
    b.add_argument("--out", type=Path, default=Path("models"))

    f = commands.add_parser("train-default", help="retrain the default model's adapter and head (developers)")
    f.add_argument("--train", type=Path, required=True, help="SST-2 train.tsv")
    f.add_argument("--dev", type=Path, required=True, help="SST-2 dev.tsv (reported, never used to choose)")
    f.add_argument("--epochs", type=float, help="passes over train (default: the committed adapter's 3)")
    f.add_argument("--seed", type=int, help="default: the committed adapter's 0")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> str:
    """Carry out one command; return its summary line."""
    if args.command == "compress":
        dropped = parse_layers(args.drop_layers) if args.drop_layers is not None else None
        calibration = read_calibration(args.calibration, args.text_col, args.text_pair_col) \
            if args.calibration else None
        recipe = Recipe(args.name, args.method, args.ratio, args.quantize, args.allocation,
                        layer_repair=args.layer_repair, drop_layers=dropped)
        check_compress(args.model, recipe, args.out, calibration)  # compress() does too, after torch loads
        from compressor.export import parity_summary
        from compressor.pipeline import compress

        m = compress(args.model, recipe, args.out, calibration, args.max_length)
        return (f"wrote {args.out / m.name}: {m.method}, "
                f"{m.parameters / 1e6:.2f}M of {m.parameters_original / 1e6:.2f}M parameters, "
                f"{m.onnx_bytes / 1e6:.1f} MB, {parity_summary(m.method, recipe.quantize, m.parity)}")
    if args.command in ("search", "smallest"):
        # search() checks its inputs before it loads torch.
        from compressor.search import STOPPED, parse_min_speedup, search

        data = read_tsv(args.data, args.text_col, args.text_pair_col, args.label_col) if args.data else None
        # --data's columns name the calibration's too when it is a TSV; a text file is one text per line.
        calibration = read_calibration(args.calibration, args.calibration_col or args.text_col,
                                       args.text_pair_col if args.calibration.suffix == ".tsv" else None) \
            if args.calibration else None
        objective = getattr(args, "objective", "size")
        min_speedup = getattr(args, "min_speedup", None)
        m, trail = search(args.model, args.name, args.out, args.max_drop, data, calibration, objective,
                          getattr(args, "batch", "mix"), getattr(args, "time_budget", None), args.threads,
                          batch_dependent=args.batch_dependent,
                          min_speedup=None if min_speedup is None else parse_min_speedup(min_speedup))
        found = m.search
        return (f"wrote {args.out / m.name}: {m.method} on {m.runtime.label()}, {m.onnx_bytes / 1e6:.1f} MB, "
                f"{found['metric']} {found['score']:.4f} (bound {found['bound']:.4f}), "
                f"{m.runtime.model_extra['speedup']:.2f}x the fp32 export's speed at batch {found['batch']}; "
                f"{len(trail)} candidates in {found['seconds']:.0f} s"
                + "".join(f"; {a.recipe} {a.note}" for a in trail if a.note.startswith(STOPPED)))
    if args.command == "build-default":
        check_out(args.out)
        from compressor.pipeline import build_default

        manifests = build_default(args.out)
        return f"wrote {len(manifests)} variants to {args.out}: {', '.join(m.name for m in manifests)}"
    if args.command == "evaluate":
        from compressor.evaluate import evaluate_all, table

        for path in (args.data, args.reference):
            if path is not None and not path.exists():
                raise InputError(f"{path} does not exist")
        if args.json is not None and args.json.is_dir():
            raise InputError(f"--json {args.json} is a folder; name a file")
        results = evaluate_all(args.variants, args.data, args.reference, args.threads,
                               args.text_col, args.text_pair_col, args.label_col)
        print(table(results))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        best = max(results, key=lambda r: r.get("accuracy") or 0)
        summary = f"evaluated {len(results)} variant(s)"
        return summary + (f"; best accuracy {best['accuracy']:.4f} ({best['variant']})" if "accuracy" in best else "")
    if args.command == "report":
        from compressor.report import measure, variant_folders, write_report

        if not args.data.is_file():
            raise InputError(f"{args.data} does not exist")
        check_out(args.out)
        folders = variant_folders(args.models)
        reference = args.reference or (args.models / "original" if (args.models / "original").is_dir() else None)
        results = measure(folders, args.data, reference, args.threads)
        write_report(results, args.out, f"{args.models.name} on {args.data.name}")
        print((args.out / "report.md").read_text(encoding="utf-8"), end="")
        return f"wrote {args.out}/report.md, report.json and pareto.png for {len(results)} variant(s)"
    if args.command == "train-default":
        for path in (args.train, args.dev):
            if not path.is_file():
                raise InputError(f"{path} does not exist")
        if args.epochs is not None and args.epochs <= 0:
            raise InputError(f"--epochs must be positive, got {args.epochs:g}")
        from compressor.default_model import ADAPTER_FILE, TrainSettings, train_adapter

        given = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
        figures = train_adapter(args.train, args.dev, TrainSettings(**given))
        return (f"wrote {ADAPTER_FILE}: SST-2 dev accuracy {figures['dev_accuracy']:.4f} "
                f"after {figures['steps']} steps in {figures['wall_seconds'] / 60:.0f} min")
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        summary = run(args)
    except InputError as exc:
        print(f"compressor: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except ParityError as exc:  # the tool failed on this model, not the user: exit 1
        print(f"compressor: export failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # variants are written to a temporary folder and renamed at the end
        print("compressor: interrupted; what was being written was discarded, what was finished stays", file=sys.stderr)
        sys.exit(130)
    print(summary)


if __name__ == "__main__":
    main()
