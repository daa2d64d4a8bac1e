"""``stage=evaluate``: score restoration networks, and other methods' saved outputs, on one set
of faces with one scorer (``metrics.scorer``), in one table with 95 % intervals.

Protocols (``evaluation.protocols``): ``hq=DIR`` (or ``input=DIR``; none: procedural faces)
degrades HQ faces with the seeded ``degradation`` preset, next to the input and bicubic
baselines; ``lq=DIR hq=DIR`` scores a fixed paired set matched by file name; ``lq=DIR`` alone a
real set (no-reference metrics and FID against ``fid_reference``). ``restored=DIR`` (or several)
adds another method's outputs, matched by file name; ``weights=[a.pt,b.pth]`` one row per
network. PSNR and SSIM always; LPIPS, FID, the ArcFace angle, the landmark distance and dlib's
identity distance when configured."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from gpen_lightning.config import options_for
from gpen_lightning.data.folder import FaceFolder
from gpen_lightning.data.synthetic import SyntheticFaces
from gpen_lightning.evaluation.prior import evaluate_prior
from gpen_lightning.evaluation.protocol import score_batches
from gpen_lightning.evaluation.protocols import (
    EvalSet,
    paired_set,
    real_set,
    restored_labels,
    synthetic_prepare,
    synthetic_set,
)
from gpen_lightning.evaluation.report import format_table, write_per_face, write_reports
from gpen_lightning.evaluation.sets import file_digest, image_files, one_size
from gpen_lightning.metrics.bootstrap import interval_table, paired_table
from gpen_lightning.metrics.fid import FidStatistics
from gpen_lightning.metrics.scorer import ScoreBook, Scorer
from gpen_lightning.runtime import resolve_device
from gpen_lightning.zoo.generator import Generator
from gpen_lightning.zoo.presets import match_preset
from gpen_lightning.zoo.weights import load_restoration_model

__all__ = ["EvaluateStage", "evaluate", "evaluate_set", "format_table", "write_reports"]

log = logging.getLogger(__name__)


def evaluate_set(
    nets: dict[str, torch.nn.Module],
    faces: EvalSet,
    scorer: Scorer,
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    n_grid: int = 8,
    swd_seed: int | None = None,
    fid_reference: FidStatistics | None = None,
    save_images: Path | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, torch.Tensor]], torch.Tensor]:
    """Score ``nets`` (``{row name: GPEN}``), the baselines and the restored folders of
    ``faces`` with ``scorer``. Returns ``(table, per_face, grid)``: ``{method: {metric: mean}}``
    (FID against ``fid_reference``, else the HQ set), ``{method: {metric: (N,)}}`` and the grid
    (per face: the methods, then HQ)."""
    device = torch.device(device)
    nets = {k: n.to(device).eval() for k, n in nets.items()}
    book = ScoreBook(scorer, swd_seed=swd_seed)
    for method, digest in faces.digests.items():
        book.use_cache(method, digest)
    loader = DataLoader(faces.dataset, batch_size=batch_size, shuffle=False)
    _, grid = score_batches(
        loader,
        faces.prepare,
        nets=nets,
        book=book,
        device=device,
        n_grid=n_grid,
        save_images=save_images,
    )
    if fid_reference is None and scorer.inception is not None and faces.size is not None:
        fid_reference = FidStatistics.of(book.features("hq"))
    methods = [m for m in book.scores if m != "hq"]
    return book.table(fid_reference, methods), book.per_face(), grid


@torch.no_grad()
def evaluate(
    net: torch.nn.Module,
    dataset,
    *,
    degradation: torch.nn.Module,
    seed: int = 1234,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    n_grid: int = 8,
    with_swd: bool = False,
    per_face: dict | None = None,
    scorer: Scorer | None = None,
) -> tuple[dict[str, dict[str, float]], torch.Tensor]:
    """Score ``net`` (row ``gpen``) and the baselines on the faces of ``dataset`` (items
    ``{"hq" uint8, "index"}``) degraded by ``degradation`` seeded with ``seed`` (the synthetic
    protocol; the ablation report uses it). Returns ``({method: {metric: mean}}, grid)``, the
    grid rows [LQ | bicubic | GPEN | HQ] of the first ``n_grid`` faces. ``scorer`` (default: PSNR
    and SSIM) scores; ``with_swd`` adds the sliced Wasserstein distance x 1e3; ``per_face`` is
    filled with every face's per-image scores."""
    scorer = scorer or Scorer.load(device=device)
    faces = EvalSet(
        "synthetic",
        dataset,
        synthetic_prepare(degradation, seed),
        None,
        tuple(dataset[0]["hq"].shape[-2:]),
        ["input", "bicubic"],
        {},
    )
    table, faces_scores, grid = evaluate_set(
        {"gpen": net},
        faces,
        scorer,
        batch_size=batch_size,
        device=device,
        n_grid=n_grid,
        swd_seed=seed if with_swd else None,
    )
    if per_face is not None:
        per_face.update(faces_scores)
    return table, grid


