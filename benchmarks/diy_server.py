"""The do-it-yourself baseline users start from: FastAPI + transformers.pipeline.

    SLIMSERVE_DIY_MODEL=../shared/models/minilm-l6-sst2 uvicorn benchmarks.diy_server:app --port 8001

Same route and body as slimserve's /v1 classify, so benchmarks/serve.py drives both with
one load generator. PyTorch eager on the CPU, one request per forward pass, run in
FastAPI's thread pool as a plain `def` route would be.
"""

from __future__ import annotations

import os

import torch
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

torch.set_num_threads(int(os.environ.get("SLIMSERVE_DIY_THREADS", "2")))
classifier = pipeline("text-classification", model=os.environ["SLIMSERVE_DIY_MODEL"], device="cpu")
app = FastAPI()


class Body(BaseModel):
    inputs: list[str]


@app.get("/health/ready")
def ready() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/v1/models/{name}/classify")
def classify(name: str, body: Body) -> dict:
    return {"model": name, "predictions": classifier(body.inputs)}
