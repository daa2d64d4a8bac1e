"""Presets: official parameter counts and key layouts (meta device), tiny presets run and train."""

from __future__ import annotations

import re

import pytest
import torch

from gpen_lightning.zoo import PRESETS, build, get_preset, official_state_dict

from .conftest import shared_path

OFFICIAL_COUNTS = {
    # preset: (GPEN, prior, discriminator)
    "gpen-bfr-256": (18_879_010, 14_623_458, 6_002_977),
    "gpen-bfr-512": (71_005_223, 55_821_735, 28_982_849),
    "gpen-bfr-1024": (71_210_540, 56_008_684, 29_012_513),
    "gpen-bfr-2048": (71_294_769, 56_088_337, 29_019_921),
    "gpen-colorization-1024": (71_210_540, 56_008_684, 29_012_513),
    "gpen-inpainting-1024": (71_210_540, 56_008_684, 29_012_513),
    "gpen-seg2face-512": (71_005_223, 55_821_735, 28_982_849),
}
OFFICIAL_ENTRIES = {256: 144, 512: 163, 1024: 182, 2048: 201}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_official_parameter_counts(name):
    with torch.device("meta"):
        g, d = build(name), build(name, "discriminator")
    assert (_count(g), _count(g.generator), _count(d)) == OFFICIAL_COUNTS[name]
    assert len(official_state_dict(g)) == OFFICIAL_ENTRIES[g.size]


def _parse_keys(path):
    sections, current = [], None
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            current = {}
            sections.append(current)
        elif line.strip():
            key, shape = line.split("\t")
            current[key] = tuple(int(s) for s in re.findall(r"\d+", shape))
    return sections


@pytest.mark.parametrize("size", [256, 512])
def test_official_key_layout(size):
    gen_keys, d_keys = _parse_keys(shared_path("spec", f"keys_{size}.txt"))
    with torch.device("meta"):
        g, d = build(f"gpen-bfr-{size}"), build(f"gpen-bfr-{size}", "discriminator")
    for module, expected in ((g, gen_keys), (d, d_keys)):
        ours = {k: tuple(v.shape) for k, v in official_state_dict(module).items()}
        assert list(ours) == list(expected)  # same keys, same order
        assert ours == expected


def test_unknown_preset_lists_available():
    with pytest.raises(KeyError, match="gpen-bfr-512"):
        get_preset("gpen-bfr-999")
    with pytest.raises(ValueError, match="part"):
        build("gpen-tiny-32", part="encoder")


@pytest.mark.parametrize("mode", ["concat", "add", "none"])
def test_noise_modes_build_and_run(mode):
    model = build("gpen-tiny-32", noise_mode=mode)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert model(x).shape == (2, 3, 32, 32)
    has_noise_weights = any(k.endswith("noise.weight") for k in model.state_dict())
    assert has_noise_weights == (mode != "none")
    if mode != "none":
        # encoder features reach the decoder: changing one shallow feature changes the output
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("noise.weight"):
                    p.fill_(1.0)
            base = model(x)
            x2 = x.clone()
            x2[:, :, :4, :4] += 1.0
            assert not torch.allclose(model(x2)[:, :, 16:, 16:], base[:, :, 16:, 16:])


def test_part_names_say_what_is_built():
    from gpen_lightning.zoo import GPEN, Discriminator, Generator

    assert isinstance(build("gpen-tiny-32"), GPEN)
    assert isinstance(build("gpen-tiny-32", "gpen"), GPEN)
    assert type(build("gpen-tiny-32", "prior")) is Generator
    assert isinstance(build("gpen-tiny-32", "discriminator"), Discriminator)
    with pytest.raises(ValueError, match="part must be 'gpen', 'prior' or 'discriminator'"):
        build("gpen-tiny-32", "generator")  # ambiguous between GPEN and its prior generator


@pytest.mark.parametrize("part", ["gpen", "prior", "discriminator"])
def test_backward_reaches_every_parameter(part):
    model = build("gpen-tiny-32", part)
    with torch.no_grad():  # make noise weights non-zero so their gradient paths are exercised too
        for name, p in model.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    if part == "prior":
        x = torch.randn(2, model.style_dim)
    model(x).square().mean().backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing


def test_prior_draws_correct_noise_and_tracks_w_avg():
    g = build("gpen-tiny-64").generator
    z = torch.randn(3, g.style_dim)
    g.eval()
    with torch.no_grad():
        img = g(z)  # noise=None: one correctly shaped map per styled conv
        assert img.shape == (3, 3, 64, 64)
        assert len(g.make_noise(3)) == g.num_noise == 2 * 6 - 3
        fixed = g.make_noise(3)
        torch.testing.assert_close(g(z, noise=fixed), g(z, noise=fixed))
    assert torch.all(g.w_avg == 0)
    g.train()
    g(z)
    expected = 0.005 * g.style(z).mean(0)
    torch.testing.assert_close(g.w_avg, expected.detach(), atol=1e-6, rtol=1e-4)


@torch.no_grad()
def test_truncation_and_style_mixing():
    g = build("gpen-tiny-32").generator.eval()
    g.w_avg.copy_(g.mean_latent(256))
    noise = g.make_noise(2)
    z = torch.randn(2, g.style_dim)
    # psi = 0 collapses every latent onto w_avg: both samples identical
    out = g(z, noise=[n[:1].expand_as(n) for n in noise], truncation=0.0)
    torch.testing.assert_close(out[0], out[1])
    _, latents = g([z, z.flip(0)], noise=noise, inject_index=3, return_latents=True)
    assert latents.shape == (2, g.n_latent, g.style_dim)
    torch.testing.assert_close(latents[0, :3], g.style(z)[0].expand(3, -1))
    torch.testing.assert_close(latents[0, 3:], g.style(z)[1].expand(g.n_latent - 3, -1))
    with pytest.raises(ValueError, match="noise maps"):
        g(z, noise=noise[:-1])


def test_gpen_rejects_wrong_input_size():
    model = build("gpen-tiny-32")
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        model(torch.zeros(1, 3, 64, 64))


def test_every_preset_is_buildable_on_meta():
    for name in PRESETS:
        with torch.device("meta"):
            assert build(name).size == get_preset(name).size
