"""The official GPEN training step (yangxy/GPEN ``train_simple.py``), timed for a side-by-side
comparison with ``benchmarks/train.py`` on the same GPU, batch and resolution.

    python benchmarks/official_train.py --official .official/GPEN --size 512 --batches 4 8 16
    python benchmarks/official_train.py --build-only      # JIT-compile the CUDA ops, then exit
    python benchmarks/official_train.py --device cpu --size 256 --narrow 0.0625 --batches 2 \
        --smoke               # CPU check: imports, models, losses, optimizers; nothing timed

``--official`` is a checkout of https://github.com/yangxy/GPEN (only ``face_model/``,
``training/``, ``train_simple.py``, ``distributed.py`` and ``__init_paths.py`` are needed; it is
never part of this project). Its CUDA ops (``face_model/op``: ``fused``, ``upfirdn2d``) are
compiled with ninja and nvcc on import when CUDA is available (a minute or two; cached under
``TORCH_EXTENSIONS_DIR``, so ``--build-only`` in an earlier process saves that time).
``--ops native`` skips the build and runs the official code's own pure-PyTorch fallbacks (its
``device='cpu'`` paths) on the same device: the fallback when the build fails, and the CPU path.
For today's torchvision, ``torchvision.transforms.functional_tensor`` (now
``_functional_tensor``) is aliased before the 2021 code is imported. On the CPU, a narrowed 256 px
official step still takes ~30 s on 2 cores (its IR-SE50 and pure-PyTorch ops): ``--smoke`` there.

The official ``train()`` is called as it is, on in-memory batches and with random weights (an
IR-SE50 stand-in with random weights for its identity loss; no validation or checkpoint is
reached). Its time per minibatch is the difference of two calls, ``warmup + steps`` and
``warmup`` minibatches long, so start-up costs cancel; with ``steps`` a multiple of 16 the
difference holds one R1 step per 16 and one path-length step per 4, as in training. Compare with
``python benchmarks/train.py --official-losses --steps 16 --warmup 4`` (ours with the official
script's losses: smooth-L1, identity, R1 10, path length 2, no feature matching). The identity
loss crops ``size // 256``-scaled margins, so ``--size`` is at least 256.
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

from common import append_jsonl, error_text, free_memory, sync
from gpen_lightning.losses.networks import IRSE

IRSE50_WIDTHS = [64] * 3 + [128] * 4 + [256] * 14 + [512] * 3


def irse50_standin(path: Path) -> Path:
    """Random IR-SE50 weights in the layout of ``model_ir_se50.pth`` (speed needs no training)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(IRSE(IRSE50_WIDTHS).state_dict(), path)
    return path


def _alias_torchvision() -> None:
    """``torchvision.transforms.functional_tensor`` (gone since torchvision 0.17) for the
    official ``degradations.py``, which ``train_simple`` imports through its dataset."""
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
    except ImportError:
        import torchvision.transforms._functional_tensor as ft

        sys.modules["torchvision.transforms.functional_tensor"] = ft


def import_official(official: Path, ops: str):
    """``train_simple``, ``FullGenerator``, ``Discriminator`` and ``IDLoss`` from a checkout.

    ``ops="compiled"``: the op modules JIT-build (or load the cached) CUDA extensions as they do
    on import; ``"native"``: the build is skipped (``load`` returns a placeholder the pure-PyTorch
    paths never touch) and the models are built with ``device="cpu"``, their fallback switch.
    """
    sys.path.insert(0, str(official))
    _alias_torchvision()
    import torch.utils.cpp_extension as ext

    real_load = ext.load
    if ops == "native":
        ext.load = lambda *args, **kwargs: None
    try:
        import train_simple as ts
        from face_model.gpen_model import Discriminator, FullGenerator
        from id_loss import IDLoss
    finally:
        ext.load = real_load
    return ts, FullGenerator, Discriminator, IDLoss


def _forget_official(official: Path) -> None:
    """Drop the checkout's modules (a failed import of its ops) so that they import afresh."""
    root = str(official)
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(root):
            del sys.modules[name]


