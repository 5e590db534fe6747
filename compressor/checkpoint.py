"""Load a classifier: a local Hugging Face checkpoint folder, a Hub model (compressor.hub), or the
embedded `default`."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from compressor.errors import InputError
from compressor.inputs import DEFAULT, check_checkpoint
from variant.heads import Task, task_of

# Positions some architectures reserve (RoBERTa offsets positions by padding_idx + 1).
POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2}


@dataclass
class Classifier:
    model: PreTrainedModel  # a *ForSequenceClassification in eval mode, fp32
    tokenizer: PreTrainedTokenizerFast
    base_model: str  # what the manifest calls it: a folder path, ORG/NAME@COMMIT or "default"
    max_length: int

    @property
    def task(self) -> Task:
        return model_task(self.model)

    @property
    def labels(self) -> list[str]:
        id2label = self.model.config.id2label
        return [str(id2label[i]) for i in range(len(id2label))]


def model_task(model: PreTrainedModel) -> Task:
    """What the head computes, from the config transformers trained it with."""
    return task_of(model.config.problem_type, model.config.num_labels)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def position_limit(model: PreTrainedModel) -> int:
    return model.config.max_position_embeddings - POSITION_OFFSET.get(model.config.model_type, 0)


def checked_length(model: PreTrainedModel, max_length: int | None, default: int) -> int:
    if max_length is None:
        return default
    if not 1 <= max_length <= position_limit(model):
        raise InputError(f"--max-length must be between 1 and {position_limit(model)} for this model, got {max_length}")
    return max_length


def load_classifier(spec: str, max_length: int | None = None) -> Classifier:
    if spec == DEFAULT:
        from compressor import default_model

        model, tokenizer = default_model.build_model()
        return Classifier(model, tokenizer, DEFAULT, checked_length(model, max_length, default_model.MAX_LENGTH))
    checkpoint = check_checkpoint(spec)
    folder = checkpoint.folder  # a Hub name's snapshot in the cache, fetched by check_checkpoint
    try:
        # Only the folder's own files, no code from it, and weights through safetensors or
        # torch.load(weights_only=True): a checkpoint cannot run code on this machine.
        tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True, local_files_only=True, trust_remote_code=False)
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, dtype=torch.float32, attn_implementation="eager", local_files_only=True,
            trust_remote_code=False, weights_only=True)
    except (OSError, ValueError, pickle.UnpicklingError) as exc:
        raise InputError(f"cannot load {spec}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise InputError(f"{spec} has no fast tokenizer; the service needs tokenizer.json")
    model.eval()
    default = min(position_limit(model), tokenizer.model_max_length, 512)
    return Classifier(model, tokenizer, checkpoint.name, checked_length(model, max_length, default))
