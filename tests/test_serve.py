"""stage=serve: the web app's request functions (bad uploads, per-request options on one shared
network, results), its config, and the HTTP API of a running server (gradio_client)."""

from __future__ import annotations

import functools
import os
import re
import socket
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpen_lightning.app import build_stage
from gpen_lightning.config import compose
from gpen_lightning.data.synthetic import render_face
from gpen_lightning.restore.tasks import LUMA
from gpen_lightning.restore.video import probe
from gpen_lightning.serve.handlers import (
    RequestError,
    Workspace,
    read_image,
    restore_photo,
)
from gpen_lightning.serve.models import Models, RequestOptions, find_weights, with_options
from gpen_lightning.serve.stage import ServeStage, parse_auth
from gpen_lightning.testing_clips import synthetic_clip
from gpen_lightning.zoo.presets import build
from gpen_lightning.zoo.rrdbnet import RRDBNet

from .conftest import shared_path

gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is not installed")


def face_photo(path: Path, *, size: tuple[int, int] = (320, 240)) -> Path:
    """The held-in test photo: a procedural face of 128 px (found by the bundled RetinaFace) on a
    gradient, ``size`` (width, height)."""
    w, h = size
    img = np.full((h, w, 3), 90, np.uint8)
    img[..., 2] = np.linspace(60, 200, w).astype(np.uint8)[None]
    face = render_face(128, torch.Generator().manual_seed(1)).permute(1, 2, 0).numpy()
    img[40:168, 60:188] = face
    Image.fromarray(img).save(path)
    return path


