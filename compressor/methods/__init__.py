"""Compression methods, one module per family. Each exposes
`compress(classifier, ratio, calibration) -> settings`: it changes `classifier.model` in
place and returns the parameters that made the variant, which go into the manifest."""
