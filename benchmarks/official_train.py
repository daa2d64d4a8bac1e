"""The official GPEN training step (yangxy/GPEN ``train_simple.py``), timed for a side-by-side
comparison with ``benchmarks/train.py`` on the same GPU, batch and resolution.

    python benchmarks/official_train.py --official .official/GPEN --size 512 --batches 4 8 16

``--official`` is a checkout of https://github.com/yangxy/GPEN (only ``face_model/``,
``training/``, ``train_simple.py``, ``distributed.py`` and ``__init_paths.py`` are needed; it is
never part of this project). Its CUDA ops (``face_model/op``) are compiled on import, so this runs
on a CUDA machine with nvcc and ninja only.

The official ``train()`` is called as it is, on in-memory batches and with random weights (an
IR-SE50 stand-in with random weights for its identity loss; no validation or checkpoint is
reached). Its time per minibatch is the difference of two calls, ``warmup + steps`` and
``warmup`` minibatches long, so start-up costs cancel; with ``steps`` and ``warmup`` multiples of
16 both windows hold the same share of R1 and path-length minibatches. Compare with
``python benchmarks/train.py --official-losses --steps 32 --warmup 16`` (ours with the official
script's losses: smooth-L1, identity, R1 10, path length 2, no feature matching).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import torch

from gpen_lightning.losses.networks import IRSE

IRSE50_WIDTHS = [64] * 3 + [128] * 4 + [256] * 14 + [512] * 3


def irse50_standin(path: Path) -> Path:
    """Random IR-SE50 weights in the layout of ``model_ir_se50.pth`` (speed needs no training)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(IRSE(IRSE50_WIDTHS).state_dict(), path)
    return path


def official_step_seconds(
    official: Path, *, size: int, batch: int, steps: int, warmup: int, work: Path
) -> float:
    sys.path.insert(0, str(official))
    import train_simple as ts
    from face_model.gpen_model import Discriminator, FullGenerator
    from id_loss import IDLoss

    device = "cuda"
    kw = dict(channel_multiplier=2, narrow=1.0, device=device)
    generator = FullGenerator(size, 512, 8, **kw).to(device)
    discriminator = Discriminator(size, **kw).to(device)
    g_ema = FullGenerator(size, 512, 8, **kw).to(device).eval()
    ts.accumulate(g_ema, generator, 0)
    g_ratio, d_ratio = 4 / 5, 16 / 17  # the script's lazy-regularization correction
    g_optim = torch.optim.Adam(generator.parameters(), lr=0.002 * g_ratio, betas=(0, 0.99**g_ratio))
    d_optim = torch.optim.Adam(
        discriminator.parameters(), lr=0.002 * d_ratio, betas=(0, 0.99**d_ratio)
    )
    irse50_standin(work / "weights" / "model_ir_se50.pth")
    losses = [torch.nn.SmoothL1Loss().to(device), IDLoss(str(work), device)]
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(batch, 3, size, size, generator=gen) * 2 - 1,) * 2 for _ in range(4)]
    args = Namespace(
        iter=0,
        start_iter=1,  # i = 1 .. iter: the step-0 validation and sample are never reached
        batch=batch,
        r1=10.0,
        path_regularize=2.0,
        path_batch_shrink=2,
        d_reg_every=16,
        g_reg_every=4,
        save_freq=10**9,
        distributed=False,
        sample=str(work),
        ckpt=str(work),
        val_dir=str(work),
    )

    def run(n: int) -> float:
        args.iter = n
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        ts.train(
            args, batches, generator, discriminator, losses, g_optim, d_optim, g_ema, None, device
        )
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    run(warmup)  # cuDNN autotuning, allocator
    short, long = run(warmup), run(warmup + steps)
    return (long - short) / steps


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, default=Path(".official/GPEN"))
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batches", nargs="+", type=int, default=[4, 8, 16])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not (args.official / "train_simple.py").is_file():
        sys.exit(f"{args.official} is not a yangxy/GPEN checkout (no train_simple.py)")
    if not torch.cuda.is_available():
        sys.exit("the official training code needs a CUDA device")
    rows = []
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    for batch in args.batches:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                s = official_step_seconds(
                    args.official.resolve(),
                    size=args.size,
                    batch=batch,
                    steps=args.steps,
                    warmup=args.warmup,
                    work=Path(tmp),
                )
                row = dict(size=args.size, batch=batch, s_per_step=s, img_per_s=batch / s)
            except torch.OutOfMemoryError:
                row = dict(size=args.size, batch=batch, error="out of memory")
            peak = torch.cuda.max_memory_allocated() / 2**30
            row["peak_gib"] = peak
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        rows.append(row)
        print(f"official train_simple step, {args.size} px, batch {batch}: {row}", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}))
    return rows


if __name__ == "__main__":
    main()
