import math

import torch

from cdt.losses import critic_bce, diffusion_nelbo


def test_nelbo_hand_computed():
    v = 5
    logits = torch.zeros(2, 3, v)  # uniform: CE = log 5 everywhere
    clean = torch.tensor([[1, 2, 3], [4, 0, 1]])
    masked = torch.tensor([[True, False, True], [False, False, True]])
    weight = torch.tensor([2.0, 10.0])
    # row 0: 2 masked * w 2 * log5; row 1: 1 masked * w 10 * log5; over 6 maskable tokens
    expected = (2 * 2 + 1 * 10) * math.log(v) / 6
    assert math.isclose(diffusion_nelbo(logits, clean, masked, weight, 6).item(), expected, rel_tol=1e-6)


def test_nelbo_only_counts_masked_positions():
    logits = torch.randn(1, 4, 6)
    clean = torch.tensor([[1, 2, 3, 4]])
    none = torch.zeros(1, 4, dtype=torch.bool)
    assert diffusion_nelbo(logits, clean, none, torch.ones(1), 4).item() == 0.0


def test_critic_bce_matches_formula_over_valid_only():
    logits = torch.tensor([[2.0, -1.0, 0.5, 9.0]])
    target = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    valid = torch.tensor([[True, True, True, False]])
    p = torch.sigmoid(logits[0, :3])
    expected = -(torch.log(p[0]) + torch.log(1 - p[1]) + torch.log(p[2])) / 3
    assert torch.allclose(critic_bce(logits, target, valid), expected)


def test_critic_bce_without_valid_positions_is_zero_but_keeps_the_graph():
    logits = torch.randn(1, 3, requires_grad=True)
    loss = critic_bce(logits, torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_losses_give_the_same_value_when_traced_for_torch_compile():
    torch.manual_seed(0)
    logits, clean = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    masked = torch.rand(2, 5) < 0.5
    masked[0, 0] = True
    weight, n = torch.tensor([2.0, 0.5]), torch.tensor(9)
    critic, target, valid = torch.randn(2, 5), (torch.rand(2, 5) < 0.3).float(), torch.rand(2, 5) < 0.6
    valid[0, 0] = True
    eager = (diffusion_nelbo(logits, clean, masked, weight, n), critic_bce(critic, target, valid))
    torch._dynamo.reset()
    compiled = torch.compile(lambda: critic_bce(critic, target, valid), backend="eager")()  # the branch-free form
    assert torch.allclose(compiled, eager[1], atol=1e-6)
    assert diffusion_nelbo(logits, clean, masked, weight, 9) == eager[0]  # int and tensor counts agree
    assert diffusion_nelbo(logits, clean, masked, weight, 0) == diffusion_nelbo(logits, clean, masked, weight, 1)
