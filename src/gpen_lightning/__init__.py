"""gpen-lightning: GPEN blind face restoration (GAN Prior Embedded Network) on PyTorch Lightning."""

__version__ = "0.1.0"
