"""`cdt explore`: the state behind the terminal explorer, with no terminal in it.

A *trajectory* is one generation recorded step by step by the shared sampler
(`generate(..., record=True)`); frame 0 is the template, frame k the row after step k's
fill, with the critic's P(wrong) of every token (the policy's own critic pass, or one
extra pass for the frames of non-critic and one-pass policies), the generator's confidence, and the
positions the policy masks again. `--mode step` shows instead the training step's view
of the row (`step.one_step`). Keys change the state; `cdt/terminal.py` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from cdt import calibration_map, checkpoint
from cdt.artifacts import CRITIC_POLARITY
from cdt.checkpoint import Checkpoint
from cdt.data import SEPARATOR
from cdt.device import pick_device
from cdt.errors import UsageError
from cdt.metrics import frame_stats
from cdt.rng import seed_for
from cdt.sampling.heldout import load_heldout
from cdt.sampling.loop import critic_probs, generate
from cdt.sampling.policies import POLICIES
from cdt.sampling.template import prompt_template
from cdt.scaffold.layout import SlotConstraint, record_schema
from cdt.settings import COLOURINGS, ExploreSettings
from cdt.step import one_step
from cdt.vocab import MASK_ID, PAD_ID


@dataclass
class Material:
    """One row to explore: the template, what may change, and the reference when there is one."""

    template: torch.Tensor  # (n,) ids with [MASK] in the region
    protected: torch.Tensor  # (n,) bool
    reference: torch.Tensor | None  # (n,) clean ids (held-out rows), None for a free prompt
    label: str
    constraint: SlotConstraint | None = None  # a scaffolded row's slots, each kept in its type's language


@dataclass
class Frame:
    step: int  # 0 = the template
    tokens: torch.Tensor  # (n,) the row shown (the fill of this step; the template at step 0)
    masked_before: torch.Tensor  # (n,) bool, [MASK] entering this step (all of the region at step 0)
    critic: torch.Tensor | None  # (n,) critic P(wrong); None without a critic or at step 0
    confidence: torch.Tensor | None  # (n,) generator probability of each token
    remask_next: torch.Tensor  # (n,) bool, positions the policy masks again after this step
    judged: torch.Tensor  # (n,) bool, the tokens the statistics cover


def open_explorer(source: str | Path | Checkpoint, settings: ExploreSettings) -> "Explorer":
    """`cdt explore`: the explorer on held-out rows `index` .. `index + n` (or on a free prompt), its first
    trajectory computed. Every bad setting is refused before the model loads."""
    settings.validate()
    ckpt = checkpoint.load(source)
    settings.sampler = settings.sampler.for_checkpoint(ckpt)
    s = settings
    materials = load_materials(ckpt, s.prompt, s.length, s.n, s.mask, s.mask_ratio, s.sampler.seed, s.index)
    # every step is a frame kept in memory: no more steps than the longest region has positions to fill
    s.sampler, notice = s.sampler.capped(max(int((m.template == MASK_ID).sum()) for m in materials))
    return Explorer(ckpt, materials, settings, sample=min(s.index, len(materials) - 1), message=notice or "")


def load_materials(ckpt: Checkpoint, prompt: str | None, length: int, rows: int, mask: str | None,
                   mask_ratio: float, seed: int, index: int = 0) -> list[Material]:
    """A free prompt (one material), or held-out rows 0 .. index + rows (as many as the split has) with a
    region masked; `index` must be one of them."""
    if prompt is not None:
        separator = ckpt.extra.get("mask_region") == "answer"
        ids, protected = prompt_template(ckpt.vocab, prompt, length, ckpt.config.model.block_size, 1, separator)
        return [Material(ids[0], protected[0], None, f"prompt {prompt!r}")]
    held = load_heldout(ckpt, index + rows, mask, mask_ratio, seed, clip=True)
    if index >= len(held):
        raise UsageError(f"--index {index} is past the validation split: it has {len(held)} rows (0-{len(held) - 1})")
    rows = [held.take(torch.tensor([i])) for i in range(len(held))]  # each at its own length, no padding
    return [Material(row.template[0], row.protected[0], row.clean[0], f"held-out row {i} ({held.masking})",
                     _slots(ckpt.vocab, held.records[i]) if held.scaffold else None)
            for i, row in enumerate(rows)]


def _slots(vocab, record) -> SlotConstraint:
    """The constraint `cdt sample --schema` and `cdt eval --scaffold` put on a scaffolded row's slots."""
    return SlotConstraint.of([(record_schema(record), len(vocab.encode(record.prompt + SEPARATOR)))], vocab)


