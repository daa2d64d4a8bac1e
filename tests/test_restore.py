"""Restoration in the wild: detection, alignment, paste-back, the Restorer API and the CLI."""

from __future__ import annotations

import hashlib
import math
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpen_lightning.app import build_stage
from gpen_lightning.config import compose
from gpen_lightning.restore import (
    Detection,
    Face,
    Paste,
    Restorer,
    RetinaFaceDetector,
    face_mask,
    similarity_transform,
    template,
)
from gpen_lightning.restore.align import warp_to
from gpen_lightning.zoo import build, export_official

from .conftest import shared_path


def _restore_files(cfg) -> int:
    """``stage=restore`` as the app runs it: the stage object of the composed config."""
    return build_stage(cfg).run()


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


class ExactDetector:
    """Reports the template landmarks of a known aligned-crop -> image transform."""

    def __init__(self, crop_to_image: np.ndarray, size: int = 512) -> None:
        self.pts = _apply(crop_to_image, template("ffhq", size))

    def __call__(self, image):
        x0, y0 = self.pts.min(0) - 40
        x1, y1 = self.pts.max(0) + 40
        return [Face(np.array([x0, y0, x1, y1]), self.pts.astype(np.float32), 0.99)]


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, (5, 2))
    m = _similarity(23.0, 0.61, 40.0, -12.5)
    est = similarity_transform(src, _apply(m, src))
    np.testing.assert_allclose(est, m, atol=1e-9)
    # a mirrored point set is fitted by a rotation, never a reflection
    mirrored = src * [-1, 1]
    est = similarity_transform(src, mirrored)
    assert np.linalg.det(est[:, :2]) > 0


