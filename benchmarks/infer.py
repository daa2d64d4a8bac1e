"""Seconds per face of GPEN inference (eval, random weights), side by side with a naive setting.

    python benchmarks/infer.py                        # 256 and 512 presets, CPU, batch 1
    python benchmarks/infer.py --presets gpen-bfr-512 --batch 1 4 --repeats 20
    python benchmarks/infer.py --presets gpen-bfr-512 --batch 1 32 --dtype bfloat16 \
        --restorer --cuda-graph both --jsonl results.jsonl     # eager vs CUDA graph (GPU)

"ours" is the default configuration (channels-last activations, in-place activations under
inference mode, one-pass weight modulation, huge pages for large CPU tensors). "naive" runs the same
weights NCHW with out-of-place ops, like the official code's formulation, for a same-run
comparison; the naive row prints how many times slower it ran (the official code itself is timed
side by side by ``official_train.py`` and the README's figures, never against a stored number).

``--restorer`` times the product path instead, ``Restorer.restore_faces`` on aligned crops already
on the device (inference mode, bf16 autocast with ``--dtype bfloat16``, the clamp and the copy
out), eager and/or replaying a CUDA graph captured for the batch (``--cuda-graph``; the capture
and its warm-up are not timed). ``--jsonl`` appends each row to a JSON-lines file as soon as it
is measured; a failing configuration becomes a row with ``error`` (exit status 1).
"""

from __future__ import annotations

import os

# Must be set before torch allocates: 2 MB-aligned large CPU tensors backed by transparent huge
# pages (PyTorch's own allocator option). Page faults dominate elementwise ops otherwise.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse
import gc
import itertools
import json
import math
import platform
import statistics
import sys
import time
from contextlib import nullcontext

import torch

from gpen_lightning.zoo import build


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


def time_restorer(restorer, crops, *, repeats: int, warmup: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` ``restore_faces`` calls after ``warmup`` untimed ones
    (the device synchronised around each call)."""
    cuda = crops.is_cuda
    times = []
    for i in range(warmup + repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        restorer.restore_faces(crops)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def append_jsonl(path: str | None, row: dict) -> None:
    """Append ``row`` as one JSON line (NaN -> null)."""
    if path:
        finite = lambda v: not (isinstance(v, float) and not math.isfinite(v))  # noqa: E731
        with open(path, "a") as f:
            f.write(json.dumps({k: v if finite(v) else None for k, v in row.items()}) + "\n")


def bench_restorer(model, name, batches, *, device, bf16, graphs, repeats, warmup, jsonl, part):
    """Faces/s of ``Restorer.restore_faces`` per batch, eager and/or CUDA graph; the rows."""
    from gpen_lightning.restore import Restorer

    rows = []
    # every eager row first: a failed capture cannot disturb them
    for graph, batch in itertools.product(graphs, batches):
        crops = torch.rand(batch, 3, model.size, model.size, device=device) * 2 - 1
        key = dict(preset=name, batch=batch, device=str(device))
        key.update(dtype="bfloat16" if bf16 else "float32", cuda_graph=graph)
        if graph and device.type != "cuda":
            row = dict(key, skipped="CUDA graphs need a CUDA device")
        else:
            try:
                t_build = time.perf_counter()
                restorer = Restorer(
                    model, device=device, bf16=bf16, cuda_graph=graph, batch_size=batch
                )
                setup_s = time.perf_counter() - t_build
                t = time_restorer(restorer, crops, repeats=repeats, warmup=warmup)
                med, best = statistics.median(t) / batch, min(t) / batch
                row = dict(key, s_per_face_median=med, s_per_face_min=best)
                row.update(faces_per_s=1 / med, setup_s=setup_s, repeats=repeats)
            except Exception as exc:  # out of memory, a failed capture: record, go on
                msg = str(exc).strip().splitlines()
                row = dict(key, error=f"{type(exc).__name__}: {msg[0][:300] if msg else ''}")
            restorer = None
            gc.collect()
            if device.type == "cuda":
                row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
        rows.append(row)
        append_jsonl(jsonl, dict(part=part, **row))
        rate = f"{row['faces_per_s']:10.1f} faces/s" if "faces_per_s" in row else ""
        note = row.get("error") or row.get("skipped") or ""
        mode = "graph" if graph else "eager"
        print(f"{key['preset']:<14} {batch:>5} {mode:<6} {key['dtype']:<9} {rate} {note}")
    return rows


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
    parser.add_argument("--restorer", action="store_true", help="time Restorer.restore_faces")
    parser.add_argument(
        "--cuda-graph",
        choices=["off", "on", "both"],
        default="off",
        help="with --restorer: eager, CUDA-graph replay, or both (in that order)",
    )
    parser.add_argument("--jsonl", help="append each row to this JSON-lines file when measured")
    parser.add_argument("--part", default="infer", help="the rows' `part` field in --jsonl")
    args = parser.parse_args()

    device = torch.device(args.device)
    print(
        f"# {platform.node()} | {platform.processor() or platform.machine()} | "
        f"torch {torch.__version__} | threads {torch.get_num_threads()} | device {device} | "
        f"{args.dtype} | THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE')}"
    )
    if args.restorer:
        graphs = {"off": [False], "on": [True], "both": [False, True]}[args.cuda_graph]
        results = []
        for name in args.presets:
            torch.manual_seed(0)
            model = build(name).eval().to(device).requires_grad_(False)
            results += bench_restorer(
                model,
                name,
                args.batch,
                device=device,
                bf16=args.dtype == "bfloat16",
                graphs=graphs,
                repeats=args.repeats,
                warmup=args.warmup,
                jsonl=args.jsonl,
                part=args.part,
            )
            del model
            gc.collect()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
        sys.exit(1 if any("error" in r for r in results) else 0)
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
                setting = "naive" if naive else "ours"
                if not naive:
                    ours = med
                ratio = f"{med / ours:.2f}x ours" if naive else ""
                print(f"{name:<14} {batch:>5} {setting:<6} {med:>10.3f} {best:>10.3f}  {ratio}")
                results.append(
                    dict(
                        preset=name,
                        batch=batch,
                        setting=setting,
                        device=str(device),
                        dtype=args.dtype,
                        s_per_face_median=med,
                        s_per_face_min=best,
                    )
                )
                append_jsonl(args.jsonl, dict(part=args.part, **results[-1]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
