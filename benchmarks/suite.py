"""The benchmark suite behind `make bench`: inference, training throughput, degradation.

    python benchmarks/suite.py                      # full run on this machine (CPU, or GPU if any)
    python benchmarks/suite.py --quick              # tiny presets, one repeat: CI smoke run
    python benchmarks/suite.py --device cuda --compile

Writes results.json and results.md (with the machine it ran on) to --out (default
benchmarks/results/). Nothing here asserts a time: the figures are for reading.

- inference: seconds per face and faces/s per preset, batch size, dtype (fp32 / bf16 autocast) and
  memory format (channels-last vs contiguous); torch.compile with --compile;
- training: images/s of the prior and fine-tuning stages through the real modules and Trainer
  (`benchmarks/train.py`, which also covers batch sizes, bf16 and compile);
- degradation: images/s of the batched GPEN degradation model at the model size.
"""

from __future__ import annotations

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine
from degrade import bench_ours
from gpen_lightning.zoo import build
from infer import time_forward
from train import bench_stage


def bench_inference(presets, batches, dtypes, device, *, repeats, warmup, compile_):
    rows = []
    for name in presets:
        torch.manual_seed(0)
        model = build(name).eval().to(device).requires_grad_(False)
        variants = [("channels_last", model, False), ("contiguous", model, True)]
        if compile_:
            variants.append(("compiled", torch.compile(model), False))
        for batch in batches:
            x = torch.rand(batch, 3, model.size, model.size, device=device) * 2 - 1
            for dtype in dtypes:
                ctx = torch.autocast(device.type, torch.bfloat16, enabled=dtype == "bf16")
                for label, net, naive in variants:
                    if label == "contiguous" and dtype != "fp32":
                        continue  # the layout comparison is made once, in fp32
                    with ctx:
                        if label == "compiled":
                            with torch.inference_mode():
                                for _ in range(warmup + 1):
                                    net(x)
                        # (a compiled module reaches the ``generator`` time_forward toggles)
                        t = time_forward(net, x, repeats=repeats, warmup=warmup, naive=naive)
                    s = statistics.median(t) / batch
                    rows.append(
                        dict(
                            preset=name,
                            batch=batch,
                            dtype=dtype,
                            variant=label,
                            s_per_face=s,
                            faces_per_s=1 / s,
                        )
                    )
                    print(
                        f"  {name:<14} b{batch:<3} {dtype:<5} {label:<13} {s:8.4f} s/face "
                        f"{1 / s:8.1f} faces/s",
                        flush=True,
                    )
    return rows


def write_reports(out: Path, header: str, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"machine": header, **results}, indent=2))
    lines = [
        f"Machine: {header}",
        "",
        "| preset | batch | dtype | variant | s/face | faces/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['preset']} | {r['batch']} | {r['dtype']} | {r['variant']} | "
        f"{r['s_per_face']:.4f} | {r['faces_per_s']:.1f} |"
        for r in results["inference"]
    ]
    lines += ["", "| stage | preset | batch | img/s |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {r['stage']} | {r['preset']} | {r['batch']} | {r['img_per_s']:.1f} |"
        for r in results["training"]
    ]
    lines += ["", "| degradation | size | batch | img/s |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {r['preset']} | {r['size']} | {r['batch']} | {r['img_per_s']:.1f} |"
        for r in results["degradation"]
    ]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny presets, one repeat (CI)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.quick:
        presets, batches, repeats, warmup = ["gpen-tiny-64"], [1, 2], 1, 1
        train_plan = [("prior", "gpen-tiny-32", 3, 4), ("finetune", "gpen-tiny-32", 3, 4)]
        degrade_plan = [("gfpgan", 64, 4, 1)]
    else:
        presets = ["gpen-bfr-256", "gpen-bfr-512"]
        batches = [1, 8, 32] if gpu else [1, 4]
        repeats, warmup = (20, 3) if gpu else (7, 2)
        big = "gpen-bfr-512" if gpu else "gpen-tiny-128"
        train_plan = [
            ("prior", big, 30 if gpu else 20, 4),
            ("finetune", big, 30 if gpu else 20, 4),
        ]
        degrade_plan = [("gfpgan", 512, 16, 3)]
    dtypes = ["fp32", "bf16"]
    header = f"{machine(device)} | {platform.system()} {platform.release()}"
    print(f"# {header}")
    print("inference:")
    inference = bench_inference(
        presets, batches, dtypes, device, repeats=repeats, warmup=warmup, compile_=args.compile
    )
    print("training:")
    training = []
    for stage, preset, steps, batch in train_plan:
        # img/s of one stage through the real modules (``benchmarks/train.py``), fp32
        warmup = max(2, steps // 4)
        r = bench_stage(stage, preset, batch, device=args.device, steps=steps, warmup=warmup)
        training.append(r)
        print(f"  {stage:<9} {preset:<14} b{batch:<3} {r['img_per_s']:8.1f} img/s", flush=True)
    print("degradation:")
    degradation = []
    for preset, size, batch, n in degrade_plan:
        hq = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
        rate = bench_ours(hq, n)
        degradation.append(dict(preset=preset, size=size, batch=batch, img_per_s=rate))
        print(f"  {preset:<9} {size} px b{batch:<3} {rate:8.1f} img/s", flush=True)
    results = {"inference": inference, "training": training, "degradation": degradation}
    write_reports(args.out, header, results)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
