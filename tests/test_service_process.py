"""A real `python -m service` process on a free loopback port answers a request."""

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_m_service_serves_a_variant(models_dir):
    port = free_port()
    env = {**os.environ, "SLIMSERVE_THREADS": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--models", str(models_dir), "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "service did not become ready in 60 s"
            time.sleep(0.2)
        response = httpx.post(f"{base}/v1/models/tiny-bert/classify", json={"inputs": ["a charming journey"]}, timeout=10)
        assert response.status_code == 200
        assert response.json()["predictions"][0]["label"] in ("negative", "positive")
        assert 'slimserve_requests_total{model="tiny-bert",status="200"} 1.0' in httpx.get(f"{base}/metrics").text
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.parametrize("args, env, message", [
    (["--models", "/nonexistent/models"], {}, "models folder /nonexistent/models does not exist"),
    (["--port", "99999"], {}, "port: Input should be less than or equal to 65535"),
    (["--threads", "0"], {}, "threads: Input should be greater than or equal to 1"),
    ([], {"SLIMSERVE_LOG_LEVEL": "verbose"}, "log_level: Input should be"),
])
def test_bad_settings_exit_2_with_one_line(tmp_path, args, env, message):
    result = subprocess.run([sys.executable, "-m", "service", "--models", str(tmp_path), *args],
                            capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
