"""POST /v1/feedback: labels for answers the service gave, sent when they are known.

Each item names one input by the request id its answer carried (`x-request-id`; v1
classify's `id`) and the input's index in that request (0 by default), with its label.
The service joins it to what each model answered for that input and judges it
(service/feedback.py); an item it cannot join or judge is answered and counted by
itself, never failing the batch. Only a body that is not this shape is refused.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
)

from service.api import Text, integral
from service.errors import Malformed, documented
from service.feedback import Status

router = APIRouter(prefix="/v1", tags=["v1"])
MAX_ITEMS = 1000  # per request: a batch is judged on the event loop, so it stays short
SCORED = frozenset({"correct", "wrong", "scored"})
# The names pydantic puts in an error's location for each branch of `label`'s union.
UNION_BRANCHES = frozenset({"function-after[encodable(), str]", "list[function-after[encodable(), str]]", "int",
                            "float"})

Index = Annotated[StrictInt, Field(ge=0), BeforeValidator(integral)]


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Text = Field(description="The request id the answer carried (its x-request-id header).")
    index: Index = Field(0, description="The input's position in that request.")
    label: Text | list[Text] | StrictInt | StrictFloat = Field(description=(
        "The truth: a label name (single_label), a list of label names (multi_label; [] for none) or a number "
        "(regression)."))


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    feedback: list[Item] = Field(min_length=1, max_length=MAX_ITEMS)


class Result(BaseModel):
    id: str
    index: int
    model: str | None = Field(description="The model whose answer was judged; null for an unknown id.")
    status: Status = Field(description=(
        "correct or wrong (the answer's decisions matched the label or not), scored (regression: the error is "
        "counted), unknown_id (no answer with this id and index is kept), expired (answered longer ago than "
        "SLIMSERVE_FEEDBACK_TTL_SECONDS), bad_label (not a label of the model)."))


class FeedbackResponse(BaseModel):
    results: list[Result] = Field(description="Per item, one result per model that answered it, in order.")
    accepted: int = Field(description="Items judged for at least one model.")


@router.post("/feedback", response_model=FeedbackResponse, responses=documented(Malformed))
async def send_feedback(body: FeedbackRequest, request: Request) -> FeedbackResponse:
    judged = request.app.state.feedback.score((item.id, item.index, item.label) for item in body.feedback)
    return FeedbackResponse(
        results=[Result(id=j.id, index=j.index, model=j.model, status=j.status) for item in judged for j in item],
        accepted=sum(any(j.status in SCORED for j in item) for item in judged))
