"""Background super-resolution: our RRDBNet and tiling against the official GPEN demo's
``sr_model`` (``tests/fixtures/gpen_tasks_tiny.pt``, made by ``make_task_fixture.py``), tiles
against one pass, and a sharpening stand-in network against bicubic on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gpen_lightning.app import build_stage
from gpen_lightning.config import compose
from gpen_lightning.data.folder import read_rgb
from gpen_lightning.restore import Detection, Paste, Restorer
from gpen_lightning.restore.background import RRDBUpsampler, resize_background
from gpen_lightning.zoo.rrdbnet import RRDBNet, rrdbnet_config, rrdbnet_from_state_dict

from .conftest import shared_path

FIXTURE = Path(__file__).parent / "fixtures" / "gpen_tasks_tiny.pt"


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURE, weights_only=False)


@pytest.mark.parametrize("scale", [2, 4])
def test_rrdbnet_matches_the_official_one(reference, scale):
    ref = reference["rrdb"][f"x{scale}"]
    net = rrdbnet_from_state_dict({"params_ema": ref["state"]})  # strict: same keys and shapes
    assert set(net.state_dict()) == set(ref["state"])
    assert rrdbnet_config(ref["state"]) == dict(scale=scale, in_ch=3, out_ch=3, **ref["config"])
    with torch.no_grad():
        torch.testing.assert_close(net(ref["input"]), ref["whole"], atol=1e-5, rtol=0)
    # the official tiling (16 px tiles, 4 px context): the same seams, tile for tile
    up = RRDBUpsampler(net, tile=reference["tile"], tile_pad=reference["tile_pad"])
    tiled = up.run(ref["input"][0])
    torch.testing.assert_close(tiled, ref["tiled"][0].clamp(0, 1), atol=1e-5, rtol=0)
    assert (ref["tiled"] - ref["whole"]).abs().max() > 1e-4  # 4 px of context is not enough


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_tiles_with_enough_context_equal_one_pass(scale):
    torch.manual_seed(scale)
    net = RRDBNet(scale=scale, num_feat=8, num_block=1, num_grow_ch=4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = torch.rand(3, 37, 50)  # odd sides: reflect-padded to the unshuffle factor, cropped back
    whole = RRDBUpsampler(net, tile=0).run(x)
    assert whole.shape == (3, 37 * scale, 50 * scale)
    u = net.unshuffle
    padded = F.pad(x[None], (0, (-50) % u, 0, (-37) % u), mode="reflect")
    with torch.no_grad():
        torch.testing.assert_close(whole, net(padded)[0, :, : 37 * scale, : 50 * scale].clamp(0, 1))
    exact = RRDBUpsampler(net, tile=16, tile_pad=RRDBUpsampler(net).radius).run(x)
    torch.testing.assert_close(exact, whole, atol=1e-5, rtol=0)  # everywhere, borders included
    if scale == 1:  # x1 sees 76 px: 8 px of context changes pixels near the seams
        assert (RRDBUpsampler(net, tile=16, tile_pad=8).run(x) - whole).abs().max() > 1e-4


def test_missing_and_wrong_weights_are_named(tmp_path):
    with pytest.raises(ValueError, match="bg_weights=PATH"):
        Restorer(None, model="gpen-tiny-32", paste=Paste(bg_upsampler="realesrgan"))
    with pytest.raises(FileNotFoundError, match=r"nope_x2\.pth"):
        paste = Paste(bg_upsampler="realesrgan", bg_weights=tmp_path / "nope_x2.pth")
        Restorer(None, model="gpen-tiny-32", paste=paste)
    torch.save({"params": {"conv.weight": torch.zeros(1)}}, tmp_path / "compact.pth")
    with pytest.raises(ValueError, match=r"compact\.pth.*not an RRDBNet"):
        RRDBUpsampler(tmp_path / "compact.pth")
    with pytest.raises(ValueError, match="bg_upsampler='esrgan'"):
        Paste(bg_upsampler="esrgan")


def _standin(amount: float) -> RRDBNet:
    """An x4 RRDBNet built to interpolate and sharpen: the trunk is an unsharp mask of the
    input ((1 + amount) x - amount blur, the body zeroed), each nearest x2 step is followed by
    the [1, 2, 1] / 4 binomial (which makes it bilinear), the tail passes through."""
    net = RRDBNet(scale=4, num_feat=3, num_block=1, num_grow_ch=2)
    eye, blur = torch.zeros(3, 3, 3, 3), torch.zeros(3, 3, 3, 3)
    binomial = torch.outer(torch.tensor([1.0, 2, 1]), torch.tensor([1.0, 2, 1])) / 16
    for c in range(3):
        eye[c, c, 1, 1], blur[c, c] = 1, binomial
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.conv_first.weight.copy_((1 + amount) * eye - amount * blur)
        for conv in (net.conv_up1, net.conv_up2):
            conv.weight.copy_(blur)
        net.conv_hr.weight.copy_(eye)
        net.conv_last.weight.copy_(eye)
    return net


def _interior_energy(x: torch.Tensor, margin: int = 8) -> float:
    """Mean squared Laplacian of (3, H, W), ``margin`` px from the borders."""
    k = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).expand(3, 1, 3, 3)
    lap = F.conv2d(x[None], k, groups=3)[0]
    return lap[:, margin:-margin, margin:-margin].pow(2).mean().item()


def test_sharpening_background_beats_bicubic_on_real_photos(tmp_path):
    """``upscale=2`` of a photo halved: the stand-in's background carries more high-frequency
    energy than bicubic's (and stays as close to the original), its unsharpened twin less."""
    folder = shared_path("data", "wild", "whole")
    for amount in (1.0, 0.0):
        torch.save({"params_ema": _standin(amount).state_dict()}, tmp_path / f"x4_{amount}.pth")
    gains = []
    for name in ("00.jpg", "01.jpg"):
        photo = read_rgb(folder / name).float() / 255
        photo = photo[:, : photo.shape[1] // 2 * 2, : photo.shape[2] // 2 * 2]
        small = resize_background(photo, (photo.shape[1] // 2, photo.shape[2] // 2))
        small = (small.clamp(0, 1) * 255).round().to(torch.uint8)
        out = {}
        for kind, weights in [("bicubic", None), ("sharp", "x4_1.0"), ("plain", "x4_0.0")]:
            paste = Paste(
                upscale=2,
                bg_upsampler="bicubic" if weights is None else "realesrgan",
                bg_weights=None if weights is None else tmp_path / f"{weights}.pth",
            )
            restorer = Restorer(
                None, model="gpen-tiny-32", detection=Detection(detector=lambda im: []), paste=paste
            )
            image = restorer.restore(small).image
            assert image.shape[:2] == photo.shape[1:]
            out[kind] = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)
        energy = {k: _interior_energy(v) for k, v in out.items()}
        err = {k: (v - photo)[:, 8:-8, 8:-8].pow(2).mean().item() for k, v in out.items()}
        assert energy["sharp"] > 1.05 * energy["bicubic"] > 1.05 * energy["plain"], energy
        assert err["sharp"] < 1.15 * err["bicubic"], err  # sharper, not noisier
        gains.append(energy["sharp"] / energy["bicubic"])
    print("high-frequency energy, stand-in / bicubic:", [round(g, 2) for g in gains])


def test_stage_options_reach_the_upsampler(tmp_path):
    """``bg_*`` options of ``conf/restore.yaml`` become the restorer's tiled upsampler, and a
    photo without faces comes out as that upsampler's output."""
    torch.manual_seed(0)
    net = RRDBNet(scale=2, num_feat=8, num_block=1, num_grow_ch=4)
    torch.save({"params_ema": net.state_dict()}, tmp_path / "x2.pth")
    rng = np.random.default_rng(0)
    photo = (rng.random((30, 44, 3)) * 255).astype(np.uint8)  # noise: no face to find
    (tmp_path / "in").mkdir()
    Image.fromarray(photo).save(tmp_path / "in" / "p.png")
    stage = build_stage(
        compose(
            [
                "stage=restore",
                f"input={tmp_path / 'in'}",
                f"output={tmp_path / 'out'}",
                "upscale=2",
                "bg_upsampler=realesrgan",
                f"bg_weights={tmp_path / 'x2.pth'}",
                "bg_tile=16",
                "bg_tile_pad=6",
            ]
        )
    )
    up = stage.restorer().bg_upsampler
    assert isinstance(up, RRDBUpsampler) and (up.tile, up.tile_pad, up.scale) == (16, 6, 2)
    assert stage.run() == 0
    out = np.asarray(Image.open(tmp_path / "out" / "p.png"))
    expected = up(torch.from_numpy(photo).permute(2, 0, 1).float() / 255, 2.0)
    expected = (expected * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert out.shape == (60, 88, 3) and np.abs(out.astype(int) - expected).max() <= 1


def test_aligned_faces_are_upscaled_after_restoration():
    """``aligned=true upscale=2``: the restored crop goes through the background upsampler at
    its input size, as the official demo's ``--aligned --use_sr`` super-resolves the face."""
    seen = []

    def upsampler(image: torch.Tensor, scale: float) -> torch.Tensor:
        seen.append((tuple(image.shape), scale))
        h, w = image.shape[-2:]
        return resize_background(image, (round(h * scale), round(w * scale)))

    paste = Paste(upscale=2, bg_upsampler=upsampler)
    restorer = Restorer(lambda x: x, size=32, device="cpu", paste=paste)
    result = restorer.restore(np.full((40, 36, 3), 128, np.uint8), aligned=True)
    assert result.image.shape == (80, 72, 3) and seen == [((3, 40, 36), 2)]
    assert result.faces[0].box.tolist() == [0, 0, 72, 80]
    assert np.abs(result.image.astype(int) - 128).max() <= 1  # an identity network: gray stays
