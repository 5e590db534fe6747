"""POST /v1/rerank: score passages against a query with a pair model (a cross-encoder) and
return them best first, with the request and answer text-embeddings-inference's /rerank
has (plus the model's name; `raw_scores` as there: by default a probability).

Each (query, text) runs as one pair input through the same path as classify (tokenized
as a pair, batched with everything else the variant is asked), so a reranker gains the
dynamic batching, limits, metrics, shadow sampling and feedback every model route has
(feedback names a pair by its passage's index). Which score ranks is the head's rule
(heads.relevance).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from service.api import (
    Text,
    check_inputs,
    check_text,
    inference_of,
    model_route,
    remember,
    serving_of,
    set_timing_headers,
    target_of,
)
from service.api_v1 import REFUSALS, PositiveCount
from service.deadlines import RequestTimeout, deadline_of
from service.errors import Malformed
from service.feedback import REQUEST_ID
from service.metrics import count_under
from variant import heads

router = APIRouter(prefix="/v1", tags=["v1"])


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: Text
    texts: list[Text] = Field(description="Passages to score against the query.")
    model: StrictStr | None = Field(None, description="Variant or cascade that scores; default: the only one serving.")
    top_n: PositiveCount | None = Field(None, description="Return the best n; default all.")
    return_text: StrictBool = Field(False, description="Echo each passage beside its score.")
    raw_scores: StrictBool = Field(False, description=(
        "The logit that ranks, as the model gives it; default: a probability (a regression output through a sigmoid)."))
    truncate: StrictBool = Field(True, description="Cut pairs to the variant's max_length; false refuses them (413).")
    truncation_direction: Literal["Right", "right"] = Field("Right", description="Pairs are cut on the right.")


class Ranked(BaseModel):
    index: int = Field(description="Position of the passage in `texts`.")
    score: float
    text: str | None = None


def model_for(request: Request, named: str | None) -> str:
    if named is not None:
        return named
    serving = serving_of(request)
    serving_now = serving.ready_variants() + serving.ready_cascades()
    if len(serving_now) != 1:
        raise Malformed(f"model: name the model that scores ({', '.join(serving_now) or 'none is serving'})")
    return serving_now[0]


@model_route(router, "/rerank", response_model=list[Ranked], response_model_exclude_none=True, responses=REFUSALS)
async def rerank(body: RerankRequest, request: Request, x_request_timeout: RequestTimeout = None) -> Response:
    deadline = deadline_of(request, x_request_timeout)
    name = model_for(request, body.model)
    count_under(request.scope, name)
    inference = inference_of(request)
    target = target_of(request, name)
    column = heads.relevance(target.task, len(target.labels))
    if column is None:
        raise Malformed(f"model: {name!r} is a {target.task} model with {len(target.labels)} labels; rerank needs "
                        "one output (regression, or one multi-label score) or two classes (single_label)")
    check_text(body.query, "query")
    inputs = [(body.query, text) for text in body.texts]
    check_inputs(request, inputs, "texts", request.app.state.settings.max_rerank_documents, ("query", "text"))
    outcome = await inference.answer(target, inputs, body.truncate, deadline)
    relevance = heads.relevance_scores(outcome.task, outcome.logits, outcome.scores, column, body.raw_scores)
    order = (-relevance).argsort(kind="stable")[:body.top_n]  # ties keep the order given
    ranked = [Ranked(index=int(i), score=float(relevance[i]), text=body.texts[i] if body.return_text else None)
              for i in order]
    response = Response("[" + ",".join(r.model_dump_json(exclude_none=True) for r in ranked) + "]",
                        media_type="application/json", headers={REQUEST_ID: remember(request, [(target.name, outcome)])})
    set_timing_headers(response, outcome)
    return response