def test_warp_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)
    m = _similarity(-17.0, 1.3, -30.0, 25.0)
    ref = cv2.warpAffine(
        img, m, (128, 128), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    ours = warp_to(
        torch.from_numpy(img).permute(2, 0, 1).float(), torch.tensor(m[None]).float(), 128
    )
    diff = (ours[0].permute(1, 2, 0).numpy() - ref).__abs__()
    assert diff[4:-4, 4:-4].mean() < 0.6  # OpenCV rounds its interpolation weights


def test_small_faces_are_smoothed_with_the_official_kernel_before_blending():
    """Official pipeline: a face whose box has a side under 100 px is filtered with
    [1, 2, 1] x [1, 2, 1] / 16 (cv2.filter2D, reflected border); larger faces are untouched."""
    cv2 = pytest.importorskip("cv2")
    from gpen_lightning.restore.detect import Face
    from gpen_lightning.restore.paste import smooth_small

    restored = torch.rand(2, 3, 32, 32) * 2 - 1
    faces = [
        Face(box=np.array([0, 0, 150, 99.5]), landmarks=np.zeros((5, 2)), score=1.0),  # small
        Face(box=np.array([0, 0, 150, 120]), landmarks=np.zeros((5, 2)), score=1.0),
    ]
    out = smooth_small(restored, faces, 100)
    kernel = np.outer([1, 2, 1], [1, 2, 1]).astype(np.float32) / 16
    ref = cv2.filter2D(restored[0].permute(1, 2, 0).numpy(), -1, kernel)
    torch.testing.assert_close(out[0], torch.from_numpy(ref).permute(2, 0, 1), atol=1e-6, rtol=0)
    assert torch.equal(out[1], restored[1])
    assert torch.equal(smooth_small(restored, faces, 0), restored)


def test_face_mask_is_a_feathered_square():
    m = face_mask(512)[0, 0]
    assert m.shape == (512, 512) and m.min() >= 0 and m.max() <= 1
    assert m[256, 256] == pytest.approx(1.0) and m[0, 0] < 1e-3 and m[0, 256] < 1e-3
    assert m[256, 26] == pytest.approx(0.5, abs=0.05)  # half-way at the zeroed border
    torch.testing.assert_close(m, m.flip(0))
    torch.testing.assert_close(m, m.T)


def test_alignment_lands_exact_landmarks_on_the_template():
    """A face placed by a known similarity is cut back out onto the template (sub-pixel)."""
    rng = np.random.default_rng(2)
    aligned = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    place = _similarity(14.0, 0.45, 180.0, 60.0)  # aligned crop -> photo
    cv2 = pytest.importorskip("cv2")
    photo = cv2.warpAffine(aligned, place, (640, 480), flags=cv2.INTER_LINEAR)
    restorer = Restorer(
        torch.nn.Identity(), size=512, detection=Detection(detector=ExactDetector(place))
    )
    faces, _crops, matrices = restorer._plan(torch.from_numpy(photo).permute(2, 0, 1))
    landed = _apply(matrices[0], faces[0].landmarks)
    np.testing.assert_allclose(landed, template("ffhq", 512), atol=0.01)
    inv = np.linalg.inv(np.vstack([place, [0, 0, 1]]))[:2]
    np.testing.assert_allclose(matrices[0], inv, atol=1e-3)


def test_identity_restorer_reproduces_the_photo():
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    photo = np.array(Image.fromarray(photo).resize((640, 480), Image.BICUBIC))
    place = _similarity(-8.0, 0.5, 200.0, 90.0)
    restorer = Restorer(
        torch.nn.Identity(),
        size=512,
        detection=Detection(detector=ExactDetector(place)),
        paste=Paste(small_face=0),
    )
    result = restorer.restore(photo)
    assert len(result.faces) == 1
    diff = np.abs(result.image.astype(int) - photo.astype(int))
    assert diff.mean() < 0.3 and diff.max() <= 8, (diff.mean(), diff.max())


def test_restorer_loads_official_weights_and_batches_across_images(tmp_path):
    torch.manual_seed(0)
    net = build("gpen-tiny-64").eval()
    export_official(net, tmp_path / "GPEN-tiny.pth")
    restorer = Restorer(tmp_path / "GPEN-tiny.pth", batch_size=3)
    assert restorer.size == 64
    crops = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    many = restorer.restore_many(list(crops), aligned=True)
    with torch.no_grad():
        direct = net(crops.float() / 127.5 - 1).clamp(-1, 1)
    for res, d in zip(many, direct):
        expected = ((d + 1) / 2 * 255).round().byte().permute(1, 2, 0).numpy()
        assert np.abs(res.image.astype(int) - expected.astype(int)).max() <= 1
    # alone, a batch of 1: the network's floats differ by ~1e-6 from those of the batch of 3,
    # enough to round a pixel to its neighbouring value now and then
    one = restorer.restore(crops[2], aligned=True)
    diff = np.abs(one.image.astype(int) - many[2].image.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())
    # no images: no results, whole photos or aligned crops
    assert restorer.restore_many([]) == [] and restorer.restore_many([], aligned=True) == []


def test_detector_on_the_solvay_photo():
    path = shared_path("data", "wild", "whole", "Solvay_conference_1927.png")
    image = np.array(Image.open(path).convert("RGB"))
    faces = RetinaFaceDetector()(image)
    assert len(faces) >= 25
    for f in faces:
        x0, y0, x1, y1 = f.box
        assert ((f.landmarks[:, 0] >= x0) & (f.landmarks[:, 0] <= x1)).all()
        assert ((f.landmarks[:, 1] >= y0) & (f.landmarks[:, 1] <= y1)).all()
        assert f.landmarks[0, 0] < f.landmarks[1, 0]  # left eye left of the right eye


def test_every_whole_photo_has_a_face():
    folder = shared_path("data", "wild", "whole")
    detector = RetinaFaceDetector()
    for path in sorted(folder.iterdir()):
        image = np.array(Image.open(path).convert("RGB"))
        assert detector(image), path.name


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _fuzz_folder(folder: Path) -> dict[str, bool]:
    """Bad and odd files; value: whether the file should be restored."""
    folder.mkdir()
    rng = np.random.default_rng(4)
    face = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    face = Image.fromarray(face).resize((96, 96), Image.BICUBIC)
    face.save(folder / "good.jpg", quality=95)
    raw = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(raw[: len(raw) // 3])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image\n")
    Image.new("RGB", (1, 1)).save(folder / "one_pixel.png")
    Image.fromarray(np.asarray(face.convert("L"), np.uint16) * 257).save(folder / "gray16.png")
    face.convert("RGBA").save(folder / "rgba.png")
    face.convert("CMYK").save(folder / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    face.crop((0, 0, 96, 64)).save(folder / "exif_rotated.jpg", exif=exif)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    huge = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
    huge += _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")
    (folder / "huge_header.png").write_bytes(huge)
    return {
        "good.jpg": True,
        "gray16.png": True,
        "rgba.png": True,
        "cmyk.jpg": True,
        "exif_rotated.jpg": True,
        "empty.jpg": False,
        "text.jpg": False,
        "one_pixel.png": False,
        "huge_header.png": False,
    }


def _restore_cfg(*overrides: str):
    return compose(["stage=restore", "model=gpen-tiny-64", *overrides])


def test_cli_fuzz_set_reports_each_bad_file_and_restores_the_good(tmp_path, capsys):
    expected = _fuzz_folder(tmp_path / "in")
    digests = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "in").iterdir()
    }
    cfg = _restore_cfg(f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "compare=true")
    status = _restore_files(cfg)
    text = capsys.readouterr().out
    assert status == 1  # something failed
    for name, ok in expected.items():
        out = tmp_path / "out" / (Path(name).stem + ".png")
        assert out.is_file() == ok, name
        if not ok:
            assert f"{name}:" in text, name  # one line with its reason
    assert "empty file" in text and "not an image" in text and "MP, over max_pixels" in text
    assert "too small for a face" in text
    truncated = tmp_path / "out" / "truncated.png"
    assert truncated.is_file() or "truncated.jpg:" in text  # restored (partial JPEG) or reported
    with Image.open(tmp_path / "out" / "exif_rotated.png") as im:
        assert im.size == (64, 96)  # EXIF orientation applied
    assert (tmp_path / "out" / "compare" / "good.png").is_file()
    after = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "in").iterdir()
    }
    assert after == digests  # inputs untouched
    # a second run does not overwrite earlier outputs
    assert _restore_files(cfg) == 1
    assert "exists (overwrite=true replaces it)" in capsys.readouterr().out


