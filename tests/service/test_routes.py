"""Routes: one name splitting traffic between variants by weight (service/routes.py, and
serving.py's lookup), on fake variants (tests/fakes.py). `plain` answers "sums" and
`canary` answers "spread", so an answer shows which arm gave it."""

import json
import random

import pytest
from conftest import fake_variants, metric_value

from service import routes
from service.routes import ROUTES_FILE, choose, point_of

TEXTS = ["it's a charming and often affecting journey.", "the plot is thin and the acting is wooden", "fine"]
VARIANTS = {"plain": {}, "canary": {"method": "svd", "answers": "spread", "salt": 1}, "other": {"method": "svd"}}
SPLIT = {"sentiment": {"plain": 90, "canary": 10}}
ADMIN = {"authorization": "Bearer s3cret"}


@pytest.fixture
def folder(tmp_path):
    folder = fake_variants(tmp_path / "models", **VARIANTS)
    (folder / "cascades.json").write_text(json.dumps({"both": {"fast": "canary", "reference": "plain",
                                                               "threshold": 0.5}}))
    (folder / ROUTES_FILE).write_text(json.dumps(SPLIT))
    return folder


@pytest.fixture
def client(fake_client_for, folder):
    return fake_client_for(folder, admin_token="s3cret")


def classify(client, name="sentiment", key=None, texts=TEXTS):
    headers = {"x-route-key": key} if key is not None else {}
    return client.post(f"/v1/models/{name}/classify", json={"inputs": texts}, headers=headers)


