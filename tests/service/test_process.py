"""A real `python -m service` process on a free loopback port: it says when it is ready,
answers, refuses a burst beyond its queue quickly, and shuts down cleanly on SIGTERM."""

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import metric_value, toy_graph, wait_until

pytestmark = pytest.mark.slow  # real `python -m service` processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_m_service_serves_a_variant(models_dir):
    process, base = start(models_dir, "--host", "127.0.0.1", SLIMSERVE_WARMUP="true")
    try:
        response = httpx.post(f"{base}/v1/models/tiny-bert/classify", json={"inputs": ["a charming journey"]}, timeout=10)
        assert response.status_code == 200
        assert response.json()["predictions"][0]["label"] in ("negative", "positive")
        assert 'slimserve_requests_total{model="tiny-bert",status="200"} 1.0' in httpx.get(f"{base}/metrics").text
    finally:
        process.terminate()
        process.wait(timeout=20)


def lines_of(stream) -> queue.Queue:
    """Every line the stream yields, as it comes (None at its end), read by a thread so a
    test can wait on output with a deadline and the pipe never fills up."""
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


READY = re.compile(r"slimserve ready on (http://\S+) with (\d+) variant\(s\); try: curl -s (\S+) "
                   r"-H 'content-type: application/json' -d '(.+)'")


def test_the_ready_line_comes_when_the_port_answers(models_dir):
    # Port 0: the printed URL is the only way to know where the service listens.
    env = {**os.environ, "SLIMSERVE_THREADS": "2", "SLIMSERVE_WARMUP": "false"}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--models", str(models_dir), "--port", "0", "--host", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stdout, stderr = lines_of(process.stdout), lines_of(process.stderr)
    try:
        deadline = time.monotonic() + 60
        while True:
            line = stdout.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"stdout ended before the ready line: {list(stderr.queue)}"
            if line.startswith("slimserve "):
                break
        ready = READY.fullmatch(line)
        assert ready, line
        base, count, url, body = ready.groups()
        assert count == "3" and url == f"{base}/v1/models/tiny-bert/classify"  # the uncompressed variant
        response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=10)
        assert response.status_code == 200 and response.json()["model"] == "tiny-bert"
        assert json.loads(body) == {"inputs": ["a charming and often affecting journey"]}
    finally:
        process.terminate()
        process.wait(timeout=30)
    rest = []
    while (line := stdout.get(timeout=30)) is not None:  # everything it printed, up to the end of the pipe
        rest.append(line)
    assert not any(line.startswith("slimserve ") for line in rest)  # said once


def test_the_ready_line_says_when_no_variant_is_ready(client_for, tmp_path):
    from service.app import ready_message

    app = client_for(tmp_path).app
    assert ready_message(app, "http://127.0.0.1:8000") == (
        "slimserve up on http://127.0.0.1:8000 but no variant is ready; see: curl -s http://127.0.0.1:8000/v1/models")


@pytest.mark.parametrize("address, url", [
    (("127.0.0.1", 8000), "http://127.0.0.1:8000"),
    (("0.0.0.0", 8000), "http://127.0.0.1:8000"),
    (("::", 8000, 0, 0), "http://[::1]:8000"),
    (("::1", 8001, 0, 0), "http://[::1]:8001"),
])
def test_the_ready_line_names_an_address_a_local_client_can_reach(address, url):
    from service.__main__ import local_url

    assert local_url(address) == url


