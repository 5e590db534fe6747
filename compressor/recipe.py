"""What a compression recipe may say, checked without torch.

A recipe is a `+`-joined pipeline of methods, each with an optional budget, then an
optional quantization, and the options some methods take. Every name and rule the
command line checks before it loads a model lives here, in a module that imports neither
torch nor transformers: importing them takes seconds, and a mistyped flag should fail at
once. The torch modules import these names from here. Methods and quantizers are one
table each (`METHODS`, `QUANTIZERS`), a row per name: the command line, the checks, the
pipeline and the export all read the rows, and a row's implementation is imported by its
module's name only when a recipe runs (`Method.implementation`, `Quantizer.implementation`).
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from compressor.errors import InputError
from variant.manifest import VARIANT_NAME

NONE = "none"  # the method of a plain export


def implementation_of(module: str, function: str) -> Callable[..., dict]:
    """`compressor.methods.MODULE.FUNCTION`, imported only now: it imports torch or onnxruntime."""
    return getattr(importlib.import_module(f"compressor.methods.{module}"), function)


@dataclass(frozen=True)
class Method:
    """One row of the methods table: where the implementation lives, and what the checks
    must know about it before it runs."""

    module: str  # under compressor.methods
    function: str = "compress"
    needs_calibration: bool = False
    factorizer: bool = False  # replaces the encoder Linears: one per pipeline, after prune
    options: dict[str, bool] = field(default_factory=dict)  # fixed keyword arguments
    recipe_options: dict[str, str] = field(default_factory=dict)  # keyword argument → the Recipe field it takes

    def implementation(self) -> Callable[..., dict]:
        """`compress(classifier, ratio, calibration, **options) -> settings`; imports torch."""
        function = implementation_of(self.module, self.function)
        return functools.partial(function, **self.options) if self.options else function


ALLOCATION = {"allocation": "allocation"}  # --allocation uniform|sensitivity
METHODS: dict[str, Method] = {
    "svd": Method("svd", factorizer=True, recipe_options=ALLOCATION),
    "svd-aware": Method("aware", "compress_whitened", needs_calibration=True, factorizer=True,
                        recipe_options=ALLOCATION),
    "asvd": Method("aware", "compress_scaled", needs_calibration=True, factorizer=True, recipe_options=ALLOCATION),
    "fwsvd": Method("fisher", needs_calibration=True, factorizer=True, recipe_options=ALLOCATION),
    "ae": Method("autoencoder", factorizer=True, options={"shared": False, "linear": False}),
    "ae-shared": Method("autoencoder", factorizer=True, options={"shared": True, "linear": False}),
    "ae-linear": Method("autoencoder", factorizer=True, options={"shared": False, "linear": True}),
    "ae-linear-shared": Method("autoencoder", factorizer=True, options={"shared": True, "linear": True}),
    "kronecker": Method("kronecker", factorizer=True),
    "tucker": Method("tucker", factorizer=True),
    "prune": Method("prune", needs_calibration=True),
    "drop-layers": Method("drop_layers", needs_calibration=True,
                          recipe_options={"layers": "drop_layers", "repair_with": "layer_repair"}),
    "embed-ae": Method("embedding"),  # uses calibration text only when given
}
NEEDS_CALIBRATION = frozenset(name for name, m in METHODS.items() if m.needs_calibration)
FACTORIZERS = frozenset(name for name, m in METHODS.items() if m.factorizer)
ALLOCATABLE = frozenset(name for name, m in METHODS.items() if "allocation" in m.recipe_options.values())

ALLOCATIONS = ("uniform", "sensitivity")
REPAIRS = ("auto", "inputs", "inputs+norm", "none")  # drop-layers; auto picks among the rest, gap by gap
DEFAULT_REPAIR = "auto"

# --quantize int4's and int8-static's options (compressor.methods.int4 and .quantize apply them).
INT4 = "int4"
STATIC = "int8-static"
BLOCK_SIZES = (16, 32, 64, 128, 256)  # MatMulNBits takes powers of two from 16
ACCURACY_LEVELS = (1, 2, 3, 4)  # compute type of the activations: fp32, fp16, bf16, int8
EMBEDDING_BITS = (2, 4, 8, 32)  # 32: the tables stay fp32
HOT_ROWS = (256, 512, 1024, 2048, 4096)  # token rows kept at 8 bits, the calibration text's most frequent
TABLE_OPTIONS = {"emb": ("embedding_bits", EMBEDDING_BITS), "hot": ("hot_rows", HOT_ROWS)}
INT4_OPTIONS = {"b": ("block_size", BLOCK_SIZES), "acc": ("accuracy_level", ACCURACY_LEVELS), **TABLE_OPTIONS}
INT4_FLAGS = {"sym": "symmetric", "hqq": "hqq", "gptq": "gptq"}
TABLES_HELP = ("hot256..hot4096 (rows of the calibration text's most frequent tokens kept at 8 bits; needs "
               "--calibration)")
OPTIONS_HELP = ("b16|b32|b64|b128|b256 (block size), sym (MatMul weights without zero points), "
                "hqq (scales and zero points fitted by HQQ), gptq (rounded by GPTQ against the calibration "
                "text's activations; needs --calibration), acc1..acc4 (accuracy level), "
                f"emb2|emb4|emb8|emb32 (embedding bits), {TABLES_HELP}")
STATIC_HELP = f"emb2|emb4 (embedding rows looked up in 2 or 4 bits; default int8), {TABLES_HELP}"


@dataclass(frozen=True)
class Int4Options:
    block_size: int = 32
    symmetric: bool = False
    accuracy_level: int = 4
    embedding_bits: int = 8
    hqq: bool = False  # fit each block's scale and zero point (HQQ) instead of taking its min and max
    gptq: bool = False  # round against the calibration activations (compressor.methods.gptq)
    hot_rows: int = 0  # token rows kept at 8 bits (compressor.methods.quantized_tables)


@dataclass(frozen=True)
class StaticOptions:
    embedding_bits: int = 8  # 8: int8 rows that ONNX Runtime widens to fp32 at load; below, looked up packed
    hot_rows: int = 0


def option_fields(spec: str, name: str, numbered: dict[str, tuple[str, tuple[int, ...]]], flags: dict[str, str],
                  options_help: str) -> dict:
    """`NAME-OPTION-OPTION...` → {field: value}; a bad or repeated option is an InputError."""
    fields: dict = {}
    for option in spec[len(name):].split("-")[1:]:
        match = re.fullmatch(r"([a-z]+)(\d+)", option)
        if option in flags:
            key, value = flags[option], True
        elif match and match.group(1) in numbered:
            key, allowed = numbered[match.group(1)]
            value = int(match.group(2))
            if value not in allowed:
                raise InputError(f"--quantize {spec}: {option!r} is out of range; {name} takes {options_help}")
        else:
            raise InputError(f"--quantize {spec}: unknown option {option!r}; {name} takes {options_help}")
        if key in fields:
            raise InputError(f"--quantize {spec}: the {key.replace('_', ' ')} is given twice")
        fields[key] = value
    if fields.get("hot_rows") and fields.get("embedding_bits", 8) >= 8:
        raise InputError(f"--quantize {spec}: hot rows are kept at 8 bits, so they need emb2 or emb4")
    return fields


def parse_int4(spec: str) -> Int4Options:
    """`int4` or `int4-OPTION-OPTION...`."""
    fields = option_fields(spec, INT4, INT4_OPTIONS, INT4_FLAGS, OPTIONS_HELP)
    if fields.get("symmetric") and fields.get("hqq"):
        raise InputError(f"--quantize {spec}: hqq fits a zero point per block, so it does not combine with sym")
    if fields.get("hqq") and fields.get("gptq"):
        raise InputError(f"--quantize {spec}: hqq and gptq are two ways to round the weights; choose one")
    return Int4Options(**fields)


def parse_static(spec: str) -> StaticOptions:
    """`int8-static` or `int8-static-emb4[-hotN]`: how its embedding tables are stored."""
    numbered = {"emb": ("embedding_bits", (2, 4, 8)), "hot": TABLE_OPTIONS["hot"]}
    return StaticOptions(**option_fields(spec, STATIC, numbered, {}, STATIC_HELP))


def int4_calibrated(spec: str) -> bool:
    options = parse_int4(spec)
    return options.gptq or options.hot_rows > 0


@dataclass(frozen=True)
class Quantizer:
    """One row of the quantizers table: `--quantize NAME`, applied last, to the exported
    fp32 graph. Its implementation is `quantize(source, target, spec, feeds) -> settings`:
    the fp32 file, the file to write, the whole `--quantize` text (`int4-emb4`), and
    calibration batches tokenized as the service will (None unless `needs_calibration`)."""

    module: str  # under compressor.methods
    function: str
    summary: str  # what `--quantize`'s help says of it
    needs_calibration: bool = False
    parse: Callable[[str], object] | None = None  # the whole text → its options; None: it takes no options
    # False: one activation scale per tensor, taken from each run's whole batch, so a text's
    # answer moves with what shares its batch, whatever the runtime: search does not build it
    # unless asked. Every export still measures its batch variation (export.py).
    batch_invariant: bool = True
    # The backend its graphs run fastest on (variant/runtimes.py); the export records it,
    # at its fastest precision this CPU computes, where the backend is installed.
    runtime: str | None = None
    exact: bool = False  # True: the graph stays float and is held to the fp32 export's parity limit
    calibrated_by: Callable[[str], bool] | None = None  # the options that make it need calibration (int4-gptq)

    def calibrated(self, spec: str) -> bool:
        """Whether `--quantize SPEC` needs calibration batches."""
        return self.needs_calibration or (self.calibrated_by is not None and self.calibrated_by(spec))

    def implementation(self) -> Callable[..., dict]:
        """Imports onnxruntime's quantizer."""
        return implementation_of(self.module, self.function)