def describe_network(net: torch.nn.Module) -> str:
    """What was evaluated: the matching preset's architecture, or the GPEN's own dimensions."""
    if isinstance(net, Generator):
        return f"GAN prior, {net.size} px, style {net.style_dim}, {net.n_mlp} mapping layers"
    g = net.generator
    dims = f"GPEN-{net.size}, style {g.style_dim}, {g.n_mlp} mapping layers, noise {g.noise_mode}"
    preset = match_preset(net)
    return f"{dims} (architecture of preset {preset})" if preset else dims


def network_names(weights: list[str]) -> list[str]:
    """Row names of the networks: ``gpen`` for one, else each file's stem (with its folder when
    two stems clash)."""
    if len(weights) == 1:
        return ["gpen"]
    names = [Path(w).stem if w != "latest" else "latest" for w in weights]
    if len(set(names)) < len(names):
        names = [f"{Path(w).parent.name}/{Path(w).stem}" for w in weights]
    if len(set(names)) < len(names):
        raise ValueError(f"weights must be distinct files: {weights}")
    return names


@dataclass(kw_only=True)
class EvaluateStage:
    """``stage=evaluate``: the options of ``conf/evaluate.yaml`` (which documents each and holds
    the defaults), built by ``hydra.utils.instantiate``. ``run`` builds the set of the protocol
    the options select (see the module), scores and writes ``report.{md,csv,json}``,
    ``per_image.csv`` and ``grid.png`` to ``output``.

    A GAN prior (``weights=prior.pt``) is scored by the sliced Wasserstein distance of its
    samples to the faces. ``degradation`` is the config of the ``degradation`` group
    (instantiated here); ``paths.log_dir`` is where ``weights=latest`` looks."""

    hq: str | None = None
    input: str | None = None
    lq: str | None = None
    restored: Any = None
    output: str
    paths: Mapping
    weights: Any
    model: str
    degradation: Mapping
    synthetic_length: int
    max_images: int | None
    eval_seed: int
    batch_size: int
    device: str
    lpips_weights: str | None
    lpips_net: str
    fid_weights: str | None
    fid_reference: str | None = None
    fid_cache: str | None = None
    niqe_params: str | None = None
    y_channel: bool = False
    id_weights: str | None
    lmd: bool = False
    dlib_identity: bool = False
    save_images: bool = False
    swd: bool
    n_grid: int

    def __post_init__(self) -> None:
        if self.input and self.hq and Path(self.input) != Path(self.hq):
            raise ValueError(f"input= is another name of hq=; give one ({self.input}, {self.hq})")
        self.hq = self.hq or self.input
        self.restored = restored_labels(self.restored)

    def networks(self) -> dict[str, torch.nn.Module]:
        """``{row name: network}`` of ``weights`` (one path, a list, or null: random weights
        of ``model``, unless ``restored`` folders are scored alone)."""
        weights = self.weights
        if weights is None and self.restored:
            return {}
        weights = list(weights) if isinstance(weights, list | tuple) else [weights]
        nets = {
            name: load_restoration_model(
                w, model=self.model, runs_root=self.paths["log_dir"], allow_prior=len(weights) == 1
            )
            for name, w in zip(network_names([str(w) for w in weights]), weights)
        }
        sizes = {n.size for n in nets.values()}
        if len(sizes) > 1 and not self.lq:
            raise ValueError(f"the networks differ in size ({sizes}): evaluate them separately")
        return nets

    def faces(self, nets: dict[str, torch.nn.Module]) -> EvalSet:
        """The set of the protocol the options select."""
        taken = set(self.restored) & {*nets, "input", "bicubic", "hq"}
        if taken:
            raise ValueError(
                f"restored folder name(s) {sorted(taken)} are already rows: name them, "
                "restored={other_name: DIR}"
            )
        if self.lq and self.hq:
            return paired_set(self.lq, self.hq, restored=self.restored)
        if self.lq:
            return real_set(self.lq, restored=self.restored)
        if nets:
            size = next(iter(nets.values())).size
        else:  # restored folders alone: the size they were restored at
            firsts = [next(iter(image_files(p).values())) for p in self.restored.values()]
            size = one_size("restored", firsts)[0]
        return synthetic_set(
            self.hq,
            size=size,
            degradation=instantiate(self.degradation),
            seed=self.eval_seed,
            restored=self.restored,
            synthetic_length=self.synthetic_length,
            max_images=self.max_images,
        )

    def reference(self, scorer: Scorer, size: int, out: Path) -> FidStatistics | None:
        """FID's reference statistics: ``fid_reference`` (an ``.npz`` of ``mu``, ``sigma``, or a
        folder of faces, featurised at ``size`` px once, cached, and saved as
        ``out/fid_reference.npz`` to reuse); None: the HQ set of the protocol."""
        if not self.fid_reference or scorer.inception is None:
            return None
        path = Path(self.fid_reference).expanduser()
        if path.is_file():
            return FidStatistics.load(path)
        folder = FaceFolder(path, size=size, flip=False)
        book = ScoreBook(scorer)
        if not book.use_cache("reference", file_digest(folder.files, size)):
            for batch in DataLoader(folder, batch_size=self.batch_size):
                book.add("reference", batch["hq"], None, scored=False)
        stats = FidStatistics.of(book.features("reference"))
        stats.save(out / "fid_reference.npz")
        return stats

    def run(self) -> dict[str, Any]:
        """Evaluate and write the reports; ``{"table", "output"}``."""
        nets = self.networks()
        out = Path(self.output)
        if len(nets) == 1 and isinstance(prior := next(iter(nets.values())), Generator):
            return self.run_prior(prior, out)
        faces = self.faces(nets)
        device = resolve_device(self.device)
        scorer = Scorer.load(**options_for(Scorer.load, self) | {"device": device})
        fid = scorer.inception is not None and self.fid_reference
        if faces.size is None and not fid and scorer.niqe is None:
            raise ValueError(
                "a real set (lq= without hq=) is scored by FID against a reference set or by "
                "NIQE: give fid_weights=INCEPTION.pth and fid_reference=DIR_OR_STATS.npz, or "
                "niqe_params=PATH"
            )
        size = faces.size[0] if faces.size else max([n.size for n in nets.values()] or [512])
        images = _fresh_folder(out / "images") if self.save_images else None
        table, per_face, grid = evaluate_set(
            nets,
            faces,
            scorer,
            batch_size=self.batch_size,
            device=device,
            n_grid=self.n_grid,
            swd_seed=self.eval_seed if self.swd else None,
            fid_reference=self.reference(scorer, size, out),
            save_images=images,
        )
        meta = self.describe(nets, faces, scorer)
        if per_face:
            meta["ci95"] = interval_table(per_face, seed=self.eval_seed)
            meta["paired"] = _paired(per_face, faces.baselines, list(nets), self.eval_seed)
            write_per_face(out / "per_image.csv", per_face, faces.names)
        columns = [*table, *(["HQ"] if faces.size else [])]
        write_reports(
            out, table, meta, grid, columns=len(columns), legend=f"columns: {' | '.join(columns)}"
        )
        return {"table": table, "output": str(out)}

    def describe(self, nets: dict, faces: EvalSet, scorer: Scorer) -> dict[str, Any]:
        """The report's description of what was scored, how and by which code."""
        meta = {
            "protocol": faces.name,
            "weights": self.weights,
            "network": "; ".join(f"{k}: {describe_network(n)}" for k, n in nets.items()),
            "hq": self.hq,
            "lq": self.lq,
            "input": self.hq,
            "restored": {k: str(v) for k, v in self.restored.items()},
            "faces": len(faces.dataset),
            "seed": self.eval_seed,
            "fid_reference": self.fid_reference or ("the HQ set" if faces.size else None),
            "sources": scorer.sources,
        }
        if faces.name == "synthetic":
            meta["degradation"] = dict(self.degradation)
        return meta

    def run_prior(self, prior: Generator, out: Path) -> dict[str, Any]:
        """A GAN prior's samples against the HQ faces (sliced Wasserstein distance)."""
        if self.hq:
            dataset = FaceFolder(self.hq, size=prior.size, flip=False)
        else:
            dataset = SyntheticFaces(size=prior.size, length=self.synthetic_length, flip=False)
        if self.max_images:
            dataset = torch.utils.data.Subset(dataset, range(min(self.max_images, len(dataset))))
        table, grid = evaluate_prior(
            prior,
            dataset,
            batch_size=self.batch_size,
            device=resolve_device(self.device),
            seed=self.eval_seed,
        )
        meta = {
            "weights": self.weights,
            "network": describe_network(prior),
            "input": self.hq,
            "faces": len(dataset),
            "seed": self.eval_seed,
        }
        write_reports(out, table, meta, grid, columns=4, legend="prior samples, then faces")
        return {"table": table, "output": str(out)}


def _paired(per_face: dict, baselines: list[str], nets: list[str], seed: int) -> dict:
    """Paired differences: every method against each baseline, the first network against
    every other method."""
    paired: dict = {}
    methods = [m for m in per_face if m not in baselines]
    for method in methods:
        paired.update(
            paired_table(per_face, method, [b for b in baselines if b in per_face], seed=seed)
        )
    if nets:
        others = [m for m in methods if m != nets[0]]
        paired.update(paired_table(per_face, nets[0], others, seed=seed))
    return paired


def _fresh_folder(path: Path) -> Path:
    """``path``, refusing an existing non-empty folder (outputs are never overwritten)."""
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} already holds images: give another output=")
    return path
