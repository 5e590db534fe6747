"""The methods and quantizers tables: every row resolves, and the checks read the rows."""

import re

import pytest

from compressor.errors import InputError
from compressor.recipe import (
    METHODS,
    QUANTIZERS,
    Recipe,
    StaticOptions,
    check_calibration,
    check_recipe,
    parse_static,
    quantizer,
)


@pytest.mark.parametrize("row", [*METHODS.values(), *QUANTIZERS.values()], ids=[*METHODS, *QUANTIZERS])
def test_every_row_names_a_function(row):
    pytest.importorskip("torch", reason="the implementations import torch or onnx (the [compress] extra)")
    pytest.importorskip("onnx", reason="the implementations import torch or onnx (the [compress] extra)")
    assert callable(row.implementation())


def test_a_quantizer_is_found_by_its_name_or_by_its_name_and_options():
    assert quantizer("int8") is QUANTIZERS["int8"] and quantizer("int8-static") is QUANTIZERS["int8-static"]
    assert quantizer("int4") is quantizer("int4-emb4-sym") is QUANTIZERS["int4"]
    assert quantizer("int8-static-emb4-hot512") is QUANTIZERS["int8-static"]  # the longest name that fits
    for spec in ("int8-fast", "int", "int4b32"):
        with pytest.raises(InputError, match=re.escape(f"unknown --quantize '{spec}'; choose from int8, "
                                                       "int8-static[-OPTION...], int8-nncf, fused, int4[-OPTION...]")):
            quantizer(spec)
    with pytest.raises(InputError, match="unknown option 'b32'; int8-static takes emb2|emb4"):
        quantizer("int8-static-b32")
    with pytest.raises(InputError, match="'emb32' is out of range"):
        quantizer("int8-static-emb32")
    assert parse_static("int8-static") == StaticOptions()
    assert parse_static("int8-static-hot256-emb2") == StaticOptions(embedding_bits=2, hot_rows=256)
    with pytest.raises(InputError, match="'b8' is out of range"):
        check_recipe(Recipe("x", quantize="int4-b8"))  # the row's parse checks the options


@pytest.mark.parametrize("name", [name for name, row in QUANTIZERS.items() if row.needs_calibration])
def test_a_quantizer_that_needs_calibration_is_refused_without_it(name):
    with pytest.raises(InputError, match=f"--quantize {name} needs --calibration"):
        check_calibration(Recipe("x", quantize=name), None)
    check_calibration(Recipe("x", quantize=name), ["some text"])