def reload(client):
    response = client.post("/admin/reload", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def put(client, name, body, headers=ADMIN):
    return client.wait(client.client.put(f"/admin/routes/{name}", json=body, headers=headers))


def delete(client, name, headers=ADMIN):
    return client.wait(client.client.delete(f"/admin/routes/{name}", headers=headers))


def listed(client) -> dict:
    return {r["name"]: r for r in client.get("/v1/routes").json()["routes"]}


# --- the rule -------------------------------------------------------------------------

def shares(arms: list[str]) -> dict[str, float]:
    return {arm: arms.count(arm) / len(arms) for arm in set(arms)}


def test_lookups_give_each_arm_its_weight_within_a_point(client, monkeypatch):
    serving = client.app.state.serving
    keyed = [serving.lookup("sentiment", f"user-{i}").name for i in range(10_000)]
    monkeypatch.setattr(routes.random, "random", random.Random(7).random)  # the draws without a key, repeatable
    drawn = [serving.lookup("sentiment").name for _ in range(10_000)]
    for arms in (keyed, drawn):
        assert shares(arms)["plain"] == pytest.approx(0.9, abs=0.01)
        assert shares(arms)["canary"] == pytest.approx(0.1, abs=0.01)


def test_a_key_keeps_its_arm_while_the_shares_hold_and_weight_zero_is_never_chosen():
    keys = [f"k{i}" for i in range(2000)]
    before = [choose({"plain": 90, "canary": 10}, point_of("sentiment", k)) for k in keys]
    assert [choose({"canary": 1, "plain": 9.0}, point_of("sentiment", k)) for k in keys] == before  # order, scale
    assert set(before) == {"plain", "canary"}
    assert {choose({"plain": 1, "canary": 0}, point_of("sentiment", k)) for k in keys} == {"plain"}
    # The route's name is hashed with the key: another route splits the same keys otherwise.
    assert [choose({"plain": 90, "canary": 10}, point_of("other", k)) for k in keys] != before


@pytest.mark.parametrize(("text", "why"), [
    ("{not json", "Expecting property name"),
    (json.dumps({"r": {"plain": -1}}), "r.plain: a weight is a finite number ≥ 0, not -1"),
    (json.dumps({"r": {"plain": True}}), "not True"),
    (json.dumps({"r": {"plain": "9"}}), "not '9'"),
    (json.dumps({"r": {"plain": 0, "canary": 0}}), "r: at least one arm needs a weight above 0"),
    (json.dumps({"r": {}}), "at least one arm"),
    (json.dumps({"r": {"plain": 10**400}}), "r.plain: a weight is a finite number"),
    (json.dumps({"r": {"plain": 1e308, "canary": 1e308}}), "r: the weights add up to more than a float holds"),
    ('{"r": {"plain": NaN}}', "not nan"),
    (json.dumps(["plain"]), "Input should be a valid dictionary"),
])
def test_a_file_that_is_no_routes_is_refused_naming_the_field(text, why):
    with pytest.raises(ValueError, match=why):
        routes.parse_routes(text)


# --- through the service --------------------------------------------------------------

def test_answers_name_the_arm_and_metrics_count_under_it(client):
    plain, canary = (classify(client, name).json()["predictions"] for name in ("plain", "canary"))
    assert plain != canary  # so an answer shows which arm gave it
    arms = []
    for _ in range(300):
        response = classify(client)
        assert response.status_code == 200 and response.headers["x-route"] == "sentiment"
        arm = response.headers["x-route-arm"]
        body = response.json()
        assert body["id"] == response.headers["x-request-id"]
        assert {k: body[k] for k in ("model", "predictions")} == {
            "model": "sentiment", "predictions": plain if arm == "plain" else canary}
        arms.append(arm)
    assert set(arms) == {"plain", "canary"}
    text = client.get("/metrics").text
    for arm in ("plain", "canary"):
        assert metric_value(text, "slimserve_route_requests_total", route="sentiment", model=arm) == arms.count(arm)
        # Every metric of the answer names the arm: plus the one direct request made above.
        assert metric_value(text, "slimserve_requests_total", model=arm, status="200") == arms.count(arm) + 1
        assert metric_value(text, "slimserve_request_duration_seconds_count", model=arm) == arms.count(arm) + 1
        assert metric_value(text, "slimserve_queue_duration_seconds_count", model=arm) == arms.count(arm) + 1
    assert 'model="sentiment"' not in text
    refused = classify(client, key="k", texts=[])  # refused after routing: counted under its arm
    assert refused.status_code == 400
    assert metric_value(client.get("/metrics").text, "slimserve_requests_total", status="400",
                        model=classify(client, key="k").headers["x-route-arm"]) == 1


def test_v2_infer_and_rerank_follow_the_route(client):
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["fine"]}]}
    arm = classify(client, key="client-1").headers["x-route-arm"]
    inferred = client.post("/v2/models/sentiment/infer", json=body, headers={"x-route-key": "client-1"})
    assert inferred.status_code == 200 and inferred.json()["model_name"] == "sentiment"
    assert (inferred.headers["x-route"], inferred.headers["x-route-arm"]) == ("sentiment", arm)
    reranked = client.post("/v1/rerank", json={"query": "q", "texts": TEXTS, "model": "sentiment"},
                           headers={"x-route-key": "client-1"})
    assert reranked.status_code == 200 and reranked.headers["x-route-arm"] == arm
    assert client.get("/v2/models/sentiment").json()["parameters"]["labels"] == ["negative", "positive"]
    assert "route" in client.post("/v1/compare", json={"inputs": TEXTS, "models": ["sentiment"]}).json()["error"]


def test_a_key_keeps_its_arm_across_reloads_that_keep_the_shares(client, folder):
    keys = [f"client-{i}" for i in range(40)]

    def arms() -> list[str]:
        return [classify(client, key=k).headers["x-route-arm"] for k in keys]

    first = arms()
    assert set(first) == {"plain", "canary"}
    assert arms() == first
    reload(client)
    assert arms() == first
    (folder / ROUTES_FILE).write_text(json.dumps({"sentiment": {"canary": 1, "plain": 9}}))
    reload(client)
    assert arms() == first


def test_models_and_routes_list_the_route(client):
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    entry = models["sentiment"]
    assert (entry["state"], entry["route"], entry["reason"], entry["manifest"]) == ("ready", SPLIT["sentiment"], None, None)
    assert client.get("/v1/models/sentiment").json() == models["sentiment"]
    assert client.get("/v1/routes").json() == {"routes": [
        {"name": "sentiment", "arms": {"plain": 90, "canary": 10}, "state": "ready", "reason": None}],
        "refused": None}
    assert "sentiment" in client.get("/health/ready").json()["models"]


