"""Tiny randomly initialised classifiers, built here in seconds: no hub, no ../shared.

Each architecture gets a tokenizer trained on a few sentences with the `tokenizers`
library (WordPiece for BERT and DistilBERT, byte-level BPE for RoBERTa), so the
checkpoint folders look exactly like a user's.

torch and transformers are imported only by the fixtures that build checkpoints (and
skip without torch), onnx only by `toy_graph` (which skips without it), so everything
over fake variants (`fake_variant`, `fake_client`: tests/fakes.py) runs where only the
serving side is installed (`pip install -e ".[serve]" pytest httpx`); a test module that
needs the [compress] extra skips at collection.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from fakes import FakeBackends
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerFast

CORPUS = [
    "it's a charming and often affecting journey.",
    "the plot is thin and the acting is wooden",
    "a quietly devastating film that lingers long after the credits",
    "I expected nothing and was still disappointed",
    "stocks rallied after the central bank held rates steady",
    "an engrossing, funny and surprisingly tender portrait of a family",
] * 4
LABELS = {0: "negative", 1: "positive"}
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
ARCHITECTURES = ("bert", "distilbert", "roberta")


def wordpiece() -> Tokenizer:
    """A BERT-style WordPiece tokenizer trained on CORPUS, with the `tokenizers` library alone."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece()
    return tok


def wordpiece_tokenizer(with_types: bool) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    tok = wordpiece()
    names = ["input_ids", "token_type_ids", "attention_mask"] if with_types else ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_input_names=names)


def byte_level_bpe(specials: list[str]) -> Tokenizer:
    """A byte-level BPE trained on CORPUS (RoBERTa's and ModernBERT's kind); `specials[3]` is unknown."""
    tok = Tokenizer(models.BPE(unk_token=specials[3]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    tok = byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
                                   model_input_names=["input_ids", "attention_mask"])


def tiny_classifier(arch: str) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    torch.manual_seed(0)
    common = {"id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}}
    if arch == "bert":
        tokenizer = wordpiece_tokenizer(with_types=True)
        config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=64, **TINY, **common)
        return BertForSequenceClassification(config), tokenizer
    if arch == "distilbert":
        tokenizer = wordpiece_tokenizer(with_types=False)
        config = DistilBertConfig(vocab_size=len(tokenizer), max_position_embeddings=64, dim=32, n_layers=2,
                                  n_heads=4, hidden_dim=64, **common)
        return DistilBertForSequenceClassification(config), tokenizer
    if arch == "roberta":
        tokenizer = bpe_tokenizer()
        config = RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=66, type_vocab_size=1,
                               pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2, **TINY, **common)
        return RobertaForSequenceClassification(config), tokenizer
    raise ValueError(arch)


def save_checkpoint(arch: str, folder: Path) -> Path:
    model, tokenizer = tiny_classifier(arch)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("torch", reason="building checkpoints needs torch (the [compress] extra)")
    root = tmp_path_factory.mktemp("checkpoints")
    return {arch: save_checkpoint(arch, root / arch) for arch in ARCHITECTURES}


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, checkpoints) -> Path:
    """A models folder with freshly exported tiny variants, as the service finds them."""
    from compressor.pipeline import Recipe, compress

    out = tmp_path_factory.mktemp("models")
    compress(str(checkpoints["bert"]), Recipe("tiny-bert"), out)
    compress(str(checkpoints["bert"]), Recipe("tiny-bert-svd", "svd", 0.5), out)
    compress(str(checkpoints["roberta"]), Recipe("tiny-roberta-int8", quantize="int8"), out)
    return out