def huge_header_png(path: Path, width: int = 10_000, height: int = 10_000) -> Path:
    """A PNG whose (valid) header claims ``width`` x ``height`` px, with no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(1000))  # the first rows only
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat))
    return path


def bad_uploads(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase its error must contain)."""
    text = folder / "notes.png"
    text.write_text("this is not an image")
    good = face_photo(folder / "good.png").read_bytes()
    truncated = folder / "truncated.png"
    truncated.write_bytes(good[: len(good) // 3])
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    blank = folder / "blank.png"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(blank)
    return {
        "text": (text, "not an image"),
        "truncated": (truncated, "truncated or corrupt"),
        "empty": (empty, "empty file"),
        "huge": (huge_header_png(folder / "huge.png"), "100 MP"),
        "no face": (blank, "No face found"),
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Models:
    """gpen-tiny-32 with random weights (no weights anywhere), on the CPU."""
    root = tmp_path_factory.mktemp("runs")
    return Models(
        weights=None, weights_dir=None, model="gpen-tiny-32", runs_root=root, device="cpu"
    )


def test_read_image_refuses_bad_files_before_decoding(tmp_path):
    for name, (path, phrase) in bad_uploads(tmp_path).items():
        if name == "no face":
            assert read_image(path, max_pixels=10**6).shape == (120, 160, 3)
            continue
        with pytest.raises(RequestError, match=phrase):
            read_image(path, max_pixels=25_000_000)
    good = face_photo(tmp_path / "photo.png")  # 320x240 = 0.077 MP, x2 -> 0.31 MP
    assert read_image(good, max_pixels=100_000, upscale=1).shape == (240, 320, 3)
    with pytest.raises(RequestError, match="the output would be 0 MP"):
        read_image(good, max_pixels=100_000, upscale=2)
    with pytest.raises(RequestError, match="No photo"):
        read_image(None, max_pixels=100)


def test_per_request_options_share_the_network(models, tmp_path):
    base = models.get()
    image = read_image(face_photo(tmp_path / "p.png"), max_pixels=10**7)
    full = with_options(base, RequestOptions(alpha=1.0)).restore(image)
    half = with_options(base, RequestOptions(alpha=0.5)).restore(image)
    view = with_options(base, RequestOptions(alpha=0.5, upscale=2, paste_mask="template"))
    assert view.net is base.net and view.detector is base.detector  # nothing reloaded
    assert (base.paste.alpha, base.paste.upscale, base.paste_mask) == (1.0, 1.0, "hull")
    assert (view.paste.alpha, view.paste.upscale, view.paste_mask) == (0.5, 2.0, "template")
    assert models.get() is base
    # fidelity 0.5: each restored crop is the mean of the input crop and the alpha=1 restoration
    assert len(full.faces) == len(half.faces) == 1
    f, h = full.faces[0], half.faces[0]
    mean = (f.restored.astype(np.float64) + f.crop.astype(np.float64)) / 2
    assert np.abs(h.restored - mean).max() <= 1.0
    assert np.abs(h.restored.astype(float) - f.restored).mean() > 5  # and it did change
    only = with_options(base, RequestOptions(min_face_size=500)).detect(
        torch.from_numpy(image).permute(2, 0, 1)
    )
    assert only == []


def test_restore_photo_results_and_refusals(models, tmp_path):
    work = Workspace(tmp_path / "results", keep=3)
    photo = face_photo(tmp_path / "portrait.png")
    r = restore_photo(
        models, photo, options=RequestOptions(upscale=2), choice=None, workspace=work,
        max_pixels=10**7,
    )  # fmt: skip
    assert r.after.shape == r.before.shape == (480, 640, 3)
    assert Image.open(r.image).size == (640, 480) and r.image.name == "portrait_restored.png"
    np.testing.assert_array_equal(np.asarray(Image.open(r.image)), r.after)
    assert len(r.faces) == 1 and r.faces[0][0].shape == (32, 64, 3)  # input | restored at 32 px
    with zipfile.ZipFile(r.archive) as zf:
        assert zf.namelist() == ["face_00.png"]
    text = " ".join(r.notes)
    assert "RANDOM weights" in text and "restores 32 px faces" in text  # 128 px faces, 32 px net
    for _name, (path, phrase) in bad_uploads(tmp_path).items():
        with pytest.raises(RequestError, match=phrase):
            restore_photo(
                models, path, options=RequestOptions(), choice=None, workspace=work,
                max_pixels=25_000_000,
            )  # fmt: skip
    assert len(list(work.root.iterdir())) == 1  # refused requests leave no folder behind
    for _ in range(4):
        work.new()
    assert len(list(work.root.iterdir())) == 3  # only the newest `keep`


def test_aligned_faces_and_the_demo_tasks(models, tmp_path):
    """An aligned crop is restored as one face (no detection); colorization keeps the crop's
    luma (the demo's post-process at another size than S) on its own restorer; tasks need
    aligned crops, clips take none."""
    work = Workspace(tmp_path / "results")
    crop = render_face(64, torch.Generator().manual_seed(2)).permute(1, 2, 0).numpy()
    Image.fromarray(crop).save(tmp_path / "crop.png")
    run = functools.partial(restore_photo, models, tmp_path / "crop.png", choice=None,
                            workspace=work, max_pixels=10**6)  # fmt: skip
    aligned = run(options=RequestOptions(aligned=True))
    assert aligned.after.shape == (64, 64, 3) and len(aligned.faces) == 1
    colour = run(options=RequestOptions(aligned=True, task="colorization"))
    assert models.get(None, "colorization") is not models.get(None)  # a restorer per task
    luma = crop.astype(np.float64) @ np.array(LUMA)
    error = np.abs(colour.after.astype(np.float64) @ np.array(LUMA) - luma)
    assert np.median(error) <= 1.0  # (random weights saturate some colours: luma clips there)
    assert np.abs(colour.after.astype(float) - aligned.after).mean() > 1  # another network
    with pytest.raises(ValueError, match="aligned face crop"):
        RequestOptions(task="inpainting")
    with pytest.raises(ValueError, match="choose one of"):
        RequestOptions(aligned=True, task="paint")


def test_request_options_are_validated():
    for bad in ({"alpha": 1.5}, {"upscale": 0.5}, {"paste_mask": "oval"}, {"bg_upsampler": "x"}):
        with pytest.raises(ValueError):
            RequestOptions(**bad)


def test_background_upsampler_choices_follow_bg_weights(models, tmp_path):
    photo = read_image(face_photo(tmp_path / "p.png"), max_pixels=10**7)
    assert list(models.upsamplers) == ["bicubic"]
    with pytest.raises(ValueError, match="start it with bg_weights"):
        models.view(None, RequestOptions(bg_upsampler="realesrgan"))
    torch.manual_seed(0)
    net = RRDBNet(scale=2, num_feat=4, num_block=1, num_grow_ch=2)
    torch.save({"params_ema": net.state_dict()}, tmp_path / "x2.pth")
    sr = Models(
        weights=None, weights_dir=None, model="gpen-tiny-32", runs_root=tmp_path, device="cpu",
        bg_weights=str(tmp_path / "x2.pth"), bg_tile=0,
    )  # fmt: skip
    assert list(sr.upsamplers) == ["bicubic", "realesrgan"]
    up = sr.upsamplers["realesrgan"]
    out = sr.view(None, RequestOptions(upscale=2, bg_upsampler="realesrgan")).restore(photo)
    bicubic = sr.view(None, RequestOptions(upscale=2)).restore(photo)
    assert sr.view(None, RequestOptions()).net is sr.view(None, RequestOptions()).net
    expected = up(torch.from_numpy(photo).permute(2, 0, 1).float() / 255, 2.0)
    expected = (expected * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    # the background right of the face (input x >= 210 px) is the RRDBNet's, not bicubic's
    right = np.s_[:, 420:]
    assert np.abs(out.image[right].astype(int) - expected[right]).max() <= 1
    assert np.abs(bicubic.image[right].astype(int) - expected[right]).mean() > 5


def test_model_picker_lists_the_folder_and_loads_each_once(tmp_path):
    folder = tmp_path / "weights"
    (folder / "sub").mkdir(parents=True)
    torch.save(build("gpen-tiny-32").state_dict(), folder / "sub" / "tiny32.pt")
    (folder / "readme.txt").write_text("not weights")
    assert find_weights(folder) == [folder / "sub" / "tiny32.pt"]
    m = Models(
        weights=None,
        weights_dir=str(folder),
        model="gpen-tiny-32",
        runs_root=tmp_path,
        device="cpu",
    )
    assert not m.random and m.default == str(folder / "sub" / "tiny32.pt")  # the folder's first
    values = [v for _, v in m.choices()]
    assert values == [str(folder / "sub" / "tiny32.pt"), "latest"]
    assert "32 px faces" in m.describe()
    assert m.get(values[0]) is m.get()
    with pytest.raises(FileNotFoundError, match="weights=latest found no"):
        m.get("latest")
    with pytest.raises(ValueError, match="not offered"):
        m.get("/etc/passwd")


def test_serve_config_and_auth():
    stage = build_stage(compose(["stage=serve", "output=/tmp/x"]))
    assert (stage.server_name, stage.server_port, stage.share, stage.auth) == (
        "127.0.0.1", 7860, False, None,
    )  # fmt: skip
    assert stage.weights is None and stage.model == "gpen-tiny-32"
    assert (
        build_stage(compose(["stage=serve", "server_port=8000", "output=/x"])).server_port == 8000
    )
    assert parse_auth("ann:s3:cret") == ("ann", "s3:cret")
    for bad in ("ann", ":pw", "ann:"):
        with pytest.raises(ValueError, match="user:password"):
            parse_auth(bad)


# -- a running server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(out: Path, *overrides: str) -> ServeStage:
    """The app on a free port (random gpen-tiny-32 weights, CPU), started in the background."""
    args = [f"output={out}", "device=cpu", f"server_port={free_port()}", *overrides]
    stage = build_stage(compose(["stage=serve", *args]))
    stage.start()
    return stage


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running app: (url, stage). On teardown its temporary folder must be gone."""
    out = tmp_path_factory.mktemp("serve")
    stage = start_server(out, "concurrency=2", f"auth={':'.join(AUTH)}")
    yield stage.url, stage
    stage.close()
    assert sorted(p.name for p in out.iterdir()) == ["results"]  # gradio/ removed on close
    assert os.environ.get("GRADIO_TEMP_DIR") != str(stage.temp_dir)  # the environment restored


AUTH = ("ann", "s3cret")  # the module server's login


def client(url: str, folder: Path, auth: tuple[str, str] | None = AUTH):
    return gradio_client.Client(url, auth=auth, verbose=False, download_files=str(folder))


def test_the_server_asks_for_its_login(server, tmp_path):
    url, _ = server
    for wrong in (None, ("ann", "guess")):
        with pytest.raises(Exception, match=r"(?i)login"):
            client(url, tmp_path, auth=wrong).predict(
                gradio_client.handle_file(str(face_photo(tmp_path / "p.png"))), api_name="/restore"
            )


def test_api_restores_bad_uploads_fail_and_the_server_goes_on(server, tmp_path):
    url, stage = server
    api = client(url, tmp_path / "downloads")
    photo = gradio_client.handle_file(str(face_photo(tmp_path / "photo.png")))
    out = api.predict(photo, upscale=2, api_name="/restore")
    assert Image.open(out[0]).size == (640, 480)  # the restored photo first, at the asked scale
    before, after = out[1]
    assert Image.open(before).size == Image.open(after).size == (640, 480)
    assert "RANDOM weights" in out[4]
    for name, (path, phrase) in bad_uploads(tmp_path).items():
        with pytest.raises(gradio_client.exceptions.AppError, match=phrase):
            api.predict(gradio_client.handle_file(str(path)), api_name="/restore")
        again = api.predict(photo, api_name="/restore")  # still serving after each bad one
        assert Image.open(again[0]).size == (320, 240), name
    with pytest.raises(gradio_client.exceptions.AppError, match="alpha=2"):
        api.predict(photo, alpha=2.0, api_name="/restore")
    # everything it wrote is in its own output folder: uploads under gradio/, results under
    # results/ (one folder per successful request)
    out_dir = Path(stage.output)
    assert sorted(p.name for p in out_dir.iterdir()) == ["gradio", "results"]
    assert len(list((out_dir / "results").iterdir())) == 1 + len(bad_uploads(tmp_path))
    assert any(p.name == "photo.png" for p in (out_dir / "gradio").rglob("*"))


def test_api_restores_a_clip_with_its_audio_and_refuses_a_broken_one(server, tmp_path):
    url, _ = server
    api = client(url, tmp_path / "downloads")
    clip = tmp_path / "clip.mp4"
    synthetic_clip(clip, ((1, 128),), frames=6, audio=True)
    video, notes = api.predict(gradio_client.handle_file(str(clip)), api_name="/restore_video")
    info = probe(video)
    assert (info.width, info.height, info.frames, info.audio_streams) == (320, 240, 6, 1)
    faces = int(re.search(r"6 frames, (\d+) face", notes).group(1))
    assert faces >= 5 and "unchanged" not in notes
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(gradio_client.exceptions.AppError, match=r"broken\.mp4 is not a") as err:
        api.predict(gradio_client.handle_file(str(broken)), api_name="/restore_video")
    assert "/" not in str(err.value) and "Errno" not in str(err.value)  # no server paths


def test_api_restores_a_real_photo_at_the_requested_size(server, tmp_path):
    url, _ = server
    photo = shared_path("data", "wild", "whole", "00.jpg")
    w, h = Image.open(photo).size
    api = client(url, tmp_path / "downloads")
    out = api.predict(gradio_client.handle_file(str(photo)), upscale=2, api_name="/restore")
    assert Image.open(out[0]).size == (2 * w, 2 * h)
    assert len(out[2]) >= 1  # its faces, in the gallery
