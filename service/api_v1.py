"""/v1 routes: list the models, classify with one, compare several. Thin: validate, call, shape."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Request, Response
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
)

from service.api import (
    Text,
    check_inputs,
    inference_of,
    integral,
    model_route,
    remember,
    serving_of,
    set_timing_headers,
    target_of,
)
from service.deadlines import RequestTimeout, Seconds, deadline_of
from service.errors import MODEL_ERRORS, Malformed, NotFound, documented
from service.feedback import REQUEST_ID
from service.inference import Outcome, run_variant
from service.metrics import Metrics
from service.repository import Variant
from service.serving import Serving
from variant import heads
from variant.backends import Backend
from variant.tokenization import TextInput

router = APIRouter(prefix="/v1", tags=["v1"])
REFUSALS = documented(*MODEL_ERRORS)

# The bound goes before the validator, or the OpenAPI schema loses it.
PositiveCount = Annotated[StrictInt, Field(ge=1), BeforeValidator(integral)]


class TextPair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Text
    text_pair: Text | None = None


# The names pydantic puts in an error's location for each branch of `inputs`' union.
UNION_BRANCHES = frozenset({"str", "function-after[encodable(), str]", "TextPair"})


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[Text | TextPair] = Field(description="Texts, or {text, text_pair} objects for pair tasks.")
    top_k: PositiveCount | None = Field(None, description="Labels listed in `scores`, best first; default all.")
    truncate: StrictBool = Field(True, description="Cut inputs to the variant's max_length; false refuses them (413).")
    timeout: Seconds | None = None


class Prediction(BaseModel):
    label: str = Field(description="The top label (single_label, multi_label) or the output's name (regression).")
    score: float = Field(description="Its probability, or the regression score.")
    scores: dict[str, float] = Field(description="Scores by label, best first.")
    labels: list[str] | None = Field(None, description=(
        "multi_label only: the labels at or above SLIMSERVE_MULTI_LABEL_THRESHOLD, best first."))


class ClassifyResponse(BaseModel):
    id: str = Field(description=(
        "The request's id, also sent as the x-request-id header: labels sent to /v1/feedback name an input by it "
        "and the input's index."))
    model: str
    predictions: list[Prediction]


class RuntimeInUse(BaseModel):
    backend: str
    precision: str
    device: str
    threads: int | None = Field(None, description="Threads one run computes on.")
    parallel: int = Field(1, description="Runs of this variant that may compute side by side.")


class ModelEntry(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    name: str
    state: Literal["ready", "failed"]
    reason: str | None = None
    manifest: dict[str, Any] | None = None
    runtime: RuntimeInUse | None = Field(None, description="What a loaded variant runs on (the manifest's `runtime` "
                                                           "is what it was recorded for).")
    cascade: dict[str, Any] | None = Field(None, description="A cascade's fast variant, reference and threshold.")
    route: dict[str, int | float] | None = Field(None, description="A route's arms: variant → weight.")


class ModelList(BaseModel):
    models: list[ModelEntry]


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[Text | TextPair]
    models: list[StrictStr] | None = Field(None, description="Variants to compare; default every ready one.")
    reference: StrictStr | None = Field(None, description=(
        "Variant the others are scored against. Default: SLIMSERVE_REFERENCE, else the uncompressed "
        "variant (manifest method 'none'; 'original' among several, else the first by name)."))
    truncate: StrictBool = True


class Comparison(BaseModel):
    model: str
    predictions: list[Prediction]
    agreement: float = Field(description=(
        "Agreement with the reference as the task defines it: the share of inputs whose top-1 label matches "
        "(single_label), the share of (input, label) decisions that match (multi_label), or the correlation "
        "of the scores (regression)."))
    mae: float | None = Field(None, description="regression only: mean |score − reference score|.")
    latency_seconds: float = Field(description="Tokenization, queue and inference for this model.")
    inference_seconds: float
    batch_invariant: bool = Field(True, description=(
        "false: this variant's answers move with what shares their run (its manifest's batch_variation), so part "
        "of any disagreement is the batch, not the compression."))


class CompareResponse(BaseModel):
    reference: str
    results: list[Comparison]


def predictions_of(outcome: Outcome, top_k: int | None, threshold: float) -> list[Prediction]:
    """One prediction per input, shaped by the task (service/heads.py)."""
    labels = outcome.labels
    top_k = min(top_k or len(labels), len(labels))
    predictions = []
    for row in outcome.scores:
        order = np.argsort(-row, kind="stable")  # a tie goes to the first label, as argmax (agreement) has it
        predictions.append(Prediction(
            label=labels[order[0]], score=float(row[order[0]]),
            scores={labels[i]: float(row[i]) for i in order[:top_k]},
            labels=[labels[i] for i in order if row[i] >= threshold] if outcome.task == "multi_label" else None,
        ))
    return predictions


def as_text_inputs(inputs: list[str | TextPair]) -> list[TextInput]:
    return [x if isinstance(x, str) else (x.text if x.text_pair is None else (x.text, x.text_pair)) for x in inputs]


def runtime_in_use(backend: Backend) -> RuntimeInUse:
    runtime = backend.runtime
    return RuntimeInUse(backend=runtime.backend, precision=runtime.precision, device=backend.provider,
                        threads=runtime.threads, parallel=backend.parallel)


def model_entries(serving: Serving) -> list[ModelEntry]:
    """What GET /v1/models lists and GET /v1/models/{name} shows one of: every variant and
    every declared cascade and route, each ready or failed with the reason."""
    entries = [
        ModelEntry(name=v.name, state=v.state, reason=v.reason,
                   manifest=v.opened.manifest.model_dump(mode="json", exclude_none=True) if v.opened else None,
                   runtime=runtime_in_use(v.opened.backend) if v.opened else None)
        for v in serving.variants.values()
    ]
    for name, spec in serving.cascades.items():
        problem = serving.cascade_problem(name)
        entries.append(ModelEntry(name=name, state="failed" if problem else "ready", reason=problem,
                                  cascade=spec.model_dump()))
    for name, arms in serving.routes.items():
        problem = serving.route_problem(name)
        entries.append(ModelEntry(name=name, state="failed" if problem else "ready", reason=problem, route=arms))
    return entries


@router.get("/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return ModelList(models=model_entries(serving_of(request)))


@router.get("/models/{name}", response_model=ModelEntry, responses=documented(NotFound))
async def get_model(name: str, request: Request) -> ModelEntry:
    """One model, exactly as GET /v1/models lists it."""
    # A cascade refused for having a variant's name is listed after that variant; the
    # first match is the variant, which is what the name means when classifying too.
    entry = next((e for e in model_entries(serving_of(request)) if e.name == name), None)
    if entry is None:
        raise NotFound(f"model {name!r} not found")
    return entry


@model_route(router, "/models/{name}/classify", response_model=ClassifyResponse, responses=REFUSALS)
async def classify_texts(name: str, body: ClassifyRequest, request: Request,
                         x_request_timeout: RequestTimeout = None) -> Response:
    deadline = deadline_of(request, x_request_timeout, body.timeout)
    inference = inference_of(request)
    target = target_of(request, name)
    inputs = as_text_inputs(body.inputs)
    check_inputs(request, inputs)
    outcome = await inference.answer(target, inputs, body.truncate, deadline)
    # Serialized here: returned as a model, it would be validated once more on the way out,
    # on the hot path of every request (response_model still documents it).
    threshold = request.app.state.settings.multi_label_threshold
    request_id = remember(request, [(target.name, outcome)])  # a route's answer is its arm's
    answer = ClassifyResponse(id=request_id, model=name, predictions=predictions_of(outcome, body.top_k, threshold))
    response = Response(answer.model_dump_json(exclude_none=True), media_type="application/json",
                        headers={REQUEST_ID: request_id})
    set_timing_headers(response, outcome)
    return response


async def timed(variant: Variant, inputs: list[TextInput], truncate: bool, metrics: Metrics,
                deadline: float | None) -> tuple[Outcome, float]:
    start = time.perf_counter()
    outcome = await run_variant(variant, inputs, truncate, metrics, deadline)
    return outcome, time.perf_counter() - start


@model_route(router, "/compare", response_model=CompareResponse, response_model_exclude_none=True,
             responses=REFUSALS)
async def compare(body: CompareRequest, request: Request, response: Response,
                  x_request_timeout: RequestTimeout = None) -> CompareResponse:
    """Every chosen variant on the same inputs: predictions, agreement with the reference, latency."""
    deadline = deadline_of(request, x_request_timeout)
    serving = serving_of(request)
    inputs = as_text_inputs(body.inputs)
    check_inputs(request, inputs)
    reference = body.reference or serving.reference(request.app.state.settings.reference)
    if reference is None:
        raise Malformed("reference: no variant is an uncompressed export (method 'none') to compare against; "
                        "name one in `reference` or set SLIMSERVE_REFERENCE")
    reference_head = serving.variant(reference).opened.head
    names = body.models if body.models is not None else [  # by default, every variant comparable with it
        n for n in serving.ready_variants() if serving.variant(n).opened.head == reference_head]
    if not names:
        raise Malformed("models: name at least one variant")
    targets = {}
    for name in dict.fromkeys([*names, reference]):
        if name not in serving.variants and (name in serving.cascades or name in serving.routes):
            kind = "cascade" if name in serving.cascades else "route"
            raise Malformed(f"models: {name!r} is a {kind}; compare variants")
        targets[name] = serving.variant(name)
    for name in names:
        problem = heads.comparable(name, targets[name].opened.head, reference, reference_head)
        if problem is not None:
            raise Malformed(f"models: {problem}")
    order = list(dict.fromkeys([reference, *names]))
    metrics = request.app.state.metrics
    outcomes = dict(zip(order, await asyncio.gather(*(timed(targets[n], inputs, body.truncate, metrics, deadline)
                                                      for n in order))))
    ref_outcome = outcomes[reference][0]
    threshold = request.app.state.settings.multi_label_threshold
    results = []
    for name in names:
        outcome, seconds = outcomes[name]
        agreement = heads.agreement(outcome.task, outcome.scores, ref_outcome.scores, threshold)
        results.append(Comparison(model=name, predictions=predictions_of(outcome, None, threshold), **agreement,
                                  latency_seconds=seconds, inference_seconds=outcome.inference_seconds,
                                  batch_invariant=targets[name].opened.manifest.batch_invariant))
    response.headers[REQUEST_ID] = remember(request, [(name, outcomes[name][0]) for name in names])
    return CompareResponse(reference=reference, results=results)
