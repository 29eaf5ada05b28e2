"""Training loop: generator NELBO + alpha(step) * critic BCE on one shared trunk.

    cdt train                                  # small preset on the embedded toolcalls corpus
    cdt train --preset tiny --max-iters 50     # seconds, for a smoke test
    cdt train --out runs/x --resume            # continue exactly where runs/x stopped

Everything random is drawn from generators seeded by (seed, rank, step), so a resumed
run replays the same batches, masks and critic fills as an uninterrupted one. Rank 0
alone writes files; other ranks only compute (torchrun support builds on this).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cdt import backbone, checkpoint, distributed
from cdt.config import RunConfig, TrainConfig, to_yaml
from cdt.data import Batch, Corpus, has_records, load_corpus
from cdt.device import pick_device
from cdt.distributed import dist_info
from cdt.ema import WeightAverage
from cdt.errors import CdtError, UsageError
from cdt.grading import value_spans
from cdt.losses import diffusion_nelbo
from cdt.metrics import auroc
from cdt.model import DiffusionLM
from cdt.noise import get_schedule, sample_t
from cdt.optim import make_optimizer, set_learning_rates, state_kind
from cdt.rng import seed_for
from cdt.rundir import (CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME, MetricsLog, OutputLock, Reporter, StopRequest,
                        check_output, write_text)
from cdt.step import TrainStep, diffusion_step
from cdt.vocab import MASK_ID, PAD_ID

VALUE_RECORDS = 64  # held-out records probed for value accuracy at each evaluation
# what the next-commands text suggests: a request of the embedded corpus and the call that answers it
EXAMPLE_PROMPT = "Set an alarm for 7:30 pm called gym"
EXAMPLE_ANSWER = '{"name": "set_alarm", "arguments": {"time": "19:30", "label": "gym"}}'


# helpers


def critic_alpha(step: int, cfg: TrainConfig) -> float:
    """Critic loss weight: alpha_start until warmup_start, linear to alpha_end at warmup_end."""
    span = cfg.critic_warmup_end - cfg.critic_warmup_start
    frac = 1.0 if span <= 0 else min(max((step - cfg.critic_warmup_start) / span, 0.0), 1.0)
    return cfg.critic_alpha_start + frac * (cfg.critic_alpha_end - cfg.critic_alpha_start)


def mask_region(cfg: RunConfig, corpus: Corpus) -> str:
    if cfg.data.mask_region != "auto":
        return cfg.data.mask_region
    return "answer" if corpus.records else "all"


# evaluation


@torch.no_grad()
def evaluate(model: DiffusionLM, corpus: Corpus, cfg: RunConfig, device: torch.device, rollouts: bool = True) -> dict:
    """Validation figures, generator and critic kept apart (never mixed into one loss).

    val_bpc: generator NELBO in bits per maskable character (a subword tokenizer's bits per token divided by
    the validation split's characters per token; val_bits_per_token then says the unconverted figure).
    masked_acc: greedy accuracy on masked characters at t ~ U(0, 1) (answer characters on toolcalls, every character of a text file).
    value_acc: see `value_accuracy`. critic_auroc: over every non-[PAD] maskable (answer) position
    of the filled row; critic_auroc_masked: over the filled positions only (harder).
    critic_rollout_auroc / _ece: the critic on the sampler's own generations (`rollout_figures`; skipped with
    rollouts=False, before the critic trains).
    """
    was_training = model.training
    model.eval()
    schedule, region = get_schedule(cfg.train.noise_schedule), mask_region(cfg, corpus)
    gen = torch.Generator().manual_seed(seed_for(cfg.train.seed, 7919))  # same masks at every evaluation
    nelbo, n_tok, correct, n_masked = 0.0, 0, 0, 0
    probs, wrong, probs_m, wrong_m = [], [], [], []
    for batch in corpus.val_batches(cfg.train.eval_rows, 64):
        t = sample_t(len(batch.ids), gen, cfg.train.antithetic)
        out = diffusion_step(model, batch, t, schedule, cfg.train, region, gen, device, cfg.data.emits_null)
        tokens = int(out.maskable.sum())
        clean = batch.ids.to(device)
        # always the NELBO, whatever weighting training uses, so bits/char stay comparable
        nelbo += float(diffusion_nelbo(out.logits, clean, out.masked, schedule.weight(t), tokens)) * tokens
        n_tok += tokens
        correct += int((out.logits.argmax(-1) == clean)[out.masked].sum())
        n_masked += int(out.masked.sum())
        if out.critic_logits is not None:
            p, seen = torch.sigmoid(out.critic_logits), out.artifacts.critic_input != MASK_ID  # one-pass rows hide some
            every, filled = out.maskable & seen, out.masked & seen
            probs.append(p[every].cpu()), wrong.append(out.artifacts.critic_target[every].cpu())
            probs_m.append(p[filled].cpu()), wrong_m.append(out.artifacts.critic_target[filled].cpu())
    values = (value_accuracy(model, corpus.records[:VALUE_RECORDS], corpus.vocab, device, scaffold=cfg.data.scaffold)
              if corpus.records else None)
    rollouts = rollout_figures(model, corpus, cfg, device) if probs and rollouts else {}
    model.train(was_training)
    bits_per_token = nelbo / max(n_tok, 1) / math.log(2)
    result = {
        "value_acc": values,
        "val_nelbo": nelbo / max(n_tok, 1),
        # per token; a subword corpus converts with its validation split's characters per token
        "val_bpc": bits_per_token / corpus.info.get("chars_per_token", 1.0),
        **({"val_bits_per_token": bits_per_token} if "chars_per_token" in corpus.info else {}),
        "masked_acc": correct / max(n_masked, 1),
        "masked_tokens": n_masked,
    }
    if probs:
        p, y = torch.cat(probs).numpy(), torch.cat(wrong).numpy()
        pm, ym = torch.cat(probs_m).numpy(), torch.cat(wrong_m).numpy()
        result.update({
            "critic_auroc": auroc(p, y),
            "critic_auroc_masked": auroc(pm, ym),
            "critic_p_wrong": float(p[y == 1].mean()) if (y == 1).any() else None,
            "critic_p_right": float(p[y == 0].mean()) if (y == 0).any() else None,
            "fill_error_rate": float(ym.mean()) if ym.size else None,
            **rollouts,
        })
    return result


ROLLOUT_BUCKETS = 20


def rollout_figures(model: DiffusionLM, corpus: Corpus, cfg: RunConfig, device: torch.device) -> dict:
    """The critic on the sampler's own generations, as `cdt calibrate` measures it by default: the first
    `train.rollout_eval_rows` validation rows with calibrate's region masked (the answer; a 30% span of
    text), filled by the sampling loop (policy critic, the run's sample.steps), judged on the final rows.
    One-step fills are incoherent and easy to catch; these are the states the critic must judge in use."""
    from cdt.metrics import Reliability
    from cdt.sampling.loop import final_critic_probs, generate
    from cdt.sampling.template import heldout_templates
    from cdt.settings import SampleConfig

    n = min(cfg.train.rollout_eval_rows, len(corpus.val)) if not corpus.val.window else cfg.train.rollout_eval_rows
    if n <= 0:
        return {}
    clean, template, protected = heldout_templates(corpus, n, "answer" if corpus.records else "span")
    sampler = SampleConfig(policy="critic", steps=cfg.sample.steps)
    out = generate(model, template.to(device), protected.to(device), sampler,
                   row_seeds=[seed_for(sampler.seed, i, 0) for i in range(n)], allow_null=cfg.data.emits_null)
    probs, _ = final_critic_probs(model, out)
    region = ~protected & (clean != PAD_ID)
    p, y = probs[region].double().numpy(), (out.tokens != clean)[region].numpy()
    rel = Reliability(ROLLOUT_BUCKETS)
    rel.add(p, y)
    ece = rel.report().ece
    return {"critic_rollout_auroc": auroc(p, y), "critic_rollout_ece": None if ece is None else float(ece),
            "rollout_error_rate": float(y.mean()) if y.size else None, "rollout_rows": n}


def value_accuracy(model: DiffusionLM, records: list, vocab, device: torch.device, batch_size: int = 128,
                   scaffold: bool = False) -> float | None:
    """Share of argument values restored exactly when each value alone is masked (greedy).

    The rest of the answer stays visible, so structure cannot carry the score: this asks
    whether the generator copies and transforms values from the request.
    """
    rows, spans = [], []
    for r in records:
        ids, value_spans_ = value_spans(r, vocab, scaffold)
        for span in value_spans_:
            rows.append(ids)
            spans.append(span)
    if not rows:
        return None
    right = 0
    for lo in range(0, len(rows), batch_size):
        chunk, chunk_spans = rows[lo : lo + batch_size], spans[lo : lo + batch_size]
        width = max(len(x) for x in chunk)
        clean = torch.full((len(chunk), width), PAD_ID, dtype=torch.long)
        for i, x in enumerate(chunk):
            clean[i, : len(x)] = torch.tensor(x)
        noisy = clean.clone()
        for i, (a, b) in enumerate(chunk_spans):
            noisy[i, a:b] = MASK_ID
        noisy = noisy.to(device)
        pred = model.generator_logits(model(noisy), noisy).argmax(-1).cpu()
        right += sum(bool(torch.equal(pred[i, a:b], clean[i, a:b])) for i, (a, b) in enumerate(chunk_spans))
    return right / len(rows)


# the loop


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    step: int
    max_iters: int
    resumed_from: int
    interrupted: str | None  # signal name when stopped early
    elapsed_s: float
    tokens_per_s: float
    params: int
    data: dict
    final_eval: dict = field(default_factory=dict)
    mask_region: str = "answer"  # what was masked and graded: "answer" (after the request) or "all" (whole rows)
    next_commands: list[str] = field(default_factory=list)  # what to try with this run, as shell lines


class NonFiniteLoss(CdtError):
    """The loss turned NaN or infinite: the weights have diverged, so that state is never saved. The message
    says what the run kept and what to run next."""

    def __init__(self, value: float, step: int, rank: int, tc, saved: int, out: Path):
        rates = [("train.lr", tc.lr)] + ([("train.muon_lr", tc.muon_lr)] if tc.optimizer == "muon" else [])
        now = ", ".join(f"{k} {v:g}" for k, v in rates)
        lower = " ".join(f"--set {k}={v / 10:g}" for k, v in rates)
        kept = (f"{out} keeps the checkpoint of step {saved}; continue it with lower rates: cdt train --out {out} "
                f"--resume {lower}" if saved else
                f"nothing was saved; run the same command again with lower rates, adding {lower}")
        super().__init__(f"loss became {value} at step {step}{f' on rank {rank}' if rank else ''} ({now}); {kept}")


def _check_resume(ckpt: checkpoint.Checkpoint, cfg: RunConfig, corpus: Corpus) -> None:
    if ckpt.vocab != corpus.vocab:
        raise CdtError(f"cannot resume {ckpt.path}: it was trained with another vocabulary "
                       f"({len(ckpt.vocab)} vs {len(corpus.vocab)} symbols); check --data")
    old, new = ckpt.config.model, cfg.model
    diff = [f"{k} {getattr(old, k)} vs {getattr(new, k)}" for k in vars(new) if getattr(old, k) != getattr(new, k)]
    if diff:
        raise CdtError(f"cannot resume {ckpt.path}: different architecture ({'; '.join(diff)})")
    saved = state_kind(ckpt.optimizer_state)
    if saved is not None and saved != cfg.train.optimizer:
        raise CdtError(f"cannot resume {ckpt.path}: it was trained with train.optimizer={saved}, not "
                       f"{cfg.train.optimizer}; pass --set train.optimizer={saved}")


def train(cfg: RunConfig, out: Path, *, resume: bool = False, reporter: Reporter | None = None,
          stop: StopRequest | None = None) -> TrainResult:
    """Train into run directory `out`; `stop` lets a caller end the run early (it saves first). `out` is
    checked before any work, and held for the run: a second run into it meanwhile is refused."""
    dist = dist_info()
    check_output(out, "--out", directory=True)
    with OutputLock(out, "--out") if dist.is_main else contextlib.nullcontext():
        return _train(cfg, Path(out), dist, resume, reporter or Reporter(), stop)


def _train(cfg: RunConfig, out: Path, dist, resume: bool, reporter: Reporter, stop: StopRequest | None) -> TrainResult:
    if cfg.train.grad_accum < 1:
        raise UsageError("train.grad_accum must be at least 1")
    device = distributed.setup(dist, pick_device(cfg.train.device))
    ckpt_path = out / CHECKPOINT_NAME
    if not resume and ckpt_path.exists():
        raise CdtError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    ckpt = checkpoint.load(out) if resume else None  # raises when there is nothing to resume
    if ckpt is not None and ckpt.optimizer_state is None:
        what = "a value-stage run (cdt train --stage value)" if ckpt.config.model.value_head else "weights alone"
        raise CdtError(f"cannot resume {ckpt.path}: it holds {what}, without the optimizer state a generator run "
                       "continues from; train into a new --out instead")
    if cfg.model.backbone == "own" and (cfg.model.train_trunk or cfg.model.trust_remote_code):
        raise UsageError("--train-trunk and --trust-remote-code need --backbone hf:PATH (cdt's own trunk always trains)")
    if cfg.model.backbone != "own" and not cfg.model.train_trunk:  # nothing but cdt's heads learns: the critic
        t = cfg.train  # trains at full weight from the first step (the generator-only phase would do nothing)
        t.critic_alpha_start, t.critic_warmup_start, t.critic_warmup_end = t.critic_alpha_end, 0, 0
    if cfg.model.backbone != "own" and ckpt is None:  # a backbone reads text with its own tokenizer
        if cfg.data.tokenizer != "char":
            raise UsageError("--backbone brings its own tokenizer; leave --tokenizer out")
        cfg.data.tokenizer = str(backbone.backbone_dir(cfg.model.backbone) / "tokenizer.json")
        tokens = backbone.tokenizer_of(cfg.model.backbone)
    else:
        tokens = ckpt.vocab if ckpt is not None and cfg.data.tokenizer != "char" else cfg.data.tokenizer  # its own
    corpus = load_corpus(cfg.data.source, cfg.model.block_size, cfg.data.n_records, cfg.data.seed, cfg.data.scaffold,
                         cfg.data.answer_tail, tokens)
    cfg.model.vocab_size = len(corpus.vocab)
    if ckpt is not None:
        _check_resume(ckpt, cfg, corpus)

    torch.manual_seed(cfg.train.seed)
    if ckpt is None and cfg.model.backbone != "own":
        model = backbone.pretrained(cfg.model, corpus.vocab).to(device)
    elif ckpt is None:
        model = DiffusionLM(cfg.model).to(device)
        if model.words is not None:  # which characters make words (a resumed run loads them from its state)
            model.word_char.copy_(corpus.vocab.word_characters())
    else:
        model = ckpt.build_model(device, raw=True)  # the weights training left, not their moving average
    model.train()
    step_module = distributed.wrap(TrainStep(model), dist, device)  # both trunk passes in one (DDP) forward
    eager = step_module
    if cfg.train.compile:
        step_module = torch.compile(step_module)
    optimizer = make_optimizer(model, cfg.train)
    start = 0
    if ckpt is not None:
        try:
            optimizer.load_state_dict(ckpt.optimizer_state)
        except (ValueError, KeyError) as e:  # parameter groups of another shape, e.g. an earlier cdt's split
            raise CdtError(f"cannot resume {ckpt.path}: its optimizer state was saved with other parameter "
                           f"groups than this version of cdt uses ({e}); train a new run") from None
        start = ckpt.step
        if start >= cfg.train.max_iters:
            raise UsageError(f"{out} already reached step {start}; pass --max-iters above {start} to continue")

    schedule, region = get_schedule(cfg.train.noise_schedule), mask_region(cfg, corpus)
    tc = cfg.train
    average = WeightAverage(model, tc.ema) if tc.ema > 0 else None
    if average is not None and ckpt is not None and ckpt.train_model_state is not None:
        average.load(ckpt.model_state, updates=start)
    averaged = average.applied if average is not None else contextlib.nullcontext
    log = None
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / CONFIG_NAME, to_yaml(cfg))
        log = MetricsLog(out / METRICS_NAME, keep_until=start if resume else None)
    extra = {"data": corpus.info, "mask_region": region}

    def save(step: int, final_eval: dict | None = None) -> None:
        if dist.is_main:
            raw = None if average is None else {k: v.detach().clone() for k, v in model.state_dict().items()}
            with averaged():
                checkpoint.save(ckpt_path, model=model, config=cfg, vocab=corpus.vocab, step=step,
                                optimizer=optimizer, extra={**extra, "eval": final_eval or {}}, train_state=raw)

    stop = stop or StopRequest()
    previous = stop.install()
    reporter.on_start({"run_dir": str(out), "device": str(device), "params": model.num_params(),
                       "start": start, "max_iters": tc.max_iters, "data": corpus.info, "region": region,
                       "world_size": dist.world_size, "grad_accum": tc.grad_accum,
                       "global_batch": tc.batch_size * dist.world_size * tc.grad_accum})
    model.train()
    step, saved, last_eval = start, start, {}
    tokens, t0 = 0, time.perf_counter()
    window_tokens, window_t0 = 0, t0
    finished = False  # the loop ended normally on this rank (not by an exception)
    try:
        while step < tc.max_iters and not distributed.any_rank(stop.requested, dist, device):
            torch.manual_seed(seed_for(tc.seed, dist.rank, step, 1))  # dropout, if any
            lr, alpha = set_learning_rates(optimizer, step, tc), critic_alpha(step, tc)
            # a critic weight of 0 skips the critic's pass (DDP keeps it: every parameter must take part)
            critic_pass = alpha > 0 or dist.active
            optimizer.zero_grad(set_to_none=True)
            n = 0
            for micro in range(tc.grad_accum):  # gradients sync only on the last micro-step
                gen = torch.Generator().manual_seed(seed_for(tc.seed, dist.rank, step) if tc.grad_accum == 1
                                                    else seed_for(tc.seed, dist.rank, step, 2, micro))
                batch = corpus.batch(step * tc.grad_accum + micro, tc.batch_size, tc.seed, dist.rank,
                                     dist.world_size, tc.length_groups)
                t = sample_t(len(batch.ids), gen, tc.antithetic)
                sync = micro == tc.grad_accum - 1 or not dist.active
                if device.type == "cuda":
                    batch = Batch(batch.ids.pin_memory(), batch.maskable.pin_memory())  # non-blocking copies
                with contextlib.nullcontext() if sync else eager.no_sync():
                    try:
                        loss, out_step = step_module(batch, t, schedule, tc, region, gen, device, cfg.data.emits_null,
                                                     alpha, critic_pass)
                    except Exception as e:  # torch.compile fails at the first call, not at compile()
                        if step_module is eager:
                            raise
                        reporter.on_message(f"torch.compile failed ({type(e).__name__}: "
                                            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); "
                                            "continuing without --compile")
                        step_module = eager
                        loss, out_step = step_module(batch, t, schedule, tc, region, gen, device, cfg.data.emits_null,
                                                     alpha, critic_pass)
                    if not math.isfinite(loss_value := float(loss.detach())):
                        raise NonFiniteLoss(loss_value, step + 1, dist.rank, tc, saved, out)
                    if loss.requires_grad:  # not while a frozen backbone's critic waits for its start
                        (loss / tc.grad_accum).backward()
                n += int((batch.ids != PAD_ID).sum())
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            if average is not None:
                average.update()
            step += 1
            tokens += n
            window_tokens += n
            if step % tc.log_interval == 0 or step == tc.max_iters:
                loss_value = distributed.mean(loss_value, dist, device)  # every rank takes part
            if log and (step % tc.log_interval == 0 or step == tc.max_iters):
                now = time.perf_counter()
                record = {"kind": "train", "step": step, "loss": loss_value, "gen_loss": float(out_step.gen_loss.detach()),
                          "critic_loss": None if out_step.critic_loss is None else float(out_step.critic_loss.detach()),
                          "lr": lr, "alpha": alpha, "tokens_per_s": window_tokens / max(now - window_t0, 1e-9)}
                window_tokens, window_t0 = 0, now
                log.write(record)
                reporter.on_log(record)
            if step % tc.eval_interval == 0 or step == tc.max_iters:
                if dist.is_main:
                    with averaged():
                        last_eval = {"kind": "eval", "step": step,  # the own-fills figure once the critic trains
                                     **evaluate(model, corpus, cfg, device, rollouts=alpha > 0 or step == tc.max_iters)}
                    log.write(last_eval)
                    reporter.on_eval(last_eval)
                save(step, last_eval)
                saved = step
        finished = True
    except NonFiniteLoss:
        raise  # the weights have diverged: nothing of this state is saved
    except Exception:
        # nothing lost on a crash: parameters and optimizer still hold the last completed step.
        # (A second Ctrl-C is a KeyboardInterrupt that may land mid-update: that state is not saved.)
        if step > saved:
            save(step, last_eval)
        raise
    finally:
        stop.restore(previous)
        distributed.cleanup(dist, wait=finished)
    if step > saved:
        save(step, last_eval)
    elapsed = time.perf_counter() - t0
    result = TrainResult(run_dir=out, checkpoint=ckpt_path, step=step, max_iters=tc.max_iters, resumed_from=start,
                         interrupted=stop.signal_name, elapsed_s=elapsed, tokens_per_s=tokens / max(elapsed, 1e-9),
                         params=model.num_params(), data=corpus.info, final_eval=last_eval,
                         mask_region=region, next_commands=next_commands(out, cfg, tc.max_iters, len(corpus.val)))
    reporter.on_end(result)
    return result


def next_commands(out: Path, cfg: RunConfig, max_iters: int, held_out: int) -> list[str]:
    """What to try with a finished run, as shell lines with a comment each; `held_out`: the validation rows
    the run's corpus holds, which bounds the counts these commands ask for."""
    train_on = (f"cdt train --out {out} --resume --max-iters {max_iters * 2}   "
                "# train on: the rate schedule is re-spread over the new total")
    calibrate = (f"cdt calibrate --checkpoint {out} --n-samples {min(200, held_out)}   "
                 "# can the critic's P(wrong) be trusted?")
    if not has_records(cfg.data.source):
        return [f"cdt sample --checkpoint {out} --length 64", calibrate, train_on]
    if cfg.data.source == "functions":
        scaffold = " --scaffold" if cfg.data.scaffold else ""
        return [f"cdt eval --checkpoint {out}{scaffold} --n {min(128, held_out)}   # calls to functions it never saw",
                f"cdt bench bfcl --checkpoint {out} --n 100   # real ones (data: pip install --no-deps bfcl-eval)",
                calibrate, train_on]
    length = len(EXAMPLE_ANSWER) + cfg.data.answer_tail // 2  # a tail model takes a budget: [NULL] ends it
    return [f"cdt eval --checkpoint {out} --n {min(128, held_out)}   # compare remasking policies on held-out answers", calibrate,
            f"cdt sample --checkpoint {out} --prompt {EXAMPLE_PROMPT!r} --length {length} --policy critic", train_on]
