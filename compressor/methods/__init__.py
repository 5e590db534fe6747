"""Compression methods, one module per family. Each exposes
`compress(model, ratio, calibration) -> settings`: it changes the model in place and
returns the parameters that made the variant, which go into the manifest."""
