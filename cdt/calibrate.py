"""Pass 1 of calibration: one generation per sample, streaming statistics, a per-sample scores file.

Two modes, both through the shared sampler and `build_critic_artifacts`:
- `generate`: each held-out row is infilled by the sampling loop (policy `critic` by
  default); the critic's probability on the *final* filled row is compared with the
  reference, token by token.
- `step`: the training-distribution check; one corruption at random t, one generator
  pass, the fill, one critic pass, statistics over `critic_valid` (what training scores).

Memory stays flat in N: token statistics stream into `Reliability`, sample lines stream
to the scores file, and no trajectory is kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cdt import calibration_map
from cdt.checkpoint import Checkpoint
from cdt.data import Batch
from cdt.device import pick_device
from cdt.errors import CdtError, UsageError
from cdt.metrics import BINNINGS, Reliability, ReliabilityReport, auroc, average_precision
from cdt.noise import EPS, get_schedule
from cdt.rng import RowGenerators, seed_for
from cdt.sampling.heldout import HeldOut, grade, load_heldout
from cdt.sampling.loop import SampleConfig, final_critic_probs, generate
from cdt.scores import ScoreWriter
from cdt.train import diffusion_step

MODES = ("generate", "step")
SCORE_SOURCES = ("critic", "value-head")
SCORES_NAME = "calibration_scores.jsonl"
REPORT_NAME = "calibration_report.json"


@dataclass
class CalibrateSettings:
    n_samples: int = 500
    samples_per_prompt: int = 1
    mode: str = "generate"  # generate | step
    policy: str = "critic"
    steps: int | None = None  # None: the checkpoint's sample.steps
    temperature: float = 1.0
    spread: bool = False  # generations commit no two adjacent new tokens in one step (SampleConfig.spread)
    schedule: str = "linear"  # how many positions stay masked after each step (SampleConfig.schedule)
    masking: str | None = None  # None: answer (toolcalls) or span (text)
    mask_ratio: float = 0.3
    buckets: int = 20
    binning: str = "uniform"
    top: int = 5  # `score` = mean of the top-`top` critic probabilities of a sample's generated tokens
    fit: str | None = None  # temperature | isotonic
    score_source: str = "critic"  # critic: `score` = top-k critic mean; value-head: `score` = the value head's value
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        if self.n_samples < 1:
            raise UsageError("--n-samples must be at least 1")
        if self.samples_per_prompt < 1:
            raise UsageError("--samples-per-prompt must be at least 1")
        if self.mode not in MODES:
            raise UsageError(f"unknown mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.buckets < 1:
            raise UsageError("--buckets must be at least 1")
        if self.binning not in BINNINGS:
            raise UsageError(f"unknown binning {self.binning!r}; choose from {', '.join(BINNINGS)}")
        if self.fit is not None and self.fit not in calibration_map.FITS:
            raise UsageError(f"unknown fit {self.fit!r}; choose from {', '.join(calibration_map.FITS)}")
        if self.score_source not in SCORE_SOURCES:
            raise UsageError(f"unknown score source {self.score_source!r}; choose from {', '.join(SCORE_SOURCES)}")
        if self.top < 1 or self.batch_size < 1:
            raise UsageError("--top and --batch-size must be at least 1")


@dataclass
class CalibrationResult:
    mode: str
    checkpoint: str
    n_samples: int
    n_prompts: int
    policy: str | None
    steps: int | None
    passes: dict  # trunk passes spent in total
    tokens: ReliabilityReport
    samples: dict  # per-sample: n, wrong share, AUROC/AP of `score` against `label`
    fit: dict | None
    scores_path: str
    map_path: str | None
    seconds: float
    warnings: list[str] = field(default_factory=list)
    masking: str = "answer"  # what each held-out row had masked: answer, random or span


def earlier_outputs(run_dir: Path, scores_path: Path) -> dict[str, float]:
    """The files a finished run will replace, {path: modification time}: the scores file, the run's
    report and calibration map. Read before the run; an interrupted run replaces none of them."""
    paths = (Path(scores_path), Path(run_dir) / REPORT_NAME, Path(run_dir) / calibration_map.MAP_NAME)
    return {str(p): p.stat().st_mtime for p in paths if p.is_file()}


def replaced_note(earlier: dict[str, float], written: list[str]) -> str | None:
    """One line naming the earlier files this run replaced (None when it replaced nothing); `written`
    starts with the scores file."""
    gone = [p for p in written if p in earlier]
    if not gone:
        return None
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(min(earlier[p] for p in gone)))
    hint = "; --out PATH writes the scores elsewhere" if written[0] in gone else ""
    return (f"replaced the earlier {', '.join(gone)} (written {when}): the run's report and map always hold "
            f"its latest calibration{hint}")


def sample_scores(probs: np.ndarray, top: int) -> dict:
    """Aggregates of one sample's generated-token critic probabilities.

    The means are exactly rounded sums (math.fsum), so they depend on the values alone: numpy's float32
    mean changed in the 9th digit with where a row sat in its batch (SIMD summation order), which made
    the scores file differ between --batch-size values on an Intel Xeon."""
    if probs.size == 0:
        return {"score": 0.0, "score_max": 0.0, "score_mean": 0.0}
    desc = np.sort(probs)[::-1].tolist()
    return {"score": math.fsum(desc[:top]) / len(desc[:top]), "score_max": desc[0],
            "score_mean": math.fsum(desc) / len(desc)}


def _plan(cfg: CalibrateSettings) -> tuple[int, list[tuple[int, int]]]:
    """(prompts needed, [(prompt, draw)] for every sample): K draws per prompt, N samples in total."""
    k = cfg.samples_per_prompt
    n_prompts = math.ceil(cfg.n_samples / k)
    return n_prompts, [(i // k, i % k) for i in range(cfg.n_samples)]


def calibrate(ckpt: Checkpoint, cfg: CalibrateSettings, scores_path: Path, run_dir: Path | None,
              on_samples=None) -> CalibrationResult:
    """Run pass 1 and write the scores file (and, with run_dir, the calibration map)."""
    cfg.validate()
    t0 = time.perf_counter()
    dev = pick_device(cfg.device)
    model = ckpt.build_model(dev)
    if not model.has_critic:
        raise CdtError("this checkpoint was trained without a critic: there is nothing to calibrate")
    if cfg.score_source == "value-head" and model.value_head is None:
        raise CdtError("--score-source value-head needs a checkpoint with a value head (cdt train --stage critic)")
    n_prompts, plan = _plan(cfg)
    held = load_heldout(ckpt, n_prompts, cfg.masking, cfg.mask_ratio, cfg.seed)
    steps = cfg.steps or ckpt.config.sample.steps
    warnings = []
    calibration = None
    scfg = SampleConfig(steps=steps, policy=cfg.policy, temperature=cfg.temperature, spread=cfg.spread,
                        schedule=cfg.schedule, seed=cfg.seed)
    if cfg.mode == "generate":
        calibration, warning = calibration_map.for_policy(ckpt.path.parent, cfg.policy,
                                                          calibration_map.sampler_info(scfg))
        warnings += [warning] if warning else []
    stats, halves = Reliability(cfg.buckets), (Reliability(cfg.buckets), Reliability(cfg.buckets))
    sample_score, sample_label = [], []
    passes = {"generator": 0, "critic": 0}
    writer = ScoreWriter(scores_path)
    warnings += [writer.recovered] if writer.recovered else []
    model_name = ckpt.path.parent.name
    try:
        for lo in range(0, len(plan), cfg.batch_size):
            chunk = plan[lo : lo + cfg.batch_size]
            rows = torch.tensor([p for p, _ in chunk])
            seeds = [seed_for(cfg.seed, p, d) for p, d in chunk]
            if cfg.mode == "generate":
                gen = generate(model, held.template[rows], held.protected[rows], scfg, row_seeds=seeds,
                               calibration=calibration, allow_null=ckpt.config.data.emits_null)
                probs, extra = final_critic_probs(model, gen)
                tokens, region = gen.tokens, held.region()[rows]
                passes["generator"] += gen.passes["generator"]
                passes["critic"] += gen.passes["critic"] + extra
            else:
                tokens, probs, region, _ = one_step(model, held.clean[rows], held.region()[rows], seeds, ckpt, dev)
                passes["generator"] += 1
                passes["critic"] += 1
            wrong = (tokens != held.clean[rows]) & region
            values = None
            if model.value_head is not None:  # one extra trunk pass: the value of each final row
                with torch.no_grad():
                    values = model.value(model(tokens.to(dev)), region.to(dev)).cpu().tolist()
                passes["value"] = passes.get("value", 0) + 1
            for j, (prompt, draw) in enumerate(chunk):
                sel = region[j]
                p, w = probs[j][sel].double().numpy(), wrong[j][sel].numpy()
                stats.add(p, w)
                halves[(lo + j) % 2].add(p, w)
                record = _record(ckpt, held, prompt, draw, tokens[j], p, w, cfg.top, model_name)
                if values is not None:
                    record["value"] = values[j]
                if cfg.score_source == "value-head":
                    record["score_critic"], record["score"] = record["score"], values[j]
                sample_score.append(-record["score"] if cfg.score_source == "value-head" else record["score"])
                sample_label.append(record["label"])
                writer.write(record)
            if on_samples:
                on_samples(len(chunk))
    except KeyboardInterrupt:
        kept = writer.close(complete=False)
        raise CdtError(f"interrupted; the {writer.count} samples scored so far are in {kept}" if kept
                       else "interrupted before the first sample was scored") from None
    except BaseException:
        writer.close(complete=False)
        raise
    written = writer.close()
    report = stats.report(cfg.binning)
    fit_doc, cmap = None, None
    info = {"samples": len(plan), "tokens": report.n, "checkpoint_step": ckpt.step, "mode": cfg.mode,
            "policy": cfg.policy if cfg.mode == "generate" else None,
            "sampler": calibration_map.sampler_info(scfg) if cfg.mode == "generate" else None,
            "masking": held.masking}
    if cfg.fit:
        fit_doc, cmap = _fit(cfg, halves, info)
    elif report.n:
        cmap = calibration_map.from_buckets(stats.report("uniform").buckets, info | {"kind": "buckets"})
    map_path = str(calibration_map.save(run_dir, cmap)) if run_dir is not None and cmap is not None else None
    y = np.array(sample_label)
    if len(y) and y.min() == y.max():
        warnings.append(f"every sample is labelled {'wrong' if y[0] else 'right'}, so sweep-tau will see one class; "
                        "shorter regions (--mask span --mask-ratio 0.1) or a longer-trained model give both")
    return CalibrationResult(
        mode=cfg.mode, checkpoint=str(ckpt.path), n_samples=len(plan), n_prompts=n_prompts,
        policy=cfg.policy if cfg.mode == "generate" else None, steps=steps if cfg.mode == "generate" else None,
        passes=passes, tokens=report,
        samples={"n": len(y), "wrong": float(y.mean()), "auroc": auroc(sample_score, y),
                 "average_precision": average_precision(sample_score, y),
                 "score": f"mean of the top-{cfg.top} critic probabilities of the sample's generated tokens"
                 if cfg.score_source == "critic" else "the value head's value (higher = more likely right; "
                                                       "AUROC/AP here use its negative)"},
        fit=fit_doc, scores_path=str(written), map_path=map_path, seconds=time.perf_counter() - t0,
        warnings=warnings, masking=held.masking,
    )


@torch.no_grad()
def one_step(model, clean: torch.Tensor, region: torch.Tensor, seeds: list[int], ckpt: Checkpoint, dev):
    """The training step's view of held-out rows: corrupt each row's region at a seeded t ~ U(0, 1),
    one generator pass, the fill, one critic pass (no loss).
    Returns (filled rows, critic P(wrong), critic_valid, the positions the corruption masked).
    `calibrate --mode step` and `explore --mode step` both call this."""
    t = torch.tensor([float(np.random.default_rng(s).uniform(EPS, 1.0)) for s in seeds])  # t ~ U(0, 1) per row
    out = diffusion_step(model, Batch(clean, region), t, get_schedule(ckpt.config.train.schedule),
                         ckpt.config.train, "answer", RowGenerators(seeds), dev, ckpt.config.data.emits_null)
    art = out.artifacts
    probs = torch.sigmoid(out.critic_logits).cpu()
    return art.critic_input.cpu(), probs, art.critic_valid.cpu(), art.filled.cpu()


def _record(ckpt, held: HeldOut, prompt: int, draw: int, tokens, probs, wrong, top: int, model_name: str) -> dict:
    where = (~held.protected[prompt]).nonzero().flatten()
    lo, hi = int(where.min()), int(where.max()) + 1
    vocab = ckpt.vocab
    record = {"id": f"{prompt}-{draw}", "group": prompt, **sample_scores(probs, top),
              "label": int(bool(wrong.any())), "wrong_tokens": int(wrong.sum()), "tokens": int(len(wrong))}
    if held.records is not None:
        check = grade(vocab, held.records[prompt], tokens, held.scaffold)
        bad_fields = [k for k, ok in check.fields.items() if not ok]
        record.update(json_valid=check.valid_json, name_ok=check.name_ok, wrong_fields=bad_fields)
        record["label"] = int(record["label"] or not check.valid_json or not check.name_ok or bool(bad_fields))
    record.update(text=vocab.decode(tokens[lo:hi]), reference=vocab.decode(held.clean[prompt][lo:hi]),
                  model=model_name, context=[vocab.decode(tokens[:lo]), vocab.decode(tokens[hi:])])
    return record


def _fit(cfg: CalibrateSettings, halves, info: dict):
    """Fit on the even samples, measure ECE before and after on the odd ones."""
    fit_half, test_half = halves
    p, y, w = fit_half.weighted_points()
    cmap = calibration_map.fit(cfg.fit, p, y, w, info | {"kind": cfg.fit, "fitted_on": "even samples"})
    tp, ty, tw = test_half.weighted_points()
    before, after = Reliability(cfg.buckets), Reliability(cfg.buckets)
    before.add(np.repeat(tp, tw), np.repeat(ty, tw))
    after.add(np.repeat(cmap(tp), tw), np.repeat(ty, tw))
    rb, ra = before.report(cfg.binning), after.report(cfg.binning)
    doc = {"kind": cfg.fit, "fitted_on": "even-numbered samples", "evaluated_on": "odd-numbered samples",
           "ece_before": rb.ece, "ece_after": ra.ece, "brier_before": rb.brier, "brier_after": ra.brier,
           "temperature": cmap.temperature}
    return doc, cmap
