"""Datasets and DataModule: robust decoding, synthetic faces, seeded validation degradation."""

from __future__ import annotations

import io
import warnings

import lightning as L
import pytest
import torch
from PIL import Image

from gpen_lightning.data import Degradation, FaceDataModule, FaceFolder, SyntheticFaces, read_rgb

from .conftest import shared_path


def _save(img: Image.Image, path, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


@pytest.fixture
def messy_folder(tmp_path):
    """Good images in awkward formats next to broken and foreign files."""
    root = tmp_path / "faces"
    rgb = Image.new("RGB", (40, 30), (200, 120, 50))
    _save(rgb, root / "ok.jpg")
    _save(rgb.convert("L"), root / "gray.png")
    _save(rgb.convert("RGBA"), root / "nested" / "rgba.png")
    _save(Image.new("I;16", (32, 32), 40000), root / "deep16.png")
    _save(rgb.convert("CMYK"), root / "cmyk.jpg")
    _save(rgb, root / "plain.bmp")
    _save(rgb, root / "photo.webp")
    (root / "zero.jpg").write_bytes(b"")
    (root / "notes.png").write_text("this is text, not a png")
    buf = io.BytesIO()
    rgb.resize((64, 64)).save(buf, format="JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[:200])
    (root / "readme.txt").write_text("ignored: not an image extension")
    return root


def test_read_rgb_converts_every_mode(messy_folder):
    for name in [
        "ok.jpg",
        "gray.png",
        "nested/rgba.png",
        "deep16.png",
        "cmyk.jpg",
        "plain.bmp",
        "photo.webp",
    ]:
        img = read_rgb(messy_folder / name)
        assert img.dtype == torch.uint8 and img.shape[0] == 3, name
    deep = read_rgb(messy_folder / "deep16.png")
    assert abs(int(deep[0, 0, 0]) - round(40000 / 257)) <= 1
    ok = read_rgb(messy_folder / "ok.jpg")
    assert abs(int(ok[0, 5, 5]) - 200) < 6 and abs(int(ok[2, 5, 5]) - 50) < 6


@pytest.mark.parametrize("verify", [True, False])
def test_face_folder_loads_good_files_and_reports_bad(messy_folder, verify):
    with pytest.warns(UserWarning, match="skipped"):
        ds = FaceFolder(messy_folder, size=32, flip=False, verify=verify)
    skipped = {p.name: reason for p, reason in ds.skipped}
    assert skipped["zero.jpg"] == "empty file"
    assert "not an image" in skipped["notes.png"]
    assert ("truncated.jpg" in skipped) == verify
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        items = [ds[i] for i in range(len(ds))]
    assert all(it["hq"].shape == (3, 32, 32) and it["hq"].dtype == torch.uint8 for it in items)
    assert len(ds) == (7 if verify else 8)
    if not verify:  # the corrupt file is reported when first read
        assert "truncated.jpg" in {p.name for p, _ in ds.skipped}


def test_face_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        FaceFolder(tmp_path / "missing", size=32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        FaceFolder(tmp_path / "empty", size=32)


def test_synthetic_faces_deterministic_structured_and_detailed():
    ds = SyntheticFaces(size=128, length=4, flip=False)
    a, b = ds[2]["hq"], SyntheticFaces(size=128, length=4, flip=False)[2]["hq"]
    assert torch.equal(a, b) and not torch.equal(a, ds[3]["hq"])
    x = a.float() / 255
    # high-frequency detail: pixel-to-pixel differences well above 8-bit rounding
    assert (x[:, :, 1:] - x[:, :, :-1]).abs().mean() > 0.01
    # structure: a face-coloured region in the centre differs from the corners
    centre, corner = x[:, 54:74, 54:74].mean((1, 2)), x[:, :12, :12].mean((1, 2))
    assert (centre - corner).abs().sum() > 0.05
    assert SyntheticFaces(size=512, length=1)[0]["hq"].shape == (3, 512, 512)


def test_synthetic_faces_cache_returns_the_rendered_face_and_survives_flips():
    cached = SyntheticFaces(size=32, length=6, flip=True)
    fresh = SyntheticFaces(size=32, length=6, flip=False, cache_mb=0)
    assert cached._cache is not None and fresh._cache is None
    for _ in range(3):  # random flips of the returned face never alter the kept one
        for i in range(6):
            x, ref = cached[i]["hq"], fresh[i]["hq"]
            assert torch.equal(x, ref) or torch.equal(x, ref.flip(-1))
    assert len(cached._cache) == 6
    assert all(torch.equal(cached._cache[i], fresh[i]["hq"]) for i in range(6))
    # too big for the budget: nothing is kept
    assert SyntheticFaces(size=512, length=1000)._cache is None


def test_datamodule_validation_degradation_is_fixed():
    dm = FaceDataModule(size=32, synthetic_length=20, batch_size=4, val_batch_size=3)
    dm.setup("fit")
    assert len(dm.train_set) == 18 and len(dm.val_set) == 2
    batches = [dm.on_after_batch_transfer(b, 0) for b in dm.val_dataloader()]
    again = [dm.on_after_batch_transfer(b, 0) for b in dm.val_dataloader()]
    for b1, b2 in zip(batches, again):
        assert torch.equal(b1["lq"], b2["lq"])
        assert b1["lq"].min() >= -1 and b1["lq"].max() <= 1 and b1["lq"].dtype == torch.float32
    # batch size does not change a sample's degradation
    dm2 = FaceDataModule(size=32, synthetic_length=20, batch_size=4, val_batch_size=1)
    dm2.setup("fit")
    first = dm2.on_after_batch_transfer(next(iter(dm2.val_dataloader())), 0)
    torch.testing.assert_close(first["lq"][0], batches[0]["lq"][0])


def test_validation_cache_returns_the_same_faces_without_degrading_again(monkeypatch):
    calls = []
    forward = Degradation.forward
    monkeypatch.setattr(
        Degradation, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k)
    )

    def val_pass(dm):
        return [dm.on_after_batch_transfer(b, 0) for b in dm.val_dataloader()]

    kw = dict(size=32, synthetic_length=40, batch_size=4, val_batch_size=3)
    plain = FaceDataModule(**kw, val_cache_mb=0)
    cached = FaceDataModule(**kw)
    for dm in (plain, cached):
        dm.setup("fit")
    reference = val_pass(plain)
    val_pass(plain)
    assert len(calls) == 2 * len(plain.val_set) == 8  # no cache: degraded at every pass
    calls.clear()
    first, second = val_pass(cached), val_pass(cached)
    assert len(calls) == len(cached.val_set)  # cached: degraded once
    for ref, a, b in zip(reference, first, second):
        for key in ("lq", "hq"):
            assert torch.equal(ref[key], a[key]) and torch.equal(a[key], b[key])
        for name, value in ref["params"].items():
            assert torch.equal(value, b["params"][name])
    # a new seed is a new set of faces, degraded again; a budget of one face keeps one face
    calls.clear()
    cached.val_seed += 1
    reseeded = val_pass(cached)
    assert len(calls) == 4 and not torch.equal(reseeded[0]["lq"], first[0]["lq"])
    one = FaceDataModule(**kw, val_cache_mb=3 * 32 * 32 * 2.5 / 2**20)
    one.setup("fit")
    val_pass(one)
    assert len(one._val_cache.items) == 1


class _Probe(L.LightningModule):
    """Records what the training and validation steps receive."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = {"train": [], "val": []}

    def training_step(self, batch, _):
        self.seen["train"].append({k: batch[k] for k in ("lq", "hq")})
        return (self.w - batch["lq"].mean()).square()

    def validation_step(self, batch, _):
        self.seen["val"].append(batch["lq"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_gets_degraded_float_batches(tmp_path):
    deg = Degradation(gray_prob=0.0)
    dm = FaceDataModule(size=32, synthetic_length=12, batch_size=4, degradation=deg)
    model = _Probe()
    trainer = L.Trainer(
        max_steps=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    train = model.seen["train"][0]
    assert train["lq"].shape == (4, 3, 32, 32) and train["lq"].dtype == torch.float32
    assert not torch.equal(train["lq"], train["hq"])
    assert model.seen["val"] and model.seen["val"][0].shape[1:] == (3, 32, 32)


def test_faces_hq_folder_loads():
    root = shared_path("data", "faces-hq")
    ds = FaceFolder(root, size=64)
    assert len(ds) == 86 and not ds.skipped
    assert ds[0]["hq"].shape == (3, 64, 64)
