"""The inference fast paths (in-place activations, channels-last, fused weights) change nothing."""

from __future__ import annotations

import pytest
import torch

from gpen_lightning.zoo import ModulatedConv2d, build


def _randomised(name: str, **kw) -> torch.nn.Module:
    model = build(name, **kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("mode", ["concat", "add", "none"])
@pytest.mark.parametrize("batch", [1, 3])
def test_inference_mode_equals_autograd_path(mode, batch):
    model = _randomised("gpen-tiny-64", noise_mode=mode)
    x = torch.rand(batch, 3, 64, 64) * 2 - 1
    x_copy = x.clone()
    with torch.inference_mode():
        fast = model(x)
    slow = model(x)  # grad enabled: out-of-place ops, autograd graph recorded
    assert slow.requires_grad
    torch.testing.assert_close(fast, slow.detach(), atol=1e-6, rtol=1e-6)
    assert torch.equal(x, x_copy)  # the input is never modified


def test_memory_format_and_fused_choice_do_not_change_results():
    model = _randomised("gpen-tiny-64")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        ref = model(x)
        model.generator.memory_format = torch.contiguous_format
        nchw = model(x)
        for m in model.modules():
            if isinstance(m, ModulatedConv2d):
                m.fused = True
        fused = model(x)
    torch.testing.assert_close(nchw, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)


def test_prior_does_not_modify_given_noise():
    g = _randomised("gpen-tiny-32").generator
    noise = g.make_noise(2)
    copies = [n.clone() for n in noise]
    with torch.inference_mode():
        g(torch.randn(2, g.style_dim), noise=noise)
    assert all(torch.equal(a, b) for a, b in zip(noise, copies))


def test_double_backward_through_generator():
    """R1 / path-length regularisation need gradients of gradients."""
    g = _randomised("gpen-tiny-32").generator.train()
    z = torch.randn(2, g.style_dim)
    img, latents = g(z, return_latents=True)
    (grad,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), latents, create_graph=True)
    grad.square().sum().backward()
    assert g.style[1].weight.grad is not None and g.style[1].weight.grad.abs().sum() > 0
