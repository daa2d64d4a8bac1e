"""The scorer's metrics: FID's parts against torchmetrics, the feature cache and the reference
statistics of a real set; LMD (bundled RetinaFace); dlib identity; a missing optional package."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpen_lightning.app import build_stage
from gpen_lightning.config import compose
from gpen_lightning.metrics.fid import FeatureCache, FidStatistics, frechet_distance
from gpen_lightning.metrics.scorer import ScoreBook, Scorer

from .conftest import shared_path


def test_frechet_distance_equals_torchmetrics_and_statistics_round_trip(tmp_path):
    from torchmetrics.image.fid import _compute_fid

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(300, 16, generator=gen, dtype=torch.float64)
    b = torch.randn(200, 16, generator=gen, dtype=torch.float64) * 1.3 + 0.4
    sa, sb = FidStatistics.of(a), FidStatistics.of(b)
    want = float(_compute_fid(sa.mu, sa.sigma, sb.mu, sb.sigma))
    assert frechet_distance(sa, sb) == pytest.approx(want, rel=1e-9)
    assert frechet_distance(sa, sa) == pytest.approx(0.0, abs=1e-8)
    # the mean shift alone: |0.4|^2 per dimension, plus the covariance term
    assert frechet_distance(sa, sb) > 16 * 0.4**2
    back = FidStatistics.load(sa.save(tmp_path / "stats.npz"))
    assert back.n == 300 and torch.equal(back.mu, sa.mu) and torch.equal(back.sigma, sa.sigma)
    np.savez(tmp_path / "bad.npz", mean=np.zeros(3))
    with pytest.raises(ValueError, match="not an FID statistics file"):
        FidStatistics.load(tmp_path / "bad.npz")


def _faces(folder, n, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = torch.randint(0, 256, (size, size, 3), generator=gen, dtype=torch.uint8)
        Image.fromarray(image.numpy()).save(folder / f"{i:03d}.png")
    return folder


class TinyFeatures(torch.nn.Module):
    """A fast stand-in for the Inception network: a fixed projection of 4x4-pooled pixels."""

    def __init__(self, path) -> None:
        super().__init__()
        self.path = Path(path)
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(48, 8, generator=gen, dtype=torch.float64))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(images.double() / 255, 4)
        return pooled.flatten(1) @ self.w


def test_real_set_fid_against_a_reference_folder_then_its_saved_statistics(tmp_path, monkeypatch):
    """lq=DIR alone: FID of the input and the network against fid_reference; the reference's
    statistics are saved and give the same FID when passed back; the input folder's features
    come from the cache the second time (the network's outputs are featurised again)."""
    from gpen_lightning.metrics import scorer as scorer_module
    from gpen_lightning.zoo import build, export_official

    calls = []

    def load(path):
        net = TinyFeatures(path)
        net.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
        return net

    monkeypatch.setattr(scorer_module, "load_inception", load)
    torch.manual_seed(0)
    weights = tmp_path / "GPEN-tiny-32.pth"
    export_official(build("gpen-tiny-32").eval(), weights)
    lq, ref = _faces(tmp_path / "lq", 10), _faces(tmp_path / "ref", 12, seed=1)
    common = [
        "stage=evaluate",
        f"weights={weights}",
        f"lq={lq}",
        f"fid_weights={weights}",  # any existing file: the stand-in reads nothing
        f"fid_cache={tmp_path / 'cache'}",
    ]
    first = build_stage(compose([*common, f"fid_reference={ref}", f"output={tmp_path / 'a'}"]))
    table = first.run()["table"]
    assert list(table) == ["input", "gpen"] and all(row["fid"] > 0 for row in table.values())
    assert table["input"]["fid"] != pytest.approx(table["gpen"]["fid"])
    assert sum(calls) == 12 + 10 + 10  # reference, input, network
    stats = tmp_path / "a" / "fid_reference.npz"
    assert FidStatistics.load(stats).n == 12
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3
    calls.clear()
    again = build_stage(compose([*common, f"fid_reference={stats}", f"output={tmp_path / 'b'}"]))
    table2 = again.run()["table"]
    assert table2["input"]["fid"] == pytest.approx(table["input"]["fid"], rel=1e-9)
    assert table2["gpen"]["fid"] == pytest.approx(table["gpen"]["fid"], rel=1e-9)
    assert sum(calls) == 10  # only the network's outputs: the input folder came from the cache
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["protocol"] == "real" and "torch-fidelity" in report["sources"]["fid"]
    with pytest.raises(ValueError, match="fid_reference"):
        build_stage(compose([*common[:3], f"output={tmp_path / 'c'}"])).run()


def test_feature_cache_keys_on_content(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"1234")
    net = TinyFeatures(tmp_path / "w.pth")
    cache = FeatureCache(tmp_path)
    key = FeatureCache.key("abc", net)
    assert cache.get(key) is None and key != FeatureCache.key("abd", net)
    cache.put(key, torch.ones(2, 3))
    assert torch.equal(cache.get(key), torch.ones(2, 3))
    assert FeatureCache(None).get(key) is None


# -- LMD ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_face():
    path = shared_path("data", "faces-hq", "ffhq_00000.png")
    image = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    return torch.nn.functional.interpolate(image[None].float(), size=512, mode="area")[0].byte()


def test_lmd_is_zero_for_a_face_itself_and_follows_a_known_shift(shared_face):
    from gpen_lightning.metrics.landmarks import LandmarkDistance

    lmd = LandmarkDistance()
    face = shared_face[None]
    shifts = {s: torch.roll(face, shifts=s, dims=-1) for s in (8, 32)}  # s px to the right
    assert float(lmd(face, face)) == 0.0
    # anchors are 8/16/32 px apart: a 32 px shift moves every landmark by 32 px exactly
    assert float(lmd(shifts[32], face)) == pytest.approx(32.0, abs=1.0)
    assert 6.0 < float(lmd(shifts[8], face)) < 10.0
    # at 256 px the face is resized to 512 first: a 16 px shift there is 32 px at 512
    half = torch.nn.functional.interpolate(face.float(), size=256, mode="area").byte()
    moved = torch.roll(half, shifts=16, dims=-1)
    assert float(lmd(moved, half)) == pytest.approx(32.0, abs=2.0)


def test_a_face_the_detector_misses_is_counted_not_dropped(shared_face):
    scorer = Scorer.load(lmd=True)
    assert "RetinaFace" in scorer.sources["lmd"]
    hq = shared_face[None].repeat(3, 1, 1, 1)
    out = hq.clone()
    out[1] = 128  # a flat grey image: no face
    book = ScoreBook(scorer)
    book.add("method", out, scorer.reference(hq))
    per_face = book.per_face()["method"]["lmd"]
    assert math.isnan(float(per_face[1])) and float(per_face[0]) == 0.0
    row = book.table()["method"]
    assert row["lmd_missing"] == 1 and row["lmd"] == 0.0  # the mean of the faces found


# -- dlib identity -----------------------------------------------------------------------------
def test_dlib_identity_is_zero_for_a_face_and_larger_between_people_than_after_jpeg(tmp_path):
    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:  # (its import needs
        pytest.skip("face-recognition-models is not installed")  # pkg_resources: not imported)
    from gpen_lightning.metrics.identity import DlibIdentity

    ident = DlibIdentity()
    faces = []
    for name in ("ffhq_00000.png", "ffhq_00001.png"):
        image = Image.open(shared_path("data", "faces-hq", name)).convert("RGB").resize((512, 512))
        faces.append(np.array(image))
    image = Image.fromarray(faces[0])
    image.save(tmp_path / "q.jpg", quality=30)
    jpeg = np.array(Image.open(tmp_path / "q.jpg"))
    batch = torch.from_numpy(np.stack([faces[0], faces[1], jpeg])).permute(0, 3, 1, 2)
    d = ident.descriptors(batch)
    same = ident.compare(d[:1], d[:1])
    assert float(same["id_dlib"]) == 0.0 and float(same["id_dlib_cos"]) == pytest.approx(1.0)
    other = float(ident.compare(d[:1], d[1:2])["id_dlib"])
    compressed = float(ident.compare(d[:1], d[2:3])["id_dlib"])
    assert 0 < compressed < other and compressed < 0.6  # dlib's same-person threshold


def test_a_missing_optional_package_is_named_with_its_install_and_the_rest_run(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib raises ImportError
    scorer = Scorer.load(dlib_identity=True)
    assert scorer.dlib is None
    assert "dlib identity skipped" in caplog.text and "pip install" in caplog.text
    hq = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    scores = scorer.per_image(hq, scorer.reference(hq))
    assert set(scores) == {"psnr", "ssim"} and torch.isinf(scores["psnr"]).all()


# -- NIQE ----------------------------------------------------------------------------------------
# Reference values: basicsr 1.4.2's ``basicsr.metrics.niqe.niqe`` (a port that reports agreement
# with the authors' MATLAB release) on the same gray images with the same pristine model
# (MU, COV below). Our NIQE is written from the definition; its MATLAB-style half-size resize
# computes in float64 where basicsr's runs in float32, hence the tolerance.
MU, COV = np.linspace(0.1, 3.6, 36), np.diag(np.linspace(0.01, 1.0, 36))


def _gray(image: Image.Image) -> np.ndarray:
    weights = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
    return np.round(np.asarray(image).astype(np.float64) @ weights)  # MATLAB rgb2gray, uint8


def test_niqe_equals_reference_values():
    from PIL import ImageFilter

    from gpen_lightning.metrics.niqe import niqe

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:192, 0:288]
    wave = 128 + 60 * np.sin(xx / 7.0) * np.cos(yy / 11.0) + rng.normal(0, 20, (192, 288))
    assert niqe(np.clip(wave, 0, 255).round(), MU, COV) == pytest.approx(
        36.03685741939441, rel=1e-4
    )
    path = shared_path("data", "faces-hq", "ffhq_00000.png")
    face = Image.open(path).convert("RGB").resize((512, 512), Image.BICUBIC)
    sharp = niqe(_gray(face), MU, COV)
    blurred = niqe(_gray(face.filter(ImageFilter.GaussianBlur(3))), MU, COV)
    assert sharp == pytest.approx(22.865321630898247, rel=1e-4)
    assert blurred == pytest.approx(20.761912493997183, rel=1e-4)
    with pytest.raises(ValueError, match="at least 96x96"):
        niqe(np.zeros((64, 64)), MU, COV)


def test_niqe_reads_its_model_from_a_local_file_and_scores_a_real_set(tmp_path):
    """niqe_params= an .npz (or MATLAB .mat) pristine model; lq=DIR restored=DIR scored by NIQE
    alone (no network, no FID): each row is the mean of the images' NIQE."""
    from scipy.io import savemat

    from gpen_lightning.metrics.niqe import Niqe, load_pristine

    np.savez(tmp_path / "model.npz", mu_prisparam=MU, cov_prisparam=COV)
    savemat(tmp_path / "model.mat", {"mu_prisparam": MU[None], "cov_prisparam": COV})
    for name in ("model.npz", "model.mat"):
        mu, cov = load_pristine(tmp_path / name)
        assert np.array_equal(mu, MU) and np.array_equal(cov, COV)
    np.savez(tmp_path / "bad.npz", mu=MU)
    with pytest.raises(ValueError, match="mu_prisparam"):
        load_pristine(tmp_path / "bad.npz")
    lq, other = _faces(tmp_path / "lq", 3, size=96), _faces(tmp_path / "other", 3, size=96, seed=2)
    result = build_stage(
        compose(
            [
                "stage=evaluate",
                f"lq={lq}",
                f"restored={{other: {other}}}",
                f"niqe_params={tmp_path / 'model.npz'}",
                f"output={tmp_path / 'out'}",
            ]
        )
    ).run()
    images = torch.stack(
        [
            torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1)
            for p in sorted(other.glob("*.png"))
        ]
    )
    want = Niqe(tmp_path / "model.npz")(images)
    assert list(result["table"]) == ["input", "other"]
    assert result["table"]["other"]["niqe"] == pytest.approx(float(want.mean()), rel=1e-9)
    small = Niqe(tmp_path / "model.npz")(images[:, :, :64, :64])  # under one 96 px block
    assert np.isnan(small).all()


def test_y_channel_psnr_follows_a_known_grey_shift():
    """A uniform shift of d on R, G and B moves the BT.601 luma (video range) by
    d * (65.481 + 128.553 + 24.966) / 255: PSNR_Y = -20 log10 of that; RGB PSNR = -20 log10 d."""
    scorer = Scorer.load(y_channel=True)
    hq = torch.full((2, 3, 24, 24), 100, dtype=torch.uint8)
    hq[1, :, ::2] = 60  # some structure
    out = hq + torch.tensor([10, 20], dtype=torch.uint8).view(2, 1, 1, 1)
    scores = scorer.per_image(out, scorer.reference(hq))
    d = torch.tensor([10, 20], dtype=torch.float64) / 255
    assert scores["psnr"] == pytest.approx(-20 * torch.log10(d), abs=1e-4)
    assert scores["psnr_y"] == pytest.approx(-20 * torch.log10(d * 219 / 255), abs=1e-4)
    assert (scores["ssim_y"] <= 1).all() and "psnr_y" in scorer.sources
