"""Training throughput: images/s and peak GPU memory of both stages, through the real modules.

    python benchmarks/train.py                                   # 256 and 512, GPU plan
    python benchmarks/train.py --presets gpen-bfr-512 --batches 8 16 --precisions bf16-mixed
    python benchmarks/train.py --quick                           # tiny CPU run (the test suite)

Each configuration (stage, preset, per-device batch, precision, compile) runs ``Trainer.fit`` on
faces rendered once and kept in memory, R1 and path length on (the prior's StyleGAN2 recipe; the
fine-tune with the official script's R1 / path length so both stages pay the same regularizers),
and times the minibatches after ``--warmup`` (device synchronised at both ends of the window only).
The fine-tuning figure includes the on-device degradation; its share is measured separately by
timing the same degradation alone at the same batch. Writes JSON (``--out``) and prints a table.
Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import Dataset

from gpen_lightning.config import compose
from gpen_lightning.data import Degradation, SyntheticFaces
from gpen_lightning.train import build_run


class CachedFaces(Dataset):
    """``n`` procedural faces rendered once: {"hq": uint8 (3, S, S), "index"}."""

    def __init__(self, size: int, n: int) -> None:
        source = SyntheticFaces(size=size, length=n, flip=False)
        self.items = [source[i] for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class StepTimer(L.Callback):
    """Wall time of minibatches ``warmup .. warmup + steps`` and the peak CUDA memory."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.n, self.t0, self.seconds = 0, 0.0, float("nan")

    def _sync(self, module) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.n += 1
        if self.n == self.warmup:
            self._sync(module)
            if module.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(module.device)
            self.t0 = time.perf_counter()
        elif self.n == self.warmup + self.steps:
            self._sync(module)
            self.seconds = time.perf_counter() - self.t0
            trainer.should_stop = True


def bench_stage(
    stage: str,
    preset: str,
    batch: int,
    *,
    precision: str = "32-true",
    compile: bool = False,
    device: str = "cpu",
    steps: int = 20,
    warmup: int = 5,
    id_weights: str | None = None,
) -> dict:
    """One configuration: img/s (over all steps of the window) and peak GPU memory in GiB.

    ``id_weights``: fine-tune with the official script's losses (smooth-L1, ArcFace identity
    from this file, R1, path length, no feature matching) for ``benchmarks/official_train.py``.
    """
    gpu = device.startswith("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"stage={stage}",
            f"model={preset}",
            "logger=none",
            "callbacks=none",
            f"paths.output_dir={tmp}",
            f"model.recipe.batch_size={batch}",
            f"module.max_kimg={1e6}",
            f"module.compile={str(compile).lower()}",
            "module.r1_gamma=10",
            "module.pl_weight=2",
            f"trainer.precision={precision}",
            f"trainer.accelerator={'gpu' if gpu else 'cpu'}",
            f"trainer.benchmark={str(gpu).lower()}",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "data.val_fraction=0",
            "trainer.limit_val_batches=0",
            "data.num_workers=0",
        ]
        if stage == "finetune":
            overrides += ["module.init=none", "validate_first=false", "validate_last=false"]
            if id_weights:
                overrides += [
                    "module.content=smooth_l1",
                    "module.fm_weight=0",
                    "module.id_weight=1",
                    f"module.id_weights={id_weights}",
                ]
        cfg = compose(overrides)
        timer = StepTimer(warmup, steps)
        datamodule, module, trainer = build_run(cfg, extra_callbacks=[timer])
        datamodule.train_set = CachedFaces(cfg.model.size, max(2 * batch, 16))
        datamodule.val_set = datamodule.train_set  # never run (limit_val_batches=0)
        trainer.fit(module, datamodule=datamodule)
    img_s = steps * batch / timer.seconds
    peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")
    return dict(
        stage=stage,
        preset=preset,
        batch=batch,
        precision=precision,
        compile=compile,
        img_per_s=img_s,
        s_per_step=timer.seconds / steps,
        peak_gib=peak,
    )


def bench_degradation(size: int, batch: int, *, device: str, repeats: int = 10) -> float:
    """Seconds per batch of the default (GFPGAN-model) degradation on ``device``."""
    deg = Degradation()
    hq = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    for _ in range(2):
        deg(hq, generator=gen)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        deg(hq, generator=gen)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def machine(device: str) -> str:
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
    else:
        name = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return f"{name} | torch {torch.__version__}"


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny preset, a few CPU steps")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--stages", nargs="+", default=["prior", "finetune"])
    ap.add_argument("--presets", nargs="+", default=["gpen-bfr-256", "gpen-bfr-512"])
    ap.add_argument("--batches", nargs="+", type=int, default=[4, 8, 16, 32])
    ap.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    ap.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    ap.add_argument(
        "--official-losses",
        action="store_true",
        help="fine-tune with the official script's losses (random IR-SE50 stand-in weights)",
    )
    args = ap.parse_args(argv)
    id_weights = None
    if args.official_losses:
        from official_train import irse50_standin

        id_weights = str(irse50_standin(Path(tempfile.mkdtemp()) / "model_ir_se50.pth"))
    if args.quick:
        args.device, args.presets, args.batches = "cpu", ["gpen-tiny-32"], [4]
        args.precisions, args.steps, args.warmup = ["32-true"], 3, 2
    header = machine(args.device)
    print(f"# {header}")
    print("| stage | preset | batch | precision | compile | img/s | s/step | peak GiB | degr. |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    plan = itertools.product(args.presets, args.batches, args.precisions, args.compile)
    for preset, batch, precision, comp in plan:
        size = compose([f"model={preset}"]).model.size
        deg_s = bench_degradation(size, batch, device=args.device, repeats=2 if args.quick else 10)
        for stage in args.stages:
            try:
                row = bench_stage(
                    stage,
                    preset,
                    batch,
                    precision=precision,
                    compile=comp == "on",
                    device=args.device,
                    steps=args.steps,
                    warmup=args.warmup,
                    id_weights=id_weights,
                )
            except torch.OutOfMemoryError:
                row = dict(
                    stage=stage,
                    preset=preset,
                    batch=batch,
                    precision=precision,
                    compile=comp == "on",
                    error="out of memory",
                )
                torch.cuda.empty_cache()
                print(f"| {stage} | {preset} | {batch} | {precision} | {comp} | OOM | | | |")
                rows.append(row)
                continue
            row["degradation_s"] = deg_s
            row["degradation_share"] = deg_s / row["s_per_step"] if stage == "finetune" else None
            rows.append(row)
            share = f"{row['degradation_share']:.1%}" if stage == "finetune" else "-"
            print(
                f"| {stage} | {preset} | {batch} | {precision} | {comp} | {row['img_per_s']:.1f} "
                f"| {row['s_per_step']:.4f} | {row['peak_gib']:.2f} | {share} |",
                flush=True,
            )
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": header, "rows": rows}, indent=2))
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
