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
        out = (out * 255).round() / 255  # as a saved PNG holds it (the stage scores those)
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
    # every face's score, and intervals around each mean
    with open(tmp_path / "per_image.csv") as f:
        faces = list(csv.DictReader(f))
    gpen = [float(r["psnr"]) for r in faces if r["method"] == "gpen"]
    assert len(faces) == 3 * len(items) and len(gpen) == len(items)
    assert sum(gpen) / len(gpen) == pytest.approx(report["metrics"]["gpen"]["psnr"], abs=1e-6)
    for method, cells in report["ci95"].items():
        for metric, (lo, hi) in cells.items():
            assert lo <= report["metrics"][method][metric] <= hi and lo < hi, (method, metric)
    paired = report["paired"]["gpen - input"]["psnr"]
    mean = report["metrics"]["gpen"]["psnr"] - report["metrics"]["input"]["psnr"]
    assert paired[0] == pytest.approx(mean, abs=1e-6) and paired[1] <= paired[0] <= paired[2]
    assert "| gpen - bicubic |" in (tmp_path / "report.md").read_text()


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


def test_bootstrap_intervals_cover_the_mean_and_shrink_with_more_faces():
    from gpen_lightning.metrics import bootstrap_ci, paired_difference

    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(2000, generator=gen, dtype=torch.float64) * 2 + 25  # PSNR-like
    few, many = scores[:20], scores
    lo_few, hi_few = bootstrap_ci(few)
    lo_many, hi_many = bootstrap_ci(many)
    assert lo_few < float(few.mean()) < hi_few and lo_many < float(many.mean()) < hi_many
    # the width shrinks as 1 / sqrt(n): 10x the faces, ~1/sqrt(100) the width
    assert (hi_many - lo_many) < 0.2 * (hi_few - lo_few)
    assert bootstrap_ci(few, seed=1) != (lo_few, hi_few) and bootstrap_ci(few) == (lo_few, hi_few)
    # the 95 % interval of the mean of N(25, 2^2) x 2000 is about 25 +- 1.96 * 2 / sqrt(2000)
    assert hi_many - lo_many == pytest.approx(2 * 1.96 * 2 / 2000**0.5, rel=0.15)
    # paired: a constant improvement is exact; an unrelated one straddles 0
    assert paired_difference(few + 0.5, few) == pytest.approx((0.5, 0.5, 0.5))
    noise = torch.randn(20, generator=gen, dtype=torch.float64)
    mean, lo, hi = paired_difference(few + noise, few)
    assert lo < 0 < hi and lo <= mean <= hi
    with pytest.raises(ValueError, match="same images"):
        paired_difference(few, many)


def _write_faces(folder, names, size=32, seed=0, suffix=".png"):
    """Small random faces as image files (the paired-set tests)."""
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        image = torch.randint(0, 256, (size, size, 3), generator=gen, dtype=torch.uint8)
        Image.fromarray(image.numpy()).save(folder / f"{name}{suffix}")
    return folder


def test_paired_folders_match_by_name_and_name_every_mismatch(tmp_path):
    from gpen_lightning.evaluation.protocols import paired_set

    hq = _write_faces(tmp_path / "hq", ["a", "b", "c"])
    lq = _write_faces(tmp_path / "lq", ["a", "b"], suffix=".jpg")
    _write_faces(tmp_path / "lq", ["d"])
    with pytest.raises(ValueError, match=r"1 HQ image\(s\) have no LQ image: c") as err:
        paired_set(str(lq), str(hq), restored={})
    assert "1 LQ image(s) have no HQ image: d" in str(err.value)
    (lq / "d.png").unlink()
    _write_faces(tmp_path / "lq", ["c"], suffix=".jpg")
    faces = paired_set(str(lq), str(hq), restored={})  # a.jpg pairs a.png: names, not suffixes
    assert faces.names == ["a", "b", "c"] and faces.size == (32, 32)
    item = faces.dataset[2]
    assert item["HQ"].shape == (3, 32, 32) and item["LQ"].dtype == torch.uint8
    _write_faces(tmp_path / "odd", ["a", "b", "c"])
    _write_faces(tmp_path / "odd", ["b"], size=40)  # one HQ of another size
    with pytest.raises(ValueError, match=r"one size; most are 32x32 but b.png \(40x40\)"):
        paired_set(str(lq), str(tmp_path / "odd"), restored={})
    other = _write_faces(tmp_path / "other", ["a", "b", "c"], size=64)
    with pytest.raises(ValueError, match="restored other images are 64x64 but the HQ"):
        paired_set(str(lq), str(hq), restored={"other": other})
    with pytest.raises(ValueError, match="same name"):
        _write_faces(tmp_path / "hq", ["a"], suffix=".jpg")
        paired_set(str(lq), str(hq), restored={})