QUANTIZERS: dict[str, Quantizer] = {
    "int8": Quantizer("quantize", "quantize_int8", "dynamic (answers depend on the batch)", batch_invariant=False),
    STATIC: Quantizer("quantize", "quantize_static_int8", "QDQ, ranges by ONNX Runtime's calibrator; options "
                      "such as int8-static-emb4 store the embedding tables in fewer bits", needs_calibration=True,
                      parse=parse_static),
    "int8-nncf": Quantizer("nncf_int8", "quantize_nncf_int8", "QDQ by NNCF with SmoothQuant, recorded to run on "
                           "OpenVINO", needs_calibration=True, runtime="openvino"),
    "fused": Quantizer("fuse", "fuse_graph", "no rounding: ONNX Runtime's fused transformer operators, for "
                       "ONNX Runtime only", exact=True),
    INT4: Quantizer("int4", "quantize_int4", "4-bit MatMuls, int8 embeddings; options such as int4-emb4-b64-sym, "
                    "see the README; int4-gptq needs --calibration", parse=parse_int4, calibrated_by=int4_calibrated),
}


def quantizer(spec: str) -> Quantizer:
    """The row of `--quantize SPEC`, its options checked: a name, or the name of a
    quantizer that takes options followed by them, joined by '-' (`int4-emb4-sym`)."""
    named = sorted((name for name in QUANTIZERS if spec.startswith(f"{name}-")), key=len)
    row = QUANTIZERS.get(spec) or (QUANTIZERS[named[-1]] if named else None)
    if row is None or (spec not in QUANTIZERS and row.parse is None):
        names = ", ".join(name + ("[-OPTION...]" if q.parse else "") for name, q in QUANTIZERS.items())
        raise InputError(f"unknown --quantize {spec!r}; choose from {names}")
    if row.parse is not None:
        row.parse(spec)
    return row


