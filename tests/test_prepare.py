"""``stage=prepare``: a folder of faces packed into LitData chunks holds every readable face once,
exactly as ``FaceFolder`` would read it (PNG: lossless), lists the unreadable files, writes JPEG
when asked (smaller, close), and never replaces an output unless told to."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpen_lightning.app import build_stage
from gpen_lightning.config import compose
from gpen_lightning.data.folder import read_rgb, to_square
from gpen_lightning.data.streaming import StreamingFaces

SIZE = 32


def make_faces(folder: Path, n: int, *, seed: int = 0) -> list[str]:
    """``n`` smooth random RGB images of varied sizes (some not square, one in a subfolder), a
    truncated PNG and a text file named .jpg; the relative paths of the readable ones."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        h, w = 40 + i % 3 * 4, 40 + i % 2 * 8
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        base = rng.uniform(0, 255, 3) * (0.5 + 0.5 * np.sin(6 * xx + 4 * yy + i))[..., None]
        img = np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
        name = f"sub/{i:03d}.png" if i == n - 1 else f"{i:03d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / name)
        names.append(name)
    (folder / "broken.png").write_bytes((folder / names[0]).read_bytes()[:60])  # truncated
    (folder / "notes.jpg").write_text("not an image")
    return names


def prepare(src: Path, out: Path, *extra: str) -> int:
    overrides = [f"input={src}", f"output={out}", f"size={SIZE}", "workers=2", *extra]
    return build_stage(compose(["stage=prepare", *overrides])).run()


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    tmp = tmp_path_factory.mktemp("prepare")
    names = make_faces(tmp / "faces", 30)
    assert prepare(tmp / "faces", tmp / "png") == 0
    return tmp / "faces", tmp / "png", names


def test_every_readable_face_is_packed_once_as_the_folder_reads_it(packed):
    src, out, names = packed
    info = json.loads((out / "prepare.json").read_text())
    assert (info["faces"], info["skipped"], info["size"], info["format"]) == (30, 2, SIZE, "png")
    skipped = dict(line.split("\t") for line in (out / "skipped.txt").read_text().splitlines())
    assert sorted(Path(p).name for p in skipped) == ["broken.png", "notes.jpg"]
    assert "not an image" in skipped[str(src / "notes.jpg")]
    faces = StreamingFaces(out, size=SIZE)
    assert sorted(faces.name(i) for i in range(len(faces))) == sorted(names)
    for i in range(len(faces)):
        item = faces[i]
        expected = to_square(read_rgb(src / faces.name(i)), SIZE)  # (3, S, S) uint8
        assert item["index"] == i and item["hq"].dtype == torch.uint8
        assert torch.equal(item["hq"], expected), faces.name(i)  # PNG: lossless


def test_jpeg_is_smaller_and_close_and_outputs_are_not_replaced_silently(packed, tmp_path):
    src, png, _ = packed
    before = {p.name: p.stat().st_mtime_ns for p in png.iterdir()}
    with pytest.raises(FileExistsError, match="overwrite=true"):
        prepare(src, png)
    assert {p.name: p.stat().st_mtime_ns for p in png.iterdir()} == before

    jpeg = tmp_path / "jpeg"
    assert prepare(src, jpeg, "quality=90") == 0
    assert prepare(src, jpeg, "quality=50", "overwrite=true") == 0  # replaced when asked
    info = json.loads((jpeg / "prepare.json").read_text())
    assert (info["format"], info["quality"], info["faces"]) == ("jpeg", 50, 30)
    assert info["bytes"] < 0.7 * json.loads((png / "prepare.json").read_text())["bytes"]
    lossy, exact = StreamingFaces(jpeg, size=SIZE), StreamingFaces(png, size=SIZE)
    by_name = {exact.name(i): i for i in range(len(exact))}
    for i in range(len(lossy)):
        a, b = lossy[i]["hq"].double(), exact[by_name[lossy.name(i)]]["hq"].double()
        psnr = 10 * torch.log10(255**2 / (a - b).square().mean())
        assert 25 < psnr < 60, (lossy.name(i), psnr)  # close, and not the lossless copy

    (jpeg / "mine.txt").write_text("someone else's")  # overwrite only replaces a prepared set
    with pytest.raises(FileExistsError, match=r"mine\.txt"):
        prepare(src, jpeg, "overwrite=true")
    assert (jpeg / "index.json").is_file()


def test_bad_inputs_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="input folder not found"):
        prepare(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.png").write_text("text")
    with pytest.raises(FileNotFoundError, match="no readable images"):
        prepare(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="stage=prepare"):
        StreamingFaces(tmp_path / "empty", size=SIZE)
