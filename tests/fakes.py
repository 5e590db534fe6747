"""A Backend for tests: deterministic logits, no ONNX Runtime, no model file read.

Each row's logits are [sum of its real token ids, number of real tokens], then zeros up
to `width` labels. Tests steer it through events instead of sleeps:

- `gate`: runs wait until it is set (it is, by default); clear it to hold the model busy;
- `running`: set once a run has started, so a test can wait until the model is busy;
- `fault`: "raise" fails every run, "short" returns one row too few, "nan" poisons the
  first logit; set it back to None to heal the model.

`FakeBackend` itself is a BackendFactory: `create_app(settings, backend_of=FakeBackend)`.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from variant.manifest import Runtime


class FakeBackend:
    input_names = ("input_ids", "attention_mask")
    provider = "fake"

    def __init__(self, path: Path | None = None, runtime: Runtime | None = None, *, fault: str | None = None,
                 width: int = 2) -> None:
        self.path, self.fault, self.width = path, fault, width
        self.runtime = runtime or Runtime()
        self.shapes: list[tuple[int, int]] = []  # every run's [batch, length]
        self.gate = threading.Event()
        self.gate.set()
        self.running = threading.Event()

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        self.running.set()
        assert self.gate.wait(10), "the test never opened the gate"
        ids, mask = arrays["input_ids"], arrays["attention_mask"]
        self.shapes.append(ids.shape)
        if self.fault == "raise":
            raise RuntimeError("boom")
        logits = np.zeros((len(ids), self.width), dtype=np.float32)
        scores = np.stack([(ids * mask).sum(1), mask.sum(1)], axis=1)
        logits[:, :min(2, self.width)] = scores[:, :self.width]
        if self.fault == "nan":
            logits[0, 0] = np.nan
        return logits[:-1] if self.fault == "short" else logits
