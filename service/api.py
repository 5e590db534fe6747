"""What the /v1 and /v2 routes share: reading the served set off the request, the input
limits, the text and number rules of a JSON body, and the timing headers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Request, Response
from pydantic import AfterValidator, BeforeValidator, StrictInt, StrictStr

from service.errors import EmptyInput, PayloadTooLarge
from service.inference import Outcome
from service.serving import Serving
from variant.tokenization import TextInput


def encodable(text: str) -> str:
    """`text`, refused when it holds a lone surrogate ("\\ud800"): JSON may carry one, but it
    is no text a tokenizer can read."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (lone surrogate)") from None
    return text


Text = Annotated[StrictStr, AfterValidator(encodable)]


def integral(value: object) -> object:
    # JSON has one number type: 3.0 is the integer 3 (as JSON Schema says), true is not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Count = Annotated[StrictInt, BeforeValidator(integral)]


def serving_of(request: Request) -> Serving:
    return request.app.state.serving


def check_inputs(request: Request, inputs: list[TextInput], field: str = "inputs") -> None:
    """The input limits; `field` is what the request calls the list, for the messages."""
    if not inputs:
        raise EmptyInput(f"{field} must hold at least one text")
    limit = request.app.state.settings.max_inputs
    if len(inputs) > limit:
        raise PayloadTooLarge(f"{field} holds {len(inputs)} texts; the limit is {limit}")
    chars = request.app.state.settings.max_input_chars
    for i, item in enumerate(inputs):
        size = len(item) if isinstance(item, str) else sum(map(len, item))
        if size > chars:
            raise PayloadTooLarge(f"{field}[{i}] holds {size} characters; the limit is {chars} characters")


def set_timing_headers(response: Response, outcome: Outcome) -> None:
    response.headers["x-queue-time"] = f"{outcome.queue_seconds * 1000:.3f}"
    response.headers["x-inference-time"] = f"{outcome.inference_seconds * 1000:.3f}"
    response.headers["x-model-digest"] = outcome.digest
