"""The serving image carries no torch or transformers: importing the service must not need them."""

import subprocess
import sys

SERVICE_MODULES = ["service", "service.app", "service.api_v1", "service.backend", "service.errors", "service.inference", "service.manifest", "service.metrics",
                   "service.repository", "service.settings", "service.tokenization", "service.__main__"]


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


def test_service_runs_where_torch_cannot_be_imported(tmp_path):
    """Stronger than watching sys.modules: make `import torch` fail outright."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    code = "import service.__main__, service.app; service.app.create_app(); print('ok')"
    env = {"PYTHONPATH": f"{tmp_path}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