@dataclass
class Explorer:
    ckpt: Checkpoint
    materials: list[Material]
    settings: ExploreSettings
    sample: int = 0
    frame: int = 0
    frames: list[Frame] = field(default_factory=list)
    message: str = ""

    def __post_init__(self):
        self.settings.validate()
        self.model = self.ckpt.build_model(pick_device(self.settings.device))
        self.has_critic = self.model.has_critic
        if not self.has_critic:
            if POLICIES[self.settings.sampler.policy].needs_critic:
                self.settings.sampler.policy = "confidence"
            if self.settings.colouring == "critic":
                self.settings.colouring = "confidence"
            self.message = "this checkpoint has no critic: colouring by generator confidence"
        self.recompute()

    # the trajectory

    @property
    def material(self) -> Material:
        return self.materials[self.sample]

    def row_seed(self) -> int:
        """The same seed `cdt calibrate` gives this row's first generation."""
        return seed_for(self.settings.sampler.seed, self.sample, 0)

    def recompute(self, template: torch.Tensor | None = None, keep: int = 0) -> None:
        """Run the sampler (or the training step) for the current material; frames after `keep` are replaced."""
        m, s = self.material, self.settings
        if s.mode == "step" and m.reference is not None:
            self.frames = [self._step_frame(m)]
        elif template is None:
            self.frames = self._generate(m, m.template, first_step=1)
        else:  # a branch: keep frames 0..keep, then denoise `template` from step keep + 1
            self.frames = self.frames[: keep + 1] + self._generate(m, template, first_step=keep + 1)
        self.frame = min(self.frame, len(self.frames) - 1) if template is None else keep + 1

    def _generate(self, m: Material, template: torch.Tensor, first_step: int) -> list[Frame]:
        cfg = self.settings.sampler
        calibration, warning = calibration_map.for_sampler(self.ckpt.path.parent, cfg)
        self.message = warning or self.message
        gen = generate(self.model, template[None], m.protected[None], cfg, row_seeds=[self.row_seed()], record=True,
                       allow_null=self.ckpt.config.data.emits_null, calibration=calibration, constraint=m.constraint)
        region = ~m.protected & (m.template != PAD_ID)
        frames = [] if first_step > 1 else [Frame(0, template.clone(), template == MASK_ID, None, None,
                                                  torch.zeros_like(region), torch.zeros_like(region))]
        records = gen.steps
        critic = None
        one_pass = POLICIES[cfg.policy].one_pass  # its critic judged the row before the fill, not the frame
        if self.has_critic and records and (records[0].critic_probs is None or one_pass):  # one batched pass
            critic = critic_probs(self.model, torch.cat([r.filled for r in records]))
        for k, r in enumerate(records):
            probs = critic[k] if critic is not None else r.critic_probs[0] if r.critic_probs is not None else None
            frames.append(Frame(first_step + k, r.filled[0], r.masked_before[0], probs, r.confidence[0],
                                r.remasked[0], region.clone()))
        return frames

    def _step_frame(self, m: Material) -> Frame:
        region = ~m.protected & (m.reference != PAD_ID)
        filled, probs, valid, masked = one_step(self.model, m.reference[None], region[None], [self.row_seed()],
                                                self.ckpt, next(self.model.parameters()).device)
        return Frame(1, filled[0], masked[0], probs[0], None, torch.zeros_like(region), valid[0])

    # what a frame says

    def current(self) -> Frame:
        return self.frames[self.frame]

    def stats(self, frame: Frame | None = None) -> dict:
        f = frame or self.current()
        m = self.material
        region = ~m.protected & (m.template != PAD_ID)
        s = self.settings
        out = {"sample": self.sample, "label": m.label, "step": f.step, "steps": s.sampler.steps,
               "masked_before": int((f.masked_before & region).sum()), "region": int(region.sum()),
               "remask_next": int(f.remask_next.sum()), "policy": s.sampler.policy,
               "randomness": s.sampler.randomness, "colouring": s.colouring,
               "critic": self.has_critic,
               # the sampler stops once nothing is masked: a schedule such as power:P can finish before `steps`
               "done": (self.settings.mode != "step" and f.step > 0 and f is self.frames[-1]
                        and not bool((f.tokens == MASK_ID).any()))}
        if m.reference is None or f.step == 0:
            return out
        wrong = (f.tokens != m.reference) & f.judged
        committed = f.judged & ~f.remask_next
        out["unmasking_acc"] = (float(((f.tokens == m.reference) & committed).sum() / committed.sum())
                                if committed.any() else None)
        if f.critic is not None:
            out.update(frame_stats(f.critic[f.judged].numpy(), wrong[f.judged].numpy()))
        else:
            out.update(valid=int(f.judged.sum()), right=int((f.judged & ~wrong).sum()), wrong=int(wrong.sum()))
        return out

    def to_json(self, final_only: bool = False) -> dict:
        """The trajectory's statistics (`--json`): every frame, or the last one."""
        shown = self.frames[-1:] if final_only else self.frames
        return {"checkpoint": str(self.ckpt.path), "settings": self.settings.to_dict(), "sample": self.sample,
                "label": self.material.label, "critic_polarity": CRITIC_POLARITY,
                "frames": [self.stats(f) | {"text": self.ckpt.vocab.decode(f.tokens, mask_char="░")} for f in shown]}

    # keys

    def step(self, delta: int) -> None:
        self.frame = max(0, min(len(self.frames) - 1, self.frame + delta))

    def move_sample(self, delta: int) -> None:
        new = max(0, min(len(self.materials) - 1, self.sample + delta))
        if new != self.sample:
            self.sample, self.frame, self.frames = new, 0, []
            self.recompute()

    def cycle_colouring(self) -> None:
        options = [c for c in COLOURINGS if c != "critic" or self.has_critic]
        self.settings.colouring = options[(options.index(self.settings.colouring) + 1) % len(options)]

    def cycle_policy(self) -> None:
        options = [p for p, pol in POLICIES.items() if self.has_critic or not pol.needs_critic]
        s = self.settings.sampler
        s.policy = options[(options.index(s.policy) + 1) % len(options)]
        self.frames = []
        self.recompute()

    def change_randomness(self, delta: float) -> None:
        s = self.settings.sampler
        s.randomness = round(min(1.0, max(0.0, s.randomness + delta)), 2)
        self.frames = []
        self.recompute()

    def change_remask_pct(self, delta: int) -> None:
        self.settings.remask_pct = min(100, max(10, self.settings.remask_pct + delta))

    def remask_now(self) -> None:
        """Mask again the worst `remask_pct`% of the region by the current colouring's score, and denoise
        from there; the frames after this one are replaced."""
        f = self.current()
        if f.step == 0 or self.settings.mode == "step":
            self.message = "nothing to remask here: step forward first"
            return
        score = f.critic if (self.settings.colouring == "critic" and f.critic is not None) else 1 - f.confidence
        region = ~self.material.protected & (self.material.template != PAD_ID)
        k = max(1, round(self.settings.remask_pct / 100 * int(region.sum())))
        order = score.masked_fill(~region, float("-inf")).argsort(descending=True)[:k]
        template = f.tokens.clone()
        template[order] = MASK_ID
        self.recompute(template=template, keep=self.frame)
        self.message = f"remasked {k} positions ({self.settings.remask_pct}%) at step {f.step}"

    def handle(self, action: str) -> bool:
        """Apply one named action; False means quit."""
        self.message = "" if self.has_critic else self.message
        actions = {
            "next": lambda: self.step(1), "prev": lambda: self.step(-1),
            "next_sample": lambda: self.move_sample(1), "prev_sample": lambda: self.move_sample(-1),
            "remask": self.remask_now, "more": lambda: self.change_remask_pct(10),
            "less": lambda: self.change_remask_pct(-10), "colour": self.cycle_colouring, "policy": self.cycle_policy,
            "rand_up": lambda: self.change_randomness(0.1), "rand_down": lambda: self.change_randomness(-0.1),
        }
        if action == "quit":
            return False
        if action in actions:
            actions[action]()
        return True
