"""Bidirectional transformer trunk with a tied generator head and a token critic head.

Shape key: b batch, n sequence, d model width, h heads, v vocabulary.
One trunk serves both passes: the generator pass on the noisy row and the critic
pass on the filled row. [PAD] keys are masked by `trunk` itself, so training and
inference attend identically (no training-only mask exists).
"""

from __future__ import annotations

import math
import torch
import torch.nn as nn
import torch.nn.functional as F

from cdt.config import ModelConfig
from cdt.vocab import MASK_ID, PAD_ID, emittable


# helpers


def rotary_table(n: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """(n, head_dim/2) complex rotations e^{i * pos * freq} for rotary positions (RoFormer)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)
    return torch.polar(torch.ones(n, head_dim // 2), torch.outer(torch.arange(n).float(), inv_freq))


def apply_rotary(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """x: (b, h, n, hd); rotate channel pairs (2i, 2i+1) by position. One complex multiply:
    about 3x faster on CPU than the split-halves form with four real multiplies."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * rot).flatten(-2).to(x.dtype)


_NGRAM_MULT, _NGRAM_MOD = 40503, 2_147_483_629  # h stays below 2^31, so h * mult fits int64


def _hash_step(h: torch.Tensor, prev: torch.Tensor, k: int) -> torch.Tensor:
    """Extend the hashes `h` by the character ids + 1 `prev`, k characters back (n-grams and words)."""
    return (h * _NGRAM_MULT + prev * (k * 7919 + 1)) % _NGRAM_MOD


def ngram_ids(ids: torch.Tensor, n_max: int, buckets: int) -> torch.Tensor:
    """(b, n) character ids -> (b, n, n_max - 1) row indices into the n-gram table: for each size k in
    2..n_max, a hash of the k characters ending at each position (positions before the row read as -1),
    offset by (k - 2) * buckets so each size has its own rows."""
    out, h = [], ids + 1
    for k in range(2, n_max + 1):
        prev = F.pad(ids, (k - 1, 0), value=-1)[:, : ids.shape[1]] + 1  # the character k - 1 to the left
        h = _hash_step(h, prev, k)
        out.append(h % buckets + (k - 2) * buckets)
    return torch.stack(out, -1)


def word_ids(ids: torch.Tensor, word_char: torch.Tensor, buckets: int, max_len: int = 16) -> torch.Tensor:
    """(b, n) character ids -> (b, n) rows of the word table: a hash of the word so far at each position,
    the run of word characters (`word_char`, (v,) bool) that ends there, up to `max_len` of them.
    [MASK], [PAD] and any other character end a run; callers zero the rows of non-word positions."""
    n = ids.shape[1]
    inside = word_char[ids]
    h, alive = ids + 1, inside
    for k in range(1, max_len):
        alive = alive & F.pad(inside, (k, 0), value=False)[:, :n]  # still inside the word k characters back
        prev = F.pad(ids, (k, 0), value=-1)[:, :n] + 1
        h = torch.where(alive, _hash_step(h, prev, k), h)
    return h % buckets


# modules


def critic_head(cfg: ModelConfig) -> nn.Module | None:
    """Per-token P(wrong) logits from the trunk's states (cdt's trunk and a Hugging Face backbone alike)."""
    if cfg.critic == "linear":
        return nn.Linear(cfg.d_model, 1)
    if cfg.critic == "mlp":
        return nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(), nn.Dropout(cfg.critic_dropout),
                             nn.Linear(cfg.d_model, 1))
    return None


def value_head(cfg: ModelConfig) -> nn.Module | None:
    """Sequence-level value: pooled answer states -> hidden/8 -> hidden/16 -> 1; higher = more likely right."""
    if not cfg.value_head:
        return None
    d, a, b = cfg.d_model, max(1, cfg.d_model // 8), max(1, cfg.d_model // 16)
    return nn.Sequential(nn.Linear(d, a), nn.GELU(), nn.Dropout(cfg.value_dropout), nn.Linear(a, b), nn.GELU(),
                         nn.Dropout(cfg.value_dropout), nn.Linear(b, 1))


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout
        self.qk_norm = cfg.qk_norm

    def forward(self, x, key_mask, rotary):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if self.qk_norm:  # every query and key at unit RMS: a score depends on their angle, not on their growth
            q, k = F.rms_norm(q, (q.shape[-1],)), F.rms_norm(k, (k.shape[-1],))
        if rotary is not None:
            q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, key_mask, rotary):
        x = x + self.drop(self.attn(self.ln1(x), key_mask, rotary))
        return x + self.drop(self.mlp(self.ln2(x)))


