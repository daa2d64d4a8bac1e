"""Training throughput: images/s and peak GPU memory of both stages, through the real modules.

    python benchmarks/train.py                                   # 256 and 512, GPU plan
    python benchmarks/train.py --presets gpen-bfr-512 --batches 8 16 --precisions bf16-mixed
    python benchmarks/train.py --quick                           # tiny CPU run (the test suite)

Each configuration (stage, preset, per-device batch, precision, compile) runs ``Trainer.fit`` on
faces rendered once and kept in memory, R1 and path length on (the prior's StyleGAN2 recipe; the
fine-tune with the official script's R1 / path length so both stages pay the same regularizers),
and times the minibatches after ``--warmup`` (device synchronised at both ends of the window only).
The fine-tuning figure includes the on-device degradation; its share is measured separately by
timing the same degradation alone at the same batch. With R1 every 16 and path length every 4
minibatches, a window of 16 steps after a warm-up of 4 holds one R1 and four path-length steps,
the regularizers' true share (the first R1 step, at minibatch 0, is in the warm-up).

Writes JSON (``--out``), prints a table and, with ``--jsonl``, appends each row to a JSON-lines
file as soon as it is measured (``benchmarks/gpu_check.sh``). A failing configuration (out of
memory or any other error) becomes a row with ``error``, the next one runs, and the exit status
is 1. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from common import append_jsonl, error_text, free_memory, loop_seconds, machine, sync
from gpen_lightning.config import compose
from gpen_lightning.data import Degradation, SyntheticFaces
from gpen_lightning.data.sampler import KeyedItems
from gpen_lightning.train import build_run


class StepTimer(L.Callback):
    """Wall time of minibatches ``warmup .. warmup + steps`` and the peak CUDA memory."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.n, self.t0, self.seconds = 0, 0.0, float("nan")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.n += 1
        if self.n == self.warmup:
            sync(module.device)
            if module.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(module.device)
            self.t0 = time.perf_counter()
        elif self.n == self.warmup + self.steps:
            sync(module.device)
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
        n = max(2 * batch, 16)
        faces = SyntheticFaces(size=cfg.model.size, length=n, flip=False, cache_mb=math.inf)
        for i in range(n):  # rendered once, before the timed steps, and kept in memory
            faces[i]
        datamodule.train_set = KeyedItems(faces, flip=True)  # keyed, as FaceDataModule's own
        datamodule.val_set = faces  # never run (limit_val_batches=0)
        trainer.fit(module, datamodule=datamodule)
    if not math.isfinite(timer.seconds):
        raise RuntimeError(f"training stopped before minibatch {warmup + steps}")
    img_s = steps * batch / timer.seconds
    peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")
    reserved = torch.cuda.max_memory_reserved() / 2**30 if gpu else float("nan")
    return dict(
        stage=stage,
        preset=preset,
        batch=batch,
        precision=precision,
        compile=compile,
        img_per_s=img_s,
        s_per_step=timer.seconds / steps,
        peak_gib=peak,
        peak_reserved_gib=reserved,
        steps=steps,
        warmup=warmup,
    )


def bench_degradation(size: int, batch: int, *, device: str, repeats: int = 10) -> float:
    """Seconds per batch of the default (GFPGAN-model) degradation on ``device``."""
    deg = Degradation()
    hq = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    for _ in range(2):
        deg(hq, generator=gen)
    return loop_seconds(lambda _: deg(hq, generator=gen), repeats, device) / repeats


def _error_row(exc: BaseException) -> str:
    return "out of memory" if isinstance(exc, torch.OutOfMemoryError) else error_text(exc)


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
    ap.add_argument("--jsonl", type=Path, default=None, help="append each row here when measured")
    ap.add_argument("--part", default="train", help="the rows' `part` field in --jsonl")
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
    rows, degradation = [], {}
    # precision before batch: a run cut short still holds every batch of the first precision
    plan = itertools.product(args.presets, args.precisions, args.batches, args.compile)
    for preset, precision, batch, comp in plan:
        size = compose([f"model={preset}"]).model.size
        # the fine-tune step's degradation alone, at the same size and batch (once for both)
        if "finetune" in args.stages and (size, batch) not in degradation:
            repeats = 2 if args.quick else 10
            try:
                degradation[size, batch] = bench_degradation(
                    size, batch, device=args.device, repeats=repeats
                )
            except Exception as exc:  # the training rows still run; their share stays empty
                print(f"degradation at {size} px, batch {batch}: {_error_row(exc)}", flush=True)
            free_memory(args.device)
        deg_s = degradation.get((size, batch), float("nan"))
        for stage in args.stages:
            key = dict(stage=stage, preset=preset, batch=batch, precision=precision)
            key.update(compile=comp == "on", official_losses=args.official_losses)
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
            except Exception as exc:  # out of memory or a bug: record it, run the next one
                row = dict(key, error=_error_row(exc))
                print(f"| {stage} | {preset} | {batch} | {precision} | {comp} | {row['error']} |")
            else:
                row.update(official_losses=args.official_losses, degradation_s=deg_s)
                share = deg_s / row["s_per_step"] if stage == "finetune" else None
                row["degradation_share"] = share
                share_txt = f"{share:.1%}" if share is not None and math.isfinite(share) else "-"
                print(
                    f"| {stage} | {preset} | {batch} | {precision} | {comp} | "
                    f"{row['img_per_s']:.1f} | {row['s_per_step']:.4f} | {row['peak_gib']:.2f} "
                    f"| {share_txt} |",
                    flush=True,
                )
            free_memory(args.device)  # also after an error: its traceback held the module
            rows.append(row)
            append_jsonl(args.jsonl, dict(part=args.part, device=args.device, **row))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": header, "rows": rows}, indent=2))
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    done = main()
    sys.exit(0 if done and not any("error" in r for r in done) else 1)
