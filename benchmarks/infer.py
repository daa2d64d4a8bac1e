"""Seconds per face of GPEN inference (eval, random weights), side by side with a naive setting.

    python benchmarks/infer.py                        # 256 and 512 presets, CPU, batch 1
    python benchmarks/infer.py --presets gpen-bfr-512 --batch 1 4 --repeats 20

"ours" is the default configuration (channels-last activations, in-place activations under
inference mode, one-pass weight modulation, huge pages for large CPU tensors). "naive" runs the same
weights NCHW with out-of-place ops, like the official code's formulation, for a same-run
comparison. Reference figures measured on the 2-core CI machine with the official code are printed
alongside: 4.5 s (512), 0.27 s (256) per face, and ONNX Runtime 1.2 s (512).
"""

from __future__ import annotations

import os

# Must be set before torch allocates: 2 MB-aligned large CPU tensors backed by transparent huge
# pages (PyTorch's own allocator option). Page faults dominate elementwise ops otherwise.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext

import torch

from gpen_lightning.zoo import build

OFFICIAL_CPU_SECONDS = {"gpen-bfr-256": 0.27, "gpen-bfr-512": 4.5}


def time_forward(model, x, *, repeats: int, warmup: int, naive: bool) -> list[float]:
    """Wall-clock seconds of ``repeats`` forward passes after ``warmup`` untimed ones."""
    # naive: grad mode on (no parameter needs grad, so nothing is recorded) disables the in-place
    # inference paths; NCHW memory format.
    model.generator.memory_format = torch.contiguous_format if naive else torch.channels_last
    ctx = torch.enable_grad() if naive else torch.inference_mode()
    times = []
    with ctx:
        for i in range(warmup + repeats):
            if x.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    model.generator.memory_format = torch.channels_last
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["gpen-bfr-256", "gpen-bfr-512"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive comparison")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    device = torch.device(args.device)
    print(
        f"# {platform.node()} | {platform.processor() or platform.machine()} | "
        f"torch {torch.__version__} | threads {torch.get_num_threads()} | device {device} | "
        f"{args.dtype} | THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE')}"
    )
    print(f"{'preset':<14} {'batch':>5} {'setting':<6} {'s/face med':>10} {'s/face min':>10}  ref")
    results = []
    for name in args.presets:
        torch.manual_seed(0)
        model = build(name).eval().to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        for batch in args.batch:
            x = torch.rand(batch, 3, model.size, model.size, device=device) * 2 - 1
            autocast = (
                torch.autocast(device.type, dtype=torch.bfloat16)
                if args.dtype == "bfloat16"
                else nullcontext()
            )
            for naive in [False] if args.no_naive else [False, True]:
                with autocast:
                    t = time_forward(
                        model, x, repeats=args.repeats, warmup=args.warmup, naive=naive
                    )
                med, best = statistics.median(t) / batch, min(t) / batch
                ref = OFFICIAL_CPU_SECONDS.get(name) if device.type == "cpu" else None
                setting = "naive" if naive else "ours"
                ref_txt = f"official {ref:.2f} s ({ref / med:.1f}x)" if ref and not naive else ""
                print(f"{name:<14} {batch:>5} {setting:<6} {med:>10.3f} {best:>10.3f}  {ref_txt}")
                results.append(
                    dict(
                        preset=name,
                        batch=batch,
                        setting=setting,
                        device=str(device),
                        dtype=args.dtype,
                        s_per_face_median=med,
                        s_per_face_min=best,
                        official_s_per_face=ref,
                    )
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
