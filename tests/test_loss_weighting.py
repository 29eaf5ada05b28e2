"""train.loss_weighting: the generator's loss of a training step against a loop over the masked characters."""

import dataclasses
import math

import torch
import torch.nn.functional as F

import cdt.train as train_mod
from cdt.noise import get_schedule

B = 6


def step(tiny_model, weighting: str, t: torch.Tensor):
    cfg, corpus, model = tiny_model
    batch = corpus.batch(0, B, 0)
    out = train_mod.diffusion_step(model, batch, t, get_schedule("loglinear"),
                                   dataclasses.replace(cfg.train, loss_weighting=weighting), "answer",
                                   torch.Generator().manual_seed(0), torch.device("cpu"), critic=False)
    return batch, out


def per_character(batch, out, t):
    """(cross-entropy, t of its row) for every masked character, one at a time."""
    rows = []
    for i in range(B):
        for j in range(batch.ids.shape[1]):
            if out.masked[i, j]:
                ce = -F.log_softmax(out.logits[i, j].double(), -1)[batch.ids[i, j]].item()
                rows.append((ce, float(t[i])))
    return rows


T = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.8, 0.95])


def test_nelbo_weights_each_masked_character_by_one_over_t_and_divides_by_the_maskable_count(tiny_model):
    batch, out = step(tiny_model, "nelbo", T)
    chars = per_character(batch, out, T)
    assert len(chars) > 20  # the oracle compares something
    expected = sum(ce / t for ce, t in chars) / int(batch.maskable.sum())
    assert math.isclose(out.gen_loss.item(), expected, rel_tol=1e-5)


def test_flat_is_the_mean_cross_entropy_of_the_masked_characters_whatever_their_t(tiny_model):
    batch, out = step(tiny_model, "flat", T)
    chars = per_character(batch, out, T)
    expected = sum(ce for ce, _ in chars) / len(chars)
    assert math.isclose(out.gen_loss.item(), expected, rel_tol=1e-5)
    # the same noise under the MDLM weighting gives another number: the option does something
    _, nelbo = step(tiny_model, "nelbo", T)
    assert torch.equal(nelbo.masked, out.masked) and not math.isclose(nelbo.gen_loss.item(), expected, rel_tol=1e-2)
