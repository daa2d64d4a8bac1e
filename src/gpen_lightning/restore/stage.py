"""``stage=restore`` as an object: ``RestoreStage`` holds the options of ``conf/restore.yaml``
(built by ``hydra.utils.instantiate``; an option it does not take is an error) and restores every
image and video ``input`` names, in this process or, when ``trainer`` asks for several
processes, through Lightning's predict loop (``restore.distributed``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from gpen_lightning.config import options_for
from gpen_lightning.restore.batch import (
    RestoreRun,
    RunOptions,
    collect_inputs,
    refuse_output_in_inputs,
)
from gpen_lightning.restore.distributed import predict_files
from gpen_lightning.restore.restorer import Detection, Paste, Restorer
from gpen_lightning.restore.tasks import Task
from gpen_lightning.runtime import process_count

__all__ = ["RestoreStage"]


@dataclass(kw_only=True)
class RestoreStage:
    """The restore stage's options; ``conf/restore.yaml`` documents each and holds the defaults.

    ``paths`` and ``trainer`` are the config groups of the same names: ``paths.log_dir`` is where
    ``weights=latest`` looks; ``trainer`` (accelerator, devices, num_nodes, strategy, ...) sets
    the processes of ``Trainer.predict`` when it asks for more than one.
    """

    input: str
    output: str
    paths: Mapping
    trainer: Mapping
    weights: str | None
    model: str
    device: str
    bf16: bool
    cuda_graph: bool
    batch_size: int
    template: str
    score_threshold: float
    detector_weights: str | None
    upscale: float
    alpha: float
    min_face_size: float
    only_center_face: bool
    face_upscale: bool
    paste_mask: str
    draw_boxes: bool
    bg_upsampler: str
    bg_weights: str | None
    bg_tile: int
    bg_tile_pad: int
    task: str
    inpaint_strokes: bool
    inpaint_seed: int
    aligned: bool
    suffix: str
    save_faces: bool
    compare: bool
    overwrite: bool
    images_per_batch: int
    frames_per_batch: int
    smooth: bool
    crf: int
    max_pixels: int

    def processes(self) -> int:
        """How many processes ``trainer`` starts (``runtime.process_count``)."""
        return process_count(self.trainer)

    def restorer(self, device: str | torch.device | None = None) -> Restorer:
        """The ``Restorer`` these options describe, on ``device`` (default: ``self.device``)."""
        return Restorer(
            self.weights,
            model=self.model,
            runs_root=self.paths["log_dir"],
            device=self.device if device is None else device,
            bf16=self.bf16,
            cuda_graph=self.cuda_graph,
            batch_size=self.batch_size,
            detection=Detection(**options_for(Detection, self)),
            paste=Paste(**options_for(Paste, self)),
            task=Task(**options_for(Task, self)),
        )

    def run(self) -> int:
        """Restore every file; the exit status (0: every file restored, 1: some failed)."""
        files, root = collect_inputs(str(self.input))
        out_dir = Path(self.output).expanduser()
        refuse_output_in_inputs(out_dir, files, root, self.suffix or "")
        Task(**options_for(Task, self)).check(aligned=self.aligned)
        if not files:
            print(f"No images or videos found under {self.input}.")
            return 1
        runner = RestoreRun(RunOptions(**options_for(RunOptions, self)), None, files, root, out_dir)
        if self.processes() > 1:  # each process builds its own restorer
            report = predict_files(trainer=self.trainer, run=runner, make_restorer=self.restorer)
            if report is None:  # not the global rank 0: it printed nothing
                return 0
        else:
            runner.restorer = self.restorer()
            report = runner.run()
        print(report.summary())
        print(f"Outputs in {out_dir}")
        return 1 if report.failed else 0
