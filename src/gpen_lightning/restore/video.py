"""Videos in, videos out (PyAV, which bundles FFmpeg): decode, restore every frame's faces in
batches with tracked and smoothed landmarks, encode at the same frame rate, size and frame count,
and copy the audio streams as they are. The same frames give the same file, byte for byte (see
``_Encoder``)."""

from __future__ import annotations

import functools
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from tqdm import tqdm

from gpen_lightning.restore.restorer import Restorer
from gpen_lightning.restore.track import FaceTracker

__all__ = ["VIDEO_EXTENSIONS", "VideoError", "VideoInfo", "VideoReport", "probe", "restore_video"]

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm"})


class VideoError(ValueError):
    """A video that cannot be read (empty, not a video, corrupt)."""


@dataclass
class VideoInfo:
    fps: Fraction
    width: int
    height: int
    frames: int  # as the container declares it (0: unknown)
    audio_streams: int


def _open(path: Path):
    if not path.is_file():
        raise VideoError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise VideoError(f"{path} is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise VideoError(f"{path} is not a readable video: {err}") from err
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream")
    return container


def _info(container) -> VideoInfo:
    v = container.streams.video[0]
    fps = Fraction(v.average_rate or v.guessed_rate or 25)
    return VideoInfo(fps, v.width, v.height, v.frames, len(container.streams.audio))


def probe(path: str | Path) -> VideoInfo:
    """Frame rate, size, declared frame count and audio stream count of a video."""
    with _open(Path(path)) as container:
        return _info(container)


@dataclass
class VideoReport:
    frames: int = 0  # frames written
    faces: int = 0  # faces restored, over all frames
    declared: int = 0  # frames the container declares (0: unknown)
    copied: bool = False  # no face anywhere: the input was copied through unchanged
    error: str | None = None  # why decoding stopped early (the frames before it are written)
    crops: dict[int, list[np.ndarray]] = field(default_factory=dict)  # track id -> restored crops
    landmarks: dict[int, list[np.ndarray]] = field(default_factory=dict)  # track id -> (5, 2)


class _Encoder:
    """H.264 (VP9 for .webm) at the input's frame rate; audio streams copied packet for packet.

    Reproducible: the same frames and audio packets give the same file, byte for byte. The muxer
    runs with ``fflags=+bitexact`` (Matroska and WebM otherwise write random segment and track
    UIDs, and MP4 the FFmpeg version), and libx264 without its AVX-512 kernels (``_x264_options``).
    """

    def __init__(self, path: Path, src, *, fps: Fraction, size: tuple[int, int], crf: int):
        self.out = av.open(
            str(path), "w", format=_format_for(path), container_options={"fflags": "+bitexact"}
        )
        codec = "libvpx-vp9" if path.suffix.lower() == ".webm" else "libx264"
        self.video = self.out.add_stream(codec, rate=fps)
        self.video.height, self.video.width = size
        even = size[0] % 2 == 0 and size[1] % 2 == 0
        self.video.pix_fmt = "yuv420p" if even else "yuv444p"  # 4:2:0 needs even sides
        self.video.options = {"crf": str(crf), **(_x264_options() if codec == "libx264" else {})}
        self.audio = {a.index: self.out.add_stream_from_template(a) for a in src.streams.audio}
        self.count = 0

    def audio_packet(self, packet) -> None:
        if packet.dts is None:  # the demuxer's flush packet
            return
        packet.stream = self.audio[packet.stream.index]
        self.out.mux(packet)

    def frame(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.count
        self.out.mux(self.video.encode(frame))
        self.count += 1

    def close(self) -> None:
        self.out.mux(self.video.encode(None))
        self.out.close()


@functools.cache
def _x264_options() -> dict[str, str]:
    """libx264 options for a reproducible bitstream: on a CPU with AVX-512, x264's own CPU
    capabilities less AVX512; elsewhere none.

    x264's AVX-512 macroblock-tree kernels (``mbtree_propagate_cost`` / ``_list``) work on 16 and 8
    macroblocks at a time and so read past the end of a row, memory x264 never wrote among it,
    whenever the width in macroblocks is not a multiple of 8 (widths that are not multiples of
    128 px: 192, 320, 720...). The bitstream then depends on what the heap held before: two
    encodes of the same frames differ. With glibc's ``MALLOC_PERTURB_`` set they repeat (one
    bitstream per fill byte); with ``mbtree=0`` or without AVX512 there is one bitstream. So x264
    runs with the capabilities it detects (its log line) less AVX512. Where the width spares the
    bug nothing changes (1280x720: the same bytes with and without AVX512), and encoding takes
    2-7% longer here (1280x720, 50 frames: 0.62 -> 0.65 s, medians of 15; the network takes
    seconds a frame). ``mbtree=0`` would also do, at 1.4-1.9x the bytes for the same CRF."""
    level = av.logging.get_level()
    try:
        av.logging.set_level(av.logging.INFO)
        with av.logging.Capture() as logs:
            ctx = av.CodecContext.create("libx264", "w")
            ctx.width, ctx.height, ctx.pix_fmt = 16, 16, "yuv420p"
            ctx.time_base = Fraction(1, 25)
            ctx.open()
    except (av.error.FFmpegError, ValueError):  # no libx264 in this build: nothing to tune
        return {}
    finally:
        av.logging.set_level(level)
    prefix = "using cpu capabilities:"
    for _, _, message in logs:
        if message.startswith(prefix):
            names = message[len(prefix) :].split()
            if "AVX512" in names:
                return {"x264-params": "asm=" + ",".join(n for n in names if n != "AVX512")}
    return {}


def _format_for(path: Path) -> str | None:
    """The muxer for a (temporary) output name: FFmpeg picks it from the final extension."""
    return {".mkv": "matroska", ".m4v": "mp4", ".webm": "webm"}.get(path.suffix.lower())


def restore_video(
    restorer: Restorer,
    src: str | Path,
    dst: str | Path,
    *,
    frames_per_batch: int = 8,
    smooth: bool = True,
    crf: int = 18,
    keep_crops: bool = False,
    progress: bool = True,
) -> VideoReport:
    """Restore the faces of every frame of ``src`` and write ``dst`` (same container type).

    Args:
        restorer: the ``Restorer`` (its detector, knobs and network).
        frames_per_batch: frames whose faces share network calls.
        smooth: track faces and smooth their landmarks over time (One-Euro); False: per frame.
        crf: x264 / VP9 constant rate factor (lower: larger files, closer to the frames).
        keep_crops: keep every track's restored crops and landmarks in the report (flicker and
            jitter measurements).
        progress: a progress bar in frames.

    A corrupt or truncated input stops the decoding: the frames decoded so far are written, and
    the report's ``error`` says what happened. A video without any face is copied through.
    Raises ``VideoError`` when ``src`` is not a readable video (nothing is written then).
    """
    src, dst = Path(src), Path(dst)
    report = VideoReport()
    part = dst.with_name(f".{dst.stem}.part{dst.suffix}")  # renamed onto dst once complete
    with _open(src) as container:
        try:
            _transcode(
                restorer,
                container,
                part,
                report,
                name=src.name,
                frames_per_batch=frames_per_batch,
                smooth=smooth,
                crf=crf,
                keep_crops=keep_crops,
                progress=progress,
            )
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    _publish(src, dst, part, report, upscale=restorer.paste.upscale)
    return report


def _transcode(
    restorer: Restorer,
    container,
    part: Path,
    report: VideoReport,
    *,
    name: str,
    frames_per_batch: int,
    smooth: bool,
    crf: int,
    keep_crops: bool,
    progress: bool,
) -> None:
    """Decode ``container``, restore the faces of its frames in batches and encode them to
    ``part`` (audio packets copied as they come); fill ``report``.

    A decoding error ends the stream (``report.error``; the frames before it are written); a
    stream that ends short of its declared length is reported too (``_truncation``)."""
    vstream = container.streams.video[0]
    vstream.thread_type = "AUTO"
    info = _info(container)
    report.declared = info.frames or _frames_from_duration(container, vstream, info.fps)
    s = restorer.paste.upscale
    size = (round(info.height * s), round(info.width * s))
    part.parent.mkdir(parents=True, exist_ok=True)
    encoder = _Encoder(part, container, fps=info.fps, size=size, crf=crf)
    tracker = FaceTracker(fps=float(info.fps), smooth=smooth)
    bar = tqdm(
        total=info.frames or None,
        desc=name,
        unit="frame",
        file=sys.stdout,
        disable=not progress,
        dynamic_ncols=True,
    )
    batch: list[np.ndarray] = []  # (H, W, 3) uint8 RGB frames

    def flush() -> None:
        _restore_batch(restorer, tracker, batch, encoder, report, keep_crops)
        bar.update(len(batch))
        batch.clear()

    try:
        for rgb in _decode(container, vstream, encoder):
            batch.append(rgb)
            if len(batch) >= frames_per_batch:
                flush()
    except av.error.FFmpegError as err:
        report.error = f"decoding stopped after {report.frames + len(batch)} frames: {err}"
    flush()
    bar.close()
    encoder.close()
    if report.error is None:
        report.error = _truncation(report)


def _decode(container, vstream, encoder: _Encoder) -> Iterator[np.ndarray]:
    """The video frames of ``container`` as (H, W, 3) uint8 RGB arrays, in order; its audio
    packets go to ``encoder`` on the way. FFmpeg errors propagate (corrupt or truncated data)."""
    for packet in container.demux(vstream, *container.streams.audio):
        if packet.stream.type == "audio":
            encoder.audio_packet(packet)
            continue
        for frame in packet.decode():
            yield frame.to_ndarray(format="rgb24")


def _truncation(report: VideoReport) -> str | None:
    """Why a stream that decoded to its end is short: fewer frames than the container declares,
    by more than 2 frames and 5 % (a declared count is approximate); None when it is not."""
    missing = report.declared - report.frames
    if missing > max(2, 0.05 * report.declared):
        n, declared = report.frames, report.declared
        return f"truncated: decoded {n} of the {declared} frames the container declares"
    return None


def _publish(src: Path, dst: Path, part: Path, report: VideoReport, *, upscale: float) -> None:
    """Move the encoded ``part`` onto ``dst``; a video without any face (fully decoded, not
    resized) is copied through instead, bit for bit. No decoded frame: ``VideoError``."""
    if report.frames == 0:
        part.unlink(missing_ok=True)
        raise VideoError(f"{src}: no frame could be decoded ({report.error or 'empty stream'})")
    if report.faces == 0 and report.error is None and upscale == 1:
        part.unlink()
        shutil.copyfile(src, dst)  # nothing to restore: the input, bit for bit
        report.copied = True
    else:
        part.replace(dst)


def _frames_from_duration(container, vstream, fps: Fraction) -> int:
    """Frames implied by the declared duration (containers such as Matroska give no count)."""
    if vstream.duration is not None and vstream.time_base is not None:
        seconds = float(vstream.duration * vstream.time_base)
    elif container.duration is not None:
        seconds = container.duration / 1_000_000  # AV_TIME_BASE
    else:
        return 0
    return round(seconds * fps)


def _restore_batch(restorer, tracker, frames, encoder, report, keep_crops) -> None:
    if not frames:
        return
    tensors = [torch.from_numpy(f).permute(2, 0, 1) for f in frames]
    faces, ids = [], []
    for img in tensors:
        faces.append(tracker.update(restorer.detect(img)))
        ids.append(list(tracker.ids))
    results = restorer.restore_many(tensors, faces=faces)
    for result, frame_ids in zip(results, ids):
        encoder.frame(result.image)
        report.frames += 1
        report.faces += len(result.faces)
        if keep_crops:
            for track_id, face in zip(frame_ids, result.faces):
                report.crops.setdefault(track_id, []).append(face.restored)
                report.landmarks.setdefault(track_id, []).append(face.landmarks)
