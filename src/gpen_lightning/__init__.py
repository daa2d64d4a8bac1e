"""gpen-lightning: GPEN blind face restoration (GAN Prior Embedded Network) on PyTorch Lightning."""

from gpen_lightning.runtime import use_cpu_huge_pages

__version__ = "0.1.0"

__all__ = ["__version__", "use_cpu_huge_pages"]
