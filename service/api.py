"""What the /v1 and /v2 routes share: how a route that asks a model for an answer is
declared (`model_route`) and looks its model up (`target_of`, which follows a route to an
arm), reading the served set and the inference off the request, the input limits and
rules, the text and number rules of a JSON body, filing answers for feedback under the
request's id, and the timing headers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BeforeValidator, StrictInt, StrictStr

from service import feedback
from service.errors import EmptyInput, Malformed, PayloadTooLarge
from service.inference import Inference, Outcome
from service.metrics import count_under
from service.repository import Variant
from service.serving import Cascade, Serving
from variant.tokenization import TextInput

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
ROUTE_KEY = "x-route-key"  # a client's key: the same key, the same arm of a route
ROUTED = "routed"  # the request state's key for a routed request's (route, arm)


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


class ModelRoute(APIRoute):
    """A route that asks a model for an answer: the metrics time it and count its status
    under the model it names. A name in the path is recorded before the body is read, so
    a body the route refuses (invalid JSON, a field out of bounds) counts under it too; a
    route whose body names the model (/v1/rerank) records it with `count_under` once read,
    and one that runs several (/v1/compare) counts under none. An answer a route's arm
    gave says so in `x-route` and `x-route-arm`. With client API keys set, these are the
    routes that need one (service/keys.py)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def counted(request: Request) -> Response:
            name = request.path_params.get("name")
            if name is not None:
                count_under(request.scope, name)
            response = await handler(request)
            routed = request.scope.get("state", {}).get(ROUTED)
            if routed is not None:
                response.headers["x-route"], response.headers["x-route-arm"] = routed
            return response

        return counted


def model_route(router: APIRouter, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
    """`@router.post(path, **options)` for a route that asks a model for an answer (a ModelRoute)."""
    def declare(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(path, endpoint, methods=["POST"], route_class_override=ModelRoute, **options)
        return endpoint

    return declare


def serving_of(request: Request) -> Serving:
    return request.app.state.serving


def inference_of(request: Request) -> Inference:
    return request.app.state.inference


def target_of(request: Request, name: str) -> Variant | Cascade:
    """What answers a model route's request for `name`, looked up once. A route's name
    becomes the arm it picks (by the client's `x-route-key` when sent); the request is then
    counted under the arm, which every metric of the answer names."""
    target = inference_of(request).lookup(name, request.headers.get(ROUTE_KEY))
    if target.name != name:  # only a route answers under another name: its arm's
        count_under(request.scope, target.name)
        request.scope["state"][ROUTED] = (name, target.name)
        request.app.state.metrics.route_requests.labels(name, target.name).inc()
    return target


def check_text(text: str, where: str, part: str = "text") -> None:
    """An empty or whitespace-only text is refused: a model would still answer it, from
    its special tokens alone, an answer about no text at all."""
    if not text.strip():
        raise Malformed(f"{where}: {part} is empty")


def check_inputs(request: Request, inputs: list[TextInput], field: str = "inputs", limit: int | None = None,
                 parts: tuple[str, str] = ("text", "text_pair")) -> None:
    """The input limits and rules, before anything is tokenized; `field` is what the
    request calls the list and `parts` what it calls the two texts of a pair, for the
    messages; `limit` is the most inputs it may hold (default SLIMSERVE_MAX_INPUTS)."""
    if not inputs:
        raise EmptyInput(f"{field} must hold at least one text")
    settings = request.app.state.settings
    limit = limit or settings.max_inputs
    if len(inputs) > limit:
        raise PayloadTooLarge(f"{field} holds {len(inputs)} texts; the limit is {limit}")
    for i, item in enumerate(inputs):
        for part, text in zip(parts, (item,) if isinstance(item, str) else item):
            check_text(text, f"{field}[{i}]", part)
        size = len(item) if isinstance(item, str) else sum(map(len, item))
        if size > settings.max_input_chars:
            raise PayloadTooLarge(f"{field}[{i}] holds {size} characters; the limit is "
                                  f"{settings.max_input_chars} characters")


def remember(request: Request, answers: list[tuple[str, Outcome]]) -> str:
    """File what each named model answered for /v1/feedback, under the request's id, and
    return the id, which the route answers with (`x-request-id`)."""
    request_id = feedback.request_id(request.headers.get(feedback.REQUEST_ID))
    request.app.state.feedback.remember(request_id, answers)
    return request_id


def set_timing_headers(response: Response, outcome: Outcome) -> None:
    response.headers["x-tokenization-time"] = f"{outcome.tokenization_seconds * 1000:.3f}"
    response.headers["x-queue-time"] = f"{outcome.queue_seconds * 1000:.3f}"
    response.headers["x-inference-time"] = f"{outcome.inference_seconds * 1000:.3f}"
    response.headers["x-model-digest"] = outcome.digest
