"""`cdt export --format hf`: a checkpoint as a directory `transformers` loads, so a model leaves cdt.

What is written (weights as safetensors, never pickles):
- a run on a Hugging Face backbone: the backbone itself (`save_pretrained`: config.json,
  model.safetensors) and its tokenizer, loadable with `AutoModelForMaskedLM.from_pretrained(DIR)`
  and `AutoTokenizer.from_pretrained(DIR)` as any masked LM; cdt's critic (and value) head beside it
  in `cdt_heads.safetensors`;
- a run on cdt's own trunk: config.json naming `modeling_cdt.py` (a copy of `cdt/hf_modeling.py`)
  in its `auto_map`, model.safetensors, and the tokenizer (a character tokenizer written in the
  `tokenizers` format); it loads with `trust_remote_code=True` where cdt is installed;
- `cdt.json` either way: what the critic reads and its polarity (higher logit = more likely wrong),
  the special tokens, and the checkpoint it came from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from cdt import checkpoint
from cdt.errors import UsageError
from cdt.tokenizer import Bpe, need_hf
from cdt.vocab import FALLBACK, MASK, NULL, PAD, Vocab

FORMATS = ("hf",)


@dataclass
class ExportResult:
    out: str
    checkpoint: str
    trunk: str  # "own" or the backbone's model_type
    files: list[str]
    load: str  # the Python line that loads it


def export(source, out: Path, fmt: str = "hf") -> ExportResult:
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not an empty directory; give a new one")
    ckpt = checkpoint.load(source)
    need_hf("cdt export --format hf")
    from cdt.backbone import need_transformers

    need_transformers()
    model = ckpt.build_model("cpu")
    out.mkdir(parents=True, exist_ok=True)
    heads = {}
    if ckpt.config.model.backbone != "own":
        model.hf.save_pretrained(out, safe_serialization=True)
        heads = {k: v.contiguous() for k, v in model.state_dict().items() if k.startswith(("critic.", "value_head."))}
        trunk, load = ckpt.backbone["model_type"], f"AutoModelForMaskedLM.from_pretrained({str(out)!r})"
    else:
        _own_trunk(ckpt, model, out)
        trunk = "own"
        load = f"AutoModelForMaskedLM.from_pretrained({str(out)!r}, trust_remote_code=True)"
    if heads:
        from safetensors.torch import save_file

        save_file(heads, str(out / "cdt_heads.safetensors"))
    _tokenizer(ckpt.vocab, out)
    (out / "cdt.json").write_text(json.dumps(_card(ckpt, trunk, bool(heads)), indent=2) + "\n", encoding="utf-8")
    return ExportResult(str(out), str(ckpt.path), trunk, sorted(p.name for p in out.iterdir()), load)


def _own_trunk(ckpt, model, out: Path) -> None:
    from cdt.hf_modeling import CdtConfig, CdtForMaskedLM

    renumbered = isinstance(ckpt.vocab, Bpe) and (ckpt.vocab.inner_of != range(len(ckpt.vocab))).any()
    config = CdtConfig(cdt_model=asdict(ckpt.config.model), vocab_size=len(ckpt.vocab),
                       cdt_ids=ckpt.vocab.cdt_of.tolist() if renumbered else None)
    config.auto_map = {"AutoConfig": "modeling_cdt.CdtConfig", "AutoModelForMaskedLM": "modeling_cdt.CdtForMaskedLM"}
    config.architectures = ["CdtForMaskedLM"]
    wrapped = CdtForMaskedLM(config)
    wrapped.cdt.load_state_dict(model.state_dict())
    wrapped.save_pretrained(out, safe_serialization=True)
    (out / "modeling_cdt.py").write_text(resources.files("cdt").joinpath("hf_modeling.py").read_text("utf-8"),
                                         encoding="utf-8")


def _tokenizer(vocab, out: Path) -> None:
    """tokenizer.json (+ tokenizer_config.json) in the ids the exported model reads."""
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    if isinstance(vocab, Bpe):
        inner, mask, pad = vocab._inner, vocab.mask_token, vocab.pad_token
    else:
        inner, mask, pad = char_tokenizer(vocab), MASK, PAD
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer.from_str(inner.to_str()),
                                   mask_token=mask, pad_token=pad)
    fast.save_pretrained(out)


def char_tokenizer(vocab: Vocab):
    """cdt's character vocabulary as a `tokenizers` tokenizer with the same ids: one token per character."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    ids = {MASK: vocab.mask_id, PAD: vocab.pad_id, NULL: vocab.null_id}
    ids.update({c: i for i, c in enumerate(vocab.chars, start=len(ids))})
    unknown = FALLBACK if vocab.fallback is not None else MASK  # cdt refuses unknown characters; [MASK] says so
    tok = Tokenizer(models.WordLevel(ids, unk_token=unknown))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([MASK, PAD, NULL])
    return tok


def _card(ckpt, trunk: str, heads: bool) -> dict:
    vocab = ckpt.vocab
    return {
        "format": "cdt-export", "version": 1, "checkpoint": str(ckpt.path), "step": ckpt.step, "trunk": trunk,
        "critic": {"head": ckpt.config.model.critic, "reads": "the trunk's last hidden states (hidden_states[-1])",
                   "polarity": "higher logit = more likely wrong; P(wrong) = sigmoid(logit)",
                   "weights": "cdt_heads.safetensors" if heads else "model.safetensors (cdt.critic.*)"},
        "tokens": {"mask": getattr(vocab, "mask_token", MASK), "pad": getattr(vocab, "pad_token", PAD),
                   "null": getattr(vocab, "null_token", NULL)},
        "block_size": ckpt.config.model.block_size,
    }