def test_saved_faces_scored_from_disk_equal_the_seeded_in_process_run(tiny_weights, tmp_path):
    """Held-out faces degraded once and saved (save_images=true), then scored as a paired set
    (lq= hq=) with the network and its saved outputs as another method (restored=): the network
    row equals the in-process one, and so does the restored folder's."""
    path, _ = tiny_weights
    first = tmp_path / "first"
    _, seeded = _run(first, path, "synthetic_length=6", "batch_size=4", "save_images=true")
    images = first / "images"
    assert sorted(p.name for p in images.iterdir()) == ["bicubic", "gpen", "hq", "input"]
    assert len(list((images / "input").glob("*.png"))) == 6
    _, paired = _run(
        tmp_path / "second",
        path,
        f"lq={images / 'input'}",
        f"hq={images / 'hq'}",
        f"restored={{saved: {images / 'gpen'}}}",
        "batch_size=5",
    )
    table = paired["table"]
    assert list(table) == ["input", "gpen", "saved"]
    for metric in ("psnr", "ssim"):
        assert table["gpen"][metric] == pytest.approx(seeded["table"]["gpen"][metric], abs=1e-5)
        assert table["saved"][metric] == pytest.approx(seeded["table"]["gpen"][metric], abs=1e-5)
        assert table["input"][metric] == pytest.approx(seeded["table"]["input"][metric], abs=1e-5)
    report = json.loads((tmp_path / "second" / "report.json").read_text())
    assert report["protocol"] == "paired" and "gpen - saved" in report["paired"]
    assert report["paired"]["gpen - saved"]["psnr"] == pytest.approx([0, 0, 0], abs=1e-5)
    with open(tmp_path / "second" / "per_image.csv") as f:
        assert {r["face"] for r in csv.DictReader(f)} == {f"{i:06d}" for i in range(6)}
    with pytest.raises(ValueError, match=r"\['gpen'\] are already rows"):
        _run(tmp_path / "third", path, f"lq={images / 'input'}", f"restored={images / 'gpen'}")
    with pytest.raises(FileExistsError, match="already holds images"):
        _run(first, path, "synthetic_length=6", "save_images=true")


def test_several_networks_give_one_row_each(tiny_weights, tmp_path):
    import shutil

    path, _ = tiny_weights
    twin = shutil.copy(path, tmp_path / "twin.pth")
    torch.manual_seed(1)
    other = tmp_path / "other.pth"
    export_official(build("gpen-tiny-32").eval(), other)
    _, result = _run(tmp_path / "out", f"[{path},{twin},{other}]", "synthetic_length=4")
    table = result["table"]
    assert list(table) == ["input", "bicubic", "GPEN-tiny-32", "twin", "other"]
    assert table["twin"] == pytest.approx(table["GPEN-tiny-32"])  # the same weights
    assert table["other"]["psnr"] != pytest.approx(table["twin"]["psnr"])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {"other - input", "other - bicubic", "GPEN-tiny-32 - other"} <= set(report["paired"])
