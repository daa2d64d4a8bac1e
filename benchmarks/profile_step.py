"""Where a step's time goes: torch.profiler tables of GPEN inference and of one training step of
each stage, through the real modules (set up in Lightning's order, stepped directly).

    python benchmarks/profile_step.py --preset gpen-bfr-512 --batch 8 --out /tmp/profile
    python benchmarks/profile_step.py --quick      # tiny preset on the CPU

Prints, per case, the ops and kernels by self device time (CPU time off CUDA) and the wall time
per call; writes each table to ``--out/<case>.txt`` as soon as it is measured.
"""

from __future__ import annotations

import argparse
import functools
import random
import tempfile
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch.profiler import ProfilerActivity, profile

from common import loop_seconds, sync
from gpen_lightning.config import compose
from gpen_lightning.testing import lightning_order
from gpen_lightning.zoo import build


def _profiled(name: str, fn, *, device: str, warmup: int, steps: int, out: Path, rows: int) -> None:
    for _ in range(warmup):
        fn()
    wall = loop_seconds(lambda _: fn(), steps, device) / steps
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60)
    text = f"== {name}: {wall:.4f} s per call (mean of {steps})\n{table}\n"
    print(text, flush=True)
    (out / f"{name}.txt").write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpen-bfr-512")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cases", nargs="+", default=["infer", "prior", "finetune"])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path("/tmp/profile"))
    ap.add_argument("--quick", action="store_true", help="gpen-tiny-32, batch 2, CPU")
    args = ap.parse_args()
    if args.quick:
        vars(args).update(preset="gpen-tiny-32", batch=2, device="cpu", warmup=1, steps=1)
    args.out.mkdir(parents=True, exist_ok=True)
    dev, b = args.device, args.batch
    measure = functools.partial(
        _profiled, device=dev, warmup=args.warmup, steps=args.steps, out=args.out, rows=args.rows
    )
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    for case in args.cases:
        if case == "infer":
            net = build(args.preset, "gpen").to(dev).eval()
            size = net.size
            x = torch.rand(b, 3, size, size, device=dev) * 2 - 1
            amp = torch.autocast(dev, dtype=torch.bfloat16)

            def infer(net=net, x=x, amp=amp):
                with torch.no_grad(), amp:
                    net(x)

            measure(f"infer-bf16-b{b}", infer)
            del net
            continue
        cfg = compose(
            [
                f"stage={case}",
                f"model={args.preset}",
                "logger=none",
                f"paths.output_dir={tempfile.mkdtemp()}",
                "module.r1_gamma=10",
                "module.pl_weight=2",
                *(["module.init=none"] if case == "finetune" else []),
            ]
        )
        module = instantiate(cfg.module, _convert_="all")
        gpu = {"accelerator": "gpu", "devices": 1, "precision": "bf16-mixed"}
        lightning_order(module, dev, **(gpu if dev == "cuda" else {}))
        size = int(cfg.model.size)
        img = lambda s=size: torch.rand(b, 3, s, s, device=dev) * 2 - 1  # noqa: E731
        batch = {"lq": img(), "hq": img()} if case == "finetune" else {"hq": img()}
        random.seed(0)
        step = iter(range(10**6))  # the lazy regularizers run on their own minibatches

        def train_step(module=module, batch=batch, step=step):
            with module.trainer.precision_plugin.forward_context():
                module.training_step(batch, next(step))

        train_step()  # minibatch 0: R1 and path length, and the first cuDNN plans
        measure(f"{case}-step-b{b}", train_step)
        del module


if __name__ == "__main__":
    main()
