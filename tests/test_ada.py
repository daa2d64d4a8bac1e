"""Adaptive discriminator augmentation: the pipe's transforms (identity at p = 0, keyed draws,
pixel blits that move pixels exactly, colour transforms that keep what they should, first and
second derivatives), the controller (p rises when D is sure of the reals, falls otherwise), the
reals augmented the same way in Dmain and Dreg, and p with its sign count in exact resume."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch
from omegaconf import open_dict

from gpen_lightning.config import compose
from gpen_lightning.keyed import mix
from gpen_lightning.losses.augment import AUG_REAL, AugmentPipe, ada_adjust, sign_counts
from gpen_lightning.train import build_run, train


def _images(n: int = 6, size: int = 8, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=gen, dtype=torch.float64) * 2 - 1


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    return [torch.rot90(f, k, (-2, -1)) for f in (x, x.flip(-1)) for k in range(4)]


def test_p_zero_is_the_identity_and_draws_are_keyed_per_image():
    x, pipe = _images(), AugmentPipe()
    seeds = list(range(100, 106))
    assert torch.equal(pipe(x, 0.0, seeds=seeds), x)
    full = pipe(x, 1.0, seeds=seeds)
    assert (full - x).abs().amax(dim=(1, 2, 3)).min() > 0.1  # every image changed
    assert torch.equal(pipe(x, 1.0, seeds=seeds), full)  # same keys, same draws
    assert torch.equal(pipe(x[2:4], 1.0, seeds=seeds[2:4]), full[2:4])  # not the batch's
    assert not torch.allclose(pipe(x, 1.0, seeds=[s + 1 for s in seeds]), full)


def test_flips_and_quarter_turns_are_exact_and_reach_all_eight_orientations():
    x = _images(n=32)
    out = AugmentPipe.only("xflip", "rotate90")(x, 1.0, seeds=list(range(32)))
    found = set()
    for a, b in zip(x, out):
        matches = [i for i, t in enumerate(_dihedral(a)) if (t - b).abs().max() < 1e-12]
        assert len(matches) == 1
        found.add(matches[0])
    assert len(found) >= 6  # 32 draws over 8 orientations


def test_integer_translation_moves_whole_pixels():
    x = _images(n=8, size=16)
    out = AugmentPipe.only("xint")(x, 1.0, seeds=list(range(8)))
    shifts = set()
    for a, b in zip(x, out):  # the centre 8x8 equals the input shifted by at most 2 pixels
        hits = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if (b[:, 4:12, 4:12] - a[:, 4 - dy : 12 - dy, 4 - dx : 12 - dx]).abs().max() < 1e-12
        ]
        assert len(hits) == 1
        shifts.add(hits[0])
    assert len(shifts) > 2


def test_colour_transforms_keep_luma_or_shift_it_uniformly():
    x = _images()
    seeds = list(range(6))
    hue_sat = AugmentPipe.only("hue", "saturation")(x, 1.0, seeds=seeds)
    torch.testing.assert_close(hue_sat.mean(1), x.mean(1), atol=1e-12, rtol=0)
    assert (hue_sat - x).abs().max() > 0.05
    bright = AugmentPipe.only("brightness")(x, 1.0, seeds=seeds) - x  # a constant per image
    assert (bright.flatten(1).std(1) < 1e-12).all() and bright.abs().max() > 1e-3


def test_scaling_and_rotation_move_pixels_and_keep_the_range():
    x = _images(size=16)
    out = AugmentPipe.only("scale", "rotate", "aniso", "xfrac")(x, 1.0, seeds=list(range(6)))
    assert (out - x).abs().amax(dim=(1, 2, 3)).min() > 0.05
    assert out.abs().max() <= 1 + 1e-9  # bilinear with reflection: no value outside the input's


def test_the_pipe_is_twice_differentiable_with_respect_to_the_images():
    x = _images(n=2, size=6).requires_grad_(True)
    pipe = AugmentPipe()
    f = lambda t: pipe(t, 0.8, seeds=[3, 4])  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))  # R1 back-propagates through the pipe


def test_ada_adjust_moves_p_by_the_sign_of_rt_minus_target():
    p = torch.tensor(0.5)
    step = 64 * 4 / (10 * 1000)
    up = ada_adjust(p, torch.tensor([200, 256]), target=0.6, images=256, ada_kimg=10)
    down = ada_adjust(p, torch.tensor([100, 256]), target=0.6, images=256, ada_kimg=10)
    assert up.item() == pytest.approx(0.5 + step) and down.item() == pytest.approx(0.5 - step)
    top = ada_adjust(torch.tensor(0.999), torch.tensor([8, 8]), target=0.6, images=256, ada_kimg=1)
    assert top == 1
    assert ada_adjust(p, torch.tensor([0, 0]), target=0.6, images=256, ada_kimg=1) == p
    counts = sign_counts(torch.tensor([[2.0], [-1.0], [0.0], [float("nan")], [3.0]]))
    assert counts.tolist() == [1, 5]


def _cfg(tmp_path: Path, *overrides: str):
    return compose(
        [
            "logger=csv",
            f"paths.output_dir={tmp_path}",
            "data.synthetic_length=64",
            "model.recipe.batch_size=8",
            "model.recipe.sample_every_kimg=10",
            "model.recipe.ckpt_every_kimg=10",
            "callbacks.swd=null",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "module.augment=ada",
            "module.ada_interval=2",
            "module.ada_kimg=1",
            *overrides,
        ]
    )


@pytest.mark.parametrize(("bias", "rises"), [(50.0, True), (-50.0, False)])
def test_p_rises_when_d_is_sure_of_the_reals_and_falls_otherwise(bias, rises, tmp_path):
    """A D whose last bias is +50 calls every real real (r_t = 1 > 0.6): after 8 minibatches of 8
    with an adjustment every 2, p has risen by 4 x 16 / 1000; at -50 (r_t = -1) it falls. (A
    small learning rate keeps D where it is: at 0.002 Adam takes the bias' effect away within
    6 minibatches.)"""
    cfg = _cfg(
        tmp_path,
        "model.recipe.prior_kimg=0.064",
        "module.ada_p=0.5",
        "module.log_every=1",
        "module.lr=1e-5",
    )
    datamodule, module, trainer = build_run(cfg)
    with torch.no_grad():
        module.discriminator.final_linear[-1].bias.fill_(bias)
    trainer.fit(module, datamodule=datamodule)
    step = 4 * 16 / 1000
    assert module.ada_p.item() == pytest.approx(0.5 + step if rises else 0.5 - step, abs=1e-6)
    assert module.ada_signs.tolist() == [0, 0]  # reset after the last adjustment
    logged = trainer.callback_metrics["train/ada_p"].item()
    assert logged == pytest.approx(module.ada_p.item(), abs=1e-6)


class _Recorder(torch.nn.Module):
    """A D stand-in that records its inputs: the mean of each image as the logit."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return (self.w * x).flatten(1).mean(1, keepdim=True)


