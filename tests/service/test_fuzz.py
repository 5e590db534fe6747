"""Schemathesis drives every operation of the service's own OpenAPI schema with generated
requests, valid and invalid, against a live loopback server over the tiny variants: no
response may be a 5xx (but the 504 of a request that gave itself a deadline, a designed
answer as a 429 is), and every response must match what the schema documents. Once
more with client API keys on: the client sends its key, and schemathesis checks that the
routes the schema says need one refuse a request without it or with another."""

from collections import Counter

import pytest

pytest.importorskip("schemathesis", reason="schemathesis is in the [dev] extra")

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

pytestmark = pytest.mark.slow  # a live server and about 640 generated requests

EXAMPLES = 40  # per operation: 16 operations, about 640 requests in all, seconds on tiny variants
NAMES = ["tiny-bert", "tiny-bert-svd", "tiny-roberta-int8"]
KEY = "a-client-key-for-the-fuzzer"


def set_a_deadline(case) -> bool:
    return "x-request-timeout" in {name.lower() for name in case.headers or {}} or (
        isinstance(case.body, dict) and case.body.get("timeout") is not None)


def no_server_error(ctx, response, case):
    """not_a_server_error, but a request that gave itself a deadline (generated: it may be
    a few microseconds) may rightly be answered 504 when it passed before the run."""
    if response.status_code == 504 and set_a_deadline(case):
        return None
    return not_a_server_error(ctx, response, case)


@pytest.mark.parametrize("keys", [None, KEY], ids=["open", "with keys"])
def test_no_server_errors_and_responses_match_the_schema(live_server, models_dir, keys):
    address = live_server(models=models_dir, max_inputs=8, max_queue=64, api_keys=keys)
    # "Authorization" as the schema names it, so the checks can take it away again.
    headers = {"Authorization": f"Bearer {keys}"} if keys else None
    schema = schemathesis.openapi.from_url(f"http://{address}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 10
    failures, statuses = {}, Counter()
    for operation in operations:
        # Random model names would almost all be 404s: most cases name a real variant.
        # Random tensors are almost never BYTES text: some infer bodies carry generated text.
        cases = st.tuples(operation.as_strategy(), st.sampled_from([None, *NAMES]),
                          st.none() | st.lists(st.text(), min_size=1, max_size=4))

        @given(pair=cases)
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(pair):  # called at once below, so the loop variable cannot move under it
            case, name, texts = pair
            if name and case.path_parameters and "name" in case.path_parameters:
                case.path_parameters["name"] = name
            if texts and operation.label.endswith("/infer"):  # noqa: B023
                case.body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
            # Schema-valid requests may still be refused by design, by limits the schema
            # cannot know (max_inputs, a queue bound) or names that do not exist (404).
            response = case.call_and_validate(headers=headers, additional_checks=[no_server_error],
                                              excluded_checks=[positive_data_acceptance, not_a_server_error])
            statuses[operation.label, response.status_code // 100] += 1  # noqa: B023

        try:
            call()
        except Exception as exc:  # noqa: BLE001 — gather every operation's failures, then report them together
            failures[operation.label] = str(exc)[:2000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    # The fuzzing reached the models: answers and refusals on the model routes. Neither is
    # required of each route: on some runs Hypothesis draws a route's cases from a corner
    # (only a few valid bodies, or, with keys, mostly bodies a model route rightly refuses).
    routes = ("POST /v1/models/{name}/classify", "POST /v2/models/{name}/infer", "POST /v1/compare")
    assert sum(statuses[label, 2] for label in routes) > 0, statuses
    assert sum(statuses[label, 4] for label in routes) > 0, statuses
