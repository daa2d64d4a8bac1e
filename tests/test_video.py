"""Videos: round trips (fps, size, frame count, audio), reproducible encoding, landmark
smoothing against jitter, bad inputs, and the restore stage split over 2 gloo processes against
one process."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpen_lightning.app import build_stage
from gpen_lightning.config import compose
from gpen_lightning.data.synthetic import render_face
from gpen_lightning.restore import Paste, Restorer
from gpen_lightning.restore.detect import Face
from gpen_lightning.restore.track import FaceTracker, OneEuroFilter, crop_flicker, landmark_jitter
from gpen_lightning.restore.video import VideoError, _Encoder, probe, restore_video
from gpen_lightning.testing_clips import synthetic_clip
from gpen_lightning.zoo import build, export_official

from .test_cli import _cli

av = pytest.importorskip("av")

FPS = 25


def _restore_files(cfg) -> int:
    """``stage=restore`` as the app runs it: the stage object of the composed config."""
    return build_stage(cfg).run()


def _face(seed: int = 1, size: int = 128) -> np.ndarray:
    """A procedural face the bundled RetinaFace detects (seeds 1-3 at these sizes)."""
    return render_face(size, torch.Generator().manual_seed(seed)).permute(1, 2, 0).numpy()


def make_clip(path: Path, faces: list[tuple[int, int]] | None = None, **kw) -> None:
    """``synthetic_clip`` with faces ``(seed, side)``; none: an empty scene."""
    synthetic_clip(path, faces if faces is not None else (), fps=FPS, **kw)


def _audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def _frames(path: Path) -> np.ndarray:
    """The decoded frames (T, H, W, 3) uint8."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _audio_seconds(path: Path) -> float:
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(stream))
        return samples / stream.rate


def _identity(size: int = 128) -> Restorer:
    return Restorer(torch.nn.Identity(), size=size, device="cpu", paste=Paste(small_face=0))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    make_clip(path, [(1, 128)])
    return path


