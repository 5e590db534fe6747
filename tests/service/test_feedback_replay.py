"""Live accuracy is offline accuracy: the embedded default model's variants (the plain
export, static int8 and their cascade), scored on a labelled TSV by `compressor evaluate`
and, sentence by sentence, through a live service that is sent each sentence's label
afterwards (POST /v1/feedback), count the same right answers. benchmarks/feedback_replay.py
does the same on SST-2 dev."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import metric_value

pytest.importorskip("torch", reason="the default model is exported with torch (the [compress] extra)")

from compressor.checkpoint import load_classifier
from compressor.cli import main as compressor
from compressor.data import read_calibration
from compressor.default_model import CALIBRATION_FILE
from compressor.pipeline import DEFAULT_CASCADES, Recipe, build
from variant.cascade import CASCADE_FILE

pytestmark = pytest.mark.slow  # exports MiniLM twice, evaluates it, serves it over HTTP

# Sentences of our own (none is in SST-2): plain ones, hedged ones, and four labelled the
# wrong way on purpose, so every variant gets some wrong and both counts are compared.
ROWS = [
    ("a warm, funny and honest film about growing up", "positive"),
    ("the script is lazy and the jokes never land", "negative"),
    ("one of the most moving performances of the year", "positive"),
    ("two hours of my life I will never get back", "negative"),
    ("beautifully shot and wonderfully acted", "positive"),
    ("a muddled, overlong mess with no sense of pace", "negative"),
    ("the cast clearly had fun, and so did I", "positive"),
    ("flat characters trapped in a predictable plot", "negative"),
    ("smart, tender and surprisingly gripping", "positive"),
    ("the dialogue is so wooden it creaks", "negative"),
    ("a delightful surprise from start to finish", "positive"),
    ("it drags on long after it has run out of ideas", "negative"),
    ("the music alone is worth the ticket", "positive"),
    ("an ugly, joyless film that mistakes noise for energy", "negative"),
    ("a gentle comedy with a big heart", "positive"),
    ("nothing here feels real or earned", "negative"),
    ("the best thing the director has made", "positive"),
    ("tedious and painfully self-important", "negative"),
    ("a clever, playful script full of surprises", "positive"),
    ("the plot holes are big enough to drive a truck through", "negative"),
    ("an uplifting story told with real care", "positive"),
    ("a forgettable sequel that nobody asked for", "negative"),
    ("the lead gives a fierce and fearless performance", "positive"),
    ("badly edited, badly written and badly acted", "negative"),
    ("it is not without its charms", "positive"),
    ("I wanted to like it more than I did", "negative"),
    ("not the disaster everyone predicted", "positive"),
    ("it never quite decides what it wants to be", "negative"),
    ("the ending almost makes up for the slow start", "positive"),
    ("pretty to look at, but there is nothing underneath", "negative"),
    ("a modest film that quietly wins you over", "positive"),
    ("the twist is obvious from the first scene", "negative"),
    ("uneven, yet often very funny", "positive"),
    ("ambitious, but it collapses under its own weight", "negative"),
    ("it should have been a disaster, and somehow it works", "positive"),
    ("a great cast wasted on a thin story", "negative"),
    ("rough around the edges but full of life", "positive"),
    ("the first half sparkles; the second half sinks", "negative"),
    ("not perfect, but I smiled all the way through", "positive"),
    ("it tries so hard to be clever that it forgets to be fun", "negative"),
    ("a small film with big ideas", "positive"),
    ("a cynical cash grab dressed up as a family film", "negative"),
    ("every scene feels alive", "positive"),
    ("dull, dull, dull", "negative"),
    ("funny, sad and true", "positive"),
    ("a chore to sit through", "negative"),
    ("the kind of film you want to watch again straight away", "positive"),
    ("the actors look as bored as the audience", "negative"),
    ("a sharp and witty satire", "positive"),
    ("loud, long and pointless", "negative"),
    ("an absolute joy", "positive"),
    ("I kept checking my watch", "negative"),
    ("a thoughtful, well-made drama", "positive"),
    ("clumsy, preachy and dull", "negative"),
    ("a feast for the eyes and the heart", "positive"),
    ("an embarrassment for everyone involved", "negative"),
    # Labelled the wrong way on purpose:
    ("a masterpiece, moving and beautifully made", "negative"),
    ("one of the worst films I have ever seen", "positive"),
    ("a wonderful, joyous celebration of life", "negative"),
    ("boring, ugly and far too long", "positive"),
]


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """The default model's plain and static-int8 exports and their cascade, as `make variants` builds them
    (calibrated on fewer of the shipped texts, to build quicker)."""
    out = tmp_path_factory.mktemp("default-variants")
    classifier = load_classifier("default")
    build(classifier, Recipe("original"), out)
    build(classifier, Recipe("int8", quantize="int8-static"), out, read_calibration(CALIBRATION_FILE)[:128])
    (out / CASCADE_FILE).write_text(json.dumps({n: s.model_dump() for n, s in DEFAULT_CASCADES.items()}))
    return out


def test_live_accuracy_from_feedback_equals_evaluate(variants, live_server, tmp_path):
    data, results = tmp_path / "labelled.tsv", tmp_path / "evaluate.json"
    data.write_text("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in ROWS), encoding="utf-8")
    compressor(["evaluate", str(variants / "original"), str(variants / "int8"), "--data", str(data),
                "--json", str(results), "--threads", "2"])
    offline = {r["variant"]: r["accuracy"] for r in json.loads(results.read_text())}
    assert set(offline) == {"original", "int8", *DEFAULT_CASCADES}

    with httpx.Client(base_url=f"http://{live_server(models=variants, threads=2)}", timeout=60) as http:
        for name in offline:
            ids = []
            for text, _ in ROWS:  # one sentence a request, as a client asks
                response = http.post(f"/v1/models/{name}/classify", json={"inputs": [text]})
                assert response.status_code == 200, response.text
                ids.append(response.headers["x-request-id"])
            sent = http.post("/v1/feedback", json={"feedback": [
                {"id": i, "label": label} for i, (_, label) in zip(ids, ROWS)]})
            assert sent.status_code == 200 and sent.json()["accepted"] == len(ROWS), sent.text
        metrics = http.get("/metrics").text

    for name, accuracy in offline.items():
        right = metric_value(metrics, "slimserve_feedback_total", model=name, outcome="correct")
        wrong = metric_value(metrics, "slimserve_feedback_total", model=name, outcome="wrong")
        assert right + wrong == len(ROWS) and wrong >= 4, name  # at least the four mislabelled rows
        assert right == round(accuracy * len(ROWS)), (name, right, accuracy)  # as many sentences right
        live = metric_value(metrics, "slimserve_feedback_accuracy", model=name)
        assert live == right / len(ROWS) and round(live, 4) == accuracy, (name, live, accuracy)
