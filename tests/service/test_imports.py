"""The serving image carries no torch or transformers: importing the service must not need
them, and neither must the service's and the variant contract's tests, which serve on
fake variants (tests/fakes.py)."""

import os
import subprocess
import sys
from pathlib import Path

SERVICE_MODULES = ["service", "service.app", "service.api", "service.api_v1", "service.api_v2", "service.api_rerank",
                   "service.api_feedback", "service.feedback", "service.batching", "service.body_limit",
                   "service.deadlines", "service.errors", "service.keys",
                   "service.inference", "service.metrics", "variant.backends.ort", "variant.measure",
                   "service.repository", "service.serving", "service.settings", "variant.tokenization",
                   "service.routes", "service.api_routes",
                   "service.__main__"]
BLOCKED = ("torch", "transformers", "optimum", "onnx")  # what only the compressor needs
ROOT = Path(__file__).resolve().parents[2]


def test_service_imports_neither_torch_nor_transformers():
    code = (
        "import importlib, sys\n"
        f"for name in {SERVICE_MODULES!r}: importlib.import_module(name)\n"
        "import service.app as a; a.create_app()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum', 'compressor'))\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def without_compressor_packages(tmp_path: Path) -> dict[str, str]:
    """An environment in which importing any of BLOCKED fails outright, as where it is not
    installed: stronger than watching sys.modules."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {BLOCKED!r}:\n"
        "            raise ModuleNotFoundError('blocked: ' + name, name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    return {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}


def test_service_runs_where_torch_cannot_be_imported(tmp_path):
    code = "import service.__main__, service.app; service.app.create_app(); print('ok')"
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                            env=without_compressor_packages(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_serving_sides_tests_run_where_torch_cannot_be_imported(tmp_path):
    # Those needing exported variants, a toy graph or the compressor skip; the rest (every
    # route, limit, metric, fault and rule over fake variants) must pass, and none may error.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "-m", "not slow",
         "tests/service", "tests/variant", "--ignore", "tests/service/test_imports.py"],
        check=False, capture_output=True, text=True, timeout=300, cwd=ROOT, env=without_compressor_packages(tmp_path))
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0 and "failed" not in summary and "error" not in summary, result.stdout[-3000:]
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 150 and "skipped" in summary and "needs torch" in result.stdout, summary
