"""Bytes all-reduced per GAN phase under data parallelism, both designs through Lightning:

- ``ddp``: Lightning's ``DDPStrategy(find_unused_parameters=True)`` (the design before
  ``PhaseDDPStrategy``): the ``DistributedDataParallel`` wrapper all-reduces every gradient
  bucket of G and D in each of a minibatch's backward passes (counted by a comm hook);
- ``phase``: ``PhaseDDPStrategy``: one flat all-reduce of the gradients of the network the phase
  trains (counted at ``torch.distributed.all_reduce``).

    python benchmarks/ddp_bytes.py                      # gpen-tiny-32, 2 gloo processes, CPU
    python benchmarks/ddp_bytes.py --preset gpen-tiny-64 --stage finetune

Each design runs in its own launch (Lightning starts the second process). Prints a table of
bytes per phase and per minibatch and, from the parameter counts, the same for GPEN-512.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from gpen_lightning.config import compose
from gpen_lightning.train import build_run
from gpen_lightning.training.distributed import PhaseDDPStrategy


def _measure(args: argparse.Namespace) -> None:
    """One design in 2 processes (run through Lightning's launcher); rank 0 prints a JSON line."""
    kimg = args.minibatches * 2 * args.batch / 1000
    cfg = compose(
        [
            f"stage={args.stage}",
            f"model={args.preset}",
            "trainer=ddp_sim",
            "logger=none",
            "callbacks=none",
            f"paths.output_dir={tempfile.mkdtemp()}",
            f"model.recipe.batch_size={args.batch}",
            f"model.recipe.prior_kimg={kimg}",
            f"model.recipe.finetune_kimg={kimg}",
            "module.r1_gamma=10",
            "module.pl_weight=2",
            "validate_first=false",
            "validate_last=false",
            *(["module.init=none"] if args.stage == "finetune" else []),
        ]
    )
    datamodule, module, _ = build_run(cfg)
    sent: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    phase = {"name": "other"}
    run_phase = module._run_phase

    def tagged(record, *a, **kw):
        phase["name"] = record.name
        calls[record.name] += 1
        try:
            return run_phase(record, *a, **kw)
        finally:
            phase["name"] = "other"

    module._run_phase = tagged
    if args.design == "ddp":

        def hook(state, bucket):
            buffer = bucket.buffer()
            sent[phase["name"]] += buffer.numel() * buffer.element_size()
            return default_hooks.allreduce_hook(None, bucket)

        class Hook(L.Callback):  # (Lightning registers comm hooks on CUDA only)
            def on_fit_start(self, trainer, pl_module):
                trainer.strategy.model.register_comm_hook(None, hook)

        callbacks = [Hook()]
        strategy = DDPStrategy(find_unused_parameters=True, process_group_backend="gloo")
    else:
        all_reduce = dist.all_reduce

        def counting(tensor, *a, **kw):
            sent[phase["name"]] += tensor.numel() * tensor.element_size()
            return all_reduce(tensor, *a, **kw)

        dist.all_reduce = counting
        callbacks = []
        strategy = PhaseDDPStrategy(process_group_backend="gloo")
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        max_epochs=-1,
    )
    trainer.fit(module, datamodule)
    if trainer.is_global_zero:
        net = lambda m: sum(p.numel() * 4 for p in m.parameters() if p.requires_grad)  # noqa: E731
        row = {
            "design": args.design,
            "preset": args.preset,
            "stage": args.stage,
            "minibatches": module.progress["batches"],
            "phase_calls": dict(calls),
            "bytes": dict(sent),
            "g_bytes": net(module.trained_generator),
            "d_bytes": net(module.discriminator),
        }
        print("ROW " + json.dumps(row), flush=True)


def _gpen512(stage: str, per_minibatch: dict[str, float]) -> dict[str, float]:
    """MB per minibatch at 512 for both designs, from the parameter counts (meta device)."""
    from gpen_lightning.zoo import build

    with torch.device("meta"):
        g = build("gpen-bfr-512", "prior" if stage == "prior" else "gpen")
        d = build("gpen-bfr-512", "discriminator")
    mb = lambda m: sum(p.numel() for p in m.parameters()) * 4 / 1e6  # noqa: E731
    gmb, dmb = mb(g), mb(d)
    ddp = sum(per_minibatch.values()) * (gmb + dmb)
    phase = sum(n * (dmb if p[0] == "D" else gmb) for p, n in per_minibatch.items())
    return {"G_MB": gmb, "D_MB": dmb, "ddp_MB": ddp, "phase_MB": phase}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpen-tiny-32")
    ap.add_argument("--stage", default="prior", choices=["prior", "finetune"])
    ap.add_argument("--batch", type=int, default=4, help="per process")
    ap.add_argument("--minibatches", type=int, default=16)
    ap.add_argument("--design", choices=["ddp", "phase"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.design:
        _measure(args)
        return
    rows = []
    for design in ("ddp", "phase"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--design", design]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = [ln[4:] for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
        if proc.returncode or not found:
            sys.exit(f"{design} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        rows.append(json.loads(found[0]))
    print(f"{args.preset}, {args.stage}, 2 gloo processes x batch {args.batch}")
    print("| design | phase | calls | MB sent | MB per call | trained net MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        for name, n in sorted(row["phase_calls"].items()):
            b = row["bytes"].get(name, 0) / 1e6
            net = (row["d_bytes"] if name[0] == "D" else row["g_bytes"]) / 1e6
            print(f"| {row['design']} | {name} | {n} | {b:.2f} | {b / n:.3f} | {net:.3f} |")
    calls = rows[0]["phase_calls"]
    per_minibatch = {k: v / rows[0]["minibatches"] for k, v in calls.items()}
    big = _gpen512(args.stage, per_minibatch)
    print(
        f"GPEN-512 {args.stage} (same phase schedule, fp32 gradients): G {big['G_MB']:.0f} MB, "
        f"D {big['D_MB']:.0f} MB; per minibatch ddp {big['ddp_MB']:.0f} MB, "
        f"phase {big['phase_MB']:.0f} MB ({big['ddp_MB'] / big['phase_MB']:.2f}x less)"
    )
    print("JSON " + json.dumps({"rows": rows, "gpen512": big}))


if __name__ == "__main__":
    main()
