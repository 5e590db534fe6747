"""slimserve's online side: a FastAPI + ONNX Runtime server for compressed variants.

It never imports torch or transformers, so the serving image carries neither.
Start it with `python -m service --models models` or `uvicorn service.app:app`.
"""

import os

# The tokenizers library would encode each batch on a pool of one thread per core, on top
# of the ONNX Runtime threads the thread budget hands out: keep tokenization on the calling
# worker thread instead.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
