"""Generated video clips for the video tests and benchmarks (``tests/test_video.py``,
``benchmarks/video.py``); the library itself never writes one.

``synthetic_clip``: an H.264 clip of procedural faces (``data.synthetic.render_face``) drifting
over a gradient with sensor noise, optionally with an AAC tone. Beside ``gpen_lightning.testing``
(the device-contract audit) rather than in it, to keep each module to one job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import torch

from gpen_lightning.data.synthetic import render_face

__all__ = ["synthetic_clip"]


def synthetic_clip(
    path: str | Path,
    faces: Sequence[tuple[int, int]] = ((1, 128),),
    *,
    frames: int = 50,
    fps: int = 25,
    size: tuple[int, int] = (320, 240),
    audio: bool = True,
    noise: float = 2.0,
    seed: int = 0,
) -> None:
    """Write a test clip (H.264; a 440 Hz AAC tone for its length with ``audio``): procedural
    faces ``(seed, side px)`` drifting right by 1 px per frame over a gradient, with Gaussian
    sensor noise of std ``noise`` (so a detector's landmarks jitter from frame to frame). Seeds
    1-3 at 96-200 px are found by the bundled RetinaFace. ``size`` is (width, height)."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    w, h = size
    crops = [
        render_face(s, torch.Generator().manual_seed(k)).permute(1, 2, 0).numpy() for k, s in faces
    ]
    # small Matroska clusters: a truncated file still holds whole clusters to decode
    options = {"cluster_time_limit": "200"} if path.suffix == ".mkv" else {}
    with av.open(str(path), "w", options=options) as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        if audio:
            sound = out.add_stream("aac", rate=16000)
            sound.layout = "mono"
        bg = np.full((h, w, 3), 90, np.uint8)
        bg[..., 2] = np.linspace(60, 200, w).astype(np.uint8)[None]
        for t in range(frames):
            img = bg.copy()
            x = 30 + t
            for face in crops:
                s = face.shape[0]
                y = max((h - s) // 3, 0)
                img[y : y + s, x : x + s] = face[: h - y, : w - x]
                x += s + 20
            img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = t
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio:
            n = 16000 * frames // fps
            tone = (0.2 * np.sin(np.arange(n) * 2 * np.pi * 440 / 16000)).astype(np.float32)
            for i in range(0, n, 1024):
                chunk = av.AudioFrame.from_ndarray(
                    tone[None, i : i + 1024], format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = 16000, i
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
