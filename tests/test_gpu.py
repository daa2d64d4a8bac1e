"""CUDA checks (marked ``gpu``; skipped without a device): both training stages in fp32 and
bf16-mixed, compiled steps, the degradation on CUDA against the CPU for the same seed, and
restoration on CUDA (eager, bf16 and CUDA graphs) against the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gpen_lightning.config import compose
from gpen_lightning.data import Degradation
from gpen_lightning.restore import Restorer
from gpen_lightning.train import train
from gpen_lightning.zoo import build

pytestmark = pytest.mark.gpu


def _cfg(tmp_path: Path, stage: str, *overrides: str):
    extra = ["module.init=none", "validate_first=true", "validate_last=true"]
    return compose(
        [
            f"stage={stage}",
            "trainer=gpu",
            "logger=csv",
            f"paths.output_dir={tmp_path}",
            "model=gpen-tiny-64",
            "model.recipe.prior_kimg=0.2",
            "model.recipe.finetune_kimg=0.2",
            "model.recipe.ckpt_every_kimg=0.1",
            "module.r1_gamma=10",
            "module.pl_weight=2",
            "data.synthetic_length=64",
            "trainer.enable_progress_bar=false",
            *(extra if stage == "finetune" else []),
            *overrides,
        ]
    )


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("stage", ["prior", "finetune"])
def test_training_steps_on_cuda(stage, precision, tmp_path):
    result = train(_cfg(tmp_path, stage, f"trainer.precision={precision}"))
    state = torch.load(result["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    assert int(state["images_seen"]) >= 200 and int(state["nonfinite_losses"]) == 0
    assert int(state["r1_steps"]) >= 2 and int(state["pl_steps"]) >= 4
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    if stage == "finetune":
        first, last = result["validation_first"], result["validation_last"]
        assert last["val/psnr"] > first["val/psnr"]


def test_compiled_prior_and_finetune_steps_on_cuda(tmp_path):
    for stage in ("prior", "finetune"):
        out = tmp_path / stage
        result = train(_cfg(out, stage, "module.compile=true", "trainer.precision=bf16-mixed"))
        state = torch.load(result["checkpoint"], map_location="cpu", weights_only=True)
        assert int(state["state_dict"]["r1_steps"]) >= 2  # R1 double backward ran (eagerly)
        assert all(
            torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
        )


def test_degradation_on_cuda_matches_cpu_for_the_same_seed():
    """Per-sample parameters come from the CPU generator on both devices, so blur, resize and
    JPEG agree; the noise is drawn on the data's device (a different RNG stream), so it is
    compared in distribution."""
    hq = torch.randint(0, 256, (8, 3, 128, 128), dtype=torch.uint8)
    quiet = Degradation(noise=None, poisson_prob=0.0)
    cpu = quiet(hq, seed=3)
    gpu = quiet(hq.cuda(), seed=3)
    for k, v in cpu["params"].items():
        assert torch.equal(v, gpu["params"][k].cpu()), k
    diff = (cpu["lq"].float() - gpu["lq"].cpu().float()).abs()
    assert diff.mean() < 0.5 and diff.max() <= 24  # JPEG rounding, mostly 0-1 levels
    noisy = Degradation(blur_probs=(0, 0, 0), downsample=(1, 1), jpeg=None, gray_prob=0.0)
    flat = torch.full((4, 3, 64, 64), 128, dtype=torch.uint8)
    s_cpu = (noisy(flat, seed=5)["lq"].float() - 128).std()
    s_gpu = (noisy(flat.cuda(), seed=5)["lq"].float().cpu() - 128).std()
    assert abs(s_cpu - s_gpu) / s_cpu < 0.1


@pytest.fixture
def exact_fp32():
    """fp32 convolutions and matmuls without TF32 (``train()`` turns it on for the process), so
    the comparisons below measure algorithm and batch-shape differences only."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_restoration_on_cuda_matches_cpu(exact_fp32):
    """CUDA against CPU (different kernels and reduction orders) within 2e-3 of outputs in
    [-1, 1]; the CUDA graph (batch 4, padded) against eager (batch 3) within 1e-4: cuDNN may pick
    another algorithm for another batch shape, so equality is not the claim."""
    torch.manual_seed(0)
    net = build("gpen-bfr-256").eval()
    crops = torch.rand(3, 3, 256, 256) * 2 - 1
    ref = Restorer(net, device="cpu").restore_faces(crops)
    eager = Restorer(net, device="cuda").restore_faces(crops).cpu()
    torch.testing.assert_close(eager, ref, atol=2e-3, rtol=0)
    bf16 = Restorer(net, device="cuda", bf16=True).restore_faces(crops).cpu()
    assert (bf16 - ref).abs().mean() < 0.02
    graphed = Restorer(net, device="cuda", batch_size=4, cuda_graph=True)
    torch.testing.assert_close(graphed.restore_faces(crops).cpu(), eager, atol=1e-4, rtol=0)
    torch.testing.assert_close(graphed.restore_faces(crops[:1]).cpu(), eager[:1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("stage", ["prior", "finetune"])
def test_training_step_on_cuda_never_waits_for_the_device(stage, tmp_path):
    """The device contract of tests/test_contract.py on a real GPU: minibatches 0-2 (0 and 2 run
    all four phases) with fused Adam and pinned copies, no read-back and no blocking copy."""
    import random

    from hydra.utils import instantiate

    from gpen_lightning.testing import audit, lightning_order

    reg = ["module.r1_gamma=10", "module.r1_every=2", "module.pl_weight=2", "module.pl_every=2"]
    cfg = _cfg(tmp_path, stage, *reg, *(["module.init=none"] if stage == "finetune" else []))
    module = instantiate(cfg.module, _convert_="all")
    lightning_order(module, "cuda")
    image = lambda: torch.rand(4, 3, 64, 64, device="cuda") * 2 - 1  # noqa: E731
    batch = {"lq": image(), "hq": image()} if stage == "finetune" else {"hq": image()}
    random.seed(0)
    module.training_step(batch, 0)  # warm-up: lazy CUDA initialisation, cuDNN plans
    torch.cuda.synchronize()
    for step in (1, 2):
        with audit() as found:
            module.training_step(batch, step)
        assert not found, f"{stage} minibatch {step}:\n{found.report()}"
    torch.cuda.synchronize()