def parse_layers(text: str) -> tuple[int, ...]:
    """`--drop-layers 1,3` → (1, 3); checked against the model's depth once it is loaded."""
    try:
        layers = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--drop-layers {text!r} must be layer numbers counted from 0, comma-separated, "
                         "e.g. 1,3") from None
    if any(i < 0 for i in layers) or len(set(layers)) < len(layers):
        raise InputError(f"--drop-layers {text!r} must name distinct layers counted from 0")
    return tuple(sorted(layers))


@dataclass(frozen=True)
class Recipe:
    name: str
    method: str = NONE
    ratio: float = 1.0
    quantize: str | None = None
    allocation: str = "uniform"
    layer_repair: str = DEFAULT_REPAIR
    drop_layers: tuple[int, ...] | None = None  # drop-layers: these layers instead of a budget


def parse_method(method: str) -> list[tuple[str, float | None]]:
    """`svd`, `prune+svd-aware`, or with a budget per step: `prune@0.7+embed-ae@0.5`.
    A step without `@R` takes `--ratio`."""
    if method == NONE:
        return []
    steps = []
    for part in method.split("+"):
        name, _, ratio = part.partition("@")
        if name not in METHODS:
            known = ", ".join([NONE, *METHODS])
            raise InputError(f"unknown method {name!r}; choose from {known}, or join several with '+'")
        try:
            value = float(ratio) if ratio else None
        except ValueError:
            raise InputError(f"step {part!r}: the budget after '@' must be a number in (0, 1]") from None
        if value is not None and not 0 < value <= 1:
            raise InputError(f"step {part!r}: the budget after '@' must be in (0, 1]")
        steps.append((name, value))
    names = [name for name, _ in steps]
    if len(set(names)) < len(names):
        raise InputError(f"method {method!r} repeats a step; each method may appear once")
    factorizers = [n for n in names if n in FACTORIZERS]
    if len(factorizers) > 1:
        raise InputError(f"method {method!r} joins {' and '.join(factorizers)}; "
                         "use one method that replaces the encoder Linears per pipeline")
    if "prune" in names and factorizers and names.index(factorizers[0]) < names.index("prune"):
        raise InputError(f"method {method!r}: prune must come before {factorizers[0]} (it needs whole layers)")
    if "drop-layers" in names:
        # Layers go first: prune would spend its budget on them, and the repair refits dense Q, K, V.
        before = [n for n in names[:names.index("drop-layers")] if n == "prune" or n in FACTORIZERS]
        if before:
            raise InputError(f"method {method!r}: drop-layers must come before {before[0]}")
    return steps


