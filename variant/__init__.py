"""The variant contract: what a variant folder is, how its answers are read, and how it runs.

A variant folder holds `variant.json` (manifest.py), `tokenizer.json` (tokenization.py)
and `model.onnx` (run by a backend of backends/). The compressor writes such folders and
the service serves them; both import this package and nothing of each other, so the
arrows read compressor → variant ← service. It imports neither torch nor the web stack.

    manifest.py      variant.json: schema, reading, atomic writing, the names `none` and `original`
    runtimes.py      the table of backends and the precisions each computes in
    heads.py         the table of heads, one row per task, and `comparable`
    tokenization.py  texts → rows → padded batches: the bucket and pad rules the service batches by
    backends/        the Backend protocol; one module per runtime (ort.py, openvino.py)
    folder.py        open a variant folder: files, manifest, tokenizer, backend, warm-up
    cascade.py       the cascade spec, its file, and its decision rule
    measure.py       answers and latency of a variant, run exactly as the service runs it
"""

import os

# The tokenizers library would encode each batch on a pool of one thread per core, on top
# of the runtime threads the thread budget hands out: keep tokenization on the calling thread.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
