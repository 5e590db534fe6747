"""What the benchmarks share: where ../shared is, the baseline every table carries, and
a service process started on loopback for a measurement.

The baseline is what a user would otherwise pick: Optimum's ORTQuantizer with
AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True), applied to
slimserve's own fp32 export of the same teacher.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from variant.manifest import ONNX_FILE, read_manifest, write_manifest

BASELINE = "optimum-int8"
SHARED = ROOT.parent / "shared"


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark takes; a script adds its own."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=SHARED, help="the shared folder (default ../shared)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    return p


def shared_paths(shared: Path, script: str) -> tuple[Path, Path, Path]:
    """(teacher folder, SST-2 train, SST-2 dev), or exit 2 saying what is missing."""
    paths = (shared / "models" / "minilm-l6-sst2", shared / "data" / "sst2" / "train.tsv",
             shared / "data" / "sst2" / "dev.tsv")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"{script}: needs the ../shared folder ({', '.join(missing)} not found)", file=sys.stderr)
        sys.exit(2)
    return paths


def optimum_int8(original: Path, teacher: Path, out: Path) -> None:
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
    manifest.name, manifest.method = BASELINE, "optimum-int8"
    manifest.settings = {"quantize": "int8", "quantize_recipe": "Optimum avx512_vnni, per_channel=True, dynamic"}
    manifest.onnx_bytes, manifest.parity, manifest.evaluations = (target / ONNX_FILE).stat().st_size, None, {}
    write_manifest(target, manifest)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Service:
    url: str
    pid: int


@contextlib.contextmanager
def server(command: list[str], env: dict[str, str], port: int, ready: str = "/health/ready",
           cwd: Path = ROOT) -> Iterator[Service]:
    """Start a server process in `cwd`, wait until `ready` answers 200, stop it afterwards."""
    # Its log goes to a file: a pipe nobody reads would block a chatty server once full.
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 — closed in the finally below
    process = subprocess.Popen(command, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"server exited: {log.read()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}{ready}", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready in 300 s")
            time.sleep(0.3)
        yield Service(url, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=40)  # the service's own grace period is 30 s
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def slimserve(models: Path, **settings) -> contextlib.AbstractContextManager[Service]:
    port = free_port()
    env = {"SLIMSERVE_THREADS": "2", "SLIMSERVE_LOG_LEVEL": "warning",
           **{f"SLIMSERVE_{k.upper()}": str(v) for k, v in settings.items()}}
    return server([sys.executable, "-m", "service", "--models", str(models), "--port", str(port)], env, port)
