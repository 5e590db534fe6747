"""/v1 routes: list the variants and classify with one. Thin: validate, call, shape."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from service.errors import EmptyInput, ModelNotFound, PayloadTooLarge
from service.inference import classify
from service.repository import Variant
from service.tokenization import TextInput

router = APIRouter(prefix="/v1", tags=["v1"])


def encodable(text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"), which are no text a tokenizer can read.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (lone surrogate)") from None
    return text


Text = Annotated[StrictStr, AfterValidator(encodable)]


class TextPair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Text
    text_pair: Text | None = None


# The names pydantic puts in an error's location for each branch of `inputs`' union.
UNION_BRANCHES = frozenset({"str", "function-after[encodable(), str]", "TextPair"})


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[Text | TextPair] = Field(description="Texts, or {text, text_pair} objects for pair tasks.")
    top_k: StrictInt | None = Field(None, ge=1, description="Labels listed in `scores`, best first; default all.")
    truncate: StrictBool = Field(True, description="Cut inputs to the variant's max_length; false refuses them (413).")


class Prediction(BaseModel):
    label: str
    score: float
    scores: dict[str, float]


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Prediction]


class ModelEntry(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    name: str
    state: Literal["ready", "failed"]
    reason: str | None = None
    manifest: dict[str, Any] | None = None


class ModelList(BaseModel):
    models: list[ModelEntry]


def find_variant(request: Request, name: str) -> Variant:
    variant = request.app.state.repository.get(name)
    if variant is None:
        raise ModelNotFound(f"model {name!r} not found")
    return variant


def as_text_inputs(inputs: list[str | TextPair]) -> list[TextInput]:
    return [x if isinstance(x, str) else (x.text if x.text_pair is None else (x.text, x.text_pair)) for x in inputs]


@router.get("/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return ModelList(models=[
        ModelEntry(name=v.name, state=v.state, reason=v.reason,
                   manifest=v.manifest.model_dump(mode="json", exclude_none=True) if v.manifest else None)
        for v in request.app.state.repository.values()
    ])


@router.post("/models/{name}/classify", response_model=ClassifyResponse)
async def classify_texts(name: str, body: ClassifyRequest, request: Request) -> ClassifyResponse:
    variant = find_variant(request, name)
    if not body.inputs:
        raise EmptyInput("inputs must hold at least one text")
    settings = request.app.state.settings
    if len(body.inputs) > settings.max_inputs:
        raise PayloadTooLarge(f"inputs holds {len(body.inputs)} texts; the limit is {settings.max_inputs}")
    probabilities = await run_in_threadpool(
        classify, variant, as_text_inputs(body.inputs), body.truncate, request.app.state.metrics
    )
    labels = variant.manifest.labels
    top_k = min(body.top_k or len(labels), len(labels))
    predictions = []
    for row in probabilities:
        order = row.argsort()[::-1]
        predictions.append(Prediction(
            label=labels[order[0]], score=float(row[order[0]]),
            scores={labels[i]: float(row[i]) for i in order[:top_k]},
        ))
    return ClassifyResponse(model=name, predictions=predictions)
