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
import platform
import statistics
import sys
import time

import torch

from common import append_jsonl, call_seconds, error_text, free_memory
from gpen_lightning.zoo import build


def time_forward(model, x, *, repeats: int, warmup: int, naive: bool) -> list[float]:
    """Wall-clock seconds of ``repeats`` forward passes after ``warmup`` untimed ones."""
    # naive: grad mode on (no parameter needs grad, so nothing is recorded) disables the in-place
    # inference paths; NCHW memory format.
    model.generator.memory_format = torch.contiguous_format if naive else torch.channels_last
    with torch.enable_grad() if naive else torch.inference_mode():
        times = call_seconds(model, x, repeats=repeats, warmup=warmup, device=x.device)
    model.generator.memory_format = torch.channels_last
    return times


def bench_restorer(model, name: str, *, device: torch.device, args) -> list[dict]:
    """Faces/s of ``Restorer.restore_faces`` per batch of ``args.batch``, eager and/or CUDA graph
    (``args.cuda_graph``); the rows."""
    from gpen_lightning.restore import Restorer

    graphs = {"off": [False], "on": [True], "both": [False, True]}[args.cuda_graph]
    bf16, repeats, warmup = args.dtype == "bfloat16", args.repeats, args.warmup
    rows = []
    # every eager row first: a failed capture cannot disturb them
    for graph, batch in itertools.product(graphs, args.batch):
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
                t = call_seconds(
                    restorer.restore_faces, crops, repeats=repeats, warmup=warmup, device=device
                )
                med, best = statistics.median(t) / batch, min(t) / batch
                row = dict(key, s_per_face_median=med, s_per_face_min=best)
                row.update(faces_per_s=1 / med, setup_s=setup_s, repeats=repeats)
            except Exception as exc:  # out of memory, a failed capture: record, go on
                row = dict(key, error=error_text(exc))
            restorer = None
            if device.type == "cuda":
                row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            free_memory(device)
        rows.append(row)
        append_jsonl(args.jsonl, dict(part=args.part, **row))
        rate = f"{row['faces_per_s']:10.1f} faces/s" if "faces_per_s" in row else ""
        note = row.get("error") or row.get("skipped") or ""
        mode = "graph" if graph else "eager"
        print(f"{key['preset']:<14} {batch:>5} {mode:<6} {key['dtype']:<9} {rate} {note}")
    return rows


def bench_forward(model, name: str, *, device: torch.device, args) -> list[dict]:
    """Seconds per face of ``model``'s forward per batch of ``args.batch``, ours and (unless
    ``args.no_naive``) naive; the rows."""
    rows = []
    for batch in args.batch:
        x = torch.rand(batch, 3, model.size, model.size, device=device) * 2 - 1
        for naive in [False] if args.no_naive else [False, True]:
            with torch.autocast(device.type, torch.bfloat16, enabled=args.dtype == "bfloat16"):
                t = time_forward(model, x, repeats=args.repeats, warmup=args.warmup, naive=naive)
            med, best = statistics.median(t) / batch, min(t) / batch
            setting = "naive" if naive else "ours"
            if not naive:
                ours = med
            ratio = f"{med / ours:.2f}x ours" if naive else ""
            print(f"{name:<14} {batch:>5} {setting:<6} {med:>10.3f} {best:>10.3f}  {ratio}")
            rows.append(
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
            append_jsonl(args.jsonl, dict(part=args.part, **rows[-1]))
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
    if not args.restorer:
        print(
            f"{'preset':<14} {'batch':>5} {'setting':<6} {'s/face med':>10} {'s/face min':>10}  ref"
        )
    results = []
    for name in args.presets:
        torch.manual_seed(0)
        model = build(name).eval().to(device).requires_grad_(False)
        bench = bench_restorer if args.restorer else bench_forward
        results += bench(model, name, device=device, args=args)
        del model
        gc.collect()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    sys.exit(1 if any("error" in r for r in results) else 0)


if __name__ == "__main__":
    main()
