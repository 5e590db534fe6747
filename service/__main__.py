"""`python -m service --models models --port 8000`: settings → uvicorn.

Command-line flags override SLIMSERVE_* variables. One worker per process by design:
metrics live in process memory, so scale with replicas, not `--workers`.

Shutdown: on SIGTERM (or Ctrl-C) the server stops accepting connections, lets the
requests in flight finish for up to `shutdown_grace_seconds`, drains the batch queues,
and exits 0.

Once the port accepts connections it prints one line to stdout, `slimserve ready on
http://HOST:PORT with N variant(s); try: curl ...`, so scripts and people can wait for it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from pathlib import Path

import uvicorn
from pydantic import ValidationError
from pydantic_settings import SettingsError
from uvicorn.config import STARTUP_FAILURE

from service.app import create_app, ready_message
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
    except SettingsError as exc:  # a SLIMSERVE_* variable that is not valid JSON where JSON is expected
        fail(str(exc).splitlines()[0])
    if not settings.models.is_dir():
        fail(f"models folder {settings.models} does not exist")
    return settings


def local_url(address: tuple) -> str:
    """The URL a client on this machine reaches a bound address at: a wildcard bind
    (0.0.0.0, ::) answers on loopback, and an IPv6 host needs brackets."""
    host, port = address[0], address[1]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ReadyServer(uvicorn.Server):
    """uvicorn runs the app's startup (loading and warming every variant) before it binds
    the port, so a line printed from the lifespan would come too early: print it here,
    once the socket listens. The bound address is read back, so `--port 0` shows the real port."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.servers and self.servers[0].sockets:
            url = local_url(self.servers[0].sockets[0].getsockname())
            print(ready_message(self.config.app, url), flush=True)


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn raises the SIGTERM it caught again once it has shut down cleanly, so the
    # exit code would say "killed"; a drained shutdown exits 0, as orchestrators expect.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level, workers=1,
                            timeout_graceful_shutdown=settings.shutdown_grace_seconds)
    server = ReadyServer(config)
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl-C during startup: as `uvicorn.run`, no trace
        pass
    if not server.started:  # as `uvicorn.run`: a server that never listened is a failed start
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main()