def test_a_route_whose_arm_does_not_serve_is_listed_failed_and_answers_503(fake_client_for, tmp_path):
    folder = fake_variants(tmp_path, plain={}, tags={"labels": ("a", "b", "c")})
    (folder / "broken").mkdir()
    (folder / ROUTES_FILE).write_text(json.dumps({
        "needs-broken": {"plain": 1, "broken": 1}, "idle-broken": {"plain": 1, "broken": 0},
        "mixed": {"plain": 1, "tags": 1}}))
    client = fake_client_for(folder)
    routes_now = listed(client)
    assert routes_now["needs-broken"]["state"] == "failed" and "needs broken" in routes_now["needs-broken"]["reason"]
    assert routes_now["idle-broken"]["state"] == "ready"  # an arm at weight 0 takes no traffic
    assert routes_now["mixed"]["state"] == "failed" and "3 labels" in routes_now["mixed"]["reason"]
    response = classify(client, "needs-broken")
    assert response.status_code == 503 and "needs broken" in response.json()["error"]
    assert classify(client, "idle-broken").headers["x-route-arm"] == "plain"


BAD_FILES = {
    "not JSON": "{",
    "negative weight": {"sentiment": {"plain": -5}},
    "no positive weight": {"sentiment": {"plain": 0}},
    "arm is a cascade": {"sentiment": {"plain": 1}, "new": {"both": 1}},
    "arm is a route": {"sentiment": {"plain": 1}, "new": {"sentiment": 1}},
    "arm is unknown": {"sentiment": {"plain": 1}, "new": {"gone": 1}},
    "name of a variant": {"sentiment": {"plain": 1}, "canary": {"plain": 1}},
    "name of a cascade": {"sentiment": {"plain": 1}, "both": {"plain": 1}},
}


def test_a_bad_file_is_refused_whole_and_the_routes_before_kept(client, folder):
    before = listed(client)
    for number, (what, content) in enumerate(BAD_FILES.items(), 1):
        (folder / ROUTES_FILE).write_text(content if isinstance(content, str) else json.dumps(content))
        answer = reload(client)
        assert answer["routes"] == ["sentiment"] and answer["routes_refused"].startswith(f"{ROUTES_FILE} refused"), what
        assert listed(client) == before, what  # the good route beside the bad one is not taken either
        assert client.get("/v1/routes").json()["refused"] == answer["routes_refused"]
        assert metric_value(client.get("/metrics").text, "slimserve_routes_refused_total") == number
    (folder / ROUTES_FILE).write_text(json.dumps({"sentiment": {"plain": 1}}))
    assert reload(client)["routes_refused"] is None
    assert listed(client)["sentiment"]["arms"] == {"plain": 1}


def test_at_start_a_bad_file_leaves_the_routes_of_the_settings(fake_client_for, folder):
    (folder / ROUTES_FILE).write_text(json.dumps({"sentiment": {"plain": 1, "cascade-not-variant": 1}}))
    client = fake_client_for(folder, routes={"declared": {"canary": 1}})
    body = client.get("/v1/routes").json()
    assert [r["name"] for r in body["routes"]] == ["declared"] and "cascade-not-variant" in body["refused"]


def test_the_file_wins_over_the_setting(fake_client_for, folder):
    client = fake_client_for(folder, routes={"sentiment": {"canary": 1}, "declared": {"canary": 1}})
    assert listed(client)["sentiment"]["arms"] == SPLIT["sentiment"]
    assert classify(client, "declared").headers["x-route-arm"] == "canary"


