"""Where a MODEL argument's files are: a local folder, or a snapshot in the Hugging Face cache.

A MODEL that is not a local path but reads as a Hub repo id, `ORG/NAME` or `NAME` with an
optional `@REVISION` (branch, tag or commit), resolves through huggingface_hub's cache:
the files a classifier loads from are downloaded there unless HF_HUB_OFFLINE is set.
Code in a repo is never fetched; compressor.checkpoint never runs remote code either.

This runs before torch loads (compressor.inputs), so bad input still fails at once:
huggingface_hub takes about 0.2 s to import, and only names that are not folders import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from compressor.errors import InputError

# Files from which transformers builds a fast tokenizer (tokenizer.json, or a vocabulary it converts).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
# What loading a classifier reads besides the weights: no *.py, no other frameworks' files.
CONFIG_FILES = ("config.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                "merges.txt", *TOKENIZER_FILES)
# Weights as transformers names them, whole or sharded. Pickles only where a repo has no
# safetensors: they are larger to fetch and slower to load (safely: weights_only=True).
SAFETENSORS = ("model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors")
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin")

# A repo id as huggingface_hub.utils.validate_repo_id accepts it, then an optional revision.
_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
HUB_NAME = re.compile(rf"(?P<repo_id>(?:{_PART}/)?{_PART})(?:@(?P<revision>[\w.-][\w./-]*))?", re.ASCII)


@dataclass(frozen=True)
class Checkpoint:
    folder: Path  # where transformers loads from
    name: str  # the manifest's base_model: the folder as given, or ORG/NAME@COMMIT


def hub_name(spec: str) -> re.Match[str] | None:
    """The repo id and revision `spec` names, or None for a local path (which wins)."""
    if Path(spec).exists():
        return None
    match = HUB_NAME.fullmatch(spec)
    if match is None or "--" in match["repo_id"] or ".." in spec or match["repo_id"].endswith(".git"):
        return None  # the Hub refuses these ids: the user meant a path
    return match


def resolve(spec: str) -> Checkpoint:
    """The checkpoint `spec` names; a Hub name is fetched into (or found in) the cache."""
    match = hub_name(spec)
    if match is None:
        return Checkpoint(Path(spec), str(Path(spec)))
    repo_id, revision = match["repo_id"], match["revision"]
    folder = snapshot(spec, repo_id, revision, CONFIG_FILES + SAFETENSORS)
    if not any(folder.glob("*.safetensors")):
        folder = snapshot(spec, repo_id, revision, PICKLES)
    # The snapshot folder is named by its commit: the record pins exactly what was compressed.
    return Checkpoint(folder, f"{repo_id}@{folder.name}")


def snapshot(spec: str, repo_id: str, revision: str | None, patterns: tuple[str, ...]) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(patterns),
                                      local_files_only=constants.HF_HUB_OFFLINE))
    except RevisionNotFoundError as exc:
        raise InputError(f"{spec}: {repo_id} on the Hugging Face Hub has no revision {revision}") from exc
    except RepositoryNotFoundError as exc:  # also gated repos, and private ones without a token
        raise InputError(f"{spec} is neither a local folder nor a model on the Hugging Face Hub that you can read "
                         "(for a private or gated one, log in with `hf auth login`)") from exc
    except LocalEntryNotFoundError as exc:
        raise InputError(not_cached(spec, repo_id, revision)) from exc
    except (OSError, ValueError) as exc:  # a download that broke off, a full disk, ...
        raise InputError(f"cannot download {spec}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from exc


def not_cached(spec: str, repo_id: str, revision: str | None) -> str:
    from huggingface_hub import constants

    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"the Hub at {constants.ENDPOINT} cannot be reached"
    command = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
    return (f"{spec} is not a local folder, nor in the Hugging Face cache ({constants.HF_HUB_CACHE}), and {why}; "
            f"download it where the network allows with `{command}`, or pass a local folder")