def test_cli_refuses_to_write_into_the_input_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (64, 64), (90, 120, 150)).save(folder / "a.png")
    before = (folder / "a.png").read_bytes()
    with pytest.raises(ValueError, match="suffix"):
        _restore_files(_restore_cfg(f"input={folder}", f"output={folder}"))
    assert _restore_files(_restore_cfg(f"input={folder}", f"output={folder}", "suffix=_gpen")) == 0
    assert (folder / "a.png").read_bytes() == before
    assert (folder / "a_gpen.png").is_file()


def test_cli_glob_and_aligned_inputs(tmp_path):
    src = shared_path("data", "wild", "aligned")
    for name in sorted(p.name for p in src.iterdir())[:2]:
        shutil.copy(src / name, tmp_path / name)
    cfg = _restore_cfg(
        f"input={tmp_path}/*.png", f"output={tmp_path / 'out'}", "aligned=true", "save_faces=true"
    )
    assert _restore_files(cfg) == 0
    outs = sorted((tmp_path / "out").glob("*.png"))
    assert len(outs) == 2
    with Image.open(outs[0]) as im:
        assert im.size == (512, 512)  # same size as the input crop
    assert len(list((tmp_path / "out" / "faces").glob("*.png"))) == 2


def test_weights_latest_picks_the_newest_finetune_export(tmp_path):
    from gpen_lightning.training import FinetuneModule

    module = FinetuneModule(
        model={"name": "gpen-tiny-32", "size": 32, "noise_mode": "concat"}, init=None
    )
    module.export_weights(tmp_path / "finetune" / "runs" / "a" / "gpen.pt")
    restorer = Restorer("latest", runs_root=tmp_path)
    assert restorer.size == 32
    for k, v in module.g_ema.state_dict().items():
        assert torch.equal(restorer.net.state_dict()[k], v), k
    with pytest.raises(FileNotFoundError, match="stage=finetune"):
        Restorer("latest", runs_root=tmp_path / "empty")


def test_restoration_refuses_a_prior_that_evaluation_accepts(tmp_path):
    from gpen_lightning.zoo import CheckpointMismatchError, Generator
    from gpen_lightning.zoo.weights import load_restoration_model

    path = tmp_path / "prior.pt"
    torch.save(build("gpen-tiny-32", part="prior").state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match="not a GPEN restoration network"):
        load_restoration_model(path)
    assert type(load_restoration_model(path, allow_prior=True)) is Generator
