"""Tiny random masked LMs in transformers format, built inside the tests (nothing is downloaded).

Each directory holds what `save_pretrained` writes for a real model: config.json, model.safetensors,
tokenizer.json and tokenizer_config.json, with that family's own special tokens and ids.
"""

from pathlib import Path

import torch


def topics_text(chars: int | None = None) -> str:
    import pydoc_data.topics

    return "\n".join(pydoc_data.topics.topics.values())[:chars]


def _bert_tokenizer(text: str, size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator([text], trainers.WordPieceTrainer(
        vocab_size=size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
    return tok, {"mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]", "unk_token": "[UNK]",
                 "cls_token": "[CLS]"}


def _roberta_tokenizer(text: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok, {"mask_token": "<mask>", "pad_token": "<pad>", "sep_token": "</s>", "eos_token": "</s>",
                 "bos_token": "<s>", "unk_token": "<unk>", "cls_token": "<s>"}


TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)  # BERT-base


def build(path: Path, family: str = "bert", seed: int = 0, shape: dict = TINY, tokens: int = 300,
          text_chars: int | None = 30_000, positions: int = 256) -> Path:
    """A random `family` (bert, roberta, modernbert) masked LM (tiny by default; `shape` sets its widths,
    `tokens` a BERT tokenizer's size, trained on the first `text_chars` of pydoc's topics; rows of up to
    `positions` tokens), saved in `path`."""
    import transformers

    text = topics_text(text_chars)
    tok, specials = _bert_tokenizer(text, tokens) if family == "bert" else _roberta_tokenizer(text)
    size, ids = tok.get_vocab_size(), {k: tok.token_to_id(v) for k, v in specials.items()}
    common = dict(vocab_size=size, pad_token_id=ids["pad_token"], **shape)
    if family == "bert":
        config, cls = transformers.BertConfig(max_position_embeddings=positions, **common), transformers.BertForMaskedLM
    elif family == "roberta":  # positions start after the pad id: two more than the longest row
        config = transformers.RobertaConfig(max_position_embeddings=positions + 2, bos_token_id=ids["bos_token"],
                                            eos_token_id=ids["eos_token"], **common)
        cls = transformers.RobertaForMaskedLM
    else:
        config = transformers.ModernBertConfig(max_position_embeddings=positions, global_attn_every_n_layers=1,
                                               local_attention=16, bos_token_id=ids["bos_token"],
                                               eos_token_id=ids["eos_token"], cls_token_id=ids["cls_token"],
                                               sep_token_id=ids["sep_token"], **common)
        cls = transformers.ModernBertForMaskedLM
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    cls(config).save_pretrained(path)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **specials).save_pretrained(path)
    return path
