"""Restoring faces in real photos: detect (5 landmarks) -> align -> restore in batches -> paste
back. ``Restorer(weights=...).restore(image)`` is the Python API; ``stage=restore`` the CLI."""

from gpen_lightning.restore.align import TEMPLATES, similarity_transform, template
from gpen_lightning.restore.background import RRDBUpsampler
from gpen_lightning.restore.detect import Face, FaceDetector, RetinaFaceDetector
from gpen_lightning.restore.paste import composite, face_mask
from gpen_lightning.restore.restorer import Detection, Paste, RestoredFace, Restorer, RestoreResult
from gpen_lightning.restore.retinaface import RetinaFace, bundled_retinaface, load_retinaface
from gpen_lightning.restore.tasks import Task
from gpen_lightning.zoo.weights import load_restoration_model

__all__ = [
    "TEMPLATES",
    "Detection",
    "Face",
    "FaceDetector",
    "Paste",
    "RestoreResult",
    "RestoredFace",
    "Restorer",
    "RetinaFace",
    "RetinaFaceDetector",
    "RRDBUpsampler",
    "Task",
    "bundled_retinaface",
    "composite",
    "face_mask",
    "load_restoration_model",
    "load_retinaface",
    "similarity_transform",
    "template",
]
