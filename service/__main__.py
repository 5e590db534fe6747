"""`python -m service --models models --port 8000`: settings → uvicorn.

Command-line flags override SLIMSERVE_* variables. One worker per process by design:
metrics live in process memory, so scale with replicas, not `--workers`.

Shutdown: on SIGTERM (or Ctrl-C) the server stops accepting connections, lets the
requests in flight finish for up to `shutdown_grace_seconds`, drains the batch queues,
and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.settings import Settings


def parse_args(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m service", description="Serve slimserve variants.")
    parser.add_argument("--models", type=Path, help="folder of variants (SLIMSERVE_MODELS, default models)")
    parser.add_argument("--host", help="bind address (SLIMSERVE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (SLIMSERVE_PORT, default 8000)")
    parser.add_argument("--threads", type=int, help="CPU threads for all sessions together (SLIMSERVE_THREADS)")
    args = parser.parse_args(argv)
    return {k: v for k, v in vars(args).items() if v is not None}


def fail(message: str) -> None:
    print(f"python -m service: error: {message}", file=sys.stderr)
    sys.exit(2)


def load_settings(argv: list[str] | None) -> Settings:
    """Settings from flags and SLIMSERVE_* variables; a bad value exits 2 with one line."""
    try:
        settings = Settings(**parse_args(argv))
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        fail(f"{field}: {error['msg']} (got {error.get('input')!r})")
    if not settings.models.is_dir():
        fail(f"models folder {settings.models} does not exist")
    return settings


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn raises the SIGTERM it caught again once it has shut down cleanly, so the
    # exit code would say "killed"; a drained shutdown exits 0, as orchestrators expect.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                workers=1, timeout_graceful_shutdown=settings.shutdown_grace_seconds)


if __name__ == "__main__":
    main()
