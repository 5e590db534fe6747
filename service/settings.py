"""Every SLIMSERVE_* knob, in one place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.keys import KeyScope, read_digests, split_keys
from service.routes import Arms
from variant import heads
from variant.backends.providers import EXECUTION_PROVIDERS
from variant.cascade import CascadeSpec
from variant.manifest import BackendName, Precision, Runtime
from variant.runtimes import BACKENDS
from variant.tokenization import MAX_BATCH_SIZE, MAX_BATCH_TOKENS

# The table's names, so a new row is a valid setting with no edit here.
ProviderName = Literal[tuple(EXECUTION_PROVIDERS)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLIMSERVE_", protected_namespaces=())

    models: Path = Field(Path("models"), description="Folder holding one sub-folder per variant.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # CPU threads every variant's runs may use together. A run computes on its variant's
    # threads per run (`intra_op_threads`, else what its manifest records, else all of
    # `threads`), and a variant runs threads // that side by side, so several variants
    # never oversubscribe the cores between them.
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    intra_op_threads: int | None = Field(None, ge=1, description=(
        "Threads per run for every variant. Default: its manifest's runtime.threads, else all of `threads`."))
    execution_provider: ProviderName = Field("cpu", description="Where ONNX Runtime computes.")
    # A variant runs on the backend and precision its manifest records (`runtime`); these
    # override it for every variant. A precision the chosen backend lacks is refused at start.
    backend: BackendName | None = Field(None, description="Run every variant on this backend.")
    precision: Precision | None = Field(None, description="Run every variant at this precision.")
    max_inputs: int = Field(64, ge=1, description="Most texts one request may carry.")
    # Tokenizing costs time in proportion to the characters, even when the tokens are then
    # truncated to max_length: a 2 MiB text would hold a worker thread for a while.
    max_input_chars: int = Field(20_000, ge=1, description="Longest text (or pair) one input may be.")
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="Largest request body accepted.")
    max_rerank_documents: int = Field(1000, ge=1, description="Most texts one /v1/rerank request may score.")
    max_request_timeout_seconds: float | None = Field(None, gt=0, allow_inf_nan=False, description=(
        "Longest deadline a request may have, and the deadline of those that set none; unset: no bound."))
    # Dynamic batching, per variant (see batching.py).
    batching: bool = True
    max_batch_size: int = Field(MAX_BATCH_SIZE, ge=1, description="Most texts in one ONNX Runtime run.")
    # On a CPU a run costs what its padded tokens cost: 2048 keeps one batch near 0.5 s on
    # two cores for MiniLM, so a long sentence cannot make 31 short ones wait a second.
    max_batch_tokens: int = Field(MAX_BATCH_TOKENS, ge=16, description="Most padded tokens in one run.")
    max_queue_delay_ms: float = Field(0.0, ge=0, le=1000, description="Wait for company once first in line.")
    max_queue: int = Field(256, ge=1, description="Requests waiting per variant before 429.")
    watch_seconds: float = Field(5.0, ge=0, description="How often to look for deleted variant folders; 0: never.")
    warmup: bool = Field(True, description="Run every batch × length bucket once before a variant is ready.")
    # Live comparison against a reference variant.
    reference: str | None = Field(None, description="Variant the others are compared with (shadow, /v1/compare).")
    shadow_rate: float = Field(0.0, ge=0, le=1, description="Share of each variant's inputs mirrored to the reference.")
    multi_label_threshold: float = Field(heads.THRESHOLD, ge=0, le=1, description=(
        "A multi-label model's label is on at or above this score (its sigmoid)."))
    feedback_capacity: int = Field(10_000, ge=1, description=(
        "Requests whose answers are kept for /v1/feedback; the oldest go first."))
    feedback_ttl_seconds: float = Field(86_400.0, gt=0, description=(
        "How long after its answer a label is scored; a later one is counted as expired."))
    cascades: dict[str, CascadeSpec] = Field(default_factory=dict, description="Virtual models (see cascades.json).")
    routes: dict[str, Arms] = Field(default_factory=dict, description="Names that split traffic between variants "
                                                                       "by weight (see routes.json).")
    admin_token: SecretStr | None = Field(None, description="Bearer token for /admin/*; unset: admin routes are off.")
    api_keys: SecretStr | None = Field(None, description="Client API keys, comma-separated; set: model routes need one.")
    api_keys_file: Path | None = Field(None, description="A file of the keys' SHA-256 hex digests, one a line.")
    api_keys_scope: KeyScope = Field("models", description=(
        "What needs a key: `models` (the routes that run a model) or `all` (every route but the health probes)."))
    shutdown_grace_seconds: float = Field(30.0, ge=0, description="On SIGTERM, how long requests in flight may take.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("api_keys")
    @classmethod
    def holds_a_key(cls, keys: SecretStr | None) -> SecretStr | None:
        # Set but empty would leave the routes open while the operator meant to close them.
        if keys is not None and not split_keys(keys.get_secret_value()):
            raise ValueError("holds no key")
        return keys

    @field_validator("api_keys_file")
    @classmethod
    def digests_readable(cls, path: Path | None) -> Path | None:
        if path is not None:
            read_digests(path)  # refused at start, naming the line at fault
        return path

    @model_validator(mode="after")
    def precision_of_backend(self) -> Settings:
        if self.backend is not None and self.precision is not None:
            Runtime(backend=self.backend, precision=self.precision)  # raises if the backend lacks it
        return self

    def runtime_for(self, recorded: Runtime) -> Runtime:
        """What a variant runs with: its recorded runtime, with the settings' overrides. A
        precision its backend lacks (bf16 on ONNX Runtime) becomes f32: PRECISION=bf16
        alone speeds up the OpenVINO variants and leaves the others as they are. Threads
        per run stay within the budget."""
        backend = self.backend or recorded.backend
        precision = self.precision or recorded.precision
        threads = min(self.intra_op_threads or recorded.threads or self.threads, self.threads)
        return Runtime(backend=backend, precision=precision if precision in BACKENDS[backend].precisions else "f32",
                       threads=threads)

    def parallel_runs(self, runtime: Runtime) -> int:
        """How many runs of a variant at `runtime` (from runtime_for) may compute side by side."""
        return max(1, self.threads // (runtime.threads or self.threads))