class DiffusionLM(nn.Module):
    """Trunk + generator head (tied to the embedding) + optional critic head.

    Critic polarity: a higher critic logit means the token is more likely wrong;
    sigmoid(logit) is the critic probability of "wrong".
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.d_model % cfg.n_heads or (cfg.d_model // cfg.n_heads) % 2:
            raise ValueError("d_model must split into heads of even width")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.block_size, cfg.d_model) if cfg.positions == "learned" else None
        # hashed character n-grams (as in the Byte Latent Transformer's hash embeddings): a word's identity
        # is in the input of its last characters, instead of being assembled by attention first
        self.ngram = nn.Embedding((cfg.ngram - 1) * cfg.ngram_buckets, cfg.d_model) if cfg.ngram >= 2 else None
        # hashed whole words: "seven" and "eleven" share every n-gram up to 4 ("even"), not their word row.
        # `word_char` says which characters make words; `cdt train` sets it from the corpus vocabulary and
        # checkpoints keep it (a buffer, not a parameter: it is never trained).
        self.words = nn.Embedding(cfg.word_buckets, cfg.d_model) if cfg.word_buckets > 0 else None
        if self.words is not None:
            self.register_buffer("word_char", torch.zeros(cfg.vocab_size, dtype=torch.bool))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.critic, self.value_head = critic_head(cfg), value_head(cfg)
        # copy head (pointer-generator): one attention over the row's visible characters whose weights,
        # summed per character, form a second distribution; a per-position gate mixes the two
        self.copy = nn.ModuleDict({"q": nn.Linear(cfg.d_model, cfg.d_model, bias=False),
                                   "k": nn.Linear(cfg.d_model, cfg.d_model, bias=False),
                                   "gate": nn.Linear(cfg.d_model, 1)}) if cfg.copy else None
        self.reset_buffers()
        self.apply(self._init)
        for name, p in self.named_parameters():  # scaled residual projections (GPT-2)
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    def reset_buffers(self) -> None:
        """(Re)compute the tables no checkpoint stores, on the device of the weights (a loader that builds
        the model on the meta device, as transformers does, calls this once the weights are in)."""
        cfg, device = self.cfg, self.embed.weight.device
        self.register_buffer("rotary", rotary_table(cfg.block_size, cfg.d_model // cfg.n_heads).to(device),
                             persistent=False)
        if cfg.copy:
            self.register_buffer("copy_rotary", rotary_table(cfg.block_size, cfg.d_model).to(device), persistent=False)
        # the generator can never propose [MASK] or [PAD] ([NULL] stays possible for scaffolds)
        self.register_buffer("never_emit", ~emittable(cfg.vocab_size, allow_null=True, device=device),
                             persistent=False)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    @property
    def has_critic(self) -> bool:
        return self.critic is not None

    def trunk(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (b, n) -> hidden states (b, n, d). [PAD] positions are never attended to."""
        b, n = ids.shape
        if n > self.cfg.block_size:
            raise ValueError(f"sequence of {n} exceeds block size {self.cfg.block_size}")
        x = self.embed(ids)
        if self.ngram is not None:
            x = x + self.ngram(ngram_ids(ids, self.cfg.ngram, self.cfg.ngram_buckets)).sum(2)
        if self.words is not None:
            inside = self.word_char[ids][..., None].to(x.dtype)
            x = x + self.words(word_ids(ids, self.word_char, self.cfg.word_buckets)) * inside
        if self.pos is not None:
            x = x + self.pos.weight[:n]
        pad = ids == PAD_ID
        # (b, 1, 1, n) True = may attend; None lets SDPA take its fastest kernel when nothing is padded.
        # Under torch.compile the mask is always passed: testing the data would break the graph.
        key_mask = (~pad)[:, None, None, :] if torch.compiler.is_compiling() or bool(pad.any()) else None
        rotary = self.rotary[:n] if self.pos is None else None
        for block in self.blocks:
            x = block(x, key_mask, rotary)
        return self.ln_f(x)

    def generator_logits(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(b, n, d) states of the row ids (b, n) -> (b, n, v) logits; [MASK] and [PAD] get -inf.

        With a copy head the result is log-probabilities (still valid logits: softmax returns them)."""
        logits = h @ self.embed.weight.t()
        if self.copy is not None:
            logits = self._mix_copy(h.float(), ids, logits.float())
        return logits.masked_fill(self.never_emit, float("-inf"))

    def _mix_copy(self, h: torch.Tensor, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log(g * p_vocab + (1 - g) * p_copy), p_copy(c) = the pointer's weight on visible positions holding c.

        Kept finite everywhere (the caller masks the specials), so no NaN reaches the gradients; a row with
        nothing visible gets the vocabulary head alone."""
        b, n, d = h.shape
        rot = self.copy_rotary[:n]
        q = apply_rotary(self.copy["q"](h)[:, None], rot)[:, 0]
        k = apply_rotary(self.copy["k"](h)[:, None], rot)[:, 0]
        source = (ids != MASK_ID) & (ids != PAD_ID)  # (b, n) positions whose character is known
        scores = (q @ k.transpose(1, 2)) / math.sqrt(d)
        scores = scores.masked_fill(~source[:, None, :], torch.finfo(scores.dtype).min)
        p_copy = torch.softmax(scores, -1) @ F.one_hot(ids, self.cfg.vocab_size).to(h.dtype)  # (b, n, v)
        vocab = logits.masked_fill(self.never_emit, -1e9).log_softmax(-1)
        gate = self.copy["gate"](h)  # (b, n, 1) logit of the vocabulary head's weight
        mixed = torch.logaddexp(F.logsigmoid(gate) + vocab, F.logsigmoid(-gate) + torch.log(p_copy.clamp_min(1e-30)))
        return torch.where(source.any(1)[:, None, None], mixed, vocab)

    def critic_logits(self, h: torch.Tensor) -> torch.Tensor:
        """(b, n, d) -> (b, n); higher = more likely wrong."""
        if self.critic is None:
            raise RuntimeError("this model was built without a critic head")
        return self.critic(h).squeeze(-1)

    def value(self, h: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """(b, n, d) states and (b, n) bool answer positions -> (b,) value; higher = more likely right."""
        if self.value_head is None:
            raise RuntimeError("this model was built without a value head")
        return self.value_head(self.pool(h, region)).squeeze(-1)

    @staticmethod
    def pool(h: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """(b, n, d) -> (b, d): the mean state over each row's answer positions."""
        w = region.to(h.dtype)[..., None]
        return (h * w).sum(1) / w.sum(1).clamp_min(1.0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.trunk(ids)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed.weight.numel() + (self.pos.weight.numel() if self.pos is not None else 0)
            n -= self.ngram.weight.numel() if self.ngram is not None else 0
            n -= self.words.weight.numel() if self.words is not None else 0
        return n
