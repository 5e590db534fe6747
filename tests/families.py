"""Tiny randomly initialised checkpoints of the encoder families beyond conftest's three:
ELECTRA, XLM-RoBERTa, DeBERTa-v2 (the layout of DeBERTa-v3 checkpoints) and ModernBERT.

Each tokenizer is trained on conftest's CORPUS with the `tokenizers` library and saved
through PreTrainedTokenizerFast, shaped like the family's real one: ELECTRA's WordPiece
with token types; XLM-R's and DeBERTa-v3's sentencepiece-style Unigram (Metaspace
pre-tokenizer) with their own specials and templates; ModernBERT's byte-level BPE with
BERT's specials and no token types. The configs are as small as conftest's (hidden 32,
2 layers, 4 heads) but keep what makes each family itself: ELECTRA's narrower embeddings
with their projection, DeBERTa-v3's bucketed relative attention with shared position
projections and no absolute positions, ModernBERT's alternating global and sliding-window
attention (a window shorter than the sentences) with mean pooling.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from conftest import CORPUS, LABELS, TINY, byte_level_bpe, wordpiece_tokenizer
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerFast

TINY_FAMILIES = ("electra", "xlm-roberta", "deberta-v2", "modernbert")
MAX_POSITIONS = 64
# Ten times transformers' default: at 0.02 a post-norm model's logits barely depend on the
# input (a spread of 1e-4 over the parity sentences), so a parity of 1e-4 would prove nothing.
INIT = 0.2


def unigram(specials: list[str], single: str, pair: str) -> Tokenizer:
    """A sentencepiece-style Unigram tokenizer (▁ marks a word start) with a template post-processor."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    unk = next(s for s in specials if "unk" in s.lower())
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=200, special_tokens=specials, unk_token=unk))
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(s, tok.token_to_id(s)) for s in specials if s in single + pair])
    return tok


def xlm_roberta_tokenizer() -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    tok = unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
                                   model_input_names=["input_ids", "attention_mask"])


def deberta_tokenizer() -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    tok = unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], single="[CLS] $A [SEP]",
                  pair="[CLS] $A [SEP] $B:1 [SEP]:1")
    # DeBERTa-v3's tokenizer hands out token_type_ids even though its model has no type embeddings.
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def modernbert_tokenizer() -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    tok = byte_level_bpe(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"])
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "attention_mask"])


def tiny_family_classifier(family: str) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    import torch
    from transformers import (
        DebertaV2Config,
        DebertaV2ForSequenceClassification,
        ElectraConfig,
        ElectraForSequenceClassification,
        ModernBertConfig,
        ModernBertForSequenceClassification,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    torch.manual_seed(0)
    common = {"id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}, "initializer_range": INIT}
    if family == "electra":
        tokenizer = wordpiece_tokenizer(with_types=True)
        config = ElectraConfig(vocab_size=len(tokenizer), embedding_size=16, max_position_embeddings=MAX_POSITIONS,
                               **TINY, **common)
        return ElectraForSequenceClassification(config), tokenizer
    if family == "xlm-roberta":
        tokenizer = xlm_roberta_tokenizer()
        config = XLMRobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=MAX_POSITIONS + 2,
                                  type_vocab_size=1, pad_token_id=tokenizer.pad_token_id,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  **TINY, **common)
        return XLMRobertaForSequenceClassification(config), tokenizer
    if family == "deberta-v2":
        tokenizer = deberta_tokenizer()
        # DeBERTa-v3-base's settings, with 16 position buckets: the sentences reach the log-spaced ones.
        config = DebertaV2Config(vocab_size=len(tokenizer), max_position_embeddings=MAX_POSITIONS, type_vocab_size=0,
                                 relative_attention=True, position_biased_input=False, pos_att_type=["p2c", "c2p"],
                                 norm_rel_ebd="layer_norm", share_att_key=True, position_buckets=16,
                                 max_relative_positions=-1, hidden_act="gelu", pad_token_id=tokenizer.pad_token_id,
                                 **TINY, **common)
        return DebertaV2ForSequenceClassification(config), tokenizer
    if family == "modernbert":
        tokenizer = modernbert_tokenizer()
        ids = {f"{name}_token_id": tokenizer.convert_tokens_to_ids(token) for name, token in (
            ("pad", "[PAD]"), ("cls", "[CLS]"), ("sep", "[SEP]"), ("bos", "[CLS]"), ("eos", "[SEP]"))}
        config = ModernBertConfig(vocab_size=len(tokenizer), max_position_embeddings=MAX_POSITIONS,
                                  global_attn_every_n_layers=2, local_attention=8, classifier_pooling="mean",
                                  reference_compile=False, **ids, **TINY, **common)
        return ModernBertForSequenceClassification(config), tokenizer
    raise ValueError(family)


def save_family_checkpoint(family: str, folder: Path) -> Path:
    model, tokenizer = tiny_family_classifier(family)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
