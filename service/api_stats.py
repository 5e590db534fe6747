"""GET /v1/stats: each served model's live figures, read off the service's own Prometheus
metrics (service/metrics.py), for the page at GET / and for scripts that run no Prometheus.

The figures are those of this process since it started, as /metrics counts them. Latency
percentiles are estimated from the request-duration histogram's buckets the way PromQL's
histogram_quantile does, so they are only as fine as the buckets. Live accuracy from
client feedback is null until a label for one of the model's answers arrives.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from fastapi import APIRouter, Request
from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample
from pydantic import BaseModel, ConfigDict, Field

from service.api import serving_of
from variant.heads import HEADS

router = APIRouter(prefix="/v1", tags=["v1"])

REQUESTS = "slimserve_requests_total"
LATENCY_BUCKETS = "slimserve_request_duration_seconds_bucket"
SHADOW_INPUTS = "slimserve_shadow_inputs_total"
SHADOW_AGREEMENTS = "slimserve_shadow_agreements_total"
FEEDBACK_ACCURACY = "slimserve_feedback_accuracy"
LATENCY_NOTE = ("p50_seconds and p99_seconds are estimates from the buckets of slimserve_request_duration_seconds "
                "(linear within a bucket, as PromQL's histogram_quantile), over every request since the process "
                "started; a percentile in the last, open bucket is reported as that bucket's lower bound.")


class ModelStats(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    requests: int = Field(description="Requests that asked this model for an answer, whatever their status.")
    errors: int = Field(description="Those answered with an HTTP status of 400 or more.")
    p50_seconds: float | None = Field(description="Median request latency, a bucket estimate; null before a request.")
    p99_seconds: float | None = Field(description="99th percentile request latency, a bucket estimate.")
    shadow_inputs: int = Field(description="Inputs mirrored to the reference and compared (shadow sampling).")
    shadow_agreement: float | None = Field(description=(
        "Share of the mirrored inputs that agreed with the reference; null before any, and for a regression "
        "model, whose agreement is a correlation over many inputs."))
    feedback_accuracy: float | None = Field(description=(
        "Live accuracy from client feedback (slimserve_feedback_accuracy); null before any label arrived."))


class Stats(BaseModel):
    latency: str = Field(description="How the latency figures are estimated.")
    models: list[ModelStats]


def bucket_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The `q` quantile of a histogram given as (upper bound, cumulative count) pairs, the
    last bound +Inf; None when it counted nothing."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] == 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in ordered:  # the +Inf bucket holds every count, so the loop stops at it at the latest
        if count >= rank:
            break
        lower, below = upper, count
    if math.isinf(upper):
        return lower
    return lower + (upper - lower) * (rank - below) / (count - below) if count > below else upper


def samples_by_name(registry: CollectorRegistry) -> dict[str, list[Sample]]:
    found: dict[str, list[Sample]] = defaultdict(list)
    for family in registry.collect():
        for sample in family.samples:
            found[sample.name].append(sample)
    return found


def of_model(samples: list[Sample], model: str) -> list[Sample]:
    return [s for s in samples if s.labels.get("model") == model]


def model_stats(model: str, samples: dict[str, list[Sample]], per_input: bool) -> ModelStats:
    """`per_input`: the model's agreement is a share of inputs (its head compares input by input)."""
    statuses = of_model(samples[REQUESTS], model)
    buckets = [(float(s.labels["le"]), s.value) for s in of_model(samples[LATENCY_BUCKETS], model)]
    inputs = sum(s.value for s in of_model(samples[SHADOW_INPUTS], model))
    agreements = sum(s.value for s in of_model(samples[SHADOW_AGREEMENTS], model))
    feedback = of_model(samples[FEEDBACK_ACCURACY], model)
    return ModelStats(
        model=model, requests=round(sum(s.value for s in statuses)),
        errors=round(sum(s.value for s in statuses if int(s.labels["status"]) >= 400)),
        p50_seconds=bucket_quantile(0.5, buckets), p99_seconds=bucket_quantile(0.99, buckets),
        shadow_inputs=round(inputs), shadow_agreement=agreements / inputs if inputs and per_input else None,
        feedback_accuracy=feedback[0].value if feedback else None)


@router.get("/stats", response_model=Stats)
async def stats(request: Request) -> Stats:
    """Every variant and cascade with its live figures, from this process's metrics."""
    serving = serving_of(request)
    samples = samples_by_name(request.app.state.metrics.registry)

    def per_input(name: str) -> bool:
        variant = serving.variants.get(name)
        return variant is None or variant.opened is None or HEADS[variant.task].agrees_per_input

    names = dict.fromkeys([*serving.variants, *serving.cascades])
    return Stats(latency=LATENCY_NOTE, models=[model_stats(name, samples, per_input(name)) for name in names])
