"""The Open Inference Protocol (KServe v2, as Triton speaks it) over the same core as /v1.

A model takes a BYTES tensor `text` (any shape; read flat) and optionally `text_pair` of
the same size, and returns two FP32 tensors [n, labels]: `logits` and the head's scores,
named by its task (variant/heads.py's `outputs`): `probabilities` (softmax, or a sigmoid per label for
multi_label) or, for regression, `scores` (the logits themselves).
Extensions: `classification` (ask an output with parameters {"classification": k} and
get its top k as "value:index:label" strings, the values being that output's) and
`binary_tensor_data` (tensors after the JSON header, sized by the
Inference-Header-Content-Length header), which tritonclient uses by default.
Errors are `{"error": message}`. Version "1" is the only version of every model.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
)

from service import __version__
from service.api import (
    ROUTE_KEY,
    Count,
    check_inputs,
    encodable,
    inference_of,
    model_route,
    remember,
    serving_of,
    set_timing_headers,
    target_of,
)
from service.deadlines import RequestTimeout, deadline_of
from service.errors import (
    MODEL_ERRORS,
    V2_PREFIX,
    Malformed,
    NotFound,
    NotReady,
    documented,
    first_error,
)
from service.feedback import REQUEST_ID
from service.inference import Outcome
from service.repository import Variant
from service.serving import Cascade
from variant.heads import HEADS
from variant.runtimes import BACKENDS
from variant.tokenization import TextInput

router = APIRouter(prefix=V2_PREFIX, tags=["v2"])
LOOKUP_ERRORS = documented(NotFound, Malformed, NotReady, v2=True)
INFER_ERRORS = documented(*MODEL_ERRORS, v2=True)

HEADER_LENGTH = "inference-header-content-length"
VERSION = "1"
EXTENSIONS = ["classification", "binary_tensor_data"]


class Tensor(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    shape: list[Count]
    datatype: StrictStr
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: StrictStr | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None


def inlined(schema: Any, defs: dict[str, Any]) -> Any:
    """`schema` with every local `$ref` replaced by its definition (the models are not
    recursive), so it can sit in the OpenAPI document by itself."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return inlined(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
        return {k: inlined(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [inlined(v, defs) for v in schema]
    return schema


# The route reads its body itself (JSON, or JSON then binary tensors), so the JSON form
# is documented here for clients and schema checkers.
INFER_SCHEMA = InferRequest.model_json_schema()
INFER_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": inlined(INFER_SCHEMA, INFER_SCHEMA.get("$defs", {}))}}}}


class RequestOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    truncate: StrictBool = True
    binary_data_output: StrictBool = False


def flat(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in data:
        out.extend(flat(item) if isinstance(item, list) else [item])
    return out


def read_bytes_elements(blob: bytes, name: str) -> list[bytes]:
    """BYTES binary layout: each element is a little-endian uint32 length, then its bytes."""
    items, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise Malformed(f"inputs.{name}: binary data ends inside a length prefix")
        (size,) = struct.unpack_from("<I", blob, at)
        at += 4
        if at + size > len(blob):
            raise Malformed(f"inputs.{name}: binary element runs past the data")
        items.append(blob[at:at + size])
        at += size
    return items


def texts_of(tensor: Tensor, binary: bytes | None) -> list[str]:
    if tensor.datatype != "BYTES":
        raise Malformed(f"inputs.{tensor.name}: datatype must be BYTES, got {tensor.datatype}")
    if binary is not None:
        values: list[Any] = read_bytes_elements(binary, tensor.name)
    elif tensor.data is not None:
        values = flat(tensor.data)
    else:
        raise Malformed(f"inputs.{tensor.name}: no data (neither 'data' nor binary_data_size)")
    expected = int(np.prod(tensor.shape)) if tensor.shape else 1
    if len(values) != expected:
        raise Malformed(f"inputs.{tensor.name}: shape {tensor.shape} needs {expected} elements, got {len(values)}")
    texts = []
    for i, value in enumerate(values):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise Malformed(f"inputs.{tensor.name}.{i}: not UTF-8 text") from None
        if not isinstance(value, str):
            raise Malformed(f"inputs.{tensor.name}.{i}: must be a string")
        try:
            texts.append(encodable(value))
        except ValueError as exc:
            raise Malformed(f"inputs.{tensor.name}.{i}: {exc}") from None
    return texts


async def parse_request(request: Request) -> tuple[InferRequest, dict[str, bytes]]:
    body = await request.body()
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
            raise Malformed(f"{HEADER_LENGTH} header must be the JSON header's size in bytes")
        header, rest = body[:int(header_length)], body[int(header_length):]
    else:
        header, rest = body, b""
    try:
        header.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed(f"body: the JSON header is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        parsed = InferRequest.model_validate_json(header)
    except ValidationError as exc:
        raise Malformed(first_error(exc.errors())) from None
    binaries, at = {}, 0
    for tensor in parsed.inputs:
        size = tensor.parameters.get("binary_data_size")
        if size is None:
            continue
        if not isinstance(size, int) or size < 0 or at + size > len(rest):
            raise Malformed(f"inputs.{tensor.name}: binary_data_size does not match the body")
        binaries[tensor.name] = rest[at:at + size]
        at += size
    return parsed, binaries


def inputs_of(parsed: InferRequest, binaries: dict[str, bytes]) -> list[TextInput]:
    tensors = {t.name: t for t in parsed.inputs}
    unknown = set(tensors) - {"text", "text_pair"}
    if unknown:
        raise Malformed(f"inputs: unknown input {min(unknown)!r}; this model takes 'text' and 'text_pair'")
    if "text" not in tensors:
        raise Malformed("inputs: the BYTES input 'text' is required")
    texts = texts_of(tensors["text"], binaries.get("text"))
    if "text_pair" not in tensors:
        return list(texts)
    pairs = texts_of(tensors["text_pair"], binaries.get("text_pair"))
    if len(pairs) != len(texts):
        raise Malformed(f"inputs.text_pair: {len(pairs)} elements for {len(texts)} texts")
    return list(zip(texts, pairs))


def classification(values: np.ndarray, labels: list[str], k: int) -> list[list[str]]:
    rows = []
    for row in values:
        order = np.argsort(-row, kind="stable")[:k]  # a tie goes to the first label, as argmax has it
        rows.append([f"{row[i]:f}:{i}:{labels[i]}" for i in order])
    return rows


def pack_bytes(strings: list[str]) -> bytes:
    out = bytearray()
    for s in strings:
        data = s.encode("utf-8")
        out += struct.pack("<I", len(data)) + data
    return bytes(out)


def requested_outputs(parsed: InferRequest, task: str) -> list[RequestedOutput]:
    """The outputs a request asks for (all of the task's when it names none), checked
    before the model runs, so a wrong name costs no inference."""
    names = HEADS[task].outputs
    wanted = parsed.outputs or [RequestedOutput(name=n) for n in names]
    for out in wanted:
        if out.name not in names:
            raise Malformed(f"outputs: unknown output {out.name!r}; choose from {', '.join(names)}")
        k = out.parameters.get("classification")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise Malformed(f"outputs.{out.name}.parameters.classification: must be a positive integer")
    return wanted


def output_tensors(wanted: list[RequestedOutput], outcome: Outcome, options: RequestOptions
                   ) -> tuple[list[dict], list[bytes]]:
    logits, scores = HEADS[outcome.task].outputs
    values = {logits: outcome.logits.astype(np.float32), scores: outcome.scores.astype(np.float32)}
    tensors, blobs = [], []
    for out in wanted:
        k = out.parameters.get("classification")
        binary = bool(out.parameters.get("binary_data", options.binary_data_output))
        array = values[out.name]
        if k is not None:
            rows = classification(array, outcome.labels, min(k, array.shape[1]))
            shape, datatype = [len(rows), len(rows[0])], "BYTES"
            flat_strings = [s for row in rows for s in row]
            data: Any = flat_strings
            blob = pack_bytes(flat_strings)
        else:
            shape, datatype = list(array.shape), "FP32"
            data = array.ravel().tolist()
            blob = array.tobytes()
        tensor = {"name": out.name, "datatype": datatype, "shape": shape}
        if binary:
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = data
        tensors.append(tensor)
    return tensors, blobs


def check_version(version: str | None) -> None:
    if version is not None and version != VERSION:
        raise NotFound(f"version {version!r} not found; every model has version {VERSION}")


def lookup(request: Request, name: str, version: str | None) -> Variant | Cascade:
    """The model a request names (for a route, the arm the client's key picks), or 404
    (unknown model or version) / 503 (not ready)."""
    check_version(version)
    return inference_of(request).lookup(name, request.headers.get(ROUTE_KEY))


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": "slimserve", "version": __version__, "extensions": EXTENSIONS}


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", responses=documented(NotReady, v2=True))
async def server_ready(request: Request) -> dict[str, bool]:
    if not serving_of(request).ready_variants():
        raise NotReady("no model is ready")
    return {"ready": True}


@router.get("/models/{name}", responses=LOOKUP_ERRORS)
@router.get("/models/{name}/versions/{version}", responses=LOOKUP_ERRORS)
async def model_metadata(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    target = lookup(request, name, version)
    labels = target.labels
    platform = ("slimserve_cascade" if isinstance(target, Cascade)
                else BACKENDS[target.opened.backend.runtime.backend].platform)
    text = {"datatype": "BYTES", "shape": [-1]}
    return {
        "name": name, "versions": [VERSION], "platform": platform,
        "inputs": [{"name": "text", **text}, {"name": "text_pair", **text, "optional": True}],
        "outputs": [{"name": n, "datatype": "FP32", "shape": [-1, len(labels)]} for n in HEADS[target.task].outputs],
        "parameters": {"labels": labels, "task": target.task},
    }


@router.get("/models/{name}/ready", responses=LOOKUP_ERRORS)
@router.get("/models/{name}/versions/{version}/ready", responses=LOOKUP_ERRORS)
async def model_ready(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    lookup(request, name, version)  # 404, or 503 with the reason, when it is not ready
    return {"name": name, "ready": True}


@model_route(router, "/models/{name}/infer", responses=INFER_ERRORS, openapi_extra=INFER_BODY)
@model_route(router, "/models/{name}/versions/{version}/infer", responses=INFER_ERRORS, openapi_extra=INFER_BODY)
async def infer(name: str, request: Request, version: str | None = None,
                x_request_timeout: RequestTimeout = None) -> Response:
    deadline = deadline_of(request, x_request_timeout)
    check_version(version)
    target = target_of(request, name)
    parsed, binaries = await parse_request(request)
    try:
        options = RequestOptions.model_validate(parsed.parameters)
    except ValidationError as exc:
        raise Malformed(f"parameters.{first_error(exc.errors())}") from None
    inputs = inputs_of(parsed, binaries)
    check_inputs(request, inputs)
    wanted = requested_outputs(parsed, target.task)
    outcome = await inference_of(request).answer(target, inputs, options.truncate, deadline)
    tensors, blobs = output_tensors(wanted, outcome, options)
    header = {"model_name": name, "model_version": VERSION, "outputs": tensors}
    if parsed.id is not None:
        header["id"] = parsed.id
    if blobs:
        head = json.dumps(header).encode()
        response = Response(head + b"".join(blobs), media_type="application/octet-stream",
                            headers={HEADER_LENGTH: str(len(head))})
    else:
        response = JSONResponse(header)
    response.headers[REQUEST_ID] = remember(request, [(target.name, outcome)])
    set_timing_headers(response, outcome)
    return response
