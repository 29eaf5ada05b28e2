"""`cdt train --stage value`: train the sequence-level value head on (right, wrong) pairs.

    cdt calibrate --checkpoint RUN --samples-per-prompt 4 --mask span --mask-ratio 0.1 --out samples.jsonl
    cdt train --stage value --preset value_pairwise --samples samples.jsonl --init RUN --out RUN-value

The head reads the trunk's mean state over a sample's generated region. Pairwise loss
−log σ(v_right − v_wrong) on answers to the same prompt; pointwise BCE as the baseline.
With the trunk frozen (the default) the pooled states are computed once, so a step is a
small MLP update. Validation prompts are never trained on (disjoint groups).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cdt import checkpoint
from cdt.config import RunConfig, to_yaml
from cdt.device import pick_device
from cdt.errors import CdtError, UsageError
from cdt.losses import pairwise_loss, pointwise_loss
from cdt.metrics import pairwise_accuracy
from cdt.model import DiffusionLM
from cdt.rng import seed_for
from cdt.rundir import (CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME, MetricsLog, OutputLock, StopRequest, check_output,
                        write_text)
from cdt.value_pairs import Sample, build_pairs, load_samples, mixed_groups, split_groups
from cdt.vocab import PAD_ID


@dataclass
class StageResult:
    checkpoint: str
    steps: int
    loss: str
    freeze_trunk: bool
    data: dict  # samples, groups, pairs per split, overlap (always 0), groups with both labels
    final_eval: dict
    elapsed_s: float
    max_iters: int = 0
    interrupted: str | None = None  # signal name when stopped early (the checkpoint holds the head at `steps`)


def encode(samples: list[Sample], vocab, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) rows (before + text + after, [PAD]-filled) and (N, L) bool generated-region masks."""
    rows, regions = [], []
    for s in samples:
        before, text, after = vocab.encode(s.before), vocab.encode(s.text), vocab.encode(s.after)
        ids = before + text + after
        if len(ids) > block_size:
            raise CdtError(f"sample {s.id} is {len(ids)} characters; the model's block size is {block_size}")
        rows.append(ids)
        regions.append([False] * len(before) + [True] * len(text) + [False] * len(after))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    region = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (r, g) in enumerate(zip(rows, regions)):
        ids[i, : len(r)] = torch.tensor(r)
        region[i, : len(g)] = torch.tensor(g)
    return ids, region


def train_value_stage(cfg: RunConfig, out: Path, on_eval=None, on_step=None) -> StageResult:
    """The value head trained into a new run directory `out` (checked first, and held for the run)."""
    st = cfg.value_stage
    if not st.samples or not st.init:
        raise UsageError("--stage value needs --samples FILE (from cdt calibrate) and --init CHECKPOINT")
    check_output(out, "--out", directory=True)
    with OutputLock(out, "--out"):
        return _train_value_stage(cfg, st, Path(out), on_eval, on_step)


