"""Data: HQ face datasets, the on-device degradation model and the Lightning DataModule.

Layering: ``kernels`` -> ``degradation``; ``folder`` -> ``streaming``; ``folder`` / ``streaming`` /
``synthetic`` -> ``datamodule``.
"""

from gpen_lightning.data.datamodule import FaceDataModule, degrade_fixed, stack_faces
from gpen_lightning.data.degradation import Degradation
from gpen_lightning.data.folder import IMAGE_EXTENSIONS, FaceFolder, read_rgb
from gpen_lightning.data.streaming import StreamingFaces
from gpen_lightning.data.synthetic import SyntheticFaces, render_face

__all__ = [
    "IMAGE_EXTENSIONS",
    "Degradation",
    "FaceDataModule",
    "FaceFolder",
    "StreamingFaces",
    "SyntheticFaces",
    "degrade_fixed",
    "read_rgb",
    "render_face",
    "stack_faces",
]
