"""Every Prometheus metric of the service, defined once (docs/contracts.md, metrics).

Each app owns its registry, so tests can build many apps in one process. The gauges of
the variants are published here (`publish`) each time the served set changes. Request
duration and status are observed by `MetricsMiddleware` for every route that asks a model
for an answer: such a route records the model it names in the request's state
(`count_under`), so handlers never repeat that bookkeeping.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from variant.folder import Opened
from variant.manifest import Manifest

# One bucket set for every latency histogram: these models answer in about a millisecond
# at batch 1 and in tens of milliseconds at batch 32.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02,
    0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
TOKEN_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
SHARE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9)
DIFFERENCE_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
UNKNOWN_MODEL = "_unknown"  # label for requests naming no loaded variant: bounds cardinality
MODEL = "model"  # the request state's key for the model a request is counted under


class Published(Protocol):
    """What the gauges read of a variant (service/repository.py's Variant)."""

    name: str
    opened: Opened | None

    @property
    def ready(self) -> bool: ...


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(namespace="slimserve", registry=self.registry)
        r = self.registry
        self.request_duration = Histogram(
            "slimserve_request_duration_seconds", "Time from request received to response sent.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference_duration = Histogram(
            "slimserve_inference_duration_seconds",
            "Time one run took: padding its rows, handing them to a worker thread and the runtime's computation.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_duration = Histogram(
            "slimserve_queue_duration_seconds", "Time a request waited in its variant's queue before its batch ran.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokenization_duration = Histogram(
            "slimserve_tokenization_duration_seconds",
            "Time to tokenize a request's texts for a variant, the hop to a worker thread included.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge(
            "slimserve_queue_depth", "Requests waiting in the variant's queue.", ["model"], registry=r)
        self.batch_size = Histogram(
            "slimserve_batch_size", "Inputs per run.", ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.input_tokens = Histogram(
            "slimserve_input_tokens", "Real (unpadded) tokens per run.",
            ["model"], buckets=TOKEN_BUCKETS, registry=r)
        self.padded_tokens = Histogram(
            "slimserve_padded_tokens", "Token slots per run, padding included (rows × padded length).",
            ["model"], buckets=TOKEN_BUCKETS, registry=r)
        self.token_slots = Counter(
            "slimserve_token_slots",
            "Token slots run, by kind: `real` tokens or `padding`; the padded share is padding / (real + padding).",
            ["model", "kind"], registry=r)
        self.padded_share = Histogram(
            "slimserve_padded_share", "Share of a run's token slots that are padding: padding / (real + padding).",
            ["model"], buckets=SHARE_BUCKETS, registry=r)
        self.deadline_exceeded = Counter(
            "slimserve_deadline_exceeded",
            "Requests answered 504 unrun: their deadline passed while they waited in the variant's queue.",
            ["model"], registry=r)
        self.unauthorized = Counter(
            "slimserve_unauthorized", "Requests refused with 401 for want of an accepted API key, by the path template of the route.",
            ["path"], registry=r)
        self.requests = Counter(
            "slimserve_requests", "Requests by model and HTTP status.", ["model", "status"], registry=r)
        self.model_parameters = Gauge(
            "slimserve_model_parameters", "Parameters of the variant (from its manifest).", ["model"], registry=r)
        self.model_onnx_bytes = Gauge(
            "slimserve_model_onnx_bytes", "Size of the variant's model.onnx.", ["model"], registry=r)
        self.model_memory_bytes = Gauge(
            "slimserve_model_memory_bytes", "Resident memory the process grew by while loading the variant.",
            ["model"], registry=r)
        self.model_load_seconds = Gauge(
            "slimserve_model_load_seconds", "Time to load the variant.", ["model"], registry=r)
        self.model_ready = Gauge(
            "slimserve_model_ready", "1 when the variant serves, 0 when it failed to load or was retired.", ["model"], registry=r)
        self.model_warmup_seconds = Gauge(
            "slimserve_model_warmup_seconds", "Time to run the variant once at every warm-up shape.",
            ["model"], registry=r)
        self.shadow_inputs = Counter(
            "slimserve_shadow_inputs", "Inputs of the variant mirrored to the reference and compared.",
            ["model"], registry=r)
        self.shadow_agreements = Counter(
            "slimserve_shadow_agreements",
            "Mirrored inputs that agreed with the reference: top-1 matched (single_label), or the share of labels "
            "decided alike (multi_label); regression models add nothing here (see the difference histogram).",
            ["model"], registry=r)
        self.shadow_dropped = Counter(
            "slimserve_shadow_dropped", "Inputs picked for mirroring but not compared (reference busy or failing).",
            ["model"], registry=r)
        self.shadow_difference = Histogram(
            "slimserve_shadow_probability_difference",
            "|variant − reference| per mirrored input: probability of the variant's top-1 label (single_label), "
            "largest per-label probability (multi_label), or the score (regression).",
            ["model"], buckets=DIFFERENCE_BUCKETS, registry=r)
        self.cascade_inputs = Counter(
            "slimserve_cascade_inputs", "Inputs a cascade answered.", ["model"], registry=r)
        self.cascade_fallbacks = Counter(
            "slimserve_cascade_fallbacks", "Inputs a cascade passed on to its reference (fast top-1 under threshold).",
            ["model"], registry=r)
        self.feedback = Counter(
            "slimserve_feedback",
            "Labels sent to /v1/feedback, by outcome: `correct` or `wrong` (the answer matched the label or not), "
            "`scored` (regression), `unknown_id`, `expired`, `bad_label`.",
            ["model", "outcome"], registry=r)
        self.feedback_accuracy = Gauge(
            "slimserve_feedback_accuracy",
            "Share of the answers' decisions that matched the labels sent back since the start: top-1 "
            "(single_label), per label (multi_label).", ["model"], registry=r)
        self.feedback_error = Gauge(
            "slimserve_feedback_error", "Mean |score − label| of a regression model's answers labelled since the "
            "start.", ["model"], registry=r)
        self.route_requests = Counter(
            "slimserve_route_requests", "Requests a route sent to each arm (`model`: the variant that answers).",
            ["route", "model"], registry=r)
        self.routes_refused = Counter(
            "slimserve_routes_refused", "Times the routes read (routes.json and SLIMSERVE_ROUTES) were refused and "
            "the routes before them kept.", registry=r)
        self.model_accuracy = Gauge(
            "slimserve_model_accuracy",
            "Accuracy `compressor evaluate` recorded in the manifest on labelled `dataset` (file@content hash).",
            ["model", "dataset"], registry=r)
        self.model_info = Gauge(
            "slimserve_model_info", "Always 1; labels carry the variant's manifest, the backend and precision it runs "
            "at, and whether its answers are batch-invariant (shadow agreement of a variant that is not counts the "
            "batch too).",
            ["model", "method", "base_model", "quantization", "backend", "precision", "batch_invariant"], registry=r)

    def observe_tokens(self, model: str, real: int, slots: int) -> None:
        """One run's real tokens and its token slots, padding included."""
        self.input_tokens.labels(model).observe(real)
        self.padded_tokens.labels(model).observe(slots)
        self.padded_share.labels(model).observe((slots - real) / slots)
        self.token_slots.labels(model, "real").inc(real)
        self.token_slots.labels(model, "padding").inc(slots - real)

    def publish_accuracy(self, model: str, manifest: Manifest) -> None:
        """The accuracy gauge's rule: one series per labelled evaluation in the manifest, its
        `dataset` label the evaluation's key. Unlabelled data has no accuracy to report. No
        dataset is preferred over another, not even the latest: accuracies on different data
        do not compare, and a quick check on a few sentences must not hide the dev-set
        figure; a dashboard picks the dataset it trusts."""
        for dataset, evaluation in manifest.evaluations.items():
            if evaluation.labelled and evaluation.accuracy is not None:
                self.model_accuracy.labels(model, dataset).set(evaluation.accuracy)


    def publish_variant(self, variant: Published) -> None:
        name = variant.name
        self.model_ready.labels(name).set(1 if variant.ready else 0)
        opened = variant.opened
        if opened is None:
            return
        m = opened.manifest
        self.model_parameters.labels(name).set(m.parameters)
        self.model_onnx_bytes.labels(name).set(m.onnx_bytes)
        self.model_memory_bytes.labels(name).set(opened.memory_bytes)
        self.model_load_seconds.labels(name).set(opened.load_seconds)
        self.model_warmup_seconds.labels(name).set(opened.warmup_seconds)
        self.publish_accuracy(name, m)
        quantization = str(m.settings.get("quantize") or "none")
        runtime = opened.backend.runtime
        self.model_info.labels(name, m.method, m.base_model, quantization, runtime.backend, runtime.precision,
                               str(m.batch_invariant).lower()).set(1)

    def publish(self, variants: Iterable[Published], gone: Iterable[str] = ()) -> None:
        """Gauges for the variants now served; a variant of the previous set that is `gone`
        stops reporting."""
        for name in gone:
            for gauge in (self.model_ready, self.model_parameters, self.model_onnx_bytes,
                          self.model_memory_bytes, self.model_load_seconds, self.model_warmup_seconds):
                with contextlib.suppress(KeyError):
                    gauge.remove(name)
        self.model_info.clear()
        self.model_accuracy.clear()
        for variant in variants:
            self.publish_variant(variant)


def count_under(scope: Scope, model: str) -> None:
    """Count the request `scope` under `model`: MetricsMiddleware times it and counts its status."""
    scope.setdefault("state", {})[MODEL] = model


class MetricsMiddleware:
    """Times every request that asks a model for an answer and counts its status, refusals
    before the route runs (the body limit's 413) included: the requests recorded under a
    model (`count_under`, by service/api.py's ModelRoute, and by the body limit for a
    request it refuses). Probes and metadata reads are left out, so they do not dilute the
    latency a client sees."""

    def __init__(self, app: ASGIApp, metrics: Metrics, is_known: Callable[[str], bool]) -> None:
        self.app, self.metrics, self.is_known = app, metrics, is_known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            name = scope.get("state", {}).get(MODEL)
            if name is not None:
                model = name if self.is_known(name) else UNKNOWN_MODEL
                self.metrics.request_duration.labels(model).observe(time.perf_counter() - start)
                self.metrics.requests.labels(model, str(status)).inc()
