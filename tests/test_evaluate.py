"""stage=evaluate: report files, PSNR equal to a direct computation, optional metrics."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from gpen_lightning.app import build_stage
from gpen_lightning.config import compose
from gpen_lightning.data import FaceFolder, SyntheticFaces, degrade_fixed
from gpen_lightning.zoo import build, export_official

from .conftest import shared_path


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    net = build("gpen-tiny-32").eval()
    path = tmp_path_factory.mktemp("w") / "GPEN-tiny-32.pth"
    export_official(net, path)
    return path, net


def _direct_psnr(net, dataset, cfg) -> float:
    """PSNR of the network on the same seeded LQ faces, computed by hand."""
    from hydra.utils import instantiate

    degradation = instantiate(cfg.degradation)
    values = []
    for i in range(len(dataset)):
        item = dataset[i]
        pair = degrade_fixed(
            degradation, item["hq"][None], torch.tensor([item["index"]]), seed=cfg.eval_seed
        )
        with torch.no_grad():
            out = (net(pair["lq"].float() / 127.5 - 1).clamp(-1, 1) + 1) / 2
        mse = (out - pair["hq"].float() / 255).pow(2).mean().item()
        values.append(10 * math.log10(1 / mse))
    return sum(values) / len(values)


def _run(tmp_path, weights, *overrides):
    cfg = compose(["stage=evaluate", f"weights={weights}", f"output={tmp_path}", *overrides])
    return cfg, build_stage(cfg).run()


@pytest.mark.parametrize("source", ["faces-hq", "synthetic"])
def test_reports_and_psnr_equal_a_direct_computation(source, tiny_weights, tmp_path):
    path, net = tiny_weights
    if source == "faces-hq":
        folder = shared_path("data", "faces-hq")
        cfg, _ = _run(tmp_path, path, f"input={folder}", "max_images=12", "batch_size=5")
        dataset = FaceFolder(folder, size=32, flip=False)
        dataset = torch.utils.data.Subset(dataset, range(12))
        items = [dict(dataset[i], index=i) for i in range(12)]  # Subset keeps the folder index
    else:
        cfg, _ = _run(tmp_path, path, "synthetic_length=10", "batch_size=4")
        items = SyntheticFaces(size=32, length=10, flip=False)
    for name in ("report.md", "report.csv", "report.json", "grid.png"):
        assert (tmp_path / name).is_file(), name
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["metrics"]) == {"input", "bicubic", "gpen"}
    direct = _direct_psnr(net, items, cfg)
    assert report["metrics"]["gpen"]["psnr"] == pytest.approx(direct, abs=1e-3)
    with open(tmp_path / "report.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert float(rows["gpen"]["psnr"]) == pytest.approx(direct, abs=1e-3)
    assert report["metrics"]["input"]["psnr"] > 10  # the degraded input resembles the HQ face
    assert "| gpen |" in (tmp_path / "report.md").read_text()


def test_missing_weights_are_named_and_other_metrics_still_run(
    tiny_weights, tmp_path, caplog, alexnet_file, irse_file
):
    path, _ = tiny_weights
    _, result = _run(
        tmp_path,
        path,
        "synthetic_length=6",
        "fid_weights=/missing/weights-inception.pth",
        f"lpips_weights={alexnet_file[0]}",
        f"id_weights={irse_file[0]}",
    )
    assert "FID skipped" in caplog.text and "weights-inception-2015-12-05" in caplog.text
    row = result["table"]["gpen"]
    assert set(row) == {"psnr", "ssim", "lpips", "id_deg"}
    assert row["lpips"] > 0 and 0 <= row["id_deg"] <= 180
    assert result["table"]["input"]["psnr"] != row["psnr"]


def test_a_prior_is_evaluated_by_sliced_wasserstein_distance(tmp_path):
    """weights=prior.pt: samples of the GAN prior against the faces; an untrained prior is far
    from them, and the report names it."""
    torch.manual_seed(0)
    prior = build("gpen-tiny-32", part="prior").eval()
    path = tmp_path / "prior.pt"
    torch.save(prior.state_dict(), path)
    _, result = _run(tmp_path / "out", path, "synthetic_length=24", "batch_size=8")
    table = result["table"]
    assert list(table) == ["prior"] and set(table["prior"]) == {"swd_32", "swd_16", "swd"}
    assert table["prior"]["swd"] > 5.0  # identical sets score 0 (tests/test_swd.py)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["network"].startswith("GAN prior, 32 px")
    assert (tmp_path / "out" / "grid.png").is_file()
