"""Video restoration: frames per second of a 720p clip with the time split into decode, detection,
tracking + alignment, network, paste-back and encode; and the flicker that landmark smoothing
removes.

    python benchmarks/video.py                                   # CPU, GPEN-256 and -512
    python benchmarks/video.py --presets gpen-bfr-512 --device cuda --bf16 --frames 100

The clip is generated (``synthetic_clip``: two procedural faces of 200 px drifting 1 px per
frame over a gradient with sensor noise, 1280x720, 25 fps). Random weights: speed does not depend
on them. Flicker is measured with an identity "network", so it is the aligned crops' own jitter:
the mean frame-to-frame change of each face's crop (0-255) and the landmarks' mean second
difference (px), each with and without smoothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from common import sync
from gpen_lightning.restore import Restorer
from gpen_lightning.restore.track import FaceTracker, crop_flicker, landmark_jitter
from gpen_lightning.restore.video import _Encoder, probe, restore_video
from gpen_lightning.testing_clips import synthetic_clip


def speed(preset: str, clip: Path, out: Path, *, device: str, bf16: bool, batch: int) -> dict:
    restorer = Restorer(model=preset, device=device, bf16=bf16, batch_size=batch)
    info = probe(clip)
    parts = dict.fromkeys(("decode", "detect", "align", "network", "paste", "encode"), 0.0)
    tracker, frames, faces = FaceTracker(fps=float(info.fps)), 0, 0
    with av.open(str(clip)) as container:
        encoder = _Encoder(out, container, fps=info.fps, size=(info.height, info.width), crf=18)
        stream = container.decode(video=0)
        while True:
            t0 = time.perf_counter()
            batch_frames = []
            for frame in stream:
                batch_frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
                if len(batch_frames) == 8:
                    break
            if not batch_frames:
                break
            images = [f.permute(2, 0, 1) for f in batch_frames]
            t1 = time.perf_counter()
            found = [restorer.detect(img) for img in images]
            t2 = time.perf_counter()
            plans = [restorer._plan(img, tracker.update(f)) for img, f in zip(images, found)]
            t3 = time.perf_counter()
            crops = torch.cat([c for _, c, _ in plans])
            restored = restorer.restore_faces(crops) if len(crops) else crops
            sync(device)
            t4 = time.perf_counter()
            results, start = [], 0
            for img, (fs, c, m) in zip(images, plans):
                results.append(restorer._paste(img, fs, c, restored[start : start + len(c)], m))
                start += len(c)
            t5 = time.perf_counter()
            for r in results:
                encoder.frame(r.image)
            t6 = time.perf_counter()
            for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
                parts[k] += dt
            frames += len(images)
            faces += sum(len(f) for f, _, _ in plans)
        encoder.close()
    total = sum(parts.values())
    return {
        "preset": preset,
        "frames": frames,
        "faces": faces,
        "seconds": total,
        "frames_per_s": frames / total,
        **{f"{k}_share": v / total for k, v in parts.items()},
    }


def flicker(clip: Path, out_dir: Path) -> dict:
    row = {}
    for smooth in (False, True):
        report = restore_video(
            Restorer(torch.nn.Identity(), size=256, device="cpu"),
            clip,
            out_dir / f"flicker_{smooth}.mp4",
            smooth=smooth,
            keep_crops=True,
            progress=False,
        )
        tracks = [k for k, v in report.crops.items() if len(v) > 10]
        key = "smoothed" if smooth else "raw"
        row[f"flicker_{key}"] = float(np.mean([crop_flicker(report.crops[k]) for k in tracks]))
        row[f"jitter_{key}"] = float(
            np.mean([landmark_jitter(np.stack(report.landmarks[k])) for k in tracks])
        )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["gpen-bfr-256", "gpen-bfr-512"])
    ap.add_argument("--frames", type=int, default=16, help="frames of the speed clip")
    ap.add_argument("--flicker-frames", type=int, default=50, help="frames of the flicker clip")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--batch", type=int, default=8, help="faces per network call")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = tmp / "clip720.mp4"
        synthetic_clip(clip, ((1, 200), (3, 200)), frames=args.frames, size=(1280, 720))
        print(
            f"720p clip, {args.frames} frames, 2 faces; device {args.device}, "
            f"{torch.get_num_threads()} threads, bf16 {args.bf16}"
        )
        for preset in args.presets:
            r = speed(
                preset, clip, tmp / "out.mp4", device=args.device, bf16=args.bf16, batch=args.batch
            )
            rows.append(r)
            split = ", ".join(f"{k[:-6]} {r[k]:.0%}" for k in r if k.endswith("_share"))
            print(f"{preset:14s} {r['frames_per_s']:6.2f} frames/s ({r['faces']} faces; {split})")
        still = tmp / "flicker.mp4"
        synthetic_clip(
            still, ((1, 200), (3, 200)), frames=args.flicker_frames, size=(1280, 720), audio=False
        )
        f = flicker(still, tmp)
        rows.append(f)
        print(
            f"flicker (mean |crop_t - crop_t-1|, 0-255): raw {f['flicker_raw']:.2f}, smoothed "
            f"{f['flicker_smoothed']:.2f}; landmark jitter (px): raw {f['jitter_raw']:.2f}, "
            f"smoothed {f['jitter_smoothed']:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
