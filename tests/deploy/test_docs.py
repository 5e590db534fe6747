"""Docs that cannot drift: docs/benchmarks.md is what benchmarks/render_docs.py renders from
benchmarks/results/*.json, the README's figures are those of the results it names, and
every relative link in README.md and docs/*.md leads to a file and heading that exist."""

import copy
import importlib.util
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def load_renderer():
    spec = importlib.util.spec_from_file_location("render_docs", ROOT / "benchmarks" / "render_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_docs = load_renderer()


@pytest.fixture(scope="module")
def results():
    return render_docs.load_results()


def test_benchmarks_page_is_what_the_results_render(results):
    rendered = render_docs.render(results)
    assert render_docs.PAGE.read_text(encoding="utf-8") == rendered, (
        "docs/benchmarks.md differs from benchmarks/results/*.json: run `python benchmarks/render_docs.py`")


def test_benchmarks_page_is_a_short_reference(results):
    page = render_docs.render(results)
    assert page.count("\n") <= 200
    assert "[lab notes](lab-notes.md)" in page and (ROOT / "docs" / "lab-notes.md").is_file()


def test_a_changed_figure_changes_the_page(results):
    changed = copy.deepcopy(results)
    original = next(r for r in changed["teacher.json"] if r["variant"] == "original")
    original["accuracy"] = 0.8811
    page = render_docs.render(changed)
    assert "88.11%" in page and page != render_docs.render(results)


def test_every_results_file_has_a_section_and_a_source(results):
    render_docs.check_coverage(results)
    for file in results:
        if file != render_docs.RUNS:
            entry = render_docs.provenance(results, file)
            assert entry["command"] and re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry["date"])


def test_a_results_file_without_a_section_is_refused(results):
    extra = {**results, "new-run.json": [{"variant": "original"}]}
    with pytest.raises(ValueError, match="no section renders new-run.json"):
        render_docs.render(extra)


def test_a_results_file_without_a_source_is_refused(results):
    runs = copy.deepcopy(results[render_docs.RUNS])
    del runs["runs"]["soak.json"]
    with pytest.raises(ValueError, match="soak.json"):
        render_docs.render({**results, render_docs.RUNS: runs})


def test_gpu_section_renders_a_gpu_run_when_there_is_one(results):
    assert "Not measured yet" in render_docs.render(results)
    runs = copy.deepcopy(results[render_docs.RUNS])
    runs["runs"]["gpu.json"] = {"command": "scripts/gpu-check.sh", "machine": "intel-xeon", "date": "2026-12-01"}
    gpu = {"onnxruntime": "1.x", "rows": [
        {"variant": "int8", "provider": "cuda", "runs_on": "CUDAExecutionProvider", "accuracy": 0.8945,
         "max_logit_diff_vs_cpu": 0.01, "batch_1_ms": 1.0, "batch_32_ms": 2.0},
        {"variant": "int8", "provider": "tensorrt", "note": "TensorrtExecutionProvider not in this build"}]}
    page = render_docs.render({**results, render_docs.RUNS: runs, "gpu.json": gpu})
    assert "| `int8` | 89.45%, 1.00 / 2.00 ms" in page and "TensorrtExecutionProvider not in this build |" in page
    assert "Not measured yet" not in page


def readme_table() -> dict[str, str]:
    """The README's default-variants table: variant name → its row."""
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| `([^`]+)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_readme_table_is_the_default_variants_run(results):
    rows = readme_table()
    measured = {r["variant"]: r for r in results["default-variants.json"]}
    assert set(rows) == set(measured)
    base = measured["original"]
    for name, r in measured.items():
        cells = [c.strip() for c in rows[name].strip("|").split("|")]
        assert cells[2] == f"{100 * r['accuracy']:.2f}%", name
        if name != "original":
            assert cells[3] == f"{100 * (r['accuracy'] - base['accuracy']):+.2f}".replace("-", "\u2212"), name
        faster = [f"{base['latency_ms'][f'batch_{b}']['p50'] / r['latency_ms'][f'batch_{b}']['p50']:.2f}×"
                  for b in (1, 32)]
        assert cells[-2:] == faster, name
        if name != "original" and "cascade" not in name:
            assert f"{r['onnx_bytes'] / 1e6:.1f} MB ({base['onnx_bytes'] / r['onnx_bytes']:.1f}× smaller)" in cells[4]


def test_readme_measured_result_is_the_methods_run(results):
    section = README.read_text(encoding="utf-8").split("## A measured result")[1].split("\n## ")[0]
    rows = {r["variant"]: r for r in results["methods.json"]}
    base, pruned, optimum = rows["original"], rows["prune-75-int8"], rows["optimum-int8"]
    figures = [f"{100 * base['accuracy']:.2f}%", f"{100 * pruned['accuracy']:.2f}%"]
    for r in (pruned, optimum):
        figures += [f"{base['latency_ms']['batch_32']['p50'] / r['latency_ms']['batch_32']['p50']:.2f}×",
                    f"{base['onnx_bytes'] / r['onnx_bytes']:.2f}×"]
    assert optimum["accuracy"] == pruned["accuracy"]  # the README says "the same accuracy"
    assert [f for f in figures if f not in section] == []


def test_readme_is_a_front_page():
    text = README.read_text(encoding="utf-8")
    assert text.count("\n") <= 150
    first_block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    assert first_block.lstrip().startswith("make demo") and "make test" in first_block
    assert "../shared" not in text


# --- links -------------------------------------------------------------------------------

def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, counts, fenced = set(), {}, False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6} (.+)", line)):
            base = slug(match.group(1))
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_lead_somewhere(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no {path}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)
