"""gpen-lightning: GPEN blind face restoration (GAN Prior Embedded Network) on PyTorch Lightning."""

import os as _os

# Back large CPU tensors with transparent huge pages (PyTorch's own allocator option; read once,
# so it only takes effect when gpen_lightning is imported before torch allocates). Page faults on
# fresh activations otherwise cost more than the arithmetic of the elementwise ops on CPU.
# Set THP_MEM_ALLOC_ENABLE=0 to opt out.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