def test_reals_are_augmented_identically_in_dmain_and_dreg_and_r1_sees_through_the_pipe(
    tmp_path,
):
    cfg = _cfg(tmp_path, "model.recipe.prior_kimg=0.008")
    _, module, _ = build_run(cfg)
    loss = module.loss
    loss.augment, loss.D = AugmentPipe(), _Recorder()
    loss.d_main_forward = loss.D
    hq = _images(n=4, size=module.hparams.model["size"]).float()
    batch = {"hq": hq, "host_seed": [11, 12, 13, 14], "host_batch_seed": [5]}
    p = torch.tensor(1.0)
    loss.d_main(batch, augment_p=p)
    real_main, _ = loss.D.seen
    loss.d_reg(batch, augment_p=p)
    real_reg = loss.D.seen[-1]
    torch.testing.assert_close(real_reg, real_main, atol=0, rtol=0)
    expected = AugmentPipe()(hq, p, seeds=[mix(s, AUG_REAL) for s in batch["host_seed"]])
    torch.testing.assert_close(real_main, expected, atol=1e-6, rtol=0)
    assert (real_main - hq).abs().max() > 0.05
    # R1 of D(x) = mean(aug(x)): the gradient of a colour/brightness-changed mean is not the
    # plain 1/N of every pixel, and it is zero without the pipe's p
    with_aug, _ = loss.d_reg(batch, augment_p=p)
    without, _ = loss.d_reg(batch, augment_p=torch.tensor(0.0))
    n = hq[0].numel()
    plain_r1 = 1.0 / n  # |grad|^2 = N * (1/N)^2
    assert without.item() == pytest.approx(loss.r1_gamma / 2 * loss.r1_every * plain_r1, rel=1e-5)
    assert abs(with_aug.item() - without.item()) > 1e-3 * without.item()


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


class _StartProbe(L.Callback):
    """Records the module's adaptive-augmentation state when (resumed) training starts."""

    seen: ClassVar[dict] = {}

    def on_train_start(self, trainer, pl_module):
        _StartProbe.seen = {"p": pl_module.ada_p.clone(), "signs": pl_module.ada_signs.clone()}


ADA_RESUME = [
    "module.log_every=1",
    "module.ada_interval=2",
    "module.ada_kimg=0.5",
    "module.ada_p=0.5",
]


