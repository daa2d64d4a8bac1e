"""Identity by dlib's face-recognition ResNet (the 128-d descriptor of ``face_recognition``; its
weights install from the package registry: ``pip install 'gpen-lightning[identity]'``, i.e.
``dlib-bin`` and ``face-recognition-models``). Faces are aligned crops: dlib's 5-point shape
predictor runs in the box where the aligned layout puts the face, and the descriptor is
computed on the chip it aligns. Distance < 0.6 is dlib's "same person" threshold."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

__all__ = ["DlibIdentity", "MissingDependencyError"]

INSTALL = "pip install 'gpen-lightning[identity]' (dlib-bin and face-recognition-models)"
# where FFHQ-style alignment puts the face (dlib's frontal detector on aligned faces), relative
FACE_BOX = (0.2, 0.28, 0.8, 0.86)


class MissingDependencyError(ImportError):
    """An optional metric's package is not installed; the message says how to install it."""


def _models_dir() -> Path:
    """The ``models`` folder of ``face-recognition-models``, found without importing it (its
    ``__init__`` needs ``pkg_resources``, which new setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the dlib identity metric needs its models: {INSTALL}")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class DlibIdentity:
    """dlib ResNet descriptors of aligned faces and their distance and cosine similarity."""

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError:
            raise MissingDependencyError(
                f"the dlib identity metric needs dlib: {INSTALL}"
            ) from None
        models = _models_dir()
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(
            str(models / "dlib_face_recognition_resnet_model_v1.dat")
        )
        self.dlib = dlib
        self.source = f"dlib {dlib.__version__} dlib_face_recognition_resnet_model_v1"

    def descriptors(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 aligned faces -> (B, 128) float64 descriptors."""
        out = []
        for image in images.permute(0, 2, 3, 1).cpu().numpy():
            h, w = image.shape[:2]
            x0, y0, x1, y1 = (round(v * s) for v, s in zip(FACE_BOX, (w, h, w, h)))
            image = np.ascontiguousarray(image)
            shape = self.shape(image, self.dlib.rectangle(x0, y0, x1, y1))
            out.append(np.asarray(self.net.compute_face_descriptor(image, shape)))
        return torch.from_numpy(np.stack(out)).double()

    @staticmethod
    def compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"id_dlib": Euclidean distance, "id_dlib_cos": cosine similarity}`` (B,) of two
        descriptor batches (B, 128)."""
        cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
        return {"id_dlib": (a - b).norm(dim=1), "id_dlib_cos": cos}
