"""The official demo's colorization, inpainting and seg2face: our preprocessing against the
demo's classes on the tiny official network (``tests/fixtures/gpen_tasks_tiny.pt``, made by
``make_task_fixture.py``), their invariants, their errors, and ``stage=restore task=...``.

Tolerance: the demo truncates its output to uint8 where we round (1 level), and colorization
resizes and round-trips 8-bit YUV on top (3 levels at most, 0.5 on average)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpen_lightning.app import build_stage
from gpen_lightning.config import compose
from gpen_lightning.restore import Restorer
from gpen_lightning.restore.tasks import LUMA, Task, brush_strokes, check_task_weights
from gpen_lightning.zoo import load_official

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURES / "gpen_tasks_tiny.pt", weights_only=False)["tasks"]


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    state = torch.load(FIXTURES / "gpen_official_tiny.pt", weights_only=False)["g_state"]
    return load_official(state).eval()


def _run(net, task: str, image: np.ndarray, **options) -> np.ndarray:
    restorer = Restorer(net, device="cpu", task=Task(task=task, **options))
    return restorer.restore(image, aligned=True).image.astype(np.int64)


def _close(ours: np.ndarray, ref: torch.Tensor, *, worst: int, mean: float) -> None:
    diff = np.abs(ours - ref.numpy().astype(np.int64))
    assert ours.shape == tuple(ref.shape)
    assert diff.max() <= worst and diff.mean() <= mean, (diff.max(), diff.mean())


@pytest.mark.parametrize(("case", "worst"), [("colorization", 3), ("colorization_same", 1)])
def test_colorization_matches_the_demo(reference, net, case, worst):
    gray = reference[case]["input"].numpy()  # (H, W): 44x40 is resized, 32x32 is not
    _close(_run(net, "colorization", gray), reference[case]["output"], worst=worst, mean=0.5)


def test_colorization_keeps_the_input_luma(net):
    """At another size than S the output's luma is the input's (the demo's YUV post-process;
    where a colour clips at 0 or 255 it cannot be: mid-range grays keep that rare)."""
    gray = (64 + np.random.default_rng(0).random((50, 46)) * 128).astype(np.uint8)
    out = _run(net, "colorization", gray).astype(np.float64)
    error = np.abs(out @ np.array(LUMA) - gray)
    assert np.median(error) <= 0.5 and error.mean() < 1.0


def test_inpainting_strokes_and_output_match_the_demo(reference, net):
    ref = reference["inpainting"]
    face = ref["input"].permute(2, 0, 1)
    broken = brush_strokes(face, np.random.RandomState(ref["seed"]))
    assert torch.equal(broken.permute(1, 2, 0), ref["broken"])  # the demo's, exactly
    assert (broken != face).any() and (broken[:, (broken != face).any(0)] == 255).all()
    fed = _run(net, "inpainting", ref["broken"].numpy())
    _close(fed, ref["output"], worst=1, mean=0.5)
    drawn = _run(net, "inpainting", ref["input"].numpy(), inpaint_strokes=True, inpaint_seed=7)
    assert np.array_equal(drawn, fed)


def test_seg2face_matches_the_demo_in_unit_range(reference, net):
    ref = reference["seg2face"]
    _close(_run(net, "seg2face", ref["input"].numpy()), ref["output"], worst=1, mean=0.5)
    # fed in [-1, 1] as restore does, the same network gives something else
    wrong = _run(net, "restore", ref["input"].numpy())
    assert np.abs(wrong[:32, :32] - ref["output"].numpy()).mean() > 5


def test_tasks_refuse_whole_photos_and_other_tasks_weights(net):
    with pytest.raises(ValueError, match="aligned=true"):
        Restorer(net, device="cpu", task=Task(task="inpainting")).restore(
            np.zeros((40, 40, 3), np.uint8)
        )
    with pytest.raises(ValueError, match="task="):
        Task(task="deblur")
    with pytest.raises(ValueError, match=r"seg2face network, but task=colorization"):
        check_task_weights("colorization", weights="w/GPEN-Seg2face-512.pth")
    with pytest.raises(ValueError, match=r"restore network, but task=inpainting"):
        check_task_weights("inpainting", weights="GPEN-BFR-512.pth")
    with pytest.raises(ValueError, match=r"colorization network, but task=restore"):
        check_task_weights("restore", model="gpen-colorization-1024")
    check_task_weights("seg2face", weights="GPEN-Seg2face-512.pth")
    check_task_weights("seg2face", weights="gpen.pt")


def test_stage_runs_colorization_on_aligned_faces(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    gray = (64 + np.random.default_rng(1).random((40, 36)) * 128).astype(np.uint8)
    Image.fromarray(gray).save(src / "a.png")
    common = [f"input={src}", f"output={out}", "model=gpen-tiny-32", "task=colorization"]
    with pytest.raises(ValueError, match="aligned=true"):
        build_stage(compose(["stage=restore", *common])).run()
    assert build_stage(compose(["stage=restore", *common, "aligned=true"])).run() == 0
    result = np.asarray(Image.open(out / "a.png").convert("RGB")).astype(np.float64)
    assert result.shape == (40, 36, 3)
    assert np.median(np.abs(result @ np.array(LUMA) - gray)) <= 0.5