def test_a_resumed_run_starts_from_the_checkpointed_p_and_sign_count(tmp_path):
    """5 minibatches of 8 with adjustments every 2: the checkpoint holds a moved p and a
    half-full sign count (1 minibatch of 2), and the resumed run starts from both."""
    first = train(_cfg(tmp_path / "a", *ADA_RESUME, "model.recipe.prior_kimg=0.04"))
    saved = _state(first["checkpoint"])
    assert int(saved["images_seen"]) == 40 and int(saved["ada_signs"][1]) == 8
    assert saved["ada_p"].item() != 0.5  # adjusted twice, by 0.032 each
    cfg = _cfg(
        tmp_path / "b",
        *ADA_RESUME,
        "model.recipe.prior_kimg=0.056",
        f"ckpt_path={first['checkpoint']}",
    )
    with open_dict(cfg):
        cfg.callbacks.probe = {"_target_": f"{__name__}._StartProbe"}
    resumed = train(cfg)
    assert _StartProbe.seen["p"].item() == saved["ada_p"].item()
    assert torch.equal(_StartProbe.seen["signs"], saved["ada_signs"])
    assert int(_state(resumed["checkpoint"])["ada_signs"][1]) == 8  # 7 minibatches: 1 counted


@pytest.mark.slow
def test_p_and_the_sign_count_resume_exactly(tmp_path):
    """float64: 12 minibatches straight, or 5 (a checkpoint with a half-full sign count,
    adjustments every 2) then resumed to 12, end on the same p, count and weights."""
    common = [
        *ADA_RESUME,
        "trainer.precision=64-true",
        "model.recipe.ckpt_every_kimg=0.04",
        "module.ada_p=0.5",
    ]
    straight = train(_cfg(tmp_path / "a", *common, "model.recipe.prior_kimg=0.096"))
    first = train(_cfg(tmp_path / "b", *common, "model.recipe.prior_kimg=0.04"))
    ckpt = first["checkpoint"]
    half = _state(ckpt)
    assert int(half["images_seen"]) == 40 and int(half["ada_signs"][1]) == 8  # 1 of 2 counted
    resumed = train(
        _cfg(tmp_path / "b", *common, "model.recipe.prior_kimg=0.096", f"ckpt_path={ckpt}")
    )
    a, b = _state(straight["checkpoint"]), _state(resumed["checkpoint"])
    assert int(a["images_seen"]) == int(b["images_seen"]) == 96
    assert a["ada_p"].item() != 0.5
    assert a["ada_p"].item() == pytest.approx(b["ada_p"].item(), abs=1e-12)
    assert torch.equal(a["ada_signs"], b["ada_signs"])
    diff = max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())
    assert diff < 1e-10


@pytest.mark.slow
def test_two_processes_augment_and_adapt_p_as_one_process_does(tmp_path):
    """float64, 24 minibatches of 8 with ADA (p from 0.5, adjusted every 2): ``trainer=ddp_sim``
    with 4 per process ends on the p, sign count and weights of ``trainer=cpu`` with 8."""

    from tests.test_distributed import INVARIANCE, cli_run, exported, last_state, max_diff

    common = ["stage=prior", *INVARIANCE, "module.augment=ada", *ADA_RESUME]

    def run(name: str, *overrides: str) -> Path:
        return cli_run(tmp_path, name, *common, *overrides, timeout=900)

    one = run("one", "trainer=cpu", "model.recipe.batch_size=8")
    two = run("two", "trainer=ddp_sim", "model.recipe.batch_size=4")
    a, b = last_state(one), last_state(two)
    assert a["ada_p"].item() != 0.5
    assert a["ada_p"].item() == pytest.approx(b["ada_p"].item(), abs=1e-12)
    assert torch.equal(a["ada_signs"], b["ada_signs"])
    assert max_diff(exported(one / "prior.pt"), exported(two / "prior.pt")) <= 1e-4


def test_a_steady_state_step_with_ada_reads_nothing_back(tmp_path, monkeypatch):
    """Minibatch 5 (main phases) and 16 (R1, path length and a p adjustment): the pipe's draws,
    the sign count and the controller stay on the device (no item/bool/int/float/tolist/cpu)."""
    from tests.test_sync import SyncCounter

    counter = SyncCounter(monkeypatch, {5, 16})
    cfg = _cfg(
        tmp_path,
        "model.recipe.prior_kimg=0.15",
        "module.r1_gamma=10",
        "module.r1_every=4",
        "module.pl_weight=2",
        "module.ada_p=0.5",
        "module.ada_interval=4",
    )
    train(cfg)
    assert counter.counts == {5: [], 16: []}