def pipeline_name(steps: list[tuple[str, float | None]], quantize: str | None) -> str:
    """What the manifest and metrics call a recipe: `svd+int8`, `prune@0.7+embed-ae@0.5`, `int8`, `none`."""
    parts = [name if ratio is None else f"{name}@{ratio:g}" for name, ratio in steps]
    return "+".join(parts + ([quantize] if quantize else [])) or NONE


def check_recipe(recipe: Recipe) -> list[tuple[str, float | None]]:
    if not VARIANT_NAME.fullmatch(recipe.name):
        raise InputError(f"variant name {recipe.name!r} must be letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    if not 0 < recipe.ratio <= 1:
        raise InputError(f"--ratio must be in (0, 1], got {recipe.ratio}")
    if recipe.quantize is not None:
        quantizer(recipe.quantize)
    if recipe.allocation not in ALLOCATIONS:
        raise InputError(f"unknown --allocation {recipe.allocation!r}; choose from {', '.join(ALLOCATIONS)}")
    steps = parse_method(recipe.method)
    if recipe.allocation != "uniform" and not any(name in ALLOCATABLE for name, _ in steps):
        raise InputError(f"--allocation {recipe.allocation} applies to {', '.join(sorted(ALLOCATABLE))}")
    dropping = [ratio for name, ratio in steps if name == "drop-layers"]
    if (recipe.drop_layers is not None or recipe.layer_repair != DEFAULT_REPAIR) and not dropping:
        raise InputError("--drop-layers and --layer-repair apply to method drop-layers")
    if recipe.drop_layers is not None and dropping[0] is not None:
        raise InputError("drop-layers takes a budget (drop-layers@R) or --drop-layers, not both")
    if recipe.layer_repair not in REPAIRS:
        raise InputError(f"unknown --layer-repair {recipe.layer_repair!r}; choose from {', '.join(REPAIRS)}")
    return steps


def missing_calibration(user: str) -> InputError:
    """`user`: a method name, or an option such as `--allocation sensitivity`."""
    who = user if user.startswith("--") else f"method {user}"
    return InputError(f"{who} needs --calibration (unlabeled text, one per line or a .tsv column)")


def check_calibration(recipe: Recipe, calibration: list | None) -> None:
    """Refuse a recipe whose methods or options need calibration text when there is none."""
    if calibration:
        return
    users = [name for name, _ in parse_method(recipe.method) if name in NEEDS_CALIBRATION]
    users += [option for option, wanted in (
        ("--allocation sensitivity", recipe.allocation == "sensitivity"),
        (f"--quantize {recipe.quantize}", recipe.quantize is not None and quantizer(recipe.quantize).calibrated(recipe.quantize)),
    ) if wanted]
    if users:
        raise missing_calibration(users[0])