@functools.cache
def fixed_wordpiece_json() -> str:
    """A BERT-style WordPiece over a vocabulary listed here, not trained: the same ids in
    every process (training breaks ties between equally frequent pairs differently from
    run to run), which the fake variants' answers are computed from."""
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = sorted({w for text in CORPUS for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))})
    characters = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *characters, *("##" + c for c in characters)]
    tok = Tokenizer(models.WordPiece({token: i for i, token in enumerate(dict.fromkeys(vocab))}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok.to_str()


def fake_variant(folder: Path, method: str = "none", *, labels: tuple[str, ...] = tuple(LABELS.values()),
                 task: str = "single_label", quantize: str | None = None, max_length: int = 64, **graph) -> Path:
    """A variant folder for FakeBackend, built without torch or onnx: a manifest, a real
    WordPiece tokenizer (fixed_wordpiece_json), and for model.onnx the fake's graph (tests/fakes.py): `graph`
    holds `answers`, `salt`, `positions`; its width is the number of labels."""
    from variant.manifest import ONNX_FILE, TOKENIZER_FILE, Manifest, write_manifest

    folder.mkdir(parents=True)
    (folder / TOKENIZER_FILE).write_text(fixed_wordpiece_json(), encoding="utf-8")
    (folder / ONNX_FILE).write_text(json.dumps({"width": len(labels), **graph}), encoding="utf-8")
    write_manifest(folder, Manifest(
        name=folder.name, base_model="fake", task=task, labels=list(labels), max_length=max_length, method=method,
        settings={"quantize": quantize} if quantize else {}, parameters=1000, parameters_original=1000,
        onnx_bytes=0))
    return folder


def fake_variants(root: Path, **variants: dict) -> Path:
    """A models folder `root` of fake variants, each name → fake_variant's arguments."""
    root.mkdir(parents=True, exist_ok=True)
    for name, spec in variants.items():
        fake_variant(root / name, **spec)
    return root


@pytest.fixture(scope="session")
def fake_models_dir(tmp_path_factory) -> Path:
    """A models folder for FakeBackend: `plain` is an uncompressed export (the reference),
    `svd` and `int8` are not; all three answer "sums" (tests/fakes.py)."""
    return fake_variants(tmp_path_factory.mktemp("fake-models"), plain={}, svd={"method": "svd"},
                         int8={"method": "int8", "quantize": "int8"})


# --- the service over an in-process ASGI client ---------------------------------------

@pytest.fixture
def make_client():
    """Build an app over a models folder, run its lifespan, and hand back an httpx client;
    everything is torn down after the test. `backend_of` defaults to ONNX Runtime."""
    loop = asyncio.new_event_loop()
    stacks = []

    from service.app import create_app
    from service.settings import Settings

    def make(folder: Path, backend_of=None, **settings):
        settings.setdefault("warmup", False)  # seconds per app; test_service_lifecycle covers it
        app = create_app(Settings(models=folder, **settings), backend_of)
        lifespan = app.router.lifespan_context(app)
        loop.run_until_complete(lifespan.__aenter__())
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        stacks.append((lifespan, client))
        return SyncClient(client, loop, app)

    yield make
    for lifespan, client in stacks:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(lifespan.__aexit__(None, None, None))
    loop.close()


class SyncClient:
    """Blocking calls over the async client, so tests read top to bottom."""

    def __init__(self, client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop, app) -> None:
        self.client, self.loop, self.app = client, loop, app

    def get(self, url, **kw):
        return self.loop.run_until_complete(self.client.get(url, **kw))

    def post(self, url, **kw):
        return self.loop.run_until_complete(self.client.post(url, **kw))

    def wait(self, awaitable):
        return self.loop.run_until_complete(awaitable)

    def gather(self, *requests):
        async def together():
            return await asyncio.gather(*requests)

        return self.loop.run_until_complete(together())


@pytest.fixture
def client_for(make_client, models_dir):
    """Clients over a models folder, by default the tiny exported variants (needs torch)."""
    return lambda folder=None, **settings: make_client(folder or models_dir, **settings)


@pytest.fixture
def client(client_for):
    return client_for()


@pytest.fixture
def fake_client_for(make_client, fake_models_dir):
    """Clients serving on FakeBackend, by default over `fake_models_dir` (no torch, no onnx);
    `client.backends[name]` is the fake that serves variant `name`."""
    def make(folder=None, **settings):
        backends = FakeBackends()
        client = make_client(folder or fake_models_dir, backends, **settings)
        client.backends = backends
        return client
    return make


@pytest.fixture
def fake_client(fake_client_for):
    return fake_client_for()


def metric_value(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not in metrics")


@pytest.fixture
def live_server():
    """Start the service with uvicorn in a thread on a free loopback port; returns host:port.
    `backend_of` is create_app's (FakeBackend, say); by default ONNX Runtime."""
    import socket
    import threading
    import time

    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    servers = []

    def start(backend_of=None, **settings) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        settings.setdefault("warmup", False)
        config = uvicorn.Config(create_app(Settings(**settings), backend_of), host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.05)
        return f"127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def toy_graph(path: Path, inputs=("input_ids", "attention_mask"), width: int = 2, slow: int = 0) -> None:
    """A stand-in classifier ONNX graph: logits = mean(input_ids) · w, with the given inputs
    and number of labels. `slow` chains that many 1500×1500 MatMuls that depend on the
    input (so ONNX Runtime cannot fold them at load): about 0.1–0.3 s each on two cores.
    Skips the test where the onnx package (the [compress] extra) is not installed."""
    import numpy as np

    onnx = pytest.importorskip("onnx", reason="building a graph needs onnx (the [compress] extra)")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["ids"], ["mean"], axes=[1], keepdims=1),
    ]
    initializers = [numpy_helper.from_array(np.linspace(-1, 1, width, dtype=np.float32)[None, :], "w")]
    last = "mean"
    if slow:
        initializers.append(numpy_helper.from_array(np.array([1500, 1500], dtype=np.int64), "square"))
        nodes += [
            helper.make_node("ConstantOfShape", ["square"], ["ones"],
                             value=numpy_helper.from_array(np.array([1 / 1500], dtype=np.float32))),
            helper.make_node("ReduceMean", ["mean"], ["scale"], keepdims=0),
            helper.make_node("Mul", ["ones", "scale"], ["h0"]),
        ]
        for i in range(slow):
            nodes.append(helper.make_node("MatMul", [f"h{i}", "ones"], [f"h{i + 1}"]))
        nodes += [helper.make_node("ReduceMean", [f"h{slow}"], ["busy"], keepdims=0),
                  helper.make_node("Mul", ["mean", "busy"], ["slowed"])]
        last = "slowed"
    nodes.append(helper.make_node("MatMul", [last, "w"], ["logits"]))
    graph = helper.make_graph(
        nodes, "toy",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "length"]) for n in inputs],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", width])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


