"""slimserve's offline side: load a classifier, compress it, export ONNX, evaluate.

The command line is `compressor` (see `compressor --help` and compressor/cli.py).
"""
