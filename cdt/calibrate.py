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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cdt import bootstrap, calibration_map, checkpoint
from cdt.artifacts import CRITIC_POLARITY
from cdt.checkpoint import Checkpoint
from cdt.device import pick_device
from cdt.errors import CdtError
from cdt.grading import grade
from cdt.metrics import (
    FINE_BINS,
    Reliability,
    ReliabilityReport,
    auroc,
    average_precision,
)
from cdt.rng import seed_for
from cdt.rundir import (
    MAP_NAME,
    REPORT_NAME,
    SCORES_NAME,
    OutputLock,
    check_output,
    write_json,
)
from cdt.sampling.heldout import HeldOut, load_heldout
from cdt.sampling.infill import infill
from cdt.sampling.loop import final_critic_probs
from cdt.scores import ScoreWriter
from cdt.settings import CalibrateSettings
from cdt.step import one_step


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
    settings: dict = field(default_factory=dict)  # CalibrateSettings.to_dict(), as run
    report_path: str | None = None  # the run's calibration_report.json (`run`)
    plot: str | None = None  # the reliability diagram (`run --plot`)
    replaced: list[str] = field(default_factory=list)  # earlier files this run replaced
    intervals: dict | None = None  # bootstrap intervals (prompts resampled) of the estimated figures

    def to_json(self) -> dict:
        return asdict(self) | {"critic_polarity": CRITIC_POLARITY}


def run(source: str | Path | Checkpoint, cfg: CalibrateSettings, out: Path | None = None, plot: Path | None = None,
        on_samples=None, overwrite: bool = False) -> CalibrationResult:
    """`cdt calibrate`: the scores file (`out`, default RUN/calibration_scores.jsonl), the run's report
    and calibration map, and the reliability diagram with `plot`. Every output is checked before the
    model loads: an explicit `out` or `plot` that exists is refused unless `overwrite`; the default scores
    file, report and map are replaced, and a warning names what a finished run replaced (an interrupted run
    replaces none of them). A second run writing the same files meanwhile is refused."""
    cfg.validate()
    if plot is not None:
        from cdt.plot import require_matplotlib

        require_matplotlib(plot)
        check_output(plot, "--plot", overwrite=overwrite)
    ckpt = checkpoint.load(source)
    run_dir = ckpt.path.parent
    scores_path = Path(out or run_dir / SCORES_NAME)
    check_output(scores_path, "--out", overwrite=overwrite if out else None)
    check_output(run_dir / REPORT_NAME, "--checkpoint")  # the run's report and map
    earlier = earlier_outputs(run_dir, scores_path)
    with OutputLock(scores_path, "--out"), OutputLock(run_dir / REPORT_NAME, None):
        result = calibrate(ckpt, cfg, scores_path, run_dir, on_samples=on_samples)
        result.report_path = str(run_dir / REPORT_NAME)
        result.plot = None if plot is None else str(plot)
        written = [p for p in (result.scores_path, result.report_path, result.map_path) if p]
        result.replaced = [p for p in written if p in earlier]
        result.warnings += [note] if (note := replaced_note(earlier, written, out is None)) else []
        write_json(Path(result.report_path), result.to_json())
    if plot is not None:
        from cdt.plot import reliability_diagram

        reliability_diagram(result.tokens, plot, f"critic reliability · {run_dir.name}")
    return result


def earlier_outputs(run_dir: Path, scores_path: Path) -> dict[str, float]:
    """The files a finished run will replace, {path: modification time}: the scores file, the run's
    report and calibration map. Read before the run; an interrupted run replaces none of them."""
    paths = (Path(scores_path), Path(run_dir) / REPORT_NAME, Path(run_dir) / MAP_NAME)
    return {str(p): p.stat().st_mtime for p in paths if p.is_file()}


def replaced_note(earlier: dict[str, float], written: list[str], default_out: bool = True) -> str | None:
    """One line naming the earlier files this run replaced (None when it replaced nothing); `written`
    starts with the scores file, which went to its default place when `default_out`."""
    gone = [p for p in written if p in earlier]
    if not gone:
        return None
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(min(earlier[p] for p in gone)))
    hint = "; --out PATH writes the scores elsewhere" if written[0] in gone and default_out else ""
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