def test_admin_routes_need_the_token(client, fake_client_for):
    body = {"arms": {"plain": 1}}
    assert put(client, "sentiment", body, headers={}).status_code == 401
    assert put(client, "sentiment", body, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert put(client, "sentiment", {"arms": "not arms"}, headers={}).status_code == 401  # before the body
    assert delete(client, "sentiment", headers={}).status_code == 401
    off = fake_client_for()
    assert put(off, "sentiment", body, headers=ADMIN).status_code == 404
    assert listed(client)["sentiment"]["arms"] == SPLIT["sentiment"]


def test_admin_put_writes_the_file_and_serves_it_at_once(client, folder):
    response = put(client, "sentiment", {"arms": {"plain": 0, "canary": 1}})
    assert response.status_code == 200
    assert response.json()["routes"] == [{"name": "sentiment", "arms": {"plain": 0, "canary": 1}, "state": "ready",
                                          "reason": None}]
    assert json.loads((folder / ROUTES_FILE).read_text()) == {"sentiment": {"plain": 0, "canary": 1}}
    assert {classify(client, key=str(k)).headers["x-route-arm"] for k in range(20)} == {"canary"}
    assert put(client, "second", {"arms": {"other": 2.5}}).status_code == 200
    reload(client)  # the file holds the change, so a reload keeps it
    assert {n: r["arms"] for n, r in listed(client).items()} == {"sentiment": {"plain": 0, "canary": 1},
                                                                 "second": {"other": 2.5}}
    assert [p.name for p in folder.iterdir() if p.name.startswith(f".{ROUTES_FILE}")] == []  # no temporary left
    assert delete(client, "second").status_code == 200
    assert set(listed(client)) == {"sentiment"} and "second" not in (folder / ROUTES_FILE).read_text()
    assert classify(client, "second").status_code == 404


@pytest.mark.parametrize(("name", "body", "field"), [
    ("sentiment", {"arms": {"plain": 1, "nope": 1}}, "arms.nope"),
    ("sentiment", {"arms": {"plain": 1, "both": 1}}, "arms.both"),
    ("sentiment", {"arms": {"plain": 0}}, "arms"),
    ("sentiment", {"arms": {"plain": -1}}, "arms.plain"),
    ("sentiment", {"arms": {"plain": 1}, "extra": 1}, "extra"),
    ("canary", {"arms": {"plain": 1}}, "name"),
])
def test_admin_put_refuses_a_bad_route_whole(client, folder, name, body, field):
    response = put(client, name, body)
    assert response.status_code == 422 and response.json()["error"].startswith(f"{field}:"), response.json()
    assert json.loads((folder / ROUTES_FILE).read_text()) == SPLIT
    assert listed(client)["sentiment"]["arms"] == SPLIT["sentiment"]


def test_admin_edits_refuse_a_broken_file_and_unknown_routes(client, folder):
    assert delete(client, "nope").status_code == 404
    (folder / ROUTES_FILE).write_text("{broken")
    response = put(client, "sentiment", {"arms": {"plain": 1}})
    assert response.status_code == 409 and "fix or remove it" in response.json()["error"]
    assert (folder / ROUTES_FILE).read_text() == "{broken"  # the hand edit is not overwritten


def test_feedback_on_a_routed_answer_counts_under_the_arm_that_gave_it(client):
    answers = {}
    for key in range(60):  # enough keys that both arms answer
        response = classify(client, key=f"client-{key}", texts=TEXTS[:1])
        answers.setdefault(response.headers["x-route-arm"], response.json())
    assert set(answers) == {"plain", "canary"}
    items = [{"id": a["id"], "label": a["predictions"][0]["label"]} for a in answers.values()]
    results = client.post("/v1/feedback", json={"feedback": items}).json()["results"]
    assert sorted((r["model"], r["status"]) for r in results) == [("canary", "correct"), ("plain", "correct")]
    metrics = client.get("/metrics").text
    for arm in ("plain", "canary"):
        assert metric_value(metrics, "slimserve_feedback_accuracy", model=arm) == 1.0
    assert 'slimserve_feedback_accuracy{model="sentiment"}' not in metrics


@pytest.mark.slow  # ten thousand requests through the app
def test_ten_thousand_requests_split_by_weight_and_keyed_ones_keep_their_arm(client):
    random.seed(7)  # unkeyed requests land at random: a fixed draw keeps the test from failing one run in a thousand
    arms = [classify(client, texts=TEXTS[:1]).headers["x-route-arm"] for _ in range(10_000)]
    found = shares(arms)
    assert abs(found["plain"] - 0.9) <= 0.01 and abs(found["canary"] - 0.1) <= 0.01
    for key in range(100):
        assert len({classify(client, key=f"k{key}", texts=TEXTS[:1]).headers["x-route-arm"] for _ in range(5)}) == 1
    metrics = client.get("/metrics").text
    for arm in ("plain", "canary"):
        assert metric_value(metrics, "slimserve_route_requests_total", route="sentiment", model=arm) >= arms.count(arm)
