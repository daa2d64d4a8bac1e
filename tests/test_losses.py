"""The prior-stage objectives against closed forms, with and without fp16 gradient scaling."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from gpen_lightning import losses
from gpen_lightning.training import ema_beta, sanitize_grads, update_ema


def test_logistic_losses_match_formula():
    real, fake = torch.randn(7), torch.randn(7)
    expected = torch.log1p(torch.exp(fake)).mean() + torch.log1p(torch.exp(-real)).mean()
    torch.testing.assert_close(losses.d_logistic_loss(real, fake), expected)
    torch.testing.assert_close(
        losses.g_nonsaturating_loss(fake), torch.log1p(torch.exp(-fake)).mean()
    )
    # non-saturating: the G gradient does not vanish when D confidently rejects fakes
    x = torch.tensor([-20.0], requires_grad=True)
    losses.g_nonsaturating_loss(x).backward()
    assert x.grad.abs().item() > 0.99


def test_r1_of_a_linear_critic_is_its_squared_weight_norm():
    w = torch.randn(3, 8, 8, requires_grad=True)
    x = torch.randn(5, 3, 8, 8, requires_grad=True)
    logits = (x * w).flatten(1).sum(1)
    r1 = losses.r1_penalty(logits, x)
    torch.testing.assert_close(r1, w.pow(2).sum())
    r1.backward()  # the penalty is differentiable (create_graph): d/dw ||w||^2 = 2w
    torch.testing.assert_close(w.grad, 2 * w.detach())


def test_r1_with_grad_scaler_recovers_gradients_that_underflow_in_fp16():
    """Under 16-mixed the inner gradient is taken on the scaled output, then unscaled."""
    x = torch.randn(4, 3, 4, 4, requires_grad=True)

    def critic(inp):
        return (inp.half() * 1e-8).flatten(1).sum(1)  # d/dx = 1e-8: zero in fp16 unscaled

    unscaled = losses.r1_penalty(critic(x), x)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    scaled = losses.r1_penalty(critic(x), x, scaler=scaler)
    assert unscaled.item() == 0.0
    expected = 48 * (1e-8) ** 2  # 48 inputs per sample, gradient 1e-8 each
    assert scaled.item() == pytest.approx(expected, rel=0.05)
    # fp32: the scaler changes nothing
    y = torch.randn(4, 6, requires_grad=True)
    a = losses.r1_penalty((y * 3).sum(1), y)
    b = losses.r1_penalty((y * 3).sum(1), y, scaler=scaler)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("use_scaler", [False, True])
def test_path_length_of_a_linear_generator(use_scaler):
    """images = c * sum_l w_l: J^T y = c * y for every layer, so |J^T y| = c |y|."""
    b, n_layers, h = 6, 4, 8
    c = torch.tensor(2.5, requires_grad=True)
    latents = torch.randn(b, n_layers, 3 * h * h, requires_grad=True)
    images = (c * latents.sum(1)).view(b, 3, h, h)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if use_scaler else None
    mean0 = torch.tensor(1.0)
    penalty, lengths, new_mean = losses.path_length_penalty(
        images, latents, mean0, decay=0.1, scaler=scaler, generator=torch.Generator().manual_seed(3)
    )
    probe = torch.randn(images.shape, generator=torch.Generator().manual_seed(3)) / h
    expected = c.detach() * probe.flatten(1).norm(dim=1)
    torch.testing.assert_close(lengths, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(new_mean, mean0 + 0.1 * (expected.mean() - mean0))
    torch.testing.assert_close(penalty, (expected - new_mean).pow(2).mean(), rtol=1e-5, atol=1e-6)
    assert mean0.item() == 1.0  # the running mean is returned, not modified
    penalty.backward()  # differentiable w.r.t. the generator's parameters
    assert c.grad is not None and torch.isfinite(c.grad)


def test_path_length_mean_is_reduced_across_processes():
    latents = torch.randn(2, 3, 12, requires_grad=True)
    images = latents.sum(1).view(2, 3, 2, 2)
    _, _, m = losses.path_length_penalty(
        images, latents, torch.tensor(0.0), decay=1.0, reduce_mean=lambda x: x * 0 + 7.0
    )
    assert m.item() == 7.0


def test_mixing_latents_probability_and_crossover():
    g, rng = torch.Generator().manual_seed(0), random.Random(0)
    n_latent = 10
    mixed, cuts = 0, set()
    for _ in range(2000):
        zs, cut = losses.mixing_latents(3, 5, prob=0.9, n_latent=n_latent, generator=g, rng=rng)
        assert all(z.shape == (3, 5) for z in zs)
        if len(zs) == 2:
            mixed += 1
            cuts.add(cut)
            assert not torch.equal(zs[0], zs[1])
        else:
            assert cut is None
    assert abs(mixed / 2000 - 0.9) < 0.03
    assert cuts == set(range(1, n_latent))
    zs, cut = losses.mixing_latents(3, 5, prob=0.0, n_latent=n_latent, generator=g, rng=rng)
    assert len(zs) == 1 and cut is None


def test_lazy_regularization_correction():
    r1 = losses.LazyRegularization(16, 0.002, (0.0, 0.99))
    kw = r1.adam_kwargs()
    assert kw["lr"] == pytest.approx(0.002 * 16 / 17)
    assert kw["betas"] == (0.0, pytest.approx(0.99 ** (16 / 17)))
    assert [s for s in range(40) if r1.due(s)] == [0, 16, 32]
    off = losses.LazyRegularization(0, 0.002)
    assert off.adam_kwargs()["lr"] == 0.002 and not any(off.due(s) for s in range(20))


def test_ema_beta_half_life_and_rampup():
    assert ema_beta(32, half_life_kimg=10) == pytest.approx(0.997784, abs=1e-6)
    # after half_life / batch steps the initial weights count for exactly one half
    beta = ema_beta(8, half_life_kimg=0.4)
    assert beta ** (400 / 8) == pytest.approx(0.5)
    # ramp-up: early on the half-life is rampup * images seen
    assert ema_beta(8, half_life_kimg=10, images_seen=1000, rampup=0.05) == pytest.approx(
        0.5 ** (8 / 50)
    )
    assert ema_beta(8, half_life_kimg=10, images_seen=0, rampup=0.05) == 0.0
    assert ema_beta(8, half_life_kimg=10, images_seen=10**7, rampup=0.05) == ema_beta(
        8, half_life_kimg=10
    )


def test_update_ema_lerps_parameters_and_copies_buffers():
    a, b = torch.nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4)
    with torch.no_grad():
        a.weight.fill_(1.0)
        b.weight.fill_(3.0)
        b.running_mean.fill_(5.0)
    update_ema(a, b, 0.75)
    torch.testing.assert_close(a.weight, torch.full((4,), 1.5))
    torch.testing.assert_close(a.running_mean, torch.full((4,), 5.0))


def test_sanitize_grads_counts_and_fixes_nonfinite_entries():
    p1, p2, p3 = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    p1.grad = torch.tensor([1.0, math.nan, 2.0])
    p2.grad = torch.tensor([1.0, 2.0, 3.0])
    p3.grad = torch.tensor([math.inf, -math.inf, 0.5])
    assert int(sanitize_grads([p1, p2, p3])) == 2
    torch.testing.assert_close(p1.grad, torch.tensor([1.0, 0.0, 2.0]))
    torch.testing.assert_close(p2.grad, torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(p3.grad, torch.tensor([0.0, 0.0, 0.5]))
    assert int(sanitize_grads([p2])) == 0
    assert F.softplus(torch.tensor(0.0)).item() == pytest.approx(math.log(2))


def test_sanitize_grads_keep_false_zeroes_everything_on_the_device():
    p1, p2 = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    p1.grad = torch.tensor([1.0, math.nan, 2.0])
    p2.grad = torch.tensor([4.0, 5.0])
    n_bad = sanitize_grads([p1, p2], keep=torch.tensor(False))
    assert isinstance(n_bad, torch.Tensor) and n_bad.ndim == 0 and int(n_bad) == 1
    assert not p1.grad.any() and not p2.grad.any()
    p2.grad = torch.tensor([4.0, 5.0])
    assert int(sanitize_grads([p2], keep=torch.tensor(True))) == 0
    torch.testing.assert_close(p2.grad, torch.tensor([4.0, 5.0]))