def build_ops(official: Path) -> float:
    """JIT-compile (or load from the cache) the official CUDA ops; seconds taken."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(official / "face_model"))
    import op  # noqa: F401  (face_model/op/__init__.py loads fused and upfirdn2d)

    return time.perf_counter() - t0


def official_step_seconds(
    official: Path,
    *,
    size: int,
    batch: int,
    steps: int,
    warmup: int,
    work: Path,
    device: str = "cuda",
    ops: str = "compiled",
    narrow: float = 1.0,
    smoke: bool = False,
) -> float:
    """Seconds per official minibatch (NaN with ``smoke``: everything is built, nothing run)."""
    ts, FullGenerator, Discriminator, IDLoss = import_official(official, ops)
    gpu = device.startswith("cuda")
    op_device = "cuda" if ops == "compiled" else "cpu"  # the models' op-path switch
    kw = dict(channel_multiplier=2, narrow=narrow, device=op_device)
    generator = FullGenerator(size, 512, 8, **kw).to(device)
    discriminator = Discriminator(size, **kw).to(device)
    g_ema = FullGenerator(size, 512, 8, **kw).to(device).eval()
    ts.accumulate(g_ema, generator, 0)
    g_ratio, d_ratio = 4 / 5, 16 / 17  # the script's lazy-regularization correction
    g_optim = torch.optim.Adam(
        generator.parameters(), lr=0.002 * g_ratio, betas=(0.0**g_ratio, 0.99**g_ratio)
    )
    d_optim = torch.optim.Adam(
        discriminator.parameters(), lr=0.002 * d_ratio, betas=(0.0**d_ratio, 0.99**d_ratio)
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
        sync(device)
        t0 = time.perf_counter()
        ts.train(
            args, batches, generator, discriminator, losses, g_optim, d_optim, g_ema, None, device
        )
        sync(device)
        return time.perf_counter() - t0

    if smoke:
        return float("nan")
    run(max(warmup, args.d_reg_every))  # first calls and allocator, an R1 step included
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    short, long = run(warmup), run(warmup + steps)
    return (long - short) / steps


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, default=Path(".official/GPEN"))
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batches", nargs="+", type=int, default=[4, 8, 16])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=16)
    ap.add_argument("--narrow", type=float, default=1.0, help="channel width factor (1: GPEN)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--ops",
        choices=["auto", "compiled", "native"],
        default="auto",
        help="the official CUDA ops or its pure-PyTorch fallbacks (auto: the compiled ones on "
        "CUDA, the fallbacks if they fail to build or load)",
    )
    ap.add_argument("--build-only", action="store_true", help="compile the CUDA ops and exit")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="import the official code, build its models, losses and optimizers; time nothing "
        "(a CPU check of this script: the official step takes ~30 s on 2 cores even narrowed)",
    )
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--jsonl", type=Path, default=None, help="append each row here when measured")
    ap.add_argument("--part", default="official", help="the rows' `part` field in --jsonl")
    args = ap.parse_args(argv)
    if not (args.official / "train_simple.py").is_file():
        sys.exit(f"{args.official} is not a yangxy/GPEN checkout (no train_simple.py)")
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        sys.exit("--device cuda without a CUDA device")
    if gpu:  # build for this GPU only (the default list is every arch: minutes longer)
        major, minor = torch.cuda.get_device_capability()
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")
    if args.build_only:
        if not gpu:
            sys.exit("--build-only needs CUDA (the ops are CUDA extensions)")
        seconds = build_ops(args.official.resolve())
        print(f"official CUDA ops ready in {seconds:.1f} s")
        append_jsonl(args.jsonl, dict(part=args.part, build_s=seconds))
        return []
    ops = args.ops if args.ops != "auto" else ("compiled" if gpu else "native")
    ops_error = None
    if args.ops == "auto" and ops == "compiled":  # the compiled ops, else the official fallbacks
        try:
            import_official(args.official.resolve(), "compiled")
        except Exception as exc:
            ops_error = error_text(exc)
            print(f"the official CUDA ops failed ({ops_error}); its pure-PyTorch ops instead")
            _forget_official(args.official.resolve())
            ops = "native"
    if ops == "compiled" and not gpu:
        sys.exit("--ops compiled needs CUDA")
    rows = []
    for batch in args.batches:
        key = dict(size=args.size, batch=batch, narrow=args.narrow, ops=ops, device=args.device)
        if ops_error:
            key["ops_error"] = ops_error
        with tempfile.TemporaryDirectory() as tmp:
            try:
                s = official_step_seconds(
                    args.official.resolve(),
                    size=args.size,
                    batch=batch,
                    steps=args.steps,
                    warmup=args.warmup,
                    work=Path(tmp),
                    device=args.device,
                    ops=ops,
                    narrow=args.narrow,
                    smoke=args.smoke,
                )
                timed = dict(s_per_step=s, img_per_s=batch / s)
                row = dict(key, built=True) if args.smoke else dict(key, **timed)
            except Exception as exc:  # out of memory, a failed build: record, try the next
                row = dict(key, error=error_text(exc))
        row.update(steps=args.steps, warmup=args.warmup)
        row["cudnn_benchmark"] = torch.backends.cudnn.benchmark
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")
        free_memory(args.device)
        rows.append(row)
        append_jsonl(args.jsonl, dict(part=args.part, **row))
        print(f"official train_simple step, {args.size} px, batch {batch}: {row}", flush=True)
    if args.out is not None:
        name = torch.cuda.get_device_name() if gpu else "cpu"
        args.out.write_text(json.dumps({"device": name, "rows": rows}))
    return rows


if __name__ == "__main__":
    done = main()
    sys.exit(0 if not any("error" in r for r in done) else 1)