def test_video_round_trip_keeps_fps_size_frame_count_and_audio(clip, tmp_path):
    torch.manual_seed(0)
    restorer = Restorer(build("gpen-tiny-64").eval(), device="cpu")
    out = tmp_path / "out.mp4"
    report = restore_video(restorer, clip, out, progress=False)
    src, dst = probe(clip), probe(out)
    assert (dst.fps, dst.width, dst.height, dst.frames) == (FPS, 320, 240, 2 * FPS)
    assert (src.fps, src.width, src.height, src.frames) == (dst.fps, dst.width, dst.height, 50)
    assert report.frames == 50 and report.error is None and not report.copied
    assert report.faces >= 48  # the face is found in (nearly) every frame
    assert dst.audio_streams == 1
    assert _audio_seconds(out) == pytest.approx(_audio_seconds(clip), abs=1e-3)
    assert _audio_packets(out) == _audio_packets(clip)  # copied, not re-encoded
    # the random network changed the face region and nothing far from it
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        fa = next(a.decode(video=0)).to_ndarray(format="rgb24").astype(int)
        fb = next(b.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert np.abs(fa - fb)[60:150, 60:150].mean() > 10
    assert np.abs(fa - fb)[:, 250:].mean() < 3  # re-encoding only


def _encode(src: Path, dst: Path) -> None:
    """The frames and audio packets of ``src`` through ``_Encoder``, as ``restore_video`` does."""
    info = probe(src)
    with av.open(str(src)) as c:
        encoder = _Encoder(dst, c, fps=info.fps, size=(info.height, info.width), crf=18)
        for packet in c.demux(c.streams.video[0], *c.streams.audio):
            if packet.stream.type == "audio":
                encoder.audio_packet(packet)
                continue
            for frame in packet.decode():
                encoder.frame(frame.to_ndarray(format="rgb24"))
        encoder.close()


@contextlib.contextmanager
def _heap_filled_with(byte: int):
    """Meanwhile glibc fills every block it hands out or takes back with this byte (mallopt
    M_PERTURB, what MALLOC_PERTURB_ sets); elsewhere nothing changes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):
        mallopt = None
    if mallopt is not None:
        mallopt(-6, byte)  # M_PERTURB
    try:
        yield
    finally:
        if mallopt is not None:
            mallopt(-6, 0)


def test_the_same_frames_and_audio_encode_to_the_same_bytes(clip, tmp_path):
    """The same files whatever the heap held before. Without ``_Encoder``'s settings they differ:
    on a CPU with AVX-512, x264's AVX-512 kernels read memory it never wrote at this 320 px width
    (one bitstream per fill byte); anywhere, Matroska writes random UIDs."""
    for fill in (1, 170):
        with _heap_filled_with(fill):
            for suffix in (".mp4", ".mkv"):
                _encode(clip, tmp_path / f"{fill}{suffix}")
    for suffix in (".mp4", ".mkv"):
        one, other = (tmp_path / f"{fill}{suffix}" for fill in (1, 170))
        assert one.read_bytes() == other.read_bytes(), suffix
        assert _audio_packets(one) == _audio_packets(clip)


def test_landmark_smoothing_lowers_jitter_and_flicker(clip, tmp_path):
    measured = {}
    for smooth in (False, True):
        report = restore_video(
            _identity(),
            clip,
            tmp_path / f"{smooth}.mp4",
            smooth=smooth,
            keep_crops=True,
            progress=False,
        )
        track = max(report.landmarks, key=lambda k: len(report.landmarks[k]))
        assert len(report.landmarks[track]) >= 48  # one track follows the face
        measured[smooth] = (
            landmark_jitter(np.stack(report.landmarks[track])),
            crop_flicker(report.crops[track]),
        )
    (jitter_raw, flicker_raw), (jitter_smooth, flicker_smooth) = measured[False], measured[True]
    assert jitter_smooth < 0.5 * jitter_raw, measured
    assert flicker_smooth < 0.7 * flicker_raw, measured


def test_one_euro_filter_smooths_noise_and_follows_motion():
    rng = np.random.default_rng(0)
    t = np.arange(200) / FPS
    still = 100 + rng.normal(0, 1.0, 200)
    f = OneEuroFilter(min_cutoff=0.5, beta=0.0)
    smoothed = np.array([f(np.array([x]), 1 / FPS)[0] for x in still])
    assert smoothed[50:].std() < 0.4 * still[50:].std()
    # a fast ramp (2 px/frame): with beta the lag stays small, without it it grows
    ramp = 50 * t * FPS / 25
    lags = {}
    for beta in (0.0, 1.0):
        f = OneEuroFilter(min_cutoff=0.5, beta=beta)
        out = np.array([f(np.array([x]), 1 / FPS)[0] for x in ramp])
        lags[beta] = float(np.abs(out - ramp)[100:].mean())
    assert lags[1.0] < 0.3 * lags[0.0]


def _box_face(x: float, y: float, s: float = 50) -> Face:
    pts = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]) * s
    return Face(
        np.array([x, y, x + s, y + s], np.float32), (pts + np.array([x, y])).astype(np.float32), 0.9
    )


def test_tracker_keeps_identities_and_drops_lost_faces():
    tracker = FaceTracker(fps=FPS, max_missed=2)
    for t in range(5):  # two faces, listed in varying order
        faces = [_box_face(10 + t, 10), _box_face(200 - t, 40)]
        tracker.update(faces[::-1] if t % 2 else faces)
        ids = dict(zip(tracker.ids, faces[::-1] if t % 2 else faces))
        assert ids[0].box[0] < 100 < ids[1].box[0]  # id 0 stays the left face
    for _ in range(3):  # the right face is gone for longer than max_missed
        tracker.update([_box_face(15, 10)])
    tracker.update([_box_face(15, 10), _box_face(195, 40)])
    assert tracker.ids == [0, 2]


def _sha(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_bad_videos_are_reported_and_inputs_never_written(clip, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "zero.mp4").write_bytes(b"")
    (inputs / "text.mp4").write_bytes(b"not a video at all\n" * 50)
    make_clip(inputs / "full.mkv", [(1, 128)], frames=30, audio=False)
    data = (inputs / "full.mkv").read_bytes()
    (inputs / "cut.mkv").write_bytes(data[: 3 * len(data) // 4])
    make_clip(inputs / "empty_scene.mp4", frames=10)
    before = _sha(inputs)
    cfg = compose(
        ["stage=restore", "model=gpen-tiny-64", f"input={inputs}", f"output={tmp_path / 'out'}"]
    )
    restorer_status = _restore_files(cfg)
    assert restorer_status == 1
    assert _sha(inputs) == before  # inputs untouched
    out = tmp_path / "out"
    assert not (out / "zero.mp4").exists() and not (out / "text.mp4").exists()
    # the truncated video keeps the frames decoded before the cut, and says so
    kept = probe(out / "cut.mkv")
    assert 5 <= _count_frames(out / "cut.mkv") < 30 and kept.width == 320
    # no face anywhere: the input, bit for bit
    assert (out / "empty_scene.mp4").read_bytes() == (inputs / "empty_scene.mp4").read_bytes()
    assert _count_frames(out / "full.mkv") == 30
    assert not list(out.rglob(".*.part*"))  # no temporary file left behind


def test_bad_video_messages(tmp_path):
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_bytes(b"not a video\n" * 50)
    with pytest.raises(VideoError, match="empty"):
        restore_video(_identity(), tmp_path / "zero.mp4", tmp_path / "o.mp4")
    with pytest.raises(VideoError, match="not a readable video"):
        restore_video(_identity(), tmp_path / "text.mp4", tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()
    make_clip(tmp_path / "a.mkv", [(1, 128)], frames=30, audio=False)
    data = (tmp_path / "a.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: 3 * len(data) // 4])
    report = restore_video(_identity(), tmp_path / "cut.mkv", tmp_path / "o.mkv", progress=False)
    assert report.error and "truncated" in report.error and 0 < report.frames < 30
    assert _count_frames(tmp_path / "o.mkv") == report.frames


def _count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_two_gloo_processes_write_what_one_process_writes(clip, tmp_path, monkeypatch):
    """The same restored pixels and audio packets. Both runs compute with one torch thread per
    process: CPU kernels round differently with other thread counts (GPEN-tiny: ~5e-7 between 1
    and 2 threads), which moves a pixel by 1 now and then, while Lightning gives each of 2
    processes half the cores. The video is written lossless (crf=0): its decoded frames are the
    restored frames, bit for bit, whatever the encoder decides on the way."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    for seed in range(1, 6):
        img = np.pad(
            _face(1 + seed % 3, 96 + 8 * seed), ((30, 50), (40, 20), (0, 0)), constant_values=90
        )
        Image.fromarray(img).save(inputs / ("sub" if seed % 2 else ".") / f"face{seed}.png")
    make_clip(inputs / "clip.mp4", [(2, 96)], frames=12, size=(192, 160))
    torch.manual_seed(0)
    export_official(build("gpen-tiny-64").eval(), tmp_path / "GPEN-tiny.pth")
    common = [
        "stage=restore",
        f"input={inputs}",
        f"weights={tmp_path / 'GPEN-tiny.pth'}",
        "images_per_batch=1",
        "crf=0",
    ]
    one = _cli([*common, f"output={tmp_path / 'one'}"], tmp_path, timeout=600)
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-2000:]
    two = _cli([*common, f"output={tmp_path / 'two'}", "trainer=ddp_sim"], tmp_path, timeout=600)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    assert "Starting with 2 processes" in two.stdout + two.stderr
    files = {p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file()}
    got = {p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file()}
    assert files == got and len(files) == 6
    for rel in files - {Path("clip.mp4")}:  # PNGs: the same pixels give the same bytes
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel
    one_clip, two_clip = tmp_path / "one" / "clip.mp4", tmp_path / "two" / "clip.mp4"
    frames = _frames(one_clip)
    assert frames.shape == (12, 160, 192, 3)
    assert np.array_equal(frames, _frames(two_clip))
    assert np.abs(frames.astype(int) - _frames(inputs / "clip.mp4")).mean() > 1  # faces restored
    assert (
        _audio_packets(one_clip) == _audio_packets(two_clip) == _audio_packets(inputs / "clip.mp4")
    )
    summary = [line for line in two.stdout.splitlines() if line.startswith("Restored")]
    assert len(summary) == 1  # one summary, from global rank 0, over both processes' files
    assert summary[0].startswith("Restored 5 image(s), 1 video(s) (12 frames)")