def _train_value_stage(cfg: RunConfig, st, out: Path, on_eval, on_step) -> StageResult:
    t0 = time.perf_counter()
    init = checkpoint.load(st.init)
    if (out / CHECKPOINT_NAME).exists():
        raise CdtError(f"{out} already holds a checkpoint; the value stage writes a new run: choose another --out")
    samples = load_samples(Path(st.samples))
    train_g, val_g = split_groups([s.group for s in samples], st.val_share, st.seed)
    pairs = {"train": build_pairs(samples, train_g, st.n_pairs, st.seed),
             "val": build_pairs(samples, val_g, st.n_pairs, st.seed + 1)}
    data = {"samples": len(samples), "groups": {"train": len(train_g), "val": len(val_g)},
            "overlap": len(train_g & val_g),
            "mixed_groups": {"train": mixed_groups(samples, train_g), "val": mixed_groups(samples, val_g)},
            "pairs": {k: len(v) for k, v in pairs.items()},
            "wrong_share": float(np.mean([s.label for s in samples]))}
    if st.loss == "pairwise" and not pairs["train"]:
        raise CdtError(f"no training prompt in {st.samples} has both a right and a wrong answer; draw more per "
                       "prompt (--samples-per-prompt) or shorter regions (--mask span --mask-ratio 0.1)")
    device = pick_device(cfg.train.device)
    out.mkdir(parents=True, exist_ok=True)  # only once the input is known to be good
    run_cfg = copy.deepcopy(init.config)  # the initial model with a value head (kept if it already has one)
    run_cfg.model.value_head, run_cfg.model.value_dropout = True, cfg.model.value_dropout
    run_cfg.value_stage = st
    torch.manual_seed(st.seed)  # the head's initial weights and its dropout draws follow the stage's seed
    model = init.build_model(device, architecture=run_cfg.model)
    ids, region = encode(samples, init.vocab, run_cfg.model.block_size)
    labels = torch.tensor([s.label for s in samples])
    trunk = [p for n, p in model.named_parameters() if not n.startswith("value_head.")]
    for p in trunk:
        p.requires_grad_(not st.freeze_trunk)
    groups = [{"params": list(model.value_head.parameters()), "lr": st.lr}]
    if not st.freeze_trunk:
        groups.append({"params": trunk, "lr": st.trunk_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    pooled = _pooled(model, ids, region, device) if st.freeze_trunk else None
    train_idx = torch.tensor([i for i, s in enumerate(samples) if s.group in train_g])
    log = MetricsLog(out / METRICS_NAME, keep_until=None)
    final, step = {}, 0
    stop = StopRequest()  # Ctrl-C or SIGTERM: evaluate and save the head as it is, then return
    previous = stop.install()
    try:
        for step in range(1, st.max_iters + 1):
            model.train()
            g = torch.Generator().manual_seed(seed_for(st.seed, step))
            if st.loss == "pairwise":
                pick = torch.randint(len(pairs["train"]), (st.batch_size,), generator=g)
                pr = torch.tensor([pairs["train"][i] for i in pick.tolist()])
                rows = torch.cat([pr[:, 0], pr[:, 1]])
                v = _values(model, rows, ids, region, pooled, device)
                loss = pairwise_loss(v[: len(pr)], v[len(pr):])
            else:
                rows = train_idx[torch.randint(len(train_idx), (st.batch_size,), generator=g)]
                loss = pointwise_loss(_values(model, rows, ids, region, pooled, device), labels[rows].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_step:
                on_step(step, loss.item())
            if step % st.eval_interval == 0 or step == st.max_iters or stop.requested:
                final = {"step": step, "loss": loss.item(), **evaluate_values(model, ids, region, labels, pairs, samples,
                                                                                 train_g, val_g, pooled, device)}
                log.write({"kind": "eval", **final})
                if on_eval:
                    on_eval(final)
            if stop.requested:
                break
    finally:
        stop.restore(previous)
    path = checkpoint.save(out / CHECKPOINT_NAME, model=model, config=run_cfg, vocab=init.vocab,
                           step=init.step, extra={**init.extra, "value_stage": {"data": data, "eval": final,
                                                                               "settings": asdict(st),
                                                                               "steps": step}})
    write_text(out / CONFIG_NAME, to_yaml(run_cfg))
    return StageResult(str(path), step, st.loss, st.freeze_trunk, data, final, time.perf_counter() - t0,
                       st.max_iters, stop.signal_name)


@torch.no_grad()
def _pooled(model: DiffusionLM, ids, region, device, batch_size: int = 64) -> torch.Tensor:
    """Mean trunk state over each sample's region, computed once (frozen trunk)."""
    model.eval()
    out = [model.pool(model(ids[i : i + batch_size].to(device)), region[i : i + batch_size].to(device))
           for i in range(0, len(ids), batch_size)]
    return torch.cat(out)


def _values(model: DiffusionLM, rows, ids, region, pooled, device) -> torch.Tensor:
    if pooled is not None:
        return model.value_head(pooled[rows.to(device)]).squeeze(-1)
    return model.value(model(ids[rows].to(device)), region[rows].to(device))


@torch.no_grad()
def evaluate_values(model: DiffusionLM, ids, region, labels, pairs, samples, train_g, val_g, pooled, device) -> dict:
    """Pairwise accuracy, mean value of right vs wrong answers per split, and the train-validation gap."""
    model.eval()
    all_rows = torch.arange(len(ids))
    v = torch.cat([_values(model, all_rows[i : i + 256], ids, region, pooled, device)
                   for i in range(0, len(ids), 256)]).cpu().numpy()
    out = {}
    for split, groups in (("train", train_g), ("val", val_g)):
        pr = np.array(pairs[split], dtype=np.int64).reshape(-1, 2)
        members = np.array([s.group in groups for s in samples])
        lab = labels.numpy()
        out[split] = {
            "pairwise_acc": pairwise_accuracy(v[pr[:, 0]], v[pr[:, 1]]) if len(pr) else None,
            "value_right": float(v[members & (lab == 0)].mean()) if (members & (lab == 0)).any() else None,
            "value_wrong": float(v[members & (lab == 1)].mean()) if (members & (lab == 1)).any() else None,
        }
    a, b = out["train"]["pairwise_acc"], out["val"]["pairwise_acc"]
    out["gap"] = None if a is None or b is None else a - b
    return out