# --- waiting on events, not time; private copies of shared fixtures --------------------

def give_up_after(timeout: float, what):
    """A check to call between polls: past `timeout` seconds it fails naming `what` was
    awaited (`what` may be a callable, for a message built at that moment)."""
    import time

    deadline = time.monotonic() + timeout

    def check() -> None:
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what() if callable(what) else what}")
    return check


def wait_until(predicate, what, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll `predicate` until it returns true, or fail after `timeout` seconds naming `what`."""
    import time

    check = give_up_after(timeout, what)
    while not predicate():
        check()
        time.sleep(interval)


async def wait_until_async(predicate, what, timeout: float = 10.0, interval: float = 0.01) -> None:
    """`wait_until` inside an event loop: the loop runs the tasks under test between polls.
    `predicate` may be a coroutine function (to poll over the app's own client)."""
    import inspect

    check = give_up_after(timeout, what)
    while True:
        found = predicate()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return
        check()
        await asyncio.sleep(interval)


def wait_for_metric(client: SyncClient, name: str, value: float, **labels) -> None:
    """Poll the app's /metrics until `name{labels}` equals `value`: for what the service
    finishes after the response has gone (shadow comparisons, the folder watcher)."""
    async def reached() -> bool:
        text = (await client.client.get("/metrics")).text
        try:
            return metric_value(text, name, **labels) == value
        except AssertionError:  # not exported yet
            return False

    client.wait(wait_until_async(reached, f"{name}{labels} to reach {value}"))


@pytest.fixture
def models_copy(models_dir, tmp_path) -> Path:
    """A private copy of the session's models folder, for a test that writes into it
    (`compressor evaluate` rewrites variant.json; a report or a new variant lands there):
    `models_dir` is shared by the whole session and must stay as it was built."""
    import shutil

    return Path(shutil.copytree(models_dir, tmp_path / "models"))