def _batches(cfg: CalibrateSettings):
    """Each batch's samples as [(prompt, draw)], in order: K draws per prompt, N samples in all, computed
    batch by batch (a huge N costs no memory before its first batch)."""
    k = cfg.samples_per_prompt
    for lo in range(0, cfg.n_samples, cfg.batch_size):
        yield [(i // k, i % k) for i in range(lo, min(lo + cfg.batch_size, cfg.n_samples))]


def calibrate(ckpt: Checkpoint, cfg: CalibrateSettings, scores_path: Path, run_dir: Path | None,
              on_samples=None) -> CalibrationResult:
    """Run pass 1 and write the scores file (and, with run_dir, the calibration map)."""
    cfg.validate()
    t0 = time.perf_counter()
    if cfg.mode == "generate":
        cfg.sampler.for_checkpoint(ckpt).check_fits(ckpt.config.model.block_size)
    n_prompts = math.ceil(cfg.n_samples / cfg.samples_per_prompt)
    held = load_heldout(ckpt, n_prompts, cfg.mask, cfg.mask_ratio, cfg.sampler.seed)  # enough rows? before the model
    dev = pick_device(cfg.device)
    model = ckpt.build_model(dev)
    if not model.has_critic:
        raise CdtError("this checkpoint was trained without a critic: there is nothing to calibrate")
    if cfg.score_source == "value-head" and model.value_head is None:
        raise CdtError("--score-source value-head needs a checkpoint with a value head (cdt train --stage value)")
    scfg, seed = cfg.sampler.for_checkpoint(ckpt), cfg.sampler.seed
    warnings = []
    calibration = None
    if cfg.mode == "generate":
        calibration, warning = calibration_map.for_sampler(ckpt.path.parent, scfg)
        warnings += [warning] if warning else []
    stats = Reliability(cfg.buckets)
    folds = [Reliability(cfg.buckets) for _ in range(min(FOLDS, n_prompts))] if cfg.fit else []
    kept = Tokens() if cfg.bootstrap else None  # per-token values the intervals resample
    sample_score, sample_label, sample_group = [], [], []
    passes = {"generator": 0, "critic": 0}
    writer = ScoreWriter(scores_path)
    warnings += [writer.recovered] if writer.recovered else []
    model_name = ckpt.path.parent.name
    seeded = ((torch.tensor([p for p, _ in chunk]), [seed_for(seed, p, d) for p, d in chunk])
              for chunk in _batches(cfg))
    if cfg.mode == "generate":
        outputs = (_generated(model, done) for done in infill(model, held, seeded, scfg, calibration=calibration,
                                                              allow_null=ckpt.config.data.emits_null, trim=False))
    else:
        outputs = (_stepped(model, held, rows, seeds, ckpt, dev) for rows, seeds in seeded)
    try:
        # the batches are a function of the settings alone: walked again, they name each batch's samples
        for n_done, (chunk, (part, tokens, probs, region, spent)) in enumerate(zip(_batches(cfg), outputs)):
            for k, v in spent.items():
                passes[k] += v
            wrong = (tokens != part.clean) & region
            values = None
            if model.value_head is not None:  # one extra trunk pass: the value of each final row
                with torch.no_grad():
                    values = model.value(model(tokens.to(dev)), region.to(dev)).cpu().tolist()
                passes["value"] = passes.get("value", 0) + 1
            for j, (prompt, draw) in enumerate(chunk):
                sel = region[j]
                p, w = probs[j][sel].double().numpy(), wrong[j][sel].numpy()
                stats.add(p, w)
                if folds:
                    folds[prompt % len(folds)].add(p, w)
                if kept is not None:
                    kept.add(p, w, prompt)
                record = _record(ckpt, held, part, j, prompt, draw, tokens[j], p, w, cfg.top, model_name)
                if values is not None:
                    record["value"] = values[j]
                if cfg.score_source == "value-head":
                    record["score_critic"], record["score"] = record["score"], values[j]
                sample_score.append(-record["score"] if cfg.score_source == "value-head" else record["score"])
                sample_label.append(record["label"])
                sample_group.append(prompt)
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
    info = {"samples": cfg.n_samples, "tokens": report.n, "checkpoint_step": ckpt.step, "mode": cfg.mode,
            "policy": scfg.policy if cfg.mode == "generate" else None,
            "sampler": calibration_map.sampler_info(scfg) if cfg.mode == "generate" else None,
            "masking": held.masking}
    maps = None
    if cfg.fit:
        fit_doc, cmap, maps = _cross_fit(cfg, stats, folds, info)
    elif report.n:
        cmap = calibration_map.from_buckets(stats.report("uniform").buckets, info | {"kind": "buckets"})
    map_path = str(calibration_map.save(run_dir, cmap)) if run_dir is not None and cmap is not None else None
    y = np.array(sample_label)
    intervals = None
    if kept is not None:
        intervals = _intervals(cfg, kept, report, np.array(sample_score), y, np.array(sample_group), maps)
    if len(y) and y.min() == y.max():
        warnings.append(f"every sample is labelled {'wrong' if y[0] else 'right'}, so sweep-tau will see one class; "
                        "shorter regions (--mask span --mask-ratio 0.1) or a longer-trained model give both")
    generate = cfg.mode == "generate"
    return CalibrationResult(
        mode=cfg.mode, checkpoint=str(ckpt.path), n_samples=cfg.n_samples, n_prompts=n_prompts,
        policy=scfg.policy if generate else None, steps=scfg.steps if generate else None,
        passes=passes, tokens=report,
        samples={"n": len(y), "wrong": float(y.mean()), "auroc": auroc(sample_score, y),
                 "average_precision": average_precision(sample_score, y),
                 "score": f"mean of the top-{cfg.top} critic probabilities of the sample's generated tokens"
                 if cfg.score_source == "critic" else "the value head's value (higher = more likely right; "
                                                       "AUROC/AP here use its negative)"},
        fit=fit_doc, scores_path=str(written), map_path=map_path, seconds=time.perf_counter() - t0,
        warnings=warnings, masking=held.masking, settings=cfg.to_dict(), intervals=intervals,
    )


def _generated(model, done):
    """(rows, final tokens, their critic P(wrong), the positions judged, passes spent) of an infilled batch:
    every position of the generated region is judged."""
    probs, extra = final_critic_probs(model, done.generation)
    spent = done.generation.passes
    return (done.part, done.generation.tokens, probs, done.part.region(),
            {"generator": spent["generator"], "critic": spent["critic"] + extra})


def _stepped(model, held: HeldOut, rows: torch.Tensor, seeds: list[int], ckpt: Checkpoint, dev):
    """The same for `--mode step`: each row through one training-style step, judged where training
    scores the critic (`critic_valid`)."""
    part = held.take(rows, trim=False)
    tokens, probs, valid, _ = one_step(model, part.clean, part.region(), seeds, ckpt, dev)
    return part, tokens, probs, valid, {"generator": 1, "critic": 1}


def _record(ckpt, held: HeldOut, part: HeldOut, j: int, prompt: int, draw: int, tokens, probs, wrong, top: int,
            model_name: str) -> dict:
    """Sample j of a batch (`part`; held-out row `prompt`, draw `draw`) as a line of the scores file."""
    where = (~part.protected[j]).nonzero().flatten()
    lo, hi = int(where.min()), int(where.max()) + 1
    vocab = ckpt.vocab
    record = {"id": f"{prompt}-{draw}", "group": prompt, **sample_scores(probs, top),
              "label": int(bool(wrong.any())), "wrong_tokens": int(wrong.sum()), "tokens": int(len(wrong))}
    if held.records is not None:
        check = grade(vocab, held.records[prompt], tokens, held.scaffold)
        bad_fields = [k for k, ok in check.fields.items() if not ok]
        record.update(json_valid=check.valid_json, name_ok=check.name_ok, wrong_fields=bad_fields)
        record["label"] = int(record["label"] or not check.valid_json or not check.name_ok or bool(bad_fields))
    record.update(text=vocab.decode(tokens[lo:hi]), reference=vocab.decode(part.clean[j][lo:hi]),
                  model=model_name, context=[vocab.decode(tokens[:lo]), vocab.decode(tokens[hi:])])
    return record


FOLDS = 5  # cross-fitting folds, by prompt


class Tokens:
    """Each generated token's critic probability, whether it was wrong, and its prompt: what the bootstrap
    resamples (17 bytes a token, kept only when --bootstrap > 0)."""

    def __init__(self):
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, probs: np.ndarray, wrong: np.ndarray, prompt: int) -> None:
        self.parts.append((probs, wrong.astype(bool), np.full(len(probs), prompt, np.int64)))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.parts:
            return np.zeros(0), np.zeros(0, bool), np.zeros(0, np.int64)
        return tuple(np.concatenate(a) for a in zip(*self.parts))


def _cross_fit(cfg: CalibrateSettings, stats: Reliability, folds: list[Reliability], info: dict):
    """(report, the map fitted on every sample, the map of each fold). Each fold's tokens are mapped by a
    map fitted on the other folds, so the ECE after is never measured on the data its map saw."""
    if len(folds) < 2:
        raise CdtError("--fit cross-fits over prompts and needs at least 2 of them (raise --n-samples)")
    after, maps = Reliability(cfg.buckets), []
    for k, held_out in enumerate(folds):
        rest = Reliability(cfg.buckets)
        for j, fold in enumerate(folds):
            if j != k:
                rest.merge(fold)
        try:
            fitted = calibration_map.fit(cfg.fit, *rest.weighted_points())
        except CdtError as e:
            raise CdtError(f"cross-fitting fold {k + 1} of {len(folds)} (fitted without prompts numbered {k} mod "
                           f"{len(folds)}): {e}") from None
        p, y, w = held_out.weighted_points()
        after.add(np.repeat(fitted(p), w), np.repeat(y, w))
        maps.append(fitted)
    where = f"cross-fitted over {len(folds)} folds of prompts (prompt number mod {len(folds)})"
    cmap = calibration_map.fit(cfg.fit, *stats.weighted_points(),
                               info=info | {"kind": cfg.fit, "fitted_on": "every sample", "evaluated": where})
    rb, ra = stats.report(cfg.binning), after.report(cfg.binning)
    doc = {"kind": cfg.fit, "folds": len(folds), "fitted_on": "every sample (the map written)",
           "evaluated_on": f"{where}: each fold's tokens mapped by a map fitted without them",
           "ece_before": rb.ece, "ece_after": ra.ece, "brier_before": rb.brier, "brier_after": ra.brier,
           "temperature": cmap.temperature, "bias": cmap.bias if cfg.fit == "platt" else None}
    return doc, cmap, maps


def _intervals(cfg: CalibrateSettings, kept: Tokens, report: ReliabilityReport, sample_score: np.ndarray,
               sample_label: np.ndarray, sample_group: np.ndarray, maps: list | None) -> dict:
    """Bootstrap intervals of the token and sample figures (and, with --fit, of the cross-fitted ECE after):
    each replicate draws prompts with replacement and weighs every token and sample by its prompt's draws."""
    p, wrong, prompt = kept.arrays()
    y = wrong.astype(np.float64)
    fine = np.clip(np.ceil(p * FINE_BINS).astype(np.int64) - 1, 0, FINE_BINS - 1)  # ties as `Reliability` has them
    tokens, samples = bootstrap.Ranked.of(fine, y), bootstrap.Ranked.of(sample_score, sample_label)
    edges = (np.linspace(0, 1, cfg.buckets + 1) if cfg.binning == "uniform"
             else np.array([b.lo for b in report.buckets] + [1.0]))
    mapped = None
    if maps:
        mapped = np.empty_like(p)
        for k, m in enumerate(maps):
            sel = prompt % len(maps) == k
            mapped[sel] = m(p[sel])
    n_groups = int(max(prompt.max(initial=-1), sample_group.max(initial=-1))) + 1

    def statistic(draws):
        w, ws = draws[prompt], draws[sample_group]
        (auc, ap), (sample_auc, sample_ap) = tokens.ranking(w), samples.ranking(ws)
        out = {"ece": bootstrap.ece(p, y, w, edges), "brier": bootstrap.brier(p, y, w), "auroc": auc,
               "average_precision": ap, "sample_auroc": sample_auc, "sample_average_precision": sample_ap}
        if mapped is not None:
            out |= {"ece_after": bootstrap.ece(mapped, y, w, edges), "brier_after": bootstrap.brier(mapped, y, w)}
        return out

    found = bootstrap.intervals(statistic, None, n_groups, cfg.bootstrap, cfg.sampler.seed, cfg.confidence)
    return {"level": cfg.confidence, "resamples": cfg.bootstrap,
            "resampled": "held-out rows (a row's samples stay together)", **found}
