"""slimserve's online side: a FastAPI + ONNX Runtime server for compressed variants.

It never imports torch or transformers, so the serving image carries neither.
Start it with `python -m service --models models` or `uvicorn service.app:app`.
"""

__version__ = "0.1.0"
