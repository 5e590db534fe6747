"""Every SLIMSERVE_* knob, in one place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLIMSERVE_", protected_namespaces=())

    models: Path = Field(Path("models"), description="Folder holding one sub-folder per variant.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # CPU threads all ONNX Runtime sessions may use together. Each inference gets
    # `intra_op_threads`; at most threads // intra_op_threads run at once, so several
    # variants never oversubscribe the cores between them.
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    intra_op_threads: int | None = Field(None, ge=1, description="Default: all of `threads`.")
    max_inputs: int = Field(64, ge=1, description="Most texts one request may carry.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    def concurrent_runs(self) -> int:
        return max(1, self.threads // self.session_threads())

    def session_threads(self) -> int:
        return min(self.intra_op_threads or self.threads, self.threads)
