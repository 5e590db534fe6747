"""A Backend for tests: deterministic logits, no ONNX Runtime, no graph to compute.

A fake variant's model.onnx is a small JSON object, its "graph" (conftest's `fake_variant`
writes it): `width` logits per row, computed by `answers` from the row's real token ids:

- "sums" (the default): [sum of the ids, number of tokens], then zeros up to `width`:
  every text is the first label, with a probability of about 1;
- "spread": label j's logit is ((sum · (3j + 2) + salt · (j + 1)) mod 9 − 4) / 2, in [−2, 2]:
  texts differ in their top label, no probability reaches 1, and two variants with
  other salts agree on some texts only.

`positions` caps the length a run may have, as a graph's position table does. A
model.onnx that is not such an object fails to open, as a corrupt graph does; a
FakeBackend without a path (the batcher's tests) is "sums" over two labels.

Tests steer it through events instead of sleeps:

- `gate`: runs wait until it is set (it is, by default); `hold()` clears it to keep the
  model busy, `release()` sets it;
- `running`: set once a run has started (`hold()` clears it), so a test can wait until
  the model is busy; `entered` lists the rows of every run as it starts, before the gate;
- `fault`: "raise" fails every run, "short" returns one row too few, "nan" poisons the
  first logit; set it back to None to heal the model.

`FakeBackend` itself is a BackendFactory: `create_app(settings, backend_of=FakeBackend)`;
`FakeBackends` is one that keeps what it opened, so a test can reach a variant's model.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from variant.manifest import ONNX_FILE, TOKENIZER_FILE, Runtime, read_manifest
from variant.tokenization import TextInput, encode, load_tokenizer

ANSWERS = ("sums", "spread")


def read_graph(path: Path) -> dict:
    """A fake model.onnx's settings; ValueError where the file is not one."""
    try:
        graph = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError):
        graph = None
    if not isinstance(graph, dict) or graph.get("answers", "sums") not in ANSWERS:
        raise ValueError(f"{path.name} is not a fake graph (a JSON object with `answers` in {ANSWERS})")
    return graph


class FakeBackend:
    input_names = ("input_ids", "attention_mask")
    provider = "fake"
    parallel = 1  # runs at once; a test sets more to see runs go side by side

    def __init__(self, path: Path | None = None, runtime: Runtime | None = None, *, fault: str | None = None,
                 width: int | None = None) -> None:
        graph = read_graph(path) if path is not None else {}
        self.path, self.fault = path, fault
        self.width = width or graph.get("width", 2)
        self.answers, self.salt = graph.get("answers", "sums"), graph.get("salt", 0)
        self.positions: int | None = graph.get("positions")
        self.runtime = runtime or Runtime()
        self.shapes: list[tuple[int, int]] = []  # every run's [batch, length]
        self.entered: list[int] = []  # every run's rows, recorded as it starts (before the gate)
        self.gate = threading.Event()
        self.gate.set()
        self.running = threading.Event()

    def hold(self) -> None:
        """Keep the next runs waiting until `release()`; `running` says when one waits."""
        self.running.clear()
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def logits_of(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        sums = (ids * mask).sum(1)
        logits = np.zeros((len(ids), self.width), dtype=np.float32)
        if self.answers == "spread":
            for j in range(self.width):
                logits[:, j] = ((sums * (3 * j + 2) + self.salt * (j + 1)) % 9 - 4) / 2
        else:
            scores = np.stack([sums, mask.sum(1)], axis=1)
            logits[:, :min(2, self.width)] = scores[:, :self.width]
        return logits

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        ids, mask = arrays["input_ids"], arrays["attention_mask"]
        self.entered.append(len(ids))
        self.running.set()
        assert self.gate.wait(10), "the test never opened the gate"
        self.shapes.append(ids.shape)
        if self.fault == "raise":
            raise RuntimeError("boom")
        if self.positions is not None and ids.shape[1] > self.positions:
            raise ValueError(f"a length of {ids.shape[1]} is over the {self.positions} positions of the graph")
        logits = self.logits_of(ids, mask)
        if self.fault == "nan":
            logits[0, 0] = np.nan
        return logits[:-1] if self.fault == "short" else logits


class FakeBackends:
    """A BackendFactory of FakeBackends that keeps each by its variant's name (the latest
    opened: a reload opens the folder again)."""

    def __init__(self) -> None:
        self.opened: dict[str, list[FakeBackend]] = {}

    def __call__(self, path: Path, runtime: Runtime) -> FakeBackend:
        backend = FakeBackend(path, runtime)
        self.opened.setdefault(path.parent.name, []).append(backend)
        return backend

    def __getitem__(self, name: str) -> FakeBackend:
        return self.opened[name][-1]


def fake_logits(folder: Path, inputs: list[TextInput]) -> np.ndarray:
    """What the fake variant in `folder` answers for `inputs`: its model on its tokenizer's rows."""
    tokenizer = load_tokenizer(folder / TOKENIZER_FILE, read_manifest(folder).max_length)
    return FakeBackend(folder / ONNX_FILE).run(encode(tokenizer, inputs).arrays)
