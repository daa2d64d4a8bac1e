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


def test_training_memory_format_switch_keeps_the_outputs():
    from gpen_lightning.training.fast import set_memory_format

    g, d = build("gpen-tiny-32"), build("gpen-tiny-32", part="discriminator")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    set_memory_format(g, d, channels_last=True)
    out_cl, logit_cl = g(x), d(x)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    set_memory_format(g, d, channels_last=False)
    out, logit = g(x), d(x)
    assert out.is_contiguous()
    torch.testing.assert_close(out_cl, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logit_cl, logit, atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="zoo Generator"):
        set_memory_format(torch.nn.Linear(2, 2), channels_last=True)


@pytest.mark.slow
def test_compiled_prior_and_discriminator_equal_the_eager_networks(monkeypatch):
    """torch.compile of the main phases (CPU inductor here) computes what the eager modules do;
    the crossover changes between calls without breaking the compiled synthesis."""
    import torch._inductor.config as inductor

    from gpen_lightning.training.fast import compiled

    monkeypatch.setattr(inductor, "fallback_random", True)  # eager RNG inside compiled code
    g = build("gpen-tiny-32", part="prior")
    d = build("gpen-tiny-32", part="discriminator")
    fast = compiled(g, d, enabled=True)
    z = [torch.randn(2, g.style_dim), torch.randn(2, g.style_dim)]
    for cut in (1, 3, None):
        zs = z if cut else z[:1]
        torch.manual_seed(cut or 0)
        ref = g(zs, inject_index=cut)
        torch.manual_seed(cut or 0)
        out = fast["g_forward"](zs, inject_index=cut)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(fast["d_forward"](out), d(out), atol=1e-4, rtol=1e-4)