@pytest.mark.parametrize("args, env, message", [
    (["--models", "/nonexistent/models"], {}, "models folder /nonexistent/models does not exist"),
    (["--port", "99999"], {}, "port: Input should be less than or equal to 65535"),
    (["--threads", "0"], {}, "threads: Input should be greater than or equal to 1"),
    ([], {"SLIMSERVE_LOG_LEVEL": "verbose"}, "log_level: Input should be"),
    ([], {"SLIMSERVE_CASCADES": "{not json"}, 'error parsing value for field "cascades"'),
])
def test_bad_settings_exit_2_with_one_line(tmp_path, args, env, message):
    result = subprocess.run([sys.executable, "-m", "service", "--models", str(tmp_path), *args],
                            check=False, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def slow_models(models_dir, tmp_path):
    """One variant whose every run takes about half a second: requests stay in flight."""
    shutil.copytree(models_dir / "tiny-bert", tmp_path / "slow")
    toy_graph(tmp_path / "slow" / "model.onnx", slow=8)
    return tmp_path


def start(models, *args, **env):
    """`python -m service` on a free port with `args` and `env`; returns once it is ready."""
    port = free_port()
    variables = {**os.environ, "SLIMSERVE_THREADS": "2", "SLIMSERVE_WARMUP": "false", **env}
    process = subprocess.Popen([sys.executable, "-m", "service", "--models", str(models), "--port", str(port), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=variables)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, process.stdout.read()
        try:
            return httpx.get(f"{base}/health/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, f"the service on {base} to answer /health/ready", timeout=60, interval=0.1)
    return process, base


def post_one(base, i, texts=1):
    """One request with its own text(s) (no two batch as equal): its status and seconds."""
    start = time.perf_counter()
    try:
        r = httpx.post(f"{base}/v1/models/slow/classify", json={"inputs": [f"text {i} {j}" for j in range(texts)]},
                       timeout=60)
        return r.status_code, time.perf_counter() - start
    except httpx.TransportError as exc:
        return type(exc).__name__, time.perf_counter() - start


def post_many(base, count, texts=1):
    """`count` concurrent requests: their answers and seconds."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda i: post_one(base, i, texts), range(count)))


def slow_metric(base, name) -> float:
    """A sample of the slow variant's from /metrics; 0 before its first."""
    text = httpx.get(f"{base}/metrics", timeout=5).text
    try:
        return metric_value(text, name, model="slow")
    except AssertionError:
        return 0.0


def refuses_connections(base) -> bool:
    try:
        httpx.get(f"{base}/health/live", timeout=2)
    except httpx.TransportError:
        return True
    return False


def test_sigterm_finishes_requests_in_flight_and_exits_0(models_dir, tmp_path):
    process, base = start(slow_models(models_dir, tmp_path), SLIMSERVE_MAX_BATCH_SIZE="1")

    def runs_begun() -> float:
        return slow_metric(base, "slimserve_queue_duration_seconds_count")

    try:
        with ThreadPoolExecutor(3) as pool:
            requests = [pool.submit(post_one, base, 0)]  # one batch each: seconds of work in all
            wait_until(lambda: runs_begun() == 1, "the first request's run to start", interval=0.05)
            requests += [pool.submit(post_one, base, i) for i in (1, 2)]
            wait_until(lambda: runs_begun() + slow_metric(base, "slimserve_queue_depth") >= 3,
                       "the other two requests to queue behind the first", interval=0.05)
            process.send_signal(signal.SIGTERM)
            wait_until(lambda: refuses_connections(base), "the draining service to refuse new connections")
            assert not all(r.done() for r in requests)  # refused while requests were still in flight
            answers = [r.result(timeout=60) for r in requests]
        assert [status for status, _ in answers] == [200, 200, 200]
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    assert "Traceback" not in process.stdout.read()


def test_a_burst_beyond_the_queue_gets_quick_429s_and_the_rest_complete(models_dir, tmp_path):
    process, base = start(slow_models(models_dir, tmp_path), SLIMSERVE_MAX_QUEUE="2", SLIMSERVE_MAX_BATCH_SIZE="1")
    try:
        answers = post_many(base, 12)
        statuses = [status for status, _ in answers]
        assert set(statuses) <= {200, 429} and statuses.count(200) >= 3 and statuses.count(429) >= 6, statuses
        slowest_refusal = max(seconds for status, seconds in answers if status == 429)
        fastest_answer = min(seconds for status, seconds in answers if status == 200)
        assert slowest_refusal < fastest_answer  # refused at once, not after waiting its turn
    finally:
        process.terminate()
        process.wait(timeout=30)
